#!/usr/bin/env bash
# Distributed mode beside embedded on this machine: the same query at the same parallelism
# run embedded (`sluice run`) and as a coordinator plus WORKERS workers with one slot each,
# all on loopback. Prints wall time, events per second, events per CPU-second (CPU of every
# process of the run), the bytes per second that crossed the loopback interface (the
# shuffle between workers; the embedded run moves none), and how many attempts failed and
# ran again: a run with one measured a restart as well as the exchange. Mode
# `distributed-tls` is the distributed run with mutual TLS between the processes, as the
# operator runs jobs (certificates made here with openssl, in the layout of
# crds/src/tls.rs).
#
#   bench/distributed.sh                                   # q0 and q5, 2 workers
#   QUERIES="q5" WORKERS=3 EVENTS=20000000 STATE=heap bench/distributed.sh
#   MODES="distributed distributed-tls" QUERIES=q5 STATE=heap bench/distributed.sh
set -euo pipefail
cd "$(dirname "$0")/.."

QUERIES="${QUERIES:-q0 q5}"
WORKERS="${WORKERS:-2}"
EVENTS="${EVENTS:-10000000}"
STATE="${STATE:-rocksdb}"
MODES="${MODES:-embedded distributed}"

[[ -x /usr/bin/time ]] || { echo "GNU time measures each process's CPU: apt-get install time" >&2; exit 1; }
cargo build --release -q -p sluice-runtime --bin sluice
bin="${CARGO_TARGET_DIR:-target}/release/sluice"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# A job's CA and the certificate it signs, for the name every peer checks.
certificates() {
  local dir=$1
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=bench" \
    -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
  printf 'subjectAltName=DNS:peer.sluice.internal\nextendedKeyUsage=serverAuth,clientAuth\n' \
    >"$dir/ext"
  openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -days 2 \
    -extfile "$dir/ext" -out "$dir/tls.crt" 2>/dev/null
}
certificates "$work/tls"

loopback_bytes() { awk '/^ *lo:/{print $2}' /proc/net/dev; }
# CPU seconds (user + system) of a finished process, from GNU time's output file.
cpu_of() { awk '{s += $1 + $2} END {print s}' "$@"; }

printf '%-6s %-15s %8s %12s %14s %14s %7s\n' query mode wall-s events/s events/CPU-s loopback-B/s failed
for q in $QUERIES; do
  manifest="$work/$q.yaml"
  cat >"$manifest" <<YAML
apiVersion: sluice.dev/v1alpha1
kind: StreamJob
metadata:
  name: bench-$q
spec:
  job:
    name: nexmark-$q
    config:
      generator:
        events: $EVENTS
        eventsPerSecond: 100000
      output: discard
  parallelism: $WORKERS
YAML
  for mode in $MODES; do
    tls=()
    [ "$mode" = distributed-tls ] && tls=(--tls-dir "$work/tls")
    rm -rf "$work/state"* "$work"/*.time
    before=$(loopback_bytes)
    start=$(date +%s.%N)
    if [ "$mode" = embedded ]; then
      /usr/bin/time -f '%U %S' -o "$work/run.time" "$bin" run "$manifest" --progress-interval 0 \
        --state-backend "$STATE" --state-dir "$work/state" 2>"$work/run.log" \
        || { cat "$work/run.log"; exit 1; }
    else
      /usr/bin/time -f '%U %S' -o "$work/coordinator.time" "$bin" coordinator "$manifest" \
        --listen 127.0.0.1:0 --state-backend "$STATE" "${tls[@]}" 2>"$work/coordinator.log" &
      coordinator=$!
      until grep -q 'listening for workers on' "$work/coordinator.log"; do sleep 0.05; done
      address=$(sed -n 's/.*listening for workers on //p' "$work/coordinator.log")
      for w in $(seq 1 "$WORKERS"); do
        /usr/bin/time -f '%U %S' -o "$work/worker-$w.time" "$bin" worker --coordinator "$address" \
          --name "w$w" --slots 1 --data-addr 127.0.0.1:0 --state-dir "$work/state-$w" "${tls[@]}" \
          2>"$work/worker-$w.log" &
      done
      wait "$coordinator" || { cat "$work/coordinator.log"; exit 1; }
      wait
    fi
    end=$(date +%s.%N)
    after=$(loopback_bytes)
    failed=0
    if [ "$mode" != embedded ]; then
      failed=$(grep -c 'attempt [0-9]* failed' "$work/coordinator.log" || true)
      grep -m 1 'attempt [0-9]* failed' "$work/coordinator.log" >&2 || true
    fi
    awk -v q="$q" -v m="$mode" -v s="$start" -v e="$end" -v n="$EVENTS" -v c="$(cpu_of "$work"/*.time)" \
      -v b="$((after - before))" -v f="$failed" \
      'BEGIN { w = e - s; printf "%-6s %-15s %8.2f %12.0f %14.0f %14.0f %7d\n", q, m, w, n / w, n / c, b / w, f }'
  done
done

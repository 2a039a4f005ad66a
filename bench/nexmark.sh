#!/usr/bin/env bash
# Nexmark throughput of the embedded runtime: events/s and events per CPU-second (whole
# process CPU time) for each query and parallelism, the generator at 100,000 events per
# second of event time, results discarded (counted). Prints one table row per run.
#
#   bench/nexmark.sh                      # q0 q1 q2 q5 q7 q8 at parallelism 1 and 2
#   QUERIES="q5 q7" PARALLELISM="2" EVENTS=20000000 STATE=heap bench/nexmark.sh
#   SLUICE_BIN=/tmp/sluice-before QUERIES=q5 bench/nexmark.sh   # a binary built elsewhere
#
# STATE is the state backend (rocksdb, the default, or heap) of process functions and of
# window and window-join contents.
set -euo pipefail
cd "$(dirname "$0")/.."

QUERIES="${QUERIES:-q0 q1 q2 q5 q7 q8}"
PARALLELISM="${PARALLELISM:-1 2}"
EVENTS="${EVENTS:-10000000}"
STATE="${STATE:-rocksdb}"

# SLUICE_BIN runs a binary built elsewhere (another revision, for a before/after figure).
if [[ -z ${SLUICE_BIN:-} ]]; then
  cargo build --release -q -p sluice-runtime --bin sluice
fi
bin="${SLUICE_BIN:-${CARGO_TARGET_DIR:-target}/release/sluice}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

printf '%-6s %-4s %-6s %12s %12s %14s\n' query par state events events/s events/CPU-s
for q in $QUERIES; do
  for p in $PARALLELISM; do
    manifest="$work/$q-$p.yaml"
    cat >"$manifest" <<YAML
apiVersion: sluice.dev/v1alpha1
kind: StreamJob
metadata:
  name: bench-$q
spec:
  image: sluice:dev
  job:
    name: nexmark-$q
    config:
      generator:
        events: $EVENTS
        eventsPerSecond: 100000
      output: discard
  parallelism: $p
  maxParallelism: 128
YAML
    "$bin" run "$manifest" --progress-interval 0 --state-backend "$STATE" \
      --state-dir "$work/state" 2>"$work/out" || { cat "$work/out"; exit 1; }
    events=$(awk '/^  events /{print $2}' "$work/out")
    rate=$(awk '/events\/s /{print $2}' "$work/out")
    per_cpu=$(awk '/events\/CPU-s/{print $2}' "$work/out")
    printf '%-6s %-4s %-6s %12s %12s %14s\n' "$q" "$p" "$STATE" "$events" "$rate" "$per_cpu"
  done
done

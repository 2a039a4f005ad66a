#!/usr/bin/env bash
# Sluice beside Apache Flink on the bundled Nexmark queries (q0 q1 q2 q5 q7 q8), one command:
#
#   bench/flink/run.sh
#   QUERIES="q5 q7" PARALLELISM="2" STATES="rocksdb" RUNS=5 bench/flink/run.sh
#
# 1. Builds the sluice binary (release) and the Flink job (Maven project here; Flink from
#    Maven Central, local repository and build output in $SLUICE_CACHE).
# 2. Checks that both engines give the same results: each query runs on a small event count
#    (CHECK_EVENTS, default 2,000,000 for the windowed queries, 200,000 for q0 q1 q2) at each
#    parallelism, writing its output; the sorted output lines of the two must be identical.
#    For q7 both Flink shapes are checked. A difference stops the script.
# 3. Runs every query RUNS times (default 3) at each parallelism, for both engines, with the
#    generator at 100,000 events per second of event time and results discarded (counted).
#    Stateful queries (q5 q7 q8) run with each state backend in STATES (heap: Sluice's heap
#    backend and Flink's HashMapStateBackend; rocksdb: both engines' RocksDB backends); the
#    stateless ones (q0 q1 q2) keep no state, so they run once per parallelism (state "-").
#    q7 runs on Flink twice: "flink" is the one-pass maximum Sluice uses (local and global
#    aggregation keeping only the highest bids), "flink-std" the standard shape (the
#    window's highest price, joined back with the window's bids).
# 4. Prints the table (median and min–max of events/s and events per CPU-second, and the
#    Sluice/Flink ratios) and writes it to $OUT (default bench/flink/results): nexmark.csv,
#    nexmark.md, nexmark.png, and runs.csv with every single run.
#
# Events per run: EVENTS for every query if set, else EVENTS_<query> (EVENTS_q5=...), by
# default 10,000,000 for q0 q1 q2, 5,000,000 for q8 and 2,000,000 for q5 and q7, whose
# RocksDB runs on Flink take about a minute each even so.
#
# Measurement. Sluice: its own summary, i.e. the job's wall time and the whole process's
# CPU time (user + system) from the job's start. Flink: the job in a MiniCluster in one JVM
# (StreamExecutionEnvironment local execution, object reuse on, otherwise Flink's defaults,
# including local execution's managed and network memory), from its submission to its
# result; CPU time of the whole JVM process (every thread: tasks, JIT, GC) over that
# interval. The JVM's start and the MiniCluster's start (several seconds of CPU) are left
# out, which favours Flink. JVM flags: $FLINK_JVM_OPTS, default "-Xms2g -Xmx2g" (heap
# fixed so that figures do not depend on the machine's memory; G1, the default collector).
set -euo pipefail
cd "$(dirname "$0")/../.."

export SLUICE_CACHE="${SLUICE_CACHE:-/var/cache/sluice}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SLUICE_CACHE/cargo-target}"
export CARGO_INCREMENTAL=0

QUERIES="${QUERIES:-q0 q1 q2 q5 q7 q8}"
PARALLELISM="${PARALLELISM:-1 2}"
STATES="${STATES:-heap rocksdb}"
RUNS="${RUNS:-3}"
EVENTS="${EVENTS:-}"
CHECK_EVENTS="${CHECK_EVENTS:-2000000}"
OUT="${OUT:-bench/flink/results}"
FLINK_JVM_OPTS="${FLINK_JVM_OPTS:--Xms2g -Xmx2g}"

# Link RocksDB from the cache as .ci/run does; without it the crate builds its own.
rocksdb_lib="$(bash runtime/rocksdb-cache.sh path)"
if [[ -f $rocksdb_lib/librocksdb.a ]]; then
  export ROCKSDB_LIB_DIR="$rocksdb_lib" ROCKSDB_STATIC=1
fi

echo "building sluice" >&2
nice cargo build --release -q -p sluice-runtime --bin sluice
sluice="$CARGO_TARGET_DIR/release/sluice"

echo "building the Flink job" >&2
build_dir="$SLUICE_CACHE/flink-bench/target"
mkdir -p "$SLUICE_CACHE/flink-bench"
nice mvn -q -B -f bench/flink/pom.xml -Dmaven.repo.local="$SLUICE_CACHE/maven" \
  -Dbench.build.dir="$build_dir" package >"$SLUICE_CACHE/flink-bench/mvn.log" 2>&1 ||
  { cat "$SLUICE_CACHE/flink-bench/mvn.log" >&2; exit 1; }
flink_cp="$build_dir/nexmark-flink-0.1.0.jar:$(cat "$build_dir/classpath.txt")"

# matplotlib for the chart: the system's if it has one, else a virtual environment in the cache.
python=python3
if ! python3 -c 'import matplotlib' 2>/dev/null; then
  venv="$SLUICE_CACHE/flink-bench/venv"
  if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    echo "installing matplotlib into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q matplotlib
  fi
  python="$venv/bin/python"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$OUT"

stateful() { [[ $1 == q5 || $1 == q7 || $1 == q8 ]]; }

# run_sluice QUERY EVENTS PARALLELISM STATE OUTPUT: prints "events seconds cpu_seconds".
run_sluice() {
  local manifest="$work/manifest.yaml"
  cat >"$manifest" <<YAML
apiVersion: sluice.dev/v1alpha1
kind: StreamJob
metadata:
  name: bench-$1
spec:
  image: sluice:dev
  job:
    name: nexmark-$1
    config:
      generator:
        events: $2
        eventsPerSecond: 100000
      output: $5
  parallelism: $3
  maxParallelism: 128
YAML
  rm -rf "$work/state"
  "$sluice" run "$manifest" --progress-interval 0 --state-backend "$4" \
    --state-dir "$work/state" 2>"$work/sluice.err" >/dev/null || { cat "$work/sluice.err" >&2; return 1; }
  rm -rf "$work/state"
  local late
  late=$(awk '/^  late records /{print $3}' "$work/sluice.err")
  [[ $late == 0 ]] || { echo "sluice $1: $late late records" >&2; return 1; }
  awk '/^finished in /{s=$3; sub(/s$/, "", s)} /^  events /{e=$2} /^  CPU time /{c=$3; sub(/s$/, "", c)}
       END {print e, s, c}' "$work/sluice.err"
}

# run_flink QUERY EVENTS PARALLELISM STATE VARIANT [OUTPUT]: prints "events seconds cpu_seconds".
run_flink() {
  local backend=hashmap
  [[ $4 == rocksdb ]] && backend=rocksdb
  local out=()
  [[ -n ${6:-} ]] && out=(--output "$6")
  rm -rf "$work/tmp" && mkdir -p "$work/tmp"
  # shellcheck disable=SC2086 # FLINK_JVM_OPTS is a list of flags
  java $FLINK_JVM_OPTS -cp "$flink_cp" dev.sluice.bench.flink.Main --query "$1" --events "$2" \
    --parallelism "$3" --state "$backend" --variant "$5" --tmp "$work/tmp" "${out[@]}" \
    >"$work/flink.out" 2>"$work/flink.err" || { cat "$work/flink.err" "$work/flink.out" >&2; return 1; }
  rm -rf "$work/tmp"
  awk '/^events /{e=$2} /^seconds /{s=$2} /^cpuSeconds /{c=$2} END {print e, s, c}' "$work/flink.out"
}

sorted_lines() { cat "$1"/part-*.jsonl 2>/dev/null | LC_ALL=C sort; }

echo "== checking that both engines give the same results" >&2
for q in $QUERIES; do
  n=$CHECK_EVENTS
  stateful "$q" || n=$((CHECK_EVENTS < 200000 ? CHECK_EVENTS : 200000))
  variants=onepass
  [[ $q == q7 ]] && variants="onepass standard"
  for p in $PARALLELISM; do
    rm -rf "$work/sluice-out" && mkdir -p "$work/sluice-out"
    run_sluice "$q" "$n" "$p" heap "$work/sluice-out" >/dev/null
    sorted_lines "$work/sluice-out" >"$work/sluice.txt"
    rm -rf "$work/sluice-out"
    for v in $variants; do
      rm -rf "$work/flink-out"
      run_flink "$q" "$n" "$p" heap "$v" "$work/flink-out" >/dev/null
      sorted_lines "$work/flink-out" >"$work/flink.txt"
      rm -rf "$work/flink-out"
      lines=$(wc -l <"$work/sluice.txt")
      label=""
      [[ $q == q7 ]] && label="($v)"
      if ! cmp -s "$work/sluice.txt" "$work/flink.txt"; then
        echo "MISMATCH $q parallelism $p $label: sluice $lines lines, flink $(wc -l <"$work/flink.txt") lines" >&2
        diff "$work/sluice.txt" "$work/flink.txt" | head -n 10 >&2 || true # head closes the pipe early
        exit 1
      fi
      [[ $lines -gt 0 ]] || { echo "$q: no output to compare" >&2; exit 1; }
      printf 'same  %-3s parallelism %s %-10s %9d events  %8d result lines\n' "$q" "$p" "$label" "$n" "$lines" >&2
    done
  done
done
rm -f "$work/sluice.txt" "$work/flink.txt"

echo "== measuring ($RUNS runs each)" >&2
raw="$OUT/runs.csv"
echo "query,parallelism,state,engine,events,seconds,cpu_seconds" >"$raw"
for q in $QUERIES; do
  case $q in
    q5 | q7) default=2000000 ;;
    q8) default=5000000 ;;
    *) default=10000000 ;;
  esac
  per_query="EVENTS_$q"
  n=${EVENTS:-${!per_query:-$default}}
  states="-"
  stateful "$q" && states=$STATES
  for p in $PARALLELISM; do
    for s in $states; do
      backend=$s
      [[ $s == - ]] && backend=heap
      engines="sluice flink"
      [[ $q == q7 ]] && engines="sluice flink flink-std"
      for e in $engines; do
        for ((i = 1; i <= RUNS; i++)); do
          case $e in
            sluice) m=$(run_sluice "$q" "$n" "$p" "$backend" discard) ;;
            flink) m=$(run_flink "$q" "$n" "$p" "$backend" onepass) ;;
            flink-std) m=$(run_flink "$q" "$n" "$p" "$backend" standard) ;;
          esac
          read -r events secs cpu <<<"$m"
          printf '%-3s p%s %-7s %-9s run %d: %s events in %ss, %s CPU-s\n' \
            "$q" "$p" "$s" "$e" "$i" "$events" "$secs" "$cpu" >&2
          echo "$q,$p,$s,$e,$events,$secs,$cpu" >>"$raw"
        done
      done
    done
  done
done

"$python" bench/flink/report.py "$raw" "$OUT"
echo "wrote $OUT/nexmark.csv, $OUT/nexmark.md, $OUT/nexmark.png and $raw" >&2

#!/usr/bin/env bash
# Kafka throughput on one broker (e2e/kafka/broker.sh), beside the generator: records per
# CPU-second of the sluice process (user + system time, librdkafka's threads included, the
# broker's not) for
#
#   generator -> q -> discard        the engine alone
#   kafka     -> q -> kafka          events read from a topic, results written exactly once
#
# for q0 (every bid passes) and q5 (sliding windows), each run RUNS times. The events are
# produced once (`sluice nexmark produce`) into a topic of PARTITIONS partitions.
#
#   bench/kafka.sh
#   EVENTS=2000000 RUNS=3 PARALLELISM=2 bench/kafka.sh
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS="${EVENTS:-2000000}"
RUNS="${RUNS:-3}"
PARALLELISM="${PARALLELISM:-2}"
PARTITIONS="${PARTITIONS:-8}"
CHECKPOINT_INTERVAL="${CHECKPOINT_INTERVAL:-5s}"

cargo build --release -q -p sluice-runtime --bin sluice
bin="${CARGO_TARGET_DIR:-target}/release/sluice"
work="$(mktemp -d)"
cleanup() {
  e2e/kafka/broker.sh stop --dir "$work/kafka" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

bootstrap=$(e2e/kafka/broker.sh start --dir "$work/kafka")
e2e/kafka/broker.sh topic --dir "$work/kafka" --name events --partitions "$PARTITIONS"
"$bin" nexmark produce "kafka://$bootstrap/events" --events "$EVENTS"

run() {
  local name=$1 job=$2 input=$3 output=$4
  local manifest="$work/$name.yaml"
  cat >"$manifest" <<YAML
apiVersion: sluice.dev/v1alpha1
kind: StreamJob
metadata:
  name: $name
spec:
  image: sluice:dev
  job:
    name: $job
    config:
      generator:
        events: $EVENTS
      sourceSplits: $PARTITIONS
$input
      output: $output
      kafka:
        source: {bounded: true}
        sink: {transactionalIdPrefix: $name}
  parallelism: $PARALLELISM
  maxParallelism: 128
YAML
  rm -rf "$work/chk" "$work/state"
  "$bin" run "$manifest" --progress-interval 0 --state-backend rocksdb \
    --state-dir "$work/state" --checkpoint-interval "$CHECKPOINT_INTERVAL" \
    --checkpoint-dir "$work/chk" 2>"$work/out" || { cat "$work/out"; exit 1; }
  local records rate per_cpu
  records=$(awk '/^  events /{print $2}' "$work/out")
  rate=$(awk '/events\/s /{print $2}' "$work/out")
  per_cpu=$(awk '/events\/CPU-s/{print $2}' "$work/out")
  printf '%-26s %4s %12s %12s %14s\n' "$name" "$PARALLELISM" "$records" "$rate" "$per_cpu"
}

printf '%-26s %4s %12s %12s %14s\n' path par records records/s records/CPU-s
for round in $(seq 1 "$RUNS"); do
  for q in q0 q5; do
    topic="out-$q-$round"
    e2e/kafka/broker.sh topic --dir "$work/kafka" --name "$topic" --partitions "$PARTITIONS" 2>/dev/null
    run "generator-$q-discard" "nexmark-$q" "" discard
    run "kafka-$q-kafka-$round" "nexmark-$q" "      input: kafka://$bootstrap/events" \
      "kafka://$bootstrap/$topic"
  done
done

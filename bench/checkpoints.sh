#!/usr/bin/env bash
# Checkpoints of large RocksDB state: full and incremental checkpoint duration and size,
# per-batch latency while checkpoints run under load, restore throughput: of the latest
# checkpoint at the same parallelism, and of a savepoint at RESTORE_PARALLELISM (4), with the
# bytes each subtask read.
#
#   bench/checkpoints.sh                          # 1 Mi keys x 1 KiB = 1 GiB of state
#   KEYS=100000 LOAD_SECONDS=5 bench/checkpoints.sh
#   LOAD_RATE=0 bench/checkpoints.sh              # load as fast as the job takes it
#                                                 # (default: 20,000 updates/s, 20 MiB/s)
#   PARALLELISM=2 RESTORE_PARALLELISM=3 bench/checkpoints.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -q -p sluice-runtime --example checkpoint_bench

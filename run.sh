#!/usr/bin/env bash
# The README's first command: builds the `sluice` binary and runs a job embedded, as its
# StreamJob manifest says.
#
#   ./run.sh                                   # the bundled Nexmark q5 job
#   ./run.sh config/samples/fraud-small-then-large.yaml --parallelism 1
#
# Arguments are those of `sluice run` (see `sluice run --help`). What the build needs and a
# fresh machine lacks (libclang for the rocksdb crate) is installed first.
set -euo pipefail
cd "$(dirname "$0")"
bash runtime/build-deps.sh

binary="${CARGO_TARGET_DIR:-target}/release/sluice"
if [[ ! -x $binary ]]; then
  echo "First build: RocksDB (C++), librdkafka (C) and about 350 crates compile in release mode. On 2 cores" \
    "this takes about 20 minutes; later runs start at once." >&2
fi
cargo build --release -p sluice-runtime --bin sluice
(($#)) || set -- config/samples/nexmark-q5.yaml
exec "$binary" run "$@"

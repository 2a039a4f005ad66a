#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a bounded time, starting from its committed
# corpus (fuzz/corpus/<target>; the run works on a copy, so the corpus changes only when
# someone adds to it on purpose).
#
#   bash fuzz/run.sh build            cargo-fuzz (installed once per version into the cache)
#                                     and every target
#   bash fuzz/run.sh run [SECONDS]    each target for SECONDS (default 60); stops at the first
#                                     crash, whose input cargo-fuzz saves under fuzz/artifacts/
#   bash fuzz/run.sh run SECONDS T    target T only
#
# Stable Rust, so no sanitizer (`-s none`); the targets' allocator aborts on an oversized
# allocation instead (fuzz/src/lib.rs). Export ROCKSDB_LIB_DIR as for any build of the
# runtime, or RocksDB is compiled from source first.
set -euo pipefail
cd "$(dirname "$0")"

cache="${SLUICE_CACHE:-/var/cache/sluice}"
# Its own target directory: the instrumentation flags differ from every other build's.
export CARGO_TARGET_DIR="$cache/fuzz-target"
export CARGO_INCREMENTAL=0
cargo_fuzz_version=0.13.2
cargo_fuzz="$cache/cargo-fuzz/$cargo_fuzz_version"
if [[ ! -x $cargo_fuzz/bin/cargo-fuzz ]]; then
  rm -rf "$cargo_fuzz.tmp"
  cargo install --quiet --locked cargo-fuzz --version "$cargo_fuzz_version" --root "$cargo_fuzz.tmp"
  rm -rf "$cargo_fuzz" && mv "$cargo_fuzz.tmp" "$cargo_fuzz"
fi
export PATH="$cargo_fuzz/bin:$PATH"

targets=(stream_job data_frames control_messages snapshot_manifest key_group)

case "${1:-}" in
build)
  python3 ../.ci/prune-cargo-target.py "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
  cargo fuzz build -s none --fuzz-dir .
  ;;
run)
  seconds="${2:-60}"
  [[ -n ${3:-} ]] && targets=("$3")
  for target in "${targets[@]}"; do
    work="$(mktemp -d)"
    cp -r "corpus/$target/." "$work"
    echo "fuzzing $target for ${seconds}s from $(ls "$work" | wc -l) inputs"
    log="$work.log"
    # -rss_limit_mb: a leak or a state that grows per input fails the run too.
    status=0
    cargo fuzz run -s none --fuzz-dir . "$target" "$work" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
      >"$log" 2>&1 || status=$?
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
    if [[ $status != 0 ]]; then
      tail -n 40 "$log"
    fi
    rm -f "$log"
    rm -rf "$work"
    if [[ $status != 0 ]]; then
      echo "fuzz target $target failed (exit $status); its input is under fuzz/artifacts/$target/" >&2
      exit 1
    fi
  done
  ;;
*)
  echo "usage: $0 build | run [SECONDS [TARGET]]" >&2
  exit 2
  ;;
esac

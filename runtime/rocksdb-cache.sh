#!/usr/bin/env bash
# Where the cached RocksDB library of the locked librocksdb-sys version lives, for
# ROCKSDB_LIB_DIR. `path` prints the directory (the library may not be there yet); `build`
# also builds it there first when it is missing.
#
# RocksDB's C++ build is the longest step of a cold build, and cargo would repeat it for every
# profile and feature set: it is built once per version and linked from the cache. The cached
# copy has no debug info: with it the archive is 1.4 GB, rustc copies it into every build of
# the librocksdb-sys rlib, and every test executable carried some 300 MB of it.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${SLUICE_CACHE:-/var/cache/sluice}"
version="$(awk '/^name = "librocksdb-sys"$/ {getline; gsub(/[^0-9.+a-z]/, "", $0); sub(/^version/, "", $0); print}' Cargo.lock)"
dir="$cache/rocksdb/$version-lz4-nodebug"
case "${1:-}" in
  path) ;;
  build)
    if [[ ! -f $dir/librocksdb.a ]]; then
      target="${CARGO_TARGET_DIR:-target}"
      (unset ROCKSDB_LIB_DIR ROCKSDB_STATIC && cargo build -q -p sluice-runtime --lib)
      built="$(ls -t "$target"/debug/build/librocksdb-sys-*/out/librocksdb.a | head -n 1)"
      mkdir -p "$dir"
      strip --strip-debug -o "$dir/librocksdb.a.tmp" "$built"
      mv "$dir/librocksdb.a.tmp" "$dir/librocksdb.a"
    fi
    ;;
  *)
    echo "usage: $0 path|build" >&2
    exit 2
    ;;
esac
echo "$dir"

#!/usr/bin/env bash
# Installs what building the runtime needs and a fresh machine may lack, then exits.
#
# The rocksdb crate compiles RocksDB (C++) from source and generates its Rust bindings with
# bindgen, which loads libclang while the build runs. No maintained release of the crate
# ships pre-generated bindings, so libclang has to be on the machine: this script installs
# Debian's libclang-dev (and a C++ compiler, and OpenSSL's headers for librdkafka, the Kafka
# client) with apt-get when they are missing — as root, or through sudo — and says what to
# install on other systems. Rust itself is expected to
# be there (rustup); the workspace's rust-version is in Cargo.toml.
set -euo pipefail

say() { printf 'build-deps: %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null; then
  say "cargo is missing: install Rust with rustup, then run this again"
  exit 1
fi

# bindgen finds libclang through LIBCLANG_PATH or the linker's search path.
has_libclang() {
  [[ -n ${LIBCLANG_PATH:-} ]] && return 0
  ldconfig -p 2>/dev/null | grep -Eq '[[:space:]]libclang(-[0-9.]+)?\.so'
}

missing=()
if command -v dpkg >/dev/null; then
  # Debian and Ubuntu: the packages, which also bring clang's own C headers that bindgen
  # needs besides the library.
  dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
  command -v c++ >/dev/null || missing+=(g++)
  command -v make >/dev/null || missing+=(make)
  # librdkafka (the Kafka client, compiled from source) links the system's OpenSSL.
  dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
else
  has_libclang || missing+=(libclang)
  command -v c++ >/dev/null || missing+=("a C++ compiler")
fi
((${#missing[@]})) || exit 0

if ! command -v apt-get >/dev/null; then
  say "missing: ${missing[*]}. Install them with the system's package manager"
  say "(Fedora: dnf install clang-devel gcc-c++ openssl-devel; macOS: xcode-select --install), then run this again"
  exit 1
fi
sudo=()
if ((EUID != 0)); then
  command -v sudo >/dev/null || { say "missing: ${missing[*]}; run as root or install sudo"; exit 1; }
  sudo=(sudo)
fi
say "installing ${missing[*]} (apt-get)"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
has_libclang || { say "libclang-dev is installed but no libclang shared library is on the linker's path"; exit 1; }

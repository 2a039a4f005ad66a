#!/usr/bin/env bash
# Builds container images without a Docker daemon and imports them into the cluster's
# containerd: an OCI layout made with umoci from our binaries (plus the shared libraries
# they load), packed as an OCI archive, loaded with `ctr images import`.
#
#   images.sh system   # the pause and CoreDNS images the cluster itself needs
#   images.sh sluice   # sluice.local/sluice:dev from the workspace's release build
#   images.sh operator # sluice.local/sluice-operator:dev, the operator
#   images.sh e2e      # sluice.local/e2e-echo:dev, the end-to-end tests' helper
#   images.sh sessions # sluice.local/sessions:{dev,v2,v2-incompatible}, the template job of
#                      # examples/custom-job in its three versions (see its README)
#
# With SLUICE_IMAGE_ARCHIVES=<dir>, the OCI archives are written there (<name>-<tag>.tar)
# instead, and no containerd is needed: for another cluster, e.g.
# `kind load image-archive <dir>/sluice-dev.tar`.
set -euo pipefail
source "$(dirname "$0")/env.sh"
CTR=(ctr --address "$CONTAINERD_SOCK" -n k8s.io)

# image <name:tag> <entrypoint> <source>=<path>...: an image holding each source file at its
# path, and the shared libraries they load at their host paths.
image() {
  local ref=$1 entrypoint=$2; shift 2
  local name=${ref%:*} tag=${ref##*:}
  if [[ -z ${SLUICE_IMAGE_ARCHIVES:-} ]] && "${CTR[@]}" images ls -q | grep -x "$ref" >/dev/null; then
    return
  fi
  local work
  work=$(mktemp -d)
  umoci init --layout "$work/oci" >/dev/null
  umoci new --image "$work/oci:$tag" >/dev/null
  umoci unpack --image "$work/oci:$tag" "$work/bundle" >/dev/null
  local root="$work/bundle/rootfs"
  for spec in "$@"; do
    local f=${spec%%=*} dest=${spec#*=}
    install -D "$f" "$root$dest"
    # Debug info is most of a release binary's size (RocksDB's especially): images carry
    # the binary without it; symbols stay, so backtraces still name functions.
    if [[ $(head -c 4 "$f" | od -An -c | tr -d ' ') == 177ELF ]]; then
      strip --strip-debug "$root$dest"
    fi
    # Shared libraries the binary loads, and the loader itself.
    { ldd "$f" 2>/dev/null || true; } | { grep -o '/[^ ]*' || true; } | while read -r lib; do
      [[ -e "$root$lib" ]] || install -D "$(readlink -f "$lib")" "$root$lib"
    done
  done
  mkdir -p "$root/tmp" "$root/etc"
  echo "root:x:0:0:root:/:/bin/false" >"$root/etc/passwd"
  # The machine's CA bundle: an HTTP client with TLS support (object storage's) refuses to
  # start without trust roots, even for a plain-HTTP endpoint.
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  umoci repack --image "$work/oci:$tag" "$work/bundle" >/dev/null
  umoci config --image "$work/oci:$tag" --config.entrypoint "$entrypoint" >/dev/null
  if [[ -n ${SLUICE_IMAGE_ARCHIVES:-} ]]; then
    # The full reference, not only the tag: an import without a base name keeps it.
    sed -i "s|\"org.opencontainers.image.ref.name\":\"$tag\"|\"org.opencontainers.image.ref.name\":\"$ref\"|" \
      "$work/oci/index.json"
  fi
  tar -C "$work/oci" -cf "$work/image.tar" .
  if [[ -n ${SLUICE_IMAGE_ARCHIVES:-} ]]; then
    mkdir -p "$SLUICE_IMAGE_ARCHIVES"
    mv "$work/image.tar" "$SLUICE_IMAGE_ARCHIVES/${name##*/}-$tag.tar"
    rm -rf "$work"
    log "image $ref: $SLUICE_IMAGE_ARCHIVES/${name##*/}-$tag.tar"
    return
  fi
  "${CTR[@]}" images import --base-name "$name" "$work/image.tar" >/dev/null
  rm -rf "$work"
  # Not `grep -q`: it stops reading at the first match, ctr then dies of SIGPIPE, and with
  # pipefail a listed image reads as missing.
  "${CTR[@]}" images ls -q | grep -x "$ref" >/dev/null || die "image $ref was not imported"
  log "image $ref"
}

# Removes an older build of the image from the cluster's containerd, if there is one; its
# content is gone before the new build is imported (an asynchronous removal can race it).
forget() {
  [[ -n ${SLUICE_IMAGE_ARCHIVES:-} ]] || "${CTR[@]}" images rm --sync "$1" >/dev/null 2>&1 || true
}

# The pause container only has to sleep until it is killed.
pause_binary() {
  local bin="$SLUICE_CACHE/pause/bin/pause"
  if [[ ! -x $bin ]]; then
    local src="$SLUICE_CACHE/pause/src"
    mkdir -p "$src" "$(dirname "$bin")"
    cat >"$src/main.go" <<'GO'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
GO
    printf 'module sluice.dev/e2e/pause\n\ngo 1.21\n' >"$src/go.mod"
    (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin" .)
  fi
  echo "$bin"
}

# The cargo profile of our binaries: CI uses `dev` (opt-level 1, dependencies optimized),
# which its test stage has already built, instead of compiling RocksDB once more.
profile="${SLUICE_IMAGE_PROFILE:-release}"
profile_dir="$([[ $profile == dev ]] && echo debug || echo "$profile")"
target="${CARGO_TARGET_DIR:-$here/../../target}"

# build <package> <binary> [<feature of the package>]: builds one of our binaries into
# $target/$profile_dir. In the dev profile it is built the way the README's test command
# builds it, as part of the whole workspace's tests: cargo unifies dependency features over
# the packages (and dev-dependencies) of one invocation, so `cargo build -p <package>` alone
# would compile most dependencies a second time, minutes per binary, where this only links.
build() (
  local package=$1 binary=$2 feature=${3:-}
  cd "$here/../.."
  if [[ $profile != dev ]]; then
    cargo build --profile "$profile" -q -p "$package" --bin "$binary" ${feature:+--features "$feature"}
  elif [[ $package == sluice-example-sessions ]]; then
    # One version of the template job per image: only that crate is compiled again.
    cargo test --workspace --no-run -q ${feature:+--features "$package/$feature"}
  else
    cargo test --workspace --all-features --no-run -q
  fi
)

case "${1:-}" in
  system)
    image "$PAUSE_IMAGE" /pause "$(pause_binary)=/pause"
    image "$COREDNS_IMAGE" /coredns "$COREDNS_BIN/coredns=/coredns"
    ;;
  sluice)
    build sluice-runtime sluice
    forget sluice.local/sluice:dev
    image sluice.local/sluice:dev /usr/local/bin/sluice "$target/$profile_dir/sluice=/usr/local/bin/sluice"
    ;;
  e2e)
    build sluice-e2e e2e-echo
    forget sluice.local/e2e-echo:dev
    image sluice.local/e2e-echo:dev /usr/local/bin/e2e-echo "$target/$profile_dir/e2e-echo=/usr/local/bin/e2e-echo"
    ;;
  operator)
    build sluice-operator sluice-operator
    forget sluice.local/sluice-operator:dev
    image sluice.local/sluice-operator:dev /usr/local/bin/sluice-operator "$target/$profile_dir/sluice-operator=/usr/local/bin/sluice-operator"
    ;;
  sessions)
    # A user's own image: the template crate's binary, once per version of the job. Each
    # build replaces the binary, so each image is made before the next build.
    for version in dev: v2:v2 v2-incompatible:v2-incompatible-state; do
      tag=${version%%:*} feature=${version#*:}
      build sluice-example-sessions sessions "$feature"
      forget "sluice.local/sessions:$tag"
      image "sluice.local/sessions:$tag" /usr/local/bin/sessions "$target/$profile_dir/sessions=/usr/local/bin/sessions"
    done
    ;;
  *) die "usage: images.sh system|sluice|operator|e2e|sessions" ;;
esac

#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (Apache-2.0), the S3-compatible server the checkpoint-storage
# tests run against, from its Go module into the cache (keyed by version). Prints the
# binary's path last. A binary already in the cache is not rebuilt.
set -euo pipefail
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6
SLUICE_CACHE="${SLUICE_CACHE:-/var/cache/sluice}"
export GOCACHE="$SLUICE_CACHE/go-build"
export GOMODCACHE="$SLUICE_CACHE/go-mod"
bin="$SLUICE_CACHE/seaweedfs/$SEAWEEDFS_VERSION"
src="$bin/src"
mkdir -p "$GOCACHE" "$GOMODCACHE" "$src"

log() { printf '[build %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
command -v go >/dev/null || { echo "go is required to build the S3 server" >&2; exit 1; }

if [[ -x "$bin/weed" ]]; then
  log "seaweedfs $SEAWEEDFS_VERSION: cached"
else
  # The module's go.mod has a replace directive, so `go install module@version` refuses
  # it; a wrapper module requires it and repeats its replace directives instead.
  if [[ ! -f "$src/go.sum" ]]; then
    log "seaweedfs $SEAWEEDFS_VERSION: resolving modules"
    module=$(go mod download -json "github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION" |
      sed -n 's/.*"Dir": "\(.*\)",/\1/p')
    {
      printf 'module sluice.dev/e2e/seaweedfs-build\n\n'
      grep '^go ' "$module/go.mod"
      printf '\nrequire github.com/seaweedfs/seaweedfs %s\n\n' "$SEAWEEDFS_VERSION"
      grep '^replace ' "$module/go.mod" || true
      sed -n '/^replace (/,/^)/p' "$module/go.mod"
    } >"$src/go.mod.tmp"
    mv "$src/go.mod.tmp" "$src/go.mod"
    # Resolving the main package records all of its dependencies in go.sum.
    (cd "$src" && go get "github.com/seaweedfs/seaweedfs/weed@$SEAWEEDFS_VERSION" 2>"$src/get.log") ||
      { cat "$src/get.log" >&2; exit 1; }
  fi
  log "seaweedfs $SEAWEEDFS_VERSION: building weed"
  start=$SECONDS
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/weed.tmp" \
    github.com/seaweedfs/seaweedfs/weed) && mv "$bin/weed.tmp" "$bin/weed"
  log "seaweedfs $SEAWEEDFS_VERSION: built in $((SECONDS - start))s"
fi
echo "$bin/weed"

#!/usr/bin/env bash
# Builds the cluster's binaries from their Go modules into the cache (keyed by version):
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy from
# k8s.io/kubernetes, etcd from go.etcd.io/etcd, CoreDNS from github.com/coredns/coredns.
# A binary already in the cache is not rebuilt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/versions.sh"
mkdir -p "$GOCACHE" "$GOMODCACHE" "$K8S_BIN" "$ETCD_BIN" "$COREDNS_BIN"

log() { printf '[build %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# k8s.io/kubernetes refers to its staging modules by relative paths; a wrapper module
# pins each of them to the published version of the same release instead.
build_kubernetes() {
  local src="$SLUICE_CACHE/k8s/$K8S_VERSION/src"
  local components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
  local missing=()
  for c in "${components[@]}"; do [[ -x "$K8S_BIN/$c" ]] || missing+=("$c"); done
  ((${#missing[@]})) || { log "kubernetes $K8S_VERSION: cached"; return; }
  mkdir -p "$src"
  if [[ ! -f "$src/go.sum" ]]; then
    log "kubernetes $K8S_VERSION: resolving modules"
    local staging
    staging=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
    {
      echo "module sluice.dev/e2e/k8s-build"
      echo
      echo "go 1.25.0"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      echo "replace ("
      sed -n '/^replace (/,/^)/p' "$staging/go.mod" | grep '=> ./staging' |
        awk -v v="$K8S_STAGING_VERSION" '{print "\t" $1 " => " $1 " " v}'
      echo ")"
    } >"$src/go.mod"
    # Importing each component's library package records all their dependencies.
    {
      printf 'package main\n\nimport (\n'
      for c in "${components[@]}"; do
        [[ $c == kubectl ]] && continue
        printf '\t_ "k8s.io/kubernetes/cmd/%s/app"\n' "$c"
      done
      printf '\t_ "k8s.io/kubectl/pkg/cmd"\n'
      printf ')\n\nfunc main() {}\n'
    } >"$src/tools.go"
    (cd "$src" && go mod tidy >/dev/null)
  fi
  local date
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ldflags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  for c in "${missing[@]}"; do
    log "kubernetes $K8S_VERSION: building $c"
    (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" \
      -o "$K8S_BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c") && mv "$K8S_BIN/$c.tmp" "$K8S_BIN/$c"
  done
}

build_wrapped() { # name module version "library-packages" main-package bin-dir
  local name=$1 module=$2 version=$3 libraries=$4 package=$5 bin=$6
  [[ -x "$bin/$name" ]] && { log "$name $version: cached"; return; }
  local src="$SLUICE_CACHE/$name/$version/src"
  mkdir -p "$src"
  if [[ ! -f "$src/go.sum" ]]; then
    log "$name $version: resolving modules"
    printf 'module sluice.dev/e2e/%s-build\n\ngo 1.25.0\n\nrequire %s %s\n' "$name" "$module" "$version" >"$src/go.mod"
    # Importing the main package's libraries records all of its dependencies.
    {
      printf 'package main\n\nimport (\n'
      for lib in $libraries; do printf '\t_ "%s"\n' "$lib"; done
      printf ')\n\nfunc main() {}\n'
    } >"$src/tools.go"
    (cd "$src" && go mod tidy >/dev/null)
  fi
  log "$name $version: building"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/$name.tmp" "$package") &&
    mv "$bin/$name.tmp" "$bin/$name"
}

build_wrapped etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" \
  go.etcd.io/etcd/server/v3/etcdmain go.etcd.io/etcd/server/v3 "$ETCD_BIN"
build_kubernetes
build_wrapped coredns github.com/coredns/coredns "$COREDNS_VERSION" \
  "github.com/coredns/coredns/coremain github.com/coredns/coredns/core/plugin" \
  github.com/coredns/coredns "$COREDNS_BIN"
log "done"

#!/usr/bin/env bash
# Builds the helm CLI from its Go module (helm.sh/helm/v3/cmd/helm at $HELM_VERSION) into the
# cache, keyed by version, and prints the binary's path as the last line of stdout. The e2e
# environment has no Docker and downloads no release binaries, so tools come from Go modules,
# like the cluster's own binaries (build.sh). A cached binary is not rebuilt: reruns are instant.
set -euo pipefail
source "$(dirname "$0")/env.sh"
# Logs (and die) go to stderr: stdout carries only the binary's path, for callers to capture.
log() { printf '[helm %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

helm="$HELM_BIN/helm"
if [[ -x "$helm" ]]; then
  log "helm $HELM_VERSION: cached"
  echo "$helm"
  exit 0
fi
mkdir -p "$GOCACHE" "$GOMODCACHE" "$HELM_BIN"

log "helm $HELM_VERSION: resolving module"
gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
[[ -f "$gomod" ]] || die "helm.sh/helm/v3@$HELM_VERSION: go.mod not found"

# Helm's Makefile derives the Kubernetes version that `helm template` and `helm lint` assume
# (without --kube-version) from its client-go version; left unset it would be v1.20, which a
# chart's kubeVersion constraint rejects. `helm version` gets its version the same way.
client_go=$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "$gomod")
[[ $client_go =~ ^v0\.([0-9]+)\. ]] || die "unexpected k8s.io/client-go version '$client_go'"
k8s_minor=${BASH_REMATCH[1]}
ldflags="-s -w"
ldflags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.metadata="
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done

# `go install module@version` builds with the module's own go.mod (it has no replace
# directives); installing into a scratch directory keeps a half-built binary out of the cache.
log "helm $HELM_VERSION: building"
tmp=$(mktemp -d "$HELM_BIN/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv "$tmp/helm" "$helm"
log "helm $HELM_VERSION: built"
echo "$helm"

#!/usr/bin/env bash
# For machines with Docker: creates a kind cluster, builds the sluice image and loads it
# into the cluster, then prints the kubeconfig path. The local test cluster
# (e2e/cluster/up.sh) is the route on machines without Docker.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
kind get clusters | grep -x sluice >/dev/null || kind create cluster --config "$root/e2e/kind/cluster.yaml"
docker build -f "$root/e2e/image/Dockerfile" -t sluice.local/sluice:dev "$root"
kind load docker-image sluice.local/sluice:dev --name sluice
kubeconfig="${TMPDIR:-/tmp}/sluice-kind.kubeconfig"
kind get kubeconfig --name sluice >"$kubeconfig"
echo "$kubeconfig"

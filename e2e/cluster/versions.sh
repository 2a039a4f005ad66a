# Versions of everything the local cluster is built from. Kubernetes is pinned to 1.35,
# the last release whose kubelet still works with containerd 1.x, which is what Debian
# ships (1.36 and later need containerd 2). The Rust crates use k8s-openapi's v1_35 feature
# to match.
K8S_VERSION=v1.35.4
K8S_STAGING_VERSION=v0.35.4
ETCD_VERSION=v3.6.16
COREDNS_VERSION=v1.14.7
SLUICE_CACHE="${SLUICE_CACHE:-/var/cache/sluice}"
K8S_BIN="$SLUICE_CACHE/k8s/$K8S_VERSION/bin"
ETCD_BIN="$SLUICE_CACHE/etcd/$ETCD_VERSION/bin"
COREDNS_BIN="$SLUICE_CACHE/coredns/$COREDNS_VERSION/bin"
export GOCACHE="$SLUICE_CACHE/go-build"
export GOMODCACHE="$SLUICE_CACHE/go-mod"
HELM_VERSION=v3.22.0
HELM_BIN="$SLUICE_CACHE/helm/$HELM_VERSION/bin"
# The NetworkPolicy enforcer: kube-router, running only its firewall (network-policies.sh).
KUBE_ROUTER_VERSION=v2.1.0
KUBE_ROUTER_BIN="$SLUICE_CACHE/kube-router/$KUBE_ROUTER_VERSION/bin"

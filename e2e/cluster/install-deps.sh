#!/usr/bin/env bash
# Installs what the local cluster needs from Debian: containerd, runc and the CNI plugins,
# umoci for images, the networking tools kube-proxy and the kubelet call, and ipset and
# nftables for the NetworkPolicy enforcer (network-policies.sh).
set -euo pipefail
pkgs=(containerd runc containernetworking-plugins umoci iptables conntrack socat ethtool
      openssl curl iproute2 ipset nftables)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
command -v go >/dev/null || { echo "go is required to build the cluster's binaries"; exit 1; }

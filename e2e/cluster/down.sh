#!/usr/bin/env bash
# Stops every component of the local cluster, removes its containers, network and state,
# and leaves nothing running. Cached binaries are kept.
set -uo pipefail
source "$(dirname "$0")/env.sh"

stop() {
  local f=$PIDS/$1.pid
  [[ -f $f ]] || return 0
  local pid
  pid=$(cat "$f")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  rm -f "$f"
}

for c in network-policies kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$c"; done
# Anything a crashed run started without leaving a pid file.
pkill -KILL -f "^$K8S_BIN/" 2>/dev/null
pkill -KILL -f "^$ETCD_BIN/etcd" 2>/dev/null
pkill -KILL -f "^$KUBE_ROUTER_BIN/" 2>/dev/null
# Containers outlive the kubelet: kill their shims, then containerd.
pkill -KILL -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null
stop containerd
pkill -KILL -f "containerd --config $STATE/containerd.toml" 2>/dev/null
pkill -KILL -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null
# Kubelet and container mounts under the state directory.
grep -o " $STATE[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
ip link del sluicebr0 2>/dev/null
ip addr del "$NODE_IP/32" dev "$NODE_IF" 2>/dev/null
# kube-proxy's, kube-router's and the bridge plugin's chains and the rules that jump to them.
for tool in iptables ip6tables; do
  rules=$("$tool-save" 2>/dev/null) || continue
  if grep -q 'KUBE-\|CNI-' <<<"$rules"; then
    grep -v 'KUBE-\|CNI-' <<<"$rules" | "$tool-restore"
  fi
done
# kube-router leaves its ipsets behind when stopped (TMP- ones only after a crash mid-update);
# the rules that used them are gone now, so they can be destroyed.
if command -v ipset >/dev/null; then
  ipset list -n 2>/dev/null | grep -E '^(inet6:)?(KUBE-(SRC|DST)|TMP)-[A-Z2-7]{16}$' |
    while read -r set; do ipset destroy "$set" 2>/dev/null; done
fi
# network-policies.sh's guard for Services without endpoints.
command -v nft >/dev/null && nft delete table ip sluice-netpol 2>/dev/null
rm -rf "$STATE"
log "down"

#!/usr/bin/env bash
# Enforces NetworkPolicies on the local cluster, whose bridge CNI plugin ignores them:
# kube-router (github.com/cloudnativelabs/kube-router/v2) running only its network policy
# controller, a host process like the other components. kube-proxy and the bridge plugin keep
# services and pod networking.
#   network-policies.sh build  builds it into the cache; prints the binary's path last
#   network-policies.sh start  builds if needed, starts it against the running cluster and
#                              waits until it has written its first set of rules
# Not kube-network-policies (SIG Network's reference enforcer): it diverts packets with the
# nftables queue expression, which our kernels are built without (no CONFIG_NFT_QUEUE, and no
# loadable modules to add it). kube-router needs iptables, ipset and br_netfilter only.
# down.sh stops it and removes its rules, ipsets and our nftables table (sluice-netpol).
set -euo pipefail
source "$(dirname "$0")/env.sh"
# Logs (and die) go to stderr: stdout carries only the binary's path, for callers to capture.
log() { printf '[network-policies %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

bin="$KUBE_ROUTER_BIN/kube-router"

build() {
  if [[ -x "$bin" ]]; then
    log "kube-router $KUBE_ROUTER_VERSION: cached"
    return
  fi
  mkdir -p "$GOCACHE" "$GOMODCACHE" "$KUBE_ROUTER_BIN"
  # `go install module@version` builds with the module's own go.mod (it has no replace
  # directives); a scratch directory keeps a half-built binary out of the cache.
  log "kube-router $KUBE_ROUTER_VERSION: building"
  tmp=$(mktemp -d "$KUBE_ROUTER_BIN/.build.XXXXXX") # global: the EXIT trap reads it
  trap 'rm -rf "$tmp"' EXIT
  local pkg=github.com/cloudnativelabs/kube-router/v2/pkg/version
  CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath \
    -ldflags "-s -w -X $pkg.Version=$KUBE_ROUTER_VERSION -X $pkg.BuildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
  mv "$tmp/kube-router" "$bin"
  log "kube-router $KUBE_ROUTER_VERSION: built"
}

# kube-router accepts a local pod's packets in filter FORWARD ahead of kube-proxy's chains, so
# kube-proxy's REJECT for a Service without endpoints is never reached and the packet follows
# the default route off this machine. A table of our own restores the refusal: a reject in any
# base chain is final, whatever another table accepted. Only packets that no Service's DNAT
# rewrote still carry a Service address here.
guard_services() {
  nft -f - <<NFT
table ip sluice-netpol
delete table ip sluice-netpol
table ip sluice-netpol {
  chain forward {
    type filter hook forward priority filter - 1; policy accept;
    ip saddr $POD_CIDR ip daddr $SERVICE_CIDR reject
  }
}
NFT
}

start_enforcer() {
  [[ $(id -u) == 0 ]] || die "must run as root (iptables, ipset)"
  for tool in iptables iptables-save iptables-restore ipset nft; do
    command -v "$tool" >/dev/null || die "$tool is missing: run e2e/cluster/install-deps.sh"
  done
  [[ -f "$KUBECONFIG_PATH" ]] || die "no cluster ($KUBECONFIG_PATH is missing): run e2e/cluster/up.sh"
  local pidfile="$PIDS/network-policies.pid" logfile="$LOGS/network-policies.log"
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    log "kube-router: already running (pid $(cat "$pidfile"))"
    return
  fi
  # Pods on one bridge reach each other without routing; only br_netfilter hands those
  # frames to iptables, where the policy rules are.
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 ||
    die "net.bridge.bridge-nf-call-iptables cannot be set: traffic between pods would bypass the policies"

  guard_services
  log "kube-router: starting (firewall only)"
  # Its pods are those whose status.hostIP is the Node's InternalIP, so the Node must be ours;
  # kube-router looks at NODE_NAME before the hostname. The health port would serve
  # /debug/pprof on every address, and nothing reads it: readiness comes from the log.
  start network-policies env NODE_NAME="$NODE_NAME" "$bin" \
    --kubeconfig "$KUBECONFIG_PATH" --hostname-override "$NODE_NAME" \
    --run-firewall=true --run-router=false --run-service-proxy=false --run-loadbalancer=false \
    --service-cluster-ip-range "$SERVICE_CIDR" --enable-ipv4=true --enable-ipv6=false \
    --health-port=0 --metrics-port=0 --v=1
  local pid
  pid=$(cat "$pidfile")
  # A half-started enforcer would leave policies partly enforced: stop it before failing.
  fail() {
    tail -n 20 "$logfile" >&2
    kill -TERM -- "-$pid" 2>/dev/null || true
    rm -f "$pidfile"
    die "$* (log: $logfile)"
  }

  # Every full sync ends with "sync iptables took" (logged at -v 1), also one that gave up,
  # which logs "Aborting sync" first.
  local deadline=$((SECONDS + 90))
  while :; do
    kill -0 "$pid" 2>/dev/null || fail "kube-router exited"
    grep -q 'Aborting sync' "$logfile" && fail "kube-router could not write its rules"
    if grep -q 'sync iptables took' "$logfile" && iptables -w -S KUBE-ROUTER-FORWARD >/dev/null 2>&1; then
      break
    fi
    ((SECONDS < deadline)) || fail "timed out after 90s waiting for kube-router's first sync"
    sleep 1
  done
  log "kube-router: enforcing NetworkPolicies on $NODE_NAME (pid $pid, log $logfile)"
}

case "${1:-}" in
  build) build; echo "$bin" ;;
  start) build; start_enforcer ;;
  *) echo "usage: $0 build|start" >&2; exit 2 ;;
esac

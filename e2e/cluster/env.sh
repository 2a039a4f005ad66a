# Sourced by the cluster scripts: where things live and the addresses the cluster uses.
# The node address is an extra address on the loopback interface, so all cluster traffic
# stays on this machine.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/versions.sh"
STATE="${SLUICE_E2E_STATE:-/var/lib/sluice-e2e}"
PKI="$STATE/pki"
LOGS="$STATE/logs"
PIDS="$STATE/pids"
RUN="$STATE/run"
NODE_NAME=sluice-node
NODE_IF=lo
NODE_IP=10.200.0.1
POD_CIDR=10.88.0.0/16
SERVICE_CIDR=10.96.0.0/16
API_SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10
KUBECONFIG_PATH="$STATE/admin.kubeconfig"
PAUSE_IMAGE=sluice.local/pause:1
COREDNS_IMAGE=sluice.local/coredns:$COREDNS_VERSION
CONTAINERD_SOCK="$RUN/containerd.sock"

log() { printf '[cluster %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { log "error: $*"; exit 1; }

# wait_for <description> <timeout-seconds> <command...>: polls until the command succeeds.
wait_for() {
  local what=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what"
    sleep 1
  done
}

# start <name> <command...>: runs a component in the background, logging to $LOGS/<name>.log.
start() {
  local name=$1; shift
  mkdir -p "$LOGS" "$PIDS"
  setsid "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! >"$PIDS/$name.pid"
}

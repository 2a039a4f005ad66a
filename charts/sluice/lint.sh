#!/usr/bin/env bash
# Checks the chart: `helm lint --strict` with the default values and with each optional mode,
# renders both RBAC modes and checks that namespaced mode grants nothing cluster-wide, and
# checks that values.schema.json rejects a bad value. helm comes from e2e/cluster/helm.sh,
# which builds it from its Go module on first use. Exits non-zero on the first failure.
set -euo pipefail
chart="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$chart/../.." && pwd)"
helm=$(bash "$root/e2e/cluster/helm.sh" | tail -n1)
[[ -x "$helm" ]] || { echo "helm not found at '$helm'" >&2; exit 1; }
# Lint and render against the Kubernetes version the e2e cluster runs.
kube_version=$(source "$root/e2e/cluster/versions.sh" && echo "$K8S_VERSION")

failures=0
pass() { printf 'ok   %s\n' "$1"; }
fail() { printf 'FAIL %s\n' "$1" >&2; failures=$((failures + 1)); }

lint() { # description, extra helm arguments...
  local what=$1; shift
  local out
  if out=$("$helm" lint --strict --kube-version "$kube_version" "$chart" "$@" 2>&1); then
    pass "lint: $what"
  else
    printf '%s\n' "$out" >&2
    fail "lint: $what"
  fi
}

render() { # extra helm arguments...
  "$helm" template sluice "$chart" --namespace sluice-system --kube-version "$kube_version" "$@"
}

# count <manifest> <kind> [namespace]: how many objects of that kind (in that namespace).
count() {
  awk -v kind="$2" -v ns="${3:-}" '
    function done() { if (k == kind && (ns == "" || n == ns)) c++; k = ""; n = "" }
    /^---/ { done(); next }
    /^kind: / { k = $2 }
    /^  namespace: / { n = $2 }
    END { done(); print c + 0 }' <<<"$1"
}

expect() { # description, actual, wanted
  if [[ $2 == "$3" ]]; then pass "$1"; else fail "$1: got $2, want $3"; fi
}

lint "default values"
lint "watchNamespaces={a,b}" --set 'watchNamespaces={a,b}'
lint "serviceMonitor.enabled=true" --set serviceMonitor.enabled=true
lint "jobPodMonitor.enabled=true" --set jobPodMonitor.enabled=true
lint "leader election off, one replica" --set leaderElection.enabled=false --set replicaCount=1

cluster=$(render) || { fail "render: cluster mode"; cluster=""; }
expect "cluster mode: ClusterRole" "$(count "$cluster" ClusterRole)" 1
expect "cluster mode: ClusterRoleBinding" "$(count "$cluster" ClusterRoleBinding)" 1
expect "cluster mode: only the leader-election Role" "$(count "$cluster" Role)" 1
expect "cluster mode: no ServiceMonitor by default" "$(count "$cluster" ServiceMonitor)" 0
grep -q -- '--watch-namespaces' <<<"$cluster" && fail "cluster mode: --watch-namespaces passed" ||
  pass "cluster mode: no --watch-namespaces"

namespaced=$(render --set 'watchNamespaces={a,b}' --set serviceMonitor.enabled=true) ||
  { fail "render: namespaced mode"; namespaced=""; }
expect "namespaced mode: no ClusterRole" "$(count "$namespaced" ClusterRole)" 0
expect "namespaced mode: no ClusterRoleBinding" "$(count "$namespaced" ClusterRoleBinding)" 0
for ns in a b; do
  expect "namespaced mode: Role in $ns" "$(count "$namespaced" Role "$ns")" 1
  expect "namespaced mode: RoleBinding in $ns" "$(count "$namespaced" RoleBinding "$ns")" 1
done
expect "namespaced mode: leader-election Role in the release namespace" \
  "$(count "$namespaced" Role sluice-system)" 1
grep -q -- '"--watch-namespaces=a,b"' <<<"$namespaced" && pass "namespaced mode: --watch-namespaces=a,b" ||
  fail "namespaced mode: --watch-namespaces=a,b missing"
expect "ServiceMonitor when enabled" "$(count "$namespaced" ServiceMonitor)" 1
expect "cluster mode: no job PodMonitor by default" "$(count "$cluster" PodMonitor)" 0

# The job PodMonitor: all namespaces, or only the watched ones. That it selects each
# coordinator's metrics port is checked on the cluster (e2e: operator::secrets).
monitored=$(render --set jobPodMonitor.enabled=true) || { fail "render: job PodMonitor"; monitored=""; }
expect "job PodMonitor when enabled" "$(count "$monitored" PodMonitor sluice-system)" 1
grep -q -- 'any: true' <<<"$monitored" && pass "job PodMonitor: every namespace in cluster mode" ||
  fail "job PodMonitor: namespaceSelector.any missing in cluster mode"
monitored=$(render --set jobPodMonitor.enabled=true --set 'watchNamespaces={a,b}') ||
  { fail "render: job PodMonitor, namespaced"; monitored=""; }
grep -A3 -- 'matchNames:' <<<"$monitored" | grep -q -- '- b' && pass "job PodMonitor: the watched namespaces" ||
  fail "job PodMonitor: namespaceSelector.matchNames of the watched namespaces missing"

# NetworkPolicies: on by default, the control API open to the namespaces given.
grep -q -- '"--network-policies=true"' <<<"$cluster" && pass "network policies on by default" ||
  fail "network policies on by default: --network-policies=true missing"
policies=$(render --set networkPolicies.enabled=false --set 'networkPolicies.controlApiNamespaces={monitoring}') ||
  { fail "render: network policies off"; policies=""; }
grep -q -- '"--network-policies=false"' <<<"$policies" && pass "networkPolicies.enabled=false" ||
  fail "networkPolicies.enabled=false: --network-policies=false missing"
grep -q -- '"--control-api-namespaces=monitoring"' <<<"$policies" &&
  pass "networkPolicies.controlApiNamespaces" ||
  fail "networkPolicies.controlApiNamespaces: --control-api-namespaces=monitoring missing"

# The schema must reject bad values, and say which one.
reject() { # description, pattern the error must contain, helm arguments...
  local what=$1 pattern=$2; shift 2
  local out
  if out=$("$helm" lint --kube-version "$kube_version" "$chart" "$@" 2>&1); then
    fail "schema rejects $what: helm lint passed"
  elif grep -q -- "$pattern" <<<"$out"; then
    pass "schema rejects $what"
  else
    printf '%s\n' "$out" >&2
    fail "schema rejects $what: error does not mention $pattern"
  fi
}
reject "replicaCount=-1" replicaCount --set replicaCount=-1
reject "logFormat=xml" logFormat --set logFormat=xml
reject "a job PodMonitor interval that is no duration" interval --set jobPodMonitor.interval=often
reject "an unknown top-level value" replicas --set replicas=3
reject "two replicas without leader election" replicaCount --set leaderElection.enabled=false
reject "a control API namespace that is no name" controlApiNamespaces \
  --set 'networkPolicies.controlApiNamespaces={Not_A_Name}'

if ((failures)); then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all chart checks passed"

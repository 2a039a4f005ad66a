#!/usr/bin/env bash
# CI's end-to-end stage: brings the local cluster up (binaries cached by version), loads
# our images, runs the sluice-e2e tests against it, and tears everything down whatever
# the outcome.
set -euo pipefail
cluster="$(cd "$(dirname "$0")" && pwd)/cluster"

bash "$cluster/install-deps.sh"
# The Kafka broker a test's job reads from runs on the node (needs java and mvn), and so
# does the S3 server another keeps its state and output in.
bash "$cluster/../kafka/broker.sh" fetch >/dev/null
SLUICE_WEED="$(bash "$cluster/../s3/build.sh" | tail -n 1)"
export SLUICE_WEED
trap 'bash "$cluster/down.sh"' EXIT
# A previous run that was killed may have left a cluster behind.
bash "$cluster/down.sh" >/dev/null 2>&1 || true

started=$SECONDS
kubeconfig=$(bash "$cluster/up.sh" | tail -n 1)
# The bridge network plugin ignores NetworkPolicies: an enforcer beside it makes them hold.
bash "$cluster/network-policies.sh" start
echo "cluster up in $((SECONDS - started))s"
# The test stage built these binaries in the dev profile already.
export SLUICE_IMAGE_PROFILE=dev
bash "$cluster/images.sh" sluice
bash "$cluster/images.sh" operator
bash "$cluster/images.sh" e2e
# A user's own job (examples/custom-job) in its own images, for e2e/tests/custom_job.rs.
bash "$cluster/images.sh" sessions

# The operator as users install it: the chart, with its CRDs, from this checkout; with a
# restart rate below the default's, which the rate-limit test measures.
helm="$(bash "$cluster/helm.sh" | tail -n 1)"
# The operator's namespace enforces the `restricted` Pod Security Standard, as every test's
# namespace does: the chart's pods must meet it too.
source "$cluster/versions.sh"
kubectl=("$K8S_BIN/kubectl" --kubeconfig "$kubeconfig")
"${kubectl[@]}" create namespace sluice-system
"${kubectl[@]}" label namespace sluice-system pod-security.kubernetes.io/enforce=restricted
KUBECONFIG="$kubeconfig" "$helm" install sluice "$cluster/../../charts/sluice" \
  --namespace sluice-system --create-namespace \
  --set image.pullPolicy=Never --set restarts.perMinute=12 --set restarts.burst=3 \
  --wait --timeout 5m

# The test binaries of e2e/tests, built with the feature set the test stage and the images
# used (the whole workspace's: `-p sluice-e2e` alone would compile the dependencies again).
tests=()
for test in "$cluster"/../tests/*.rs; do tests+=(--test "$(basename "$test" .rs)"); done
# Three at a time: the tests mostly wait on throttled jobs and backoffs.
KUBECONFIG="$kubeconfig" cargo test --workspace --all-features "${tests[@]}" -- --test-threads=3

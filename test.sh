#!/usr/bin/env bash
# The README's second command: the workspace's tests. Installs what the build needs first
# (runtime/build-deps.sh). Extra arguments go to `cargo test`.
#
# Tests that need a real Kubernetes cluster (sluice-e2e) or an S3 server skip, saying so,
# unless one is configured: e2e/ci.sh brings a local cluster up, e2e/s3/build.sh builds
# the S3 server (see the README).
set -euo pipefail
cd "$(dirname "$0")"
bash runtime/build-deps.sh
exec cargo test --workspace --all-features "$@"

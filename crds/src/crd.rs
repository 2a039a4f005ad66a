//! The CustomResourceDefinitions, as installed in a cluster and committed under
//! `crds/generated/` and in the Helm chart's `crds/` (the `crdgen` binary writes both; a test
//! keeps them in sync).

use crate::{StreamJob, StreamQuota};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The command that rewrites the committed YAML, from the workspace root.
pub const REGENERATE: &str =
    "cargo run -p sluice-crds --features kube --bin crdgen -- crds/generated charts/sluice/crds";

/// Where the committed copies live, relative to the workspace root.
pub const COMMITTED_DIRS: [&str; 2] = ["crds/generated", "charts/sluice/crds"];

pub fn stream_job() -> CustomResourceDefinition {
    StreamJob::crd()
}

pub fn stream_quota() -> CustomResourceDefinition {
    StreamQuota::crd()
}

/// Every CRD with the name of its file under `crds/generated/`.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("streamjob.yaml", stream_job()),
        ("streamquota.yaml", stream_quota()),
    ]
}

/// A CRD as the YAML file committed for it.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    Ok(format!(
        "# Generated from the Rust types in crds/src by crdgen; do not edit.\n# Regenerate with: {REGENERATE}\n{}",
        serde_yaml::to_string(crd)?
    ))
}

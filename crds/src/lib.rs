//! The `StreamJob` resource (`sluice.dev/v1alpha1`). This crate has no Kubernetes client
//! dependency: the runtime reads the same manifest to run a job embedded
//! (`sluice run job.yaml`), and the operator adds the cluster side.

mod manifest;
mod spec;

pub use manifest::{parse_manifest, ManifestError, ObjectMeta, StreamJobManifest};
pub use spec::{validate, FieldError, JobSpec, StreamJobSpec, API_VERSION, KIND};

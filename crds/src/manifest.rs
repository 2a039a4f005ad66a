//! StreamJob manifests as files: what `sluice run job.yaml` reads.

use crate::spec::{StreamJobSpec, API_VERSION, KIND};
use crate::status::StreamJobStatus;
use crate::validate::{validate, validate_name, ValidationErrors};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A StreamJob as written in a file. The `kube` feature's `StreamJob` is the same object
/// with Kubernetes' full metadata; both hold the same [`StreamJobSpec`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamJobManifest {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: StreamJobSpec,
    /// Present in objects read back from a cluster (`kubectl get -o yaml`); not used to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StreamJobStatus>,
}

/// The metadata a manifest needs. Other fields Kubernetes adds (uid, resourceVersion,
/// managedFields …) are ignored, so that an object read back from a cluster runs as well.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl StreamJobManifest {
    pub fn new(name: impl Into<String>, spec: StreamJobSpec) -> Self {
        Self {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            metadata: ObjectMeta {
                name: name.into(),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }
}

/// Why a manifest could not be loaded; the one error type of this crate. Every variant
/// starts with the manifest's origin and names the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{origin}: not a YAML document: {message}")]
    Syntax { origin: String, message: String },

    /// The document is some other kind of object.
    #[error("{origin}: {field}: expected {expected:?}, found {}", found.as_deref().map_or_else(|| "nothing".to_string(), |f| format!("{f:?}")))]
    WrongResource {
        origin: String,
        field: &'static str,
        expected: &'static str,
        found: Option<String>,
    },

    /// A field has the wrong type or shape, is missing, or is not a field of StreamJob.
    #[error("{origin}: {path}: {message}")]
    Field {
        origin: String,
        path: String,
        message: String,
    },

    /// The manifest is well formed but breaks validation rules.
    #[error("{origin}: {errors}")]
    Invalid {
        origin: String,
        errors: ValidationErrors,
    },
}

/// Reads and checks a StreamJob manifest; `origin` (a file path) starts every error.
///
/// In order: YAML syntax; `apiVersion` and `kind`, so that another kind of object is
/// reported as such rather than by its first odd field; field types and unknown fields,
/// with the path from the root; then the rules of [`validate`], all errors at once.
pub fn parse_manifest(yaml: &str, origin: &str) -> Result<StreamJobManifest, ManifestError> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(yaml).map_err(|e| ManifestError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
    for (field, expected) in [("apiVersion", API_VERSION), ("kind", KIND)] {
        let found = value.get(field).and_then(|v| v.as_str());
        if found != Some(expected) {
            return Err(ManifestError::WrongResource {
                origin: origin.to_string(),
                field,
                expected,
                found: found.map(str::to_string),
            });
        }
    }
    let manifest: StreamJobManifest = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ManifestError::Field {
            origin: origin.to_string(),
            path: if path == "." { "(root)".into() } else { path },
            message: e.into_inner().to_string(),
        }
    })?;
    let mut errors = validate_name(&manifest.metadata.name)
        .err()
        .unwrap_or_default()
        .into_vec();
    if let Err(e) = validate(&manifest.spec) {
        errors.extend(e.into_vec());
    }
    if errors.is_empty() {
        Ok(manifest)
    } else {
        Err(ManifestError::Invalid {
            origin: origin.to_string(),
            errors: ValidationErrors::from(errors),
        })
    }
}

#[cfg(feature = "kube")]
mod kube_conversions {
    use super::StreamJobManifest;
    use crate::StreamJob;

    /// The manifest as the API server would hold it (before defaults of its own).
    impl From<StreamJobManifest> for StreamJob {
        fn from(m: StreamJobManifest) -> Self {
            let mut job = StreamJob::new(&m.metadata.name, m.spec);
            let non_empty =
                |map: std::collections::BTreeMap<String, String>| (!map.is_empty()).then_some(map);
            job.metadata.namespace = m.metadata.namespace;
            job.metadata.labels = non_empty(m.metadata.labels);
            job.metadata.annotations = non_empty(m.metadata.annotations);
            job.status = m.status;
            job
        }
    }
}

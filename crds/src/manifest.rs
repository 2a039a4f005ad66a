use crate::spec::{validate, FieldError, StreamJobSpec, API_VERSION, KIND};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A `StreamJob` manifest as written in a file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamJobManifest {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: StreamJobSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{origin}: not a YAML document: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: {path}: {message}")]
    Field {
        origin: String,
        path: String,
        message: String,
    },
    #[error("{origin}: {field}: expected {expected:?}, found {found:?}")]
    WrongType {
        origin: String,
        field: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("{origin}: {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        origin: String,
        errors: Vec<FieldError>,
    },
}

/// Reads and checks a `StreamJob` manifest; `origin` names it in errors (a file path).
/// Every error names the field at fault by its path from the root.
pub fn parse_manifest(yaml: &str, origin: &str) -> Result<StreamJobManifest, ManifestError> {
    // First as untyped YAML, so that the kind is checked before field types: a manifest of
    // another kind should be reported as such, not by its first unexpected field.
    let value: serde_yaml::Value =
        serde_yaml::from_str(yaml).map_err(|e| ManifestError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
    for (field, expected) in [("apiVersion", API_VERSION), ("kind", KIND)] {
        let found = value.get(field).and_then(|v| v.as_str()).unwrap_or("");
        if found != expected {
            return Err(ManifestError::WrongType {
                origin: origin.to_string(),
                field,
                expected,
                found: found.to_string(),
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
    if manifest.metadata.name.is_empty() {
        return Err(ManifestError::Invalid {
            origin: origin.to_string(),
            errors: vec![FieldError {
                path: "metadata.name".into(),
                message: "must not be empty".into(),
            }],
        });
    }
    validate(&manifest.spec).map_err(|errors| ManifestError::Invalid {
        origin: origin.to_string(),
        errors,
    })?;
    Ok(manifest)
}

use serde::{Deserialize, Serialize};
use std::fmt;

pub const API_VERSION: &str = "sluice.dev/v1alpha1";
pub const KIND: &str = "StreamJob";

/// Key groups of a job: fixed for the life of its state.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;
pub const MAX_MAX_PARALLELISM: u32 = 32_768;

/// What to run and how wide.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamJobSpec {
    /// The container image holding the job (unused when running embedded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub job: JobSpec,
    #[serde(default = "default_parallelism")]
    pub parallelism: u32,
    /// The number of key groups; fixed once the job has state.
    #[serde(default = "default_max_parallelism")]
    pub max_parallelism: u32,
}

fn default_parallelism() -> u32 {
    1
}

fn default_max_parallelism() -> u32 {
    DEFAULT_MAX_PARALLELISM
}

/// The job inside the image, by name, and its configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    /// Free-form; each job documents and checks its own fields.
    #[serde(default)]
    pub config: serde_json::Value,
}

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path from the manifest's root, e.g. `spec.parallelism`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The rules every spec must meet; every broken rule is reported.
pub fn validate(spec: &StreamJobSpec) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut err = |path: &str, message: String| {
        errors.push(FieldError {
            path: path.to_string(),
            message,
        })
    };
    if !is_dns_label(&spec.job.name) {
        err(
            "spec.job.name",
            format!(
                "{:?} is not a job name: use 1-63 lowercase letters, digits and '-'",
                spec.job.name
            ),
        );
    }
    if !(spec.job.config.is_object() || spec.job.config.is_null()) {
        err("spec.job.config", "must be a mapping".into());
    }
    if !(1..=MAX_MAX_PARALLELISM).contains(&spec.max_parallelism) {
        err(
            "spec.maxParallelism",
            format!(
                "{} is outside 1..={MAX_MAX_PARALLELISM}",
                spec.max_parallelism
            ),
        );
    }
    if spec.parallelism < 1 {
        err("spec.parallelism", "must be at least 1".into());
    } else if spec.parallelism > spec.max_parallelism {
        err(
            "spec.parallelism",
            format!(
                "{} exceeds spec.maxParallelism ({})",
                spec.parallelism, spec.max_parallelism
            ),
        );
    }
    if matches!(&spec.image, Some(i) if i.trim().is_empty()) {
        err("spec.image", "must not be empty when set".into());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

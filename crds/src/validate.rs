//! The CEL rules of the CRDs, once more in Rust: for manifests that never reach an API
//! server (`sluice run`) and for the operator, which validates before it plans.
//!
//! Each check here corresponds to one rule in the schema (a CEL rule, or a `maxLength` /
//! `maxItems` / `pattern` / `type`), and every rule is checked on its own so that the same
//! manifest gets the same errors here as from the API server; where the rule is a CEL rule,
//! the message is the same text.

use crate::duration::HumanDuration;
use crate::quantity::Quantity;
use crate::quota::{QuotaLimits, StreamQuotaSpec};
use crate::spec::{
    PodRole, ResourceRequirements, SecretKeySelector, StreamJobSpec, MAX_MAX_PARALLELISM,
    MAX_NAME_LENGTH, NAME_RULE_MESSAGE,
};
use std::collections::BTreeSet;
use std::fmt;

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path from the object's root, e.g. `spec.parallelism`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every broken rule of one object, in the order of its fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, FieldError> {
        self.0.iter()
    }

    /// Whether some error is about `path` (exactly that field).
    pub fn has(&self, path: &str) -> bool {
        self.0.iter().any(|e| e.path == path)
    }

    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

/// All errors on one line, separated by `; `.
impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

impl From<Vec<FieldError>> for ValidationErrors {
    fn from(errors: Vec<FieldError>) -> Self {
        Self(errors)
    }
}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a FieldError;
    type IntoIter = std::slice::Iter<'a, FieldError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Checks a StreamJob spec against every rule of the CRD that does not compare it with the
/// previous spec; errors name fields from the object's root (`spec.…`).
pub fn validate(spec: &StreamJobSpec) -> Result<(), ValidationErrors> {
    let mut v = ValidationErrors::default();

    if spec.image.as_deref() == Some("") {
        v.add("spec.image", "must not be empty");
    }

    let name = &spec.job.name;
    if name.is_empty() {
        v.add("spec.job.name", "must not be empty");
    }
    max_length(&mut v, "spec.job.name", name, 63);
    if !name.is_empty() && !is_dns_label(name) {
        v.add(
            "spec.job.name",
            format!("{name:?} is not a job name: use lowercase letters, digits and '-', starting and ending with a letter or digit"),
        );
    }
    object_or_absent(&mut v, "spec.job.config", &spec.job.config);

    at_least_one(&mut v, "spec.parallelism", spec.parallelism);
    if spec.parallelism > spec.max_parallelism {
        v.add(
            "spec.parallelism",
            format!(
                "{} is above spec.maxParallelism ({})",
                spec.parallelism, spec.max_parallelism
            ),
        );
    }
    at_least_one(&mut v, "spec.maxParallelism", spec.max_parallelism);
    if spec.max_parallelism > MAX_MAX_PARALLELISM {
        v.add(
            "spec.maxParallelism",
            format!(
                "{} is above the maximum of {MAX_MAX_PARALLELISM}",
                spec.max_parallelism
            ),
        );
    }
    at_least_one(&mut v, "spec.slotsPerWorker", spec.slots_per_worker);

    pod_role(&mut v, "spec.coordinator", &spec.coordinator);
    pod_role(&mut v, "spec.worker", &spec.worker);
    if let Some(template) = &spec.pod_template {
        object_or_absent(&mut v, "spec.podTemplate", template);
    }

    let c = &spec.checkpointing;
    duration(&mut v, "spec.checkpointing.interval", &c.interval);
    if let Some(storage) = &c.storage {
        uri(&mut v, "spec.checkpointing.storage", storage);
    }
    at_least_one(&mut v, "spec.checkpointing.retention", c.retention);
    if let Some(encryption) = &c.encryption {
        let path = "spec.checkpointing.encryption.keyId";
        let id = &encryption.key_id;
        max_length(&mut v, path, id, 63);
        if !plain_name(id) {
            v.add(
                path,
                format!("{id:?} is not a key id: use letters, digits, '-', '_' and '.'"),
            );
        }
        secret_key_selector(
            &mut v,
            "spec.checkpointing.encryption.secret",
            &encryption.secret,
        );
    }

    let s = &spec.savepoints;
    if let Some(interval) = &s.periodic_interval {
        duration(&mut v, "spec.savepoints.periodicInterval", interval);
    }
    at_least_one(
        &mut v,
        "spec.savepoints.retention.maxCount",
        s.retention.max_count,
    );
    if let Some(age) = &s.retention.max_age {
        duration(&mut v, "spec.savepoints.retention.maxAge", age);
    }
    if let Some(storage) = &s.storage {
        uri(&mut v, "spec.savepoints.storage", storage);
    }

    if let Some(savepoint) = &spec.initial_savepoint {
        uri(&mut v, "spec.initialSavepoint", savepoint);
    }

    match &spec.rollback.readiness_timeout {
        Some(timeout) => duration(&mut v, "spec.rollback.readinessTimeout", timeout),
        None if spec.rollback.enabled => v.add(
            "spec.rollback.readinessTimeout",
            "is required when spec.rollback.enabled is true",
        ),
        None => {}
    }

    let b = &spec.restart_policy.backoff;
    duration(&mut v, "spec.restartPolicy.backoff.initial", &b.initial);
    duration(&mut v, "spec.restartPolicy.backoff.max", &b.max);
    if let (Some(initial), Some(max)) = (b.initial.to_std(), b.max.to_std()) {
        if max < initial {
            v.add(
                "spec.restartPolicy.backoff.max",
                format!(
                    "\"{}\" is shorter than spec.restartPolicy.backoff.initial (\"{}\")",
                    b.max, b.initial
                ),
            );
        }
    }
    // `is_nan` so that YAML `.nan` fails too.
    if b.multiplier.is_nan() || b.multiplier < 1.0 {
        v.add(
            "spec.restartPolicy.backoff.multiplier",
            "must be at least 1",
        );
    }
    if !(0.0..=1.0).contains(&b.jitter) {
        v.add(
            "spec.restartPolicy.backoff.jitter",
            "must be between 0 and 1",
        );
    }
    duration(
        &mut v,
        "spec.restartPolicy.resetAfter",
        &spec.restart_policy.reset_after,
    );

    if let Some(priority) = &spec.priority {
        max_length(&mut v, "spec.priority", priority, 63);
        if !is_dns_label(priority) {
            v.add(
                "spec.priority",
                format!("{priority:?} is not a priority class name: use lowercase letters, digits and '-', starting and ending with a letter or digit"),
            );
        }
    }

    if let Some(token) = &spec.secrets.token {
        secret_key_selector(&mut v, "spec.secrets.token", token);
    }
    max_items(&mut v, "spec.secrets.env", spec.secrets.env.len(), 16);
    for (i, secret) in spec.secrets.env.iter().enumerate() {
        secret_name(&mut v, &format!("spec.secrets.env[{i}].name"), &secret.name);
    }

    v.into_result()
}

/// [`validate`] plus the rules that compare a spec with the one it replaces (CEL transition
/// rules): what the API server checks on an update.
pub fn validate_update(old: &StreamJobSpec, new: &StreamJobSpec) -> Result<(), ValidationErrors> {
    let mut v = validate(new).err().unwrap_or_default();
    if old.max_parallelism != new.max_parallelism {
        v.add(
            "spec.maxParallelism",
            format!(
                "cannot change from {} to {}: it fixes the key groups of the job state",
                old.max_parallelism, new.max_parallelism
            ),
        );
    }
    v.into_result()
}

/// Checks a StreamJob's `metadata.name` as the CRD's rule on the root does.
pub fn validate_name(name: &str) -> Result<(), ValidationErrors> {
    let mut v = ValidationErrors::default();
    let ok = name.len() <= MAX_NAME_LENGTH
        && is_dns_label(name)
        && name.starts_with(|c: char| c.is_ascii_lowercase());
    if !ok {
        // The CEL message names the field itself, since a rule on the root cannot point at
        // metadata; strip that to keep one path in front.
        let message = NAME_RULE_MESSAGE
            .strip_prefix("metadata.name ")
            .unwrap_or(NAME_RULE_MESSAGE);
        v.add("metadata.name", message);
    }
    v.into_result()
}

/// Checks a StreamQuota spec against the rules of its CRD.
pub fn validate_quota(spec: &StreamQuotaSpec) -> Result<(), ValidationErrors> {
    let mut v = ValidationErrors::default();
    quota_limits(&mut v, "spec.limits", &spec.limits);
    max_items(
        &mut v,
        "spec.priorityClasses",
        spec.priority_classes.len(),
        32,
    );
    let mut seen = BTreeSet::new();
    for (i, class) in spec.priority_classes.iter().enumerate() {
        let path = format!("spec.priorityClasses[{i}]");
        max_length(&mut v, &format!("{path}.name"), &class.name, 63);
        if !is_dns_label(&class.name) {
            v.add(
                format!("{path}.name"),
                format!("{:?} is not a priority class name: use lowercase letters, digits and '-', starting and ending with a letter or digit", class.name),
            );
        }
        if !seen.insert(class.name.as_str()) {
            v.add(
                format!("{path}.name"),
                format!("{:?} is defined twice", class.name),
            );
        }
        if let Some(limits) = &class.limits {
            quota_limits(&mut v, &format!("{path}.limits"), limits);
        }
    }
    if let Some(default) = &spec.default_priority_class {
        if !seen.contains(default.as_str()) {
            v.add(
                "spec.defaultPriorityClass",
                format!("{default:?} is not one of spec.priorityClasses"),
            );
        }
    }
    v.into_result()
}

fn quota_limits(v: &mut ValidationErrors, path: &str, limits: &QuotaLimits) {
    if let Some(cpu) = &limits.cpu {
        quantity(v, &format!("{path}.cpu"), cpu);
    }
    if let Some(memory) = &limits.memory {
        quantity(v, &format!("{path}.memory"), memory);
    }
}

fn at_least_one(v: &mut ValidationErrors, path: &str, n: u32) {
    if n < 1 {
        v.add(path, format!("{n} is below the minimum of 1"));
    }
}

fn max_length(v: &mut ValidationErrors, path: &str, s: &str, max: usize) {
    if s.len() > max {
        v.add(path, format!("is longer than {max} characters"));
    }
}

fn max_items(v: &mut ValidationErrors, path: &str, n: usize, max: usize) {
    if n > max {
        v.add(path, format!("has {n} items, more than {max}"));
    }
}

fn duration(v: &mut ValidationErrors, path: &str, d: &HumanDuration) {
    if let Err(message) = d.check() {
        v.add(path, message);
    }
}

fn quantity(v: &mut ValidationErrors, path: &str, q: &Quantity) {
    if let Err(message) = q.check() {
        v.add(path, message);
    }
}

fn object_or_absent(v: &mut ValidationErrors, path: &str, value: &serde_json::Value) {
    if !(value.is_object() || value.is_null()) {
        v.add(path, "must be a mapping");
    }
}

fn pod_role(v: &mut ValidationErrors, path: &str, role: &PodRole) {
    resources(v, &format!("{path}.resources"), &role.resources);
    if let Some(template) = &role.pod_template {
        object_or_absent(v, &format!("{path}.podTemplate"), template);
    }
}

fn resources(v: &mut ValidationErrors, path: &str, r: &ResourceRequirements) {
    for (kind, map) in [("requests", &r.requests), ("limits", &r.limits)] {
        if map.len() > 16 {
            v.add(
                format!("{path}.{kind}"),
                format!("has {} entries, more than 16", map.len()),
            );
        }
        for (name, q) in map {
            quantity(v, &format!("{path}.{kind}{}", map_key(name)), q);
        }
    }
}

/// A map key as the API server writes it in a field path: `.cpu`, `[nvidia.com/gpu]`.
fn map_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        format!(".{key}")
    } else {
        format!("[{key}]")
    }
}

/// `^[a-z][-a-z0-9+.]*://.+$`: a scheme, then anything on one line.
fn uri(v: &mut ValidationErrors, path: &str, s: &str) {
    max_length(v, path, s, 1024);
    let ok = s.split_once("://").is_some_and(|(scheme, rest)| {
        scheme.starts_with(|c: char| c.is_ascii_lowercase())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-+.".contains(&b))
            && !rest.is_empty()
            && !rest.contains('\n')
    });
    if !ok {
        v.add(
            path,
            format!("{s:?} is not a URI such as s3://bucket/path or file:///var/lib/sluice"),
        );
    }
}

/// A DNS subdomain: dot-separated DNS labels, at most 253 characters.
/// Letters, digits, '-', '_' and '.', at least one.
fn plain_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

fn secret_key_selector(v: &mut ValidationErrors, path: &str, selector: &SecretKeySelector) {
    secret_name(v, &format!("{path}.name"), &selector.name);
    let key_path = format!("{path}.key");
    max_length(v, &key_path, &selector.key, 253);
    if !plain_name(&selector.key) {
        v.add(
            &key_path,
            format!(
                "{:?} is not a Secret key: use letters, digits, '-', '_' and '.'",
                selector.key
            ),
        );
    }
}

fn secret_name(v: &mut ValidationErrors, path: &str, name: &str) {
    max_length(v, path, name, 253);
    if !name.split('.').all(is_dns_label) {
        v.add(
            path,
            format!("{name:?} is not a Secret name: use lowercase letters, digits, '-' and '.'"),
        );
    }
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$` (length is checked separately, as the schema does).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

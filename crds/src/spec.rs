//! The desired state of a `StreamJob`: the same Rust type whether it comes from a file for
//! `sluice run` ([`crate::StreamJobManifest`]) or from the API server (`StreamJob`, feature
//! `kube`).
//!
//! The CEL rules (`x-kubernetes-validations`) sit next to the fields they check, and
//! [`crate::validate`] implements each of them again, with the same messages, for manifests
//! that never reach an API server.

use crate::duration::HumanDuration;
use crate::quantity::Quantity;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[cfg(feature = "kube")]
use crate::status::StreamJobStatus;

pub const API_GROUP: &str = "sluice.dev";
pub const API_VERSION: &str = "sluice.dev/v1alpha1";
pub const KIND: &str = "StreamJob";

/// Key groups of a job when the manifest does not say: enough to rescale up to 128 subtasks.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;
/// The most key groups a job may have; more only cost memory in every snapshot manifest.
pub const MAX_MAX_PARALLELISM: u32 = 32_768;
/// Longest StreamJob name: the operator names the worker StatefulSet `<name>-worker`, and
/// StatefulSet names must leave room for the pod hash label (52 characters at most).
pub const MAX_NAME_LENGTH: usize = 45;

/// A stream-processing job: which job of which image to run, how wide, and the policies the
/// operator follows through its life (checkpoints, savepoints, upgrades, restarts).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(
    feature = "kube",
    derive(kube::CustomResource),
    kube(
        group = "sluice.dev",
        version = "v1alpha1",
        kind = "StreamJob",
        namespaced,
        shortname = "sj",
        category = "sluice",
        status = "StreamJobStatus",
        derive = "PartialEq",
        doc = "A stream-processing job run by the Sluice operator.",
        scale(
            spec_replicas_path = ".spec.parallelism",
            status_replicas_path = ".status.replicas",
            label_selector_path = ".status.selector"
        ),
        printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
        printcolumn(
            name = "Parallelism",
            type_ = "integer",
            json_path = ".status.parallelism",
            description = "The parallelism the job runs at now"
        ),
        printcolumn(
            name = "Target",
            type_ = "integer",
            json_path = ".spec.parallelism",
            description = "The parallelism asked for",
            priority = 1
        ),
        printcolumn(
            name = "Records/s",
            type_ = "integer",
            json_path = ".status.metrics.recordsPerSecond",
            description = "Source records per second, as last read from the coordinator",
            priority = 1
        ),
        printcolumn(
            name = "Lag (s)",
            type_ = "integer",
            json_path = ".status.metrics.eventTimeLagSeconds",
            description = "Seconds the results' event time lags behind the clock",
            priority = 1
        ),
        printcolumn(
            name = "Last Savepoint",
            type_ = "date",
            json_path = ".status.lastSavepoint.completedAt",
            description = "When the last savepoint completed"
        ),
        printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
        validation = ::kube::core::Rule::new(
            "size(self.metadata.name) <= 45 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
        )
        .message(NAME_RULE_MESSAGE)
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.parallelism <= self.maxParallelism",
    "fieldPath": ".parallelism",
    "messageExpression": "'%d is above spec.maxParallelism (%d)'.format([self.parallelism, self.maxParallelism])",
}]))]
pub struct StreamJobSpec {
    /// The container image with the `sluice` binary that holds the job. Required by the
    /// operator; `sluice run` runs the job of its own binary and ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "size(self) > 0", "message": "must not be empty"},
    ]))]
    pub image: Option<String>,

    /// The job inside the image, and its configuration.
    pub job: JobSpec,

    /// How many parallel subtasks each operator runs. `kubectl scale` sets it.
    #[serde(default = "default_parallelism")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1", "messageExpression": "'%d is below the minimum of 1'.format([self])"},
    ]))]
    pub parallelism: u32,

    /// The number of key groups: the most parallelism the job's state can ever be spread
    /// over. Fixed when the job is created, because its state is partitioned by it.
    #[serde(default = "default_max_parallelism")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1", "messageExpression": "'%d is below the minimum of 1'.format([self])"},
        {"rule": "self <= 32768", "messageExpression": "'%d is above the maximum of 32768'.format([self])"},
        {
            "rule": "self == oldSelf",
            "messageExpression": "'cannot change from %d to %d: it fixes the key groups of the job state'.format([oldSelf, self])",
        },
    ]))]
    pub max_parallelism: u32,

    /// Subtask slots in each worker pod: the operator runs
    /// ceil(parallelism / slotsPerWorker) workers.
    #[serde(default = "default_slots_per_worker")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1", "messageExpression": "'%d is below the minimum of 1'.format([self])"},
    ]))]
    pub slots_per_worker: u32,

    /// The coordinator pod.
    #[serde(default, skip_serializing_if = "PodRole::is_empty")]
    pub coordinator: PodRole,

    /// The worker pods.
    #[serde(default, skip_serializing_if = "PodRole::is_empty")]
    pub worker: PodRole,

    /// Overrides merged into both the coordinator's and the workers' pod template, shaped
    /// like a Kubernetes PodTemplateSpec (metadata, spec). `coordinator.podTemplate` and
    /// `worker.podTemplate` are merged after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub pod_template: Option<serde_json::Value>,

    #[serde(default)]
    pub checkpointing: Checkpointing,

    #[serde(default)]
    pub savepoints: Savepoints,

    /// How the job's state crosses a restart that a spec change requires.
    #[serde(default)]
    pub upgrade_mode: UpgradeMode,

    /// Whether the job should run; `suspended` stops it with a savepoint and removes its pods.
    #[serde(default)]
    pub state: DesiredState,

    /// A savepoint URI to start from when the job has no state of its own yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), extend("x-kubernetes-validations" = [uri_rule()]))]
    pub initial_savepoint: Option<String>,

    /// Start even when the savepoint holds state of operators the new job no longer has;
    /// that state is dropped.
    #[serde(default)]
    pub allow_non_restored_state: bool,

    #[serde(default)]
    pub rollback: Rollback,

    #[serde(default)]
    pub restart_policy: RestartPolicy,

    /// Changing it restarts the job from its newest checkpoint, now: no backoff, and a job
    /// that failed for good runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_nonce: Option<i64>,

    /// A priority class of the namespace's StreamQuota; decides which jobs wait and which
    /// may be preempted when the quota is full. Without it, the quota's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
        "messageExpression": "'\"' + self + '\" is not a priority class name: use lowercase letters, digits and \\'-\\', starting and ending with a letter or digit'",
    }]))]
    pub priority: Option<String>,

    #[serde(default, skip_serializing_if = "Secrets::is_empty")]
    pub secrets: Secrets,

    /// Errors name the key of the record or timer a keyed operator failed on, in the
    /// StreamJob's status and events, the control API and the logs. With `true` they show
    /// `<redacted>` and the key's group instead: for jobs keyed by personal or payment data.
    /// Job code's own panic messages are not rewritten.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redact_keys: bool,
}

/// Shared by the CEL rule on the root of the CRD and by [`crate::parse_manifest`].
pub(crate) const NAME_RULE_MESSAGE: &str = "metadata.name must be at most 45 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit: it names the job's pods and services";

/// CEL rule of URI fields: a URI with a scheme, as object_store reads it.
pub(crate) fn uri_rule() -> serde_json::Value {
    serde_json::json!({
        "rule": "self.matches('^[a-z][-a-z0-9+.]*://.+$')",
        "messageExpression": "'\"' + self + '\" is not a URI such as s3://bucket/path or file:///var/lib/sluice'",
    })
}

/// CEL rule of Secret names: a DNS subdomain, as Kubernetes requires of object names.
pub(crate) fn secret_name_rule() -> serde_json::Value {
    serde_json::json!({
        "rule": "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
        "messageExpression": "'\"' + self + '\" is not a Secret name: use lowercase letters, digits, \\'-\\' and \\'.\\''",
    })
}

fn default_parallelism() -> u32 {
    1
}

fn default_max_parallelism() -> u32 {
    DEFAULT_MAX_PARALLELISM
}

fn default_slots_per_worker() -> u32 {
    1
}

impl StreamJobSpec {
    /// A spec with every default: parallelism 1, 128 key groups, running, savepoint upgrades.
    pub fn new(job: JobSpec) -> Self {
        Self {
            image: None,
            job,
            parallelism: default_parallelism(),
            max_parallelism: default_max_parallelism(),
            slots_per_worker: default_slots_per_worker(),
            coordinator: PodRole::default(),
            worker: PodRole::default(),
            pod_template: None,
            checkpointing: Checkpointing::default(),
            savepoints: Savepoints::default(),
            upgrade_mode: UpgradeMode::default(),
            state: DesiredState::default(),
            initial_savepoint: None,
            allow_non_restored_state: false,
            rollback: Rollback::default(),
            restart_policy: RestartPolicy::default(),
            restart_nonce: None,
            priority: None,
            secrets: Secrets::default(),
            redact_keys: false,
        }
    }
}

/// The job inside the image, by name, and its configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    /// The name the job is registered under in the image (`sluice jobs` lists them).
    #[schemars(length(max = 63), extend("x-kubernetes-validations" = [
        {"rule": "size(self) > 0", "message": "must not be empty"},
        {
            "rule": "size(self) == 0 || self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
            "messageExpression": "'\"' + self + '\" is not a job name: use lowercase letters, digits and \\'-\\', starting and ending with a letter or digit'",
        },
    ]))]
    pub name: String,

    /// Free-form: each job documents and checks its own fields.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schemars(schema_with = "free_form_object")]
    pub config: serde_json::Value,
}

impl JobSpec {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            config: serde_json::Value::Null,
        }
    }
}

/// Settings of one kind of pod (coordinator or worker).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodRole {
    /// Compute resources of the container running `sluice`; also what StreamQuota counts.
    #[serde(default, skip_serializing_if = "ResourceRequirements::is_empty")]
    pub resources: ResourceRequirements,

    /// Overrides merged into this role's pod template after `spec.podTemplate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub pod_template: Option<serde_json::Value>,
}

impl PodRole {
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.pod_template.is_none()
    }
}

/// Requests and limits by resource name (`cpu`, `memory`, …), as in a Kubernetes container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceRequirements {
    // At most 16 entries: the bound keeps the API server's cost estimate of the per-value
    // rules within budget.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub requests: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub limits: BTreeMap<String, Quantity>,
}

impl ResourceRequirements {
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.limits.is_empty()
    }
}

/// Periodic checkpoints: what a restart after a failure resumes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpointing {
    /// Time between the starts of two checkpoints.
    #[serde(default = "default_checkpoint_interval")]
    pub interval: HumanDuration,

    /// Where checkpoints (and, unless `savepoints.storage` says otherwise, savepoints) go:
    /// `s3://bucket/prefix` or `file:///path` on a volume every pod mounts. The pointer to
    /// the latest complete checkpoint lives there too. `sluice run` defaults to a local
    /// directory; the operator needs it unless upgradeMode is `stateless`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), extend("x-kubernetes-validations" = [uri_rule()]))]
    pub storage: Option<String>,

    /// Completed checkpoints kept; older ones are deleted.
    #[serde(default = "default_checkpoint_retention")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1", "messageExpression": "'%d is below the minimum of 1'.format([self])"},
    ]))]
    pub retention: u32,

    /// Unaligned barriers: checkpoints complete under backpressure, at the cost of storing
    /// in-flight records.
    #[serde(default)]
    pub unaligned: bool,

    /// Encrypt the state files of checkpoints and savepoints at rest (AES-256-GCM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<SnapshotEncryption>,
}

/// The key snapshots are encrypted with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotEncryption {
    /// The key's name, recorded with every file it encrypts: a snapshot is read with the key
    /// it was written with, so a new key needs a new id.
    #[schemars(length(min = 1, max = 63), extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[-._a-zA-Z0-9]+$')",
        "messageExpression": "'\"' + self + '\" is not a key id: use letters, digits, \\'-\\', \\'_\\' and \\'.\\''",
    }]))]
    pub key_id: String,

    /// The Secret key holding the key: base64 of 32 random bytes
    /// (`head -c 32 /dev/urandom | base64`).
    pub secret: SecretKeySelector,
}

impl SnapshotEncryption {
    /// The environment variable the operator sets to the key id, and `sluice` reads.
    pub const KEY_ID_ENV: &'static str = "SLUICE_SNAPSHOT_KEY_ID";
    /// The environment variable holding the key (base64), from the Secret.
    pub const KEY_ENV: &'static str = "SLUICE_SNAPSHOT_KEY";
}

fn default_checkpoint_interval() -> HumanDuration {
    HumanDuration::new("30s")
}

fn default_checkpoint_retention() -> u32 {
    3
}

impl Default for Checkpointing {
    fn default() -> Self {
        Self {
            interval: default_checkpoint_interval(),
            storage: None,
            retention: default_checkpoint_retention(),
            unaligned: false,
            encryption: None,
        }
    }
}

/// Savepoints: portable snapshots taken on request, periodically, and before upgrades,
/// suspension and deletion.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Savepoints {
    /// Change to any new value to take a savepoint now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_nonce: Option<i64>,

    /// Take a savepoint this often while the job runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periodic_interval: Option<HumanDuration>,

    #[serde(default)]
    pub retention: SavepointRetention,

    /// What deleting the StreamJob does to the running job.
    #[serde(default)]
    pub on_delete: OnDelete,

    /// Where savepoints go; defaults to `savepoints/` under `checkpointing.storage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), extend("x-kubernetes-validations" = [uri_rule()]))]
    pub storage: Option<String>,
}

/// Which savepoints the operator deletes. It never deletes the newest completed savepoint,
/// nor one a restore or rollback still needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SavepointRetention {
    /// Keep at most this many completed savepoints.
    #[serde(default = "default_savepoint_max_count")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1", "messageExpression": "'%d is below the minimum of 1'.format([self])"},
    ]))]
    pub max_count: u32,

    /// Delete savepoints older than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<HumanDuration>,
}

fn default_savepoint_max_count() -> u32 {
    5
}

impl Default for SavepointRetention {
    fn default() -> Self {
        Self {
            max_count: default_savepoint_max_count(),
            max_age: None,
        }
    }
}

/// What deleting a StreamJob does to its running job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnDelete {
    /// Stop the job with a final savepoint before its pods go, so it can be recreated from it.
    #[default]
    Savepoint,
    /// Remove the pods at once; state since the last checkpoint is not kept.
    None,
}

/// How state crosses a restart that a spec change needs (new image, config, resources …).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeMode {
    /// Stop with a savepoint, then start the new spec from it. Slowest, and always portable.
    #[default]
    Savepoint,
    /// Stop, then start the new spec from the latest checkpoint.
    LastState,
    /// Start the new spec without state.
    Stateless,
}

/// Whether the job should be running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DesiredState {
    #[default]
    Running,
    /// Stopped with a savepoint and without pods; resumes from it when set back to running.
    Suspended,
}

/// Going back to the last stable spec when a new one does not become ready.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!self.enabled || has(self.readinessTimeout)",
    "fieldPath": ".readinessTimeout",
    "reason": "FieldValueRequired",
    "message": "is required when spec.rollback.enabled is true",
}]))]
pub struct Rollback {
    #[serde(default)]
    pub enabled: bool,

    /// How long a new spec has to become ready before it is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_timeout: Option<HumanDuration>,
}

/// Restarts after failures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartPolicy {
    #[serde(default)]
    pub backoff: Backoff,

    /// Give up (phase Failed) after this many restarts without a healthy period in
    /// between; without it, restart forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,

    /// After running this long without failing, the restart count and backoff start over.
    #[serde(default = "default_reset_after")]
    pub reset_after: HumanDuration,
}

fn default_reset_after() -> HumanDuration {
    HumanDuration::new("10m")
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            max_restarts: None,
            reset_after: default_reset_after(),
        }
    }
}

/// Exponential backoff between restarts: `initial * multiplier^n`, at most `max`, each delay
/// moved by up to ±jitter of itself so that jobs failing together do not restart together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!self.initial.matches('^([0-9]{1,9}(ms|s|m|h))+$') || !self.max.matches('^([0-9]{1,9}(ms|s|m|h))+$') || duration(self.max) >= duration(self.initial)",
    "fieldPath": ".max",
    "messageExpression": "'\"' + self.max + '\" is shorter than spec.restartPolicy.backoff.initial (\"' + self.initial + '\")'",
}]))]
pub struct Backoff {
    #[serde(default = "default_backoff_initial")]
    pub initial: HumanDuration,

    #[serde(default = "default_backoff_max")]
    pub max: HumanDuration,

    #[serde(default = "default_backoff_multiplier")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 1.0", "message": "must be at least 1"},
    ]))]
    pub multiplier: f64,

    #[serde(default = "default_backoff_jitter")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self >= 0.0 && self <= 1.0", "message": "must be between 0 and 1"},
    ]))]
    pub jitter: f64,
}

fn default_backoff_initial() -> HumanDuration {
    HumanDuration::new("10s")
}

fn default_backoff_max() -> HumanDuration {
    HumanDuration::new("5m")
}

fn default_backoff_multiplier() -> f64 {
    2.0
}

fn default_backoff_jitter() -> f64 {
    0.2
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: default_backoff_initial(),
            max: default_backoff_max(),
            multiplier: default_backoff_multiplier(),
            jitter: default_backoff_jitter(),
        }
    }
}

/// Secrets the job's pods use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secrets {
    /// The token that authenticates calls to the coordinator's control API. Without it the
    /// operator generates one in a Secret it owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretKeySelector>,

    /// Secrets whose keys become environment variables of every pod (e.g. object storage
    /// or Kafka credentials).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub env: Vec<SecretReference>,
}

impl Secrets {
    pub fn is_empty(&self) -> bool {
        self.token.is_none() && self.env.is_empty()
    }
}

/// One key of a Secret in the job's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeySelector {
    #[schemars(length(max = 253), extend("x-kubernetes-validations" = [secret_name_rule()]))]
    pub name: String,

    #[serde(default = "default_token_key")]
    #[schemars(length(max = 253), extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[-._a-zA-Z0-9]+$')",
        "messageExpression": "'\"' + self + '\" is not a Secret key: use letters, digits, \\'-\\', \\'_\\' and \\'.\\''",
    }]))]
    pub key: String,
}

fn default_token_key() -> String {
    "token".into()
}

/// A Secret in the job's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretReference {
    #[schemars(length(max = 253), extend("x-kubernetes-validations" = [secret_name_rule()]))]
    pub name: String,
}

/// Job config and pod templates: any JSON object, kept as written by the API server.
pub(crate) fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

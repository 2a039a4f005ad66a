//! What the operator has observed and decided about a `StreamJob`.
//!
//! The status is the operator's write-ahead log: it records the spec it is about to roll out
//! ([`StreamJobStatus::target`]) and the step it is taking ([`StreamJobStatus::operation`])
//! *before* acting, so that an operator restarted at any point resumes the step instead of
//! starting over or losing state. Times are RFC 3339 UTC text (`2026-01-01T00:00:00Z`), so
//! the type stays the same with and without the `kube` feature.

use crate::operation::{is_zero, Operation};
use crate::spec::{free_form_object, StreamJobSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Condition types the operator sets.
pub mod condition_types {
    /// The job runs its current spec and completes checkpoints.
    pub const READY: &str = "Ready";
    /// A deploy, upgrade, rescale, suspend, resume or rollback is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// Something needs attention: failures, restarts, a refused upgrade.
    pub const DEGRADED: &str = "Degraded";
    /// The namespace's StreamQuota has room for the job (False while it waits in Queued).
    pub const ADMITTED: &str = "Admitted";
    /// The last savepoint request completed (False with the reason when it failed).
    pub const SAVEPOINT: &str = "Savepoint";
}

/// The observed state of a StreamJob.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["type"],
    ))]
    pub conditions: Vec<Condition>,

    /// The spec being rolled out, recorded before the rollout starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<SpecRevision>,

    /// The last spec that ran healthy: what a rollback returns to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<SpecRevision>,

    /// The step in progress, recorded before it is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<CheckpointInfo>,

    /// The newest completed savepoint (also the last entry of `savepoints` that completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_savepoint: Option<SavepointInfo>,

    /// Savepoints the operator knows of and has not deleted, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub savepoints: Vec<SavepointInfo>,

    /// Savepoints retention dropped from `savepoints` whose files are still to be deleted
    /// (by a Job running `sluice savepoint delete` with the job's image and volumes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_savepoints: Vec<String>,

    /// The last `spec.restartNonce` acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_nonce: Option<i64>,

    /// The last `spec.savepoints.triggerNonce` acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint_trigger_nonce: Option<i64>,

    /// When the last periodic savepoint was asked for, whether or not it completed: the
    /// next is due a `periodicInterval` later, so one that fails is not asked for again at
    /// once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_periodic_savepoint_at: Option<String>,

    /// The parallelism the job runs at now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,

    /// The same as `parallelism`, for the scale subresource (`kubectl scale`, autoscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,

    /// Label selector of the job's pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// The last error, kept until the job is healthy again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<RestartStatus>,

    /// What the running job is doing, as its coordinator last reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<JobMetrics>,
}

/// A summary of the job's metrics, read from its coordinator at most every
/// [`JobMetrics::INTERVAL_SECONDS`], so that writing it does not wake the operator again and
/// again. The full series are on the coordinator's metrics port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobMetrics {
    /// When the coordinator was read.
    #[schemars(extend("format" = "date-time"))]
    pub observed_at: String,
    /// Records the sources have read in this run.
    pub source_records: u64,
    /// Source records per second between the last two readings of the same run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_per_second: Option<u64>,
    /// Event time the results are complete up to: the lowest watermark of the chains that
    /// end in sinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub watermark: Option<String>,
    /// Seconds from `watermark` to `observedAt`: how far results lag behind the clock
    /// (negative when event time runs ahead of it, as a generator's can).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_lag_seconds: Option<i64>,
    /// The operator group whose subtasks spent the largest share of this run waiting for
    /// room downstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub most_backpressured: Option<OperatorShare>,
    /// The group that holds the job back: while some group is backpressured, the busiest
    /// of the groups that are not (percent of its subtasks' time busy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bottleneck: Option<OperatorShare>,
    /// The size in storage of the state the last completed checkpoint refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_bytes: Option<u64>,
    /// How long the last completed checkpoint took, from its barrier to its manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_duration_ms: Option<u64>,
    /// Checkpoints that failed since the last one that completed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub checkpoints_failed_in_a_row: u64,
    /// The largest key group's share of a keyed operator's records, against an even
    /// spread: 1.0 is no skew, 4.0 a key group with four times its share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_group_skew: Option<KeyGroupSkew>,
    /// The readings of the last minute or so, oldest first: what the trends below are
    /// judged on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<MetricsReading>,
    /// What is going wrong while the job runs; the `Degraded` condition carries it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<HealthFinding>,
}

impl JobMetrics {
    /// The least time between two readings.
    pub const INTERVAL_SECONDS: u64 = 10;
    /// The readings kept in `recent`.
    pub const RECENT_READINGS: usize = 7;
}

/// One reading of the figures whose trend matters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsReading {
    #[schemars(extend("format" = "date-time"))]
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_lag_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_bytes: Option<u64>,
}

/// The most skewed keyed operator group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyGroupSkew {
    pub operator: String,
    /// The key group with the most records.
    pub key_group: u32,
    /// Its records over the mean of the group's key groups.
    pub ratio: f64,
}

/// Why a running job is `Degraded` although nothing failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HealthReason {
    /// Event-time lag kept growing: the job reads slower than its input arrives.
    LagGrowing,
    /// The state kept growing fast enough to reach the workers' memory within the hour.
    StateGrowing,
    /// Checkpoints failed several times in a row.
    CheckpointsFailing,
}

impl HealthReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthReason::LagGrowing => "LagGrowing",
            HealthReason::StateGrowing => "StateGrowing",
            HealthReason::CheckpointsFailing => "CheckpointsFailing",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthFinding {
    pub reason: HealthReason,
    pub message: String,
    /// When it was first seen.
    #[schemars(extend("format" = "date-time"))]
    pub since: String,
}

/// An operator group and a share of its subtasks' time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperatorShare {
    pub operator: String,
    /// Percent of the subtasks' time since the run started.
    pub percent: u32,
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Seen, nothing started yet.
    Pending,
    /// Waiting for room in the namespace's StreamQuota.
    Queued,
    /// Pods starting, job not yet running.
    Deploying,
    Running,
    /// Its input ran out: the job is done, and stays so until its spec changes.
    Finished,
    /// Moving to a new spec (savepoint, stop, start).
    Upgrading,
    /// Changing parallelism: state redistributed by key groups.
    Rescaling,
    /// Stopping with a savepoint to suspend (or to make room for a higher priority).
    Suspending,
    Suspended,
    /// Stopped with a savepoint to make room for a higher priority in the namespace's
    /// StreamQuota; resumes from it by itself when there is room again.
    Preempted,
    /// Waiting out the backoff before a restart after a failure.
    Restarting,
    /// Returning to the last stable spec.
    RollingBack,
    /// Given up: too many restarts, or an error that needs a spec change.
    Failed,
    /// Taking the final savepoint before the StreamJob goes away.
    Deleting,
}

/// A condition in the shape of Kubernetes' `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Ready, Progressing, Degraded, Admitted or Savepoint (see `condition_types`).
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    /// A CamelCase word for programs.
    pub reason: String,
    /// The same for people.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed.
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl StreamJobStatus {
    /// Sets a condition, keeping its `lastTransitionTime` when the status did not change, as
    /// Kubernetes' convention asks.
    pub fn set_condition(&mut self, condition: Condition) {
        match self
            .conditions
            .iter_mut()
            .find(|c| c.type_ == condition.type_)
        {
            Some(existing) => {
                let since = if existing.status == condition.status {
                    std::mem::take(&mut existing.last_transition_time)
                } else {
                    condition.last_transition_time.clone()
                };
                *existing = Condition {
                    last_transition_time: since,
                    ..condition
                };
            }
            None => self.conditions.push(condition),
        }
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// A spec as the operator recorded it: its fingerprint, and the spec itself so that a
/// rollback or a resumed upgrade needs nothing but the status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpecRevision {
    /// The fingerprint of `spec` (`StreamJobSpec::fingerprint`).
    pub hash: String,
    /// The metadata.generation the spec came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Stored without the spec's schema and rules, so that a later, stricter CRD can never
    /// make an old status unwritable.
    #[schemars(schema_with = "free_form_object")]
    pub spec: StreamJobSpec,
    /// The savepoint (or checkpoint) this spec starts or started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<String>,
    /// Names the deployment of this spec: its checkpoints go under
    /// `<checkpointing.storage>/<namespace>/<name>/<run>`, so that a restarted coordinator
    /// resumes from its own run's checkpoints and never from an older run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub recorded_at: Option<String>,
}

impl SpecRevision {
    pub fn new(spec: StreamJobSpec, generation: Option<i64>) -> Self {
        Self {
            hash: spec.fingerprint(),
            generation,
            spec,
            restore_from: None,
            run: None,
            recorded_at: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OperationKind {
    Deploy,
    Upgrade,
    Rescale,
    Suspend,
    Resume,
    Rollback,
    Restart,
    Savepoint,
    Preempt,
    Delete,
}

/// A completed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointInfo {
    pub id: u64,
    /// Where its manifest is.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub completed_at: Option<String>,
}

/// A savepoint, requested or taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointInfo {
    /// Where it is (its manifest), once the coordinator has said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub trigger: SavepointTrigger,
    pub state: SavepointState,
    /// The trigger nonce it answers, for manual savepoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<i64>,
    /// Fingerprint of the spec that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub triggered_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub completed_at: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a savepoint was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SavepointTrigger {
    /// `spec.savepoints.triggerNonce` changed.
    Manual,
    Periodic,
    Upgrade,
    Suspend,
    Preemption,
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SavepointState {
    InProgress,
    Completed,
    Failed,
}

/// An error with what the operator was doing when it happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    /// A CamelCase word for programs, e.g. `IncompatibleState`.
    pub reason: String,
    pub message: String,
    /// The phase the job was in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The operation under way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationKind>,
    /// More facts: the savepoint, the pod, the operator uid that failed …
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, String>,
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
}

/// Restarts of the whole job by the operator after it failed for good (see
/// `spec.restartPolicy`). Kept in the status, so that an operator restarted during a backoff
/// resumes the same wait and the same count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartStatus {
    /// Restarts since the job was last healthy for `resetAfter`; drives the backoff and
    /// `maxRestarts`.
    #[serde(default)]
    pub count: u32,
    /// Restarts over the life of the StreamJob, `spec.restartNonce` ones included.
    #[serde(default)]
    pub total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_restart_time: Option<String>,
    /// When the pending restart may happen: the end of the backoff, or of the wait for the
    /// operator-wide restart rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub next_restart_time: Option<String>,
    /// Why the pending restart has not happened yet: `Backoff` or `RateLimited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<RestartWait>,
    /// The failure the last restart answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
}

/// What a pending restart waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RestartWait {
    /// The backoff `spec.restartPolicy.backoff` asks for after this many failures.
    Backoff,
    /// The operator-wide restart rate limit: too many jobs restart at once.
    RateLimited,
}

/// Why a job failed for good, with the coordinator's context when it said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// `JobFailed` (the coordinator gave up), `PodFailing` (a pod cannot run: crash loop,
    /// image, eviction, scheduling) or `Manual` (`spec.restartNonce`).
    pub reason: String,
    pub message: String,
    /// The operator whose subtask failed, as the coordinator reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtask: Option<u32>,
    /// The pod that could not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
}

//! The control API's JSON (`docs/control-api.md`): what the runtime's coordinator serves
//! and the operator reads, in the one place both halves depend on. Fields are only ever
//! added, never renamed or removed, so that a client ignores fields it does not know; phases
//! and kinds are enums, so a client matches on them rather than on spellings.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Subtasks are being deployed or are restoring state. Embedded mode never reports it:
    /// its API starts once the job runs.
    Starting,
    Running,
    /// A stop (with or without savepoint) was asked for and is under way.
    Stopping,
    /// Ended without failure: its input was exhausted, or it was stopped.
    Finished,
    /// A subtask or checkpointing failed for good (see `errors`).
    Failed,
    /// Distributed mode: the job failed (see `errors`) and restarts from its latest
    /// checkpoint once `restarts.backoffMs` has passed.
    Restarting,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Finished => "finished",
            Phase::Failed => "failed",
            Phase::Restarting => "restarting",
        }
    }
}

/// `GET /v1/job`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// The job's name (as `sluice jobs` lists it and snapshots record it).
    pub name: String,
    pub phase: Phase,
    /// The highest parallelism of the job's operators.
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub uptime_seconds: f64,
    /// One entry per subtask of each chain of operators, named by the chain's first operator.
    pub subtasks: Vec<SubtaskStatus>,
    pub checkpoints: CheckpointSummary,
    /// The checkpoint or savepoint this run was restored from.
    pub restored_from: Option<String>,
    /// Root causes of the failure; empty unless the phase is `failed`. While a
    /// distributed job restarts, the causes of the failure it restarts from.
    pub errors: Vec<JobError>,
    /// The in-job restart strategy (distributed mode; embedded runs never restart).
    #[serde(default)]
    pub restarts: RestartStatus,
    /// The workers a distributed job runs on; empty in embedded mode.
    #[serde(default)]
    pub workers: Vec<WorkerStatus>,
    /// The job's operator groups and how records flow between them.
    #[serde(default)]
    pub topology: Topology,
}

/// The job as a graph of operator groups: what the job page draws.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    /// In the order the job defines them, sources first.
    pub groups: Vec<OperatorGroup>,
    pub edges: Vec<GroupEdge>,
}

/// Operators chained into one thread per subtask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorGroup {
    /// The first operator's uid, as `subtasks[].operator` names the group.
    pub name: String,
    /// The uids of its operators, first to last.
    pub operators: Vec<String>,
    pub parallelism: u32,
}

/// Records flowing from one operator group to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupEdge {
    pub from: String,
    pub to: String,
    pub partitioning: Partitioning,
}

/// How an edge spreads records over the receiving group's subtasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Partitioning {
    /// Subtask i to subtask i.
    Forward,
    /// Round robin.
    Rebalance,
    /// Every record to every subtask.
    Broadcast,
    /// By key group of the record's key.
    Hash,
}

/// How often a distributed job restarted from its latest checkpoint, and what comes next.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartStatus {
    /// Restarts since the coordinator started.
    pub count: u32,
    /// Restarts without a healthy period in between; the strategy gives up beyond
    /// `maxAttempts`.
    pub consecutive: u32,
    pub max_attempts: u32,
    /// The wait before the next restart, while the job waits for it.
    pub backoff_ms: Option<u64>,
    /// Why the job last restarted.
    pub last_failure: Option<String>,
}

/// One registered worker of a distributed job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    pub name: String,
    /// Where it receives records from other workers.
    pub address: String,
    pub slots: u32,
    /// Slots the current run uses.
    pub used_slots: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubtaskState {
    Running,
    Finished,
    Failed,
    /// Stopped because the job was stopped or another subtask failed.
    Cancelled,
}

impl SubtaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubtaskState::Running => "running",
            SubtaskState::Finished => "finished",
            SubtaskState::Failed => "failed",
            SubtaskState::Cancelled => "cancelled",
        }
    }
}

impl JobStatus {
    /// Records per key group of each keyed operator, summed over the subtasks that feed it.
    pub fn key_group_records(&self) -> BTreeMap<&str, Vec<u64>> {
        let mut out: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for k in self.subtasks.iter().flat_map(|t| &t.key_groups) {
            let sums = out.entry(k.operator.as_str()).or_default();
            if sums.len() < k.records.len() {
                sums.resize(k.records.len(), 0);
            }
            for (sum, n) in sums.iter_mut().zip(&k.records) {
                *sum += n;
            }
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubtaskStatus {
    pub operator: String,
    pub subtask: u32,
    pub state: SubtaskState,
    /// Whether the chain starts with a source / ends in a sink.
    pub source: bool,
    pub sink: bool,
    /// Records entering the chain (read from channels, or by a source from its splits).
    pub records_in: u64,
    /// Records sent to other chains.
    pub records_out: u64,
    /// Records handed to sinks.
    pub sink_records: u64,
    /// Records dropped for arriving after their window or join had closed.
    pub late_records: u64,
    pub busy_seconds: f64,
    pub idle_seconds: f64,
    pub backpressured_seconds: f64,
    /// Time spent aligning checkpoint barriers: from a barrier's arrival on one input to its
    /// arrival on the last (part of the three above, not beside them). Always written, like
    /// `keyGroups`.
    #[serde(default)]
    pub aligning_seconds: f64,
    /// Event time (epoch milliseconds) the chain's output is complete up to; `null` before
    /// the first watermark.
    pub watermark_ms: Option<i64>,
    /// The worker it runs on (distributed mode).
    #[serde(default)]
    pub worker: Option<String>,
    /// Records this subtask sent to each key group of the keyed operators it feeds. Always
    /// written, even empty: workers send this struct to their coordinator in bincode, which
    /// cannot tell a field left out.
    #[serde(default)]
    pub key_groups: Vec<KeyGroupRecords>,
    /// A source's splits (Kafka partitions, generator splits) this subtask reads; empty for
    /// other chains. Always written, like `keyGroups`.
    #[serde(default)]
    pub splits: Vec<SplitStatus>,
    /// How full the chain's input channels are: batches queued over the batches they can
    /// hold, sampled a few times a second. Near 1 the chain cannot keep up with its
    /// inputs; 0 for sources. Always written, like `keyGroups`.
    #[serde(default)]
    pub input_buffer_fill: f64,
    /// Bytes of the restored snapshot the chain's operators read when the run started (only
    /// the key groups they own), and the time that took, loading included. 0 for a run
    /// that restored nothing. Always written, like `keyGroups`.
    #[serde(default)]
    pub restored_bytes: u64,
    #[serde(default)]
    pub restore_seconds: f64,
    /// For a chain that ends in a sink: how long records took from being read by a source
    /// to being visible in the sink (committed, for a sink whose output a checkpoint
    /// commits; written, for the others), from latency markers the sources send every
    /// 100 ms. Empty for other chains. Always written, like `keyGroups`.
    #[serde(default)]
    pub end_to_end_latency: LatencyHistogram,
}

/// Samples of a duration in power-of-two microsecond buckets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyHistogram {
    /// `counts[b]`: samples of less than 2^b µs (and at least 2^(b-1) µs); the last bucket
    /// also holds every longer one.
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    pub fn samples(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound, in seconds, of the bucket holding quantile `q`; `None` without
    /// samples.
    pub fn quantile_seconds(&self, q: f64) -> Option<f64> {
        Self::quantile_bucket(&self.counts, q).map(Self::upper_bound_seconds)
    }

    /// The bucket of `counts` (samples per bucket) holding quantile `q`; `None` without
    /// samples.
    pub fn quantile_bucket(counts: &[u64], q: f64) -> Option<usize> {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        counts.iter().position(|&n| {
            seen += n;
            seen >= rank
        })
    }

    /// The upper bound of bucket `b`, in seconds.
    pub fn upper_bound_seconds(b: usize) -> f64 {
        (1u64 << b.min(63)) as f64 / 1e6
    }
}

/// One split of a source, as its subtask last published it (a few times a second).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SplitStatus {
    pub split: u32,
    /// In the split's own terms: events read from the generator, a Kafka partition's next
    /// offset.
    pub position: u64,
    /// Records available past `position`, when the source knows (a Kafka partition's end
    /// offset as last fetched, less `position`): the source's lag.
    pub backlog: Option<u64>,
    /// Event time (epoch milliseconds) the split alone lets the watermark reach; `null`
    /// before its first record.
    pub watermark_ms: Option<i64>,
    /// Whether it has had no data for the source's idle timeout, so that it does not hold
    /// the watermark back.
    pub idle: bool,
}

/// Records sent to each key group of a keyed operator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyGroupRecords {
    /// The keyed operator they were sent to.
    pub operator: String,
    /// Indexed by key group: one entry per key group of the job's maximum parallelism.
    pub records: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSummary {
    /// Checkpoints and savepoints completed by this run.
    pub completed: u64,
    pub failed: u64,
    /// Failed since the last one that completed; absent from coordinators that predate it.
    #[serde(default)]
    pub failed_in_a_row: u64,
    pub last_completed: Option<SnapshotInfo>,
    pub last_failure: Option<String>,
    /// The last completed checkpoints and savepoints, oldest first (at most
    /// [`CheckpointSummary::RECENT`]).
    #[serde(default)]
    pub recent: Vec<SnapshotInfo>,
}

impl CheckpointSummary {
    /// How many completed snapshots `recent` keeps.
    pub const RECENT: usize = 20;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotKind {
    Checkpoint,
    Savepoint,
    /// Taken when every subtask reached the end of its input.
    Final,
}

/// A completed checkpoint or savepoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInfo {
    pub id: u64,
    pub kind: SnapshotKind,
    /// Its directory: what `sluice run --restore` takes.
    pub location: String,
    pub duration_ms: u64,
    /// The state it refers to, in storage.
    pub bytes: u64,
    /// When it completed (epoch milliseconds); absent from coordinators that predate it.
    #[serde(default)]
    pub completed_at_ms: Option<u64>,
    /// What each stateful operator's state takes of `bytes`, in the order the job
    /// declares them.
    #[serde(default)]
    pub operators: Vec<OperatorBytes>,
}

/// One operator's share of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorBytes {
    /// Its uid.
    pub operator: String,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobError {
    /// The operator whose subtask failed; `null` when checkpointing failed.
    pub operator: Option<String>,
    pub subtask: Option<u32>,
    pub cause: String,
    /// The errors that led to `cause`, from the one it wraps down to the root, each with
    /// its own message (which may repeat the messages of those below it). Always written,
    /// like `SubtaskStatus::keyGroups`.
    #[serde(default)]
    pub causes: Vec<String>,
    /// Where the failed subtask was in its input when it failed; `null` when the error is
    /// not a subtask's. Always written.
    #[serde(default)]
    pub input: Option<InputPosition>,
    /// The key of the record or timer a keyed operator failed on, as the job's code prints
    /// it (`Debug`); `null` when the error is not a key's, or when the job redacts keys
    /// (`spec.redactKeys`). Always written.
    #[serde(default)]
    pub key: Option<String>,
    /// That key's key group: set whenever the error is a key's, redacted or not.
    #[serde(default)]
    pub key_group: Option<u32>,
}

impl JobError {
    /// An error of the job as a whole (checkpointing, the cluster), not of one subtask.
    pub fn of_job(cause: impl Into<String>) -> Self {
        JobError {
            cause: cause.into(),
            ..JobError::default()
        }
    }

    /// Hides the key, for those who may not see records: `key` becomes `null`, and where
    /// `cause` and `causes` name it they say `<redacted>`. The key group stays.
    pub fn redact_key(&mut self) {
        let (Some(text), Some(group)) = (self.key.take(), self.key_group) else {
            return;
        };
        let (shown, hidden) = (describe_key(Some(&text), group), describe_key(None, group));
        for message in std::iter::once(&mut self.cause).chain(&mut self.causes) {
            *message = message.replace(&shown, &hidden);
        }
    }
}

/// How an error names the key it failed on: `key "alice" (key group 17)`, or with no text
/// (redacted) `key <redacted> (key group 17)`.
pub fn describe_key(text: Option<&str>, key_group: u32) -> String {
    let text = text.unwrap_or("<redacted>");
    format!("key {text} (key group {key_group})")
}

/// Where a subtask was in its input.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputPosition {
    /// Records that had entered its chain in this run (each of them processed).
    pub records_in: u64,
    /// The watermark it had passed on, epoch milliseconds; `null` before the first.
    pub watermark_ms: Option<i64>,
    /// For a source subtask, each split's position (as in `SplitStatus::position`): a
    /// record that failed to parse is the next one of its split.
    pub splits: Vec<SplitPositionStatus>,
}

impl std::fmt::Display for InputPosition {
    /// `split 0 at 5, split 3 at 17` for a source, `after 1234 records` otherwise.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.splits.is_empty() {
            return write!(f, "after {} records", self.records_in);
        }
        for (i, s) in self.splits.iter().enumerate() {
            let comma = if i == 0 { "" } else { ", " };
            write!(f, "{comma}split {} at {}", s.split, s.position)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SplitPositionStatus {
    pub split: u32,
    pub position: u64,
}

/// `POST /v1/savepoints`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SavepointRequest {
    /// Savepoint storage: an absolute path, `file:///…` or `s3://bucket/prefix`; the run's
    /// default savepoint directory when absent.
    #[serde(default)]
    pub target_directory: Option<String>,
    /// Stop the job once the savepoint is complete.
    #[serde(default)]
    pub stop: bool,
}

/// `POST /v1/stop`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StopRequest {
    /// Stop with a savepoint (`true`) or cancel (`false`); required so that no stop loses
    /// state by omission.
    pub savepoint: bool,
    #[serde(default)]
    pub target_directory: Option<String>,
}

/// `POST /v1/compatibility`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompatibilityRequest {
    /// A checkpoint or savepoint directory: an absolute path, `file://` or `s3://` URI.
    pub savepoint: String,
    #[serde(default)]
    pub allow_non_restored_state: bool,
}

/// `202` of `POST /v1/savepoints`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub id: String,
}

/// `202` of `POST /v1/stop`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopAccepted {
    /// The savepoint request to poll at `/v1/savepoints/{id}`; `null` when cancelling.
    pub savepoint_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SavepointState {
    InProgress,
    Completed,
    Failed,
}

/// `GET /v1/savepoints/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavepointStatus {
    pub id: String,
    pub status: SavepointState,
    pub stop: bool,
    /// The storage URI the savepoint goes to.
    pub target_directory: String,
    /// Once completed: the savepoint's directory.
    pub location: Option<String>,
    pub bytes: Option<u64>,
    pub duration_ms: Option<u64>,
    /// Once failed: why.
    pub error: Option<String>,
}

/// `200` of `POST /v1/compatibility`: what `sluice savepoint check` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompatibilityReport {
    /// Whether the job would restore the snapshot (given `allowNonRestoredState`).
    pub compatible: bool,
    /// Restoring would drop state (allowed only with `allowNonRestoredState`).
    pub drops_state: bool,
    /// One sentence per finding, naming operator and state.
    pub messages: Vec<String>,
    pub missing_operators: Vec<String>,
    pub missing_states: Vec<OperatorState>,
    pub incompatible_states: Vec<IncompatibleState>,
    pub new_operators: Vec<String>,
    /// Set when the snapshot's max parallelism differs from the job's.
    pub max_parallelism: Option<MaxParallelismMismatch>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorState {
    pub operator: String,
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncompatibleState {
    pub operator: String,
    pub state: String,
    pub snapshot_version: u32,
    pub job_version: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaxParallelismMismatch {
    pub snapshot: u32,
    pub job: u32,
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `/healthz` and `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub ready: bool,
    pub phase: Phase,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacting_a_key_hides_its_text_everywhere_and_keeps_its_group() {
        let at = "operator 'totals' subtask 0 failed at key \"card-7\" (key group 9): boom";
        let mut e = JobError {
            cause: at.into(),
            causes: vec!["key \"card-7\" (key group 9): boom".into(), "boom".into()],
            key: Some("\"card-7\"".into()),
            key_group: Some(9),
            ..JobError::default()
        };
        e.redact_key();
        assert_eq!(
            e.cause,
            "operator 'totals' subtask 0 failed at key <redacted> (key group 9): boom"
        );
        assert_eq!(e.causes, ["key <redacted> (key group 9): boom", "boom"]);
        assert_eq!((e.key, e.key_group), (None, Some(9)));
    }
}

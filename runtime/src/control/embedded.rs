//! The control API's view of a job running embedded in this process.

use super::model::{
    CheckpointSummary, CompatibilityReport, JobError, JobStatus, KeyGroupRecords, LatencyHistogram,
    OperatorBytes, Phase, SnapshotInfo, SnapshotKind, SplitStatus, SubtaskState, SubtaskStatus,
};
use super::{model, JobControl};
use crate::error::Error;
use crate::exec::{self, CheckpointStatus, CompletedSnapshot, JobFailure, RunningJob};
use crate::snapshot;
use crate::time::EventTime;

impl JobControl for RunningJob {
    fn status(&self) -> JobStatus {
        let checkpoints = self.checkpoint_status();
        let subtasks: Vec<SubtaskStatus> = self
            .subtasks()
            .into_iter()
            .map(|s| {
                let m = &s.metrics;
                SubtaskStatus {
                    operator: s.operator,
                    subtask: s.subtask as u32,
                    state: match s.state {
                        exec::SubtaskState::Running => SubtaskState::Running,
                        exec::SubtaskState::Finished => SubtaskState::Finished,
                        exec::SubtaskState::Failed(_) => SubtaskState::Failed,
                        exec::SubtaskState::Cancelled => SubtaskState::Cancelled,
                    },
                    source: m.is_source,
                    sink: m.is_sink,
                    records_in: m.records_in,
                    records_out: m.records_out,
                    sink_records: m.sink_records,
                    late_records: m.late_records,
                    busy_seconds: m.busy.as_secs_f64(),
                    idle_seconds: m.idle.as_secs_f64(),
                    backpressured_seconds: m.backpressured.as_secs_f64(),
                    aligning_seconds: m.aligning.as_secs_f64(),
                    restored_bytes: m.restored_bytes,
                    restore_seconds: m.restore.as_secs_f64(),
                    watermark_ms: (m.watermark != EventTime::MIN).then_some(m.watermark.0),
                    worker: None,
                    key_groups: m
                        .key_groups
                        .iter()
                        .map(|(operator, records)| KeyGroupRecords {
                            operator: operator.clone(),
                            records: records.clone(),
                        })
                        .collect(),
                    splits: m
                        .splits
                        .iter()
                        .map(|s| SplitStatus {
                            split: s.split,
                            position: s.progress.position,
                            backlog: s.progress.backlog,
                            watermark_ms: (s.watermark != EventTime::MIN).then_some(s.watermark.0),
                            idle: s.idle,
                        })
                        .collect(),
                    input_buffer_fill: m.input_fill,
                    end_to_end_latency: if m.is_sink {
                        LatencyHistogram {
                            counts: m.end_to_end.clone(),
                            sum_seconds: m.end_to_end_sum.as_secs_f64(),
                        }
                    } else {
                        LatencyHistogram::default()
                    },
                }
            })
            .collect();
        let errors: Vec<JobError> = self.failures().into_iter().map(JobError::from).collect();
        // A failure is reported at once, while the other subtasks still wind down.
        let phase = if !errors.is_empty() {
            Phase::Failed
        } else if self.is_finished() {
            Phase::Finished
        } else if self.stop_requested() {
            Phase::Stopping
        } else {
            Phase::Running
        };
        JobStatus {
            name: self.name().to_string(),
            phase,
            parallelism: self.parallelism() as u32,
            max_parallelism: self.max_parallelism(),
            uptime_seconds: self.uptime().as_secs_f64(),
            subtasks,
            checkpoints: CheckpointSummary::from(&checkpoints),
            restored_from: checkpoints.restored_from,
            errors,
            restarts: Default::default(),
            workers: Vec::new(),
            topology: self.topology().clone(),
        }
    }

    fn savepoint(&self, target: &str, stop: bool) -> Result<SnapshotInfo, Error> {
        RunningJob::savepoint(self, target, stop).map(|s| SnapshotInfo::from(&s))
    }

    fn cancel(&self) {
        RunningJob::cancel(self)
    }

    fn compatibility(
        &self,
        location: &str,
        allow_non_restored_state: bool,
    ) -> Result<CompatibilityReport, Error> {
        super::check_compatibility(
            location,
            self.max_parallelism(),
            self.declared_operators(),
            allow_non_restored_state,
        )
    }
}

impl From<&CompletedSnapshot> for SnapshotInfo {
    fn from(s: &CompletedSnapshot) -> Self {
        SnapshotInfo {
            id: s.id,
            kind: match s.kind {
                snapshot::SnapshotKind::Checkpoint => SnapshotKind::Checkpoint,
                snapshot::SnapshotKind::Savepoint => SnapshotKind::Savepoint,
                snapshot::SnapshotKind::Final => SnapshotKind::Final,
            },
            location: s.location.clone(),
            duration_ms: u64::try_from(s.duration.as_millis()).unwrap_or(u64::MAX),
            bytes: s.bytes,
            completed_at_ms: s
                .completed_at
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .and_then(|d| u64::try_from(d.as_millis()).ok()),
            operators: s
                .operator_bytes
                .iter()
                .map(|(operator, bytes)| OperatorBytes {
                    operator: operator.clone(),
                    bytes: *bytes,
                })
                .collect(),
        }
    }
}

impl From<&CheckpointStatus> for CheckpointSummary {
    fn from(s: &CheckpointStatus) -> Self {
        CheckpointSummary {
            completed: s.completed,
            failed: s.failed,
            failed_in_a_row: s.failed_in_a_row,
            last_completed: s.last_completed().map(SnapshotInfo::from),
            last_failure: s.last_failure.clone(),
            recent: s.recent.iter().map(SnapshotInfo::from).collect(),
        }
    }
}

impl From<JobFailure> for JobError {
    fn from(f: JobFailure) -> Self {
        JobError {
            operator: f.operator,
            subtask: f.subtask.map(|s| s as u32),
            cause: f.cause,
            causes: f.causes,
            input: f.input.map(|i| model::InputPosition {
                records_in: i.records_in,
                watermark_ms: (i.watermark != EventTime::MIN).then_some(i.watermark.0),
                splits: i
                    .splits
                    .into_iter()
                    .map(|(split, position)| model::SplitPositionStatus { split, position })
                    .collect(),
            }),
            key_group: f.key.as_ref().map(|k| k.key_group),
            key: f.key.and_then(|k| k.text),
        }
    }
}

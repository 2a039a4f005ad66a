//! What the control API reads of a distributed job, and what it asks of it.

use super::{lock, JobCoordinator};
use crate::control::model::{
    CheckpointSummary, CompatibilityReport, JobError, JobStatus, Phase, RestartStatus,
    SnapshotInfo, SubtaskStatus, WorkerStatus,
};
use crate::control::JobControl;
use crate::error::Error;
use crate::exec::checkpoint::{Command, SavepointRequest};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What the control API reads.
#[derive(Default)]
pub(super) struct View {
    pub(super) phase: Option<Phase>,
    pub(super) errors: Vec<JobError>,
    pub(super) restarts: RestartStatus,
    pub(super) attempt_started: Option<Instant>,
}

impl JobCoordinator {
    fn subtasks(&self) -> Vec<SubtaskStatus> {
        let attempt = lock(&self.current)
            .as_ref()
            .map(|c| (c.attempt, c.slots.keys().copied().collect::<Vec<_>>()));
        let Some((attempt, ids)) = attempt else {
            return Vec::new();
        };
        let workers = lock(&self.workers).clone();
        let mut out = Vec::new();
        for id in ids {
            if let Some(w) = workers.iter().find(|w| w.id == id) {
                let reported = lock(&w.subtasks);
                if reported.0 == attempt {
                    out.extend(reported.1.iter().cloned());
                }
            }
        }
        out.sort_by(|a, b| (&a.operator, a.subtask).cmp(&(&b.operator, b.subtask)));
        out
    }
}

impl JobControl for JobCoordinator {
    fn status(&self) -> JobStatus {
        let view = lock(&self.view);
        let checkpoints = lock(&self.status).clone();
        let mut phase = view.phase.unwrap_or(Phase::Starting);
        if phase == Phase::Running && self.stop_requested() {
            phase = Phase::Stopping;
        }
        let subtasks = self.subtasks();
        let used: HashMap<u64, u32> = lock(&self.current)
            .as_ref()
            .map(|c| c.slots.clone())
            .unwrap_or_default();
        let workers = lock(&self.workers)
            .iter()
            .map(|w| WorkerStatus {
                name: w.name.clone(),
                address: w.address.clone(),
                slots: w.slots,
                used_slots: used.get(&w.id).copied().unwrap_or(0),
            })
            .collect();
        JobStatus {
            name: self.config.job.clone(),
            phase,
            parallelism: self.config.parallelism as u32,
            max_parallelism: self.config.max_parallelism,
            uptime_seconds: view
                .attempt_started
                .unwrap_or(self.started)
                .elapsed()
                .as_secs_f64(),
            subtasks,
            checkpoints: CheckpointSummary::from(&checkpoints),
            restored_from: checkpoints.restored_from,
            errors: view.errors.clone(),
            restarts: view.restarts.clone(),
            workers,
            topology: self.topology.clone(),
        }
    }

    fn savepoint(&self, target: &str, stop: bool) -> Result<SnapshotInfo, Error> {
        let commands = lock(&self.current)
            .as_ref()
            .map(|c| c.commands.clone())
            .ok_or_else(|| Error::Checkpoint("the job is not running".into()))?;
        if stop {
            self.stop_requested.store(true, Ordering::SeqCst);
        }
        let (reply, result) = crossbeam_channel::bounded(1);
        let outcome = commands
            .send(Command::Savepoint(SavepointRequest {
                storage: Some(target.to_string()),
                stop,
                reply,
            }))
            .map_err(|_| Error::Checkpoint("the job is no longer running".into()))
            .and_then(|()| {
                result.recv().map_err(|_| {
                    Error::Checkpoint("the job ended before the savepoint completed".into())
                })
            })
            .and_then(|r| r.map_err(Error::Checkpoint));
        if outcome.is_err() && stop {
            self.stop_requested.store(false, Ordering::SeqCst);
        }
        outcome.map(|s| SnapshotInfo::from(&s))
    }

    fn cancel(&self) {
        self.stop_requested.store(true, Ordering::SeqCst);
        self.cancel.store(true, Ordering::SeqCst);
    }

    fn compatibility(
        &self,
        location: &str,
        allow_non_restored_state: bool,
    ) -> Result<CompatibilityReport, Error> {
        crate::control::check_compatibility(
            location,
            self.config.max_parallelism,
            &self.declared,
            allow_non_restored_state,
        )
    }
}

//! Savepoints: asking the coordinator for one and following the request (the `Savepoint`
//! step, and the savepoints of the upgrade and stop steps), recording it, and retention.

use super::{compact, condition, parse_time, Planner};
use crate::build::Storage;
use crate::plan::{Action, Cleanup, Timing};
use sluice_crds::control::{self, Phase, SnapshotKind};
use sluice_crds::{
    condition_types, ConditionStatus, Operation, OperationKind, OperationStep, SavepointInfo,
    SavepointRequested, SavepointState, SavepointStep, SavepointTrigger,
};
use std::time::Duration;

/// How long a savepoint request may take to show in the coordinator's status.
const SAVEPOINT_GRACE: Duration = Duration::from_secs(30);
const SAVEPOINT_ATTEMPTS: u32 = 3;

pub(super) enum SavepointOutcome {
    Done(String),
    Pending,
    AskAgain,
    Failed(String),
}

impl Planner<'_> {
    /// Where the targeted revision's savepoints go, if anywhere.
    pub(super) fn savepoint_storage(&self) -> Option<String> {
        let target = self.status.target.as_ref()?;
        Storage::of(self.i.job, &target.spec, None).savepoints
    }

    fn savepoint_dir(&self, op: &Operation) -> Option<String> {
        let root = self.savepoint_storage()?;
        Some(format!("{root}/{}", compact(&op.started_at)))
    }

    pub(super) fn begin_savepoint(&mut self, trigger: SavepointTrigger, nonce: Option<i64>) {
        if !self.can_savepoint() {
            self.warn(
                "SavepointSkipped",
                "no savepoint: the job is not running or has no savepoint storage",
            );
            return;
        }
        let step = SavepointStep {
            trigger,
            nonce,
            request: None,
        };
        let mut op = self.start(OperationKind::Savepoint, OperationStep::Savepoint(step));
        self.request_savepoint(&mut op, false);
        self.status.operation = Some(op);
    }

    pub(super) fn request_savepoint(&mut self, op: &mut Operation, stop: bool) {
        let Some(dir) = self.savepoint_dir(op) else {
            return;
        };
        let request = SavepointRequested {
            target_directory: dir.clone(),
            requested_at: self.now(),
            savepoint_id: None,
        };
        // Only the steps that wait for a savepoint have a slot for its request.
        let Some(slot) = op.step.savepoint_slot() else {
            return;
        };
        *slot = Some(request);
        op.attempts += 1;
        self.actions.push(Action::Savepoint { target: dir, stop });
        self.requeue = Duration::from_secs(2);
    }

    /// Where the operation's savepoint request stands.
    pub(super) fn savepoint_outcome(&self, op: &Operation) -> SavepointOutcome {
        let request = op.step.savepoint_request();
        let dir = request.map_or("", |r| r.target_directory.as_str());
        if let Some(s) = &self.i.observed.savepoint {
            match s.status {
                control::SavepointState::Completed => {
                    if let Some(l) = &s.location {
                        return SavepointOutcome::Done(l.clone());
                    }
                }
                control::SavepointState::Failed => {
                    return SavepointOutcome::Failed(s.error.clone().unwrap_or_default())
                }
                control::SavepointState::InProgress => return SavepointOutcome::Pending,
            }
        }
        // The id was lost (the operator stopped before recording it, or the coordinator
        // restarted): the savepoint is recognised by the operation's own directory.
        if let Some(last) = self
            .i
            .observed
            .job
            .as_ref()
            .and_then(|j| j.checkpoints.last_completed.as_ref())
        {
            if last.kind == SnapshotKind::Savepoint
                && !dir.is_empty()
                && last.location.starts_with(dir)
            {
                return SavepointOutcome::Done(last.location.clone());
            }
        }
        // A request of the last half minute may not show yet: the status this reconcile
        // read can predate the write that recorded its id.
        let recent = request
            .and_then(|r| parse_time(&r.requested_at))
            .is_some_and(|t| self.i.now < t + SAVEPOINT_GRACE);
        match self.job_phase() {
            Some(Phase::Running) if !recent => {
                if op.attempts >= SAVEPOINT_ATTEMPTS {
                    SavepointOutcome::Failed(format!("no savepoint after {} requests", op.attempts))
                } else {
                    SavepointOutcome::AskAgain
                }
            }
            Some(Phase::Running | Phase::Stopping | Phase::Starting) => SavepointOutcome::Pending,
            Some(phase) => SavepointOutcome::Failed(format!("the job is {}", phase.as_str())),
            None => SavepointOutcome::Pending,
        }
    }

    pub(super) fn record_savepoint(
        &mut self,
        op: &Operation,
        location: &str,
        trigger: SavepointTrigger,
    ) {
        let info = SavepointInfo {
            path: Some(location.to_string()),
            trigger,
            state: SavepointState::Completed,
            nonce: match &op.step {
                OperationStep::Savepoint(s) => s.nonce,
                _ => None,
            },
            spec_hash: self.status.target.as_ref().map(|t| t.hash.clone()),
            triggered_at: Some(op.started_at.clone()),
            completed_at: Some(self.now()),
            error: None,
        };
        let asked = op.step.savepoint_request().map(|r| r.requested_at.as_str());
        if let Some(asked) = asked.and_then(parse_time) {
            let took = self.i.now.duration_since(asked).unwrap_or_default();
            self.timings.push(Timing::Savepoint(took));
        }
        if !self.status.savepoints.iter().any(|s| s.path == info.path) {
            self.status.savepoints.push(info.clone());
            self.note(
                "SavepointCompleted",
                format!("{trigger:?} savepoint {location}"),
            );
        }
        self.status.last_savepoint = Some(info);
        self.status.set_condition(condition(
            condition_types::SAVEPOINT,
            ConditionStatus::True,
            "Completed",
            location,
            self.i.generation,
            &self.now(),
        ));
        self.apply_retention();
    }

    /// Forgets savepoints beyond `retention`, oldest first, never the newest nor one a
    /// revision starts from (a restore or a rollback may need it).
    fn apply_retention(&mut self) {
        let retention = &self.i.spec.savepoints.retention;
        let needed: Vec<Option<String>> = [&self.status.target, &self.status.stable]
            .into_iter()
            .flatten()
            .map(|r| r.restore_from.clone())
            .chain([self
                .status
                .last_savepoint
                .as_ref()
                .and_then(|s| s.path.clone())])
            .collect();
        let max_age = retention.max_age.as_ref().and_then(|d| d.to_std());
        let now = self.i.now;
        let mut keep_budget = retention.max_count.max(1) as usize;
        let mut kept = Vec::new();
        for s in self.status.savepoints.iter().rev() {
            let is_needed = needed.contains(&s.path);
            let too_old = max_age.is_some_and(|age| {
                s.completed_at
                    .as_deref()
                    .and_then(parse_time)
                    .is_some_and(|t| now >= t + age)
            });
            if is_needed || (keep_budget > 0 && !too_old) {
                kept.push(s.clone());
                keep_budget = keep_budget.saturating_sub(1);
            } else if let Some(path) = &s.path {
                if !self.status.retired_savepoints.contains(path) {
                    self.status.retired_savepoints.push(path.clone());
                }
            }
        }
        kept.reverse();
        self.status.savepoints = kept;
    }

    /// Deletes the files of the savepoints retention dropped, one Job at a time. A Job that
    /// failed is not retried: its savepoints are named in a warning and left to the user.
    pub(super) fn delete_retired_savepoints(&mut self) {
        let (savepoints, failure) = match &self.i.observed.cleanup {
            Cleanup::Running => return,
            Cleanup::Absent => {
                if !self.status.retired_savepoints.is_empty() {
                    let spec = self.status.target.as_ref().map_or(self.i.spec, |t| &t.spec);
                    self.actions.push(Action::DeleteSavepoints {
                        spec: Box::new(spec.clone()),
                        savepoints: self.status.retired_savepoints.clone(),
                    });
                }
                return;
            }
            Cleanup::Succeeded(savepoints) => (savepoints, None),
            Cleanup::Failed { savepoints, report } => (savepoints, Some(report)),
        };
        self.actions.push(Action::RemoveCleanup);
        let before = self.status.retired_savepoints.len();
        self.status
            .retired_savepoints
            .retain(|s| !savepoints.contains(s));
        // The Job is seen again until its deletion shows: one event, not one per reconcile.
        if self.status.retired_savepoints.len() == before {
            return;
        }
        let list = savepoints.join(", ");
        match failure {
            None => self.note("SavepointsDeleted", list),
            Some(report) => self.warn(
                "SavepointDeleteFailed",
                format!("{report}; left in storage: {list}"),
            ),
        }
    }

    pub(super) fn continue_savepoint(&mut self, mut op: Operation, step: SavepointStep) {
        let trigger = step.trigger;
        match self.savepoint_outcome(&op) {
            SavepointOutcome::Done(location) => {
                self.record_savepoint(&op, &location, trigger);
                self.finish_operation();
                if let Some(t) = self.status.target.clone() {
                    self.watch_running(&t);
                }
            }
            SavepointOutcome::AskAgain => {
                self.request_savepoint(&mut op, false);
                self.status.operation = Some(op);
            }
            SavepointOutcome::Pending => {
                if let Some(t) = self.status.target.clone() {
                    self.actions.push(Action::Deploy(t));
                }
            }
            SavepointOutcome::Failed(why) => {
                self.warn(
                    "SavepointFailed",
                    format!("{trigger:?} savepoint failed: {why}"),
                );
                self.status.set_condition(condition(
                    condition_types::SAVEPOINT,
                    ConditionStatus::False,
                    "Failed",
                    &why,
                    self.i.generation,
                    &self.now(),
                ));
                self.finish_operation();
            }
        }
    }
}

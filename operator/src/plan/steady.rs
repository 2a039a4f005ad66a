//! No operation under way: start the one the spec asks for (deploy, upgrade, rescale,
//! suspend, resume, savepoint, delete), or watch the running job.

use super::restarting::RESTARTS_EXHAUSTED;
use super::{condition, control, parse_time, Planner};
use crate::build::Storage;
use crate::plan::Action;
use sluice_crds::control::JobError;
use sluice_crds::{
    condition_types, ConditionStatus, Deploying, DesiredState, OnDelete, OperationKind,
    OperationStep, Phase, SavepointTrigger, SpecRevision, StreamJobSpec, UpgradeMode,
};
use std::time::Duration;

impl Planner<'_> {
    /// No operation under way: start one if the spec asks for it, else watch the job.
    pub(super) fn steady(&mut self) {
        let spec = self.i.spec;
        if let Err(errors) = sluice_crds::validate(spec) {
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            self.fail("InvalidSpec", message, None);
            if self.status.target.is_none() {
                self.set_phase(Phase::Failed);
            }
            return;
        }
        let Some(target) = self.status.target.clone() else {
            if spec.state == DesiredState::Suspended {
                self.set_phase(Phase::Suspended);
                return;
            }
            if !self.admitted() {
                return;
            }
            let revision = self.new_revision(spec, spec.initial_savepoint.clone());
            self.begin_deploy(OperationKind::Deploy, revision);
            return;
        };
        // Stopped by the user, by a preemption, or waiting for room to resume.
        let stopped = matches!(
            self.status.phase,
            Some(Phase::Suspended | Phase::Preempted | Phase::Queued)
        );
        match (stopped, spec.state) {
            (true, DesiredState::Suspended) => {
                self.set_phase(Phase::Suspended);
                return;
            }
            (true, DesiredState::Running) => {
                if !self.admitted() {
                    return;
                }
                // Where the suspend stopped: its savepoint, or the stopped run's newest
                // checkpoint when none could be taken.
                let from = target.restore_from.clone();
                let revision = self.new_revision(spec, from);
                self.begin_deploy(OperationKind::Resume, revision);
                return;
            }
            (false, DesiredState::Suspended) => {
                self.begin_stop(OperationKind::Suspend);
                return;
            }
            (false, DesiredState::Running) => {
                if self.preempted() {
                    return;
                }
                self.record_admitted();
            }
        }
        let wanted = spec.fingerprint();
        let mut target = target;
        if wanted != target.hash && pods_fingerprint(spec) == pods_fingerprint(&target.spec) {
            // Only policies changed (savepoints, rollback, priority): no new pods for that.
            target.spec = spec.clone();
            target.hash = wanted.clone();
            target.generation = self.i.generation;
            self.status.target = Some(target.clone());
        }
        if wanted != target.hash && !self.refused(&wanted) {
            if only_parallelism_differs(&target.spec, spec) {
                self.note(
                    "Rescaling",
                    format!(
                        "parallelism {} -> {}: savepoint, then restore with the key groups redistributed",
                        target.spec.parallelism, spec.parallelism
                    ),
                );
                self.begin_stop(OperationKind::Rescale);
            } else {
                self.begin_upgrade();
            }
            return;
        }
        if spec.restart_nonce.is_some() && spec.restart_nonce != self.status.restart_nonce {
            self.restart_by_hand();
            return;
        }
        if self.gave_up() {
            // Stays down until a spec change (an upgrade, above) or a restartNonce.
            self.set_phase(Phase::Failed);
            return;
        }
        let nonce = spec.savepoints.trigger_nonce;
        if nonce.is_some() && nonce != self.status.savepoint_trigger_nonce {
            if self.can_savepoint() {
                self.status.savepoint_trigger_nonce = nonce;
                self.begin_savepoint(SavepointTrigger::Manual, nonce);
                return;
            }
            // Kept, not consumed: taken once the job runs.
            self.wait_for_savepoint(nonce);
        }
        if let Some(interval) = spec
            .savepoints
            .periodic_interval
            .as_ref()
            .and_then(|d| d.to_std())
        {
            let last = self
                .status
                .savepoints
                .iter()
                .filter_map(|s| s.triggered_at.as_deref())
                .chain(self.status.last_periodic_savepoint_at.as_deref())
                .filter_map(parse_time)
                .max()
                .or_else(|| target.recorded_at.as_deref().and_then(parse_time));
            let due = last.is_none_or(|t| self.i.now >= t + interval);
            if due && self.job_phase() == Some(control::Phase::Running) {
                self.status.last_periodic_savepoint_at = Some(self.now());
                self.begin_savepoint(SavepointTrigger::Periodic, None);
                return;
            }
            self.requeue = self.requeue.min(interval);
        }
        self.watch_running(&target);
    }

    /// A spec whose upgrade was refused or rolled back is not tried again until it changes.
    fn refused(&self, hash: &str) -> bool {
        self.status
            .error
            .as_ref()
            .is_some_and(|e| e.context.get("specHash").map(String::as_str) == Some(hash))
    }

    /// Whether the job used up its restarts (and waits for a fix).
    fn gave_up(&self) -> bool {
        self.status.phase == Some(Phase::Failed)
            && self
                .status
                .error
                .as_ref()
                .is_some_and(|e| e.reason == RESTARTS_EXHAUSTED)
    }

    pub(super) fn watch_running(&mut self, target: &SpecRevision) {
        if let Some(failure) = self.failure() {
            self.on_failure(failure);
            return;
        }
        self.actions.push(Action::Deploy(target.clone()));
        match self.job_phase() {
            Some(control::Phase::Running) => {
                self.set_phase(Phase::Running);
                self.record_parallelism(target);
                self.forget_old_restarts();
                if self.status.stable.as_ref().map(|s| &s.hash) != Some(&target.hash) {
                    self.status.stable = Some(target.clone());
                }
                if self
                    .status
                    .error
                    .as_ref()
                    .is_some_and(|e| !e.context.contains_key("specHash"))
                {
                    self.status.error = None;
                }
            }
            Some(control::Phase::Restarting) => self.set_phase(Phase::Restarting),
            Some(control::Phase::Finished) => {
                // Bounded input ran out: the job is done, and stays so.
                self.set_phase(Phase::Finished);
            }
            _ => {}
        }
    }

    /// The parallelism the coordinator runs the job at (the spec's until it answers).
    pub(super) fn record_parallelism(&mut self, target: &SpecRevision) {
        let running = self
            .i
            .observed
            .job
            .as_ref()
            .map_or(target.spec.parallelism, |j| j.parallelism);
        self.status.parallelism = Some(running);
        self.status.replicas = Some(running);
    }

    /// A savepoint asked for by `triggerNonce` while none can be taken: the Savepoint
    /// condition says it waits, and why.
    fn wait_for_savepoint(&mut self, nonce: Option<i64>) {
        let has_storage = self.savepoint_storage().is_some();
        let nonce = nonce.map(|n| n.to_string()).unwrap_or_default();
        let message = if has_storage {
            format!("the savepoint asked for by triggerNonce {nonce} waits for the job to run")
        } else {
            format!("the savepoint asked for by triggerNonce {nonce} waits for savepoint storage (spec.savepoints.storage or spec.checkpointing.storage)")
        };
        self.status.set_condition(condition(
            condition_types::SAVEPOINT,
            ConditionStatus::False,
            "Waiting",
            &message,
            self.i.generation,
            &self.now(),
        ));
    }

    pub(super) fn begin_deploy(&mut self, kind: OperationKind, revision: SpecRevision) {
        self.note(
            match kind {
                OperationKind::Resume => "Resuming",
                OperationKind::Rollback => "RollingBack",
                OperationKind::Restart => "Restarting",
                _ => "Deploying",
            },
            format!(
                "deploying spec {} at parallelism {}{}",
                revision.hash,
                revision.spec.parallelism,
                revision
                    .restore_from
                    .as_deref()
                    .map(|r| format!(" from {r}"))
                    .unwrap_or_default()
            ),
        );
        if kind != OperationKind::Restart {
            // A new spec, or the job back from a suspend: failures in a row start afresh.
            if let Some(r) = self.status.restarts.as_mut() {
                r.count = 0;
            }
        }
        let mut op = self.start(kind, OperationStep::Deploying(Deploying::default()));
        op.savepoint = revision.restore_from.clone();
        self.status.operation = Some(op);
        self.status.target = Some(revision.clone());
        self.set_phase(deploying_phase(kind));
        // The pods come with the next look, once those of the previous run are gone.
        self.requeue = Duration::from_secs(1);
    }

    fn begin_upgrade(&mut self) {
        let spec = self.i.spec;
        self.note(
            "Upgrading",
            format!("spec changed; upgrading with mode {:?}", spec.upgrade_mode),
        );
        match spec.upgrade_mode {
            UpgradeMode::Savepoint if self.can_savepoint() => {
                let mut op = self.start(
                    OperationKind::Upgrade,
                    OperationStep::PreflightSavepoint(None),
                );
                self.set_phase(Phase::Upgrading);
                self.request_savepoint(&mut op, false);
                self.status.operation = Some(op);
            }
            UpgradeMode::LastState if self.status.last_checkpoint.is_some() => {
                self.start(OperationKind::Upgrade, OperationStep::Stopping(None));
                self.set_phase(Phase::Upgrading);
                self.actions.push(Action::Cancel);
            }
            mode => {
                // Stateless, or nothing running to take a savepoint of: the newest snapshot
                // the status knows, unless the mode drops state.
                let from = (mode != UpgradeMode::Stateless)
                    .then(|| self.fallback_restore())
                    .flatten();
                self.set_phase(Phase::Upgrading);
                self.actions.push(Action::RemovePods);
                let revision = self.new_revision(spec, from);
                self.begin_deploy(OperationKind::Upgrade, revision);
            }
        }
    }

    pub(super) fn can_savepoint(&self) -> bool {
        self.job_phase() == Some(control::Phase::Running) && self.savepoint_storage().is_some()
    }

    pub(super) fn begin_stop(&mut self, kind: OperationKind) {
        let mut op = self.start(kind, OperationStep::Stopping(None));
        self.set_phase(match kind {
            OperationKind::Suspend | OperationKind::Preempt => Phase::Suspending,
            OperationKind::Rescale => Phase::Rescaling,
            OperationKind::Delete => Phase::Deleting,
            _ => Phase::Upgrading,
        });
        if self.can_savepoint() {
            self.request_savepoint(&mut op, true);
            self.status.operation = Some(op);
        } else {
            // Nothing running to take a savepoint of (or nowhere to put it): the next run
            // starts from the last savepoint or checkpoint the status knows.
            op.savepoint = self.fallback_restore();
            self.redeploy(op);
        }
    }

    /// Where the next run starts when no savepoint of the running one is taken: the replaced
    /// run's checkpoint storage, which the new coordinator resolves to its newest checkpoint.
    /// The status may lag behind that checkpoint, and the sinks may have committed its
    /// output already: starting from an older one would write that output twice. When the
    /// status saw no checkpoint of that run, it may have none: then a savepoint the run took,
    /// else the snapshot it started from, which is newer than anything of the runs before.
    pub(super) fn fallback_restore(&self) -> Option<String> {
        let last = self.status.last_checkpoint.as_ref();
        let target = self.status.target.as_ref();
        let run_storage = target
            .and_then(|t| Storage::of(self.i.job, &t.spec, t.run.as_deref()).checkpoints)
            .filter(|s| last.is_some_and(|c| c.path.starts_with(&format!("{s}/"))));
        let started = target
            .and_then(|t| t.recorded_at.as_deref())
            .and_then(parse_time);
        let savepoint_of_run = self
            .status
            .last_savepoint
            .as_ref()
            .filter(|s| {
                let taken = s.triggered_at.as_deref().and_then(parse_time);
                matches!((taken, started), (Some(t), Some(r)) if t >= r)
            })
            .and_then(|s| s.path.clone());
        run_storage
            .or(savepoint_of_run)
            .or_else(|| target.and_then(|t| t.restore_from.clone()))
            .or_else(|| last.map(|c| c.path.clone()))
            .or_else(|| {
                self.status
                    .last_savepoint
                    .as_ref()
                    .and_then(|s| s.path.clone())
            })
    }

    pub(super) fn delete(&mut self) {
        if let Some(op) = self
            .status
            .operation
            .clone()
            .filter(|o| o.kind == OperationKind::Delete)
        {
            self.continue_stopping(op);
            return;
        }
        let wants_savepoint = self.i.spec.savepoints.on_delete == OnDelete::Savepoint;
        if wants_savepoint && self.can_savepoint() {
            self.note("Deleting", "taking a final savepoint before the job goes");
            self.begin_stop(OperationKind::Delete);
        } else {
            self.set_phase(Phase::Deleting);
            self.actions.push(Action::ReleaseFinalizer);
        }
    }
}

/// The phase shown while an operation's new pods start.
pub(super) fn deploying_phase(kind: OperationKind) -> Phase {
    match kind {
        OperationKind::Rollback => Phase::RollingBack,
        OperationKind::Rescale => Phase::Rescaling,
        OperationKind::Upgrade => Phase::Upgrading,
        OperationKind::Restart => Phase::Restarting,
        _ => Phase::Deploying,
    }
}

/// The fingerprint of what the pods run: a change of anything else is applied without a
/// restart.
fn pods_fingerprint(spec: &StreamJobSpec) -> String {
    let mut pods = spec.clone();
    pods.savepoints = Default::default();
    pods.rollback = Default::default();
    pods.state = Default::default();
    pods.priority = None;
    pods.restart_nonce = None;
    pods.fingerprint()
}

fn only_parallelism_differs(old: &StreamJobSpec, new: &StreamJobSpec) -> bool {
    let mut same = old.clone();
    same.parallelism = new.parallelism;
    same == *new && old.parallelism != new.parallelism
}

/// The causes of a failure, one per line's worth: `operator[subtask] (input position):
/// cause`.
pub(super) fn describe_errors(errors: &[JobError]) -> String {
    errors
        .iter()
        .map(|e| {
            let at = e
                .input
                .as_ref()
                .map(|i| format!(" ({i})"))
                .unwrap_or_default();
            match (&e.operator, e.subtask) {
                (Some(op), Some(s)) => format!("{op}[{s}]{at}: {}", e.cause),
                (Some(op), None) => format!("{op}{at}: {}", e.cause),
                _ => e.cause.clone(),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

//! `Deploying`: the new revision's pods start; once its coordinator runs, the operation is
//! done. A revision that does not run within the readiness timeout is rolled back to the
//! last stable one.

use super::steady::deploying_phase;
use super::{condition, control, parse_time, run_name, Planner};
use crate::plan::{Action, Timing};
use sluice_crds::{condition_types, ConditionStatus, Deploying, Operation, OperationKind, Phase};

impl Planner<'_> {
    pub(super) fn continue_deploying(&mut self, op: Operation, step: Deploying) {
        let Some(target) = self.status.target.clone() else {
            self.finish_operation();
            return;
        };
        if self.stale_pods() {
            // Two coordinators of one job must never run at once.
            self.actions.push(Action::RemovePods);
            return;
        }
        // A revision that fails for good restarts with backoff, unless it is one a rollback
        // would replace once its readiness timeout is over.
        let rollback = &self.i.spec.rollback;
        let may_roll_back = rollback.enabled
            && op.kind != OperationKind::Rollback
            && self
                .status
                .stable
                .as_ref()
                .is_some_and(|s| s.hash != target.hash);
        if !may_roll_back {
            if let Some(failure) = self.failure() {
                self.finish_operation();
                self.on_failure(failure);
                return;
            }
        }
        self.actions.push(Action::Deploy(target.clone()));
        // A bounded job may reach the end of its input between two looks.
        if matches!(
            self.job_phase(),
            Some(control::Phase::Running | control::Phase::Finished)
        ) {
            let since = step.since.as_deref().unwrap_or(&op.started_at);
            if let Some(t) = parse_time(since) {
                let took = self.i.now.duration_since(t).unwrap_or_default();
                self.timings.push(Timing::Operation(op.kind, took));
            }
            self.note(
                "Running",
                format!(
                    "spec {} runs at parallelism {}",
                    target.hash, target.spec.parallelism
                ),
            );
            self.finish_operation();
            if op.kind == OperationKind::Rollback {
                self.set_phase(Phase::Running);
                self.record_parallelism(&target);
                return;
            }
            self.watch_running(&target);
            return;
        }
        self.set_phase(deploying_phase(op.kind));
        let rollback = &self.i.spec.rollback;
        let timeout = rollback.readiness_timeout.as_ref().and_then(|d| d.to_std());
        let overdue = timeout.is_some_and(|t| {
            parse_time(&op.started_at).is_some_and(|started| self.i.now >= started + t)
        });
        let stable = self.status.stable.clone().filter(|s| s.hash != target.hash);
        if let (true, true, Some(stable)) = (rollback.enabled, overdue, stable) {
            if op.kind != OperationKind::Rollback {
                let why = self
                    .i
                    .observed
                    .crash
                    .clone()
                    .or_else(|| self.i.observed.unreachable.clone())
                    .unwrap_or_else(|| "the job did not start".into());
                self.warn(
                    "RollingBack",
                    format!(
                        "spec {} not running after {}: {why}; rolling back to spec {}",
                        target.hash,
                        rollback
                            .readiness_timeout
                            .as_ref()
                            .map(|d| d.as_str())
                            .unwrap_or(""),
                        stable.hash
                    ),
                );
                self.fail("RolledBack", why, Some(&target.hash));
                let mut revision = stable;
                revision.run = Some(run_name(self.i.now));
                revision.restore_from = op.savepoint.clone().or(revision.restore_from);
                self.actions.push(Action::RemovePods);
                self.begin_deploy(OperationKind::Rollback, revision);
                return;
            }
        }
        if let Some(crash) = self.i.observed.crash.clone() {
            self.status.set_condition(condition(
                condition_types::DEGRADED,
                ConditionStatus::True,
                "PodsFailing",
                &crash,
                self.i.generation,
                &self.now(),
            ));
        }
    }
}

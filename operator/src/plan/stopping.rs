//! `Stopping`: the running job stops with a savepoint (or is cancelled, for a last-state
//! upgrade), then its pods go and what comes next starts from where it stopped.

use super::savepoint::SavepointOutcome;
use super::{control, Planner};
use crate::plan::Action;
use sluice_crds::{
    Deploying, Operation, OperationKind, OperationStep, Phase, SavepointTrigger, UpgradeMode,
};

impl Planner<'_> {
    pub(super) fn continue_stopping(&mut self, mut op: Operation) {
        if op.kind == OperationKind::Upgrade && self.i.spec.upgrade_mode == UpgradeMode::LastState {
            // Cancelled: start from the newest checkpoint once the old job is gone.
            match self.job_phase() {
                Some(control::Phase::Running) => self.actions.push(Action::Cancel),
                Some(control::Phase::Stopping) => {}
                _ => {
                    op.savepoint = self.fallback_restore();
                    self.redeploy(op);
                }
            }
            return;
        }
        match self.savepoint_outcome(&op) {
            SavepointOutcome::Done(location) => {
                let trigger = match op.kind {
                    OperationKind::Suspend => SavepointTrigger::Suspend,
                    OperationKind::Preempt => SavepointTrigger::Preemption,
                    OperationKind::Delete => SavepointTrigger::Delete,
                    _ => SavepointTrigger::Upgrade,
                };
                self.record_savepoint(&op, &location, trigger);
                op.savepoint = Some(location);
                self.redeploy(op);
            }
            SavepointOutcome::AskAgain => {
                self.request_savepoint(&mut op, true);
                self.status.operation = Some(op);
            }
            SavepointOutcome::Pending => {}
            SavepointOutcome::Failed(why) if op.kind == OperationKind::Delete => {
                // A savepoint that cannot be taken must not keep the StreamJob forever.
                self.warn(
                    "FinalSavepointFailed",
                    format!("the final savepoint failed: {why}; deleting without it (the job's checkpoints stay in storage)"),
                );
                self.finish_operation();
                self.actions.push(Action::ReleaseFinalizer);
            }
            SavepointOutcome::Failed(why) => {
                self.abort(
                    "SavepointFailed",
                    format!("stop with a savepoint failed: {why}"),
                );
            }
        }
    }

    /// The old job stopped at `op.savepoint`: remove its pods, then start what comes next.
    pub(super) fn redeploy(&mut self, op: Operation) {
        self.actions.push(Action::RemovePods);
        match op.kind {
            OperationKind::Suspend | OperationKind::Preempt => {
                let from = op
                    .savepoint
                    .as_deref()
                    .unwrap_or("nothing: no snapshot was taken");
                let (reason, phase, when) = if op.kind == OperationKind::Preempt {
                    (
                        "Preempted",
                        Phase::Preempted,
                        "by itself when there is room",
                    )
                } else {
                    ("Suspended", Phase::Suspended, "when spec.state is Running")
                };
                self.note(
                    reason,
                    format!("stopped; pods removed; resumes {when}, from {from}"),
                );
                // Where the job resumes.
                if let Some(target) = self.status.target.as_mut() {
                    target.restore_from = op.savepoint.clone();
                }
                self.finish_operation();
                self.set_phase(phase);
                self.status.parallelism = Some(0);
            }
            OperationKind::Delete => {
                self.note("FinalSavepoint", "stopped with a final savepoint");
                self.finish_operation();
                self.actions.push(Action::ReleaseFinalizer);
            }
            kind => {
                let revision = self.new_revision(self.i.spec, op.savepoint.clone());
                // The readiness timeout counts from here: the savepoint and the stop before
                // are not the new revision's time to start. The operation's own start is kept
                // for its duration.
                self.begin_deploy(kind, revision);
                if let Some(o) = self.status.operation.as_mut() {
                    o.step = OperationStep::Deploying(Deploying {
                        since: Some(op.started_at),
                    });
                }
            }
        }
    }
}

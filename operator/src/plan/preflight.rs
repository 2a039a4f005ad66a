//! The upgrade's pre-flight: a savepoint without stop (`PreflightSavepoint`), then the new
//! revision's image checks that it can restore it (`PreflightCheck`) before the running job
//! is stopped. A refusal leaves the job running its current spec.

use super::savepoint::SavepointOutcome;
use super::Planner;
use crate::plan::{Action, Preflight};
use sluice_crds::{Operation, OperationStep, SavepointTrigger};

impl Planner<'_> {
    pub(super) fn continue_preflight_savepoint(&mut self, mut op: Operation) {
        match self.savepoint_outcome(&op) {
            SavepointOutcome::Done(location) => {
                self.record_savepoint(&op, &location, SavepointTrigger::Upgrade);
                op.step = OperationStep::PreflightCheck;
                op.savepoint = Some(location.clone());
                let revision = self.new_revision(self.i.spec, Some(location.clone()));
                self.actions.push(Action::Preflight {
                    revision,
                    savepoint: location,
                });
                self.status.operation = Some(op);
            }
            SavepointOutcome::AskAgain => {
                self.request_savepoint(&mut op, false);
                self.status.operation = Some(op);
            }
            SavepointOutcome::Pending => {}
            SavepointOutcome::Failed(why) => {
                self.abort(
                    "SavepointFailed",
                    format!("the pre-flight savepoint failed: {why}"),
                );
            }
        }
    }

    pub(super) fn continue_preflight_check(&mut self, mut op: Operation) {
        match &self.i.observed.preflight {
            Preflight::Passed => {
                self.note(
                    "PreflightPassed",
                    "the new spec can restore the job's state",
                );
                self.actions.push(Action::RemovePreflight);
                op.step = OperationStep::Stopping(None);
                self.request_savepoint(&mut op, true);
                self.status.operation = Some(op);
            }
            Preflight::Failed(why) => {
                self.actions.push(Action::RemovePreflight);
                let savepoint = op.savepoint.clone().unwrap_or_default();
                self.abort(
                    "UpgradeRefused",
                    format!(
                        "the new spec cannot restore savepoint {savepoint}: {why}; the job keeps running its current spec"
                    ),
                );
            }
            Preflight::Absent => {
                // Lost (deleted by hand, or never created): create it again.
                if let Some(savepoint) = op.savepoint.clone() {
                    let revision = self.new_revision(self.i.spec, Some(savepoint.clone()));
                    self.actions.push(Action::Preflight {
                        revision,
                        savepoint,
                    });
                }
            }
            Preflight::Running => {}
        }
    }
}

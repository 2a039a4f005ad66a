//! The namespace's StreamQuota, as [`crate::admission`] decided for this job: a job that does
//! not fit waits in `Queued` (Admitted=False, naming the limit, the amount asked and the
//! amount left) instead of deploying; a running job asked to make room for a higher priority
//! stops with a savepoint into `Preempted`, and resumes from it when it is admitted again.

use super::{condition, Planner};
use crate::admission::Decision;
use sluice_crds::{condition_types, ConditionStatus, OperationKind, Phase};

impl Planner<'_> {
    /// Whether the job may start (deploy or resume) now; when not, it waits and says why.
    pub(super) fn admitted(&mut self) -> bool {
        match self.i.admission {
            None | Some(Decision::Admit) => {
                self.record_admitted();
                true
            }
            Some(Decision::Queue { reason }) => {
                self.queue(reason.clone());
                false
            }
            Some(Decision::Preempt { by }) => {
                self.queue(format!("its room is taken by {by}, of a higher priority"));
                false
            }
        }
    }

    /// Admitted=True, when a quota decided.
    pub(super) fn record_admitted(&mut self) {
        if self.i.admission.is_some() {
            self.set_admitted(
                ConditionStatus::True,
                "Admitted",
                "the namespace's StreamQuota has room for it",
            );
        }
    }

    fn queue(&mut self, reason: String) {
        if !matches!(self.status.phase, Some(Phase::Queued | Phase::Preempted)) {
            self.note("Queued", reason.clone());
            self.set_phase(Phase::Queued);
        }
        self.status.parallelism = Some(0);
        self.status.replicas = Some(0);
        self.set_admitted(ConditionStatus::False, "Queued", &reason);
    }

    /// A job the quota asks to make room for a higher priority stops with a savepoint.
    pub(super) fn preempted(&mut self) -> bool {
        let Some(Decision::Preempt { by }) = self.i.admission else {
            return false;
        };
        let message = format!("stopping with a savepoint to make room for {by}, of a higher priority; resumes by itself when there is room");
        self.warn("Preempting", message.clone());
        self.set_admitted(ConditionStatus::False, "Preempted", &message);
        self.begin_stop(OperationKind::Preempt);
        true
    }

    fn set_admitted(&mut self, status: ConditionStatus, reason: &str, message: &str) {
        let c = condition(
            condition_types::ADMITTED,
            status,
            reason,
            message,
            self.i.generation,
            &self.now(),
        );
        self.status.set_condition(c);
    }
}

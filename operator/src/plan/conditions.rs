//! The conditions every reconcile ends with: Ready, Progressing and Degraded, from the phase,
//! the operation, the last error and the job's health (`status.metrics.unhealthy`).

use super::{control, Planner};
use sluice_crds::{condition_types, Condition, ConditionStatus, Phase, RestartWait};

impl Planner<'_> {
    pub(super) fn conditions(&mut self) {
        let now = self.now();
        let generation = self.i.generation;
        let phase = self.status.phase;
        let op = self.status.operation.clone();
        let trouble = self.trouble();
        if trouble.is_some() {
            // Look again soon: the status says when the job is well again.
            self.requeue = self.requeue.min(std::time::Duration::from_secs(2));
        }
        let ready = phase == Some(Phase::Running) && op.is_none() && trouble.is_none();
        let (ready_reason, ready_message) = match (&trouble, phase) {
            _ if ready => ("Running", "the job runs its spec".to_string()),
            (Some((reason, message)), _) => (*reason, message.clone()),
            (None, Some(Phase::Finished)) => ("Finished", "its input ran out".to_string()),
            (None, _) => (
                "NotRunning",
                format!(
                    "phase {}",
                    phase.map(|p| format!("{p:?}")).unwrap_or("Pending".into())
                ),
            ),
        };
        self.status.set_condition(condition(
            condition_types::READY,
            if ready {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            ready_reason,
            &ready_message,
            generation,
            &now,
        ));
        let waiting = self
            .i
            .observed
            .unreachable
            .as_deref()
            .map(|why| format!("; the coordinator does not answer: {why}"))
            .unwrap_or_default();
        let (progressing, reason, message) = match &op {
            Some(o) => (
                true,
                format!("{:?}", o.kind),
                format!("step {}{}{waiting}", o.step.name(), self.restart_wait()),
            ),
            None => (false, "Idle".to_string(), String::new()),
        };
        self.status.set_condition(condition(
            condition_types::PROGRESSING,
            if progressing {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            &reason,
            &message,
            generation,
            &now,
        ));
        // A failure first, then trouble with pods, then what the job's metrics show.
        let finding = self
            .status
            .metrics
            .as_ref()
            .and_then(|m| m.unhealthy.as_ref());
        let degraded = self
            .status
            .error
            .as_ref()
            .map(|e| (e.reason.clone(), e.message.clone()))
            .or(trouble.map(|(reason, message)| (reason.to_string(), message)))
            .or(finding.map(|f| (f.reason.as_str().to_string(), f.message.clone())));
        let already = self
            .status
            .condition(condition_types::DEGRADED)
            .is_some_and(|c| c.reason == "PodsFailing" && c.status == ConditionStatus::True);
        if !(already && degraded.is_none() && op.is_some()) {
            self.status.set_condition(match degraded {
                Some((reason, message)) => condition(
                    condition_types::DEGRADED,
                    ConditionStatus::True,
                    &reason,
                    &message,
                    generation,
                    &now,
                ),
                None => condition(
                    condition_types::DEGRADED,
                    ConditionStatus::False,
                    "Healthy",
                    "",
                    generation,
                    &now,
                ),
            });
        }
        self.status.observed_generation = generation;
    }

    /// What a pending restart waits for, and until when.
    fn restart_wait(&self) -> String {
        let Some(r) = self.status.restarts.as_ref() else {
            return String::new();
        };
        let until = r.next_restart_time.as_deref().unwrap_or("now");
        match r.waiting {
            Some(RestartWait::Backoff) => format!(
                ": restarts at {until}, the backoff after {} failure(s) in a row",
                r.count + 1
            ),
            Some(RestartWait::RateLimited) => format!(
                ": restarts at {until} at the earliest: the operator-wide restart rate limit holds it back"
            ),
            None => String::new(),
        }
    }

    /// What is wrong with a job that should be running, from what was observed: a pod that
    /// keeps failing, or a coordinator that does not answer. Only outside an operation,
    /// whose own steps expect pods to come and go.
    fn trouble(&self) -> Option<(&'static str, String)> {
        // Not a finished job: its workers exit at the end of input.
        let watching = matches!(self.status.phase, Some(Phase::Running | Phase::Restarting));
        if self.status.operation.is_some() || !watching {
            return None;
        }
        let observed = &self.i.observed;
        if let Some(crash) = &observed.crash {
            return Some(("PodsFailing", crash.clone()));
        }
        if let Some(phase @ (control::Phase::Starting | control::Phase::Stopping)) =
            self.job_phase()
        {
            // A replaced coordinator (its pod deleted, evicted) starts the job again from
            // its latest checkpoint, with the workers registering again.
            return Some((
                "Recovering",
                format!(
                    "the coordinator reports phase {}: the job is not running",
                    phase.as_str()
                ),
            ));
        }
        observed.unreachable.as_ref().map(|why| {
            (
                "CoordinatorUnreachable",
                format!("the coordinator does not answer: {why}"),
            )
        })
    }
}

pub(super) fn condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &str,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.chars().take(1024).collect(),
        last_transition_time: now.to_string(),
        observed_generation: generation,
    }
}

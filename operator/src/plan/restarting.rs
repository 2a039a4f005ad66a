//! Restarts of the whole job after it failed for good: its coordinator gave up (its in-job
//! restarts are exhausted), or one of its pods cannot run (crash loop, image, eviction,
//! scheduling). The pods go, the backoff of `spec.restartPolicy` is waited out in step
//! `Backoff`, then the same revision starts again. It keeps its run, so its new coordinator
//! resumes from the run's newest checkpoint that verifies, which the status may not have seen
//! yet (or from the revision's own start when the run completed none). Beyond `maxRestarts`
//! restarts in a row the job is `Failed` until its spec or `spec.restartNonce` changes. The
//! count, the wait and the failure live in `status.restarts`, so an operator restarted
//! during a backoff carries on with the same wait.

use super::{parse_time, timestamp, Planner};
use crate::plan::Action;
use sluice_crds::{
    BackoffStep, DesiredState, Failure, OperationKind, OperationStep, Phase, RestartPolicy,
    RestartWait,
};
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// The error reason of a job that used up its restarts.
pub(super) const RESTARTS_EXHAUSTED: &str = "RestartsExhausted";

impl Planner<'_> {
    /// Why the targeted run has failed for good, if it has.
    pub(super) fn failure(&self) -> Option<Failure> {
        let time = self.now();
        if self.job_phase() == Some(super::control::Phase::Failed) {
            let errors = self
                .i
                .observed
                .job
                .as_ref()
                .map(|j| j.errors.as_slice())
                .unwrap_or_default();
            let first = errors.first();
            return Some(Failure {
                reason: "JobFailed".into(),
                message: super::steady::describe_errors(errors),
                operator: first.and_then(|e| e.operator.clone()),
                subtask: first.and_then(|e| e.subtask),
                pod: None,
                time,
            });
        }
        self.i.observed.pod_failure.as_ref().map(|f| Failure {
            reason: "PodFailing".into(),
            message: f.message.clone(),
            operator: None,
            subtask: None,
            pod: Some(f.pod.clone()),
            time,
        })
    }

    /// The job failed for good: its pods go, and it waits out the backoff, or gives up.
    pub(super) fn on_failure(&mut self, failure: Failure) {
        let policy = &self.i.spec.restart_policy;
        let restarts = self.status.restarts.get_or_insert_default();
        restarts.last_failure = Some(failure.clone());
        let count = restarts.count;
        self.fail(&failure.reason, failure.message.clone(), None);
        if policy.max_restarts.is_some_and(|max| count >= max) {
            let message = format!(
                "{count} restart(s) without {} of healthy running; the last failure: {}. \
                 The job restarts when its spec or spec.restartNonce changes",
                policy.reset_after, failure.message
            );
            self.warn(RESTARTS_EXHAUSTED, message.clone());
            // Stopped: a crash-looping pod stops crashing.
            self.actions.push(Action::RemovePods);
            self.end_wait();
            self.finish_operation();
            self.set_phase(Phase::Failed);
            self.fail(RESTARTS_EXHAUSTED, message, None);
            return;
        }
        let delay = backoff_delay(policy, count, &self.i.job.uid);
        let of = policy
            .max_restarts
            .map(|m| format!(" of {m}"))
            .unwrap_or_default();
        self.warn(
            failure_event(&failure),
            format!(
                "{}; restart {}{of} in {}",
                failure.message,
                count + 1,
                human(delay)
            ),
        );
        self.begin_backoff(delay, false);
    }

    /// Removes the pods (a crash-looping one stops crashing, and the next start is clean)
    /// and records when the job may start again.
    pub(super) fn begin_backoff(&mut self, delay: Duration, manual: bool) {
        let until = timestamp(self.i.now + delay);
        let restarts = self.status.restarts.get_or_insert_default();
        restarts.next_restart_time = Some(until.clone());
        restarts.waiting = Some(RestartWait::Backoff);
        self.actions.push(Action::RemovePods);
        self.set_phase(Phase::Restarting);
        self.start(
            OperationKind::Restart,
            OperationStep::Backoff(BackoffStep { until, manual }),
        );
        self.requeue = delay.max(Duration::from_secs(1));
    }

    /// Step `Backoff`: once the wait is over, the old pods are gone and the operator-wide
    /// rate limit allows, the revision starts again. A spec changed meanwhile (a fix, a
    /// suspend) is acted on at once instead.
    pub(super) fn continue_backoff(&mut self, step: BackoffStep) {
        let spec = self.i.spec;
        let changed = self
            .status
            .target
            .as_ref()
            .is_none_or(|t| t.hash != spec.fingerprint());
        if changed || spec.state == DesiredState::Suspended {
            self.end_wait();
            self.finish_operation();
            self.steady();
            return;
        }
        // Idempotent: the pods may be back if the last look failed before removing them.
        self.actions.push(Action::RemovePods);
        self.set_phase(Phase::Restarting);
        let until = parse_time(&step.until).unwrap_or(self.i.now);
        if self.i.now < until {
            self.requeue = until
                .duration_since(self.i.now)
                .unwrap_or_default()
                .max(Duration::from_secs(1));
            return;
        }
        if !self.i.observed.pod_runs.is_empty() {
            // Two coordinators of one run must never write its checkpoints at once.
            self.requeue = Duration::from_secs(1);
            return;
        }
        if let Err(wait) = self.i.restart_permit.acquire(self.i.now) {
            let restarts = self.status.restarts.get_or_insert_default();
            restarts.waiting = Some(RestartWait::RateLimited);
            restarts.next_restart_time = Some(timestamp(self.i.now + wait));
            self.requeue = wait.max(Duration::from_secs(1));
            return;
        }
        let now = self.now();
        let restarts = self.status.restarts.get_or_insert_default();
        if !step.manual {
            restarts.count += 1;
        }
        restarts.total += 1;
        restarts.last_restart_time = Some(now);
        self.end_wait();
        self.finish_operation();
        if let Some(target) = self.status.target.clone() {
            self.begin_deploy(OperationKind::Restart, target);
        }
    }

    /// `spec.restartNonce` changed: restart now, the count of failures in a row afresh.
    pub(super) fn restart_by_hand(&mut self) {
        self.status.restart_nonce = self.i.spec.restart_nonce;
        if let Some(r) = self.status.restarts.as_mut() {
            r.count = 0;
        }
        self.note("RestartRequested", "restarting as spec.restartNonce asks");
        self.begin_backoff(Duration::ZERO, true);
    }

    /// A run healthy for `resetAfter` since the last restart starts the count afresh.
    pub(super) fn forget_old_restarts(&mut self) {
        let reset_after = self.i.spec.restart_policy.reset_after.to_std();
        let Some(restarts) = self.status.restarts.as_mut() else {
            return;
        };
        let since = restarts.last_restart_time.as_deref().and_then(parse_time);
        let healthy_long_enough = match (since, reset_after) {
            (Some(t), Some(d)) => self.i.now >= t + d,
            _ => true,
        };
        if restarts.count > 0 && healthy_long_enough {
            restarts.count = 0;
        }
    }

    fn end_wait(&mut self) {
        if let Some(r) = self.status.restarts.as_mut() {
            r.next_restart_time = None;
            r.waiting = None;
        }
    }
}

/// The wait before restart `count + 1`, as `sluice_crds::backoff` computes it for both
/// halves. The jitter is drawn from the job's uid and the count, so that jobs failing
/// together spread out while the plan stays a pure function (the same look gives the same
/// wait).
pub(super) fn backoff_delay(policy: &RestartPolicy, count: u32, seed: &str) -> Duration {
    let b = &policy.backoff;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (seed, count).hash(&mut hasher);
    // Uniform in [-1, 1].
    let unit = (hasher.finish() % 20_001) as f64 / 10_000.0 - 1.0;
    sluice_crds::backoff::backoff_delay(
        b.initial.to_std().unwrap_or(Duration::from_secs(1)),
        b.max.to_std().unwrap_or(Duration::from_secs(300)),
        b.multiplier,
        b.jitter,
        count,
        unit,
    )
}

/// The event that reports a failure, by its kind.
fn failure_event(failure: &Failure) -> &'static str {
    match failure.reason.as_str() {
        "JobFailed" => "JobFailed",
        _ => "PodFailing",
    }
}

/// `1.5s`, `2m3s`: how long, for people.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_crds::{Backoff, HumanDuration};

    fn policy(initial: &str, max: &str, multiplier: f64, jitter: f64) -> RestartPolicy {
        RestartPolicy {
            backoff: Backoff {
                initial: HumanDuration::new(initial),
                max: HumanDuration::new(max),
                multiplier,
                jitter,
            },
            ..RestartPolicy::default()
        }
    }

    #[test]
    fn without_jitter_the_delays_are_exact_and_capped() {
        let p = policy("2s", "20s", 3.0, 0.0);
        let delays: Vec<_> = (0..5)
            .map(|n| backoff_delay(&p, n, "uid").as_secs())
            .collect();
        assert_eq!(delays, [2, 6, 18, 20, 20]);
    }

    #[test]
    fn jitter_stays_within_its_bound_and_differs_between_jobs() {
        let p = policy("10s", "1h", 2.0, 0.25);
        let mut seen = std::collections::BTreeSet::new();
        for job in 0..50 {
            for n in 0..4 {
                let base = 10.0 * 2f64.powi(n as i32);
                let d = backoff_delay(&p, n, &format!("uid-{job}")).as_secs_f64();
                assert!((base * 0.75..=base * 1.25).contains(&d), "{d} for {base}");
                if n == 0 {
                    seen.insert((d * 1000.0) as u64);
                }
            }
        }
        assert!(
            seen.len() > 30,
            "jobs failing together spread out: {seen:?}"
        );
        // The same look gives the same wait.
        assert_eq!(backoff_delay(&p, 2, "uid-7"), backoff_delay(&p, 2, "uid-7"));
    }
}

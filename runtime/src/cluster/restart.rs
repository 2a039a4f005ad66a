//! The in-job restart strategy: after a failure the coordinator waits, then restarts the job
//! from its latest checkpoint. The wait grows exponentially with failures in a row, up to a
//! cap; a run that stayed healthy long enough resets the count; beyond the maximum number
//! of restarts in a row the job fails for good.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct RestartPolicy {
    /// The wait before the first restart.
    pub initial_backoff: Duration,
    /// The wait never exceeds this.
    pub max_backoff: Duration,
    pub multiplier: f64,
    /// Restarts in a row allowed; one more failure fails the job.
    pub max_attempts: u32,
    /// A run that lasted this long was healthy: the next failure starts the count afresh.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            multiplier: 2.0,
            max_attempts: 10,
            reset_after: Duration::from_secs(600),
        }
    }
}

/// Where the strategy stands.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restarts {
    /// Restarts since the coordinator started.
    pub count: u32,
    /// Restarts since the last healthy run.
    pub consecutive: u32,
}

impl Restarts {
    /// A run that lasted `ran_for` failed: the wait before restarting it, or `None` when
    /// the policy gives up.
    pub fn on_failure(&mut self, policy: &RestartPolicy, ran_for: Duration) -> Option<Duration> {
        if ran_for >= policy.reset_after {
            self.consecutive = 0;
        }
        if self.consecutive >= policy.max_attempts {
            return None;
        }
        let factor = policy
            .multiplier
            .max(1.0)
            .powi(i32::try_from(self.consecutive).unwrap_or(i32::MAX));
        let wait = policy
            .initial_backoff
            .mul_f64(factor.min(1e9))
            .min(policy.max_backoff);
        self.consecutive += 1;
        self.count += 1;
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            multiplier: 2.0,
            max_attempts: 6,
            reset_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_then_gives_up_after_max_attempts() {
        let mut r = Restarts::default();
        let waits: Vec<u64> = (0..6)
            .map(|_| {
                r.on_failure(&policy(), Duration::from_secs(1))
                    .unwrap()
                    .as_millis() as u64
            })
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(r.on_failure(&policy(), Duration::from_secs(1)), None);
        assert_eq!(r.count, 6);
    }

    #[test]
    fn a_healthy_run_resets_the_backoff() {
        let mut r = Restarts::default();
        for _ in 0..3 {
            r.on_failure(&policy(), Duration::ZERO);
        }
        let wait = r.on_failure(&policy(), Duration::from_secs(61));
        assert_eq!(wait, Some(Duration::from_millis(100)));
        assert_eq!((r.count, r.consecutive), (4, 1));
    }

    #[test]
    fn zero_attempts_never_restarts() {
        let p = RestartPolicy {
            max_attempts: 0,
            ..policy()
        };
        assert_eq!(Restarts::default().on_failure(&p, Duration::ZERO), None);
    }
}

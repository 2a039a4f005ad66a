//! The in-job restart strategy: after a failure the coordinator waits, then restarts the job
//! from its latest checkpoint. The wait grows exponentially with failures in a row, up to a
//! cap; a run that stayed healthy long enough resets the count; beyond the maximum number
//! of restarts in a row the job fails for good. Jitter moves each wait by a random fraction
//! of itself, so that jobs failing together (a shared dependency down) do not restart in
//! step.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct RestartPolicy {
    /// The wait before the first restart.
    pub initial_backoff: Duration,
    /// The wait never exceeds this.
    pub max_backoff: Duration,
    /// Each failure in a row multiplies the wait by this (below 1 counts as 1).
    pub multiplier: f64,
    /// Each wait moves by up to this fraction of itself, either way (0 to 1).
    pub jitter: f64,
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
            jitter: 0.0,
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
    /// the policy gives up. The jitter is drawn at random.
    pub fn on_failure(&mut self, policy: &RestartPolicy, ran_for: Duration) -> Option<Duration> {
        self.on_failure_jittered(policy, ran_for, jitter_sample())
    }

    /// [`Restarts::on_failure`] with the jitter's random draw given: `jitter_sample` in
    /// [-1, 1] moves the wait by that share of `policy.jitter` of itself.
    pub fn on_failure_jittered(
        &mut self,
        policy: &RestartPolicy,
        ran_for: Duration,
        jitter_sample: f64,
    ) -> Option<Duration> {
        if ran_for >= policy.reset_after {
            self.consecutive = 0;
        }
        if self.consecutive >= policy.max_attempts {
            return None;
        }
        let wait = sluice_crds::backoff::backoff_delay(
            policy.initial_backoff,
            policy.max_backoff,
            policy.multiplier,
            policy.jitter,
            self.consecutive,
            jitter_sample,
        );
        self.consecutive += 1;
        self.count += 1;
        Some(wait)
    }
}

/// A number uniform in [-1, 1]. The standard library's randomly keyed hasher is random
/// enough for spreading restarts, and needs no generator to seed.
fn jitter_sample() -> f64 {
    let bits = RandomState::new().build_hasher().finish();
    // The top 53 bits as a fraction in [0, 1], scaled to [-1, 1].
    (bits >> 11) as f64 / ((1u64 << 53) - 1) as f64 * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            multiplier: 2.0,
            jitter: 0.0,
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

    #[test]
    fn the_multiplier_sets_the_growth_and_zero_jitter_gives_exact_waits() {
        let p = RestartPolicy {
            multiplier: 3.0,
            max_backoff: Duration::from_millis(5000),
            ..policy()
        };
        let mut r = Restarts::default();
        let waits: Vec<u128> = (0..6)
            .map(|i| {
                // Whatever the draw, no jitter means no change.
                let sample = [-1.0, 1.0, 0.3][i % 3];
                r.on_failure_jittered(&p, Duration::ZERO, sample)
                    .unwrap()
                    .as_millis()
            })
            .collect();
        assert_eq!(waits, [100, 300, 900, 2700, 5000, 5000]);
    }

    #[test]
    fn jitter_keeps_each_wait_within_its_bound_of_the_exponential_value_and_the_cap() {
        let p = RestartPolicy {
            multiplier: 1.5,
            jitter: 0.25,
            max_backoff: Duration::from_millis(700),
            max_attempts: 10,
            ..policy()
        };
        for sample in [-1.0, -0.5, 0.0, 0.7, 1.0] {
            let mut r = Restarts::default();
            for n in 0..10 {
                let wait = r
                    .on_failure_jittered(&p, Duration::ZERO, sample)
                    .unwrap()
                    .as_secs_f64();
                let exact = 0.1 * 1.5f64.powi(n);
                let expected = (exact * (1.0 + sample * 0.25)).min(0.7);
                assert!((wait - expected).abs() < 1e-6, "{n} {sample}: {wait}");
                assert!(wait <= 0.7 + 1e-9);
                assert!(wait >= (exact * 0.75).min(0.7) - 1e-9);
            }
        }
        // Drawn at random, the first wait stays within ±25 % of 100 ms.
        for _ in 0..16 {
            let wait = Restarts::default()
                .on_failure(&p, Duration::ZERO)
                .unwrap()
                .as_secs_f64();
            assert!((0.075 - 1e-9..=0.125 + 1e-9).contains(&wait), "{wait}");
        }
        let samples: Vec<f64> = (0..64).map(|_| jitter_sample()).collect();
        assert!(samples.iter().all(|s| (-1.0..=1.0).contains(s)));
        assert!(samples.iter().any(|s| *s < -0.5) && samples.iter().any(|s| *s > 0.5));
    }
}

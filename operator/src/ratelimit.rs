//! The operator-wide restart rate limit: a token bucket every job's restart takes a token
//! from. When many jobs fail at once (a node lost, a broker down), their restarts are spread
//! at the bucket's rate instead of asking the scheduler, the image registry and the state
//! storage for everything together; `burst` restarts may still happen at once.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Whether a restart may happen now.
pub trait RestartPermit: Send + Sync {
    /// Takes a token, or says how long until one is free.
    fn acquire(&self, now: SystemTime) -> Result<(), Duration>;
}

/// No limit: every restart may happen at once.
pub struct Unlimited;

impl RestartPermit for Unlimited {
    fn acquire(&self, _now: SystemTime) -> Result<(), Duration> {
        Ok(())
    }
}

/// `burst` tokens at most, refilled at `per_minute`.
pub struct TokenBucket {
    burst: f64,
    per_second: f64,
    state: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Option<SystemTime>,
}

impl TokenBucket {
    /// A full bucket. `per_minute` 0 allows `burst` restarts and then none.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            burst,
            per_second: f64::from(per_minute) / 60.0,
            state: Mutex::new(Bucket {
                tokens: burst,
                at: None,
            }),
        }
    }
}

impl RestartPermit for TokenBucket {
    fn acquire(&self, now: SystemTime) -> Result<(), Duration> {
        // A poisoned lock only means another reconcile panicked mid-update: the count is
        // still a number, and a wrong one by one token at most.
        let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed =
            b.at.and_then(|at| now.duration_since(at).ok())
                .unwrap_or_default();
        b.tokens = (b.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        // The clock going backwards refills nothing, and does not move `at` back.
        if b.at.is_none_or(|at| now > at) {
            b.at = Some(now);
        }
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        if self.per_second <= 0.0 {
            return Err(Duration::from_secs(3600));
        }
        let wait = (1.0 - b.tokens) / self.per_second;
        Err(Duration::from_secs_f64(wait).max(Duration::from_millis(100)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(1_000_000.0 + secs)
    }

    #[test]
    fn a_burst_passes_then_restarts_are_spaced_at_the_rate() {
        let bucket = TokenBucket::new(6, 2);
        assert_eq!(bucket.acquire(at(0.0)), Ok(()));
        assert_eq!(bucket.acquire(at(0.0)), Ok(()));
        // Six a minute: one every ten seconds.
        assert_eq!(bucket.acquire(at(0.0)), Err(Duration::from_secs(10)));
        assert_eq!(bucket.acquire(at(4.0)), Err(Duration::from_secs(6)));
        assert_eq!(bucket.acquire(at(10.0)), Ok(()));
        assert!(bucket.acquire(at(10.0)).is_err());
        // A long quiet time refills up to the burst, not beyond.
        assert_eq!(bucket.acquire(at(1000.0)), Ok(()));
        assert_eq!(bucket.acquire(at(1000.0)), Ok(()));
        assert!(bucket.acquire(at(1000.0)).is_err());
    }

    #[test]
    fn ten_jobs_failing_together_restart_one_rate_interval_apart() {
        let bucket = TokenBucket::new(12, 1);
        let mut granted = Vec::new();
        let mut now = 0.0;
        // Each job asks again when it was told to, as the plan's requeue does.
        let mut next = [0.0f64; 10];
        while granted.len() < 10 {
            for (job, when) in next.iter_mut().enumerate() {
                if *when <= now && !granted.iter().any(|(j, _)| *j == job) {
                    match bucket.acquire(at(now)) {
                        Ok(()) => granted.push((job, now)),
                        Err(wait) => *when = now + wait.as_secs_f64(),
                    }
                }
            }
            now += 0.5;
        }
        for pair in granted.windows(2) {
            let spacing = pair[1].1 - pair[0].1;
            assert!((4.9..=5.6).contains(&spacing), "{granted:?}");
        }
    }

    #[test]
    fn no_refill_still_lets_the_burst_through() {
        let bucket = TokenBucket::new(0, 1);
        assert_eq!(bucket.acquire(at(0.0)), Ok(()));
        assert!(bucket.acquire(at(100.0)).is_err());
    }
}

//! The exponential backoff both halves use between restarts: the coordinator's in-job
//! restarts and the operator's restarts of a whole job, from the same
//! `spec.restartPolicy.backoff`, so that one policy means one sequence of waits.

use std::time::Duration;

/// The wait before restart `failures + 1`: `initial × multiplier^failures`, moved by
/// `unit × jitter` of itself (`unit` in [-1, 1], `jitter` in [0, 1]), never above `max`.
/// A multiplier below 1 counts as 1; a NaN anywhere means no jitter rather than a panic.
pub fn backoff_delay(
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
    failures: u32,
    unit: f64,
) -> Duration {
    let factor = multiplier
        .max(1.0)
        .powi(i32::try_from(failures).unwrap_or(i32::MAX));
    let moved = 1.0 + unit.clamp(-1.0, 1.0) * jitter.clamp(0.0, 1.0);
    let moved = if moved.is_finite() { moved } else { 1.0 };
    let scale = (factor * moved).min(1e9);
    let scale = if scale.is_finite() { scale } else { 1.0 };
    initial.mul_f64(scale).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_by_the_multiplier_up_to_the_cap_and_jitter_moves_them_within_its_bound() {
        let s = Duration::from_secs;
        let waits: Vec<_> = (0..5)
            .map(|n| backoff_delay(s(2), s(20), 3.0, 0.5, n, 0.0).as_secs())
            .collect();
        assert_eq!(waits, [2, 6, 18, 20, 20]);
        assert_eq!(backoff_delay(s(10), s(60), 2.0, 0.2, 1, 1.0), s(24));
        assert_eq!(backoff_delay(s(10), s(60), 2.0, 0.2, 1, -1.0), s(16));
        // Never above the cap, jitter or not.
        assert_eq!(backoff_delay(s(10), s(60), 2.0, 0.2, 5, 1.0), s(60));
        assert_eq!(
            backoff_delay(s(10), s(60), f64::NAN, f64::NAN, 1, f64::NAN),
            s(10)
        );
    }
}

//! Whether a running job is well, judged from the trend of its readings in
//! `status.metrics.recent`: lag that keeps growing, state that grows fast enough to reach
//! the workers' memory within the hour, checkpoints that keep failing. Nothing has failed
//! yet in any of these; each is what a person on call wants to hear of before it does.
//!
//! The rules are deliberately blunt, so that the message can say exactly why:
//! - **Lag**: over at least [`TREND_SECONDS`] of readings, the event-time lag rose by at
//!   least a quarter of the time that passed (the job processes less than three quarters of
//!   what arrives) and by at least [`MIN_LAG_RISE_SECONDS`], and never fell by more than
//!   [`LAG_JITTER_SECONDS`] from one reading to the next.
//! - **State**: over at least [`TREND_SECONDS`], the checkpointed state never shrank and
//!   grew by at least 5 %, and at that rate reaches the workers' memory limit within
//!   [`STATE_HORIZON_SECONDS`]. Without a memory limit there is no limit to reach, and a
//!   job filling its windows after a start must not look broken: no finding.
//! - **Checkpoints**: [`FAILED_IN_A_ROW`] or more failed since the last that completed.

use super::parse_time;
use sluice_crds::{HealthFinding, HealthReason, JobMetrics, MetricsReading};

/// The least time a trend must span before it is judged.
pub const TREND_SECONDS: u64 = 30;
/// The least rise of the lag over a trend that counts as growing.
pub const MIN_LAG_RISE_SECONDS: i64 = 10;
/// How far the lag may fall between two readings of a growing trend (watermarks advance
/// in steps).
pub const LAG_JITTER_SECONDS: i64 = 2;
/// How soon state must be on course to reach the memory limit to be reported.
pub const STATE_HORIZON_SECONDS: f64 = 3600.0;
/// Failed checkpoints in a row that are reported: one is an accident.
pub const FAILED_IN_A_ROW: u64 = 2;

/// What is wrong, if anything, with the job `m` describes. `state_budget` is the memory
/// the workers may use together, when they have a limit; `last_failure` why the last
/// checkpoint failed.
pub fn judge(
    m: &JobMetrics,
    state_budget: Option<u64>,
    last_failure: Option<&str>,
) -> Option<(HealthReason, String)> {
    if m.checkpoints_failed_in_a_row >= FAILED_IN_A_ROW {
        return Some((
            HealthReason::CheckpointsFailing,
            format!(
                "{} checkpoints failed in a row; the last: {}",
                m.checkpoints_failed_in_a_row,
                last_failure.unwrap_or("no reason given")
            ),
        ));
    }
    if let Some(message) = lag_growing(&m.recent) {
        let blame = match (&m.bottleneck, &m.most_backpressured) {
            (Some(b), Some(w)) => format!(
                "; operator group {} is busy {}% of the time while {} waits on it {}% of the time",
                b.operator, b.percent, w.operator, w.percent
            ),
            _ => String::new(),
        };
        return Some((HealthReason::LagGrowing, format!("{message}{blame}")));
    }
    state_growing(&m.recent, state_budget?).map(|message| (HealthReason::StateGrowing, message))
}

/// The finding to record: `since` carries over while the reason stays the same.
pub fn finding(
    judged: Option<(HealthReason, String)>,
    previous: Option<&HealthFinding>,
    now: &str,
) -> Option<HealthFinding> {
    judged.map(|(reason, message)| HealthFinding {
        reason,
        message,
        since: previous
            .filter(|p| p.reason == reason)
            .map_or_else(|| now.to_string(), |p| p.since.clone()),
    })
}

/// Seconds from the first to the last reading.
fn span(readings: &[&MetricsReading]) -> Option<u64> {
    let first = parse_time(&readings.first()?.at)?;
    let last = parse_time(&readings.last()?.at)?;
    last.duration_since(first).ok().map(|d| d.as_secs())
}

fn lag_growing(recent: &[MetricsReading]) -> Option<String> {
    let readings: Vec<&MetricsReading> = recent
        .iter()
        .filter(|r| r.event_time_lag_seconds.is_some())
        .collect();
    let span = span(&readings)?;
    if span < TREND_SECONDS {
        return None;
    }
    let lags: Vec<i64> = readings
        .iter()
        .filter_map(|r| r.event_time_lag_seconds)
        .collect();
    let (first, last) = (*lags.first()?, *lags.last()?);
    let steady = lags.windows(2).all(|w| w[1] >= w[0] - LAG_JITTER_SECONDS);
    let rise = last - first;
    let growing = steady && rise >= MIN_LAG_RISE_SECONDS && rise.unsigned_abs() * 4 >= span;
    growing.then(|| {
        format!(
            "event-time lag grew from {first} s to {last} s in {span} s: the job processes \
             its input slower than it arrives"
        )
    })
}

fn state_growing(recent: &[MetricsReading], budget: u64) -> Option<String> {
    let readings: Vec<&MetricsReading> =
        recent.iter().filter(|r| r.state_bytes.is_some()).collect();
    let span = span(&readings)?;
    if span < TREND_SECONDS {
        return None;
    }
    let sizes: Vec<u64> = readings.iter().filter_map(|r| r.state_bytes).collect();
    let (first, last) = (*sizes.first()?, *sizes.last()?);
    let never_shrank = sizes.windows(2).all(|w| w[1] >= w[0]);
    if !never_shrank || last <= first || last - first < first / 20 {
        return None;
    }
    let rate = (last - first) as f64 / span as f64;
    let to_budget = budget.saturating_sub(last) as f64 / rate;
    (to_budget < STATE_HORIZON_SECONDS).then(|| {
        format!(
            "state grew from {} to {} in {span} s ({}/s): at this rate it reaches the \
             workers' memory limit of {} in {} s",
            mib(first),
            mib(last),
            mib(rate as u64),
            mib(budget),
            to_budget.round() as u64
        )
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(points: &[(u64, Option<i64>, Option<u64>)]) -> Vec<MetricsReading> {
        points
            .iter()
            .map(|&(secs, lag, state)| MetricsReading {
                at: super::super::timestamp(
                    std::time::SystemTime::UNIX_EPOCH
                        + std::time::Duration::from_secs(1_800_000_000 + secs),
                ),
                event_time_lag_seconds: lag,
                state_bytes: state,
            })
            .collect()
    }

    fn metrics(recent: Vec<MetricsReading>) -> JobMetrics {
        JobMetrics {
            recent,
            ..JobMetrics::default()
        }
    }

    #[test]
    fn lag_that_keeps_rising_is_growing_and_a_steady_or_young_one_is_not() {
        let rising = readings(&[
            (0, Some(5), None),
            (10, Some(13), None),
            (20, Some(21), None),
            (30, Some(29), None),
        ]);
        let (reason, message) = judge(&metrics(rising), None, None).expect("a finding");
        assert_eq!(reason, HealthReason::LagGrowing);
        assert_eq!(
            message,
            "event-time lag grew from 5 s to 29 s in 30 s: the job processes its input slower \
             than it arrives"
        );

        // Jitter of a watermark that advances in steps: level overall.
        let steady = readings(&[
            (0, Some(5), None),
            (10, Some(7), None),
            (20, Some(5), None),
            (30, Some(7), None),
            (40, Some(6), None),
        ]);
        assert_eq!(judge(&metrics(steady), None, None), None);

        // Rising, but over 20 s only: not yet a trend.
        let young = readings(&[
            (0, Some(5), None),
            (10, Some(15), None),
            (20, Some(25), None),
        ]);
        assert_eq!(judge(&metrics(young), None, None), None);

        // A job catching up after a pause: it fell back by more than the jitter.
        let recovering = readings(&[
            (0, Some(5), None),
            (10, Some(30), None),
            (20, Some(12), None),
            (30, Some(40), None),
        ]);
        assert_eq!(judge(&metrics(recovering), None, None), None);

        // Rising slowly: 10 s over 60 s is a job that keeps up with five sixths of it.
        let slow = readings(&[
            (0, Some(5), None),
            (30, Some(10), None),
            (60, Some(15), None),
        ]);
        assert_eq!(judge(&metrics(slow), None, None), None);
    }

    #[test]
    fn the_lag_finding_names_the_bottleneck() {
        let mut m = metrics(readings(&[
            (0, Some(0), None),
            (20, Some(18), None),
            (40, Some(36), None),
        ]));
        m.bottleneck = Some(sluice_crds::OperatorShare {
            operator: "window".into(),
            percent: 97,
        });
        m.most_backpressured = Some(sluice_crds::OperatorShare {
            operator: "source".into(),
            percent: 88,
        });
        let (_, message) = judge(&m, None, None).expect("a finding");
        assert!(
            message.ends_with(
                "; operator group window is busy 97% of the time while source waits on it 88% \
                 of the time"
            ),
            "{message}"
        );
    }

    #[test]
    fn state_on_course_for_the_memory_limit_is_growing() {
        const MIB: u64 = 1024 * 1024;
        // 1 MiB/s towards 512 MiB: reached in about 7 minutes.
        let growing = readings(&[
            (0, None, Some(40 * MIB)),
            (10, None, Some(50 * MIB)),
            (20, None, Some(50 * MIB)),
            (30, None, Some(70 * MIB)),
        ]);
        let (reason, message) =
            judge(&metrics(growing.clone()), Some(512 * MIB), None).expect("a finding");
        assert_eq!(reason, HealthReason::StateGrowing);
        assert_eq!(
            message,
            "state grew from 40.0 MiB to 70.0 MiB in 30 s (1.0 MiB/s): at this rate it \
             reaches the workers' memory limit of 512.0 MiB in 442 s"
        );
        // No limit to reach.
        assert_eq!(judge(&metrics(growing.clone()), None, None), None);
        // 64 GiB is more than an hour away at 1 MiB/s.
        assert_eq!(judge(&metrics(growing), Some(64 * 1024 * MIB), None), None);

        // Windows that fire and empty: the state shrank on the way.
        let windowed = readings(&[
            (0, None, Some(40 * MIB)),
            (10, None, Some(60 * MIB)),
            (20, None, Some(45 * MIB)),
            (30, None, Some(70 * MIB)),
        ]);
        assert_eq!(judge(&metrics(windowed), Some(512 * MIB), None), None);
    }

    #[test]
    fn checkpoints_failing_in_a_row_come_first() {
        let mut m = metrics(Vec::new());
        m.checkpoints_failed_in_a_row = 1;
        assert_eq!(
            judge(&m, None, Some("disk full")),
            None,
            "one is an accident"
        );
        m.checkpoints_failed_in_a_row = 3;
        assert_eq!(
            judge(&m, None, Some("checkpoint 7: disk full")),
            Some((
                HealthReason::CheckpointsFailing,
                "3 checkpoints failed in a row; the last: checkpoint 7: disk full".into()
            ))
        );
    }

    #[test]
    fn a_finding_keeps_its_since_while_its_reason_holds() {
        let first = finding(
            Some((HealthReason::LagGrowing, "a".into())),
            None,
            "2027-01-01T00:00:00Z",
        )
        .expect("a finding");
        let again = finding(
            Some((HealthReason::LagGrowing, "b".into())),
            Some(&first),
            "2027-01-01T00:00:10Z",
        )
        .expect("a finding");
        assert_eq!(again.since, "2027-01-01T00:00:00Z");
        assert_eq!(again.message, "b");
        let other = finding(
            Some((HealthReason::StateGrowing, "c".into())),
            Some(&again),
            "2027-01-01T00:00:20Z",
        )
        .expect("a finding");
        assert_eq!(other.since, "2027-01-01T00:00:20Z");
        assert_eq!(finding(None, Some(&other), "2027-01-01T00:00:30Z"), None);
    }
}

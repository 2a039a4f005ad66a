//! `status.metrics`: what the running job is doing, summarised from its coordinator's
//! `GET /v1/job` at most every [`JobMetrics::INTERVAL_SECONDS`]. Writing the status wakes
//! the operator again; a summary that changed on every reconcile would keep it busy
//! writing it.

use super::{parse_time, timestamp, Planner};
use sluice_crds::control::{self, JobStatus};
use sluice_crds::{JobMetrics, OperatorShare};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

impl Planner<'_> {
    /// Refreshes `status.metrics` from the targeted run's coordinator while it runs, and
    /// clears it otherwise: a stopped or restarting job shows no throughput.
    pub(super) fn summarise(&mut self) {
        let running = self.job_phase() == Some(control::Phase::Running);
        let Some(job) = self.i.observed.job.as_ref().filter(|_| running) else {
            self.status.metrics = None;
            return;
        };
        let previous = self.status.metrics.as_ref();
        let fresh = previous
            .and_then(|m| parse_time(&m.observed_at))
            .and_then(|at| self.i.now.duration_since(at).ok())
            .is_some_and(|age| age < Duration::from_secs(JobMetrics::INTERVAL_SECONDS));
        if !fresh {
            self.status.metrics = Some(summary(job, previous, self.i.now));
        }
    }
}

/// The summary of `job` read at `now`, with the rate since `previous` when it is a reading
/// of the same run (its count of source records has not gone back).
pub fn summary(job: &JobStatus, previous: Option<&JobMetrics>, now: SystemTime) -> JobMetrics {
    let source_records: u64 = job
        .subtasks
        .iter()
        .filter(|t| t.source)
        .map(|t| t.records_in)
        .sum();
    let records_per_second = previous.and_then(|p| {
        let since = now.duration_since(parse_time(&p.observed_at)?).ok()?;
        let read = source_records.checked_sub(p.source_records)?;
        (since.as_secs_f64() >= 1.0).then(|| (read as f64 / since.as_secs_f64()).round() as u64)
    });
    // `None` while a sink chain has no watermark yet: results are complete up to nothing.
    let watermark_ms = job
        .subtasks
        .iter()
        .filter(|t| t.sink)
        .map(|t| t.watermark_ms)
        .min()
        .flatten()
        .filter(|ms| *ms >= 0);
    let now_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    JobMetrics {
        observed_at: timestamp(now),
        source_records,
        records_per_second,
        watermark: watermark_ms
            .map(|ms| timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs()))),
        event_time_lag_seconds: watermark_ms.map(|ms| (now_ms - ms) / 1000),
        most_backpressured: most_backpressured(job),
    }
}

/// The group with the largest share of its subtasks' time backpressured, when any is.
fn most_backpressured(job: &JobStatus) -> Option<OperatorShare> {
    let mut groups: BTreeMap<&str, (f64, u32)> = BTreeMap::new();
    for t in &job.subtasks {
        let g = groups.entry(t.operator.as_str()).or_default();
        g.0 += t.backpressured_seconds;
        g.1 += 1;
    }
    let uptime = job.uptime_seconds.max(1e-9);
    groups
        .into_iter()
        .map(|(operator, (seconds, subtasks))| {
            let share = 100.0 * seconds / (uptime * f64::from(subtasks));
            (operator, share.clamp(0.0, 100.0).round() as u32)
        })
        .filter(|(_, percent)| *percent > 0)
        .max_by_key(|(_, percent)| *percent)
        .map(|(operator, percent)| OperatorShare {
            operator: operator.to_string(),
            percent,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_crds::control::{SubtaskState, SubtaskStatus};

    fn subtask(operator: &str, source: bool, sink: bool) -> SubtaskStatus {
        SubtaskStatus {
            operator: operator.into(),
            subtask: 0,
            state: SubtaskState::Running,
            source,
            sink,
            records_in: 0,
            records_out: 0,
            sink_records: 0,
            late_records: 0,
            busy_seconds: 0.0,
            idle_seconds: 0.0,
            backpressured_seconds: 0.0,
            watermark_ms: None,
            worker: None,
        }
    }

    fn job(records: [u64; 2], backpressured: [f64; 2], watermarks: [Option<i64>; 2]) -> JobStatus {
        let mut subtasks = Vec::new();
        for s in 0..2 {
            let mut source = subtask("source", true, false);
            source.subtask = s as u32;
            source.records_in = records[s];
            source.backpressured_seconds = backpressured[s];
            let mut sink = subtask("window", false, true);
            sink.subtask = s as u32;
            sink.watermark_ms = watermarks[s];
            sink.backpressured_seconds = 1.0;
            subtasks.extend([source, sink]);
        }
        JobStatus {
            name: "nexmark-q5".into(),
            phase: control::Phase::Running,
            parallelism: 2,
            max_parallelism: 128,
            uptime_seconds: 20.0,
            subtasks,
            checkpoints: Default::default(),
            restored_from: None,
            errors: Vec::new(),
            restarts: Default::default(),
            workers: Vec::new(),
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_rate_is_over_the_readings_and_the_lag_from_the_lowest_sink_watermark() {
        let start = 1_800_000_000;
        let first = summary(
            &job([1_000, 3_000], [0.0, 0.0], [None, None]),
            None,
            at(start),
        );
        assert_eq!(first.source_records, 4_000);
        assert_eq!(first.records_per_second, None, "one reading has no rate");
        assert_eq!(first.watermark, None);
        assert_eq!(first.event_time_lag_seconds, None);

        let second = summary(
            &job(
                [6_000, 8_000],
                [10.0, 6.0],
                [
                    Some((start + 5) as i64 * 1000),
                    Some((start - 25) as i64 * 1000),
                ],
            ),
            Some(&first),
            at(start + 10),
        );
        assert_eq!(second.records_per_second, Some(1_000));
        assert_eq!(second.event_time_lag_seconds, Some(35));
        assert_eq!(second.watermark.as_deref(), Some("2027-01-15T07:59:35Z"));
        // 16 s of 2 x 20 s for the sources, 2 s of 40 s for the window.
        assert_eq!(
            second.most_backpressured,
            Some(OperatorShare {
                operator: "source".into(),
                percent: 40
            })
        );

        // A new run counts from zero: no rate across the two.
        let restarted = summary(
            &job([10, 10], [0.0, 0.0], [None, None]),
            Some(&second),
            at(start + 20),
        );
        assert_eq!(restarted.records_per_second, None);
    }
}

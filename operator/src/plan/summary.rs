//! `status.metrics`: what the running job is doing, summarised from its coordinator's
//! `GET /v1/job` at most every [`JobMetrics::INTERVAL_SECONDS`], and whether that is well
//! (`health`). Writing the status wakes the operator again; a summary that changed on every
//! reconcile would keep it busy writing it.

use super::health;
use super::{parse_time, timestamp, Planner};
use crate::build::worker_count;
use sluice_crds::control::{self, JobStatus};
use sluice_crds::{JobMetrics, KeyGroupSkew, MetricsReading, OperatorShare, StreamJobSpec};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

impl Planner<'_> {
    /// Refreshes `status.metrics` from the targeted run's coordinator while it runs, and
    /// clears it otherwise: a stopped or restarting job shows no throughput. Publishes an
    /// Event when a finding appears, changes or goes.
    pub(super) fn summarise(&mut self) {
        let running = self.job_phase() == Some(control::Phase::Running);
        let previous = self.status.metrics.take();
        let Some(job) = self.i.observed.job.as_ref().filter(|_| running) else {
            if let Some(f) = previous.and_then(|m| m.unhealthy) {
                self.note(
                    "Recovered",
                    format!("{}: the run it was seen in is over", f.reason.as_str()),
                );
            }
            return;
        };
        let fresh = previous
            .as_ref()
            .and_then(|m| parse_time(&m.observed_at))
            .and_then(|at| self.i.now.duration_since(at).ok())
            .is_some_and(|age| age < Duration::from_secs(JobMetrics::INTERVAL_SECONDS));
        if fresh {
            self.status.metrics = previous;
            return;
        }
        let spec = self.status.target.as_ref().map_or(self.i.spec, |t| &t.spec);
        let mut metrics = summary(job, previous.as_ref(), self.i.now);
        let judged = health::judge(
            &metrics,
            state_budget(spec),
            job.checkpoints.last_failure.as_deref(),
        );
        let was = previous.as_ref().and_then(|m| m.unhealthy.as_ref());
        metrics.unhealthy = health::finding(judged, was, &metrics.observed_at);
        match (was, &metrics.unhealthy) {
            (Some(w), None) => self.note(
                "Recovered",
                format!("{} no longer holds", w.reason.as_str()),
            ),
            (w, Some(now)) if w.map(|w| w.reason) != Some(now.reason) => {
                self.warn(now.reason.as_str(), now.message.clone());
            }
            _ => {}
        }
        self.status.metrics = Some(metrics);
    }
}

/// The memory the workers of `spec` may use together, when they have a limit.
fn state_budget(spec: &StreamJobSpec) -> Option<u64> {
    let limit = spec.worker.resources.limits.get("memory")?.milli_value()? / 1000;
    u64::try_from(limit)
        .ok()?
        .checked_mul(u64::from(worker_count(spec)))
}

/// The summary of `job` read at `now`, with the rate and the recent readings since
/// `previous` when it is a reading of the same run (its count of source records has not
/// gone back).
pub fn summary(job: &JobStatus, previous: Option<&JobMetrics>, now: SystemTime) -> JobMetrics {
    let source_records: u64 = job
        .subtasks
        .iter()
        .filter(|t| t.source)
        .map(|t| t.records_in)
        .sum();
    let same_run = previous.filter(|p| source_records >= p.source_records);
    let records_per_second = same_run.and_then(|p| {
        let since = now.duration_since(parse_time(&p.observed_at)?).ok()?;
        let read = source_records - p.source_records;
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
    let observed_at = timestamp(now);
    let event_time_lag_seconds = watermark_ms.map(|ms| (now_ms - ms) / 1000);
    let last = job.checkpoints.last_completed.as_ref();
    let state_bytes = last.map(|c| c.bytes);
    let mut recent = same_run.map(|p| p.recent.clone()).unwrap_or_default();
    recent.push(MetricsReading {
        at: observed_at.clone(),
        event_time_lag_seconds,
        state_bytes,
    });
    let surplus = recent.len().saturating_sub(JobMetrics::RECENT_READINGS);
    recent.drain(..surplus);
    let shares = group_shares(job);
    JobMetrics {
        observed_at,
        source_records,
        records_per_second,
        watermark: watermark_ms
            .map(|ms| timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs()))),
        event_time_lag_seconds,
        most_backpressured: most_backpressured(&shares),
        bottleneck: bottleneck(&shares),
        state_bytes,
        last_checkpoint_duration_ms: last.map(|c| c.duration_ms),
        checkpoints_failed_in_a_row: job.checkpoints.failed_in_a_row,
        key_group_skew: key_group_skew(job),
        recent,
        unhealthy: None,
    }
}

/// Percent of each operator group's subtask time spent backpressured and busy, this run.
struct Shares {
    backpressured: u32,
    busy: u32,
}

fn group_shares(job: &JobStatus) -> BTreeMap<&str, Shares> {
    let mut groups: BTreeMap<&str, (f64, f64, u32)> = BTreeMap::new();
    for t in &job.subtasks {
        let g = groups.entry(t.operator.as_str()).or_default();
        g.0 += t.backpressured_seconds;
        g.1 += t.busy_seconds;
        g.2 += 1;
    }
    let uptime = job.uptime_seconds.max(1e-9);
    let percent = |seconds: f64, subtasks: u32| {
        (100.0 * seconds / (uptime * f64::from(subtasks)))
            .clamp(0.0, 100.0)
            .round() as u32
    };
    groups
        .into_iter()
        .map(|(operator, (backpressured, busy, subtasks))| {
            let shares = Shares {
                backpressured: percent(backpressured, subtasks),
                busy: percent(busy, subtasks),
            };
            (operator, shares)
        })
        .collect()
}

/// A group's share is worth naming from this many percent.
const NOTABLE_PERCENT: u32 = 10;

/// The group with the largest share of its subtasks' time backpressured, when any is.
fn most_backpressured(shares: &BTreeMap<&str, Shares>) -> Option<OperatorShare> {
    shares
        .iter()
        .filter(|(_, s)| s.backpressured > 0)
        .max_by_key(|(_, s)| s.backpressured)
        .map(|(operator, s)| OperatorShare {
            operator: operator.to_string(),
            percent: s.backpressured,
        })
}

/// While some group waits on another for a notable share of its time, the busiest of the
/// groups that wait less: the one that cannot keep up. A chain's groups do not say which
/// feeds which, and need not: the groups upstream of the bottleneck are the ones waiting.
fn bottleneck(shares: &BTreeMap<&str, Shares>) -> Option<OperatorShare> {
    let most = shares.values().map(|s| s.backpressured).max()?;
    if most < NOTABLE_PERCENT {
        return None;
    }
    shares
        .iter()
        .filter(|(_, s)| s.backpressured < most && s.busy >= NOTABLE_PERCENT)
        .max_by_key(|(_, s)| s.busy)
        .map(|(operator, s)| OperatorShare {
            operator: operator.to_string(),
            percent: s.busy,
        })
}

/// Key groups need this many records on average before their spread says anything.
const SKEW_MIN_RECORDS_PER_KEY_GROUP: u64 = 10;

/// The keyed operator whose busiest key group is furthest above the mean of its key
/// groups.
fn key_group_skew(job: &JobStatus) -> Option<KeyGroupSkew> {
    job.key_group_records()
        .into_iter()
        .filter_map(|(operator, records)| {
            let total: u64 = records.iter().sum();
            let groups = records.len() as u64;
            if groups == 0 || total < groups * SKEW_MIN_RECORDS_PER_KEY_GROUP {
                return None;
            }
            let (key_group, max) = records
                .iter()
                .enumerate()
                .max_by_key(|(_, n)| **n)
                .map(|(kg, n)| (kg as u32, *n))?;
            let ratio = max as f64 * groups as f64 / total as f64;
            Some(KeyGroupSkew {
                operator: operator.to_string(),
                key_group,
                ratio: (ratio * 100.0).round() / 100.0,
            })
        })
        .max_by(|a, b| a.ratio.total_cmp(&b.ratio))
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
            aligning_seconds: 0.0,
            restored_bytes: 0,
            restore_seconds: 0.0,
            watermark_ms: None,
            worker: None,
            key_groups: Vec::new(),
            splits: Vec::new(),
            input_buffer_fill: 0.0,
            end_to_end_latency: Default::default(),
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
            topology: Default::default(),
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
        assert_eq!(second.recent.len(), 2, "{:?}", second.recent);
        assert_eq!(second.recent[1].event_time_lag_seconds, Some(35));
        assert_eq!(restarted.recent.len(), 1, "a new run's trend starts over");
    }

    #[test]
    fn recent_readings_keep_the_last_minute_or_so() {
        let mut m = summary(&job([0, 0], [0.0, 0.0], [None, None]), None, at(0));
        for i in 1..20u64 {
            m = summary(&job([i, i], [0.0, 0.0], [None, None]), Some(&m), at(i * 10));
        }
        let times: Vec<&str> = m.recent.iter().map(|r| r.at.as_str()).collect();
        assert_eq!(times.len(), JobMetrics::RECENT_READINGS);
        assert_eq!(times.last(), Some(&timestamp(at(190)).as_str()));
        assert_eq!(times.first(), Some(&timestamp(at(130)).as_str()));
    }

    #[test]
    fn the_bottleneck_is_the_busiest_group_that_waits_less_than_the_others() {
        let mut j = job([0, 0], [18.0, 18.0], [None, None]);
        for t in &mut j.subtasks {
            t.busy_seconds = if t.source { 2.0 } else { 19.5 };
        }
        let m = summary(&j, None, at(0));
        assert_eq!(
            m.most_backpressured,
            Some(OperatorShare {
                operator: "source".into(),
                percent: 90
            })
        );
        assert_eq!(
            m.bottleneck,
            Some(OperatorShare {
                operator: "window".into(),
                percent: 98
            })
        );

        // Nobody waits: nobody holds the job back.
        let mut calm = job([0, 0], [0.5, 0.5], [None, None]);
        for t in &mut calm.subtasks {
            t.backpressured_seconds = 0.5;
            t.busy_seconds = 10.0;
        }
        assert_eq!(summary(&calm, None, at(0)).bottleneck, None);
    }

    #[test]
    fn key_group_skew_is_the_busiest_key_group_over_the_mean() {
        let mut j = job([0, 0], [0.0, 0.0], [None, None]);
        // Two sources feed the window's four key groups; key group 2 gets 250 of 400.
        let spread = [[25, 25, 100, 0], [25, 25, 150, 50]];
        for (t, records) in j.subtasks.iter_mut().filter(|t| t.source).zip(spread) {
            t.key_groups = vec![control::KeyGroupRecords {
                operator: "window".into(),
                records: records.to_vec(),
            }];
        }
        assert_eq!(
            summary(&j, None, at(0)).key_group_skew,
            Some(KeyGroupSkew {
                operator: "window".into(),
                key_group: 2,
                ratio: 2.5
            })
        );
        // Too few records to say.
        for t in j.subtasks.iter_mut().filter(|t| t.source) {
            t.key_groups[0].records = vec![1, 0, 5, 0];
        }
        assert_eq!(summary(&j, None, at(0)).key_group_skew, None);
    }
}

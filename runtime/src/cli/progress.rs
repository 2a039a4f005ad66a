//! `sluice run`'s progress: a total line and a line per operator group (a chain and its
//! subtasks), each interval. On a terminal the block is redrawn in place, so the screen
//! shows the job's present state; elsewhere (a pipe, a file, a CI log) every interval adds
//! plain lines, which stay readable where control sequences would be noise.
//!
//! Rates and shares are over the interval, not since the start: a job that was fast and
//! is now stuck behind a slow sink must show that it is stuck now.

use super::{human, utc};
use crate::exec::SubtaskStatus;
use crate::time::EventTime;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// One operator group's totals at one sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Totals {
    subtasks: u32,
    source: bool,
    sink: bool,
    records_in: u64,
    sink_records: u64,
    busy: Duration,
    backpressured: Duration,
    /// The lowest watermark among the group's subtasks.
    watermark: Option<EventTime>,
}

fn totals(subtasks: &[SubtaskStatus]) -> BTreeMap<String, Totals> {
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    for s in subtasks {
        let m = &s.metrics;
        let g = groups.entry(s.operator.clone()).or_default();
        g.subtasks += 1;
        g.source |= m.is_source;
        g.sink |= m.is_sink;
        g.records_in += m.records_in;
        g.sink_records += m.sink_records;
        g.busy += m.busy;
        g.backpressured += m.backpressured;
        g.watermark = Some(g.watermark.map_or(m.watermark, |w| w.min(m.watermark)));
    }
    groups
}

/// Progress since the previous sample, rendered as lines.
pub(super) struct Progress {
    previous: BTreeMap<String, Totals>,
    /// Lines the last redraw wrote, to move back over on a terminal.
    drawn: usize,
    terminal: bool,
}

impl Progress {
    pub(super) fn new(terminal: bool) -> Self {
        Progress {
            previous: BTreeMap::new(),
            drawn: 0,
            terminal,
        }
    }

    /// The text to write for a sample taken `elapsed` after the previous one (or the start).
    pub(super) fn update(&mut self, subtasks: &[SubtaskStatus], elapsed: Duration) -> String {
        let now = totals(subtasks);
        let lines = render(&self.previous, &now, elapsed);
        self.previous = now;
        let mut out = String::new();
        if self.terminal && self.drawn > 0 {
            // Up to the first line of the last block; each line is cleared as it is rewritten.
            let _ = write!(out, "\x1b[{}A", self.drawn);
        }
        for line in &lines {
            if self.terminal {
                out.push_str("\x1b[2K");
            }
            out.push_str(line);
            out.push('\n');
        }
        self.drawn = lines.len();
        out
    }
}

/// The total line, then one line per operator group: records/s in, the share of its
/// subtasks' time spent busy and waiting for room downstream (backpressured), and its
/// watermark.
fn render(
    previous: &BTreeMap<String, Totals>,
    now: &BTreeMap<String, Totals>,
    elapsed: Duration,
) -> Vec<String> {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let delta = |name: &str, f: fn(&Totals) -> u64| {
        let before = previous.get(name).map_or(0, f);
        now.get(name).map_or(0, f).saturating_sub(before)
    };
    let events: u64 = now
        .values()
        .filter(|g| g.source)
        .map(|g| g.records_in)
        .sum();
    let events_before: u64 = previous
        .values()
        .filter(|g| g.source)
        .map(|g| g.records_in)
        .sum();
    let outputs: u64 = now.values().map(|g| g.sink_records).sum();
    // How far results are complete: the lowest watermark of the chains ending in sinks.
    let complete = now
        .values()
        .filter(|g| g.sink)
        .filter_map(|g| g.watermark)
        .min();
    let mut lines = vec![format!(
        "  events {events:>12}  {:>10}/s  watermark {}  outputs {outputs}",
        human(events.saturating_sub(events_before) as f64 / secs),
        watermark(complete),
    )];
    for (name, g) in now {
        let share = |f: fn(&Totals) -> Duration| {
            let before = previous.get(name).map_or(Duration::ZERO, f);
            let spent = f(g).saturating_sub(before).as_secs_f64();
            (100.0 * spent / (secs * f64::from(g.subtasks.max(1)))).min(100.0)
        };
        lines.push(format!(
            "    {name:<24} x{:<3} {:>10}/s  busy {:>3.0}%  backpressured {:>3.0}%  watermark {}",
            g.subtasks,
            human(delta(name, |t| t.records_in) as f64 / secs),
            share(|t| t.busy),
            share(|t| t.backpressured),
            watermark(g.watermark),
        ));
    }
    lines
}

fn watermark(w: Option<EventTime>) -> String {
    match w {
        None | Some(EventTime::MIN) => "-".into(),
        Some(EventTime::MAX) => "end".into(),
        Some(w) => utc(w.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::metrics::TaskMetricsSnapshot;
    use crate::exec::SubtaskState;

    fn subtask(operator: &str, subtask: usize, m: TaskMetricsSnapshot) -> SubtaskStatus {
        SubtaskStatus {
            operator: operator.into(),
            subtask,
            state: SubtaskState::Running,
            metrics: m,
        }
    }

    fn source(records_in: u64, backpressured_ms: u64, watermark: i64) -> TaskMetricsSnapshot {
        TaskMetricsSnapshot {
            is_source: true,
            records_in,
            busy: Duration::from_millis(200),
            backpressured: Duration::from_millis(backpressured_ms),
            watermark: EventTime(watermark),
            ..TaskMetricsSnapshot::default()
        }
    }

    fn sink(records_in: u64, busy_ms: u64) -> TaskMetricsSnapshot {
        TaskMetricsSnapshot {
            is_sink: true,
            records_in,
            sink_records: records_in / 10,
            busy: Duration::from_millis(busy_ms),
            watermark: EventTime::MIN,
            ..TaskMetricsSnapshot::default()
        }
    }

    #[test]
    fn each_group_shows_its_rate_and_shares_over_the_interval() {
        let mut progress = Progress::new(false);
        let first = [
            subtask("source", 0, source(1_000, 0, 5_000)),
            subtask("source", 1, source(1_000, 0, 3_000)),
            subtask("window", 0, sink(500, 100)),
        ];
        progress.update(&first, Duration::from_secs(1));
        let second = [
            subtask("source", 0, source(3_000, 900, 9_000)),
            subtask("source", 1, source(5_000, 700, 4_000)),
            subtask("window", 0, sink(2_500, 1_100)),
        ];
        let text = progress.update(&second, Duration::from_secs(2));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        // 6,000 events in 2 s; 250 outputs in all.
        assert!(
            lines[0].contains("8000") && lines[0].contains("3.0k/s"),
            "{text}"
        );
        assert!(lines[0].ends_with("outputs 250"), "{text}");
        // Backpressure: 1.6 s of 2 subtasks x 2 s; the watermark is the lower one.
        assert!(
            lines[1].contains("source") && lines[1].contains("x2"),
            "{text}"
        );
        assert!(lines[1].contains("backpressured  40%"), "{text}");
        assert!(
            lines[1].contains("watermark 1970-01-01T00:00:04.000Z"),
            "{text}"
        );
        // The window: 2,000 records in 2 s, busy 1 s of 2.
        assert!(
            lines[2].contains("1.0k/s") && lines[2].contains("busy  50%"),
            "{text}"
        );
        assert!(lines[2].ends_with("watermark -"), "{text}");
        assert!(
            !text.contains('\x1b'),
            "plain lines carry no control sequences"
        );
    }

    #[test]
    fn on_a_terminal_each_block_replaces_the_last() {
        let mut progress = Progress::new(true);
        let job = [
            subtask("source", 0, source(10, 0, 0)),
            subtask("sink", 0, sink(10, 0)),
        ];
        let first = progress.update(&job, Duration::from_secs(1));
        assert!(
            !first.contains("\x1b[3A"),
            "nothing to move over yet: {first:?}"
        );
        let second = progress.update(&job, Duration::from_secs(1));
        assert!(second.starts_with("\x1b[3A\x1b[2K"), "{second:?}");
        assert_eq!(second.matches("\x1b[2K").count(), 3, "{second:?}");
    }
}

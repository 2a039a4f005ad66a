//! Window assigners. The time domain is part of the assigner's type: event-time windows fire
//! on watermarks, processing-time windows on the job's clock, and an assigner of one kind
//! cannot be handed to an API expecting the other.

use crate::time::duration_millis;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A half-open interval `[start, end)` of milliseconds, in the assigner's time domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimeWindow {
    pub start: i64,
    pub end: i64,
}

impl TimeWindow {
    pub fn new(start: i64, end: i64) -> Self {
        TimeWindow { start, end }
    }
    /// The largest timestamp that belongs to the window; results carry it as event time.
    pub fn max_timestamp(&self) -> i64 {
        self.end - 1
    }
    pub fn intersects(&self, other: &TimeWindow) -> bool {
        self.start <= other.end && other.start <= self.end
    }
    pub fn cover(&self, other: &TimeWindow) -> TimeWindow {
        TimeWindow::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// Which windows a timestamp belongs to.
pub trait WindowAssigner: Clone + Send + Sync + 'static {
    /// True for event time (fired by watermarks), false for processing time.
    const EVENT_TIME: bool;
    /// The gap of session windows, which merge per key when they overlap; `None` for
    /// windows of fixed size.
    fn session_gap(&self) -> Option<i64> {
        None
    }
    fn assign(&self, t: i64, out: &mut Vec<TimeWindow>);
}

fn window_start(t: i64, offset: i64, size: i64) -> i64 {
    t - (t - offset).rem_euclid(size)
}

fn positive_millis(d: Duration, what: &str) -> i64 {
    let ms = duration_millis(d);
    assert!(ms > 0, "{what} must be at least 1 ms, got {d:?}");
    ms
}

/// Fixed-size, non-overlapping event-time windows.
#[derive(Clone, Debug)]
pub struct TumblingEventTime {
    size: i64,
    offset: i64,
}

impl TumblingEventTime {
    /// # Panics
    /// If `size` is below one millisecond: a job definition error, found when the job is built.
    pub fn of(size: Duration) -> Self {
        TumblingEventTime {
            size: positive_millis(size, "tumbling window size"),
            offset: 0,
        }
    }
}

impl WindowAssigner for TumblingEventTime {
    const EVENT_TIME: bool = true;
    fn assign(&self, t: i64, out: &mut Vec<TimeWindow>) {
        let start = window_start(t, self.offset, self.size);
        out.push(TimeWindow::new(start, start + self.size));
    }
}

/// Fixed-size, non-overlapping processing-time windows.
#[derive(Clone, Debug)]
pub struct TumblingProcessingTime {
    size: i64,
}

impl TumblingProcessingTime {
    /// # Panics
    /// If `size` is below one millisecond.
    pub fn of(size: Duration) -> Self {
        TumblingProcessingTime {
            size: positive_millis(size, "tumbling window size"),
        }
    }
}

impl WindowAssigner for TumblingProcessingTime {
    const EVENT_TIME: bool = false;
    fn assign(&self, t: i64, out: &mut Vec<TimeWindow>) {
        let start = window_start(t, 0, self.size);
        out.push(TimeWindow::new(start, start + self.size));
    }
}

/// Windows of `size` starting every `slide`; a record belongs to `size / slide` of them.
#[derive(Clone, Debug)]
pub struct SlidingEventTime {
    size: i64,
    slide: i64,
}

impl SlidingEventTime {
    /// # Panics
    /// If `size` or `slide` is below one millisecond.
    pub fn of(size: Duration, slide: Duration) -> Self {
        SlidingEventTime {
            size: positive_millis(size, "sliding window size"),
            slide: positive_millis(slide, "sliding window slide"),
        }
    }
}

impl WindowAssigner for SlidingEventTime {
    const EVENT_TIME: bool = true;
    fn assign(&self, t: i64, out: &mut Vec<TimeWindow>) {
        let last_start = window_start(t, 0, self.slide);
        let mut start = last_start;
        while start > t - self.size {
            out.push(TimeWindow::new(start, start + self.size));
            start -= self.slide;
        }
    }
}

/// Event-time sessions: a key's records closer than `gap` to each other share a window.
#[derive(Clone, Debug)]
pub struct Session {
    gap: i64,
}

impl Session {
    /// # Panics
    /// If `gap` is below one millisecond.
    pub fn with_gap(gap: Duration) -> Self {
        Session {
            gap: positive_millis(gap, "session gap"),
        }
    }
}

impl WindowAssigner for Session {
    const EVENT_TIME: bool = true;
    fn session_gap(&self) -> Option<i64> {
        Some(self.gap)
    }
    fn assign(&self, t: i64, out: &mut Vec<TimeWindow>) {
        out.push(TimeWindow::new(t, t + self.gap));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(a: &impl WindowAssigner, t: i64) -> Vec<TimeWindow> {
        let mut v = Vec::new();
        a.assign(t, &mut v);
        v.sort();
        v
    }

    #[test]
    fn tumbling_assigns_one_window_including_negative_times() {
        let a = TumblingEventTime::of(Duration::from_secs(10));
        assert_eq!(windows(&a, 0), vec![TimeWindow::new(0, 10_000)]);
        assert_eq!(windows(&a, 9_999), vec![TimeWindow::new(0, 10_000)]);
        assert_eq!(windows(&a, -1), vec![TimeWindow::new(-10_000, 0)]);
    }

    #[test]
    fn sliding_assigns_size_over_slide_windows() {
        let a = SlidingEventTime::of(Duration::from_secs(10), Duration::from_secs(2));
        let w = windows(&a, 11_000);
        assert_eq!(w.len(), 5);
        assert!(w.iter().all(|w| w.start <= 11_000 && 11_000 < w.end));
        assert_eq!(w[0], TimeWindow::new(2_000, 12_000));
        assert_eq!(w[4], TimeWindow::new(10_000, 20_000));
    }
}

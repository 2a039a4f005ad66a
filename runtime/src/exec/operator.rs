//! The push interface every operator in a chain implements. A chain is a stack of operators,
//! each owning its downstream; control events (watermarks, timer ticks, flushes, barriers,
//! end of input) travel down the same path as data, so an operator always sees them in
//! order with its records.

use crate::record::Record;
use crate::snapshot::{Barrier, TaskSnapshot};
use crate::time::{EventTime, ProcTime};

/// What travels down a chain besides records. Every operator handles an event the same
/// way: its own part first (fire windows on a watermark, add its state to the snapshot on a
/// barrier), then it passes the same event on to each of its outputs, after the records it
/// holds for them. Passing an event on is the only way control moves down a chain.
pub enum ControlEvent<'a> {
    /// The event-time clock advanced: no record with a smaller timestamp is expected. For a
    /// two-input operator, the combined watermark of both inputs.
    Watermark(EventTime),
    /// All inputs became idle (`true`) or one of them became active again (`false`).
    Idle(bool),
    /// The processing-time clock advanced.
    Tick(ProcTime),
    /// The task is about to wait for input: send anything buffered downstream.
    Flush,
    /// A snapshot barrier (for a two-input operator: arrived on every input): send anything
    /// buffered, add this operator's state to the snapshot, then pass the barrier on.
    /// Records pushed before it belong to the snapshot, records after it do not.
    Barrier(Barrier, &'a mut TaskSnapshot),
    /// End of input. Once, after the final watermark.
    Finish,
    /// Sent by each source subtask every [`LatencyMarker::EVERY`], behind the records it
    /// read before: a sink that receives it knows how long those records took to reach it.
    /// Operators pass it on at once (a window does not hold it), an exchange to one of
    /// its consumers in turn.
    LatencyMarker(LatencyMarker),
}

/// When a source sent a latency marker, in microseconds since the Unix epoch: wall-clock
/// time, so that it means the same in every process of a distributed job (whose clocks are
/// assumed synchronised, as NTP keeps them on a cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyMarker {
    pub sent_at_micros: i64,
}

impl LatencyMarker {
    /// How often each source subtask sends one.
    pub const EVERY: std::time::Duration = std::time::Duration::from_millis(100);

    pub fn now() -> Self {
        LatencyMarker {
            sent_at_micros: wall_micros(),
        }
    }

    /// Time since it was sent; zero if the clock went back.
    pub fn age(self) -> std::time::Duration {
        let micros = wall_micros().saturating_sub(self.sent_at_micros);
        std::time::Duration::from_micros(u64::try_from(micros).unwrap_or(0))
    }
}

fn wall_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl ControlEvent<'_> {
    /// The same event again, for one more output.
    pub fn reborrow(&mut self) -> ControlEvent<'_> {
        match self {
            ControlEvent::Watermark(watermark) => ControlEvent::Watermark(*watermark),
            ControlEvent::Idle(idle) => ControlEvent::Idle(*idle),
            ControlEvent::Tick(now) => ControlEvent::Tick(*now),
            ControlEvent::Flush => ControlEvent::Flush,
            ControlEvent::Barrier(barrier, snapshot) => ControlEvent::Barrier(*barrier, snapshot),
            ControlEvent::Finish => ControlEvent::Finish,
            ControlEvent::LatencyMarker(marker) => ControlEvent::LatencyMarker(*marker),
        }
    }
}

/// Receives a stream of `T` in batches.
pub trait Operator<T> {
    /// Processes every record of `batch`, leaving it empty so the caller can reuse its
    /// allocation.
    fn push(&mut self, batch: &mut Vec<Record<T>>);

    /// Handles a control event, then passes it on to every output.
    fn control(&mut self, event: ControlEvent<'_>);
}

/// An operator with two inputs of different types (connect, joins).
pub trait TwoInputOperator<A, B> {
    fn push_left(&mut self, batch: &mut Vec<Record<A>>);
    fn push_right(&mut self, batch: &mut Vec<Record<B>>);
    /// Handles a control event, then passes it on to every output.
    fn control(&mut self, event: ControlEvent<'_>);
}

/// Hands every batch to several downstream operators; all but the last get a copy.
pub(crate) struct Tee<T> {
    outputs: Vec<Box<dyn Operator<T>>>,
    copy: Vec<Record<T>>,
}

impl<T> Tee<T> {
    pub(crate) fn new(outputs: Vec<Box<dyn Operator<T>>>) -> Self {
        Tee {
            outputs,
            copy: Vec::new(),
        }
    }
}

impl<T: Clone> Operator<T> for Tee<T> {
    fn push(&mut self, batch: &mut Vec<Record<T>>) {
        let Some((last, rest)) = self.outputs.split_last_mut() else {
            batch.clear();
            return;
        };
        for out in rest {
            self.copy.extend_from_slice(batch);
            out.push(&mut self.copy);
        }
        last.push(batch);
    }
    fn control(&mut self, mut event: ControlEvent<'_>) {
        for out in &mut self.outputs {
            out.control(event.reborrow());
        }
    }
}

/// The output of a port nobody consumes.
pub(crate) struct Discard;

impl<T> Operator<T> for Discard {
    fn push(&mut self, batch: &mut Vec<Record<T>>) {
        batch.clear();
    }
    fn control(&mut self, _: ControlEvent<'_>) {}
}

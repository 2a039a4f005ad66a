//! The push interface every operator in a chain implements. A chain is a stack of operators,
//! each owning its downstream; control events (watermarks, timer ticks, flushes, end of input)
//! travel down the same path as data, so an operator always sees them in order with its
//! records.

use crate::record::Record;
use crate::snapshot::{Barrier, TaskSnapshot};
use crate::time::{EventTime, ProcTime};

/// Receives a stream of `T` in batches.
pub trait Operator<T> {
    /// Processes every record of `batch`, leaving it empty so the caller can reuse its
    /// allocation.
    fn push(&mut self, batch: &mut Vec<Record<T>>);

    /// The event-time clock advanced: no record with a smaller timestamp is expected.
    fn watermark(&mut self, watermark: EventTime);

    /// All inputs became idle (`true`) or one of them became active again (`false`).
    fn idle(&mut self, idle: bool);

    /// The processing-time clock advanced.
    fn tick(&mut self, now: ProcTime);

    /// The task is about to wait for input: send anything buffered downstream.
    fn flush(&mut self);

    /// A snapshot barrier: send anything buffered, add this operator's state to
    /// `snapshot`, then pass the barrier on. Records pushed before it belong to the snapshot,
    /// records after it do not.
    fn barrier(&mut self, barrier: Barrier, snapshot: &mut TaskSnapshot);

    /// End of input. Called once, after the final watermark.
    fn finish(&mut self);
}

/// An operator with two inputs of different types (connect, joins).
pub trait TwoInputOperator<A, B> {
    fn push_left(&mut self, batch: &mut Vec<Record<A>>);
    fn push_right(&mut self, batch: &mut Vec<Record<B>>);
    /// The combined watermark of both inputs advanced.
    fn watermark(&mut self, watermark: EventTime);
    fn idle(&mut self, idle: bool);
    fn tick(&mut self, now: ProcTime);
    fn flush(&mut self);
    /// A barrier has arrived on every input.
    fn barrier(&mut self, barrier: Barrier, snapshot: &mut TaskSnapshot);
    fn finish(&mut self);
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
    fn watermark(&mut self, watermark: EventTime) {
        self.outputs.iter_mut().for_each(|o| o.watermark(watermark));
    }
    fn idle(&mut self, idle: bool) {
        self.outputs.iter_mut().for_each(|o| o.idle(idle));
    }
    fn tick(&mut self, now: ProcTime) {
        self.outputs.iter_mut().for_each(|o| o.tick(now));
    }
    fn flush(&mut self) {
        self.outputs.iter_mut().for_each(|o| o.flush());
    }
    fn barrier(&mut self, barrier: Barrier, snapshot: &mut TaskSnapshot) {
        self.outputs
            .iter_mut()
            .for_each(|o| o.barrier(barrier, snapshot));
    }
    fn finish(&mut self) {
        self.outputs.iter_mut().for_each(|o| o.finish());
    }
}

/// The output of a port nobody consumes.
pub(crate) struct Discard;

impl<T> Operator<T> for Discard {
    fn push(&mut self, batch: &mut Vec<Record<T>>) {
        batch.clear();
    }
    fn watermark(&mut self, _: EventTime) {}
    fn idle(&mut self, _: bool) {}
    fn tick(&mut self, _: ProcTime) {}
    fn flush(&mut self) {}
    fn barrier(&mut self, _: Barrier, _: &mut TaskSnapshot) {}
    fn finish(&mut self) {}
}

//! Stateless record-at-a-time operators and the sink adapter.

use super::Emitter;
use crate::exec::{BuildCx, ControlEvent, LatencyMarker, Operator};
use crate::record::{Either, Record};
use crate::sink::SinkWriter;
use std::collections::VecDeque;

pub(crate) struct MapOp<I, O, F> {
    pub(crate) f: F,
    pub(crate) buf: Vec<Record<O>>,
    pub(crate) out: Box<dyn Operator<O>>,
    pub(crate) _in: std::marker::PhantomData<fn(I)>,
}

impl<I, O, F: Fn(I) -> O> Operator<I> for MapOp<I, O, F> {
    fn push(&mut self, batch: &mut Vec<Record<I>>) {
        let f = &self.f;
        self.buf
            .extend(batch.drain(..).map(|r| Record::new(r.ts, f(r.value))));
        self.out.push(&mut self.buf);
    }
    fn control(&mut self, event: ControlEvent<'_>) {
        self.out.control(event);
    }
}

pub(crate) struct FilterOp<T, F> {
    pub(crate) f: F,
    pub(crate) out: Box<dyn Operator<T>>,
}

impl<T, F: Fn(&T) -> bool> Operator<T> for FilterOp<T, F> {
    fn push(&mut self, batch: &mut Vec<Record<T>>) {
        batch.retain(|r| (self.f)(&r.value));
        if !batch.is_empty() {
            self.out.push(batch);
        }
    }
    fn control(&mut self, event: ControlEvent<'_>) {
        self.out.control(event);
    }
}

pub(crate) struct FlatMapOp<I, O, F> {
    pub(crate) f: F,
    pub(crate) buf: Vec<Record<O>>,
    pub(crate) out: Box<dyn Operator<O>>,
    pub(crate) _in: std::marker::PhantomData<fn(I)>,
}

impl<I, O, It: IntoIterator<Item = O>, F: Fn(I) -> It> Operator<I> for FlatMapOp<I, O, F> {
    fn push(&mut self, batch: &mut Vec<Record<I>>) {
        for r in batch.drain(..) {
            let ts = r.ts;
            self.buf
                .extend((self.f)(r.value).into_iter().map(|v| Record::new(ts, v)));
        }
        if !self.buf.is_empty() {
            self.out.push(&mut self.buf);
        }
    }
    fn control(&mut self, event: ControlEvent<'_>) {
        self.out.control(event);
    }
}

pub(crate) struct FilterMapOp<I, O, F> {
    pub(crate) f: F,
    pub(crate) buf: Vec<Record<O>>,
    pub(crate) out: Box<dyn Operator<O>>,
    pub(crate) _in: std::marker::PhantomData<fn(I)>,
}

impl<I, O, F: Fn(I) -> Option<O>> Operator<I> for FilterMapOp<I, O, F> {
    fn push(&mut self, batch: &mut Vec<Record<I>>) {
        for r in batch.drain(..) {
            if let Some(v) = (self.f)(r.value) {
                self.buf.push(Record::new(r.ts, v));
            }
        }
        if !self.buf.is_empty() {
            self.out.push(&mut self.buf);
        }
    }
    fn control(&mut self, event: ControlEvent<'_>) {
        self.out.control(event);
    }
}

/// Routes each record to one of two outputs of different types (or drops it), moving it
/// rather than copying it to both as two filters would.
pub(crate) struct SplitOp<I, L, R, F> {
    pub(crate) f: F,
    pub(crate) left: Emitter<L>,
    pub(crate) right: Emitter<R>,
    pub(crate) _in: std::marker::PhantomData<fn(I)>,
}

impl<I, L, R, F: Fn(I) -> Option<Either<L, R>>> Operator<I> for SplitOp<I, L, R, F> {
    fn push(&mut self, batch: &mut Vec<Record<I>>) {
        for r in batch.drain(..) {
            match (self.f)(r.value) {
                Some(Either::Left(l)) => self.left.buf.push(Record::new(r.ts, l)),
                Some(Either::Right(v)) => self.right.buf.push(Record::new(r.ts, v)),
                None => {}
            }
        }
        self.left.send();
        self.right.send();
    }
    fn control(&mut self, mut event: ControlEvent<'_>) {
        self.left.forward(event.reborrow());
        self.right.forward(event);
    }
}

pub(crate) struct SinkOp<T> {
    writer: Box<dyn SinkWriter<T>>,
    cx: BuildCx,
    failed: bool,
    /// Latency markers whose records are written but not yet visible, for a sink whose
    /// output a checkpoint commits: those that arrived since the last barrier, and those
    /// behind a barrier, with its checkpoint, whose commit they wait for.
    markers_before_barrier: Vec<LatencyMarker>,
    markers_awaiting_commit: VecDeque<(u64, LatencyMarker)>,
}

/// Markers a sink holds at most while its output waits for a commit: without checkpoints,
/// or while they keep failing, none is committed, and the rest are not kept. A minute's
/// worth from ten sources.
const MAX_HELD_MARKERS: usize = 6_000;

impl<T> SinkOp<T> {
    pub(crate) fn new(writer: Box<dyn SinkWriter<T>>, cx: BuildCx) -> Self {
        SinkOp {
            writer,
            cx,
            failed: false,
            markers_before_barrier: Vec::new(),
            markers_awaiting_commit: VecDeque::new(),
        }
    }

    /// Takes the latency of the markers whose checkpoint has committed since.
    fn observe_commits(&mut self) {
        let committed = self.cx.control.committed();
        while let Some(&(checkpoint, marker)) = self.markers_awaiting_commit.front() {
            if checkpoint > committed {
                break;
            }
            self.cx.metrics.record_end_to_end(marker.age());
            self.markers_awaiting_commit.pop_front();
        }
    }

    fn check(&mut self, r: Result<(), crate::error::Error>) {
        if let Err(e) = r {
            self.failed = true;
            self.cx.failure.set(e);
        }
    }
}

impl<T> Operator<T> for SinkOp<T> {
    fn push(&mut self, batch: &mut Vec<Record<T>>) {
        if !self.failed {
            self.cx.metrics.add_sink_records(batch.len());
            let r = self.writer.write(batch);
            self.check(r);
        }
        batch.clear();
    }
    fn control(&mut self, event: ControlEvent<'_>) {
        if self.failed {
            return;
        }
        self.observe_commits();
        match event {
            ControlEvent::LatencyMarker(marker) => {
                if !self.writer.visible_on_commit() {
                    self.cx.metrics.record_end_to_end(marker.age());
                } else if self.markers_before_barrier.len() + self.markers_awaiting_commit.len()
                    < MAX_HELD_MARKERS
                {
                    self.markers_before_barrier.push(marker);
                }
            }
            ControlEvent::Barrier(barrier, snapshot) => {
                self.markers_awaiting_commit.extend(
                    self.markers_before_barrier
                        .drain(..)
                        .map(|m| (barrier.checkpoint, m)),
                );
                match self
                    .writer
                    .pre_commit(barrier.checkpoint, self.cx.control.committed())
                {
                    Ok(transactions) => {
                        if !transactions.is_empty() {
                            snapshot
                                .operator(&self.cx.uid, self.cx.subtask)
                                .transactions = transactions;
                        }
                    }
                    Err(e) => self.check(Err(e)),
                }
            }
            ControlEvent::Finish => {
                let r = self.writer.finish();
                self.check(r);
            }
            ControlEvent::Watermark(_)
            | ControlEvent::Idle(_)
            | ControlEvent::Tick(_)
            | ControlEvent::Flush => {}
        }
    }
}

//! Windows over a whole (non-keyed) stream, computed in two phases: every parallel subtask
//! pre-aggregates its own records per window, and a single global subtask merges the
//! partial accumulators when the watermark closes the window. Only one small record per
//! window and subtask crosses to the global phase, so the stream itself stays parallel.

use super::assigners::{TimeWindow, WindowAssigner};
use super::functions::AggregateFunction;
use super::window::WindowFn;
use super::{Emitter, Restorable, Snapshotted};
use crate::error::StateError;
use crate::exec::{BuildCx, ControlEvent, Operator};
use crate::record::Record;
use crate::snapshot::{decode, encode, OperatorSnapshot};
use crate::time::EventTime;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) struct LocalWindowAllOp<I, A: AggregateFunction<I>, W> {
    pub(crate) assigner: W,
    pub(crate) agg: Arc<A>,
    pub(crate) panes: BTreeMap<TimeWindow, A::Acc>,
    pub(crate) watermark: i64,
    pub(crate) scratch: Vec<TimeWindow>,
    pub(crate) emit: Emitter<(TimeWindow, A::Acc)>,
    pub(crate) cx: BuildCx,
}

impl<I, A: AggregateFunction<I>, W: WindowAssigner> Operator<I> for LocalWindowAllOp<I, A, W> {
    fn push(&mut self, batch: &mut Vec<Record<I>>) {
        for r in batch.drain(..) {
            self.scratch.clear();
            self.assigner.assign(r.ts.0, &mut self.scratch);
            let mut accepted = false;
            for w in &self.scratch {
                if w.max_timestamp() <= self.watermark {
                    continue;
                }
                accepted = true;
                let acc = self.panes.entry(*w).or_insert_with(|| self.agg.create());
                self.agg.add(acc, &r.value);
            }
            if !accepted {
                self.cx.metrics.add_late_records(1);
            }
        }
    }

    fn control(&mut self, mut event: ControlEvent<'_>) {
        match &mut event {
            ControlEvent::Watermark(watermark) => {
                self.watermark = watermark.0;
                while let Some(entry) = self.panes.first_entry() {
                    if entry.key().max_timestamp() > self.watermark {
                        break;
                    }
                    let (w, acc) = entry.remove_entry();
                    self.emit
                        .buf
                        .push(Record::new(EventTime(w.max_timestamp()), (w, acc)));
                    self.emit.maybe_send();
                }
            }
            ControlEvent::Barrier(_, snapshot) => {
                self.emit.send();
                super::snapshot(&self.cx, self, snapshot);
            }
            _ => {}
        }
        self.emit.forward(event);
    }
}

pub(crate) struct GlobalWindowAllOp<I, A: AggregateFunction<I>, O> {
    pub(crate) agg: Arc<A>,
    pub(crate) window_fn: WindowFn<(), A::Out, O>,
    pub(crate) panes: BTreeMap<TimeWindow, A::Acc>,
    pub(crate) emit: Emitter<O>,
    pub(crate) cx: BuildCx,
    pub(crate) _in: std::marker::PhantomData<fn(I)>,
}

/// Both phases keep partial accumulators per window: non-keyed state, one item per window.
/// Any subtask can take any item after a rescale, since partials merge.
fn snapshot_panes<Acc: serde::Serialize>(
    panes: &BTreeMap<TimeWindow, Acc>,
    op: &mut OperatorSnapshot,
) -> Result<(), StateError> {
    op.items = panes
        .iter()
        .map(|pane| encode(&pane))
        .collect::<Result<_, _>>()?;
    Ok(())
}

fn restore_pane<I, A: AggregateFunction<I>>(
    agg: &A,
    panes: &mut BTreeMap<TimeWindow, A::Acc>,
    bytes: &[u8],
) -> Result<(), StateError> {
    let (w, acc): (TimeWindow, A::Acc) = decode(bytes)?;
    match panes.get_mut(&w) {
        Some(existing) => agg.merge(existing, acc),
        None => {
            panes.insert(w, acc);
        }
    }
    Ok(())
}

impl<I, A: AggregateFunction<I>, W: WindowAssigner> Snapshotted for LocalWindowAllOp<I, A, W> {
    fn snapshot(&self, op: &mut OperatorSnapshot) -> Result<(), StateError> {
        snapshot_panes(&self.panes, op)
    }
}

impl<I, A: AggregateFunction<I>, W: WindowAssigner> Restorable for LocalWindowAllOp<I, A, W> {
    fn restore_item(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        restore_pane(self.agg.as_ref(), &mut self.panes, bytes)
    }
}

impl<I, A: AggregateFunction<I>, O> Snapshotted for GlobalWindowAllOp<I, A, O> {
    fn snapshot(&self, op: &mut OperatorSnapshot) -> Result<(), StateError> {
        snapshot_panes(&self.panes, op)
    }
}

impl<I, A: AggregateFunction<I>, O> Restorable for GlobalWindowAllOp<I, A, O> {
    fn restore_item(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        restore_pane(self.agg.as_ref(), &mut self.panes, bytes)
    }
}

impl<I, A: AggregateFunction<I>, O> Operator<(TimeWindow, A::Acc)> for GlobalWindowAllOp<I, A, O> {
    fn push(&mut self, batch: &mut Vec<Record<(TimeWindow, A::Acc)>>) {
        for r in batch.drain(..) {
            let (w, partial) = r.value;
            match self.panes.get_mut(&w) {
                Some(acc) => self.agg.merge(acc, partial),
                None => {
                    self.panes.insert(w, partial);
                }
            }
        }
    }

    fn control(&mut self, mut event: ControlEvent<'_>) {
        match &mut event {
            ControlEvent::Watermark(watermark) => {
                while let Some(entry) = self.panes.first_entry() {
                    if entry.key().max_timestamp() > watermark.0 {
                        break;
                    }
                    let (w, acc) = entry.remove_entry();
                    let out = (self.window_fn)(&(), w, self.agg.result(&acc));
                    self.emit
                        .buf
                        .push(Record::new(EventTime(w.max_timestamp()), out));
                    self.emit.maybe_send();
                }
            }
            ControlEvent::Barrier(_, snapshot) => {
                self.emit.send();
                super::snapshot(&self.cx, self, snapshot);
            }
            _ => {}
        }
        self.emit.forward(event);
    }
}

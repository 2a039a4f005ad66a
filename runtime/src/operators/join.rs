//! Joins of two keyed streams: within the same window, or within a time interval.

use super::assigners::{TimeWindow, WindowAssigner};
use super::functions::Timer;
use super::keyed::{KeyFn, KeyedCore};
use super::panes::Panes;
use super::{guarded, Emitter, Restorable};
use crate::error::StateError;
use crate::exec::{BuildCx, ControlEvent, TwoInputOperator};
use crate::record::{Key, Record};
use crate::snapshot::RestoredNative;
use crate::state::{StateDescriptor, StateValue, ValueState};
use crate::time::EventTime;
use std::sync::Arc;

pub(crate) type JoinFn<A, B, O> = Arc<dyn Fn(&A, &B) -> O + Send + Sync>;

/// One key's records in one window.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Sides<A, B> {
    left: Vec<A>,
    right: Vec<B>,
}

impl<A, B> Sides<A, B> {
    fn new() -> Self {
        Sides {
            left: Vec::new(),
            right: Vec::new(),
        }
    }
}

/// Pairs every left and right record of the same key that fall in the same window; the
/// pairs are emitted when the watermark closes the window. Records of closed windows are
/// counted as late.
pub(crate) struct WindowJoinOp<K, A, B, O, W> {
    pub(crate) left_key: KeyFn<A, K>,
    pub(crate) right_key: KeyFn<B, K>,
    pub(crate) assigner: W,
    pub(crate) f: JoinFn<A, B, O>,
    pub(crate) panes: Panes<K, Sides<A, B>>,
    pub(crate) watermark: i64,
    pub(crate) scratch: Vec<TimeWindow>,
    pub(crate) emit: Emitter<O>,
    pub(crate) cx: BuildCx,
}

impl<K: Key, A: StateValue, B: StateValue, O, W: WindowAssigner> WindowJoinOp<K, A, B, O, W> {
    pub(crate) fn new(
        left_key: KeyFn<A, K>,
        right_key: KeyFn<B, K>,
        assigner: W,
        f: JoinFn<A, B, O>,
        emit: Emitter<O>,
        cx: BuildCx,
    ) -> Result<Self, crate::Error> {
        Ok(WindowJoinOp {
            left_key,
            right_key,
            assigner,
            f,
            panes: Panes::new(&cx)?,
            watermark: i64::MIN,
            scratch: Vec::new(),
            emit,
            cx,
        })
    }

    /// Adds a record to each open window it belongs to: copies for all but the last, which
    /// takes the record itself.
    fn insert<V: Clone>(
        &mut self,
        ts: i64,
        key: K,
        value: V,
        side: fn(&mut Sides<A, B>) -> &mut Vec<V>,
    ) {
        self.scratch.clear();
        self.assigner.assign(ts, &mut self.scratch);
        let watermark = self.watermark;
        self.scratch.retain(|w| w.max_timestamp() > watermark);
        let Some((last, rest)) = self.scratch.split_last() else {
            self.cx.metrics.add_late_records(1);
            return;
        };
        for w in rest {
            self.panes
                .update(*w, &key, Sides::new, |s, _| side(s).push(value.clone()));
        }
        self.panes
            .update(*last, &key, Sides::new, |s, _| side(s).push(value));
    }

    /// Fails the task with the first error the state backend met.
    fn check_state(&mut self) {
        if let Some(e) = self.panes.take_error() {
            self.cx.fail(format!("window join state: {e}"));
        }
    }
}

impl<K: Key, A: StateValue, B: StateValue, O, W: WindowAssigner> Restorable
    for WindowJoinOp<K, A, B, O, W>
{
    fn restore_key_group(&mut self, _: u32, bytes: &[u8]) -> Result<(), StateError> {
        self.panes.restore_key_group(bytes)
    }

    fn restore_native(&mut self, native: &RestoredNative) -> Result<(), StateError> {
        self.panes.restore_native(native)
    }

    fn finish_restore(&mut self) -> Result<(), StateError> {
        self.panes.finish_restore()
    }
}

impl<K: Key, A: StateValue, B: StateValue, O, W: WindowAssigner> TwoInputOperator<A, B>
    for WindowJoinOp<K, A, B, O, W>
{
    fn push_left(&mut self, batch: &mut Vec<Record<A>>) {
        for r in batch.drain(..) {
            let key = (self.left_key)(&r.value);
            self.insert(r.ts.0, key, r.value, |s| &mut s.left);
        }
        self.check_state();
    }

    fn push_right(&mut self, batch: &mut Vec<Record<B>>) {
        for r in batch.drain(..) {
            let key = (self.right_key)(&r.value);
            self.insert(r.ts.0, key, r.value, |s| &mut s.right);
        }
        self.check_state();
    }

    fn control(&mut self, mut event: ControlEvent<'_>) {
        match &mut event {
            ControlEvent::Watermark(watermark) => {
                self.watermark = watermark.0;
                let (f, emit, cx) = (&self.f, &mut self.emit, &self.cx);
                let mut failed = false;
                self.panes.fire(watermark.0, 0, |w, key, sides| {
                    if failed {
                        return;
                    }
                    let ts = EventTime(w.max_timestamp());
                    // Guarded per window and key: the callback cannot keep the key it is lent.
                    let done = guarded::<()>(|_| {
                        for a in &sides.left {
                            for b in &sides.right {
                                emit.buf.push(Record::new(ts, f(a, b)));
                                emit.maybe_send();
                            }
                        }
                        None
                    });
                    if let Err((why, _)) = done {
                        cx.fail_at_key(Some(key), why);
                        failed = true;
                    }
                });
                self.check_state();
            }
            ControlEvent::Barrier(barrier, snapshot) => {
                self.emit.send();
                let part = snapshot.operator(&self.cx.uid, self.cx.subtask);
                if let Err(e) = self.panes.snapshot(part, barrier.kind) {
                    self.cx.fail(format!("snapshot: {e}"));
                }
            }
            _ => {}
        }
        self.emit.forward(event);
    }
}

/// One side's buffered records of a key: `(timestamp, record)`.
type Buffer<T> = Vec<(i64, T)>;

/// The keyed states of an interval join: each side's buffer per key.
pub(crate) const INTERVAL_LEFT: &str = "interval-join-left";
pub(crate) const INTERVAL_RIGHT: &str = "interval-join-right";

/// Pairs a left record at `ta` with every right record of the same key at `tb` where
/// `ta - before <= tb <= ta + after`, as soon as both have arrived. Each side's records
/// are keyed state (so they live on the run's backend); a timer per record removes it once
/// the watermark shows no record it could match can still arrive. Records older than the
/// watermark are counted as late.
pub(crate) struct IntervalJoinOp<K, A, B, O> {
    left_key: KeyFn<A, K>,
    right_key: KeyFn<B, K>,
    before: i64,
    after: i64,
    f: JoinFn<A, B, O>,
    left: ValueState<Buffer<A>>,
    right: ValueState<Buffer<B>>,
    core: KeyedCore<K, O>,
}

impl<K: Key, A: StateValue, B: StateValue, O> IntervalJoinOp<K, A, B, O> {
    pub(crate) fn new(
        left_key: KeyFn<A, K>,
        right_key: KeyFn<B, K>,
        (before, after): (i64, i64),
        f: JoinFn<A, B, O>,
        emit: Emitter<O>,
        cx: &BuildCx,
    ) -> Result<Self, crate::Error> {
        let mut states = cx.keyed_state()?;
        let left = states
            .register_value::<K, Buffer<A>>(StateDescriptor::new(INTERVAL_LEFT))
            .map_err(|e| cx.state_error(e))?;
        let right = states
            .register_value::<K, Buffer<B>>(StateDescriptor::new(INTERVAL_RIGHT))
            .map_err(|e| cx.state_error(e))?;
        Ok(IntervalJoinOp {
            left_key,
            right_key,
            before,
            after,
            f,
            left,
            right,
            core: KeyedCore::new(states, cx, emit),
        })
    }

    /// Counts and drops the records older than the watermark.
    fn drop_late<T>(&self, batch: &mut Vec<Record<T>>) {
        let (watermark, before) = (self.core.watermark.0, batch.len());
        batch.retain(|r| r.ts.0 >= watermark);
        if batch.len() < before {
            self.core.cx.metrics.add_late_records(before - batch.len());
        }
    }
}

impl<K: Key, A: StateValue, B: StateValue, O> Restorable for IntervalJoinOp<K, A, B, O> {
    fn restore_key_group(&mut self, kg: u32, bytes: &[u8]) -> Result<(), StateError> {
        self.core.restore_key_group(kg, bytes)
    }

    fn restore_native(&mut self, native: &RestoredNative) -> Result<(), StateError> {
        self.core.restore_native(native)
    }

    fn finish_restore(&mut self) -> Result<(), StateError> {
        self.core.finish_restore()
    }
}

impl<K: Key, A: StateValue, B: StateValue, O> TwoInputOperator<A, B>
    for IntervalJoinOp<K, A, B, O>
{
    fn push_left(&mut self, batch: &mut Vec<Record<A>>) {
        self.drop_late(batch);
        let (f, right, left) = (&self.f, self.right, self.left);
        let (before, after) = (self.before, self.after);
        self.core.process_batch(batch, &self.left_key, |a, ctx| {
            let ta = ctx.timestamp().0;
            let (lo, hi) = (ta.saturating_sub(before), ta.saturating_add(after));
            if let Some(rights) = ctx.value(right).get() {
                for (tb, b) in rights.iter().filter(|(tb, _)| lo <= *tb && *tb <= hi) {
                    ctx.emit_at(EventTime(ta.max(*tb)), f(&a, b));
                }
            }
            ctx.value(left)
                .update(|l| l.get_or_insert_with(Vec::new).push((ta, a)));
            // Removed once the watermark passes ta + after: no right record can match then.
            ctx.register_event_timer(EventTime(ta.saturating_add(after).saturating_add(1)));
        });
    }

    fn push_right(&mut self, batch: &mut Vec<Record<B>>) {
        self.drop_late(batch);
        let (f, right, left) = (&self.f, self.right, self.left);
        let (before, after) = (self.before, self.after);
        self.core.process_batch(batch, &self.right_key, |b, ctx| {
            let tb = ctx.timestamp().0;
            if let Some(lefts) = ctx.value(left).get() {
                for (ta, a) in lefts.iter().filter(|(ta, _)| {
                    ta.saturating_sub(before) <= tb && tb <= ta.saturating_add(after)
                }) {
                    ctx.emit_at(EventTime(tb.max(*ta)), f(a, &b));
                }
            }
            ctx.value(right)
                .update(|v| v.get_or_insert_with(Vec::new).push((tb, b)));
            ctx.register_event_timer(EventTime(tb.saturating_add(before).saturating_add(1)));
        });
    }

    fn control(&mut self, event: ControlEvent<'_>) {
        let (left, right) = (self.left, self.right);
        let (before, after) = (self.before, self.after);
        self.core.control(event, |timer, ctx| {
            // Only event-time timers: each removes the records no later record can match.
            if let Timer::Event(_) = timer {
                // Records still to come have timestamps >= wm. A left record at `ta` can
                // match them while `ta + after >= wm`; a right record at `tb` while
                // `tb + before >= wm`.
                let wm = ctx.watermark().0;
                ctx.value(left)
                    .update(|l| trim(l, |ta| ta.saturating_add(after) >= wm));
                ctx.value(right)
                    .update(|r| trim(r, |tb| tb.saturating_add(before) >= wm));
            }
        });
    }
}

/// Keeps the records whose timestamp passes `keep`; an empty buffer is removed.
fn trim<T>(buffer: &mut Option<Buffer<T>>, keep: impl Fn(i64) -> bool) {
    if let Some(records) = buffer {
        records.retain(|(t, _)| keep(*t));
        if records.is_empty() {
            *buffer = None;
        }
    }
}

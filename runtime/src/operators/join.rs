//! Joins of two keyed streams: within the same window, or within a time interval.

use super::keyed::KeyFn;
use super::panes::Panes;
use super::{Emitter, Restorable, Snapshotted};
use crate::api::{Key, Record, TimeWindow, WindowAssigner};
use crate::exec::{basic_control, BuildCx, TwoInputOperator};
use crate::snapshot::{
    decode, encode_by_key_group, Barrier, OperatorSnapshot, RestoredNative, TaskSnapshot,
};
use crate::state::StateValue;
use crate::time::{EventTime, ProcTime};
use rustc_hash::FxHashMap;
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
    fn restore_key_group(&mut self, _: u32, bytes: &[u8]) -> Result<(), String> {
        self.panes.restore_key_group(bytes)
    }

    fn restore_native(&mut self, native: &RestoredNative) -> Result<(), String> {
        self.panes.restore_native(native)
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

    fn watermark(&mut self, watermark: EventTime) {
        self.watermark = watermark.0;
        let (f, emit) = (&self.f, &mut self.emit);
        self.panes.fire(watermark.0, 0, |w, _, sides| {
            let ts = EventTime(w.max_timestamp());
            for a in &sides.left {
                for b in &sides.right {
                    emit.buf.push(Record::new(ts, f(a, b)));
                    emit.maybe_send();
                }
            }
        });
        self.check_state();
        self.emit.send();
        self.emit.out.watermark(watermark);
    }

    fn barrier(&mut self, barrier: Barrier, snapshot: &mut TaskSnapshot) {
        self.emit.send();
        let part = snapshot.operator(&self.cx.uid, self.cx.subtask);
        if let Err(e) = self.panes.snapshot(part, barrier.kind) {
            self.cx.fail(format!("snapshot: {e}"));
        }
        self.emit.out.barrier(barrier, snapshot);
    }

    basic_control!();
}

/// Pairs a left record at `ta` with every right record of the same key at `tb` where
/// `ta - before <= tb <= ta + after`, as soon as both have arrived. Buffers are trimmed by
/// the watermark; records older than the watermark are counted as late.
pub(crate) struct IntervalJoinOp<K, A, B, O> {
    pub(crate) left_key: KeyFn<A, K>,
    pub(crate) right_key: KeyFn<B, K>,
    pub(crate) before: i64,
    pub(crate) after: i64,
    pub(crate) f: JoinFn<A, B, O>,
    pub(crate) left: FxHashMap<K, Vec<Record<A>>>,
    pub(crate) right: FxHashMap<K, Vec<Record<B>>>,
    pub(crate) watermark: i64,
    pub(crate) emit: Emitter<O>,
    pub(crate) cx: BuildCx,
}

/// A key's buffered records, in snapshots: `(key, [(ts, left)], [(ts, right)])`.
type IntervalEntry<K, A, B> = (K, Vec<(i64, A)>, Vec<(i64, B)>);

impl<K: Key, A: StateValue, B: StateValue, O> Snapshotted for IntervalJoinOp<K, A, B, O> {
    fn snapshot(&self, op: &mut OperatorSnapshot) -> Result<(), String> {
        let empty_a = Vec::new();
        let empty_b = Vec::new();
        let keys = self
            .left
            .keys()
            .chain(self.right.keys().filter(|k| !self.left.contains_key(*k)));
        let entries = keys.map(|k| {
            let l: Vec<(i64, &A)> = self
                .left
                .get(k)
                .unwrap_or(&empty_a)
                .iter()
                .map(|r| (r.ts.0, &r.value))
                .collect();
            let r: Vec<(i64, &B)> = self
                .right
                .get(k)
                .unwrap_or(&empty_b)
                .iter()
                .map(|r| (r.ts.0, &r.value))
                .collect();
            (k, (k, l, r))
        });
        op.key_groups = encode_by_key_group(self.cx.assignment.max_parallelism(), entries)?;
        Ok(())
    }
}

impl<K: Key, A: StateValue, B: StateValue, O> Restorable for IntervalJoinOp<K, A, B, O> {
    fn restore_key_group(&mut self, _: u32, bytes: &[u8]) -> Result<(), String> {
        let entries: Vec<IntervalEntry<K, A, B>> = decode(bytes)?;
        for (key, left, right) in entries {
            if !left.is_empty() {
                let l = self.left.entry(key.clone()).or_default();
                l.extend(
                    left.into_iter()
                        .map(|(ts, v)| Record::new(EventTime(ts), v)),
                );
            }
            if !right.is_empty() {
                let r = self.right.entry(key).or_default();
                r.extend(
                    right
                        .into_iter()
                        .map(|(ts, v)| Record::new(EventTime(ts), v)),
                );
            }
        }
        Ok(())
    }
}

impl<K: Key, A: StateValue, B: StateValue, O> TwoInputOperator<A, B>
    for IntervalJoinOp<K, A, B, O>
{
    fn push_left(&mut self, batch: &mut Vec<Record<A>>) {
        for r in batch.drain(..) {
            if r.ts.0 < self.watermark {
                self.cx.metrics.add_late_records(1);
                continue;
            }
            let key = (self.left_key)(&r.value);
            let (lo, hi) = (
                r.ts.0.saturating_sub(self.before),
                r.ts.0.saturating_add(self.after),
            );
            if let Some(rights) = self.right.get(&key) {
                for b in rights.iter().filter(|b| lo <= b.ts.0 && b.ts.0 <= hi) {
                    let ts = EventTime(r.ts.0.max(b.ts.0));
                    self.emit
                        .buf
                        .push(Record::new(ts, (self.f)(&r.value, &b.value)));
                    self.emit.maybe_send();
                }
            }
            self.left.entry(key).or_default().push(r);
        }
        self.emit.send();
    }

    fn push_right(&mut self, batch: &mut Vec<Record<B>>) {
        for r in batch.drain(..) {
            if r.ts.0 < self.watermark {
                self.cx.metrics.add_late_records(1);
                continue;
            }
            let key = (self.right_key)(&r.value);
            if let Some(lefts) = self.left.get(&key) {
                for a in lefts.iter().filter(|a| {
                    a.ts.0.saturating_sub(self.before) <= r.ts.0
                        && r.ts.0 <= a.ts.0.saturating_add(self.after)
                }) {
                    let ts = EventTime(r.ts.0.max(a.ts.0));
                    self.emit
                        .buf
                        .push(Record::new(ts, (self.f)(&a.value, &r.value)));
                    self.emit.maybe_send();
                }
            }
            self.right.entry(key).or_default().push(r);
        }
        self.emit.send();
    }

    fn watermark(&mut self, watermark: EventTime) {
        self.watermark = watermark.0;
        let wm = watermark.0;
        // Records still to come have timestamps >= wm. A left record at `ta` can match them
        // while `ta + after >= wm`; a right record at `tb` while `tb + before >= wm`.
        let (before, after) = (self.before, self.after);
        self.left.retain(|_, v| {
            v.retain(|a| a.ts.0.saturating_add(after) >= wm);
            !v.is_empty()
        });
        self.right.retain(|_, v| {
            v.retain(|b| b.ts.0.saturating_add(before) >= wm);
            !v.is_empty()
        });
        self.emit.send();
        self.emit.out.watermark(watermark);
    }

    fn barrier(&mut self, barrier: Barrier, snapshot: &mut TaskSnapshot) {
        self.emit.send();
        super::snapshot(&self.cx, self, snapshot);
        self.emit.out.barrier(barrier, snapshot);
    }

    basic_control!();
}

//! Joins of two keyed streams: within the same window, or within a time interval.

use super::keyed::KeyFn;
use super::{Emitter, Restorable, Snapshotted};
use crate::api::{Key, Record, TimeWindow, WindowAssigner};
use crate::exec::{basic_control, BuildCx, TwoInputOperator};
use crate::snapshot::{decode, encode_by_key_group, Barrier, OperatorSnapshot, TaskSnapshot};
use crate::state::StateValue;
use crate::time::{EventTime, ProcTime};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) type JoinFn<A, B, O> = Arc<dyn Fn(&A, &B) -> O + Send + Sync>;

pub(crate) struct Sides<A, B> {
    left: Vec<A>,
    right: Vec<B>,
}

fn sides_of<'a, K: Key, A, B>(
    windows: &'a mut BTreeMap<TimeWindow, FxHashMap<K, Sides<A, B>>>,
    w: &TimeWindow,
    key: &K,
) -> &'a mut Sides<A, B> {
    windows
        .entry(*w)
        .or_default()
        .entry(key.clone())
        .or_insert_with(|| Sides {
            left: Vec::new(),
            right: Vec::new(),
        })
}

/// Pairs every left and right record of the same key that fall in the same window; the
/// pairs are emitted when the watermark closes the window. Records of closed windows are
/// counted as late.
pub(crate) struct WindowJoinOp<K, A, B, O, W> {
    pub(crate) left_key: KeyFn<A, K>,
    pub(crate) right_key: KeyFn<B, K>,
    pub(crate) assigner: W,
    pub(crate) f: JoinFn<A, B, O>,
    pub(crate) windows: BTreeMap<TimeWindow, FxHashMap<K, Sides<A, B>>>,
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
    ) -> Self {
        WindowJoinOp {
            left_key,
            right_key,
            assigner,
            f,
            windows: BTreeMap::new(),
            watermark: i64::MIN,
            scratch: Vec::new(),
            emit,
            cx,
        }
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
            side(sides_of(&mut self.windows, w, &key)).push(value.clone());
        }
        side(sides_of(&mut self.windows, last, &key)).push(value);
    }
}

/// A key's records in one window, in snapshots: `(window, key, left, right)`.
type WindowSidesEntry<K, A, B> = (TimeWindow, K, Vec<A>, Vec<B>);

impl<K: Key, A: StateValue, B: StateValue, O, W: WindowAssigner> Snapshotted
    for WindowJoinOp<K, A, B, O, W>
{
    fn snapshot(&self, op: &mut OperatorSnapshot) -> Result<(), String> {
        let entries = self.windows.iter().flat_map(|(w, keys)| {
            keys.iter()
                .map(move |(k, sides)| (k, (*w, k, &sides.left, &sides.right)))
        });
        op.key_groups = encode_by_key_group(self.cx.assignment.max_parallelism(), entries)?;
        Ok(())
    }
}

impl<K: Key, A: StateValue, B: StateValue, O, W: WindowAssigner> Restorable
    for WindowJoinOp<K, A, B, O, W>
{
    fn restore_key_group(&mut self, _: u32, bytes: &[u8]) -> Result<(), String> {
        let entries: Vec<WindowSidesEntry<K, A, B>> = decode(bytes)?;
        for (w, key, left, right) in entries {
            let sides = sides_of(&mut self.windows, &w, &key);
            sides.left.extend(left);
            sides.right.extend(right);
        }
        Ok(())
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
    }

    fn push_right(&mut self, batch: &mut Vec<Record<B>>) {
        for r in batch.drain(..) {
            let key = (self.right_key)(&r.value);
            self.insert(r.ts.0, key, r.value, |s| &mut s.right);
        }
    }

    fn watermark(&mut self, watermark: EventTime) {
        self.watermark = watermark.0;
        while let Some(entry) = self.windows.first_entry() {
            if entry.key().max_timestamp() > self.watermark {
                break;
            }
            let (w, keys) = entry.remove_entry();
            let ts = EventTime(w.max_timestamp());
            for sides in keys.values() {
                for a in &sides.left {
                    for b in &sides.right {
                        self.emit.buf.push(Record::new(ts, (self.f)(a, b)));
                        self.emit.maybe_send();
                    }
                }
            }
        }
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

//! Keyed process functions, one and two inputs.

use super::functions::{KeyedCoProcessFunction, KeyedProcessFunction, ProcessContext, Timer};
use super::{fail_caught, guarded, hold_key, Emitter, Restorable};
use crate::error::StateError;
use crate::exec::{BuildCx, ControlEvent, Operator, TwoInputOperator};
use crate::record::{Key, Record};
use crate::snapshot::{encode, Native, OperatorSnapshot, SnapshotKind, TaskSnapshot};
use crate::state::{key_group, stable_hash};
use crate::state::{KeyedStateStore, TimerService};
use crate::time::{EventTime, ProcTime};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How often expired state is swept, in processing-time milliseconds.
const TTL_SWEEP_INTERVAL_MS: i64 = 1_000;

pub(crate) type KeyFn<T, K> = Arc<dyn Fn(&T) -> K + Send + Sync>;

/// State, timers and clocks shared by the one- and two-input keyed operators.
pub(crate) struct KeyedCore<K, O> {
    pub(crate) states: KeyedStateStore,
    pub(crate) timers: TimerService<K>,
    pub(crate) watermark: EventTime,
    pub(crate) now: ProcTime,
    pub(crate) next_sweep: i64,
    pub(crate) emit: Emitter<O>,
    pub(crate) cx: BuildCx,
}

/// A key group of a keyed process operator in snapshots: its states in the canonical
/// format, and its timers as `(key, event_time, timestamp)`.
/// The states are bytes to bincode (as `Vec<u8>` always was): read without a copy.
type KeyedGroupEntry<'a, K> = (&'a serde_bytes::Bytes, Vec<(K, bool, i64)>);

impl<K: Key, O> Restorable for KeyedCore<K, O> {
    fn restore_native(
        &mut self,
        native: &crate::snapshot::RestoredNative,
    ) -> Result<(), StateError> {
        self.states.restore_native(native)
    }

    fn finish_restore(&mut self) -> Result<(), StateError> {
        self.states.finish_restore()
    }

    fn restore_key_group(&mut self, kg: u32, bytes: &[u8]) -> Result<(), StateError> {
        let (states, timers): KeyedGroupEntry<'_, K> =
            bincode::deserialize(bytes).map_err(StateError::decode("state"))?;
        self.states.restore_key_group(kg, states)?;
        for (key, event, t) in timers {
            if event {
                self.timers.register_event(&key, t);
            } else {
                self.timers.register_processing(&key, t);
            }
        }
        Ok(())
    }
}

impl<K: Key, O> KeyedCore<K, O> {
    /// Heap state is encoded right away; RocksDB state is pinned, and encoded by the
    /// coordinator afterwards (timers, on the heap, are encoded now either way).
    fn snapshot_into(
        &mut self,
        op: &mut OperatorSnapshot,
        kind: SnapshotKind,
    ) -> Result<(), StateError> {
        let max = self.cx.assignment.max_parallelism();
        let mut timers: BTreeMap<u32, Vec<(&K, bool, i64)>> = BTreeMap::new();
        for (k, event, t) in self.timers.entries() {
            timers
                .entry(key_group(stable_hash(k), max))
                .or_default()
                .push((k, event, t));
        }
        if self.states.is_rocksdb() && kind != SnapshotKind::Savepoint {
            // Incremental: the database's own files, plus the timers (on the heap) of each
            // key group in the canonical form, beside empty states.
            op.native = self.states.pin_native()?.map(Native::Pinned);
            let empty_states = self.states.empty_key_group()?;
            for (kg, t) in timers {
                let states = serde_bytes::Bytes::new(&empty_states);
                op.key_groups.push((kg, encode(&(states, t))?));
            }
            return Ok(());
        }
        if let Some(pinned) = self.states.pin()? {
            let timers: BTreeMap<u32, Vec<u8>> = timers
                .into_iter()
                .map(|(kg, t)| Ok((kg, encode(&t)?)))
                .collect::<Result<_, StateError>>()?;
            let empty_states = self.states.empty_key_group()?;
            op.deferred.0 = Some(Box::new(move || {
                let mut states: BTreeMap<u32, Vec<u8>> = pinned.encode()?.into_iter().collect();
                let groups: std::collections::BTreeSet<u32> =
                    states.keys().chain(timers.keys()).copied().collect();
                let no_timers = 0u64.to_le_bytes().to_vec();
                Ok(groups
                    .into_iter()
                    .map(|kg| {
                        let s = states.remove(&kg).unwrap_or_else(|| empty_states.clone());
                        let t = timers.get(&kg).unwrap_or(&no_timers);
                        // bincode of (states, timers): the states' length, then both.
                        let mut entry = Vec::with_capacity(8 + s.len() + t.len());
                        entry.extend_from_slice(&(s.len() as u64).to_le_bytes());
                        entry.extend_from_slice(&s);
                        entry.extend_from_slice(t);
                        (kg, entry)
                    })
                    .collect())
            }));
            return Ok(());
        }
        for kg in self.cx.assignment.owned_by(self.cx.subtask as u32) {
            let states = self.states.snapshot_key_group(kg)?;
            let t = timers.remove(&kg).unwrap_or_default();
            if t.is_empty() && self.states.is_key_group_empty(kg) {
                continue;
            }
            op.key_groups
                .push((kg, encode(&(serde_bytes::Bytes::new(&states), t))?));
        }
        Ok(())
    }

    /// Adds the state to the snapshot, after sending the output it holds.
    fn snapshot(&mut self, kind: SnapshotKind, snapshot: &mut TaskSnapshot) {
        self.emit.send();
        let part = snapshot.operator(&self.cx.uid, self.cx.subtask);
        if let Err(e) = self.snapshot_into(part, kind) {
            self.cx.fail(format!("snapshot: {e}"));
        }
    }

    /// Fails the task with the first error a state access met.
    pub(crate) fn check_state(&mut self) {
        if let Some(e) = self.states.take_error() {
            self.cx.fail(format!("keyed state: {e}"));
        }
    }
}

impl<K: Key, O> KeyedCore<K, O> {
    pub(crate) fn new(states: KeyedStateStore, cx: &BuildCx, emit: Emitter<O>) -> Self {
        let now = cx.clock.now();
        KeyedCore {
            cx: cx.clone(),
            states,
            timers: TimerService::new(),
            watermark: EventTime::MIN,
            now,
            next_sweep: now.0.saturating_add(TTL_SWEEP_INTERVAL_MS),
            emit,
        }
    }

    /// Reads the clock once per batch, so that state TTL sees the time the batch arrived.
    pub(crate) fn refresh_now(&mut self) {
        self.now = self.cx.clock.now();
    }

    pub(crate) fn context<'a>(&'a mut self, key: &'a K, ts: EventTime) -> ProcessContext<'a, K, O> {
        ProcessContext {
            group: self.states.group_of(key),
            key,
            ts,
            watermark: self.watermark,
            now: self.now,
            states: &mut self.states,
            timers: &mut self.timers,
            out: &mut self.emit.buf,
        }
    }

    /// Runs `process` on each record of a batch, at its key, guarded (see [`guarded`]),
    /// then sends the output on.
    pub(crate) fn process_batch<I>(
        &mut self,
        batch: &mut Vec<Record<I>>,
        key_fn: &KeyFn<I, K>,
        mut process: impl FnMut(I, &mut ProcessContext<'_, K, O>),
    ) {
        self.refresh_now();
        let caught = guarded(|current| {
            for r in batch.drain(..) {
                let key = hold_key(current, || key_fn(&r.value));
                process(r.value, &mut self.context(key, r.ts));
                self.emit.maybe_send();
                if self.states.has_error() {
                    return self.states.take_error();
                }
            }
            None
        });
        fail_caught(&self.cx, caught);
        self.emit.send();
        self.check_state();
    }

    /// The next due timer, with the timestamp its key's context gets: an event-time timer up
    /// to the watermark, or a processing-time timer up to the clock.
    fn next_timer(&mut self, event_time: bool) -> Option<(Timer, EventTime, K)> {
        if event_time {
            let (t, key) = self.timers.pop_event(self.watermark.0)?;
            Some((Timer::Event(EventTime(t)), EventTime(t), key))
        } else {
            let (t, key) = self.timers.pop_processing(self.now.0)?;
            Some((Timer::Processing(ProcTime(t)), self.watermark, key))
        }
    }

    /// Fires the event-time timers up to the watermark, or the processing-time timers up to
    /// the clock, in time order, guarded (see [`guarded`]).
    fn fire_timers(
        &mut self,
        event_time: bool,
        mut on_timer: impl FnMut(Timer, &mut ProcessContext<'_, K, O>),
    ) {
        let caught = guarded(|current| {
            while let Some((timer, ts, key)) = self.next_timer(event_time) {
                let key = hold_key(current, || key);
                on_timer(timer, &mut self.context(key, ts));
                self.emit.maybe_send();
                if self.states.has_error() {
                    return self.states.take_error();
                }
            }
            None
        });
        fail_caught(&self.cx, caught);
    }

    fn sweep_expired(&mut self) {
        if self.now.0 >= self.next_sweep {
            self.states.remove_expired(self.now.0);
            self.next_sweep = self.now.0.saturating_add(TTL_SWEEP_INTERVAL_MS);
        }
    }

    /// The keyed operator's own part of a control event: a watermark fires the event-time
    /// timers up to it, a tick the processing-time timers up to it (and sweeps expired
    /// state), a barrier adds the state to the snapshot. Timers fire through `on_timer`.
    pub(crate) fn handle(
        &mut self,
        event: &mut ControlEvent<'_>,
        on_timer: impl FnMut(Timer, &mut ProcessContext<'_, K, O>),
    ) {
        match event {
            ControlEvent::Watermark(watermark) => {
                self.watermark = *watermark;
                self.fire_timers(true, on_timer);
                self.check_state();
            }
            ControlEvent::Tick(now) => {
                self.now = *now;
                self.fire_timers(false, on_timer);
                self.sweep_expired();
                self.check_state();
            }
            ControlEvent::Barrier(barrier, snapshot) => self.snapshot(barrier.kind, snapshot),
            ControlEvent::Idle(_)
            | ControlEvent::Flush
            | ControlEvent::Finish
            | ControlEvent::LatencyMarker(_) => {}
        }
    }

    /// Handles a control event (see [`KeyedCore::handle`]) and passes it on.
    pub(crate) fn control(
        &mut self,
        mut event: ControlEvent<'_>,
        on_timer: impl FnMut(Timer, &mut ProcessContext<'_, K, O>),
    ) {
        self.handle(&mut event, on_timer);
        self.emit.forward(event);
    }
}

pub(crate) struct KeyedProcessOp<K, I, O, F> {
    pub(crate) key_fn: KeyFn<I, K>,
    pub(crate) f: F,
    pub(crate) core: KeyedCore<K, O>,
}

impl<K: Key, I, O, F: KeyedProcessFunction<K, I, O>> Operator<I> for KeyedProcessOp<K, I, O, F> {
    fn push(&mut self, batch: &mut Vec<Record<I>>) {
        let f = &mut self.f;
        self.core
            .process_batch(batch, &self.key_fn, |value, ctx| f.process(value, ctx));
    }

    fn control(&mut self, event: ControlEvent<'_>) {
        let f = &mut self.f;
        self.core.control(event, |t, ctx| f.on_timer(t, ctx));
    }
}

pub(crate) struct KeyedCoProcessOp<K, A, B, O, F> {
    pub(crate) left_key: KeyFn<A, K>,
    pub(crate) right_key: KeyFn<B, K>,
    pub(crate) f: F,
    pub(crate) core: KeyedCore<K, O>,
}

impl<K: Key, A, B, O, F: KeyedCoProcessFunction<K, A, B, O>> TwoInputOperator<A, B>
    for KeyedCoProcessOp<K, A, B, O, F>
{
    fn push_left(&mut self, batch: &mut Vec<Record<A>>) {
        let f = &mut self.f;
        self.core
            .process_batch(batch, &self.left_key, |value, ctx| {
                f.process_left(value, ctx)
            });
    }

    fn push_right(&mut self, batch: &mut Vec<Record<B>>) {
        let f = &mut self.f;
        self.core
            .process_batch(batch, &self.right_key, |value, ctx| {
                f.process_right(value, ctx)
            });
    }

    fn control(&mut self, event: ControlEvent<'_>) {
        let f = &mut self.f;
        self.core.control(event, |t, ctx| f.on_timer(t, ctx));
    }
}

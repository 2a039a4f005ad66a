//! Keyed windows with incremental aggregation.
//!
//! Semantics (the same as Flink's default event-time trigger): a window fires once when the
//! watermark passes its end; with allowed lateness its state is kept until
//! `end + lateness`, and each record arriving in that time updates the window and fires it
//! again with the new result (an updating output). A record whose windows have all been
//! cleaned up goes to the late output.

use super::keyed::KeyFn;
use super::panes::Panes;
use super::{Emitter, Restorable, Snapshotted};
use crate::api::{AggregateFunction, Key, Record, TimeWindow, WindowAssigner};
use crate::exec::{BuildCx, Operator};
use crate::snapshot::{
    decode, encode_by_key_group, Barrier, OperatorSnapshot, RestoredNative, TaskSnapshot,
};
use crate::state::TimerService;
use crate::time::{EventTime, ProcTime};
use rustc_hash::FxHashMap;
use std::sync::Arc;

pub(crate) type WindowFn<K, R, O> = Arc<dyn Fn(&K, TimeWindow, R) -> O + Send + Sync>;

/// Where late records go: the late side output (counted there) or, without one, counted
/// as dropped.
pub(crate) struct LateOutput<I> {
    pub(crate) out: Option<Emitter<I>>,
    pub(crate) cx: BuildCx,
}

impl<I> LateOutput<I> {
    fn push(&mut self, r: Record<I>) {
        self.cx.metrics.add_late_records(1);
        if let Some(out) = &mut self.out {
            out.buf.push(r);
            out.maybe_send();
        }
    }
    fn send(&mut self) {
        if let Some(out) = &mut self.out {
            out.send();
        }
    }
    fn control(&mut self, f: impl FnOnce(&mut dyn Operator<I>)) {
        if let Some(out) = &mut self.out {
            out.send();
            f(out.out.as_mut());
        }
    }
}

/// Tumbling and sliding windows, in event or processing time.
pub(crate) struct WindowOp<K, I, A: AggregateFunction<I>, O, W> {
    pub(crate) key_fn: KeyFn<I, K>,
    pub(crate) assigner: W,
    pub(crate) agg: Arc<A>,
    pub(crate) window_fn: WindowFn<K, A::Out, O>,
    pub(crate) lateness: i64,
    pub(crate) panes: Panes<K, A::Acc>,
    pub(crate) watermark: i64,
    pub(crate) now: i64,
    pub(crate) scratch: Vec<TimeWindow>,
    pub(crate) emit: Emitter<O>,
    pub(crate) late: LateOutput<I>,
}

impl<K: Key, I, A: AggregateFunction<I>, O, W: WindowAssigner> WindowOp<K, I, A, O, W> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        key_fn: KeyFn<I, K>,
        assigner: W,
        agg: Arc<A>,
        window_fn: WindowFn<K, A::Out, O>,
        lateness: i64,
        now: ProcTime,
        emit: Emitter<O>,
        late: LateOutput<I>,
    ) -> Result<Self, crate::Error> {
        Ok(WindowOp {
            key_fn,
            assigner,
            agg,
            window_fn,
            lateness: if W::EVENT_TIME { lateness } else { 0 },
            panes: Panes::new(&late.cx)?,
            watermark: i64::MIN,
            now: now.0,
            scratch: Vec::with_capacity(8),
            emit,
            late,
        })
    }

    /// The time that closes windows: the watermark, or the clock for processing time.
    fn closing_time(&self) -> i64 {
        if W::EVENT_TIME {
            self.watermark
        } else {
            self.now
        }
    }

    /// Fires every window whose end has passed and drops those past their lateness.
    fn fire(&mut self) {
        let t = self.closing_time();
        let (agg, window_fn, emit) = (&self.agg, &self.window_fn, &mut self.emit);
        self.panes.fire(t, self.lateness, |w, key, acc| {
            let out = window_fn(key, w, agg.result(acc));
            emit.buf
                .push(Record::new(EventTime(w.max_timestamp()), out));
            emit.maybe_send();
        });
        self.emit.send();
        self.check_state();
    }

    /// Fails the task with the first error the state backend met.
    fn check_state(&mut self) {
        if let Some(e) = self.panes.take_error() {
            self.late.cx.fail(format!("window state: {e}"));
        }
    }
}

impl<K: Key, I, A: AggregateFunction<I>, O, W: WindowAssigner> Operator<I>
    for WindowOp<K, I, A, O, W>
{
    fn push(&mut self, batch: &mut Vec<Record<I>>) {
        let closing = self.closing_time();
        for r in batch.drain(..) {
            let t = if W::EVENT_TIME { r.ts.0 } else { self.now };
            self.scratch.clear();
            self.assigner.assign(t, &mut self.scratch);
            let key = (self.key_fn)(&r.value);
            let mut accepted = false;
            for w in &self.scratch {
                if w.max_timestamp().saturating_add(self.lateness) <= closing {
                    continue;
                }
                accepted = true;
                let (agg, window_fn, emit) = (&self.agg, &self.window_fn, &mut self.emit);
                self.panes.update(
                    *w,
                    &key,
                    || agg.create(),
                    |acc, fired| {
                        agg.add(acc, &r.value);
                        if fired {
                            // A late record within the allowed lateness: fire the update.
                            let out = window_fn(&key, *w, agg.result(acc));
                            emit.buf
                                .push(Record::new(EventTime(w.max_timestamp()), out));
                            emit.maybe_send();
                        }
                    },
                );
            }
            if !accepted {
                self.late.push(r);
            }
        }
        self.emit.send();
        self.late.send();
        self.check_state();
    }

    fn watermark(&mut self, watermark: EventTime) {
        self.watermark = watermark.0;
        if W::EVENT_TIME {
            self.fire();
        }
        self.late.control(|o| o.watermark(watermark));
        self.emit.out.watermark(watermark);
    }

    fn idle(&mut self, idle: bool) {
        self.late.control(|o| o.idle(idle));
        self.emit.out.idle(idle);
    }

    fn tick(&mut self, now: ProcTime) {
        self.now = now.0;
        if !W::EVENT_TIME {
            self.fire();
        }
        self.late.control(|o| o.tick(now));
        self.emit.out.tick(now);
    }

    fn flush(&mut self) {
        self.late.control(|o| o.flush());
        self.emit.send();
        self.emit.out.flush();
    }

    fn barrier(&mut self, barrier: Barrier, snapshot: &mut TaskSnapshot) {
        self.emit.send();
        self.late.send();
        let part = snapshot.operator(&self.late.cx.uid, self.late.cx.subtask);
        if let Err(e) = self.panes.snapshot(part, barrier.kind) {
            self.late.cx.fail(format!("snapshot: {e}"));
        }
        self.late.control(|o| o.barrier(barrier, snapshot));
        self.emit.out.barrier(barrier, snapshot);
    }

    fn finish(&mut self) {
        if !W::EVENT_TIME {
            // End of input closes every processing-time window.
            self.now = i64::MAX;
            self.fire();
        }
        self.late.control(|o| o.finish());
        self.emit.send();
        self.emit.out.finish();
    }
}

impl<K: Key, I, A: AggregateFunction<I>, O, W: WindowAssigner> Restorable
    for WindowOp<K, I, A, O, W>
{
    fn restore_key_group(&mut self, _: u32, bytes: &[u8]) -> Result<(), String> {
        self.panes.restore_key_group(bytes)
    }

    fn restore_native(&mut self, native: &RestoredNative) -> Result<(), String> {
        self.panes.restore_native(native)
    }
}

pub(crate) struct SessionState<Acc> {
    window: TimeWindow,
    acc: Acc,
    fired: bool,
}

/// Event-time session windows: a key's windows merge when they overlap or touch.
pub(crate) struct SessionWindowOp<K, I, A: AggregateFunction<I>, O> {
    pub(crate) key_fn: KeyFn<I, K>,
    pub(crate) gap: i64,
    pub(crate) agg: Arc<A>,
    pub(crate) window_fn: WindowFn<K, A::Out, O>,
    pub(crate) lateness: i64,
    pub(crate) sessions: FxHashMap<K, Vec<SessionState<A::Acc>>>,
    pub(crate) timers: TimerService<K>,
    pub(crate) watermark: i64,
    pub(crate) emit: Emitter<O>,
    pub(crate) late: LateOutput<I>,
}

impl<K: Key, I, A: AggregateFunction<I>, O> SessionWindowOp<K, I, A, O> {
    pub(crate) fn new(
        key_fn: KeyFn<I, K>,
        gap: i64,
        agg: Arc<A>,
        window_fn: WindowFn<K, A::Out, O>,
        lateness: i64,
        emit: Emitter<O>,
        late: LateOutput<I>,
    ) -> Self {
        SessionWindowOp {
            key_fn,
            gap,
            agg,
            window_fn,
            lateness,
            sessions: FxHashMap::default(),
            timers: TimerService::new(),
            watermark: i64::MIN,
            emit,
            late,
        }
    }

    fn add(&mut self, key: K, r: &Record<I>) -> bool {
        let mut window = TimeWindow::new(r.ts.0, r.ts.0.saturating_add(self.gap));
        if window.max_timestamp().saturating_add(self.lateness) <= self.watermark {
            return false;
        }
        let sessions = self.sessions.entry(key.clone()).or_default();
        let mut acc = self.agg.create();
        self.agg.add(&mut acc, &r.value);
        let mut fired = false;
        let mut i = 0;
        while i < sessions.len() {
            if sessions[i].window.intersects(&window) {
                let s = sessions.swap_remove(i);
                window = window.cover(&s.window);
                fired |= s.fired;
                let mut merged = s.acc;
                self.agg.merge(&mut merged, acc);
                acc = merged;
            } else {
                i += 1;
            }
        }
        let max_ts = window.max_timestamp();
        if fired && max_ts <= self.watermark {
            // Merged into a session that already fired: fire the update now.
            let out = (self.window_fn)(&key, window, self.agg.result(&acc));
            self.emit.buf.push(Record::new(EventTime(max_ts), out));
            self.emit.maybe_send();
        }
        sessions.push(SessionState {
            window,
            acc,
            fired: fired && max_ts <= self.watermark,
        });
        self.timers.register_event(&key, max_ts);
        if self.lateness > 0 {
            self.timers
                .register_event(&key, max_ts.saturating_add(self.lateness));
        }
        true
    }

    fn fire(&mut self) {
        let wm = self.watermark;
        while let Some((_, key)) = self.timers.pop_event(wm) {
            let Some(sessions) = self.sessions.get_mut(&key) else {
                continue;
            };
            for s in sessions.iter_mut() {
                let max_ts = s.window.max_timestamp();
                if !s.fired && max_ts <= wm {
                    s.fired = true;
                    let out = (self.window_fn)(&key, s.window, self.agg.result(&s.acc));
                    self.emit.buf.push(Record::new(EventTime(max_ts), out));
                    self.emit.maybe_send();
                }
            }
            let lateness = self.lateness;
            sessions.retain(|s| s.window.max_timestamp().saturating_add(lateness) > wm);
            if sessions.is_empty() {
                self.sessions.remove(&key);
            }
        }
        self.emit.send();
    }
}

impl<K: Key, I, A: AggregateFunction<I>, O> Operator<I> for SessionWindowOp<K, I, A, O> {
    fn push(&mut self, batch: &mut Vec<Record<I>>) {
        for r in batch.drain(..) {
            let key = (self.key_fn)(&r.value);
            if !self.add(key, &r) {
                self.late.push(r);
            }
        }
        self.emit.send();
        self.late.send();
    }

    fn watermark(&mut self, watermark: EventTime) {
        self.watermark = watermark.0;
        self.fire();
        self.late.control(|o| o.watermark(watermark));
        self.emit.out.watermark(watermark);
    }

    fn idle(&mut self, idle: bool) {
        self.late.control(|o| o.idle(idle));
        self.emit.out.idle(idle);
    }

    fn tick(&mut self, now: ProcTime) {
        self.late.control(|o| o.tick(now));
        self.emit.out.tick(now);
    }

    fn flush(&mut self) {
        self.late.control(|o| o.flush());
        self.emit.send();
        self.emit.out.flush();
    }

    fn barrier(&mut self, barrier: Barrier, snapshot: &mut TaskSnapshot) {
        self.emit.send();
        self.late.send();
        super::snapshot(&self.late.cx, self, snapshot);
        self.late.control(|o| o.barrier(barrier, snapshot));
        self.emit.out.barrier(barrier, snapshot);
    }

    fn finish(&mut self) {
        self.late.control(|o| o.finish());
        self.emit.send();
        self.emit.out.finish();
    }
}

/// A key's sessions in snapshots: `(key, [(window, fired, accumulator)])`.
type SessionEntry<K, Acc> = (K, Vec<(TimeWindow, bool, Acc)>);

impl<K: Key, I, A: AggregateFunction<I>, O> Snapshotted for SessionWindowOp<K, I, A, O> {
    fn snapshot(&self, op: &mut OperatorSnapshot) -> Result<(), String> {
        let entries = self.sessions.iter().map(|(k, sessions)| {
            let list: Vec<(TimeWindow, bool, &A::Acc)> = sessions
                .iter()
                .map(|s| (s.window, s.fired, &s.acc))
                .collect();
            (k, (k, list))
        });
        op.key_groups = encode_by_key_group(self.late.cx.assignment.max_parallelism(), entries)?;
        Ok(())
    }
}

impl<K: Key, I, A: AggregateFunction<I>, O> Restorable for SessionWindowOp<K, I, A, O> {
    fn restore_key_group(&mut self, _: u32, bytes: &[u8]) -> Result<(), String> {
        let entries: Vec<SessionEntry<K, A::Acc>> = decode(bytes)?;
        for (key, sessions) in entries {
            for (window, fired, acc) in sessions {
                // Timers are not stored: they follow from the sessions.
                let max_ts = window.max_timestamp();
                self.timers.register_event(&key, max_ts);
                if self.lateness > 0 {
                    self.timers
                        .register_event(&key, max_ts.saturating_add(self.lateness));
                }
                self.sessions
                    .entry(key.clone())
                    .or_default()
                    .push(SessionState { window, acc, fired });
            }
        }
        Ok(())
    }
}

//! Keyed windows with incremental aggregation.
//!
//! Semantics (the same as Flink's default event-time trigger): a window fires once when the
//! watermark passes its end; with allowed lateness its state is kept until
//! `end + lateness`, and each record arriving in that time updates the window and fires it
//! again with the new result (an updating output). A record whose windows have all been
//! cleaned up goes to the late output.

use super::assigners::{TimeWindow, WindowAssigner};
use super::functions::AggregateFunction;
use super::functions::Timer;
use super::keyed::{KeyFn, KeyedCore};
use super::panes::Panes;
use super::{fail_caught, guarded, hold_key, Emitter, Restorable};
use crate::error::StateError;
use crate::exec::{BuildCx, ControlEvent, Operator};
use crate::record::{Key, Record};
use crate::snapshot::RestoredNative;
use crate::state::{StateDescriptor, ValueState};
use crate::time::{EventTime, ProcTime};
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
    fn forward(&mut self, event: ControlEvent<'_>) {
        if let Some(out) = &mut self.out {
            out.forward(event);
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
        let cx = &self.late.cx;
        let mut failed = false;
        self.panes.fire(t, self.lateness, |w, key, acc| {
            if failed {
                return;
            }
            // Guarded per window and key: the callback cannot keep the key it is lent.
            let done = guarded::<()>(|_| {
                let out = window_fn(key, w, agg.result(acc));
                emit.buf
                    .push(Record::new(EventTime(w.max_timestamp()), out));
                emit.maybe_send();
                None
            });
            if let Err((why, _)) = done {
                cx.fail_at_key(Some(key), why);
                failed = true;
            }
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
        let (agg, window_fn, emit) = (&self.agg, &self.window_fn, &mut self.emit);
        let (assigner, scratch, panes) = (&self.assigner, &mut self.scratch, &mut self.panes);
        let (key_fn, late, lateness, now) = (&self.key_fn, &mut self.late, self.lateness, self.now);
        // State errors are checked per batch: a cache write-out covers many keys.
        let caught = guarded(|current| {
            for r in batch.drain(..) {
                let t = if W::EVENT_TIME { r.ts.0 } else { now };
                scratch.clear();
                assigner.assign(t, scratch);
                let key = hold_key(current, || key_fn(&r.value));
                let mut accepted = false;
                for w in scratch.iter() {
                    if w.max_timestamp().saturating_add(lateness) <= closing {
                        continue;
                    }
                    accepted = true;
                    panes.update(
                        *w,
                        key,
                        || agg.create(),
                        |acc, fired| {
                            agg.add(acc, &r.value);
                            if fired {
                                // A late record within the allowed lateness: fire the update.
                                let out = window_fn(key, *w, agg.result(acc));
                                emit.buf
                                    .push(Record::new(EventTime(w.max_timestamp()), out));
                                emit.maybe_send();
                            }
                        },
                    );
                }
                if !accepted {
                    late.push(r);
                }
            }
            None
        });
        fail_caught(&self.late.cx, caught);
        self.emit.send();
        self.late.send();
        self.check_state();
    }

    fn control(&mut self, mut event: ControlEvent<'_>) {
        match &mut event {
            ControlEvent::Watermark(watermark) => {
                self.watermark = watermark.0;
                if W::EVENT_TIME {
                    self.fire();
                }
            }
            ControlEvent::Tick(now) => {
                self.now = now.0;
                if !W::EVENT_TIME {
                    self.fire();
                }
            }
            ControlEvent::Barrier(barrier, snapshot) => {
                self.emit.send();
                self.late.send();
                let part = snapshot.operator(&self.late.cx.uid, self.late.cx.subtask);
                if let Err(e) = self.panes.snapshot(part, barrier.kind) {
                    self.late.cx.fail(format!("snapshot: {e}"));
                }
            }
            ControlEvent::Finish if !W::EVENT_TIME => {
                // End of input closes every processing-time window.
                self.now = i64::MAX;
                self.fire();
            }
            ControlEvent::Idle(_)
            | ControlEvent::Flush
            | ControlEvent::Finish
            | ControlEvent::LatencyMarker(_) => {}
        }
        self.late.forward(event.reborrow());
        self.emit.forward(event);
    }
}

impl<K: Key, I, A: AggregateFunction<I>, O, W: WindowAssigner> Restorable
    for WindowOp<K, I, A, O, W>
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

/// A key's sessions: `(window, fired, accumulator)`.
type Sessions<Acc> = Vec<(TimeWindow, bool, Acc)>;

/// The name of the keyed state that holds each key's sessions.
pub(crate) const SESSIONS_STATE: &str = "session-windows";
/// Version 2: sessions are keyed state (either backend) with their timers.
pub(crate) const SESSIONS_VERSION: u32 = 2;

/// Event-time session windows: a key's windows merge when they overlap or touch. Each
/// key's sessions are keyed state, so they live on the run's backend; a timer per session
/// end (and end plus lateness) fires and cleans them up.
pub(crate) struct SessionWindowOp<K, I, A: AggregateFunction<I>, O> {
    pub(crate) key_fn: KeyFn<I, K>,
    pub(crate) gap: i64,
    pub(crate) agg: Arc<A>,
    pub(crate) window_fn: WindowFn<K, A::Out, O>,
    pub(crate) lateness: i64,
    pub(crate) sessions: ValueState<Sessions<A::Acc>>,
    pub(crate) core: KeyedCore<K, O>,
    pub(crate) late: LateOutput<I>,
}

impl<K: Key, I, A: AggregateFunction<I>, O> SessionWindowOp<K, I, A, O> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        key_fn: KeyFn<I, K>,
        gap: i64,
        agg: Arc<A>,
        window_fn: WindowFn<K, A::Out, O>,
        lateness: i64,
        emit: Emitter<O>,
        late: LateOutput<I>,
    ) -> Result<Self, crate::Error> {
        let cx = late.cx.clone();
        let mut states = cx.keyed_state()?;
        let sessions = states
            .register_value::<K, Sessions<A::Acc>>(
                StateDescriptor::new(SESSIONS_STATE).schema_version(SESSIONS_VERSION),
            )
            .map_err(|e| cx.state_error(e))?;
        Ok(SessionWindowOp {
            key_fn,
            gap,
            agg,
            window_fn,
            lateness,
            sessions,
            core: KeyedCore::new(states, &cx, emit),
            late,
        })
    }

    /// Adds a record to its key's sessions, merging those it overlaps; false when late.
    fn add(&mut self, key: &K, r: &Record<I>) -> bool {
        let watermark = self.core.watermark.0;
        let mut window = TimeWindow::new(r.ts.0, r.ts.0.saturating_add(self.gap));
        if window.max_timestamp().saturating_add(self.lateness) <= watermark {
            return false;
        }
        let (agg, window_fn) = (&self.agg, &self.window_fn);
        let mut ctx = self.core.context(key, r.ts);
        let mut update = None;
        ctx.value(self.sessions).update(|sessions| {
            let sessions = sessions.get_or_insert_with(Vec::new);
            let mut acc = agg.create();
            agg.add(&mut acc, &r.value);
            let mut fired = false;
            let mut i = 0;
            while i < sessions.len() {
                if sessions[i].0.intersects(&window) {
                    let (w, f, merged_acc) = sessions.swap_remove(i);
                    window = window.cover(&w);
                    fired |= f;
                    let mut merged = merged_acc;
                    agg.merge(&mut merged, acc);
                    acc = merged;
                } else {
                    i += 1;
                }
            }
            let max_ts = window.max_timestamp();
            let fired = fired && max_ts <= watermark;
            if fired {
                // Merged into a session that already fired: fire the update now.
                update = Some(window_fn(key, window, agg.result(&acc)));
            }
            sessions.push((window, fired, acc));
        });
        let max_ts = window.max_timestamp();
        if let Some(out) = update {
            ctx.emit_at(EventTime(max_ts), out);
        }
        ctx.register_event_timer(EventTime(max_ts));
        if self.lateness > 0 {
            ctx.register_event_timer(EventTime(max_ts.saturating_add(self.lateness)));
        }
        true
    }
}

impl<K: Key, I, A: AggregateFunction<I>, O> Operator<I> for SessionWindowOp<K, I, A, O> {
    fn push(&mut self, batch: &mut Vec<Record<I>>) {
        self.core.refresh_now();
        let caught = guarded(|current| {
            for r in batch.drain(..) {
                let key = hold_key(current, || (self.key_fn)(&r.value));
                if !self.add(key, &r) {
                    self.late.push(r);
                }
                self.core.emit.maybe_send();
                if self.core.states.has_error() {
                    return self.core.states.take_error();
                }
            }
            None
        });
        fail_caught(&self.core.cx, caught);
        self.core.emit.send();
        self.late.send();
        self.core.check_state();
    }

    fn control(&mut self, mut event: ControlEvent<'_>) {
        let (agg, window_fn, state, lateness) =
            (&self.agg, &self.window_fn, self.sessions, self.lateness);
        if let ControlEvent::Barrier(..) = event {
            self.late.send();
        }
        // Timers: one at each session's end fires it, one at end plus lateness drops it.
        self.core.handle(&mut event, |timer, ctx| {
            if let Timer::Processing(_) = timer {
                return;
            }
            let wm = ctx.watermark().0;
            let key = ctx.key().clone();
            let mut results = Vec::new();
            ctx.value(state).update(|sessions| {
                let Some(list) = sessions.as_mut() else {
                    return;
                };
                for (window, fired, acc) in list.iter_mut() {
                    if !*fired && window.max_timestamp() <= wm {
                        *fired = true;
                        results.push((*window, window_fn(&key, *window, agg.result(acc))));
                    }
                }
                list.retain(|(w, _, _)| w.max_timestamp().saturating_add(lateness) > wm);
                if list.is_empty() {
                    *sessions = None;
                }
            });
            for (window, out) in results {
                ctx.emit_at(EventTime(window.max_timestamp()), out);
            }
        });
        self.late.forward(event.reborrow());
        self.core.emit.forward(event);
    }
}

impl<K: Key, I, A: AggregateFunction<I>, O> Restorable for SessionWindowOp<K, I, A, O> {
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

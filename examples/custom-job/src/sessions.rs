//! Sessions per user, with keyed state, event-time timers and state TTL.
//!
//! Clicks of one user can arrive out of order, so they wait in keyed state until the
//! watermark has passed them and are then folded into the session in event-time order: the
//! sessions do not depend on arrival order or parallelism. Each click sets an event-time
//! timer at the earliest time its session could close (`ts + gap - 1`); when that timer
//! fires, every click up to it has arrived, and a session whose last click is a gap behind
//! is complete.

use crate::clicks::Click;
use serde::{Deserialize, Serialize};
use sluice_runtime::api::{KeyedProcessFunction, ProcessContext, Stream, Timer};
use sluice_runtime::state::{ListState, StateDescriptor, TtlUpdate, ValueState};
use sluice_runtime::time::EventTime;
use std::time::Duration;

/// The operator's uid: savepoints map state to operators by uid, so it never changes
/// between versions of the job (renaming it would orphan the state).
pub const SESSIONIZE_UID: &str = "sessionize";

/// The open session's state and its schema version. The version names the serialized form
/// of [`OpenSession`]: change that form and the version goes up, so that `sluice savepoint
/// check` (and the operator's upgrade pre-flight) refuses savepoints holding the old form
/// instead of the new code misreading them.
pub const OPEN_SESSION_STATE: &str = "open-session";
#[cfg(not(feature = "v2-incompatible-state"))]
pub const OPEN_SESSION_SCHEMA: u32 = 1;
#[cfg(feature = "v2-incompatible-state")]
pub const OPEN_SESSION_SCHEMA: u32 = 2;

/// Clicks not yet under the watermark: `(ts, amount_cents)`.
pub const PENDING_CLICKS_STATE: &str = "pending-clicks";
pub const PENDING_CLICKS_SCHEMA: u32 = 1;

/// How sessions are cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRules {
    /// A session closes after this long without a click (event time, milliseconds).
    pub gap_ms: i64,
    /// Session state not written for this long (processing time) is dropped.
    pub state_ttl: Duration,
}

/// A closed session: what the job emits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub user: String,
    /// The first click's time.
    pub start: EventTime,
    /// The last click's time.
    pub end: EventTime,
    pub clicks: u64,
    pub amount_cents: u64,
    /// `end - start`; added by the second version, which reads the same state.
    #[cfg(feature = "v2")]
    pub duration_ms: i64,
    /// Clicks that spent something; needs a field in the open session's state.
    #[cfg(feature = "v2-incompatible-state")]
    pub purchases: u64,
}

/// The session a user is in, kept in keyed state between clicks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct OpenSession {
    start: i64,
    last: i64,
    clicks: u64,
    amount_cents: u64,
    #[cfg(feature = "v2-incompatible-state")]
    purchases: u64,
}

impl OpenSession {
    fn first(ts: i64, amount_cents: u64) -> Self {
        let mut s = OpenSession {
            start: ts,
            last: ts,
            clicks: 0,
            amount_cents: 0,
            #[cfg(feature = "v2-incompatible-state")]
            purchases: 0,
        };
        s.add(ts, amount_cents);
        s
    }

    fn add(&mut self, ts: i64, amount_cents: u64) {
        // A click later than the watermark bound may be older than the session's start.
        self.start = self.start.min(ts);
        self.last = self.last.max(ts);
        self.clicks += 1;
        self.amount_cents += amount_cents;
        #[cfg(feature = "v2-incompatible-state")]
        if amount_cents > 0 {
            self.purchases += 1;
        }
    }

    fn closed(&self, user: &str) -> Session {
        Session {
            user: user.to_string(),
            start: EventTime(self.start),
            end: EventTime(self.last),
            clicks: self.clicks,
            amount_cents: self.amount_cents,
            #[cfg(feature = "v2")]
            duration_ms: self.last - self.start,
            #[cfg(feature = "v2-incompatible-state")]
            purchases: self.purchases,
        }
    }
}

struct Sessionizer {
    gap_ms: i64,
    pending: ListState<(i64, u64)>,
    open: ValueState<OpenSession>,
}

impl Sessionizer {
    fn emit(ctx: &mut ProcessContext<'_, String, Session>, session: &OpenSession) {
        let closed = session.closed(ctx.key());
        ctx.emit_at(closed.end, closed);
    }
}

impl KeyedProcessFunction<String, Click, Session> for Sessionizer {
    fn process(&mut self, click: Click, ctx: &mut ProcessContext<'_, String, Session>) {
        let ts = click.ts.millis();
        ctx.list(self.pending).add((ts, click.amount_cents));
        ctx.register_event_timer(EventTime(ts.saturating_add(self.gap_ms - 1)));
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut ProcessContext<'_, String, Session>) {
        let Timer::Event(now) = timer else { return };
        let now = now.millis();
        let mut due = ctx.list(self.pending).update(|pending| {
            let (due, later): (Vec<_>, Vec<_>) = pending.drain(..).partition(|c| c.0 <= now);
            *pending = later;
            due
        });
        due.sort_unstable();
        let mut open = ctx.value(self.open).get();
        let changed = !due.is_empty();
        for (ts, amount_cents) in due {
            match &mut open {
                Some(session) if ts - session.last < self.gap_ms => session.add(ts, amount_cents),
                Some(session) => {
                    Self::emit(ctx, session);
                    *session = OpenSession::first(ts, amount_cents);
                }
                None => open = Some(OpenSession::first(ts, amount_cents)),
            }
        }
        match open {
            // Every click up to `now` has arrived: nothing can extend the session any more.
            Some(session) if session.last.saturating_add(self.gap_ms - 1) <= now => {
                Self::emit(ctx, &session);
                ctx.value(self.open).clear();
            }
            // The timer of its last click closes it.
            Some(session) if changed => ctx.value(self.open).set(session),
            _ => {}
        }
    }
}

/// Cuts each user's clicks into sessions.
pub fn sessionize(clicks: &Stream<Click>, rules: &SessionRules) -> Stream<Session> {
    let (gap_ms, ttl) = (rules.gap_ms, rules.state_ttl);
    clicks
        .key_by(|c: &Click| c.user.clone())
        .process(SESSIONIZE_UID, move |ctx| {
            Ok(Sessionizer {
                gap_ms,
                pending: ctx.list_state::<String, _>(
                    StateDescriptor::new(PENDING_CLICKS_STATE)
                        .schema_version(PENDING_CLICKS_SCHEMA)
                        .ttl(ttl, TtlUpdate::OnCreateAndWrite),
                )?,
                open: ctx.value_state::<String, _>(
                    StateDescriptor::new(OPEN_SESSION_STATE)
                        .schema_version(OPEN_SESSION_SCHEMA)
                        .ttl(ttl, TtlUpdate::OnCreateAndWrite),
                )?,
            })
        })
        .uid(SESSIONIZE_UID)
}

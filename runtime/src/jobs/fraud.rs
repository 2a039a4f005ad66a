//! A fraud rule on card payments, modelled on Nexmark bids (the bidder is the card): a
//! small charge followed within a short time by a large one on the same card is the classic
//! pattern of a stolen card being tested before it is used.
//!
//! Payments of one card can arrive out of order, so the rule buffers them in keyed state and
//! evaluates them in event-time order as the watermark passes — the alerts are the same
//! whatever the arrival order or parallelism. An event-time timer forgets a small charge
//! once its window has passed.

use crate::api::{JobBuilder, KeyedProcessFunction, ProcessContext, Stream, Timer};
use crate::error::Error;
use crate::nexmark::{Bid, Event};
use crate::state::{ListState, StateDescriptor, ValueState};
use crate::time::EventTime;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FraudRule {
    /// A charge below this (in cents) is "small".
    pub small_below: u64,
    /// A charge above this (in cents) is "large".
    pub large_above: u64,
    /// How soon after a small charge a large one raises an alert.
    pub within_ms: i64,
}

impl Default for FraudRule {
    fn default() -> Self {
        FraudRule {
            small_below: 200,
            large_above: 50_000_000,
            within_ms: 10_000,
        }
    }
}

impl FraudRule {
    pub fn validate(&self) -> Result<(), Error> {
        if self.within_ms <= 0 {
            return Err(Error::Config(format!(
                "spec.job.config.rule.withinMs: must be positive, got {}",
                self.within_ms
            )));
        }
        if self.small_below > self.large_above {
            return Err(Error::Config(
                "spec.job.config.rule: smallBelow must not exceed largeAbove".into(),
            ));
        }
        Ok(())
    }
}

/// A suspicious pair of charges on one card.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FraudAlert {
    pub card: u64,
    pub small_at: EventTime,
    pub small_amount: u64,
    pub large_at: EventTime,
    pub large_amount: u64,
    pub merchant: u64,
}

/// A charge: (time, amount, merchant). Ordered so that simultaneous charges are evaluated
/// in a fixed order.
type Charge = (i64, u64, u64);

struct SmallThenLarge {
    rule: FraudRule,
    pending: ListState<Charge>,
    /// The last small charge still within the window.
    armed: ValueState<Charge>,
}

impl KeyedProcessFunction<u64, Bid, FraudAlert> for SmallThenLarge {
    fn process(&mut self, b: Bid, ctx: &mut ProcessContext<'_, u64, FraudAlert>) {
        ctx.list(self.pending)
            .add((b.date_time.0, b.price, b.auction));
        ctx.register_event_timer(b.date_time);
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut ProcessContext<'_, u64, FraudAlert>) {
        let Timer::Event(now) = timer else { return };
        let mut due = ctx.list(self.pending).update(|pending| {
            let (due, rest): (Vec<Charge>, Vec<Charge>) =
                pending.drain(..).partition(|c| c.0 <= now.0);
            *pending = rest;
            due
        });
        due.sort_unstable();
        let mut armed = ctx.value(self.armed).get();
        for (at, amount, merchant) in due {
            if let Some((small_at, small_amount, _)) = armed {
                if at - small_at > self.rule.within_ms {
                    armed = None;
                } else if amount > self.rule.large_above {
                    let card = *ctx.key();
                    ctx.emit_at(
                        EventTime(at),
                        FraudAlert {
                            card,
                            small_at: EventTime(small_at),
                            small_amount,
                            large_at: EventTime(at),
                            large_amount: amount,
                            merchant,
                        },
                    );
                    armed = None;
                }
            }
            if amount < self.rule.small_below {
                armed = Some((at, amount, merchant));
            }
        }
        match armed {
            // Forget the small charge when its window has passed with nothing to match.
            Some(a) if now.0 - a.0 <= self.rule.within_ms => {
                ctx.register_event_timer(EventTime(a.0 + self.rule.within_ms + 1));
                ctx.value(self.armed).set(a);
            }
            _ => ctx.value(self.armed).clear(),
        }
    }
}

/// The fraud job's pipeline over the events.
pub fn fraud(_: &JobBuilder, events: &Stream<Event>, rule: &FraudRule) -> Stream<FraudAlert> {
    let rule = rule.clone();
    super::nexmark_queries::bids(events)
        .key_by(|b: &Bid| b.bidder)
        .process("fraud-small-then-large", move |ctx| {
            Ok(SmallThenLarge {
                rule: rule.clone(),
                pending: ctx.list_state::<u64, _>(StateDescriptor::new("pending-charges"))?,
                armed: ctx.value_state::<u64, _>(StateDescriptor::new("armed-small-charge"))?,
            })
        })
}

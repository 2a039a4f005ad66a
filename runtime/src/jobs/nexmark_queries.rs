//! The Nexmark queries. Each takes the stream of events and returns its output stream; the
//! job registry attaches the configured sink, and tests attach their own.
//!
//! Output records are JSON lines; the fields are those of the structs below, in camelCase.
//! Times are UTC epoch milliseconds. Windows are half-open `[windowStart, windowEnd)`.

use crate::api::{
    AggregateFunction, Count, Either, JobBuilder, KeyedCoProcessFunction, KeyedProcessFunction,
    ProcessContext, Session, SlidingEventTime, Stream, Timer, TumblingEventTime,
};
use crate::nexmark::{Auction, Bid, Event, Person, Text};
use crate::state::{ListState, StateDescriptor, ValueState};
use crate::time::EventTime;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Window sizes of the windowed queries. The defaults are the standard Nexmark ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct QueryWindows {
    /// q5 window size and slide.
    pub hot_items_size_ms: u64,
    pub hot_items_slide_ms: u64,
    /// q7 and q8 tumbling window size.
    pub tumbling_ms: u64,
    /// q11 session gap.
    pub session_gap_ms: u64,
}

impl Default for QueryWindows {
    fn default() -> Self {
        QueryWindows {
            hot_items_size_ms: 10_000,
            hot_items_slide_ms: 2_000,
            tumbling_ms: 10_000,
            session_gap_ms: 10_000,
        }
    }
}

pub fn bids(events: &Stream<Event>) -> Stream<Bid> {
    events.filter_map("bids", |e| match e {
        Event::Bid(b) => Some(b),
        _ => None,
    })
}

/// People and auctions, each moved to its own stream (bids are dropped).
pub fn persons_and_auctions(events: &Stream<Event>) -> (Stream<Person>, Stream<Auction>) {
    events.split("persons-and-auctions", |e| match e {
        Event::Person(p) => Some(Either::Left(*p)),
        Event::Auction(a) => Some(Either::Right(*a)),
        Event::Bid(_) => None,
    })
}

/// Auctions and bids, each moved to its own stream (people are dropped).
pub fn auctions_and_bids(events: &Stream<Event>) -> (Stream<Auction>, Stream<Bid>) {
    events.split("auctions-and-bids", |e| match e {
        Event::Auction(a) => Some(Either::Left(*a)),
        Event::Bid(b) => Some(Either::Right(b)),
        Event::Person(_) => None,
    })
}

/// q0 — passthrough: every bid, unchanged.
pub fn q0(_: &JobBuilder, events: &Stream<Event>, _: &QueryWindows) -> Stream<Bid> {
    bids(events).uid("q0")
}

/// q1 output: a bid with its price converted from dollars to euros.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Q1 {
    pub auction: u64,
    pub bidder: u64,
    /// `price * 908 / 1000`, in integer arithmetic (the model's exchange rate of 0.908).
    pub price: u64,
    pub date_time: EventTime,
}

pub fn q1_price(dollars: u64) -> u64 {
    dollars * 908 / 1000
}

/// q1 — currency conversion.
pub fn q1(_: &JobBuilder, events: &Stream<Event>, _: &QueryWindows) -> Stream<Q1> {
    bids(events).map("q1", |b| Q1 {
        auction: b.auction,
        bidder: b.bidder,
        price: q1_price(b.price),
        date_time: b.date_time,
    })
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Q2 {
    pub auction: u64,
    pub price: u64,
}

/// q2 — selection: bids on every 123rd auction.
pub fn q2(_: &JobBuilder, events: &Stream<Event>, _: &QueryWindows) -> Stream<Q2> {
    bids(events).filter_map("q2", |b| {
        (b.auction % 123 == 0).then_some(Q2 {
            auction: b.auction,
            price: b.price,
        })
    })
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Q3 {
    pub name: String,
    pub city: String,
    pub state: String,
    pub auction: u64,
}

pub const Q3_STATES: [&str; 3] = ["OR", "ID", "CA"];
pub const Q3_CATEGORY: u64 = 10;

/// Joins sellers with their auctions as both arrive, in any order: each side is kept in
/// keyed state until the other appears. Sellers are kept for the life of the job.
struct LocalItemSuggestion {
    seller: ValueState<(String, String, String)>,
    waiting: ListState<u64>,
}

impl KeyedCoProcessFunction<u64, Person, Auction, Q3> for LocalItemSuggestion {
    fn process_left(&mut self, p: Person, ctx: &mut ProcessContext<'_, u64, Q3>) {
        let waiting = ctx.list(self.waiting).get();
        ctx.list(self.waiting).clear();
        for auction in waiting {
            ctx.emit(Q3 {
                name: p.name.to_string(),
                city: p.city.to_string(),
                state: p.state.to_string(),
                auction,
            });
        }
        ctx.value(self.seller)
            .set((p.name.to_string(), p.city.to_string(), p.state.to_string()));
    }

    fn process_right(&mut self, a: Auction, ctx: &mut ProcessContext<'_, u64, Q3>) {
        match ctx.value(self.seller).get() {
            Some((name, city, state)) => ctx.emit(Q3 {
                name,
                city,
                state,
                auction: a.id,
            }),
            None => ctx.list(self.waiting).add(a.id),
        }
    }
}

/// q3 — local item suggestion: auctions in category 10 by sellers living in OR, ID or CA.
pub fn q3(_: &JobBuilder, events: &Stream<Event>, _: &QueryWindows) -> Stream<Q3> {
    let (persons, auctions) = persons_and_auctions(events);
    let sellers = persons
        .filter("q3-sellers", |p| Q3_STATES.contains(&&*p.state))
        .key_by(|p: &Person| p.id);
    let items = auctions
        .filter("q3-items", |a| a.category == Q3_CATEGORY)
        .key_by(|a: &Auction| a.seller);
    sellers.connect(&items).process("q3", |ctx| {
        Ok(LocalItemSuggestion {
            seller: ctx.value_state::<u64, _>(StateDescriptor::new("seller"))?,
            waiting: ctx.list_state::<u64, _>(StateDescriptor::new("waiting-auctions"))?,
        })
    })
}

/// A closed auction and its winning price.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WinningBid {
    pub auction: u64,
    pub category: u64,
    pub price: u64,
    pub expires: EventTime,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct OpenAuction {
    category: u64,
    date_time: i64,
    expires: i64,
    reserve: u64,
    closed: bool,
}

/// Tracks each auction's best valid bid (placed between the auction's start and expiry, at
/// or above its reserve) and emits it when the watermark passes the expiry. Bids that arrive
/// before their auction wait in state.
struct WinningBids {
    auction: ValueState<OpenAuction>,
    best: ValueState<u64>,
    early_bids: ListState<(i64, u64)>,
}

impl WinningBids {
    fn offer(
        &self,
        a: &OpenAuction,
        ts: i64,
        price: u64,
        ctx: &mut ProcessContext<'_, u64, WinningBid>,
    ) {
        if a.date_time <= ts && ts < a.expires && price >= a.reserve {
            ctx.value(self.best).update(|best| {
                *best = Some(best.map_or(price, |b: u64| b.max(price)));
            });
        }
    }
}

impl KeyedCoProcessFunction<u64, Auction, Bid, WinningBid> for WinningBids {
    fn process_left(&mut self, a: Auction, ctx: &mut ProcessContext<'_, u64, WinningBid>) {
        let open = OpenAuction {
            category: a.category,
            date_time: a.date_time.0,
            expires: a.expires.0,
            reserve: a.reserve,
            closed: false,
        };
        for (ts, price) in ctx.list(self.early_bids).get() {
            self.offer(&open, ts, price, ctx);
        }
        ctx.list(self.early_bids).clear();
        // Every bid valid for the auction has a timestamp below `expires`: once the
        // watermark reaches `expires - 1` all of them have arrived.
        ctx.register_event_timer(EventTime(open.expires - 1));
        ctx.value(self.auction).set(open);
    }

    fn process_right(&mut self, b: Bid, ctx: &mut ProcessContext<'_, u64, WinningBid>) {
        match ctx.value(self.auction).get() {
            Some(a) if !a.closed => self.offer(&a, b.date_time.0, b.price, ctx),
            Some(_) => {}
            None => ctx.list(self.early_bids).add((b.date_time.0, b.price)),
        }
    }

    fn on_timer(&mut self, _: Timer, ctx: &mut ProcessContext<'_, u64, WinningBid>) {
        let Some(mut a) = ctx.value(self.auction).get() else {
            return;
        };
        if let Some(price) = ctx.value(self.best).get() {
            let auction = *ctx.key();
            ctx.emit(WinningBid {
                auction,
                category: a.category,
                price,
                expires: EventTime(a.expires),
            });
        }
        ctx.value(self.best).clear();
        // Keep a small marker so that bids for a closed auction are ignored.
        a.closed = true;
        ctx.value(self.auction).set(a);
    }
}

/// Emits `(expires, auction)`-ordered updates: closed auctions wait in state until the
/// watermark passes them, so the sequence of averages does not depend on arrival order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Q4 {
    pub category: u64,
    /// The auction whose close produced this update.
    pub auction: u64,
    /// Closed auctions with a winner so far in this category.
    pub auctions: u64,
    /// Average winning price so far, rounded down.
    pub average: u64,
}

struct AveragePrice {
    pending: ListState<WinningBid>,
    totals: ValueState<(u64, u64)>,
}

impl KeyedProcessFunction<u64, WinningBid, Q4> for AveragePrice {
    fn process(&mut self, w: WinningBid, ctx: &mut ProcessContext<'_, u64, Q4>) {
        ctx.register_event_timer(ctx.timestamp());
        ctx.list(self.pending).add(w);
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut ProcessContext<'_, u64, Q4>) {
        let Timer::Event(t) = timer else { return };
        let mut due = ctx.list(self.pending).update(|pending| {
            let (due, rest): (Vec<_>, Vec<_>) =
                pending.drain(..).partition(|w| w.expires.0 - 1 <= t.0);
            *pending = rest;
            due
        });
        due.sort_by_key(|w| (w.expires, w.auction));
        let (mut count, mut sum) = ctx.value(self.totals).get().unwrap_or((0, 0));
        for w in due {
            count += 1;
            sum += w.price;
            ctx.emit(Q4 {
                category: w.category,
                auction: w.auction,
                auctions: count,
                average: sum / count,
            });
        }
        ctx.value(self.totals).set((count, sum));
    }
}

/// q4 — average winning price per category, updated as auctions close.
pub fn q4(_: &JobBuilder, events: &Stream<Event>, _: &QueryWindows) -> Stream<Q4> {
    let (auctions, bids) = auctions_and_bids(events);
    let auctions = auctions.key_by(|a: &Auction| a.id);
    let bids = bids.key_by(|b: &Bid| b.auction);
    auctions
        .connect(&bids)
        .process("q4-winning-bids", |ctx| {
            Ok(WinningBids {
                auction: ctx.value_state::<u64, _>(StateDescriptor::new("auction"))?,
                best: ctx.value_state::<u64, _>(StateDescriptor::new("best-price"))?,
                early_bids: ctx.list_state::<u64, _>(StateDescriptor::new("early-bids"))?,
            })
        })
        .key_by(|w: &WinningBid| w.category)
        .process("q4", |ctx| {
            Ok(AveragePrice {
                pending: ctx.list_state::<u64, _>(StateDescriptor::new("pending"))?,
                totals: ctx.value_state::<u64, _>(StateDescriptor::new("totals"))?,
            })
        })
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Q5 {
    pub window_start: i64,
    pub window_end: i64,
    pub auction: u64,
    pub num: u64,
}

/// Keeps, per window, the auctions with the highest count; emits them when the watermark
/// passes the window.
struct HottestPerWindow {
    best: ValueState<(u64, Vec<u64>)>,
}

impl KeyedProcessFunction<(i64, i64), Q5, Q5> for HottestPerWindow {
    fn process(&mut self, c: Q5, ctx: &mut ProcessContext<'_, (i64, i64), Q5>) {
        ctx.value(self.best).update(|best| {
            let (max, auctions) = best.get_or_insert_with(|| (0, Vec::new()));
            if c.num > *max {
                *max = c.num;
                auctions.clear();
            }
            if c.num == *max {
                auctions.push(c.auction);
            }
        });
        ctx.register_event_timer(ctx.timestamp());
    }

    fn on_timer(&mut self, _: Timer, ctx: &mut ProcessContext<'_, (i64, i64), Q5>) {
        let (window_start, window_end) = *ctx.key();
        if let Some((num, auctions)) = ctx.value(self.best).get() {
            for auction in auctions {
                ctx.emit(Q5 {
                    window_start,
                    window_end,
                    auction,
                    num,
                });
            }
        }
        ctx.value(self.best).clear();
    }
}

/// q5 — hot items: in each sliding window, the auction(s) with the most bids.
pub fn q5(_: &JobBuilder, events: &Stream<Event>, w: &QueryWindows) -> Stream<Q5> {
    bids(events)
        .key_by(|b: &Bid| b.auction)
        .window(SlidingEventTime::of(
            Duration::from_millis(w.hot_items_size_ms),
            Duration::from_millis(w.hot_items_slide_ms),
        ))
        .aggregate("q5-counts", Count, |auction, w, num| Q5 {
            window_start: w.start,
            window_end: w.end,
            auction: *auction,
            num,
        })
        .key_by(|c: &Q5| (c.window_start, c.window_end))
        .process("q5", |ctx| {
            Ok(HottestPerWindow {
                best: ctx.value_state::<(i64, i64), _>(StateDescriptor::new("hottest"))?,
            })
        })
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Q7 {
    pub window_start: i64,
    pub window_end: i64,
    pub auction: u64,
    pub bidder: u64,
    pub price: u64,
    pub date_time: EventTime,
}

/// The highest price seen and every bid at that price.
pub struct MaxBids;

impl AggregateFunction<Bid> for MaxBids {
    type Acc = (u64, Vec<(u64, u64, i64)>);
    type Out = (u64, Vec<(u64, u64, i64)>);
    fn create(&self) -> Self::Acc {
        (0, Vec::new())
    }
    fn add(&self, acc: &mut Self::Acc, b: &Bid) {
        if b.price > acc.0 {
            acc.0 = b.price;
            acc.1.clear();
        }
        if b.price == acc.0 {
            acc.1.push((b.auction, b.bidder, b.date_time.0));
        }
    }
    fn merge(&self, into: &mut Self::Acc, other: Self::Acc) {
        if other.0 > into.0 {
            *into = other;
        } else if other.0 == into.0 {
            into.1.extend(other.1);
        }
    }
    fn result(&self, acc: &Self::Acc) -> Self::Out {
        acc.clone()
    }
}

/// q7 — highest bid: the bid(s) with the highest price in each tumbling window.
pub fn q7(_: &JobBuilder, events: &Stream<Event>, w: &QueryWindows) -> Stream<Q7> {
    bids(events)
        .window_all(TumblingEventTime::of(Duration::from_millis(w.tumbling_ms)))
        .aggregate("q7-max", MaxBids, |w, (price, bids)| {
            bids.into_iter()
                .map(|(auction, bidder, ts)| Q7 {
                    window_start: w.start,
                    window_end: w.end,
                    auction,
                    bidder,
                    price,
                    date_time: EventTime(ts),
                })
                .collect::<Vec<_>>()
        })
        .flat_map("q7", |v| v)
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Q8 {
    pub id: u64,
    pub name: String,
    pub reserve: u64,
}

/// q8 — monitor new users: people who created an auction in the same tumbling window in
/// which they registered; one record per (person, auction) pair.
pub fn q8(_: &JobBuilder, events: &Stream<Event>, w: &QueryWindows) -> Stream<Q8> {
    // Only the joined fields cross the shuffle: (id, name) and (seller, reserve).
    let (people, sellers) = events.split("q8-project", |e| match e {
        Event::Person(p) => Some(Either::Left((p.id, p.name))),
        Event::Auction(a) => Some(Either::Right((a.seller, a.reserve))),
        Event::Bid(_) => None,
    });
    let people = people.key_by(|p: &(u64, Text)| p.0);
    let sellers = sellers.key_by(|a: &(u64, u64)| a.0);
    people
        .window_join(
            &sellers,
            TumblingEventTime::of(Duration::from_millis(w.tumbling_ms)),
        )
        .apply("q8", |(id, name), (_, reserve)| Q8 {
            id: *id,
            name: name.to_string(),
            reserve: *reserve,
        })
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Q11 {
    pub bidder: u64,
    pub bid_count: u64,
    pub start_time: i64,
    pub end_time: i64,
}

/// q11 — user sessions: bids per bidder per session (sessions end after a gap without bids).
pub fn q11(_: &JobBuilder, events: &Stream<Event>, w: &QueryWindows) -> Stream<Q11> {
    bids(events)
        .key_by(|b: &Bid| b.bidder)
        .window(Session::with_gap(Duration::from_millis(w.session_gap_ms)))
        .aggregate("q11", Count, |bidder, w, bid_count| Q11 {
            bidder: *bidder,
            bid_count,
            start_time: w.start,
            end_time: w.end,
        })
}

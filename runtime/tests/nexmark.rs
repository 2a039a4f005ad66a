//! Every bundled query, run through the job registry exactly as `sluice run` runs it, at
//! parallelism 1 and 4, with in-order and out-of-order event generation, produces exactly
//! the records of a plain batch computation over the same generated events.

mod common;
use common::assert_same;

use serde::Serialize;
use sluice_runtime::connectors::JsonLinesSink;
use sluice_runtime::exec::{start_embedded, RunOptions};
use sluice_runtime::jobs::fraud::{FraudAlert, FraudRule};
use sluice_runtime::jobs::nexmark_queries::*;
use sluice_runtime::jobs::JobRegistry;
use sluice_runtime::nexmark::{
    write_events_jsonl, Auction, Bid, Event, NexmarkConfig, NexmarkGenerator, Person,
};
use sluice_runtime::state::{RocksConfig, StateBackend};
use sluice_runtime::time::EventTime;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const EVENTS: u64 = 120_000;
/// Slow enough in event time that the standard 10 s windows fill several times.
const RATE: u64 = 2_000;

fn config(out_of_order_ms: u64) -> NexmarkConfig {
    NexmarkConfig {
        events: EVENTS,
        events_per_second: RATE,
        out_of_order_ms,
        ..NexmarkConfig::default()
    }
}

struct Input {
    persons: Vec<Person>,
    auctions: Vec<Auction>,
    bids: Vec<Bid>,
}

fn generate(cfg: &NexmarkConfig) -> Input {
    let g = NexmarkGenerator::new(cfg);
    let mut input = Input {
        persons: vec![],
        auctions: vec![],
        bids: vec![],
    };
    for n in 0..cfg.events {
        match g.event(n) {
            Event::Person(p) => input.persons.push(*p),
            Event::Auction(a) => input.auctions.push(*a),
            Event::Bid(b) => input.bids.push(b),
        }
    }
    input
}

fn lines<T: Serialize>(records: impl IntoIterator<Item = T>) -> Vec<String> {
    let mut v: Vec<String> = records
        .into_iter()
        .map(|r| serde_json::to_string(&r).unwrap())
        .collect();
    v.sort();
    v
}

/// The committed lines of an output directory, sorted.
fn read_output(dir: &Path) -> Vec<String> {
    let mut v = JsonLinesSink::committed_lines(dir).unwrap();
    v.sort();
    v
}

/// Runs bundled job `name` and returns its output lines, sorted.
fn run_job(name: &str, parallelism: usize, job_config: serde_json::Value) -> Vec<String> {
    run_job_on(name, parallelism, job_config, StateBackend::Heap)
}

/// Keyed state in RocksDB, in a fresh directory per run. The window cache is tiny so that
/// window contents really go through the database.
fn rocksdb(dir: &Path) -> StateBackend {
    StateBackend::RocksDb(RocksConfig::new(dir, 64 << 20).window_cache_entries(16))
}

fn run_job_on(
    name: &str,
    parallelism: usize,
    job_config: serde_json::Value,
    state_backend: StateBackend,
) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut job_config = job_config;
    job_config["output"] = serde_json::json!(out);
    let graph = JobRegistry::bundled()
        .build(name, parallelism, 128, &job_config)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let options = RunOptions {
        state_backend,
        ..RunOptions::default()
    };
    start_embedded(graph, options)
        .unwrap()
        .wait()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    read_output(&out)
}

/// Checks query `name` against `reference` for both orderings, both parallelisms and both
/// state backends.
fn check(name: &str, reference: impl Fn(&Input, &QueryWindows) -> Vec<String>) {
    for ooo in [0, 2_000] {
        let cfg = config(ooo);
        let input = generate(&cfg);
        let expected = reference(&input, &QueryWindows::default());
        assert!(
            !expected.is_empty(),
            "{name}: the reference produced nothing"
        );
        for parallelism in [1, 4] {
            let got = run_job(name, parallelism, serde_json::json!({ "generator": cfg }));
            assert_same(
                &got,
                &expected,
                &format!("{name}, out-of-order {ooo} ms, parallelism {parallelism}"),
            );
            let state = tempfile::tempdir().unwrap();
            let got = run_job_on(
                name,
                parallelism,
                serde_json::json!({ "generator": cfg }),
                rocksdb(state.path()),
            );
            assert_same(
                &got,
                &expected,
                &format!("{name}, out-of-order {ooo} ms, parallelism {parallelism}, RocksDB"),
            );
        }
    }
}

fn window_start(ts: i64, size: i64) -> i64 {
    ts - ts.rem_euclid(size)
}

#[test]
fn q0_passthrough() {
    check("nexmark-q0", |i, _| lines(i.bids.iter().cloned()));
}

#[test]
fn q1_currency_conversion() {
    check("nexmark-q1", |i, _| {
        lines(i.bids.iter().map(|b| Q1 {
            auction: b.auction,
            bidder: b.bidder,
            price: b.price * 908 / 1000,
            date_time: b.date_time,
        }))
    });
}

#[test]
fn q2_selection() {
    check("nexmark-q2", |i, _| {
        lines(i.bids.iter().filter(|b| b.auction % 123 == 0).map(|b| Q2 {
            auction: b.auction,
            price: b.price,
        }))
    });
}

#[test]
fn q3_local_item_suggestion() {
    check("nexmark-q3", |i, _| {
        let sellers: HashMap<u64, &Person> = i
            .persons
            .iter()
            .filter(|p| ["OR", "ID", "CA"].contains(&&*p.state))
            .map(|p| (p.id, p))
            .collect();
        lines(
            i.auctions
                .iter()
                .filter(|a| a.category == 10)
                .filter_map(|a| {
                    sellers.get(&a.seller).map(|p| Q3 {
                        name: p.name.to_string(),
                        city: p.city.to_string(),
                        state: p.state.to_string(),
                        auction: a.id,
                    })
                }),
        )
    });
}

#[test]
fn q4_average_price_per_category() {
    check("nexmark-q4", |i, _| {
        let mut best: HashMap<u64, u64> = HashMap::new();
        let by_id: HashMap<u64, &Auction> = i.auctions.iter().map(|a| (a.id, a)).collect();
        for b in &i.bids {
            if let Some(a) = by_id.get(&b.auction) {
                if a.date_time <= b.date_time && b.date_time < a.expires && b.price >= a.reserve {
                    let e = best.entry(a.id).or_insert(0);
                    *e = (*e).max(b.price);
                }
            }
        }
        let mut closed: Vec<(EventTime, u64, u64, u64)> = best
            .iter()
            .map(|(id, price)| (by_id[id].expires, *id, by_id[id].category, *price))
            .collect();
        closed.sort();
        let mut totals: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        lines(closed.into_iter().map(|(_, auction, category, price)| {
            let t = totals.entry(category).or_default();
            t.0 += 1;
            t.1 += price;
            Q4 {
                category,
                auction,
                auctions: t.0,
                average: t.1 / t.0,
            }
        }))
    });
}

#[test]
fn q5_hot_items() {
    check("nexmark-q5", |i, w| {
        let (size, slide) = (w.hot_items_size_ms as i64, w.hot_items_slide_ms as i64);
        let mut counts: BTreeMap<i64, HashMap<u64, u64>> = BTreeMap::new();
        for b in &i.bids {
            let ts = b.date_time.0;
            let mut start = window_start(ts, slide);
            while start > ts - size {
                *counts
                    .entry(start)
                    .or_default()
                    .entry(b.auction)
                    .or_default() += 1;
                start -= slide;
            }
        }
        let mut out = Vec::new();
        for (start, per_auction) in counts {
            let max = per_auction.values().copied().max().unwrap_or(0);
            for (auction, num) in per_auction {
                if num == max {
                    out.push(Q5 {
                        window_start: start,
                        window_end: start + size,
                        auction,
                        num,
                    });
                }
            }
        }
        lines(out)
    });
}

#[test]
fn q7_highest_bid() {
    check("nexmark-q7", |i, w| {
        let size = w.tumbling_ms as i64;
        let mut max: BTreeMap<i64, u64> = BTreeMap::new();
        for b in &i.bids {
            let e = max.entry(window_start(b.date_time.0, size)).or_default();
            *e = (*e).max(b.price);
        }
        lines(i.bids.iter().filter_map(|b| {
            let start = window_start(b.date_time.0, size);
            (max[&start] == b.price).then(|| Q7 {
                window_start: start,
                window_end: start + size,
                auction: b.auction,
                bidder: b.bidder,
                price: b.price,
                date_time: b.date_time,
            })
        }))
    });
}

#[test]
fn q8_monitor_new_users() {
    check("nexmark-q8", |i, w| {
        let size = w.tumbling_ms as i64;
        let mut out = Vec::new();
        for p in &i.persons {
            for a in i.auctions.iter().filter(|a| a.seller == p.id) {
                if window_start(p.date_time.0, size) == window_start(a.date_time.0, size) {
                    out.push(Q8 {
                        id: p.id,
                        name: p.name.to_string(),
                        reserve: a.reserve,
                    });
                }
            }
        }
        lines(out)
    });
}

#[test]
fn q11_user_sessions() {
    check("nexmark-q11", |i, w| {
        let gap = w.session_gap_ms as i64;
        let mut by_bidder: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
        for b in &i.bids {
            by_bidder.entry(b.bidder).or_default().push(b.date_time.0);
        }
        let mut out = Vec::new();
        for (bidder, mut ts) in by_bidder {
            ts.sort_unstable();
            let (mut start, mut end, mut n) = (ts[0], ts[0] + gap, 0);
            for t in ts {
                if t > end {
                    out.push(Q11 {
                        bidder,
                        bid_count: n,
                        start_time: start,
                        end_time: end,
                    });
                    start = t;
                    n = 0;
                }
                end = end.max(t + gap);
                n += 1;
            }
            out.push(Q11 {
                bidder,
                bid_count: n,
                start_time: start,
                end_time: end,
            });
        }
        lines(out)
    });
}

#[test]
fn fraud_small_then_large() {
    check("fraud-small-then-large", |i, _| {
        let rule = FraudRule::default();
        let mut by_card: BTreeMap<u64, Vec<(i64, u64, u64)>> = BTreeMap::new();
        for b in &i.bids {
            by_card
                .entry(b.bidder)
                .or_default()
                .push((b.date_time.0, b.price, b.auction));
        }
        let mut out = Vec::new();
        for (card, mut charges) in by_card {
            charges.sort_unstable();
            let mut armed: Option<(i64, u64)> = None;
            for (at, amount, merchant) in charges {
                if let Some((small_at, small_amount)) = armed {
                    if at - small_at > rule.within_ms {
                        armed = None;
                    } else if amount > rule.large_above {
                        out.push(FraudAlert {
                            card,
                            small_at: EventTime(small_at),
                            small_amount,
                            large_at: EventTime(at),
                            large_amount: amount,
                            merchant,
                        });
                        armed = None;
                    }
                }
                if amount < rule.small_below {
                    armed = Some((at, amount));
                }
            }
        }
        lines(out)
    });
}

#[test]
fn a_query_reads_the_same_events_from_a_generated_file() {
    let cfg = config(1_000);
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&events).unwrap());
    write_events_jsonl(&cfg, &mut file).unwrap();
    drop(file);
    let generated = run_job("nexmark-q5", 2, serde_json::json!({ "generator": cfg }));
    let from_file = run_job(
        "nexmark-q5",
        2,
        serde_json::json!({ "generator": { "outOfOrderMs": 1_000 }, "input": events }),
    );
    assert!(!generated.is_empty());
    assert_same(&from_file, &generated, "q5 from file");
}

#[test]
fn a_bad_job_config_names_the_field() {
    let err = JobRegistry::bundled()
        .build(
            "nexmark-q5",
            1,
            128,
            &serde_json::json!({ "generator": { "events": "many" } }),
        )
        .err()
        .expect("rejected")
        .to_string();
    assert!(
        err.starts_with("job config: spec.job.config.generator.events: invalid type"),
        "{err}"
    );
    let err = JobRegistry::bundled()
        .build("nexmark-q5", 1, 128, &serde_json::json!({ "windowz": {} }))
        .err()
        .expect("rejected")
        .to_string();
    assert!(err.contains("unknown field `windowz`"), "{err}");
    let err = JobRegistry::bundled()
        .build("nexmark-q99", 1, 128, &serde_json::Value::Null)
        .err()
        .expect("rejected")
        .to_string();
    assert!(
        err.contains("unknown job 'nexmark-q99'") && err.contains("nexmark-q5"),
        "{err}"
    );
}

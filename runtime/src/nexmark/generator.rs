//! A deterministic generator following the Nexmark model: event `n` is a pure function of
//! `(seed, n)`, so any split can start at any offset and any run reproduces any other.
//!
//! The model: in every 50 consecutive events, 1 is a new person, 3 are new auctions and 46
//! are bids. Ids count up per kind. Bids go to recent auctions (half of them to a "hot"
//! auction) from recent people (three quarters from "hot" bidders); auctions are opened by
//! recent people (three quarters by "hot" sellers) and last about as long as it takes to
//! open the next 100 auctions.

use super::model::{Auction, Bid, Event, Person, Text};
use crate::time::EventTime;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

const PERSON_SHARE: u64 = 1;
const AUCTION_SHARE: u64 = 3;
const BID_SHARE: u64 = 46;
const SHARES: u64 = PERSON_SHARE + AUCTION_SHARE + BID_SHARE;

pub const FIRST_PERSON_ID: u64 = 1000;
pub const FIRST_AUCTION_ID: u64 = 1000;
pub const FIRST_CATEGORY_ID: u64 = 10;
pub const CATEGORIES: u64 = 5;

const ACTIVE_PEOPLE: u64 = 1000;
const IN_FLIGHT_AUCTIONS: u64 = 100;
/// How far ahead of the newest id a random pick may reach (an id not created yet).
const ID_LEAD: u64 = 10;
const HOT_AUCTION_RATIO: u64 = 2;
const HOT_BIDDER_RATIO: u64 = 4;
const HOT_SELLER_RATIO: u64 = 4;
const HOT_CHANNEL_RATIO: u64 = 2;
const CHANNELS: usize = 10_000;

/// Target average sizes, in bytes as the model counts them (see `Event::size_in_bytes`).
const PERSON_BYTES: usize = 200;
const AUCTION_BYTES: usize = 500;
const BID_BYTES: usize = 100;

const FIRST_NAMES: [&str; 12] = [
    "Ada", "Boris", "Carmen", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas",
    "Kemal", "Lucia",
];
const LAST_NAMES: [&str; 10] = [
    "Abbott", "Brennan", "Castillo", "Dunmore", "Eriksen", "Fairlie", "Gallo", "Holt", "Ivers",
    "Juarez",
];
const CITIES: [&str; 10] = [
    "Tucson",
    "Fresno",
    "Eugene",
    "Pocatello",
    "Spokane",
    "Laramie",
    "Reno",
    "Provo",
    "Salem",
    "Yuma",
];
const STATES: [&str; 8] = ["AZ", "CA", "ID", "OR", "WA", "WY", "NV", "UT"];
const HOT_CHANNELS: [&str; 4] = ["Search", "Social", "Mail", "Partner"];

/// Generator settings (`spec.job.config.generator`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NexmarkConfig {
    pub seed: u64,
    /// Events in total.
    pub events: u64,
    /// Event-time rate: event `n` happens at `baseTimeMs + n * 1000 / eventsPerSecond`.
    pub events_per_second: u64,
    pub base_time_ms: i64,
    /// Each event's time is lowered by a pseudo-random amount up to this bound, so events
    /// arrive out of order by at most this much.
    pub out_of_order_ms: u64,
    /// Wall-clock pace: the source emits at most this many events a second, shared evenly
    /// by its splits, as a live stream would deliver them. Unset, it emits as fast as the
    /// job takes them. Equal to `eventsPerSecond`, event time keeps pace with the clock.
    pub max_events_per_second: Option<u64>,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            seed: 42,
            events: 1_000_000,
            events_per_second: 100_000,
            // 2026-01-01T00:00:00Z
            base_time_ms: 1_767_225_600_000,
            out_of_order_ms: 0,
            max_events_per_second: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NexmarkError {
    #[error("{field}: {message}")]
    InvalidConfig {
        field: &'static str,
        message: String,
    },
    #[error("line {line}: {message}")]
    BadLine { line: u64, message: String },
}

impl NexmarkConfig {
    pub fn validate(&self) -> Result<(), NexmarkError> {
        if self.events_per_second == 0 {
            return Err(NexmarkError::InvalidConfig {
                field: "eventsPerSecond",
                message: "must be greater than 0".into(),
            });
        }
        if self.max_events_per_second == Some(0) {
            return Err(NexmarkError::InvalidConfig {
                field: "maxEventsPerSecond",
                message: "must be greater than 0 (leave it out for no limit)".into(),
            });
        }
        if self.out_of_order_ms > 86_400_000 {
            return Err(NexmarkError::InvalidConfig {
                field: "outOfOrderMs",
                message: format!("{} exceeds one day", self.out_of_order_ms),
            });
        }
        Ok(())
    }
}

/// SplitMix64: tiny, fast, and good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn for_event(seed: u64, n: u64) -> Self {
        let mut r = Rng(seed ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, n)`; `n` > 0.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn letters(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| (b'a' + self.below(26) as u8) as char)
            .collect()
    }
    /// A length around `target` (±20%).
    fn around(&mut self, target: usize) -> usize {
        let delta = target / 5;
        target - delta + self.below(2 * delta as u64 + 1) as usize
    }
}

/// Strings shared by all events of one seed. They live for the rest of the process (about
/// 1 MiB per distinct seed) so that events can refer to them without reference counts.
struct Pools {
    /// (channel, url) pairs.
    channels: Vec<(&'static str, &'static str)>,
    hot_channels: Vec<(&'static str, &'static str)>,
    /// Padding strings by length.
    padding: Vec<&'static str>,
    /// Random letters; random text is a slice of it at a random offset, which is much
    /// cheaper than drawing every letter.
    text: &'static str,
    /// "First Last" for every pair of names.
    names: Vec<&'static str>,
    /// `10^(6 k / PRICE_STEPS)` for `k` in `0..=PRICE_STEPS`.
    price_steps: Vec<f64>,
}

const PRICE_STEPS: usize = 1024;

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

impl Pools {
    fn for_seed(seed: u64) -> &'static Pools {
        static POOLS: OnceLock<Mutex<HashMap<u64, &'static Pools>>> = OnceLock::new();
        let mut pools = POOLS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pools.entry(seed).or_insert_with(|| {
            let mut rng = Rng::for_event(seed, u64::MAX);
            let url = |rng: &mut Rng, id: usize| {
                leak(format!(
                    "https://auctions.example/{}/{}/item?channel={id}",
                    rng.letters(5),
                    rng.letters(5)
                ))
            };
            let channels = (0..CHANNELS)
                .map(|i| (leak(format!("channel-{i}")), url(&mut rng, i)))
                .collect();
            let hot_channels = HOT_CHANNELS
                .iter()
                .enumerate()
                .map(|(i, c)| (*c, url(&mut rng, CHANNELS + i)))
                .collect();
            let padding = (0..=BID_BYTES).map(|len| leak(rng.letters(len))).collect();
            let names = FIRST_NAMES
                .iter()
                .flat_map(|f| LAST_NAMES.iter().map(move |l| leak(format!("{f} {l}"))))
                .collect();
            let price_steps = (0..=PRICE_STEPS)
                .map(|k| 10f64.powf(6.0 * k as f64 / PRICE_STEPS as f64))
                .collect();
            Box::leak(Box::new(Pools {
                channels,
                hot_channels,
                padding,
                text: leak(rng.letters(TEXT_POOL)),
                names,
                price_steps,
            }))
        })
    }
}

/// Generates events.
pub struct NexmarkGenerator {
    config: NexmarkConfig,
    pools: &'static Pools,
}

const TEXT_POOL: usize = 16 * 1024;

impl NexmarkGenerator {
    pub fn new(config: &NexmarkConfig) -> Self {
        NexmarkGenerator {
            config: config.clone(),
            pools: Pools::for_seed(config.seed),
        }
    }

    /// Prices spread over six orders of magnitude as in the model, `100 * 10^(6u)` for a
    /// uniform `u`, interpolated in a table: a `powf` per bid would cost more than the rest
    /// of the bid.
    fn price(&self, rng: &mut Rng) -> u64 {
        let x = rng.unit() * PRICE_STEPS as f64;
        let k = (x as usize).min(PRICE_STEPS - 1);
        let (lo, hi) = (self.pools.price_steps[k], self.pools.price_steps[k + 1]);
        ((lo + (hi - lo) * (x - k as f64)) * 100.0) as u64
    }

    /// `len` random letters (at most the pool's size).
    fn text(&self, rng: &mut Rng, len: usize) -> String {
        let len = len.min(TEXT_POOL);
        let start = rng.below((TEXT_POOL - len + 1) as u64) as usize;
        self.pools.text[start..start + len].to_string()
    }

    pub fn config(&self) -> &NexmarkConfig {
        &self.config
    }

    /// The time of event `n` before any out-of-order shift.
    fn base_time(&self, n: u64) -> i64 {
        let rate = self.config.events_per_second.max(1);
        // 64-bit division while n * 1000 fits (always, in practice): 128-bit division is
        // several times slower and this runs for every event.
        let offset = match n.checked_mul(1000) {
            Some(ms) => ms / rate,
            None => u64::try_from(u128::from(n) * 1000 / u128::from(rate)).unwrap_or(u64::MAX),
        };
        self.config
            .base_time_ms
            .saturating_add(i64::try_from(offset).unwrap_or(i64::MAX))
    }

    fn time(&self, n: u64, rng: &mut Rng) -> i64 {
        let shift = if self.config.out_of_order_ms == 0 {
            0
        } else {
            rng.below(self.config.out_of_order_ms + 1) as i64
        };
        self.base_time(n) - shift
    }

    /// Event `n`.
    pub fn event(&self, n: u64) -> Event {
        let mut rng = Rng::for_event(self.config.seed, n);
        let ts = self.time(n, &mut rng);
        let slot = n % SHARES;
        if slot < PERSON_SHARE {
            Event::Person(Box::new(self.person(n, ts, &mut rng)))
        } else if slot < PERSON_SHARE + AUCTION_SHARE {
            Event::Auction(Box::new(self.auction(n, ts, &mut rng)))
        } else {
            Event::Bid(self.bid(n, ts, &mut rng))
        }
    }

    /// The event numbers of split `split` of `splits`: `split, split + splits, …`.
    pub fn split_events(&self, split: u64, splits: u64) -> impl Iterator<Item = u64> {
        (split..self.config.events).step_by(splits.max(1) as usize)
    }

    fn person(&self, n: u64, ts: i64, rng: &mut Rng) -> Person {
        let id = last_person(n) + FIRST_PERSON_ID;
        let name = self.pools.names[rng.below(self.pools.names.len() as u64) as usize];
        let email_address = format!("{}@{}.com", self.text(rng, 7), self.text(rng, 5));
        let credit_card = format!(
            "{:04} {:04} {:04} {:04}",
            rng.below(10_000),
            rng.below(10_000),
            rng.below(10_000),
            rng.below(10_000)
        );
        let city = CITIES[rng.below(CITIES.len() as u64) as usize];
        let state = STATES[rng.below(STATES.len() as u64) as usize];
        let used =
            16 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len();
        let extra_len = rng.around(PERSON_BYTES.saturating_sub(used));
        Person {
            id,
            name: Text::Pooled(name),
            email_address,
            credit_card,
            city: Text::Pooled(city),
            state: Text::Pooled(state),
            date_time: EventTime(ts),
            extra: self.text(rng, extra_len),
        }
    }

    fn auction(&self, n: u64, ts: i64, rng: &mut Rng) -> Auction {
        let id = last_auction(n) + FIRST_AUCTION_ID;
        let seller = if rng.below(HOT_SELLER_RATIO) > 0 {
            (last_person(n) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO
        } else {
            next_person(n, rng)
        } + FIRST_PERSON_ID;
        let initial_bid = self.price(rng);
        let reserve = initial_bid + self.price(rng);
        let item_name = self.text(rng, 20);
        let description = self.text(rng, 100);
        let used = 56 + item_name.len() + description.len();
        let extra_len = rng.around(AUCTION_BYTES.saturating_sub(used));
        Auction {
            id,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time: EventTime(ts),
            expires: EventTime(ts + self.auction_length(n, ts, rng)),
            seller,
            category: FIRST_CATEGORY_ID + rng.below(CATEGORIES),
            extra: self.text(rng, extra_len),
        }
    }

    /// About as long as it takes for the next `IN_FLIGHT_AUCTIONS` auctions to open, so that
    /// that many are open at any time.
    fn auction_length(&self, n: u64, ts: i64, rng: &mut Rng) -> i64 {
        let ahead = IN_FLIGHT_AUCTIONS * SHARES / AUCTION_SHARE;
        let horizon = self.base_time(n + ahead) - ts;
        1 + rng.below((horizon * 2).max(1) as u64) as i64
    }

    fn bid(&self, n: u64, ts: i64, rng: &mut Rng) -> Bid {
        let auction = if rng.below(HOT_AUCTION_RATIO) > 0 {
            (last_auction(n) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
        } else {
            next_auction(n, rng)
        } + FIRST_AUCTION_ID;
        let bidder = if rng.below(HOT_BIDDER_RATIO) > 0 {
            (last_person(n) / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1
        } else {
            next_person(n, rng)
        } + FIRST_PERSON_ID;
        let price = self.price(rng);
        let p = self.pools;
        let (channel, url) = if rng.below(HOT_CHANNEL_RATIO) > 0 {
            p.hot_channels[rng.below(p.hot_channels.len() as u64) as usize]
        } else {
            p.channels[rng.below(CHANNELS as u64) as usize]
        };
        // Channel and url take most of the budget, so the padding is short.
        let used = 32 + channel.len() + url.len();
        let extra_len = rng.around(BID_BYTES.saturating_sub(used)).min(BID_BYTES);
        Bid {
            auction,
            bidder,
            price,
            channel: Text::Pooled(channel),
            url: Text::Pooled(url),
            date_time: EventTime(ts),
            extra: Text::Pooled(p.padding[extra_len]),
        }
    }
}

/// The 0-based id of the newest person at or before event `n`.
fn last_person(n: u64) -> u64 {
    // Each epoch of 50 events opens with its person(s), so the newest person at any slot
    // is this epoch's last one.
    (n / SHARES) * PERSON_SHARE + (PERSON_SHARE - 1)
}

/// The 0-based id of the newest auction at or before event `n`.
fn last_auction(n: u64) -> u64 {
    let (epoch, slot) = (n / SHARES, n % SHARES);
    if slot < PERSON_SHARE {
        // Before this epoch's first auction: the last of the previous epoch.
        (epoch * AUCTION_SHARE).saturating_sub(1)
    } else {
        epoch * AUCTION_SHARE + (slot - PERSON_SHARE).min(AUCTION_SHARE - 1)
    }
}

/// A random recent person (possibly one a little ahead of the newest).
fn next_person(n: u64, rng: &mut Rng) -> u64 {
    let people = last_person(n) + 1;
    let active = people.min(ACTIVE_PEOPLE);
    people - active + rng.below(active + ID_LEAD)
}

/// A random auction still in flight (possibly one a little ahead of the newest).
fn next_auction(n: u64, rng: &mut Rng) -> u64 {
    let newest = last_auction(n);
    let oldest = newest.saturating_sub(IN_FLIGHT_AUCTIONS);
    oldest + rng.below(newest - oldest + 1 + ID_LEAD)
}

/// Writes every event of `config` as one JSON line.
pub fn write_events_jsonl(
    config: &NexmarkConfig,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let g = NexmarkGenerator::new(config);
    let mut line = Vec::with_capacity(512);
    for n in 0..config.events {
        line.clear();
        serde_json::to_writer(&mut line, &g.event(n)).map_err(std::io::Error::other)?;
        line.push(b'\n');
        out.write_all(&line)?;
    }
    Ok(())
}

/// Parses one line written by [`write_events_jsonl`]; `line_no` counts from 1.
pub fn parse_event_line(line: &str, line_no: u64) -> Result<Event, NexmarkError> {
    serde_json::from_str(line).map_err(|e| NexmarkError::BadLine {
        line: line_no,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NexmarkConfig {
        NexmarkConfig::default()
    }

    #[test]
    fn events_are_a_pure_function_of_seed_and_number() {
        let (a, b) = (NexmarkGenerator::new(&cfg()), NexmarkGenerator::new(&cfg()));
        for n in [0, 1, 5, 49, 50, 12_345, 999_999] {
            assert_eq!(a.event(n), b.event(n));
        }
        let other = NexmarkGenerator::new(&NexmarkConfig { seed: 7, ..cfg() });
        assert_ne!(a.event(12_345), other.event(12_345));
    }

    #[test]
    fn proportions_and_ids_follow_the_model() {
        let g = NexmarkGenerator::new(&cfg());
        let (mut persons, mut auctions, mut bids) = (0, 0, 0);
        let (mut last_p, mut last_a) = (None, None);
        for n in 0..50_000 {
            match g.event(n) {
                Event::Person(p) => {
                    persons += 1;
                    assert_eq!(p.id, FIRST_PERSON_ID + n / 50);
                    assert!(last_p.is_none_or(|l| p.id == l + 1));
                    last_p = Some(p.id);
                }
                Event::Auction(a) => {
                    auctions += 1;
                    assert!(last_a.is_none_or(|l| a.id == l + 1));
                    last_a = Some(a.id);
                    assert!((10..15).contains(&a.category));
                    assert!(a.reserve >= a.initial_bid && a.expires > a.date_time);
                    // Sellers exist already or are about to.
                    assert!(a.seller <= last_p.unwrap() + ID_LEAD);
                }
                Event::Bid(b) => {
                    bids += 1;
                    assert!(b.auction <= last_a.unwrap_or(FIRST_AUCTION_ID) + ID_LEAD);
                    assert!(b.bidder <= last_p.unwrap() + ID_LEAD + 1);
                }
            }
        }
        assert_eq!((persons, auctions, bids), (1_000, 3_000, 46_000));
    }

    #[test]
    fn sizes_are_close_to_the_standard_ones() {
        let g = NexmarkGenerator::new(&cfg());
        let mut sizes = [(0usize, 0usize); 3];
        for n in 0..20_000 {
            let e = g.event(n);
            let len = e.size_in_bytes();
            let k = match e {
                Event::Person(_) => 0,
                Event::Auction(_) => 1,
                Event::Bid(_) => 2,
            };
            sizes[k].0 += len;
            sizes[k].1 += 1;
        }
        for ((total, count), target) in sizes.iter().zip([PERSON_BYTES, AUCTION_BYTES, BID_BYTES]) {
            let avg = (total / count) as f64;
            let t = target as f64;
            assert!((avg - t).abs() <= 0.15 * t, "average {avg} vs {t}");
        }
    }

    #[test]
    fn about_half_of_the_bids_go_to_hot_auctions() {
        let g = NexmarkGenerator::new(&cfg());
        let hot = (0..50_000)
            .filter_map(|n| match g.event(n) {
                Event::Bid(b) => Some(b),
                _ => None,
            })
            .filter(|b| (b.auction - FIRST_AUCTION_ID).is_multiple_of(HOT_AUCTION_RATIO))
            .count();
        // Half are hot by choice; a quarter more land on an even id by chance.
        let share = hot as f64 / 46_000.0;
        assert!((0.68..0.82).contains(&share), "{share}");
    }

    #[test]
    fn out_of_order_times_stay_within_the_bound() {
        let bound = 500;
        let c = NexmarkConfig {
            out_of_order_ms: bound,
            ..cfg()
        };
        let g = NexmarkGenerator::new(&c);
        let mut shifted = 0;
        for n in 0..20_000 {
            let base = g.base_time(n);
            let t = g.event(n).timestamp().0;
            assert!(base - bound as i64 <= t && t <= base);
            shifted += usize::from(t != base);
        }
        assert!(shifted > 19_000);
    }

    #[test]
    fn json_lines_round_trip_and_bad_lines_name_their_number() {
        let c = NexmarkConfig {
            events: 500,
            ..cfg()
        };
        let mut out = Vec::new();
        write_events_jsonl(&c, &mut out).unwrap();
        let g = NexmarkGenerator::new(&c);
        let text = String::from_utf8(out).unwrap();
        for (i, line) in text.lines().enumerate() {
            assert_eq!(
                parse_event_line(line, i as u64 + 1).unwrap(),
                g.event(i as u64)
            );
        }
        let err = parse_event_line(r#"{"type":"bid","auction":"x"}"#, 17).unwrap_err();
        assert!(err.to_string().starts_with("line 17: "), "{err}");
    }

    #[test]
    fn invalid_config_names_the_field() {
        let err = NexmarkConfig {
            events_per_second: 0,
            ..cfg()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.to_string(), "eventsPerSecond: must be greater than 0");
    }

    #[test]
    #[ignore = "measurement: cargo test --release -p sluice-runtime generation_speed -- --ignored --nocapture"]
    fn generation_speed() {
        let g = NexmarkGenerator::new(&cfg());
        let n = 5_000_000;
        let start = std::time::Instant::now();
        let mut sum = 0u64;
        for i in 0..n {
            if let Event::Bid(b) = g.event(i) {
                sum = sum.wrapping_add(b.price);
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / n as f64;
        println!("{ns:.1} ns/event (checksum {sum})");
    }
}

//! Clicks, and two sources of them: a JSON-lines file (your data, read by the runtime's
//! `JsonLinesSource`) and a deterministic generator (for trying the job without data), a
//! source of the template's own.
//!
//! A source is a fixed number of splits, each read by one subtask; a split reports how far it
//! has read, and reopens at that position when the job restores a snapshot. The number of
//! splits does not depend on the parallelism, so a savepoint restores at any parallelism.

use serde::{Deserialize, Serialize};
use sluice_runtime::api::Record;
use sluice_runtime::connectors::{Poll, Source, SplitReader};
use sluice_runtime::time::EventTime;
use sluice_runtime::Error;

/// One click of a user, as a line of the input:
/// `{"user":"u17","ts":1767225600123,"page":"/cart","amountCents":0}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Click {
    pub user: String,
    /// When the click happened: UTC epoch milliseconds.
    pub ts: EventTime,
    pub page: String,
    /// What the click spent (a purchase), in cents; 0 for a page view.
    #[serde(default)]
    pub amount_cents: u64,
}

impl Click {
    /// A click's event time, for `JsonLinesSource` (the file source).
    pub fn time(&self) -> EventTime {
        self.ts
    }
}

/// The click generator's settings (`spec.job.config.generator`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GeneratorConfig {
    pub seed: u64,
    /// Clicks in total.
    pub clicks: u64,
    pub users: u64,
    /// Event-time rate: click `n` happens at `baseTimeMs + n * 1000 / clicksPerSecond`
    /// (not a throttle: the job reads as fast as it can).
    pub clicks_per_second: u64,
    pub base_time_ms: i64,
    /// Each click's time is lowered by a pseudo-random amount up to this bound, so clicks
    /// arrive out of order by at most this much.
    pub out_of_order_ms: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 7,
            clicks: 1_000_000,
            users: 10_000,
            clicks_per_second: 1_000,
            // 2026-01-01T00:00:00Z
            base_time_ms: 1_767_225_600_000,
            out_of_order_ms: 0,
        }
    }
}

const PAGES: [&str; 8] = [
    "/",
    "/search",
    "/item",
    "/item",
    "/item",
    "/cart",
    "/account",
    "/checkout",
];

/// SplitMix64: a tiny, well-mixed generator; click `n` is a pure function of `(seed, n)`.
struct Mix(u64);

impl Mix {
    fn new(seed: u64, n: u64) -> Self {
        Mix(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, n)`, for `n` > 0.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

impl GeneratorConfig {
    /// Click `n`. A tenth of the users make half of the clicks; purchases happen at checkout.
    pub fn click(&self, n: u64) -> Click {
        let mut mix = Mix::new(self.seed, n);
        let users = self.users.max(1);
        let user = if mix.below(2) == 0 {
            mix.below((users / 10).max(1))
        } else {
            mix.below(users)
        };
        let at = i128::from(n) * 1000 / i128::from(self.clicks_per_second.max(1));
        let jitter = mix.below(self.out_of_order_ms.saturating_add(1));
        let ts = self
            .base_time_ms
            .saturating_add(i64::try_from(at).unwrap_or(i64::MAX))
            .saturating_sub(i64::try_from(jitter).unwrap_or(i64::MAX));
        let page = PAGES[mix.below(PAGES.len() as u64) as usize];
        let amount_cents = if page == "/checkout" {
            100 + mix.below(20_000)
        } else {
            0
        };
        Click {
            user: format!("u{user}"),
            ts: EventTime(ts),
            page: page.to_string(),
            amount_cents,
        }
    }

    /// Clicks `0..clicks` in arrival order.
    pub fn all(&self) -> impl Iterator<Item = Click> + '_ {
        (0..self.clicks).map(|n| self.click(n))
    }
}

/// Generated clicks: split `j` of `k` produces clicks `j, j + k, j + 2k, …`.
pub struct ClickGenerator {
    config: GeneratorConfig,
    splits: usize,
}

impl ClickGenerator {
    pub fn new(config: GeneratorConfig, splits: usize) -> Self {
        ClickGenerator {
            config,
            splits: splits.max(1),
        }
    }
}

struct GeneratorSplit {
    config: GeneratorConfig,
    next: u64,
    step: u64,
    produced: u64,
}

impl Source<Click> for ClickGenerator {
    fn split_count(&self) -> usize {
        self.splits
    }

    fn open_split(&self, split: usize, offset: u64) -> Result<Box<dyn SplitReader<Click>>, Error> {
        let step = self.splits as u64;
        Ok(Box::new(GeneratorSplit {
            config: self.config.clone(),
            next: (split as u64).saturating_add(offset.saturating_mul(step)),
            step,
            produced: offset,
        }))
    }
}

impl SplitReader<Click> for GeneratorSplit {
    fn poll(&mut self, out: &mut Vec<Record<Click>>, max: usize) -> Result<Poll, Error> {
        for _ in 0..max {
            if self.next >= self.config.clicks {
                return Ok(Poll::End);
            }
            let click = self.config.click(self.next);
            out.push(Record::new(click.ts, click));
            self.next += self.step;
            self.produced += 1;
        }
        Ok(Poll::More)
    }

    fn position(&self) -> u64 {
        self.produced
    }
}

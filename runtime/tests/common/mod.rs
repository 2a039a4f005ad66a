//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)] // each test file uses the part it needs

pub mod browser;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod run;
pub mod s3;

use sluice_runtime::api::{
    JobBuilder, KeyedProcessFunction, ProcessContext, Record, WatermarkStrategy,
};
use sluice_runtime::connectors::{DiscardSink, Sink, SinkContext, SinkWriter, VecSource};
use sluice_runtime::state::{StateDescriptor, ValueState};
use sluice_runtime::time::EventTime;
use sluice_runtime::Error;
use std::time::{Duration, Instant};

/// `None` for a test whose outside piece (a browser, a broker, an S3 server) is missing,
/// after saying why; a failure instead when CI requires the piece (`required=1`).
pub fn skip<T>(test: &str, why: &str, required: &str) -> Option<T> {
    assert!(
        std::env::var(required).as_deref() != Ok("1"),
        "{test}: {why} ({required}=1)"
    );
    eprintln!("skipping {test}: {why}");
    None
}

/// A sink whose every write fails with "broken-sink: disk full".
pub struct BrokenSink;

struct BrokenWriter;

impl Sink<u64> for BrokenSink {
    fn open(&self, _: &SinkContext) -> Result<Box<dyn SinkWriter<u64>>, Error> {
        Ok(Box::new(BrokenWriter))
    }
}

impl SinkWriter<u64> for BrokenWriter {
    fn write(&mut self, _: &[Record<u64>]) -> Result<(), Error> {
        Err(Error::Input {
            origin: "broken-sink".into(),
            message: "disk full".into(),
        })
    }
    fn finish(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// Asserts that two sorted lists are equal, reporting sizes and the first difference
/// rather than both lists.
pub fn assert_same<T: PartialEq + std::fmt::Debug>(got: &[T], expected: &[T], what: &str) {
    if got == expected {
        return;
    }
    let first = got
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(expected.len()));
    panic!(
        "{what}: got {} records, expected {}; first difference at {first}:\n got      {:?}\n expected {:?}",
        got.len(),
        expected.len(),
        got.get(first),
        expected.get(first)
    );
}

/// Polls `cond` until it holds, failing the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The card whose two charges overflow its running total in [`card_totals`]: a bug in job
/// code that only this key's data reaches.
pub const OVERFLOWING_CARD: &str = "card-4929-7711-0042";

/// What [`card_totals`] panics with.
pub const OVERFLOW_MESSAGE: &str = "a card's total overflows u64";

/// Running totals per card in keyed state (operator `totals`): charges on twenty cards,
/// then two on [`OVERFLOWING_CARD`] whose sum overflows, and the job panics.
pub fn card_totals(job: &JobBuilder) {
    let mut charges: Vec<Record<(String, u64)>> = (0..200i64)
        .map(|i| Record::new(EventTime(i), (format!("card-{}", i % 20), 100 + i as u64)))
        .collect();
    for (i, amount) in [u64::MAX - 1, 2].into_iter().enumerate() {
        let ts = EventTime(200 + i as i64);
        charges.push(Record::new(ts, (OVERFLOWING_CARD.to_string(), amount)));
    }
    job.source(
        "charges",
        VecSource::new(vec![charges]),
        WatermarkStrategy::monotonous(),
    )
    .key_by(|c: &(String, u64)| c.0.clone())
    .process("totals", |ctx| {
        Ok(CardTotals {
            total: ctx.value_state::<String, u64>(StateDescriptor::new("total"))?,
        })
    })
    .sink("out", DiscardSink);
}

struct CardTotals {
    total: ValueState<u64>,
}

impl KeyedProcessFunction<String, (String, u64), (String, u64)> for CardTotals {
    fn process(
        &mut self,
        (card, amount): (String, u64),
        ctx: &mut ProcessContext<'_, String, (String, u64)>,
    ) {
        let total = ctx.value(self.total).get().unwrap_or(0);
        let total = total.checked_add(amount).expect(OVERFLOW_MESSAGE);
        ctx.value(self.total).set(total);
        ctx.emit((card, total));
    }
}

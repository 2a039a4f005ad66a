//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)] // each test file uses the part it needs

pub mod browser;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod run;
pub mod s3;

use sluice_runtime::api::Record;
use sluice_runtime::connectors::{Sink, SinkContext, SinkWriter};
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

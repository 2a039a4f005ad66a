//! A sink that writes no faster than a set rate: protects a downstream system that cannot
//! take more (a rate-limited API, a small database), at the price of backpressure upstream.

use super::{Sink, SinkContext, SinkWriter};
use crate::api::Record;
use crate::error::Error;
use crate::snapshot::SinkTransaction;
use std::time::{Duration, Instant};

/// Wraps `sink` so that each subtask writes at most `records_per_second`.
pub struct Throttled<S> {
    inner: S,
    records_per_second: u64,
}

impl<S> Throttled<S> {
    pub fn new(inner: S, records_per_second: u64) -> Self {
        Throttled {
            inner,
            records_per_second: records_per_second.max(1),
        }
    }
}

impl<T: 'static, S: Sink<T>> Sink<T> for Throttled<S> {
    fn open(&self, cx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, Error> {
        Ok(Box::new(ThrottledWriter {
            inner: self.inner.open(cx)?,
            records_per_second: self.records_per_second,
            started: Instant::now(),
            written: 0,
        }))
    }
}

struct ThrottledWriter<T> {
    inner: Box<dyn SinkWriter<T>>,
    records_per_second: u64,
    started: Instant,
    written: u64,
}

impl<T> SinkWriter<T> for ThrottledWriter<T> {
    fn write(&mut self, batch: &[Record<T>]) -> Result<(), Error> {
        self.inner.write(batch)?;
        self.written += batch.len() as u64;
        // The time the records written so far may take at the rate; sleep off any lead.
        let due = Duration::from_secs_f64(self.written as f64 / self.records_per_second as f64);
        if let Some(lead) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(lead);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Error> {
        self.inner.finish()
    }

    fn visible_on_commit(&self) -> bool {
        self.inner.visible_on_commit()
    }

    fn pre_commit(
        &mut self,
        checkpoint: u64,
        committed: u64,
    ) -> Result<Vec<SinkTransaction>, Error> {
        self.inner.pre_commit(checkpoint, committed)
    }
}

use super::{Sink, SinkContext, SinkWriter};
use crate::api::Record;
use crate::error::Error;
use std::sync::{Arc, Mutex};

/// Everything a [`CollectSink`] received, shared with the code that started the job.
pub type Collected<T> = Arc<Mutex<Vec<Record<T>>>>;

/// Collects every record in memory (tests, small jobs).
pub struct CollectSink<T> {
    out: Collected<T>,
}

impl<T> CollectSink<T> {
    pub fn new() -> (Self, Collected<T>) {
        let out: Collected<T> = Arc::new(Mutex::new(Vec::new()));
        (CollectSink { out: out.clone() }, out)
    }
}

struct CollectWriter<T> {
    out: Collected<T>,
}

impl<T: Clone + Send + 'static> Sink<T> for CollectSink<T> {
    fn open(&self, _: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, Error> {
        Ok(Box::new(CollectWriter {
            out: self.out.clone(),
        }))
    }
}

impl<T: Clone> SinkWriter<T> for CollectWriter<T> {
    fn write(&mut self, batch: &[Record<T>]) -> Result<(), Error> {
        self.out
            .lock()
            .map_err(|_| Error::Graph("collect sink poisoned by a panic".into()))?
            .extend_from_slice(batch);
        Ok(())
    }
    fn finish(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// Drops every record; the sink's subtask still counts them (benchmarks).
pub struct DiscardSink;

struct DiscardWriter;

impl<T: 'static> Sink<T> for DiscardSink {
    fn open(&self, _: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, Error> {
        Ok(Box::new(DiscardWriter))
    }
}

impl<T> SinkWriter<T> for DiscardWriter {
    fn write(&mut self, _: &[Record<T>]) -> Result<(), Error> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

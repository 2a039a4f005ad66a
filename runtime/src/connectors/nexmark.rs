//! Nexmark events as a source: from the deterministic generator, or from a JSON-lines file
//! written by `sluice nexmark generate` (so results can be checked by any other tool).

use super::{JsonLinesSource, Poll, Source, SplitReader};
use crate::api::Record;
use crate::error::Error;
use crate::nexmark::{Event, NexmarkConfig, NexmarkGenerator};
use std::path::PathBuf;
use std::sync::Arc;

/// Split `j` of `k` produces events `j, j + k, j + 2k, …`: every split advances through
/// event time at the same pace, so no split holds the watermark back.
pub struct NexmarkSource {
    generator: Arc<NexmarkGenerator>,
    events: u64,
    splits: usize,
}

impl NexmarkSource {
    pub fn new(config: &NexmarkConfig, splits: usize) -> Self {
        NexmarkSource {
            generator: Arc::new(NexmarkGenerator::new(config)),
            events: config.events,
            splits: splits.max(1),
        }
    }
}

struct GeneratorReader {
    generator: Arc<NexmarkGenerator>,
    next: u64,
    first: u64,
    step: u64,
    end: u64,
}

impl Source<Event> for NexmarkSource {
    fn split_count(&self) -> usize {
        self.splits
    }

    fn open_split(&self, split: usize, offset: u64) -> Result<Box<dyn SplitReader<Event>>, Error> {
        let step = self.splits as u64;
        Ok(Box::new(GeneratorReader {
            generator: self.generator.clone(),
            next: (split as u64).saturating_add(offset.saturating_mul(step)),
            first: split as u64,
            step: self.splits as u64,
            end: self.events,
        }))
    }
}

impl SplitReader<Event> for GeneratorReader {
    fn poll(&mut self, out: &mut Vec<Record<Event>>, max: usize) -> Result<Poll, Error> {
        for _ in 0..max {
            if self.next >= self.end {
                return Ok(Poll::End);
            }
            let e = self.generator.event(self.next);
            out.push(Record::new(e.timestamp(), e));
            self.next += self.step;
        }
        Ok(Poll::More)
    }

    fn position(&self) -> u64 {
        (self.next - self.first) / self.step
    }
}

/// Events from a JSON-lines file written by `sluice nexmark generate`, each at its own time;
/// split `j` of `k` takes lines `j, j + k, …`, the same interleaving as the generator.
pub fn nexmark_file_source(path: impl Into<PathBuf>, splits: usize) -> JsonLinesSource<Event> {
    JsonLinesSource::new(path, splits, Event::timestamp)
}

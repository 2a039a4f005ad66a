//! Nexmark events as a source: from the deterministic generator, or from a JSON-lines file
//! written by `sluice nexmark generate` (so results can be checked by any other tool).

use super::{Poll, Source, SplitReader};
use crate::api::Record;
use crate::error::Error;
use crate::nexmark::{parse_event_line, Event, NexmarkConfig, NexmarkGenerator};
use std::io::{BufRead, BufReader};
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

/// Reads events from a JSON-lines file; split `j` of `k` takes lines `j, j + k, …`, the
/// same interleaving as the generator.
pub struct NexmarkFileSource {
    path: PathBuf,
    splits: usize,
}

impl NexmarkFileSource {
    pub fn new(path: impl Into<PathBuf>, splits: usize) -> Self {
        NexmarkFileSource {
            path: path.into(),
            splits: splits.max(1),
        }
    }
}

struct FileReader {
    lines: std::io::Lines<BufReader<std::fs::File>>,
    path: PathBuf,
    line_no: u64,
    split: u64,
    step: u64,
    taken: u64,
}

impl Source<Event> for NexmarkFileSource {
    fn split_count(&self) -> usize {
        self.splits
    }

    fn open_split(&self, split: usize, offset: u64) -> Result<Box<dyn SplitReader<Event>>, Error> {
        let file = std::fs::File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let mut reader = FileReader {
            lines: BufReader::with_capacity(1 << 16, file).lines(),
            path: self.path.clone(),
            line_no: 0,
            split: split as u64,
            step: self.splits as u64,
            taken: 0,
        };
        // Lines are not indexed: skip to the position by reading (restores only).
        let target = split as u64 + offset.saturating_mul(self.splits as u64);
        while reader.line_no < target {
            match reader.lines.next() {
                Some(line) => {
                    line.map_err(|e| Error::io(&self.path, e))?;
                    reader.line_no += 1;
                }
                None => break,
            }
        }
        reader.taken = offset;
        Ok(Box::new(reader))
    }
}

impl SplitReader<Event> for FileReader {
    fn poll(&mut self, out: &mut Vec<Record<Event>>, max: usize) -> Result<Poll, Error> {
        let mut taken = 0;
        while taken < max {
            let Some(line) = self.lines.next() else {
                return Ok(Poll::End);
            };
            let line = line.map_err(|e| Error::io(&self.path, e))?;
            self.line_no += 1;
            if (self.line_no - 1) % self.step != self.split {
                continue;
            }
            let event = parse_event_line(&line, self.line_no).map_err(|e| Error::Input {
                origin: self.path.display().to_string(),
                message: e.to_string(),
            })?;
            out.push(Record::new(event.timestamp(), event));
            taken += 1;
            self.taken += 1;
        }
        Ok(Poll::More)
    }

    fn position(&self) -> u64 {
        self.taken
    }
}

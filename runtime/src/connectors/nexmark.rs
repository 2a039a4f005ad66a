//! Nexmark events as a source: from the deterministic generator, or from a JSON-lines file
//! written by `sluice nexmark generate` (so results can be checked by any other tool).

use super::{JsonLinesSource, Poll, Source, SplitReader};
use crate::api::Record;
use crate::error::Error;
use crate::nexmark::{Event, NexmarkConfig, NexmarkGenerator};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

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
    pace: Option<Pace>,
}

/// A split's share of `maxEventsPerSecond`, counted from when the split was opened (a
/// restored split starts its pace again).
struct Pace {
    per_second: f64,
    opened: Instant,
    emitted: u64,
}

impl Pace {
    /// How many events may be emitted now.
    fn allowance(&self) -> u64 {
        let due = (self.opened.elapsed().as_secs_f64() * self.per_second) as u64;
        due.saturating_sub(self.emitted)
    }
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
            pace: self
                .generator
                .config()
                .max_events_per_second
                .map(|max| Pace {
                    per_second: max as f64 / self.splits as f64,
                    opened: Instant::now(),
                    emitted: 0,
                }),
        }))
    }
}

impl SplitReader<Event> for GeneratorReader {
    fn poll(&mut self, out: &mut Vec<Record<Event>>, max: usize) -> Result<Poll, Error> {
        // Ahead of its pace, a split returns nothing: the source task then waits a moment.
        let max = match &self.pace {
            Some(pace) => max.min(usize::try_from(pace.allowance()).unwrap_or(usize::MAX)),
            None => max,
        };
        for _ in 0..max {
            if self.next >= self.end {
                return Ok(Poll::End);
            }
            let e = self.generator.event(self.next);
            out.push(Record::new(e.timestamp(), e));
            self.next += self.step;
        }
        if let Some(pace) = &mut self.pace {
            pace.emitted += max as u64;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A paced split never runs ahead of its share of the rate, and keeps up with it.
    #[test]
    fn a_paced_split_emits_its_share_of_the_rate_and_no_more() {
        let config = NexmarkConfig {
            events: 1_000_000,
            max_events_per_second: Some(4_000),
            ..NexmarkConfig::default()
        };
        let source = NexmarkSource::new(&config, 2);
        let opened = Instant::now();
        let mut split = source.open_split(1, 0).unwrap();
        let mut out = Vec::new();
        while out.len() < 600 {
            assert_eq!(split.poll(&mut out, 1024).unwrap(), Poll::More);
            // 2,000 a second for this split of two.
            let allowed = (opened.elapsed().as_secs_f64() * 2_000.0) as usize;
            assert!(
                out.len() <= allowed,
                "{} events after {:?}",
                out.len(),
                opened.elapsed()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(split.position(), out.len() as u64);
    }

    #[test]
    fn a_pace_of_zero_is_refused_by_name() {
        let config = NexmarkConfig {
            max_events_per_second: Some(0),
            ..NexmarkConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "maxEventsPerSecond: must be greater than 0 (leave it out for no limit)"
        );
    }
}

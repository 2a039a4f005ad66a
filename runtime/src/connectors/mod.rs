//! Sources and sinks.

mod collect;
mod jsonl;
mod nexmark;
mod queue_source;
mod vec_source;

pub use collect::{CollectSink, Collected, DiscardSink};
pub use jsonl::JsonLinesSink;
pub use nexmark::{NexmarkFileSource, NexmarkSource};
pub use queue_source::QueueSource;
pub use vec_source::VecSource;

use crate::api::Record;
use crate::error::Error;

/// What a split reader reports after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Records may follow (any produced are in the batch).
    More,
    /// The split is exhausted; records produced by this poll are in the batch.
    End,
}

/// A source: a fixed set of splits, each read by exactly one subtask.
pub trait Source<T>: Send + Sync + 'static {
    fn split_count(&self) -> usize;
    fn open_split(&self, split: usize) -> Result<Box<dyn SplitReader<T>>, Error>;
}

/// Reads one split. Timestamps are assigned by the reader, from the records themselves.
pub trait SplitReader<T> {
    /// Appends at most `max` records to `out`.
    fn poll(&mut self, out: &mut Vec<Record<T>>, max: usize) -> Result<Poll, Error>;
}

/// A sink; each subtask opens its own writer.
pub trait Sink<T>: Send + Sync + 'static {
    fn open(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SinkWriter<T>>, Error>;
}

pub trait SinkWriter<T> {
    fn write(&mut self, batch: &[Record<T>]) -> Result<(), Error>;
    /// Nothing more will be written.
    fn finish(&mut self) -> Result<(), Error>;
}

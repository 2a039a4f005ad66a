//! Sources and sinks.

mod collect;
mod jsonl;
#[cfg(feature = "kafka")]
pub mod kafka;
mod nexmark;
mod queue_source;
mod throttled;
mod vec_source;

pub use crate::snapshot::{FileTransaction, SinkTransaction, SplitPosition};
pub use collect::{CollectSink, Collected, DiscardSink};
pub use jsonl::JsonLinesSink;
pub use nexmark::{NexmarkFileSource, NexmarkSource};
pub use queue_source::QueueSource;
pub use throttled::Throttled;
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

/// A source: a fixed set of splits, each read by exactly one subtask. The number of splits
/// does not depend on the parallelism, so positions saved at one parallelism restore at any
/// other.
pub trait Source<T>: Send + Sync + 'static {
    fn split_count(&self) -> usize;
    /// Opens `split` so that its next record is record `offset` of the split (as reported by
    /// [`SplitReader::position`] when a snapshot was taken).
    fn open_split(&self, split: usize, offset: u64) -> Result<Box<dyn SplitReader<T>>, Error>;
}

/// Reads one split. Timestamps are assigned by the reader, from the records themselves.
pub trait SplitReader<T> {
    /// Appends at most `max` records to `out`.
    fn poll(&mut self, out: &mut Vec<Record<T>>, max: usize) -> Result<Poll, Error>;
    /// Records of the split handed out so far.
    fn position(&self) -> u64;
    /// The barrier of snapshot `checkpoint` is being taken: the next [`Self::position`] is
    /// what the snapshot records. For readers that report their progress elsewhere.
    fn snapshot_started(&mut self, _checkpoint: u64) {}
    /// Snapshots up to `checkpoint` are complete: the positions they record are durable.
    fn snapshot_complete(&mut self, _checkpoint: u64) {}
}

/// Where a sink writer runs.
#[derive(Clone, Debug)]
pub struct SinkContext {
    pub subtask: usize,
    pub parallelism: usize,
    /// Unique per run of the job: tells this run's files from those of earlier attempts.
    pub run_id: String,
    /// The job's name and the sink operator's uid: stable across runs, unlike `run_id`.
    pub job: String,
    pub uid: String,
    /// The transactions of this sink (all subtasks') listed by the snapshot the run
    /// restored, for sinks that resolve them themselves.
    pub restored: Vec<SinkTransaction>,
}

/// A sink; each subtask opens its own writer.
pub trait Sink<T>: Send + Sync + 'static {
    fn open(&self, cx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, Error>;
}

pub trait SinkWriter<T> {
    fn write(&mut self, batch: &[Record<T>]) -> Result<(), Error>;
    /// Nothing more will be written.
    fn finish(&mut self) -> Result<(), Error>;
    /// A barrier of snapshot `checkpoint` arrived: make everything written so far durable
    /// under a hidden name and return every such transaction not yet committed (those of
    /// snapshots up to `committed` are). The snapshot commits what it lists once complete.
    /// Sinks without transactions return nothing.
    fn pre_commit(
        &mut self,
        _checkpoint: u64,
        _committed: u64,
    ) -> Result<Vec<SinkTransaction>, Error> {
        Ok(Vec::new())
    }
}

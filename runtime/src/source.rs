//! The source contract the engine reads through: a set of splits, each read by one
//! subtask, that may grow while the job runs. Implementations are in `connectors`.

use crate::error::Error;
use crate::record::Record;

/// What a split reader reports after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Records may follow (any produced are in the batch).
    More,
    /// The split is exhausted; records produced by this poll are in the batch.
    End,
}

/// A source: a set of splits, each read by exactly one subtask. The number of splits does
/// not depend on the parallelism, so positions saved at one parallelism restore at any
/// other. Splits are numbered from 0 and only ever added (a Kafka topic's partitions), so
/// split `s` always goes to subtask `s % parallelism` and subtasks take up new splits
/// without asking each other.
pub trait Source<T>: Send + Sync + 'static {
    /// The splits when the job is built.
    fn split_count(&self) -> usize;
    /// Opens `split` so that its next record is record `offset` of the split (as reported by
    /// [`SplitReader::position`] when a snapshot was taken).
    fn open_split(&self, split: usize, offset: u64) -> Result<Box<dyn SplitReader<T>>, Error>;
    /// Opens the splits one subtask reads, each `(split, offset)` as for
    /// [`Self::open_split`]. A source overrides it to share a client among them.
    fn open_splits(&self, splits: &[(usize, u64)]) -> Result<Vec<Box<dyn SplitReader<T>>>, Error> {
        splits
            .iter()
            .map(|&(split, offset)| self.open_split(split, offset))
            .collect()
    }
    /// Opens splits that appeared after the job started (found while it runs, or missing
    /// from the snapshot it restores) at their first record, whatever the source is
    /// configured to start from: every record in them is new to the job.
    fn open_new_splits(&self, splits: &[usize]) -> Result<Vec<Box<dyn SplitReader<T>>>, Error> {
        let from_start: Vec<(usize, u64)> = splits.iter().map(|&split| (split, 0)).collect();
        self.open_splits(&from_start)
    }
    /// For a source whose splits grow while the job runs: the number of splits known now.
    /// Asked often from the task threads, so it must not wait (the source looks elsewhere).
    /// `None`: the splits are fixed.
    fn discovered_split_count(&self) -> Option<usize> {
        None
    }
}

/// Where a split's reader is, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitProgress {
    /// In the split's own terms: events read from the generator, a Kafka partition's next
    /// offset.
    pub position: u64,
    /// Records available past `position`, when the source knows: a Kafka partition's end
    /// offset as last fetched, less `position`.
    pub backlog: Option<u64>,
}

/// Reads one split. Timestamps are assigned by the reader, from the records themselves.
pub trait SplitReader<T> {
    /// Appends at most `max` records to `out`.
    fn poll(&mut self, out: &mut Vec<Record<T>>, max: usize) -> Result<Poll, Error>;
    /// Records of the split handed out so far.
    fn position(&self) -> u64;
    /// Where the reader is, for metrics; called at most a few times a second.
    fn progress(&self) -> SplitProgress {
        SplitProgress {
            position: self.position(),
            backlog: None,
        }
    }
    /// The barrier of snapshot `checkpoint` is being taken: the next [`Self::position`] is
    /// what the snapshot records. For readers that report their progress elsewhere, or
    /// that must make something durable first: an error fails the job before the
    /// snapshot can complete.
    fn snapshot_started(&mut self, _checkpoint: u64) -> Result<(), Error> {
        Ok(())
    }
    /// Snapshots up to `checkpoint` are complete: the positions they record are durable.
    fn snapshot_complete(&mut self, _checkpoint: u64) {}
}

//! The sink contract the engine writes through, and the transactions by which a sink's
//! output becomes visible exactly when a snapshot completes. Implementations are in
//! `connectors`.

use crate::error::Error;
use crate::record::Record;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

mod transaction;
pub(crate) use transaction::manifest_form;
pub use transaction::{
    KafkaRange, KafkaTransaction, OpenTransaction, OpenTransactions, SinkTransaction,
};

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

/// A sink's pre-committed output: a complete file under a hidden name, made visible by
/// renaming it. Committing twice is harmless, so recovery can commit again whatever a
/// completed snapshot lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTransaction {
    /// The checkpoint whose barrier closed the file.
    pub checkpoint: u64,
    pub pending: PathBuf,
    pub committed: PathBuf,
}

impl FileTransaction {
    pub fn commit(&self) -> Result<(), Error> {
        match std::fs::rename(&self.pending, &self.committed) {
            Ok(()) => Ok(()),
            // Already committed by an earlier attempt.
            Err(_) if !self.pending.exists() && self.committed.exists() => Ok(()),
            Err(e) => Err(Error::io(&self.pending, e)),
        }
    }
}

//! The sink contract the engine writes through, and the transactions by which a sink's
//! output becomes visible exactly when a snapshot completes. Implementations are in
//! `connectors`.

use crate::error::Error;
use crate::objects;
use crate::record::Record;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
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
    /// Whether what it writes becomes visible only when a snapshot that lists it commits
    /// (rather than when written): where end-to-end latency is measured to.
    fn visible_on_commit(&self) -> bool {
        false
    }
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

/// A sink's pre-committed output in object storage: a complete object under a hidden key,
/// made visible by copying it to its final key (a copy appears whole or not at all) and
/// deleting the hidden one. Committing twice is harmless.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectTransaction {
    /// The checkpoint whose barrier closed the object.
    pub checkpoint: u64,
    /// The sink's root (`s3://bucket/prefix`, `file:///dir`); the keys are below it.
    pub uri: String,
    pub pending: String,
    pub committed: String,
}

impl ObjectTransaction {
    pub fn committed_uri(&self) -> String {
        format!("{}/{}", self.uri.trim_end_matches('/'), self.committed)
    }

    pub fn commit(&self) -> Result<(), Error> {
        let fail = |message: String| {
            Error::Commit(crate::error::CommitError::Object {
                object: self.committed_uri(),
                checkpoint: self.checkpoint,
                message,
            })
        };
        let store = objects::shared(&self.uri).map_err(fail)?;
        let pending = ObjectPath::from(self.pending.as_str());
        let committed = ObjectPath::from(self.committed.as_str());
        objects::block_on(commit_object(store.as_ref(), &pending, &committed))
            .map_err(fail)?
            .map_err(|e| fail(crate::error::causes(&e)))
    }
}

async fn commit_object(
    store: &dyn ObjectStore,
    pending: &ObjectPath,
    committed: &ObjectPath,
) -> Result<(), object_store::Error> {
    match store.copy(pending, committed).await {
        Ok(()) => {}
        // Committed by an earlier attempt, which also deleted the hidden object.
        Err(object_store::Error::NotFound { .. }) if store.head(committed).await.is_ok() => {
            return Ok(())
        }
        Err(e) => return Err(e),
    }
    match store.delete(pending).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

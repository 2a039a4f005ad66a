//! Execution: turning a job graph into running subtasks.

pub(crate) mod channel;
pub(crate) mod checkpoint;
mod embedded;
pub(crate) mod erased;
pub(crate) mod exchange;
pub(crate) mod graph;
mod launch;
pub mod metrics;
pub(crate) mod net;
pub(crate) mod operator;
mod restore;
mod running;
mod task;

pub use checkpoint::{CheckpointConfig, CheckpointStatus, CompletedSnapshot};
pub use embedded::{start_embedded, Restore, RunOptions};
pub use graph::JobGraph;
pub(crate) use launch::{launch, new_run_id, Placement, RemoteLinks, Supervise, SupervisorParts};
pub use operator::{ControlEvent, LatencyMarker, Operator, TwoInputOperator};
pub(crate) use restore::{assignments, prepare};
pub use running::{InputPosition, JobFailure, JobSummary, RunningJob, SubtaskState, SubtaskStatus};
pub(crate) use task::{one_input_head, two_input_head, HeadArgs, SourceTask, SplitDiscovery, Task};

use crate::error::{Error, FailedKey, StateError, StoppedPeer};
use crate::record::Key;
use crate::snapshot::{RestoredOperator, RestoredState};
use crate::state::{key_group, stable_hash, KeyGroupAssignment};
use crate::time::ProcTime;
use checkpoint::CheckpointControl;
use metrics::TaskMetrics;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The job's processing-time clock. Tests drive a manual clock so that processing-time
/// behaviour (TTL, processing-time windows, idleness) is deterministic.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<AtomicI64>),
}

impl Clock {
    pub fn manual(start: ProcTime) -> Self {
        Clock::Manual(Arc::new(AtomicI64::new(start.0)))
    }

    pub fn now(&self) -> ProcTime {
        match self {
            Clock::System => ProcTime(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            ),
            Clock::Manual(t) => ProcTime(t.load(Ordering::Relaxed)),
        }
    }

    /// Moves a manual clock forward; no effect on the system clock.
    pub fn advance_to(&self, t: ProcTime) {
        if let Clock::Manual(cell) = self {
            cell.fetch_max(t.0, Ordering::Relaxed);
        }
    }
}

/// The first error an operator of a task reports. Operators cannot return errors through
/// the push interface, so they record them here and the task loop stops after the batch.
#[derive(Clone, Default)]
pub(crate) struct FailureCell(Rc<RefCell<Option<Error>>>);

impl FailureCell {
    pub(crate) fn set(&self, error: Error) {
        let mut slot = self.0.borrow_mut();
        if slot.is_none() {
            *slot = Some(error);
        }
    }
    pub(crate) fn take(&self) -> Option<Error> {
        self.0.borrow_mut().take()
    }
}

/// A piece of a subtask's part of a restored snapshot.
pub(crate) enum RestoredPart<'a> {
    KeyGroup(u32, &'a [u8]),
    Item(&'a [u8]),
    Native(&'a crate::snapshot::RestoredNative),
}

/// What an operator learns about where it runs when it is built on its subtask's thread.
#[derive(Clone)]
pub(crate) struct BuildCx {
    pub(crate) uid: String,
    pub(crate) subtask: usize,
    pub(crate) parallelism: usize,
    pub(crate) batch_size: usize,
    /// Which subtask owns each key group of this operator.
    pub(crate) assignment: Arc<KeyGroupAssignment>,
    pub(crate) clock: Clock,
    pub(crate) metrics: Arc<TaskMetrics>,
    pub(crate) failure: FailureCell,
    /// This subtask's index among all subtasks of the job (for snapshot reports).
    pub(crate) task: usize,
    pub(crate) control: Arc<CheckpointControl>,
    /// The snapshot this run starts from.
    pub(crate) restored: Option<Arc<RestoredState>>,
    /// Unique per run: names this run's pending sink files apart from earlier attempts'.
    pub(crate) run_id: Arc<str>,
    pub(crate) state_backend: Arc<crate::state::StateBackend>,
    /// Errors show `<redacted>` for the key a keyed operator failed on.
    pub(crate) redact_keys: bool,
}

impl BuildCx {
    fn restored_operator(&self) -> Option<&RestoredOperator> {
        self.restored.as_ref()?.operators.get(&self.uid)
    }

    /// Reads this subtask's part of the restored snapshot and hands it to `load` piece by
    /// piece: the key groups it owns, its share of the non-keyed items (dealt round-robin),
    /// the RocksDB databases that hold any of its key groups. Nothing else is read; what
    /// was read and how long it took go to the subtask's metrics.
    pub(crate) fn read_restored(
        &self,
        mut load: impl FnMut(RestoredPart<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let (Some(restored), Some(op)) = (self.restored.as_deref(), self.restored_operator())
        else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let owned = self.assignment.owned_by(self.subtask as u32);
        let groups: Vec<(u32, &crate::snapshot::BlobRef)> = owned
            .iter()
            .filter_map(|kg| Some((*kg, op.key_groups.get(kg)?)))
            .collect();
        let mut read =
            restored.read_blobs(&groups, |kg, bytes| load(RestoredPart::KeyGroup(kg, bytes)))?;
        let items: Vec<((), &crate::snapshot::BlobRef)> = op
            .items
            .iter()
            .skip(self.subtask)
            .step_by(self.parallelism)
            .map(|b| ((), b))
            .collect();
        read += restored.read_blobs(&items, |(), bytes| load(RestoredPart::Item(bytes)))?;
        let (databases, downloaded) = restored.native_for(&self.uid, &owned)?;
        read += downloaded;
        for db in &databases {
            load(RestoredPart::Native(db))?;
        }
        self.metrics.record_restore(read, started.elapsed());
        Ok(())
    }

    /// Whether the restored snapshot holds this operator.
    pub(crate) fn restores_operator(&self) -> bool {
        self.restored_operator().is_some()
    }

    /// The restored position of a source split.
    pub(crate) fn restored_split(&self, split: usize) -> Option<crate::snapshot::SplitPosition> {
        self.restored_operator()?.splits.get(&split).copied()
    }

    /// The sink transactions the restored snapshot lists for this operator (every subtask's).
    pub(crate) fn restored_transactions(&self) -> Vec<crate::snapshot::SinkTransaction> {
        let Some(restored) = self.restored.as_ref() else {
            return Vec::new();
        };
        restored
            .content
            .operators
            .iter()
            .filter(|o| o.uid == self.uid)
            .flat_map(|o| o.transactions.iter().cloned())
            .collect()
    }

    /// A keyed-state store for this operator subtask on the run's backend.
    pub(crate) fn keyed_state(&self) -> Result<crate::state::KeyedStateStore, Error> {
        crate::state::KeyedStateStore::with_backend(
            &self.assignment,
            self.subtask as u32,
            &self.state_backend,
            &self.database_name(),
        )
        .map_err(|e| self.state_error(e))
    }

    /// This operator subtask's RocksDB database with the size of the window cache in front
    /// of it, when the run keeps state in RocksDB.
    pub(crate) fn rocks_store(&self) -> Result<Option<(crate::state::RocksStore, usize)>, Error> {
        match self.state_backend.as_ref() {
            crate::state::StateBackend::Heap => Ok(None),
            crate::state::StateBackend::RocksDb(config) => {
                crate::state::RocksStore::open(config, &self.database_name())
                    .map(|store| Some((store, config.window_cache_entries)))
                    .map_err(|e| self.state_error(e))
            }
        }
    }

    /// Names this operator subtask's database directory: unique per run and subtask.
    fn database_name(&self) -> String {
        let safe_uid: String = self
            .uid
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{}/{safe_uid}-{}", self.run_id, self.subtask)
    }

    /// A state error naming this operator, for failures while building or restoring it.
    pub(crate) fn state_error(&self, source: StateError) -> Error {
        Error::State {
            uid: self.uid.clone(),
            source,
        }
    }

    pub(crate) fn fail(&self, message: impl Into<String>) {
        self.failure.set(Error::Task {
            uid: self.uid.clone(),
            subtask: self.subtask,
            key: None,
            message: message.into(),
        });
    }

    /// The error of this subtask when `peer` stopped: a consequence, never a cause.
    #[cold]
    pub(crate) fn peer_stopped(&self, peer: StoppedPeer) -> Error {
        Error::PeerStopped {
            uid: self.uid.clone(),
            subtask: self.subtask,
            peer,
        }
    }

    /// Fails the subtask naming `key`, the key it was processing (redacted if the job says);
    /// `None` when it failed before it had one.
    #[cold]
    pub(crate) fn fail_at_key<K: Key>(&self, key: Option<&K>, message: impl Into<String>) {
        let key = key.map(|k| {
            let key_group = key_group(stable_hash(k), self.assignment.max_parallelism());
            FailedKey::new(k, key_group, self.redact_keys)
        });
        self.failure.set(Error::Task {
            uid: self.uid.clone(),
            subtask: self.subtask,
            key,
            message: message.into(),
        });
    }
}

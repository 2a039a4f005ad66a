//! Embedded execution: every subtask of every chain is a thread of this process.

use super::checkpoint::{CheckpointConfig, Coordinator};
use super::launch::{launch, Supervise, SupervisorParts};
use super::restore::prepare;
use super::running::RunningJob;
use super::{Clock, JobGraph};
use crate::error::Error;
use crate::snapshot::CheckpointStorage;
use std::collections::HashMap;

/// Where a run's state comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restore {
    /// The latest complete checkpoint in the run's checkpoint storage; an empty storage
    /// starts the job from scratch.
    Latest,
    /// The latest complete checkpoint, or this snapshot while the storage has none: how a
    /// supervised run (the operator's) starts from a savepoint once and from its own
    /// checkpoints after every restart.
    LatestOr(String),
    /// A checkpoint or savepoint directory (`…/chk-<id>`, `…/sp-<id>`).
    Snapshot(String),
}

/// Tunables of a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Records per batch moved between operators.
    pub batch_size: usize,
    /// Batches a channel holds before its producer blocks (backpressure).
    pub channel_capacity: usize,
    pub clock: Clock,
    pub checkpoints: Option<CheckpointConfig>,
    pub restore: Option<Restore>,
    /// Restore even when some state of the snapshot has no operator to go to (it is dropped).
    pub allow_non_restored_state: bool,
    /// Where keyed state lives.
    pub state_backend: crate::state::StateBackend,
    /// Errors show `<redacted>` for the key a keyed operator failed on (`spec.redactKeys`).
    pub redact_keys: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            batch_size: 1024,
            channel_capacity: 8,
            clock: Clock::System,
            checkpoints: None,
            restore: None,
            allow_non_restored_state: false,
            state_backend: crate::state::StateBackend::Heap,
            redact_keys: false,
        }
    }
}

/// Starts every subtask of `graph` on its own thread.
pub fn start_embedded(graph: JobGraph, options: RunOptions) -> Result<RunningJob, Error> {
    let prepared = prepare(&graph, &options, true)?;
    let storage = match &options.checkpoints {
        Some(c) => Some(CheckpointStorage::open(&c.storage)?),
        None => None,
    };
    let next_id = match &storage {
        Some(s) => s.next_id()?,
        None => 1,
    }
    .max(prepared.restored.as_ref().map_or(0, |r| r.id + 1));
    let config = options.checkpoints.clone();
    let supervise: Supervise = Box::new(move |parts: SupervisorParts| {
        Coordinator {
            layout: parts.layout,
            tasks: parts.tasks,
            config,
            storage,
            next_id,
            link: Box::new(parts.control),
            reports: parts.reports,
            commands: parts.commands,
            cancel: parts.cancel,
            status: parts.status,
            uploaded: HashMap::new(),
        }
        .run()
    });
    launch(graph, options, prepared, None, supervise)
}

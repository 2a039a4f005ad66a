//! Where a run's state comes from: the snapshot to restore, loaded and checked against
//! the job before anything runs, and the key groups each subtask owns.

use super::checkpoint::{commit_all, CheckpointStatus};
use super::embedded::{Restore, RunOptions};
use super::JobGraph;
use crate::error::Error;
use crate::snapshot::{CheckpointStorage, Compatibility, RestoredState, SnapshotContent};
use crate::state::KeyGroupAssignment;
use std::collections::HashMap;
use std::sync::Arc;

/// The snapshot to start from, checked against the job before anything runs.
fn load_restore(
    graph: &JobGraph,
    options: &RunOptions,
    status: &mut CheckpointStatus,
    commit_restored: bool,
) -> Result<Option<RestoredState>, Error> {
    let Some(restore) = &options.restore else {
        return Ok(None);
    };
    let (storage, manifest) = match restore {
        Restore::Latest | Restore::LatestOr(_) => {
            let config = options.checkpoints.as_ref().ok_or_else(|| {
                Error::Checkpoint("restoring the latest checkpoint needs checkpoint storage".into())
            })?;
            let storage = CheckpointStorage::open(&config.storage)?;
            match storage.latest_restorable() {
                Ok(r) => {
                    for skipped in &r.skipped {
                        tracing::warn!("restore: {skipped}");
                    }
                    status.skipped_at_restore = r.skipped;
                    (storage, r.manifest)
                }
                Err(crate::snapshot::SnapshotError::NoCheckpoint { .. }) => {
                    if let Restore::LatestOr(initial) = restore {
                        tracing::info!(
                            storage = %config.storage,
                            "restore: no complete checkpoint in {}; starting from {initial}",
                            config.storage
                        );
                        open_snapshot(initial)?
                    } else {
                        tracing::info!(
                            storage = %config.storage,
                            "restore: no complete checkpoint in {}; starting from empty state",
                            config.storage
                        );
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Restore::Snapshot(location) => open_snapshot(location)?,
    };
    // Downloaded databases go beside the local state, so removing that removes them too.
    let scratch = match &options.state_backend {
        crate::state::StateBackend::RocksDb(config) => config.dir.clone(),
        crate::state::StateBackend::Heap => std::env::temp_dir().join("sluice-state"),
    };
    let restored = RestoredState::load(storage, &manifest, &scratch)?;
    let compat = Compatibility::check(
        &restored.content,
        graph.max_parallelism,
        &graph.declared_operators()?,
    );
    if let Some(why) = compat.refusal(options.allow_non_restored_state) {
        return Err(Error::Checkpoint(format!(
            "cannot restore {}: {why}",
            restored.location()
        )));
    }
    // Output the snapshot covers is committed, even if the failed run did not get to it.
    if commit_restored {
        commit_all(&restored.content.transactions().cloned().collect::<Vec<_>>())?;
    }
    let location = restored.location();
    tracing::info!(
        checkpoint = manifest.checkpoint,
        "restoring from {location}"
    );
    status.restored_from = Some(location);
    Ok(Some(restored))
}

fn open_snapshot(location: &str) -> Result<(CheckpointStorage, crate::snapshot::Manifest), Error> {
    let (storage, id) = CheckpointStorage::open_snapshot(location)?;
    // Loading checks every file against its checksum; no separate verification pass.
    let manifest = storage.manifest(id)?;
    Ok((storage, manifest))
}

/// The key-group owners of every stateful operator: restored from the snapshot (rescaled
/// keeping as many owners as possible when the parallelism changed) or contiguous ranges.
pub(crate) fn assignments(
    graph: &JobGraph,
    restored: Option<&SnapshotContent>,
) -> Result<HashMap<usize, Arc<KeyGroupAssignment>>, Error> {
    let mut out = HashMap::new();
    for (n, node) in graph.nodes.iter().enumerate() {
        let p = node.parallelism as u32;
        let previous = restored
            .and_then(|r| r.operators.iter().find(|o| o.uid == node.uid))
            .filter(|o| o.assignment.len() == graph.max_parallelism as usize);
        let assignment = match previous {
            Some(o) => {
                let before =
                    KeyGroupAssignment::from_owners(o.assignment.clone(), o.parallelism as u32)
                        .map_err(|e| Error::Checkpoint(format!("operator '{}': {e}", node.uid)))?;
                if before.parallelism() == p {
                    before
                } else {
                    before.rescaled(p)
                }
            }
            None => KeyGroupAssignment::contiguous(graph.max_parallelism, p),
        };
        out.insert(n, Arc::new(assignment));
    }
    Ok(out)
}

/// Where a run's state comes from, loaded and checked before anything runs.
pub(crate) struct Prepared {
    pub(crate) restored: Option<Arc<RestoredState>>,
    pub(crate) assignments: Arc<HashMap<usize, Arc<KeyGroupAssignment>>>,
    pub(crate) status: CheckpointStatus,
}

/// Loads the snapshot `options` restores from (committing the output it covers when
/// `commit_restored`) and assigns key groups.
pub(crate) fn prepare(
    graph: &JobGraph,
    options: &RunOptions,
    commit_restored: bool,
) -> Result<Prepared, Error> {
    let mut status = CheckpointStatus::default();
    let restored = load_restore(graph, options, &mut status, commit_restored)?.map(Arc::new);
    let assignments = Arc::new(assignments(graph, restored.as_deref().map(|r| &r.content))?);
    Ok(Prepared {
        restored,
        assignments,
        status,
    })
}

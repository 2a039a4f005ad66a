//! What travels through a running job when a snapshot is taken: the barrier, and what each
//! subtask's operators hand back — keyed state per key group, non-keyed state items, source
//! positions and sink transactions.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::Hash;
use std::path::PathBuf;

use crate::state::{key_group, stable_hash};

/// Why a barrier flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    Checkpoint,
    Savepoint,
    /// A subtask reached the end of its input: its last state, never sent downstream (the
    /// end of input follows it).
    Final,
}

/// Cuts the streams into before and after a snapshot. Sources inject it; an operator with
/// several inputs takes its snapshot once the barrier has arrived on every input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Barrier {
    pub checkpoint: u64,
    pub kind: SnapshotKind,
}

/// How far a source split has been read: the next record is record `offset` of the split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitPosition {
    pub split: usize,
    pub offset: u64,
    pub done: bool,
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
    pub fn commit(&self) -> Result<(), crate::Error> {
        match std::fs::rename(&self.pending, &self.committed) {
            Ok(()) => Ok(()),
            // Already committed by an earlier attempt.
            Err(_) if !self.pending.exists() && self.committed.exists() => Ok(()),
            Err(e) => Err(crate::Error::io(&self.pending, e)),
        }
    }
}

/// Encodes key groups of state that was pinned when the barrier passed; runs on the
/// coordinator, off the task thread.
pub(crate) type DeferredFn = Box<dyn FnOnce() -> Result<Vec<(u32, Vec<u8>)>, String> + Send>;

/// Key groups still to be encoded. The coordinator resolves them as soon as it receives
/// the part, before it keeps or copies it, so a copy never needs them.
#[derive(Default)]
pub struct Deferred(pub(crate) Option<DeferredFn>);

impl Clone for Deferred {
    fn clone(&self) -> Self {
        Deferred(None)
    }
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "pending" } else { "none" })
    }
}

/// One operator instance's part of a snapshot.
#[derive(Clone, Debug, Default)]
pub struct OperatorSnapshot {
    pub uid: String,
    pub subtask: usize,
    /// Keyed state in the canonical format, per key group.
    pub key_groups: Vec<(u32, Vec<u8>)>,
    /// Non-keyed state; on restore the items are dealt round-robin to the new subtasks.
    pub items: Vec<Vec<u8>>,
    pub splits: Vec<SplitPosition>,
    pub transactions: Vec<FileTransaction>,
    pub deferred: Deferred,
}

/// What one subtask (a chain of operators) contributed to a snapshot.
#[derive(Clone, Debug, Default)]
pub struct TaskSnapshot {
    pub operators: Vec<OperatorSnapshot>,
}

impl TaskSnapshot {
    /// Encodes every deferred part (the asynchronous part of the snapshot).
    pub(crate) fn resolve(&mut self) -> Result<(), String> {
        for op in &mut self.operators {
            if let Some(encode) = op.deferred.0.take() {
                let groups = encode().map_err(|e| format!("operator '{}': {e}", op.uid))?;
                op.key_groups.extend(groups);
                op.key_groups.sort_by_key(|(kg, _)| *kg);
            }
        }
        Ok(())
    }

    pub(crate) fn operator(&mut self, uid: &str, subtask: usize) -> &mut OperatorSnapshot {
        self.operators.push(OperatorSnapshot {
            uid: uid.to_string(),
            subtask,
            ..OperatorSnapshot::default()
        });
        let last = self.operators.len() - 1;
        &mut self.operators[last]
    }
}

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serialize(value).map_err(|e| format!("cannot encode state: {e}"))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::deserialize(bytes).map_err(|e| format!("cannot decode state: {e}"))
}

/// Groups per-key entries by the key group of their key and encodes each group, for
/// operators that keep keyed state of their own (windows, joins).
pub(crate) fn encode_by_key_group<K: Hash, E: Serialize>(
    max_parallelism: u32,
    entries: impl Iterator<Item = (K, E)>,
) -> Result<Vec<(u32, Vec<u8>)>, String> {
    let mut groups: BTreeMap<u32, Vec<E>> = BTreeMap::new();
    for (key, entry) in entries {
        groups
            .entry(key_group(stable_hash(&key), max_parallelism))
            .or_default()
            .push(entry);
    }
    groups
        .into_iter()
        .map(|(kg, entries)| Ok((kg, encode(&entries)?)))
        .collect()
}

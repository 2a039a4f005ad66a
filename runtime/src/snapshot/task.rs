//! What travels through a running job when a snapshot is taken: the barrier, and what each
//! subtask's operators hand back — keyed state per key group, non-keyed state items, source
//! positions and sink transactions.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::Hash;

use crate::error::{SnapshotError, StateError};
use crate::sink::SinkTransaction;
use crate::snapshot::{CheckpointStorage, FileEntry, SHARED};
use crate::state::PinnedNative;
use crate::state::{key_group, stable_hash};
use std::collections::HashMap;

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

/// Encodes key groups of state that was pinned when the barrier passed; runs on the
/// coordinator, off the task thread.
pub(crate) type DeferredFn = Box<dyn FnOnce() -> Result<Vec<(u32, Vec<u8>)>, StateError> + Send>;

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

/// The files of a RocksDB checkpoint in storage: table files are uploaded once and shared
/// by every later checkpoint that still has them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeRef {
    pub instance: String,
    pub groups: Vec<u32>,
    pub states: Vec<String>,
    /// `(name in the database directory, the stored file)`.
    pub files: Vec<(String, crate::snapshot::FileEntry)>,
}

/// RocksDB state in its own format: incremental checkpoints.
#[derive(Clone, Debug)]
pub enum Native {
    Pinned(PinnedNative),
    Uploaded(NativeRef),
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
    pub transactions: Vec<SinkTransaction>,
    pub deferred: Deferred,
    pub native: Option<Native>,
}

/// What one subtask (a chain of operators) contributed to a snapshot.
#[derive(Clone, Debug, Default)]
pub struct TaskSnapshot {
    pub operators: Vec<OperatorSnapshot>,
}

impl TaskSnapshot {
    /// The asynchronous part of the snapshot: encodes deferred key groups and uploads the
    /// files of pinned RocksDB checkpoints not yet in `storage` (`uploaded` remembers those
    /// that are). Without storage, pinned checkpoints are released.
    /// Returns the bytes uploaded.
    pub(crate) fn resolve(
        &mut self,
        storage: Option<&CheckpointStorage>,
        uploaded: &mut HashMap<String, FileEntry>,
    ) -> Result<u64, SnapshotError> {
        let mut bytes = 0;
        for op in &mut self.operators {
            if let Some(encode) = op.deferred.0.take() {
                let groups = encode().map_err(|e| SnapshotError::Part {
                    uid: op.uid.clone(),
                    source: Box::new(e.into()),
                })?;
                op.key_groups.extend(groups);
                op.key_groups.sort_by_key(|(kg, _)| *kg);
            }
            if let Some(Native::Pinned(pinned)) = &op.native {
                let result = match storage {
                    Some(storage) => {
                        upload(storage, pinned, uploaded, &mut bytes).map(Native::Uploaded)
                    }
                    None => Err(SnapshotError::NoStorage),
                };
                // The pin's directory goes with its last handle, whatever happened here.
                match result {
                    Ok(native) => op.native = Some(native),
                    Err(_) if storage.is_none() => op.native = None,
                    Err(e) => {
                        return Err(SnapshotError::Part {
                            uid: op.uid.clone(),
                            source: Box::new(e),
                        })
                    }
                }
            }
        }
        Ok(bytes)
    }

    /// The shared files this part refers to.
    pub(crate) fn shared_files(&self) -> impl Iterator<Item = &str> {
        self.operators.iter().flat_map(|op| match &op.native {
            Some(Native::Uploaded(r)) => r.files.iter().map(|(_, e)| e.name.as_str()).collect(),
            _ => Vec::new(),
        })
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

/// Uploads the files of a pinned RocksDB checkpoint: table files once per database
/// (they never change), the small files that describe this checkpoint every time.
fn upload(
    storage: &CheckpointStorage,
    pinned: &PinnedNative,
    uploaded: &mut HashMap<String, FileEntry>,
    bytes_uploaded: &mut u64,
) -> Result<NativeRef, SnapshotError> {
    let local = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Local { path, source }
    };
    let mut files = Vec::new();
    let dir = pinned.checkpoint.wait()?;
    let listing = std::fs::read_dir(&dir).map_err(local(&dir))?;
    for entry in listing {
        let path = entry.map_err(local(&dir))?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let table = name.ends_with(".sst");
        let stored = if table {
            format!("{SHARED}/{}/{name}", pinned.instance)
        } else {
            format!("{SHARED}/{}/{}-{name}", pinned.instance, pinned.pin)
        };
        let file = match uploaded.get(&stored) {
            Some(existing) if table => existing.clone(),
            _ => {
                let bytes = std::fs::read(&path).map_err(local(&path))?;
                let file = storage.write_shared(&stored, bytes)?;
                *bytes_uploaded += file.size;
                uploaded.insert(stored, file.clone());
                file
            }
        };
        files.push((name, file));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(NativeRef {
        instance: pinned.instance.clone(),
        groups: pinned.groups.clone(),
        states: pinned.states.clone(),
        files,
    })
}

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StateError> {
    bincode::serialize(value).map_err(StateError::encode("state"))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StateError> {
    bincode::deserialize(bytes).map_err(StateError::decode("state"))
}

/// Groups per-key entries by the key group of their key and encodes each group, for
/// operators that keep keyed state of their own (windows, joins).
pub(crate) fn encode_by_key_group<K: Hash, E: Serialize>(
    max_parallelism: u32,
    entries: impl Iterator<Item = (K, E)>,
) -> Result<Vec<(u32, Vec<u8>)>, StateError> {
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

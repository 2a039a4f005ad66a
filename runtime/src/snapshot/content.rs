//! The runtime's description of a snapshot (the manifest's `content`), how a completed
//! snapshot is written from the subtasks' parts, and how it is read back for a restore at
//! any parallelism.

use super::storage::{CheckpointStorage, Manifest, SnapshotError, MANIFEST_VERSION};
use super::task::{Native, NativeRef, SnapshotKind, SplitPosition, TaskSnapshot};
use crate::sink::SinkTransaction;
use crate::state::{RestoredNative, StateSchema};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;

/// Where a piece of state lies: a byte range of one of the snapshot's files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub file: String,
    pub offset: u64,
    pub len: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorContent {
    pub uid: String,
    pub parallelism: usize,
    pub stateful: bool,
    pub states: Vec<StateSchema>,
    /// The subtask that owned each key group (index) when the snapshot was taken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignment: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_groups: Vec<(u32, BlobRef)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<BlobRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub splits: Vec<SplitPosition>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "crate::sink::manifest_form"
    )]
    pub transactions: Vec<SinkTransaction>,
    /// RocksDB state in its own format (incremental checkpoints), per database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub native: Vec<NativeRef>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotContent {
    pub kind: SnapshotKind,
    pub max_parallelism: u32,
    pub operators: Vec<OperatorContent>,
}

impl SnapshotContent {
    pub fn from_manifest(manifest: &Manifest) -> Result<Self, SnapshotError> {
        serde_json::from_value(manifest.content.clone()).map_err(|e| SnapshotError::Corrupt {
            path: format!("manifest of snapshot {}", manifest.checkpoint),
            message: format!("unreadable content: {e}"),
        })
    }

    /// The content of the checkpoint or savepoint directory `location` (a path, `file://` or
    /// `s3://` URI), once every file of it matched its checksum.
    pub fn read_verified(location: &str) -> Result<Self, SnapshotError> {
        let (storage, id) = CheckpointStorage::open_snapshot(location)?;
        Self::from_manifest(&storage.verify(id)?)
    }

    /// Every sink transaction the snapshot lists.
    pub fn transactions(&self) -> impl Iterator<Item = &SinkTransaction> {
        self.operators.iter().flat_map(|o| o.transactions.iter())
    }
}

/// What the job being restored declares about one operator.
#[derive(Clone, Debug)]
pub struct DeclaredOperator {
    pub uid: String,
    pub parallelism: usize,
    pub stateful: bool,
    pub states: Vec<StateSchema>,
}

/// What every snapshot of a run records about the job.
pub(crate) struct JobLayout {
    pub(crate) job: String,
    pub(crate) max_parallelism: u32,
    pub(crate) declared: Vec<DeclaredOperator>,
    /// Key-group owners by operator uid.
    pub(crate) assignments: HashMap<String, Vec<u32>>,
}

/// Builds a snapshot's files and manifest from the parts every subtask sent.
/// A snapshot written: its manifest, and what each stateful operator's state takes in
/// storage (its own files and the shared files its RocksDB state lists), in declaration
/// order.
pub(crate) struct Written {
    pub(crate) manifest: Manifest,
    pub(crate) operator_bytes: Vec<(String, u64)>,
}

pub(crate) fn write_snapshot(
    storage: &CheckpointStorage,
    layout: &JobLayout,
    id: u64,
    kind: SnapshotKind,
    parts: Vec<TaskSnapshot>,
) -> Result<Written, SnapshotError> {
    let (job, max_parallelism, declared, assignments) = (
        layout.job.as_str(),
        layout.max_parallelism,
        &layout.declared,
        &layout.assignments,
    );
    let mut by_uid: BTreeMap<String, Vec<super::task::OperatorSnapshot>> = BTreeMap::new();
    for part in parts {
        for op in part.operators {
            by_uid.entry(op.uid.clone()).or_default().push(op);
        }
    }
    let mut files = Vec::new();
    let mut shared = Vec::new();
    let mut operators = Vec::new();
    let mut operator_bytes = Vec::new();
    for (index, d) in declared.iter().enumerate() {
        let mut stored = 0;
        let mut content = OperatorContent {
            uid: d.uid.clone(),
            parallelism: d.parallelism,
            stateful: d.stateful,
            states: d.states.clone(),
            assignment: if d.stateful {
                assignments.get(&d.uid).cloned().unwrap_or_default()
            } else {
                Vec::new()
            },
            key_groups: Vec::new(),
            items: Vec::new(),
            splits: Vec::new(),
            transactions: Vec::new(),
            native: Vec::new(),
        };
        let mut parts = by_uid.remove(&d.uid).unwrap_or_default();
        parts.sort_by_key(|p| p.subtask);
        for part in parts {
            let name = format!("op{index:03}-{:04}.state", part.subtask);
            let mut bytes = Vec::new();
            let mut blob = |data: &[u8]| {
                let r = BlobRef {
                    file: name.clone(),
                    offset: bytes.len() as u64,
                    len: data.len() as u64,
                };
                bytes.extend_from_slice(data);
                r
            };
            for (kg, data) in &part.key_groups {
                content.key_groups.push((*kg, blob(data)));
            }
            for item in &part.items {
                content.items.push(blob(item));
            }
            if !bytes.is_empty() {
                stored += bytes.len() as u64;
                files.push(storage.write_file(id, &name, bytes)?);
            }
            content.splits.extend(part.splits);
            content.transactions.extend(part.transactions);
            match part.native {
                Some(Native::Uploaded(r)) => {
                    stored += r.files.iter().map(|(_, f)| f.size).sum::<u64>();
                    shared.extend(r.files.iter().map(|(_, f)| f.clone()));
                    content.native.push(r);
                }
                Some(Native::Pinned(_)) => {
                    return Err(SnapshotError::Corrupt {
                        path: format!("snapshot {id}"),
                        message: format!("RocksDB state of '{}' was never uploaded", d.uid),
                    })
                }
                None => {}
            }
        }
        content.key_groups.sort_by_key(|(kg, _)| *kg);
        content.splits.sort_by_key(|s| s.split);
        operators.push(content);
        if d.stateful {
            operator_bytes.push((d.uid.clone(), stored));
        }
    }
    let content = SnapshotContent {
        kind,
        max_parallelism,
        operators,
    };
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        checkpoint: id,
        job: job.to_string(),
        files,
        shared,
        content: serde_json::to_value(&content).map_err(|e| SnapshotError::Corrupt {
            path: format!("snapshot {id}"),
            message: e.to_string(),
        })?,
    };
    storage.complete(&manifest)?;
    Ok(Written {
        manifest,
        operator_bytes,
    })
}

/// One operator's part of a snapshot being restored.
#[derive(Default)]
pub struct RestoredOperator {
    pub key_groups: HashMap<u32, Vec<u8>>,
    pub items: Vec<Vec<u8>>,
    pub splits: HashMap<usize, SplitPosition>,
    pub native: Vec<RestoredNative>,
}

/// A verified snapshot, loaded for the subtasks of a new run to take their parts from.
pub struct RestoredState {
    pub id: u64,
    pub operators: HashMap<String, RestoredOperator>,
    pub content: SnapshotContent,
    /// Local copies of RocksDB databases, removed with this value.
    local: Option<PathBuf>,
}

impl Drop for RestoredState {
    fn drop(&mut self) {
        if let Some(dir) = &self.local {
            // Only a local copy of what storage holds.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Downloads the files of a RocksDB database into `dir`, checking each.
fn download(
    storage: &CheckpointStorage,
    native: &NativeRef,
    dir: &std::path::Path,
) -> Result<(), SnapshotError> {
    let io = |e: std::io::Error| SnapshotError::Corrupt {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    for (name, entry) in &native.files {
        let bytes = storage.read_shared(entry)?;
        std::fs::write(dir.join(name), bytes).map_err(io)?;
    }
    Ok(())
}

impl RestoredState {
    /// Reads every file of snapshot `manifest` (each is checked against its checksum).
    /// RocksDB databases are downloaded into a new directory under `scratch`, removed when
    /// the restored state is dropped.
    pub fn load(
        storage: &CheckpointStorage,
        manifest: &Manifest,
        scratch: &std::path::Path,
    ) -> Result<Self, SnapshotError> {
        let content = SnapshotContent::from_manifest(manifest)?;
        let mut files: HashMap<String, Vec<u8>> = HashMap::new();
        for entry in &manifest.files {
            files.insert(
                entry.name.clone(),
                storage.read_file(manifest.checkpoint, entry)?,
            );
        }
        let slice = |r: &BlobRef| -> Result<Vec<u8>, SnapshotError> {
            let file = files.get(&r.file).ok_or_else(|| SnapshotError::Corrupt {
                path: r.file.clone(),
                message: "named by the manifest but not listed in it".into(),
            })?;
            // Checked: the offsets come from the manifest, which may be corrupt.
            let start = usize::try_from(r.offset).ok();
            let end = r
                .offset
                .checked_add(r.len)
                .and_then(|e| usize::try_from(e).ok());
            start
                .zip(end)
                .and_then(|(start, end)| file.get(start..end))
                .map(<[u8]>::to_vec)
                .ok_or_else(|| SnapshotError::Corrupt {
                    path: r.file.clone(),
                    message: format!(
                        "{} bytes at {} beyond its {} bytes",
                        r.len,
                        r.offset,
                        file.len()
                    ),
                })
        };
        let mut operators = HashMap::new();
        let local = content
            .operators
            .iter()
            .any(|o| !o.native.is_empty())
            .then(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                scratch.join(format!("restore-{}-{nanos}", std::process::id()))
            });
        for op in &content.operators {
            let mut restored = RestoredOperator::default();
            for (kg, r) in &op.key_groups {
                restored.key_groups.insert(*kg, slice(r)?);
            }
            for r in &op.items {
                restored.items.push(slice(r)?);
            }
            for s in &op.splits {
                restored.splits.insert(s.split, *s);
            }
            for native in &op.native {
                let Some(root) = &local else { continue };
                let dir = root.join(&native.instance);
                download(storage, native, &dir)?;
                restored.native.push(RestoredNative {
                    dir,
                    groups: native.groups.clone(),
                    states: native.states.clone(),
                });
            }
            operators.insert(op.uid.clone(), restored);
        }
        Ok(RestoredState {
            id: manifest.checkpoint,
            operators,
            content,
            local,
        })
    }
}

/// How a snapshot's state fits the operators of a job.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Compatibility {
    /// Stateful operators of the snapshot the job does not have (uid renamed or removed).
    pub missing_operators: Vec<String>,
    /// `(uid, state)` in the snapshot that the operator no longer declares.
    pub missing_states: Vec<(String, String)>,
    /// `(uid, state, snapshot version, job version)` with a different schema version.
    pub incompatible: Vec<(String, String, u32, u32)>,
    /// Operators of the job with no state in the snapshot; they start empty.
    pub new_operators: Vec<String>,
    /// The job's max parallelism differs from the snapshot's: key groups would not match.
    pub max_parallelism: Option<(u32, u32)>,
}

impl Compatibility {
    pub fn check(content: &SnapshotContent, job_max: u32, job: &[DeclaredOperator]) -> Self {
        let mut c = Compatibility::default();
        if content.max_parallelism != job_max {
            c.max_parallelism = Some((content.max_parallelism, job_max));
        }
        let declared: HashMap<&str, &DeclaredOperator> =
            job.iter().map(|d| (d.uid.as_str(), d)).collect();
        for op in content.operators.iter() {
            let has_state = !op.key_groups.is_empty()
                || !op.items.is_empty()
                || !op.native.is_empty()
                || !op.splits.is_empty();
            let Some(d) = declared.get(op.uid.as_str()) else {
                if has_state || (op.stateful && !op.states.is_empty()) {
                    c.missing_operators.push(op.uid.clone());
                }
                continue;
            };
            for s in &op.states {
                match d.states.iter().find(|x| x.name == s.name) {
                    None => c.missing_states.push((op.uid.clone(), s.name.clone())),
                    Some(x) if x.schema_version != s.schema_version => c.incompatible.push((
                        op.uid.clone(),
                        s.name.clone(),
                        s.schema_version,
                        x.schema_version,
                    )),
                    Some(_) => {}
                }
            }
        }
        for d in job.iter().filter(|d| d.stateful) {
            if !content.operators.iter().any(|o| o.uid == d.uid) {
                c.new_operators.push(d.uid.clone());
            }
        }
        c
    }

    /// Whether restoring would lose state (allowed only when dropping state is allowed).
    pub fn drops_state(&self) -> bool {
        !self.missing_operators.is_empty() || !self.missing_states.is_empty()
    }

    /// Whether the job cannot read the snapshot at all.
    pub fn is_incompatible(&self) -> bool {
        !self.incompatible.is_empty() || self.max_parallelism.is_some()
    }

    /// The reason a restore is refused, if it is.
    pub fn refusal(&self, allow_non_restored_state: bool) -> Option<String> {
        if self.is_incompatible() || (self.drops_state() && !allow_non_restored_state) {
            Some(self.to_string())
        } else {
            None
        }
    }
}

impl Compatibility {
    /// One sentence per finding, as `sluice savepoint check` prints them.
    pub fn messages(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some((snap, job)) = self.max_parallelism {
            lines.push(format!(
                "max parallelism is {snap} in the snapshot but {job} in the job"
            ));
        }
        for uid in &self.missing_operators {
            lines.push(format!(
                "operator '{uid}' has state in the snapshot but is not in the job \
                 (renamed uid or removed operator)"
            ));
        }
        for (uid, state) in &self.missing_states {
            lines.push(format!(
                "operator '{uid}': state '{state}' is in the snapshot but the operator no \
                 longer declares it"
            ));
        }
        for (uid, state, snap, job) in &self.incompatible {
            lines.push(format!(
                "operator '{uid}': state '{state}' has schema version {snap} in the snapshot \
                 but {job} in the job"
            ));
        }
        for uid in &self.new_operators {
            lines.push(format!(
                "operator '{uid}' is new: it starts with empty state"
            ));
        }
        if lines.is_empty() {
            lines.push("compatible: every state of the snapshot maps to the job".into());
        }
        lines
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.messages().join("\n"))
    }
}

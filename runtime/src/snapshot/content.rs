//! The runtime's description of a snapshot (the manifest's `content`), how a completed
//! snapshot is written from the subtasks' parts, and how it is read back for a restore at
//! any parallelism.

use super::storage::{CheckpointStorage, FileEntry, Manifest, SnapshotError, MANIFEST_VERSION};
use super::task::{Native, NativeRef, SnapshotKind, SplitPosition, TaskSnapshot};
use crate::sink::SinkTransaction;
use crate::state::{RestoredNative, StateSchema};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

/// Where a piece of state lies: a byte range of one of the snapshot's files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub file: String,
    pub offset: u64,
    pub len: u64,
    /// Checksum of the range: a subtask reads only the ranges it restores, so each range
    /// is checked on its own. (Absent in snapshots written before it was: their files are
    /// read whole and checked against the manifest's file checksum.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<u32>,
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
                    crc32: Some(crc32fast::hash(data)),
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

/// One operator's part of a snapshot being restored: where each piece of its state lies.
/// Nothing is read until a subtask asks for the pieces it owns
/// ([`RestoredState::read_blobs`], [`RestoredState::native_for`]).
#[derive(Default)]
pub struct RestoredOperator {
    pub key_groups: HashMap<u32, BlobRef>,
    pub items: Vec<BlobRef>,
    pub splits: HashMap<usize, SplitPosition>,
    native: Vec<NativeDb>,
}

/// A RocksDB database of the snapshot, downloaded by the first subtask that owns one of
/// its key groups; the subtasks of this process that own others open the same copy.
struct NativeDb {
    reference: NativeRef,
    dir: PathBuf,
    downloaded: Mutex<bool>,
}

/// A snapshot being restored: its content, checked against the job before anything runs,
/// and the storage its subtasks read their own parts from, each on its own thread.
pub struct RestoredState {
    pub id: u64,
    pub operators: HashMap<String, RestoredOperator>,
    pub content: SnapshotContent,
    storage: CheckpointStorage,
    /// The snapshot's own files, by name.
    files: HashMap<String, FileEntry>,
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

/// The most a subtask reads at once: neighbouring pieces of one file are read together up
/// to this size, so a restore holds at most this much (or one larger piece) in memory.
const READ_CHUNK: u64 = 32 << 20;

/// Files of a RocksDB database downloaded at once.
const DOWNLOADS: usize = 4;

/// Downloads the files of a RocksDB database into `dir`, checking each, `DOWNLOADS` at a
/// time. Returns the bytes read.
fn download(
    storage: &CheckpointStorage,
    native: &NativeRef,
    dir: &std::path::Path,
) -> Result<u64, SnapshotError> {
    let io = |e: std::io::Error| SnapshotError::Corrupt {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let next = AtomicUsize::new(0);
    let fetch = || -> Result<u64, SnapshotError> {
        let mut read = 0;
        while let Some((name, entry)) = native.files.get(next.fetch_add(1, Relaxed)) {
            let bytes = storage.read_shared(entry)?;
            read += bytes.len() as u64;
            std::fs::write(dir.join(name), bytes).map_err(io)?;
        }
        Ok(read)
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (1..DOWNLOADS.min(native.files.len()))
            .map(|_| scope.spawn(fetch))
            .collect();
        let mut read = fetch()?;
        for worker in workers {
            read += worker.join().map_err(|_| SnapshotError::Corrupt {
                path: dir.display().to_string(),
                message: "a download thread panicked".into(),
            })??;
        }
        Ok(read)
    })
}

fn unlisted(location: &str, file: &str) -> SnapshotError {
    SnapshotError::Corrupt {
        path: format!("{location}/{file}"),
        message: "named by the manifest but not listed in it".into(),
    }
}

impl RestoredState {
    /// Snapshot `manifest` of `storage`, ready for its subtasks to read their parts. Only
    /// the manifest is read here; it must name only files it lists. RocksDB databases are
    /// downloaded into a new directory under `scratch`, removed when this value is dropped.
    pub fn load(
        storage: CheckpointStorage,
        manifest: &Manifest,
        scratch: &std::path::Path,
    ) -> Result<Self, SnapshotError> {
        let content = SnapshotContent::from_manifest(manifest)?;
        let files: HashMap<String, FileEntry> = manifest
            .files
            .iter()
            .map(|f| (f.name.clone(), f.clone()))
            .collect();
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
        let mut operators = HashMap::new();
        for op in &content.operators {
            let mut restored = RestoredOperator::default();
            // Checked before anything runs: a subtask finds every file it reads.
            for r in op.key_groups.iter().map(|(_, r)| r).chain(&op.items) {
                if !files.contains_key(&r.file) {
                    return Err(unlisted(&storage.location(manifest.checkpoint), &r.file));
                }
            }
            restored.key_groups = op.key_groups.iter().cloned().collect();
            restored.items = op.items.clone();
            for s in &op.splits {
                restored.splits.insert(s.split, *s);
            }
            if let Some(root) = &local {
                restored.native = op
                    .native
                    .iter()
                    .map(|r| NativeDb {
                        reference: r.clone(),
                        dir: root.join(&r.instance),
                        downloaded: Mutex::new(false),
                    })
                    .collect();
            }
            operators.insert(op.uid.clone(), restored);
        }
        Ok(RestoredState {
            id: manifest.checkpoint,
            operators,
            content,
            storage,
            files,
            local,
        })
    }

    /// Where the snapshot lies.
    pub fn location(&self) -> String {
        self.storage.location(self.id)
    }

    /// Reads the pieces `blobs` in storage order and hands each to `each` with its bytes;
    /// returns the bytes read. A piece with a checksum is read as a range of its file
    /// (neighbouring pieces together, up to [`READ_CHUNK`]) and checked on its own. The
    /// files of encrypted snapshots, and of snapshots written before pieces had checksums,
    /// are read whole, once per call, and checked against the manifest.
    pub fn read_blobs<K: Copy, E: From<SnapshotError>>(
        &self,
        blobs: &[(K, &BlobRef)],
        mut each: impl FnMut(K, &[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut blobs = blobs.to_vec();
        blobs.sort_by(|(_, a), (_, b)| (&a.file, a.offset).cmp(&(&b.file, b.offset)));
        let mut read = 0;
        let mut i = 0;
        while let Some(&(_, first)) = blobs.get(i) {
            let entry = self
                .files
                .get(&first.file)
                .ok_or_else(|| unlisted(&self.location(), &first.file))?;
            let by_range = entry.key.is_none() && first.crc32.is_some();
            let start = if by_range { first.offset } else { 0 };
            let mut end = start;
            let mut j = i;
            while let Some(&(_, b)) = blobs.get(j) {
                if b.file != first.file {
                    break;
                }
                if by_range {
                    let next = b.offset.checked_add(b.len).filter(|_| b.offset == end);
                    match next {
                        Some(e) if e - start <= READ_CHUNK || j == i => end = e,
                        _ => break,
                    }
                }
                j += 1;
            }
            let bytes = if by_range && start == end {
                bytes::Bytes::new()
            } else if by_range {
                self.storage
                    .read_file_range(self.id, &first.file, start..end)?
            } else {
                self.storage.read_file(self.id, entry)?.into()
            };
            read += bytes.len() as u64;
            for &(k, b) in &blobs[i..j] {
                let piece = b
                    .offset
                    .checked_sub(start)
                    .and_then(|at| Some(at..at.checked_add(b.len)?))
                    .and_then(|r| {
                        bytes.get(usize::try_from(r.start).ok()?..usize::try_from(r.end).ok()?)
                    })
                    .ok_or_else(|| {
                        self.corrupt(b, format!("beyond the file's {} bytes", bytes.len()))
                    })?;
                if let Some(want) = b.crc32 {
                    let got = crc32fast::hash(piece);
                    if got != want {
                        return Err(self
                            .corrupt(
                                b,
                                format!("checksum {got:08x}, the manifest says {want:08x}"),
                            )
                            .into());
                    }
                }
                each(k, piece)?;
            }
            i = j;
        }
        Ok(read)
    }

    fn corrupt(&self, b: &BlobRef, message: String) -> SnapshotError {
        SnapshotError::Corrupt {
            path: format!("{}/{}", self.location(), b.file),
            message: format!("{} bytes at {}: {message}", b.len, b.offset),
        }
    }

    /// The RocksDB databases of operator `uid` that hold any of key groups `owned`,
    /// downloaded on first use, and the bytes this call downloaded.
    pub fn native_for(
        &self,
        uid: &str,
        owned: &[u32],
    ) -> Result<(Vec<RestoredNative>, u64), SnapshotError> {
        let mut found = Vec::new();
        let mut read = 0;
        let Some(op) = self.operators.get(uid) else {
            return Ok((found, read));
        };
        for db in &op.native {
            if !db.reference.groups.iter().any(|g| owned.contains(g)) {
                continue;
            }
            let mut downloaded = db.downloaded.lock().unwrap_or_else(PoisonError::into_inner);
            if !*downloaded {
                read += download(&self.storage, &db.reference, &db.dir)?;
                *downloaded = true;
            }
            found.push(RestoredNative {
                dir: db.dir.clone(),
                groups: db.reference.groups.clone(),
                states: db.reference.states.clone(),
            });
        }
        Ok((found, read))
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

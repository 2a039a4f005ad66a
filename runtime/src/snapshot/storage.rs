use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::encryption::{self, SnapshotKey};
use crate::error::causes;
pub use crate::error::SnapshotError;
use crate::objects::{self, FILE, S3};

/// The manifest format this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
const MANIFEST: &str = "_manifest.json";
const LATEST: &str = "_latest";

/// A file of a checkpoint, as recorded in its manifest. Size and checksum are those of the
/// stored bytes (encrypted, when `key` names the key they were encrypted with).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub crc32: u32,
    /// Always written (no `skip_serializing_if`): entries also travel between coordinator
    /// and workers as bincode, which cannot skip fields. `default` reads older manifests.
    #[serde(default)]
    pub key: Option<String>,
}

/// What completes a checkpoint. `content` is the runtime's description of the snapshot
/// (operators, states, key groups, source positions, sink transactions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub checkpoint: u64,
    pub job: String,
    pub files: Vec<FileEntry>,
    /// Files shared with other checkpoints (incremental RocksDB state), by path from the
    /// storage root; a file stays while a retained checkpoint lists it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<FileEntry>,
    pub content: serde_json::Value,
}

impl Manifest {
    /// Reads a manifest's JSON; `path` names it in the error.
    pub fn parse(bytes: &[u8], path: &str) -> Result<Manifest, SnapshotError> {
        let corrupt = |message: String| SnapshotError::Corrupt {
            path: path.to_string(),
            message,
        };
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("unreadable manifest: {e}")))?;
        if manifest.version > MANIFEST_VERSION {
            return Err(corrupt(format!(
                "manifest version {} is newer than this build reads ({MANIFEST_VERSION})",
                manifest.version
            )));
        }
        Ok(manifest)
    }
}

/// A checkpoint that passed verification, and the newer ones that did not (with why).
#[derive(Debug)]
pub struct Restorable {
    pub manifest: Manifest,
    pub skipped: Vec<String>,
}

/// Object storage holding a job's checkpoints: a local directory (`file:///…`) or an S3
/// bucket (`s3://bucket/prefix`). Calls block: they run on a private single-threaded
/// runtime, so callers need none of their own.
pub struct CheckpointStorage {
    uri: String,
    /// `chk` for checkpoints, `sp` for savepoints: the directory of snapshot 42 is `chk-0000000042`.
    prefix: &'static str,
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    /// Checkpoints whose objects this instance deleted. Some S3-compatible servers go on
    /// listing an emptied prefix for minutes; these ids are not listed again.
    deleted: Mutex<HashSet<u64>>,
    /// State files written are encrypted with it; files read are decrypted with it.
    key: Option<Arc<SnapshotKey>>,
}

/// Where files shared by checkpoints live, under the storage root.
pub const SHARED: &str = "shared";

/// The prefix of checkpoint directories.
pub const CHECKPOINTS: &str = "chk";
/// The prefix of savepoint directories.
pub const SAVEPOINTS: &str = "sp";

impl CheckpointStorage {
    /// Opens `file:///absolute/path` (created if missing) or `s3://bucket/prefix` holding
    /// checkpoints. S3 is configured from the standard environment: `AWS_ENDPOINT_URL`
    /// (for S3-compatible servers), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ALLOW_HTTP`, and `AWS_MAX_ATTEMPTS` for the attempts per request.
    pub fn open(uri: &str) -> Result<Self, SnapshotError> {
        Self::open_with_prefix(uri, CHECKPOINTS)
    }

    /// Opens storage holding savepoints.
    pub fn open_savepoints(uri: &str) -> Result<Self, SnapshotError> {
        Self::open_with_prefix(uri, SAVEPOINTS)
    }

    /// Opens the storage around one snapshot directory (`…/chk-0000000042` or
    /// `…/sp-0000000007`, as a path, a `file://` or an `s3://` URI) and returns it with the id.
    /// Checkpoint storage itself (any other directory) stands for its newest checkpoint that
    /// verifies: how a job resumes where a cancelled run of it left off.
    pub fn open_snapshot(location: &str) -> Result<(Self, u64), SnapshotError> {
        let bad = || SnapshotError::Uri {
            uri: location.to_string(),
            message: "not a snapshot directory (chk-<id> or sp-<id>)".into(),
        };
        let (uri, parent, name) = if let Some(rest) = location.strip_prefix(S3) {
            let rest = rest.trim_end_matches('/');
            // The parent keeps at least the bucket.
            let (parent, name) = rest.rsplit_once('/').ok_or_else(bad)?;
            (
                format!("{S3}{rest}"),
                format!("{S3}{parent}"),
                name.to_string(),
            )
        } else {
            let path = location.strip_prefix(FILE).unwrap_or(location);
            let path = std::path::absolute(path.trim_end_matches('/')).map_err(|e| {
                SnapshotError::Uri {
                    uri: location.to_string(),
                    message: e.to_string(),
                }
            })?;
            let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(bad)?;
            let parent = path.parent().ok_or_else(bad)?;
            (
                format!("{FILE}{}", path.display()),
                format!("{FILE}{}", parent.display()),
                name.to_string(),
            )
        };
        let snapshot = name.split_once('-').and_then(|(prefix, id)| {
            let prefix = [CHECKPOINTS, SAVEPOINTS]
                .into_iter()
                .find(|p| *p == prefix)?;
            Some((prefix, id.parse::<u64>().ok()?))
        });
        match snapshot {
            Some((prefix, id)) => Ok((Self::open_with_prefix(&parent, prefix)?, id)),
            None => {
                let storage = Self::open(&uri)?;
                let id = storage.latest_restorable()?.manifest.checkpoint;
                Ok((storage, id))
            }
        }
    }

    /// This storage with `key` instead of the process's snapshot key.
    pub fn with_key(mut self, key: Option<Arc<SnapshotKey>>) -> Self {
        self.key = key;
        self
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Where snapshot `id` lives, as a path for the user.
    pub fn location(&self, id: u64) -> String {
        format!("{}/{}", self.uri.trim_end_matches('/'), self.dir(id))
    }

    fn dir(&self, id: u64) -> String {
        format!("{}-{id:010}", self.prefix)
    }

    fn open_with_prefix(uri: &str, prefix: &'static str) -> Result<Self, SnapshotError> {
        let bad = |message: &str| SnapshotError::Uri {
            uri: uri.to_string(),
            message: message.to_string(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        let store = objects::open(uri).map_err(|message| bad(&message))?;
        if uri.starts_with(S3) {
            // Fails here, naming the storage, rather than at the first checkpoint when the
            // endpoint is unreachable, the bucket missing or the credentials refused.
            runtime
                .block_on(store.list_with_delimiter(None))
                .map_err(|e| bad(&format!("cannot list it: {}", causes(&e))))?;
        }
        Ok(CheckpointStorage {
            uri: uri.to_string(),
            prefix,
            store,
            runtime,
            deleted: Mutex::default(),
            key: encryption::process_key()?,
        })
    }

    /// An error of the store, naming the object (or listed prefix) by its full URI.
    fn store_error<'a>(
        &'a self,
        path: &'a Path,
    ) -> impl FnOnce(object_store::Error) -> SnapshotError + 'a {
        move |source| SnapshotError::Store {
            path: format!("{}/{path}", self.uri.trim_end_matches('/')),
            source,
        }
    }

    fn put(&self, path: &Path, bytes: Vec<u8>) -> Result<(), SnapshotError> {
        self.runtime
            .block_on(self.store.put(path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(self.store_error(path))
    }

    fn get(&self, path: &Path) -> Result<Vec<u8>, SnapshotError> {
        self.runtime
            .block_on(async { self.store.get(path).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(self.store_error(path))
    }

    /// Writes one state file of checkpoint `id` and returns its manifest entry.
    pub fn write_file(
        &self,
        id: u64,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<FileEntry, SnapshotError> {
        self.write(format!("{}/{name}", self.dir(id)), name, bytes)
    }

    /// Writes a file shared by checkpoints, at `name` from the storage root.
    pub fn write_shared(&self, name: &str, bytes: Vec<u8>) -> Result<FileEntry, SnapshotError> {
        self.write(name.to_string(), name, bytes)
    }

    /// Writes `bytes` (encrypted, with a key) at `path`; `name` is its manifest name.
    fn write(&self, path: String, name: &str, bytes: Vec<u8>) -> Result<FileEntry, SnapshotError> {
        let bytes = match &self.key {
            Some(key) => key.seal(name, bytes)?,
            None => bytes,
        };
        let entry = FileEntry {
            name: name.to_string(),
            size: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes),
            key: self.key.as_ref().map(|k| k.id().to_string()),
        };
        self.put(&Path::from(path), bytes)?;
        Ok(entry)
    }

    /// Reads a shared file and checks it against its manifest entry.
    pub fn read_shared(&self, entry: &FileEntry) -> Result<Vec<u8>, SnapshotError> {
        self.read_checked(Path::from(entry.name.as_str()), entry)
    }

    /// Reads a state file and checks it against its manifest entry.
    pub fn read_file(&self, id: u64, entry: &FileEntry) -> Result<Vec<u8>, SnapshotError> {
        self.read_checked(
            Path::from(format!("{}/{}", self.dir(id), entry.name)),
            entry,
        )
    }

    /// Reads bytes `range` of state file `name` of checkpoint `id`, unchecked: the caller
    /// checks the range against its own checksum.
    pub fn read_file_range(
        &self,
        id: u64,
        name: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, SnapshotError> {
        let path = Path::from(format!("{}/{name}", self.dir(id)));
        let want = range.end - range.start;
        let bytes = self
            .runtime
            .block_on(self.store.get_range(&path, range.clone()))
            .map_err(self.store_error(&path))?;
        if bytes.len() as u64 != want {
            return Err(SnapshotError::Corrupt {
                path: format!("{}/{path}", self.uri),
                message: format!(
                    "{} bytes at {} asked for, {} read",
                    want,
                    range.start,
                    bytes.len()
                ),
            });
        }
        Ok(bytes)
    }

    fn read_checked(&self, path: Path, entry: &FileEntry) -> Result<Vec<u8>, SnapshotError> {
        let bytes = self.get(&path)?;
        let corrupt = |message: String| SnapshotError::Corrupt {
            path: format!("{}/{path}", self.uri),
            message,
        };
        if bytes.len() as u64 != entry.size {
            return Err(corrupt(format!(
                "{} bytes, the manifest says {}",
                bytes.len(),
                entry.size
            )));
        }
        let crc = crc32fast::hash(&bytes);
        if crc != entry.crc32 {
            return Err(corrupt(format!(
                "checksum {crc:08x}, the manifest says {:08x}",
                entry.crc32
            )));
        }
        let Some(written_with) = &entry.key else {
            return Ok(bytes);
        };
        match &self.key {
            Some(key) if key.id() == written_with => key.open(&entry.name, bytes),
            Some(key) => Err(SnapshotError::Key {
                id: key.id().to_string(),
                message: format!(
                    "{}/{path} was encrypted with key '{written_with}'",
                    self.uri
                ),
            }),
            None => Err(SnapshotError::Key {
                id: written_with.clone(),
                message: format!(
                    "{}/{path} is encrypted with it, and this process has no snapshot key \
                     ({} and {})",
                    self.uri,
                    encryption::KEY_ID_VAR,
                    encryption::KEY_VAR
                ),
            }),
        }
    }

    /// Completes a checkpoint: its manifest, then the pointer to it.
    pub fn complete(&self, manifest: &Manifest) -> Result<(), SnapshotError> {
        let path = Path::from(format!("{}/{MANIFEST}", self.dir(manifest.checkpoint)));
        let json = serde_json::to_vec(manifest).map_err(|e| SnapshotError::Corrupt {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        self.put(&path, json)?;
        self.put(
            &Path::from(LATEST),
            manifest.checkpoint.to_string().into_bytes(),
        )
    }

    /// An id above every snapshot in storage, complete or not, so that a restarted job never
    /// writes into the directory of an earlier attempt.
    pub fn next_id(&self) -> Result<u64, SnapshotError> {
        Ok(self.checkpoint_ids()?.first().map_or(1, |id| id + 1))
    }

    fn deleted(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        // A set of ids stays consistent whatever panicked while holding it.
        self.deleted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checkpoint ids with a directory in storage (a prefix, in S3), newest first.
    fn checkpoint_ids(&self) -> Result<Vec<u64>, SnapshotError> {
        let root = Path::from("");
        let listing = self
            .runtime
            .block_on(self.store.list_with_delimiter(None))
            .map_err(self.store_error(&root))?;
        let listed: HashSet<u64> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| {
                p.as_ref()
                    .strip_prefix(self.prefix)?
                    .strip_prefix('-')?
                    .parse()
                    .ok()
            })
            .collect();
        let mut deleted = self.deleted();
        // What is no longer listed need not be remembered.
        deleted.retain(|id| listed.contains(id));
        let mut ids: Vec<u64> = listed.difference(&deleted).copied().collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    pub fn manifest(&self, id: u64) -> Result<Manifest, SnapshotError> {
        let path = Path::from(format!("{}/{MANIFEST}", self.dir(id)));
        let bytes = self.get(&path)?;
        Manifest::parse(&bytes, &format!("{}/{path}", self.uri))
    }

    /// Checks that every file of checkpoint `id` is present and intact (shared files, which
    /// may be large, by size here; their checksums are checked when they are read).
    pub fn verify(&self, id: u64) -> Result<Manifest, SnapshotError> {
        let manifest = self.manifest(id)?;
        for entry in &manifest.files {
            self.read_file(id, entry)?;
        }
        for entry in &manifest.shared {
            let path = Path::from(entry.name.as_str());
            let meta = self
                .runtime
                .block_on(self.store.head(&path))
                .map_err(self.store_error(&path))?;
            if meta.size != entry.size {
                return Err(SnapshotError::Corrupt {
                    path: format!("{}/{path}", self.uri),
                    message: format!("{} bytes, the manifest says {}", meta.size, entry.size),
                });
            }
        }
        Ok(manifest)
    }

    /// The newest checkpoint that verifies, starting from the pointer. Newer checkpoints that
    /// are incomplete or corrupt are skipped, and each skip is reported with its cause.
    pub fn latest_restorable(&self) -> Result<Restorable, SnapshotError> {
        let pointer = self.pointer();
        let mut skipped = Vec::new();
        for id in self.checkpoint_ids()? {
            if pointer.is_some_and(|p| id > p) {
                // Newer than the pointer: the job stopped before completing it.
                continue;
            }
            match self.verify(id) {
                Ok(manifest) => return Ok(Restorable { manifest, skipped }),
                Err(e) => skipped.push(format!("checkpoint {id} skipped: {e}")),
            }
        }
        Err(SnapshotError::NoCheckpoint {
            uri: self.uri.clone(),
        })
    }

    /// The checkpoint the pointer names, if it is readable.
    fn pointer(&self) -> Option<u64> {
        let bytes = self.get(&Path::from(LATEST)).ok()?;
        String::from_utf8(bytes).ok()?.trim().parse().ok()
    }

    /// Deletes all but the newest `keep` checkpoints up to the pointer's (which is always
    /// kept); checkpoints newer than the pointer are in progress and left alone. Then deletes
    /// the shared files no retained checkpoint lists (except those in `protect`: uploaded for
    /// checkpoints still to be written), and returns those that remain.
    pub fn retain(
        &self,
        keep: usize,
        protect: &HashSet<String>,
    ) -> Result<HashSet<String>, SnapshotError> {
        let Some(latest) = self.pointer() else {
            return Ok(HashSet::new());
        };
        let ids = self
            .checkpoint_ids()?
            .into_iter()
            .filter(|&id| id <= latest);
        for id in ids.skip(keep.max(1)) {
            let dir = Path::from(self.dir(id));
            let listing = self
                .runtime
                .block_on(self.store.list_with_delimiter(Some(&dir)))
                .map_err(self.store_error(&dir))?;
            for object in listing.objects {
                self.delete(&object.location)?;
            }
            // In S3 the checkpoint is gone with its objects: there are no directories.
            self.deleted().insert(id);
        }
        // Reference counts of shared files: the retained manifests that list them.
        let mut referenced = HashSet::new();
        for id in self
            .checkpoint_ids()?
            .into_iter()
            .filter(|&id| id <= latest)
        {
            if let Ok(m) = self.manifest(id) {
                referenced.extend(m.shared.into_iter().map(|e| e.name));
            }
        }
        // Shared files are `shared/<database>/<file>`: two levels to list.
        let shared = Path::from(SHARED);
        let databases = self
            .runtime
            .block_on(self.store.list_with_delimiter(Some(&shared)))
            .map_err(self.store_error(&shared))?;
        for database in databases.common_prefixes {
            let files = self
                .runtime
                .block_on(self.store.list_with_delimiter(Some(&database)))
                .map_err(self.store_error(&database))?;
            for object in files.objects {
                let name = object.location.as_ref();
                if !referenced.contains(name) && !protect.contains(name) {
                    self.delete(&object.location)?;
                }
            }
        }
        referenced.extend(protect.iter().cloned());
        Ok(referenced)
    }

    /// Deletes snapshot `id`: its manifest first, so that a deletion cut short leaves a
    /// directory nothing restores from, then its files, and the pointer when it names `id`.
    /// Returns `false` when there was nothing to delete.
    pub fn delete_snapshot(&self, id: u64) -> Result<bool, SnapshotError> {
        let dir = Path::from(self.dir(id));
        let listing = self
            .runtime
            .block_on(self.store.list_with_delimiter(Some(&dir)))
            .map_err(self.store_error(&dir))?;
        if listing.objects.is_empty() {
            return Ok(false);
        }
        let manifest = Path::from(format!("{}/{MANIFEST}", self.dir(id)));
        if listing.objects.iter().any(|o| o.location == manifest) {
            self.delete(&manifest)?;
        }
        for object in listing.objects.iter().filter(|o| o.location != manifest) {
            self.delete(&object.location)?;
        }
        if self.pointer() == Some(id) {
            self.delete(&Path::from(LATEST))?;
        }
        self.deleted().insert(id);
        // A savepoint's directory of its own goes too once empty (`remove_dir` leaves a
        // directory that still holds something).
        if let Some(root) = self.uri.strip_prefix(FILE) {
            let _ = std::fs::remove_dir(root);
        }
        Ok(true)
    }

    fn delete(&self, path: &Path) -> Result<(), SnapshotError> {
        self.runtime
            .block_on(self.store.delete(path))
            .map_err(self.store_error(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(dir: &tempfile::TempDir) -> CheckpointStorage {
        CheckpointStorage::open(&format!("file://{}", dir.path().display())).unwrap()
    }

    fn checkpoint(s: &CheckpointStorage, id: u64) {
        let files = vec![
            s.write_file(id, "op-a-0.state", vec![id as u8; 100])
                .unwrap(),
            s.write_file(id, "op-a-1.state", vec![7; 10]).unwrap(),
        ];
        s.complete(&Manifest {
            version: MANIFEST_VERSION,
            checkpoint: id,
            job: "test".into(),
            files,
            shared: Vec::new(),
            content: serde_json::json!({"id": id}),
        })
        .unwrap();
    }

    #[test]
    fn checkpoint_storage_opened_as_a_snapshot_is_its_newest_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(&dir);
        for id in 1..=2 {
            checkpoint(&s, id);
        }
        let (opened, id) = CheckpointStorage::open_snapshot(s.uri()).unwrap();
        assert_eq!(id, 2);
        assert_eq!(opened.manifest(id).unwrap().checkpoint, 2);

        let empty = tempfile::tempdir().unwrap();
        let err = CheckpointStorage::open_snapshot(&empty.path().display().to_string())
            .err()
            .unwrap();
        assert!(matches!(err, SnapshotError::NoCheckpoint { .. }), "{err}");
    }

    #[test]
    fn a_deleted_snapshot_leaves_nothing_behind_and_deleting_it_again_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("op-1");
        let s = CheckpointStorage::open_savepoints(&format!("file://{}", root.display())).unwrap();
        checkpoint(&s, 1);
        let (opened, id) = CheckpointStorage::open_snapshot(&s.location(1)).unwrap();
        assert_eq!(id, 1);
        assert!(opened.delete_snapshot(id).unwrap());
        assert!(!root.exists(), "the emptied directory is removed");
        let (again, id) = CheckpointStorage::open_snapshot(&s.location(1)).unwrap();
        assert!(!again.delete_snapshot(id).unwrap());
    }

    #[test]
    fn deleting_one_snapshot_keeps_the_others_and_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(&dir);
        for id in 1..=2 {
            checkpoint(&s, id);
        }
        assert!(s.delete_snapshot(1).unwrap());
        assert!(dir.path().exists());
        assert_eq!(s.latest_restorable().unwrap().manifest.checkpoint, 2);
        assert!(s.manifest(1).is_err());
    }

    #[test]
    fn the_latest_complete_checkpoint_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(&dir);
        for id in 1..=3 {
            checkpoint(&s, id);
        }
        // A checkpoint whose manifest was never written does not count.
        s.write_file(4, "op-a-0.state", vec![1, 2, 3]).unwrap();
        let r = s.latest_restorable().unwrap();
        assert_eq!(r.manifest.checkpoint, 3);
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        assert_eq!(
            s.read_file(3, &r.manifest.files[0]).unwrap(),
            vec![3u8; 100]
        );
    }

    #[test]
    fn a_truncated_or_altered_latest_checkpoint_falls_back_to_the_previous() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(&dir);
        checkpoint(&s, 1);
        checkpoint(&s, 2);
        let file = dir.path().join("chk-0000000002/op-a-0.state");
        std::fs::write(&file, vec![2u8; 60]).unwrap();
        let r = s.latest_restorable().unwrap();
        assert_eq!(r.manifest.checkpoint, 1);
        assert_eq!(r.skipped.len(), 1);
        assert!(
            r.skipped[0].contains("chk-0000000002/op-a-0.state: 60 bytes, the manifest says 100"),
            "{:?}",
            r.skipped
        );

        let mut altered = vec![2u8; 100];
        altered[50] = 9;
        std::fs::write(&file, altered).unwrap();
        let r = s.latest_restorable().unwrap();
        assert_eq!(r.manifest.checkpoint, 1);
        assert!(r.skipped[0].contains("checksum"), "{:?}", r.skipped);
    }

    #[test]
    fn retention_keeps_the_newest_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(&dir);
        for id in 1..=5 {
            checkpoint(&s, id);
        }
        // Checkpoint 6 is being written: retention leaves it alone.
        s.write_file(6, "op-a-0.state", vec![1]).unwrap();
        s.retain(2, &HashSet::new()).unwrap();
        assert_eq!(s.checkpoint_ids().unwrap(), vec![6, 5, 4]);
        assert_eq!(s.latest_restorable().unwrap().manifest.checkpoint, 5);
    }

    #[test]
    fn file_entries_cross_the_cluster_protocol_with_and_without_a_key() {
        for key in [None, Some("a".to_string())] {
            let entry = FileEntry {
                name: "op-a-0.state".into(),
                size: 7,
                crc32: 9,
                key,
            };
            let bytes = bincode::serialize(&entry).unwrap();
            assert_eq!(bincode::deserialize::<FileEntry>(&bytes).unwrap(), entry);
        }
    }

    #[test]
    fn encrypted_checkpoints_read_only_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let key =
            |id: &str, text: &str| Some(Arc::new(SnapshotKey::from_base64(id, text).unwrap()));
        let a = key("a", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
        let plain = storage(&dir);
        checkpoint(&plain, 1);
        let sealed = storage(&dir).with_key(a.clone());
        checkpoint(&sealed, 2);
        let manifest = sealed.verify(2).unwrap();
        assert!(manifest.files.iter().all(|f| f.key.as_deref() == Some("a")));
        // Plain checkpoints stay readable once encryption is on.
        let old = sealed.manifest(1).unwrap();
        assert_eq!(
            sealed.read_file(1, &old.files[0]).unwrap(),
            plain.read_file(1, &old.files[0]).unwrap()
        );
        let entry = &manifest.files[0];
        let stored =
            std::fs::read(dir.path().join(format!("chk-{:010}/{}", 2, entry.name))).unwrap();
        let read = sealed.read_file(2, entry).unwrap();
        assert_ne!(stored, read, "the file is stored as written");
        let err = plain.read_file(2, entry).unwrap_err().to_string();
        assert!(
            err.contains("snapshot key 'a'") && err.contains("no snapshot key"),
            "{err}"
        );
        let b = storage(&dir).with_key(key("b", "HwAeAB0AHAAbABoAGQAYABcAFgAVABQAEwASABEAEAA="));
        let err = b.read_file(2, entry).unwrap_err().to_string();
        assert!(err.contains("encrypted with key 'a'"), "{err}");
        let wrong_a =
            storage(&dir).with_key(key("a", "HwAeAB0AHAAbABoAGQAYABcAFgAVABQAEwASABEAEAA="));
        let err = wrong_a.read_file(2, entry).unwrap_err().to_string();
        assert!(err.contains("does not decrypt"), "{err}");
    }

    #[test]
    fn bad_uris_and_empty_storage_are_reported() {
        assert_eq!(
            CheckpointStorage::open("file://relative/dir")
                .err()
                .unwrap()
                .to_string(),
            "checkpoint storage file://relative/dir: the path must be absolute (file:///…)"
        );
        let err = |uri: &str| CheckpointStorage::open(uri).err().unwrap().to_string();
        assert_eq!(
            err("s3:///prefix"),
            "checkpoint storage s3:///prefix: no bucket (s3://bucket/prefix)"
        );
        assert!(
            err("s3://Upper_Case/x").ends_with("'Upper_Case' is not a valid bucket name (3 to 63 lowercase letters, digits, '.' or '-')"),
            "{}",
            err("s3://Upper_Case/x")
        );
        assert!(err("s3://bucket/a//b").contains("bad prefix 'a//b'"));
        assert_eq!(
            err("relative/dir"),
            "checkpoint storage relative/dir: unsupported storage (file:///absolute/path or \
             s3://bucket/prefix)"
        );
        assert_eq!(
            CheckpointStorage::open_snapshot("s3://chk-0000000001")
                .err()
                .unwrap()
                .to_string(),
            "checkpoint storage s3://chk-0000000001: not a snapshot directory (chk-<id> or sp-<id>)"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = storage(&dir).latest_restorable().unwrap_err().to_string();
        assert!(
            err.starts_with("no complete checkpoint in file://"),
            "{err}"
        );
    }
}

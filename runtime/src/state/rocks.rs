//! The RocksDB keyed-state backend: one embedded database per operator subtask, on local
//! disk, with every state of the operator in it.
//!
//! Layout. A key is `[key group: u16][state: u16][key length: u32][key][map key]` (big
//! endian, the key and map key in bincode), so a key group is one contiguous key range: a
//! snapshot reads it with one range scan and a rescale moves it whole. A value is
//! `[expires at: i64][bincode value]`; entries without a TTL expire at `i64::MAX`.
//!
//! Memory. All databases of the process share one block cache, and their write buffers are
//! charged to that cache, so the budget (from the container's memory limit) bounds them all.
//!
//! TTL. Reads never return an expired entry; a compaction filter drops expired entries for
//! good in the background, so state of keys never read again does not grow without bound.
//!
//! Pending writes. `put` and `delete` of keyed state go to a hash map in front of the
//! database, written out as one batch when it holds `PENDING_LIMIT` keys or
//! `PENDING_BYTES` of keys and values, before a scan or a batch write, and before a snapshot
//! pins the database. A value rewritten on every record (a running count, a per-window
//! maximum) then costs a hash-map update rather than a memtable insert per write, and the
//! memtable holds one version of it per write-out, not one per record: q5's per-window
//! maximum went from 1.6 µs to 0.1 µs of busy time per record.
//!
//! Restore. Restored entries do not go through the memtable: they are collected, sorted and
//! written as a table file that RocksDB takes in whole (ingestion), `LOAD_FILE_BYTES` at a
//! time, so nothing waits for a flush and no write stalls on level-0 files. Canonical
//! entries are copied without being decoded (`super::canonical`). A store that owns every
//! key group of one snapshot database with the same states takes that database's files as
//! they are ([`RocksStore::restore_database`]): a restart at the same parallelism costs
//! the download.
//!
//! Snapshots. The synchronous part writes the pending writes out, switches the write buffer
//! and takes the barrier's sequence number (`super::pin`); a thread of its own then makes a
//! RocksDB checkpoint (hard links to the immutable table files) once the old buffer is
//! written out, and checks that it holds nothing newer than the barrier. The state is
//! pinned without being copied, and the task goes on writing meanwhile. An incremental
//! checkpoint uploads that directory's new files; a savepoint encodes it per key group in
//! the canonical format, so any backend restores it at any parallelism.

use super::canonical::EntriesWriter;
use super::pin::{PinWatch, PinnedCheckpoint};
use crate::error::StateError;
use rocksdb::{
    compaction_filter::Decision, BlockBasedOptions, Cache, DBRawIteratorWithThreadMode,
    IngestExternalFileOptions, Options, SstFileWriter, WriteBatch, WriteBufferManager,
    WriteOptions, DB,
};
use rustc_hash::FxHashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

/// Where RocksDB state lives and how much memory it may use.
#[derive(Clone, Debug)]
pub struct RocksConfig {
    /// Local working directory of the databases (not durable: snapshots are).
    pub dir: PathBuf,
    /// Block cache plus write buffers of every database of the process.
    pub memory_budget: usize,
    /// Window contents each operator subtask caches on the heap in front of RocksDB
    /// (see `operators::panes`).
    pub window_cache_entries: usize,
}

impl RocksConfig {
    /// 2^20: q5's five live 10-second windows of ~52k auctions each fit and fire with no
    /// read. A key and a count take 24 bytes, about 50 MiB at the limit with the hash
    /// tables' spare room.
    pub const DEFAULT_WINDOW_CACHE_ENTRIES: usize = 1 << 20;

    pub fn new(dir: impl Into<PathBuf>, memory_budget: usize) -> Self {
        RocksConfig {
            dir: dir.into(),
            memory_budget,
            window_cache_entries: Self::DEFAULT_WINDOW_CACHE_ENTRIES,
        }
    }

    pub fn window_cache_entries(mut self, entries: usize) -> Self {
        self.window_cache_entries = entries.max(1);
        self
    }

    /// A budget of 40 % of the container's memory limit (cgroup v2 `memory.max`), or
    /// 512 MiB when there is none.
    pub fn default_memory_budget() -> usize {
        let limit = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok());
        match limit {
            Some(bytes) => (bytes / 10 * 4).max(32 << 20),
            None => 512 << 20,
        }
    }
}

/// A RocksDB checkpoint (hard links to its table files) of one operator subtask, pinned
/// when the barrier passed.
#[derive(Clone, Debug)]
pub struct PinnedNative {
    /// The local checkpoint directory, once made; removed when the last handle is dropped.
    pub checkpoint: PinnedCheckpoint,
    /// Names the database instance; its table files are shared under this name.
    pub instance: String,
    /// Counts the pins of the instance: names the files that change with every pin.
    pub pin: u64,
    /// The key groups the database holds.
    pub groups: Vec<u32>,
    /// State names, by the index the database's keys carry.
    pub states: Vec<String>,
}

/// A RocksDB database of a snapshot, downloaded to local disk.
#[derive(Clone, Debug)]
pub struct RestoredNative {
    pub dir: PathBuf,
    pub groups: Vec<u32>,
    /// State names by the index the database's keys carry.
    pub states: Vec<String>,
}

/// The shared cache and write-buffer manager, created by the first database of the process
/// with the budget it is given.
fn shared_memory(budget: usize) -> &'static (Cache, WriteBufferManager) {
    static SHARED: OnceLock<(Cache, WriteBufferManager)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let cache = Cache::new_lru_cache(budget);
        // Write buffers take at most a third of the budget, charged to the cache.
        let buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            budget / 3,
            false,
            cache.clone(),
        );
        (cache, buffers)
    })
}

pub(crate) const VALUE_HEADER: usize = 8;

fn expires_at(value: &[u8]) -> i64 {
    value
        .get(..VALUE_HEADER)
        .and_then(|b| b.try_into().ok())
        .map_or(i64::MAX, i64::from_be_bytes)
}

/// Keys with pending writes at which they are written to the database.
pub(super) const PENDING_LIMIT: usize = 32_768;
/// Bytes of pending keys and values at which they are written to the database. Writing them
/// out holds up the task, at a barrier too: with 8 MiB, the synchronous part of a checkpoint
/// took 14–34 ms in `bench/checkpoints.sh`, with 1 MiB 3.7–4.9 ms. Small values reach
/// `PENDING_LIMIT` first, so where rewrites of hot keys gain most, this bound changes nothing
/// (Nexmark q5 and q8 on RocksDB are unchanged).
const PENDING_BYTES: usize = 1 << 20;
/// Bytes of restored keys and values written as one table file.
const LOAD_FILE_BYTES: usize = 64 << 20;

/// Restored entries not yet in the database: keys and values back to back, and where each
/// entry lies as `(start, key length, value length)`.
#[derive(Default)]
struct Loaded {
    data: Vec<u8>,
    entries: Vec<(usize, u32, u32)>,
    /// Table files written so far: names the next.
    files: u64,
}

impl Loaded {
    /// Adds an entry; whether the entries held are now enough for a table file.
    fn push(&mut self, key: &[u8], value: &[u8]) -> bool {
        self.entries
            .push((self.data.len(), key.len() as u32, value.len() as u32));
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(value);
        self.data.len() >= LOAD_FILE_BYTES
    }
}

/// The expiry and value of a stored entry.
pub(crate) fn decode_entry<V: serde::de::DeserializeOwned>(
    raw: &[u8],
) -> Result<(i64, V), StateError> {
    let value = bincode::deserialize(raw.get(VALUE_HEADER..).unwrap_or_default())
        .map_err(StateError::decode("state"))?;
    Ok((expires_at(raw), value))
}

/// One operator subtask's database.
pub(crate) struct RocksStore {
    /// Shared with the threads that make checkpoints of it (`super::pin`).
    db: Option<Arc<DB>>,
    /// Checkpoints of it possibly still being made.
    pinning: Vec<PinWatch>,
    dir: PathBuf,
    /// Unique name of this database (run, operator, subtask): names its shared files.
    instance: String,
    write: WriteOptions,
    /// Processing time seen by the compaction filter.
    now: Arc<AtomicI64>,
    key: Vec<u8>,
    checkpoints: u64,
    /// Writes not yet in the database, by key: the stored value, or `None` for a deletion.
    pending: FxHashMap<Box<[u8]>, Option<Vec<u8>>>,
    /// Bytes of the pending keys and values.
    pending_bytes: usize,
    /// Scratch for encoding a value.
    value: Vec<u8>,
    /// The database's options, for the table files of a restore.
    options: Options,
    loaded: Loaded,
}

impl RocksStore {
    pub(crate) fn open(config: &RocksConfig, name: &str) -> Result<Self, StateError> {
        let dir = config.dir.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(StateError::io(&dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(StateError::io(&dir))?;
        let (cache, buffers) = shared_memory(config.memory_budget);
        let now = Arc::new(AtomicI64::new(i64::MIN));
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_write_buffer_manager(buffers);
        // Every barrier switches the write buffer (`super::pin`): with RocksDB's default of
        // two, a barrier that came while the last buffer was still being written out would
        // stop every write until it was.
        opts.set_max_write_buffer_number(4);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let clock = now.clone();
        opts.set_compaction_filter("sluice-ttl", move |_, _: &[u8], value: &[u8]| {
            if expires_at(value) <= clock.load(Ordering::Relaxed) {
                Decision::Remove
            } else {
                Decision::Keep
            }
        });
        let db = DB::open(&opts, &dir).map_err(StateError::rocks("open"))?;
        let options = opts.clone();
        // Durability comes from snapshots; a write-ahead log would only cost time.
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        Ok(RocksStore {
            db: Some(Arc::new(db)),
            pinning: Vec::new(),
            dir,
            instance: name.replace('/', "-"),
            write,
            now,
            key: Vec::with_capacity(64),
            checkpoints: 0,
            pending: FxHashMap::default(),
            pending_bytes: 0,
            value: Vec::with_capacity(256),
            options,
            loaded: Loaded::default(),
        })
    }

    /// The database, without the pending writes: for stores that write only through
    /// [`Self::write`] (window contents).
    pub(crate) fn db(&self) -> &DB {
        // Present from open until drop.
        self.db.as_deref().expect("database open")
    }

    /// Applies `batch` after the pending writes (without a write-ahead log, like every write).
    pub(crate) fn write(&mut self, batch: WriteBatch) -> Result<(), StateError> {
        self.write_pending()?;
        self.db()
            .write_opt(batch, &self.write)
            .map_err(StateError::rocks("write"))
    }

    /// Writes the pending writes to the database in one batch (after any restored entries
    /// still held, which are older).
    fn write_pending(&mut self) -> Result<(), StateError> {
        self.ingest_loaded()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        self.pending_bytes = 0;
        let mut batch = WriteBatch::default();
        for (key, value) in self.pending.drain() {
            match value {
                Some(value) => batch.put(key, value),
                None => batch.delete(key),
            }
        }
        self.db()
            .write_opt(batch, &self.write)
            .map_err(StateError::rocks("write"))
    }

    pub(crate) fn set_now(&self, now: i64) {
        self.now.store(now, Ordering::Relaxed);
    }

    /// Starts a key in the scratch buffer: `[group][state][len][key]`.
    pub(crate) fn key_prefix<K: serde::Serialize>(
        &mut self,
        group: u32,
        state: u16,
        key: &K,
    ) -> Result<(), StateError> {
        let k = &mut self.key;
        k.clear();
        k.extend_from_slice(&(group as u16).to_be_bytes());
        k.extend_from_slice(&state.to_be_bytes());
        k.extend_from_slice(&[0; 4]);
        bincode::serialize_into(&mut *k, key).map_err(StateError::encode("key"))?;
        let len = (k.len() - 8) as u32;
        k[4..8].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Starts a key in the scratch buffer from its encoding (`key_prefix`'s layout).
    pub(crate) fn key_prefix_encoded(
        &mut self,
        group: u32,
        state: u16,
        key: &[u8],
    ) -> Result<(), StateError> {
        let len = u32::try_from(key.len()).map_err(|_| StateError::TooLarge(key.len()))?;
        let k = &mut self.key;
        k.clear();
        k.extend_from_slice(&(group as u16).to_be_bytes());
        k.extend_from_slice(&state.to_be_bytes());
        k.extend_from_slice(&len.to_be_bytes());
        k.extend_from_slice(key);
        Ok(())
    }

    /// Appends an encoded map key to the key in the scratch buffer.
    pub(crate) fn push_encoded_map_key(&mut self, entry: &[u8]) {
        self.key.extend_from_slice(entry);
    }

    /// Appends a map key to the key in the scratch buffer.
    pub(crate) fn push_map_key<MK: serde::Serialize>(
        &mut self,
        entry: &MK,
    ) -> Result<(), StateError> {
        bincode::serialize_into(&mut self.key, entry).map_err(StateError::encode("key"))
    }

    pub(crate) fn key_len(&self) -> usize {
        self.key.len()
    }

    pub(crate) fn truncate_key(&mut self, len: usize) {
        self.key.truncate(len);
    }

    /// Reads the entry at the scratch key: its expiry and decoded value.
    pub(crate) fn get<V: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Option<(i64, V)>, StateError> {
        if !self.loaded.entries.is_empty() {
            return Err(StateError::RestoreUnfinished);
        }
        if let Some(pending) = self.pending.get(self.key.as_slice()) {
            return pending.as_deref().map(decode_entry).transpose();
        }
        let Some(raw) = self
            .db()
            .get_pinned(&self.key)
            .map_err(StateError::rocks("read"))?
        else {
            return Ok(None);
        };
        decode_entry(&raw).map(Some)
    }

    /// Writes `value` at the scratch key.
    pub(crate) fn put<V: serde::Serialize>(
        &mut self,
        expires: i64,
        value: &V,
    ) -> Result<(), StateError> {
        // Encoded aside first, so that a value that fails to encode leaves the entry as it was.
        self.value.clear();
        self.value.extend_from_slice(&expires.to_be_bytes());
        bincode::serialize_into(&mut self.value, value).map_err(StateError::encode("state"))?;
        self.hold(true)
    }

    pub(crate) fn delete(&mut self) -> Result<(), StateError> {
        self.hold(false)
    }

    /// Restores `value` at the scratch key: held with the other restored entries until
    /// [`Self::ingest_loaded`].
    pub(crate) fn load<V: serde::Serialize>(
        &mut self,
        expires: i64,
        value: &V,
    ) -> Result<(), StateError> {
        self.value.clear();
        self.value.extend_from_slice(&expires.to_be_bytes());
        bincode::serialize_into(&mut self.value, value).map_err(StateError::encode("state"))?;
        self.load_scratch()
    }

    /// Restores an encoded value at the scratch key, like [`Self::load`].
    pub(crate) fn load_encoded(&mut self, expires: i64, value: &[u8]) -> Result<(), StateError> {
        self.value.clear();
        self.value.extend_from_slice(&expires.to_be_bytes());
        self.value.extend_from_slice(value);
        self.load_scratch()
    }

    /// Restores `key` with `value` as it is stored, like [`Self::load`].
    pub(crate) fn load_bytes(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        if self.loaded.push(key, value) {
            self.ingest_loaded()?;
        }
        Ok(())
    }

    /// Restores the scratch key with the scratch value as it is stored.
    fn load_scratch(&mut self) -> Result<(), StateError> {
        if self.loaded.push(&self.key, &self.value) {
            self.ingest_loaded()?;
        }
        Ok(())
    }

    /// Writes the restored entries held as one sorted table file and has RocksDB take it
    /// in. Of entries restored twice at one key, the last wins, as with writes.
    pub(crate) fn ingest_loaded(&mut self) -> Result<(), StateError> {
        if self.loaded.entries.is_empty() {
            return Ok(());
        }
        let mut loaded = std::mem::take(&mut self.loaded);
        let result = self.ingest(&mut loaded);
        loaded.data.clear();
        loaded.entries.clear();
        self.loaded = loaded;
        result
    }

    fn ingest(&self, loaded: &mut Loaded) -> Result<(), StateError> {
        let data = &loaded.data;
        let key = |&(start, key, _): &(usize, u32, u32)| &data[start..start + key as usize];
        // Stable: of equal keys, the one restored last stays last.
        loaded.entries.sort_by(|a, b| key(a).cmp(key(b)));
        loaded.files += 1;
        let path = self
            .dir
            .with_extension(format!("restore-{}.sst", loaded.files));
        let mut writer = SstFileWriter::create(&self.options);
        writer
            .open(&path)
            .map_err(StateError::rocks("write restored table"))?;
        let entries = &loaded.entries;
        for (i, entry) in entries.iter().enumerate() {
            if entries
                .get(i + 1)
                .is_some_and(|next| key(next) == key(entry))
            {
                continue;
            }
            let (start, key_len, value_len) = *entry;
            let value_start = start + key_len as usize;
            writer
                .put(
                    key(entry),
                    &data[value_start..value_start + value_len as usize],
                )
                .map_err(StateError::rocks("write restored table"))?;
        }
        writer
            .finish()
            .map_err(StateError::rocks("write restored table"))?;
        drop(writer);
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        let ingested = self
            .db()
            .ingest_external_file_opts(&ingest, vec![&path])
            .map_err(StateError::rocks("ingest restored table"));
        // Moved into the database when ingested; only a leftover otherwise.
        let _ = std::fs::remove_file(&path);
        ingested
    }

    /// Holds a write of the scratch key, of the scratch value (`put`) or a deletion,
    /// among the pending writes; writes them out when they are over their bounds.
    fn hold(&mut self, put: bool) -> Result<(), StateError> {
        let value = &self.value;
        match self.pending.get_mut(self.key.as_slice()) {
            Some(slot) => {
                self.pending_bytes -= slot.as_ref().map_or(0, Vec::len);
                match (slot, put) {
                    // A key written before reuses its buffer: no allocation per write of a
                    // hot key.
                    (Some(buf), true) => {
                        buf.clear();
                        buf.extend_from_slice(value);
                    }
                    (slot, true) => *slot = Some(value.clone()),
                    (slot, false) => *slot = None,
                }
            }
            None => {
                self.pending_bytes += self.key.len();
                self.pending
                    .insert(self.key.as_slice().into(), put.then(|| value.clone()));
            }
        }
        if put {
            self.pending_bytes += value.len();
        }
        if self.pending.len() >= PENDING_LIMIT || self.pending_bytes >= PENDING_BYTES {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Every `(map key, expiry, value)` under the scratch key as prefix.
    pub(crate) fn scan_prefix<MK, V>(&mut self) -> Result<Vec<(MK, i64, V)>, StateError>
    where
        MK: serde::de::DeserializeOwned,
        V: serde::de::DeserializeOwned,
    {
        self.write_pending()?;
        let prefix = self.key.as_slice();
        let mut out = Vec::new();
        let mut it = self.db().raw_iterator();
        it.seek(prefix);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(prefix) {
                break;
            }
            let mk = bincode::deserialize(&k[prefix.len()..]).map_err(StateError::decode("key"))?;
            let (expires, value) = decode_entry(v)?;
            out.push((mk, expires, value));
            it.next();
        }
        it.status().map_err(StateError::rocks("scan"))?;
        Ok(out)
    }

    /// Deletes every entry under the scratch key as prefix.
    pub(crate) fn delete_prefix(&mut self) -> Result<(), StateError> {
        self.write_pending()?;
        let prefix = self.key.as_slice();
        let mut batch = WriteBatch::default();
        let mut it = self.db().raw_iterator();
        it.seek(prefix);
        while let Some(k) = it.key() {
            if !k.starts_with(prefix) {
                break;
            }
            batch.delete(k);
            it.next();
        }
        self.db()
            .write_opt(batch, &self.write)
            .map_err(StateError::rocks("delete"))
    }

    pub(crate) fn instance(&self) -> &str {
        &self.instance
    }

    /// How many times the database was pinned.
    pub(crate) fn pins(&self) -> u64 {
        self.checkpoints
    }

    /// Restores key groups `groups` of a snapshot's database, renumbering states:
    /// `state_map[old index]` is the new index (`None`: dropped). An empty store that takes
    /// every key group of the database with the states where they were adopts it; any
    /// other copies the groups.
    pub(crate) fn restore_database(
        &mut self,
        native: &RestoredNative,
        groups: &[u32],
        state_map: &[Option<u16>],
    ) -> Result<(), StateError> {
        let same_states = state_map
            .iter()
            .enumerate()
            .all(|(i, m)| *m == Some(i as u16));
        if same_states && groups.len() == native.groups.len() && self.is_empty() {
            self.adopt(&native.dir)
        } else {
            self.copy_groups_from(&native.dir, groups, state_map)
        }
    }

    /// Copies key groups `groups` of a snapshot's database at `source` into this one.
    fn copy_groups_from(
        &mut self,
        source: &Path,
        groups: &[u32],
        state_map: &[Option<u16>],
    ) -> Result<(), StateError> {
        self.write_pending()?;
        let src = DB::open_for_read_only(&Options::default(), source, false)
            .map_err(StateError::rocks("open snapshot"))?;
        for &kg in groups {
            let prefix = (kg as u16).to_be_bytes();
            let mut it = src.raw_iterator();
            it.seek(prefix);
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if !k.starts_with(&prefix) {
                    break;
                }
                let old = k
                    .get(2..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u16::from_be_bytes)
                    .ok_or(StateError::MalformedKey("state"))?;
                if let Some(Some(new)) = state_map.get(old as usize) {
                    self.key.clear();
                    self.key.extend_from_slice(k);
                    self.key[2..4].copy_from_slice(&new.to_be_bytes());
                    if self.loaded.push(&self.key, v) {
                        self.ingest_loaded()?;
                    }
                }
                it.next();
            }
            it.status().map_err(StateError::rocks("scan snapshot"))?;
        }
        self.ingest_loaded()
    }

    /// Whether nothing was written to this store: no entry in the database, none pending.
    fn is_empty(&self) -> bool {
        self.pending.is_empty()
            && self.loaded.entries.is_empty()
            && self
                .db()
                .iterator(rocksdb::IteratorMode::Start)
                .next()
                .is_none()
    }

    /// Takes a snapshot's database at `source` as this (empty) store's database: its table
    /// files are linked, not copied, and nothing is scanned. For a restore where this
    /// subtask owns every key group of one database whose states keep their indexes (a
    /// restart at the same parallelism), so the restore costs only the download.
    fn adopt(&mut self, source: &Path) -> Result<(), StateError> {
        // Nothing has pinned the database yet: dropping it closes it.
        drop(self.db.take());
        std::fs::remove_dir_all(&self.dir).map_err(StateError::io(&self.dir))?;
        std::fs::create_dir_all(&self.dir).map_err(StateError::io(&self.dir))?;
        for entry in std::fs::read_dir(source).map_err(StateError::io(source))? {
            let from = entry.map_err(StateError::io(source))?.path();
            let Some(name) = from.file_name() else {
                continue;
            };
            let to = self.dir.join(name);
            // Table files never change; the rest (manifest, options) is small and the
            // database rewrites it, so each store gets its own copy.
            let linked = if from.extension().is_some_and(|e| e == "sst") {
                std::fs::hard_link(&from, &to)
            } else {
                std::fs::copy(&from, &to).map(|_| ())
            };
            linked.map_err(StateError::io(&to))?;
        }
        let db = DB::open(&self.options, &self.dir).map_err(StateError::rocks("open restored"))?;
        self.db = Some(Arc::new(db));
        Ok(())
    }

    /// The synchronous part of a snapshot: writes the pending writes and pins the database
    /// as it is; its checkpoint directory (hard links to the table files) is made off the
    /// task thread (`super::pin`).
    pub(crate) fn pin(&mut self) -> Result<PinnedCheckpoint, StateError> {
        self.checkpoints += 1;
        let target = self.dir.with_extension(format!("chk-{}", self.checkpoints));
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(StateError::io(&target))?;
        }
        self.write_pending()?;
        let db = self.db.as_ref().expect("database open");
        let pinned = super::pin::pin(db, target)?;
        self.pinning.retain(|p| !p.is_over());
        self.pinning.push(pinned.watch());
        Ok(pinned)
    }
}

#[cfg(test)]
impl RocksStore {
    /// Compacts everything and counts the entries left on disk.
    pub(crate) fn compact_and_count(&mut self) -> usize {
        self.write_pending().unwrap();
        let db = self.db();
        db.flush().unwrap();
        db.compact_range::<&[u8], &[u8]>(None, None);
        db.iterator(rocksdb::IteratorMode::Start).count()
    }
}

impl Drop for RocksStore {
    fn drop(&mut self) {
        // A checkpoint still being made reads the directory; it ends in milliseconds once
        // the barrier's write buffer is written out. Nothing may outlive the store: at the
        // end of a process, RocksDB's own threads are torn down under it.
        for pinned in self.pinning.drain(..) {
            pinned.wait();
        }
        drop(self.db.take());
        // Local state is a cache of what snapshots hold; failing to remove it loses nothing.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the canonical encoding of one state needs to know about its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Value,
    Map,
    List,
}

/// Encodes the key groups of a pinned checkpoint in the canonical format of
/// `KeyedStateStore::snapshot_key_group`, without knowing the state types: keys and values
/// are bincode already, and the canonical format is bincode of tuples and sequences of them.
/// `states` are `(name, schema version, shape)` by state index. Waits for the checkpoint.
pub(crate) fn encode_pinned(
    checkpoint: &PinnedCheckpoint,
    groups: &[u32],
    states: &[(String, u32, Shape)],
) -> Result<Vec<(u32, Vec<u8>)>, StateError> {
    let states: Vec<Option<(String, u32, Shape)>> = states.iter().cloned().map(Some).collect();
    encode_groups(&checkpoint.wait()?, groups, &states)
}

/// The canonical encoding of key groups `groups` of the database at `dir`; `states` by the
/// index the keys carry (`None`: not wanted).
pub(crate) fn encode_groups(
    dir: &Path,
    groups: &[u32],
    states: &[Option<(String, u32, Shape)>],
) -> Result<Vec<(u32, Vec<u8>)>, StateError> {
    let db = DB::open_for_read_only(&Options::default(), dir, false)
        .map_err(StateError::rocks("open checkpoint"))?;
    let mut out = Vec::new();
    for &kg in groups {
        let mut it = db.raw_iterator();
        let mut encoded_states = Vec::with_capacity(states.len());
        let mut empty = true;
        for (index, state) in states.iter().enumerate() {
            let Some((name, version, shape)) = state else {
                continue;
            };
            let entries = encode_state(&mut it, kg, index as u16, *shape)?;
            empty &= entries.is_empty();
            encoded_states.push((
                name.as_str(),
                *version,
                serde_bytes::ByteBuf::from(entries.finish()),
            ));
        }
        if !empty {
            let bytes = bincode::serialize(&encoded_states).map_err(StateError::encode("state"))?;
            out.push((kg, bytes));
        }
    }
    Ok(out)
}

/// The canonical entries (`super::canonical`) of one state in one key group: the keys and
/// values the database holds are the encodings the format frames.
fn encode_state(
    it: &mut DBRawIteratorWithThreadMode<'_, DB>,
    kg: u32,
    state: u16,
    shape: Shape,
) -> Result<EntriesWriter, StateError> {
    let mut prefix = Vec::with_capacity(4);
    prefix.extend_from_slice(&(kg as u16).to_be_bytes());
    prefix.extend_from_slice(&state.to_be_bytes());
    let mut out = EntriesWriter::new();
    // For maps: the key whose items are being written.
    let mut current: Option<Vec<u8>> = None;
    it.seek(&prefix);
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        if !k.starts_with(&prefix) {
            break;
        }
        let len = k
            .get(4..8)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or(StateError::MalformedKey("state"))? as usize;
        let key = k.get(8..8 + len).ok_or(StateError::MalformedKey("state"))?;
        let value = v
            .get(VALUE_HEADER..)
            .ok_or_else(|| StateError::Malformed(format!("a stored value of {} bytes", v.len())))?;
        match shape {
            Shape::Value | Shape::List => out.raw_entry(key, expires_at(v), value)?,
            Shape::Map => {
                if current.as_deref() != Some(key) {
                    out.raw_map_key(key)?;
                    current = Some(key.to_vec());
                }
                out.raw_map_item(&k[8 + len..], expires_at(v), value)?;
            }
        }
        it.next();
    }
    it.status().map_err(StateError::rocks("scan"))?;
    Ok(out)
}

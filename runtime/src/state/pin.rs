//! Pinning a RocksDB database at a barrier without stalling its task.
//!
//! At the barrier the task thread does only two cheap things: it switches the write buffer
//! (RocksDB writes the old one out on its own threads) and takes a snapshot, whose sequence
//! number is the barrier's. Everything slow happens on a thread of its own while the task
//! goes on writing into the new write buffer: waiting for the old buffer to reach a table
//! file, linking the live table files into a checkpoint directory, and checking that none of
//! those files holds an entry written after the barrier.
//!
//! Why the check. Once the old buffer is written out, the live files hold exactly the state
//! at the barrier, until the next buffer is written out too, or one flush writes out two
//! buffers into one file, or a compaction merges an older file with a newer one. A
//! checkpoint that then carried writes made after the barrier would apply them twice after
//! a restore (once from the checkpoint, once replayed from the sources). Every table file
//! records the largest sequence number it holds, and the snapshot keeps compactions from
//! zeroing the sequence numbers of entries newer than the barrier, so a file with such an
//! entry always shows it. A checkpoint that fails the check fails, naming the file; it is
//! never shipped.
//!
//! The `rocksdb` crate has no flush that neither waits nor stalls writes, and no files'
//! sequence numbers: those two come from the C API it links.

use crate::error::StateError;
use rocksdb::{AsRawPtr, DB};
use std::ffi::{c_char, CStr};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// How long the old write buffer may take to reach a table file.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the background thread looks whether it has.
const FLUSH_POLL: Duration = Duration::from_millis(1);

/// A RocksDB checkpoint directory of the state at a barrier, made off the task thread.
/// The directory is removed when the last handle to it is dropped.
#[derive(Clone)]
pub struct PinnedCheckpoint(Arc<Slot>);

struct Slot {
    made: Mutex<Option<Result<PathBuf, String>>>,
    done: Condvar,
}

impl PinnedCheckpoint {
    /// A checkpoint whose directory exists already.
    #[cfg(test)]
    pub(crate) fn made(dir: PathBuf) -> Self {
        let pinned = Self::pending();
        pinned.finish(Ok(dir));
        pinned
    }

    fn pending() -> Self {
        PinnedCheckpoint(Arc::new(Slot {
            made: Mutex::new(None),
            done: Condvar::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Result<PathBuf, String>>> {
        // A panic elsewhere cannot leave the slot half-written: it is set in one assignment.
        self.0.made.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, result: Result<PathBuf, String>) {
        *self.lock() = Some(result);
        self.0.done.notify_all();
    }

    /// A handle that does not keep the checkpoint's directory: for its database's owner,
    /// which must not be the one to remove it (removing the last links to table files
    /// compacted away since takes tens of milliseconds).
    pub(crate) fn watch(&self) -> PinWatch {
        PinWatch(Arc::downgrade(&self.0))
    }

    /// Waits until the checkpoint is made; its directory.
    pub fn wait(&self) -> Result<PathBuf, StateError> {
        let mut made = self.lock();
        loop {
            match made.as_ref() {
                Some(Ok(dir)) => return Ok(dir.clone()),
                Some(Err(message)) => return Err(StateError::Checkpoint(message.clone())),
                None => made = self.0.done.wait(made).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

/// See [`PinnedCheckpoint::watch`].
pub(crate) struct PinWatch(Weak<Slot>);

impl PinWatch {
    /// Whether nobody holds the checkpoint any more: it is made and used, or given up.
    pub(crate) fn is_over(&self) -> bool {
        self.0.strong_count() == 0
    }

    /// Waits until the checkpoint is made, if anybody still holds it.
    pub(crate) fn wait(&self) {
        if let Some(slot) = self.0.upgrade() {
            let _ = PinnedCheckpoint(slot).wait();
        }
    }
}

impl fmt::Debug for PinnedCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lock().as_ref() {
            None => f.write_str("PinnedCheckpoint(being made)"),
            Some(Ok(dir)) => write!(f, "PinnedCheckpoint({})", dir.display()),
            Some(Err(e)) => write!(f, "PinnedCheckpoint(failed: {e})"),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(Some(Ok(dir))) = self.made.get_mut().map(|m| m.as_ref()) {
            // Only a pin: whoever needed its content has it by now.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The synchronous part of a checkpoint of `db` into `target` (which must not exist): run on
/// the task thread after its last write before the barrier. Returns at once; the
/// checkpoint is made on a thread of its own.
pub(crate) fn pin(db: &Arc<DB>, target: PathBuf) -> Result<PinnedCheckpoint, StateError> {
    switch_write_buffer(db)?;
    let barrier = RocksSnapshot::take(db.clone());
    let pinned = PinnedCheckpoint::pending();
    let slot = pinned.clone();
    let db = db.clone();
    let spawned = std::thread::Builder::new()
        .name("sluice-checkpoint".into())
        .spawn(move || {
            let result = make(&db, barrier.sequence, &target)
                .map(|()| target.clone())
                .map_err(|e| format!("{}: {e}", target.display()));
            if result.is_err() {
                let _ = std::fs::remove_dir_all(&target);
            }
            // Released before the checkpoint is reported made: whoever waits for it may
            // then close the database.
            drop(barrier);
            drop(db);
            slot.finish(result);
        });
    spawned.map_err(|e| StateError::Checkpoint(format!("cannot start its thread: {e}")))?;
    Ok(pinned)
}

/// Makes the old write buffer immutable and schedules its flush, without waiting for the
/// flush and without waiting for room to flush (writes that find no room wait instead).
fn switch_write_buffer(db: &DB) -> Result<(), StateError> {
    // SAFETY: `db` outlives the call; the options are created, used and destroyed here.
    let error = unsafe {
        let options = librocksdb_sys::rocksdb_flushoptions_create();
        librocksdb_sys::rocksdb_flushoptions_set_wait(options, 0);
        librocksdb_sys::rocksdb_flushoptions_set_allow_write_stall(options, 1);
        let mut error: *mut c_char = std::ptr::null_mut();
        librocksdb_sys::rocksdb_flush(db.as_raw_ptr(), options, &mut error);
        librocksdb_sys::rocksdb_flushoptions_destroy(options);
        take_error(error)
    };
    error.map_or(Ok(()), |e| {
        Err(StateError::Checkpoint(format!(
            "switching the write buffer: {e}"
        )))
    })
}

/// An error string the C API allocated, freed.
///
/// # Safety
/// `error` is null or a string allocated by RocksDB and not freed yet.
unsafe fn take_error(error: *mut c_char) -> Option<String> {
    if error.is_null() {
        return None;
    }
    // SAFETY: by the caller's contract.
    unsafe {
        let message = CStr::from_ptr(error).to_string_lossy().into_owned();
        librocksdb_sys::rocksdb_free(error.cast());
        Some(message)
    }
}

/// A RocksDB snapshot, holding its database open, releasable from any thread.
struct RocksSnapshot {
    db: Arc<DB>,
    raw: *const librocksdb_sys::rocksdb_snapshot_t,
    sequence: u64,
}

// SAFETY: a RocksDB snapshot is an immutable handle; the database is thread-safe and
// releases it from whichever thread.
unsafe impl Send for RocksSnapshot {}

impl RocksSnapshot {
    fn take(db: Arc<DB>) -> Self {
        // SAFETY: the database outlives the snapshot, which holds an `Arc` of it.
        let (raw, sequence) = unsafe {
            let raw = librocksdb_sys::rocksdb_create_snapshot(db.as_raw_ptr());
            (
                raw,
                librocksdb_sys::rocksdb_snapshot_get_sequence_number(raw),
            )
        };
        RocksSnapshot { db, raw, sequence }
    }
}

impl Drop for RocksSnapshot {
    fn drop(&mut self) {
        // SAFETY: made by `take` on this database, released once.
        unsafe { librocksdb_sys::rocksdb_release_snapshot(self.db.as_raw_ptr(), self.raw) }
    }
}

/// The part off the task thread: waits for the write buffer switched at the barrier to be
/// written out, links the live files into `target`, and checks them against `barrier`.
fn make(db: &DB, barrier: u64, target: &Path) -> Result<(), String> {
    let started = Instant::now();
    let property = |name: &str| {
        db.property_int_value(name)
            .map_err(|e| format!("reading {name}: {e}"))
    };
    let errors = property("rocksdb.background-errors")?;
    // The buffer switched at the barrier is immutable from then until written out, so no
    // immutable buffer left means it has been. (A buffer switched later may have gone
    // with it: the check below finds its entries.)
    loop {
        if property("rocksdb.num-immutable-mem-table")? == Some(0) {
            break;
        }
        if property("rocksdb.background-errors")? != errors {
            return Err("RocksDB failed to write out the write buffer (its LOG says why)".into());
        }
        if started.elapsed() > FLUSH_TIMEOUT {
            return Err(format!(
                "the write buffer of the barrier was not written out in {} s",
                FLUSH_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(FLUSH_POLL);
    }
    // No flush: what the write buffer holds now was written after the barrier.
    rocksdb::checkpoint::Checkpoint::new(db)
        .and_then(|c| c.create_checkpoint_with_log_size(target, u64::MAX))
        .map_err(|e| format!("linking the table files: {e}"))?;
    check(target, barrier)
}

/// Whether every table file of the checkpoint at `dir` holds entries up to sequence
/// number `barrier` only.
fn check(dir: &Path, barrier: u64) -> Result<(), String> {
    if let Some((file, largest)) = table_files(dir)?
        .into_iter()
        .find(|(_, largest)| *largest > barrier)
    {
        return Err(format!(
            "table file {file} holds entries up to sequence number {largest}, written after \
             the barrier at {barrier}: RocksDB wrote out later writes before the checkpoint \
             was linked"
        ));
    }
    Ok(())
}

/// `(name, largest sequence number)` of every table file of the database at `dir`.
fn table_files(dir: &Path) -> Result<Vec<(String, u64)>, String> {
    let db = DB::open_for_read_only(&rocksdb::Options::default(), dir, false)
        .map_err(|e| format!("opening the checkpoint: {e}"))?;
    let mut files = Vec::new();
    // SAFETY: `db` is open for the whole block; the list is destroyed once read, and the
    // names it returns are copied before.
    unsafe {
        let list = librocksdb_sys::rocksdb_livefiles(db.as_raw_ptr());
        if list.is_null() {
            return Err("listing the checkpoint's files".into());
        }
        for i in 0..librocksdb_sys::rocksdb_livefiles_count(list) {
            let name = CStr::from_ptr(librocksdb_sys::rocksdb_livefiles_name(list, i));
            files.push((
                name.to_string_lossy().trim_start_matches('/').to_string(),
                librocksdb_sys::rocksdb_livefiles_largest_seqno(list, i),
            ));
        }
        librocksdb_sys::rocksdb_livefiles_destroy(list);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocksdb::{Options, WriteOptions};

    /// A database written as stores write it: without a write-ahead log.
    fn database(dir: &Path) -> (Arc<DB>, WriteOptions) {
        let mut options = Options::default();
        options.create_if_missing(true);
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        (Arc::new(DB::open(&options, dir).unwrap()), write)
    }

    fn contents(db: &DB) -> Vec<(Vec<u8>, Vec<u8>)> {
        db.iterator(rocksdb::IteratorMode::Start)
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    }

    #[test]
    fn a_checkpoint_holds_the_writes_before_the_barrier_and_none_after() {
        let dir = tempfile::tempdir().unwrap();
        let (db, write) = database(&dir.path().join("db"));
        // Some state in table files, some only in the write buffer at the barrier.
        for i in 0..20_000u32 {
            db.put_opt(i.to_be_bytes(), b"table", &write).unwrap();
        }
        db.flush().unwrap();
        for i in 10_000..30_000u32 {
            db.put_opt(i.to_be_bytes(), b"buffer", &write).unwrap();
        }
        let expected = contents(&db);
        let pinned = pin(&db, dir.path().join("checkpoint")).unwrap();
        // After the barrier, while the checkpoint is made: overwrites, deletions, new keys.
        for i in 0..40_000u32 {
            if i % 3 == 0 {
                db.delete_opt(i.to_be_bytes(), &write).unwrap();
            } else {
                db.put_opt(i.to_be_bytes(), b"after", &write).unwrap();
            }
        }
        let checkpoint = pinned.wait().unwrap();
        let read = DB::open_for_read_only(&Options::default(), &checkpoint, false).unwrap();
        assert_eq!(contents(&read), expected);
        drop(read);
        drop(pinned);
        assert!(!checkpoint.exists(), "removed with its last handle");
    }

    #[test]
    fn a_checkpoint_with_a_file_written_after_the_barrier_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (db, write) = database(&dir.path().join("db"));
        db.put_opt(b"k", b"before", &write).unwrap();
        db.flush().unwrap();
        let barrier = db.latest_sequence_number();
        // As if RocksDB had written out a later write buffer before the files were linked.
        db.put_opt(b"k", b"after", &write).unwrap();
        db.flush().unwrap();
        let target = dir.path().join("checkpoint");
        rocksdb::checkpoint::Checkpoint::new(&db)
            .unwrap()
            .create_checkpoint_with_log_size(&target, u64::MAX)
            .unwrap();
        let err = check(&target, barrier).unwrap_err();
        let newest = table_files(&target)
            .unwrap()
            .into_iter()
            .max_by_key(|(_, largest)| *largest)
            .unwrap();
        assert_eq!(
            err,
            format!(
                "table file {} holds entries up to sequence number {}, written after the \
                 barrier at {barrier}: RocksDB wrote out later writes before the checkpoint \
                 was linked",
                newest.0, newest.1
            )
        );
        assert!(newest.0.ends_with(".sst"), "{err}");
        check(&target, db.latest_sequence_number()).unwrap();
    }
}

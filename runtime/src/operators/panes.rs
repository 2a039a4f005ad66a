//! The contents of windows, one value per (window, key), on the heap or in RocksDB.
//!
//! Window aggregates and window-join buffers share this store. Windows are kept in order
//! (by start; the assigners that use it give every window the same size, so also by end),
//! and each window knows whether it has fired.
//!
//! With RocksDB, the values live in the database and each window's map is a bounded
//! write-back cache in front of it: a record updates the cached value. Before a snapshot
//! pins the database, the values changed since the last one are written to it and stay
//! cached, so the next records of a window still find their values in memory. When the
//! cache grows past `RocksConfig::window_cache_entries`, every value is written and the
//! cache emptied. A window whose values are all cached fires straight from the cache, so
//! RocksDB costs one write per changed value and snapshot while state fits in the cache,
//! and bounds memory when it does not.
//!
//! Database layout: `[key group: u16][state: u16][window start][window end][key]`, the
//! window bounds as order-preserving big-endian integers and the key in bincode, so a key
//! group is one key range (snapshots and rescales move it whole) and within it a window is
//! one range (firing scans it, dropping deletes it). State 0 holds the values; state 1
//! marks windows that fired and are kept for allowed lateness. Values are
//! `[expires at: i64][bincode]`, as everywhere in RocksDB state.

use super::assigners::TimeWindow;
use crate::error::StateError;
use crate::exec::BuildCx;
use crate::record::Key;
use crate::snapshot::{
    decode, encode, encode_by_key_group, Native, OperatorSnapshot, PinnedNative, RestoredNative,
    SnapshotKind,
};
use crate::state::{decode_entry, key_group, stable_hash, RocksStore, StateValue};
use rocksdb::{Options, WriteBatch, DB};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::path::Path;

/// State names of the database, by the index its keys carry.
const VALUES: u16 = 0;
const FIRED: u16 = 1;
const STATE_NAMES: [&str; 2] = ["window-contents", "window-fired"];
const NO_EXPIRY: [u8; 8] = i64::MAX.to_be_bytes();

/// A key's value in one window, in snapshots: `(window, fired, key, value)`, the same for
/// both backends.
type PaneEntry<K, V> = (TimeWindow, bool, K, V);

/// The entries of one key group.
type GroupEntries<K, V> = (u32, Vec<PaneEntry<K, V>>);

/// A value in the cache, and whether it changed since it was last written to RocksDB.
struct Cached<V> {
    value: V,
    dirty: bool,
}

struct Pane<K, V> {
    fired: bool,
    /// Every value on the heap; with RocksDB, the cached ones.
    entries: FxHashMap<K, Cached<V>>,
    /// Some of the window's values (or its fired mark) were written to RocksDB.
    in_db: bool,
    /// The cache holds every value of the window: a miss is a new key, and firing needs no
    /// scan. False once values were evicted from the cache or restored into RocksDB.
    complete: bool,
}

impl<K, V> Pane<K, V> {
    fn new() -> Self {
        Pane {
            fired: false,
            entries: FxHashMap::default(),
            in_db: false,
            complete: true,
        }
    }
}

pub(crate) struct Panes<K, V> {
    windows: BTreeMap<TimeWindow, Pane<K, V>>,
    rocks: Option<Rocks>,
    /// The key groups this subtask owns.
    owned: Vec<u32>,
    max_parallelism: u32,
    /// The first RocksDB error; the operator fails its task with it.
    error: Option<StateError>,
}

struct Rocks {
    store: RocksStore,
    /// Entries in the cache of all windows.
    cached: usize,
    /// The cache is written out when it holds this many entries.
    cache_limit: usize,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// `x` as bytes that sort like the numbers.
fn ordered(x: i64) -> [u8; 8] {
    ((x as u64) ^ (1 << 63)).to_be_bytes()
}

fn window_prefix(buf: &mut Vec<u8>, kg: u32, state: u16, w: TimeWindow) {
    buf.clear();
    buf.extend_from_slice(&(kg as u16).to_be_bytes());
    buf.extend_from_slice(&state.to_be_bytes());
    buf.extend_from_slice(&ordered(w.start));
    buf.extend_from_slice(&ordered(w.end));
}

const PREFIX_LEN: usize = 20;

fn window_of(key: &[u8]) -> Option<TimeWindow> {
    let bound = |at: usize| {
        let b: [u8; 8] = key.get(at..at + 8)?.try_into().ok()?;
        Some((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
    };
    Some(TimeWindow::new(bound(4)?, bound(12)?))
}

/// The smallest key after every key that starts with `prefix`.
fn successor(prefix: &[u8]) -> Vec<u8> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return next;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

impl Rocks {
    fn key_of<K: Key>(&mut self, kg: u32, w: TimeWindow, key: &K) -> Result<(), StateError> {
        window_prefix(&mut self.key, kg, VALUES, w);
        bincode::serialize_into(&mut self.key, key).map_err(StateError::encode("key"))
    }

    fn read<K: Key, V: StateValue>(
        &mut self,
        kg: u32,
        w: TimeWindow,
        key: &K,
    ) -> Result<Option<V>, StateError> {
        self.key_of(kg, w, key)?;
        let Some(raw) = self
            .store
            .db()
            .get_pinned(&self.key)
            .map_err(StateError::rocks("read"))?
        else {
            return Ok(None);
        };
        decode_value(&raw).map(Some)
    }

    fn put<K: Key, V: StateValue>(
        &mut self,
        batch: &mut WriteBatch,
        kg: u32,
        w: TimeWindow,
        key: &K,
        value: &V,
    ) -> Result<(), StateError> {
        self.key_of(kg, w, key)?;
        self.value.clear();
        self.value.extend_from_slice(&NO_EXPIRY);
        bincode::serialize_into(&mut self.value, value).map_err(StateError::encode("state"))?;
        batch.put(&self.key, &self.value);
        Ok(())
    }

    /// Restores `value` of `key` in window `w`, and the window's fired mark; written to the
    /// database when the restore is finished (`RocksStore::ingest_loaded`).
    fn load<K: Key, V: StateValue>(
        &mut self,
        kg: u32,
        w: TimeWindow,
        key: &K,
        value: &V,
        fired: bool,
    ) -> Result<(), StateError> {
        self.key_of(kg, w, key)?;
        self.value.clear();
        self.value.extend_from_slice(&NO_EXPIRY);
        bincode::serialize_into(&mut self.value, value).map_err(StateError::encode("state"))?;
        self.store.load_bytes(&self.key, &self.value)?;
        if fired {
            window_prefix(&mut self.key, kg, FIRED, w);
            self.store.load_bytes(&self.key, &NO_EXPIRY)?;
        }
        Ok(())
    }

    fn mark_fired(&mut self, batch: &mut WriteBatch, kg: u32, w: TimeWindow) {
        window_prefix(&mut self.key, kg, FIRED, w);
        batch.put(&self.key, NO_EXPIRY);
    }

    fn write(&mut self, batch: WriteBatch) -> Result<(), StateError> {
        self.store.write(batch)
    }

    /// Every value of window `w` in the database, in key-group order.
    fn scan<K: Key, V: StateValue>(
        &mut self,
        owned: &[u32],
        w: TimeWindow,
        mut f: impl FnMut(&K, &V),
    ) -> Result<(), StateError> {
        for &kg in owned {
            window_prefix(&mut self.key, kg, VALUES, w);
            let mut it = self.store.db().raw_iterator();
            it.seek(&self.key);
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if !k.starts_with(&self.key) {
                    break;
                }
                let key: K =
                    bincode::deserialize(&k[PREFIX_LEN..]).map_err(StateError::decode("key"))?;
                f(&key, &decode_value(v)?);
                it.next();
            }
            it.status().map_err(StateError::rocks("scan"))?;
        }
        Ok(())
    }

    /// Deletes window `w` (its values and its fired mark) in every owned key group.
    fn delete(&mut self, batch: &mut WriteBatch, owned: &[u32], w: TimeWindow) {
        for &kg in owned {
            for state in [VALUES, FIRED] {
                window_prefix(&mut self.key, kg, state, w);
                batch.delete_range(self.key.as_slice(), &successor(&self.key));
            }
        }
    }
}

fn decode_value<V: StateValue>(raw: &[u8]) -> Result<V, StateError> {
    decode_entry(raw).map(|(_, value)| value)
}

/// Reads the entries of key groups `groups` from a database written by this store
/// (`states`: its state names by index), grouped by key group.
fn read_database<K: Key, V: StateValue>(
    dir: &Path,
    groups: &[u32],
    states: &[String],
) -> Result<Vec<GroupEntries<K, V>>, StateError> {
    let index = |name: &str| states.iter().position(|s| s == name).map(|i| i as u16);
    let (Some(values), fired) = (index(STATE_NAMES[0]), index(STATE_NAMES[1])) else {
        return Ok(Vec::new());
    };
    let db = DB::open_for_read_only(&Options::default(), dir, false)
        .map_err(StateError::rocks("open snapshot"))?;
    let mut out = Vec::new();
    let mut prefix = Vec::with_capacity(4);
    for &kg in groups {
        let mut fired_windows = Vec::new();
        if let Some(fired) = fired {
            prefix.clear();
            prefix.extend_from_slice(&(kg as u16).to_be_bytes());
            prefix.extend_from_slice(&fired.to_be_bytes());
            let mut it = db.raw_iterator();
            it.seek(&prefix);
            while let Some(k) = it.key().filter(|k| k.starts_with(&prefix)) {
                fired_windows.extend(window_of(k));
                it.next();
            }
            it.status().map_err(StateError::rocks("scan snapshot"))?;
        }
        prefix.clear();
        prefix.extend_from_slice(&(kg as u16).to_be_bytes());
        prefix.extend_from_slice(&values.to_be_bytes());
        let mut entries = Vec::new();
        let mut it = db.raw_iterator();
        it.seek(&prefix);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            let w = window_of(k).ok_or(StateError::MalformedKey("window"))?;
            let key: K = bincode::deserialize(k.get(PREFIX_LEN..).unwrap_or_default())
                .map_err(StateError::decode("key"))?;
            entries.push((w, fired_windows.contains(&w), key, decode_value(v)?));
            it.next();
        }
        it.status().map_err(StateError::rocks("scan snapshot"))?;
        if !entries.is_empty() {
            out.push((kg, entries));
        }
    }
    Ok(out)
}

impl<K: Key, V: StateValue> Panes<K, V> {
    /// A store on the run's state backend.
    pub(crate) fn new(cx: &BuildCx) -> Result<Self, crate::Error> {
        let rocks = cx.rocks_store()?.map(|(store, cache_limit)| Rocks {
            store,
            cached: 0,
            cache_limit,
            key: Vec::with_capacity(64),
            value: Vec::with_capacity(256),
        });
        Ok(Panes {
            windows: BTreeMap::new(),
            rocks,
            owned: cx.assignment.owned_by(cx.subtask as u32),
            max_parallelism: cx.assignment.max_parallelism(),
            error: None,
        })
    }

    fn record<T>(error: &mut Option<StateError>, r: Result<T, StateError>) -> Option<T> {
        r.map_err(|e| {
            error.get_or_insert(e);
        })
        .ok()
    }

    /// The first RocksDB error since the last call.
    pub(crate) fn take_error(&mut self) -> Option<StateError> {
        self.error.take()
    }

    fn group(&self, key: &K) -> u32 {
        key_group(stable_hash(key), self.max_parallelism)
    }

    /// Calls `f` with the value of `key` in window `w` (`create`d when there is none) and
    /// whether the window has fired.
    ///
    /// Inlined into the operator's per-record loop: called out of line it costs q5 a tenth
    /// more instructions (measured with callgrind).
    #[inline(always)]
    pub(crate) fn update<R>(
        &mut self,
        w: TimeWindow,
        key: &K,
        create: impl FnOnce() -> V,
        f: impl FnOnce(&mut V, bool) -> R,
    ) -> R {
        let max_parallelism = self.max_parallelism;
        let pane = self.windows.entry(w).or_insert_with(Pane::new);
        let fired = pane.fired;
        let result = match pane.entries.get_mut(key) {
            Some(cached) => {
                cached.dirty = true;
                f(&mut cached.value, fired)
            }
            None => {
                let stored = match &mut self.rocks {
                    Some(rocks) if !pane.complete => {
                        // Hashed only on a miss that must read: hits and heap stay hash-free.
                        let kg = key_group(stable_hash(key), max_parallelism);
                        let r = rocks.read(kg, w, key);
                        Self::record(&mut self.error, r).flatten()
                    }
                    _ => None,
                };
                if let Some(rocks) = &mut self.rocks {
                    rocks.cached += 1;
                }
                let cached = pane.entries.entry(key.clone()).or_insert(Cached {
                    value: stored.unwrap_or_else(create),
                    dirty: true,
                });
                f(&mut cached.value, fired)
            }
        };
        if self
            .rocks
            .as_ref()
            .is_some_and(|r| r.cached >= r.cache_limit)
        {
            self.write_out(None, true);
        }
        result
    }

    /// Writes the changed cached values to RocksDB: those of window `only`, or all; and
    /// with `evict`, empties the cache of those windows.
    fn write_out(&mut self, only: Option<TimeWindow>, evict: bool) {
        let Some(rocks) = &mut self.rocks else {
            return;
        };
        let mut batch = WriteBatch::default();
        let max = self.max_parallelism;
        let mut result = Ok(());
        for (w, pane) in self.windows.iter_mut() {
            if only.is_some_and(|o| o != *w) || pane.entries.is_empty() {
                continue;
            }
            for (key, cached) in pane.entries.iter_mut().filter(|(_, c)| c.dirty) {
                let kg = key_group(stable_hash(key), max);
                if let Err(e) = rocks.put(&mut batch, kg, *w, key, &cached.value) {
                    result = Err(e);
                }
                cached.dirty = false;
                pane.in_db = true;
            }
            if evict {
                rocks.cached -= pane.entries.len();
                pane.entries.clear();
                pane.complete = false;
            }
        }
        let r = result.and_then(|()| rocks.write(batch));
        Self::record(&mut self.error, r);
    }

    /// Fires every window whose end is at or before `t`, calling `on_fire` with each of its
    /// values, and drops the windows whose end plus `lateness` is at or before `t`.
    pub(crate) fn fire(
        &mut self,
        t: i64,
        lateness: i64,
        mut on_fire: impl FnMut(TimeWindow, &K, &V),
    ) {
        let due: Vec<TimeWindow> = self
            .windows
            .iter()
            .take_while(|(w, _)| w.max_timestamp() <= t)
            .filter(|(_, p)| !p.fired)
            .map(|(w, _)| *w)
            .collect();
        let mut marks = WriteBatch::default();
        for w in due {
            let complete = self.windows.get(&w).is_none_or(|p| p.complete);
            if !complete {
                // The scan below then sees every value.
                self.write_out(Some(w), false);
            }
            let Some(pane) = self.windows.get_mut(&w) else {
                continue;
            };
            pane.fired = true;
            match &mut self.rocks {
                Some(rocks) if !complete => {
                    let r = rocks.scan(&self.owned, w, |k, v| on_fire(w, k, v));
                    Self::record(&mut self.error, r);
                }
                _ => {
                    for (k, cached) in &pane.entries {
                        on_fire(w, k, &cached.value);
                    }
                }
            }
            let kept = w.max_timestamp().saturating_add(lateness) > t;
            if let Some(rocks) = self.rocks.as_mut().filter(|_| kept) {
                // Kept for late records: the mark must survive a restore, and is deleted
                // with the window.
                pane.in_db = true;
                for &kg in &self.owned {
                    rocks.mark_fired(&mut marks, kg, w);
                }
            }
        }
        // Windows are ordered by start and equal in size, so every window up to the last
        // one past its lateness is past it too.
        while let Some(entry) = self.windows.first_entry() {
            if entry.key().max_timestamp().saturating_add(lateness) > t {
                break;
            }
            let (w, pane) = entry.remove_entry();
            if let Some(rocks) = &mut self.rocks {
                rocks.cached -= pane.entries.len();
                if pane.in_db {
                    rocks.delete(&mut marks, &self.owned, w);
                }
            }
        }
        if let Some(rocks) = &mut self.rocks {
            if !marks.is_empty() {
                let r = rocks.write(marks);
                Self::record(&mut self.error, r);
            }
        }
    }

    /// Adds the store to a snapshot: heap values encoded now; a RocksDB database pinned,
    /// shipped as it is for a checkpoint and encoded canonically off the task thread for a
    /// savepoint.
    pub(crate) fn snapshot(
        &mut self,
        op: &mut OperatorSnapshot,
        kind: SnapshotKind,
    ) -> Result<(), StateError> {
        if self.rocks.is_none() {
            let entries = self.windows.iter().flat_map(|(w, pane)| {
                pane.entries
                    .iter()
                    .map(move |(k, c)| (k, (*w, pane.fired, k, &c.value)))
            });
            op.key_groups = encode_by_key_group(self.max_parallelism, entries)?;
            return Ok(());
        }
        self.write_out(None, false);
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let Some(rocks) = &mut self.rocks else {
            return Ok(());
        };
        let pinned = PinnedNative {
            checkpoint: rocks.store.pin()?,
            instance: rocks.store.instance().to_string(),
            pin: rocks.store.pins(),
            groups: self.owned.clone(),
            states: STATE_NAMES.iter().map(|s| s.to_string()).collect(),
        };
        if kind != SnapshotKind::Savepoint {
            op.native = Some(Native::Pinned(pinned));
            return Ok(());
        }
        op.deferred.0 = Some(Box::new(move || {
            let dir = pinned.checkpoint.wait()?;
            read_database::<K, V>(&dir, &pinned.groups, &pinned.states)?
                .into_iter()
                .map(|(kg, entries)| Ok((kg, encode(&entries)?)))
                .collect()
        }));
        Ok(())
    }

    fn restore_entries(&mut self, entries: Vec<PaneEntry<K, V>>) -> Result<(), StateError> {
        for (w, fired, key, value) in entries {
            let kg = self.group(&key);
            let pane = self.windows.entry(w).or_insert_with(Pane::new);
            pane.fired |= fired;
            match &mut self.rocks {
                None => {
                    pane.entries.insert(
                        key,
                        Cached {
                            value,
                            dirty: false,
                        },
                    );
                }
                Some(rocks) => {
                    pane.in_db = true;
                    pane.complete = false;
                    rocks.load(kg, w, &key, &value, fired)?;
                }
            }
        }
        Ok(())
    }

    /// Ends a restore: what was restored into RocksDB is written to it.
    pub(crate) fn finish_restore(&mut self) -> Result<(), StateError> {
        self.rocks
            .as_mut()
            .map_or(Ok(()), |rocks| rocks.store.ingest_loaded())
    }

    /// Loads a key group written by `snapshot` on either backend at any parallelism.
    pub(crate) fn restore_key_group(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        self.restore_entries(decode(bytes)?)
    }

    /// Loads the owned key groups of a checkpointed database: copied as they are into
    /// RocksDB, decoded onto the heap.
    pub(crate) fn restore_native(&mut self, native: &RestoredNative) -> Result<(), StateError> {
        let groups: Vec<u32> = native
            .groups
            .iter()
            .copied()
            .filter(|kg| self.owned.contains(kg))
            .collect();
        let Some(rocks) = &mut self.rocks else {
            for (_, entries) in read_database::<K, V>(&native.dir, &groups, &native.states)? {
                self.restore_entries(entries)?;
            }
            return Ok(());
        };
        let map: Vec<Option<u16>> = native
            .states
            .iter()
            .map(|n| STATE_NAMES.iter().position(|s| s == n).map(|i| i as u16))
            .collect();
        rocks.store.restore_database(native, &groups, &map)?;
        // The window index and fired marks follow from the copied keys: one seek per window.
        for kg in groups {
            for state in [VALUES, FIRED] {
                let mut from = Vec::with_capacity(PREFIX_LEN);
                from.extend_from_slice(&(kg as u16).to_be_bytes());
                from.extend_from_slice(&state.to_be_bytes());
                let group_prefix = from.clone();
                let mut it = rocks.store.db().raw_iterator();
                it.seek(&from);
                while let Some(k) = it.key().filter(|k| k.starts_with(&group_prefix)) {
                    let w = window_of(k).ok_or(StateError::MalformedKey("window"))?;
                    let pane = self.windows.entry(w).or_insert_with(Pane::new);
                    pane.in_db = true;
                    pane.complete = false;
                    pane.fired |= state == FIRED;
                    window_prefix(&mut from, kg, state, w);
                    it.seek(successor(&from));
                }
                it.status().map_err(StateError::rocks("scan"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounds_sort_like_numbers() {
        let mut keys: Vec<Vec<u8>> = [(-5, 0), (-5, 5), (0, 10), (i64::MIN, -1), (3, 4)]
            .iter()
            .map(|&(s, e)| {
                let mut buf = Vec::new();
                window_prefix(&mut buf, 7, VALUES, TimeWindow::new(s, e));
                buf
            })
            .collect();
        keys.sort();
        let windows: Vec<(i64, i64)> = keys
            .iter()
            .map(|k| window_of(k).map(|w| (w.start, w.end)).unwrap())
            .collect();
        assert_eq!(windows, [(i64::MIN, -1), (-5, 0), (-5, 5), (0, 10), (3, 4)]);
    }

    #[test]
    fn the_successor_of_a_prefix_follows_every_key_with_it() {
        let prefix = [1u8, 2, 255];
        let next = successor(&prefix);
        assert_eq!(next, [1, 3]);
        assert!([1u8, 2, 255, 255, 9].as_slice() < next.as_slice());
        assert!(prefix.as_slice() < next.as_slice());
    }
}

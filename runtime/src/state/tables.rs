//! Heap state tables and the typed accessors job code uses.

use super::rocks::{RocksConfig, RocksStore, Shape};
use super::{
    key_group, stable_hash, KeyGroupAssignment, ListState, MapState, StateDescriptor, StateTtl,
    StateValue, TtlUpdate, ValueState,
};
use crate::record::Key;
use crate::time::duration_millis;
use rustc_hash::FxHashMap;
use std::any::Any;
use std::hash::Hash;
use std::path::PathBuf;

/// A value with the processing time at which it expires (`i64::MAX`: never).
#[derive(Clone, Debug)]
struct Stamped<V> {
    value: V,
    expires_at: i64,
}

#[derive(Clone, Copy, Debug)]
struct Ttl {
    millis: Option<i64>,
    refresh_on_read: bool,
}

impl Ttl {
    fn from(ttl: Option<StateTtl>) -> Self {
        Ttl {
            millis: ttl.map(|t| duration_millis(t.ttl)),
            refresh_on_read: matches!(
                ttl,
                Some(StateTtl {
                    update: TtlUpdate::OnReadAndWrite,
                    ..
                })
            ),
        }
    }
    fn expiry(&self, now: i64) -> i64 {
        self.millis.map_or(i64::MAX, |ms| now.saturating_add(ms))
    }
}

/// Type-erased view of a table, for the store's bookkeeping.
trait AnyTable: Any {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Drops expired entries; returns how many.
    fn remove_expired(&mut self, now: i64) -> usize;
    /// The entries of one key group in the canonical format: bincode of
    /// `[(key, expires_at, value)]` (maps: `[(key, [(map key, expires_at, value)])]`), the
    /// same whatever the backend, so any backend at any parallelism can read it.
    fn snapshot_group(&self, local: usize) -> Result<Vec<u8>, String>;
    /// Adds the entries of a key group written by `snapshot_group`.
    fn restore_group(&mut self, local: usize, bytes: &[u8]) -> Result<(), String>;
    /// Entries (keys) in a key group.
    fn group_len(&self, local: usize) -> usize;
}

/// A map state's key group as decoded: `(key, [(map key, expires_at, value)])`.
type OwnedMapEntries<K, MK, MV> = Vec<(K, Vec<(MK, i64, MV)>)>;

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serialize(value).map_err(|e| format!("cannot encode state: {e}"))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::deserialize(bytes).map_err(|e| format!("cannot decode state: {e}"))
}

impl<K: Key, V: StateValue> HeapTable<K, Stamped<V>> {
    fn snapshot_stamped(&self, local: usize) -> Result<Vec<u8>, String> {
        let entries: Vec<(&K, i64, &V)> = self.groups[local]
            .iter()
            .map(|(k, e)| (k, e.expires_at, &e.value))
            .collect();
        encode(&entries)
    }

    fn restore_stamped(&mut self, local: usize, bytes: &[u8]) -> Result<(), String> {
        let entries: Vec<(K, i64, V)> = decode(bytes)?;
        let map = &mut self.groups[local];
        for (k, expires_at, value) in entries {
            map.insert(k, Stamped { value, expires_at });
        }
        Ok(())
    }
}

/// One hash map per key group this subtask owns, so that a snapshot or a rescale takes
/// or hands over whole key groups.
struct HeapTable<K, E> {
    groups: Vec<FxHashMap<K, E>>,
    ttl: Ttl,
}

impl<K, E> HeapTable<K, E> {
    fn new(groups: usize, ttl: Option<StateTtl>) -> Self {
        HeapTable {
            groups: (0..groups).map(|_| FxHashMap::default()).collect(),
            ttl: Ttl::from(ttl),
        }
    }
}

pub(crate) struct ValueTable<K, V>(HeapTable<K, Stamped<V>>);
pub(crate) struct MapTable<K, MK, MV>(HeapTable<K, FxHashMap<MK, Stamped<MV>>>);
/// TTL of a list applies to the list as a whole.
pub(crate) struct ListTable<K, V>(HeapTable<K, Stamped<Vec<V>>>);

impl<K, V> HeapTable<K, Stamped<V>> {
    fn remove_expired(&mut self, now: i64) -> usize {
        let mut removed = 0;
        for map in &mut self.groups {
            let before = map.len();
            map.retain(|_, e| e.expires_at > now);
            removed += before - map.len();
        }
        removed
    }
}

impl<K: Key, V: StateValue> AnyTable for ValueTable<K, V> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn remove_expired(&mut self, now: i64) -> usize {
        self.0.remove_expired(now)
    }
    fn snapshot_group(&self, local: usize) -> Result<Vec<u8>, String> {
        self.0.snapshot_stamped(local)
    }
    fn restore_group(&mut self, local: usize, bytes: &[u8]) -> Result<(), String> {
        self.0.restore_stamped(local, bytes)
    }
    fn group_len(&self, local: usize) -> usize {
        self.0.groups[local].len()
    }
}

impl<K: Key, MK: Key, MV: StateValue> AnyTable for MapTable<K, MK, MV> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn remove_expired(&mut self, now: i64) -> usize {
        let mut removed = 0;
        for map in &mut self.0.groups {
            map.retain(|_, m| {
                let before = m.len();
                m.retain(|_, e| e.expires_at > now);
                removed += before - m.len();
                !m.is_empty()
            });
        }
        removed
    }
    fn snapshot_group(&self, local: usize) -> Result<Vec<u8>, String> {
        type Entries<'a, MK, MV> = Vec<(&'a MK, i64, &'a MV)>;
        let entries: Vec<(&K, Entries<'_, MK, MV>)> = self.0.groups[local]
            .iter()
            .map(|(k, m)| {
                (
                    k,
                    m.iter()
                        .map(|(mk, e)| (mk, e.expires_at, &e.value))
                        .collect(),
                )
            })
            .collect();
        encode(&entries)
    }
    fn restore_group(&mut self, local: usize, bytes: &[u8]) -> Result<(), String> {
        let entries: OwnedMapEntries<K, MK, MV> = decode(bytes)?;
        let map = &mut self.0.groups[local];
        for (k, items) in entries {
            let m = map.entry(k).or_default();
            for (mk, expires_at, value) in items {
                m.insert(mk, Stamped { value, expires_at });
            }
        }
        Ok(())
    }
    fn group_len(&self, local: usize) -> usize {
        self.0.groups[local].len()
    }
}

impl<K: Key, V: StateValue> AnyTable for ListTable<K, V> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn remove_expired(&mut self, now: i64) -> usize {
        self.0.remove_expired(now)
    }
    fn snapshot_group(&self, local: usize) -> Result<Vec<u8>, String> {
        self.0.snapshot_stamped(local)
    }
    fn restore_group(&mut self, local: usize, bytes: &[u8]) -> Result<(), String> {
        self.0.restore_stamped(local, bytes)
    }
    fn group_len(&self, local: usize) -> usize {
        self.0.groups[local].len()
    }
}

/// Decodes a key group of one state in the canonical format and writes it to RocksDB.
type RocksRestore = fn(&mut RocksStore, u32, u16, &[u8]) -> Result<(), String>;

struct Slot {
    descriptor: StateDescriptor,
    /// The heap table, or `None` when the state lives in RocksDB.
    table: Option<Box<dyn AnyTable>>,
    shape: Shape,
    rocks_restore: RocksRestore,
}

/// Which backend keeps an operator's keyed state.
#[derive(Clone, Debug, Default)]
pub enum StateBackend {
    /// Live objects in hash maps: fastest, bounded by memory.
    #[default]
    Heap,
    /// RocksDB on local disk: state larger than memory, bounded memory use.
    RocksDb(RocksConfig),
}

fn restore_values<K: Key, V: StateValue>(
    store: &mut RocksStore,
    kg: u32,
    state: u16,
    bytes: &[u8],
) -> Result<(), String> {
    let entries: Vec<(K, i64, V)> = decode(bytes)?;
    for (k, expires, v) in entries {
        store.key_prefix(kg, state, &k)?;
        store.put(expires, &v)?;
    }
    Ok(())
}

fn restore_lists<K: Key, V: StateValue>(
    store: &mut RocksStore,
    kg: u32,
    state: u16,
    bytes: &[u8],
) -> Result<(), String> {
    restore_values::<K, Vec<V>>(store, kg, state, bytes)
}

fn restore_maps<K: Key, MK: Key, MV: StateValue>(
    store: &mut RocksStore,
    kg: u32,
    state: u16,
    bytes: &[u8],
) -> Result<(), String> {
    let entries: OwnedMapEntries<K, MK, MV> = decode(bytes)?;
    for (k, items) in entries {
        store.key_prefix(kg, state, &k)?;
        let len = store.key_len();
        for (mk, expires, v) in items {
            store.truncate_key(len);
            store.push_map_key(&mk)?;
            store.put(expires, &v)?;
        }
    }
    Ok(())
}

/// The keyed states of one operator instance, for the key groups its subtask owns.
///
/// Its snapshot unit is the key group, in a canonical format that does not depend on the
/// parallelism that wrote it: a key group written by any subtask can be loaded by whichever
/// subtask owns it after a rescale.
pub struct KeyedStateStore {
    slots: Vec<Slot>,
    ttl_in_use: bool,
    /// Local index of each key group (`NOT_OWNED` for groups of other subtasks).
    local_group: Vec<u32>,
    /// The key group of each local index.
    owned: Vec<u32>,
    rocks: Option<RocksStore>,
    /// The first RocksDB error of an access (accessors cannot return errors); the operator
    /// fails its task with it after the batch.
    error: Option<String>,
}

const NOT_OWNED: u32 = u32::MAX;

const WRONG_TABLE: &str = "state handle used with an operator that did not register it";

impl KeyedStateStore {
    /// A heap store for `subtask`'s key groups under `assignment`.
    pub fn new(assignment: &KeyGroupAssignment, subtask: u32) -> Self {
        let mut local_group = vec![NOT_OWNED; assignment.max_parallelism() as usize];
        let owned = assignment.owned_by(subtask);
        for (i, kg) in owned.iter().enumerate() {
            local_group[*kg as usize] = i as u32;
        }
        KeyedStateStore {
            slots: Vec::new(),
            ttl_in_use: false,
            local_group,
            owned,
            rocks: None,
            error: None,
        }
    }

    /// A store on `backend`; `name` names the RocksDB directory (unique per subtask).
    pub fn with_backend(
        assignment: &KeyGroupAssignment,
        subtask: u32,
        backend: &StateBackend,
        name: &str,
    ) -> Result<Self, String> {
        let mut store = Self::new(assignment, subtask);
        if let StateBackend::RocksDb(config) = backend {
            store.rocks = Some(RocksStore::open(config, name)?);
        }
        Ok(store)
    }

    pub fn is_rocksdb(&self) -> bool {
        self.rocks.is_some()
    }

    /// The first error a state access met since the last call.
    pub(crate) fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }

    /// The local index of `key`'s key group: computed once per record, used by every state
    /// access for that record.
    ///
    /// # Panics
    /// If the key's group belongs to another subtask: records are routed by the same
    /// assignment, so this is a routing bug, never a consequence of input.
    pub(crate) fn group_of<K: std::hash::Hash>(&self, key: &K) -> usize {
        let kg = key_group(stable_hash(key), self.local_group.len() as u32);
        let local = self.local_group[kg as usize];
        assert!(
            local != NOT_OWNED,
            "key group {kg} routed to a subtask that does not own it"
        );
        local as usize
    }

    fn register(
        &mut self,
        descriptor: StateDescriptor,
        table: Box<dyn AnyTable>,
        shape: Shape,
        rocks_restore: RocksRestore,
    ) -> Result<usize, String> {
        if self
            .slots
            .iter()
            .any(|s| s.descriptor.name == descriptor.name)
        {
            return Err(format!(
                "state '{}' is registered twice in the same operator",
                descriptor.name
            ));
        }
        if self.slots.len() >= u16::MAX as usize {
            return Err("too many states in one operator".into());
        }
        self.ttl_in_use |= descriptor.ttl.is_some();
        let table = self.rocks.is_none().then_some(table);
        self.slots.push(Slot {
            descriptor,
            table,
            shape,
            rocks_restore,
        });
        Ok(self.slots.len() - 1)
    }

    pub(crate) fn register_value<K: Key, V: StateValue>(
        &mut self,
        descriptor: StateDescriptor,
    ) -> Result<ValueState<V>, String> {
        let table = ValueTable::<K, V>(HeapTable::new(self.heap_groups(), descriptor.ttl));
        self.register(
            descriptor,
            Box::new(table),
            Shape::Value,
            restore_values::<K, V>,
        )
        .map(ValueState::new)
    }

    pub(crate) fn register_map<K: Key, MK: Key, MV: StateValue>(
        &mut self,
        descriptor: StateDescriptor,
    ) -> Result<MapState<MK, MV>, String> {
        let table = MapTable::<K, MK, MV>(HeapTable::new(self.heap_groups(), descriptor.ttl));
        self.register(
            descriptor,
            Box::new(table),
            Shape::Map,
            restore_maps::<K, MK, MV>,
        )
        .map(MapState::new)
    }

    pub(crate) fn register_list<K: Key, V: StateValue>(
        &mut self,
        descriptor: StateDescriptor,
    ) -> Result<ListState<V>, String> {
        let table = ListTable::<K, V>(HeapTable::new(self.heap_groups(), descriptor.ttl));
        self.register(
            descriptor,
            Box::new(table),
            Shape::List,
            restore_lists::<K, V>,
        )
        .map(ListState::new)
    }

    /// Heap tables get one map per owned key group; RocksDB stores need none.
    fn heap_groups(&self) -> usize {
        if self.rocks.is_some() {
            0
        } else {
            self.owned.len()
        }
    }

    /// The heap table of state `index`, or the RocksDB store with the state's index.
    fn backend<T: 'static>(&mut self, index: usize) -> Backend<'_, T> {
        let ttl = Ttl::from(self.slots[index].descriptor.ttl);
        match (&mut self.slots[index].table, &mut self.rocks) {
            (Some(table), _) => {
                Backend::Heap(table.as_any_mut().downcast_mut::<T>().expect(WRONG_TABLE))
            }
            (None, Some(rocks)) => Backend::Rocks(RocksAccess {
                store: rocks,
                error: &mut self.error,
                state: index as u16,
                kg: 0,
                ttl,
            }),
            (None, None) => unreachable!("a state without a heap table lives in RocksDB"),
        }
    }

    pub(crate) fn value<'a, K: Key, V: StateValue>(
        &'a mut self,
        handle: ValueState<V>,
        key: &'a K,
        group: usize,
        now: i64,
    ) -> ValueAccess<'a, K, V> {
        let kg = self.owned[group];
        ValueAccess(match self.backend::<ValueTable<K, V>>(handle.index) {
            Backend::Heap(t) => Access::Heap {
                ttl: t.0.ttl,
                map: &mut t.0.groups[group],
                key,
                now,
            },
            Backend::Rocks(r) => Access::Rocks(r.at(kg), key, now),
        })
    }

    pub(crate) fn map<'a, K: Key, MK: Key, MV: StateValue>(
        &'a mut self,
        handle: MapState<MK, MV>,
        key: &'a K,
        group: usize,
        now: i64,
    ) -> MapAccess<'a, K, MK, MV> {
        let kg = self.owned[group];
        MapAccess(match self.backend::<MapTable<K, MK, MV>>(handle.index) {
            Backend::Heap(t) => Access::Heap {
                ttl: t.0.ttl,
                map: &mut t.0.groups[group],
                key,
                now,
            },
            Backend::Rocks(r) => Access::Rocks(r.at(kg), key, now),
        })
    }

    pub(crate) fn list<'a, K: Key, V: StateValue>(
        &'a mut self,
        handle: ListState<V>,
        key: &'a K,
        group: usize,
        now: i64,
    ) -> ListAccess<'a, K, V> {
        let kg = self.owned[group];
        ListAccess(match self.backend::<ListTable<K, V>>(handle.index) {
            Backend::Heap(t) => Access::Heap {
                ttl: t.0.ttl,
                map: &mut t.0.groups[group],
                key,
                now,
            },
            Backend::Rocks(r) => Access::Rocks(r.at(kg), key, now),
        })
    }

    fn local(&self, key_group: u32) -> Result<usize, String> {
        match self.local_group.get(key_group as usize) {
            Some(&l) if l != NOT_OWNED => Ok(l as usize),
            _ => Err(format!(
                "key group {key_group} is not owned by this subtask"
            )),
        }
    }

    /// One key group of every state, in the canonical format: for each state its name,
    /// schema version and entries. (Heap only: a RocksDB store snapshots through [`pin`].)
    pub fn snapshot_key_group(&self, key_group: u32) -> Result<Vec<u8>, String> {
        let local = self.local(key_group)?;
        let mut states = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let table = slot
                .table
                .as_ref()
                .ok_or("a RocksDB store is snapshotted by pinning it")?;
            let entries = table.snapshot_group(local)?;
            states.push((
                slot.descriptor.name.clone(),
                slot.descriptor.schema_version,
                entries,
            ));
        }
        encode(&states)
    }

    /// Loads a key group written by `snapshot_key_group`, possibly by a subtask of another
    /// parallelism. Every state in it must be declared here with the same schema version.
    pub fn restore_key_group(&mut self, key_group: u32, bytes: &[u8]) -> Result<(), String> {
        let local = self.local(key_group)?;
        let states: Vec<(String, u32, Vec<u8>)> = decode(bytes)?;
        for (name, version, entries) in states {
            let index = self
                .slots
                .iter()
                .position(|s| s.descriptor.name == name)
                .ok_or_else(|| {
                    format!("the snapshot has state '{name}', which this operator does not declare")
                })?;
            let slot = &mut self.slots[index];
            if slot.descriptor.schema_version != version {
                return Err(format!(
                    "state '{name}' has schema version {version} in the snapshot but {} here",
                    slot.descriptor.schema_version
                ));
            }
            let restored = match (&mut slot.table, &mut self.rocks) {
                (Some(table), _) => table.restore_group(local, &entries),
                (None, Some(rocks)) => {
                    (slot.rocks_restore)(rocks, key_group, index as u16, &entries)
                }
                (None, None) => Err("state without a backend".into()),
            };
            restored.map_err(|e| format!("state '{name}', key group {key_group}: {e}"))?;
        }
        Ok(())
    }

    /// The synchronous part of a snapshot of a RocksDB store: pins the state and returns a
    /// function, to run off the task thread, that encodes the owned key groups canonically.
    pub(crate) fn pin(&mut self) -> Result<Option<PinnedState>, String> {
        let Some(rocks) = self.rocks.as_mut() else {
            return Ok(None);
        };
        Ok(Some(PinnedState {
            checkpoint: rocks.pin()?,
            groups: self.owned.clone(),
            states: self
                .slots
                .iter()
                .map(|s| {
                    (
                        s.descriptor.name.clone(),
                        s.descriptor.schema_version,
                        s.shape,
                    )
                })
                .collect(),
        }))
    }

    /// The synchronous part of an incremental checkpoint of a RocksDB store: pins the
    /// database; its files are uploaded (only those new since the last upload) afterwards.
    pub(crate) fn pin_native(&mut self) -> Result<Option<super::PinnedNative>, String> {
        let Some(rocks) = self.rocks.as_mut() else {
            return Ok(None);
        };
        let dir = rocks.pin()?;
        Ok(Some(super::PinnedNative {
            dir,
            instance: rocks.instance().to_string(),
            pin: rocks.pins(),
            groups: self.owned.clone(),
            states: self
                .slots
                .iter()
                .map(|s| s.descriptor.name.clone())
                .collect(),
        }))
    }

    /// Loads the key groups this subtask owns from a snapshot's RocksDB database: copied
    /// as they are into a RocksDB store, decoded into heap tables.
    pub fn restore_native(
        &mut self,
        native: &super::RestoredNative,
    ) -> Result<(), String> {
        let groups: Vec<u32> = native
            .groups
            .iter()
            .copied()
            .filter(|kg| self.local(*kg).is_ok())
            .collect();
        if groups.is_empty() {
            return Ok(());
        }
        let index_of = |name: &String| self.slots.iter().position(|s| &s.descriptor.name == name);
        if let Some(rocks) = self.rocks.as_mut() {
            let map: Vec<Option<u16>> = native
                .states
                .iter()
                .map(|n| {
                    self.slots
                        .iter()
                        .position(|s| &s.descriptor.name == n)
                        .map(|i| i as u16)
                })
                .collect();
            return rocks.copy_groups_from(&native.dir, &groups, &map);
        }
        let states: Vec<Option<(String, u32, Shape)>> = native
            .states
            .iter()
            .map(|n| {
                index_of(n).map(|i| {
                    let s = &self.slots[i];
                    (n.clone(), s.descriptor.schema_version, s.shape)
                })
            })
            .collect();
        for (kg, bytes) in super::rocks::encode_groups(&native.dir, &groups, &states)? {
            self.restore_key_group(kg, &bytes)?;
        }
        Ok(())
    }

    /// The canonical encoding of a key group in which no state has an entry.
    pub(crate) fn empty_key_group(&self) -> Result<Vec<u8>, String> {
        let states: Vec<(String, u32, Vec<u8>)> = self
            .slots
            .iter()
            .map(|s| {
                (
                    s.descriptor.name.clone(),
                    s.descriptor.schema_version,
                    vec![0u8; 8],
                )
            })
            .collect();
        encode(&states)
    }

    /// Name and schema version of every registered state.
    pub fn schemas(&self) -> Vec<super::StateSchema> {
        self.slots
            .iter()
            .map(|s| super::StateSchema {
                name: s.descriptor.name.clone(),
                schema_version: s.descriptor.schema_version,
            })
            .collect()
    }

    /// Whether no state holds an entry in `key_group` (snapshots skip such groups).
    pub fn is_key_group_empty(&self, key_group: u32) -> bool {
        self.local(key_group).map_or(true, |l| {
            self.slots
                .iter()
                .all(|s| s.table.as_ref().is_none_or(|t| t.group_len(l) == 0))
        })
    }

    /// Background TTL cleanup: drops every expired entry. Called from the task's timer tick,
    /// so state of keys that are never read again does not grow without bound.
    pub(crate) fn remove_expired(&mut self, now: i64) -> usize {
        if let Some(rocks) = &self.rocks {
            // RocksDB drops expired entries in compaction, by this clock.
            rocks.set_now(now);
            return 0;
        }
        if !self.ttl_in_use {
            return 0;
        }
        self.slots
            .iter_mut()
            .filter_map(|s| s.table.as_mut())
            .map(|t| t.remove_expired(now))
            .sum()
    }
}

/// A pinned RocksDB snapshot waiting to be encoded.
pub(crate) struct PinnedState {
    checkpoint: PathBuf,
    groups: Vec<u32>,
    states: Vec<(String, u32, Shape)>,
}

impl PinnedState {
    /// The canonical encoding of every non-empty owned key group.
    pub(crate) fn encode(self) -> Result<Vec<(u32, Vec<u8>)>, String> {
        super::rocks::encode_pinned(&self.checkpoint, &self.groups, &self.states)
    }
}

enum Backend<'a, T> {
    Heap(&'a mut T),
    Rocks(RocksAccess<'a>),
}

/// A state in a RocksDB store, for one key group.
struct RocksAccess<'a> {
    store: &'a mut RocksStore,
    error: &'a mut Option<String>,
    state: u16,
    kg: u32,
    ttl: Ttl,
}

impl<'a> RocksAccess<'a> {
    fn at(mut self, kg: u32) -> Self {
        self.kg = kg;
        self
    }

    /// Records the first error; the access then behaves as if the entry were absent.
    fn ok<T>(&mut self, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }

    fn key<K: Key>(&mut self, key: &K) -> bool {
        let r = self.store.key_prefix(self.kg, self.state, key);
        self.ok(r).is_some()
    }

    /// The live value at the current scratch key, refreshing its TTL on read if asked.
    fn live<V: StateValue>(&mut self, now: i64) -> Option<V> {
        let r = self.store.get::<V>();
        let (expires, value) = self.ok(r)??;
        if expires <= now {
            let r = self.store.delete();
            self.ok(r);
            return None;
        }
        if self.ttl.refresh_on_read {
            let r = self.store.put(self.ttl.expiry(now), &value);
            self.ok(r);
        }
        Some(value)
    }

    fn write<V: StateValue>(&mut self, value: &V, now: i64) {
        let r = self.store.put(self.ttl.expiry(now), value);
        self.ok(r);
    }

    fn remove(&mut self) {
        let r = self.store.delete();
        self.ok(r);
    }
}

/// One key's state, on either backend.
enum Access<'a, K, M> {
    Heap {
        map: &'a mut M,
        ttl: Ttl,
        key: &'a K,
        now: i64,
    },
    Rocks(RocksAccess<'a>, &'a K, i64),
}

fn live<'m, K: Hash + Eq, V>(
    map: &'m mut FxHashMap<K, Stamped<V>>,
    key: &K,
    ttl: Ttl,
    now: i64,
) -> Option<&'m mut Stamped<V>> {
    let expired = match map.get(key) {
        None => return None,
        Some(e) => e.expires_at <= now,
    };
    if expired {
        map.remove(key);
        return None;
    }
    let e = map.get_mut(key)?;
    if ttl.refresh_on_read {
        e.expires_at = ttl.expiry(now);
    }
    Some(e)
}

/// Reads and writes one key's value.
pub struct ValueAccess<'a, K, V>(Access<'a, K, FxHashMap<K, Stamped<V>>>);

impl<K: Key, V: StateValue> ValueAccess<'_, K, V> {
    pub fn get(&mut self) -> Option<V> {
        match &mut self.0 {
            Access::Heap { map, ttl, key, now } => {
                live(map, key, *ttl, *now).map(|e| e.value.clone())
            }
            Access::Rocks(r, key, now) => {
                if !r.key(*key) {
                    return None;
                }
                r.live(*now)
            }
        }
    }

    pub fn set(&mut self, value: V) {
        match &mut self.0 {
            Access::Heap { map, ttl, key, now } => {
                let expires_at = ttl.expiry(*now);
                match map.get_mut(*key) {
                    Some(e) => *e = Stamped { value, expires_at },
                    None => {
                        map.insert((*key).clone(), Stamped { value, expires_at });
                    }
                }
            }
            Access::Rocks(r, key, now) => {
                if r.key(*key) {
                    r.write(&value, *now);
                }
            }
        }
    }

    pub fn clear(&mut self) {
        match &mut self.0 {
            Access::Heap { map, key, .. } => {
                map.remove(*key);
            }
            Access::Rocks(r, key, _) => {
                if r.key(*key) {
                    r.remove();
                }
            }
        }
    }

    /// Reads, changes and writes back in one step; `None` afterwards removes the entry.
    pub fn update<R>(&mut self, f: impl FnOnce(&mut Option<V>) -> R) -> R {
        match &mut self.0 {
            Access::Heap { map, ttl, key, now } => {
                let (ttl, now) = (*ttl, *now);
                let mut slot = match live(map, key, ttl, now) {
                    Some(_) => map.remove(*key).map(|e| e.value),
                    None => None,
                };
                let r = f(&mut slot);
                if let Some(value) = slot {
                    map.insert(
                        (*key).clone(),
                        Stamped {
                            value,
                            expires_at: ttl.expiry(now),
                        },
                    );
                }
                r
            }
            Access::Rocks(a, key, now) => {
                if !a.key(*key) {
                    return f(&mut None);
                }
                let mut slot = a.live::<V>(*now);
                let existed = slot.is_some();
                let r = f(&mut slot);
                match slot {
                    Some(value) => a.write(&value, *now),
                    None if existed => a.remove(),
                    None => {}
                }
                r
            }
        }
    }
}

/// Reads and writes one key's map.
pub struct MapAccess<'a, K, MK, MV>(Access<'a, K, FxHashMap<K, FxHashMap<MK, Stamped<MV>>>>);

impl<K: Key, MK: Key, MV: StateValue> MapAccess<'_, K, MK, MV> {
    pub fn get(&mut self, entry: &MK) -> Option<MV> {
        match &mut self.0 {
            Access::Heap { map, ttl, key, now } => {
                let m = map.get_mut(*key)?;
                live(m, entry, *ttl, *now).map(|e| e.value.clone())
            }
            Access::Rocks(r, key, now) => {
                if !r.key(*key) {
                    return None;
                }
                let pushed = r.store.push_map_key(entry);
                r.ok(pushed)?;
                r.live(*now)
            }
        }
    }

    pub fn put(&mut self, entry: MK, value: MV) {
        match &mut self.0 {
            Access::Heap { map, ttl, key, now } => {
                let expires_at = ttl.expiry(*now);
                let m = match map.get_mut(*key) {
                    Some(m) => m,
                    None => map.entry((*key).clone()).or_default(),
                };
                m.insert(entry, Stamped { value, expires_at });
            }
            Access::Rocks(r, key, now) => {
                if r.key(*key) {
                    let pushed = r.store.push_map_key(&entry);
                    if r.ok(pushed).is_some() {
                        r.write(&value, *now);
                    }
                }
            }
        }
    }

    pub fn remove(&mut self, entry: &MK) -> Option<MV> {
        match &mut self.0 {
            Access::Heap { map, key, now, .. } => {
                let m = map.get_mut(*key)?;
                let removed = m.remove(entry).filter(|e| e.expires_at > *now);
                if m.is_empty() {
                    map.remove(*key);
                }
                removed.map(|e| e.value)
            }
            Access::Rocks(r, key, now) => {
                if !r.key(*key) {
                    return None;
                }
                let pushed = r.store.push_map_key(entry);
                r.ok(pushed)?;
                let got = r.store.get::<MV>();
                let (expires, value) = r.ok(got)??;
                r.remove();
                (expires > *now).then_some(value)
            }
        }
    }

    /// The live entries, in no particular order.
    pub fn entries(&mut self) -> Vec<(MK, MV)> {
        match &mut self.0 {
            Access::Heap { map, key, now, .. } => map.get(*key).map_or_else(Vec::new, |m| {
                m.iter()
                    .filter(|(_, e)| e.expires_at > *now)
                    .map(|(k, e)| (k.clone(), e.value.clone()))
                    .collect()
            }),
            Access::Rocks(r, key, now) => {
                if !r.key(*key) {
                    return Vec::new();
                }
                let scanned = r.store.scan_prefix::<MK, MV>();
                r.ok(scanned).map_or_else(Vec::new, |all| {
                    all.into_iter()
                        .filter(|(_, expires, _)| *expires > *now)
                        .map(|(k, _, v)| (k, v))
                        .collect()
                })
            }
        }
    }

    pub fn is_empty(&mut self) -> bool {
        self.entries().is_empty()
    }

    pub fn clear(&mut self) {
        match &mut self.0 {
            Access::Heap { map, key, .. } => {
                map.remove(*key);
            }
            Access::Rocks(r, key, _) => {
                if r.key(*key) {
                    let deleted = r.store.delete_prefix();
                    r.ok(deleted);
                }
            }
        }
    }
}

/// Reads and writes one key's list.
pub struct ListAccess<'a, K, V>(Access<'a, K, FxHashMap<K, Stamped<Vec<V>>>>);

impl<K: Key, V: StateValue> ListAccess<'_, K, V> {
    pub fn add(&mut self, value: V) {
        self.update(|l| l.push(value));
    }

    pub fn get(&mut self) -> Vec<V> {
        match &mut self.0 {
            Access::Heap { map, ttl, key, now } => {
                live(map, key, *ttl, *now).map_or_else(Vec::new, |e| e.value.clone())
            }
            Access::Rocks(r, key, now) => {
                if !r.key(*key) {
                    return Vec::new();
                }
                r.live(*now).unwrap_or_default()
            }
        }
    }

    /// Changes the list in place; an empty list afterwards removes the entry.
    pub fn update<R>(&mut self, f: impl FnOnce(&mut Vec<V>) -> R) -> R {
        match &mut self.0 {
            Access::Heap { map, ttl, key, now } => {
                let (ttl, now) = (*ttl, *now);
                let expires_at = ttl.expiry(now);
                if live(map, key, ttl, now).is_none() {
                    let mut list = Vec::new();
                    let r = f(&mut list);
                    if !list.is_empty() {
                        map.insert(
                            (*key).clone(),
                            Stamped {
                                value: list,
                                expires_at,
                            },
                        );
                    }
                    return r;
                }
                let Some(e) = map.get_mut(*key) else {
                    return f(&mut Vec::new());
                };
                let r = f(&mut e.value);
                e.expires_at = expires_at;
                if e.value.is_empty() {
                    map.remove(*key);
                }
                r
            }
            Access::Rocks(a, key, now) => {
                if !a.key(*key) {
                    return f(&mut Vec::new());
                }
                let before: Option<Vec<V>> = a.live(*now);
                let existed = before.is_some();
                let mut list = before.unwrap_or_default();
                let r = f(&mut list);
                if !list.is_empty() {
                    a.write(&list, *now);
                } else if existed {
                    a.remove();
                }
                r
            }
        }
    }

    pub fn clear(&mut self) {
        match &mut self.0 {
            Access::Heap { map, key, .. } => {
                map.remove(*key);
            }
            Access::Rocks(r, key, _) => {
                if r.key(*key) {
                    r.remove();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every key group is local at parallelism 1: the local index is the key group.
    fn store_group(key: &u64) -> usize {
        key_group(stable_hash(key), 128) as usize
    }

    fn store_with_ttl(update: TtlUpdate) -> (KeyedStateStore, ValueState<u64>) {
        let mut store = KeyedStateStore::new(&KeyGroupAssignment::contiguous(128, 1), 0);
        let h = store
            .register_value::<u64, u64>(
                StateDescriptor::new("v").ttl(Duration::from_millis(100), update),
            )
            .unwrap();
        (store, h)
    }

    #[test]
    fn ttl_expires_exactly_at_the_deadline_and_not_before() {
        let (mut store, h) = store_with_ttl(TtlUpdate::OnCreateAndWrite);
        store.value(h, &1u64, store_group(&1u64), 1_000).set(7);
        assert_eq!(
            store.value(h, &1u64, store_group(&1u64), 1_099).get(),
            Some(7)
        );
        // Reads do not extend the life with OnCreateAndWrite.
        assert_eq!(
            store.value(h, &1u64, store_group(&1u64), 1_099).get(),
            Some(7)
        );
        assert_eq!(store.value(h, &1u64, store_group(&1u64), 1_100).get(), None);
    }

    #[test]
    fn ttl_on_read_and_write_extends_on_every_read() {
        let (mut store, h) = store_with_ttl(TtlUpdate::OnReadAndWrite);
        store.value(h, &1u64, store_group(&1u64), 0).set(7);
        for t in [90, 180, 270] {
            assert_eq!(
                store.value(h, &1u64, store_group(&1u64), t).get(),
                Some(7),
                "at {t}"
            );
        }
        assert_eq!(store.value(h, &1u64, store_group(&1u64), 370).get(), None);
    }

    #[test]
    fn background_cleanup_removes_only_expired_entries() {
        let (mut store, h) = store_with_ttl(TtlUpdate::OnCreateAndWrite);
        store.value(h, &1u64, store_group(&1u64), 0).set(1);
        store.value(h, &2u64, store_group(&2u64), 50).set(2);
        assert_eq!(store.remove_expired(99), 0);
        assert_eq!(store.remove_expired(100), 1);
        assert_eq!(
            store.value(h, &2u64, store_group(&2u64), 149).get(),
            Some(2)
        );
        assert_eq!(store.remove_expired(150), 1);
    }

    fn rocks_store(dir: &std::path::Path) -> KeyedStateStore {
        let backend = StateBackend::RocksDb(RocksConfig::new(dir.to_path_buf(), 16 << 20));
        KeyedStateStore::with_backend(&KeyGroupAssignment::contiguous(128, 1), 0, &backend, "t")
            .unwrap()
    }

    #[test]
    fn rocksdb_state_reads_like_the_heap_and_expires_in_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = rocks_store(dir.path());
        let v = store
            .register_value::<u64, u64>(
                StateDescriptor::new("v")
                    .ttl(Duration::from_millis(100), TtlUpdate::OnCreateAndWrite),
            )
            .unwrap();
        let m = store
            .register_map::<u64, String, u64>(StateDescriptor::new("m"))
            .unwrap();
        let l = store
            .register_list::<u64, u64>(StateDescriptor::new("l"))
            .unwrap();
        for key in 0u64..1_000 {
            let g = store.group_of(&key);
            store.value(v, &key, g, 0).set(key);
        }
        let g = store_group(&7u64);
        store.map(m, &7u64, g, 0).put("a".into(), 1);
        store.map(m, &7u64, g, 0).put("b".into(), 2);
        assert_eq!(store.map(m, &7u64, g, 0).remove(&"a".to_string()), Some(1));
        assert_eq!(
            store.map(m, &7u64, g, 0).entries(),
            vec![("b".to_string(), 2)]
        );
        store.list(l, &7u64, g, 0).add(1);
        store.list(l, &7u64, g, 0).add(2);
        assert_eq!(store.list(l, &7u64, g, 0).get(), vec![1, 2]);
        assert_eq!(store.value(v, &7u64, g, 99).get(), Some(7));
        assert_eq!(store.value(v, &8u64, store_group(&8u64), 100).get(), None);
        assert!(store.take_error().is_none());

        // Expired entries are dropped for good by compaction, not only hidden from reads.
        let rocks = store.rocks.as_ref().unwrap();
        assert_eq!(
            rocks.compact_and_count(),
            1_000 - 1 + 1 + 1,
            "before expiry"
        );
        store.remove_expired(100);
        let rocks = store.rocks.as_ref().unwrap();
        assert_eq!(
            rocks.compact_and_count(),
            2,
            "only the map and list entries remain"
        );
    }

    #[test]
    fn registering_a_state_name_twice_is_an_error() {
        let mut store = KeyedStateStore::new(&KeyGroupAssignment::contiguous(128, 1), 0);
        store
            .register_value::<u64, u64>(StateDescriptor::new("x"))
            .unwrap();
        let err = store
            .register_list::<u64, u64>(StateDescriptor::new("x"))
            .unwrap_err();
        assert!(err.contains("'x'"), "{err}");
    }

    /// Stores of `parallelism` subtasks, each with value, map and list state.
    #[allow(clippy::type_complexity)]
    fn stores(
        a: &KeyGroupAssignment,
    ) -> Vec<(
        KeyedStateStore,
        ValueState<u64>,
        MapState<String, u64>,
        ListState<u64>,
    )> {
        (0..a.parallelism())
            .map(|s| {
                let mut store = KeyedStateStore::new(a, s);
                let v = store
                    .register_value::<u64, u64>(
                        StateDescriptor::new("v")
                            .ttl(Duration::from_millis(100), TtlUpdate::OnCreateAndWrite),
                    )
                    .unwrap();
                let m = store
                    .register_map::<u64, String, u64>(StateDescriptor::new("m"))
                    .unwrap();
                let l = store
                    .register_list::<u64, u64>(StateDescriptor::new("l"))
                    .unwrap();
                (store, v, m, l)
            })
            .collect()
    }

    #[test]
    fn key_groups_snapshot_at_one_parallelism_restore_at_another() {
        let before = KeyGroupAssignment::contiguous(128, 4);
        let mut old = stores(&before);
        for key in 0u64..2_000 {
            let (store, v, m, l) = &mut old[before.route(stable_hash(&key)) as usize];
            let g = store.group_of(&key);
            store.value(*v, &key, g, key as i64).set(key * 10);
            store.map(*m, &key, g, 0).put(format!("k{key}"), key);
            store.list(*l, &key, g, 0).add(key);
            store.list(*l, &key, g, 0).add(key + 1);
        }
        for p in [1u32, 3, 7] {
            let after = before.rescaled(p);
            let mut new = stores(&after);
            for kg in 0..128u32 {
                let bytes = old[before.owner(kg) as usize]
                    .0
                    .snapshot_key_group(kg)
                    .unwrap();
                new[after.owner(kg) as usize]
                    .0
                    .restore_key_group(kg, &bytes)
                    .unwrap();
            }
            for key in 0u64..2_000 {
                let (store, v, m, l) = &mut new[after.route(stable_hash(&key)) as usize];
                let g = store.group_of(&key);
                // The TTL deadline travels with the value: written at `key`, gone at key+100.
                assert_eq!(
                    store.value(*v, &key, g, key as i64 + 99).get(),
                    Some(key * 10)
                );
                assert_eq!(store.value(*v, &key, g, key as i64 + 100).get(), None);
                assert_eq!(store.map(*m, &key, g, 0).get(&format!("k{key}")), Some(key));
                assert_eq!(store.list(*l, &key, g, 0).get(), vec![key, key + 1]);
            }
        }
    }

    #[test]
    fn restoring_an_undeclared_or_changed_state_names_it() {
        let a = KeyGroupAssignment::contiguous(128, 1);
        let mut old = stores(&a);
        let bytes = old[0].0.snapshot_key_group(5).unwrap();
        let mut renamed = KeyedStateStore::new(&a, 0);
        renamed
            .register_value::<u64, u64>(StateDescriptor::new("w"))
            .unwrap();
        assert_eq!(
            renamed.restore_key_group(5, &bytes).unwrap_err(),
            "the snapshot has state 'v', which this operator does not declare"
        );
        let mut evolved = KeyedStateStore::new(&a, 0);
        evolved
            .register_value::<u64, u64>(StateDescriptor::new("v").schema_version(2))
            .unwrap();
        assert_eq!(
            evolved.restore_key_group(5, &bytes).unwrap_err(),
            "state 'v' has schema version 1 in the snapshot but 2 here"
        );
        assert!(old[0].0.restore_key_group(5, b"garbage").is_err());
    }

    #[test]
    fn map_and_list_state_round_trip() {
        let mut store = KeyedStateStore::new(&KeyGroupAssignment::contiguous(128, 1), 0);
        let m = store
            .register_map::<u64, String, u64>(StateDescriptor::new("m"))
            .unwrap();
        let l = store
            .register_list::<u64, u64>(StateDescriptor::new("l"))
            .unwrap();
        store
            .map(m, &1u64, store_group(&1u64), 0)
            .put("a".into(), 1);
        store
            .map(m, &1u64, store_group(&1u64), 0)
            .put("b".into(), 2);
        assert_eq!(
            store
                .map(m, &1u64, store_group(&1u64), 0)
                .remove(&"a".to_string()),
            Some(1)
        );
        assert_eq!(
            store.map(m, &1u64, store_group(&1u64), 0).entries(),
            vec![("b".to_string(), 2)]
        );
        store.list(l, &1u64, store_group(&1u64), 0).add(1);
        store.list(l, &1u64, store_group(&1u64), 0).add(2);
        assert_eq!(
            store.list(l, &1u64, store_group(&1u64), 0).get(),
            vec![1, 2]
        );
        store
            .list(l, &1u64, store_group(&1u64), 0)
            .update(|v| v.retain(|&x| x > 1));
        assert_eq!(store.list(l, &1u64, store_group(&1u64), 0).get(), vec![2]);
        assert!(store.list(l, &2u64, store_group(&2u64), 0).get().is_empty());
    }
}

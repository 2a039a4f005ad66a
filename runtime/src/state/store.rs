//! The keyed-state store of one operator subtask: the registry of its states (each a heap
//! table or a range of its RocksDB database), snapshot and restore of whole key groups in
//! the canonical format, and the typed access to one key's state that job code gets.

use super::access::{Access, Backend, ListAccess, MapAccess, RocksAccess, ValueAccess};
use super::canonical::{Entries, EntriesWriter};
use super::heap::{
    decode, encode, AnyTable, HeapTable, ListTable, MapTable, OwnedMapEntries, Ttl, ValueTable,
};
use super::rocks::{RocksConfig, RocksStore, Shape};
use super::{
    key_group, stable_hash, KeyGroupAssignment, ListState, MapState, StateDescriptor, StateValue,
    ValueState,
};
use crate::error::StateError;
use crate::record::Key;

/// Decodes a key group of one state in the canonical format and writes it to RocksDB.
type RocksRestore = fn(&mut RocksStore, u32, u16, &[u8]) -> Result<(), StateError>;

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
) -> Result<(), StateError> {
    match Entries::of(bytes)? {
        // Keys and values are stored as the snapshot holds them: copied, not decoded.
        Entries::Framed(mut entries) => {
            while let Some((k, expires, v)) = entries.next_entry()? {
                store.key_prefix_encoded(kg, state, k)?;
                store.load_encoded(expires, v)?;
            }
        }
        Entries::Typed(bytes) => {
            let entries: Vec<(K, i64, V)> = decode(bytes)?;
            for (k, expires, v) in entries {
                store.key_prefix(kg, state, &k)?;
                store.load(expires, &v)?;
            }
        }
    }
    Ok(())
}

fn restore_lists<K: Key, V: StateValue>(
    store: &mut RocksStore,
    kg: u32,
    state: u16,
    bytes: &[u8],
) -> Result<(), StateError> {
    restore_values::<K, Vec<V>>(store, kg, state, bytes)
}

fn restore_maps<K: Key, MK: Key, MV: StateValue>(
    store: &mut RocksStore,
    kg: u32,
    state: u16,
    bytes: &[u8],
) -> Result<(), StateError> {
    match Entries::of(bytes)? {
        Entries::Framed(mut entries) => {
            while let Some((k, items)) = entries.next_map_key()? {
                store.key_prefix_encoded(kg, state, k)?;
                let len = store.key_len();
                for _ in 0..items {
                    let (mk, expires, v) = entries.map_item()?;
                    store.truncate_key(len);
                    store.push_encoded_map_key(mk);
                    store.load_encoded(expires, v)?;
                }
            }
        }
        Entries::Typed(bytes) => {
            let entries: OwnedMapEntries<K, MK, MV> = decode(bytes)?;
            for (k, items) in entries {
                store.key_prefix(kg, state, &k)?;
                let len = store.key_len();
                for (mk, expires, v) in items {
                    store.truncate_key(len);
                    store.push_map_key(&mk)?;
                    store.load(expires, &v)?;
                }
            }
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
    error: Option<StateError>,
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
    ) -> Result<Self, StateError> {
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
    pub(crate) fn take_error(&mut self) -> Option<StateError> {
        self.error.take()
    }

    /// Whether a state access met an error: checked per record, cheaper than taking it.
    #[inline]
    pub(crate) fn has_error(&self) -> bool {
        self.error.is_some()
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
    ) -> Result<usize, StateError> {
        if self
            .slots
            .iter()
            .any(|s| s.descriptor.name == descriptor.name)
        {
            return Err(StateError::RegisteredTwice(descriptor.name));
        }
        if self.slots.len() >= u16::MAX as usize {
            return Err(StateError::TooManyStates);
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
    ) -> Result<ValueState<V>, StateError> {
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
    ) -> Result<MapState<MK, MV>, StateError> {
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
    ) -> Result<ListState<V>, StateError> {
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

    fn local(&self, key_group: u32) -> Result<usize, StateError> {
        match self.local_group.get(key_group as usize) {
            Some(&l) if l != NOT_OWNED => Ok(l as usize),
            _ => Err(StateError::NotOwned(key_group)),
        }
    }

    /// One key group of every state, in the canonical format: for each state its name,
    /// schema version and entries. (Heap only: a RocksDB store snapshots through [`pin`].)
    pub fn snapshot_key_group(&self, key_group: u32) -> Result<Vec<u8>, StateError> {
        let local = self.local(key_group)?;
        let mut states = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let table = slot.table.as_ref().ok_or(StateError::SnapshotByPin)?;
            let entries = table.snapshot_group(local)?;
            states.push((
                slot.descriptor.name.as_str(),
                slot.descriptor.schema_version,
                serde_bytes::ByteBuf::from(entries),
            ));
        }
        encode(&states)
    }

    /// Loads a key group written by `snapshot_key_group`, possibly by a subtask of another
    /// parallelism. Every state in it must be declared here with the same schema version.
    pub fn restore_key_group(&mut self, key_group: u32, bytes: &[u8]) -> Result<(), StateError> {
        let local = self.local(key_group)?;
        // Entries are bytes to bincode (as `Vec<u8>` always was): read without a copy.
        let states: Vec<(&str, u32, &serde_bytes::Bytes)> =
            bincode::deserialize(bytes).map_err(StateError::decode("state"))?;
        for (name, version, entries) in states {
            let name = name.to_string();
            let index = self
                .slots
                .iter()
                .position(|s| s.descriptor.name == name)
                .ok_or_else(|| StateError::Undeclared(name.clone()))?;
            let slot = &mut self.slots[index];
            if slot.descriptor.schema_version != version {
                return Err(StateError::SchemaVersion {
                    name,
                    snapshot: version,
                    declared: slot.descriptor.schema_version,
                });
            }
            let restored = match (&mut slot.table, &mut self.rocks) {
                (Some(table), _) => table.restore_group(local, entries),
                (None, Some(rocks)) => {
                    (slot.rocks_restore)(rocks, key_group, index as u16, entries)
                }
                (None, None) => Err(StateError::NoBackend),
            };
            restored.map_err(|e| StateError::InState {
                name,
                key_group,
                source: Box::new(e),
            })?;
        }
        Ok(())
    }

    /// Ends a restore: what was restored into RocksDB is written to it (see
    /// `RocksStore::ingest_loaded`). Heap state is complete already.
    pub fn finish_restore(&mut self) -> Result<(), StateError> {
        self.rocks
            .as_mut()
            .map_or(Ok(()), RocksStore::ingest_loaded)
    }

    /// The synchronous part of a snapshot of a RocksDB store: pins the state and returns a
    /// function, to run off the task thread, that encodes the owned key groups canonically.
    pub(crate) fn pin(&mut self) -> Result<Option<PinnedState>, StateError> {
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
    pub(crate) fn pin_native(&mut self) -> Result<Option<super::PinnedNative>, StateError> {
        let Some(rocks) = self.rocks.as_mut() else {
            return Ok(None);
        };
        Ok(Some(super::PinnedNative {
            checkpoint: rocks.pin()?,
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
    pub fn restore_native(&mut self, native: &super::RestoredNative) -> Result<(), StateError> {
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
            return rocks.restore_database(native, &groups, &map);
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
    pub(crate) fn empty_key_group(&self) -> Result<Vec<u8>, StateError> {
        let states: Vec<(&str, u32, serde_bytes::ByteBuf)> = self
            .slots
            .iter()
            .map(|s| {
                (
                    s.descriptor.name.as_str(),
                    s.descriptor.schema_version,
                    serde_bytes::ByteBuf::from(EntriesWriter::new().finish()),
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
    checkpoint: super::PinnedCheckpoint,
    groups: Vec<u32>,
    states: Vec<(String, u32, Shape)>,
}

impl PinnedState {
    /// The canonical encoding of every non-empty owned key group.
    pub(crate) fn encode(self) -> Result<Vec<(u32, Vec<u8>)>, StateError> {
        super::rocks::encode_pinned(&self.checkpoint, &self.groups, &self.states)
    }
}

#[cfg(test)]
mod tests;

//! The heap backend of keyed state: per state, one hash map per key group the subtask
//! owns, holding live objects with the processing time at which each expires.

use super::canonical::{decode_one, Entries, EntriesWriter};
use super::{StateTtl, StateValue, TtlUpdate};
use crate::error::StateError;
use crate::record::Key;
use crate::time::duration_millis;
use rustc_hash::FxHashMap;
use std::any::Any;

/// A value with the processing time at which it expires (`i64::MAX`: never).
#[derive(Clone, Debug)]
pub(super) struct Stamped<V> {
    pub(super) value: V,
    pub(super) expires_at: i64,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Ttl {
    millis: Option<i64>,
    pub(super) refresh_on_read: bool,
}

impl Ttl {
    pub(super) fn from(ttl: Option<StateTtl>) -> Self {
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
    pub(super) fn expiry(&self, now: i64) -> i64 {
        self.millis.map_or(i64::MAX, |ms| now.saturating_add(ms))
    }
}

/// Type-erased view of a table, for the store's bookkeeping.
pub(super) trait AnyTable: Any {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Drops expired entries; returns how many.
    fn remove_expired(&mut self, now: i64) -> usize;
    /// The entries of one key group in the canonical format (`super::canonical`), the
    /// same whatever the backend, so any backend at any parallelism can read it.
    fn snapshot_group(&self, local: usize) -> Result<Vec<u8>, StateError>;
    /// Adds the entries of a key group written by `snapshot_group`.
    fn restore_group(&mut self, local: usize, bytes: &[u8]) -> Result<(), StateError>;
    /// Entries (keys) in a key group.
    fn group_len(&self, local: usize) -> usize;
}

/// A map state's key group as decoded: `(key, [(map key, expires_at, value)])`.
pub(super) type OwnedMapEntries<K, MK, MV> = Vec<(K, Vec<(MK, i64, MV)>)>;

pub(super) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StateError> {
    bincode::serialize(value).map_err(StateError::encode("state"))
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StateError> {
    bincode::deserialize(bytes).map_err(StateError::decode("state"))
}

impl<K: Key, V: StateValue> HeapTable<K, Stamped<V>> {
    fn snapshot_stamped(&self, local: usize) -> Result<Vec<u8>, StateError> {
        let mut out = EntriesWriter::new();
        for (k, e) in &self.groups[local] {
            out.entry(k, e.expires_at, &e.value)?;
        }
        Ok(out.finish())
    }

    fn restore_stamped(&mut self, local: usize, bytes: &[u8]) -> Result<(), StateError> {
        let map = &mut self.groups[local];
        match Entries::of(bytes)? {
            Entries::Framed(mut entries) => {
                while let Some((k, expires_at, value)) = entries.next_entry()? {
                    let value = decode_one(value)?;
                    map.insert(decode_one(k)?, Stamped { value, expires_at });
                }
            }
            Entries::Typed(bytes) => {
                let entries: Vec<(K, i64, V)> = decode(bytes)?;
                for (k, expires_at, value) in entries {
                    map.insert(k, Stamped { value, expires_at });
                }
            }
        }
        Ok(())
    }
}

/// One hash map per key group this subtask owns, so that a snapshot or a rescale takes
/// or hands over whole key groups.
pub(super) struct HeapTable<K, E> {
    pub(super) groups: Vec<FxHashMap<K, E>>,
    pub(super) ttl: Ttl,
}

impl<K, E> HeapTable<K, E> {
    pub(super) fn new(groups: usize, ttl: Option<StateTtl>) -> Self {
        HeapTable {
            groups: (0..groups).map(|_| FxHashMap::default()).collect(),
            ttl: Ttl::from(ttl),
        }
    }
}

pub(super) struct ValueTable<K, V>(pub(super) HeapTable<K, Stamped<V>>);
pub(super) struct MapTable<K, MK, MV>(pub(super) HeapTable<K, FxHashMap<MK, Stamped<MV>>>);
/// TTL of a list applies to the list as a whole.
pub(super) struct ListTable<K, V>(pub(super) HeapTable<K, Stamped<Vec<V>>>);

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
    fn snapshot_group(&self, local: usize) -> Result<Vec<u8>, StateError> {
        self.0.snapshot_stamped(local)
    }
    fn restore_group(&mut self, local: usize, bytes: &[u8]) -> Result<(), StateError> {
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
    fn snapshot_group(&self, local: usize) -> Result<Vec<u8>, StateError> {
        let mut out = EntriesWriter::new();
        for (k, m) in &self.0.groups[local] {
            out.map_key(k)?;
            for (mk, e) in m {
                out.map_item(mk, e.expires_at, &e.value)?;
            }
        }
        Ok(out.finish())
    }
    fn restore_group(&mut self, local: usize, bytes: &[u8]) -> Result<(), StateError> {
        let map = &mut self.0.groups[local];
        match Entries::of(bytes)? {
            Entries::Framed(mut entries) => {
                while let Some((k, items)) = entries.next_map_key()? {
                    let m = map.entry(decode_one(k)?).or_default();
                    for _ in 0..items {
                        let (mk, expires_at, value) = entries.map_item()?;
                        let value = decode_one(value)?;
                        m.insert(decode_one(mk)?, Stamped { value, expires_at });
                    }
                }
            }
            Entries::Typed(bytes) => {
                let entries: OwnedMapEntries<K, MK, MV> = decode(bytes)?;
                for (k, items) in entries {
                    let m = map.entry(k).or_default();
                    for (mk, expires_at, value) in items {
                        m.insert(mk, Stamped { value, expires_at });
                    }
                }
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
    fn snapshot_group(&self, local: usize) -> Result<Vec<u8>, StateError> {
        self.0.snapshot_stamped(local)
    }
    fn restore_group(&mut self, local: usize, bytes: &[u8]) -> Result<(), StateError> {
        self.0.restore_stamped(local, bytes)
    }
    fn group_len(&self, local: usize) -> usize {
        self.0.groups[local].len()
    }
}

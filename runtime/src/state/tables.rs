//! Heap state tables and the typed accessors job code uses.

use super::{ListState, MapState, StateDescriptor, StateTtl, StateValue, TtlUpdate, ValueState};
use crate::api::Key;
use crate::time::duration_millis;
use rustc_hash::FxHashMap;
use std::any::Any;
use std::hash::Hash;

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
}

pub(crate) struct ValueTable<K, V> {
    map: FxHashMap<K, Stamped<V>>,
    ttl: Ttl,
}

pub(crate) struct MapTable<K, MK, MV> {
    map: FxHashMap<K, FxHashMap<MK, Stamped<MV>>>,
    ttl: Ttl,
}

/// TTL of a list applies to the list as a whole.
pub(crate) struct ListTable<K, V> {
    map: FxHashMap<K, Stamped<Vec<V>>>,
    ttl: Ttl,
}

impl<K: Key, V: StateValue> AnyTable for ValueTable<K, V> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn remove_expired(&mut self, now: i64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| e.expires_at > now);
        before - self.map.len()
    }
}

impl<K: Key, MK: Key, MV: StateValue> AnyTable for MapTable<K, MK, MV> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn remove_expired(&mut self, now: i64) -> usize {
        let mut removed = 0;
        self.map.retain(|_, m| {
            let before = m.len();
            m.retain(|_, e| e.expires_at > now);
            removed += before - m.len();
            !m.is_empty()
        });
        removed
    }
}

impl<K: Key, V: StateValue> AnyTable for ListTable<K, V> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn remove_expired(&mut self, now: i64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| e.expires_at > now);
        before - self.map.len()
    }
}

struct Slot {
    descriptor: StateDescriptor,
    table: Box<dyn AnyTable>,
}

/// The keyed states of one operator instance.
pub(crate) struct KeyedStateStore {
    slots: Vec<Slot>,
    ttl_in_use: bool,
}

const WRONG_TABLE: &str = "state handle used with an operator that did not register it";

impl KeyedStateStore {
    pub(crate) fn new() -> Self {
        KeyedStateStore {
            slots: Vec::new(),
            ttl_in_use: false,
        }
    }

    fn register(
        &mut self,
        descriptor: StateDescriptor,
        table: Box<dyn AnyTable>,
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
        self.ttl_in_use |= descriptor.ttl.is_some();
        self.slots.push(Slot { descriptor, table });
        Ok(self.slots.len() - 1)
    }

    pub(crate) fn register_value<K: Key, V: StateValue>(
        &mut self,
        descriptor: StateDescriptor,
    ) -> Result<ValueState<V>, String> {
        let table = ValueTable::<K, V> {
            map: FxHashMap::default(),
            ttl: Ttl::from(descriptor.ttl),
        };
        self.register(descriptor, Box::new(table))
            .map(ValueState::new)
    }

    pub(crate) fn register_map<K: Key, MK: Key, MV: StateValue>(
        &mut self,
        descriptor: StateDescriptor,
    ) -> Result<MapState<MK, MV>, String> {
        let table = MapTable::<K, MK, MV> {
            map: FxHashMap::default(),
            ttl: Ttl::from(descriptor.ttl),
        };
        self.register(descriptor, Box::new(table))
            .map(MapState::new)
    }

    pub(crate) fn register_list<K: Key, V: StateValue>(
        &mut self,
        descriptor: StateDescriptor,
    ) -> Result<ListState<V>, String> {
        let table = ListTable::<K, V> {
            map: FxHashMap::default(),
            ttl: Ttl::from(descriptor.ttl),
        };
        self.register(descriptor, Box::new(table))
            .map(ListState::new)
    }

    fn table<T: 'static>(&mut self, index: usize) -> &mut T {
        self.slots[index]
            .table
            .as_any_mut()
            .downcast_mut::<T>()
            .expect(WRONG_TABLE)
    }

    pub(crate) fn value<'a, K: Key, V: StateValue>(
        &'a mut self,
        handle: ValueState<V>,
        key: &'a K,
        now: i64,
    ) -> ValueAccess<'a, K, V> {
        ValueAccess {
            table: self.table::<ValueTable<K, V>>(handle.index),
            key,
            now,
        }
    }

    pub(crate) fn map<'a, K: Key, MK: Key, MV: StateValue>(
        &'a mut self,
        handle: MapState<MK, MV>,
        key: &'a K,
        now: i64,
    ) -> MapAccess<'a, K, MK, MV> {
        MapAccess {
            table: self.table::<MapTable<K, MK, MV>>(handle.index),
            key,
            now,
        }
    }

    pub(crate) fn list<'a, K: Key, V: StateValue>(
        &'a mut self,
        handle: ListState<V>,
        key: &'a K,
        now: i64,
    ) -> ListAccess<'a, K, V> {
        ListAccess {
            table: self.table::<ListTable<K, V>>(handle.index),
            key,
            now,
        }
    }

    /// Background TTL cleanup: drops every expired entry. Called from the task's timer tick,
    /// so state of keys that are never read again does not grow without bound.
    pub(crate) fn remove_expired(&mut self, now: i64) -> usize {
        if !self.ttl_in_use {
            return 0;
        }
        self.slots
            .iter_mut()
            .map(|s| s.table.remove_expired(now))
            .sum()
    }
}

/// Reads and writes one key's value.
pub struct ValueAccess<'a, K, V> {
    table: &'a mut ValueTable<K, V>,
    key: &'a K,
    now: i64,
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

impl<K: Key, V: StateValue> ValueAccess<'_, K, V> {
    pub fn get(&mut self) -> Option<V> {
        live(&mut self.table.map, self.key, self.table.ttl, self.now).map(|e| e.value.clone())
    }

    pub fn set(&mut self, value: V) {
        let expires_at = self.table.ttl.expiry(self.now);
        match self.table.map.get_mut(self.key) {
            Some(e) => *e = Stamped { value, expires_at },
            None => {
                self.table
                    .map
                    .insert(self.key.clone(), Stamped { value, expires_at });
            }
        }
    }

    pub fn clear(&mut self) {
        self.table.map.remove(self.key);
    }

    /// Reads, changes and writes back in one step; `None` afterwards removes the entry.
    pub fn update<R>(&mut self, f: impl FnOnce(&mut Option<V>) -> R) -> R {
        let ttl = self.table.ttl;
        let mut slot = match live(&mut self.table.map, self.key, ttl, self.now) {
            Some(_) => self.table.map.remove(self.key).map(|e| e.value),
            None => None,
        };
        let r = f(&mut slot);
        if let Some(value) = slot {
            self.table.map.insert(
                self.key.clone(),
                Stamped {
                    value,
                    expires_at: ttl.expiry(self.now),
                },
            );
        }
        r
    }
}

/// Reads and writes one key's map.
pub struct MapAccess<'a, K, MK, MV> {
    table: &'a mut MapTable<K, MK, MV>,
    key: &'a K,
    now: i64,
}

impl<K: Key, MK: Key, MV: StateValue> MapAccess<'_, K, MK, MV> {
    pub fn get(&mut self, entry: &MK) -> Option<MV> {
        let (ttl, now) = (self.table.ttl, self.now);
        let m = self.table.map.get_mut(self.key)?;
        live(m, entry, ttl, now).map(|e| e.value.clone())
    }

    pub fn put(&mut self, entry: MK, value: MV) {
        let expires_at = self.table.ttl.expiry(self.now);
        let m = match self.table.map.get_mut(self.key) {
            Some(m) => m,
            None => self.table.map.entry(self.key.clone()).or_default(),
        };
        m.insert(entry, Stamped { value, expires_at });
    }

    pub fn remove(&mut self, entry: &MK) -> Option<MV> {
        let m = self.table.map.get_mut(self.key)?;
        let removed = m.remove(entry).filter(|e| e.expires_at > self.now);
        if m.is_empty() {
            self.table.map.remove(self.key);
        }
        removed.map(|e| e.value)
    }

    /// The live entries, in no particular order.
    pub fn entries(&mut self) -> Vec<(MK, MV)> {
        let now = self.now;
        self.table.map.get(self.key).map_or_else(Vec::new, |m| {
            m.iter()
                .filter(|(_, e)| e.expires_at > now)
                .map(|(k, e)| (k.clone(), e.value.clone()))
                .collect()
        })
    }

    pub fn is_empty(&mut self) -> bool {
        self.entries().is_empty()
    }

    pub fn clear(&mut self) {
        self.table.map.remove(self.key);
    }
}

/// Reads and writes one key's list.
pub struct ListAccess<'a, K, V> {
    table: &'a mut ListTable<K, V>,
    key: &'a K,
    now: i64,
}

impl<K: Key, V: StateValue> ListAccess<'_, K, V> {
    pub fn add(&mut self, value: V) {
        self.update(|l| l.push(value));
    }

    pub fn get(&mut self) -> Vec<V> {
        live(&mut self.table.map, self.key, self.table.ttl, self.now)
            .map_or_else(Vec::new, |e| e.value.clone())
    }

    /// Changes the list in place; an empty list afterwards removes the entry.
    pub fn update<R>(&mut self, f: impl FnOnce(&mut Vec<V>) -> R) -> R {
        let ttl = self.table.ttl;
        let expires_at = ttl.expiry(self.now);
        if live(&mut self.table.map, self.key, ttl, self.now).is_none() {
            let mut list = Vec::new();
            let r = f(&mut list);
            if !list.is_empty() {
                self.table.map.insert(
                    self.key.clone(),
                    Stamped {
                        value: list,
                        expires_at,
                    },
                );
            }
            return r;
        }
        let Some(e) = self.table.map.get_mut(self.key) else {
            return f(&mut Vec::new());
        };
        let r = f(&mut e.value);
        e.expires_at = expires_at;
        if e.value.is_empty() {
            self.table.map.remove(self.key);
        }
        r
    }

    pub fn clear(&mut self) {
        self.table.map.remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn store_with_ttl(update: TtlUpdate) -> (KeyedStateStore, ValueState<u64>) {
        let mut store = KeyedStateStore::new();
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
        store.value(h, &1u64, 1_000).set(7);
        assert_eq!(store.value(h, &1u64, 1_099).get(), Some(7));
        // Reads do not extend the life with OnCreateAndWrite.
        assert_eq!(store.value(h, &1u64, 1_099).get(), Some(7));
        assert_eq!(store.value(h, &1u64, 1_100).get(), None);
    }

    #[test]
    fn ttl_on_read_and_write_extends_on_every_read() {
        let (mut store, h) = store_with_ttl(TtlUpdate::OnReadAndWrite);
        store.value(h, &1u64, 0).set(7);
        for t in [90, 180, 270] {
            assert_eq!(store.value(h, &1u64, t).get(), Some(7), "at {t}");
        }
        assert_eq!(store.value(h, &1u64, 370).get(), None);
    }

    #[test]
    fn background_cleanup_removes_only_expired_entries() {
        let (mut store, h) = store_with_ttl(TtlUpdate::OnCreateAndWrite);
        store.value(h, &1u64, 0).set(1);
        store.value(h, &2u64, 50).set(2);
        assert_eq!(store.remove_expired(99), 0);
        assert_eq!(store.remove_expired(100), 1);
        assert_eq!(store.value(h, &2u64, 149).get(), Some(2));
        assert_eq!(store.remove_expired(150), 1);
    }

    #[test]
    fn registering_a_state_name_twice_is_an_error() {
        let mut store = KeyedStateStore::new();
        store
            .register_value::<u64, u64>(StateDescriptor::new("x"))
            .unwrap();
        let err = store
            .register_list::<u64, u64>(StateDescriptor::new("x"))
            .unwrap_err();
        assert!(err.contains("'x'"), "{err}");
    }

    #[test]
    fn map_and_list_state_round_trip() {
        let mut store = KeyedStateStore::new();
        let m = store
            .register_map::<u64, String, u64>(StateDescriptor::new("m"))
            .unwrap();
        let l = store
            .register_list::<u64, u64>(StateDescriptor::new("l"))
            .unwrap();
        store.map(m, &1u64, 0).put("a".into(), 1);
        store.map(m, &1u64, 0).put("b".into(), 2);
        assert_eq!(store.map(m, &1u64, 0).remove(&"a".to_string()), Some(1));
        assert_eq!(store.map(m, &1u64, 0).entries(), vec![("b".to_string(), 2)]);
        store.list(l, &1u64, 0).add(1);
        store.list(l, &1u64, 0).add(2);
        assert_eq!(store.list(l, &1u64, 0).get(), vec![1, 2]);
        store.list(l, &1u64, 0).update(|v| v.retain(|&x| x > 1));
        assert_eq!(store.list(l, &1u64, 0).get(), vec![2]);
        assert!(store.list(l, &2u64, 0).get().is_empty());
    }
}

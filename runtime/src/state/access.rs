//! Typed access to one key's state, on either backend: what job code reads and writes
//! through a `ProcessContext`.

use super::heap::{Stamped, Ttl};
use super::rocks::RocksStore;
use super::StateValue;
use crate::error::StateError;
use crate::record::Key;
use rustc_hash::FxHashMap;
use std::hash::Hash;

pub(super) enum Backend<'a, T> {
    Heap(&'a mut T),
    Rocks(RocksAccess<'a>),
}

/// A state in a RocksDB store, for one key group.
pub(super) struct RocksAccess<'a> {
    pub(super) store: &'a mut RocksStore,
    pub(super) error: &'a mut Option<StateError>,
    pub(super) state: u16,
    pub(super) kg: u32,
    pub(super) ttl: Ttl,
}

impl<'a> RocksAccess<'a> {
    pub(super) fn at(mut self, kg: u32) -> Self {
        self.kg = kg;
        self
    }

    /// Records the first error; the access then behaves as if the entry were absent.
    fn ok<T>(&mut self, r: Result<T, StateError>) -> Option<T> {
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
pub(super) enum Access<'a, K, M> {
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
pub struct ValueAccess<'a, K, V>(pub(super) Access<'a, K, FxHashMap<K, Stamped<V>>>);

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
pub struct MapAccess<'a, K, MK, MV>(
    pub(super) Access<'a, K, FxHashMap<K, FxHashMap<MK, Stamped<MV>>>>,
);

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
pub struct ListAccess<'a, K, V>(pub(super) Access<'a, K, FxHashMap<K, Stamped<Vec<V>>>>);

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

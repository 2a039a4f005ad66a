use super::*;
use crate::state::TtlUpdate;
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
            StateDescriptor::new("v").ttl(Duration::from_millis(100), TtlUpdate::OnCreateAndWrite),
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
    let rocks = store.rocks.as_mut().unwrap();
    assert_eq!(
        rocks.compact_and_count(),
        1_000 - 1 + 1 + 1,
        "before expiry"
    );
    store.remove_expired(100);
    let rocks = store.rocks.as_mut().unwrap();
    assert_eq!(
        rocks.compact_and_count(),
        2,
        "only the map and list entries remain"
    );
}

#[test]
fn rocksdb_writes_held_back_in_memory_read_back_and_reach_a_checkpoint_of_the_barrier_only() {
    // Past the pending-write limit twice over, with overwrites and deletions, so that
    // reads meet entries in memory, in the database, and deleted in either.
    let keys = 2 * crate::state::rocks::PENDING_LIMIT as u64 + 1_000;
    let dir = tempfile::tempdir().unwrap();
    let mut store = rocks_store(dir.path());
    let v = store
        .register_value::<u64, u64>(StateDescriptor::new("v"))
        .unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for round in 0..3u64 {
        for key in 0..keys {
            let g = store.group_of(&key);
            if key % 7 == round {
                store.value(v, &key, g, 0).clear();
                expected.remove(&key);
            } else {
                store
                    .value(v, &key, g, 0)
                    .update(|x| *x = Some(x.unwrap_or(0) + key));
                *expected.entry(key).or_insert(0) += key;
            }
        }
    }
    let read = |store: &mut KeyedStateStore| -> std::collections::BTreeMap<u64, u64> {
        (0..keys)
            .filter_map(|key| {
                let g = store.group_of(&key);
                store.value(v, &key, g, 0).get().map(|x| (key, x))
            })
            .collect()
    };
    assert_eq!(read(&mut store), expected);
    assert!(store.take_error().is_none());

    // Writes after the first barrier, while its checkpoint is made off this thread; a second
    // barrier, and the store goes at once (as a finished subtask's does): each checkpoint
    // holds the state at its barrier.
    let first = store.pin_native().unwrap().unwrap();
    for key in 0..keys {
        let g = store.group_of(&key);
        store
            .value(v, &key, g, 0)
            .update(|x| *x = Some(x.unwrap_or(0) + 1));
    }
    let second = store.pin_native().unwrap().unwrap();
    drop(store);
    let plus_one: std::collections::BTreeMap<u64, u64> = (0..keys)
        .map(|key| (key, expected.get(&key).map_or(1, |x| x + 1)))
        .collect();
    for (pinned, expected) in [(first, &expected), (second, &plus_one)] {
        let restored_dir = tempfile::tempdir().unwrap();
        let mut restored = rocks_store(restored_dir.path());
        restored
            .register_value::<u64, u64>(StateDescriptor::new("v"))
            .unwrap();
        restored
            .restore_native(&crate::state::RestoredNative {
                dir: pinned.checkpoint.wait().unwrap(),
                groups: pinned.groups.clone(),
                states: pinned.states.clone(),
            })
            .unwrap();
        assert_eq!(
            &read(&mut restored),
            expected,
            "restored from checkpoint {}",
            pinned.pin
        );
    }
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
    assert!(err.to_string().contains("'x'"), "{err}");
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
        renamed
            .restore_key_group(5, &bytes)
            .unwrap_err()
            .to_string(),
        "the snapshot has state 'v', which this operator does not declare"
    );
    let mut evolved = KeyedStateStore::new(&a, 0);
    evolved
        .register_value::<u64, u64>(StateDescriptor::new("v").schema_version(2))
        .unwrap();
    assert_eq!(
        evolved
            .restore_key_group(5, &bytes)
            .unwrap_err()
            .to_string(),
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

/// A store on `backend` at parallelism 1 with the states of [`stores`].
fn registered(
    backend: &StateBackend,
) -> (
    KeyedStateStore,
    ValueState<u64>,
    MapState<String, u64>,
    ListState<u64>,
) {
    let a = KeyGroupAssignment::contiguous(128, 1);
    let mut store = KeyedStateStore::with_backend(&a, 0, backend, "restored").unwrap();
    let v = store
        .register_value::<u64, u64>(
            StateDescriptor::new("v").ttl(Duration::from_millis(100), TtlUpdate::OnCreateAndWrite),
        )
        .unwrap();
    let m = store
        .register_map::<u64, String, u64>(StateDescriptor::new("m"))
        .unwrap();
    let l = store
        .register_list::<u64, u64>(StateDescriptor::new("l"))
        .unwrap();
    (store, v, m, l)
}

#[test]
fn key_groups_restore_on_both_backends_in_the_current_and_the_older_format() {
    let a = KeyGroupAssignment::contiguous(128, 1);
    let mut heap = stores(&a);
    let (store, v, m, l) = &mut heap[0];
    let keys: Vec<u64> = (0..300).collect();
    for &key in &keys {
        let g = store.group_of(&key);
        store.value(*v, &key, g, key as i64).set(key * 10);
        store.map(*m, &key, g, 0).put(format!("k{key}"), key);
        store.map(*m, &key, g, 0).put(format!("j{key}"), key + 1);
        store.list(*l, &key, g, 0).add(key);
    }
    // What a build before framed entries wrote: bincode of the typed entries.
    let older = |kg: u32| {
        let group_keys: Vec<u64> = keys
            .iter()
            .copied()
            .filter(|k| key_group(stable_hash(k), 128) == kg)
            .collect();
        let values: Vec<(u64, i64, u64)> = group_keys
            .iter()
            .map(|&k| (k, k as i64 + 100, k * 10))
            .collect();
        let maps: OwnedMapEntries<u64, String, u64> = group_keys
            .iter()
            .map(|&k| {
                let items = vec![
                    (format!("j{k}"), i64::MAX, k + 1),
                    (format!("k{k}"), i64::MAX, k),
                ];
                (k, items)
            })
            .collect();
        let lists: Vec<(u64, i64, Vec<u64>)> =
            group_keys.iter().map(|&k| (k, i64::MAX, vec![k])).collect();
        let states: Vec<(String, u32, Vec<u8>)> = vec![
            ("v".into(), 1, bincode::serialize(&values).unwrap()),
            ("m".into(), 1, bincode::serialize(&maps).unwrap()),
            ("l".into(), 1, bincode::serialize(&lists).unwrap()),
        ];
        bincode::serialize(&states).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let rocks = StateBackend::RocksDb(RocksConfig::new(dir.path().to_path_buf(), 16 << 20));
    for (backend, format) in [
        (StateBackend::Heap, "current"),
        (rocks.clone(), "current"),
        (StateBackend::Heap, "older"),
        (rocks, "older"),
    ] {
        let (mut restored, v2, m2, l2) = registered(&backend);
        for kg in 0..128u32 {
            let bytes = match format {
                "current" => heap[0].0.snapshot_key_group(kg).unwrap(),
                _ => older(kg),
            };
            restored.restore_key_group(kg, &bytes).unwrap();
        }
        restored.finish_restore().unwrap();
        let what = format!(
            "{format} format onto {}",
            if restored.is_rocksdb() {
                "RocksDB"
            } else {
                "the heap"
            }
        );
        for &key in &keys {
            let g = restored.group_of(&key);
            assert_eq!(
                restored.value(v2, &key, g, key as i64 + 99).get(),
                Some(key * 10),
                "{what}"
            );
            assert_eq!(
                restored.value(v2, &key, g, key as i64 + 100).get(),
                None,
                "{what}"
            );
            let mut entries = restored.map(m2, &key, g, 0).entries();
            entries.sort();
            assert_eq!(
                entries,
                vec![(format!("j{key}"), key + 1), (format!("k{key}"), key)],
                "{what}"
            );
            assert_eq!(restored.list(l2, &key, g, 0).get(), vec![key], "{what}");
        }
    }
}

#[test]
fn a_rocksdb_read_before_the_restore_is_finished_is_an_error_not_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let backend = StateBackend::RocksDb(RocksConfig::new(dir.path().to_path_buf(), 16 << 20));
    let a = KeyGroupAssignment::contiguous(128, 1);
    let mut heap = stores(&a);
    let (store, v, _, _) = &mut heap[0];
    let g = store.group_of(&1u64);
    store.value(*v, &1u64, g, 0).set(10);
    let bytes = store.snapshot_key_group(g as u32).unwrap();
    let (mut restored, v2, _, _) = registered(&backend);
    restored.restore_key_group(g as u32, &bytes).unwrap();
    assert_eq!(restored.value(v2, &1u64, g, 0).get(), None);
    assert_eq!(
        restored.take_error().map(|e| e.to_string()).as_deref(),
        Some("restored RocksDB state read before the restore was finished")
    );
    restored.finish_restore().unwrap();
    assert_eq!(restored.value(v2, &1u64, g, 0).get(), Some(10));
}

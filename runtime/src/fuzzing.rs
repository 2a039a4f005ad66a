//! Entry points for the fuzz targets of `fuzz/` (hidden from the docs; not an API). Each reads
//! untrusted bytes with the engine's own code, as a worker, the coordinator or a restore
//! reads them, and must return whatever the bytes are: no panic, and no allocation sized by
//! a length field before the bytes it announces have arrived.

use crate::cluster::protocol::{read_message, ToCoordinator, ToWorker};
use crate::error::StateError;
use crate::exec::net::frame::{self, Kind};
use crate::nexmark::Event;
use crate::snapshot::{Compatibility, DeclaredOperator, Manifest, SnapshotContent, StateSchema};
use crate::state::{KeyGroupAssignment, KeyedStateStore, StateDescriptor};

/// A data connection's bytes after its magic, read frame by frame as a worker's inbound
/// reader does, with batches of Nexmark events (strings, enums, nested structs).
pub fn data_frames(mut bytes: &[u8]) {
    let mut payload = Vec::new();
    while let Ok(Some(header)) = frame::read_header(&mut bytes) {
        let Ok(header) = frame::parse_header(&header) else {
            return;
        };
        if frame::read_payload(&mut bytes, header.len, &mut payload).is_err() {
            return;
        }
        match header.kind {
            Kind::Credit => {
                let _ = frame::credit_of(&payload);
            }
            kind => {
                let _ = frame::decode::<Event>(kind, &payload);
            }
        }
    }
}

/// The coordinator's connection to a worker: messages to the worker when the first byte is
/// even, to the coordinator when it is odd.
pub fn control_messages(bytes: &[u8]) {
    let Some((direction, mut rest)) = bytes.split_first() else {
        return;
    };
    if direction % 2 == 0 {
        while let Ok(Some(_)) = read_message::<ToWorker>(&mut rest) {}
    } else {
        while let Ok(Some(_)) = read_message::<ToCoordinator>(&mut rest) {}
    }
}

/// A snapshot's `_manifest.json`, read and checked against a job as a restore does.
pub fn snapshot_manifest(bytes: &[u8]) {
    let Ok(manifest) = Manifest::parse(bytes, "fuzz/_manifest.json") else {
        return;
    };
    let Ok(content) = SnapshotContent::from_manifest(&manifest) else {
        return;
    };
    // q5's stateful operators, as the corpus's manifests (q5 checkpoints) record them.
    let declared = |uid: &str, state: &str| DeclaredOperator {
        uid: uid.into(),
        parallelism: 2,
        stateful: true,
        states: vec![StateSchema {
            name: state.into(),
            schema_version: 1,
        }],
    };
    let job = [
        declared("q5-counts", "window-panes"),
        declared("q5", "hottest"),
    ];
    let compatibility = Compatibility::check(&content, 128, &job);
    let _ = compatibility.refusal(false);
    let _ = compatibility.messages();
    // As `exec::restore::assignments` takes the key-group owners over, at a new parallelism.
    for op in &content.operators {
        let owners = KeyGroupAssignment::from_owners(op.assignment.clone(), op.parallelism as u32);
        if let Ok(before) = owners {
            let _ = before.rescaled(3).moved_from(&before);
        }
    }
    let _ = content.transactions().count();
}

/// One key group of keyed state in the canonical format, restored into a heap store that
/// declares a value, a list and a map state; the first byte picks the key group.
pub fn key_group(bytes: &[u8]) {
    const MAX_PARALLELISM: u32 = 8;
    let Some((group, state)) = bytes.split_first() else {
        return;
    };
    let assignment = KeyGroupAssignment::contiguous(MAX_PARALLELISM, 1);
    let mut store = KeyedStateStore::new(&assignment, 0);
    if declare_states(&mut store).is_ok() {
        let _ = store.restore_key_group(u32::from(*group) % MAX_PARALLELISM, state);
    }
}

fn declare_states(store: &mut KeyedStateStore) -> Result<(), StateError> {
    store.register_value::<String, u64>(StateDescriptor::new("count"))?;
    store.register_list::<u64, String>(StateDescriptor::new("events"))?;
    store.register_map::<String, String, i64>(StateDescriptor::new("index").schema_version(2))?;
    Ok(())
}

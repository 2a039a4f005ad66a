//! Checkpoint and savepoint storage: checksummed files and a versioned manifest per
//! checkpoint in object storage, and a pointer to the latest complete one in the same
//! storage (the job's storage owns it; no other system has to keep it).
//!
//! Layout under the storage root:
//!
//! ```text
//! chk-0000000042/<file>            state files, each listed with size and CRC32 in...
//! chk-0000000042/_manifest.json    ...the manifest; written last, it completes the checkpoint
//! _latest                          the id of the latest complete checkpoint
//! ```

mod storage;

pub use storage::{
    CheckpointStorage, FileEntry, Manifest, Restorable, SnapshotError, MANIFEST_VERSION,
};

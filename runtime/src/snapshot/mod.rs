//! Checkpoints and savepoints: what a running job hands over when a barrier passes
//! ([`task`]), how it is laid out in object storage ([`storage`]), and how a completed
//! snapshot is described, written and read back at any parallelism ([`content`]).
//!
//! Layout under a storage root:
//!
//! ```text
//! chk-0000000042/op001-0003.state   state of operator 1, subtask 3: key groups and items,
//!                                    each file listed with size and CRC32 in...
//! chk-0000000042/_manifest.json     ...the manifest; written last, it completes the snapshot
//! shared/<database>/000123.sst      RocksDB table files, uploaded once and listed by every
//!                                    checkpoint that still needs them (incremental)
//! _latest                           the id of the latest complete checkpoint
//! ```
//!
//! State files are encrypted when the process has a snapshot key ([`encryption`]).
//!
//! Savepoints have the same layout with `sp-` directories. The state format is canonical
//! (per key group, independent of the parallelism that wrote it), so checkpoints and
//! savepoints restore alike at any parallelism up to the max parallelism.

mod content;
mod encryption;
mod storage;
mod task;

pub use crate::sink::{FileTransaction, SinkTransaction};
pub use crate::state::{PinnedNative, RestoredNative, StateSchema};
pub(crate) use content::{write_snapshot, JobLayout, Written};
pub use content::{
    BlobRef, Compatibility, DeclaredOperator, OperatorContent, RestoredOperator, RestoredState,
    SnapshotContent,
};
pub use encryption::{require_key, SnapshotKey, KEY_ID_VAR, KEY_VAR};
pub use storage::{
    CheckpointStorage, FileEntry, Manifest, Restorable, SnapshotError, CHECKPOINTS,
    MANIFEST_VERSION, SAVEPOINTS, SHARED,
};
pub(crate) use task::{decode, encode, encode_by_key_group};
pub use task::{
    Barrier, Native, NativeRef, OperatorSnapshot, SnapshotKind, SplitPosition, TaskSnapshot,
};

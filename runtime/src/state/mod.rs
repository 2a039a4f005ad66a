//! Keyed state: descriptors and typed handles for job authors, and the per-operator store
//! that holds the tables.
//!
//! Job code reaches state only through [`ValueAccess`], [`MapAccess`] and [`ListAccess`]
//! (from a `ProcessContext`): that is the backend interface. The heap backend behind it keeps
//! live objects in one hash map per key group the subtask owns, so snapshots and rescaling
//! work in whole key groups. Window contents (per window, then per key) live in the window
//! operators' own store (`operators::panes`), on the same backend.

mod access;
mod canonical;
mod heap;
mod keygroups;
mod pin;
mod rocks;
mod store;
mod timers;

pub use access::{ListAccess, MapAccess, ValueAccess};
pub use keygroups::{
    key_group, stable_hash, KeyGroupAssignment, StableHasher, DEFAULT_MAX_PARALLELISM,
    MAX_MAX_PARALLELISM,
};
pub use pin::PinnedCheckpoint;
pub(crate) use rocks::{decode_entry, RocksStore};
pub use rocks::{PinnedNative, RestoredNative, RocksConfig};
pub use store::{KeyedStateStore, StateBackend};
pub(crate) use timers::TimerService;

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;
use std::time::Duration;

/// What may be kept in state: cloneable for reads, serializable for snapshots.
pub trait StateValue: Clone + Send + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Send + Serialize + DeserializeOwned + 'static> StateValue for T {}

/// When the time-to-live of an entry restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlUpdate {
    OnCreateAndWrite,
    OnReadAndWrite,
}

/// Entries not written (or read, per `update`) for `ttl` of processing time are expired:
/// never returned again, and removed by background cleanup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateTtl {
    pub ttl: Duration,
    pub update: TtlUpdate,
}

/// Names a state and the version of its schema; both are recorded in snapshots so that a
/// new version of a job can be checked against old state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDescriptor {
    pub name: String,
    pub schema_version: u32,
    pub ttl: Option<StateTtl>,
}

impl StateDescriptor {
    pub fn new(name: impl Into<String>) -> Self {
        StateDescriptor {
            name: name.into(),
            schema_version: 1,
            ttl: None,
        }
    }
    pub fn schema_version(mut self, v: u32) -> Self {
        self.schema_version = v;
        self
    }
    pub fn ttl(mut self, ttl: Duration, update: TtlUpdate) -> Self {
        self.ttl = Some(StateTtl { ttl, update });
        self
    }
}

/// A state as an operator declares it: restoring needs the same name and schema version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct StateSchema {
    pub name: String,
    pub schema_version: u32,
}

macro_rules! handle {
    ($(#[$doc:meta])* $name:ident < $($p:ident),+ >) => {
        $(#[$doc])*
        pub struct $name<$($p),+> {
            pub(crate) index: usize,
            _types: PhantomData<fn() -> ($($p,)+)>,
        }
        impl<$($p),+> $name<$($p),+> {
            pub(crate) fn new(index: usize) -> Self {
                $name { index, _types: PhantomData }
            }
        }
        impl<$($p),+> Clone for $name<$($p),+> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<$($p),+> Copy for $name<$($p),+> {}
        impl<$($p),+> std::fmt::Debug for $name<$($p),+> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}#{}", stringify!($name), self.index)
            }
        }
    };
}

handle!(
    /// One value per key.
    ValueState<V>
);
handle!(
    /// A map per key.
    MapState<K, V>
);
handle!(
    /// A list per key.
    ListState<V>
);

//! Sluice's dataflow engine.
//!
//! A job is a graph of operators over keyed, checkpointed state, defined with the API in
//! [`api`] and run embedded (threads of one process) by [`exec::start_embedded`]. Records
//! move in batches through bounded channels; event time and processing time are distinct
//! types ([`time`]).
//!
//! # Layers
//!
//! The modules form layers, bottom first. A module uses what its own layer and the layers
//! below define, never what a layer above defines; an upper layer may re-export a lower
//! layer's items under its own path (`api::Record` is `record::Record`). The table below
//! is the one statement of the layers: `tests/layers.rs` reads it and fails, naming the
//! file, the line and both layers, when a `crate::` path in `src` points up.
//!
//! | rank | layer | modules |
//! |------|-------|---------|
//! | 1 | vocabulary, time and connections | `error`, `time`, `record`, `watermark`, `objects`, `source`, `sink`, `tls` |
//! | 2 | keyed state | `state` |
//! | 3 | snapshots | `snapshot` |
//! | 4 | execution engine | `exec` |
//! | 5 | operators | `operators` |
//! | 6 | job API | `api` |
//! | 7 | connectors | `connectors`, `nexmark` |
//! | 8 | control API | `control` |
//! | 9 | cluster | `cluster` |
//! | 10 | bundled jobs | `jobs` |
//! | 11 | command line | `cli`, `main` |
//! | 12 | fuzz entry points | `fuzzing` |
//!
//! 1. Records, keys and the values they carry ([`record`]), event and processing time
//!    ([`time`]), watermark strategies ([`watermark`]), the contracts the engine reads and
//!    writes through ([`source`], [`sink`]), every error ([`error`]), and the connections
//!    between a job's processes, plain or mutual TLS ([`tls`]).
//! 2. Keyed state: descriptors, typed access, the heap and RocksDB backends, key groups.
//! 3. Snapshots: barriers, what a subtask hands over, checkpoint storage, restoring.
//! 4. The engine: the job graph, tasks and their loops, channels, the checkpoint
//!    coordinator, the launcher shared by embedded runs and distributed workers, and the
//!    network exchange between processes.
//! 5. The built-in operators, the user functions they call and the window assigners.
//! 6. The job API a job author writes against, and the registry of jobs by name.
//! 7. Sources and sinks, and the Nexmark event model and generator.
//! 8. The control API (HTTP), 9. distributed mode (coordinator and workers), 10. the
//!    bundled jobs, 11. the `sluice` command line and binary, 12. the entry points of
//!    the fuzz targets (`fuzz/`), which read untrusted bytes with every layer's
//!    own code.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod connectors;
pub mod control;
pub mod error;
pub mod exec;
// Always built, though only `fuzz/` calls it: a feature would give the workspace's test
// binaries a second build whenever a command leaves `--all-features` out.
#[doc(hidden)]
pub mod fuzzing;
pub mod jobs;
pub mod nexmark;
pub mod objects;
mod operators;
pub mod record;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod time;
pub mod tls;
pub mod watermark;

pub use error::Error;
pub use exec::JobGraph;

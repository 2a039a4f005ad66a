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
//! layer's items under its own path (`api::Record` is `record::Record`). This table is the
//! one statement of the layers: `tests/layers.rs` reads it and fails, naming the file and
//! line, when a path in `src` points up.
//!
//! | rank | layer | modules |
//! |------|-------|---------|
//! | 1 | vocabulary and time: records, keys, watermarks, the traits the engine calls | `error`, `time`, `record`, `watermark`, `source`, `sink` |
//! | 2 | keyed state and its backends | `state` |
//! | 3 | snapshots: barriers, checkpoint storage, what a snapshot holds | `snapshot` |
//! | 4 | execution engine: graph, tasks, channels, checkpoint coordinator, exchange between processes | `exec` |
//! | 5 | operators and the user functions they call | `operators` |
//! | 6 | job API | `api` |
//! | 7 | connectors and the Nexmark model and generator | `connectors`, `nexmark` |
//! | 8 | control API | `control` |
//! | 9 | distributed mode: coordinator and workers | `cluster` |
//! | 10 | bundled jobs | `jobs` |
//! | 11 | command line | `cli`, `main` |

pub mod api;
pub mod cli;
pub mod cluster;
pub mod connectors;
pub mod control;
pub mod error;
pub mod exec;
pub mod jobs;
pub mod nexmark;
mod operators;
pub mod record;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod time;
pub mod watermark;

pub use error::Error;
pub use exec::JobGraph;

//! Sluice's dataflow engine.
//!
//! A job is a graph of operators over keyed, checkpointed state, defined with the API in
//! [`api`] and run embedded (threads of one process) by [`exec::start_embedded`]. Records
//! move in batches through bounded channels; event time and processing time are distinct
//! types ([`time`]).

pub mod api;
pub mod cluster;
pub mod connectors;
pub mod control;
pub mod error;
pub mod exec;
mod graph;
pub mod jobs;
pub(crate) mod net;
pub mod nexmark;
mod operators;
pub mod snapshot;
pub mod state;
pub mod time;

pub use error::Error;
pub use graph::JobGraph;
pub mod cli;

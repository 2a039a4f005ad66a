//! The Sluice operator: reconciles `StreamJob` resources into coordinator and worker pods and
//! drives each job's lifecycle through the coordinator's control API.
//!
//! The pipeline of one reconcile (`reconcile.rs`): observe the children and the coordinator
//! → plan the next step (`plan/`, pure) → write the status, the write-ahead log → apply the
//! children built by `build/` (pure) and call the coordinator → publish events.
//! `admission` (pure) decides which jobs of a namespace its StreamQuotas let run.

pub mod admission;
pub mod build;
pub mod cli;
pub mod control;
pub mod error;
mod http;
pub mod leader;
pub mod log;
pub mod metrics;
pub mod plan;
pub mod quota;
pub mod ratelimit;
pub mod rbac;
pub mod reconcile;
pub mod refusals;

pub use error::Error;

//! A template for your own Sluice job: per-user click sessions in event time.
//!
//! A session is a run of one user's clicks with less than `sessionGapMs` between
//! consecutive clicks (by the clicks' own timestamps). When a user has been inactive for the
//! gap in event time, the job emits the session: user, first and last click, clicks and the
//! amount spent. Clicks may arrive out of order (within the watermark bound); the sessions are
//! the same whatever the arrival order or parallelism.
//!
//! The binary (`src/main.rs`) registers this job in a `JobRegistry` and hands it to
//! `sluice_runtime::cli::main_with`, which makes it a complete `sluice` binary: `run`,
//! `coordinator`, `worker`, `savepoint check`, … for this job.

pub mod clicks;
pub mod config;
pub mod sessions;

pub use clicks::Click;
pub use config::SessionsConfig;
pub use sessions::Session;

use sluice_runtime::api::JobBuilder;
use sluice_runtime::jobs::{parse_config, JobRegistry};
use sluice_runtime::Error;

/// The name a StreamJob's `spec.job.name` gives to run this job.
pub const JOB_NAME: &str = "sessions";

/// Adds the job to `registry`.
pub fn register(registry: &mut JobRegistry) {
    registry.register(
        JOB_NAME,
        "Per-user click sessions: a session closes after a gap without clicks, in event time",
        define,
    );
}

/// The job's graph, from the manifest's `spec.job.config`: clicks → sessions per user → sink.
pub fn define(job: &JobBuilder, config: &serde_json::Value) -> Result<(), Error> {
    let config: SessionsConfig = parse_config(config)?;
    config.validate()?;
    let clicks = config.clicks(job)?;
    let sessions = sessions::sessionize(&clicks, &config.rules());
    config.attach_output(&sessions);
    Ok(())
}

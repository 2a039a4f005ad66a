//! The control API: HTTP + JSON under `/v1`, Prometheus text at `/metrics`, the job page
//! at `/`, probes at `/healthz` and `/readyz`. `docs/control-api.md` is its reference.
//!
//! The server knows the job only through [`JobControl`]: the embedded [`RunningJob`]
//! implements it (in `embedded.rs`), and so can a distributed coordinator, serving the same
//! contract ([`model`]) to the Kubernetes operator.
//!
//! The server runs on a single-threaded tokio runtime of its own thread, through
//! `sluice_http`, the small hyper layer the operator's endpoints share (its crate doc says
//! why hyper rather than axum); routing is one `match` here. Metrics come from one
//! `prometheus` registry per server (see `prometheus.rs`). Work that blocks (savepoints, reading a snapshot to check it) runs on threads of
//! its own, since checkpoint storage drives its own runtime.
//!
//! [`RunningJob`]: crate::exec::RunningJob

mod auth;
mod embedded;
mod prometheus;
mod savepoints;
mod server;

/// The control API's types live with the operator's side of the contract, in `sluice-crds`.
pub use sluice_crds::control as model;

pub use auth::read_token;
pub use server::{BoundControl, BoundMetrics, ControlConfig, ControlServer, MetricsServer};

use crate::error::Error;
use model::{
    CompatibilityReport, IncompatibleState, JobStatus, MaxParallelismMismatch, OperatorState,
    SnapshotInfo,
};

/// Whether a job of `max_parallelism` declaring `declared` could restore the checkpoint or
/// savepoint at `location`; reads and verifies the whole snapshot.
pub(crate) fn check_compatibility(
    location: &str,
    max_parallelism: u32,
    declared: &[crate::snapshot::DeclaredOperator],
    allow_non_restored_state: bool,
) -> Result<CompatibilityReport, Error> {
    let content = crate::snapshot::SnapshotContent::read_verified(location)?;
    let c = crate::snapshot::Compatibility::check(&content, max_parallelism, declared);
    Ok(compatibility_report(&c, allow_non_restored_state))
}

pub(crate) fn compatibility_report(
    c: &crate::snapshot::Compatibility,
    allow_non_restored_state: bool,
) -> CompatibilityReport {
    CompatibilityReport {
        compatible: c.refusal(allow_non_restored_state).is_none(),
        drops_state: c.drops_state(),
        messages: c.messages(),
        missing_operators: c.missing_operators.clone(),
        missing_states: c
            .missing_states
            .iter()
            .map(|(operator, state)| OperatorState {
                operator: operator.clone(),
                state: state.clone(),
            })
            .collect(),
        incompatible_states: c
            .incompatible
            .iter()
            .map(|(operator, state, snap, job)| IncompatibleState {
                operator: operator.clone(),
                state: state.clone(),
                snapshot_version: *snap,
                job_version: *job,
            })
            .collect(),
        new_operators: c.new_operators.clone(),
        max_parallelism: c
            .max_parallelism
            .map(|(snapshot, job)| MaxParallelismMismatch { snapshot, job }),
    }
}

/// What the control API needs of a job.
pub trait JobControl: Send + Sync {
    /// The job's state and counters now. Called often (every request, every scrape):
    /// it must not block.
    fn status(&self) -> JobStatus;

    /// Takes a savepoint into savepoint storage `target` (`file:///…` or
    /// `s3://bucket/prefix`) and waits for it; with `stop` the job stops right after it.
    fn savepoint(&self, target: &str, stop: bool) -> Result<SnapshotInfo, Error>;

    /// Stops the job without a savepoint.
    fn cancel(&self);

    /// Whether the job could restore the checkpoint or savepoint at `location` (a path,
    /// `file://` or `s3://` URI); may read the whole snapshot.
    fn compatibility(
        &self,
        location: &str,
        allow_non_restored_state: bool,
    ) -> Result<CompatibilityReport, Error>;
}

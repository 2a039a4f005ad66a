//! The JSON of the control API: what clients send and receive (`docs/control-api.md`). The
//! types live in `sluice_crds::control`, which the Kubernetes operator uses too, so that
//! server and client spell every field and phase in one place. `Phase` is the crate's name
//! for the job's phase (`JobPhase` there, beside the StreamJob's own phase).

pub use sluice_crds::control::{
    Accepted, CheckpointSummary, CompatibilityReport, CompatibilityRequest, ErrorBody, Health,
    HealthStatus, IncompatibleState, JobError, JobPhase as Phase, JobStatus,
    MaxParallelismMismatch, OperatorState, Probe, RestartStatus, SavepointRequest, SavepointState,
    SavepointStatus, SnapshotInfo, SnapshotKind, StopAccepted, StopRequest, SubtaskState,
    SubtaskStatus, WorkerStatus,
};

use crate::snapshot::Compatibility;

/// What a compatibility check found, as the API reports it.
pub fn compatibility_report(
    c: &Compatibility,
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

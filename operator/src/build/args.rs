//! The containers' command lines: the runtime's arguments, filled from the revision.

use super::{
    JobRef, Storage, CONTROL_PORT, COORDINATOR_PORT, DATA_PORT, MANIFEST_DIR, METRICS_PORT,
    STATE_DIR, TLS_DIR,
};
use sluice_crds::command::{
    ArgDuration, ControlArgs, CoordinatorArgs, OnTerminate, RestartArgs, RestoreFrom,
    SavepointCheckArgs, SavepointDeleteArgs, SnapshotArgs, WorkerArgs,
};
use sluice_crds::{SpecRevision, StreamJobSpec};

/// The coordinator's command line for a revision.
pub fn coordinator_args(job: &JobRef, revision: &SpecRevision) -> CoordinatorArgs {
    let spec = &revision.spec;
    let storage = Storage::of(job, spec, revision.run.as_deref());
    let restart = &spec.restart_policy;
    let mut snapshots = SnapshotArgs {
        savepoint_dir: storage.savepoints,
        allow_non_restored_state: spec.allow_non_restored_state,
        state_dir: Some(STATE_DIR.into()),
        ..SnapshotArgs::default()
    };
    match storage.checkpoints {
        // The run's own newest checkpoint first: a restarted coordinator resumes from there,
        // and only the first start from the revision's snapshot.
        Some(dir) => {
            snapshots.checkpoint_dir = Some(dir);
            snapshots.checkpoint_interval = Some(millis(spec.checkpointing.interval.to_std()));
            snapshots.retain_checkpoints = Some(spec.checkpointing.retention as usize);
            snapshots.restore = Some(RestoreFrom::Latest);
            snapshots.initial_snapshot = revision.restore_from.clone();
        }
        None => snapshots.restore = revision.restore_from.clone().map(RestoreFrom::Snapshot),
    }
    CoordinatorArgs {
        manifest: format!("{MANIFEST_DIR}/job.yaml").into(),
        parallelism: Some(spec.parallelism),
        listen: Some(format!("0.0.0.0:{COORDINATOR_PORT}")),
        // The Deployment restarts a coordinator that exits; it must neither take a savepoint
        // the operator does not know of on SIGTERM nor exit when the job ends.
        on_terminate: Some(OnTerminate::Cancel),
        wait_for_termination: true,
        tls_dir: Some(TLS_DIR.into()),
        restart: RestartArgs {
            restart_initial_backoff: Some(millis(restart.backoff.initial.to_std())),
            restart_max_backoff: Some(millis(restart.backoff.max.to_std())),
            restart_backoff_multiplier: Some(restart.backoff.multiplier),
            restart_backoff_jitter: Some(restart.backoff.jitter),
            restart_max_attempts: Some(restart.max_restarts.unwrap_or(u32::MAX)),
            restart_reset_after: Some(millis(restart.reset_after.to_std())),
        },
        snapshots,
        control: ControlArgs {
            control_addr: Some(format!("0.0.0.0:{CONTROL_PORT}")),
            control_token_file: None,
            metrics_addr: Some(format!("0.0.0.0:{METRICS_PORT}")),
        },
        ..CoordinatorArgs::default()
    }
}

/// A worker's command line.
pub fn worker_args(job: &JobRef, spec: &StreamJobSpec) -> WorkerArgs {
    WorkerArgs {
        coordinator: Some(format!("{}:{COORDINATOR_PORT}", job.coordinator())),
        slots: Some(spec.slots_per_worker),
        data_addr: Some(format!("0.0.0.0:{DATA_PORT}")),
        state_dir: Some(STATE_DIR.into()),
        // Workers start before the coordinator more often than not.
        connect_timeout: Some(ArgDuration::from_secs(300)),
        tls_dir: Some(TLS_DIR.into()),
        ..WorkerArgs::default()
    }
}

/// The pre-flight's check of a savepoint against the revision's manifest.
pub(super) fn savepoint_check_args(spec: &StreamJobSpec, savepoint: &str) -> SavepointCheckArgs {
    SavepointCheckArgs {
        snapshot: savepoint.to_string(),
        job: spec.job.name.clone(),
        manifest: Some(format!("{MANIFEST_DIR}/job.yaml").into()),
        allow_non_restored_state: spec.allow_non_restored_state,
    }
}

pub(super) fn savepoint_delete_args(savepoints: &[String]) -> SavepointDeleteArgs {
    SavepointDeleteArgs {
        savepoints: savepoints.to_vec(),
    }
}

/// Whole milliseconds, as the operator has always written durations.
fn millis(d: Option<std::time::Duration>) -> ArgDuration {
    let ms = d.map_or(0, |d| d.as_millis());
    ArgDuration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

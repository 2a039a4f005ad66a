//! Run-to-completion Jobs of the job's image: the upgrade pre-flight and the savepoint
//! cleanup.

use super::args::{savepoint_check_args, savepoint_delete_args};
use super::{image, manifest_config_map, pods, JobRef, MANIFEST_DIR};
use crate::error::Error;
use k8s_openapi::api::batch::v1::{Job as BatchJob, JobSpec as BatchJobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, Volume, VolumeMount,
};
use sluice_crds::{SpecRevision, StreamJobSpec};
use std::collections::BTreeMap;

/// Annotation of the savepoint cleanup Job: the savepoints it deletes, as a JSON list.
pub const CLEANUP_SAVEPOINTS: &str = "sluice.dev/savepoints";

/// The upgrade pre-flight: a Job running the new revision's image against the savepoint,
/// with the new manifest in a ConfigMap of its own.
pub fn preflight(
    job: &JobRef,
    revision: &SpecRevision,
    savepoint: &str,
) -> Result<(ConfigMap, BatchJob), Error> {
    let spec = &revision.spec;
    let check = tool_job(
        job,
        spec,
        ToolJob {
            name: job.preflight(),
            role: "preflight",
            annotations: BTreeMap::from([("sluice.dev/spec-hash".into(), revision.hash.clone())]),
            args: savepoint_check_args(spec, savepoint).to_args(),
            mounts: vec![VolumeMount {
                name: "manifest".into(),
                mount_path: MANIFEST_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            }],
            volumes: vec![Volume {
                name: "manifest".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: job.preflight(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            }],
            // A failed check is an answer, not a fault to retry.
            backoff_limit: 0,
        },
    )?;
    Ok((manifest_config_map(job, job.preflight(), spec)?, check))
}

/// A Job deleting savepoints with the job's image, secrets and volumes: whatever storage
/// the job reaches, this reaches too.
pub fn savepoint_cleanup(
    job: &JobRef,
    spec: &StreamJobSpec,
    savepoints: &[String],
) -> Result<BatchJob, Error> {
    let mut cleanup = tool_job(
        job,
        spec,
        ToolJob {
            name: job.savepoint_cleanup(),
            role: "savepoint-cleanup",
            annotations: BTreeMap::new(),
            args: savepoint_delete_args(savepoints).to_args(),
            mounts: Vec::new(),
            volumes: Vec::new(),
            // Storage that is briefly unreachable: the Job's own backoff retries.
            backoff_limit: 3,
        },
    )?;
    let list = serde_json::to_string(savepoints)
        .map_err(|e| Error::Build(format!("savepoint list: {e}")))?;
    cleanup
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CLEANUP_SAVEPOINTS.into(), list);
    Ok(cleanup)
}

/// A run-to-completion command of the job's image (pre-flight check, savepoint cleanup).
struct ToolJob {
    name: String,
    role: &'static str,
    /// The pod's annotations.
    annotations: BTreeMap<String, String>,
    args: Vec<String>,
    /// Volume mounts beside those of `spec.podTemplate`.
    mounts: Vec<VolumeMount>,
    volumes: Vec<Volume>,
    backoff_limit: i32,
}

/// A Job running a command with the job's image, secrets and pod template (so its volumes).
fn tool_job(job: &JobRef, spec: &StreamJobSpec, tool: ToolJob) -> Result<BatchJob, Error> {
    let container = Container {
        name: pods::CONTAINER.into(),
        image: Some(image(spec)?.into()),
        args: Some(tool.args),
        env: Some(pods::snapshot_key(spec)),
        env_from: Some(pods::env_from(spec)),
        volume_mounts: Some(tool.mounts),
        ..Container::default()
    };
    let mut template = pods::template(
        job,
        spec,
        pods::Role::Tool(tool.role),
        tool.annotations,
        container,
        tool.volumes,
    )?;
    if let Some(pod) = template.spec.as_mut() {
        pod.restart_policy = Some("Never".into());
    }
    Ok(BatchJob {
        metadata: job.metadata(tool.name, Some(tool.role)),
        spec: Some(BatchJobSpec {
            backoff_limit: Some(tool.backoff_limit),
            ttl_seconds_after_finished: Some(3600),
            template,
            ..BatchJobSpec::default()
        }),
        ..BatchJob::default()
    })
}

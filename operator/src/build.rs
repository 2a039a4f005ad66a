//! The children of a StreamJob, built from the revision it runs: pure functions from spec to
//! Kubernetes objects, so that every field the operator sets is tested without a cluster.
//!
//! One job is a coordinator Deployment (one pod: it must never run twice) and Service, a
//! worker StatefulSet (stable names for the coordinator's status) and headless Service, a
//! ConfigMap with the manifest the coordinator runs, a PodDisruptionBudget, and the Secret
//! with the control API's token (created once, never rewritten).
//!
//! The containers' arguments are the runtime's command line as `sluice_crds::command`
//! writes it, from structs filled here.

use crate::error::Error;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job as BatchJob;
use k8s_openapi::api::core::v1::{ConfigMap, PodTemplateSpec, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{json, Value};
use sluice_crds::command::{
    ArgDuration, ControlArgs, CoordinatorArgs, OnTerminate, RestartArgs, RestoreFrom,
    SavepointCheckArgs, SavepointDeleteArgs, SnapshotArgs, WorkerArgs,
};
use sluice_crds::{PodRole, SpecRevision, StreamJobSpec};
use std::collections::BTreeMap;

/// Where workers reach the coordinator.
pub const COORDINATOR_PORT: u16 = 6123;
/// The control API (the operator's and the probes' way in).
pub const CONTROL_PORT: u16 = 8081;
/// Where workers receive records from each other.
pub const DATA_PORT: u16 = 6124;
/// Key of the token in the Secret the operator generates.
pub const TOKEN_KEY: &str = "token";
const MANIFEST_DIR: &str = "/etc/sluice";
const STATE_DIR: &str = "/var/lib/sluice/state";

/// Names and labels of one StreamJob's children.
#[derive(Clone, Debug)]
pub struct JobRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl JobRef {
    pub fn coordinator(&self) -> String {
        format!("{}-coordinator", self.name)
    }
    pub fn worker(&self) -> String {
        format!("{}-worker", self.name)
    }
    pub fn manifest(&self) -> String {
        format!("{}-job", self.name)
    }
    pub fn token(&self) -> String {
        format!("{}-token", self.name)
    }
    pub fn preflight(&self) -> String {
        format!("{}-preflight", self.name)
    }
    pub fn savepoint_cleanup(&self) -> String {
        format!("{}-savepoint-cleanup", self.name)
    }
    /// Labels every child carries; `role` tells coordinator from workers.
    pub fn labels(&self, role: Option<&str>) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "sluice".to_string()),
            ("app.kubernetes.io/instance".to_string(), self.name.clone()),
            (
                "app.kubernetes.io/managed-by".to_string(),
                "sluice-operator".to_string(),
            ),
            ("sluice.dev/job".to_string(), self.name.clone()),
        ]);
        if let Some(role) = role {
            l.insert("sluice.dev/role".to_string(), role.to_string());
        }
        l
    }
    /// The label selector of the job's workers (the scale subresource's `selector`).
    pub fn worker_selector(&self) -> String {
        format!("sluice.dev/job={},sluice.dev/role=worker", self.name)
    }
    fn owner(&self) -> OwnerReference {
        OwnerReference {
            api_version: sluice_crds::API_VERSION.into(),
            kind: sluice_crds::KIND.into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
    fn metadata(&self, name: String, role: Option<&str>) -> Value {
        json!({
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(role),
            "ownerReferences": [self.owner()],
        })
    }
}

/// Where a job's snapshots go.
pub struct Storage {
    /// This run's checkpoints.
    pub checkpoints: Option<String>,
    /// The job's savepoints (each operation's in a directory of its own below).
    pub savepoints: Option<String>,
}

impl Storage {
    pub fn of(job: &JobRef, spec: &StreamJobSpec, run: Option<&str>) -> Self {
        let base = spec.checkpointing.storage.as_deref().map(trim_slash);
        let scoped = |root: &str| format!("{root}/{}/{}", job.namespace, job.name);
        Storage {
            checkpoints: base.zip(run).map(|(b, r)| format!("{}/{r}", scoped(b))),
            savepoints: spec
                .savepoints
                .storage
                .as_deref()
                .map(|s| scoped(trim_slash(s)))
                .or_else(|| base.map(|b| scoped(&format!("{b}/savepoints")))),
        }
    }
}

fn trim_slash(s: &str) -> &str {
    s.trim_end_matches('/')
}

/// Workers needed for a parallelism: every subtask needs a slot.
pub fn worker_count(spec: &StreamJobSpec) -> u32 {
    spec.parallelism.div_ceil(spec.slots_per_worker.max(1))
}

/// The children that run one revision.
pub struct Children {
    pub manifest: ConfigMap,
    pub coordinator: Deployment,
    pub coordinator_service: Service,
    pub workers: StatefulSet,
    pub worker_service: Service,
    pub disruption_budget: PodDisruptionBudget,
}

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
        restart: RestartArgs {
            restart_initial_backoff: Some(millis(restart.backoff.initial.to_std())),
            restart_max_backoff: Some(millis(restart.backoff.max.to_std())),
            restart_max_attempts: Some(restart.max_restarts.unwrap_or(u32::MAX)),
            restart_reset_after: Some(millis(restart.reset_after.to_std())),
        },
        snapshots,
        control: ControlArgs {
            control_addr: Some(format!("0.0.0.0:{CONTROL_PORT}")),
            control_token_file: None,
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
        ..WorkerArgs::default()
    }
}

pub fn children(job: &JobRef, revision: &SpecRevision) -> Result<Children, Error> {
    let spec = &revision.spec;
    let image = image(spec)?;
    let args = coordinator_args(job, revision).to_args();

    let token_env = {
        let (name, key) = match &spec.secrets.token {
            Some(t) => (t.name.clone(), t.key.clone()),
            None => (job.token(), TOKEN_KEY.to_string()),
        };
        json!({"name": "SLUICE_CONTROL_TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": key}}})
    };
    let secret_env = env_from(spec);
    let annotations = json!({
        "sluice.dev/spec-hash": revision.hash,
        "sluice.dev/run": revision.run,
    });

    let coordinator_pod = pod_template(
        job,
        spec,
        &spec.coordinator,
        "coordinator",
        &annotations,
        json!({
            "name": "sluice",
            "image": image,
            "args": args,
            "env": [token_env, {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "envFrom": secret_env,
            "ports": [
                {"name": "workers", "containerPort": COORDINATOR_PORT},
                {"name": "control", "containerPort": CONTROL_PORT},
            ],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "control"}, "periodSeconds": 2},
            "volumeMounts": [
                {"name": "manifest", "mountPath": MANIFEST_DIR, "readOnly": true},
                {"name": "state", "mountPath": STATE_DIR},
            ],
        }),
        json!([
            {"name": "manifest", "configMap": {"name": job.manifest()}},
            {"name": "state", "emptyDir": {}},
        ]),
    )?;
    let worker_pod = pod_template(
        job,
        spec,
        &spec.worker,
        "worker",
        &annotations,
        json!({
            "name": "sluice",
            "image": image,
            "args": worker_args(job, spec).to_args(),
            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "envFrom": secret_env,
            "ports": [{"name": "data", "containerPort": DATA_PORT}],
            "volumeMounts": [{"name": "state", "mountPath": STATE_DIR}],
        }),
        json!([{"name": "state", "emptyDir": {}}]),
    )?;

    let coordinator_labels = job.labels(Some("coordinator"));
    let worker_labels = job.labels(Some("worker"));
    Ok(Children {
        manifest: manifest_config_map(job, job.manifest(), spec)?,
        coordinator: from_json(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": job.metadata(job.coordinator(), Some("coordinator")),
            "spec": {
                "replicas": 1,
                // Never two coordinators of one job at once.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": coordinator_labels},
                "template": coordinator_pod,
            },
        }))?,
        coordinator_service: from_json(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": job.metadata(job.coordinator(), Some("coordinator")),
            "spec": {
                "selector": coordinator_labels,
                "ports": [
                    {"name": "workers", "port": COORDINATOR_PORT, "targetPort": "workers"},
                    {"name": "control", "port": CONTROL_PORT, "targetPort": "control"},
                ],
            },
        }))?,
        workers: from_json(json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": job.metadata(job.worker(), Some("worker")),
            "spec": {
                "replicas": worker_count(spec),
                "serviceName": job.worker(),
                // The coordinator waits for all of them; one at a time would only be slower.
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": worker_labels},
                "template": worker_pod,
            },
        }))?,
        worker_service: from_json(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": job.metadata(job.worker(), Some("worker")),
            "spec": {
                "clusterIP": "None",
                "selector": worker_labels,
                "ports": [{"name": "data", "port": DATA_PORT, "targetPort": "data"}],
            },
        }))?,
        // Every pod of a job is needed: a drain may take one at a time, and the job restarts
        // from its latest checkpoint after each. Only the coordinator and the workers: the
        // pods of the pre-flight and cleanup Jobs belong to a controller without a scale, so
        // a budget over them only yields the disruption controller's warnings.
        disruption_budget: from_json(json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": job.metadata(job.name.clone(), None),
            "spec": {"maxUnavailable": 1, "selector": {
                "matchLabels": {"sluice.dev/job": job.name},
                "matchExpressions": [
                    {"key": "sluice.dev/role", "operator": "In", "values": ["coordinator", "worker"]},
                ],
            }},
        }))?,
    })
}

fn image(spec: &StreamJobSpec) -> Result<&str, Error> {
    spec.image
        .as_deref()
        .ok_or_else(|| Error::Build("spec.image: required to run the job on Kubernetes".into()))
}

/// The upgrade pre-flight: a Job running the new revision's image against the savepoint,
/// with the new manifest in a ConfigMap of its own.
pub fn preflight(
    job: &JobRef,
    revision: &SpecRevision,
    savepoint: &str,
) -> Result<(ConfigMap, BatchJob), Error> {
    let spec = &revision.spec;
    let args = SavepointCheckArgs {
        snapshot: savepoint.to_string(),
        job: spec.job.name.clone(),
        manifest: Some(format!("{MANIFEST_DIR}/job.yaml").into()),
        allow_non_restored_state: spec.allow_non_restored_state,
    };
    let check = tool_job(
        job,
        spec,
        ToolJob {
            name: job.preflight(),
            role: "preflight",
            annotations: json!({"sluice.dev/spec-hash": revision.hash}),
            args: args.to_args(),
            mounts: json!([{"name": "manifest", "mountPath": MANIFEST_DIR, "readOnly": true}]),
            volumes: json!([{"name": "manifest", "configMap": {"name": job.preflight()}}]),
            // A failed check is an answer, not a fault to retry.
            backoff_limit: 0,
        },
    )?;
    Ok((manifest_config_map(job, job.preflight(), spec)?, check))
}

/// Annotation of the savepoint cleanup Job: the savepoints it deletes, as a JSON list.
pub const CLEANUP_SAVEPOINTS: &str = "sluice.dev/savepoints";

/// A Job deleting savepoints with the job's image, secrets and volumes: whatever storage
/// the job reaches, this reaches too.
pub fn savepoint_cleanup(
    job: &JobRef,
    spec: &StreamJobSpec,
    savepoints: &[String],
) -> Result<BatchJob, Error> {
    let args = SavepointDeleteArgs {
        savepoints: savepoints.to_vec(),
    };
    let mut cleanup = tool_job(
        job,
        spec,
        ToolJob {
            name: job.savepoint_cleanup(),
            role: "savepoint-cleanup",
            annotations: json!({}),
            args: args.to_args(),
            mounts: json!([]),
            volumes: json!([]),
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
    annotations: Value,
    args: Vec<String>,
    /// Volume mounts beside those of `spec.podTemplate`.
    mounts: Value,
    volumes: Value,
    backoff_limit: u32,
}

/// A Job running a command with the job's image, secrets and pod template (so its volumes).
fn tool_job(job: &JobRef, spec: &StreamJobSpec, tool: ToolJob) -> Result<BatchJob, Error> {
    let mut pod = pod_template(
        job,
        spec,
        &spec.coordinator,
        tool.role,
        &tool.annotations,
        json!({
            "name": "sluice",
            "image": image(spec)?,
            "args": tool.args,
            "envFrom": env_from(spec),
            "volumeMounts": tool.mounts,
        }),
        tool.volumes,
    )?;
    pod["spec"]["restartPolicy"] = json!("Never");
    from_json(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": job.metadata(tool.name, Some(tool.role)),
        "spec": {"backoffLimit": tool.backoff_limit, "ttlSecondsAfterFinished": 3600, "template": pod},
    }))
}

fn env_from(spec: &StreamJobSpec) -> Vec<Value> {
    spec.secrets
        .env
        .iter()
        .map(|s| json!({"secretRef": {"name": s.name}}))
        .collect()
}

fn manifest_config_map(
    job: &JobRef,
    name: String,
    spec: &StreamJobSpec,
) -> Result<ConfigMap, Error> {
    from_json(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": job.metadata(name, None),
        "data": {"job.yaml": manifest(job, spec)?},
    }))
}

fn manifest(job: &JobRef, spec: &StreamJobSpec) -> Result<String, Error> {
    serde_yaml::to_string(&json!({
        "apiVersion": sluice_crds::API_VERSION,
        "kind": sluice_crds::KIND,
        "metadata": {"name": job.name},
        "spec": spec,
    }))
    .map_err(|e| Error::Build(format!("the job manifest: {e}")))
}

/// The Secret holding a generated control API token.
pub fn token_secret(job: &JobRef, token: &str) -> Result<Secret, Error> {
    from_json(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": job.metadata(job.token(), None),
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token},
    }))
}

/// A pod template: ours, then `spec.podTemplate`, then the role's, merged in that order.
#[allow(clippy::too_many_arguments)]
fn pod_template(
    job: &JobRef,
    spec: &StreamJobSpec,
    role: &PodRole,
    role_name: &str,
    annotations: &Value,
    mut container: Value,
    volumes: Value,
) -> Result<Value, Error> {
    if !role.resources.is_empty() {
        container["resources"] = serde_json::to_value(&role.resources)
            .map_err(|e| Error::Build(format!("resources: {e}")))?;
    }
    let mut template = json!({
        "metadata": {"labels": job.labels(Some(role_name)), "annotations": annotations},
        "spec": {
            "containers": [container],
            "volumes": volumes,
            // A coordinator cancelling, a worker closing its connections: seconds.
            "terminationGracePeriodSeconds": 30,
        },
    });
    let role_field = if role_name == "worker" {
        "spec.worker.podTemplate"
    } else {
        "spec.coordinator.podTemplate"
    };
    for (field, overlay) in [
        ("spec.podTemplate", &spec.pod_template),
        (role_field, &role.pod_template),
    ] {
        if let Some(overlay) = overlay {
            merge(&mut template, overlay);
            // Checked here so that a bad override names its field, not the child.
            serde_json::from_value::<PodTemplateSpec>(template.clone())
                .map_err(|e| Error::Build(format!("{field}: {e}")))?;
        }
    }
    Ok(template)
}

/// Merges `overlay` into `base`: objects key by key, lists of named objects (containers,
/// volumes, env, ports …) entry by entry by `name`, anything else replaced.
pub fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) if o.iter().all(named) && b.iter().all(named) => {
            for item in o {
                match b.iter_mut().find(|e| e["name"] == item["name"]) {
                    Some(existing) => merge(existing, item),
                    None => b.push(item.clone()),
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn named(v: &Value) -> bool {
    v.get("name").is_some_and(Value::is_string)
}

/// Whole milliseconds, as the operator has always written durations.
fn millis(d: Option<std::time::Duration>) -> ArgDuration {
    let ms = d.map_or(0, |d| d.as_millis());
    ArgDuration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|e| Error::Build(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_crds::command::{Command, SavepointCommand};
    use sluice_crds::parse_manifest;

    fn revision(yaml: &str) -> SpecRevision {
        let m = parse_manifest(yaml, "test.yaml").unwrap();
        let mut r = SpecRevision::new(m.spec, Some(1));
        r.run = Some("r1".into());
        r
    }

    fn job() -> JobRef {
        JobRef {
            namespace: "ns".into(),
            name: "q5".into(),
            uid: "u-1".into(),
        }
    }

    const BASE: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: StreamJob
metadata: {name: q5}
spec:
  image: sluice:1
  job: {name: nexmark-q5, config: {output: /data/out}}
  parallelism: 5
  slotsPerWorker: 2
  checkpointing: {storage: "file:///data/ck/", interval: 2s}
"#;

    #[test]
    fn a_revision_becomes_a_coordinator_and_enough_workers_for_its_slots() {
        let mut r = revision(BASE);
        r.restore_from = Some("file:///data/sp-1".into());
        let c = children(&job(), &r).unwrap();
        let workers = c.workers.spec.unwrap();
        assert_eq!(workers.replicas, Some(3));
        let pod = c.coordinator.spec.unwrap().template.spec.unwrap();
        let args = pod.containers[0].args.clone().unwrap();
        for expected in [
            "--parallelism=5",
            "--checkpoint-dir=file:///data/ck/ns/q5/r1",
            "--checkpoint-interval=2000ms",
            "--restore=latest",
            "--initial-snapshot=file:///data/sp-1",
            "--savepoint-dir=file:///data/ck/savepoints/ns/q5",
            "--on-terminate=cancel",
        ] {
            assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
        }
        assert_eq!(pod.containers[0].image.as_deref(), Some("sluice:1"));
        let manifest = &c.manifest.data.unwrap()["job.yaml"];
        let back = parse_manifest(manifest, "cm").unwrap();
        assert_eq!(back.spec, r.spec);
    }

    fn container_args(pod: Option<k8s_openapi::api::core::v1::PodSpec>) -> Vec<String> {
        pod.unwrap().containers[0].args.clone().unwrap()
    }

    fn parsed(args: &[String]) -> Command {
        Command::try_parse_args(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn every_childs_command_line_parses_into_the_arguments_it_was_built_from() {
        let mut r = revision(BASE);
        r.restore_from = Some("file:///data/sp-1".into());
        let c = children(&job(), &r).unwrap();
        let coordinator = container_args(c.coordinator.spec.unwrap().template.spec);
        // Word for word what earlier operators wrote: a changed command line would roll the
        // pods of every running job when the operator is upgraded.
        assert_eq!(
            coordinator,
            [
                "coordinator",
                "/etc/sluice/job.yaml",
                "--listen=0.0.0.0:6123",
                "--control-addr=0.0.0.0:8081",
                "--on-terminate=cancel",
                "--wait-for-termination",
                "--parallelism=5",
                "--state-dir=/var/lib/sluice/state",
                "--checkpoint-dir=file:///data/ck/ns/q5/r1",
                "--checkpoint-interval=2000ms",
                "--retain-checkpoints=3",
                "--restore=latest",
                "--initial-snapshot=file:///data/sp-1",
                "--savepoint-dir=file:///data/ck/savepoints/ns/q5",
                "--restart-initial-backoff=10000ms",
                "--restart-max-backoff=300000ms",
                "--restart-max-attempts=4294967295",
                "--restart-reset-after=600000ms",
            ]
        );
        assert_eq!(
            parsed(&coordinator),
            Command::Coordinator(CoordinatorArgs {
                manifest: "/etc/sluice/job.yaml".into(),
                parallelism: Some(5),
                listen: Some("0.0.0.0:6123".into()),
                on_terminate: Some(OnTerminate::Cancel),
                wait_for_termination: true,
                restart: RestartArgs {
                    restart_initial_backoff: Some(ArgDuration::from_millis(10_000)),
                    restart_max_backoff: Some(ArgDuration::from_millis(300_000)),
                    restart_max_attempts: Some(u32::MAX),
                    restart_reset_after: Some(ArgDuration::from_millis(600_000)),
                },
                snapshots: SnapshotArgs {
                    checkpoint_interval: Some(ArgDuration::from_millis(2_000)),
                    checkpoint_dir: Some("file:///data/ck/ns/q5/r1".into()),
                    retain_checkpoints: Some(3),
                    restore: Some(RestoreFrom::Latest),
                    initial_snapshot: Some("file:///data/sp-1".into()),
                    savepoint_dir: Some("file:///data/ck/savepoints/ns/q5".into()),
                    state_dir: Some("/var/lib/sluice/state".into()),
                    ..SnapshotArgs::default()
                },
                control: ControlArgs {
                    control_addr: Some("0.0.0.0:8081".into()),
                    control_token_file: None,
                },
                ..CoordinatorArgs::default()
            })
        );
        let worker = container_args(c.workers.spec.unwrap().template.spec);
        assert_eq!(
            worker,
            [
                "worker",
                "--coordinator=q5-coordinator:6123",
                "--slots=2",
                "--data-addr=0.0.0.0:6124",
                "--state-dir=/var/lib/sluice/state",
                "--connect-timeout=300s",
            ]
        );
        assert_eq!(
            parsed(&worker),
            Command::Worker(WorkerArgs {
                coordinator: Some("q5-coordinator:6123".into()),
                slots: Some(2),
                data_addr: Some("0.0.0.0:6124".into()),
                state_dir: Some("/var/lib/sluice/state".into()),
                connect_timeout: Some(ArgDuration::from_secs(300)),
                ..WorkerArgs::default()
            })
        );

        let stateless = BASE.replace(
            "  checkpointing: {storage: \"file:///data/ck/\", interval: 2s}\n",
            "  upgradeMode: stateless\n  allowNonRestoredState: true\n",
        );
        let mut r = revision(&stateless);
        r.restore_from = Some("file:///data/sp-2".into());
        let c = children(&job(), &r).unwrap();
        let Command::Coordinator(args) =
            parsed(&container_args(c.coordinator.spec.unwrap().template.spec))
        else {
            panic!("not a coordinator")
        };
        assert_eq!(
            args.snapshots,
            SnapshotArgs {
                restore: Some(RestoreFrom::Snapshot("file:///data/sp-2".into())),
                allow_non_restored_state: true,
                state_dir: Some("/var/lib/sluice/state".into()),
                ..SnapshotArgs::default()
            }
        );

        let (_, check) = preflight(&job(), &r, "file:///data/sp-2").unwrap();
        assert_eq!(
            parsed(&container_args(check.spec.unwrap().template.spec)),
            Command::Savepoint {
                command: SavepointCommand::Check(SavepointCheckArgs {
                    snapshot: "file:///data/sp-2".into(),
                    job: "nexmark-q5".into(),
                    manifest: Some("/etc/sluice/job.yaml".into()),
                    allow_non_restored_state: true,
                }),
            }
        );
        let doomed = ["file:///data/sp/a/sp-1".to_string(), "s3://b/sp-2".into()];
        let cleanup = savepoint_cleanup(&job(), &r.spec, &doomed).unwrap();
        assert_eq!(
            parsed(&container_args(cleanup.spec.unwrap().template.spec)),
            Command::Savepoint {
                command: SavepointCommand::Delete(SavepointDeleteArgs {
                    savepoints: doomed.to_vec(),
                }),
            }
        );
    }

    #[test]
    fn pod_template_overrides_merge_by_name_and_name_their_field_when_bad() {
        let with_volume = format!(
            "{BASE}  podTemplate:\n    spec:\n      volumes: [{{name: data, hostPath: {{path: /srv}}}}]\n      containers: [{{name: sluice, volumeMounts: [{{name: data, mountPath: /data}}]}}]\n"
        );
        let c = children(&job(), &revision(&with_volume)).unwrap();
        let pod = c.workers.spec.unwrap().template.spec.unwrap();
        let volumes: Vec<_> = pod.volumes.unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(volumes, ["state", "data"]);
        let mounts: Vec<_> = pod.containers[0]
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .map(|m| m.mount_path)
            .collect();
        assert_eq!(mounts, ["/var/lib/sluice/state", "/data"]);

        let bad = format!("{BASE}  worker:\n    podTemplate:\n      spec: {{containers: 3}}\n");
        let err = children(&job(), &revision(&bad)).err().unwrap().to_string();
        assert!(err.contains("spec.worker.podTemplate"), "{err}");
    }

    #[test]
    fn the_savepoint_cleanup_runs_the_jobs_image_with_its_volumes_and_names_its_savepoints() {
        let with_volume = format!(
            "{BASE}  podTemplate:\n    spec:\n      volumes: [{{name: data, hostPath: {{path: /srv}}}}]\n      containers: [{{name: sluice, volumeMounts: [{{name: data, mountPath: /data}}]}}]\n"
        );
        let spec = revision(&with_volume).spec;
        let doomed = ["file:///data/sp/a/sp-0000000001".to_string()];
        let cleanup = savepoint_cleanup(&job(), &spec, &doomed).unwrap();
        let listed = &cleanup.metadata.annotations.as_ref().unwrap()[CLEANUP_SAVEPOINTS];
        assert_eq!(serde_json::from_str::<Vec<String>>(listed).unwrap(), doomed);
        let pod = cleanup.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("sluice:1"));
        assert_eq!(
            container.args.clone().unwrap(),
            ["savepoint", "delete", "file:///data/sp/a/sp-0000000001"]
        );
        let mounts = container.volume_mounts.clone().unwrap();
        assert!(mounts.iter().any(|m| m.mount_path == "/data"), "{mounts:?}");
    }

    #[test]
    fn without_storage_a_job_has_no_checkpoints_and_starts_from_its_savepoint_only() {
        let yaml = BASE.replace(
            "  checkpointing: {storage: \"file:///data/ck/\", interval: 2s}\n",
            "  upgradeMode: stateless\n",
        );
        let c = children(&job(), &revision(&yaml)).unwrap();
        let args = c
            .coordinator
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers[0]
            .args
            .clone()
            .unwrap();
        assert!(
            !args.iter().any(|a| a.starts_with("--checkpoint-dir")),
            "{args:?}"
        );
    }
}

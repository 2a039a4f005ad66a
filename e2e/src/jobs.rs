//! StreamJobs for the tests: a q0 job writing to a directory on the node the test reads
//! ([`shared_dir`]), waits on its status, and its committed output compared with an
//! uninterrupted embedded run of the same job.

use crate::{wait_for, wait_until, E2eError, Result, TestNamespace, SLUICE_IMAGE};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde_json::{json, Value};
use sluice_crds::{Phase, StreamJob};
use sluice_runtime::connectors::JsonLinesSink;
use sluice_runtime::exec::{start_embedded, RunOptions};
use sluice_runtime::jobs::JobRegistry;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const JOBS_DIR: &str = "/var/lib/sluice-e2e/jobs";
/// Long enough for a job's pods to start, or a stop with a savepoint to complete.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(240);

/// q0 passes every event through: each committed line is one event, so a lost or repeated
/// event shows. The throttled sink keeps the job running through the test's steps.
pub fn job_config(dir: &Path, events: u64, rate: u64) -> Value {
    json!({
        "generator": {"events": events},
        "output": dir.join("out"),
        "sink": {"maxRecordsPerSecond": rate},
    })
}

/// The claim in a test's namespace that its jobs' pods mount [`shared_dir`] through.
const SHARED_CLAIM: &str = "shared";

/// The directory on the node that a test shares with its jobs' pods (checkpoints,
/// savepoints, input, output), at the same path in both.
///
/// The namespace enforces the `restricted` Pod Security Standard, under which a pod may not
/// mount a hostPath. So the test does what a cluster's administrator would: it makes a
/// hostPath PersistentVolume, bound in advance to the claim `shared` in its namespace, which
/// the pods mount ([`shared_dir_pod_template`]). The volume is owned by the namespace and
/// goes with it. Once per namespace; later calls find both there.
pub async fn shared_dir(ns: &TestNamespace) -> Result<PathBuf> {
    let dir = Path::new(JOBS_DIR).join(&ns.name);
    let io = |e: std::io::Error| E2eError::Config(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    // The pods run as a user of their own, and a hostPath volume's ownership is not
    // changed to the pod's group (`fsGroup`) as other volumes' is.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(io)?;
    let owner = Api::<Namespace>::all(ns.client.clone())
        .get(&ns.name)
        .await?
        .owner_ref(&())
        .ok_or_else(|| E2eError::Config(format!("namespace {} has no uid", ns.name)))?;
    let volume: PersistentVolume = from_json(json!({
        "metadata": {"name": ns.name, "ownerReferences": [owner]},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": dir, "type": "Directory"},
            "claimRef": {"namespace": ns.name, "name": SHARED_CLAIM},
        },
    }))?;
    let claim: PersistentVolumeClaim = from_json(json!({
        "metadata": {"name": SHARED_CLAIM},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": ns.name,
            "resources": {"requests": {"storage": "10Gi"}},
        },
    }))?;
    create_unless_there(&Api::all(ns.client.clone()), &volume).await?;
    let claims: Api<PersistentVolumeClaim> = ns.api();
    create_unless_there(&claims, &claim).await?;
    wait_until(
        &format!("claim {SHARED_CLAIM} to be bound"),
        Duration::from_secs(60),
        || async {
            let claim = claims.get(SHARED_CLAIM).await?;
            Ok(claim.status.and_then(|s| s.phase).as_deref() == Some("Bound"))
        },
    )
    .await?;
    Ok(dir)
}

/// The pod template overlay that mounts [`shared_dir`] `dir` at its own path.
pub fn shared_dir_pod_template(dir: &Path) -> Value {
    json!({"spec": {
        "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": SHARED_CLAIM}}],
        "containers": [{"name": "sluice", "volumeMounts": [{"name": "shared", "mountPath": dir}]}],
    }})
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| E2eError::Config(e.to_string()))
}

async fn create_unless_there<K>(api: &Api<K>, object: &K) -> Result<()>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        result => result.map(drop).map_err(Into::into),
    }
}

pub async fn stream_job(
    ns: &TestNamespace,
    name: &str,
    job: &str,
    config: Value,
) -> Result<(StreamJob, PathBuf)> {
    let dir = shared_dir(ns).await?;
    let mut config = config;
    if config.get("output").is_none() {
        config["output"] = json!(dir.join("out"));
    }
    let sj = from_json(json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "StreamJob",
        "metadata": {"name": name},
        "spec": {
            "image": SLUICE_IMAGE,
            "job": {"name": job, "config": config},
            "parallelism": 2,
            "checkpointing": {"storage": format!("file://{}/state", dir.display()), "interval": "1s"},
            "rollback": {"enabled": true, "readinessTimeout": "60s"},
            "podTemplate": shared_dir_pod_template(&dir),
        },
    }))?;
    Ok((sj, dir))
}

/// Starts the throttled q0 as `name` (600,000 events, 1,500 a second per subtask: about 200 s) with
/// `edit` applied to its spec, and waits until it runs. Returns its directory, its config
/// (as edited) and the StreamJob.
pub async fn start_q0(
    ns: &TestNamespace,
    api: &Api<StreamJob>,
    name: &str,
    edit: impl FnOnce(&mut sluice_crds::StreamJobSpec),
) -> Result<(PathBuf, Value, StreamJob)> {
    let (mut sj, dir) = stream_job(ns, name, "nexmark-q0", json!({})).await?;
    sj.spec.job.config = job_config(&dir, 600_000, 1_500);
    edit(&mut sj.spec);
    let config = sj.spec.job.config.clone();
    api.create(&PostParams::default(), &sj).await?;
    let running = settled(api, name, Phase::Running).await?;
    Ok((dir, config, running))
}

/// The worker pod template of a spec whose workers cannot start (an unknown flag): a pod
/// that crash-loops while the coordinator and the pre-flight are fine.
pub fn crashing_workers() -> Value {
    json!({"spec": {"containers": [
        {"name": "sluice", "args": ["worker", "--no-such-flag"]}
    ]}})
}

/// Waits until the job has committed some output.
pub async fn first_output(dir: &Path) -> Result<()> {
    wait_for("output", STEP_TIMEOUT, || async {
        Ok((!committed(dir).is_empty()).then_some(()))
    })
    .await
}

/// The change every upgrade test makes: a faster sink, which needs new pods.
pub fn faster(dir: &Path) -> Value {
    json!({"job": {"config": job_config(dir, 600_000, 2_000)}})
}

/// Waits until the operator has acted on the latest spec and the job is in `phase` with no
/// operation under way.
pub async fn settled(api: &Api<StreamJob>, name: &str, phase: Phase) -> Result<StreamJob> {
    wait_for(
        &format!("{name} to settle in {phase:?}"),
        STEP_TIMEOUT,
        || async {
            let sj = api.get(name).await?;
            let status = sj.status.clone().unwrap_or_default();
            let current = status.observed_generation == sj.metadata.generation;
            Ok(
                (current && status.phase == Some(phase) && status.operation.is_none())
                    .then_some(sj),
            )
        },
    )
    .await
}

pub async fn patch(api: &Api<StreamJob>, name: &str, spec: Value) -> Result<()> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": spec})),
    )
    .await?;
    Ok(())
}

pub fn committed(dir: &Path) -> Vec<String> {
    let mut lines = JsonLinesSink::committed_lines(&dir.join("out")).unwrap_or_default();
    lines.sort();
    lines
}

/// The output of an uninterrupted embedded run of the same job, sorted.
pub fn reference(job: &str, config: &Value, dir: &Path) -> Vec<String> {
    let out = dir.join("reference");
    let mut config = config.clone();
    config["output"] = json!(out);
    config["sink"] = json!({});
    let graph = JobRegistry::bundled()
        .build(job, 2, 128, &config)
        .expect("the job builds");
    start_embedded(graph, RunOptions::default())
        .and_then(|run| run.wait().map(drop))
        .expect("the reference run");
    let mut lines = JsonLinesSink::committed_lines(&out).expect("reference output");
    lines.sort();
    lines
}

/// Waits for the job to commit all its output, then compares it with an uninterrupted run:
/// nothing lost, nothing twice. Returns the number of lines.
pub async fn exactly_the_reference(dir: &Path, config: &Value) -> Result<usize> {
    let expected = reference("nexmark-q0", config, dir);
    let output = wait_for("all output", Duration::from_secs(600), || async {
        let lines = committed(dir);
        Ok((lines.len() >= expected.len()).then_some(lines))
    })
    .await?;
    assert!(
        output == expected,
        "committed output differs from the reference: {} lines, {} expected",
        output.len(),
        expected.len()
    );
    Ok(expected.len())
}

/// The longest time between two commits of output (files written, by their modification
/// time) from `from` to `to`: how long the job's output paused.
pub fn output_gap(dir: &Path, from: Instant, to: Instant) -> Duration {
    let now = (Instant::now(), std::time::SystemTime::now());
    let wall = |i: Instant| now.1 - now.0.duration_since(i);
    let (from, to) = (wall(from), wall(to));
    let mut times: Vec<_> = JsonLinesSink::committed_files(&dir.join("out"))
        .unwrap_or_default()
        .iter()
        .filter_map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .filter(|t| *t >= from && *t <= to)
        .collect();
    times.sort();
    let mut edges = vec![from];
    edges.extend(times);
    edges.push(to);
    edges
        .windows(2)
        .filter_map(|w| w[1].duration_since(w[0]).ok())
        .max()
        .unwrap_or_default()
}

pub fn pods_of(name: &str) -> kube::api::ListParams {
    kube::api::ListParams::default().labels(&format!("sluice.dev/job={name}"))
}

pub async fn pod_count(ns: &TestNamespace, name: &str) -> Result<usize> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = ns.api();
    Ok(pods
        .list(&pods_of(name))
        .await?
        .items
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("sluice.dev/role"))
                .is_some_and(|role| role == "coordinator" || role == "worker")
        })
        .count())
}

pub fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

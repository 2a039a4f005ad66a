//! The operator on the real cluster (installed by `e2e/ci.sh` with the Helm chart): a
//! StreamJob's whole life, with its committed output compared to an uninterrupted embedded
//! run of the same job.
//!
//! Jobs write checkpoints, savepoints and output to a hostPath directory under
//! `/var/lib/sluice-e2e/jobs/<namespace>`, which this test (on the node) reads directly.

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use sluice_crds::{Phase, StreamJob};
use sluice_e2e::{e2e_test, wait_for, Result, TestNamespace, SLUICE_IMAGE};
use sluice_runtime::connectors::JsonLinesSink;
use sluice_runtime::exec::{start_embedded, RunOptions};
use sluice_runtime::jobs::JobRegistry;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const JOBS_DIR: &str = "/var/lib/sluice-e2e/jobs";
/// Long enough for a job's pods to start, or a stop with a savepoint to complete.
const STEP_TIMEOUT: Duration = Duration::from_secs(240);

/// q0 passes every event through: each committed line is one event, so a lost or repeated
/// event shows. The throttled sink keeps the job running through the test's steps.
fn job_config(dir: &Path, events: u64, rate: u64) -> Value {
    json!({
        "generator": {"events": events},
        "output": dir.join("out"),
        "sink": {"maxRecordsPerSecond": rate},
    })
}

fn stream_job(
    ns: &TestNamespace,
    name: &str,
    job: &str,
    config: Value,
) -> Result<(StreamJob, PathBuf)> {
    let dir = Path::new(JOBS_DIR).join(&ns.name);
    std::fs::create_dir_all(&dir).map_err(|e| sluice_e2e::E2eError::Config(e.to_string()))?;
    let mut config = config;
    if config.get("output").is_none() {
        config["output"] = json!(dir.join("out"));
    }
    let sj = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "StreamJob",
        "metadata": {"name": name},
        "spec": {
            "image": SLUICE_IMAGE,
            "job": {"name": job, "config": config},
            "parallelism": 2,
            "checkpointing": {"storage": format!("file://{}/state", dir.display()), "interval": "1s"},
            "rollback": {"enabled": true, "readinessTimeout": "60s"},
            "podTemplate": {"spec": {
                "volumes": [{"name": "data", "hostPath": {"path": dir, "type": "DirectoryOrCreate"}}],
                "containers": [{"name": "sluice", "volumeMounts": [{"name": "data", "mountPath": dir}]}],
            }},
        },
    }))
    .map_err(|e| sluice_e2e::E2eError::Config(e.to_string()))?;
    Ok((sj, dir))
}

/// Waits until the operator has acted on the latest spec and the job is in `phase` with no
/// operation under way.
async fn settled(api: &Api<StreamJob>, name: &str, phase: Phase) -> Result<StreamJob> {
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

async fn patch(api: &Api<StreamJob>, name: &str, spec: Value) -> Result<()> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": spec})),
    )
    .await?;
    Ok(())
}

fn committed(dir: &Path) -> Vec<String> {
    let mut lines = JsonLinesSink::committed_lines(&dir.join("out")).unwrap_or_default();
    lines.sort();
    lines
}

/// The output of an uninterrupted embedded run of the same job, sorted.
fn reference(job: &str, config: &Value, dir: &Path) -> Vec<String> {
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

fn pods_of(name: &str) -> kube::api::ListParams {
    kube::api::ListParams::default().labels(&format!("sluice.dev/job={name}"))
}

async fn pod_count(ns: &TestNamespace, name: &str) -> Result<usize> {
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
                .map(String::as_str)
                != Some("preflight")
        })
        .count())
}

fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

e2e_test!(
    a_stream_job_runs_upgrades_rescales_suspends_and_resumes_exactly_once,
    |ns| {
        let api: Api<StreamJob> = ns.api();
        let (sj, dir) = stream_job(&ns, "q0", "nexmark-q0", json!({}))?;
        let config = job_config(&dir, 600_000, 1_500);
        let mut sj = sj;
        sj.spec.job.config = config.clone();
        api.create(&PostParams::default(), &sj).await?;

        let running = settled(&api, "q0", Phase::Running).await?;
        let status = running.status.unwrap_or_default();
        let ready = status.condition("Ready").expect("a Ready condition");
        assert_eq!(format!("{:?}", ready.status), "True", "{ready:?}");
        assert_eq!(status.replicas, Some(2));
        wait_for("output", STEP_TIMEOUT, || async {
            Ok((!committed(&dir).is_empty()).then_some(()))
        })
        .await?;

        // A config change needs new pods: savepoint, pre-flight, stop, start from the savepoint.
        let before = committed(&dir).len();
        let started = Instant::now();
        patch(
            &api,
            "q0",
            json!({"job": {"config": job_config(&dir, 600_000, 2_000)}}),
        )
        .await?;
        let upgraded = settled(&api, "q0", Phase::Running).await?;
        let status = upgraded.status.unwrap_or_default();
        let savepoint = status
            .last_savepoint
            .clone()
            .expect("the upgrade's savepoint");
        assert_eq!(
            status.target.as_ref().and_then(|t| t.restore_from.clone()),
            savepoint.path
        );
        eprintln!(
            "upgrade: {:.1}s from the spec change to running again; {} lines committed before",
            started.elapsed().as_secs_f64(),
            before
        );

        // `kubectl scale` goes through the scale subresource to spec.parallelism.
        for replicas in [3, 1] {
            let scale = json!({"spec": {"replicas": replicas}});
            api.patch_scale("q0", &PatchParams::default(), &Patch::Merge(&scale))
                .await?;
            let scaled = settled(&api, "q0", Phase::Running).await?;
            assert_eq!(
                scaled.status.unwrap_or_default().parallelism,
                Some(replicas)
            );
        }

        patch(&api, "q0", json!({"state": "suspended"})).await?;
        let suspended = settled(&api, "q0", Phase::Suspended).await?;
        let suspend_savepoint = suspended
            .status
            .unwrap_or_default()
            .last_savepoint
            .expect("savepoint");
        assert_eq!(format!("{:?}", suspend_savepoint.trigger), "Suspend");
        wait_for("the pods to go", STEP_TIMEOUT, || async {
            Ok((pod_count(&ns, "q0").await? == 0).then_some(()))
        })
        .await?;
        let while_suspended = committed(&dir).len();

        patch(&api, "q0", json!({"state": "running"})).await?;
        let resumed = settled(&api, "q0", Phase::Running).await?;
        assert_eq!(
            resumed
                .status
                .unwrap_or_default()
                .target
                .and_then(|t| t.restore_from),
            suspend_savepoint.path
        );

        let expected = reference("nexmark-q0", &config, &dir);
        let output = wait_for("all output", Duration::from_secs(600), || async {
            let lines = committed(&dir);
            Ok((lines.len() >= expected.len()).then_some(lines))
        })
        .await?;
        assert!(
            while_suspended < expected.len(),
            "the job ended before it was suspended"
        );
        assert!(
            output == expected,
            "committed output differs from the reference: {} lines, {} expected",
            output.len(),
            expected.len()
        );
        remove(&dir);
        Ok(())
    }
);

e2e_test!(
    an_upgrade_the_new_spec_cannot_restore_is_refused_and_the_old_job_runs_on,
    |ns| {
        let api: Api<StreamJob> = ns.api();
        let (mut sj, dir) = stream_job(&ns, "q4", "nexmark-q4", json!({}))?;
        sj.spec.job.config = json!({
            "generator": {"events": 100_000_000u64},
            "output": "discard",
            "sink": {"maxRecordsPerSecond": 5_000},
        });
        api.create(&PostParams::default(), &sj).await?;
        settled(&api, "q4", Phase::Running).await?;

        // q0 has none of q4's keyed operators: their state would be dropped.
        patch(&api, "q4", json!({"job": {"name": "nexmark-q0"}})).await?;
        let refused = wait_for("the upgrade to be refused", STEP_TIMEOUT, || async {
            let sj = api.get("q4").await?;
            let status = sj.status.clone().unwrap_or_default();
            let degraded = status.condition("Degraded").cloned();
            Ok(degraded
                .filter(|c| c.reason == "UpgradeRefused")
                .map(|c| (c, status)))
        })
        .await?;
        let (condition, status) = refused;
        assert!(
            condition.message.contains("cannot restore"),
            "{}",
            condition.message
        );
        assert_eq!(status.phase, Some(Phase::Running));
        assert_eq!(
            status.target.map(|t| t.spec.job.name),
            Some("nexmark-q4".to_string()),
            "the old spec still runs"
        );
        remove(&dir);
        Ok(())
    }
);

e2e_test!(deleting_a_stream_job_takes_a_final_savepoint, |ns| {
    let api: Api<StreamJob> = ns.api();
    let (mut sj, dir) = stream_job(&ns, "q5", "nexmark-q5", json!({}))?;
    sj.spec.job.config = json!({
        "generator": {"events": 100_000_000u64},
        "output": "discard",
        "sink": {"maxRecordsPerSecond": 5_000},
    });
    api.create(&PostParams::default(), &sj).await?;
    settled(&api, "q5", Phase::Running).await?;
    api.delete("q5", &DeleteParams::default()).await?;
    wait_for("the StreamJob to go", STEP_TIMEOUT, || async {
        Ok(api.get_opt("q5").await?.is_none().then_some(()))
    })
    .await?;
    let savepoints = dir.join(format!("state/savepoints/{}/q5", ns.name));
    let found: Vec<_> = walk(&savepoints)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "_manifest.json"))
        .collect();
    assert!(
        !found.is_empty(),
        "no savepoint manifest under {}",
        savepoints.display()
    );
    remove(&dir);
    Ok(())
});

e2e_test!(
    the_api_server_rejects_an_invalid_stream_job_with_the_cel_message,
    |ns| {
        let api: Api<StreamJob> = ns.api();
        let (mut sj, _) = stream_job(&ns, "bad", "nexmark-q0", json!({}))?;
        sj.spec.parallelism = 300;
        let err = api
            .create(&PostParams::default(), &sj)
            .await
            .expect_err("rejected");
        let message = err.to_string();
        assert!(
            message.contains("300 is above spec.maxParallelism (128)"),
            "{message}"
        );
        Ok(())
    }
);

fn walk(dir: &Path) -> Vec<PathBuf> {
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

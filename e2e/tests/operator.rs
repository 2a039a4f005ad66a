//! The operator on the real cluster (installed by `e2e/ci.sh` with the Helm chart): a
//! StreamJob's whole life, with its committed output compared to an uninterrupted embedded
//! run of the same job.
//!
//! Jobs write checkpoints, savepoints and output to a directory of the node,
//! `/var/lib/sluice-e2e/jobs/<namespace>` (`sluice_e2e::jobs::shared_dir`), which this test
//! reads directly.

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use sluice_crds::{HumanDuration, Phase, StreamJob, UpgradeMode};
use sluice_e2e::jobs::{
    committed, crashing_workers, exactly_the_reference, faster, first_output, job_config,
    output_gap, patch, pod_count, remove, settled, start_q0, stream_job, walk, STEP_TIMEOUT,
};
use sluice_e2e::{e2e_test, wait_for};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "operator/health.rs"]
mod health;
#[path = "operator/kafka.rs"]
mod kafka;
#[path = "operator/malformed.rs"]
mod malformed;
#[path = "operator/network_policies.rs"]
mod network_policies;
#[path = "operator/object_storage.rs"]
mod object_storage;
#[path = "operator/pod_security.rs"]
mod pod_security;
#[path = "operator/rbac.rs"]
mod rbac;
#[path = "operator/secrets.rs"]
mod secrets;

e2e_test!(
    a_stream_job_runs_upgrades_rescales_suspends_and_resumes_exactly_once,
    |ns| {
        let api: Api<StreamJob> = ns.api();
        let (dir, config, running) = start_q0(&ns, &api, "q0", |_| {}).await?;
        let status = running.status.unwrap_or_default();
        let ready = status.condition("Ready").expect("a Ready condition");
        assert_eq!(format!("{:?}", ready.status), "True", "{ready:?}");
        assert_eq!(status.replicas, Some(2));
        first_output(&dir).await?;

        // A config change needs new pods: savepoint, pre-flight, stop, start from the savepoint.
        let before = committed(&dir).len();
        let started = Instant::now();
        patch(&api, "q0", faster(&dir)).await?;
        let upgraded = settled(&api, "q0", Phase::Running).await?;
        let gap = output_gap(&dir, started, Instant::now());
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
            "upgrade: {:.1}s from the spec change to running again; longest pause in committed \
             output {:.1}s; {} lines committed before",
            started.elapsed().as_secs_f64(),
            gap.as_secs_f64(),
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

        let expected = exactly_the_reference(&dir, &config).await?;
        assert!(
            while_suspended < expected,
            "the job ended before it was suspended"
        );
        remove(&dir);
        Ok(())
    }
);

e2e_test!(
    an_upgrade_the_new_spec_cannot_restore_is_refused_and_the_old_job_runs_on,
    |ns| {
        let api: Api<StreamJob> = ns.api();
        let (mut sj, dir) = stream_job(&ns, "q4", "nexmark-q4", json!({})).await?;
        sj.spec.job.config = json!({
            "generator": {"events": 100_000_000u64},
            "output": "discard",
            "sink": {"maxRecordsPerSecond": 5_000},
        });
        api.create(&PostParams::default(), &sj).await?;
        settled(&api, "q4", Phase::Running).await?;

        // q4 averages prices per category, and there are five categories: five of the 128
        // key groups of its last operator get every record, which the status reports.
        let skew = wait_for("the key-group skew in the status", STEP_TIMEOUT, || async {
            let status = api.get("q4").await?.status.unwrap_or_default();
            Ok(status.metrics.and_then(|m| m.key_group_skew))
        })
        .await?;
        assert_eq!(skew.operator, "q4", "{skew:?}");
        assert!(skew.ratio >= 128.0 / 5.0, "{skew:?}");

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
    let (mut sj, dir) = stream_job(&ns, "q5", "nexmark-q5", json!({})).await?;
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
        let (mut sj, _) = stream_job(&ns, "bad", "nexmark-q0", json!({})).await?;
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

e2e_test!(
    an_upgrade_survives_the_operator_being_killed_in_the_middle,
    |ns| {
        let api: Api<StreamJob> = ns.api();
        let (dir, config, _) = start_q0(&ns, &api, "q0", |_| {}).await?;

        patch(&api, "q0", faster(&dir)).await?;
        let step = wait_for("the upgrade to be under way", STEP_TIMEOUT, || async {
            let status = api.get("q0").await?.status.unwrap_or_default();
            Ok(status.operation.map(|o| o.step.name().to_string()))
        })
        .await?;
        // Every replica, without grace: no chance to finish the step or hand over.
        let operators: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(ns.client.clone(), "sluice-system");
        let selector = kube::api::ListParams::default().labels("app.kubernetes.io/name=sluice");
        for pod in operators.list(&selector).await? {
            let name = pod.metadata.name.unwrap_or_default();
            operators
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await?;
        }
        eprintln!("operator killed during step {step}");

        let upgraded = settled(&api, "q0", Phase::Running).await?;
        let target = upgraded.status.unwrap_or_default().target.expect("target");
        assert_eq!(target.spec.job.config, job_config(&dir, 600_000, 2_000));
        exactly_the_reference(&dir, &config).await?;
        remove(&dir);
        Ok(())
    }
);

e2e_test!(
    a_new_spec_whose_pods_crash_is_rolled_back_and_nothing_is_lost,
    |ns| {
        let api: Api<StreamJob> = ns.api();
        let (dir, config, first) = start_q0(&ns, &api, "q0", |_| {}).await?;
        let stable = first.status.unwrap_or_default().target.expect("target");

        // Workers that cannot start: the coordinator (and the pre-flight) are fine.
        let crashing = json!({"worker": {"podTemplate": crashing_workers()}});
        patch(&api, "q0", crashing).await?;
        let rolled_back = wait_for("the rollback", Duration::from_secs(400), || async {
            let sj = api.get("q0").await?;
            let status = sj.status.clone().unwrap_or_default();
            let degraded = status.condition("Degraded").cloned();
            let back = status.phase == Some(Phase::Running)
                && status.operation.is_none()
                && degraded.as_ref().is_some_and(|c| c.reason == "RolledBack");
            Ok(back.then_some(status))
        })
        .await?;
        let target = rolled_back.target.expect("target");
        assert_eq!(target.hash, stable.hash, "back on the stable spec");
        let message = rolled_back.error.map(|e| e.message).unwrap_or_default();
        assert!(
            message.contains("CrashLoopBackOff") || message.contains("exit code"),
            "{message}"
        );
        exactly_the_reference(&dir, &config).await?;
        remove(&dir);
        Ok(())
    }
);

/// Savepoint directories with a manifest under `root`, as the `file://` URIs the status uses.
fn savepoints_on_disk(root: &Path) -> BTreeSet<String> {
    walk(root)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "_manifest.json"))
        .filter_map(|p| Some(format!("file://{}", p.parent()?.display())))
        .collect()
}

e2e_test!(
    periodic_savepoints_past_retention_leave_storage_and_a_last_state_upgrade_is_exact,
    |ns| {
        let api: Api<StreamJob> = ns.api();
        let (dir, config, _) = start_q0(&ns, &api, "q0", |spec| {
            spec.upgrade_mode = UpgradeMode::LastState;
            spec.savepoints.periodic_interval = Some(HumanDuration::new("10s"));
            spec.savepoints.retention.max_count = 2;
        })
        .await?;

        let first = wait_for("a periodic savepoint", STEP_TIMEOUT, || async {
            let status = api.get("q0").await?.status.unwrap_or_default();
            Ok(status.savepoints.first().and_then(|s| s.path.clone()))
        })
        .await?;
        // Storage holds exactly the savepoints the status lists, once the first is retired
        // and the Job deleting retired savepoints has finished.
        let root = dir.join(format!("state/savepoints/{}/q0", ns.name));
        let kept = wait_for(
            "the oldest savepoints to leave storage",
            STEP_TIMEOUT,
            || async {
                let status = api.get("q0").await?.status.unwrap_or_default();
                let listed: BTreeSet<String> = status
                    .savepoints
                    .iter()
                    .filter_map(|s| s.path.clone())
                    .collect();
                let done = !listed.contains(&first)
                    && status.retired_savepoints.is_empty()
                    && savepoints_on_disk(&root) == listed;
                Ok(done.then_some(listed))
            },
        )
        .await?;
        assert_eq!(kept.len(), 2, "{kept:?}");
        let first_dir = PathBuf::from(first.trim_start_matches("file://"));
        assert!(
            !first_dir.exists(),
            "{} is still there",
            first_dir.display()
        );

        // last-state: cancel, then start from the newest checkpoint of the cancelled run.
        patch(&api, "q0", faster(&dir)).await?;
        let upgraded = settled(&api, "q0", Phase::Running).await?;
        let from = upgraded
            .status
            .unwrap_or_default()
            .target
            .and_then(|t| t.restore_from)
            .expect("a restore source");
        let runs = format!("file://{}/state/{}/q0/run-", dir.display(), ns.name);
        assert!(
            from.starts_with(&runs) && !from.contains("/chk-"),
            "restores from the cancelled run's checkpoint storage, not {from}"
        );
        exactly_the_reference(&dir, &config).await?;
        remove(&dir);
        Ok(())
    }
);

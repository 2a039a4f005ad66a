//! A pod template the namespace's `restricted` Pod Security Standard forbids (here a hostPath
//! volume, the usual way to share a directory on one node): the API server refuses the pods,
//! so no pod exists to report it, and the operator must say why from its children's
//! `FailedCreate` events. Every other test passing shows that the operator's own pods meet
//! the standard; these show what a user sees when theirs do not.

use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use sluice_crds::{Phase, StreamJob};
use sluice_e2e::jobs::{patch, remove, settled, start_q0, stream_job, STEP_TIMEOUT};
use sluice_e2e::{e2e_test, wait_for};

/// What the API server says of a pod with [`host_path`]'s volume.
const FORBIDDEN: &str = "is forbidden: violates PodSecurity \"restricted:latest\": restricted \
     volume types (volume \"scratch\" uses restricted volume type \"hostPath\")";

/// A pod template overlay adding a hostPath volume.
fn host_path() -> Value {
    json!({"spec": {
        "volumes": [{"name": "scratch", "hostPath": {"path": "/var/tmp"}}],
        "containers": [{"name": "sluice", "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
    }})
}

e2e_test!(
    workers_the_namespace_refuses_fail_the_job_with_the_api_server_s_reason,
    |ns| {
        let api: Api<StreamJob> = ns.api();
        let (mut sj, dir) = stream_job(&ns, "q0", "nexmark-q0", json!({})).await?;
        sj.spec.worker.pod_template = Some(host_path());
        // No restart: a refused pod is refused again until the spec or the namespace changes.
        sj.spec.restart_policy.max_restarts = Some(0);
        api.create(&PostParams::default(), &sj).await?;

        let failed = settled(&api, "q0", Phase::Failed).await?;
        let status = failed.status.unwrap_or_default();
        let failure = status
            .restarts
            .and_then(|r| r.last_failure)
            .expect("the failure");
        assert_eq!(failure.reason, "PodFailing");
        assert_eq!(failure.pod.as_deref(), Some("q0-worker"));
        assert!(
            failure
                .message
                .starts_with("StatefulSet q0-worker cannot create its pods: ")
                && failure.message.contains(FORBIDDEN),
            "{}",
            failure.message
        );
        let events: Api<Event> = ns.api();
        let exhausted = events
            .list(&ListParams::default().fields("reason=RestartsExhausted"))
            .await?
            .items;
        assert!(
            exhausted.iter().any(|e| {
                e.involved_object.name.as_deref() == Some("q0")
                    && e.message.as_deref().is_some_and(|m| m.contains(FORBIDDEN))
            }),
            "{exhausted:?}"
        );
        remove(&dir);
        Ok(())
    }
);

e2e_test!(
    an_upgrade_whose_pods_the_namespace_refuses_is_refused_and_the_job_runs_on,
    |ns| {
        let api: Api<StreamJob> = ns.api();
        let (dir, _, running) = start_q0(&ns, &api, "q0", |_| {}).await?;
        let run = running.status.and_then(|s| s.target).and_then(|t| t.run);

        patch(&api, "q0", json!({"podTemplate": host_path()})).await?;
        let refused = wait_for("the upgrade to be refused", STEP_TIMEOUT, || async {
            let status = api.get("q0").await?.status.unwrap_or_default();
            let degraded = status
                .condition("Degraded")
                .filter(|c| c.reason == "UpgradeRefused")
                .map(|c| c.message.clone());
            Ok(degraded)
        })
        .await?;
        assert!(
            refused.contains("the pre-flight's pod cannot be created: ")
                && refused.contains(FORBIDDEN)
                && refused.ends_with("; the job keeps running its current spec"),
            "{refused}"
        );
        // The same run goes on: nothing was stopped.
        let after = settled(&api, "q0", Phase::Running).await?;
        assert_eq!(after.status.and_then(|s| s.target).and_then(|t| t.run), run);
        remove(&dir);
        Ok(())
    }
);

//! The cluster itself works as the operator will need it: our image runs in a pod, a
//! Service is reachable by its DNS name from another pod, and a killed pod comes back.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use sluice_e2e::{
    e2e_test, restricted_container, restricted_pod, run_pod, wait_for, Result, TestNamespace,
    ECHO_IMAGE, SLUICE_IMAGE,
};
use std::time::Duration;

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

/// Runs a pod to completion and returns its logs; fails unless it succeeded.
async fn run_to_completion(
    ns: &TestNamespace,
    name: &str,
    image: &str,
    args: &[&str],
) -> Result<String> {
    let (succeeded, logs) = run_pod(&ns.api(), name, image, args).await?;
    assert!(succeeded, "pod {name} failed; logs:\n{logs}");
    Ok(logs)
}

e2e_test!(our_image_runs_sluice_version_in_a_pod, |ns| {
    let logs = run_to_completion(&ns, "version", SLUICE_IMAGE, &["--version"]).await?;
    assert_eq!(logs.trim(), format!("sluice {}", env!("CARGO_PKG_VERSION")));
    Ok(())
});

async fn deploy_echo(ns: &TestNamespace) -> Result<()> {
    let deployment: Deployment = from_json(serde_json::json!({
        "metadata": {"name": "echo"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "echo"}},
            "template": {
                "metadata": {"labels": {"app": "echo"}},
                "spec": {"securityContext": restricted_pod(), "containers": [{
                    "name": "echo", "image": ECHO_IMAGE, "imagePullPolicy": "Never",
                    "args": ["serve", "8080"], "securityContext": restricted_container(),
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
                }]}
            }
        }
    }));
    let service: Service = from_json(serde_json::json!({
        "metadata": {"name": "echo"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }));
    ns.api::<Deployment>()
        .create(&PostParams::default(), &deployment)
        .await?;
    ns.api::<Service>()
        .create(&PostParams::default(), &service)
        .await?;
    wait_for_ready_echo(ns, None).await.map(|_| ())
}

/// Waits for a ready echo pod other than `not`; returns its uid.
async fn wait_for_ready_echo(ns: &TestNamespace, not: Option<&str>) -> Result<String> {
    let pods: Api<Pod> = ns.api();
    wait_for("a ready echo pod", Duration::from_secs(120), || {
        let pods = pods.clone();
        async move {
            for p in pods.list(&ListParams::default().labels("app=echo")).await? {
                let uid = p.uid().unwrap_or_default();
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if ready && Some(uid.as_str()) != not && p.metadata.deletion_timestamp.is_none() {
                    return Ok(Some(uid));
                }
            }
            Ok(None)
        }
    })
    .await
}

e2e_test!(
    a_service_is_reachable_by_its_dns_name_from_another_pod,
    |ns| {
        deploy_echo(&ns).await?;
        let address = format!("echo.{}.svc.cluster.local:80", ns.name);
        let logs = run_to_completion(&ns, "client", ECHO_IMAGE, &["get", &address]).await?;
        assert!(
            logs.starts_with("echo from echo-"),
            "unexpected answer: {logs}"
        );
        Ok(())
    }
);

e2e_test!(a_killed_pod_is_recreated, |ns| {
    deploy_echo(&ns).await?;
    let pods: Api<Pod> = ns.api();
    let first = pods.list(&ListParams::default().labels("app=echo")).await?;
    let victim = first.items.first().expect("one echo pod");
    let (name, uid) = (victim.name_any(), victim.uid().unwrap_or_default());
    pods.delete(
        &name,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await?;
    let replacement = wait_for_ready_echo(&ns, Some(&uid)).await?;
    assert_ne!(replacement, uid);
    Ok(())
});

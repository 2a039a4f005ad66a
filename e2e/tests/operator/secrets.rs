//! Secrets stay secret: a value planted in every Secret a job uses (its control token, the
//! Secret it gets as environment variables, its snapshot key) appears in nothing the system
//! emits while the job starts, is upgraded and loses a worker: not in the StreamJob, the
//! Events, the ConfigMaps or the pods' specs, not in any pod's log (the operator's too), and
//! not in the control API's or the operator's answers and metrics, nor in what Prometheus
//! scrapes through the chart's job PodMonitor (which must reach the job's series without
//! a token).
//!
//! A module of the operator tests (see kafka.rs for why).

use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use sluice_crds::{Phase, SecretKeySelector, SecretReference, SnapshotEncryption, StreamJob};
use sluice_e2e::jobs::{committed, faster, first_output, patch, remove, settled, start_q0};
use sluice_e2e::{e2e_test, http_get, https_get, wait_for, E2eError, Result, TestNamespace};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const JOB: &str = "q0-secrets";

/// Where the chart runs the operator, as `e2e/ci.sh` installs it.
const OPERATOR_NAMESPACE: &str = "sluice-system";

/// Every log line of every container of the pods in `namespace` matching `labels`,
/// previous runs of restarted containers included.
async fn logs(pods: &Api<Pod>, labels: &str) -> Result<Vec<(String, String)>> {
    let mut texts = Vec::new();
    for pod in pods
        .list(&ListParams::default().labels(labels))
        .await?
        .items
    {
        let name = pod.name_any();
        let spec = pod.spec.unwrap_or_default();
        for container in spec.containers {
            for previous in [false, true] {
                let params = LogParams {
                    container: Some(container.name.clone()),
                    previous,
                    ..LogParams::default()
                };
                // A container that never restarted has no previous log.
                if let Ok(text) = pods.logs(&name, &params).await {
                    texts.push((format!("log of {name}/{}", container.name), text));
                }
            }
        }
    }
    Ok(texts)
}

/// What Prometheus would read through the chart's job PodMonitor: the job pods its selector
/// matches (the coordinator alone), scraped on the port its endpoint names, without a token.
fn scrape_as_pod_monitor(job_pods: &[Pod]) -> Result<String> {
    let config = |what: String| E2eError::Config(what);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = |command: &mut Command| -> Result<String> {
        let out = command
            .output()
            .map_err(|e| config(format!("{command:?}: {e}")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(config(format!("{command:?}: {err}")));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // Cached by e2e/ci.sh's install of the chart: this only prints its path.
    let helm = run(Command::new("bash").arg(root.join("e2e/cluster/helm.sh")))?;
    let helm = helm.lines().last().unwrap_or_default().to_string();
    let rendered = run(Command::new(helm).args([
        "template",
        "sluice",
        &root.join("charts/sluice").display().to_string(),
        "--set",
        "jobPodMonitor.enabled=true",
        "--show-only",
        "templates/jobpodmonitor.yaml",
    ]))?;
    let monitor: serde_json::Value =
        serde_yaml::from_str(&rendered).map_err(|e| config(format!("PodMonitor: {e}")))?;
    let spec = &monitor["spec"];
    let selector: BTreeMap<String, String> =
        serde_json::from_value(spec["selector"]["matchLabels"].clone())
            .map_err(|e| config(format!("PodMonitor selector: {e}")))?;
    let endpoint = &spec["podMetricsEndpoints"][0];
    let (port_name, path) = (endpoint["port"].as_str(), endpoint["path"].as_str());
    let selected: Vec<&Pod> = job_pods
        .iter()
        .filter(|p| selector.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
        .collect();
    let [pod] = selected[..] else {
        return Err(config(format!(
            "the PodMonitor's selector {selector:?} matches {} pods, not the coordinator alone",
            selected.len()
        )));
    };
    let port = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == port_name)
        .ok_or_else(|| {
            config(format!(
                "{} has no port named {port_name:?}",
                pod.name_any()
            ))
        })?;
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .ok_or_else(|| config(format!("{} has no IP", pod.name_any())))?;
    let port = u16::try_from(port.container_port)
        .map_err(|e| config(format!("port {}: {e}", port.container_port)))?;
    http_get(&ip, port, path.unwrap_or("/metrics"), "")
}

/// Everything the system shows of the job, by where it was found.
async fn emitted(ns: &TestNamespace, token: &str) -> Result<Vec<(String, String)>> {
    let to_text = |what: &str, value: serde_json::Result<String>| {
        value.map_err(|e| E2eError::Config(format!("{what}: {e}")))
    };
    let mut found = Vec::new();
    let sj = ns.api::<StreamJob>().get(JOB).await?;
    found.push((
        "the StreamJob".into(),
        to_text("sj", serde_json::to_string(&sj))?,
    ));
    let events = ns.api::<Event>().list(&ListParams::default()).await?.items;
    found.push((
        "Events".into(),
        to_text("events", serde_json::to_string(&events))?,
    ));
    let maps = ns
        .api::<ConfigMap>()
        .list(&ListParams::default())
        .await?
        .items;
    found.push((
        "ConfigMaps".into(),
        to_text("maps", serde_json::to_string(&maps))?,
    ));
    let pods: Api<Pod> = ns.api();
    let job_pods = pods.list(&ListParams::default()).await?.items;
    found.push((
        "pod specs".into(),
        to_text("pods", serde_json::to_string(&job_pods))?,
    ));
    found.extend(logs(&pods, &format!("sluice.dev/job={JOB}")).await?);

    let operators: Api<Pod> = Api::namespaced(ns.client.clone(), OPERATOR_NAMESPACE);
    let operator_pods = "app.kubernetes.io/name=sluice";
    found.extend(logs(&operators, operator_pods).await?);
    let listed = operators
        .list(&ListParams::default().labels(operator_pods))
        .await?;
    for operator in listed.items {
        if let Some(ip) = operator.status.and_then(|s| s.pod_ip) {
            found.push((
                format!("metrics of {}", operator.metadata.name.unwrap_or_default()),
                http_get(&ip, 8080, "/metrics", "")?,
            ));
        }
    }

    let coordinator = job_pods
        .iter()
        .filter(|p| p.labels().get("sluice.dev/role").map(String::as_str) == Some("coordinator"))
        .find_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()))
        .ok_or_else(|| E2eError::Config("no coordinator pod with an IP".into()))?;
    let control = sluice_operator::build::CONTROL_PORT;
    let ca = job_ca(ns).await?;
    for path in ["/v1/job", "/metrics", "/v1/savepoints/no-such-id"] {
        found.push((
            format!("control API {path}"),
            https_get(&coordinator, control, path, token, &ca)?,
        ));
    }
    // Plain HTTP, which would carry the token in the clear, gets no answer.
    found.push((
        "control API over plain HTTP".into(),
        http_get(&coordinator, control, "/v1/job", token).unwrap_or_default(),
    ));
    found.push((
        "the chart's job PodMonitor".into(),
        scrape_as_pod_monitor(&job_pods)?,
    ));
    // A refused call: the error must not echo what it was given.
    found.push((
        "control API refusing a wrong token".into(),
        https_get(&coordinator, control, "/v1/job", &format!("{token}x"), &ca)?,
    ));
    Ok(found)
}

/// The CA of the job's certificates, from the Secret the operator issued them into.
async fn job_ca(ns: &TestNamespace) -> Result<Vec<u8>> {
    let name = sluice_crds::tls::secret_name(JOB);
    ns.api::<Secret>()
        .get(&name)
        .await?
        .data
        .and_then(|mut d| d.remove(sluice_crds::tls::CA_FILE))
        .map(|b| b.0)
        .ok_or_else(|| E2eError::Config(format!("Secret {name} has no CA")))
}

e2e_test!(
    no_value_of_a_jobs_secrets_appears_in_anything_the_system_shows,
    |ns| {
        // Unique values, so that a match can only be a leak.
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let token = format!("planted-token-{nonce}");
        let env_value = format!("planted-env-{nonce}");
        // A snapshot key is 32 bytes in base64: 43 characters (the last with its two low
        // bits clear, as 'A' has) and a pad.
        let key = format!("{:0>42}A=", format!("plantedkey{nonce}"));
        let secrets = [
            ("q0-api", json!({"token": token})),
            ("q0-env", json!({"SLUICE_PLANTED": env_value})),
            ("q0-key", json!({"snapshot-key": key})),
        ];
        for (name, data) in &secrets {
            let secret: Secret =
                serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                    .map_err(|e| E2eError::Config(e.to_string()))?;
            ns.api::<Secret>()
                .create(&PostParams::default(), &secret)
                .await?;
        }

        let api: Api<StreamJob> = ns.api();
        let (dir, _, _) = start_q0(&ns, &api, JOB, |spec| {
            spec.secrets.token = Some(SecretKeySelector {
                name: "q0-api".into(),
                key: "token".into(),
            });
            spec.secrets.env = vec![SecretReference {
                name: "q0-env".into(),
            }];
            spec.checkpointing.encryption = Some(SnapshotEncryption {
                key_id: "e2e-secrets".into(),
                secret: SecretKeySelector {
                    name: "q0-key".into(),
                    key: "snapshot-key".into(),
                },
            });
        })
        .await?;
        first_output(&dir).await?;

        // An upgrade: a savepoint, a pre-flight Job, new pods.
        patch(&api, JOB, faster(&dir)).await?;
        settled(&api, JOB, Phase::Running).await?;

        // A failure: a worker lost at once; the job goes on from its latest checkpoint.
        let pods: Api<Pod> = ns.api();
        let worker = format!("{JOB}-worker-0");
        let lost = pods.get(&worker).await?.uid();
        pods.delete(&worker, &DeleteParams::default().grace_period(0))
            .await?;
        let before = committed(&dir).len();
        wait_for(
            "a new worker and output after the loss",
            Duration::from_secs(240),
            || async {
                let replaced = pods
                    .get_opt(&worker)
                    .await?
                    .is_some_and(|p| p.uid() != lost);
                Ok((replaced && committed(&dir).len() > before).then_some(()))
            },
        )
        .await?;
        settled(&api, JOB, Phase::Running).await?;

        // The status summarises what the job does: its throughput (from two readings of the
        // coordinator ten seconds or more apart) and how far its results are complete.
        let metrics = wait_for(
            "status.metrics with a throughput",
            Duration::from_secs(120),
            || async {
                let status = api.get(JOB).await?.status.unwrap_or_default();
                Ok(status
                    .metrics
                    .filter(|m| m.records_per_second.is_some_and(|r| r > 0)))
            },
        )
        .await?;
        assert!(metrics.source_records > 0, "{metrics:?}");
        assert!(
            metrics.watermark.is_some() && metrics.event_time_lag_seconds.is_some(),
            "{metrics:?}"
        );

        let everything = emitted(&ns, &token).await?;
        // What was gathered is what the checks below need to mean something: the planted
        // token is the one the control API takes, and metrics were read.
        let answer = |place: &str| {
            everything
                .iter()
                .find(|(p, _)| p == place)
                .map(|(_, text)| text.lines().next().unwrap_or_default().to_string())
        };
        assert!(
            answer("control API /v1/job").is_some_and(|l| l.contains(" 200 ")),
            "{:?}",
            answer("control API /v1/job")
        );
        assert!(
            answer("control API over plain HTTP").is_some_and(|l| !l.starts_with("HTTP/")),
            "{:?}",
            answer("control API over plain HTTP")
        );
        assert!(
            answer("control API refusing a wrong token").is_some_and(|l| l.contains(" 401 ")),
            "{:?}",
            answer("control API refusing a wrong token")
        );
        assert!(
            everything.iter().any(|(_, text)| text.contains("sluice_")),
            "nothing gathered looks like metrics"
        );
        // Prometheus, through the chart's PodMonitor, reads the job's series with no token.
        let scraped = everything
            .iter()
            .find(|(p, _)| p == "the chart's job PodMonitor")
            .map(|(_, text)| text.as_str())
            .unwrap_or_default();
        assert!(
            scraped.lines().next().is_some_and(|l| l.contains(" 200 "))
                && scraped.contains("\nsluice_subtask_records_in_total{job=\""),
            "{scraped}"
        );
        for planted in [&token, &env_value, &key] {
            for (place, text) in &everything {
                assert!(
                    !text.contains(planted.as_str()),
                    "a planted Secret value appears in {place}"
                );
            }
        }
        remove(&dir);
        Ok(())
    }
);

//! A job that cannot keep up says so: a deliberately slow sink is named as the bottleneck
//! in the coordinator's metrics and in the status within a minute of the job running, its
//! page and status are reachable through `kubectl port-forward` without a token, the job
//! turns `Degraded` with `LagGrowing` and a Warning Event; with the throttle removed the
//! condition clears and a `Recovered` Event follows. The operator's own metrics follow the
//! job's life: its phase gauge, the reconciles, the upgrade, and no series once it is gone.
//! A job whose state grows without bound turns `Degraded` with `StateGrowing` while its
//! state is a small part of its workers' memory limit.
//!
//! A module of the operator tests (see kafka.rs for why).

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use serde_json::json;
use sluice_crds::control::Partitioning;
use sluice_crds::{Condition, ConditionStatus, HealthReason, JobMetrics, Phase, StreamJob};
use sluice_e2e::jobs::{patch, settled, stream_job, STEP_TIMEOUT};
use sluice_e2e::{e2e_test, http_get, wait_for, E2eError, PortForward, Result, TestNamespace};
use std::time::{Duration, Instant};

const JOB: &str = "slow-sink";
/// The sink's stage: its own operator group, fed through a rebalance by the sources.
const SINK_GROUP: &str = "to-sink";
const SOURCE_GROUP: &str = "nexmark";

/// The sum of the samples in `metrics` of the series that start with `series` (a name with
/// the start of its labels) and carry `label` (empty for any).
fn sample_sum(metrics: &str, series: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(series) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

async fn coordinator_metrics(ns: &TestNamespace) -> Result<String> {
    let pods: Api<Pod> = ns.api();
    let listed = pods
        .list(
            &ListParams::default()
                .labels(&format!("sluice.dev/job={JOB},sluice.dev/role=coordinator")),
        )
        .await?;
    let ip = listed
        .items
        .iter()
        .find_map(|p| p.status.as_ref()?.pod_ip.clone())
        .ok_or_else(|| E2eError::Config("the coordinator has no IP".into()))?;
    http_get(&ip, sluice_operator::build::METRICS_PORT, "/metrics", "")
}

/// Seconds the job's sources have spent backpressured and its sink busy, at an uptime.
struct Shares {
    uptime: f64,
    sources_waiting: f64,
    sink_busy: f64,
}

impl Shares {
    async fn read(ns: &TestNamespace) -> Result<Shares> {
        let metrics = coordinator_metrics(ns).await?;
        let source = format!("operator=\"{SOURCE_GROUP}\"");
        let sink = format!("operator=\"{SINK_GROUP}\"");
        Ok(Shares {
            uptime: sample_sum(&metrics, "sluice_job_uptime_seconds{", ""),
            sources_waiting: sample_sum(
                &metrics,
                "sluice_subtask_backpressured_seconds_total{",
                &source,
            ),
            sink_busy: sample_sum(&metrics, "sluice_subtask_busy_seconds_total{", &sink),
        })
    }
}

/// Every operator replica's metrics (one leads; the others report no jobs).
async fn operator_metrics(ns: &TestNamespace) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), "sluice-system");
    let mut all = String::new();
    for pod in pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=sluice"))
        .await?
        .items
    {
        if let Some(ip) = pod.status.and_then(|s| s.pod_ip) {
            all.push_str(&http_get(&ip, 8080, "/metrics", "")?);
        }
    }
    Ok(all)
}

/// Waits for `Degraded=True` with `reason` on job `name`; returns the condition and the
/// metrics its status carried then.
async fn degraded_with(
    api: &Api<StreamJob>,
    name: &str,
    reason: HealthReason,
    timeout: Duration,
) -> Result<(Condition, Option<JobMetrics>)> {
    let what = format!("Degraded with {}", reason.as_str());
    wait_for(&what, timeout, || async {
        let status = api.get(name).await?.status.unwrap_or_default();
        Ok(status
            .condition("Degraded")
            .filter(|c| c.status == ConditionStatus::True && c.reason == reason.as_str())
            .cloned()
            .map(|c| (c, status.metrics)))
    })
    .await
}

async fn event_reasons(ns: &TestNamespace) -> Result<Vec<(String, String, String)>> {
    Ok(ns
        .api::<Event>()
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect())
}

e2e_test!(
    a_slow_sink_is_named_and_degrades_the_job_until_it_is_fixed,
    |ns| {
        let api: Api<StreamJob> = ns.api();
        // 10,000 events per second of event time, and a sink that takes 2,000 a second: event
        // time falls behind the clock by 0.8 s every second.
        let config = json!({
            "generator": {"events": 30_000_000u64, "eventsPerSecond": 10_000},
            "output": "discard",
            "sink": {"parallelism": 1, "maxRecordsPerSecond": 2_000},
        });
        let reconciles = "sluice_operator_reconciles_total{result=\"ok\"}";
        let upgrades = "sluice_operator_operation_seconds_count{operation=\"Upgrade\"}";
        let before = operator_metrics(&ns).await?;
        let (sj, _dir) = stream_job(&ns, JOB, "nexmark-q0", config.clone()).await?;
        api.create(&PostParams::default(), &sj).await?;
        settled(&api, JOB, Phase::Running).await?;
        let running = Instant::now();

        // The operator's metrics follow the job's life: its phase, and more reconciles.
        let job_phase = |phase: &str| {
            format!(
                "sluice_operator_job_phase{{namespace=\"{}\",name=\"{JOB}\",phase=\"{phase}\"}} 1",
                ns.name
            )
        };
        let after_start = operator_metrics(&ns).await?;
        assert!(
            after_start.contains(&job_phase("Running")),
            "{}\nnot in\n{after_start}",
            job_phase("Running")
        );
        assert!(sample_sum(&after_start, reconciles, "") > sample_sum(&before, reconciles, ""));

        // The status names the sink's stage within a minute.
        let named = wait_for(
            "the status to name the slow sink",
            Duration::from_secs(60),
            || async {
                let status = api.get(JOB).await?.status.unwrap_or_default();
                Ok(status.metrics.filter(|m: &JobMetrics| {
                    m.bottleneck
                        .as_ref()
                        .is_some_and(|b| b.operator == SINK_GROUP)
                }))
            },
        )
        .await?;
        eprintln!(
            "slow sink named {:.0}s after the job ran: {:?}, waiting on it {:?}",
            running.elapsed().as_secs_f64(),
            named.bottleneck,
            named.most_backpressured
        );
        let waiting = named
            .most_backpressured
            .expect("a group waiting on the sink");
        assert_eq!(waiting.operator, SOURCE_GROUP);

        // So do the coordinator's metrics: over ten seconds, the sources spend most of their
        // time waiting and the sink most of its time working.
        let first = Shares::read(&ns).await?;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let second = Shares::read(&ns).await?;
        let elapsed = second.uptime - first.uptime;
        let sources_waiting = (second.sources_waiting - first.sources_waiting) / (2.0 * elapsed);
        let sink_busy = (second.sink_busy - first.sink_busy) / elapsed;
        assert!(
            sources_waiting > 0.5 && sink_busy > 0.5,
            "over {elapsed:.1}s, sources backpressured {sources_waiting:.2} and the sink busy \
         {sink_busy:.2} of the time"
        );

        // The job page and the status it reads, through `kubectl port-forward` to the
        // coordinator's Service as a user opens them: no token, the graph's groups and edge.
        let forward = PortForward::start(
            &ns.name,
            &format!("svc/{JOB}-coordinator"),
            sluice_operator::build::METRICS_PORT,
        )?;
        let page = http_get("127.0.0.1", forward.local_port, "/", "")?;
        assert!(
            page.lines().next().is_some_and(|l| l.ends_with(" 200 OK"))
                && page.contains("<title>Sluice job</title>"),
            "{page}"
        );
        let answer = http_get("127.0.0.1", forward.local_port, "/v1/job", "")?;
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let job: sluice_crds::control::JobStatus =
            serde_json::from_str(body).map_err(|e| E2eError::Config(format!("{e}: {answer}")))?;
        let groups: Vec<&str> = job
            .topology
            .groups
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        assert_eq!(groups, [SOURCE_GROUP, SINK_GROUP]);
        let edges: Vec<(&str, &str, Partitioning)> = job
            .topology
            .edges
            .iter()
            .map(|e| (e.from.as_str(), e.to.as_str(), e.partitioning))
            .collect();
        assert_eq!(edges, [(SOURCE_GROUP, SINK_GROUP, Partitioning::Rebalance)]);
        drop(forward);

        // Lag keeps growing: Degraded, with the reason and the bottleneck in its message.
        let (degraded, _) = degraded_with(
            &api,
            JOB,
            HealthReason::LagGrowing,
            Duration::from_secs(120),
        )
        .await?;
        assert!(
            degraded
                .message
                .contains(&format!("operator group {SINK_GROUP} is busy")),
            "{}",
            degraded.message
        );
        assert_eq!(
            api.get(JOB)
                .await?
                .status
                .unwrap_or_default()
                .condition("Ready")
                .map(|c| c.status),
            Some(ConditionStatus::True),
            "a slow job still runs its spec"
        );
        // The Event is published after the status is written: wait for it.
        wait_for("the LagGrowing event", STEP_TIMEOUT, || async {
            let events = event_reasons(&ns).await?;
            Ok(events
                .into_iter()
                .find(|(kind, reason, _)| kind == "Warning" && reason == "LagGrowing"))
        })
        .await?;

        // Without the throttle the job keeps up: the condition clears once the new run starts,
        // and stays clear while it runs (or once it has read all its input).
        patch(
            &api,
            JOB,
            json!({"job": {"config": {"sink": {"maxRecordsPerSecond": null}}}}),
        )
        .await?;
        let cleared = wait_for("Degraded to clear", STEP_TIMEOUT, || async {
            let sj = api.get(JOB).await?;
            let status = sj.status.clone().unwrap_or_default();
            let current = status.observed_generation == sj.metadata.generation
                && status.operation.is_none()
                && matches!(status.phase, Some(Phase::Running | Phase::Finished));
            let degraded = status.condition("Degraded").cloned();
            Ok(degraded.filter(|c| current && c.status == ConditionStatus::False))
        })
        .await?;
        assert_eq!(cleared.reason, "Healthy");
        wait_for("the Recovered event", STEP_TIMEOUT, || async {
            let events = event_reasons(&ns).await?;
            Ok(events.into_iter().find(|(kind, reason, message)| {
                kind == "Normal" && reason == "Recovered" && message.starts_with("LagGrowing")
            }))
        })
        .await?;
        let upgrades_before = sample_sum(&before, upgrades, "");
        wait_for("the upgrade counted", Duration::from_secs(30), || async {
            let now = sample_sum(&operator_metrics(&ns).await?, upgrades, "");
            Ok((now > upgrades_before).then_some(()))
        })
        .await?;

        // An unthrottled job burns CPU the other tests need. Once it is gone, so is its series.
        api.delete(JOB, &DeleteParams::default()).await?;
        let series = format!("namespace=\"{}\",name=\"{JOB}\"", ns.name);
        wait_for("the job's phase series to go", STEP_TIMEOUT, || async {
            Ok((!operator_metrics(&ns).await?.contains(&series)).then_some(()))
        })
        .await?;
        Ok(())
    }
);

e2e_test!(
    state_that_grows_without_bound_degrades_the_job_before_its_memory_limit,
    |ns| {
        const GROWING: &str = "q8-growing";
        const LIMIT_MIB: u64 = 192;
        let api: Api<StreamJob> = ns.api();
        // q8 keeps the persons and auctions of a window until it closes; a 10-hour window
        // and a live pace of 200,000 events a second (event time keeping pace with the
        // clock) make its state grow by about 200 KiB a second for hours: on course for
        // the two workers' 384 MiB within the hour, while the test needs a minute or two.
        let config = json!({
            "generator": {
                "events": 10_000_000_000u64,
                "eventsPerSecond": 200_000,
                "maxEventsPerSecond": 200_000,
            },
            "windows": {"tumblingMs": 36_000_000},
            "output": "discard",
        });
        let (mut sj, _dir) = stream_job(&ns, GROWING, "nexmark-q8", config).await?;
        sj.spec.worker.resources = serde_json::from_value(json!({
            "limits": {"memory": format!("{LIMIT_MIB}Mi")},
        }))
        .map_err(|e| E2eError::Config(e.to_string()))?;
        api.create(&PostParams::default(), &sj).await?;
        settled(&api, GROWING, Phase::Running).await?;
        let running = Instant::now();

        let (condition, metrics) = degraded_with(
            &api,
            GROWING,
            HealthReason::StateGrowing,
            Duration::from_secs(180),
        )
        .await?;
        eprintln!(
            "StateGrowing {:?} after the job ran: {}",
            running.elapsed(),
            condition.message
        );
        assert!(
            condition
                .message
                .contains("reaches the workers' memory limit of 384.0 MiB in"),
            "{}",
            condition.message
        );
        // Said in time: the state is a fraction of the limit and no worker was killed.
        let state = metrics.and_then(|m| m.state_bytes).unwrap_or(u64::MAX);
        assert!(
            state < 2 * LIMIT_MIB * 1024 * 1024 / 4,
            "state of {state} bytes when the job was found degraded"
        );
        let pods: Api<Pod> = ns.api();
        let workers = pods
            .list(
                &ListParams::default()
                    .labels(&format!("sluice.dev/job={GROWING},sluice.dev/role=worker")),
            )
            .await?;
        assert_eq!(workers.items.len(), 2);
        for pod in &workers.items {
            let restarts: i32 = pod
                .status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .map(|c| c.restart_count)
                .sum();
            assert_eq!(restarts, 0, "worker {:?} restarted", pod.metadata.name);
        }
        wait_for("the StateGrowing event", STEP_TIMEOUT, || async {
            let events = event_reasons(&ns).await?;
            Ok(events
                .into_iter()
                .find(|(kind, reason, _)| kind == "Warning" && reason == "StateGrowing"))
        })
        .await?;
        api.delete(GROWING, &DeleteParams::default()).await?;
        Ok(())
    }
);

//! The operator's governance on the real cluster: restarts with backoff after a job fails for
//! good (surviving the operator's own restart), workers that outlive their coordinator, and
//! StreamQuota admission and preemption by priority — each with the committed output of the
//! job compared to an uninterrupted embedded run.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use sluice_crds::{
    ConditionStatus, HumanDuration, Phase, SavepointTrigger, StreamJob, StreamJobStatus,
    StreamQuota,
};
use sluice_e2e::jobs::{
    crashing_workers, exactly_the_reference, first_output, patch, pods_of, remove, settled,
    start_q0, stream_job, STEP_TIMEOUT,
};
use sluice_e2e::{e2e_test, wait_for, E2eError, Result, TestNamespace};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

/// Held by the tests whose jobs restart: they share the operator-wide restart rate limit,
/// and one test's restarts must not hold back the other's measured waits.
static RESTART_BUDGET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn time(text: Option<&str>) -> Result<SystemTime> {
    text.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(SystemTime::from)
        .ok_or_else(|| E2eError::Config(format!("not a time: {text:?}")))
}

async fn status(api: &Api<StreamJob>, name: &str) -> Result<StreamJobStatus> {
    Ok(api.get(name).await?.status.unwrap_or_default())
}

/// Kills every replica of the operator without grace: nothing can be finished or handed over.
async fn kill_the_operator(ns: &TestNamespace) -> Result<()> {
    let operators: Api<Pod> = Api::namespaced(ns.client.clone(), "sluice-system");
    let selector = ListParams::default().labels("app.kubernetes.io/name=sluice");
    for pod in operators.list(&selector).await? {
        operators
            .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
            .await?;
    }
    Ok(())
}

/// The pods of a job's role that are not going away, by name: their uid and their
/// containers' restart count.
async fn pods(
    ns: &TestNamespace,
    job: &str,
    role: &str,
) -> Result<BTreeMap<String, (String, i32)>> {
    let api: Api<Pod> = ns.api();
    Ok(api
        .list(&pods_of(job))
        .await?
        .items
        .iter()
        .filter(|p| p.labels().get("sluice.dev/role").map(String::as_str) == Some(role))
        // A pod on its way out is no longer the job's.
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let restarts = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
            (p.name_any(), (p.uid().unwrap_or_default(), restarts))
        })
        .collect())
}

fn condition(status: &StreamJobStatus, type_: &str) -> Option<(ConditionStatus, String, String)> {
    status
        .condition(type_)
        .map(|c| (c.status, c.reason.clone(), c.message.clone()))
}

e2e_test!(
    a_job_whose_workers_always_crash_backs_off_fails_for_good_and_a_fix_resumes_it_exactly_once,
    |ns| {
        let _budget = RESTART_BUDGET.lock().await;
        let api: Api<StreamJob> = ns.api();
        let (initial, multiplier, jitter, max_restarts) = (15.0, 2.0, 0.1, 2);
        let (dir, config, _) = start_q0(&ns, &api, "q0", |spec| {
            // A rollback would hide the restarts this test is about.
            spec.rollback.enabled = false;
            let policy = &mut spec.restart_policy;
            policy.backoff.initial = HumanDuration::new("15s");
            policy.backoff.multiplier = multiplier;
            policy.backoff.max = HumanDuration::new("60s");
            policy.backoff.jitter = jitter;
            policy.max_restarts = Some(max_restarts);
        })
        .await?;
        first_output(&dir).await?;

        // A new spec whose workers cannot start: upgraded with a savepoint, then crashing.
        let crashing = json!({"worker": {"podTemplate": crashing_workers()}});
        patch(&api, "q0", crashing).await?;

        for n in 0..max_restarts {
            let (failed_at, until) = wait_for(
                &format!("backoff {}", n + 1),
                Duration::from_secs(400),
                || async {
                    let s = status(&api, "q0").await?;
                    let backoff = s
                        .operation
                        .as_ref()
                        .filter(|o| o.step.name() == "Backoff")
                        .map(|o| o.started_at.clone());
                    let r = s.restarts.unwrap_or_default();
                    Ok(backoff
                        .filter(|_| r.count == n && r.total == u64::from(n))
                        .zip(r.next_restart_time))
                },
            )
            .await?;
            let failed_at = time(Some(&failed_at))?;
            let until = time(Some(&until))?;
            let s = status(&api, "q0").await?;
            assert_eq!(s.phase, Some(Phase::Restarting));
            let failure = s.restarts.and_then(|r| r.last_failure).expect("a failure");
            assert_eq!(failure.reason, "PodFailing");
            assert!(
                failure
                    .pod
                    .as_deref()
                    .is_some_and(|p| p.starts_with("q0-worker")),
                "{failure:?}"
            );
            assert!(failure.message.contains("CrashLoopBackOff"), "{failure:?}");

            let killed = n == 1;
            if killed {
                kill_the_operator(&ns).await?;
            }
            let restarted_at = wait_for(
                &format!("restart {}", n + 1),
                Duration::from_secs(300),
                || async {
                    let r = status(&api, "q0").await?.restarts.unwrap_or_default();
                    if r.total == u64::from(n) {
                        // Waiting: the count and the promised time hold, operator or not.
                        assert_eq!(r.count, n);
                        if r.waiting == Some(sluice_crds::RestartWait::Backoff) {
                            assert_eq!(time(r.next_restart_time.as_deref())?, until);
                        }
                        return Ok(None);
                    }
                    Ok(Some(r))
                },
            )
            .await?;
            assert_eq!(restarted_at.count, n + 1);
            let restarted = time(restarted_at.last_restart_time.as_deref())?;
            let waited = restarted.duration_since(failed_at).unwrap_or_default();
            let base = initial * f64::powi(multiplier, n as i32);
            eprintln!(
                "restart {}: waited {:.1}s for a backoff of {base}s ±{}%{}",
                n + 1,
                waited.as_secs_f64(),
                jitter * 100.0,
                if killed {
                    ", the operator killed meanwhile"
                } else {
                    ""
                }
            );
            assert!(restarted >= until, "restarted before the promised time");
            if !killed {
                // ±20 % of the policy plus its jitter bound (times are whole seconds).
                let (low, high) = (base * (1.0 - jitter) * 0.8, base * (1.0 + jitter) * 1.2);
                assert!(
                    (low..=high).contains(&waited.as_secs_f64()),
                    "waited {waited:?}, not within {low}..{high}s"
                );
            }
        }

        let failed = wait_for(
            "the job to fail for good",
            Duration::from_secs(400),
            || async {
                let s = status(&api, "q0").await?;
                Ok((s.phase == Some(Phase::Failed)).then_some(s))
            },
        )
        .await?;
        let error = failed.error.clone().expect("an error");
        assert_eq!(error.reason, "RestartsExhausted");
        assert!(
            error
                .message
                .starts_with("2 restart(s) without 10m of healthy running"),
            "{}",
            error.message
        );
        let (degraded, reason, _) = condition(&failed, "Degraded").expect("Degraded");
        assert_eq!(
            (degraded, reason.as_str()),
            (ConditionStatus::True, "RestartsExhausted")
        );
        // The events are published after the status that reports them is written: wait for
        // the last one.
        let events: Api<Event> = ns.api();
        let reasons: Vec<String> =
            wait_for("the RestartsExhausted event", STEP_TIMEOUT, || async {
                let reasons: Vec<String> = events
                    .list(&ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .filter_map(|e| e.reason)
                    .collect();
                Ok(reasons
                    .iter()
                    .any(|r| r == "RestartsExhausted")
                    .then_some(reasons))
            })
            .await?;
        for expected in ["PodFailing", "Restarting"] {
            assert!(
                reasons.iter().any(|r| r == expected),
                "{expected} in {reasons:?}"
            );
        }
        wait_for("the failed job's pods to go", STEP_TIMEOUT, || async {
            Ok(pods(&ns, "q0", "worker").await?.is_empty().then_some(()))
        })
        .await?;

        // The fix: from the upgrade's savepoint, nothing lost and nothing twice.
        // (with a faster sink: the output is the same, the rest of the input goes quicker)
        let mut fixed = config.clone();
        fixed["sink"]["maxRecordsPerSecond"] = json!(20_000);
        patch(
            &api,
            "q0",
            json!({"worker": null, "job": {"config": fixed}}),
        )
        .await?;
        settled(&api, "q0", Phase::Running).await?;
        exactly_the_reference(&dir, &config).await?;
        remove(&dir);
        Ok(())
    }
);

e2e_test!(
    deleting_the_coordinator_pod_leaves_the_workers_running_and_loses_nothing,
    |ns| {
        let api: Api<StreamJob> = ns.api();
        // About 100 s of input: three deletions fit in it.
        let (dir, config, _) = start_q0(&ns, &api, "q0", |spec| {
            spec.job.config["generator"]["events"] = json!(300_000);
        })
        .await?;
        first_output(&dir).await?;
        let workers = pods(&ns, "q0", "worker").await?;
        assert_eq!(workers.len(), 2, "{workers:?}");
        let pods_api: Api<Pod> = ns.api();
        for round in 1..=3 {
            let coordinator = pods(&ns, "q0", "coordinator").await?;
            let (name, (uid, _)) = coordinator.iter().next().expect("a coordinator pod");
            // Checkpoints completed from the next whole second on are the new coordinator's.
            let wall = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let after_deletion = SystemTime::UNIX_EPOCH + Duration::from_secs(wall.as_secs() + 1);
            pods_api.delete(name, &DeleteParams::default()).await?;
            let deleted = Instant::now();
            // The operator watches the coordinator's Deployment and looks at once: Ready goes
            // False while the new coordinator starts the job again, unless the workers
            // re-registered and the job runs again before that look (it can take well under a
            // second).
            let mut not_ready = None;
            let back = loop {
                let s = status(&api, "q0").await?;
                let ready = condition(&s, "Ready");
                if let Some((ConditionStatus::False, reason, _)) = &ready {
                    not_ready.get_or_insert((deleted.elapsed(), reason.clone()));
                }
                let replaced = pods(&ns, "q0", "coordinator")
                    .await?
                    .values()
                    .any(|(u, _)| u != uid);
                // Running again: ready, with a checkpoint the new coordinator completed.
                let checkpointed = s
                    .last_checkpoint
                    .as_ref()
                    .and_then(|c| time(c.completed_at.as_deref()).ok())
                    .is_some_and(|t| t >= after_deletion);
                let running = ready.is_some_and(|c| c.0 == ConditionStatus::True)
                    && s.phase == Some(Phase::Running)
                    && checkpointed;
                if replaced && running {
                    break deleted.elapsed();
                }
                if deleted.elapsed() > Duration::from_secs(60) {
                    return Err(E2eError::Timeout {
                        what: "Ready=True again".into(),
                        timeout: Duration::from_secs(60),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            match &not_ready {
                Some((after, reason)) => eprintln!(
                    "coordinator deleted ({round}): Ready=False ({reason}) after {:.1}s, running again after {:.1}s",
                    after.as_secs_f64(),
                    back.as_secs_f64()
                ),
                None => eprintln!(
                    "coordinator deleted ({round}): running again after {:.1}s, before the operator looked",
                    back.as_secs_f64()
                ),
            }
            assert!(
                back < Duration::from_secs(30),
                "running again after {back:?}"
            );
        }
        // The workers re-registered with each new coordinator: same pods, no restart.
        assert_eq!(pods(&ns, "q0", "worker").await?, workers);
        exactly_the_reference(&dir, &config).await?;
        remove(&dir);
        Ok(())
    }
);

/// A q0 job that runs long and writes nothing, at `parallelism` workers of priority `class`.
async fn filler(
    ns: &TestNamespace,
    api: &Api<StreamJob>,
    name: &str,
    parallelism: u32,
    class: &str,
) -> Result<()> {
    let (mut sj, _) = stream_job(
        ns,
        name,
        "nexmark-q0",
        json!({
            "generator": {"events": 100_000_000u64},
            "output": "discard",
            "sink": {"maxRecordsPerSecond": 1_000},
        }),
    )
    .await?;
    sj.spec.parallelism = parallelism;
    sj.spec.priority = Some(class.into());
    api.create(&PostParams::default(), &sj).await?;
    Ok(())
}

async fn phase_of(api: &Api<StreamJob>, name: &str, phase: Phase) -> Result<StreamJobStatus> {
    wait_for(&format!("{name} in {phase:?}"), STEP_TIMEOUT, || async {
        let s = status(api, name).await?;
        Ok((s.phase == Some(phase)).then_some(s))
    })
    .await
}

e2e_test!(
    a_stream_quota_queues_admits_and_preempts_by_priority_and_loses_nothing,
    |ns| {
        let quotas: Api<StreamQuota> = ns.api();
        let quota: StreamQuota = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "StreamQuota",
            "metadata": {"name": "team"},
            "spec": {
                "limits": {"maxWorkers": 4},
                "priorityClasses": [
                    {"name": "low", "value": 10, "preemptionPolicy": "Never"},
                    {"name": "high", "value": 100},
                ],
                "defaultPriorityClass": "low",
            },
        }))
        .map_err(|e| E2eError::Config(e.to_string()))?;
        quotas.create(&PostParams::default(), &quota).await?;
        let api: Api<StreamJob> = ns.api();

        // a: 3 workers of 4, with output compared at the end.
        let (dir, config, _) = start_q0(&ns, &api, "a", |spec| {
            spec.parallelism = 3;
            spec.priority = Some("low".into());
            spec.job.config["generator"]["events"] = json!(300_000);
            spec.job.config["sink"]["maxRecordsPerSecond"] = json!(1_000);
        })
        .await?;

        // b does not fit: queued, saying why.
        filler(&ns, &api, "b", 2, "low").await?;
        let queued = phase_of(&api, "b", Phase::Queued).await?;
        let (admitted, reason, message) = condition(&queued, "Admitted").expect("Admitted");
        assert_eq!(
            (admitted, reason.as_str()),
            (ConditionStatus::False, "Queued")
        );
        assert_eq!(
            message,
            "maxWorkers of StreamQuota team: needs 2, 1 of 4 free"
        );

        // c, of a higher priority, preempts a (with a savepoint) and runs; b still waits.
        filler(&ns, &api, "c", 3, "high").await?;
        let preempted = phase_of(&api, "a", Phase::Preempted).await?;
        let savepoint = preempted.last_savepoint.clone().expect("a savepoint");
        assert_eq!(savepoint.trigger, SavepointTrigger::Preemption);
        settled(&api, "c", Phase::Running).await?;
        assert_eq!(status(&api, "b").await?.phase, Some(Phase::Queued));
        // What the quota holds, as its status says once a reconcile has written it.
        wait_for("the quota's status", Duration::from_secs(60), || async {
            let held = quotas.get("team").await?.status.unwrap_or_default();
            let waiting: Vec<_> = held
                .queued
                .iter()
                .map(|q| (q.name.clone(), q.preempted))
                .collect();
            let expected = vec![("a".to_string(), true), ("b".to_string(), false)];
            Ok((held.used.workers == 3 && waiting == expected).then_some(()))
        })
        .await?;

        // c goes: a resumes by itself from its savepoint (before b: older, same priority).
        api.delete("c", &DeleteParams::default()).await?;
        let resumed = settled(&api, "a", Phase::Running).await?;
        assert_eq!(
            resumed
                .status
                .unwrap_or_default()
                .target
                .and_then(|t| t.restore_from),
            savepoint.path
        );
        assert_eq!(status(&api, "b").await?.phase, Some(Phase::Queued));
        exactly_the_reference(&dir, &config).await?;

        // a is done with its input: its room goes to b.
        api.delete("a", &DeleteParams::default()).await?;
        settled(&api, "b", Phase::Running).await?;
        remove(&dir);
        Ok(())
    }
);

e2e_test!(
    ten_jobs_failing_at_once_restart_at_the_operator_wide_rate,
    |ns| {
        let _budget = RESTART_BUDGET.lock().await;
        let api: Api<StreamJob> = ns.api();
        let names: Vec<String> = (0..10).map(|i| format!("j{i}")).collect();
        for name in &names {
            let (mut sj, _) = stream_job(
                &ns,
                name,
                "nexmark-q0",
                json!({"generator": {"events": 100_000_000u64}, "output": "discard"}),
            )
            .await?;
            sj.spec.parallelism = 1;
            sj.spec.rollback.enabled = false;
            sj.spec.restart_policy.backoff.initial = HumanDuration::new("1s");
            sj.spec.restart_policy.backoff.jitter = 0.0;
            // Once restarted, each fails for good: it takes no more tokens after the test.
            sj.spec.restart_policy.max_restarts = Some(1);
            // Workers that cannot start: every job fails as soon as it is deployed.
            sj.spec.worker.pod_template = Some(crashing_workers());
            api.create(&PostParams::default(), &sj).await?;
        }
        // Each job's first restart, and whether it was seen held back by the rate limit.
        let mut first_restart: BTreeMap<String, SystemTime> = BTreeMap::new();
        let mut held_back = std::collections::BTreeSet::new();
        let timeout = Duration::from_secs(400);
        let deadline = Instant::now() + timeout;
        while first_restart.len() < names.len() {
            if Instant::now() > deadline {
                return Err(E2eError::Timeout {
                    what: format!("ten restarts (seen {first_restart:?})"),
                    timeout,
                });
            }
            for name in &names {
                let r = status(&api, name).await?.restarts.unwrap_or_default();
                if r.waiting == Some(sluice_crds::RestartWait::RateLimited) {
                    held_back.insert(name.clone());
                }
                if r.total >= 1 && !first_restart.contains_key(name) {
                    first_restart.insert(name.clone(), time(r.last_restart_time.as_deref())?);
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let mut times: Vec<SystemTime> = first_restart.values().copied().collect();
        times.sort();
        // As e2e/ci.sh installs the chart: restarts.perMinute 12, restarts.burst 3.
        let (per_minute, burst) = (12.0, 3.0);
        let start = times[0];
        let spread: Vec<f64> = times
            .iter()
            .map(|t| t.duration_since(start).unwrap_or_default().as_secs_f64())
            .collect();
        eprintln!("first restarts of ten jobs, seconds after the first: {spread:?}; held back: {held_back:?}");
        // No window holds more restarts than the bucket allows (times are whole seconds).
        for i in 0..times.len() {
            for j in i..times.len() {
                let window = spread[j] - spread[i];
                let allowed = burst + (window + 1.0) * per_minute / 60.0;
                assert!(
                    (j - i + 1) as f64 <= allowed,
                    "{} restarts within {window}s: {spread:?}",
                    j - i + 1
                );
            }
        }
        assert!(
            !held_back.is_empty(),
            "no job was seen waiting for the rate limit"
        );
        Ok(())
    }
);

e2e_test!(
    a_job_suspended_while_its_pods_crash_loop_resumes_where_it_stopped_exactly_once,
    |ns| {
        let api: Api<StreamJob> = ns.api();
        let (dir, config, _) = start_q0(&ns, &api, "q0", |spec| {
            spec.rollback.enabled = false;
            // The operator waits long before a restart: the user acts first.
            spec.restart_policy.backoff.initial = HumanDuration::new("5m");
            spec.restart_policy.backoff.max = HumanDuration::new("5m");
        })
        .await?;
        first_output(&dir).await?;
        let crashing = json!({"worker": {"podTemplate": crashing_workers()}});
        patch(&api, "q0", crashing).await?;
        let failing = wait_for(
            "the new pods to crash-loop",
            Duration::from_secs(400),
            || async {
                let s = status(&api, "q0").await?;
                Ok((s.phase == Some(Phase::Restarting)).then_some(s))
            },
        )
        .await?;
        let stopped_at = failing
            .target
            .and_then(|t| t.restore_from)
            .expect("the upgrade's savepoint");

        patch(&api, "q0", json!({"state": "suspended"})).await?;
        let suspended = settled(&api, "q0", Phase::Suspended).await?;
        assert_eq!(
            suspended
                .status
                .unwrap_or_default()
                .target
                .and_then(|t| t.restore_from),
            Some(stopped_at.clone()),
            "resumes where the job stopped, not from an older snapshot"
        );
        let mut fixed = config.clone();
        fixed["sink"]["maxRecordsPerSecond"] = json!(20_000);
        patch(
            &api,
            "q0",
            json!({"worker": null, "state": "running", "job": {"config": fixed}}),
        )
        .await?;
        let resumed = settled(&api, "q0", Phase::Running).await?;
        assert_eq!(
            resumed
                .status
                .unwrap_or_default()
                .target
                .and_then(|t| t.restore_from),
            Some(stopped_at)
        );
        exactly_the_reference(&dir, &config).await?;
        remove(&dir);
        Ok(())
    }
);

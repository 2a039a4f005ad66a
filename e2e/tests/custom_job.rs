//! A user's own job on the real cluster: the template crate of `examples/custom-job`, built
//! into its own images by `e2e/cluster/images.sh sessions`, run by the operator from a
//! StreamJob. Its committed output is compared with sessions computed here from the same
//! clicks; a version whose state schema changed is refused by the upgrade pre-flight while
//! the running job carries on; a compatible version then takes over from a savepoint with
//! nothing lost and nothing twice.
//!
//! The clicks are written by this test to the directory every pod of the job mounts
//! (`sluice_e2e::jobs::shared_dir`), where the output is read back too.

use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_crds::{Phase, SavepointTrigger, StreamJob};
use sluice_e2e::jobs::{shared_dir, shared_dir_pod_template};
use sluice_e2e::{e2e_test, wait_for, E2eError, Result, TestNamespace};
use sluice_runtime::connectors::JsonLinesSink;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The first version of the job, and the two next versions, from `images.sh sessions`.
const SESSIONS_V1: &str = "sluice.local/sessions:dev";
const SESSIONS_V2: &str = "sluice.local/sessions:v2";
const SESSIONS_V2_INCOMPATIBLE: &str = "sluice.local/sessions:v2-incompatible";

const NAME: &str = "sessions";
/// Long enough for a job's pods to start, or a stop with a savepoint to complete.
const STEP_TIMEOUT: Duration = Duration::from_secs(240);

const CLICKS: u64 = 600_000;
const USERS: u64 = 1_000;
/// Click `i` happens at `BASE_MS + i * STEP_MS`, less up to `OUT_OF_ORDER_MS`.
const BASE_MS: i64 = 1_767_225_600_000;
const STEP_MS: i64 = 50;
const OUT_OF_ORDER_MS: i64 = 2_000;
const GAP_MS: i64 = 60_000;
/// Sessions each sink subtask commits per second: the job (about 180,000 sessions, 7 to 8
/// minutes) outlives the test's upgrades. Not much lower: a sink subtask sleeps off each batch
/// (up to 1,024 sessions) before a checkpoint barrier behind it can pass.
const SINK_RATE: u64 = 200;

/// A click as the job reads it, one JSON object per line.
fn click_line(user: u64, ts: i64, page: &str, amount_cents: u64) -> String {
    json!({"user": format!("user-{user}"), "ts": ts, "page": page, "amountCents": amount_cents})
        .to_string()
}

/// The test's clicks in arrival order, as `(user, ts, amount_cents)` and as the file's lines.
fn clicks() -> (Vec<(u64, i64, u64)>, Vec<String>) {
    // xorshift64*: any fixed pseudo-random sequence will do.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let pages = ["/", "/search", "/item", "/cart", "/checkout"];
    let mut clicks = Vec::new();
    let mut lines = Vec::new();
    for i in 0..CLICKS {
        let user = next() % USERS;
        let ts = BASE_MS + i as i64 * STEP_MS - (next() % OUT_OF_ORDER_MS as u64) as i64;
        let page = pages[(next() % pages.len() as u64) as usize];
        let amount_cents = if page == "/checkout" {
            100 + next() % 5_000
        } else {
            0
        };
        clicks.push((user, ts, amount_cents));
        lines.push(click_line(user, ts, page, amount_cents));
    }
    (clicks, lines)
}

/// A session as the job writes it; the fields every version has.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Session {
    user: String,
    start: i64,
    end: i64,
    clicks: u64,
    amount_cents: u64,
}

/// Each user's clicks in time order, cut where two consecutive clicks are a gap apart.
fn expected_sessions(clicks: &[(u64, i64, u64)]) -> Vec<Session> {
    let mut by_user: BTreeMap<u64, Vec<(i64, u64)>> = BTreeMap::new();
    for &(user, ts, amount) in clicks {
        by_user.entry(user).or_default().push((ts, amount));
    }
    let mut sessions = Vec::new();
    for (user, mut times) in by_user {
        times.sort_unstable();
        let mut current: Option<Session> = None;
        for (ts, amount) in times {
            match current.as_mut() {
                Some(s) if ts - s.end < GAP_MS => {
                    s.end = ts;
                    s.clicks += 1;
                    s.amount_cents += amount;
                }
                _ => {
                    sessions.extend(current.take());
                    current = Some(Session {
                        user: format!("user-{user}"),
                        start: ts,
                        end: ts,
                        clicks: 1,
                        amount_cents: amount,
                    });
                }
            }
        }
        sessions.extend(current);
    }
    sessions.sort();
    sessions
}

fn config_error(e: impl std::fmt::Display) -> E2eError {
    E2eError::Config(e.to_string())
}

/// Writes the clicks where the job's pods will read them; returns the directory.
async fn job_dir_with_clicks(ns: &TestNamespace, lines: &[String]) -> Result<PathBuf> {
    let dir = shared_dir(ns).await?;
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(dir.join("clicks.jsonl")).map_err(config_error)?,
    );
    for line in lines {
        writeln!(file, "{line}").map_err(config_error)?;
    }
    file.flush().map_err(config_error)?;
    Ok(dir)
}

fn stream_job(dir: &Path) -> Result<StreamJob> {
    serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "StreamJob",
        "metadata": {"name": NAME},
        "spec": {
            "image": SESSIONS_V1,
            "job": {"name": "sessions", "config": {
                "input": dir.join("clicks.jsonl"),
                "maxOutOfOrderMs": OUT_OF_ORDER_MS,
                "sessionGapMs": GAP_MS,
                "output": dir.join("out"),
                "sink": {"maxRecordsPerSecond": SINK_RATE},
            }},
            "parallelism": 2,
            "checkpointing": {"storage": format!("file://{}/state", dir.display()), "interval": "1s"},
            "upgradeMode": "savepoint",
            "rollback": {"enabled": true, "readinessTimeout": "60s"},
            "podTemplate": shared_dir_pod_template(dir),
        },
    }))
    .map_err(config_error)
}

/// Waits until the operator has acted on the latest spec and the job runs `image` with no
/// operation under way.
async fn running_image(api: &Api<StreamJob>, image: &str) -> Result<StreamJob> {
    wait_for(&format!("{NAME} to run {image}"), STEP_TIMEOUT, || async {
        let sj = api.get(NAME).await?;
        let status = sj.status.clone().unwrap_or_default();
        let settled = status.observed_generation == sj.metadata.generation
            && status.phase == Some(Phase::Running)
            && status.operation.is_none();
        let runs = status.target.as_ref().and_then(|t| t.spec.image.as_deref()) == Some(image);
        Ok((settled && runs).then_some(sj))
    })
    .await
}

async fn set_image(api: &Api<StreamJob>, image: &str) -> Result<()> {
    let patch = json!({"spec": {"image": image}});
    api.patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Every committed line, as the JSON objects the sink wrote.
fn committed(dir: &Path) -> Result<Vec<Value>> {
    JsonLinesSink::committed_lines(&dir.join("out"))
        .map_err(config_error)?
        .iter()
        .map(|line| serde_json::from_str(line).map_err(config_error))
        .collect()
}

async fn committed_count(dir: &Path) -> Result<usize> {
    Ok(committed(dir)?.len())
}

fn run_of(sj: &StreamJob) -> Option<String> {
    sj.status.as_ref()?.target.as_ref()?.run.clone()
}

e2e_test!(
    your_own_job_runs_refuses_an_incompatible_version_and_upgrades_exactly_once,
    |ns| {
        let api: Api<StreamJob> = ns.api();
        let (clicks, lines) = clicks();
        let expected = expected_sessions(&clicks);
        let dir = job_dir_with_clicks(&ns, &lines).await?;
        api.create(&PostParams::default(), &stream_job(&dir)?)
            .await?;
        let first = running_image(&api, SESSIONS_V1).await?;
        wait_for("the first sessions", STEP_TIMEOUT, || async {
            Ok((committed_count(&dir).await? > 0).then_some(()))
        })
        .await?;

        // The incompatible version: the pre-flight runs its image against a fresh savepoint
        // and refuses; nothing is stopped.
        set_image(&api, SESSIONS_V2_INCOMPATIBLE).await?;
        let refused = wait_for("the upgrade to be refused", STEP_TIMEOUT, || async {
            let sj = api.get(NAME).await?;
            let status = sj.status.clone().unwrap_or_default();
            let refused = status
                .condition("Degraded")
                .is_some_and(|c| c.reason == "UpgradeRefused");
            Ok(refused.then_some(sj))
        })
        .await?;
        let status = refused.status.clone().unwrap_or_default();
        let savepoint = status
            .last_savepoint
            .clone()
            .expect("the pre-flight savepoint");
        assert_eq!(savepoint.trigger, SavepointTrigger::Upgrade);
        let savepoint = savepoint.path.expect("the savepoint's path");
        let degraded = status.condition("Degraded").expect("Degraded");
        let expected_message = format!(
            "the new spec cannot restore savepoint {savepoint}: operator 'sessionize': state \
             'open-session' has schema version 1 in the snapshot but 2 in the job / error: \
             checkpointing: job 'sessions' cannot restore {savepoint}; the job keeps running its \
             current spec"
        );
        assert_eq!(degraded.message, expected_message);
        // The event is published after the status is written: wait for it.
        let events: Api<Event> = ns.api();
        let warnings: Vec<Event> = wait_for("the UpgradeRefused event", STEP_TIMEOUT, || async {
            let warnings: Vec<Event> = events
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("UpgradeRefused"))
                .collect();
            Ok((!warnings.is_empty()).then_some(warnings))
        })
        .await?;
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].type_.as_deref(), Some("Warning"));
        assert_eq!(
            warnings[0].involved_object.name.as_deref(),
            Some(NAME),
            "{warnings:?}"
        );
        assert_eq!(
            warnings[0].message.as_deref(),
            Some(expected_message.as_str())
        );
        // The pre-flight's pod is not under the job's disruption budget (a budget over a
        // Job's pods only makes the disruption controller warn).
        let budget_warnings: Vec<Event> = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object.kind.as_deref() == Some("PodDisruptionBudget")
                    && e.type_.as_deref() == Some("Warning")
            })
            .collect();
        assert!(budget_warnings.is_empty(), "{budget_warnings:?}");
        // The first version keeps running, in the same run, and keeps committing.
        assert_eq!(status.phase, Some(Phase::Running));
        let target = status.target.clone().expect("target");
        assert_eq!(target.spec.image.as_deref(), Some(SESSIONS_V1));
        assert_eq!(target.run, run_of(&first));
        let at_refusal = committed_count(&dir).await?;
        wait_for(
            "more sessions from the first version",
            STEP_TIMEOUT,
            || async { Ok((committed_count(&dir).await? > at_refusal).then_some(())) },
        )
        .await?;

        // The compatible version: savepoint, pre-flight passes, stop, start from the savepoint.
        set_image(&api, SESSIONS_V2).await?;
        let upgraded = running_image(&api, SESSIONS_V2).await?;
        let status = upgraded.status.clone().unwrap_or_default();
        let savepoint = status
            .last_savepoint
            .and_then(|s| s.path)
            .expect("the upgrade's savepoint");
        assert_eq!(
            status.target.and_then(|t| t.restore_from),
            Some(savepoint.clone()),
            "the second version starts from the upgrade's savepoint"
        );
        assert_ne!(run_of(&upgraded), run_of(&first), "a new run");
        // The events name this savepoint, not the refused upgrade's (kube's event recorder
        // folds events of one reason into a series that keeps its first message).
        let completed: Vec<String> = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("SavepointCompleted"))
            .filter_map(|e| e.message)
            .collect();
        assert!(
            completed.iter().any(|m| m.ends_with(savepoint.as_str())),
            "no SavepointCompleted event names {savepoint}: {completed:?}"
        );
        let at_upgrade = committed_count(&dir).await?;
        assert!(
            at_upgrade < expected.len(),
            "the first version had finished before the upgrade: {at_upgrade} sessions"
        );

        let output = wait_for("every session", Duration::from_secs(600), || async {
            let lines = committed(&dir)?;
            Ok((lines.len() >= expected.len()).then_some(lines))
        })
        .await?;
        let mut sessions: Vec<Session> = output
            .iter()
            .map(|v| serde_json::from_value(v.clone()).map_err(config_error))
            .collect::<Result<_>>()?;
        sessions.sort();
        assert!(
            sessions == expected,
            "committed sessions differ from the reference: {} committed, {} expected",
            sessions.len(),
            expected.len()
        );
        // Sessions of the second version carry its new field, and it is right.
        let mut second = 0;
        for v in &output {
            if let Some(duration) = v.get("durationMs") {
                second += 1;
                assert_eq!(
                    duration.as_i64(),
                    Some(v["end"].as_i64().unwrap_or(0) - v["start"].as_i64().unwrap_or(0)),
                    "{v}"
                );
            }
        }
        eprintln!(
            "{} sessions: {} from the first version, {second} from the second; {at_refusal} \
             committed at the refusal, {at_upgrade} after the upgrade",
            expected.len(),
            expected.len() - second
        );
        assert!(
            second > 0 && second < expected.len(),
            "{second} of {}",
            expected.len()
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
);

//! The control API of `sluice run --control-addr`, driven over HTTP as the operator will:
//! authentication, job status, savepoints, stop-with-savepoint (restored exactly), metrics
//! and the state-compatibility check.

mod common;

use common::browser::Browser;
use common::run::{job_config, reference, sluice, sorted_output, write_manifest, KILL_EVENTS};
use common::{assert_same, card_totals, wait_until, BrokenSink};
use common::{OVERFLOWING_CARD, OVERFLOW_MESSAGE};
use serde_json::{json, Value};
use sluice_runtime::api::{Count, JobBuilder, Record, TumblingEventTime, WatermarkStrategy};
use sluice_runtime::connectors::{DiscardSink, JsonLinesSink, JsonLinesSource, VecSource};
use sluice_runtime::control::model::{JobStatus, Phase, SplitPositionStatus, SubtaskState};
use sluice_runtime::control::{BoundMetrics, JobControl};
use sluice_runtime::exec::{start_embedded, CheckpointConfig, RunOptions};
use sluice_runtime::jobs::JobRegistry;
use sluice_runtime::snapshot::CheckpointStorage;
use sluice_runtime::state::{key_group, stable_hash};
use sluice_runtime::time::EventTime;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-5f1c0a";
const TIMEOUT: Duration = Duration::from_secs(120);
const JOB: &str = "nexmark-q5";

/// A `sluice run` child process serving the control API.
struct Job {
    child: Child,
    base: String,
    /// The URL of the metrics port's `/metrics`, when started with `--metrics-addr`.
    metrics: Option<String>,
    agent: ureq::Agent,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Job {
    /// Starts the job of `manifest` and reads the API's address from its standard error.
    fn start(manifest: &Path, dir: &Path, extra: &[&str]) -> Job {
        let token_file = dir.join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let mut child = sluice()
            .arg("run")
            .arg(manifest)
            .args(["--control-addr", "127.0.0.1:0", "--control-token-file"])
            .arg(&token_file)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--progress-interval", "0"])
            .args(extra)
            .env_remove("SLUICE_CONTROL_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines_tx, lines) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let log = stderr.clone();
        // Drains the pipe for the whole run, so the child never blocks on a full pipe.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                log.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = lines_tx.send(line);
            }
        });
        let deadline = Instant::now() + TIMEOUT;
        let wants_metrics = extra.contains(&"--metrics-addr");
        let (mut base, mut metrics) = (None, None);
        while base.is_none() || (wants_metrics && metrics.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("control API listening on ") {
                        base = Some(url.to_string());
                    }
                    if let Some(url) = line.strip_prefix("metrics listening on ") {
                        metrics = Some(url.to_string());
                    }
                }
                Err(_) => panic!(
                    "no control API or metrics address printed:\n{}",
                    stderr.lock().unwrap()
                ),
            }
        }
        let base = base.unwrap();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(TIMEOUT))
            .build();
        Job {
            child,
            base,
            metrics,
            agent: config.into(),
            stderr,
            reader: Some(reader),
        }
    }

    /// Starts the job of `manifest` with a metrics port and a checkpoint every `interval`
    /// into `dir`.
    fn start_checkpointed(manifest: &Path, dir: &Path, interval: &str) -> Job {
        let checkpoints = dir.join("checkpoints");
        let checkpoints = checkpoints.to_str().unwrap();
        Job::start(
            manifest,
            dir,
            &[
                "--metrics-addr",
                "127.0.0.1:0",
                "--checkpoint-interval",
                interval,
                "--checkpoint-dir",
                checkpoints,
            ],
        )
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, String) {
        self.send(method, &format!("{}{path}", self.base), body, token)
    }

    /// A request without a token or body to a whole URL (the metrics port's).
    fn request_url(&self, method: &str, url: &str) -> (u16, String) {
        self.send(method, url, None, None)
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, String) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (_, body) => {
                let mut r = self.agent.post(url).content_type("application/json");
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send(body.unwrap_or(""))
            }
        };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        self.request("GET", path, None, token)
    }

    fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let (status, text) = self.request("POST", path, Some(body), Some(TOKEN));
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}")),
        )
    }

    /// `GET` with the token, expecting 200 and JSON.
    fn json(&self, path: &str) -> Value {
        let (status, text) = self.get(path, Some(TOKEN));
        assert_eq!(status, 200, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn source_records(&self) -> u64 {
        self.json("/v1/job")["subtasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["source"] == json!(true))
            .map(|t| t["recordsIn"].as_u64().unwrap())
            .sum()
    }

    /// Polls a savepoint request until it is no longer in progress.
    fn savepoint_outcome(&self, id: &str) -> Value {
        let mut outcome = Value::Null;
        wait_until("the savepoint", TIMEOUT, || {
            outcome = self.json(&format!("/v1/savepoints/{id}"));
            outcome["status"] != json!("in-progress")
        });
        outcome
    }

    /// Waits for the process to exit; returns its status and everything it printed.
    fn exit(mut self) -> (ExitStatus, String) {
        let mut status = None;
        wait_until("the process to exit", TIMEOUT, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let stderr = self.stderr.lock().unwrap().clone();
        (status.unwrap(), stderr)
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // A failed assertion must not leave the job running.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn error_of(text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {text}"))
        .to_string()
}

fn path_of(location: &str) -> PathBuf {
    PathBuf::from(location.strip_prefix("file://").unwrap_or(location))
}

/// A snapshot of a job other than q5: its final checkpoint.
fn snapshot_of_another_job(dir: &Path) -> (String, Vec<String>) {
    let job = "fraud-small-then-large";
    let graph = JobRegistry::bundled()
        .build(job, 1, 128, &job_config(2_000, &dir.join("other-out")))
        .unwrap();
    let q5 = JobRegistry::bundled()
        .build(JOB, 2, 128, &job_config(1, &dir.join("unused")))
        .unwrap();
    let q5_uids: Vec<String> = q5.operators().into_iter().map(|(uid, _, _)| uid).collect();
    let foreign: Vec<String> = graph
        .operators()
        .into_iter()
        .filter(|(uid, _, stateful)| *stateful && !q5_uids.contains(uid))
        .map(|(uid, _, _)| uid)
        .collect();
    assert!(
        !foreign.is_empty(),
        "{job} has no stateful operator q5 lacks"
    );
    let storage = format!("file://{}", dir.join("other-checkpoints").display());
    let options = RunOptions {
        checkpoints: Some(CheckpointConfig {
            interval: None,
            ..CheckpointConfig::new(storage.clone())
        }),
        ..RunOptions::default()
    };
    start_embedded(graph, options).unwrap().wait().unwrap();
    let storage = CheckpointStorage::open(&storage).unwrap();
    let id = storage.latest_restorable().unwrap().manifest.checkpoint;
    (storage.location(id), foreign)
}

#[test]
fn the_api_authenticates_reports_the_job_and_takes_savepoints() {
    let dir = tempfile::tempdir().unwrap();
    // Far more input than the test lasts: the job is stopped at the end.
    let manifest = write_manifest(dir.path(), JOB, 1_000_000_000, &dir.path().join("out"));
    let checkpoints = dir.path().join("checkpoints");
    let job = Job::start(
        &manifest,
        dir.path(),
        &[
            "--state-backend",
            "heap",
            "--checkpoint-interval",
            "200ms",
            "--checkpoint-dir",
            checkpoints.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );

    // Every endpoint but the probes wants the token.
    for path in ["/v1/job", "/metrics", "/v1/savepoints/x"] {
        let (status, text) = job.get(path, None);
        assert_eq!(status, 401, "{path}: {text}");
        assert!(error_of(&text).contains("Authorization: Bearer"), "{text}");
        let (status, text) = job.get(path, Some("wrong-token"));
        assert_eq!(status, 401, "{path}: {text}");
        assert_eq!(error_of(&text), "wrong bearer token");
    }
    let (status, text) = job.request("POST", "/v1/stop", Some(r#"{"savepoint": false}"#), None);
    assert_eq!(status, 401, "{text}");
    let (status, text) = job.get("/healthz", None);
    assert_eq!(status, 200, "{text}");
    let (status, text) = job.get("/readyz", None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["phase"],
        "running"
    );

    let status = job.json("/v1/job");
    assert_eq!(status["name"], JOB);
    assert_eq!(status["phase"], "running");
    assert_eq!(status["parallelism"], 2);
    assert_eq!(status["maxParallelism"], 128);
    assert_eq!(status["errors"], json!([]));
    let subtasks = status["subtasks"].as_array().unwrap();
    assert!(!subtasks.is_empty());
    for t in subtasks {
        assert_eq!(t["state"], "running", "{t}");
        assert!(t["operator"].as_str().is_some_and(|o| !o.is_empty()), "{t}");
        assert!(t["subtask"].as_u64().unwrap() < 2, "{t}");
    }
    wait_until("records to flow", TIMEOUT, || job.source_records() > 0);

    // Bad requests name what is wrong.
    let (status, body) = job.post("/v1/savepoints", r#"{"stop": "no"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("field 'stop'"),
        "{body}"
    );
    let (status, body) = job.post("/v1/savepoints", r#"{"targetDirectory": "relative/dir"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("targetDirectory"),
        "{body}"
    );
    let (status, text) = job.get("/v1/savepoints/no-such-id", Some(TOKEN));
    assert_eq!(status, 404, "{text}");
    assert_eq!(error_of(&text), "unknown savepoint id 'no-such-id'");
    let (status, text) = job.get("/v1/nothing", Some(TOKEN));
    assert_eq!(status, 404, "{text}");

    // A savepoint, in the background.
    let savepoints = dir.path().join("savepoints");
    let (status, body) = job.post(
        "/v1/savepoints",
        &json!({ "targetDirectory": savepoints }).to_string(),
    );
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let outcome = job.savepoint_outcome(&id);
    assert_eq!(outcome["status"], "completed", "{outcome}");
    assert_eq!(outcome["error"], Value::Null);
    let location = outcome["location"].as_str().unwrap().to_string();
    assert!(location.contains("/sp-"), "{location}");
    assert!(
        path_of(&location).join("_manifest.json").is_file(),
        "{location}"
    );
    let inspect = sluice()
        .args(["savepoint", "inspect", &location])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    assert!(printed.contains("kind            Savepoint"), "{printed}");
    assert!(
        printed.contains(&format!("job             {JOB}")),
        "{printed}"
    );

    // A savepoint that cannot be written fails alone: the job goes on.
    let unwritable = dir.path().join("token").join("savepoints");
    let (status, body) = job.post(
        "/v1/savepoints",
        &json!({ "targetDirectory": unwritable }).to_string(),
    );
    assert_eq!(status, 202, "{body}");
    let outcome = job.savepoint_outcome(body["id"].as_str().unwrap());
    assert_eq!(outcome["status"], "failed", "{outcome}");
    assert!(
        outcome["error"]
            .as_str()
            .unwrap()
            .contains("token/savepoints"),
        "{outcome}"
    );
    assert_eq!(outcome["location"], Value::Null);

    let status = job.json("/v1/job");
    assert_eq!(status["phase"], "running", "{status}");
    assert!(
        status["checkpoints"]["failed"].as_u64().unwrap() >= 1,
        "{status}"
    );
    let checkpoints_done = status["checkpoints"]["completed"].as_u64().unwrap();
    assert!(checkpoints_done >= 1, "{status}");
    assert!(
        status["checkpoints"]["lastCompleted"]["id"]
            .as_u64()
            .is_some(),
        "{status}"
    );

    // A split's watermark is published once it has read records, a few times a second.
    wait_until("every split's watermark", TIMEOUT, || {
        let splits = job.json("/v1/job")["subtasks"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["splits"].as_array().unwrap().clone())
            .collect::<Vec<_>>();
        !splits.is_empty() && splits.iter().all(|s| s["watermarkMs"].is_i64())
    });

    // Prometheus text: every sample is `name{labels} value`.
    let (code, metrics) = job.get("/metrics", Some(TOKEN));
    assert_eq!(code, 200, "{metrics}");
    let mut completed = None;
    for line in metrics
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let (name, labels) = series.split_once('{').unwrap_or_else(|| panic!("{line}"));
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && labels.ends_with('}'),
            "{line}"
        );
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        if name == "sluice_checkpoints_completed_total" {
            completed = Some(value);
        }
    }
    assert!(
        completed.is_some_and(|c| c >= checkpoints_done as f64),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nsluice_checkpoints_failed_total{job=\"nexmark-q5\"} "),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE sluice_subtask_records_in_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_last_checkpoint_duration_seconds{"),
        "{metrics}"
    );
    // The state of the last checkpoint, per stateful operator: q5's window counts hold it
    // all, and the shares add up to the total.
    let sample = |prefix: &str| -> Vec<f64> {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
            .collect()
    };
    let total = sample("sluice_last_checkpoint_size_bytes{");
    let per_operator = sample("sluice_last_checkpoint_operator_size_bytes{");
    assert_eq!(total.len(), 1, "{metrics}");
    assert!(per_operator.iter().any(|b| *b > 0.0), "{metrics}");
    assert_eq!(per_operator.iter().sum::<f64>(), total[0], "{metrics}");
    // Every job series the dashboard queries, with the labels it groups by.
    let dashboard = include_str!("../../config/dashboards/sluice.json");
    // (A backlog is known of Kafka sources only: runtime/tests/kafka.rs checks its panel.)
    let problems = sluice_http::dashboard::problems(dashboard, &metrics, |series| {
        !series.starts_with("sluice_operator_") && series != "sluice_source_split_backlog_records"
    });
    assert!(problems.is_empty(), "{problems:#?}");

    // The metrics port serves the same families without a token, the job's status and
    // page read-only, and nothing else.
    let families = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(String::from)
            .collect()
    };
    let scrape = job.metrics.clone().expect("the metrics port's address");
    let (code, open) = job.request_url("GET", &scrape);
    assert_eq!(code, 200, "{open}");
    assert_eq!(families(&open), families(&metrics));
    assert!(
        open.contains("sluice_subtask_records_in_total{job=\"nexmark-q5\",operator="),
        "{open}"
    );
    let port = scrape.trim_end_matches("/metrics");
    for (method, path, wanted) in [
        ("GET", "/v1/job", 200),
        ("POST", "/v1/job", 405),
        ("POST", "/v1/stop", 404),
        ("POST", "/v1/savepoints", 404),
        ("GET", "/healthz", 404),
        ("POST", "/metrics", 405),
    ] {
        let (code, text) = job.request_url(method, &format!("{port}{path}"));
        assert_eq!(code, wanted, "{method} {path} on the metrics port: {text}");
    }
    assert_eq!(job.json("/v1/job")["phase"], "running", "the job runs on");

    // Its own savepoint is compatible; one of another job is not, naming the operator.
    let (status, report) = job.post(
        "/v1/compatibility",
        &json!({ "savepoint": location }).to_string(),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["compatible"], true, "{report}");
    let (other, foreign) = snapshot_of_another_job(dir.path());
    let (status, report) = job.post(
        "/v1/compatibility",
        &json!({ "savepoint": other, "allowNonRestoredState": false }).to_string(),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["compatible"], false, "{report}");
    let messages: Vec<&str> = report["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for uid in &foreign {
        let expected = format!(
            "operator '{uid}' has state in the snapshot but is not in the job \
             (renamed uid or removed operator)"
        );
        assert!(messages.contains(&expected.as_str()), "{report}");
        assert!(report["missingOperators"]
            .as_array()
            .unwrap()
            .contains(&json!(uid)));
    }
    let missing = dir.path().join("no-such-savepoint");
    let (status, body) = job.post(
        "/v1/compatibility",
        &json!({ "savepoint": missing }).to_string(),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no-such-savepoint"),
        "{body}"
    );

    // Stop without a savepoint: a clean exit.
    let (status, body) = job.post("/v1/stop", r#"{"savepoint": false}"#);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["savepointId"], Value::Null);
    let (exit, stderr) = job.exit();
    assert!(exit.success(), "{stderr}");
    assert!(stderr.contains("stopped without a savepoint"), "{stderr}");
}

#[test]
fn stop_with_savepoint_through_the_api_exits_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let expected = reference(JOB, KILL_EVENTS, dir.path());
    let out = dir.path().join("out");
    let manifest = write_manifest(dir.path(), JOB, KILL_EVENTS, &out);
    let job = Job::start(&manifest, dir.path(), &[]);
    wait_until("records to flow", TIMEOUT, || job.source_records() > 0);

    let savepoints = dir.path().join("savepoints");
    let request = json!({ "savepoint": true, "targetDirectory": savepoints }).to_string();
    let (status, body) = job.post("/v1/stop", &request);
    assert_eq!(status, 202, "{body}");
    let id = body["savepointId"].as_str().unwrap().to_string();
    // One stop at a time.
    let (status, body) = job.post("/v1/stop", &request);
    assert_eq!(status, 409, "{body}");
    let outcome = job.savepoint_outcome(&id);
    assert_eq!(outcome["status"], "completed", "{outcome}");
    assert_eq!(outcome["stop"], true);
    let location = outcome["location"].as_str().unwrap().to_string();
    let (exit, stderr) = job.exit();
    assert!(exit.success(), "{stderr}");
    let committed = JsonLinesSink::committed_lines(&out).unwrap().len();
    assert!(committed < expected.len(), "stopped after all output");

    let resumed = sluice()
        .arg("run")
        .arg(&manifest)
        .args(["--restore", &location, "--parallelism", "3"])
        .arg("--state-dir")
        .arg(dir.path().join("state-2"))
        .args(["--progress-interval", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("restoring from {location}")),
        "{stderr}"
    );
    assert_same(
        &sorted_output(&out),
        &expected,
        "stopped through the control API, resumed at 3",
    );
}

#[test]
fn without_a_token_the_api_listens_on_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), JOB, 1_000, &dir.path().join("out"));
    let result = sluice()
        .arg("run")
        .arg(&manifest)
        .args(["--control-addr", "0.0.0.0:0"])
        .env_remove("SLUICE_CONTROL_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "{stderr}");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without a token"),
        "{stderr}"
    );
}

#[test]
fn a_failed_job_reports_the_failing_operator_and_its_cause() {
    let records: Vec<_> = (0..10_000u64)
        .map(|i| Record::new(EventTime(i as i64), i))
        .collect();
    let job = JobBuilder::new("fail", 2, 128);
    job.source(
        "src",
        VecSource::new(vec![records.clone(), records]),
        WatermarkStrategy::monotonous(),
    )
    .rebalance("spread", 2)
    .sink("broken", BrokenSink);
    let running = start_embedded(job.build().unwrap(), RunOptions::default()).unwrap();
    wait_until("the job to end", TIMEOUT, || running.is_finished());
    let status = JobControl::status(&running);
    assert_eq!(status.phase, Phase::Failed);
    assert!(!status.errors.is_empty());
    for e in &status.errors {
        // The sink's error names no operator: the subtask's chain (spread → broken) is named
        // by its first operator.
        assert_eq!(e.operator.as_deref(), Some("spread"), "{e:?}");
        assert_eq!(e.cause, "broken-sink: disk full");
    }
    let failed = status
        .subtasks
        .iter()
        .filter(|t| t.state == SubtaskState::Failed)
        .count();
    assert_eq!(failed, status.errors.len());
    assert!(running.wait().is_err());
}

/// A record that fails to parse: the error names the source and its subtask, the line, and
/// where the split stopped (the five records before it read); an error with a cause lists
/// the chain down to the operating system's.
#[test]
fn an_error_carries_its_input_position_and_cause_chain() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut lines: Vec<String> = (0..5).map(|i| format!("[{i}, {i}]")).collect();
    lines.push("[5, oops]".into());
    lines.extend((6..9).map(|i| format!("[{i}, {i}]")));
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let job = JobBuilder::new("parse", 1, 128);
    job.source(
        "lines",
        JsonLinesSource::new(&input, 1, |r: &(i64, i64)| EventTime(r.0)),
        WatermarkStrategy::monotonous(),
    )
    .sink("out", DiscardSink);
    let running = start_embedded(job.build().unwrap(), RunOptions::default()).unwrap();
    wait_until("the job to end", TIMEOUT, || running.is_finished());
    let status = JobControl::status(&running);
    assert!(running.wait().is_err());
    assert_eq!(status.errors.len(), 1, "{:?}", status.errors);
    let e = &status.errors[0];
    assert_eq!(
        (e.operator.as_deref(), e.subtask),
        (Some("lines"), Some(0)),
        "{e:?}"
    );
    assert!(e.cause.contains("line 6:"), "{e:?}");
    let input_position = e.input.as_ref().expect("an input position");
    assert_eq!(
        input_position.splits,
        [SplitPositionStatus {
            split: 0,
            position: 5
        }],
        "{e:?}"
    );

    // A sink directory under a regular file: the error wraps the operating system's.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let job = JobBuilder::new("unwritable", 1, 128);
    job.source(
        "src",
        VecSource::new(vec![vec![Record::new(EventTime(1), 1u64)]]),
        WatermarkStrategy::monotonous(),
    )
    .sink("files", JsonLinesSink::new(file.join("out")));
    let running = start_embedded(job.build().unwrap(), RunOptions::default()).unwrap();
    wait_until("the job to end", TIMEOUT, || running.is_finished());
    let status = JobControl::status(&running);
    assert!(running.wait().is_err());
    let e = &status.errors[0];
    assert!(e.cause.contains("a-file/out"), "{e:?}");
    let not_a_directory = std::io::Error::from_raw_os_error(20).to_string();
    assert_eq!(e.causes, [not_a_directory], "{e:?}");
    assert_eq!(e.input.as_ref().map(|i| i.records_in), Some(0), "{e:?}");
}

/// A bug in job code that one key's data reaches: the error names the key, in its cause and
/// as a field, with the key group computed from the key itself. With keys redacted only the
/// group shows, and the key appears nowhere in the status or the job's error.
#[test]
fn an_error_names_the_key_it_failed_on_unless_keys_are_redacted() {
    let group = key_group(stable_hash(&OVERFLOWING_CARD.to_string()), 128);
    let shown = format!("{OVERFLOWING_CARD:?}");
    for redact_keys in [false, true] {
        let job = JobBuilder::new("cards", 1, 128);
        card_totals(&job);
        let options = RunOptions {
            redact_keys,
            ..RunOptions::default()
        };
        let running = Arc::new(start_embedded(job.build().unwrap(), options).unwrap());
        let metrics_port = BoundMetrics::bind("127.0.0.1:0").unwrap();
        let metrics_url = format!("http://{}/v1/job", metrics_port.local_addr());
        let _metrics = metrics_port.serve(running.clone()).unwrap();
        wait_until("the job to end", TIMEOUT, || running.is_finished());
        let status = JobControl::status(running.as_ref());
        let error = running.wait().unwrap_err().to_string();
        assert_eq!(status.errors.len(), 1, "{:?}", status.errors);
        // The metrics port needs no token: there the key is redacted whatever the setting.
        let unauthenticated = ureq::get(&metrics_url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string();
        let unauthenticated: JobStatus = serde_json::from_str(&unauthenticated.unwrap()).unwrap();
        let mut redacted = status.errors[0].clone();
        redacted.redact_key();
        assert_eq!(unauthenticated.errors, [redacted]);
        assert!(!serde_json::to_string(&unauthenticated)
            .unwrap()
            .contains(OVERFLOWING_CARD));
        let e = &status.errors[0];
        assert_eq!(
            (e.operator.as_deref(), e.subtask, e.key_group),
            (Some("totals"), Some(0), Some(group)),
            "{e:?}"
        );
        assert!(
            e.cause
                .contains(&format!("job code panicked: {OVERFLOW_MESSAGE}")),
            "{e:?}"
        );
        if redact_keys {
            assert_eq!(e.key, None, "{e:?}");
            let at = format!("at key <redacted> (key group {group})");
            assert!(e.cause.contains(&at), "{e:?}");
            let everything = serde_json::to_string(&status).unwrap() + &error;
            assert!(!everything.contains(OVERFLOWING_CARD), "{everything}");
        } else {
            assert_eq!(e.key.as_deref(), Some(shown.as_str()), "{e:?}");
            let at = format!("at key {shown} (key group {group})");
            assert!(e.cause.contains(&at), "{e:?}");
            assert!(error.contains(&at), "{error}");
        }
    }
}

/// A window function that panics for one key when its window fires: the error names that
/// key and its group, as for a process function (windows fire outside any record's batch).
#[test]
fn a_window_that_panics_when_it_fires_names_the_key() {
    const CURSED: u64 = 13;
    let records: Vec<Record<(u64, i64)>> = (0..2_000u64)
        .map(|i| Record::new(EventTime(i as i64), (i % 20, 1)))
        .collect();
    let job = JobBuilder::new("windows", 1, 128);
    job.source(
        "src",
        VecSource::new(vec![records]),
        WatermarkStrategy::monotonous(),
    )
    .key_by(|r: &(u64, i64)| r.0)
    .window(TumblingEventTime::of(Duration::from_secs(1)))
    .aggregate("count", Count, |k: &u64, w, c| {
        assert!(*k != CURSED, "key {CURSED}'s window is cursed");
        (*k, w.start, c)
    })
    .sink("out", DiscardSink);
    let running = start_embedded(job.build().unwrap(), RunOptions::default()).unwrap();
    wait_until("the job to end", TIMEOUT, || running.is_finished());
    let status = JobControl::status(&running);
    assert!(running.wait().is_err());
    assert_eq!(status.errors.len(), 1, "{:?}", status.errors);
    let e = &status.errors[0];
    let group = key_group(stable_hash(&CURSED), 128);
    assert_eq!(
        (e.operator.as_deref(), e.key.as_deref(), e.key_group),
        (Some("count"), Some("13"), Some(group)),
        "{e:?}"
    );
    let at = format!("at key 13 (key group {group}): job code panicked: key 13's window");
    assert!(e.cause.contains(&at), "{e:?}");
}

/// Half the records carry one key: the status counts, per key group of the keyed operator,
/// exactly the records each key group was sent, as computed from the keys themselves, and
/// the hot key's group stands out.
#[test]
fn a_skewed_key_shows_in_the_key_group_counts() {
    const HOT_KEY: u64 = 7;
    let records: Vec<Record<(u64, i64)>> = (0..20_000u64)
        .map(|i| {
            let key = if i % 2 == 0 { HOT_KEY } else { i % 1_000 };
            Record::new(EventTime(i as i64), (key, 1))
        })
        .collect();
    let mut expected = vec![0u64; 128];
    for r in &records {
        expected[key_group(stable_hash(&r.value.0), 128) as usize] += 1;
    }
    let (first, second) = records.split_at(records.len() / 2);
    let job = JobBuilder::new("skewed", 2, 128);
    job.source(
        "src",
        VecSource::new(vec![first.to_vec(), second.to_vec()]),
        WatermarkStrategy::monotonous(),
    )
    .key_by(|r: &(u64, i64)| r.0)
    .window(TumblingEventTime::of(Duration::from_secs(1)))
    .aggregate("count", Count, |k, w, c| (*k, w.start, c))
    .sink("out", DiscardSink);
    let running = start_embedded(job.build().unwrap(), RunOptions::default()).unwrap();
    wait_until("the job to end", TIMEOUT, || running.is_finished());
    let status = JobControl::status(&running);
    running.wait().unwrap();

    let counted = status.key_group_records();
    assert_eq!(counted.keys().collect::<Vec<_>>(), vec![&"count"]);
    assert_eq!(counted["count"], expected);
    let hot = key_group(stable_hash(&HOT_KEY), 128) as usize;
    let (busiest, _) = counted["count"]
        .iter()
        .enumerate()
        .max_by_key(|(_, n)| **n)
        .unwrap();
    assert_eq!(busiest, hot);
    // At least half of all records, against 1/128 of them in an even spread.
    assert!(counted["count"][hot] * 2 >= records.len() as u64);

    // Each split of the source, with where its reader ended: all of its records read.
    let splits: Vec<(u32, u64)> = status
        .subtasks
        .iter()
        .filter(|t| t.source)
        .flat_map(|t| t.splits.iter().map(|s| (s.split, s.position)))
        .collect();
    assert_eq!(
        splits,
        [(0, first.len() as u64), (1, second.len() as u64)],
        "{:#?}",
        status.subtasks
    );
    let watermarks: Vec<Option<i64>> = status
        .subtasks
        .iter()
        .flat_map(|t| t.splits.iter().map(|s| s.watermark_ms))
        .collect();
    // The monotonous strategy: the last timestamp of the split, less one.
    let last = |part: &[Record<(u64, i64)>]| part.last().map(|r| r.ts.0 - 1);
    assert_eq!(watermarks, [last(first), last(second)]);
}

/// End-to-end latency, from latency markers: to a sink whose output a checkpoint commits
/// (JSON-lines files), it counts the wait for that commit; to one that only counts its
/// records, it is the pipeline's own delay. Only sink subtasks report it, and `/metrics`
/// serves it as a histogram.
#[test]
fn end_to_end_latency_runs_to_the_commit_that_makes_output_visible() {
    let median = |output: &str, checkpoint_interval: &str| {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("paced.yaml");
        let output = match output {
            "files" => dir.path().join("out").display().to_string(),
            other => other.to_string(),
        };
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: sluice.dev/v1alpha1\nkind: StreamJob\nmetadata: {{name: paced}}\n\
                 spec:\n  job:\n    name: nexmark-q0\n    config:\n      \
                 generator: {{events: 1000000000, maxEventsPerSecond: 20000}}\n      \
                 output: {output}\n  parallelism: 1\n"
            ),
        )
        .unwrap();
        let job = Job::start_checkpointed(&manifest, dir.path(), checkpoint_interval);
        let mut status: Option<JobStatus> = None;
        wait_until("40 latency samples", TIMEOUT, || {
            let s: JobStatus = serde_json::from_value(job.json("/v1/job")).unwrap();
            let samples: u64 = s
                .subtasks
                .iter()
                .map(|t| t.end_to_end_latency.samples())
                .sum();
            status = Some(s);
            samples >= 40
        });
        let status = status.unwrap();
        for t in status.subtasks.iter().filter(|t| !t.sink) {
            assert_eq!(t.end_to_end_latency.samples(), 0, "{t:?}");
        }
        let sink = status.subtasks.iter().find(|t| t.sink).unwrap();
        let text = job.request_url("GET", job.metrics.as_deref().unwrap()).1;
        let total = format!(
            "sluice_sink_end_to_end_latency_seconds_bucket{{job=\"{}\",operator=\"{}\",subtask=\"0\",le=\"+Inf\"}} ",
            status.name, sink.operator
        );
        let line = text.lines().find(|l| l.starts_with(&total));
        let served: u64 = line
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {total} in\n{text}"));
        assert!(served >= sink.end_to_end_latency.samples(), "{text}");
        let median = sink.end_to_end_latency.quantile_seconds(0.5).unwrap();
        eprintln!(
            "{output}, checkpoints every {checkpoint_interval}: median latency under {median} s"
        );
        median
    };
    // A marker waits for the next barrier (on average half the 2 s interval), then for the
    // checkpoint to complete and commit the files.
    let committed = median("files", "2s");
    assert!(committed >= 0.5, "{committed} s");
    // Counted on arrival: nothing waits for the checkpoint.
    let counted = median("discard", "60s");
    assert!(counted < 0.5, "{counted} s");
}

/// The job page in a real browser, as a user opens it through `kubectl port-forward`: on the
/// metrics port, without a token. A sink throttled to 2,000 records/s behind unthrottled
/// sources must be named the bottleneck within a minute, the graph must show both groups
/// and the edge between them, and a click on a group must list its subtasks.
#[test]
fn the_job_page_names_the_bottleneck_and_lists_a_groups_subtasks() {
    let Some(mut browser) = Browser::start("the job page") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("throttled.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: sluice.dev/v1alpha1\nkind: StreamJob\nmetadata: {name: throttled}\n\
         spec:\n  job:\n    name: nexmark-q0\n    config:\n      \
         generator: {events: 1000000000}\n      \
         sink: {parallelism: 1, maxRecordsPerSecond: 2000}\n  parallelism: 2\n",
    )
    .unwrap();
    let job = Job::start_checkpointed(&manifest, dir.path(), "1s");
    let metrics = job.metrics.clone().expect("the metrics port's address");
    let page = metrics.trim_end_matches("metrics");
    let (code, html) = job.request_url("GET", page);
    assert_eq!(code, 200, "{html}");
    assert_eq!(
        job.get("/", Some(TOKEN)).1,
        html,
        "the control API serves the same page"
    );
    assert_eq!(job.get("/", None).0, 401, "but not without the token");

    let started = Instant::now();
    browser.navigate(page);
    browser.wait_for(
        "the job graph",
        "document.querySelectorAll('#graph .group').length === 2",
        "document.getElementById('graph').outerHTML",
        TIMEOUT,
    );
    let groups =
        browser.eval("[...document.querySelectorAll('#graph .group')].map(g => g.dataset.group)");
    assert_eq!(groups, json!(["nexmark", "to-sink"]));
    let edges = browser
        .eval("[...document.querySelectorAll('#graph .edge-label')].map(e => e.textContent)");
    assert_eq!(edges, json!(["rebalance"]));

    browser.wait_for(
        "the throttled sink named as the bottleneck",
        "document.getElementById('bottleneck').dataset.group === 'to-sink'",
        "document.getElementById('bottleneck').textContent",
        Duration::from_secs(60),
    );
    eprintln!(
        "bottleneck named {:?} after the page opened",
        started.elapsed()
    );
    let banner = browser.eval("document.getElementById('bottleneck').textContent");
    assert!(
        banner
            .as_str()
            .unwrap()
            .contains("while nexmark waits on its output"),
        "{banner}"
    );
    let marked = browser.eval(
        "[...document.querySelectorAll('#graph .group.bottleneck')].map(g => g.dataset.group)",
    );
    assert_eq!(marked, json!(["to-sink"]));
    // The sources wait on the sink most of the time: their box is coloured so.
    let waiting = browser.eval(
        "Number(document.querySelector('#graph .group[data-group=nexmark]').dataset.backpressured)",
    );
    assert!(
        waiting.as_f64().unwrap() > 0.5,
        "nexmark backpressured {waiting}"
    );

    // The figures: the phase, a rate read near the throttle (2,000/s and what the queues
    // between take in), and checkpoints as they complete.
    assert_eq!(
        browser.eval("document.getElementById('phase').textContent"),
        "running"
    );
    browser.wait_for(
        "a throughput figure",
        "document.getElementById('throughput').textContent !== '–'",
        "document.querySelector('header').textContent",
        TIMEOUT,
    );
    browser.wait_for(
        "two checkpoints listed",
        "document.querySelectorAll('#checkpoints tbody tr').length >= 2",
        "document.getElementById('checkpoints').outerHTML",
        TIMEOUT,
    );
    // Under backpressure a barrier waits behind full queues: the sink's subtask, fed by
    // both sources, spends time aligning, and says so.
    let status = job.json("/v1/job");
    let sink = status["subtasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["operator"] == "to-sink")
        .unwrap();
    assert!(sink["aligningSeconds"].as_f64().unwrap() > 0.0, "{sink}");
    // And its input channels are full: it cannot keep up with what the sources send.
    assert!(sink["inputBufferFill"].as_f64().unwrap() > 0.5, "{sink}");
    let first = browser.eval(
        "[...document.querySelectorAll('#checkpoints tbody tr')[0].cells].map(c => c.textContent)",
    );
    assert_eq!(first[1], "checkpoint", "{first}");
    assert_ne!(
        browser.eval("document.getElementById('state-size').textContent"),
        "–"
    );

    browser.click("#graph .group[data-group=nexmark]");
    browser.wait_for(
        "the subtasks of nexmark",
        "document.querySelector('#subtasks[data-group=nexmark]') && \
         document.querySelectorAll('#subtasks tbody tr').length === 2",
        "document.getElementById('subtasks').outerHTML",
        TIMEOUT,
    );
    let rows = browser.eval(
        "[...document.querySelectorAll('#subtasks tbody tr')].map(r => [...r.cells].slice(0, 2).map(c => c.textContent))",
    );
    assert_eq!(rows, json!([["0", "running"], ["1", "running"]]));

    // The sink's one subtask: its input channels full, and the latency of what it writes
    // measured from the markers that came through them.
    browser.click("#graph .group[data-group=to-sink]");
    let cells =
        "[...document.querySelectorAll('#subtasks tbody tr')[0].cells].map(c => c.textContent)";
    browser.wait_for(
        "the sink's input fill and latency",
        &format!(
            "document.querySelector('#subtasks[data-group=to-sink]') && (() => {{ \
             const c = {cells}; return c[8].endsWith('%') && c[9] !== '–'; }})()"
        ),
        "document.getElementById('subtasks').outerHTML",
        TIMEOUT,
    );
    let row = browser.eval(cells);
    let fill: f64 = row[8]
        .as_str()
        .unwrap()
        .trim_end_matches(" %")
        .parse()
        .unwrap();
    assert!(fill > 50.0, "{row}");

    // For the documentation: the page as the user sees it.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("job-page.png");
    browser.screenshot(&shot);
    eprintln!("screenshot at {}", shot.display());
}

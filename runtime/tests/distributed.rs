//! Distributed mode on localhost: one `sluice coordinator` and `sluice worker` processes,
//! checked against the embedded engine's output.

mod common;

use common::run::{job_config, reference, sluice, sorted_output, Lcg, KILL_EVENTS};
use common::{assert_same, card_totals, wait_until, OVERFLOWING_CARD, OVERFLOW_MESSAGE};
use serde_json::{json, Value};
use sluice_runtime::cluster::{
    run_worker, CoordinatorConfig, JobCoordinator, RestartPolicy, WorkerConfig,
};
use sluice_runtime::control::JobControl;
use sluice_runtime::jobs::JobRegistry;
use sluice_runtime::state::{key_group, stable_hash};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const TOKEN: &str = "cluster-token-8d2e";

/// The tests of this file run one at a time: each runs a coordinator and several workers,
/// and two clusters sharing a small machine would make heartbeats late and restarts
/// spurious.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
const TIMEOUT: Duration = Duration::from_secs(180);

/// A child process whose standard error is collected (and drained, so it never blocks).
struct Process {
    child: Child,
    log: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
    reader: Option<JoinHandle<()>>,
}

impl Process {
    fn spawn(mut command: std::process::Command) -> Process {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("SLUICE_CONTROL_TOKEN")
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        Process {
            child,
            log,
            lines,
            reader: Some(reader),
        }
    }

    /// Waits for a line starting with `prefix` and returns the rest of it.
    fn printed_after(&self, prefix: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(i) = line.find(prefix) {
                        return line[i + prefix.len()..].to_string();
                    }
                }
                Err(_) => panic!("'{prefix}' never printed:\n{}", self.log()),
            }
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn exit(mut self) -> (ExitStatus, String) {
        let mut status = None;
        wait_until("the process to exit", TIMEOUT, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        (status.unwrap(), self.log())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A coordinator and its workers.
struct Cluster {
    dir: PathBuf,
    coordinator: Option<Process>,
    address: String,
    api: String,
    agent: ureq::Agent,
    workers: HashMap<String, Process>,
}

/// Starts a coordinator listening for workers at `listen`; returns it, its API's URL and
/// the address it listens at.
fn spawn_coordinator(
    manifest: &Path,
    dir: &Path,
    args: &[&str],
    listen: &str,
) -> (Process, String, String) {
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let mut command = sluice();
    command
        .arg("coordinator")
        .arg(manifest)
        .args(["--listen", listen, "--control-addr", "127.0.0.1:0"])
        .arg("--control-token-file")
        .arg(&token)
        .args(args);
    let coordinator = Process::spawn(command);
    let api = coordinator.printed_after("control API listening on ");
    let address = coordinator.printed_after("listening for workers on ");
    (coordinator, api, address)
}

impl Cluster {
    fn start(manifest: &Path, dir: &Path, args: &[&str], workers: &[&str], slots: u32) -> Cluster {
        Self::start_with_worker_args(manifest, dir, args, workers, slots, &[])
    }

    fn start_with_worker_args(
        manifest: &Path,
        dir: &Path,
        args: &[&str],
        workers: &[&str],
        slots: u32,
        worker_args: &[&str],
    ) -> Cluster {
        let (coordinator, api, address) = spawn_coordinator(manifest, dir, args, "127.0.0.1:0");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(TIMEOUT))
            .build()
            .into();
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            coordinator: Some(coordinator),
            address,
            api,
            agent,
            workers: HashMap::new(),
        };
        for name in workers {
            cluster.add_worker_with_args(name, slots, worker_args);
        }
        cluster
    }

    fn add_worker(&mut self, name: &str, slots: u32) {
        self.add_worker_with_args(name, slots, &[]);
    }

    fn add_worker_with_args(&mut self, name: &str, slots: u32, args: &[&str]) {
        let mut command = sluice();
        command
            .arg("worker")
            .args(["--coordinator", &self.address, "--name", name])
            .args(["--slots", &slots.to_string(), "--data-addr", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(self.dir.join(format!("state-{name}")))
            .args(args);
        self.workers
            .insert(name.to_string(), Process::spawn(command));
    }

    /// Kills the coordinator with SIGKILL and waits until it is gone; returns its log.
    fn kill_coordinator(&mut self) -> String {
        let coordinator = self.coordinator.take().unwrap();
        coordinator.signal(libc::SIGKILL);
        coordinator.exit().1
    }

    /// Starts a coordinator at the address of the one before it.
    fn start_coordinator_again(&mut self, manifest: &Path, args: &[&str]) {
        assert!(self.coordinator.is_none(), "a coordinator is running");
        let (coordinator, api, address) =
            spawn_coordinator(manifest, &self.dir, args, &self.address);
        assert_eq!(address, self.address);
        self.coordinator = Some(coordinator);
        self.api = api;
    }

    /// Waits until every worker's log has printed `text` (once more than `before` times).
    fn wait_for_workers_to_print(&self, text: &str, before: usize) {
        wait_until(&format!("every worker to print '{text}'"), TIMEOUT, || {
            self.workers
                .values()
                .all(|w| w.log().matches(text).count() > before)
        });
    }

    /// The worker processes' ids, by name, asserting that each is still running.
    fn running_workers(&mut self) -> HashMap<String, u32> {
        self.workers
            .iter_mut()
            .map(|(name, w)| {
                assert!(w.running(), "worker {name} exited:\n{}", w.log());
                (name.clone(), w.child.id())
            })
            .collect()
    }

    fn coordinator(&self) -> &Process {
        self.coordinator.as_ref().unwrap()
    }

    fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut request = self.agent.get(format!("{}{path}", self.api));
        if let Some(t) = token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        let mut response = request.call().unwrap_or_else(|e| {
            let log = self
                .coordinator
                .as_ref()
                .map(Process::log)
                .unwrap_or_default();
            panic!("GET {path}: {e}; the coordinator printed:\n{log}")
        });
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    fn post(&self, path: &str, body: &str) -> (u16, String) {
        let mut response = self
            .agent
            .post(format!("{}{path}", self.api))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .content_type("application/json")
            .send(body)
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    fn job(&self) -> Value {
        let (status, text) = self.get("/v1/job", Some(TOKEN));
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    fn wait_for_phase(&self, phase: &str) -> Value {
        let mut job = Value::Null;
        wait_until(&format!("phase {phase}"), TIMEOUT, || {
            job = self.job();
            job["phase"] == json!(phase)
        });
        job
    }

    /// Waits for the coordinator to exit; returns its status and what it and each worker
    /// printed. Every worker exits with it.
    fn exit(&mut self) -> (ExitStatus, String, HashMap<String, String>) {
        let (status, log) = self.coordinator.take().unwrap().exit();
        let mut logs = HashMap::new();
        for (name, worker) in self.workers.drain() {
            let (worker_status, worker_log) = worker.exit();
            assert!(
                worker_status.success(),
                "worker {name} after the job ended:\n{worker_log}\ncoordinator:\n{log}"
            );
            logs.insert(name, worker_log);
        }
        (status, log, logs)
    }
}

fn manifest(dir: &Path, name: &str, job: &str, parallelism: usize, config: &Value) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let manifest = json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "StreamJob",
        "metadata": {"name": name},
        "spec": {"job": {"name": job, "config": config}, "parallelism": parallelism},
    });
    std::fs::write(&path, serde_yaml::to_string(&manifest).unwrap()).unwrap();
    path
}

fn sum(job: &Value, field: &str, filter: impl Fn(&Value) -> bool) -> u64 {
    job["subtasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| filter(s))
        .map(|s| s[field].as_u64().unwrap())
        .sum()
}

#[test]
fn three_workers_produce_exactly_the_embedded_output_of_the_stateful_queries() {
    let _serial = one_cluster_at_a_time();
    let events = 400_000;
    for job in [
        "nexmark-q3",
        "nexmark-q4",
        "nexmark-q5",
        "nexmark-q7",
        "nexmark-q8",
        "nexmark-q11",
        "fraud-small-then-large",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let expected = reference(job, events, dir.path());
        let out = dir.path().join("out");
        let manifest = manifest(dir.path(), "job", job, 3, &job_config(events, &out));
        let chk = dir.path().join("chk");
        let mut cluster = Cluster::start(
            &manifest,
            dir.path(),
            &[
                "--checkpoint-interval",
                "300ms",
                "--checkpoint-dir",
                chk.to_str().unwrap(),
            ],
            &["a", "b", "c"],
            1,
        );
        let (status, log, workers) = cluster.exit();
        assert!(status.success(), "{job}:\n{log}");
        for (name, worker) in &workers {
            assert!(
                worker.contains("runs ") && !worker.contains("runs 0 subtask"),
                "{job}: worker {name} ran nothing:\n{worker}"
            );
        }
        assert_same(
            &sorted_output(&out),
            &expected,
            &format!("{job} on 3 workers"),
        );
    }
}

#[test]
fn a_worker_killed_repeatedly_recovers_from_the_latest_checkpoint_exactly_once() {
    let _serial = one_cluster_at_a_time();
    let job = "nexmark-q5";
    let dir = tempfile::tempdir().unwrap();
    let expected = reference(job, KILL_EVENTS, dir.path());
    let out = dir.path().join("out");
    let manifest = manifest(dir.path(), "q5", job, 3, &job_config(KILL_EVENTS, &out));
    let chk = dir.path().join("chk");
    let mut cluster = Cluster::start(
        &manifest,
        dir.path(),
        &[
            "--checkpoint-interval",
            "200ms",
            "--checkpoint-dir",
            chk.to_str().unwrap(),
            "--restart-initial-backoff",
            "100ms",
            "--worker-timeout",
            "5s",
        ],
        &["w0", "w1", "w2"],
        1,
    );
    let mut rng = Lcg(11);
    for round in 0..4 {
        // Kill once a checkpoint of this attempt completed, at a random moment after it.
        let completed = cluster.wait_for_phase("running")["checkpoints"]["completed"].clone();
        wait_until("a checkpoint", TIMEOUT, || {
            cluster.job()["checkpoints"]["completed"] != completed
        });
        std::thread::sleep(Duration::from_millis(50 + rng.below(300)));
        let restarts = cluster.job()["restarts"]["count"].as_u64().unwrap();
        let mut names: Vec<String> = cluster.workers.keys().cloned().collect();
        names.sort();
        let victim = names[rng.below(names.len() as u64) as usize].clone();
        let worker = cluster.workers.remove(&victim).unwrap();
        if round == 3 {
            // Frozen rather than dead: only the missing heartbeats tell.
            worker.signal(libc::SIGSTOP);
        } else {
            worker.signal(libc::SIGKILL);
        }
        cluster.add_worker(&format!("w{}", round + 3), 1);
        wait_until("the restart", TIMEOUT, || {
            cluster.job()["restarts"]["count"].as_u64().unwrap() > restarts
        });
        let status = cluster.job();
        assert!(
            status["restarts"]["lastFailure"]
                .as_str()
                .unwrap()
                .contains(&format!("worker {victim}")),
            "{status}"
        );
        drop(worker);
    }
    let (status, log, workers) = cluster.exit();
    assert!(status.success(), "{log}");
    let restarts: u32 = log
        .lines()
        .find_map(|l| l.strip_suffix(" restart(s)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no restart count:\n{log}"));
    assert!(restarts >= 4, "{log}\n{workers:#?}");
    assert!(log.matches("restoring file://").count() >= 3, "{log}");
    assert_same(
        &sorted_output(&out),
        &expected,
        "q5 after 4 worker failures",
    );
}

#[test]
fn a_savepoint_taken_on_three_workers_restores_on_two_and_on_four() {
    let _serial = one_cluster_at_a_time();
    let job = "nexmark-q5";
    let dir = tempfile::tempdir().unwrap();
    let expected = reference(job, KILL_EVENTS, dir.path());
    let out = dir.path().join("out");
    let config = job_config(KILL_EVENTS, &out);
    let savepoints = dir.path().join("savepoints");
    let savepoint_arg = ["--savepoint-dir", savepoints.to_str().unwrap()];
    let first = manifest(dir.path(), "q5", job, 3, &config);
    let mut cluster = Cluster::start(&first, dir.path(), &savepoint_arg, &["a", "b", "c"], 1);
    wait_until("the job to make progress", TIMEOUT, || {
        sum(&cluster.job(), "recordsIn", |s| s["source"] == json!(true)) > 200_000
    });
    cluster.coordinator().signal(libc::SIGTERM);
    let (status, log, _) = cluster.exit();
    assert!(status.success(), "{log}");
    let savepoint = log
        .lines()
        .find_map(|l| l.split("resume with --restore ").nth(1))
        .unwrap_or_else(|| panic!("no savepoint reported:\n{log}"))
        .to_string();
    let before_stop: Vec<PathBuf> = files(&out);
    assert!(
        sorted_output(&out).len() < expected.len(),
        "the job ended before it was stopped"
    );
    for (parallelism, workers) in [(2, vec!["d", "e"]), (4, vec!["f", "g", "h", "i"])] {
        // Each restore starts from what the stopped run committed.
        for f in files(&out) {
            if !before_stop.contains(&f) {
                std::fs::remove_file(f).unwrap();
            }
        }
        let resumed = manifest(dir.path(), "q5", job, parallelism, &config);
        let mut cluster = Cluster::start(
            &resumed,
            dir.path(),
            &["--restore", &savepoint],
            &workers,
            1,
        );
        let (status, log, _) = cluster.exit();
        assert!(status.success(), "{log}");
        assert!(log.contains(&format!("restoring {savepoint}")), "{log}");
        assert_same(
            &sorted_output(&out),
            &expected,
            &format!("q5 stopped on 3 workers, resumed on {parallelism}"),
        );
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

#[test]
fn a_slow_sink_on_one_worker_holds_memory_bounded_on_every_worker() {
    let _serial = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // Far more events than the test lets through: only backpressure stops the sources.
    let config = json!({
        "generator": {"events": 1_000_000_000u64},
        "sink": {"parallelism": 1, "maxRecordsPerSecond": 20_000},
    });
    let manifest = manifest(dir.path(), "q1", "nexmark-q1", 3, &config);
    let mut cluster = Cluster::start(&manifest, dir.path(), &[], &["a", "b", "c"], 1);
    cluster.wait_for_phase("running");
    let mut peak: HashMap<String, u64> = HashMap::new();
    let mut in_flight = 0;
    let started = Instant::now();
    let mut job = Value::Null;
    while started.elapsed() < Duration::from_secs(8) {
        job = cluster.job();
        let sent = sum(&job, "recordsOut", |s| s["source"] == json!(true));
        let received = sum(&job, "recordsIn", |s| s["sink"] == json!(true));
        in_flight = in_flight.max(sent.saturating_sub(received));
        for (name, worker) in &cluster.workers {
            let rss = rss_mib(worker.pid());
            let p = peak.entry(name.clone()).or_default();
            *p = (*p).max(rss);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let read = sum(&job, "recordsIn", |s| s["source"] == json!(true));
    let written = sum(&job, "sinkRecords", |_| true);
    // The sink takes about 20k records a second; unbounded buffering would let the sources
    // read millions a second.
    assert!(written > 50_000, "the sink wrote only {written}:\n{job}");
    assert!(
        read < written + 500_000,
        "sources read {read} events while the sink wrote {written}"
    );
    // Per channel: 8 batches queued, 8 credited, one being written, of 1024 records.
    assert!(
        in_flight < 3 * 17 * 1024 + 3 * 1024,
        "{in_flight} records in flight"
    );
    for s in job["subtasks"].as_array().unwrap() {
        if s["source"] == json!(true) {
            assert!(
                s["backpressuredSeconds"].as_f64().unwrap() > 1.0,
                "source subtask on {} was not held back: {s}",
                s["worker"]
            );
        }
    }
    // The sink is the bottleneck: it works, and waits for nothing downstream. (It once
    // showed as backpressured, from the blocking of deliveries into its own full queue.)
    let sink = job["subtasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sink"] == json!(true))
        .unwrap();
    let busy = sink["busySeconds"].as_f64().unwrap();
    let waiting = sink["backpressuredSeconds"].as_f64().unwrap();
    assert!(waiting < 0.5 && busy > 4.0, "the sink: {sink}");
    for (name, mib) in &peak {
        assert!(*mib < 300, "worker {name} peaked at {mib} MiB");
    }
    let (status, text) = cluster.post("/v1/stop", r#"{"savepoint": false}"#);
    assert_eq!(status, 202, "{text}");
    let (status, log, _) = cluster.exit();
    assert!(status.success(), "{log}");
    assert!(log.contains("stopped without a savepoint"), "{log}");
}

#[test]
fn the_coordinators_api_refuses_requests_without_the_token_and_reports_the_workers() {
    let _serial = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"generator": {"events": 1_000_000_000u64, "eventsPerSecond": 50_000}});
    let manifest = manifest(dir.path(), "q5", "nexmark-q5", 2, &config);
    let mut cluster = Cluster::start(&manifest, dir.path(), &[], &["a", "b"], 1);
    for path in ["/v1/job", "/metrics", "/v1/savepoints"] {
        let (status, text) = cluster.get(path, None);
        assert_eq!(status, 401, "GET {path} without a token: {text}");
        let (status, _) = cluster.get(path, Some("not-the-token"));
        assert_eq!(status, 401, "GET {path} with a wrong token");
    }
    assert_eq!(cluster.get("/healthz", None).0, 200);
    let job = cluster.wait_for_phase("running");
    assert_eq!(job["parallelism"], json!(2));
    let workers = job["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{job}");
    for w in workers {
        assert_eq!(w["usedSlots"], json!(1), "{job}");
    }
    wait_until("subtasks of both workers", TIMEOUT, || {
        let job = cluster.job();
        let on: std::collections::HashSet<String> = job["subtasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["worker"].as_str().unwrap_or_default().to_string())
            .collect();
        on.contains("a") && on.contains("b")
    });
    // Latency markers cross the shuffle between the workers, and each worker reports its
    // sink subtasks' samples.
    wait_until("latency samples from both sink subtasks", TIMEOUT, || {
        let job = cluster.job();
        let sampled = job["subtasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["sink"] == json!(true))
            .filter(|s| {
                let counts = s["endToEndLatency"]["counts"].as_array();
                counts.is_some_and(|c| c.iter().any(|n| n.as_u64() > Some(0)))
            })
            .count();
        sampled == 2
    });
    let (status, metrics) = cluster.get("/metrics", Some(TOKEN));
    assert_eq!(status, 200);
    assert!(
        metrics.contains("sluice_job_workers{job=\"nexmark-q5\"} 2"),
        "{metrics}"
    );
    let (status, text) = cluster.post("/v1/stop", r#"{"savepoint": false}"#);
    assert_eq!(status, 202, "{text}");
    let (status, log, _) = cluster.exit();
    assert!(status.success(), "{log}");
}

#[test]
fn workers_outlive_a_killed_coordinator_and_finish_the_job_exactly_once_with_its_successor() {
    let _serial = one_cluster_at_a_time();
    let job = "nexmark-q5";
    let dir = tempfile::tempdir().unwrap();
    let expected = reference(job, KILL_EVENTS, dir.path());
    let out = dir.path().join("out");
    let manifest = manifest(dir.path(), "q5", job, 2, &job_config(KILL_EVENTS, &out));
    let chk = dir.path().join("chk");
    let args = [
        "--checkpoint-interval",
        "200ms",
        "--checkpoint-dir",
        chk.to_str().unwrap(),
        "--restore",
        "latest",
    ];
    let mut cluster = Cluster::start(&manifest, dir.path(), &args, &["a", "b"], 1);
    // Killed once a checkpoint completed, while the job still runs (the kill lands after
    // some of its output was committed, and before all of it was).
    let completed = cluster.wait_for_phase("running")["checkpoints"]["completed"].clone();
    wait_until("a checkpoint", TIMEOUT, || {
        cluster.job()["checkpoints"]["completed"] != completed
    });
    let before = cluster.running_workers();
    let first_log = cluster.kill_coordinator();
    assert!(
        sorted_output(&out).len() < expected.len(),
        "the job ended before its coordinator was killed:\n{first_log}"
    );
    let lost = format!("lost the coordinator at {}", cluster.address);
    cluster.wait_for_workers_to_print(&lost, 0);
    assert_eq!(
        cluster.running_workers(),
        before,
        "the workers were replaced"
    );

    cluster.start_coordinator_again(&manifest, &args);
    cluster.wait_for_workers_to_print("registered again with", 0);
    let job = cluster.wait_for_phase("running");
    let mut names: Vec<&str> = job["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"], "{job}");
    assert_eq!(
        cluster.running_workers(),
        before,
        "the workers were replaced"
    );

    let (status, log, workers) = cluster.exit();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("restoring file://"),
        "the new coordinator did not restore the checkpoint:\n{log}"
    );
    for (name, worker) in &workers {
        assert_eq!(worker.matches(&lost).count(), 1, "worker {name}:\n{worker}");
    }
    assert_same(
        &sorted_output(&out),
        &expected,
        "q5 after its coordinator was killed and started again",
    );
}

#[test]
fn a_worker_without_a_coordinator_for_its_loss_timeout_exits_naming_the_address() {
    let _serial = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"generator": {"events": 1_000_000_000u64, "eventsPerSecond": 50_000}});
    let manifest = manifest(dir.path(), "q5", "nexmark-q5", 1, &config);
    let mut cluster = Cluster::start_with_worker_args(
        &manifest,
        dir.path(),
        &[],
        &["a"],
        1,
        &["--coordinator-loss-timeout", "2s"],
    );
    cluster.wait_for_phase("running");
    cluster.kill_coordinator();
    let killed = Instant::now();
    let worker = cluster.workers.remove("a").unwrap();
    let (status, log) = worker.exit();
    let waited = killed.elapsed();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!("no coordinator at {} for", cluster.address))
            && log.contains("--coordinator-loss-timeout"),
        "{log}"
    );
    assert!(
        log.contains(&format!("lost the coordinator at {}", cluster.address)),
        "{log}"
    );
    assert!(waited >= Duration::from_secs(2), "exited after {waited:?}");
}

/// `spec.redactKeys` reaches the workers: a job that fails on one key, run by a coordinator
/// and two workers (threads of this process, with a registry holding the job), reports the
/// failure with the key's group and without the key, to the coordinator's status and in
/// the error the run ends with.
#[test]
fn workers_redact_the_key_an_error_names_when_the_job_says_so() {
    let _serial = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut registry = JobRegistry::new();
    registry.register("card-totals", "running totals per card", |job, _| {
        card_totals(job);
        Ok(())
    });
    let graph = registry.build("card-totals", 2, 128, &json!({})).unwrap();
    let coordinator = JobCoordinator::bind(
        CoordinatorConfig {
            listen: "127.0.0.1:0".into(),
            job: "card-totals".into(),
            config: json!({}),
            parallelism: 2,
            max_parallelism: 128,
            checkpoints: None,
            restore: None,
            allow_non_restored_state: false,
            rocksdb: false,
            restart: RestartPolicy {
                max_attempts: 0,
                ..RestartPolicy::default()
            },
            worker_timeout: Duration::from_secs(30),
            batch_size: 1024,
            channel_capacity: 8,
            redact_keys: true,
            tls: None,
        },
        &graph,
    )
    .unwrap();
    let worker = |name: &str| WorkerConfig {
        coordinator: coordinator.local_addr().to_string(),
        name: name.into(),
        slots: 1,
        data_bind: "127.0.0.1:0".into(),
        advertise_host: None,
        state_dir: dir.path().join(name),
        state_memory: 64 << 20,
        connect_timeout: Duration::from_secs(30),
        coordinator_loss_timeout: Duration::from_secs(30),
        tls: None,
    };
    let (outcome, status) = std::thread::scope(|scope| {
        let workers: Vec<_> = ["a", "b"]
            .map(|name| {
                let (registry, config) = (&registry, worker(name));
                scope.spawn(move || run_worker(registry, config))
            })
            .into_iter()
            .collect();
        let outcome = coordinator.run(&graph);
        let status = JobControl::status(&coordinator);
        coordinator.shutdown_workers("the test is over");
        for w in workers {
            w.join().unwrap().unwrap();
        }
        (outcome, status)
    });
    let error = outcome.unwrap_err().to_string();
    let group = key_group(stable_hash(&OVERFLOWING_CARD.to_string()), 128);
    let at = format!("at key <redacted> (key group {group})");
    assert!(error.contains(&at), "{error}");
    let e = status
        .errors
        .iter()
        .find(|e| e.operator.as_deref() == Some("totals"))
        .unwrap_or_else(|| panic!("no error of `totals`: {:?}", status.errors));
    assert_eq!(
        (e.key.as_deref(), e.key_group),
        (None, Some(group)),
        "{e:?}"
    );
    assert!(e.cause.contains(OVERFLOW_MESSAGE), "{e:?}");
    let everything = serde_json::to_string(&status).unwrap() + &error;
    assert!(!everything.contains(OVERFLOWING_CARD), "{everything}");
}

/// Writes job `job`'s certificates (valid for 127.0.0.1 too, where the tests reach the
/// control API) into a directory, as the operator's Secret is mounted; returns it.
fn certificates(dir: &Path, job: &str) -> PathBuf {
    use sluice_crds::tls::{issue, CA_FILE, CERT_FILE, KEY_FILE};
    let issued = issue(job, &["127.0.0.1".to_string()]).unwrap();
    let at = dir.join(format!("tls-{job}"));
    std::fs::create_dir_all(&at).unwrap();
    std::fs::write(at.join(CA_FILE), issued.ca).unwrap();
    std::fs::write(at.join(CERT_FILE), issued.cert).unwrap();
    std::fs::write(at.join(KEY_FILE), issued.key).unwrap();
    at
}

/// `GET path` over HTTPS to `api` (`https://host:port`), trusting only the CA in
/// `certificates`; the status and the body.
fn https_get(api: &str, path: &str, certificates: &Path) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::CertificateDer::from_pem_file(certificates.join("ca.crt"));
    roots.add(ca.unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let host = api.trim_start_matches("https://");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let session = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut stream = rustls::StreamOwned::new(session, std::net::TcpStream::connect(host).unwrap());
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    // The server closes after answering (`Connection: close`), with or without a
    // close_notify.
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// With `--tls-dir`, the coordinator, the workers and their data connections speak mutual
/// TLS: the job's output is exactly the embedded one, and a worker of another job, a
/// worker without certificates, a plain connection to a worker's data port and plain HTTP
/// to the control API are all refused, without disturbing the job.
#[test]
fn under_mutual_tls_the_output_is_exact_and_peers_without_the_jobs_certificate_are_refused() {
    let _serial = one_cluster_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let job = "nexmark-q5";
    let out = dir.path().join("out");
    let events = 600_000;
    let expected = reference(job, events, dir.path());
    // Paced, so that the job still runs while it is probed.
    let mut config = job_config(events, &out);
    config["generator"]["maxEventsPerSecond"] = json!(40_000);
    let manifest = manifest(dir.path(), "q5", job, 2, &config);
    let mine = certificates(dir.path(), "q5");
    let theirs = certificates(dir.path(), "other");
    let tls = ["--tls-dir", mine.to_str().unwrap()];
    let mut cluster =
        Cluster::start_with_worker_args(&manifest, dir.path(), &tls, &["a", "b"], 1, &tls);
    assert!(cluster.api.starts_with("https://"), "{}", cluster.api);

    // The control API answers over HTTPS, with the job's certificate...
    wait_until("both workers registered", TIMEOUT, || {
        let (status, body) = https_get(&cluster.api, "/v1/job", &mine);
        assert_eq!(status, 200, "{body}");
        let job: Value = serde_json::from_str(&body).unwrap();
        job["workers"].as_array().is_some_and(|w| w.len() == 2)
    });
    // ...and plain HTTP gets no answer.
    let answered = {
        use std::io::{Read, Write};
        let host = cluster.api.trim_start_matches("https://");
        let mut plain = std::net::TcpStream::connect(host).unwrap();
        plain.set_read_timeout(Some(TIMEOUT)).unwrap();
        plain
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer);
        answer.starts_with(b"HTTP/")
    };
    assert!(!answered, "plain HTTP was answered");

    // A plain connection to a worker's data port, sending a data exchange header, is
    // refused before it is read as one.
    let worker_log = cluster.workers["a"].log();
    let data = worker_log
        .split("data at ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no data address in:\n{worker_log}"))
        .to_string();
    {
        use std::io::{Read, Write};
        let mut plain = std::net::TcpStream::connect(&data).unwrap();
        plain.set_read_timeout(Some(TIMEOUT)).unwrap();
        let _ = plain.write_all(&[0u8; 16]);
        let _ = plain.write_all(b"SLX1");
        let mut rest = Vec::new();
        let _ = plain.read_to_end(&mut rest);
    }
    wait_until("the worker to refuse the plain connection", TIMEOUT, || {
        cluster.workers["a"]
            .log()
            .contains("refused a data connection from")
    });

    // Workers that cannot prove they belong to the job are refused by the coordinator
    // (and refuse it), and give up.
    for (who, args) in [
        (
            "another job's worker",
            vec!["--tls-dir", theirs.to_str().unwrap()],
        ),
        ("a worker without certificates", vec![]),
    ] {
        let mut command = sluice();
        command
            .arg("worker")
            .args(["--coordinator", &cluster.address, "--name", "intruder"])
            .args([
                "--data-addr",
                "127.0.0.1:0",
                "--coordinator-loss-timeout",
                "1s",
            ])
            .args(args);
        let (status, log) = Process::spawn(command).exit();
        assert!(!status.success(), "{who}:\n{log}");
    }
    let refused = cluster
        .coordinator()
        .log()
        .matches("refused a connection from")
        .count();
    assert!(refused >= 2, "{}", cluster.coordinator().log());

    let (status, log, workers) = cluster.exit();
    assert!(status.success(), "{log}");
    for (name, worker) in &workers {
        assert!(
            !worker.contains("runs 0 subtask"),
            "worker {name} ran nothing:\n{worker}"
        );
    }
    assert_same(
        &sorted_output(&out),
        &expected,
        "q5 on 2 workers under mutual TLS",
    );
}

//! Running bundled jobs as a user does, through the `sluice` binary, and checking their
//! committed output against an uninterrupted run.

use super::{assert_same, wait_until};
use sluice_runtime::connectors::JsonLinesSink;
use sluice_runtime::exec::{start_embedded, RunOptions};
use sluice_runtime::jobs::JobRegistry;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs with state in RocksDB (the default of `sluice run`) are slower in a test build:
/// fewer events keep them short.
pub const KILL_EVENTS: u64 = 4_000_000;

pub fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

pub fn job_config(events: u64, output: &Path) -> serde_json::Value {
    serde_json::json!({
        "generator": { "events": events },
        "output": output,
    })
}

pub fn sorted_output(dir: &Path) -> Vec<String> {
    let mut lines = JsonLinesSink::committed_lines(dir).unwrap();
    lines.sort();
    lines
}

/// The output of an uninterrupted run, sorted.
pub fn reference(job: &str, events: u64, dir: &Path) -> Vec<String> {
    let out = dir.join(format!("reference-{job}"));
    reference_of(job, &job_config(events, &out), &out)
}

/// The sorted output of `job` with `config`, run embedded at parallelism 2 without
/// failures; `config` writes to directory `out`.
pub fn reference_of(job: &str, config: &serde_json::Value, out: &Path) -> Vec<String> {
    let graph = JobRegistry::bundled().build(job, 2, 128, config).unwrap();
    start_embedded(graph, RunOptions::default())
        .unwrap()
        .wait()
        .unwrap();
    let lines = sorted_output(out);
    assert!(
        !lines.is_empty(),
        "{job}: the reference run produced nothing"
    );
    lines
}

pub fn write_manifest(dir: &Path, job: &str, events: u64, output: &Path) -> PathBuf {
    let path = dir.join(format!("{job}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: StreamJob\nmetadata: {{name: {job}}}\n\
             spec:\n  job:\n    name: {job}\n    config:\n      generator: {{events: {events}}}\n      \
             output: {}\n  parallelism: 2\n",
            output.display()
        ),
    )
    .unwrap();
    path
}

/// A small deterministic generator for kill times, so a failure can be replayed.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Where a killed job keeps its checkpoints.
pub struct CheckpointDir<'a> {
    /// `--checkpoint-dir` of `sluice run`: a directory or a URI.
    pub arg: String,
    /// Environment the runs need to reach it.
    pub env: Vec<(String, String)>,
    /// Reads the `_latest` pointer (empty while there is none).
    pub pointer: Box<dyn Fn() -> String + 'a>,
}

fn resume_command(manifest: &Path, checkpoints: &CheckpointDir, state: &Path) -> Command {
    let mut cmd = sluice();
    cmd.arg("run")
        .arg(manifest)
        .args(["--checkpoint-interval", "100ms", "--restore", "latest"])
        .args(["--state-backend", "rocksdb", "--state-dir"])
        .arg(state)
        .args(["--checkpoint-dir", &checkpoints.arg])
        .args(["--progress-interval", "0"])
        .envs(checkpoints.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Kills the job at random moments, resumes it each time from the latest checkpoint, lets
/// the last attempt finish, and compares everything committed with the reference.
pub fn kill_and_resume(job: &str, seed: u64, dir: &Path, checkpoints: &CheckpointDir) {
    let expected = reference(job, KILL_EVENTS, dir);
    let out = dir.join("out");
    let manifest = write_manifest(dir, job, KILL_EVENTS, &out);
    kill_repeatedly(&manifest, seed, dir, checkpoints);
    assert_same(
        &sorted_output(&out),
        &expected,
        &format!("{job} after 5 kills"),
    );
}

/// Runs `manifest` five times with `sluice run`, killing each run at a random moment after
/// it made progress (state under `dir/rocksdb`), then once more to its end; fails unless
/// at least three runs restored from a checkpoint.
pub fn kill_repeatedly(manifest: &Path, seed: u64, dir: &Path, checkpoints: &CheckpointDir) {
    let state = dir.join("rocksdb");
    let mut rng = Lcg(seed);
    let mut restored = 0;
    for attempt in 0..5 {
        let mut child = resume_command(manifest, checkpoints, &state)
            .spawn()
            .unwrap();
        // After the first attempt, let a checkpoint complete before the next kill so every
        // round makes progress; the kill itself lands at a random moment after that.
        if attempt > 0 {
            let before = (checkpoints.pointer)();
            wait_until("a new checkpoint", Duration::from_secs(60), || {
                (checkpoints.pointer)() != before || child.try_wait().unwrap().is_some()
            });
        }
        std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
        child.kill().unwrap();
        let result = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        restored += stderr.matches("restoring from").count();
    }
    let last = resume_command(manifest, checkpoints, &state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&last.stderr);
    assert!(last.status.success(), "{}: {stderr}", manifest.display());
    restored += stderr.matches("restoring from").count();
    assert!(
        restored >= 3,
        "{}: only {restored} runs restored from a checkpoint",
        manifest.display()
    );
}

/// Everything a child process printed, for assertion messages.
pub fn printed(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// Runs `manifest` with `sluice run` (state under `dir/state`), stops it with SIGTERM once it
/// is under way, and returns the savepoint location it reports; `env` reaches the process.
pub fn stop_with_sigterm(
    manifest: &Path,
    savepoint_dir: &str,
    dir: &Path,
    env: &[(String, String)],
) -> String {
    let child = sluice()
        .arg("run")
        .arg(manifest)
        .args(["--savepoint-dir", savepoint_dir])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--progress-interval", "0"])
        .envs(env.iter().cloned())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop once the job is under way: its RocksDB state directory exists as soon as the
    // operators are built. (Callers check that it stopped before the end of its input.)
    wait_until("the job to start", Duration::from_secs(60), || {
        dir.join("state").exists()
    });
    std::thread::sleep(Duration::from_millis(300));
    sigterm_for_a_savepoint(child)
}

/// Stops a `sluice run` (stderr piped) with SIGTERM and returns the savepoint it reports
/// having stopped with.
pub fn sigterm_for_a_savepoint(child: std::process::Child) -> String {
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let stopped = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(stopped.status.success(), "{stderr}");
    stderr
        .lines()
        .find_map(|l| l.split("resume with --restore ").nth(1))
        .unwrap_or_else(|| panic!("no savepoint reported: {stderr}"))
        .to_string()
}

/// Runs `manifest` to its end from snapshot `location` at `parallelism` (state under
/// `dir/state-2`) and returns what it printed.
pub fn resume(
    manifest: &Path,
    location: &str,
    parallelism: usize,
    dir: &Path,
    env: &[(String, String)],
) -> String {
    let resumed = sluice()
        .arg("run")
        .arg(manifest)
        .args([
            "--restore",
            location,
            "--parallelism",
            &parallelism.to_string(),
        ])
        .arg("--state-dir")
        .arg(dir.join("state-2"))
        .args(["--progress-interval", "0"])
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", printed(&resumed));
    printed(&resumed)
}

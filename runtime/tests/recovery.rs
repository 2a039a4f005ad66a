//! Checkpoints, savepoints and recovery: a job killed with SIGKILL and resumed, savepoints
//! restored at other parallelisms, corrupt checkpoints, incompatible job versions. Every
//! test compares the committed output with an uninterrupted run of the same job.

mod common;

use common::{assert_same, wait_until};
use sluice_runtime::connectors::JsonLinesSink;
use sluice_runtime::exec::{start_embedded, CheckpointConfig, Restore, RunOptions};
use sluice_runtime::jobs::JobRegistry;
use sluice_runtime::snapshot::{CheckpointStorage, SnapshotContent};
use sluice_runtime::state::KeyGroupAssignment;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const EVENTS: u64 = 20_000_000;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

fn job_config(events: u64, output: &Path) -> serde_json::Value {
    serde_json::json!({
        "generator": { "events": events },
        "output": output,
    })
}

fn uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn sorted_output(dir: &Path) -> Vec<String> {
    let mut lines = JsonLinesSink::committed_lines(dir).unwrap();
    lines.sort();
    lines
}

/// The output of an uninterrupted run, sorted.
fn reference(job: &str, events: u64, dir: &Path) -> Vec<String> {
    let out = dir.join(format!("reference-{job}"));
    let graph = JobRegistry::bundled()
        .build(job, 2, 128, &job_config(events, &out))
        .unwrap();
    start_embedded(graph, RunOptions::default())
        .unwrap()
        .wait()
        .unwrap();
    let lines = sorted_output(&out);
    assert!(
        !lines.is_empty(),
        "{job}: the reference run produced nothing"
    );
    lines
}

fn write_manifest(dir: &Path, job: &str, events: u64, output: &Path) -> PathBuf {
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
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn resume_command(manifest: &Path, checkpoints: &Path) -> Command {
    let mut cmd = sluice();
    cmd.arg("run")
        .arg(manifest)
        .args(["--checkpoint-interval", "100ms", "--restore", "latest"])
        .arg("--checkpoint-dir")
        .arg(checkpoints)
        .args(["--progress-interval", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Kills the job at random moments, resumes it each time from the latest checkpoint, lets
/// the last attempt finish, and compares everything committed with the reference.
fn kill_and_resume(job: &str, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let expected = reference(job, EVENTS, dir.path());
    let out = dir.path().join("out");
    let checkpoints = dir.path().join("checkpoints");
    let manifest = write_manifest(dir.path(), job, EVENTS, &out);
    let mut rng = Lcg(seed);
    let mut restored = 0;
    for attempt in 0..5 {
        let mut child = resume_command(&manifest, &checkpoints).spawn().unwrap();
        // After the first attempt, let a checkpoint complete before the next kill so every
        // round makes progress; the kill itself lands at a random moment after that.
        if attempt > 0 {
            let pointer = checkpoints.join("_latest");
            let before = std::fs::read_to_string(&pointer).unwrap_or_default();
            wait_until("a new checkpoint", Duration::from_secs(60), || {
                std::fs::read_to_string(&pointer).unwrap_or_default() != before
                    || child.try_wait().unwrap().is_some()
            });
        }
        std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
        child.kill().unwrap();
        let result = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        restored += stderr.matches("restoring from").count();
    }
    let last = resume_command(&manifest, &checkpoints).output().unwrap();
    let stderr = String::from_utf8_lossy(&last.stderr);
    assert!(last.status.success(), "{job}: {stderr}");
    restored += stderr.matches("restoring from").count();
    assert!(
        restored >= 3,
        "{job}: only {restored} runs restored from a checkpoint"
    );
    assert_same(
        &sorted_output(&out),
        &expected,
        &format!("{job} after 5 kills"),
    );
}

#[test]
fn a_window_job_killed_repeatedly_commits_its_output_exactly_once() {
    kill_and_resume("nexmark-q5", 5);
}

#[test]
fn a_keyed_process_job_killed_repeatedly_commits_its_output_exactly_once() {
    kill_and_resume("fraud-small-then-large", 11);
}

#[test]
fn a_window_join_killed_repeatedly_commits_its_output_exactly_once() {
    kill_and_resume("nexmark-q8", 23);
}

/// The key-group assignment recorded for the stateful operator `uid`.
fn assignment_of(content: &SnapshotContent, uid: &str) -> KeyGroupAssignment {
    let op = content.operators.iter().find(|o| o.uid == uid).unwrap();
    KeyGroupAssignment::from_owners(op.assignment.clone(), op.parallelism as u32).unwrap()
}

/// Stops a job at parallelism 4 with a savepoint, then restores it at 1, 3 and 7; each
/// restored run continues the committed output exactly, and only the key groups whose owner
/// had to change moved.
fn savepoint_and_rescale(job: &str, stateful_uid: &str) {
    let dir = tempfile::tempdir().unwrap();
    let expected = reference(job, EVENTS, dir.path());
    let first = dir.path().join("first");
    let savepoints = dir.path().join("savepoints");
    let registry = JobRegistry::bundled();
    let graph = registry
        .build(job, 4, 128, &job_config(EVENTS, &first))
        .unwrap();
    let running = start_embedded(graph, RunOptions::default()).unwrap();
    wait_until("a quarter of the input", Duration::from_secs(60), || {
        running
            .metrics()
            .iter()
            .filter(|t| t.is_source)
            .map(|t| t.records_in)
            .sum::<u64>()
            >= EVENTS / 4
    });
    let savepoint = running.savepoint(&uri(&savepoints), true).unwrap();
    running.wait().unwrap();
    let (storage, id) = CheckpointStorage::open_snapshot(&savepoint.location).unwrap();
    let saved = SnapshotContent::from_manifest(&storage.verify(id).unwrap()).unwrap();
    let before = assignment_of(&saved, stateful_uid);
    assert_eq!(before.parallelism(), 4);
    let committed_first = JsonLinesSink::committed_lines(&first).unwrap();
    assert!(
        committed_first.len() < expected.len(),
        "{job}: the savepoint was taken after all output"
    );

    for p in [1usize, 3, 7] {
        let out = dir.path().join(format!("restored-{p}"));
        let checkpoints = dir.path().join(format!("checkpoints-{p}"));
        let graph = registry
            .build(job, p, 128, &job_config(EVENTS, &out))
            .unwrap();
        let options = RunOptions {
            restore: Some(Restore::Snapshot(savepoint.location.clone())),
            checkpoints: Some(CheckpointConfig {
                interval: None,
                ..CheckpointConfig::new(uri(&checkpoints))
            }),
            ..RunOptions::default()
        };
        start_embedded(graph, options).unwrap().wait().unwrap();
        let mut all = committed_first.clone();
        all.extend(JsonLinesSink::committed_lines(&out).unwrap());
        all.sort();
        assert_same(
            &all,
            &expected,
            &format!("{job} restored at parallelism {p}"),
        );

        // The final snapshot of the restored run records the assignment it ran with.
        let last = CheckpointStorage::open(&uri(&checkpoints))
            .unwrap()
            .latest_restorable()
            .unwrap();
        let after = assignment_of(
            &SnapshotContent::from_manifest(&last.manifest).unwrap(),
            stateful_uid,
        );
        assert_eq!(after.parallelism() as usize, p);
        let kept: usize = (0..p as u32)
            .map(|s| {
                let share = 128 / p + usize::from((s as usize) < 128 % p);
                before.owned_by(s).len().min(share)
            })
            .sum();
        assert_eq!(
            after.moved_from(&before).len(),
            128 - kept,
            "{job}: 4 -> {p} moved more key groups than needed"
        );
        for s in 0..p as u32 {
            let share = 128 / p + usize::from((s as usize) < 128 % p);
            assert_eq!(after.owned_by(s).len(), share, "balanced at {p}");
        }
    }
}

#[test]
fn a_window_savepoint_restores_at_other_parallelisms() {
    savepoint_and_rescale("nexmark-q5", "q5-counts");
}

#[test]
fn a_keyed_process_savepoint_restores_at_other_parallelisms() {
    savepoint_and_rescale("fraud-small-then-large", "fraud-small-then-large");
}

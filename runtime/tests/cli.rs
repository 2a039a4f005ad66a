//! The `sluice` binary as a user runs it: sample manifests, `run`, bad input, `generate`.

use sluice_runtime::connectors::JsonLinesSink;
use sluice_runtime::jobs::JobRegistry;
use std::path::{Path, PathBuf};
use std::process::Command;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

fn samples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/samples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_bundled_job_has_a_valid_sample_manifest() {
    let registry = JobRegistry::bundled();
    let mut covered = Vec::new();
    for path in samples() {
        let text = std::fs::read_to_string(&path).unwrap();
        let m = sluice_crds::parse_manifest(&text, &path.display().to_string()).unwrap();
        registry
            .build(
                &m.spec.job.name,
                m.spec.parallelism as usize,
                m.spec.max_parallelism,
                &m.spec.job.config,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        covered.push(m.spec.job.name);
    }
    covered.sort();
    let mut all: Vec<String> = registry.list().iter().map(|(n, _)| n.to_string()).collect();
    all.sort();
    assert_eq!(covered, all);
}

fn write_manifest(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("job.yaml");
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn run_executes_the_manifest_and_reports_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q2");
    let manifest = write_manifest(
        dir.path(),
        &format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: StreamJob\nmetadata: {{name: small}}\n\
             spec:\n  job:\n    name: nexmark-q2\n    config:\n      generator: {{events: 50000}}\n      output: {}\n  parallelism: 1\n",
            out.display()
        ),
    );
    let result = sluice().arg("run").arg(&manifest).output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert!(stderr.contains("events          50000"), "{stderr}");
    let lines = JsonLinesSink::committed_lines(&out).unwrap().len();
    assert!(lines > 0);
    assert!(
        stderr.contains(&format!("outputs         {lines}\n")),
        "{stderr}"
    );
    assert!(stderr.contains("events/CPU-s"), "{stderr}");
}

#[test]
fn a_bad_manifest_fails_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        "apiVersion: sluice.dev/v1alpha1\nkind: StreamJob\nmetadata: {name: x}\nspec:\n  job: {name: nexmark-q2}\n  parallelism: -1\n",
    );
    let result = sluice().arg("run").arg(&manifest).output().unwrap();
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("job.yaml: spec.parallelism: invalid value: integer `-1`"),
        "{stderr}"
    );

    let manifest = write_manifest(
        dir.path(),
        "apiVersion: sluice.dev/v1alpha1\nkind: StreamJob\nmetadata: {name: x}\nspec:\n  job: {name: nexmark-q42}\n",
    );
    let result = sluice().arg("run").arg(&manifest).output().unwrap();
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("unknown job 'nexmark-q42'"), "{stderr}");
    assert!(stderr.contains("fraud-small-then-large"), "{stderr}");
}

#[test]
fn generate_writes_one_json_line_per_event() {
    let result = sluice()
        .args([
            "nexmark",
            "generate",
            "--events",
            "500",
            "--out-of-order-ms",
            "100",
        ])
        .output()
        .unwrap();
    assert!(result.status.success());
    let text = String::from_utf8(result.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 500);
    for (i, line) in lines.iter().enumerate() {
        sluice_runtime::nexmark::parse_event_line(line, i as u64 + 1).unwrap();
    }
}

/// A record that fails to parse, with logs as JSON: the run fails, and the log line of the
/// failure carries the operator, the subtask, the line, where the split stopped and the
/// error's causes as fields, not only in its text.
#[test]
fn a_failure_is_logged_with_its_operator_subtask_and_input_position() {
    let dir = tempfile::tempdir().unwrap();
    let events = sluice()
        .args(["nexmark", "generate", "--events", "300"])
        .output()
        .unwrap();
    assert!(events.status.success());
    let mut lines: Vec<String> = String::from_utf8(events.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines[199] = "{\"bid\": not json".into();
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let manifest = write_manifest(
        dir.path(),
        &format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: StreamJob\nmetadata: {{name: bad}}\n\
             spec:\n  job:\n    name: nexmark-q0\n    config:\n      input: {}\n      sourceSplits: 1\n  parallelism: 1\n",
            input.display()
        ),
    );
    let result = sluice()
        .arg("run")
        .arg(&manifest)
        .env("SLUICE_LOG_FORMAT", "json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "{stderr}");
    let failure: serde_json::Value = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "subtask failed")
        .unwrap_or_else(|| panic!("no failure logged:\n{stderr}"));
    assert_eq!(failure["level"], "ERROR", "{failure}");
    assert_eq!(failure["span"]["operator"], "nexmark-file", "{failure}");
    assert_eq!(failure["span"]["subtask"], 0, "{failure}");
    assert!(
        failure["error"].as_str().unwrap().contains("line 200:"),
        "{failure}"
    );
    // The 199 events before the bad line were read.
    assert!(
        failure["input"]
            .as_str()
            .unwrap()
            .contains("splits: [(0, 199)]"),
        "{failure}"
    );
}

//! Checkpoints, savepoints and recovery: a job killed with SIGKILL and resumed, savepoints
//! restored at other parallelisms, corrupt checkpoints, incompatible job versions. Every
//! test compares the committed output with an uninterrupted run of the same job.

mod common;

use common::run::{
    self, job_config, reference, resume, sluice, sorted_output, stop_with_sigterm, write_manifest,
    CheckpointDir, KILL_EVENTS,
};
use common::{assert_same, wait_until};
use sluice_runtime::connectors::JsonLinesSink;
use sluice_runtime::exec::{start_embedded, CheckpointConfig, Restore, RunOptions};
use sluice_runtime::jobs::JobRegistry;
use sluice_runtime::snapshot::{CheckpointStorage, SnapshotContent};
use sluice_runtime::state::{KeyGroupAssignment, RocksConfig, StateBackend};
use std::path::{Path, PathBuf};
use std::time::Duration;

const EVENTS: u64 = 20_000_000;

fn uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn kill_and_resume(job: &str, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let pointer = checkpoints.join("_latest");
    let target = CheckpointDir {
        arg: checkpoints.display().to_string(),
        env: Vec::new(),
        pointer: Box::new(|| std::fs::read_to_string(&pointer).unwrap_or_default()),
    };
    run::kill_and_resume(job, seed, dir.path(), &target);
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

#[test]
fn a_session_window_job_killed_repeatedly_commits_its_output_exactly_once() {
    kill_and_resume("nexmark-q11", 31);
}

#[test]
fn sigterm_stops_with_a_savepoint_that_resumes_exactly() {
    let job = "nexmark-q5";
    let dir = tempfile::tempdir().unwrap();
    let expected = reference(job, KILL_EVENTS, dir.path());
    let out = dir.path().join("out");
    let manifest = write_manifest(dir.path(), job, KILL_EVENTS, &out);
    let savepoints = dir.path().join("savepoints");
    let location = stop_with_sigterm(&manifest, &savepoints.to_string_lossy(), dir.path(), &[]);
    assert!(location.contains("/sp-"), "{location}");
    let committed = JsonLinesSink::committed_lines(&out).unwrap().len();
    assert!(committed < expected.len(), "stopped after all output");

    resume(&manifest, &location, 3, dir.path(), &[]);
    assert_same(
        &sorted_output(&out),
        &expected,
        "stopped with SIGTERM, resumed at 3",
    );
}

/// Two AES-256 keys (base64 of 32 bytes).
const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "HwAeAB0AHAAbABoAGQAYABcAFgAVABQAEwASABEAEAA=";

fn snapshot_key(id: &str, key: &str) -> Vec<(String, String)> {
    vec![
        ("SLUICE_SNAPSHOT_KEY_ID".to_string(), id.to_string()),
        ("SLUICE_SNAPSHOT_KEY".to_string(), key.to_string()),
    ]
}

/// A job whose manifest names snapshot key `a` stops with a savepoint whose every state file
/// is encrypted with it. Read without a key, or with another key under the same name, the
/// savepoint fails naming the key and the file; a manifest naming a key the process lacks
/// fails at the start; with its key the job resumes exactly once.
#[test]
fn an_encrypted_savepoint_restores_only_with_its_key() {
    let job = "fraud-small-then-large";
    let dir = tempfile::tempdir().unwrap();
    let expected = reference(job, KILL_EVENTS, dir.path());
    let out = dir.path().join("out");
    let plain = write_manifest(dir.path(), job, KILL_EVENTS, &out);
    let encrypted = dir.path().join("encrypted.yaml");
    let text = std::fs::read_to_string(&plain).unwrap()
        + "  checkpointing:\n    encryption:\n      keyId: a\n      \
           secret: {name: snapshot-key, key: key}\n";
    std::fs::write(&encrypted, text).unwrap();
    let savepoints = dir.path().join("savepoints");
    let location = stop_with_sigterm(
        &encrypted,
        &savepoints.to_string_lossy(),
        dir.path(),
        &snapshot_key("a", KEY_A),
    );
    let sp_dir = location.trim_start_matches("file://");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(sp_dir).join("_manifest.json")).unwrap())
            .unwrap();
    let files = manifest["files"].as_array().unwrap();
    assert!(!files.is_empty());
    for file in files {
        assert_eq!(file["key"], "a", "{file}");
    }

    let attempt = |manifest: &Path, env: &[(String, String)]| {
        let out = sluice()
            .arg("run")
            .arg(manifest)
            .args(["--restore", &location])
            .arg("--state-dir")
            .arg(dir.path().join("state-failed"))
            .args(["--progress-interval", "0"])
            .envs(env.iter().cloned())
            .output()
            .unwrap();
        assert!(!out.status.success());
        run::printed(&out)
    };
    let err = attempt(&plain, &[]);
    assert!(
        err.contains("snapshot key 'a'")
            && err.contains("is encrypted with it")
            && err.contains(sp_dir),
        "{err}"
    );
    let err = attempt(&plain, &snapshot_key("a", KEY_B));
    assert!(
        err.contains("snapshot key 'a'") && err.contains("does not decrypt"),
        "{err}"
    );
    let err = attempt(&encrypted, &[]);
    assert!(
        err.contains("snapshot key 'a': the job names this key but SLUICE_SNAPSHOT_KEY_ID"),
        "{err}"
    );

    resume(
        &encrypted,
        &location,
        3,
        dir.path(),
        &snapshot_key("a", KEY_A),
    );
    assert_same(
        &sorted_output(&out),
        &expected,
        "an encrypted savepoint resumed at 3",
    );
}

/// The key-group assignment recorded for the stateful operator `uid`.
fn assignment_of(content: &SnapshotContent, uid: &str) -> KeyGroupAssignment {
    let op = content.operators.iter().find(|o| o.uid == uid).unwrap();
    KeyGroupAssignment::from_owners(op.assignment.clone(), op.parallelism as u32).unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Heap,
    RocksDb,
}

fn backend(kind: Backend, dir: &Path) -> StateBackend {
    match kind {
        Backend::Heap => StateBackend::Heap,
        Backend::RocksDb => StateBackend::RocksDb(RocksConfig::new(dir.join("rocksdb"), 64 << 20)),
    }
}

/// Stops a job at parallelism 4 with a savepoint (state on `first`), then restores it at
/// 1, 3 and 7 (state on `then`); each restored run continues the committed output exactly,
/// and only the key groups whose owner had to change moved.
fn savepoint_and_rescale(job: &str, stateful_uid: &str, first_backend: Backend, then: Backend) {
    let events = match (first_backend, then) {
        (Backend::Heap, Backend::Heap) => EVENTS,
        _ => KILL_EVENTS,
    };
    let dir = tempfile::tempdir().unwrap();
    let expected = reference(job, events, dir.path());
    let first = dir.path().join("first");
    let savepoints = dir.path().join("savepoints");
    let registry = JobRegistry::bundled();
    let graph = registry
        .build(job, 4, 128, &job_config(events, &first))
        .unwrap();
    let options = RunOptions {
        state_backend: backend(first_backend, dir.path()),
        ..RunOptions::default()
    };
    let running = start_embedded(graph, options).unwrap();
    wait_until("a quarter of the input", Duration::from_secs(60), || {
        running
            .metrics()
            .iter()
            .filter(|t| t.is_source)
            .map(|t| t.records_in)
            .sum::<u64>()
            >= events / 4
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
            .build(job, p, 128, &job_config(events, &out))
            .unwrap();
        let options = RunOptions {
            restore: Some(Restore::Snapshot(savepoint.location.clone())),
            checkpoints: Some(CheckpointConfig {
                interval: None,
                ..CheckpointConfig::new(uri(&checkpoints))
            }),
            state_backend: backend(then, dir.path()),
            ..RunOptions::default()
        };
        let restored = start_embedded(graph, options).unwrap();
        restored.wait().unwrap();
        let read_by: Vec<(String, u64)> = restored
            .metrics()
            .iter()
            .map(|t| (t.name.clone(), t.restored_bytes))
            .collect();
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

        // Each subtask read exactly the key groups it owns, and every piece of the
        // savepoint was read once.
        let stateful = saved
            .operators
            .iter()
            .find(|o| o.uid == stateful_uid)
            .unwrap();
        for s in 0..p as u32 {
            let owned: u64 = stateful
                .key_groups
                .iter()
                .filter(|(kg, _)| after.owner(*kg) == s)
                .map(|(_, b)| b.len)
                .sum();
            let name = format!("{stateful_uid}[{s}]");
            let read = read_by.iter().find(|(n, _)| *n == name).map(|(_, b)| *b);
            assert_eq!(read, Some(owned), "{job}: bytes {name} read at {p}");
        }
        let pieces: u64 = saved
            .operators
            .iter()
            .flat_map(|o| o.key_groups.iter().map(|(_, b)| b).chain(&o.items))
            .map(|b| b.len)
            .sum();
        let read: u64 = read_by.iter().map(|(_, b)| b).sum();
        assert_eq!(read, pieces, "{job}: bytes read at {p}, all subtasks");
    }
}

#[test]
fn a_damaged_piece_of_a_savepoint_fails_the_restore_naming_file_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let savepoints = dir.path().join("savepoints");
    let registry = JobRegistry::bundled();
    let config = job_config(KILL_EVENTS, &dir.path().join("first"));
    let graph = registry.build("nexmark-q5", 2, 128, &config).unwrap();
    let running = start_embedded(graph, RunOptions::default()).unwrap();
    wait_until("a quarter of the input", Duration::from_secs(60), || {
        running
            .metrics()
            .iter()
            .filter(|t| t.is_source)
            .map(|t| t.records_in)
            .sum::<u64>()
            >= KILL_EVENTS / 4
    });
    let savepoint = running.savepoint(&uri(&savepoints), true).unwrap();
    running.wait().unwrap();
    let (storage, id) = CheckpointStorage::open_snapshot(&savepoint.location).unwrap();
    let content = SnapshotContent::from_manifest(&storage.manifest(id).unwrap()).unwrap();
    let (kg, piece) = content
        .operators
        .iter()
        .find(|o| o.uid == "q5-counts")
        .and_then(|o| o.key_groups.iter().max_by_key(|(_, b)| b.len))
        .unwrap();
    let file = Path::new(&savepoint.location).join(&piece.file);
    let file = PathBuf::from(file.to_str().unwrap().trim_start_matches("file://"));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[(piece.offset + piece.len / 2) as usize] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();

    let graph = registry
        .build(
            "nexmark-q5",
            3,
            128,
            &job_config(KILL_EVENTS, &dir.path().join("second")),
        )
        .unwrap();
    let options = RunOptions {
        restore: Some(Restore::Snapshot(savepoint.location.clone())),
        ..RunOptions::default()
    };
    let err = start_embedded(graph, options)
        .and_then(|r| r.wait())
        .unwrap_err()
        .to_string();
    let range = format!("{} bytes at {}: checksum", piece.len, piece.offset);
    assert!(
        err.contains(&format!("{}/{}", savepoint.location, piece.file)) && err.contains(&range),
        "key group {kg}: {err}"
    );
}

#[test]
fn a_window_savepoint_restores_at_other_parallelisms() {
    savepoint_and_rescale("nexmark-q5", "q5-counts", Backend::Heap, Backend::Heap);
}

#[test]
fn a_window_savepoint_restores_into_rocksdb_at_other_parallelisms() {
    savepoint_and_rescale("nexmark-q5", "q5-counts", Backend::Heap, Backend::RocksDb);
}

#[test]
fn a_heap_savepoint_restores_into_rocksdb_at_other_parallelisms() {
    savepoint_and_rescale(
        "fraud-small-then-large",
        "fraud-small-then-large",
        Backend::Heap,
        Backend::RocksDb,
    );
}

#[test]
fn a_rocksdb_savepoint_restores_onto_the_heap_at_other_parallelisms() {
    savepoint_and_rescale(
        "fraud-small-then-large",
        "fraud-small-then-large",
        Backend::RocksDb,
        Backend::Heap,
    );
}

/// Runs `job` with frequent checkpoints until at least `complete` checkpoints holding
/// state exist, then stops it as a crash would (nothing more is committed).
fn crash_after_checkpoints(job: &str, out: &Path, checkpoints: &Path, complete: usize) {
    let graph = JobRegistry::bundled()
        .build(job, 2, 128, &job_config(EVENTS, out))
        .unwrap();
    let options = RunOptions {
        checkpoints: Some(CheckpointConfig {
            interval: Some(Duration::from_millis(50)),
            retain: 10,
            ..CheckpointConfig::new(uri(checkpoints))
        }),
        ..RunOptions::default()
    };
    let running = start_embedded(graph, options).unwrap();
    wait_until("checkpoints", Duration::from_secs(60), || {
        running.checkpoint_status().completed >= complete as u64
    });
    running.cancel();
    assert!(matches!(
        running.wait(),
        Err(sluice_runtime::Error::Cancelled)
    ));
}

/// The newest checkpoint directory and its largest state file.
fn newest_state_file(checkpoints: &Path) -> (u64, PathBuf) {
    let storage = CheckpointStorage::open(&uri(checkpoints)).unwrap();
    let latest = storage.latest_restorable().unwrap().manifest;
    let file = latest.files.iter().max_by_key(|f| f.size).unwrap();
    let dir = checkpoints.join(format!("chk-{:010}", latest.checkpoint));
    (latest.checkpoint, dir.join(&file.name))
}

#[test]
fn a_corrupt_latest_checkpoint_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let expected = reference("nexmark-q5", EVENTS, dir.path());
    let out = dir.path().join("out");
    let checkpoints = dir.path().join("checkpoints");
    crash_after_checkpoints("nexmark-q5", &out, &checkpoints, 3);

    let (corrupt_id, file) = newest_state_file(&checkpoints);
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let graph = JobRegistry::bundled()
        .build("nexmark-q5", 2, 128, &job_config(EVENTS, &out))
        .unwrap();
    let options = RunOptions {
        checkpoints: Some(CheckpointConfig::new(uri(&checkpoints))),
        restore: Some(Restore::Latest),
        ..RunOptions::default()
    };
    let running = start_embedded(graph, options).unwrap();
    let status = running.checkpoint_status();
    assert_eq!(status.skipped_at_restore.len(), 1, "{status:?}");
    let skipped = &status.skipped_at_restore[0];
    assert!(
        skipped.starts_with(&format!("checkpoint {corrupt_id} skipped: "))
            && skipped.contains(&format!("{} bytes, the manifest says {len}", len / 2)),
        "{skipped}"
    );
    let restored_from = status.restored_from.unwrap();
    assert!(
        restored_from.ends_with(&format!("chk-{:010}", corrupt_id - 1)),
        "{restored_from}"
    );
    running.wait().unwrap();
    // Nothing is lost. (Output the corrupt checkpoint had already committed is produced
    // again: it was visible before the corruption, and no snapshot can undo that.)
    let got = sorted_output(&out);
    let missing: Vec<&String> = expected.iter().filter(|l| !got.contains(l)).collect();
    assert!(
        missing.is_empty(),
        "lost {} records: {:?}",
        missing.len(),
        missing.first()
    );
}

mod versions {
    use super::*;
    use sluice_runtime::api::{
        JobBuilder, KeyedProcessFunction, ProcessContext, Record, WatermarkStrategy,
    };
    use sluice_runtime::connectors::VecSource;
    use sluice_runtime::control::JobControl;
    use sluice_runtime::state::{key_group, stable_hash, StateDescriptor, ValueState};
    use sluice_runtime::time::EventTime;
    use sluice_runtime::JobGraph;

    struct Sum {
        total: ValueState<u64>,
    }

    impl KeyedProcessFunction<u64, u64, (u64, u64)> for Sum {
        fn process(&mut self, value: u64, ctx: &mut ProcessContext<'_, u64, (u64, u64)>) {
            let total = ctx.value(self.total).get().unwrap_or(0) + value;
            ctx.value(self.total).set(total);
            ctx.emit((*ctx.key(), total));
        }
    }

    /// A running sum per key, by operator `uid` with state `state` at `version`.
    fn summing_job(uid: &str, state: &'static str, version: u32, out: &Path) -> JobGraph {
        let job = JobBuilder::new("sums", 2, 128);
        let splits: Vec<Vec<Record<u64>>> = (0..2)
            .map(|s| {
                (0..1_000u64)
                    .map(|i| Record::new(EventTime(i as i64), i * 2 + s))
                    .collect()
            })
            .collect();
        job.source(
            "numbers",
            VecSource::new(splits),
            WatermarkStrategy::monotonous(),
        )
        .key_by(|v: &u64| v % 10)
        .process(uid, move |ctx| {
            Ok(Sum {
                total: ctx
                    .value_state::<u64, u64>(StateDescriptor::new(state).schema_version(version))?,
            })
        })
        .sink("out", JsonLinesSink::new(out));
        job.build().unwrap()
    }

    /// Runs the first version to the end with checkpointing; its final snapshot holds the
    /// sums. Returns the snapshot's directory.
    fn first_version(dir: &Path) -> String {
        let checkpoints = dir.join("checkpoints");
        let options = RunOptions {
            checkpoints: Some(CheckpointConfig {
                interval: None,
                ..CheckpointConfig::new(uri(&checkpoints))
            }),
            ..RunOptions::default()
        };
        let running =
            start_embedded(summing_job("sum", "total", 1, &dir.join("v1")), options).unwrap();
        running.wait().unwrap();
        let status_dir = CheckpointStorage::open(&uri(&checkpoints)).unwrap();
        let id = status_dir.latest_restorable().unwrap().manifest.checkpoint;
        status_dir.location(id)
    }

    fn restore(graph: JobGraph, snapshot: &str, allow: bool) -> Result<(), String> {
        let options = RunOptions {
            restore: Some(Restore::Snapshot(snapshot.to_string())),
            allow_non_restored_state: allow,
            ..RunOptions::default()
        };
        start_embedded(graph, options)
            .map_err(|e| e.to_string())?
            .wait()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn check(snapshot: &str, extra: &[&str]) -> (bool, String) {
        let out = sluice()
            .args(["savepoint", "check", snapshot, "--job", "nexmark-q5"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    #[test]
    fn a_renamed_uid_is_refused_unless_state_may_be_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = first_version(dir.path());
        let err = restore(
            summing_job("sum-v2", "total", 1, &dir.path().join("renamed")),
            &snapshot,
            false,
        )
        .unwrap_err();
        assert!(
            err.contains(
                "operator 'sum' has state in the snapshot but is not in the job \
                 (renamed uid or removed operator)"
            ),
            "{err}"
        );
        restore(
            summing_job("sum-v2", "total", 1, &dir.path().join("dropped")),
            &snapshot,
            true,
        )
        .unwrap();
    }

    #[test]
    fn a_changed_state_schema_is_refused_naming_operator_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = first_version(dir.path());
        for allow in [false, true] {
            let err = restore(
                summing_job("sum", "total", 2, &dir.path().join("evolved")),
                &snapshot,
                allow,
            )
            .unwrap_err();
            assert!(
                err.contains(
                    "operator 'sum': state 'total' has schema version 1 in the snapshot but 2 \
                     in the job"
                ),
                "{err}"
            );
        }
        let err = restore(
            summing_job("sum", "sum", 1, &dir.path().join("renamed-state")),
            &snapshot,
            false,
        )
        .unwrap_err();
        assert!(
            err.contains(
                "operator 'sum': state 'total' is in the snapshot but the operator no longer \
                 declares it"
            ),
            "{err}"
        );
        // The same version restores.
        restore(
            summing_job("sum", "total", 1, &dir.path().join("same")),
            &snapshot,
            false,
        )
        .unwrap();
    }

    /// Reads each key's total as a pair: the type changed without a new schema version.
    struct Pairs {
        total: ValueState<(u64, u64)>,
    }

    impl KeyedProcessFunction<u64, u64, u64> for Pairs {
        fn process(&mut self, value: u64, ctx: &mut ProcessContext<'_, u64, u64>) {
            let (total, count) = ctx.value(self.total).get().unwrap_or((0, 0));
            ctx.value(self.total).set((total + value, count + 1));
            ctx.emit(count + 1);
        }
    }

    /// State read as another type than it was written, with no new schema version to say
    /// so (the bug an upgrade can bring). Restored from RocksDB's own files, a key's value
    /// is decoded when the key is read: the first key read fails the job, and the error
    /// names the operator, that key and its group, and the decoding error. (Restored from
    /// the canonical format, the restore fails first, naming the key group.)
    #[test]
    fn state_read_as_another_type_fails_at_the_first_key_that_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let rocksdb =
            |name: &str| StateBackend::RocksDb(RocksConfig::new(dir.path().join(name), 64 << 20));
        let checkpoints = dir.path().join("checkpoints");
        let options = RunOptions {
            checkpoints: Some(CheckpointConfig {
                interval: None,
                ..CheckpointConfig::new(uri(&checkpoints))
            }),
            state_backend: rocksdb("state-v1"),
            ..RunOptions::default()
        };
        let graph = summing_job("sum", "total", 1, &dir.path().join("v1"));
        start_embedded(graph, options).unwrap().wait().unwrap();
        let storage = CheckpointStorage::open(&uri(&checkpoints)).unwrap();
        let snapshot = storage.location(storage.latest_restorable().unwrap().manifest.checkpoint);
        let job = JobBuilder::new("pairs", 1, 128);
        let numbers: Vec<Record<u64>> = (0..100)
            .map(|i| Record::new(EventTime(i), i as u64))
            .collect();
        // A new source (the old one's splits are done): its predecessor's state is dropped.
        job.source(
            "more-numbers",
            VecSource::new(vec![numbers]),
            WatermarkStrategy::monotonous(),
        )
        .key_by(|v: &u64| v % 10)
        .process("sum", |ctx| {
            Ok(Pairs {
                total: ctx.value_state::<u64, (u64, u64)>(StateDescriptor::new("total"))?,
            })
        })
        .sink("out", JsonLinesSink::new(dir.path().join("pairs")));
        let options = RunOptions {
            restore: Some(Restore::Snapshot(snapshot)),
            allow_non_restored_state: true,
            state_backend: rocksdb("state-v2"),
            ..RunOptions::default()
        };
        let running = start_embedded(job.build().unwrap(), options).unwrap();
        wait_until("the job to end", Duration::from_secs(60), || {
            running.is_finished()
        });
        let status = JobControl::status(&running);
        let error = running.wait().unwrap_err().to_string();
        assert_eq!(status.errors.len(), 1, "{:?}", status.errors);
        let e = &status.errors[0];
        assert_eq!(e.operator.as_deref(), Some("sum"), "{e:?}");
        let key: u64 = (e.key.as_deref().and_then(|k| k.parse().ok()))
            .unwrap_or_else(|| panic!("no key: {e:?}"));
        let group = key_group(stable_hash(&key), 128);
        assert!(key < 10 && e.key_group == Some(group), "{e:?}");
        let at = format!("at key {key} (key group {group}): keyed state: cannot decode state");
        assert!(e.cause.contains(&at), "{e:?}");
        assert!(error.contains(&at), "{error}");
    }

    #[test]
    fn savepoint_check_names_what_another_job_cannot_restore() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = first_version(dir.path());
        let (ok, text) = check(&snapshot, &[]);
        assert!(!ok, "{text}");
        assert!(
            text.contains("operator 'sum' has state in the snapshot but is not in the job"),
            "{text}"
        );
        assert!(
            text.contains("operator 'q5-counts' is new: it starts with empty state"),
            "{text}"
        );
        assert!(text.contains("cannot restore"), "{text}");
        let (ok, text) = check(&snapshot, &["--allow-non-restored-state"]);
        assert!(ok, "{text}");

        let inspect = sluice()
            .args(["savepoint", "inspect", &snapshot])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&inspect.stdout);
        assert!(inspect.status.success(), "{text}");
        assert!(text.contains("job             sums"), "{text}");
        assert!(text.contains("states [total v1]"), "{text}");
    }
}

/// Makes checkpoints `ids` impossible to write: a file stands where their directory goes.
fn block_checkpoints(checkpoints: &Path, ids: std::ops::RangeInclusive<u64>) {
    std::fs::create_dir_all(checkpoints).unwrap();
    for id in ids {
        std::fs::write(checkpoints.join(format!("chk-{id:010}")), b"in the way").unwrap();
    }
}

fn run_with_checkpoints(
    job: &str,
    out: &Path,
    checkpoints: &Path,
    tolerable_failures: u32,
) -> (
    Result<sluice_runtime::exec::JobSummary, sluice_runtime::Error>,
    sluice_runtime::exec::CheckpointStatus,
    u64,
) {
    let graph = JobRegistry::bundled()
        .build(job, 2, 128, &job_config(EVENTS, out))
        .unwrap();
    let options = RunOptions {
        checkpoints: Some(CheckpointConfig {
            interval: Some(Duration::from_millis(50)),
            tolerable_failures,
            ..CheckpointConfig::new(uri(checkpoints))
        }),
        ..RunOptions::default()
    };
    let running = start_embedded(graph, options).unwrap();
    wait_until("the job to end", Duration::from_secs(120), || {
        running.is_finished()
    });
    let status = running.checkpoint_status();
    let read: u64 = running
        .metrics()
        .iter()
        .filter(|t| t.is_source)
        .map(|t| t.records_in)
        .sum();
    (running.wait(), status, read)
}

#[test]
fn failed_checkpoints_are_tolerated_up_to_the_limit_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let expected = reference("nexmark-q5", EVENTS, dir.path());
    let out = dir.path().join("out");
    let checkpoints = dir.path().join("checkpoints");
    block_checkpoints(&checkpoints, 1..=2);
    let (result, status, _) = run_with_checkpoints("nexmark-q5", &out, &checkpoints, 2);
    result.unwrap();
    assert_eq!(status.failed, 2, "{status:?}");
    assert!(status.completed >= 1, "{status:?}");
    // Output pre-committed under the failed checkpoints is committed by later ones.
    assert_same(
        &sorted_output(&out),
        &expected,
        "after two failed checkpoints",
    );
}

#[test]
fn one_failed_checkpoint_too_many_fails_the_job_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let checkpoints = dir.path().join("checkpoints");
    block_checkpoints(&checkpoints, 1..=1_000);
    let (result, status, read) = run_with_checkpoints("nexmark-q5", &out, &checkpoints, 2);
    let err = result.unwrap_err().to_string();
    assert!(
        err.starts_with("checkpointing: 3 checkpoints failed in a row (tolerated: 2); last: "),
        "{err}"
    );
    assert!(err.contains("chk-0000000003"), "{err}");
    assert_eq!(status.completed, 0);
    assert_eq!(status.failed, 3, "{status:?}");
    // The job stopped there instead of running to the end of its input.
    assert!(read < EVENTS, "read all {read} events");
}

mod incremental {
    use super::*;
    use sluice_runtime::api::{
        JobBuilder, KeyedProcessFunction, ProcessContext, Record, WatermarkStrategy,
    };
    use sluice_runtime::connectors::{CollectSink, QueueSource};
    use sluice_runtime::state::{StateDescriptor, ValueState};
    use sluice_runtime::time::EventTime;
    use std::collections::BTreeSet;

    /// Every file under `shared/` of a checkpoint storage, by its name from the root.
    fn shared_files(root: &Path) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let shared = root.join("shared");
        for db in std::fs::read_dir(&shared).unwrap() {
            let db = db.unwrap().path();
            for f in std::fs::read_dir(&db).unwrap() {
                let f = f.unwrap().path();
                out.insert(f.strip_prefix(root).unwrap().display().to_string());
            }
        }
        out
    }

    fn rocks_run(
        job: &str,
        parallelism: usize,
        out: &Path,
        checkpoints: &Path,
        state: &Path,
        restore: Option<Restore>,
    ) -> sluice_runtime::exec::RunningJob {
        let graph = JobRegistry::bundled()
            .build(job, parallelism, 128, &job_config(KILL_EVENTS, out))
            .unwrap();
        let options = RunOptions {
            checkpoints: Some(CheckpointConfig {
                interval: Some(Duration::from_millis(50)),
                retain: 3,
                ..CheckpointConfig::new(uri(checkpoints))
            }),
            restore,
            state_backend: StateBackend::RocksDb(RocksConfig::new(state.to_path_buf(), 64 << 20)),
            ..RunOptions::default()
        };
        start_embedded(graph, options).unwrap()
    }

    #[test]
    fn rocksdb_checkpoint_storage_keeps_exactly_the_files_retained_checkpoints_need() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = dir.path().join("checkpoints");
        let running = rocks_run(
            "fraud-small-then-large",
            2,
            &dir.path().join("out"),
            &checkpoints,
            &dir.path().join("state"),
            None,
        );
        wait_until("checkpoints", Duration::from_secs(120), || {
            running.checkpoint_status().completed >= 6
        });
        running.cancel();
        let _ = running.wait();

        let storage = CheckpointStorage::open(&uri(&checkpoints)).unwrap();
        let latest = storage.latest_restorable().unwrap().manifest.checkpoint;
        let retained: Vec<_> = (latest - 2..=latest)
            .map(|id| storage.verify(id).unwrap())
            .collect();
        let listed: BTreeSet<String> = retained
            .iter()
            .flat_map(|m| m.shared.iter().map(|f| f.name.clone()))
            .collect();
        // Nothing a retained checkpoint needs is missing, nothing else is kept.
        assert_eq!(shared_files(&checkpoints), listed);
    }

    struct Remember {
        seen: ValueState<u64>,
    }

    impl KeyedProcessFunction<u64, u64, u64> for Remember {
        fn process(&mut self, value: u64, ctx: &mut ProcessContext<'_, u64, u64>) {
            ctx.value(self.seen).set(value);
            ctx.emit(value);
        }
    }

    #[test]
    fn after_a_small_change_a_rocksdb_checkpoint_uploads_only_the_change() {
        let dir = tempfile::tempdir().unwrap();
        let (source, input) = QueueSource::<u64>::new();
        let job = JobBuilder::new("remember", 1, 128);
        let (sink, out) = CollectSink::new();
        job.source("keys", source, WatermarkStrategy::monotonous())
            .key_by(|v: &u64| *v)
            .process("remember", |ctx| {
                Ok(Remember {
                    seen: ctx.value_state::<u64, u64>(StateDescriptor::new("seen"))?,
                })
            })
            .sink("out", sink);
        let checkpoints = dir.path().join("checkpoints");
        let options = RunOptions {
            checkpoints: Some(CheckpointConfig {
                interval: Some(Duration::from_millis(20)),
                retain: 10,
                ..CheckpointConfig::new(uri(&checkpoints))
            }),
            state_backend: StateBackend::RocksDb(RocksConfig::new(
                dir.path().join("state"),
                64 << 20,
            )),
            ..RunOptions::default()
        };
        let running = start_embedded(job.build().unwrap(), options).unwrap();
        // A checkpoint that surely started after `n` records were processed.
        let checkpoint_after = |n: usize| {
            wait_until("the records", Duration::from_secs(60), || {
                out.lock().unwrap().len() == n
            });
            let before = running.checkpoint_status().completed;
            wait_until("two more checkpoints", Duration::from_secs(60), || {
                running.checkpoint_status().completed >= before + 2
            });
            running
                .checkpoint_status()
                .last_completed()
                .cloned()
                .unwrap()
        };
        for v in 0..200_000u64 {
            input.send(Record::new(EventTime(0), v)).unwrap();
        }
        let storage = CheckpointStorage::open(&uri(&checkpoints)).unwrap();
        let tables = |id: u64| -> BTreeSet<String> {
            storage
                .verify(id)
                .unwrap()
                .shared
                .into_iter()
                .filter(|f| f.name.ends_with(".sst"))
                .map(|f| f.name)
                .collect()
        };
        // A background compaction between two checkpoints legitimately rewrites table
        // files (RocksDB compacts level 0 every few flushes), so a round may upload more;
        // within four rounds of 10 keys one must upload only the change.
        let mut earlier = checkpoint_after(200_000);
        let mut rounds = Vec::new();
        for round in 0..4u64 {
            let first = 1_000_000 + round * 10;
            for v in first..first + 10 {
                input.send(Record::new(EventTime(0), v)).unwrap();
            }
            let later = checkpoint_after(200_010 + round as usize * 10);
            let reused = tables(earlier.id).is_subset(&tables(later.id));
            rounds.push((reused, later.uploaded_bytes, later.bytes));
            if reused && later.uploaded_bytes * 20 < later.bytes {
                break;
            }
            earlier = later;
        }
        drop(input);
        running.wait().unwrap();
        let (reused, uploaded, total) = *rounds.last().unwrap();
        assert!(
            reused && uploaded * 20 < total,
            "no round reused the earlier table files and uploaded only the change: \
             (reused, uploaded bytes, referenced bytes) per round: {rounds:?}"
        );
    }

    #[test]
    fn an_incremental_rocksdb_checkpoint_restores_at_other_parallelisms_and_backends() {
        let dir = tempfile::tempdir().unwrap();
        let job = "fraud-small-then-large";
        let expected = reference(job, KILL_EVENTS, dir.path());
        let first = dir.path().join("first");
        let checkpoints = dir.path().join("checkpoints");
        let running = rocks_run(job, 2, &first, &checkpoints, &dir.path().join("s1"), None);
        wait_until("checkpoints", Duration::from_secs(120), || {
            running.checkpoint_status().completed >= 3
        });
        running.cancel();
        let _ = running.wait();
        let storage = CheckpointStorage::open(&uri(&checkpoints)).unwrap();
        let latest = storage.latest_restorable().unwrap().manifest;
        let content = SnapshotContent::from_manifest(&latest).unwrap();
        assert!(
            content.operators.iter().any(|o| !o.native.is_empty()),
            "the checkpoint holds no RocksDB files"
        );
        let location = storage.location(latest.checkpoint);
        let committed_first = JsonLinesSink::committed_lines(&first).unwrap();

        for (p, rocks) in [(3usize, true), (1, false)] {
            let out = dir.path().join(format!("restored-{p}"));
            let graph = JobRegistry::bundled()
                .build(job, p, 128, &job_config(KILL_EVENTS, &out))
                .unwrap();
            let options = RunOptions {
                restore: Some(Restore::Snapshot(location.clone())),
                state_backend: if rocks {
                    StateBackend::RocksDb(RocksConfig::new(
                        dir.path().join(format!("s-{p}")),
                        64 << 20,
                    ))
                } else {
                    StateBackend::Heap
                },
                ..RunOptions::default()
            };
            start_embedded(graph, options).unwrap().wait().unwrap();
            let mut all = committed_first.clone();
            all.extend(JsonLinesSink::committed_lines(&out).unwrap());
            all.sort();
            assert_same(
                &all,
                &expected,
                &format!("RocksDB checkpoint restored at {p} (RocksDB: {rocks})"),
            );
        }
    }
}

//! Checkpoints and savepoints in S3, against a real S3-compatible server (SeaweedFS, see
//! `common::s3`): a job killed and resumed from `latest`, a savepoint restored at another
//! parallelism, retention of incremental RocksDB checkpoints where there are no
//! directories, and the errors of bad URIs and unreachable storage.

mod common;

use common::assert_same;
use common::run::{
    self, printed, reference, resume, sluice, sorted_output, stop_with_sigterm, write_manifest,
    CheckpointDir, KILL_EVENTS,
};
use common::s3::{closed_port, Bucket, S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};
use sluice_runtime::connectors::JsonLinesSink;
use sluice_runtime::snapshot::Manifest;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[test]
fn a_job_checkpointing_to_s3_killed_repeatedly_commits_its_output_exactly_once() {
    let Some(server) = S3Server::start("kill and resume on S3") else {
        return;
    };
    let bucket = server.bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let target = CheckpointDir {
        arg: format!("s3://{BUCKET}/jobs/fraud/checkpoints"),
        env: server.env(),
        pointer: Box::new(|| {
            bucket
                .get("jobs/fraud/checkpoints/_latest")
                .map(|b| String::from_utf8_lossy(&b).to_string())
                .unwrap_or_default()
        }),
    };
    run::kill_and_resume("fraud-small-then-large", 7, dir.path(), &target);
}

#[test]
fn sigterm_stops_with_a_savepoint_in_s3_that_restores_at_another_parallelism() {
    let Some(server) = S3Server::start("savepoint on S3") else {
        return;
    };
    let job = "nexmark-q5";
    let dir = tempfile::tempdir().unwrap();
    let expected = reference(job, KILL_EVENTS, dir.path());
    let out = dir.path().join("out");
    let manifest = write_manifest(dir.path(), job, KILL_EVENTS, &out);
    let savepoints = format!("s3://{BUCKET}/savepoints/q5");
    let location = stop_with_sigterm(&manifest, &savepoints, dir.path(), &server.env());
    assert!(
        location.starts_with(&format!("{savepoints}/sp-")),
        "{location}"
    );
    let committed = JsonLinesSink::committed_lines(&out).unwrap().len();
    assert!(committed < expected.len(), "stopped after all output");

    // The savepoint tools read it where it is.
    let inspect = sluice()
        .args(["savepoint", "inspect", &location])
        .envs(server.env())
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", printed(&inspect));
    let shown = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        shown.contains(&format!("snapshot        {location}")),
        "{shown}"
    );
    assert!(shown.contains("kind            Savepoint"), "{shown}");
    let check = sluice()
        .args(["savepoint", "check", &location, "--job", job])
        .envs(server.env())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", printed(&check));

    let resumed = resume(&manifest, &location, 3, dir.path(), &server.env());
    assert!(
        resumed.contains(&format!("restoring from {location}")),
        "{resumed}"
    );
    assert_same(
        &sorted_output(&out),
        &expected,
        "stopped with SIGTERM into S3, resumed at 3",
    );

    // Deleted where it is; deleting it again finds it gone; only savepoints are deleted.
    for outcome in [
        format!("deleted {location}"),
        format!("{location}: already gone"),
    ] {
        let delete = sluice()
            .args(["savepoint", "delete", &location])
            .envs(server.env())
            .output()
            .unwrap();
        assert!(delete.status.success(), "{}", printed(&delete));
        assert!(printed(&delete).contains(&outcome), "{}", printed(&delete));
    }
    let inspect = sluice()
        .args(["savepoint", "inspect", &location])
        .envs(server.env())
        .output()
        .unwrap();
    assert!(!inspect.status.success(), "{}", printed(&inspect));
    let not_a_savepoint = format!("s3://{BUCKET}/jobs/q5/chk-0000000001");
    let refused = sluice()
        .args(["savepoint", "delete", &not_a_savepoint])
        .envs(server.env())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        printed(&refused).contains(&format!(
            "{not_a_savepoint}: not a savepoint directory (sp-<id>)"
        )),
        "{}",
        printed(&refused)
    );
}

/// The id of a `…/chk-0000000042/` listing entry.
fn checkpoint_id(dir: &str) -> u64 {
    dir.trim_end_matches('/')
        .rsplit_once("/chk-")
        .and_then(|(_, id)| id.parse().ok())
        .unwrap_or_else(|| panic!("not a checkpoint directory: {dir}"))
}

/// Every object under `root/shared/`, by its name from `root`.
fn shared_files(bucket: &Bucket, root: &str) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    for database in bucket.dirs(&format!("{root}/shared")) {
        for file in bucket.objects(&database) {
            files.insert(file[root.len() + 1..].to_string());
        }
    }
    files
}

#[test]
fn incremental_rocksdb_checkpoints_in_s3_keep_exactly_the_files_retained_checkpoints_need() {
    let Some(server) = S3Server::start("retention on S3") else {
        return;
    };
    let bucket = server.bucket(BUCKET);
    let job = "fraud-small-then-large";
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), job, KILL_EVENTS, &dir.path().join("out"));
    let root = "jobs/fraud/checkpoints";
    let run = sluice()
        .arg("run")
        .arg(&manifest)
        .args([
            "--checkpoint-interval",
            "100ms",
            "--retain-checkpoints",
            "2",
        ])
        .args(["--checkpoint-dir", &format!("s3://{BUCKET}/{root}")])
        .args(["--state-backend", "rocksdb", "--state-dir"])
        .arg(dir.path().join("state"))
        .args(["--progress-interval", "0"])
        .envs(server.env())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", printed(&run));

    // Only the two newest checkpoints have objects left. (A checkpoint is gone with its
    // last object: S3 has no directories, though some servers list an emptied prefix for
    // a while.)
    let retained: Vec<u64> = bucket
        .dirs(root)
        .iter()
        .filter(|d| d.contains("/chk-") && !bucket.objects(d).is_empty())
        .map(|d| checkpoint_id(d))
        .collect();
    assert_eq!(retained.len(), 2, "{retained:?}");
    let latest = bucket.get(&format!("{root}/_latest")).unwrap();
    let latest: u64 = String::from_utf8(latest).unwrap().trim().parse().unwrap();
    assert_eq!(retained, vec![latest - 1, latest]);
    assert!(latest > 4, "only {latest} checkpoints were taken");

    let manifests: Vec<Manifest> = retained
        .iter()
        .map(|id| {
            let bytes = bucket
                .get(&format!("{root}/chk-{id:010}/_manifest.json"))
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        })
        .collect();
    let listed: BTreeSet<String> = manifests
        .iter()
        .flat_map(|m| m.shared.iter().map(|f| f.name.clone()))
        .collect();
    assert!(
        listed.iter().any(|f| f.ends_with(".sst")),
        "the checkpoints hold no RocksDB table files"
    );
    // Nothing a retained checkpoint needs is missing, nothing else is kept.
    assert_eq!(shared_files(&bucket, root), listed);

    // And the latest checkpoint verifies (every file present with its size and checksum).
    let location = format!("s3://{BUCKET}/{root}/chk-{latest:010}");
    let inspect = sluice()
        .args(["savepoint", "inspect", &location])
        .envs(server.env())
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", printed(&inspect));
}

/// `sluice run` of a small job with `args`, in `env`; returns the failure's output.
fn failing_run(env: &[(String, String)], args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), "nexmark-q5", 10_000, &dir.path().join("out"));
    let started = Instant::now();
    let out = sluice()
        .arg("run")
        .arg(&manifest)
        .args(args)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--progress-interval", "0"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let text = printed(&out);
    assert!(!out.status.success(), "{args:?} succeeded: {text}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{args:?} took {:?} to fail",
        started.elapsed()
    );
    text
}

fn assert_error(text: &str, expected: &str) {
    assert!(text.contains(expected), "expected «{expected}» in:\n{text}");
}

#[test]
fn bad_s3_uris_and_an_unreachable_endpoint_are_reported_with_the_uri() {
    let unreachable: Vec<(String, String)> = [
        (
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", closed_port()),
        ),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
        ("AWS_MAX_ATTEMPTS", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    for (uri, expected) in [
        (
            "s3:///checkpoints",
            "error: checkpoint storage s3:///checkpoints: no bucket (s3://bucket/prefix)",
        ),
        (
            "s3://My_Bucket/x",
            "error: checkpoint storage s3://My_Bucket/x: 'My_Bucket' is not a valid bucket name",
        ),
        (
            "s3://sluice/a//b",
            "error: checkpoint storage s3://sluice/a//b: bad prefix",
        ),
        (
            "gs://sluice/x",
            "error: checkpoint storage gs://sluice/x: unsupported storage \
             (file:///absolute/path or s3://bucket/prefix)",
        ),
    ] {
        assert_error(
            &failing_run(&unreachable, &["--checkpoint-dir", uri]),
            expected,
        );
    }
    let text = failing_run(&unreachable, &["--checkpoint-dir", "s3://sluice/jobs/q5"]);
    assert_error(
        &text,
        "error: checkpoint storage s3://sluice/jobs/q5: cannot list it: ",
    );
    assert_error(&text, "Connection refused");
    let text = failing_run(
        &unreachable,
        &["--restore", "s3://sluice/jobs/q5/chk-0000000003"],
    );
    assert_error(
        &text,
        "error: checkpoint storage s3://sluice/jobs/q5: cannot list it: ",
    );
    let text = failing_run(&unreachable, &["--restore", "s3://chk-0000000003"]);
    assert_error(
        &text,
        "error: checkpoint storage s3://chk-0000000003: not a snapshot directory",
    );

    let inspect = sluice()
        .args(["savepoint", "inspect", "s3://sluice/jobs/q5/sp-0000000001"])
        .envs(unreachable.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(!inspect.status.success());
    assert_error(
        &printed(&inspect),
        "error: checkpoint storage s3://sluice/jobs/q5: cannot list it: ",
    );
}

#[test]
fn a_missing_bucket_or_snapshot_in_s3_is_reported_with_the_uri() {
    let Some(server) = S3Server::start("missing bucket on S3") else {
        return;
    };
    let text = failing_run(
        &server.env(),
        &["--checkpoint-dir", "s3://no-such-bucket/jobs/q5"],
    );
    assert_error(
        &text,
        "error: checkpoint storage s3://no-such-bucket/jobs/q5: cannot list it: ",
    );
    assert_error(&text, "NoSuchBucket");
    let missing = format!("s3://{BUCKET}/jobs/q5/sp-0000000009");
    let text = failing_run(&server.env(), &["--restore", &missing]);
    assert_error(
        &text,
        &format!("error: checkpoint storage {missing}/_manifest.json: "),
    );
    assert_error(&text, "not found");
}

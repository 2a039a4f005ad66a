//! The object-storage file sink against a real S3-compatible server (SeaweedFS, see
//! `common::s3`) and a local directory: jobs killed and resumed commit exactly the records
//! of an uninterrupted run, in JSON lines and in Parquet, partitioned by event-time hour;
//! while they run, a reader lists the output over and over and every object it lists is
//! complete.

mod common;

use common::assert_same;
use common::run::{self, CheckpointDir, KILL_EVENTS};
use common::s3::{S3Server, BUCKET};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice_runtime::connectors::{ObjectFileSink, PENDING};
use sluice_runtime::exec::{start_embedded, RunOptions};
use sluice_runtime::jobs::fraud::FraudAlert;
use sluice_runtime::jobs::nexmark_queries::Q5;
use sluice_runtime::jobs::JobRegistry;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const HOUR_MS: i64 = 3_600_000;

/// Lists `prefix` over and over until stopped, reading every object it has not read yet;
/// returns how many objects it read, and fails on the first that is not a whole part.
fn watch_for_partial_objects(
    store: Arc<dyn ObjectStore>,
    prefix: &str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    let prefix = ObjectPath::from(prefix);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut read = BTreeSet::new();
        while !stop.load(Ordering::Relaxed) {
            let listed: Vec<_> = rt
                .block_on(futures::TryStreamExt::try_collect::<Vec<_>>(
                    store.list(Some(&prefix)),
                ))
                .unwrap_or_default();
            for meta in listed {
                let key = meta.location.to_string();
                if read.contains(&key) {
                    continue;
                }
                // Deleted between listing and reading: a hidden part that was committed.
                let Ok(bytes) =
                    rt.block_on(async { store.get(&meta.location).await?.bytes().await })
                else {
                    continue;
                };
                if let Err(why) = ObjectFileSink::read_part::<serde_json::Value>(&key, &bytes) {
                    panic!("{key} was listed while partial: {why}");
                }
                read.insert(key);
            }
        }
        read.len()
    })
}

/// Every record of the committed parts under `root` of `store`, by key relative to `root`.
fn committed_records<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    root: &str,
) -> BTreeMap<String, Vec<T>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let root = ObjectPath::from(root);
    let listed = rt
        .block_on(futures::TryStreamExt::try_collect::<Vec<_>>(
            store.list(Some(&root)),
        ))
        .unwrap();
    let mut parts = BTreeMap::new();
    for meta in listed {
        let key = meta.location.as_ref();
        let key = key
            .strip_prefix(root.as_ref())
            .unwrap_or(key)
            .trim_start_matches('/')
            .to_string();
        if key.starts_with(PENDING) {
            continue;
        }
        let bytes = rt
            .block_on(async { store.get(&meta.location).await?.bytes().await })
            .unwrap();
        let records = ObjectFileSink::read_part(&key, &bytes).unwrap_or_else(|e| panic!("{e}"));
        parts.insert(key, records);
    }
    parts
}

/// Checks the part keys are `date=YYYY-MM-DD/hour=HH/part-…` and that each part holds
/// records of its hour only (`hour_of` gives a record's event-time hour since the epoch).
fn assert_partitioned_by_hour<T>(parts: &BTreeMap<String, Vec<T>>, hour_of: impl Fn(&T) -> i64) {
    let mut hours_by_dir: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
    for (key, records) in parts {
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
        assert!(name.starts_with("part-"), "{key}: not a part name");
        let hour: i64 = dir
            .rsplit_once("/hour=")
            .and_then(|(date, hour)| date.starts_with("date=").then_some(hour))
            .and_then(|h| h.parse().ok())
            .unwrap_or_else(|| panic!("{key}: not under date=…/hour=…/"));
        for record in records {
            let h = hour_of(record);
            assert_eq!(
                h.rem_euclid(24),
                hour,
                "{key} holds a record of another hour"
            );
            hours_by_dir.entry(dir).or_default().insert(h);
        }
    }
    for (dir, hours) in hours_by_dir {
        assert_eq!(hours.len(), 1, "{dir} holds records of hours {hours:?}");
    }
}

fn fraud_lines(parts: BTreeMap<String, Vec<FraudAlert>>) -> Vec<String> {
    let mut lines: Vec<String> = parts
        .into_values()
        .flatten()
        .map(|a| serde_json::to_string(&a).unwrap())
        .collect();
    lines.sort();
    lines
}

/// Events spread over two hours of event time, so that parts fall into several hour
/// buckets.
fn generator(events: u64) -> serde_json::Value {
    serde_json::json!({ "events": events, "eventsPerSecond": events / 7200 })
}

fn write_manifest(
    dir: &Path,
    name: &str,
    output: &str,
    files: serde_json::Value,
) -> std::path::PathBuf {
    let manifest = serde_json::json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "StreamJob",
        "metadata": { "name": name },
        "spec": {
            "parallelism": 2,
            "job": {
                "name": "fraud-small-then-large",
                "config": {
                    "generator": generator(KILL_EVENTS),
                    "output": output,
                    "sink": { "files": files },
                },
            },
        },
    });
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, serde_yaml::to_string(&manifest).unwrap()).unwrap();
    path
}

/// The fraud job, writing `format` parts to S3 and checkpointing there, killed five times:
/// what is committed equals the uninterrupted run's output, and no object listed while it
/// ran was partial.
fn fraud_to_s3_killed_repeatedly(format: &str, seed: u64) {
    let Some(server) = S3Server::start(&format!("fraud to {format} parts in S3")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let reference_dir = dir.path().join("reference");
    let expected = run::reference_of(
        "fraud-small-then-large",
        &serde_json::json!({ "generator": generator(KILL_EVENTS), "output": reference_dir }),
        &reference_dir,
    );
    let root = format!("fraud-{format}");
    let uri = format!("s3://{BUCKET}/{root}");
    // Small parts, so that parts also roll between checkpoints.
    let files = serde_json::json!({
        "format": format, "partitionBy": "hour", "maxPartBytes": 16384,
    });
    let manifest = write_manifest(dir.path(), &format!("fraud-{format}"), &uri, files);

    let bucket = server.bucket(BUCKET);
    let env = server.env();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_for_partial_objects(bucket.store(), &root, stop.clone());
    let checkpoints = CheckpointDir {
        arg: format!("s3://{BUCKET}/checkpoints-{format}"),
        env: env.clone(),
        pointer: Box::new(|| {
            bucket
                .get(&format!("checkpoints-{format}/_latest"))
                .map(|b| String::from_utf8_lossy(&b).to_string())
                .unwrap_or_default()
        }),
    };
    run::kill_repeatedly(&manifest, seed, dir.path(), &checkpoints);
    stop.store(true, Ordering::Relaxed);
    let read = watcher.join().expect("a listed object was partial");
    assert!(read > 0, "the reader saw no object while the job ran");

    let parts = committed_records::<FraudAlert>(bucket.store().as_ref(), &root);
    assert!(
        parts.len() > 2,
        "expected parts rolled by size, got {}",
        parts.len()
    );
    assert_partitioned_by_hour(&parts, |a| a.large_at.0.div_euclid(HOUR_MS));
    assert_same(
        &fraud_lines(parts),
        &expected,
        &format!("fraud to {format} parts in S3 after 5 kills"),
    );
    assert!(
        bucket.objects(&format!("{root}/{PENDING}/")).is_empty(),
        "hidden parts are left after the last run"
    );
}

#[test]
fn fraud_to_json_lines_in_s3_killed_repeatedly_commits_exactly_once_and_never_lists_a_partial_object(
) {
    fraud_to_s3_killed_repeatedly("jsonl", 3);
}

#[test]
fn fraud_to_parquet_in_s3_killed_repeatedly_commits_exactly_once_and_never_lists_a_partial_object()
{
    fraud_to_s3_killed_repeatedly("parquet", 13);
}

#[test]
fn q5_to_parquet_in_a_local_directory_equals_the_json_lines_reference() {
    let dir = tempfile::tempdir().unwrap();
    let events = 400_000;
    let reference_dir = dir.path().join("reference");
    let expected = run::reference_of(
        "nexmark-q5",
        &serde_json::json!({ "generator": generator(events), "output": reference_dir }),
        &reference_dir,
    );
    let out = dir.path().join("parquet");
    let uri = format!("file://{}", out.display());
    let config = serde_json::json!({
        "generator": generator(events),
        "output": uri,
        "sink": { "files": { "format": "parquet", "partitionBy": "hour" } },
    });
    let graph = JobRegistry::bundled()
        .build("nexmark-q5", 2, 128, &config)
        .unwrap();
    start_embedded(graph, RunOptions::default())
        .unwrap()
        .wait()
        .unwrap();
    let store = sluice_runtime::objects::open(&uri).unwrap();
    let parts = committed_records::<Q5>(store.as_ref(), "");
    let keys: Vec<String> = parts.keys().cloned().collect();
    assert_eq!(ObjectFileSink::committed_parts(&uri).unwrap(), keys);
    // A window's results carry its end as their event time.
    assert!(
        parts.len() > 2,
        "expected parts in several hours: {parts:?}"
    );
    assert_partitioned_by_hour(&parts, |q| (q.window_end - 1).div_euclid(HOUR_MS));
    let mut lines: Vec<String> = parts
        .into_values()
        .flatten()
        .map(|q| serde_json::to_string(&q).unwrap())
        .collect();
    lines.sort();
    assert_same(&lines, &expected, "q5 in Parquet");
}

//! Kafka against a real broker (KRaft, started by `e2e/kafka/broker.sh`): jobs reading
//! events from a topic and writing results to one, killed and restored from checkpoints,
//! rescaled through savepoints, with brokers restarted; what a read_committed consumer sees
//! must equal the output of the same job over the generator without failures, exactly.
#![cfg(feature = "kafka")]

mod common;

use common::kafka::KafkaCluster;
use common::run::{printed, reference, reference_of, sigterm_for_a_savepoint, sluice, Lcg};
use common::{assert_same, wait_until};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Events of each run: enough for several checkpoints and kills in a test build.
const EVENTS: u64 = 600_000;
/// The generator's splits, and the event topic's partitions: event `n` is in partition
/// `n % 8` exactly as it is in split `n % 8` of the reference run.
const PARTITIONS: i32 = 8;

/// One broker cluster and its jobs at a time: the machine is small.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes events `first..events` of the generator's sequence into `topic`.
fn produce(kafka: &KafkaCluster, topic: &str, first: u64, events: u64) {
    let out = sluice()
        .args(["nexmark", "produce"])
        .arg(format!("kafka://{}/{topic}", kafka.bootstrap))
        .args(["--first", &first.to_string()])
        .args(["--events", &events.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "produce: {}", printed(&out));
}

/// A StreamJob manifest (JSON is YAML).
fn manifest(dir: &Path, job: &str, parallelism: usize, config: &Value) -> PathBuf {
    let path = dir.join(format!("{job}-{parallelism}.yaml"));
    let m = json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "StreamJob",
        "metadata": {"name": job},
        "spec": {"job": {"name": job, "config": config}, "parallelism": parallelism},
    });
    std::fs::write(&path, m.to_string()).unwrap();
    path
}

fn kafka_config(kafka: &KafkaCluster, input: Option<&str>, output: &str) -> Value {
    let mut config = json!({
        "generator": {"events": EVENTS},
        "output": format!("kafka://{}/{output}", kafka.bootstrap),
        "kafka": {"source": {"bounded": true}},
    });
    if let Some(topic) = input {
        config["input"] = json!(format!("kafka://{}/{topic}", kafka.bootstrap));
    }
    config
}

fn run_command(manifest: &Path, dir: &Path) -> Command {
    let mut cmd = sluice();
    cmd.arg("run")
        .arg(manifest)
        .args(["--checkpoint-interval", "300ms", "--restore", "latest"])
        .arg("--checkpoint-dir")
        .arg(dir.join("chk"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--progress-interval", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn latest_checkpoint(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("chk/_latest")).unwrap_or_default()
}

/// Kills the job (SIGKILL of the process: every producer dies with its open transactions)
/// at random moments after a checkpoint, `kills` times; `between(round)` runs while the
/// round's attempt runs, after its first new checkpoint. Then lets a last attempt finish.
/// Returns how many attempts restored a checkpoint.
fn kill_repeatedly(
    manifest: &Path,
    dir: &Path,
    kills: usize,
    seed: u64,
    mut between: impl FnMut(usize),
) -> usize {
    let mut rng = Lcg(seed);
    let mut restored = 0;
    for round in 0..kills {
        let mut child = run_command(manifest, dir).spawn().unwrap();
        let before = latest_checkpoint(dir);
        wait_until("a new checkpoint", Duration::from_secs(120), || {
            latest_checkpoint(dir) != before || child.try_wait().unwrap().is_some()
        });
        between(round);
        std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
        child.kill().unwrap();
        let result = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(
            !result.status.success(),
            "round {round}: the job ended before it was killed; use more events\n{stderr}"
        );
        restored += stderr.matches("restoring from").count();
    }
    let last = run_command(manifest, dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&last.stderr);
    assert!(last.status.success(), "last attempt: {stderr}");
    restored + stderr.matches("restoring from").count()
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

/// Topics `events` (holding `events` events) and `q5` with `replication`, and a manifest of
/// q5 reading the one and writing the other. Returns the reference output and the manifest.
fn q5_from_kafka_to_kafka(
    kafka: &KafkaCluster,
    dir: &Path,
    replication: i32,
    events: u64,
) -> (Vec<String>, PathBuf) {
    kafka.create_topic("events", PARTITIONS, replication);
    kafka.create_topic("q5", 3, replication);
    produce(kafka, "events", 0, events);
    let expected = reference("nexmark-q5", events, dir);
    let config = kafka_config(kafka, Some("events"), "q5");
    (expected, manifest(dir, "nexmark-q5", 2, &config))
}

#[test]
fn kafka_to_q5_killed_repeatedly_with_a_broker_restart_commits_exactly_once() {
    let _serial = serial();
    let test = "kafka_to_q5_killed_repeatedly";
    let Some(kafka) = KafkaCluster::start(test, 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The broker's restart keeps one round long: enough events that the job still runs
    // when each later round's kill comes.
    let (expected, manifest) = q5_from_kafka_to_kafka(&kafka, dir.path(), 1, 3 * EVENTS);
    let restored = kill_repeatedly(&manifest, dir.path(), 4, 5, |round| {
        if round == 1 {
            // The broker goes away under the running job and comes back; the job must get
            // past it (another checkpoint) before it is killed.
            kafka.stop_node(1);
            std::thread::sleep(Duration::from_secs(2));
            kafka.start_node(1);
            let before = latest_checkpoint(dir.path());
            wait_until(
                "a checkpoint after the broker restart",
                Duration::from_secs(180),
                || latest_checkpoint(dir.path()) != before,
            );
        }
    });
    assert!(
        restored >= 3,
        "only {restored} attempts restored a checkpoint"
    );
    assert_same(
        &sorted(kafka.read_committed("q5")),
        &expected,
        "q5 from Kafka to Kafka after 4 kills and a broker restart",
    );
}

#[test]
fn fraud_to_kafka_killed_repeatedly_commits_exactly_once() {
    let _serial = serial();
    let test = "fraud_to_kafka_killed_repeatedly";
    let Some(kafka) = KafkaCluster::start(test, 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    kafka.create_topic("alerts", 2, 1);
    let job = "fraud-small-then-large";
    let expected = reference(job, EVENTS, dir.path());
    let manifest = manifest(dir.path(), job, 2, &kafka_config(&kafka, None, "alerts"));
    let restored = kill_repeatedly(&manifest, dir.path(), 4, 11, |_| {});
    assert!(
        restored >= 3,
        "only {restored} attempts restored a checkpoint"
    );
    assert_same(
        &sorted(kafka.read_committed("alerts")),
        &expected,
        "fraud alerts in Kafka after 4 kills",
    );
}

/// At least once: after kills, every alert is in the topic, some perhaps twice, and nothing
/// that is not an alert.
#[test]
fn fraud_to_kafka_at_least_once_killed_repeatedly_loses_nothing() {
    let _serial = serial();
    let Some(kafka) = KafkaCluster::start("fraud_to_kafka_at_least_once", 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    kafka.create_topic("alerts", 2, 1);
    let job = "fraud-small-then-large";
    let mut expected = reference(job, EVENTS, dir.path());
    let mut config = kafka_config(&kafka, None, "alerts");
    config["kafka"]["sink"] = json!({"delivery": "atLeastOnce"});
    let manifest = manifest(dir.path(), job, 2, &config);
    kill_repeatedly(&manifest, dir.path(), 2, 17, |_| {});
    let mut written = kafka.read_committed("alerts");
    assert!(written.len() >= expected.len());
    written.sort();
    written.dedup();
    expected.dedup();
    assert_same(
        &written,
        &expected,
        "fraud alerts at least once after 2 kills",
    );
}

/// The consumer group of the rescaled job's source: its commits say how far the job read.
const RESCALE_GROUP: &str = "q5-rescale";

/// `sluice run` of `manifest` (an unbounded source) at `parallelism`, from `restore`, with
/// checkpoints under `dir/chk-<parallelism>`.
fn start_unbounded(
    manifest: &Path,
    dir: &Path,
    parallelism: usize,
    restore: Option<&str>,
) -> std::process::Child {
    let mut cmd = sluice();
    cmd.arg("run")
        .arg(manifest)
        .args(["--parallelism", &parallelism.to_string()])
        .args(["--checkpoint-interval", "300ms"])
        .arg("--checkpoint-dir")
        .arg(dir.join(format!("chk-{parallelism}")))
        .arg("--savepoint-dir")
        .arg(dir.join("savepoints"))
        .arg("--state-dir")
        .arg(dir.join(format!("state-{parallelism}")))
        .args(["--progress-interval", "0"])
        .stderr(Stdio::piped());
    if let Some(r) = restore {
        cmd.args(["--restore", r]);
    }
    cmd.spawn().unwrap()
}

/// Waits until `group` committed `offsets` of the event topic, which is all it holds, then
/// stops the job with SIGTERM and returns the savepoint it stopped with.
fn stop_when_read(
    kafka: &KafkaCluster,
    mut job: std::process::Child,
    group: &str,
    offsets: u64,
) -> String {
    wait_until(
        "the job to commit the offsets of every event",
        Duration::from_secs(180),
        || {
            assert!(
                job.try_wait().unwrap().is_none(),
                "the job ended with an unbounded source"
            );
            // An error while the group's coordinator loads: not yet.
            kafka
                .committed_offsets(group, "events")
                .is_ok_and(|c| c >= offsets as i64)
        },
    );
    sigterm_for_a_savepoint(job)
}

/// Runs `manifest` (an unbounded source) at `parallelism` (from `restore`) until the group
/// committed `offsets` of the event topic, then stops it; returns its savepoint.
fn run_then_stop(
    kafka: &KafkaCluster,
    manifest: &Path,
    dir: &Path,
    parallelism: usize,
    restore: Option<&str>,
    offsets: u64,
) -> String {
    let job = start_unbounded(manifest, dir, parallelism, restore);
    stop_when_read(kafka, job, RESCALE_GROUP, offsets)
}

/// The events arrive in three stages, each read by the job at another parallelism: 2 reads
/// the first third and stops with a savepoint, 3 restores it and reads the second, 1 the
/// rest to the end. Windows open across the stages carry their state through both rescales.
#[test]
fn rescaling_2_3_1_through_savepoints_reassigns_partitions_without_loss_or_duplicates() {
    let _serial = serial();
    let test = "kafka_rescale";
    let Some(kafka) = KafkaCluster::start(test, 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    kafka.create_topic("events", PARTITIONS, 1);
    kafka.create_topic("q5", 3, 1);
    let expected = reference("nexmark-q5", EVENTS, dir.path());
    let mut open = kafka_config(&kafka, Some("events"), "q5");
    open["kafka"]["source"] = json!({"bounded": false, "groupId": RESCALE_GROUP});
    let open = manifest(dir.path(), "nexmark-q5", 2, &open);
    let bounded = manifest(
        dir.path(),
        "nexmark-q5",
        1,
        &kafka_config(&kafka, Some("events"), "q5"),
    );
    let (third, two_thirds) = (EVENTS / 3, 2 * EVENTS / 3);
    produce(&kafka, "events", 0, third);
    let first = run_then_stop(&kafka, &open, dir.path(), 2, None, third);
    produce(&kafka, "events", third, two_thirds);
    let second = run_then_stop(&kafka, &open, dir.path(), 3, Some(&first), two_thirds);
    produce(&kafka, "events", two_thirds, EVENTS);
    let last = sluice()
        .arg("run")
        .arg(&bounded)
        .args(["--parallelism", "1", "--restore", &second])
        .arg("--state-dir")
        .arg(dir.path().join("state-1"))
        .args(["--progress-interval", "0"])
        .output()
        .unwrap();
    assert!(last.status.success(), "{}", printed(&last));
    assert_same(
        &sorted(kafka.read_committed("q5")),
        &expected,
        "q5 rescaled 2 -> 3 -> 1",
    );
}

/// Partitions added to the event topic while q0 runs at parallelism 3 over two partitions
/// (so one subtask starts with none) are taken up and read from their first record, although
/// the job starts from `latest` and records are in them before the job looks: what it
/// commits equals an uninterrupted run over every event.
#[test]
fn partitions_added_while_a_job_runs_are_read_from_their_first_record() {
    let _serial = serial();
    let Some(kafka) = KafkaCluster::start("kafka_partition_discovery", 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let events = EVENTS / 2;
    kafka.create_topic("events", 2, 1);
    kafka.create_topic("q0", 2, 1);
    let expected = reference("nexmark-q0", events, dir.path());
    let group = "q0-discovery";
    // Long enough for every event to be written before the job's first look.
    let discovery = Duration::from_secs(15);
    let mut config = kafka_config(&kafka, Some("events"), "q0");
    config["kafka"]["source"] = json!({
        "groupId": group,
        "startFrom": "latest",
        "partitionDiscoveryMs": discovery.as_millis() as u64,
    });
    let manifest = manifest(dir.path(), "nexmark-q0", 3, &config);
    let started = Instant::now();
    let job = start_unbounded(&manifest, dir.path(), 3, None);
    // A checkpoint: every reader is open, at the end of its (empty) partition.
    wait_until("the first checkpoint", Duration::from_secs(60), || {
        dir.path().join("chk-3/_latest").exists()
    });
    produce(&kafka, "events", 0, events / 2);
    kafka.add_partitions("events", 5);
    produce(&kafka, "events", events / 2, events);
    assert!(
        started.elapsed() < discovery,
        "writing the events took longer than the discovery interval: the new partitions \
         may have been found empty; raise the interval"
    );
    stop_when_read(&kafka, job, group, events);
    assert_same(
        &sorted(kafka.read_committed("q0")),
        &expected,
        "q0 with three partitions added while it ran",
    );
}

/// The first half of the events, in two partitions, read by q0 at parallelism 2, which
/// stops with a savepoint once `group` committed all of them; then the topic grows to four
/// partitions and the second half is written across them. Returns the reference output and
/// the savepoint.
fn q0_read_half_then_partitions_added(
    kafka: &KafkaCluster,
    dir: &Path,
    group: &str,
) -> (Vec<String>, String) {
    let events = EVENTS / 2;
    kafka.create_topic("events", 2, 1);
    kafka.create_topic("q0", 2, 1);
    let expected = reference("nexmark-q0", events, dir);
    let mut config = kafka_config(kafka, Some("events"), "q0");
    config["kafka"]["source"] = json!({"groupId": group, "partitionDiscoveryMs": 0});
    produce(kafka, "events", 0, events / 2);
    let job = start_unbounded(&manifest(dir, "nexmark-q0", 2, &config), dir, 2, None);
    let savepoint = stop_when_read(kafka, job, group, events / 2);
    kafka.add_partitions("events", 4);
    produce(kafka, "events", events / 2, events);
    (expected, savepoint)
}

/// Runs q0 with `source` options, bounded, at parallelism 3, from `restore`.
fn run_q0_to_the_end(kafka: &KafkaCluster, dir: &Path, source: Value, restore: Option<&str>) {
    let mut config = kafka_config(kafka, Some("events"), "q0");
    config["kafka"]["source"] = source;
    let mut cmd = sluice();
    cmd.arg("run")
        .arg(manifest(dir, "nexmark-q0", 3, &config))
        .arg("--state-dir")
        .arg(dir.join("state-end"))
        .args(["--progress-interval", "0"]);
    if let Some(savepoint) = restore {
        cmd.args(["--restore", savepoint]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", printed(&out));
}

/// A job restoring a savepoint taken before partitions were added reads those from their
/// first record, although it is configured to start from `latest` and not to look for
/// partitions while running; the others resume where the savepoint left them.
#[test]
fn partitions_missing_from_the_restored_savepoint_are_read_from_their_first_record() {
    let _serial = serial();
    let Some(kafka) = KafkaCluster::start("kafka_partitions_after_savepoint", 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (expected, savepoint) = q0_read_half_then_partitions_added(&kafka, dir.path(), "q0-sp");
    let source = json!({"bounded": true, "startFrom": "latest", "partitionDiscoveryMs": 0});
    run_q0_to_the_end(&kafka, dir.path(), source, Some(&savepoint));
    assert_same(
        &sorted(kafka.read_committed("q0")),
        &expected,
        "q0 restored after two partitions were added",
    );
}

/// `startFrom: committed` without a snapshot: partitions the group committed resume at its
/// offsets, those it never committed (added since) start at their first record.
#[test]
fn a_job_starting_from_the_groups_committed_offsets_reads_on_from_them() {
    let _serial = serial();
    let Some(kafka) = KafkaCluster::start("kafka_start_from_committed", 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let group = "q0-committed";
    let (expected, _) = q0_read_half_then_partitions_added(&kafka, dir.path(), group);
    let source = json!({"bounded": true, "startFrom": "committed", "groupId": group});
    run_q0_to_the_end(&kafka, dir.path(), source, None);
    assert_same(
        &sorted(kafka.read_committed("q0")),
        &expected,
        "q0 started again from the group's committed offsets",
    );
}

/// `startFrom: {timestamp: T}`: each partition is read from its first record timestamped at
/// or after `T` (the event's time), later records whatever their time. q0's output is
/// compared with the bids a plain consumer finds there.
#[test]
fn a_job_starting_from_a_timestamp_reads_each_partition_from_its_first_record_at_or_after_it() {
    let _serial = serial();
    let Some(kafka) = KafkaCluster::start("kafka_start_from_timestamp", 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    kafka.create_topic("events", 3, 1);
    kafka.create_topic("q0", 2, 1);
    produce(&kafka, "events", 0, EVENTS / 4);
    let mut events: Vec<(i32, i64, Value)> = kafka
        .read_records("events")
        .into_iter()
        .map(|r| {
            (
                r.partition,
                r.offset,
                serde_json::from_slice(&r.value.unwrap()).unwrap(),
            )
        })
        .collect();
    events.sort_by_key(|&(partition, offset, _)| (partition, offset));
    let time = |event: &Value| event["dateTime"].as_i64().unwrap();
    let mut times: Vec<i64> = events.iter().map(|(_, _, e)| time(e)).collect();
    times.sort_unstable();
    let start = times[times.len() / 2];
    let mut expected: Vec<String> = Vec::new();
    for partition in 0..3 {
        let bids = events
            .iter()
            .filter(|(p, _, _)| *p == partition)
            .skip_while(|(_, _, e)| time(e) < start)
            .filter(|(_, _, e)| e["type"] == "bid");
        expected.extend(bids.map(|(_, _, bid)| {
            let mut bid = bid.clone();
            bid.as_object_mut().unwrap().remove("type");
            bid.to_string()
        }));
    }
    expected.sort();
    let source = json!({"bounded": true, "startFrom": {"timestamp": start}});
    run_q0_to_the_end(&kafka, dir.path(), source, None);
    let got = kafka
        .read_committed("q0")
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).unwrap().to_string())
        .collect();
    assert_same(&sorted(got), &expected, "q0 from the median event time");
}

/// The Kafka samples of `config/samples/kafka` as shipped, pointed at the test broker and
/// bounded: a read_committed consumer sees exactly what the same job writes over the
/// generator.
#[test]
fn the_kafka_samples_commit_what_the_generator_path_writes() {
    let _serial = serial();
    let Some(kafka) = KafkaCluster::start("kafka_samples", 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/samples/kafka");
    let mut events_topic = None;
    for name in ["nexmark-q5.yaml", "fraud-small-then-large.yaml"] {
        let path = samples.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let sample = sluice_crds::parse_manifest(&text, &path.display().to_string()).unwrap();
        let job = sample.spec.job.name.clone();
        let mut config = sample.spec.job.config.clone();
        let topic = |field: &str| {
            let uri = config[field].as_str().unwrap_or_default();
            uri.strip_prefix("kafka:///")
                .unwrap_or_else(|| panic!("{name}: {field} {uri} is not kafka:///<topic>"))
                .to_string()
        };
        let (input, output) = (topic("input"), topic("output"));
        // The events the generator path generates: the sample's outOfOrderMs is both the
        // watermark's bound and, over the generator, how far events come out of order.
        let out_of_order = config["generator"]["outOfOrderMs"].as_u64().unwrap_or(0);
        if events_topic != Some((input.clone(), out_of_order)) {
            kafka.create_topic(&input, PARTITIONS, 1);
            let produced = sluice()
                .args(["nexmark", "produce"])
                .arg(format!("kafka://{}/{input}", kafka.bootstrap))
                .args(["--events", &EVENTS.to_string()])
                .args(["--out-of-order-ms", &out_of_order.to_string()])
                .output()
                .unwrap();
            assert!(produced.status.success(), "produce: {}", printed(&produced));
            events_topic = Some((input, out_of_order));
        }
        kafka.create_topic(&output, 3, 1);
        let mut generator_path = config.clone();
        let out = dir.path().join(format!("reference-{job}"));
        let object = generator_path.as_object_mut().unwrap();
        object.remove("input");
        object.remove("kafka");
        object.insert("output".into(), json!(out));
        generator_path["generator"]["events"] = json!(EVENTS);
        let expected = reference_of(&job, &generator_path, &out);
        config["kafka"]["bootstrapServers"] = json!(kafka.bootstrap);
        config["kafka"]["source"]["bounded"] = json!(true);
        let manifest = manifest(dir.path(), &job, sample.spec.parallelism as usize, &config);
        let run = sluice()
            .arg("run")
            .arg(&manifest)
            .arg("--state-dir")
            .arg(dir.path().join(format!("state-{job}")))
            .args(["--progress-interval", "0"])
            .output()
            .unwrap();
        assert!(run.status.success(), "{name}: {}", printed(&run));
        assert_same(
            &sorted(kafka.read_committed(&output)),
            &expected,
            &format!("{name} from Kafka to Kafka"),
        );
    }
}

#[test]
fn three_brokers_with_one_restarted_under_a_killed_job_commit_exactly_once() {
    let _serial = serial();
    let test = "kafka_three_brokers";
    let Some(kafka) = KafkaCluster::start(test, 3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (expected, manifest) = q5_from_kafka_to_kafka(&kafka, dir.path(), 3, EVENTS);
    // A node stops and comes back while the job runs (and is killed meanwhile).
    std::thread::scope(|scope| {
        let mut restart = None;
        kill_repeatedly(&manifest, dir.path(), 2, 7, |round| {
            if round == 0 {
                restart = Some(scope.spawn(|| {
                    kafka.stop_node(2);
                    std::thread::sleep(Duration::from_secs(1));
                    kafka.start_node(2);
                }));
            }
        });
        if let Some(r) = restart {
            r.join().unwrap();
        }
    });
    assert_same(
        &sorted(kafka.read_committed("q5")),
        &expected,
        "q5 on three brokers",
    );
}

/// Drives a sink writer by hand as the engine would: writes, pre-commits at a barrier and
/// stops without the commit (the process died right after the checkpoint completed), with
/// a further transaction left open. A writer restored from that checkpoint must commit the
/// records of the listed transaction exactly once, and drop the open one; a second restore
/// from the same checkpoint must change nothing.
#[test]
fn a_listed_transaction_whose_commit_was_lost_is_written_again_exactly_once() {
    use sluice_runtime::api::Record;
    use sluice_runtime::connectors::kafka::{
        JsonEncoder, KafkaClientConfig, KafkaSink, KafkaSinkConfig,
    };
    use sluice_runtime::connectors::{Sink, SinkContext, SinkTransaction};
    use sluice_runtime::time::EventTime;

    let _serial = serial();
    let Some(kafka) = KafkaCluster::start("kafka_lost_commit", 1) else {
        return;
    };
    kafka.create_topic("out", 2, 1);
    let config = KafkaSinkConfig::new(KafkaClientConfig::new(&kafka.bootstrap), "out");
    let sink = KafkaSink::new(config, JsonEncoder::<u64>::default()).unwrap();
    let records = |range: std::ops::Range<u64>| -> Vec<Record<u64>> {
        range.map(|v| Record::new(EventTime(v as i64), v)).collect()
    };
    let context = |run: &str, restored: Vec<SinkTransaction>| SinkContext {
        subtask: 0,
        parallelism: 1,
        run_id: run.into(),
        job: "lost-commit".into(),
        uid: "sink".into(),
        restored,
    };

    let mut writer = sink.open(&context("run-1", Vec::new())).unwrap();
    writer.write(&records(0..300)).unwrap();
    let listed = writer.pre_commit(1, 0).unwrap();
    let written: u64 = listed
        .iter()
        .map(|t| match t {
            SinkTransaction::Kafka(k) => k.ranges.iter().map(|r| r.len()).sum::<u64>(),
            other => panic!("not a Kafka transaction: {other:?}"),
        })
        .sum();
    assert_eq!(written, 300, "{listed:?}");
    // Records after the barrier: no snapshot lists them.
    writer.write(&records(1000..1100)).unwrap();
    drop(writer);

    let expected: Vec<String> = sorted((0..300).map(|v| v.to_string()).collect());
    for run in ["run-2", "run-3"] {
        let mut writer = sink.open(&context(run, listed.clone())).unwrap();
        // The restored writer goes on writing; its own transaction is not committed here.
        writer.write(&records(2000..2010)).unwrap();
        drop(writer);
        assert_same(
            &sorted(kafka.read_committed("out")),
            &expected,
            &format!("committed records after restore {run}"),
        );
    }
}

#[test]
fn a_bad_bootstrap_address_or_a_missing_topic_fails_the_run_naming_it() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{closed}");
    let config = json!({
        "input": format!("kafka://{address}/events"),
        "output": "discard",
    });
    let out = sluice()
        .arg("run")
        .arg(manifest(dir.path(), "nexmark-q0", 1, &config))
        .args(["--progress-interval", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        printed(&out).contains(&address),
        "the error names no broker address:\n{}",
        printed(&out)
    );

    let Some(kafka) = KafkaCluster::start("kafka_missing_topic", 1) else {
        return;
    };
    let config = json!({
        "generator": {"events": 10},
        "output": format!("kafka://{}/no-such-topic", kafka.bootstrap),
    });
    let out = sluice()
        .arg("run")
        .arg(manifest(dir.path(), "nexmark-q0", 1, &config))
        .args(["--progress-interval", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        printed(&out).contains("no-such-topic"),
        "the error names no topic:\n{}",
        printed(&out)
    );
}

/// Events of the dead-letter tests, and the records among them that are not events: each
/// is written into its partition between the two halves of the events, with a key and a
/// header of its own.
const DEAD_LETTER_EVENTS: u64 = 200_000;
const MALFORMED: [(i32, &str); 6] = [
    (1, "{\"bid\": {\"auction\": 1000, \"bidder\": 1001, \"pri"),
    (2, "not JSON at all"),
    (4, "{\"hello\": \"world\"}"),
    (5, "{\"person\": null}"),
    (7, "[1, 2, 3"),
    (7, "{\"bid\": {\"auction\": \"a string\"}}"),
];

/// Creates the topics of a dead-letter test and fills `events` with `events` events and the
/// [`MALFORMED`] records between their halves; returns `(partition, offset, value)` of each
/// malformed record.
fn events_with_malformed(kafka: &KafkaCluster, events: u64) -> Vec<(i32, i64, String)> {
    kafka.create_topic("events", PARTITIONS, 1);
    kafka.create_topic("dead-letters", 2, 1);
    kafka.create_topic("q5", 3, 1);
    produce(kafka, "events", 0, events / 2);
    let written = MALFORMED
        .iter()
        .enumerate()
        .map(|(i, &(partition, value))| {
            let key = format!("key-{i}");
            let offset = kafka.produce_one(
                "events",
                partition,
                Some(key.as_bytes()),
                value.as_bytes(),
                &[("origin", "test")],
            );
            (partition, offset, value.to_string())
        })
        .collect();
    produce(kafka, "events", events / 2, events);
    written
}

/// q5 over events with malformed records among them: the committed output is that of the
/// events alone, and the dead-letter topic holds each malformed record once, with its key,
/// value and headers and headers naming where it was read and why it did not decode.
#[test]
fn records_that_do_not_decode_go_to_the_dead_letter_topic_and_the_job_goes_on() {
    let _serial = serial();
    let test = "kafka_dead_letters";
    let Some(kafka) = KafkaCluster::start(test, 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let malformed = events_with_malformed(&kafka, DEAD_LETTER_EVENTS);
    let expected = reference("nexmark-q5", DEAD_LETTER_EVENTS, dir.path());
    let mut config = kafka_config(&kafka, Some("events"), "q5");
    config["generator"]["events"] = json!(DEAD_LETTER_EVENTS);
    config["kafka"]["source"]["deadLetterTopic"] = json!("dead-letters");
    let manifest = manifest(dir.path(), "nexmark-q5", 2, &config);
    let run = run_command(&manifest, dir.path()).output().unwrap();
    assert!(run.status.success(), "{}", printed(&run));
    assert_same(
        &sorted(kafka.read_committed("q5")),
        &expected,
        "q5 over events with malformed records",
    );

    let mut letters = kafka.read_records("dead-letters");
    letters.sort_by_key(|r| {
        let at = |h| r.header(h).and_then(|v| v.parse::<i64>().ok());
        (at("sluice.partition"), at("sluice.offset"))
    });
    let found: Vec<(i32, i64, String)> = letters
        .iter()
        .map(|r| {
            let value = String::from_utf8(r.value.clone().unwrap_or_default()).unwrap();
            (
                r.header("sluice.partition").unwrap().parse().unwrap(),
                r.header("sluice.offset").unwrap().parse().unwrap(),
                value,
            )
        })
        .collect();
    assert_eq!(found, malformed, "the dead letters' origins and values");
    for (letter, (i, _)) in letters.iter().zip(MALFORMED.iter().enumerate()) {
        let key = format!("key-{i}");
        assert_eq!(letter.key.as_deref(), Some(key.as_bytes()), "{letter:?}");
        assert_eq!(letter.header("origin"), Some("test"), "{letter:?}");
        assert_eq!(
            letter.header("sluice.job"),
            Some("nexmark-q5"),
            "{letter:?}"
        );
        assert_eq!(
            letter.header("sluice.operator"),
            Some("kafka-events"),
            "{letter:?}"
        );
        assert_eq!(letter.header("sluice.topic"), Some("events"), "{letter:?}");
        assert!(
            letter.header("sluice.error").is_some_and(|e| !e.is_empty()),
            "{letter:?}"
        );
    }
}

/// The same events, fewer of them, with a `maxDeadLetterRate` the malformed records exceed:
/// the run fails naming the topic, a partition with a malformed record, the rate and the
/// threshold. Without a dead-letter topic it fails at the first malformed record, as before;
/// with a dead letter the brokers refuse, at the barrier that waits for it.
#[test]
fn a_dead_letter_rate_above_the_threshold_fails_the_run_naming_it() {
    let _serial = serial();
    let test = "kafka_dead_letter_rate";
    let Some(kafka) = KafkaCluster::start(test, 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // 2,500 events per partition: a malformed record is read after 1,250 of them, past the
    // sample of 1,000, at a rate of 1/1251.
    let events = 20_000;
    events_with_malformed(&kafka, events);
    let mut config = kafka_config(&kafka, Some("events"), "q5");
    config["generator"]["events"] = json!(events);
    config["kafka"]["source"]["deadLetterTopic"] = json!("dead-letters");
    config["kafka"]["source"]["maxDeadLetterRate"] = json!(0.0005);
    let limited = manifest(dir.path(), "nexmark-q5", 2, &config);
    let run = run_command(&limited, dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "the run succeeded:\n{stderr}");
    let named = MALFORMED
        .iter()
        .any(|(p, _)| stderr.contains(&format!("topic 'events' partition {p} ")));
    assert!(named, "no topic and partition named:\n{stderr}");
    eprintln!(
        "{test}: {}",
        stderr.trim_end().lines().last().unwrap_or_default()
    );
    assert!(
        stderr.contains("dead-letter rate 0.000799") && stderr.contains("maxDeadLetterRate 0.0005"),
        "no rate and threshold named:\n{stderr}"
    );

    // Without a dead-letter topic the first malformed record fails the run.
    let dir = tempfile::tempdir().unwrap();
    let mut config = kafka_config(&kafka, Some("events"), "q5");
    config["generator"]["events"] = json!(events);
    let failing = manifest(dir.path(), "nexmark-q5", 2, &config);
    let run = run_command(&failing, dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "the run succeeded:\n{stderr}");
    assert!(
        stderr.contains("record at offset 1250: "),
        "no malformed record named:\n{stderr}"
    );
    eprintln!(
        "{test}: {}",
        stderr.trim_end().lines().last().unwrap_or_default()
    );

    // A dead letter the brokers refuse (larger than the dead-letter topic takes) fails the
    // run at the next barrier instead of being covered by a checkpoint.
    kafka.create_topic_with("small-letters", 1, 1, &[("max.message.bytes", "2000")]);
    let big = format!("{{\"padding\": \"{}\"", "x".repeat(10_000));
    kafka.produce_one("events", 0, None, big.as_bytes(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut config = kafka_config(&kafka, Some("events"), "q5");
    config["generator"]["events"] = json!(events);
    config["kafka"]["source"]["deadLetterTopic"] = json!("small-letters");
    let refused = manifest(dir.path(), "nexmark-q5", 2, &config);
    let run = run_command(&refused, dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "the run succeeded:\n{stderr}");
    // The brokers refuse a batch as a whole: the dead letter named may be another one the
    // producer wrote in the same batch as the big one.
    let refused = stderr.lines().any(|line| {
        line.contains("Kafka topic 'events' partition ")
            && line.contains("was not written to 'small-letters'")
            && line.contains("too large")
    });
    assert!(refused, "no refused dead letter named:\n{stderr}");
    eprintln!(
        "{test}: {}",
        stderr.trim_end().lines().last().unwrap_or_default()
    );
}

/// A Kafka source's lag, per partition: a job whose sink is throttled falls behind the
/// events already in the topic, and each partition's split reports its next offset and the
/// records past it, which together make the partition's end offset exactly.
#[test]
fn each_partition_reports_its_offset_and_backlog() {
    let _serial = serial();
    let Some(kafka) = KafkaCluster::start("kafka_backlog", 1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // More than the queues between the source and the throttled sink hold.
    let events = 1_000_000u64;
    kafka.create_topic("events", 2, 1);
    produce(&kafka, "events", 0, events);
    let mut config = kafka_config(&kafka, Some("events"), "q0");
    config["output"] = json!("discard");
    config["kafka"]["source"] = json!({});
    config["sink"] = json!({"parallelism": 1, "maxRecordsPerSecond": 500});
    let manifest = manifest(dir.path(), "nexmark-q0", 2, &config);
    let mut job = sluice()
        .arg("run")
        .arg(&manifest)
        .args(["--control-addr", "127.0.0.1:0", "--progress-interval", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(job.stderr.take().unwrap());
    let mut lines = std::io::BufRead::lines(stderr);
    let api = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("control API listening on ")
                .map(String::from)
        })
        .expect("the control API's address");
    // Drained, so that the job never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).build().into();
    let splits = || -> Vec<Value> {
        let job: Value = agent
            .get(&format!("{api}/v1/job"))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        job["subtasks"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["splits"].as_array().unwrap().clone())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let seen = splits();
        if seen.len() == 2
            && seen
                .iter()
                .all(|s| s["backlog"].as_u64().is_some_and(|b| b > 0))
        {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "no backlog from both partitions: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // `sluice nexmark produce` writes event n to partition n % 2.
    for s in &seen {
        let (position, backlog) = (
            s["position"].as_u64().unwrap(),
            s["backlog"].as_u64().unwrap(),
        );
        assert_eq!(position + backlog, events / 2, "{s}");
    }
    // The dashboard's backlog panel queries a series this job exports, with its labels.
    let metrics = agent
        .get(&format!("{api}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let dashboard = include_str!("../../config/dashboards/sluice.json");
    let problems = sluice_http::dashboard::problems(dashboard, &metrics, |series| {
        series == "sluice_source_split_backlog_records"
    });
    assert!(problems.is_empty(), "{problems:#?}");
    let _ = job.kill();
    let _ = job.wait();
}

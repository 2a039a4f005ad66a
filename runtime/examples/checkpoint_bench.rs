//! Checkpoints of large RocksDB state: builds `KEYS` keys of `VALUE_BYTES` each (1 GiB by
//! default), then measures a full checkpoint, an incremental one after a small change, the
//! per-batch processing latency while checkpoints run under load, and restore throughput.
//! Run through `bench/checkpoints.sh`.

use sluice_runtime::api::WatermarkStrategy;
use sluice_runtime::api::{JobBuilder, KeyedProcessFunction, ProcessContext, Record};
use sluice_runtime::connectors::{DiscardSink, QueueSource};
use sluice_runtime::exec::metrics::latency_quantile;
use sluice_runtime::exec::{
    start_embedded, CheckpointConfig, CompletedSnapshot, Restore, RunOptions, RunningJob,
};
use sluice_runtime::state::{RocksConfig, StateBackend, StateDescriptor, ValueState};
use sluice_runtime::time::EventTime;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

struct Store {
    value: ValueState<Vec<u8>>,
}

impl KeyedProcessFunction<u64, u64, u64> for Store {
    fn process(&mut self, key: u64, ctx: &mut ProcessContext<'_, u64, u64>) {
        ctx.value(self.value).set(payload(key));
        ctx.emit(key);
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Incompressible bytes derived from the key.
fn payload(key: u64) -> Vec<u8> {
    let bytes = env("VALUE_BYTES", 1024) as usize;
    let mut x = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn job(
    dir: &std::path::Path,
    parallelism: usize,
    restore: Option<Restore>,
) -> (RunningJob, crossbeam_channel::Sender<Record<u64>>) {
    let (source, input) = QueueSource::<u64>::new();
    let job = JobBuilder::new("checkpoint-bench", parallelism, 128);
    job.source("keys", source, WatermarkStrategy::monotonous())
        .key_by(|k: &u64| *k)
        .process("store", |ctx| {
            Ok(Store {
                value: ctx.value_state::<u64, Vec<u8>>(StateDescriptor::new("value"))?,
            })
        })
        .sink("discard", DiscardSink);
    let options = RunOptions {
        checkpoints: Some(CheckpointConfig {
            interval: None,
            retain: 2,
            ..CheckpointConfig::new(format!("file://{}", dir.join("checkpoints").display()))
        }),
        restore,
        state_backend: StateBackend::RocksDb(RocksConfig::new(
            dir.join(format!("state-{parallelism}")),
            env("MEMORY_MIB", 512) as usize * (1 << 20),
        )),
        ..RunOptions::default()
    };
    let running = start_embedded(job.build().expect("job"), options).expect("start");
    (running, input)
}

fn processed(job: &RunningJob) -> u64 {
    job.metrics()
        .iter()
        .filter(|t| t.is_sink)
        .map(|t| t.sink_records)
        .sum()
}

fn wait_processed(job: &RunningJob, n: u64) {
    while processed(job) < n {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn report(what: &str, c: &CompletedSnapshot) {
    println!(
        "{what:<34} {:>8.0} ms  {:>9.1} MiB referenced  {:>9.1} MiB uploaded",
        c.duration.as_secs_f64() * 1000.0,
        mib(c.bytes),
        mib(c.uploaded_bytes)
    );
}

fn main() {
    let keys = env("KEYS", 1 << 20);
    let parallelism = env("PARALLELISM", 1) as usize;
    let dir = tempfile::tempdir().expect("temporary directory");
    let (running, input) = job(dir.path(), parallelism, None);

    let started = Instant::now();
    for k in 0..keys {
        input.send(Record::new(EventTime(0), k)).expect("send");
    }
    wait_processed(&running, keys);
    let built = started.elapsed();
    println!(
        "state built: {keys} keys x {} B in {:.1} s ({:.0} keys/s)",
        env("VALUE_BYTES", 1024),
        built.as_secs_f64(),
        keys as f64 / built.as_secs_f64()
    );

    let full = running.checkpoint().expect("checkpoint");
    report("full checkpoint", &full);
    // Incremental size after a small change; RocksDB compactions still settling after the
    // bulk load rewrite table files too, so the change is measured twice.
    let changed = 1_000;
    for round in 1..=2u64 {
        for k in 0..changed {
            input
                .send(Record::new(EventTime(0), k * 7 + round))
                .expect("send");
        }
        wait_processed(&running, keys + round * changed);
        let small = running.checkpoint().expect("checkpoint");
        report(&format!("after 1,000 updated keys ({round})"), &small);
    }
    let changed = 2 * changed;

    // Steady load, first without checkpoints, then with one every 500 ms: per-batch latency
    // on the keyed task, so that what checkpoints add shows beside what the writes cost.
    let mut sent = keys + changed;
    for every in [None, Some(Duration::from_millis(500))] {
        let (checkpoints, during) = load(&running, &input, keys, &mut sent, every);
        let what = match every {
            None => "no checkpoint".to_string(),
            Some(_) => format!("{checkpoints} checkpoints"),
        };
        let rate = match env("LOAD_RATE", 20_000) {
            0 => "as fast as it goes".to_string(),
            rate => format!("{rate} keys/s"),
        };
        println!(
            "under load ({rate}), {what}: per-batch latency p50 < {:?}, p99 < {:?}, max < {:?}",
            latency_quantile(&during, 0.5).unwrap_or_default(),
            latency_quantile(&during, 0.99).unwrap_or_default(),
            latency_quantile(&during, 1.0).unwrap_or_default(),
        );
    }
    let sync = running
        .metrics()
        .iter()
        .map(|t| t.max_snapshot_sync)
        .max()
        .unwrap_or_default();
    println!(
        "longest synchronous snapshot part {:.1} ms",
        sync.as_secs_f64() * 1000.0
    );
    let last = running.checkpoint().expect("checkpoint");
    let savepoint = running
        .savepoint(
            &format!("file://{}", dir.path().join("savepoints").display()),
            false,
        )
        .expect("savepoint");
    report("savepoint (canonical format)", &savepoint);
    drop(input);
    running.wait().expect("job");

    let (took, restored) = restore(dir.path(), parallelism, &last.location);
    println!(
        "restore of the {:.1} MiB checkpoint (RocksDB files) at parallelism {parallelism}: \
         {:.2} s ({:.0} MiB/s)",
        mib(last.bytes),
        took.as_secs_f64(),
        mib(last.bytes) / took.as_secs_f64()
    );
    restored.wait().expect("restore");

    // A rescale: every subtask reads only the key groups it owns.
    let rescaled = env("RESTORE_PARALLELISM", 4) as usize;
    let (took, restored) = restore(dir.path(), rescaled, &savepoint.location);
    restored.wait().expect("restore");
    println!(
        "restore of the {:.1} MiB savepoint at parallelism {rescaled} from {parallelism}: \
         {:.2} s ({:.0} MiB/s)",
        mib(savepoint.bytes),
        took.as_secs_f64(),
        mib(savepoint.bytes) / took.as_secs_f64()
    );
    for task in restored.metrics().iter().filter(|t| t.restored_bytes > 0) {
        println!(
            "  {:<12} read {:>7.1} MiB ({:>4.1} % of the savepoint) in {:.2} s",
            task.name,
            mib(task.restored_bytes),
            100.0 * task.restored_bytes as f64 / savepoint.bytes.max(1) as f64,
            task.restore.as_secs_f64()
        );
    }
}

/// Starts the job at `parallelism` from the snapshot at `location`, with no input, and
/// returns the time until every subtask has loaded its part (the run then goes on to a
/// final checkpoint, not counted), and the run.
fn restore(dir: &std::path::Path, parallelism: usize, location: &str) -> (Duration, RunningJob) {
    let started = Instant::now();
    let (restored, input) = job(dir, parallelism, Some(Restore::Snapshot(location.into())));
    drop(input);
    let loaded = |job: &RunningJob| {
        job.metrics()
            .iter()
            .filter(|t| t.name.starts_with("store[") && t.restore > Duration::ZERO)
            .count()
    };
    while loaded(&restored) < parallelism && !restored.is_finished() {
        std::thread::sleep(Duration::from_millis(2));
    }
    (started.elapsed(), restored)
}

/// `LOAD_SECONDS` of updates to existing keys, `LOAD_RATE` a second, while another thread takes
/// a checkpoint `every` so often (as a job's interval does: the load does not wait for
/// them): how many checkpoints completed, and the per-batch latency buckets meanwhile.
fn load(
    running: &RunningJob,
    input: &crossbeam_channel::Sender<Record<u64>>,
    keys: u64,
    sent: &mut u64,
    every: Option<Duration>,
) -> (u32, Vec<u64>) {
    let before = latency_buckets(running);
    let done = std::sync::atomic::AtomicBool::new(false);
    let checkpoints = std::thread::scope(|scope| {
        let checkpointing = scope.spawn(|| {
            let mut checkpoints = 0;
            while let Some(every) = every.filter(|_| !done.load(Ordering::Relaxed)) {
                let next = Instant::now() + every;
                running.checkpoint().expect("checkpoint");
                checkpoints += 1;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            checkpoints
        });
        // Paced in steps of 10 ms, or (rate 0) 10,000 keys whenever the last are processed.
        let rate = env("LOAD_RATE", 20_000);
        let step = if rate == 0 {
            10_000
        } else {
            rate.div_ceil(100)
        };
        let started = Instant::now();
        let mut next = started;
        while started.elapsed() < Duration::from_secs(env("LOAD_SECONDS", 10)) {
            for k in 0..step {
                input
                    .send(Record::new(EventTime(0), (*sent + k) % keys))
                    .expect("send");
            }
            *sent += step;
            if rate == 0 {
                wait_processed(running, *sent);
            } else {
                next += Duration::from_millis(10);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        }
        wait_processed(running, *sent);
        done.store(true, Ordering::Relaxed);
        checkpointing.join().expect("checkpointing thread")
    });
    let after = latency_buckets(running);
    let during = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    (checkpoints, during)
}

/// Per-batch latency buckets of the keyed operator's subtasks, summed.
fn latency_buckets(job: &RunningJob) -> Vec<u64> {
    let mut sum = Vec::new();
    for t in job.metrics().iter().filter(|t| !t.is_source) {
        sum.resize(t.batch_latency.len(), 0);
        for (s, b) in sum.iter_mut().zip(&t.batch_latency) {
            *s += b;
        }
    }
    sum
}

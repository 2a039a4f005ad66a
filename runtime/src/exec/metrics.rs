//! Per-subtask counters, written by the subtask's thread and read by progress reporting and
//! the metrics endpoint. Relaxed atomics: each counter is independent and monotone.

use crate::time::EventTime;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug)]
/// `records_in` counts records entering the chain (read from channels, or from splits by a
/// source); `records_out` records sent to other chains.
pub struct TaskMetrics {
    /// `name[subtask]` of the chain's head operator.
    pub name: String,
    pub is_source: bool,
    pub is_sink: bool,
    records_in: AtomicU64,
    records_out: AtomicU64,
    sink_records: AtomicU64,
    late_records: AtomicU64,
    idle_ns: AtomicU64,
    backpressured_ns: AtomicU64,
    /// Time from a barrier's first arrival to its last, over every checkpoint.
    aligning_ns: AtomicU64,
    busy_ns: AtomicU64,
    watermark: AtomicI64,
    /// Time to process one input batch (or one barrier), in power-of-two microsecond buckets:
    /// bucket `b` counts batches that took less than `2^b` µs.
    batch_latency: [AtomicU64; LATENCY_BUCKETS],
    /// The longest synchronous part of a snapshot (pinning state as a barrier passes).
    max_snapshot_sync_ns: AtomicU64,
    /// Bytes of the restored snapshot this subtask's operators read, and the time it took.
    restored_bytes: AtomicU64,
    restore_ns: AtomicU64,
    /// What the chain's hash exchanges sent to each key group, one per exchange.
    key_groups: Mutex<Vec<Arc<KeyGroupCounts>>>,
    /// A source's splits, as last published by its task.
    splits: Mutex<Vec<SplitMetrics>>,
    /// Share of the input channels' capacity in use, as an `f64`'s bits.
    input_fill: AtomicU64,
    /// A sink chain's latency from source read to visible output, in the buckets of
    /// `batch_latency`, with the sum of the samples in microseconds.
    end_to_end: [AtomicU64; LATENCY_BUCKETS],
    end_to_end_sum_us: AtomicU64,
}

/// One split of a source subtask.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitMetrics {
    pub split: u32,
    pub progress: crate::source::SplitProgress,
    /// What the split alone would let the watermark be; `EventTime::MIN` before its first
    /// record.
    pub watermark: EventTime,
    pub idle: bool,
}

/// Records one hash exchange sent to each key group of the keyed operator it feeds: how
/// skewed the keys are. Written by the exchange's thread alone.
#[derive(Debug)]
pub struct KeyGroupCounts {
    operator: String,
    counts: Box<[AtomicU64]>,
}

impl KeyGroupCounts {
    /// The exchange's totals so far, one per key group. Stores, not adds: the exchange is
    /// the only writer, and it keeps the running totals itself.
    pub fn publish(&self, totals: &[u64]) {
        for (c, n) in self.counts.iter().zip(totals) {
            c.store(*n, Relaxed);
        }
    }
}

const LATENCY_BUCKETS: usize = 32;

/// The power-of-two microsecond bucket of `d`: bucket `b` holds durations under `2^b` µs.
fn bucket_of(d: Duration) -> usize {
    let micros = d.as_micros() as u64;
    (64 - micros.leading_zeros() as usize).min(LATENCY_BUCKETS - 1)
}

/// A point-in-time copy of one subtask's counters.
#[derive(Clone, Debug, Default)]
pub struct TaskMetricsSnapshot {
    pub name: String,
    pub is_source: bool,
    pub is_sink: bool,
    pub records_in: u64,
    pub records_out: u64,
    /// Records handed to a sink by this subtask's chain.
    pub sink_records: u64,
    /// Records that arrived after their window or join had closed and had no late output
    /// to go to.
    pub late_records: u64,
    pub busy: Duration,
    pub idle: Duration,
    pub backpressured: Duration,
    /// Spent aligning checkpoint barriers (part of the time above, not beside it).
    pub aligning: Duration,
    pub watermark: EventTime,
    /// Batches per latency bucket (see [`TaskMetricsSnapshot::batch_latency_quantile`]).
    pub batch_latency: Vec<u64>,
    pub max_snapshot_sync: Duration,
    /// Bytes of the restored snapshot read by this subtask's operators, and the time they
    /// took to read and load it.
    pub restored_bytes: u64,
    pub restore: Duration,
    /// Records sent to each key group, per keyed operator fed (summed over the exchanges
    /// that feed the same one).
    pub key_groups: Vec<(String, Vec<u64>)>,
    /// A source's splits.
    pub splits: Vec<SplitMetrics>,
    /// Share of the input channels' capacity in use when last sampled.
    pub input_fill: f64,
    /// Samples of the latency from source read to visible sink output, per bucket of
    /// `batch_latency`'s layout, and their sum.
    pub end_to_end: Vec<u64>,
    pub end_to_end_sum: Duration,
}

impl TaskMetricsSnapshot {
    /// The upper bound of the bucket holding quantile `q` of per-batch processing times.
    pub fn batch_latency_quantile(&self, q: f64) -> Option<Duration> {
        latency_quantile(&self.batch_latency, q)
    }
}

/// The upper bound of the bucket of quantile `q` in power-of-two microsecond buckets.
pub fn latency_quantile(buckets: &[u64], q: f64) -> Option<Duration> {
    sluice_crds::control::LatencyHistogram::quantile_bucket(buckets, q)
        .map(|b| Duration::from_micros(1u64 << b))
}

impl TaskMetrics {
    pub fn new(name: String, is_source: bool, is_sink: bool) -> Self {
        TaskMetrics {
            name,
            is_source,
            is_sink,
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            sink_records: AtomicU64::new(0),
            late_records: AtomicU64::new(0),
            idle_ns: AtomicU64::new(0),
            backpressured_ns: AtomicU64::new(0),
            aligning_ns: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            batch_latency: std::array::from_fn(|_| AtomicU64::new(0)),
            max_snapshot_sync_ns: AtomicU64::new(0),
            restored_bytes: AtomicU64::new(0),
            restore_ns: AtomicU64::new(0),
            key_groups: Mutex::new(Vec::new()),
            splits: Mutex::new(Vec::new()),
            input_fill: AtomicU64::new(0),
            end_to_end: std::array::from_fn(|_| AtomicU64::new(0)),
            end_to_end_sum_us: AtomicU64::new(0),
        }
    }

    fn key_group_snapshot(&self) -> Vec<(String, Vec<u64>)> {
        let Ok(all) = self.key_groups.lock() else {
            return Vec::new();
        };
        let mut out: Vec<(String, Vec<u64>)> = Vec::new();
        for c in all.iter() {
            let i = match out.iter().position(|(op, _)| *op == c.operator) {
                Some(i) => i,
                None => {
                    out.push((c.operator.clone(), vec![0; c.counts.len()]));
                    out.len() - 1
                }
            };
            for (sum, n) in out[i].1.iter_mut().zip(c.counts.iter()) {
                *sum += n.load(Relaxed);
            }
        }
        out
    }

    /// Counters no report reads, for a channel end whose blocking is no subtask's time.
    pub fn unreported() -> Self {
        TaskMetrics::new(String::new(), false, false)
    }

    /// A source task's splits, replaced as a whole (a few times a second at most).
    pub fn set_splits(&self, splits: Vec<SplitMetrics>) {
        if let Ok(mut s) = self.splits.lock() {
            *s = splits;
        }
    }

    /// Counters for an exchange that sends to the `key_groups` key groups of `operator`.
    pub fn key_group_counts(&self, operator: &str, key_groups: u32) -> Arc<KeyGroupCounts> {
        let counts = Arc::new(KeyGroupCounts {
            operator: operator.to_string(),
            counts: (0..key_groups).map(|_| AtomicU64::new(0)).collect(),
        });
        if let Ok(mut all) = self.key_groups.lock() {
            all.push(counts.clone());
        }
        counts
    }

    /// One batch (or barrier) took `d` to process.
    pub fn record_batch(&self, d: Duration) {
        self.batch_latency[bucket_of(d)].fetch_add(1, Relaxed);
    }

    /// Records read by a source `d` ago became visible in this chain's sink.
    pub fn record_end_to_end(&self, d: Duration) {
        self.end_to_end[bucket_of(d)].fetch_add(1, Relaxed);
        self.end_to_end_sum_us
            .fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// `queued` of the `capacity` batches the input channels hold are taken.
    pub fn set_input_fill(&self, queued: usize, capacity: usize) {
        let fill = queued as f64 / capacity.max(1) as f64;
        self.input_fill.store(fill.to_bits(), Relaxed);
    }

    pub fn record_snapshot_sync(&self, d: Duration) {
        self.max_snapshot_sync_ns
            .fetch_max(d.as_nanos() as u64, Relaxed);
    }

    pub fn record_restore(&self, bytes: u64, took: Duration) {
        self.restored_bytes.fetch_add(bytes, Relaxed);
        self.restore_ns.fetch_add(took.as_nanos() as u64, Relaxed);
    }

    pub fn add_records_in(&self, n: usize) {
        self.records_in.fetch_add(n as u64, Relaxed);
    }
    pub fn add_records_out(&self, n: usize) {
        self.records_out.fetch_add(n as u64, Relaxed);
    }
    pub fn add_sink_records(&self, n: usize) {
        self.sink_records.fetch_add(n as u64, Relaxed);
    }
    pub fn add_late_records(&self, n: usize) {
        self.late_records.fetch_add(n as u64, Relaxed);
    }
    pub fn add_idle(&self, d: Duration) {
        self.idle_ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }
    pub fn add_backpressured(&self, d: Duration) {
        self.backpressured_ns
            .fetch_add(d.as_nanos() as u64, Relaxed);
    }
    pub fn add_aligning(&self, d: Duration) {
        self.aligning_ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }
    /// Total time the task has been running; busy is what remains after idle and
    /// backpressure are taken out.
    pub fn set_elapsed(&self, d: Duration) {
        self.busy_ns.store(d.as_nanos() as u64, Relaxed);
    }
    pub fn set_watermark(&self, wm: EventTime) {
        self.watermark.store(wm.0, Relaxed);
    }

    pub fn snapshot(&self) -> TaskMetricsSnapshot {
        let idle = self.idle_ns.load(Relaxed);
        let bp = self.backpressured_ns.load(Relaxed);
        let elapsed = self.busy_ns.load(Relaxed);
        TaskMetricsSnapshot {
            name: self.name.clone(),
            is_source: self.is_source,
            is_sink: self.is_sink,
            records_in: self.records_in.load(Relaxed),
            records_out: self.records_out.load(Relaxed),
            sink_records: self.sink_records.load(Relaxed),
            late_records: self.late_records.load(Relaxed),
            busy: Duration::from_nanos(elapsed.saturating_sub(idle + bp)),
            idle: Duration::from_nanos(idle),
            backpressured: Duration::from_nanos(bp),
            aligning: Duration::from_nanos(self.aligning_ns.load(Relaxed)),
            watermark: EventTime(self.watermark.load(Relaxed)),
            batch_latency: self.batch_latency.iter().map(|b| b.load(Relaxed)).collect(),
            max_snapshot_sync: Duration::from_nanos(self.max_snapshot_sync_ns.load(Relaxed)),
            restored_bytes: self.restored_bytes.load(Relaxed),
            restore: Duration::from_nanos(self.restore_ns.load(Relaxed)),
            key_groups: self.key_group_snapshot(),
            splits: self.splits.lock().map(|s| s.clone()).unwrap_or_default(),
            input_fill: f64::from_bits(self.input_fill.load(Relaxed)),
            end_to_end: self.end_to_end.iter().map(|b| b.load(Relaxed)).collect(),
            end_to_end_sum: Duration::from_micros(self.end_to_end_sum_us.load(Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_latency_quantiles_come_from_power_of_two_buckets() {
        let m = TaskMetrics::new("t[0]".into(), false, false);
        for _ in 0..98 {
            m.record_batch(Duration::from_micros(3)); // < 4 µs
        }
        m.record_batch(Duration::from_micros(700)); // < 1024 µs
        m.record_batch(Duration::from_millis(20)); // < 32768 µs
        let s = m.snapshot();
        assert_eq!(
            s.batch_latency_quantile(0.5),
            Some(Duration::from_micros(4))
        );
        assert_eq!(
            s.batch_latency_quantile(0.99),
            Some(Duration::from_micros(1024))
        );
        assert_eq!(
            s.batch_latency_quantile(1.0),
            Some(Duration::from_micros(32768))
        );
    }

    #[test]
    fn key_group_counts_add_up_per_operator_fed() {
        let m = TaskMetrics::new("t[0]".into(), false, false);
        let window = m.key_group_counts("window", 4);
        let window_too = m.key_group_counts("window", 4);
        let join = m.key_group_counts("join", 4);
        window.publish(&[1, 0, 0, 3]);
        window_too.publish(&[0, 0, 0, 1]);
        join.publish(&[0, 1, 0, 0]);
        assert_eq!(
            m.snapshot().key_groups,
            vec![
                ("window".to_string(), vec![1, 0, 0, 4]),
                ("join".to_string(), vec![0, 1, 0, 0]),
            ]
        );
    }
}

//! Engine behaviour a job author relies on: windows (including lateness and the late
//! output), keyed state and timers, idleness, backpressure, joins — each checked against
//! an independent computation over the same input.

use sluice_runtime::api::{
    AggregateFunction, JobBuilder, KeyedProcessFunction, OutputTag, ProcessContext, Record,
    Session, SlidingEventTime, Timer, TumblingEventTime, WatermarkStrategy,
};
use sluice_runtime::connectors::{CollectSink, VecSource};
use sluice_runtime::exec::{start_embedded, Clock, JobSummary, RunOptions};
use sluice_runtime::state::{StateDescriptor, TtlUpdate, ValueState};
use sluice_runtime::time::{EventTime, ProcTime};
use sluice_runtime::JobGraph;
use std::collections::BTreeMap;
use std::time::Duration;

fn run(graph: JobGraph) -> JobSummary {
    start_embedded(graph, RunOptions::default())
        .expect("job starts")
        .wait()
        .expect("job succeeds")
}

struct Count;
impl<T> AggregateFunction<T> for Count {
    type Acc = u64;
    type Out = u64;
    fn create(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _: &T) {
        *acc += 1;
    }
    fn merge(&self, into: &mut u64, other: u64) {
        *into += other;
    }
    fn result(&self, acc: &u64) -> u64 {
        *acc
    }
}

/// (key, ts) records spread over `splits` splits, in order per split.
fn keyed_records(n: u64, keys: u64, splits: usize) -> Vec<Vec<Record<(u64, i64)>>> {
    let mut out = vec![Vec::new(); splits];
    for i in 0..n {
        let ts = (i * 7) as i64;
        out[i as usize % splits].push(Record::new(EventTime(ts), (i % keys, ts)));
    }
    out
}

#[test]
fn sliding_window_counts_equal_a_batch_computation_at_any_parallelism() {
    let input = keyed_records(20_000, 13, 3);
    let mut expected: BTreeMap<(u64, i64), u64> = BTreeMap::new();
    for r in input.iter().flatten() {
        let (k, ts) = r.value;
        let last = ts - ts.rem_euclid(500);
        let mut start = last;
        while start > ts - 2_000 {
            *expected.entry((k, start)).or_default() += 1;
            start -= 500;
        }
    }
    for parallelism in [1, 4] {
        let job = JobBuilder::new("sliding", parallelism, 128);
        let (sink, out) = CollectSink::new();
        job.source("src", VecSource::new(input.clone()), WatermarkStrategy::monotonous())
            .key_by(|r: &(u64, i64)| r.0)
            .window(SlidingEventTime::of(Duration::from_millis(2_000), Duration::from_millis(500)))
            .aggregate("count", Count, |k, w, c| (*k, w.start, c))
            .sink("out", sink);
        run(job.build().unwrap());
        let got: BTreeMap<(u64, i64), u64> = out
            .lock()
            .unwrap()
            .iter()
            .map(|r| ((r.value.0, r.value.1), r.value.2))
            .collect();
        assert_eq!(got, expected, "parallelism {parallelism}");
    }
}

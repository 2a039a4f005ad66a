//! Engine behaviour a job author relies on: windows (including lateness and the late
//! output), keyed state and timers, idleness, backpressure, joins — each checked against
//! an independent computation over the same input.

mod common;
use common::{assert_same, wait_until, BrokenSink};

use sluice_runtime::api::{
    Count, JobBuilder, KeyedProcessFunction, OutputTag, ProcessContext, Record, Session,
    SlidingEventTime, Timer, TumblingEventTime, WatermarkStrategy,
};
use sluice_runtime::connectors::{
    CollectSink, DiscardSink, QueueSource, Sink, SinkContext, SinkWriter, VecSource,
};
use sluice_runtime::Error;

use sluice_runtime::exec::{start_embedded, Clock, JobSummary, RunOptions};
use sluice_runtime::state::{RocksConfig, StateBackend, StateDescriptor, TtlUpdate, ValueState};
use sluice_runtime::time::{EventTime, ProcTime};
use sluice_runtime::JobGraph;
use std::collections::BTreeMap;
use std::time::Duration;

fn run(graph: JobGraph) -> JobSummary {
    run_with(graph, RunOptions::default())
}

fn run_with(graph: JobGraph, options: RunOptions) -> JobSummary {
    start_embedded(graph, options)
        .expect("job starts")
        .wait()
        .expect("job succeeds")
}

/// Both state backends; RocksDB with a window cache of a few entries, so that window
/// contents really go through the database. (The directory lives as long as the options.)
fn backends() -> Vec<(&'static str, RunOptions, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let rocks = RunOptions {
        state_backend: StateBackend::RocksDb(
            RocksConfig::new(dir.path(), 32 << 20).window_cache_entries(4),
        ),
        ..RunOptions::default()
    };
    vec![
        ("heap", RunOptions::default(), None),
        ("RocksDB", rocks, Some(dir)),
    ]
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
    for ((backend, options, _dir), parallelism) in backends()
        .into_iter()
        .zip([1, 4])
        .chain(backends().into_iter().zip([4, 1]))
    {
        let job = JobBuilder::new("sliding", parallelism, 128);
        let (sink, out) = CollectSink::new();
        job.source(
            "src",
            VecSource::new(input.clone()),
            WatermarkStrategy::monotonous(),
        )
        .key_by(|r: &(u64, i64)| r.0)
        .window(SlidingEventTime::of(
            Duration::from_millis(2_000),
            Duration::from_millis(500),
        ))
        .aggregate("count", Count, |k, w, c| (*k, w.start, c))
        .sink("out", sink);
        run_with(job.build().unwrap(), options);
        let got: BTreeMap<(u64, i64), u64> = out
            .lock()
            .unwrap()
            .iter()
            .map(|r| ((r.value.0, r.value.1), r.value.2))
            .collect();
        assert_eq!(got, expected, "{backend}, parallelism {parallelism}");
    }
}

#[test]
fn records_beyond_allowed_lateness_go_to_the_late_output_counted_exactly() {
    // One split, 10 records per poll and a watermark after every poll: the watermark each
    // record meets is known, so which records are late can be computed independently.
    let mut records = Vec::new();
    for i in 0..400i64 {
        // Mostly ascending, every 7th record 2.5 s behind.
        let ts = if i % 7 == 6 { i * 100 - 2_500 } else { i * 100 };
        records.push(Record::new(EventTime(ts), (i as u64 % 3, ts)));
    }
    let (size, lateness) = (1_000i64, 1_000i64);
    let mut expected_late = Vec::new();
    let mut expected: BTreeMap<(u64, i64), u64> = BTreeMap::new();
    let mut wm = i64::MIN;
    let mut max_ts = i64::MIN;
    for chunk in records.chunks(10) {
        for r in chunk {
            let (k, ts) = r.value;
            let start = ts - ts.rem_euclid(size);
            if start + size - 1 + lateness <= wm {
                expected_late.push(r.value);
            } else {
                *expected.entry((k, start)).or_default() += 1;
            }
            max_ts = max_ts.max(ts);
        }
        wm = max_ts - 1;
    }
    assert!(
        expected_late.len() > 10,
        "the input must contain late records"
    );

    let mut outputs = Vec::new();
    for (backend, options, _dir) in backends() {
        let job = JobBuilder::new("lateness", 1, 128);
        job.set_watermark_interval(Duration::ZERO);
        let late_tag = OutputTag::<(u64, i64)>::new("late");
        let (sink, out) = CollectSink::new();
        let (late_sink, late) = CollectSink::new();
        let windowed = job
            .source(
                "src",
                VecSource::new(vec![records.clone()]).max_per_poll(10),
                WatermarkStrategy::monotonous(),
            )
            .key_by(|r: &(u64, i64)| r.0)
            .window(TumblingEventTime::of(Duration::from_millis(size as u64)))
            .allowed_lateness(Duration::from_millis(lateness as u64))
            .late_output(&late_tag)
            .aggregate("count", Count, |k, w, c| (*k, w.start, c));
        windowed.sink("out", sink);
        windowed.side_output(&late_tag).sink("late", late_sink);
        let summary = run_with(job.build().unwrap(), options);

        let mut got_late: Vec<(u64, i64)> = late.lock().unwrap().iter().map(|r| r.value).collect();
        got_late.sort();
        expected_late.sort();
        assert_eq!(got_late, expected_late, "{backend}");
        assert_eq!(
            summary.late_records(),
            expected_late.len() as u64,
            "{backend}"
        );
        // With lateness the window re-fires on each late update; its last result is final.
        let mut finals: BTreeMap<(u64, i64), u64> = BTreeMap::new();
        let mut all: Vec<(u64, i64, u64)> = out.lock().unwrap().iter().map(|r| r.value).collect();
        for &(k, start, count) in &all {
            let e = finals.entry((k, start)).or_default();
            *e = (*e).max(count);
        }
        assert_eq!(finals, expected, "{backend}");
        all.sort();
        outputs.push(all);
    }
    // Every update, not only the final results, is the same on both backends.
    assert_eq!(outputs[0], outputs[1]);
}

#[test]
fn an_idle_split_does_not_stall_the_watermark() {
    // Split 1 produces a little and then nothing, without ending; split 0 runs on.
    let split0: Vec<_> = (0..2_000i64)
        .map(|i| Record::new(EventTime(i * 10), (0u64, i * 10)))
        .collect();
    let split1: Vec<_> = (0..10i64)
        .map(|i| Record::new(EventTime(i * 10), (1u64, i * 10)))
        .collect();
    let stalled_max = 90;
    for idleness in [None, Some(Duration::from_millis(30))] {
        let job = JobBuilder::new("idle", 2, 128);
        let (sink, out) = CollectSink::new();
        let mut strategy = WatermarkStrategy::monotonous();
        if let Some(t) = idleness {
            strategy = strategy.with_idleness(t);
        }
        job.source(
            "src",
            VecSource::new(vec![split0.clone(), split1.clone()]).stall_split_after(1, 10),
            strategy,
        )
        .key_by(|r: &(u64, i64)| r.0)
        .window(TumblingEventTime::of(Duration::from_millis(1_000)))
        .aggregate("count", Count, |k, w, c| (*k, w.start, c))
        .sink("out", sink);
        let running = start_embedded(job.build().unwrap(), RunOptions::default()).unwrap();
        let window_task = |m: &[sluice_runtime::exec::metrics::TaskMetricsSnapshot]| {
            m.iter()
                .filter(|t| t.name.starts_with("count["))
                .map(|t| (t.records_in, t.watermark))
                .fold((0, EventTime::MAX), |(n, w), (r, tw)| (n + r, w.min(tw)))
        };
        match idleness {
            None => {
                wait_until("all records delivered", Duration::from_secs(10), || {
                    window_task(&running.metrics()).0 == 2_010
                });
                // The stalled split holds every window back.
                assert!(window_task(&running.metrics()).1 <= EventTime(stalled_max));
                assert!(out.lock().unwrap().is_empty());
            }
            Some(_) => {
                // Once split 1 is idle, every window of split 0 fires.
                wait_until("all windows fired", Duration::from_secs(10), || {
                    out.lock().unwrap().len() == 21
                });
            }
        }
        running.cancel();
        assert!(matches!(running.wait(), Err(Error::Cancelled)));
    }
}

/// A sink that takes a while per batch.
struct SlowSink;
struct SlowWriter;
impl Sink<u64> for SlowSink {
    fn open(&self, _: &SinkContext) -> Result<Box<dyn SinkWriter<u64>>, Error> {
        Ok(Box::new(SlowWriter))
    }
}
impl SinkWriter<u64> for SlowWriter {
    fn write(&mut self, _: &[Record<u64>]) -> Result<(), Error> {
        std::thread::sleep(Duration::from_micros(500));
        Ok(())
    }
    fn finish(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

#[test]
fn a_slow_consumer_backpressures_the_source_with_bounded_buffering() {
    let n = 300_000u64;
    let records: Vec<_> = (0..n)
        .map(|i| Record::new(EventTime(i as i64), i))
        .collect();
    let job = JobBuilder::new("backpressure", 1, 128);
    job.source(
        "src",
        VecSource::new(vec![records]),
        WatermarkStrategy::monotonous(),
    )
    .rebalance("shuffle", 1)
    .sink("slow", SlowSink);
    let options = RunOptions::default();
    let bound = (options.channel_capacity + 3) * options.batch_size;
    let running = start_embedded(job.build().unwrap(), options).unwrap();
    let mut max_in_flight = 0u64;
    let mut samples = 0;
    while !running.is_finished() {
        let m = running.metrics();
        let produced: u64 = m
            .iter()
            .filter(|t| t.is_source)
            .map(|t| t.records_out)
            .sum();
        let consumed: u64 = m.iter().map(|t| t.sink_records).sum();
        max_in_flight = max_in_flight.max(produced.saturating_sub(consumed));
        samples += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    let summary = running.wait().unwrap();
    assert_eq!(summary.sink_records(), n);
    assert!(samples > 10, "the job finished too fast to observe");
    assert!(
        max_in_flight as usize <= bound,
        "{max_in_flight} records buffered, bound {bound}"
    );
    let source = summary.tasks.iter().find(|t| t.is_source).unwrap();
    assert!(
        source.backpressured > Duration::from_millis(50),
        "source was backpressured for only {:?}",
        source.backpressured
    );
}

/// Counts per key in state with a TTL, and reports a processing-time timer.
struct TtlCounter {
    count: ValueState<u64>,
}

impl KeyedProcessFunction<String, String, (String, u64)> for TtlCounter {
    fn process(&mut self, key: String, ctx: &mut ProcessContext<'_, String, (String, u64)>) {
        let n = ctx.value(self.count).get().unwrap_or(0) + 1;
        ctx.value(self.count).set(n);
        let fire_at = ProcTime(ctx.now().0 + 500);
        ctx.register_processing_timer(fire_at);
        ctx.emit((key, n));
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut ProcessContext<'_, String, (String, u64)>) {
        if let Timer::Processing(t) = timer {
            let key = ctx.key().clone();
            ctx.emit((format!("timer:{key}@{}", t.0), 0));
        }
    }
}

#[test]
fn state_ttl_expires_when_it_should_and_not_before() {
    let clock = Clock::manual(ProcTime(1_000));
    let (source, input) = QueueSource::<String>::new();
    let job = JobBuilder::new("ttl", 1, 128);
    let (sink, out) = CollectSink::new();
    job.source("src", source, WatermarkStrategy::monotonous())
        .key_by(|k: &String| k.clone())
        .process("counter", |ctx| {
            Ok(TtlCounter {
                count: ctx.value_state::<String, u64>(
                    StateDescriptor::new("count")
                        .ttl(Duration::from_millis(100), TtlUpdate::OnCreateAndWrite),
                )?,
            })
        })
        .sink("out", sink);
    let options = RunOptions {
        clock: clock.clone(),
        ..RunOptions::default()
    };
    let running = start_embedded(job.build().unwrap(), options).unwrap();
    let outputs = || {
        out.lock()
            .unwrap()
            .iter()
            .map(|r| r.value.clone())
            .collect::<Vec<_>>()
    };
    // (processing time when the record enters, expected count)
    let steps = [(1_000, 1), (1_099, 2), (1_198, 3), (1_298, 1), (1_300, 2)];
    for (i, (t, expected)) in steps.iter().enumerate() {
        clock.advance_to(ProcTime(*t));
        input
            .send(Record::new(EventTime(0), "a".to_string()))
            .unwrap();
        wait_until("the count", Duration::from_secs(10), || {
            outputs().iter().filter(|(k, _)| k == "a").count() == i + 1
        });
        let last = outputs().into_iter().rfind(|(k, _)| k == "a").unwrap();
        assert_eq!(last.1, *expected, "count at processing time {t}");
    }
    // Timers registered at 1000 + 500 fire once the clock passes 1500, not before.
    assert!(outputs().iter().all(|(k, _)| !k.starts_with("timer:")));
    clock.advance_to(ProcTime(1_500));
    wait_until("the first timer", Duration::from_secs(10), || {
        outputs().iter().any(|(k, _)| k == "timer:a@1500")
    });
    assert!(!outputs().iter().any(|(k, _)| k == "timer:a@1599"));
    drop(input);
    clock.advance_to(ProcTime(10_000));
    running.wait().unwrap();
}

#[test]
fn interval_and_window_joins_equal_nested_loop_joins() {
    // Orders and payments keyed by order id; timestamps interleaved.
    let orders: Vec<_> = (0..300i64)
        .map(|i| Record::new(EventTime(i * 20), (i as u64 % 40, i * 20)))
        .collect();
    let payments: Vec<_> = (0..300i64)
        .map(|i| Record::new(EventTime(i * 20 + 7), (i as u64 % 37, i * 20 + 7)))
        .collect();
    let (before, after) = (50i64, 120i64);
    let mut expected_interval = Vec::new();
    let mut expected_window = Vec::new();
    for o in &orders {
        for p in &payments {
            let ((ok, ot), (pk, pt)) = (o.value, p.value);
            if ok == pk && ot - before <= pt && pt <= ot + after {
                expected_interval.push((ok, ot, pt));
            }
            if ok == pk && ot.div_euclid(1_000) == pt.div_euclid(1_000) {
                expected_window.push((ok, ot, pt));
            }
        }
    }
    let runs = backends()
        .into_iter()
        .zip([1, 3])
        .chain(backends().into_iter().zip([3, 1]));
    for ((backend, options, _dir), parallelism) in runs {
        let job = JobBuilder::new("joins", parallelism, 128);
        let o = job
            .source(
                "orders",
                VecSource::new(vec![orders.clone()]).max_per_poll(16),
                WatermarkStrategy::monotonous(),
            )
            .key_by(|r: &(u64, i64)| r.0);
        let p = job
            .source(
                "payments",
                VecSource::new(vec![payments.clone()]).max_per_poll(16),
                WatermarkStrategy::monotonous(),
            )
            .key_by(|r: &(u64, i64)| r.0);
        let (isink, iout) = CollectSink::new();
        let (wsink, wout) = CollectSink::new();
        o.interval_join(
            &p,
            Duration::from_millis(before as u64),
            Duration::from_millis(after as u64),
        )
        .apply("interval", |a, b| (a.0, a.1, b.1))
        .sink("interval-out", isink);
        o.window_join(&p, TumblingEventTime::of(Duration::from_secs(1)))
            .apply("window", |a, b| (a.0, a.1, b.1))
            .sink("window-out", wsink);
        let summary = run_with(job.build().unwrap(), options);
        let sorted = |v: &sluice_runtime::connectors::Collected<(u64, i64, i64)>| {
            let mut v: Vec<_> = v.lock().unwrap().iter().map(|r| r.value).collect();
            v.sort();
            v
        };
        expected_interval.sort();
        expected_window.sort();
        assert_eq!(summary.late_records(), 0);
        assert_same(
            &sorted(&iout),
            &expected_interval,
            &format!("interval join, {backend}, parallelism {parallelism}"),
        );
        assert_same(
            &sorted(&wout),
            &expected_window,
            &format!("window join, {backend}, parallelism {parallelism}"),
        );
    }
}

#[test]
fn session_windows_merge_per_key_like_a_batch_sessionization() {
    let mut records = Vec::new();
    let mut t = 0i64;
    for i in 0..3_000u64 {
        // Gaps of 1..=40 ms with occasional 200 ms pauses; session gap 100 ms.
        t += if i % 97 == 0 {
            200
        } else {
            (i * 31 % 40 + 1) as i64
        };
        records.push(Record::new(EventTime(t), (i % 5, t)));
    }
    let gap = 100i64;
    let mut expected = Vec::new();
    for key in 0..5u64 {
        let ts: Vec<i64> = records
            .iter()
            .filter(|r| r.value.0 == key)
            .map(|r| r.value.1)
            .collect();
        let (mut start, mut end, mut n) = (ts[0], ts[0] + gap, 0u64);
        for &x in &ts {
            // Windows that touch merge, as in Flink: a new session needs a gap > `gap`.
            if x > end {
                expected.push((key, start, end, n));
                start = x;
                n = 0;
            }
            end = x + gap;
            n += 1;
        }
        expected.push((key, start, end, n));
    }
    expected.sort();
    let runs = backends()
        .into_iter()
        .zip([1, 2])
        .chain(backends().into_iter().zip([2, 1]));
    for ((backend, options, _dir), parallelism) in runs {
        let job = JobBuilder::new("sessions", parallelism, 128);
        let (sink, out) = CollectSink::new();
        job.source(
            "src",
            VecSource::new(vec![records.clone()]).max_per_poll(50),
            WatermarkStrategy::monotonous(),
        )
        .key_by(|r: &(u64, i64)| r.0)
        .window(Session::with_gap(Duration::from_millis(gap as u64)))
        .aggregate("sessions", Count, |k, w, n| (*k, w.start, w.end, n))
        .sink("out", sink);
        run_with(job.build().unwrap(), options);
        let mut got: Vec<_> = out.lock().unwrap().iter().map(|r| r.value).collect();
        got.sort();
        assert_same(
            &got,
            &expected,
            &format!("{backend}, parallelism {parallelism}"),
        );
    }
}

#[test]
fn duplicate_uids_are_rejected_naming_both_operators() {
    let job = JobBuilder::new("dup", 1, 128);
    let s = job.source(
        "src",
        VecSource::new(vec![vec![Record::new(EventTime(0), 1u64)]]),
        WatermarkStrategy::monotonous(),
    );
    s.map("a", |x| x + 1)
        .uid("same")
        .sink("out1", sluice_runtime::connectors::DiscardSink);
    s.map("b", |x| x + 2)
        .uid("same")
        .sink("out2", sluice_runtime::connectors::DiscardSink);
    let err = job
        .build()
        .err()
        .expect("duplicate uid rejected")
        .to_string();
    assert!(
        err.contains("'a'") && err.contains("'b'") && err.contains("'same'"),
        "{err}"
    );
}

#[test]
fn a_failing_sink_fails_the_job_with_its_error() {
    let records: Vec<_> = (0..100_000u64)
        .map(|i| Record::new(EventTime(i as i64), i))
        .collect();
    let job = JobBuilder::new("fail", 2, 128);
    job.source(
        "src",
        VecSource::new(vec![records.clone(), records]),
        WatermarkStrategy::monotonous(),
    )
    .key_by(|x: &u64| *x)
    .process("noop", |_| Ok(Passthrough))
    .sink("broken", BrokenSink);
    let err = start_embedded(job.build().unwrap(), RunOptions::default())
        .unwrap()
        .wait()
        .unwrap_err();
    assert_eq!(err.to_string(), "broken-sink: disk full");
}

struct Passthrough;
impl KeyedProcessFunction<u64, u64, u64> for Passthrough {
    fn process(&mut self, v: u64, ctx: &mut ProcessContext<'_, u64, u64>) {
        ctx.emit(v);
    }
}

#[test]
fn union_merges_streams_and_its_watermark_waits_for_the_slowest_input() {
    // Two sources at different event-time speeds; windows must not fire before both
    // inputs have passed them, or counts would be short.
    let fast: Vec<_> = (0..6_000i64)
        .map(|i| Record::new(EventTime(i * 10), (i as u64 % 4, i * 10)))
        .collect();
    let slow: Vec<_> = (0..3_000i64)
        .map(|i| Record::new(EventTime(i * 20), (i as u64 % 4, i * 20)))
        .collect();
    let mut expected: BTreeMap<(u64, i64), u64> = BTreeMap::new();
    for r in fast.iter().chain(&slow) {
        *expected
            .entry((r.value.0, r.value.1 - r.value.1 % 1_000))
            .or_default() += 1;
    }
    for parallelism in [1, 3] {
        let job = JobBuilder::new("union", parallelism, 128);
        job.set_watermark_interval(Duration::ZERO);
        let a = job.source(
            "fast",
            VecSource::new(vec![fast.clone()]).max_per_poll(100),
            WatermarkStrategy::monotonous(),
        );
        let b = job.source(
            "slow",
            VecSource::new(vec![slow.clone()]).max_per_poll(10),
            WatermarkStrategy::monotonous(),
        );
        let (sink, out) = CollectSink::new();
        a.union("both", &[&b])
            .key_by(|r: &(u64, i64)| r.0)
            .window(TumblingEventTime::of(Duration::from_secs(1)))
            .aggregate("count", Count, |k, w, c| (*k, w.start, c))
            .sink("out", sink);
        let summary = run(job.build().unwrap());
        assert_eq!(summary.late_records(), 0);
        let got: BTreeMap<(u64, i64), u64> = out
            .lock()
            .unwrap()
            .iter()
            .map(|r| ((r.value.0, r.value.1), r.value.2))
            .collect();
        assert_eq!(got, expected, "parallelism {parallelism}");
    }
}

#[test]
fn processing_time_windows_close_on_the_clock_not_on_event_time() {
    use sluice_runtime::api::TumblingProcessingTime;
    let clock = Clock::manual(ProcTime(10_000));
    let (source, input) = QueueSource::<u64>::new();
    let job = JobBuilder::new("proc-windows", 1, 128);
    let (sink, out) = CollectSink::new();
    job.source("src", source, WatermarkStrategy::monotonous())
        .key_by(|k: &u64| *k)
        .window(TumblingProcessingTime::of(Duration::from_secs(1)))
        .aggregate("count", Count, |k, w, c| (*k, w.start, c))
        .sink("out", sink);
    let options = RunOptions {
        clock: clock.clone(),
        ..RunOptions::default()
    };
    let running = start_embedded(job.build().unwrap(), options).unwrap();
    let window_input = |running: &sluice_runtime::exec::RunningJob| -> u64 {
        running
            .metrics()
            .iter()
            .filter(|t| t.name.starts_with("count["))
            .map(|t| t.records_in)
            .sum()
    };
    // Event times are irrelevant here: far in the past and out of order.
    for (i, key) in [1u64, 2, 1].into_iter().enumerate() {
        input
            .send(Record::new(EventTime(5 - i as i64), key))
            .unwrap();
    }
    wait_until(
        "three records in the window",
        Duration::from_secs(10),
        || window_input(&running) == 3,
    );
    assert!(
        out.lock().unwrap().is_empty(),
        "the window closed before its end"
    );
    // The next second's records go to the next window.
    clock.advance_to(ProcTime(11_000));
    wait_until("the first window", Duration::from_secs(10), || {
        out.lock().unwrap().len() == 2
    });
    input.send(Record::new(EventTime(0), 1)).unwrap();
    wait_until("the fourth record", Duration::from_secs(10), || {
        window_input(&running) == 4
    });
    drop(input);
    running.wait().unwrap();
    let mut got: Vec<_> = out.lock().unwrap().iter().map(|r| r.value).collect();
    got.sort();
    assert_eq!(got, vec![(1, 10_000, 2), (1, 11_000, 1), (2, 10_000, 1)]);
}

/// The control API's picture of a job: operators chained into groups, named by their first
/// operator, and one edge per input of a group with how it partitions.
#[test]
fn the_topology_is_the_chains_and_the_edges_between_them() {
    use sluice_runtime::control::model::{GroupEdge, OperatorGroup, Partitioning};
    let job = JobBuilder::new("shape", 2, 128);
    job.source(
        "src",
        VecSource::new(vec![Vec::<Record<(u64, i64)>>::new(); 2]),
        WatermarkStrategy::monotonous(),
    )
    .map("double", |(k, v): (u64, i64)| (k, 2 * v))
    .key_by(|r: &(u64, i64)| r.0)
    .window(TumblingEventTime::of(Duration::from_secs(1)))
    .aggregate("count", Count, |k, w, c| (*k, w.start, c))
    .rebalance("to-sink", 1)
    .sink("out", DiscardSink);
    let topology = job.build().unwrap().topology();
    let group = |name: &str, operators: &[&str], parallelism| OperatorGroup {
        name: name.into(),
        operators: operators.iter().map(|o| o.to_string()).collect(),
        parallelism,
    };
    assert_eq!(
        topology.groups,
        [
            group("src", &["src", "double"], 2),
            group("count", &["count"], 2),
            group("to-sink", &["to-sink", "out"], 1),
        ]
    );
    let edge = |from: &str, to: &str, partitioning| GroupEdge {
        from: from.into(),
        to: to.into(),
        partitioning,
    };
    assert_eq!(
        topology.edges,
        [
            edge("src", "count", Partitioning::Hash),
            edge("count", "to-sink", Partitioning::Rebalance),
        ]
    );
}

//! `GET /metrics`: the job's counters in the Prometheus text exposition format (0.0.4),
//! through the `prometheus` crate's registry and text encoder.
//!
//! The values are read from [`JobControl::status`] when scraped, by a collector, rather
//! than kept in the crate's counters: the status is what the job already maintains, and
//! the API's `/v1/job` serves the same numbers. Each control server owns one registry (a
//! process serves one job; tests run several in one process, which a global registry would
//! mix up).
//!
//! Why `prometheus` rather than `prometheus-client`: it writes the classic text format that
//! the series documented in `docs/control-api.md` and `docs/operator.md` are in, byte for
//! byte (`# HELP`/`# TYPE` on the full name, counters named `…_total` as registered, summaries
//! without quantiles), while `prometheus-client` speaks OpenMetrics, which renames counter
//! families, ends with `# EOF` and would change what every scraper and test reads.
//!
//! [`JobControl::status`]: super::JobControl::status

use super::model::{JobStatus, LatencyHistogram, Phase, SubtaskStatus};
use super::JobControl;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::Registry;
use sluice_http::scrape::{Family, MetricType, Spec};
use std::sync::Arc;

const JOB: &[&str] = &["job"];
const SUBTASK: &[&str] = &["job", "operator", "subtask"];

const fn spec(
    name: &'static str,
    kind: MetricType,
    help: &'static str,
    labels: &'static [&'static str],
) -> Spec {
    Spec {
        name,
        help,
        kind,
        labels,
    }
}

const COUNTER: MetricType = MetricType::COUNTER;
const GAUGE: MetricType = MetricType::GAUGE;

const JOB_PHASE: Spec = spec(
    "sluice_job_phase",
    GAUGE,
    "1 for the job's current phase, 0 for the others.",
    &["job", "phase"],
);
const PARALLELISM: Spec = spec(
    "sluice_job_parallelism",
    GAUGE,
    "Highest parallelism of the job's operators.",
    JOB,
);
const UPTIME: Spec = spec(
    "sluice_job_uptime_seconds",
    GAUGE,
    "Time since the job's subtasks started.",
    JOB,
);
const RESTARTS: Spec = spec(
    "sluice_job_restarts_total",
    COUNTER,
    "Restarts of the job from its latest checkpoint (distributed mode).",
    JOB,
);
const WORKERS: Spec = spec(
    "sluice_job_workers",
    GAUGE,
    "Workers registered with the coordinator (distributed mode).",
    JOB,
);
const CHECKPOINTS_COMPLETED: Spec = spec(
    "sluice_checkpoints_completed_total",
    COUNTER,
    "Checkpoints and savepoints this run completed.",
    JOB,
);
const CHECKPOINTS_FAILED: Spec = spec(
    "sluice_checkpoints_failed_total",
    COUNTER,
    "Checkpoints and savepoints of this run that failed or timed out.",
    JOB,
);
const LAST_CHECKPOINT_ID: Spec = spec(
    "sluice_last_checkpoint_id",
    GAUGE,
    "Id of the last completed checkpoint or savepoint.",
    JOB,
);
const LAST_CHECKPOINT_DURATION: Spec = spec(
    "sluice_last_checkpoint_duration_seconds",
    GAUGE,
    "Time from the last completed snapshot's trigger to its manifest written.",
    JOB,
);
const LAST_CHECKPOINT_SIZE: Spec = spec(
    "sluice_last_checkpoint_size_bytes",
    GAUGE,
    "State the last completed snapshot refers to, in storage.",
    JOB,
);

const LAST_CHECKPOINT_OPERATOR_SIZE: Spec = spec(
    "sluice_last_checkpoint_operator_size_bytes",
    GAUGE,
    "What each stateful operator's state takes of the last completed snapshot; its growth \
     rate is deriv() of it.",
    &["job", "operator"],
);

const CHECKPOINTS_FAILED_IN_A_ROW: Spec = spec(
    "sluice_checkpoints_failed_in_a_row",
    GAUGE,
    "Checkpoints that failed since the last one that completed.",
    JOB,
);
const SPLIT: &[&str] = &["job", "operator", "split"];

const SPLIT_POSITION: Spec = spec(
    "sluice_source_split_position",
    GAUGE,
    "Where a source split's reader is: events read from the generator, a Kafka \
     partition's next offset.",
    SPLIT,
);

const SPLIT_BACKLOG: Spec = spec(
    "sluice_source_split_backlog_records",
    GAUGE,
    "Records available past a split's position, where the source knows (a Kafka \
     partition's end offset as last fetched, less the position): the source's lag.",
    SPLIT,
);

const SPLIT_WATERMARK: Spec = spec(
    "sluice_source_split_watermark_seconds",
    GAUGE,
    "Event time (Unix seconds) a source split alone lets the watermark reach: the split \
     with the lowest holds the job back.",
    SPLIT,
);

const END_TO_END_LATENCY: Spec = spec(
    "sluice_sink_end_to_end_latency_seconds",
    MetricType::HISTOGRAM,
    "Time from a source reading records to a sink making them visible: committed, for a \
     sink whose output a checkpoint commits, written for the others. Sampled by latency \
     markers each source subtask sends every 100 ms.",
    SUBTASK,
);

/// The histogram's bucket bounds: powers of two of microseconds from 1 ms to about 9 min,
/// the range that tells a healthy pipeline from a stalled one. Shorter samples count in
/// the first bucket, longer ones only in `+Inf`.
const LATENCY_BUCKETS_FROM: usize = 10;
const LATENCY_BUCKETS_TO: usize = 29;

const KEY_GROUP_RECORDS: Spec = spec(
    "sluice_key_group_records_total",
    COUNTER,
    "Records sent to each key group of a keyed operator: how skewed its keys are.",
    &["job", "operator", "key_group"],
);

type Value = fn(&SubtaskStatus) -> Option<f64>;

/// The per-subtask families and how each reads its value.
const PER_SUBTASK: [(Spec, Value); 12] = [
    (
        spec(
            "sluice_subtask_records_in_total",
            COUNTER,
            "Records entering the subtask's chain (read from channels, or from splits by a source).",
            SUBTASK,
        ),
        |t| Some(t.records_in as f64),
    ),
    (
        spec(
            "sluice_subtask_records_out_total",
            COUNTER,
            "Records the subtask's chain sent to other chains.",
            SUBTASK,
        ),
        |t| Some(t.records_out as f64),
    ),
    (
        spec(
            "sluice_subtask_sink_records_total",
            COUNTER,
            "Records the subtask's chain handed to sinks.",
            SUBTASK,
        ),
        |t| Some(t.sink_records as f64),
    ),
    (
        spec(
            "sluice_subtask_late_records_total",
            COUNTER,
            "Records dropped for arriving after their window or join had closed.",
            SUBTASK,
        ),
        |t| Some(t.late_records as f64),
    ),
    (
        spec(
            "sluice_subtask_busy_seconds_total",
            COUNTER,
            "Time the subtask spent processing.",
            SUBTASK,
        ),
        |t| Some(t.busy_seconds),
    ),
    (
        spec(
            "sluice_subtask_idle_seconds_total",
            COUNTER,
            "Time the subtask waited for input.",
            SUBTASK,
        ),
        |t| Some(t.idle_seconds),
    ),
    (
        spec(
            "sluice_subtask_backpressured_seconds_total",
            COUNTER,
            "Time the subtask waited for room downstream.",
            SUBTASK,
        ),
        |t| Some(t.backpressured_seconds),
    ),
    (
        spec(
            "sluice_subtask_checkpoint_alignment_seconds_total",
            COUNTER,
            "Time the subtask spent aligning checkpoint barriers: from a barrier's arrival on \
             one input to its arrival on the last.",
            SUBTASK,
        ),
        |t| Some(t.aligning_seconds),
    ),
    (
        spec(
            "sluice_subtask_restored_bytes",
            GAUGE,
            "Bytes of the restored snapshot the subtask read when the run started: only the \
             key groups it owns.",
            SUBTASK,
        ),
        |t| Some(t.restored_bytes as f64),
    ),
    (
        spec(
            "sluice_subtask_restore_seconds",
            GAUGE,
            "Time the subtask took to read and load its part of the restored snapshot.",
            SUBTASK,
        ),
        |t| Some(t.restore_seconds),
    ),
    (
        spec(
            "sluice_subtask_input_buffer_fill",
            GAUGE,
            "Share of the capacity of the subtask's input channels taken by queued batches \
             (0 to 1): near 1, the subtask cannot keep up with its inputs.",
            SUBTASK,
        ),
        |t| (!t.source).then_some(t.input_buffer_fill),
    ),
    (
        spec(
            "sluice_subtask_watermark_seconds",
            GAUGE,
            "Event time (Unix seconds) the subtask's output is complete up to.",
            SUBTASK,
        ),
        |t| t.watermark_ms.map(|ms| ms as f64 / 1000.0),
    ),
];

/// A registry holding the collector of `job`'s metrics.
pub(super) fn registry(job: Arc<dyn JobControl>) -> prometheus::Result<Registry> {
    let registry = Registry::new();
    registry.register(Box::new(JobCollector::new(job)?))?;
    Ok(registry)
}

struct JobCollector {
    job: Arc<dyn JobControl>,
    descs: Vec<Desc>,
}

impl JobCollector {
    fn new(job: Arc<dyn JobControl>) -> prometheus::Result<Self> {
        let fixed = [
            &JOB_PHASE,
            &PARALLELISM,
            &UPTIME,
            &RESTARTS,
            &WORKERS,
            &CHECKPOINTS_COMPLETED,
            &CHECKPOINTS_FAILED,
            &CHECKPOINTS_FAILED_IN_A_ROW,
            &KEY_GROUP_RECORDS,
            &SPLIT_POSITION,
            &SPLIT_BACKLOG,
            &SPLIT_WATERMARK,
            &LAST_CHECKPOINT_ID,
            &LAST_CHECKPOINT_DURATION,
            &LAST_CHECKPOINT_SIZE,
            &LAST_CHECKPOINT_OPERATOR_SIZE,
            &END_TO_END_LATENCY,
        ];
        let descs = fixed
            .into_iter()
            .chain(PER_SUBTASK.iter().map(|(s, _)| s))
            .map(Spec::desc)
            .collect::<prometheus::Result<_>>()?;
        Ok(JobCollector { job, descs })
    }
}

impl Collector for JobCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(&self.job.status())
    }
}

/// The job's families now; the registry leaves out those without samples.
fn families(s: &JobStatus) -> Vec<MetricFamily> {
    let job = s.name.as_str();
    let mut out: Vec<Family> = Vec::new();
    let one = |spec: &Spec, value: f64| {
        let mut f = spec.family();
        f.sample(&[job], value);
        f
    };

    let mut phases = JOB_PHASE.family();
    for phase in [
        Phase::Starting,
        Phase::Running,
        Phase::Stopping,
        Phase::Finished,
        Phase::Failed,
        Phase::Restarting,
    ] {
        let value = f64::from(u8::from(s.phase == phase));
        phases.sample(&[job, phase.as_str()], value);
    }
    out.push(phases);
    out.push(one(&PARALLELISM, f64::from(s.parallelism)));
    out.push(one(&UPTIME, s.uptime_seconds));
    out.push(one(&RESTARTS, f64::from(s.restarts.count)));
    out.push(one(&WORKERS, s.workers.len() as f64));

    for (spec, value) in &PER_SUBTASK {
        let mut f = spec.family();
        for t in &s.subtasks {
            if let Some(v) = value(t) {
                f.sample(&[job, &t.operator, &t.subtask.to_string()], v);
            }
        }
        out.push(f);
    }

    let (mut position, mut backlog, mut watermark) = (
        SPLIT_POSITION.family(),
        SPLIT_BACKLOG.family(),
        SPLIT_WATERMARK.family(),
    );
    for t in &s.subtasks {
        for split in &t.splits {
            let labels = [job, t.operator.as_str(), &split.split.to_string()];
            position.sample(&labels, split.position as f64);
            if let Some(records) = split.backlog {
                backlog.sample(&labels, records as f64);
            }
            if let Some(ms) = split.watermark_ms {
                watermark.sample(&labels, ms as f64 / 1000.0);
            }
        }
    }
    out.extend([position, backlog, watermark]);

    let mut latency = END_TO_END_LATENCY.family();
    for t in s.subtasks.iter().filter(|t| t.sink) {
        let h = &t.end_to_end_latency;
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS_TO - LATENCY_BUCKETS_FROM + 1);
        for b in 0..=LATENCY_BUCKETS_TO {
            cumulative += h.counts.get(b).copied().unwrap_or(0);
            if b >= LATENCY_BUCKETS_FROM {
                buckets.push((LatencyHistogram::upper_bound_seconds(b), cumulative));
            }
        }
        let labels = [job, t.operator.as_str(), &t.subtask.to_string()];
        latency.histogram(&labels, buckets, h.samples(), h.sum_seconds);
    }
    out.push(latency);

    let mut key_groups = KEY_GROUP_RECORDS.family();
    for (operator, records) in s.key_group_records() {
        for (kg, n) in records.iter().enumerate() {
            key_groups.sample(&[job, operator, &kg.to_string()], *n as f64);
        }
    }
    out.push(key_groups);

    let c = &s.checkpoints;
    out.push(one(&CHECKPOINTS_COMPLETED, c.completed as f64));
    out.push(one(&CHECKPOINTS_FAILED, c.failed as f64));
    out.push(one(&CHECKPOINTS_FAILED_IN_A_ROW, c.failed_in_a_row as f64));
    if let Some(last) = &c.last_completed {
        out.push(one(&LAST_CHECKPOINT_ID, last.id as f64));
        out.push(one(
            &LAST_CHECKPOINT_DURATION,
            last.duration_ms as f64 / 1000.0,
        ));
        out.push(one(&LAST_CHECKPOINT_SIZE, last.bytes as f64));
        let mut operators = LAST_CHECKPOINT_OPERATOR_SIZE.family();
        for o in &last.operators {
            operators.sample(&[job, &o.operator], o.bytes as f64);
        }
        out.push(operators);
    }
    out.into_iter().map(Family::into_inner).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::model::{
        CheckpointSummary, CompatibilityReport, KeyGroupRecords, SnapshotInfo, SubtaskState,
    };
    use crate::error::Error;

    struct Fixed(JobStatus);

    impl JobControl for Fixed {
        fn status(&self) -> JobStatus {
            self.0.clone()
        }
        fn savepoint(&self, _: &str, _: bool) -> Result<SnapshotInfo, Error> {
            unimplemented!()
        }
        fn cancel(&self) {}
        fn compatibility(&self, _: &str, _: bool) -> Result<CompatibilityReport, Error> {
            unimplemented!()
        }
    }

    fn render(status: JobStatus) -> String {
        let registry = registry(Arc::new(Fixed(status))).unwrap();
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut out)
            .unwrap();
        out
    }

    fn subtask(operator: &str, subtask: u32, watermark_ms: Option<i64>) -> SubtaskStatus {
        SubtaskStatus {
            operator: operator.into(),
            subtask,
            state: SubtaskState::Running,
            source: true,
            sink: false,
            records_in: 10,
            records_out: 9,
            sink_records: 0,
            late_records: 0,
            busy_seconds: 0.25,
            idle_seconds: 0.0,
            backpressured_seconds: 0.0,
            aligning_seconds: 0.0,
            restored_bytes: 0,
            restore_seconds: 0.0,
            watermark_ms,
            worker: None,
            key_groups: Vec::new(),
            splits: Vec::new(),
            input_buffer_fill: 0.0,
            end_to_end_latency: LatencyHistogram::default(),
        }
    }

    fn status(name: &str, subtasks: Vec<SubtaskStatus>) -> JobStatus {
        JobStatus {
            name: name.into(),
            phase: Phase::Running,
            parallelism: 2,
            max_parallelism: 128,
            uptime_seconds: 1.5,
            subtasks,
            checkpoints: CheckpointSummary::default(),
            restored_from: None,
            errors: Vec::new(),
            restarts: Default::default(),
            workers: Vec::new(),
            topology: Default::default(),
        }
    }

    #[test]
    fn every_sample_line_is_name_labels_value() {
        let text = render(status("q\"5", vec![subtask("source", 0, None)]));
        assert!(text.contains(
            "sluice_subtask_records_in_total{job=\"q\\\"5\",operator=\"source\",subtask=\"0\"} 10\n"
        ));
        assert!(text.contains("sluice_checkpoints_completed_total{job=\"q\\\"5\"} 0\n"));
        assert!(text.contains("sluice_job_phase{job=\"q\\\"5\",phase=\"running\"} 1\n"));
        assert!(text.contains("} 0.25\n"));
        assert!(!text.contains("sluice_subtask_watermark_seconds{"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(series.ends_with('}'), "{line}");
            value.parse::<f64>().unwrap();
        }
    }

    /// The families, help texts, types and labels that `docs/control-api.md`, dashboards
    /// and the tests read.
    #[test]
    fn renders_the_documented_series() {
        let mut window = subtask("window", 1, Some(1_500));
        window.restored_bytes = 4096;
        window.restore_seconds = 0.5;
        let mut s = status("q5", vec![window]);
        s.checkpoints.completed = 4;
        let text = render(s);
        for expected in [
            "# HELP sluice_job_phase 1 for the job's current phase, 0 for the others.\n\
             # TYPE sluice_job_phase gauge\n",
            "sluice_job_phase{job=\"q5\",phase=\"starting\"} 0\n",
            "sluice_job_phase{job=\"q5\",phase=\"running\"} 1\n",
            "# HELP sluice_job_parallelism Highest parallelism of the job's operators.\n\
             # TYPE sluice_job_parallelism gauge\n\
             sluice_job_parallelism{job=\"q5\"} 2\n",
            "# TYPE sluice_job_uptime_seconds gauge\nsluice_job_uptime_seconds{job=\"q5\"} 1.5\n",
            "# TYPE sluice_job_restarts_total counter\nsluice_job_restarts_total{job=\"q5\"} 0\n",
            "# TYPE sluice_job_workers gauge\nsluice_job_workers{job=\"q5\"} 0\n",
            "# HELP sluice_subtask_records_in_total Records entering the subtask's chain (read from channels, or from splits by a source).\n\
             # TYPE sluice_subtask_records_in_total counter\n\
             sluice_subtask_records_in_total{job=\"q5\",operator=\"window\",subtask=\"1\"} 10\n",
            "# TYPE sluice_subtask_records_out_total counter\n\
             sluice_subtask_records_out_total{job=\"q5\",operator=\"window\",subtask=\"1\"} 9\n",
            "# TYPE sluice_subtask_sink_records_total counter\n",
            "# TYPE sluice_subtask_late_records_total counter\n",
            "# TYPE sluice_subtask_busy_seconds_total counter\n\
             sluice_subtask_busy_seconds_total{job=\"q5\",operator=\"window\",subtask=\"1\"} 0.25\n",
            "# TYPE sluice_subtask_idle_seconds_total counter\n",
            "# TYPE sluice_subtask_backpressured_seconds_total counter\n",
            "# HELP sluice_subtask_watermark_seconds Event time (Unix seconds) the subtask's output is complete up to.\n\
             # TYPE sluice_subtask_watermark_seconds gauge\n\
             sluice_subtask_watermark_seconds{job=\"q5\",operator=\"window\",subtask=\"1\"} 1.5\n",
            "# TYPE sluice_subtask_restored_bytes gauge\n\
             sluice_subtask_restored_bytes{job=\"q5\",operator=\"window\",subtask=\"1\"} 4096\n",
            "# TYPE sluice_subtask_restore_seconds gauge\n\
             sluice_subtask_restore_seconds{job=\"q5\",operator=\"window\",subtask=\"1\"} 0.5\n",
            "# HELP sluice_checkpoints_completed_total Checkpoints and savepoints this run completed.\n\
             # TYPE sluice_checkpoints_completed_total counter\n\
             sluice_checkpoints_completed_total{job=\"q5\"} 4\n",
            "# TYPE sluice_checkpoints_failed_total counter\nsluice_checkpoints_failed_total{job=\"q5\"} 0\n",
        ] {
            assert!(text.contains(expected), "{expected}\nnot in\n{text}");
        }
        // Before a checkpoint completes, the last-checkpoint gauges are absent.
        assert!(!text.contains("sluice_last_checkpoint"), "{text}");
    }

    #[test]
    fn key_group_records_are_summed_over_the_subtasks_that_send_them() {
        let mut sources = vec![subtask("source", 0, None), subtask("source", 1, None)];
        sources[0].key_groups = vec![KeyGroupRecords {
            operator: "window".into(),
            records: vec![3, 0, 1],
        }];
        sources[1].key_groups = vec![KeyGroupRecords {
            operator: "window".into(),
            records: vec![4, 2, 0],
        }];
        let mut s = status("q5", sources);
        s.checkpoints.failed_in_a_row = 2;
        let text = render(s);
        for expected in [
            "# HELP sluice_key_group_records_total Records sent to each key group of a keyed operator: how skewed its keys are.\n\
             # TYPE sluice_key_group_records_total counter\n\
             sluice_key_group_records_total{job=\"q5\",operator=\"window\",key_group=\"0\"} 7\n\
             sluice_key_group_records_total{job=\"q5\",operator=\"window\",key_group=\"1\"} 2\n\
             sluice_key_group_records_total{job=\"q5\",operator=\"window\",key_group=\"2\"} 1\n",
            "# TYPE sluice_checkpoints_failed_in_a_row gauge\n\
             sluice_checkpoints_failed_in_a_row{job=\"q5\"} 2\n",
        ] {
            assert!(text.contains(expected), "{expected}\nnot in\n{text}");
        }
    }

    /// A sink's latency samples as a Prometheus histogram: cumulative buckets from about
    /// 1 ms, samples below it counted in the first, above the last only in `+Inf`.
    #[test]
    fn end_to_end_latency_is_a_cumulative_histogram_per_sink_subtask() {
        let mut sink = subtask("out", 0, None);
        sink.source = false;
        sink.sink = true;
        sink.input_buffer_fill = 0.75;
        let mut counts = vec![0; 32];
        counts[3] = 2; // under 8 µs
        counts[10] = 1; // under 1.024 ms
        counts[20] = 4; // under 1.05 s
        counts[31] = 1; // beyond every bound
        sink.end_to_end_latency = LatencyHistogram {
            counts,
            sum_seconds: 2100.5,
        };
        let text = render(status("q5", vec![subtask("source", 0, None), sink]));
        let series = "sluice_sink_end_to_end_latency_seconds";
        let labels = "job=\"q5\",operator=\"out\",subtask=\"0\"";
        for expected in [
            format!("# TYPE {series} histogram\n"),
            format!("{series}_bucket{{{labels},le=\"0.001024\"}} 3\n"),
            format!("{series}_bucket{{{labels},le=\"0.524288\"}} 3\n"),
            format!("{series}_bucket{{{labels},le=\"1.048576\"}} 7\n"),
            format!("{series}_bucket{{{labels},le=\"536.870912\"}} 7\n"),
            format!("{series}_bucket{{{labels},le=\"+Inf\"}} 8\n"),
            format!("{series}_sum{{{labels}}} 2100.5\n{series}_count{{{labels}}} 8\n"),
            format!("sluice_subtask_input_buffer_fill{{{labels}}} 0.75\n"),
        ] {
            assert!(text.contains(&expected), "{expected}\nnot in\n{text}");
        }
        // Only sinks have a latency; sources have no input channels.
        assert!(
            !text.contains("operator=\"source\",subtask=\"0\",le="),
            "{text}"
        );
        assert!(!text.contains("sluice_subtask_input_buffer_fill{job=\"q5\",operator=\"source\""));
    }
}

//! `GET /metrics`: the job's counters in the Prometheus text exposition format (0.0.4).

use super::model::{JobStatus, Phase};
use std::fmt::Write;

pub(super) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family being written: `# HELP`, `# TYPE`, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        // Writing to a String cannot fail.
        let _ = writeln!(
            self.out,
            "{}{{{}}} {}",
            self.name,
            labels.join(","),
            number(value)
        );
    }
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

pub(super) fn render(s: &JobStatus) -> String {
    let mut out = String::new();
    let job = s.name.as_str();
    let base = [("job", job)];

    let mut f = family(
        &mut out,
        "sluice_job_phase",
        "gauge",
        "1 for the job's current phase, 0 for the others.",
    );
    for phase in Phase::ALL {
        let value = f64::from(u8::from(s.phase == phase));
        f.sample(&[("job", job), ("phase", phase.as_str())], value);
    }
    family(
        &mut out,
        "sluice_job_parallelism",
        "gauge",
        "Highest parallelism of the job's operators.",
    )
    .sample(&base, f64::from(s.parallelism));
    family(
        &mut out,
        "sluice_job_uptime_seconds",
        "gauge",
        "Time since the job's subtasks started.",
    )
    .sample(&base, s.uptime_seconds);
    family(
        &mut out,
        "sluice_job_restarts_total",
        "counter",
        "Restarts of the job from its latest checkpoint (distributed mode).",
    )
    .sample(&base, f64::from(s.restarts.count));
    family(
        &mut out,
        "sluice_job_workers",
        "gauge",
        "Workers registered with the coordinator (distributed mode).",
    )
    .sample(&base, s.workers.len() as f64);

    type Value = fn(&super::model::SubtaskStatus) -> Option<f64>;
    let per_subtask: [(&'static str, &str, &str, Value); 8] = [
        (
            "sluice_subtask_records_in_total",
            "counter",
            "Records entering the subtask's chain (read from channels, or from splits by a source).",
            |t| Some(t.records_in as f64),
        ),
        (
            "sluice_subtask_records_out_total",
            "counter",
            "Records the subtask's chain sent to other chains.",
            |t| Some(t.records_out as f64),
        ),
        (
            "sluice_subtask_sink_records_total",
            "counter",
            "Records the subtask's chain handed to sinks.",
            |t| Some(t.sink_records as f64),
        ),
        (
            "sluice_subtask_late_records_total",
            "counter",
            "Records dropped for arriving after their window or join had closed.",
            |t| Some(t.late_records as f64),
        ),
        (
            "sluice_subtask_busy_seconds_total",
            "counter",
            "Time the subtask spent processing.",
            |t| Some(t.busy_seconds),
        ),
        (
            "sluice_subtask_idle_seconds_total",
            "counter",
            "Time the subtask waited for input.",
            |t| Some(t.idle_seconds),
        ),
        (
            "sluice_subtask_backpressured_seconds_total",
            "counter",
            "Time the subtask waited for room downstream.",
            |t| Some(t.backpressured_seconds),
        ),
        (
            "sluice_subtask_watermark_seconds",
            "gauge",
            "Event time (Unix seconds) the subtask's output is complete up to.",
            |t| t.watermark_ms.map(|ms| ms as f64 / 1000.0),
        ),
    ];
    for (name, kind, help, value) in per_subtask {
        let mut f = family(&mut out, name, kind, help);
        for t in &s.subtasks {
            if let Some(v) = value(t) {
                let subtask = t.subtask.to_string();
                f.sample(
                    &[
                        ("job", job),
                        ("operator", &t.operator),
                        ("subtask", &subtask),
                    ],
                    v,
                );
            }
        }
    }

    let c = &s.checkpoints;
    family(
        &mut out,
        "sluice_checkpoints_completed_total",
        "counter",
        "Checkpoints and savepoints this run completed.",
    )
    .sample(&base, c.completed as f64);
    family(
        &mut out,
        "sluice_checkpoints_failed_total",
        "counter",
        "Checkpoints and savepoints of this run that failed or timed out.",
    )
    .sample(&base, c.failed as f64);
    if let Some(last) = &c.last_completed {
        family(
            &mut out,
            "sluice_last_checkpoint_id",
            "gauge",
            "Id of the last completed checkpoint or savepoint.",
        )
        .sample(&base, last.id as f64);
        family(
            &mut out,
            "sluice_last_checkpoint_duration_seconds",
            "gauge",
            "Time from the last completed snapshot's trigger to its manifest written.",
        )
        .sample(&base, last.duration_ms as f64 / 1000.0);
        family(
            &mut out,
            "sluice_last_checkpoint_size_bytes",
            "gauge",
            "State the last completed snapshot refers to, in storage.",
        )
        .sample(&base, last.bytes as f64);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::model::{CheckpointSummary, SubtaskState, SubtaskStatus};

    #[test]
    fn every_sample_line_is_name_labels_value() {
        let status = JobStatus {
            name: "q\"5".into(),
            phase: Phase::Running,
            parallelism: 2,
            max_parallelism: 128,
            uptime_seconds: 1.5,
            subtasks: vec![SubtaskStatus {
                operator: "source".into(),
                subtask: 0,
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
                watermark_ms: None,
                worker: None,
            }],
            checkpoints: CheckpointSummary::default(),
            restored_from: None,
            errors: Vec::new(),
            restarts: Default::default(),
            workers: Vec::new(),
        };
        let text = render(&status);
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
}

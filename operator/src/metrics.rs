//! The operator's Prometheus metrics, in the process's one registry, which `/metrics`
//! renders (see `sluice_http` and the runtime's `control/prometheus.rs` for why the
//! `prometheus` crate).
//!
//! Counters and the leader gauge are the crate's own metrics. The summaries (count and sum,
//! no quantiles) and the per-job phases are computed when scraped from what the reconciler
//! reported, by a collector over shared state: the crate has no quantile-free summary, and
//! the phase series must carry their labels in the order `namespace,name,phase`, which the
//! crate's vectors would sort.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use sluice_crds::Phase;
use sluice_http::scrape::{MetricType, Spec};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    reconcile_seconds: Counter,
    /// Savepoints asked for (beside the completed ones: how many never completed).
    savepoint_requests: IntCounter,
    /// 1 while this replica holds the lease (or without leader election).
    leader: IntGauge,
    reported: Arc<Mutex<Reported>>,
}

/// What the reconciler reported, turned into series when scraped.
#[derive(Default)]
struct Reported {
    /// Completed savepoints: count and summed seconds.
    savepoints: (u64, f64),
    /// Completed operations by kind: count and summed seconds.
    operations: BTreeMap<String, (u64, f64)>,
    phases: BTreeMap<(String, String), Option<Phase>>,
}

const SAVEPOINT_SECONDS: Spec = Spec {
    name: "sluice_operator_savepoint_seconds",
    help: "From request to completed savepoint.",
    kind: MetricType::SUMMARY,
    labels: &[],
};
const OPERATION_SECONDS: Spec = Spec {
    name: "sluice_operator_operation_seconds",
    help: "From a spec change to the job running it, by operation (Upgrade, Rescale, Resume, Rollback, Deploy).",
    kind: MetricType::SUMMARY,
    labels: &["operation"],
};
const JOBS: Spec = Spec {
    name: "sluice_operator_jobs",
    help: "StreamJobs by phase.",
    kind: MetricType::GAUGE,
    labels: &["phase"],
};
const JOB_PHASE: Spec = Spec {
    name: "sluice_operator_job_phase",
    help: "The phase of each StreamJob (1 for its current phase).",
    kind: MetricType::GAUGE,
    labels: &["namespace", "name", "phase"],
};

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "sluice_operator_reconciles_total",
                "Reconciles of StreamJobs by result.",
            ),
            &["result"],
        )?;
        // Both results are series from the start, at 0.
        for result in ["ok", "error"] {
            reconciles.with_label_values(&[result]);
        }
        let reconcile_seconds = Counter::new(
            "sluice_operator_reconcile_seconds_total",
            "Time spent reconciling.",
        )?;
        let savepoint_requests = IntCounter::new(
            "sluice_operator_savepoint_requests_total",
            "Savepoints asked of coordinators.",
        )?;
        let leader = IntGauge::new("sluice_operator_leader", "Whether this replica leads.")?;
        let reported = Arc::new(Mutex::new(Reported::default()));
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_seconds.clone()))?;
        registry.register(Box::new(savepoint_requests.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(ReportedCollector::new(reported.clone())?))?;
        Ok(Metrics {
            registry,
            reconciles,
            reconcile_seconds,
            savepoint_requests,
            leader,
            reported,
        })
    }

    /// The registry `/metrics` renders.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn set_leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn reconciled(&self, ok: bool, seconds: f64) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles.with_label_values(&[result]).inc();
        self.reconcile_seconds.inc_by(seconds.max(0.0));
    }

    pub fn savepoint_requested(&self) {
        self.savepoint_requests.inc();
    }

    pub fn timing(&self, timing: &crate::plan::Timing) {
        let Ok(mut r) = self.reported.lock() else {
            return;
        };
        match timing {
            crate::plan::Timing::Savepoint(d) => {
                r.savepoints.0 += 1;
                r.savepoints.1 += d.as_secs_f64();
            }
            crate::plan::Timing::Operation(kind, d) => {
                let e = r.operations.entry(format!("{kind:?}")).or_default();
                e.0 += 1;
                e.1 += d.as_secs_f64();
            }
        }
    }

    pub fn phase(&self, namespace: &str, name: &str, phase: Option<Phase>) {
        if let Ok(mut r) = self.reported.lock() {
            r.phases
                .insert((namespace.to_string(), name.to_string()), phase);
        }
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut r) = self.reported.lock() {
            r.phases.remove(&(namespace.to_string(), name.to_string()));
        }
    }

    /// Everything in the Prometheus text format, as `/metrics` serves it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding to a String fails only on families without samples, which the registry
        // leaves out.
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

struct ReportedCollector {
    reported: Arc<Mutex<Reported>>,
    descs: Vec<Desc>,
}

impl ReportedCollector {
    fn new(reported: Arc<Mutex<Reported>>) -> prometheus::Result<Self> {
        let descs = [&SAVEPOINT_SECONDS, &OPERATION_SECONDS, &JOBS, &JOB_PHASE]
            .into_iter()
            .map(Spec::desc)
            .collect::<prometheus::Result<_>>()?;
        Ok(ReportedCollector { reported, descs })
    }
}

impl Collector for ReportedCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(r) = self.reported.lock() else {
            return Vec::new();
        };
        let mut savepoints = SAVEPOINT_SECONDS.family();
        savepoints.summary(&[], r.savepoints.0, r.savepoints.1);
        let mut operations = OPERATION_SECONDS.family();
        for (kind, (count, seconds)) in &r.operations {
            operations.summary(&[kind], *count, *seconds);
        }
        let name = |p: &Option<Phase>| p.map_or("Pending".to_string(), |p| format!("{p:?}"));
        let mut by_phase: BTreeMap<String, u64> = BTreeMap::new();
        for phase in r.phases.values() {
            *by_phase.entry(name(phase)).or_default() += 1;
        }
        let mut jobs = JOBS.family();
        for (phase, n) in &by_phase {
            jobs.sample(&[phase], *n as f64);
        }
        let mut job_phase = JOB_PHASE.family();
        for ((ns, job), phase) in &r.phases {
            job_phase.sample(&[ns, job, &name(phase)], 1.0);
        }
        [savepoints, operations, jobs, job_phase]
            .into_iter()
            .map(sluice_http::scrape::Family::into_inner)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_the_documented_series() {
        let m = Metrics::new().unwrap();
        m.set_leading(true);
        m.reconciled(true, 0.5);
        m.reconciled(false, 0.25);
        m.savepoint_requested();
        m.timing(&crate::plan::Timing::Savepoint(Duration::from_millis(1500)));
        m.phase("ns", "a", Some(Phase::Running));
        m.phase("ns", "b", None);
        m.phase("ns", "c", Some(Phase::Running));
        m.forget("ns", "c");
        let text = m.render();
        for expected in [
            "# HELP sluice_operator_reconciles_total Reconciles of StreamJobs by result.\n\
             # TYPE sluice_operator_reconciles_total counter\n\
             sluice_operator_reconciles_total{result=\"error\"} 1\n\
             sluice_operator_reconciles_total{result=\"ok\"} 1\n",
            "# TYPE sluice_operator_reconcile_seconds_total counter\n\
             sluice_operator_reconcile_seconds_total 0.75\n",
            "sluice_operator_savepoint_requests_total 1\n",
            "# HELP sluice_operator_savepoint_seconds From request to completed savepoint.\n\
             # TYPE sluice_operator_savepoint_seconds summary\n\
             sluice_operator_savepoint_seconds_sum 1.5\n\
             sluice_operator_savepoint_seconds_count 1\n",
            "# TYPE sluice_operator_jobs gauge\n\
             sluice_operator_jobs{phase=\"Pending\"} 1\n\
             sluice_operator_jobs{phase=\"Running\"} 1\n",
            "sluice_operator_job_phase{namespace=\"ns\",name=\"a\",phase=\"Running\"} 1\n",
            "sluice_operator_job_phase{namespace=\"ns\",name=\"b\",phase=\"Pending\"} 1\n",
            "# HELP sluice_operator_leader Whether this replica leads.\n\
             # TYPE sluice_operator_leader gauge\n\
             sluice_operator_leader 1\n",
        ] {
            assert!(text.contains(expected), "{expected}\nnot in\n{text}");
        }
        assert!(!text.contains("name=\"c\""), "{text}");
    }

    #[test]
    fn every_operator_series_the_dashboard_queries_is_exported() {
        let m = Metrics::new().unwrap();
        m.set_leading(true);
        m.reconciled(true, 0.5);
        m.savepoint_requested();
        m.timing(&crate::plan::Timing::Savepoint(Duration::from_secs(2)));
        m.timing(&crate::plan::Timing::Operation(
            sluice_crds::OperationKind::Upgrade,
            Duration::from_secs(9),
        ));
        m.phase("ns", "a", Some(Phase::Running));
        let dashboard = include_str!("../../config/dashboards/sluice.json");
        let problems = sluice_http::dashboard::problems(dashboard, &m.render(), |series| {
            series.starts_with("sluice_operator_")
        });
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

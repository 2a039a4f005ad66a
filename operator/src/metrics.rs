//! The operator's Prometheus metrics and its `/metrics`, `/healthz` and `/readyz` endpoints.

use sluice_crds::Phase;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    reconciles_ok: AtomicU64,
    reconciles_failed: AtomicU64,
    /// Sum of reconcile durations in microseconds.
    reconcile_micros: AtomicU64,
    /// Savepoints asked for (beside the completed ones: how many never completed).
    savepoint_requests: AtomicU64,
    /// Completed savepoints: count and summed seconds.
    savepoints: Mutex<(u64, f64)>,
    /// Completed operations by kind: count and summed seconds.
    operations: Mutex<BTreeMap<String, (u64, f64)>>,
    phases: Mutex<BTreeMap<(String, String), Option<Phase>>>,
    /// Set while this replica holds the lease (or without leader election).
    pub leading: AtomicBool,
}

impl Metrics {
    pub fn reconciled(&self, ok: bool, seconds: f64) {
        let counter = if ok {
            &self.reconciles_ok
        } else {
            &self.reconciles_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.reconcile_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn savepoint_requested(&self) {
        self.savepoint_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn timing(&self, timing: &crate::plan::Timing) {
        match timing {
            crate::plan::Timing::Savepoint(d) => {
                if let Ok(mut s) = self.savepoints.lock() {
                    s.0 += 1;
                    s.1 += d.as_secs_f64();
                }
            }
            crate::plan::Timing::Operation(kind, d) => {
                if let Ok(mut o) = self.operations.lock() {
                    let e = o.entry(format!("{kind:?}")).or_default();
                    e.0 += 1;
                    e.1 += d.as_secs_f64();
                }
            }
        }
    }

    pub fn phase(&self, namespace: &str, name: &str, phase: Option<Phase>) {
        if let Ok(mut p) = self.phases.lock() {
            p.insert((namespace.to_string(), name.to_string()), phase);
        }
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut p) = self.phases.lock() {
            p.remove(&(namespace.to_string(), name.to_string()));
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let ok = self.reconciles_ok.load(Ordering::Relaxed);
        let failed = self.reconciles_failed.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP sluice_operator_reconciles_total Reconciles of StreamJobs by result.\n# TYPE sluice_operator_reconciles_total counter");
        let _ = writeln!(
            out,
            "sluice_operator_reconciles_total{{result=\"ok\"}} {ok}"
        );
        let _ = writeln!(
            out,
            "sluice_operator_reconciles_total{{result=\"error\"}} {failed}"
        );
        let _ = writeln!(out, "# HELP sluice_operator_reconcile_seconds_total Time spent reconciling.\n# TYPE sluice_operator_reconcile_seconds_total counter");
        let _ = writeln!(
            out,
            "sluice_operator_reconcile_seconds_total {}",
            self.reconcile_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "# HELP sluice_operator_savepoint_requests_total Savepoints asked of coordinators.\n# TYPE sluice_operator_savepoint_requests_total counter");
        let _ = writeln!(
            out,
            "sluice_operator_savepoint_requests_total {}",
            self.savepoint_requests.load(Ordering::Relaxed)
        );
        let (count, seconds) = self.savepoints.lock().map(|s| *s).unwrap_or_default();
        let _ = writeln!(out, "# HELP sluice_operator_savepoint_seconds From request to completed savepoint.\n# TYPE sluice_operator_savepoint_seconds summary");
        let _ = writeln!(out, "sluice_operator_savepoint_seconds_sum {seconds}");
        let _ = writeln!(out, "sluice_operator_savepoint_seconds_count {count}");
        let operations = self
            .operations
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default();
        let _ = writeln!(out, "# HELP sluice_operator_operation_seconds From a spec change to the job running it, by operation (Upgrade, Rescale, Resume, Rollback, Deploy).\n# TYPE sluice_operator_operation_seconds summary");
        for (kind, (count, seconds)) in operations {
            let _ = writeln!(
                out,
                "sluice_operator_operation_seconds_sum{{operation=\"{kind}\"}} {seconds}"
            );
            let _ = writeln!(
                out,
                "sluice_operator_operation_seconds_count{{operation=\"{kind}\"}} {count}"
            );
        }
        let phases = self.phases.lock().map(|p| p.clone()).unwrap_or_default();
        let name = |p: &Option<Phase>| p.map_or("Pending".to_string(), |p| format!("{p:?}"));
        let mut by_phase: BTreeMap<String, u64> = BTreeMap::new();
        for phase in phases.values() {
            *by_phase.entry(name(phase)).or_default() += 1;
        }
        let _ = writeln!(
            out,
            "# HELP sluice_operator_jobs StreamJobs by phase.\n# TYPE sluice_operator_jobs gauge"
        );
        for (phase, n) in by_phase {
            let _ = writeln!(out, "sluice_operator_jobs{{phase=\"{phase}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP sluice_operator_job_phase The phase of each StreamJob (1 for its current phase).\n# TYPE sluice_operator_job_phase gauge");
        for ((ns, job), phase) in &phases {
            let _ = writeln!(
                out,
                "sluice_operator_job_phase{{namespace=\"{ns}\",name=\"{job}\",phase=\"{}\"}} 1",
                name(phase)
            );
        }
        let _ = writeln!(out, "# HELP sluice_operator_leader Whether this replica leads.\n# TYPE sluice_operator_leader gauge");
        let _ = writeln!(
            out,
            "sluice_operator_leader {}",
            u8::from(self.leading.load(Ordering::Relaxed))
        );
        out
    }
}

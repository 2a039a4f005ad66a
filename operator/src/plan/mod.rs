//! The lifecycle, as a pure function: from the spec, the status (the operator's write-ahead
//! log) and what was observed, the next status and the actions that move the job towards
//! the spec. Nothing here talks to a cluster, so every transition is a unit test.
//!
//! Every change that needs new pods is the same sequence of steps, recorded in
//! `status.operation` before the step is taken:
//!
//! ```text
//!  [Preflight]  savepoint without stop, then the new image checks it (upgrades only)
//!  Stopping     stop with a savepoint (or cancel for last-state, nothing for stateless)
//!  Deploying    the new revision's pods, starting from that savepoint
//! ```
//!
//! A restarted operator reads the step from the status and carries on: a stop already asked
//! for is found again by its savepoint's directory, which is unique to the operation.
//!
//! One file per part of the lifecycle: `steady` (no operation: start one, or watch the
//! job), `admission` (the namespace's StreamQuota: queue, preempt), one per step of
//! [`OperationStep`] (`savepoint`, `preflight`, `stopping`,
//! `deploying`, `restarting`), `conditions`, which every reconcile ends with, `summary`,
//! the job's metrics in its status, and `health`, what their trend says is going wrong.

mod admission;
mod conditions;
mod deploying;
mod health;
mod preflight;
mod restarting;
mod savepoint;
mod steady;
mod stopping;
mod summary;

use conditions::condition;

use crate::admission::Decision;
use crate::build::JobRef;
use crate::ratelimit::RestartPermit;
use sluice_crds::control::{self, JobStatus, SavepointStatus, SnapshotKind};
use sluice_crds::{
    ErrorInfo, Operation, OperationKind, OperationStep, Phase, SpecRevision, StreamJobSpec,
    StreamJobStatus,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

/// What the operator saw of the job's pods and coordinator.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The coordinator's `GET /v1/job`, when it answered.
    pub job: Option<JobStatus>,
    /// Why it did not answer (no pod yet, not ready, refused …).
    pub unreachable: Option<String>,
    /// The operation's savepoint request, when it has an id the coordinator still knows.
    pub savepoint: Option<SavepointStatus>,
    pub preflight: Preflight,
    /// The Job deleting retired savepoints.
    pub cleanup: Cleanup,
    /// A pod of the job that keeps failing: which and why.
    pub crash: Option<String>,
    /// A pod of the job that cannot run by itself: the job has failed for good.
    pub pod_failure: Option<PodFailure>,
    /// The runs (`SpecRevision::run`) the job's pods belong to.
    pub pod_runs: BTreeSet<String>,
}

/// A pod that will not run without a restart of the job: a container in a crash loop or
/// without its image, an evicted pod, or one the scheduler could not place for a while.
#[derive(Clone, Debug, PartialEq)]
pub struct PodFailure {
    pub pod: String,
    pub message: String,
}

/// The upgrade pre-flight check's Job.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Preflight {
    #[default]
    Absent,
    Running,
    Passed,
    Failed(String),
}

/// The Job deleting retired savepoints, with the savepoints it was given.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Cleanup {
    #[default]
    Absent,
    Running,
    Succeeded(Vec<String>),
    Failed {
        savepoints: Vec<String>,
        report: String,
    },
}

/// What the apply step does, in order, after the status is written.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Server-side apply of the children that run this revision.
    Deploy(SpecRevision),
    /// Delete the coordinator and the workers (the ConfigMap and Secret stay).
    RemovePods,
    /// Ask for a savepoint into `target`; the id goes into the step's savepoint request.
    Savepoint {
        target: String,
        stop: bool,
    },
    Cancel,
    /// Run the new revision's image against the savepoint (`sluice savepoint check`).
    Preflight {
        revision: SpecRevision,
        savepoint: String,
    },
    RemovePreflight,
    /// Run `sluice savepoint delete` with the spec's image, secrets and volumes.
    DeleteSavepoints {
        spec: Box<StreamJobSpec>,
        savepoints: Vec<String>,
    },
    RemoveCleanup,
    /// Let the API server delete the StreamJob.
    ReleaseFinalizer,
}

/// A Kubernetes Event to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// How long something the plan saw finish took, for the operator's metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Timing {
    /// From the request to the completed savepoint.
    Savepoint(Duration),
    /// From the spec change (or the request) to the job running the new revision.
    Operation(OperationKind, Duration),
}

#[derive(Debug)]
pub struct Plan {
    pub status: StreamJobStatus,
    pub actions: Vec<Action>,
    pub notes: Vec<Note>,
    pub timings: Vec<Timing>,
    pub requeue: Duration,
}

pub struct Inputs<'a> {
    pub job: &'a JobRef,
    pub spec: &'a StreamJobSpec,
    pub generation: Option<i64>,
    pub deleting: bool,
    pub status: &'a StreamJobStatus,
    pub observed: &'a Observed,
    pub now: SystemTime,
    /// The operator-wide restart rate limit.
    pub restart_permit: &'a dyn RestartPermit,
    /// What the namespace's StreamQuotas decide for the job; `None` without a quota.
    pub admission: Option<&'a Decision>,
}

pub fn plan(i: &Inputs) -> Plan {
    let mut p = Planner {
        i,
        status: i.status.clone(),
        actions: Vec::new(),
        notes: Vec::new(),
        timings: Vec::new(),
        requeue: Duration::from_secs(10),
    };
    p.status.selector = Some(i.job.worker_selector());
    p.observe();
    if i.deleting {
        p.delete();
    } else if let Some(op) = p.status.operation.clone() {
        p.continue_operation(op);
    } else {
        p.steady();
    }
    if !i.deleting {
        p.delete_retired_savepoints();
    }
    p.conditions();
    Plan {
        status: p.status,
        actions: p.actions,
        notes: p.notes,
        timings: p.timings,
        requeue: p.requeue,
    }
}

struct Planner<'a> {
    i: &'a Inputs<'a>,
    status: StreamJobStatus,
    actions: Vec<Action>,
    notes: Vec<Note>,
    timings: Vec<Timing>,
    requeue: Duration,
}

impl Planner<'_> {
    fn now(&self) -> String {
        timestamp(self.i.now)
    }

    fn note(&mut self, reason: &'static str, message: impl Into<String>) {
        self.notes.push(Note {
            warning: false,
            reason,
            message: message.into(),
        });
    }

    fn warn(&mut self, reason: &'static str, message: impl Into<String>) {
        self.notes.push(Note {
            warning: true,
            reason,
            message: message.into(),
        });
    }

    /// The coordinator's phase, when it is the coordinator of the targeted run: the pods
    /// of a run being replaced may still answer for a moment, and must not be taken for it.
    fn job_phase(&self) -> Option<control::Phase> {
        let run = self.status.target.as_ref().and_then(|t| t.run.as_deref());
        let pods = &self.i.observed.pod_runs;
        let ours = run.is_none_or(|r| pods.len() == 1 && pods.contains(r));
        self.i
            .observed
            .job
            .as_ref()
            .filter(|_| ours)
            .map(|j| j.phase)
    }

    /// Pods of another run than the targeted one are still there.
    fn stale_pods(&self) -> bool {
        let run = self.status.target.as_ref().and_then(|t| t.run.as_deref());
        self.i
            .observed
            .pod_runs
            .iter()
            .any(|r| Some(r.as_str()) != run)
    }

    /// Facts every reconcile records: the checkpoint the job completed last, and what the
    /// job is doing.
    fn observe(&mut self) {
        if let Some(job) = &self.i.observed.job {
            if let Some(last) = &job.checkpoints.last_completed {
                // A `final` snapshot is taken at the end of bounded input.
                if matches!(last.kind, SnapshotKind::Checkpoint | SnapshotKind::Final) {
                    let completed = last
                        .completed_at_ms
                        .map(|ms| timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)));
                    self.status.last_checkpoint = Some(sluice_crds::CheckpointInfo {
                        id: last.id,
                        path: last.location.clone(),
                        completed_at: completed,
                    });
                }
            }
        }
        self.summarise();
    }

    fn set_phase(&mut self, phase: Phase) {
        self.status.phase = Some(phase);
    }

    fn start(&mut self, kind: OperationKind, step: OperationStep) -> Operation {
        let op = Operation::new(kind, step, self.now());
        self.status.operation = Some(op.clone());
        op
    }

    fn finish_operation(&mut self) {
        self.status.operation = None;
    }

    fn new_revision(&self, spec: &StreamJobSpec, restore_from: Option<String>) -> SpecRevision {
        let mut r = SpecRevision::new(spec.clone(), self.i.generation);
        r.restore_from = restore_from;
        r.run = Some(run_name(self.i.now));
        r.recorded_at = Some(self.now());
        r
    }

    fn continue_operation(&mut self, op: Operation) {
        self.requeue = Duration::from_secs(2);
        match op.step.clone() {
            OperationStep::Savepoint(step) => self.continue_savepoint(op, step),
            OperationStep::PreflightSavepoint(_) => self.continue_preflight_savepoint(op),
            OperationStep::PreflightCheck => self.continue_preflight_check(op),
            OperationStep::Stopping(_) => self.continue_stopping(op),
            OperationStep::Deploying(step) => self.continue_deploying(op, step),
            OperationStep::Backoff(step) => self.continue_backoff(step),
            OperationStep::Unrecognised { step, .. } => {
                self.warn(
                    "UnknownStep",
                    format!("unknown step {step:?}; starting over"),
                );
                self.finish_operation();
            }
        }
    }

    /// Ends an operation that could not go on; the old job keeps running.
    fn abort(&mut self, reason: &'static str, message: String) {
        self.warn(reason, message.clone());
        self.fail(reason, message, Some(&self.i.spec.fingerprint()));
        self.finish_operation();
        if let Some(t) = self.status.target.clone() {
            self.watch_running(&t);
        }
    }

    fn fail(&mut self, reason: &str, message: String, spec_hash: Option<&str>) {
        let mut context = BTreeMap::new();
        if let Some(h) = spec_hash {
            context.insert("specHash".to_string(), h.to_string());
        }
        self.status.error = Some(ErrorInfo {
            reason: reason.to_string(),
            message,
            phase: self.status.phase,
            operation: self.status.operation.as_ref().map(|o| o.kind),
            context,
            time: self.now(),
        });
    }
}

pub fn timestamp(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_default()
}

pub fn parse_time(s: &str) -> Option<SystemTime> {
    s.parse::<jiff::Timestamp>().ok().map(SystemTime::from)
}

/// `2026-11-27T20:01:02Z` → `20261127T200102Z`: a name part that sorts by time.
fn compact(t: &str) -> String {
    t.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

fn run_name(now: SystemTime) -> String {
    format!(
        "run-{}",
        now.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    )
}

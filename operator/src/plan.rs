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

use crate::build::{JobRef, Storage};
use sluice_crds::control::{
    JobPhase, JobStatus, SavepointState as RequestState, SavepointStatus, SnapshotKind,
};
use sluice_crds::{
    condition_types, Condition, ConditionStatus, DesiredState, ErrorInfo, OnDelete, Operation,
    OperationKind, Phase, SavepointInfo, SavepointState, SavepointTrigger, SpecRevision,
    StreamJobSpec, StreamJobStatus, UpgradeMode,
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
    /// The runs (`SpecRevision::run`) the job's pods belong to.
    pub pod_runs: BTreeSet<String>,
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
    /// Ask for a savepoint into `target`; the id goes into `operation.details.savepointId`.
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
}

/// Steps of an operation, as recorded in `status.operation.step`.
pub mod steps {
    pub const PREFLIGHT_SAVEPOINT: &str = "PreflightSavepoint";
    pub const PREFLIGHT_CHECK: &str = "PreflightCheck";
    pub const STOPPING: &str = "Stopping";
    pub const DEPLOYING: &str = "Deploying";
    pub const SAVEPOINT: &str = "Savepoint";
}

const SAVEPOINT_ID: &str = "savepointId";
const TARGET_DIR: &str = "targetDirectory";
const REQUESTED_AT: &str = "requestedAt";
/// When an operation that went through several steps began.
const SINCE: &str = "since";
/// How long a savepoint request may take to show in the coordinator's status.
const SAVEPOINT_GRACE: Duration = Duration::from_secs(30);
const SAVEPOINT_ATTEMPTS: u32 = 3;

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
    fn job_phase(&self) -> Option<JobPhase> {
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

    /// Facts every reconcile records: the checkpoint the job completed last, parallelism.
    fn observe(&mut self) {
        if let Some(job) = &self.i.observed.job {
            if let Some(last) = &job.checkpoints.last_completed {
                // A `final` snapshot is taken at the end of bounded input.
                if matches!(last.kind, SnapshotKind::Checkpoint | SnapshotKind::Final) {
                    self.status.last_checkpoint = Some(sluice_crds::CheckpointInfo {
                        id: last.id,
                        path: last.location.clone(),
                        completed_at: None,
                    });
                }
            }
        }
    }

    fn set_phase(&mut self, phase: Phase) {
        self.status.phase = Some(phase);
    }

    fn start(&mut self, kind: OperationKind, step: &str) -> Operation {
        let op = Operation {
            kind,
            step: step.to_string(),
            started_at: self.now(),
            savepoint: None,
            attempts: 0,
            details: BTreeMap::new(),
        };
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

    /// No operation under way: start one if the spec asks for it, else watch the job.
    fn steady(&mut self) {
        let spec = self.i.spec;
        if let Err(errors) = sluice_crds::validate(spec) {
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            self.fail("InvalidSpec", message, None);
            if self.status.target.is_none() {
                self.set_phase(Phase::Failed);
            }
            return;
        }
        let Some(target) = self.status.target.clone() else {
            if spec.state == DesiredState::Suspended {
                self.set_phase(Phase::Suspended);
                return;
            }
            let revision = self.new_revision(spec, spec.initial_savepoint.clone());
            self.begin_deploy(OperationKind::Deploy, revision);
            return;
        };
        let suspended = self.status.phase == Some(Phase::Suspended);
        match (suspended, spec.state) {
            (true, DesiredState::Suspended) => return,
            (true, DesiredState::Running) => {
                let from = self
                    .status
                    .last_savepoint
                    .as_ref()
                    .and_then(|s| s.path.clone())
                    .or(target.restore_from.clone());
                let revision = self.new_revision(spec, from);
                self.begin_deploy(OperationKind::Resume, revision);
                return;
            }
            (false, DesiredState::Suspended) => {
                self.begin_stop(OperationKind::Suspend);
                return;
            }
            (false, DesiredState::Running) => {}
        }
        let wanted = spec.fingerprint();
        let mut target = target;
        if wanted != target.hash && pods_fingerprint(spec) == pods_fingerprint(&target.spec) {
            // Only policies changed (savepoints, rollback, priority): no new pods for that.
            target.spec = spec.clone();
            target.hash = wanted.clone();
            target.generation = self.i.generation;
            self.status.target = Some(target.clone());
        }
        if wanted != target.hash && !self.refused(&wanted) {
            if only_parallelism_differs(&target.spec, spec) {
                self.note(
                    "Rescaling",
                    format!(
                        "parallelism {} -> {}: savepoint, then restore with the key groups redistributed",
                        target.spec.parallelism, spec.parallelism
                    ),
                );
                self.begin_stop(OperationKind::Rescale);
            } else {
                self.begin_upgrade();
            }
            return;
        }
        let nonce = spec.savepoints.trigger_nonce;
        if nonce.is_some() && nonce != self.status.savepoint_trigger_nonce {
            self.status.savepoint_trigger_nonce = nonce;
            self.begin_savepoint(SavepointTrigger::Manual, nonce);
            return;
        }
        if let Some(interval) = spec
            .savepoints
            .periodic_interval
            .as_ref()
            .and_then(|d| d.to_std())
        {
            let last = self
                .status
                .savepoints
                .iter()
                .filter_map(|s| s.triggered_at.as_deref())
                .filter_map(parse_time)
                .max()
                .or_else(|| target.recorded_at.as_deref().and_then(parse_time));
            let due = last.is_none_or(|t| self.i.now >= t + interval);
            if due && self.job_phase() == Some(JobPhase::Running) {
                self.begin_savepoint(SavepointTrigger::Periodic, None);
                return;
            }
            self.requeue = self.requeue.min(interval);
        }
        self.watch_running(&target);
    }

    /// A spec whose upgrade was refused or rolled back is not tried again until it changes.
    fn refused(&self, hash: &str) -> bool {
        self.status
            .error
            .as_ref()
            .is_some_and(|e| e.context.get("specHash").map(String::as_str) == Some(hash))
    }

    fn watch_running(&mut self, target: &SpecRevision) {
        self.actions.push(Action::Deploy(target.clone()));
        match self.job_phase() {
            Some(JobPhase::Running) => {
                self.set_phase(Phase::Running);
                self.status.parallelism = Some(target.spec.parallelism);
                self.status.replicas = Some(target.spec.parallelism);
                if self.status.stable.as_ref().map(|s| &s.hash) != Some(&target.hash) {
                    self.status.stable = Some(target.clone());
                }
                if self
                    .status
                    .error
                    .as_ref()
                    .is_some_and(|e| !e.context.contains_key("specHash"))
                {
                    self.status.error = None;
                }
            }
            Some(JobPhase::Restarting) => self.set_phase(Phase::Restarting),
            Some(JobPhase::Failed) => {
                let why = self
                    .i
                    .observed
                    .job
                    .as_ref()
                    .map(|j| {
                        j.errors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default();
                if self.status.phase != Some(Phase::Failed) {
                    self.warn("JobFailed", format!("the job failed for good: {why}"));
                }
                self.set_phase(Phase::Failed);
                self.fail("JobFailed", why, None);
            }
            Some(JobPhase::Finished) => {
                // Bounded input ran out: the job is done, and stays so.
                self.set_phase(Phase::Running);
            }
            Some(JobPhase::Starting | JobPhase::Stopping) | None => {}
        }
    }

    fn begin_deploy(&mut self, kind: OperationKind, revision: SpecRevision) {
        self.note(
            match kind {
                OperationKind::Resume => "Resuming",
                OperationKind::Rollback => "RollingBack",
                _ => "Deploying",
            },
            format!(
                "deploying spec {} at parallelism {}{}",
                revision.hash,
                revision.spec.parallelism,
                revision
                    .restore_from
                    .as_deref()
                    .map(|r| format!(" from {r}"))
                    .unwrap_or_default()
            ),
        );
        let mut op = self.start(kind, steps::DEPLOYING);
        op.savepoint = revision.restore_from.clone();
        self.status.operation = Some(op);
        self.status.target = Some(revision.clone());
        self.set_phase(deploying_phase(kind));
        // The pods come with the next look, once those of the previous run are gone.
        self.requeue = Duration::from_secs(1);
    }

    fn savepoint_dir(&self, op: &Operation) -> Option<String> {
        let target = self.status.target.as_ref()?;
        let root = Storage::of(self.i.job, &target.spec, None).savepoints?;
        Some(format!("{root}/{}", compact(&op.started_at)))
    }

    fn begin_upgrade(&mut self) {
        let spec = self.i.spec;
        self.note(
            "Upgrading",
            format!("spec changed; upgrading with mode {:?}", spec.upgrade_mode),
        );
        match spec.upgrade_mode {
            UpgradeMode::Savepoint if self.can_savepoint() => {
                let mut op = self.start(OperationKind::Upgrade, steps::PREFLIGHT_SAVEPOINT);
                self.set_phase(Phase::Upgrading);
                self.request_savepoint(&mut op, false);
                self.status.operation = Some(op);
            }
            UpgradeMode::LastState if self.status.last_checkpoint.is_some() => {
                self.start(OperationKind::Upgrade, steps::STOPPING);
                self.set_phase(Phase::Upgrading);
                self.actions.push(Action::Cancel);
            }
            mode => {
                // Stateless, or nothing running to take a savepoint of: the newest snapshot
                // the status knows, unless the mode drops state.
                let from = (mode != UpgradeMode::Stateless)
                    .then(|| self.fallback_restore())
                    .flatten();
                self.set_phase(Phase::Upgrading);
                self.actions.push(Action::RemovePods);
                let revision = self.new_revision(spec, from);
                self.begin_deploy(OperationKind::Upgrade, revision);
            }
        }
    }

    fn can_savepoint(&self) -> bool {
        self.job_phase() == Some(JobPhase::Running)
            && self
                .status
                .target
                .as_ref()
                .is_some_and(|t| Storage::of(self.i.job, &t.spec, None).savepoints.is_some())
    }

    fn begin_stop(&mut self, kind: OperationKind) {
        let mut op = self.start(kind, steps::STOPPING);
        self.set_phase(match kind {
            OperationKind::Suspend => Phase::Suspending,
            OperationKind::Rescale => Phase::Rescaling,
            OperationKind::Delete => Phase::Deleting,
            _ => Phase::Upgrading,
        });
        if self.can_savepoint() {
            self.request_savepoint(&mut op, true);
            self.status.operation = Some(op);
        } else {
            // Nothing running to take a savepoint of (or nowhere to put it): the next run
            // starts from the last savepoint or checkpoint the status knows.
            op.savepoint = self.fallback_restore();
            self.redeploy(op);
        }
    }

    /// Where the next run starts when no savepoint of the running one is taken: the replaced
    /// run's checkpoint storage, which the new coordinator resolves to its newest checkpoint.
    /// The status may lag behind that checkpoint, and the sinks may have committed its
    /// output already: starting from the older one would write that output twice.
    fn fallback_restore(&self) -> Option<String> {
        let last = self.status.last_checkpoint.as_ref();
        let run_storage = self
            .status
            .target
            .as_ref()
            .and_then(|t| Storage::of(self.i.job, &t.spec, t.run.as_deref()).checkpoints)
            .filter(|s| last.is_some_and(|c| c.path.starts_with(&format!("{s}/"))));
        run_storage
            .or_else(|| last.map(|c| c.path.clone()))
            .or_else(|| {
                self.status
                    .last_savepoint
                    .as_ref()
                    .and_then(|s| s.path.clone())
            })
            .or_else(|| {
                self.status
                    .target
                    .as_ref()
                    .and_then(|t| t.restore_from.clone())
            })
    }

    fn begin_savepoint(&mut self, trigger: SavepointTrigger, nonce: Option<i64>) {
        if !self.can_savepoint() {
            self.warn(
                "SavepointSkipped",
                "no savepoint: the job is not running or has no savepoint storage",
            );
            return;
        }
        let mut op = self.start(OperationKind::Savepoint, steps::SAVEPOINT);
        op.details.insert("trigger".into(), format!("{trigger:?}"));
        if let Some(n) = nonce {
            op.details.insert("nonce".into(), n.to_string());
        }
        self.request_savepoint(&mut op, false);
        self.status.operation = Some(op);
    }

    fn request_savepoint(&mut self, op: &mut Operation, stop: bool) {
        let Some(dir) = self.savepoint_dir(op) else {
            return;
        };
        op.details.insert(TARGET_DIR.into(), dir.clone());
        op.details.insert(REQUESTED_AT.into(), self.now());
        op.details.remove(SAVEPOINT_ID);
        op.attempts += 1;
        self.actions.push(Action::Savepoint { target: dir, stop });
        self.requeue = Duration::from_secs(2);
    }

    /// Where the operation's savepoint request stands.
    fn savepoint_outcome(&self, op: &Operation) -> SavepointOutcome {
        let dir = op.details.get(TARGET_DIR).cloned().unwrap_or_default();
        if let Some(s) = &self.i.observed.savepoint {
            match s.status {
                RequestState::Completed => {
                    if let Some(l) = &s.location {
                        return SavepointOutcome::Done(l.clone());
                    }
                }
                RequestState::Failed => {
                    return SavepointOutcome::Failed(s.error.clone().unwrap_or_default())
                }
                RequestState::InProgress => return SavepointOutcome::Pending,
            }
        }
        // The id was lost (the operator stopped before recording it, or the coordinator
        // restarted): the savepoint is recognised by the operation's own directory.
        if let Some(last) = self
            .i
            .observed
            .job
            .as_ref()
            .and_then(|j| j.checkpoints.last_completed.as_ref())
        {
            if last.kind == SnapshotKind::Savepoint
                && !dir.is_empty()
                && last.location.starts_with(&dir)
            {
                return SavepointOutcome::Done(last.location.clone());
            }
        }
        // A request of the last half minute may not show yet: the status this reconcile
        // read can predate the write that recorded its id.
        let recent = op
            .details
            .get(REQUESTED_AT)
            .and_then(|t| parse_time(t))
            .is_some_and(|t| self.i.now < t + SAVEPOINT_GRACE);
        match self.job_phase() {
            Some(JobPhase::Running) if !recent => {
                if op.attempts >= SAVEPOINT_ATTEMPTS {
                    SavepointOutcome::Failed(format!("no savepoint after {} requests", op.attempts))
                } else {
                    SavepointOutcome::AskAgain
                }
            }
            Some(JobPhase::Running | JobPhase::Stopping | JobPhase::Starting) => {
                SavepointOutcome::Pending
            }
            Some(phase @ (JobPhase::Finished | JobPhase::Failed | JobPhase::Restarting)) => {
                SavepointOutcome::Failed(format!("the job is {phase}"))
            }
            None => SavepointOutcome::Pending,
        }
    }

    fn record_savepoint(&mut self, op: &Operation, location: &str, trigger: SavepointTrigger) {
        let info = SavepointInfo {
            path: Some(location.to_string()),
            trigger,
            state: SavepointState::Completed,
            nonce: op.details.get("nonce").and_then(|n| n.parse().ok()),
            spec_hash: self.status.target.as_ref().map(|t| t.hash.clone()),
            triggered_at: Some(op.started_at.clone()),
            completed_at: Some(self.now()),
            error: None,
        };
        if let Some(asked) = op.details.get(REQUESTED_AT).and_then(|t| parse_time(t)) {
            let took = self.i.now.duration_since(asked).unwrap_or_default();
            self.timings.push(Timing::Savepoint(took));
        }
        if !self.status.savepoints.iter().any(|s| s.path == info.path) {
            self.status.savepoints.push(info.clone());
            self.note(
                "SavepointCompleted",
                format!("{trigger:?} savepoint {location}"),
            );
        }
        self.status.last_savepoint = Some(info);
        self.status.set_condition(condition(
            condition_types::SAVEPOINT,
            ConditionStatus::True,
            "Completed",
            location,
            self.i.generation,
            &self.now(),
        ));
        self.apply_retention();
    }

    /// Forgets savepoints beyond `retention`, oldest first, never the newest nor one a
    /// revision starts from (a restore or a rollback may need it).
    fn apply_retention(&mut self) {
        let retention = &self.i.spec.savepoints.retention;
        let needed: Vec<Option<String>> = [&self.status.target, &self.status.stable]
            .into_iter()
            .flatten()
            .map(|r| r.restore_from.clone())
            .chain([self
                .status
                .last_savepoint
                .as_ref()
                .and_then(|s| s.path.clone())])
            .collect();
        let max_age = retention.max_age.as_ref().and_then(|d| d.to_std());
        let now = self.i.now;
        let mut keep_budget = retention.max_count.max(1) as usize;
        let mut kept = Vec::new();
        for s in self.status.savepoints.iter().rev() {
            let is_needed = needed.contains(&s.path);
            let too_old = max_age.is_some_and(|age| {
                s.completed_at
                    .as_deref()
                    .and_then(parse_time)
                    .is_some_and(|t| now >= t + age)
            });
            if is_needed || (keep_budget > 0 && !too_old) {
                kept.push(s.clone());
                keep_budget = keep_budget.saturating_sub(1);
            } else if let Some(path) = &s.path {
                if !self.status.retired_savepoints.contains(path) {
                    self.status.retired_savepoints.push(path.clone());
                }
            }
        }
        kept.reverse();
        self.status.savepoints = kept;
    }

    /// Deletes the files of the savepoints retention dropped, one Job at a time. A Job that
    /// failed is not retried: its savepoints are named in a warning and left to the user.
    fn delete_retired_savepoints(&mut self) {
        let (savepoints, failure) = match &self.i.observed.cleanup {
            Cleanup::Running => return,
            Cleanup::Absent => {
                if !self.status.retired_savepoints.is_empty() {
                    let spec = self.status.target.as_ref().map_or(self.i.spec, |t| &t.spec);
                    self.actions.push(Action::DeleteSavepoints {
                        spec: Box::new(spec.clone()),
                        savepoints: self.status.retired_savepoints.clone(),
                    });
                }
                return;
            }
            Cleanup::Succeeded(savepoints) => (savepoints, None),
            Cleanup::Failed { savepoints, report } => (savepoints, Some(report)),
        };
        self.actions.push(Action::RemoveCleanup);
        let before = self.status.retired_savepoints.len();
        self.status
            .retired_savepoints
            .retain(|s| !savepoints.contains(s));
        // The Job is seen again until its deletion shows: one event, not one per reconcile.
        if self.status.retired_savepoints.len() == before {
            return;
        }
        let list = savepoints.join(", ");
        match failure {
            None => self.note("SavepointsDeleted", list),
            Some(report) => self.warn(
                "SavepointDeleteFailed",
                format!("{report}; left in storage: {list}"),
            ),
        }
    }

    fn continue_operation(&mut self, mut op: Operation) {
        self.requeue = Duration::from_secs(2);
        match op.step.as_str() {
            steps::SAVEPOINT => self.continue_savepoint(op),
            steps::PREFLIGHT_SAVEPOINT => match self.savepoint_outcome(&op) {
                SavepointOutcome::Done(location) => {
                    self.record_savepoint(&op, &location, SavepointTrigger::Upgrade);
                    op.step = steps::PREFLIGHT_CHECK.into();
                    op.savepoint = Some(location.clone());
                    let revision = self.new_revision(self.i.spec, Some(location.clone()));
                    self.actions.push(Action::Preflight {
                        revision,
                        savepoint: location,
                    });
                    self.status.operation = Some(op);
                }
                SavepointOutcome::AskAgain => {
                    self.request_savepoint(&mut op, false);
                    self.status.operation = Some(op);
                }
                SavepointOutcome::Pending => {}
                SavepointOutcome::Failed(why) => {
                    self.abort(
                        "SavepointFailed",
                        format!("the pre-flight savepoint failed: {why}"),
                    );
                }
            },
            steps::PREFLIGHT_CHECK => match &self.i.observed.preflight {
                Preflight::Passed => {
                    self.note(
                        "PreflightPassed",
                        "the new spec can restore the job's state",
                    );
                    self.actions.push(Action::RemovePreflight);
                    op.step = steps::STOPPING.into();
                    self.request_savepoint(&mut op, true);
                    self.status.operation = Some(op);
                }
                Preflight::Failed(why) => {
                    self.actions.push(Action::RemovePreflight);
                    let savepoint = op.savepoint.clone().unwrap_or_default();
                    self.abort("UpgradeRefused",
                        format!("the new spec cannot restore savepoint {savepoint}: {why}; the job keeps running its current spec"),
                    );
                }
                Preflight::Absent => {
                    // Lost (deleted by hand, or never created): create it again.
                    if let Some(savepoint) = op.savepoint.clone() {
                        let revision = self.new_revision(self.i.spec, Some(savepoint.clone()));
                        self.actions.push(Action::Preflight {
                            revision,
                            savepoint,
                        });
                    }
                }
                Preflight::Running => {}
            },
            steps::STOPPING => self.continue_stopping(op),
            steps::DEPLOYING => self.continue_deploying(op),
            other => {
                self.warn(
                    "UnknownStep",
                    format!("unknown step {other:?}; starting over"),
                );
                self.finish_operation();
            }
        }
    }

    fn continue_savepoint(&mut self, mut op: Operation) {
        let trigger = match op.details.get("trigger").map(String::as_str) {
            Some("Periodic") => SavepointTrigger::Periodic,
            _ => SavepointTrigger::Manual,
        };
        match self.savepoint_outcome(&op) {
            SavepointOutcome::Done(location) => {
                self.record_savepoint(&op, &location, trigger);
                self.finish_operation();
                if let Some(t) = self.status.target.clone() {
                    self.watch_running(&t);
                }
            }
            SavepointOutcome::AskAgain => {
                self.request_savepoint(&mut op, false);
                self.status.operation = Some(op);
            }
            SavepointOutcome::Pending => {
                if let Some(t) = self.status.target.clone() {
                    self.actions.push(Action::Deploy(t));
                }
            }
            SavepointOutcome::Failed(why) => {
                self.warn(
                    "SavepointFailed",
                    format!("{trigger:?} savepoint failed: {why}"),
                );
                self.status.set_condition(condition(
                    condition_types::SAVEPOINT,
                    ConditionStatus::False,
                    "Failed",
                    &why,
                    self.i.generation,
                    &self.now(),
                ));
                self.finish_operation();
            }
        }
    }

    fn continue_stopping(&mut self, mut op: Operation) {
        if op.kind == OperationKind::Upgrade && self.i.spec.upgrade_mode == UpgradeMode::LastState {
            // Cancelled: start from the newest checkpoint once the old job is gone.
            match self.job_phase() {
                Some(JobPhase::Running | JobPhase::Stopping) => {
                    if self.job_phase() == Some(JobPhase::Running) {
                        self.actions.push(Action::Cancel);
                    }
                }
                _ => {
                    op.savepoint = self.fallback_restore();
                    self.redeploy(op);
                }
            }
            return;
        }
        match self.savepoint_outcome(&op) {
            SavepointOutcome::Done(location) => {
                let trigger = match op.kind {
                    OperationKind::Suspend => SavepointTrigger::Suspend,
                    OperationKind::Delete => SavepointTrigger::Delete,
                    _ => SavepointTrigger::Upgrade,
                };
                self.record_savepoint(&op, &location, trigger);
                op.savepoint = Some(location);
                self.redeploy(op);
            }
            SavepointOutcome::AskAgain => {
                self.request_savepoint(&mut op, true);
                self.status.operation = Some(op);
            }
            SavepointOutcome::Pending => {}
            SavepointOutcome::Failed(why) => {
                self.abort(
                    "SavepointFailed",
                    format!("stop with a savepoint failed: {why}"),
                );
            }
        }
    }

    /// The old job stopped at `op.savepoint`: remove its pods, then start what comes next.
    fn redeploy(&mut self, op: Operation) {
        self.actions.push(Action::RemovePods);
        match op.kind {
            OperationKind::Suspend => {
                self.note("Suspended", "stopped with a savepoint; pods removed");
                self.finish_operation();
                self.set_phase(Phase::Suspended);
                self.status.parallelism = Some(0);
            }
            OperationKind::Delete => {
                self.note("FinalSavepoint", "stopped with a final savepoint");
                self.finish_operation();
                self.actions.push(Action::ReleaseFinalizer);
            }
            kind => {
                let revision = self.new_revision(self.i.spec, op.savepoint.clone());
                // The readiness timeout counts from here: the savepoint and the stop before
                // are not the new revision's time to start. The operation's own start is kept
                // for its duration.
                let since = op.details.get(SINCE).cloned().unwrap_or(op.started_at);
                self.begin_deploy(kind, revision);
                if let Some(o) = self.status.operation.as_mut() {
                    o.details.insert(SINCE.into(), since);
                }
            }
        }
    }

    fn continue_deploying(&mut self, op: Operation) {
        let Some(target) = self.status.target.clone() else {
            self.finish_operation();
            return;
        };
        if self.stale_pods() {
            // Two coordinators of one job must never run at once.
            self.actions.push(Action::RemovePods);
            return;
        }
        self.actions.push(Action::Deploy(target.clone()));
        // A bounded job may reach the end of its input between two looks.
        if matches!(
            self.job_phase(),
            Some(JobPhase::Running | JobPhase::Finished)
        ) {
            let since = op.details.get(SINCE).unwrap_or(&op.started_at);
            if let Some(t) = parse_time(since) {
                let took = self.i.now.duration_since(t).unwrap_or_default();
                self.timings.push(Timing::Operation(op.kind, took));
            }
            self.note(
                "Running",
                format!(
                    "spec {} runs at parallelism {}",
                    target.hash, target.spec.parallelism
                ),
            );
            self.finish_operation();
            if op.kind == OperationKind::Rollback {
                self.set_phase(Phase::Running);
                self.status.parallelism = Some(target.spec.parallelism);
                self.status.replicas = Some(target.spec.parallelism);
                return;
            }
            self.watch_running(&target);
            return;
        }
        self.set_phase(deploying_phase(op.kind));
        let rollback = &self.i.spec.rollback;
        let timeout = rollback.readiness_timeout.as_ref().and_then(|d| d.to_std());
        let overdue = timeout.is_some_and(|t| {
            parse_time(&op.started_at).is_some_and(|started| self.i.now >= started + t)
        });
        let stable = self.status.stable.clone().filter(|s| s.hash != target.hash);
        if let (true, true, Some(stable)) = (rollback.enabled, overdue, stable) {
            if op.kind != OperationKind::Rollback {
                let why = self
                    .i
                    .observed
                    .crash
                    .clone()
                    .or_else(|| self.i.observed.unreachable.clone())
                    .unwrap_or_else(|| "the job did not start".into());
                self.warn(
                    "RollingBack",
                    format!(
                        "spec {} not running after {}: {why}; rolling back to spec {}",
                        target.hash,
                        rollback
                            .readiness_timeout
                            .as_ref()
                            .map(|d| d.as_str())
                            .unwrap_or(""),
                        stable.hash
                    ),
                );
                self.fail("RolledBack", why, Some(&target.hash));
                let mut revision = stable;
                revision.run = Some(run_name(self.i.now));
                revision.restore_from = op.savepoint.clone().or(revision.restore_from);
                self.actions.push(Action::RemovePods);
                self.begin_deploy(OperationKind::Rollback, revision);
                return;
            }
        }
        if let Some(crash) = self.i.observed.crash.clone() {
            self.status.set_condition(condition(
                condition_types::DEGRADED,
                ConditionStatus::True,
                "PodsFailing",
                &crash,
                self.i.generation,
                &self.now(),
            ));
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

    fn delete(&mut self) {
        if let Some(op) = self
            .status
            .operation
            .clone()
            .filter(|o| o.kind == OperationKind::Delete)
        {
            self.continue_stopping(op);
            return;
        }
        let wants_savepoint = self.i.spec.savepoints.on_delete == OnDelete::Savepoint;
        if wants_savepoint && self.can_savepoint() {
            self.note("Deleting", "taking a final savepoint before the job goes");
            self.begin_stop(OperationKind::Delete);
        } else {
            self.set_phase(Phase::Deleting);
            self.actions.push(Action::ReleaseFinalizer);
        }
    }

    fn conditions(&mut self) {
        let now = self.now();
        let generation = self.i.generation;
        let phase = self.status.phase;
        let op = self.status.operation.clone();
        let ready = phase == Some(Phase::Running) && op.is_none();
        let (ready_reason, ready_message) = if ready {
            ("Running", "the job runs its spec".to_string())
        } else {
            (
                "NotRunning",
                format!(
                    "phase {}",
                    phase.map(|p| format!("{p:?}")).unwrap_or("Pending".into())
                ),
            )
        };
        self.status.set_condition(condition(
            condition_types::READY,
            if ready {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            ready_reason,
            &ready_message,
            generation,
            &now,
        ));
        let waiting = self
            .i
            .observed
            .unreachable
            .as_deref()
            .map(|why| format!("; the coordinator does not answer: {why}"))
            .unwrap_or_default();
        let (progressing, reason, message) = match &op {
            Some(o) => (
                true,
                format!("{:?}", o.kind),
                format!("step {}{waiting}", o.step),
            ),
            None => (false, "Idle".to_string(), String::new()),
        };
        self.status.set_condition(condition(
            condition_types::PROGRESSING,
            if progressing {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            &reason,
            &message,
            generation,
            &now,
        ));
        let degraded = self.status.error.clone();
        let already = self
            .status
            .condition(condition_types::DEGRADED)
            .is_some_and(|c| c.reason == "PodsFailing" && c.status == ConditionStatus::True);
        if !(already && degraded.is_none() && op.is_some()) {
            self.status.set_condition(match degraded {
                Some(e) => condition(
                    condition_types::DEGRADED,
                    ConditionStatus::True,
                    &e.reason,
                    &e.message,
                    generation,
                    &now,
                ),
                None => condition(
                    condition_types::DEGRADED,
                    ConditionStatus::False,
                    "Healthy",
                    "",
                    generation,
                    &now,
                ),
            });
        }
        self.status.observed_generation = generation;
    }
}

enum SavepointOutcome {
    Done(String),
    Pending,
    AskAgain,
    Failed(String),
}

fn condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &str,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.chars().take(1024).collect(),
        last_transition_time: now.to_string(),
        observed_generation: generation,
    }
}

/// The phase shown while an operation's new pods start.
fn deploying_phase(kind: OperationKind) -> Phase {
    match kind {
        OperationKind::Rollback => Phase::RollingBack,
        OperationKind::Rescale => Phase::Rescaling,
        OperationKind::Upgrade => Phase::Upgrading,
        _ => Phase::Deploying,
    }
}

/// The fingerprint of what the pods run: a change of anything else is applied without a
/// restart.
fn pods_fingerprint(spec: &StreamJobSpec) -> String {
    let mut pods = spec.clone();
    pods.savepoints = Default::default();
    pods.rollback = Default::default();
    pods.state = Default::default();
    pods.priority = None;
    pods.fingerprint()
}

fn only_parallelism_differs(old: &StreamJobSpec, new: &StreamJobSpec) -> bool {
    let mut same = old.clone();
    same.parallelism = new.parallelism;
    same == *new && old.parallelism != new.parallelism
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

//! The lifecycle state machine (`plan`), step by step, from a spec fixture and the status the
//! previous step wrote: every transition a StreamJob goes through, without a cluster.

use sluice_crds::control::{
    self as api, CheckpointSummary, JobStatus, RestartStatus, SavepointStatus, SnapshotInfo,
    SnapshotKind,
};
use sluice_crds::{
    condition_types, ConditionStatus, OperationKind, Phase, SavepointState, StreamJobManifest,
    StreamJobSpec, StreamJobStatus,
};
use sluice_operator::admission::Decision;
use sluice_operator::build::JobRef;
use sluice_operator::plan::{parse_time, timestamp};
use sluice_operator::plan::{
    plan, Action, Cleanup, Inputs, Observed, Plan, PodFailure, Preflight, Timing,
};
use sluice_operator::ratelimit::{RestartPermit, TokenBucket, Unlimited};
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

fn fixture(name: &str) -> StreamJobSpec {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    // Straight into the type, without the manifest checks: the operator must cope with
    // whatever the API server let in.
    let manifest: StreamJobManifest = serde_yaml::from_str(&text).unwrap();
    manifest.spec
}

fn job() -> JobRef {
    JobRef {
        namespace: "risk".into(),
        name: "fraud".into(),
        uid: "uid-1".into(),
    }
}

/// 2026-11-27T10:00:00Z plus `secs`.
fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_773_600 + secs)
}

struct World {
    spec: StreamJobSpec,
    generation: i64,
    status: StreamJobStatus,
    now: SystemTime,
    permit: Box<dyn RestartPermit>,
    admission: Option<Decision>,
}

impl World {
    fn new(spec: StreamJobSpec) -> Self {
        World {
            spec,
            generation: 1,
            status: StreamJobStatus::default(),
            now: at(0),
            permit: Box::new(Unlimited),
            admission: None,
        }
    }

    /// One reconcile: the plan for what is observed, whose status becomes the next input.
    fn step(&mut self, observed: &Observed) -> Plan {
        self.step_deleting(observed, false)
    }

    fn step_deleting(&mut self, observed: &Observed, deleting: bool) -> Plan {
        let p = plan(&Inputs {
            job: &job(),
            spec: &self.spec,
            generation: Some(self.generation),
            deleting,
            status: &self.status,
            observed,
            now: self.now,
            restart_permit: self.permit.as_ref(),
            admission: self.admission.as_ref(),
        });
        // The status is the operator's write-ahead log: what one step writes, the next reads
        // back from the API server.
        let written = serde_json::to_value(&p.status).unwrap();
        self.status = serde_json::from_value(written).unwrap();
        assert_eq!(self.status, p.status);
        self.now += Duration::from_secs(2);
        p
    }

    fn change(&mut self, edit: impl FnOnce(&mut StreamJobSpec)) {
        edit(&mut self.spec);
        self.generation += 1;
    }

    fn run(&self) -> String {
        self.status.target.as_ref().unwrap().run.clone().unwrap()
    }

    /// The targeted run's pods are there, but its coordinator does not answer.
    fn unreachable(&self, why: &str) -> Observed {
        Observed {
            unreachable: Some(why.into()),
            pod_runs: BTreeSet::from([self.run()]),
            ..Observed::default()
        }
    }

    /// The coordinator of the targeted run answering with `phase`.
    fn coordinator(&self, phase: api::Phase) -> Observed {
        Observed {
            job: Some(JobStatus {
                name: "fraud".into(),
                phase,
                parallelism: self.spec.parallelism,
                max_parallelism: 128,
                uptime_seconds: 1.0,
                subtasks: Vec::new(),
                checkpoints: CheckpointSummary::default(),
                restored_from: None,
                errors: Vec::new(),
                restarts: RestartStatus::default(),
                workers: Vec::new(),
                topology: Default::default(),
            }),
            pod_runs: BTreeSet::from([self.run()]),
            ..Observed::default()
        }
    }

    fn op_step(&self) -> &str {
        self.status.operation.as_ref().unwrap().step.name()
    }

    /// The directory the operation asked its savepoint into.
    fn savepoint_dir(&self) -> String {
        let op = self.status.operation.as_ref().unwrap();
        op.step
            .savepoint_request()
            .unwrap()
            .target_directory
            .clone()
    }
}

fn savepoint_done(location: &str) -> SavepointStatus {
    SavepointStatus {
        id: "1".into(),
        status: api::SavepointState::Completed,
        stop: false,
        target_directory: location.rsplit_once('/').unwrap().0.into(),
        location: Some(location.into()),
        bytes: Some(1),
        duration_ms: Some(1),
        error: None,
    }
}

/// The coordinator's last completed snapshot.
fn last_completed(id: u64, kind: SnapshotKind, location: String) -> CheckpointSummary {
    CheckpointSummary {
        completed: 1,
        last_completed: Some(SnapshotInfo {
            id,
            kind,
            location,
            duration_ms: 1,
            bytes: 1,
            completed_at_ms: Some(1_795_773_600_000 + id * 1000),
            operators: Vec::new(),
        }),
        ..CheckpointSummary::default()
    }
}

fn condition(status: &StreamJobStatus, type_: &str) -> (ConditionStatus, String, String) {
    let c = status.condition(type_).unwrap();
    (c.status, c.reason.clone(), c.message.clone())
}

/// Deploys and reaches Running: the start of most tests.
fn running(spec: StreamJobSpec) -> World {
    let mut w = World::new(spec);
    w.step(&Observed::default());
    w.step(&w.coordinator(api::Phase::Running));
    w
}

#[test]
fn a_new_job_records_its_revision_before_any_pod_exists_then_runs() {
    let mut w = World::new(fixture("running-job.yaml"));
    let p = w.step(&Observed::default());
    assert_eq!(p.status.phase, Some(Phase::Deploying));
    let target = p.status.target.clone().unwrap();
    assert_eq!(target.hash, w.spec.fingerprint());
    assert!(target.run.as_deref().unwrap().starts_with("run-"));
    assert_eq!(
        p.status.operation.as_ref().unwrap().kind,
        OperationKind::Deploy
    );
    assert!(
        p.actions.is_empty(),
        "pods come on the next look: {:?}",
        p.actions
    );

    let p = w.step(&Observed::default());
    assert_eq!(p.actions, [Action::Deploy(target.clone())]);
    assert_eq!(
        condition(&p.status, condition_types::READY).0,
        ConditionStatus::False
    );

    let p = w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(p.status.phase, Some(Phase::Running));
    assert!(p.status.operation.is_none());
    assert_eq!(p.status.stable, Some(target));
    assert_eq!(p.status.replicas, Some(2));
    assert_eq!(
        p.status.selector.as_deref(),
        Some("sluice.dev/job=fraud,sluice.dev/role=worker")
    );
    assert_eq!(
        condition(&p.status, condition_types::READY),
        (
            ConditionStatus::True,
            "Running".into(),
            "the job runs its spec".into()
        )
    );
    assert_eq!(p.status.observed_generation, Some(1));
}

#[test]
fn a_config_change_is_a_savepoint_a_preflight_a_stop_and_a_start_from_the_stop() {
    let mut w = running(fixture("running-job.yaml"));
    let old_run = w.run();
    w.change(|s| s.job.config["output"] = "/data/out-v2".into());

    let p = w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(p.status.phase, Some(Phase::Upgrading));
    assert_eq!(w.op_step(), "PreflightSavepoint");
    let dir = w.savepoint_dir();
    assert!(
        dir.starts_with("file:///data/sluice/savepoints/risk/fraud/"),
        "{dir}"
    );
    assert_eq!(
        p.actions,
        [Action::Savepoint {
            target: dir.clone(),
            stop: false
        }]
    );

    let mut observed = w.coordinator(api::Phase::Running);
    observed.savepoint = Some(savepoint_done(&format!("{dir}/sp-0000000007")));
    let p = w.step(&observed);
    assert_eq!(w.op_step(), "PreflightCheck");
    let Action::Preflight {
        revision,
        savepoint,
    } = &p.actions[0]
    else {
        panic!("{:?}", p.actions)
    };
    assert_eq!(savepoint, &format!("{dir}/sp-0000000007"));
    assert_eq!(revision.spec, w.spec);

    let mut observed = w.coordinator(api::Phase::Running);
    observed.preflight = Preflight::Passed;
    let p = w.step(&observed);
    assert_eq!(w.op_step(), "Stopping");
    assert_eq!(p.actions[0], Action::RemovePreflight);
    assert!(matches!(
        &p.actions[1],
        Action::Savepoint { stop: true, .. }
    ));
    let stop_dir = w.savepoint_dir();

    let mut observed = w.coordinator(api::Phase::Finished);
    observed.savepoint = Some(savepoint_done(&format!("{stop_dir}/sp-0000000009")));
    let p = w.step(&observed);
    assert_eq!(p.actions, [Action::RemovePods]);
    let target = p.status.target.clone().unwrap();
    assert_eq!(target.spec, w.spec);
    assert_eq!(
        target.restore_from,
        Some(format!("{stop_dir}/sp-0000000009"))
    );
    assert_ne!(target.run.as_deref(), Some(old_run.as_str()));
    assert_eq!(w.op_step(), "Deploying");

    // The old pods are still terminating: no new pods next to them.
    let mut old = w.coordinator(api::Phase::Finished);
    old.pod_runs = BTreeSet::from([old_run]);
    let p = w.step(&old);
    assert_eq!(p.actions, [Action::RemovePods]);
    assert_eq!(p.status.phase, Some(Phase::Upgrading));

    let p = w.step(&Observed::default());
    assert_eq!(p.actions, [Action::Deploy(target.clone())]);
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(p.status.phase, Some(Phase::Running));
    assert_eq!(p.status.stable, Some(target));
    // Timed from the spec change, not from the new pods.
    let Some(Timing::Operation(OperationKind::Upgrade, took)) = p.timings.first() else {
        panic!("{:?}", p.timings)
    };
    assert_eq!(
        *took,
        Duration::from_secs(6 * 2),
        "six looks, two seconds apart"
    );
    let kept: Vec<_> = p.status.savepoints.iter().map(|s| s.state).collect();
    assert_eq!(kept, [SavepointState::Completed, SavepointState::Completed]);
}

#[test]
fn an_upgrade_the_new_image_cannot_restore_is_refused_once_and_the_old_job_keeps_running() {
    let mut w = running(fixture("running-job.yaml"));
    let old = w.status.target.clone().unwrap();
    w.change(|s| s.job.name = "fraud-detection-v2".into());
    w.step(&w.coordinator(api::Phase::Running));
    let dir = w.savepoint_dir();
    let mut observed = w.coordinator(api::Phase::Running);
    observed.savepoint = Some(savepoint_done(&format!("{dir}/sp-0000000003")));
    w.step(&observed);

    let mut observed = w.coordinator(api::Phase::Running);
    observed.preflight = Preflight::Failed("operator 'rules' has state the job lacks".into());
    let p = w.step(&observed);
    assert_eq!(p.status.phase, Some(Phase::Running));
    assert!(p.status.operation.is_none());
    assert_eq!(p.status.target, Some(old), "the old spec still runs");
    let (status, reason, message) = condition(&p.status, condition_types::DEGRADED);
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::True, "UpgradeRefused")
    );
    assert!(
        message.contains("operator 'rules' has state the job lacks"),
        "{message}"
    );
    assert!(p
        .notes
        .iter()
        .any(|n| n.warning && n.reason == "UpgradeRefused"));
    assert!(p.actions.contains(&Action::RemovePreflight));

    // Not tried again until the spec changes.
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert!(p.status.operation.is_none());
    w.change(|s| s.job.name = "fraud-detection".into());
    w.change(|s| s.parallelism = 3);
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(p.status.phase, Some(Phase::Rescaling));
}

#[test]
fn an_operator_restarted_after_asking_for_the_stop_finds_the_savepoint_by_its_directory() {
    let mut w = running(fixture("running-job.yaml"));
    w.change(|s| s.parallelism = 4);
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(p.status.phase, Some(Phase::Rescaling));
    let dir = w.savepoint_dir();
    // The savepoint id was never recorded; the coordinator has stopped since.
    let mut observed = w.coordinator(api::Phase::Finished);
    observed.job.as_mut().unwrap().checkpoints =
        last_completed(12, SnapshotKind::Savepoint, format!("{dir}/sp-0000000012"));
    let p = w.step(&observed);
    let target = p.status.target.clone().unwrap();
    assert_eq!(target.spec.parallelism, 4);
    assert_eq!(target.restore_from, Some(format!("{dir}/sp-0000000012")));
}

#[test]
fn a_stop_request_not_seen_within_the_grace_period_is_asked_again() {
    let mut w = running(fixture("running-job.yaml"));
    w.change(|s| s.parallelism = 3);
    w.step(&w.coordinator(api::Phase::Running));
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert!(p
        .actions
        .iter()
        .all(|a| !matches!(a, Action::Savepoint { .. })));
    w.now += Duration::from_secs(31);
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert!(matches!(p.actions[0], Action::Savepoint { stop: true, .. }));
    assert_eq!(p.status.operation.as_ref().unwrap().attempts, 2);
}

#[test]
fn a_new_spec_not_running_within_the_readiness_timeout_is_rolled_back_to_the_stable_one() {
    let mut w = running(fixture("running-job.yaml"));
    let stable = w.status.stable.clone().unwrap();
    w.change(|s| s.parallelism = 3);
    w.step(&w.coordinator(api::Phase::Running));
    let dir = w.savepoint_dir();
    let mut observed = w.coordinator(api::Phase::Finished);
    observed.savepoint = Some(savepoint_done(&format!("{dir}/sp-0000000005")));
    w.step(&observed);

    let crashing = Observed {
        crash: Some("pod fraud-worker-0 container sluice: CrashLoopBackOff".into()),
        pod_runs: BTreeSet::from([w.run()]),
        ..Observed::default()
    };
    let p = w.step(&crashing);
    let (status, reason, _) = condition(&p.status, condition_types::DEGRADED);
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::True, "PodsFailing")
    );
    w.now += Duration::from_secs(121);
    let p = w.step(&crashing);
    assert_eq!(p.status.phase, Some(Phase::RollingBack));
    let target = p.status.target.clone().unwrap();
    assert_eq!(target.hash, stable.hash);
    assert_eq!(target.restore_from, Some(format!("{dir}/sp-0000000005")));
    assert!(p
        .notes
        .iter()
        .any(|n| n.reason == "RollingBack" && n.message.contains("CrashLoopBackOff")));
    assert_eq!(p.status.error.as_ref().unwrap().reason, "RolledBack");

    w.step(&Observed::default());
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(p.status.phase, Some(Phase::Running));
    // The spec that failed is not tried again by itself.
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert!(p.status.operation.is_none());
}

#[test]
fn suspending_stops_with_a_savepoint_and_removes_the_pods_and_resuming_starts_from_it() {
    let mut w = running(fixture("running-job.yaml"));
    w.change(|s| s.state = sluice_crds::DesiredState::Suspended);
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(p.status.phase, Some(Phase::Suspending));
    let dir = w.savepoint_dir();
    let mut observed = w.coordinator(api::Phase::Finished);
    observed.savepoint = Some(savepoint_done(&format!("{dir}/sp-0000000002")));
    let p = w.step(&observed);
    assert_eq!(p.status.phase, Some(Phase::Suspended));
    assert_eq!(p.actions, [Action::RemovePods]);
    assert_eq!(p.status.parallelism, Some(0));
    let saved = p.status.last_savepoint.clone().unwrap();
    assert_eq!(saved.path, Some(format!("{dir}/sp-0000000002")));

    let p = w.step(&Observed::default());
    assert!(p.actions.is_empty());
    w.change(|s| s.state = sluice_crds::DesiredState::Running);
    let p = w.step(&Observed::default());
    assert_eq!(
        p.status.operation.as_ref().unwrap().kind,
        OperationKind::Resume
    );
    assert_eq!(p.status.target.unwrap().restore_from, saved.path);
}

#[test]
fn deleting_takes_a_final_savepoint_before_letting_go_unless_the_policy_says_none() {
    let mut w = running(fixture("running-job.yaml"));
    let p = w.step_deleting(&w.coordinator(api::Phase::Running), true);
    assert_eq!(p.status.phase, Some(Phase::Deleting));
    assert!(matches!(p.actions[0], Action::Savepoint { stop: true, .. }));
    let dir = w.savepoint_dir();
    let mut observed = w.coordinator(api::Phase::Finished);
    observed.savepoint = Some(savepoint_done(&format!("{dir}/sp-0000000004")));
    let p = w.step_deleting(&observed, true);
    assert_eq!(p.actions, [Action::RemovePods, Action::ReleaseFinalizer]);

    let mut spec = fixture("running-job.yaml");
    spec.savepoints.on_delete = sluice_crds::OnDelete::None;
    let mut w = running(spec);
    let p = w.step_deleting(&w.coordinator(api::Phase::Running), true);
    assert_eq!(p.actions, [Action::ReleaseFinalizer]);
}

#[test]
fn a_spec_that_breaks_the_rules_is_reported_and_nothing_is_deployed() {
    let mut w = World::new(fixture("invalid-backoff.yaml"));
    let p = w.step(&Observed::default());
    assert!(p.actions.is_empty());
    assert_eq!(p.status.phase, Some(Phase::Failed));
    let (status, reason, message) = condition(&p.status, condition_types::DEGRADED);
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::True, "InvalidSpec")
    );
    assert!(
        message.contains("spec.restartPolicy.backoff.max"),
        "{message}"
    );
}

#[test]
fn savepoint_retention_keeps_the_newest_and_never_the_one_a_revision_restores_from() {
    let mut spec = fixture("running-job.yaml");
    spec.savepoints.retention.max_count = 1;
    let mut w = running(spec);
    for (n, nonce) in [(1, 1), (2, 2), (3, 3)] {
        w.change(|s| s.savepoints.trigger_nonce = Some(nonce));
        let p = w.step(&w.coordinator(api::Phase::Running));
        assert_eq!(
            p.status.operation.as_ref().unwrap().kind,
            OperationKind::Savepoint
        );
        let dir = w.savepoint_dir();
        let mut observed = w.coordinator(api::Phase::Running);
        observed.savepoint = Some(savepoint_done(&format!("{dir}/sp-{n}")));
        let p = w.step(&observed);
        assert!(p.status.operation.is_none());
        assert_eq!(p.status.savepoint_trigger_nonce, Some(nonce));
    }
    let kept: Vec<_> = w
        .status
        .savepoints
        .iter()
        .map(|s| s.path.clone().unwrap())
        .collect();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].ends_with("/sp-3"), "{kept:?}");
}

#[test]
fn the_files_of_savepoints_retention_dropped_are_deleted_by_one_job_at_a_time() {
    let mut spec = fixture("running-job.yaml");
    spec.savepoints.retention.max_count = 1;
    let mut w = running(spec);
    for n in 1..=3 {
        w.change(|s| s.savepoints.trigger_nonce = Some(n));
        w.step(&w.coordinator(api::Phase::Running));
        let dir = w.savepoint_dir();
        let mut observed = w.coordinator(api::Phase::Running);
        observed.savepoint = Some(savepoint_done(&format!("{dir}/sp-{n}")));
        observed.cleanup = Cleanup::Running;
        let p = w.step(&observed);
        assert!(
            !p.actions
                .iter()
                .any(|a| matches!(a, Action::DeleteSavepoints { .. })),
            "a second Job while one runs: {:?}",
            p.actions
        );
    }
    let retired = w.status.retired_savepoints.clone();
    assert_eq!(retired.len(), 2, "{retired:?}");
    assert!(retired[0].ends_with("/sp-1") && retired[1].ends_with("/sp-2"));

    // The running Job ends (it was given only the first); the next Job gets what is left.
    let mut observed = w.coordinator(api::Phase::Running);
    observed.cleanup = Cleanup::Succeeded(vec![retired[0].clone()]);
    let p = w.step(&observed);
    assert_eq!(p.status.retired_savepoints, vec![retired[1].clone()]);
    assert!(p.actions.contains(&Action::RemoveCleanup));
    assert!(p
        .notes
        .iter()
        .any(|n| n.reason == "SavepointsDeleted" && n.message == retired[0]));
    // Its deletion not showing yet is no second event.
    let p = w.step(&observed);
    assert!(p.notes.iter().all(|n| n.reason != "SavepointsDeleted"));

    observed.cleanup = Cleanup::Absent;
    let p = w.step(&observed);
    let Some(Action::DeleteSavepoints { spec, savepoints }) = p
        .actions
        .iter()
        .find(|a| matches!(a, Action::DeleteSavepoints { .. }))
    else {
        panic!("no cleanup Job: {:?}", p.actions);
    };
    assert_eq!(savepoints, &vec![retired[1].clone()]);
    assert_eq!(spec.image, w.spec.image, "the running revision's image");

    // A Job that failed for good: its savepoints are named to the user, not retried.
    observed.cleanup = Cleanup::Failed {
        savepoints: vec![retired[1].clone()],
        report: "checkpoint storage s3://b/p: access denied".into(),
    };
    let p = w.step(&observed);
    assert!(p.status.retired_savepoints.is_empty());
    let warning = p
        .notes
        .iter()
        .find(|n| n.reason == "SavepointDeleteFailed")
        .expect("a warning");
    assert!(warning.warning);
    assert!(
        warning.message.contains("access denied") && warning.message.contains(&retired[1]),
        "{}",
        warning.message
    );
}

#[test]
fn a_last_state_upgrade_cancels_and_starts_from_the_newest_checkpoint_of_the_replaced_run() {
    let mut spec = fixture("running-job.yaml");
    spec.upgrade_mode = sluice_crds::UpgradeMode::LastState;
    let mut w = running(spec);
    let run_storage = format!("file:///data/sluice/risk/fraud/{}", w.run());
    let mut observed = w.coordinator(api::Phase::Running);
    if let Some(job) = observed.job.as_mut() {
        job.checkpoints = last_completed(
            7,
            SnapshotKind::Checkpoint,
            format!("{run_storage}/chk-0000000007"),
        );
    }
    w.step(&observed);

    w.change(|s| s.job.config["output"] = "/data/out-2".into());
    let p = w.step(&observed);
    assert_eq!(w.op_step(), "Stopping");
    assert_eq!(
        p.actions,
        [Action::Cancel],
        "no savepoint in last-state mode"
    );

    // Cancelled: the replaced run's storage, which the new coordinator resolves to its
    // newest checkpoint (newer than the 7 the status saw, if one completed since).
    let p = w.step(&Observed::default());
    assert_eq!(w.op_step(), "Deploying");
    let target = p.status.target.clone().unwrap();
    assert_eq!(target.restore_from, Some(run_storage));
    assert_eq!(target.spec.job.config["output"], "/data/out-2");
}

#[test]
fn a_stateless_upgrade_starts_the_new_spec_without_state() {
    let mut spec = fixture("running-job.yaml");
    spec.upgrade_mode = sluice_crds::UpgradeMode::Stateless;
    let mut w = running(spec);
    w.change(|s| s.job.config["output"] = "/data/out-2".into());
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(p.actions.first(), Some(&Action::RemovePods));
    let target = p.status.target.clone().unwrap();
    assert_eq!(target.restore_from, None);
    assert_eq!(target.spec.job.config["output"], "/data/out-2");
}

#[test]
fn a_step_another_operator_version_wrote_is_started_over_with_a_warning() {
    let mut w = running(fixture("running-job.yaml"));
    w.status.operation = Some(
        serde_json::from_value(serde_json::json!({
            "kind": "Upgrade", "step": "Draining", "details": {"pods": "3"},
            "startedAt": "2026-11-27T10:00:00Z"
        }))
        .unwrap(),
    );
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert!(p.status.operation.is_none());
    let warning = p.notes.iter().find(|n| n.reason == "UnknownStep").unwrap();
    assert!(warning.warning);
    assert_eq!(warning.message, "unknown step \"Draining\"; starting over");
}

/// The coordinator of the targeted run gave up: its in-job restarts are exhausted.
fn failed_with_cause(w: &World) -> Observed {
    let mut observed = w.coordinator(api::Phase::Failed);
    observed.job.as_mut().unwrap().errors = vec![
        api::JobError {
            operator: Some("fraud-score".into()),
            subtask: Some(1),
            cause: "division by zero".into(),
            input: Some(api::InputPosition {
                records_in: 1234,
                ..Default::default()
            }),
            ..Default::default()
        },
        api::JobError::of_job("checkpoint storage unreachable"),
    ];
    observed
}

/// Running, with a checkpoint completed in the run's storage.
fn running_with_checkpoint(spec: StreamJobSpec) -> World {
    let mut w = running(spec);
    let mut observed = w.coordinator(api::Phase::Running);
    observed.job.as_mut().unwrap().checkpoints = last_completed(
        3,
        SnapshotKind::Checkpoint,
        format!("file:///data/sluice/risk/fraud/{}/chk-0000000003", w.run()),
    );
    w.step(&observed);
    w
}

fn restarts(w: &World) -> sluice_crds::RestartStatus {
    w.status.restarts.clone().unwrap_or_default()
}

/// A restart policy without jitter, so that the waits are exact.
fn with_restart_policy(max_restarts: Option<u32>) -> StreamJobSpec {
    let mut spec = fixture("running-job.yaml");
    spec.rollback.enabled = false;
    spec.restart_policy.backoff.initial = sluice_crds::HumanDuration::new("10s");
    spec.restart_policy.backoff.multiplier = 3.0;
    spec.restart_policy.backoff.max = sluice_crds::HumanDuration::new("60s");
    spec.restart_policy.backoff.jitter = 0.0;
    spec.restart_policy.max_restarts = max_restarts;
    spec
}

#[test]
fn a_job_that_failed_for_good_restarts_from_its_run_after_the_backoff_with_the_cause_in_status() {
    let mut w = running_with_checkpoint(with_restart_policy(Some(5)));
    let first_run = w.run();
    let failed_at = w.now;
    let p = w.step(&failed_with_cause(&w));
    assert_eq!(p.status.phase, Some(Phase::Restarting));
    assert_eq!(p.actions, [Action::RemovePods]);
    assert_eq!(w.op_step(), "Backoff");
    let warning = p.notes.iter().find(|n| n.reason == "JobFailed").unwrap();
    assert!(warning.warning);
    assert_eq!(
        warning.message,
        format!(
            "fraud-score[1] (after 1234 records): division by zero; checkpoint storage unreachable; restart 1 of 5 in 10.0s"
        )
    );
    let r = restarts(&w);
    assert_eq!(r.count, 0);
    assert_eq!(r.waiting, Some(sluice_crds::RestartWait::Backoff));
    assert_eq!(
        r.next_restart_time.as_deref(),
        Some(timestamp(failed_at + Duration::from_secs(10)).as_str())
    );
    let failure = r.last_failure.unwrap();
    assert_eq!(failure.reason, "JobFailed");
    assert_eq!(failure.operator.as_deref(), Some("fraud-score"));
    assert_eq!(failure.subtask, Some(1));
    let (ready, _, _) = condition(&p.status, condition_types::READY);
    assert_eq!(ready, ConditionStatus::False);
    let (degraded, reason, _) = condition(&p.status, condition_types::DEGRADED);
    assert_eq!(
        (degraded, reason.as_str()),
        (ConditionStatus::True, "JobFailed")
    );
    let (_, _, progressing) = condition(&p.status, condition_types::PROGRESSING);
    assert!(
        progressing.starts_with("step Backoff: restarts at "),
        "{progressing}"
    );

    // Inside the backoff nothing starts; the plan comes back when it ends.
    let p = w.step(&Observed::default());
    assert_eq!(p.actions, [Action::RemovePods]);
    assert_eq!(p.requeue, Duration::from_secs(8));

    // Over, but the old coordinator is still going away: two must never share a run.
    w.now = failed_at + Duration::from_secs(10);
    let p = w.step(&w.unreachable("terminating"));
    assert_eq!(w.op_step(), "Backoff");
    assert_eq!(p.actions, [Action::RemovePods]);

    let target_before = w.status.target.clone().unwrap();
    let p = w.step(&Observed::default());
    assert_eq!(p.status.phase, Some(Phase::Restarting));
    assert_eq!(
        p.status.operation.as_ref().unwrap().kind,
        OperationKind::Restart
    );
    // The same revision and run: its new coordinator resumes from the run's newest
    // checkpoint, which the status need not have seen.
    assert_eq!(p.status.target.as_ref(), Some(&target_before));
    assert_eq!(target_before.run.as_deref(), Some(first_run.as_str()));
    let r = restarts(&w);
    assert_eq!((r.count, r.total), (1, 1));
    assert_eq!(r.next_restart_time, None);
    assert!(p.notes.iter().any(|n| n.reason == "Restarting"));

    w.step(&Observed::default());
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(p.status.phase, Some(Phase::Running));
    assert!(p.status.operation.is_none());
    assert_eq!(p.status.error, None);
}

#[test]
fn restarts_back_off_by_the_multiplier_up_to_the_cap_then_the_job_fails_for_good() {
    let mut w = running_with_checkpoint(with_restart_policy(Some(3)));
    let first_run = w.run();
    let mut waits = Vec::new();
    for _ in 0..3 {
        let failed_at = w.now;
        w.step(&failed_with_cause(&w));
        let until = restarts(&w).next_restart_time.unwrap();
        let wait = parse_time(&until)
            .unwrap()
            .duration_since(failed_at)
            .unwrap();
        waits.push(wait.as_secs());
        w.now = failed_at + wait;
        w.step(&Observed::default());
        w.step(&Observed::default());
    }
    assert_eq!(waits, [10, 30, 60]);
    assert_eq!(restarts(&w).count, 3);

    let p = w.step(&failed_with_cause(&w));
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(p.actions, [Action::RemovePods]);
    let warning = p
        .notes
        .iter()
        .find(|n| n.reason == "RestartsExhausted")
        .unwrap();
    assert!(warning.message.starts_with("3 restart(s) without 10m of healthy running; the last failure: fraud-score[1] (after 1234 records): division by zero"), "{}", warning.message);
    assert_eq!(p.status.error.as_ref().unwrap().reason, "RestartsExhausted");
    assert!(p.status.operation.is_none());

    // It stays down: no pods, whatever is observed.
    let p = w.step(&Observed::default());
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert!(p.actions.is_empty(), "{:?}", p.actions);

    // A fixed spec comes back from where the failed run stopped, with the count afresh.
    let last_run = w.run();
    assert_eq!(last_run, first_run);
    w.change(|s| s.image = Some("sluice.local/sluice:2".into()));
    let p = w.step(&Observed::default());
    assert_eq!(p.status.phase, Some(Phase::Upgrading));
    assert_eq!(
        p.status.target.as_ref().unwrap().restore_from,
        Some(format!("file:///data/sluice/risk/fraud/{last_run}"))
    );
    assert_eq!(restarts(&w).count, 0);
}

#[test]
fn a_pod_that_cannot_run_fails_the_job_and_a_deploy_that_crash_loops_backs_off_too() {
    let mut w = running(with_restart_policy(None));
    let mut crashing = w.coordinator(api::Phase::Running);
    crashing.pod_failure = Some(PodFailure {
        pod: "fraud-worker-1".into(),
        message: "pod fraud-worker-1: container sluice CrashLoopBackOff after 2 restart(s)".into(),
    });
    let failed_at = w.now;
    let p = w.step(&crashing);
    assert_eq!(p.status.phase, Some(Phase::Restarting));
    let failure = restarts(&w).last_failure.unwrap();
    assert_eq!(failure.reason, "PodFailing");
    assert_eq!(failure.pod.as_deref(), Some("fraud-worker-1"));
    assert!(p
        .notes
        .iter()
        .any(|n| n.reason == "PodFailing" && n.warning));

    w.now = failed_at + Duration::from_secs(10);
    w.step(&Observed::default());
    assert_eq!(w.op_step(), "Deploying");
    // The new run's pods crash as well: back to a backoff, three times as long.
    let mut crashing = w.unreachable("connection refused");
    crashing.pod_failure = Some(PodFailure {
        pod: "fraud-worker-0".into(),
        message: "pod fraud-worker-0: container sluice ErrImagePull after 0 restart(s)".into(),
    });
    let again = w.now;
    w.step(&crashing);
    assert_eq!(w.op_step(), "Backoff");
    let until = parse_time(&restarts(&w).next_restart_time.unwrap()).unwrap();
    assert_eq!(
        until.duration_since(again).unwrap(),
        Duration::from_secs(30)
    );
}

#[test]
fn the_operator_wide_rate_limit_holds_a_restart_back_and_says_so() {
    let mut w = running(with_restart_policy(None));
    let bucket = TokenBucket::new(1, 1);
    // Another job took the only token.
    assert!(bucket.acquire(w.now).is_ok());
    w.permit = Box::new(bucket);
    let failed_at = w.now;
    w.step(&failed_with_cause(&w));
    w.now = failed_at + Duration::from_secs(10);
    let p = w.step(&Observed::default());
    assert_eq!(w.op_step(), "Backoff");
    let r = restarts(&w);
    assert_eq!(r.waiting, Some(sluice_crds::RestartWait::RateLimited));
    let (_, _, progressing) = condition(&p.status, condition_types::PROGRESSING);
    assert!(
        progressing.contains("the operator-wide restart rate limit holds it back"),
        "{progressing}"
    );
    // One token a minute.
    w.now = failed_at + Duration::from_secs(60);
    w.step(&Observed::default());
    assert_eq!(w.op_step(), "Deploying");
    assert_eq!(restarts(&w).waiting, None);
}

#[test]
fn a_restart_nonce_restarts_at_once_even_a_job_that_gave_up() {
    let mut w = running_with_checkpoint(with_restart_policy(Some(0)));
    w.step(&failed_with_cause(&w));
    assert_eq!(w.status.phase, Some(Phase::Failed));
    let stopped_run = w.run();
    w.change(|s| s.restart_nonce = Some(1));
    let p = w.step(&Observed::default());
    assert_eq!(p.status.phase, Some(Phase::Restarting));
    assert_eq!(p.status.restart_nonce, Some(1));
    assert!(p.notes.iter().any(|n| n.reason == "RestartRequested"));
    let p = w.step(&Observed::default());
    assert_eq!(w.op_step(), "Deploying");
    assert_eq!(w.run(), stopped_run);
    assert_eq!(p.status.phase, Some(Phase::Restarting));
    let r = restarts(&w);
    assert_eq!((r.count, r.total), (0, 1), "by hand: not a failure");
    w.step(&Observed::default());
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(p.status.phase, Some(Phase::Running));
    // Acted on once.
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert!(p.status.operation.is_none());
}

#[test]
fn a_run_healthy_for_reset_after_starts_the_count_afresh() {
    let mut w = running(with_restart_policy(Some(5)));
    let failed_at = w.now;
    w.step(&failed_with_cause(&w));
    w.now = failed_at + Duration::from_secs(10);
    w.step(&Observed::default());
    w.step(&Observed::default());
    w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(restarts(&w).count, 1);
    w.now += Duration::from_secs(9 * 60);
    w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(restarts(&w).count, 1, "not yet ten minutes");
    w.now += Duration::from_secs(60);
    w.step(&w.coordinator(api::Phase::Running));
    let r = restarts(&w);
    assert_eq!((r.count, r.total), (0, 1));
}

#[test]
fn a_suspend_during_the_backoff_stops_at_the_failed_runs_newest_checkpoint() {
    let mut w = running_with_checkpoint(with_restart_policy(None));
    let run = w.run();
    w.step(&failed_with_cause(&w));
    w.change(|s| s.state = sluice_crds::DesiredState::Suspended);
    let p = w.step(&Observed::default());
    assert_eq!(p.status.phase, Some(Phase::Suspended));
    assert_eq!(
        p.status.target.as_ref().unwrap().restore_from,
        Some(format!("file:///data/sluice/risk/fraud/{run}"))
    );
    assert_eq!(restarts(&w).next_restart_time, None);
}

// Status that never lies (and state that is not rewound): each of these failed before the
// fix it names.

#[test]
fn a_job_suspended_while_its_coordinator_is_down_resumes_from_its_newest_checkpoint() {
    let mut w = running(fixture("running-job.yaml"));
    let run_storage = format!("file:///data/sluice/risk/fraud/{}", w.run());
    let mut observed = w.coordinator(api::Phase::Running);
    observed.job.as_mut().unwrap().checkpoints = last_completed(
        9,
        SnapshotKind::Checkpoint,
        format!("{run_storage}/chk-0000000009"),
    );
    w.step(&observed);

    // The pods crash-loop: no savepoint can be taken, the suspend stops without one.
    w.change(|s| s.state = sluice_crds::DesiredState::Suspended);
    let mut crashing = w.unreachable("connection refused");
    crashing.crash = Some("pod fraud-coordinator-x: CrashLoopBackOff".into());
    let p = w.step(&crashing);
    assert_eq!(p.status.phase, Some(Phase::Suspended));

    w.change(|s| s.state = sluice_crds::DesiredState::Running);
    let p = w.step(&Observed::default());
    assert_eq!(p.status.phase, Some(Phase::Deploying));
    // The replaced run's checkpoint storage: its newest checkpoint, which the status may not
    // have seen yet, not an older savepoint (or nothing), which would rewind the state and
    // write committed output twice.
    assert_eq!(
        p.status.target.as_ref().unwrap().restore_from,
        Some(run_storage)
    );
}

#[test]
fn an_unreachable_coordinator_makes_a_running_job_not_ready_and_degraded_until_it_answers() {
    let mut w = running(fixture("running-job.yaml"));
    let p = w.step(&w.unreachable("connection refused"));
    assert_eq!(p.status.phase, Some(Phase::Running));
    let (status, reason, _) = condition(&p.status, condition_types::READY);
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::False, "CoordinatorUnreachable")
    );
    assert_eq!(
        condition(&p.status, condition_types::DEGRADED),
        (
            ConditionStatus::True,
            "CoordinatorUnreachable".into(),
            "the coordinator does not answer: connection refused".into()
        )
    );

    let p = w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(
        condition(&p.status, condition_types::READY).0,
        ConditionStatus::True
    );
    assert_eq!(condition(&p.status, condition_types::DEGRADED).1, "Healthy");
}

#[test]
fn a_crash_looping_pod_of_a_running_job_is_reported_while_no_operation_runs() {
    let mut w = running(fixture("running-job.yaml"));
    let mut observed = w.coordinator(api::Phase::Restarting);
    observed.crash = Some("pod fraud-worker-1: CrashLoopBackOff (exit code 101)".into());
    let p = w.step(&observed);
    assert_eq!(p.status.phase, Some(Phase::Restarting));
    assert_eq!(
        condition(&p.status, condition_types::READY).0,
        ConditionStatus::False
    );
    assert_eq!(
        condition(&p.status, condition_types::DEGRADED),
        (
            ConditionStatus::True,
            "PodsFailing".into(),
            "pod fraud-worker-1: CrashLoopBackOff (exit code 101)".into()
        )
    );
}

#[test]
fn a_job_whose_input_ran_out_is_finished() {
    let mut w = running(fixture("running-job.yaml"));
    let p = w.step(&w.coordinator(api::Phase::Finished));
    assert_eq!(p.status.phase, Some(Phase::Finished));
    let (status, reason, _) = condition(&p.status, condition_types::READY);
    assert_eq!(
        (status, reason.as_str()),
        (ConditionStatus::False, "Finished")
    );
    assert_eq!(condition(&p.status, condition_types::DEGRADED).1, "Healthy");
}

#[test]
fn the_status_reports_the_parallelism_that_runs_and_when_the_last_checkpoint_completed() {
    let mut w = running(fixture("running-job.yaml"));
    let mut observed = w.coordinator(api::Phase::Running);
    let job = observed.job.as_mut().unwrap();
    job.parallelism = 3;
    job.checkpoints = last_completed(4, SnapshotKind::Checkpoint, "file:///c/chk-4".into());
    let p = w.step(&observed);
    assert_eq!(p.status.parallelism, Some(3));
    assert_eq!(p.status.replicas, Some(3));
    let last = p.status.last_checkpoint.unwrap();
    assert_eq!(last.id, 4);
    assert_eq!(last.completed_at.as_deref(), Some("2026-11-27T10:00:04Z"));
}

#[test]
fn a_final_savepoint_that_fails_does_not_block_deletion() {
    let mut w = running(fixture("running-job.yaml"));
    let p = w.step_deleting(&w.coordinator(api::Phase::Running), true);
    assert!(p
        .actions
        .iter()
        .any(|a| matches!(a, Action::Savepoint { stop: true, .. })));
    let mut observed = w.coordinator(api::Phase::Running);
    observed.savepoint = Some(SavepointStatus {
        status: api::SavepointState::Failed,
        location: None,
        error: Some("savepoint storage unreachable".into()),
        ..savepoint_done("file:///x/sp-1")
    });
    let p = w.step_deleting(&observed, true);
    assert!(p.actions.contains(&Action::ReleaseFinalizer));
    let warning = p
        .notes
        .iter()
        .find(|n| n.reason == "FinalSavepointFailed")
        .unwrap();
    assert_eq!(
        warning.message,
        "the final savepoint failed: savepoint storage unreachable; deleting without it \
         (the job's checkpoints stay in storage)"
    );
}

#[test]
fn a_savepoint_asked_for_while_the_job_is_down_is_taken_once_it_runs() {
    let mut w = running(fixture("running-job.yaml"));
    w.change(|s| s.savepoints.trigger_nonce = Some(5));
    let p = w.step(&w.unreachable("connection refused"));
    assert!(p.status.operation.is_none());
    assert_eq!(p.status.savepoint_trigger_nonce, None);
    assert_eq!(
        condition(&p.status, condition_types::SAVEPOINT),
        (
            ConditionStatus::False,
            "Waiting".into(),
            "the savepoint asked for by triggerNonce 5 waits for the job to run".into()
        )
    );

    let p = w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(p.status.savepoint_trigger_nonce, Some(5));
    let op = p.status.operation.unwrap();
    assert_eq!(op.kind, OperationKind::Savepoint);
    assert!(p
        .actions
        .iter()
        .any(|a| matches!(a, Action::Savepoint { stop: false, .. })));
}

#[test]
fn a_periodic_savepoint_that_failed_is_tried_again_an_interval_later_not_at_once() {
    let mut w = running(fixture("running-job.yaml"));
    w.change(|s| s.savepoints.periodic_interval = Some(sluice_crds::HumanDuration::new("10m")));
    w.step(&w.coordinator(api::Phase::Running));
    w.now += Duration::from_secs(600);
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(
        p.status.operation.as_ref().unwrap().kind,
        OperationKind::Savepoint
    );
    let mut observed = w.coordinator(api::Phase::Running);
    observed.savepoint = Some(SavepointStatus {
        status: api::SavepointState::Failed,
        location: None,
        error: Some("disk full".into()),
        ..savepoint_done("file:///x/sp-1")
    });
    let p = w.step(&observed);
    assert!(p.status.operation.is_none());

    let p = w.step(&w.coordinator(api::Phase::Running));
    assert!(p.status.operation.is_none(), "tried again at once");
    w.now += Duration::from_secs(600);
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(
        p.status.operation.as_ref().unwrap().kind,
        OperationKind::Savepoint
    );
}

// StreamQuota: the plan's side of the admission decisions (the decisions themselves are
// tested from fixtures in `admission`).

#[test]
fn a_job_the_quota_has_no_room_for_waits_in_queued_saying_why_then_deploys_when_admitted() {
    let mut w = World::new(fixture("running-job.yaml"));
    let reason = "maxWorkers of StreamQuota team-a: needs 2, 1 of 4 free";
    w.admission = Some(Decision::Queue {
        reason: reason.into(),
    });
    let p = w.step(&Observed::default());
    assert_eq!(p.status.phase, Some(Phase::Queued));
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(
        p.status.target.is_none(),
        "nothing recorded, nothing deployed"
    );
    let (status, why, message) = condition(&p.status, condition_types::ADMITTED);
    assert_eq!(
        (status, why.as_str(), message.as_str()),
        (ConditionStatus::False, "Queued", reason)
    );
    assert_eq!(p.notes.iter().filter(|n| n.reason == "Queued").count(), 1);
    // Said once, not at every look.
    let p = w.step(&Observed::default());
    assert!(p.notes.is_empty());

    w.admission = Some(Decision::Admit);
    let p = w.step(&Observed::default());
    assert_eq!(p.status.phase, Some(Phase::Deploying));
    let (status, _, _) = condition(&p.status, condition_types::ADMITTED);
    assert_eq!(status, ConditionStatus::True);
}

#[test]
fn a_preempted_job_stops_with_a_savepoint_and_resumes_from_it_by_itself_when_admitted() {
    let mut w = running(fixture("running-job.yaml"));
    w.admission = Some(Decision::Preempt { by: "c".into() });
    let p = w.step(&w.coordinator(api::Phase::Running));
    assert_eq!(p.status.phase, Some(Phase::Suspending));
    assert_eq!(
        p.status.operation.as_ref().unwrap().kind,
        OperationKind::Preempt
    );
    assert!(
        matches!(
            p.actions[..],
            [Action::Deploy(_), Action::Savepoint { stop: true, .. }]
                | [Action::Savepoint { stop: true, .. }]
        ),
        "{:?}",
        p.actions
    );
    let warning = p.notes.iter().find(|n| n.reason == "Preempting").unwrap();
    assert!(warning.message.contains("to make room for c"));

    let dir = w.savepoint_dir();
    let mut observed = w.coordinator(api::Phase::Finished);
    observed.savepoint = Some(savepoint_done(&format!("{dir}/sp-0000000005")));
    // Still asked to make room while it stops.
    let p = w.step(&observed);
    assert_eq!(p.status.phase, Some(Phase::Preempted));
    assert_eq!(p.actions, [Action::RemovePods]);
    let saved = p.status.last_savepoint.clone().unwrap();
    assert_eq!(saved.trigger, sluice_crds::SavepointTrigger::Preemption);

    // Waiting for room, it stays Preempted and says why.
    w.admission = Some(Decision::Queue {
        reason: "maxWorkers of StreamQuota team-a: needs 2, 1 of 4 free".into(),
    });
    let p = w.step(&Observed::default());
    assert_eq!(p.status.phase, Some(Phase::Preempted));
    assert!(p.actions.is_empty());
    let (status, _, _) = condition(&p.status, condition_types::ADMITTED);
    assert_eq!(status, ConditionStatus::False);

    w.admission = Some(Decision::Admit);
    let p = w.step(&Observed::default());
    assert_eq!(
        p.status.operation.as_ref().unwrap().kind,
        OperationKind::Resume
    );
    assert_eq!(p.status.target.unwrap().restore_from, saved.path);
}

#[test]
fn a_preempted_job_its_user_suspends_stays_suspended_and_out_of_the_queue() {
    let mut w = running(fixture("running-job.yaml"));
    w.admission = Some(Decision::Preempt { by: "c".into() });
    w.step(&w.coordinator(api::Phase::Running));
    let dir = w.savepoint_dir();
    let mut observed = w.coordinator(api::Phase::Finished);
    observed.savepoint = Some(savepoint_done(&format!("{dir}/sp-0000000005")));
    w.step(&observed);
    assert_eq!(w.status.phase, Some(Phase::Preempted));
    w.change(|s| s.state = sluice_crds::DesiredState::Suspended);
    w.admission = None;
    let p = w.step(&Observed::default());
    assert_eq!(p.status.phase, Some(Phase::Suspended));
    assert!(p.actions.is_empty());
}

#[test]
fn a_fix_after_an_upgrade_that_never_ran_starts_from_the_upgrades_savepoint_not_an_older_checkpoint(
) {
    let mut w = running_with_checkpoint(with_restart_policy(Some(0)));
    w.change(|s| s.job.config["output"] = "/data/out-v2".into());
    w.step(&w.coordinator(api::Phase::Running));
    let dir = w.savepoint_dir();
    let mut observed = w.coordinator(api::Phase::Running);
    observed.savepoint = Some(savepoint_done(&format!("{dir}/sp-0000000007")));
    w.step(&observed);
    let mut observed = w.coordinator(api::Phase::Running);
    observed.preflight = Preflight::Passed;
    w.step(&observed);
    let stop_dir = w.savepoint_dir();
    let stopped_at = format!("{stop_dir}/sp-0000000009");
    let mut observed = w.coordinator(api::Phase::Finished);
    observed.savepoint = Some(savepoint_done(&stopped_at));
    w.step(&observed);
    w.step(&Observed::default());
    assert_eq!(w.op_step(), "Deploying");

    // The new revision's workers cannot start, and it has no restarts to spare.
    let mut crashing = w.unreachable("no workers");
    crashing.pod_failure = Some(PodFailure {
        pod: "fraud-worker-0".into(),
        message: "pod fraud-worker-0: container sluice CrashLoopBackOff after 2 restart(s)".into(),
    });
    let p = w.step(&crashing);
    assert_eq!(p.status.phase, Some(Phase::Failed));

    // Its output up to the stop's savepoint is committed: starting from the older checkpoint
    // of the run before would write it twice.
    w.change(|s| s.job.config["output"] = "/data/out-v3".into());
    let p = w.step(&Observed::default());
    assert_eq!(
        p.status.target.as_ref().unwrap().restore_from,
        Some(stopped_at)
    );
}

#[test]
fn a_replaced_coordinator_starting_the_job_again_makes_it_not_ready_until_it_runs() {
    let mut w = running(fixture("running-job.yaml"));
    let p = w.step(&w.coordinator(api::Phase::Starting));
    assert_eq!(p.status.phase, Some(Phase::Running));
    let (ready, reason, message) = condition(&p.status, condition_types::READY);
    assert_eq!(
        (ready, reason.as_str()),
        (ConditionStatus::False, "Recovering")
    );
    assert_eq!(
        message,
        "the coordinator reports phase starting: the job is not running"
    );
    let (degraded, _, _) = condition(&p.status, condition_types::DEGRADED);
    assert_eq!(degraded, ConditionStatus::True);
    assert_eq!(p.requeue, Duration::from_secs(2), "looks again soon");

    let p = w.step(&w.coordinator(api::Phase::Running));
    let (ready, _, _) = condition(&p.status, condition_types::READY);
    assert_eq!(ready, ConditionStatus::True);
}

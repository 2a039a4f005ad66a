//! Admission scenarios from the YAML fixtures in `tests/fixtures/admission/`, each checked
//! in several input orders; and the parts on their own.
//!
//! A fixture holds `quotas` (name → StreamQuota spec) and `steps`, each with its `jobs`
//! (name → `created`/`since` in minutes after 2026-01-01T00:00:00Z, `standing`, and the
//! spec fields that matter), the expected decision of every job, and optionally the
//! expected `queue` order, the quota `status` and `quotas` replacing the fixture's.

use super::*;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    #[serde(default)]
    quotas: BTreeMap<String, StreamQuotaSpec>,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    /// What the step shows, for failure messages.
    name: String,
    #[serde(default)]
    quotas: Option<BTreeMap<String, StreamQuotaSpec>>,
    jobs: BTreeMap<String, FixtureJob>,
    /// Job name → `admit`, `queue: <reason>` or `preempt for <job>` (Decision's Display).
    expect: BTreeMap<String, String>,
    #[serde(default)]
    queue: Option<Vec<String>>,
    #[serde(default)]
    status: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureJob {
    #[serde(default)]
    created: u64,
    standing: FixtureStanding,
    #[serde(default)]
    since: Option<u64>,
    /// StreamJob spec fields; `job` is filled in.
    #[serde(default)]
    spec: serde_yaml::Mapping,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FixtureStanding {
    Admitted,
    /// Admitted and in the middle of an operation.
    Busy,
    Leaving,
    Waiting,
    /// Waiting, suspended for a higher priority.
    Preempted,
}

/// 2026-01-01T00:00:00Z.
const FIXTURE_EPOCH_SECS: u64 = 1_767_225_600;

fn minutes(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(FIXTURE_EPOCH_SECS + n * 60)
}

fn spec(fields: &serde_yaml::Mapping) -> StreamJobSpec {
    let mut fields = fields.clone();
    fields.insert("job".into(), serde_yaml::from_str("{name: test}").unwrap());
    serde_yaml::from_value(serde_yaml::Value::Mapping(fields)).unwrap()
}

fn candidate(name: &str, job: &FixtureJob) -> Candidate {
    let spec = spec(&job.spec);
    let since = job.since.map(minutes);
    Candidate {
        name: name.into(),
        created: minutes(job.created),
        priority_class: spec.priority.clone(),
        demand: Demand::of(&spec).unwrap(),
        standing: match job.standing {
            FixtureStanding::Admitted => Standing::Admitted { busy: false },
            FixtureStanding::Busy => Standing::Admitted { busy: true },
            FixtureStanding::Leaving => Standing::Leaving,
            FixtureStanding::Waiting => Standing::Waiting {
                preempted: false,
                since,
            },
            FixtureStanding::Preempted => Standing::Waiting {
                preempted: true,
                since,
            },
        },
    }
}

/// The same list in other orders: reversed, rotated, odd positions first.
fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    let mut reversed = items.to_vec();
    reversed.reverse();
    let mut rotated = items.to_vec();
    if !rotated.is_empty() {
        rotated.rotate_left(items.len() / 2 + 1);
    }
    let interleaved = items
        .iter()
        .skip(1)
        .step_by(2)
        .chain(items.iter().step_by(2))
        .cloned()
        .collect();
    vec![reversed, rotated, interleaved]
}

fn run(file: &str) {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/fixtures/admission", file]
        .iter()
        .collect();
    let text = std::fs::read_to_string(&path).unwrap();
    let fixture: Fixture = serde_yaml::from_str(&text).unwrap();
    for step in &fixture.steps {
        let specs = step.quotas.as_ref().unwrap_or(&fixture.quotas);
        let quotas: Vec<Quota> = specs
            .iter()
            .map(|(name, spec)| Quota { name, spec })
            .collect();
        let candidates: Vec<Candidate> = step
            .jobs
            .iter()
            .map(|(name, job)| candidate(name, job))
            .collect();
        let admission = admit(&quotas, &candidates).unwrap();
        let decided: BTreeMap<String, String> = admission
            .decisions()
            .iter()
            .map(|(name, decision)| (name.clone(), decision.to_string()))
            .collect();
        assert_eq!(decided, step.expect, "{file}: {}", step.name);
        if let Some(queue) = &step.queue {
            assert_eq!(admission.queue(), queue, "{file}: {}: queue", step.name);
        }
        if let Some(expected) = &step.status {
            let status = serde_yaml::to_value(quota_status(&candidates, &admission)).unwrap();
            assert_eq!(&status, expected, "{file}: {}: status", step.name);
        }
        for (candidates, quotas) in permutations(&candidates)
            .into_iter()
            .zip(permutations(&quotas))
        {
            assert_eq!(
                admit(&quotas, &candidates).unwrap(),
                admission,
                "{file}: {}: another input order decides otherwise",
                step.name
            );
        }
    }
}

#[test]
fn a_full_quota_queues_and_a_removed_job_makes_room() {
    run("queue.yaml");
}

#[test]
fn a_higher_priority_preempts_waits_for_the_victim_and_lets_it_back_after() {
    run("preemption.yaml");
}

#[test]
fn busy_jobs_equal_priorities_and_never_classes_are_not_preempted() {
    run("no-preemption.yaml");
}

#[test]
fn a_job_must_fit_every_quota_and_its_class_limits() {
    run("several-quotas.yaml");
}

#[test]
fn cpu_and_memory_add_up_coordinator_and_worker_requests() {
    run("resources.yaml");
}

#[test]
fn without_a_quota_all_run_and_unknown_classes_or_oversized_jobs_do_not_block() {
    run("no-quota-unknown-class.yaml");
}

fn job_spec(yaml: &str) -> StreamJobSpec {
    let mut fields: serde_yaml::Mapping = serde_yaml::from_str(yaml).unwrap();
    fields.insert("job".into(), serde_yaml::from_str("{name: test}").unwrap());
    serde_yaml::from_value(serde_yaml::Value::Mapping(fields)).unwrap()
}

#[test]
fn demand_counts_workers_from_slots_and_pods_requests() {
    let spec = job_spec(
        "{parallelism: 5, slotsPerWorker: 2, \
          coordinator: {resources: {requests: {cpu: 500m, memory: 1Gi}}}, \
          worker: {resources: {requests: {cpu: 2, memory: 1.5Gi}, limits: {cpu: 4}}}}",
    );
    assert_eq!(
        Demand::of(&spec),
        Ok(Demand {
            jobs: 1,
            parallelism: 5,
            workers: 3,
            cpu_milli: 6_500,
            memory_milli: (1 << 30) * 1_000 + 3 * 1_610_612_736_000,
        })
    );
    let bare = Demand::of(&job_spec("{parallelism: 2}")).unwrap();
    assert_eq!((bare.workers, bare.cpu_milli, bare.memory_milli), (2, 0, 0));
}

#[test]
fn demand_names_the_request_that_is_not_a_quantity() {
    let spec = job_spec("{worker: {resources: {requests: {memory: 2GB}}}}");
    let err = Demand::of(&spec).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"spec.worker.resources.requests.memory: "2GB" is not a quantity such as 500m, 2 or 4Gi"#
    );
    let mut spec = job_spec("{}");
    spec.slots_per_worker = 0;
    assert_eq!(
        Demand::of(&spec).unwrap_err().to_string(),
        "spec.slotsPerWorker: 0 is below the minimum of 1"
    );
}

#[test]
fn a_quota_limit_that_is_not_a_quantity_is_an_error() {
    let spec: StreamQuotaSpec =
        serde_yaml::from_str("{priorityClasses: [{name: a, value: 1, limits: {cpu: lots}}]}")
            .unwrap();
    let err = admit(
        &[Quota {
            name: "q",
            spec: &spec,
        }],
        &[],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"StreamQuota q spec.priorityClasses[0].limits.cpu: "lots" is not a quantity such as 500m, 2 or 4Gi"#
    );
}

#[test]
fn amounts_are_written_as_users_write_them() {
    assert_eq!(format_cpu(2_000), "2");
    assert_eq!(format_cpu(1_500), "1500m");
    assert_eq!(format_cpu(0), "0");
    let gi = (1u128 << 30) * 1_000;
    assert_eq!(format_memory(gi), "1Gi");
    assert_eq!(format_memory(gi * 3 / 2), "1536Mi");
    assert_eq!(format_memory(500_000_000_000), "500M");
    assert_eq!(format_memory(1_000 * 1_000), "1k");
    assert_eq!(format_memory(1_234 * 1_000), "1234");
    assert_eq!(format_memory(1_234_567), "1234567m");
    assert_eq!(format_memory(0), "0");
}

#[test]
fn quotas_disagreeing_about_a_class_or_the_default_are_reported() {
    let a: StreamQuotaSpec = serde_yaml::from_str(
        "{priorityClasses: [{name: high, value: 100}, {name: low, value: 1}], defaultPriorityClass: low}",
    )
    .unwrap();
    let b: StreamQuotaSpec = serde_yaml::from_str(
        "{priorityClasses: [{name: high, value: 100, preemptionPolicy: Never}, {name: low, value: 1}], defaultPriorityClass: high}",
    )
    .unwrap();
    let quotas = [
        Quota {
            name: "b",
            spec: &b,
        },
        Quota {
            name: "a",
            spec: &a,
        },
    ];
    assert_eq!(
        quota_conflicts(&quotas),
        [
            r#"priority class "high" is value 100, PreemptLowerPriority in StreamQuota a but value 100, Never in StreamQuota b; a counts"#,
            r#"defaultPriorityClass is "low" in StreamQuota a but "high" in StreamQuota b; a counts"#,
        ]
    );
    assert!(quota_conflicts(&[Quota {
        name: "a",
        spec: &a
    }])
    .is_empty());
}

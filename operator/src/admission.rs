//! Admission of the StreamJobs of one namespace under its StreamQuotas: which jobs may run,
//! which wait, and which must stop (with a savepoint) to make room for a higher priority.
//! Pure: the caller lists the quotas and the jobs, and acts on the decisions.
//!
//! # What a job asks for
//!
//! [`Demand::of`] a spec: 1 job, `parallelism`, workers = ceil(parallelism / slotsPerWorker),
//! and cpu and memory = the coordinator's requests + workers × the worker's requests (a
//! missing request counts 0). Quantities are added in thousandths
//! ([`Quantity::milli_value`]), so `500m` CPU is 500 and `1Gi` is 1 073 741 824 000.
//! The caller passes the spec to count: an admitted job whose spec grows (a rescale) counts
//! its new demand at once; admission holds back waiting jobs only, never running ones.
//!
//! # Priority
//!
//! A job's class is its `spec.priority`, else the `defaultPriorityClass` of the first quota
//! (by name) that has one. The class's value and preemption policy come from the first quota
//! (by name) that defines it. A job without a class has value 0 and never preempts. A
//! waiting job naming a class that no quota defines is not admitted (its reason says so);
//! one already admitted keeps running, at value 0. Without any quota, every job is admitted.
//!
//! # Limits
//!
//! A job must fit every quota of the namespace: each quota's `limits` over all jobs, and the
//! `limits` of its own class over the jobs of that class. A job that exceeds a limit on its
//! own can never fit; it is queued with that reason but does not hold up the queue.
//!
//! # The algorithm
//!
//! 1. used = the sum over `Admitted` and `Leaving` jobs. Admitted jobs stay admitted, even
//!    over a limit lowered since: a quota change does not stop running jobs.
//! 2. Waiting jobs are taken in queue order: priority value descending, then created
//!    ascending, then name. While every job ahead was admitted, a job that fits is admitted
//!    (and counted). The first that does not fit is the head: it and every job behind it
//!    wait (strict order, so small jobs cannot starve a big high-priority one).
//! 3. The head, if its class preempts (`PreemptLowerPriority`):
//!    - if it would fit with the `Leaving` jobs gone, it waits for them: they get
//!      `Preempt { by: head }`, nobody else is chosen;
//!    - otherwise victims are taken among `Admitted { busy: false }` jobs of a strictly lower
//!      value — lowest value first, then newest, then name descending (the reverse of the
//!      queue order) — until it would fit. If it fits that way, the victims (and the Leaving
//!      jobs) get `Preempt { by: head }` and the head waits for them to stop; if not even
//!      all of them make room, nobody is preempted and the head waits for the limit.
//! 4. A `Leaving` job no waiting head needs any more gets `Admit`: it may keep running if its
//!    stop can still be called off; if not, it comes back through the queue.
//!
//! The decisions depend on nothing but the input and the same input always gives the same
//! decisions, whatever the order of the lists: each job's reconcile evaluates the namespace
//! and acts on its own decision, and they agree. Two evaluations from different views of the
//! cluster (a stale cache) may disagree for a moment; the next reconcile corrects them.

use sluice_crds::{
    PodRole, PreemptionPolicy, Quantity, QueuedJob, QuotaLimits, QuotaUsage, StreamJobSpec,
    StreamQuotaSpec, StreamQuotaStatus,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::SystemTime;

/// Why a demand or a quota could not be counted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error("{field}: {value:?} is not a quantity such as 500m, 2 or 4Gi")]
    NotAQuantity { field: String, value: String },
    #[error("{field}: {value} is below the minimum of 1")]
    BelowOne { field: String, value: u32 },
    #[error("{field}: too large to add up")]
    TooLarge { field: String },
}

/// What a job takes of a quota while admitted; also the sum of several jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    pub jobs: u64,
    pub parallelism: u64,
    pub workers: u64,
    /// Thousandths of a CPU.
    pub cpu_milli: u128,
    /// Thousandths of a byte, as [`Quantity::milli_value`] counts.
    pub memory_milli: u128,
}

impl Demand {
    /// The demand of one job with this spec.
    pub fn of(spec: &StreamJobSpec) -> Result<Demand, AdmissionError> {
        if spec.slots_per_worker == 0 {
            return Err(AdmissionError::BelowOne {
                field: "spec.slotsPerWorker".into(),
                value: 0,
            });
        }
        let workers = spec.parallelism.div_ceil(spec.slots_per_worker);
        Ok(Demand {
            jobs: 1,
            parallelism: spec.parallelism.into(),
            workers: workers.into(),
            cpu_milli: pods_request(spec, workers, "cpu")?,
            memory_milli: pods_request(spec, workers, "memory")?,
        })
    }

    fn plus(self, other: Demand) -> Demand {
        Demand {
            jobs: self.jobs.saturating_add(other.jobs),
            parallelism: self.parallelism.saturating_add(other.parallelism),
            workers: self.workers.saturating_add(other.workers),
            cpu_milli: self.cpu_milli.saturating_add(other.cpu_milli),
            memory_milli: self.memory_milli.saturating_add(other.memory_milli),
        }
    }

    fn minus(self, other: Demand) -> Demand {
        Demand {
            jobs: self.jobs.saturating_sub(other.jobs),
            parallelism: self.parallelism.saturating_sub(other.parallelism),
            workers: self.workers.saturating_sub(other.workers),
            cpu_milli: self.cpu_milli.saturating_sub(other.cpu_milli),
            memory_milli: self.memory_milli.saturating_sub(other.memory_milli),
        }
    }
}

/// The coordinator's request of `resource` plus `workers` times the worker's, in thousandths.
fn pods_request(
    spec: &StreamJobSpec,
    workers: u32,
    resource: &str,
) -> Result<u128, AdmissionError> {
    let coordinator = request(&spec.coordinator, "coordinator", resource)?;
    let worker = request(&spec.worker, "worker", resource)?;
    worker
        .checked_mul(workers.into())
        .and_then(|w| w.checked_add(coordinator))
        .ok_or_else(|| AdmissionError::TooLarge {
            field: format!("spec.worker.resources.requests.{resource}"),
        })
}

fn request(role: &PodRole, role_name: &str, resource: &str) -> Result<u128, AdmissionError> {
    match role.resources.requests.get(resource) {
        None => Ok(0),
        Some(quantity) => milli(quantity, || {
            format!("spec.{role_name}.resources.requests.{resource}")
        }),
    }
}

fn milli(quantity: &Quantity, field: impl FnOnce() -> String) -> Result<u128, AdmissionError> {
    quantity
        .milli_value()
        .ok_or_else(|| AdmissionError::NotAQuantity {
            field: field(),
            value: quantity.to_string(),
        })
}

/// One StreamQuota of the namespace.
#[derive(Clone, Copy, Debug)]
pub struct Quota<'a> {
    pub name: &'a str,
    pub spec: &'a StreamQuotaSpec,
}

/// A StreamJob of the namespace that may count against its quotas. The caller leaves out
/// jobs suspended by their user, failed for good, or finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    /// `metadata.creationTimestamp`: earlier goes first among equal priorities.
    pub created: SystemTime,
    /// `spec.priority`: the class the job names, if any.
    pub priority_class: Option<String>,
    pub demand: Demand,
    pub standing: Standing,
}

/// Where a job stands with the quota now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Counts against the quota. `busy`: in the middle of an upgrade, rescale or deploy,
    /// which a preemption must not cut short.
    Admitted { busy: bool },
    /// Counts, but is being stopped to make room; it will stop counting soon.
    Leaving,
    /// Counts nothing: new, queued, or suspended for a higher priority (`preempted`, and to
    /// resume by itself). `since`: when it began to wait, for the quota's status.
    Waiting {
        preempted: bool,
        since: Option<SystemTime>,
    },
}

/// What one job should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// May run, or keep running.
    Admit,
    /// Must wait (or stay suspended); `reason` names the limit, or whom it waits for.
    Queue { reason: String },
    /// Must stop with a savepoint, to make room for the higher-priority job `by`.
    Preempt { by: String },
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Admit => f.write_str("admit"),
            Decision::Queue { reason } => write!(f, "queue: {reason}"),
            Decision::Preempt { by } => write!(f, "preempt for {by}"),
        }
    }
}

/// The decisions for every job of the namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admission {
    decisions: BTreeMap<String, Decision>,
    /// Waiting jobs not admitted, in the order they will be; then those that cannot be.
    queue: Vec<String>,
    /// The class each job counts in, after the default.
    classes: BTreeMap<String, String>,
}

impl Admission {
    pub fn decision(&self, job: &str) -> Option<&Decision> {
        self.decisions.get(job)
    }

    pub fn decisions(&self) -> &BTreeMap<String, Decision> {
        &self.decisions
    }

    /// The jobs told to wait, in the order they will be admitted; those that cannot be
    /// admitted as things are (an unknown class, above a limit on their own) come last.
    pub fn queue(&self) -> &[String] {
        &self.queue
    }

    /// The priority class a job counts in: its own or the default one.
    pub fn priority_class(&self, job: &str) -> Option<&str> {
        self.classes.get(job).map(String::as_str)
    }
}

/// Decides, for every candidate, whether it may run, must wait or must make room. Fails only
/// when a quota's cpu or memory limit is not a quantity (the API server rejects those).
pub fn admit(quotas: &[Quota], candidates: &[Candidate]) -> Result<Admission, AdmissionError> {
    let mut admission = Admission::default();
    if quotas.is_empty() {
        for job in candidates {
            admission
                .decisions
                .insert(job.name.clone(), Decision::Admit);
        }
        return Ok(admission);
    }
    let mut quotas = quotas.to_vec();
    quotas.sort_by(|a, b| a.name.cmp(b.name));
    let scopes = scopes(&quotas)?;
    let jobs: Vec<Job> = candidates
        .iter()
        .map(|candidate| Job::resolve(candidate, &quotas))
        .collect();
    for job in &jobs {
        if let Some(class) = &job.class {
            admission
                .classes
                .insert(job.candidate.name.clone(), class.clone());
        }
    }

    let mut used = Usage::new(&scopes);
    for job in jobs.iter().filter(|job| job.counts()) {
        used.add(job);
        admission
            .decisions
            .insert(job.candidate.name.clone(), Decision::Admit);
    }

    let mut waiting: Vec<&Job> = jobs.iter().filter(|job| !job.counts()).collect();
    waiting.sort_by_key(|job| job.queue_key());
    let mut head: Option<&str> = None;
    let mut cannot_fit = Vec::new();
    for &job in &waiting {
        let name = &job.candidate.name;
        let refusal = match (&job.class, job.known_class) {
            (Some(class), false) => Some(unknown_class(class, &quotas)),
            _ => used.above_limit_alone(job),
        };
        if let Some(reason) = refusal {
            admission
                .decisions
                .insert(name.clone(), Decision::Queue { reason });
            cannot_fit.push(name.clone());
            continue;
        }
        let shortfall = used.shortfall(job);
        let decision = match (head, shortfall) {
            (None, None) => {
                used.add(job);
                Decision::Admit
            }
            (None, Some(reason)) => {
                head = Some(name);
                make_room(job, reason, &jobs, &used, &mut admission.decisions)
            }
            (Some(_), Some(reason)) => Decision::Queue { reason },
            (Some(ahead), None) => Decision::Queue {
                reason: format!("behind {ahead} in the queue"),
            },
        };
        if decision != Decision::Admit {
            admission.queue.push(name.clone());
        }
        admission.decisions.insert(name.clone(), decision);
    }
    admission.queue.extend(cannot_fit);
    Ok(admission)
}

/// The decision for the head of the queue, which does not fit: wait for the Leaving jobs,
/// or preempt lower priorities, or wait for the limit. Marks whom it preempts.
fn make_room(
    head: &Job,
    limit_reason: String,
    jobs: &[Job],
    used: &Usage,
    decisions: &mut BTreeMap<String, Decision>,
) -> Decision {
    if !head.preempts {
        return Decision::Queue {
            reason: limit_reason,
        };
    }
    let mut leaving: Vec<&Job> = jobs
        .iter()
        .filter(|job| job.candidate.standing == Standing::Leaving)
        .collect();
    let mut freed = used.clone();
    for job in &leaving {
        freed.remove(job);
    }
    let mut gone = Vec::new();
    if freed.shortfall(head).is_some() {
        let mut eligible: Vec<&Job> = jobs
            .iter()
            .filter(|job| {
                job.candidate.standing == (Standing::Admitted { busy: false })
                    && job.value < head.value
            })
            .collect();
        eligible.sort_by_key(|job| Reverse(job.queue_key()));
        for victim in eligible {
            freed.remove(victim);
            gone.push(victim);
            if freed.shortfall(head).is_none() {
                break;
            }
        }
        if freed.shortfall(head).is_some() {
            return Decision::Queue {
                reason: limit_reason,
            };
        }
    }
    leaving.extend(gone);
    let by = &head.candidate.name;
    for job in &leaving {
        decisions.insert(
            job.candidate.name.clone(),
            Decision::Preempt { by: by.clone() },
        );
    }
    let names: BTreeSet<&str> = leaving
        .iter()
        .map(|job| job.candidate.name.as_str())
        .collect();
    Decision::Queue {
        reason: format!(
            "waiting for {} to stop (preempted)",
            names.into_iter().collect::<Vec<_>>().join(", ")
        ),
    }
}

fn unknown_class(class: &str, quotas: &[Quota]) -> String {
    let names: Vec<&str> = quotas.iter().map(|quota| quota.name).collect();
    let noun = if names.len() == 1 {
        "StreamQuota"
    } else {
        "StreamQuotas"
    };
    format!(
        "priority class {class:?} is not defined in {noun} {}",
        names.join(", ")
    )
}

/// The status of a quota of the namespace after [`admit`]: what the running jobs use (the
/// admitted, including those admitted just now, and the leaving), and who waits. Every
/// quota of a namespace counts the same jobs, so they get the same figures. The caller sets
/// `observedGeneration` and the conditions.
pub fn quota_status(candidates: &[Candidate], admission: &Admission) -> StreamQuotaStatus {
    let mut used = Demand::default();
    for candidate in candidates {
        let counts = !matches!(
            admission.decision(&candidate.name),
            Some(Decision::Queue { .. })
        );
        if counts {
            used = used.plus(candidate.demand);
        }
    }
    let by_name: BTreeMap<&str, &Candidate> = candidates
        .iter()
        .map(|candidate| (candidate.name.as_str(), candidate))
        .collect();
    let queued = admission
        .queue
        .iter()
        .filter_map(|name| {
            let candidate = by_name.get(name.as_str())?;
            let Some(Decision::Queue { reason }) = admission.decision(name) else {
                return None;
            };
            let (preempted, since) = match candidate.standing {
                Standing::Waiting { preempted, since } => (preempted, since),
                Standing::Admitted { .. } | Standing::Leaving => (false, None),
            };
            Some(QueuedJob {
                name: name.clone(),
                priority_class: admission.priority_class(name).map(str::to_string),
                reason: reason.clone(),
                since: since.and_then(timestamp),
                preempted,
            })
        })
        .collect();
    StreamQuotaStatus {
        used: QuotaUsage {
            jobs: saturating_u32(used.jobs),
            parallelism: saturating_u32(used.parallelism),
            workers: saturating_u32(used.workers),
            cpu: Some(Quantity::new(Dimension::Cpu.format(used.cpu_milli))),
            memory: Some(Quantity::new(Dimension::Memory.format(used.memory_milli))),
        },
        queued,
        ..StreamQuotaStatus::default()
    }
}

fn saturating_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn timestamp(time: SystemTime) -> Option<String> {
    let time = jiff::Timestamp::try_from(time).ok()?;
    Some(time.round(jiff::Unit::Second).unwrap_or(time).to_string())
}

/// Checks what the API server cannot: quotas of one namespace that disagree about a class
/// (the first by name wins) or about the default class. One message per disagreement.
pub fn quota_conflicts(quotas: &[Quota]) -> Vec<String> {
    let mut quotas = quotas.to_vec();
    quotas.sort_by(|a, b| a.name.cmp(b.name));
    let mut conflicts = Vec::new();
    let mut classes: BTreeMap<&str, (&str, i32, PreemptionPolicy)> = BTreeMap::new();
    for quota in &quotas {
        for class in &quota.spec.priority_classes {
            let this = (quota.name, class.value, class.preemption_policy);
            let Some(&(first, value, policy)) = classes.get(class.name.as_str()) else {
                classes.insert(&class.name, this);
                continue;
            };
            if (value, policy) != (class.value, class.preemption_policy) {
                conflicts.push(format!(
                    "priority class {:?} is value {value}, {policy:?} in StreamQuota {first} but value {}, {:?} in StreamQuota {}; {first} counts",
                    class.name, class.value, class.preemption_policy, quota.name
                ));
            }
        }
    }
    let defaults: Vec<(&str, &str)> = quotas
        .iter()
        .filter_map(|quota| Some((quota.name, quota.spec.default_priority_class.as_deref()?)))
        .collect();
    if let Some(&(first, default)) = defaults.first() {
        for &(quota, other) in &defaults[1..] {
            if other != default {
                conflicts.push(format!(
                    "defaultPriorityClass is {default:?} in StreamQuota {first} but {other:?} in StreamQuota {quota}; {first} counts"
                ));
            }
        }
    }
    conflicts
}

/// A candidate with its class resolved.
struct Job<'a> {
    candidate: &'a Candidate,
    class: Option<String>,
    /// Whether some quota defines `class`.
    known_class: bool,
    value: i32,
    preempts: bool,
}

impl<'a> Job<'a> {
    fn resolve(candidate: &'a Candidate, quotas: &[Quota]) -> Job<'a> {
        let class = candidate.priority_class.clone().or_else(|| {
            quotas
                .iter()
                .find_map(|quota| quota.spec.default_priority_class.clone())
        });
        let definition = class.as_deref().and_then(|class| {
            quotas.iter().find_map(|quota| {
                quota
                    .spec
                    .priority_classes
                    .iter()
                    .find(|defined| defined.name == class)
            })
        });
        Job {
            candidate,
            known_class: definition.is_some(),
            value: definition.map_or(0, |class| class.value),
            preempts: definition.is_some_and(|class| {
                class.preemption_policy == PreemptionPolicy::PreemptLowerPriority
            }),
            class,
        }
    }

    fn counts(&self) -> bool {
        matches!(
            self.candidate.standing,
            Standing::Admitted { .. } | Standing::Leaving
        )
    }

    /// Queue order: higher value, then earlier, then name.
    fn queue_key(&self) -> (Reverse<i32>, SystemTime, &str) {
        (
            Reverse(self.value),
            self.candidate.created,
            &self.candidate.name,
        )
    }
}

/// The measures a quota limits, in the order a refusal names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dimension {
    Jobs,
    Parallelism,
    Workers,
    Cpu,
    Memory,
}

const DIMENSIONS: [Dimension; 5] = [
    Dimension::Jobs,
    Dimension::Parallelism,
    Dimension::Workers,
    Dimension::Cpu,
    Dimension::Memory,
];

impl Dimension {
    fn limit_name(self) -> &'static str {
        match self {
            Dimension::Jobs => "maxJobs",
            Dimension::Parallelism => "maxParallelism",
            Dimension::Workers => "maxWorkers",
            Dimension::Cpu => "cpu",
            Dimension::Memory => "memory",
        }
    }

    fn of(self, demand: &Demand) -> u128 {
        match self {
            Dimension::Jobs => demand.jobs.into(),
            Dimension::Parallelism => demand.parallelism.into(),
            Dimension::Workers => demand.workers.into(),
            Dimension::Cpu => demand.cpu_milli,
            Dimension::Memory => demand.memory_milli,
        }
    }

    /// An amount as a user writes it: counts as they are, cpu as `2` or `500m`, memory with
    /// the largest suffix that keeps it whole (`1536Mi`, `500M`).
    fn format(self, amount: u128) -> String {
        match self {
            Dimension::Jobs | Dimension::Parallelism | Dimension::Workers => amount.to_string(),
            Dimension::Cpu => format_cpu(amount),
            Dimension::Memory => format_memory(amount),
        }
    }
}

fn format_cpu(milli: u128) -> String {
    if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

fn format_memory(milli: u128) -> String {
    if !milli.is_multiple_of(1000) {
        return format!("{milli}m");
    }
    let bytes = milli / 1000;
    if bytes == 0 {
        return "0".into();
    }
    const BINARY: [(&str, u32); 6] = [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ];
    for (suffix, shift) in BINARY {
        let unit = 1u128 << shift;
        if bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    const DECIMAL: [(&str, u32); 6] = [
        ("E", 18),
        ("P", 15),
        ("T", 12),
        ("G", 9),
        ("M", 6),
        ("k", 3),
    ];
    for (suffix, exponent) in DECIMAL {
        let unit = 10u128.pow(exponent);
        if bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// One set of limits: a quota's own, or one of its classes' over the jobs of that class.
struct Scope {
    /// How a reason names it: `StreamQuota team-a`, `priority class high in StreamQuota team-a`.
    title: String,
    /// `None`: every job; else only jobs of this class.
    class: Option<String>,
    max: [Option<u128>; 5],
}

impl Scope {
    /// `path` names the limits in errors, e.g. `StreamQuota team-a spec.limits`.
    fn new(
        title: String,
        class: Option<String>,
        limits: &QuotaLimits,
        path: &str,
    ) -> Result<Scope, AdmissionError> {
        let field = |name: &str| format!("{path}.{name}");
        let cpu = match &limits.cpu {
            Some(cpu) => Some(milli(cpu, || field("cpu"))?),
            None => None,
        };
        let memory = match &limits.memory {
            Some(memory) => Some(milli(memory, || field("memory"))?),
            None => None,
        };
        Ok(Scope {
            max: [
                limits.max_jobs.map(u128::from),
                limits.max_parallelism.map(u128::from),
                limits.max_workers.map(u128::from),
                cpu,
                memory,
            ],
            title,
            class,
        })
    }

    fn applies_to(&self, job: &Job) -> bool {
        match &self.class {
            None => true,
            Some(class) => job.class.as_ref() == Some(class),
        }
    }
}

/// Every scope of the quotas, in the order a refusal names them: quotas by name, each one's
/// own limits before its classes'.
fn scopes(quotas: &[Quota]) -> Result<Vec<Scope>, AdmissionError> {
    let mut scopes = Vec::new();
    for quota in quotas {
        let title = format!("StreamQuota {}", quota.name);
        let path = format!("{title} spec.limits");
        scopes.push(Scope::new(title.clone(), None, &quota.spec.limits, &path)?);
        for (i, class) in quota.spec.priority_classes.iter().enumerate() {
            let Some(limits) = &class.limits else {
                continue;
            };
            scopes.push(Scope::new(
                format!("priority class {} in {title}", class.name),
                Some(class.name.clone()),
                limits,
                &format!("{title} spec.priorityClasses[{i}].limits"),
            )?);
        }
    }
    Ok(scopes)
}

/// What the counted jobs use, per scope.
#[derive(Clone)]
struct Usage<'s> {
    scopes: &'s [Scope],
    used: Vec<Demand>,
}

impl<'s> Usage<'s> {
    fn new(scopes: &'s [Scope]) -> Usage<'s> {
        Usage {
            scopes,
            used: vec![Demand::default(); scopes.len()],
        }
    }

    fn add(&mut self, job: &Job) {
        for (scope, used) in self.scopes.iter().zip(&mut self.used) {
            if scope.applies_to(job) {
                *used = used.plus(job.candidate.demand);
            }
        }
    }

    fn remove(&mut self, job: &Job) {
        for (scope, used) in self.scopes.iter().zip(&mut self.used) {
            if scope.applies_to(job) {
                *used = used.minus(job.candidate.demand);
            }
        }
    }

    /// The first limit the job does not fit in next to what is used, as a reason.
    fn shortfall(&self, job: &Job) -> Option<String> {
        for (scope, used) in self.scopes.iter().zip(&self.used) {
            if !scope.applies_to(job) {
                continue;
            }
            for (dimension, max) in DIMENSIONS.iter().zip(scope.max) {
                let Some(max) = max else { continue };
                let needs = dimension.of(&job.candidate.demand);
                let used = dimension.of(used);
                if used.saturating_add(needs) > max {
                    return Some(format!(
                        "{} of {}: needs {}, {} of {} free",
                        dimension.limit_name(),
                        scope.title,
                        dimension.format(needs),
                        dimension.format(max.saturating_sub(used)),
                        dimension.format(max),
                    ));
                }
            }
        }
        None
    }

    /// The first limit the job exceeds on its own, whatever is used, as a reason: it can
    /// never fit.
    fn above_limit_alone(&self, job: &Job) -> Option<String> {
        for scope in self.scopes.iter().filter(|scope| scope.applies_to(job)) {
            for (dimension, max) in DIMENSIONS.iter().zip(scope.max) {
                let Some(max) = max else { continue };
                let needs = dimension.of(&job.candidate.demand);
                if needs > max {
                    return Some(format!(
                        "{} of {}: needs {}, more than the limit of {}",
                        dimension.limit_name(),
                        scope.title,
                        dimension.format(needs),
                        dimension.format(max),
                    ));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;

//! `StreamQuota`: how much the StreamJobs of one namespace may use together, and how
//! priority classes share it.
//!
//! A job counts against the quota while it is admitted (running, or on its way to running);
//! queued and suspended jobs do not. When a job does not fit, it waits in phase `Queued`; a
//! job of a class with `preemptionPolicy: PreemptLowerPriority` may instead have the operator
//! suspend (with a savepoint) admitted jobs of lower priority value until it fits. Suspended
//! and queued jobs are admitted again, highest priority first, when room returns. If a
//! namespace has several StreamQuotas, a job must fit all of them.

use crate::quantity::Quantity;
use crate::status::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Limits for the StreamJobs of a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(
    feature = "kube",
    derive(kube::CustomResource),
    kube(
        group = "sluice.dev",
        version = "v1alpha1",
        kind = "StreamQuota",
        namespaced,
        shortname = "sq",
        category = "sluice",
        status = "StreamQuotaStatus",
        derive = "PartialEq",
        derive = "Default",
        doc = "Limits for the StreamJobs of a namespace, and how priority classes share them.",
        printcolumn(name = "Jobs", type_ = "integer", json_path = ".status.used.jobs"),
        printcolumn(
            name = "Max Jobs",
            type_ = "integer",
            json_path = ".spec.limits.maxJobs"
        ),
        printcolumn(
            name = "Parallelism",
            type_ = "integer",
            json_path = ".status.used.parallelism"
        ),
        printcolumn(
            name = "Max Parallelism",
            type_ = "integer",
            json_path = ".spec.limits.maxParallelism"
        ),
        printcolumn(
            name = "Age",
            type_ = "date",
            json_path = ".metadata.creationTimestamp"
        )
    )
)]
// clippy takes the repeated `type_` of the printer columns for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.defaultPriorityClass) || (has(self.priorityClasses) && self.priorityClasses.exists(c, c.name == self.defaultPriorityClass))",
    "fieldPath": ".defaultPriorityClass",
    "messageExpression": "'\"' + self.defaultPriorityClass + '\" is not one of spec.priorityClasses'",
}]))]
pub struct StreamQuotaSpec {
    /// Limits on all admitted StreamJobs of the namespace together.
    #[serde(default, skip_serializing_if = "QuotaLimits::is_empty")]
    pub limits: QuotaLimits,

    /// The classes jobs name in `spec.priority`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        extend(
            "x-kubernetes-list-type" = "map",
            "x-kubernetes-list-map-keys" = ["name"],
        )
    )]
    pub priority_classes: Vec<PriorityClass>,

    /// The class of jobs that name none; without it such jobs have priority value 0 and
    /// never preempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub default_priority_class: Option<String>,
}

/// Upper bounds; an absent one does not limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaLimits {
    /// Admitted StreamJobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_jobs: Option<u32>,

    /// Sum of `spec.parallelism`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallelism: Option<u32>,

    /// Worker pods: ceil(parallelism / slotsPerWorker) for each job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workers: Option<u32>,

    /// Sum of the CPU requests of all coordinator and worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,

    /// Sum of the memory requests of all coordinator and worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

impl QuotaLimits {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A priority class: its value orders jobs for admission and preemption, and its own limits
/// cap what its jobs may take of the namespace's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriorityClass {
    #[schemars(length(max = 63), extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
        "messageExpression": "'\"' + self + '\" is not a priority class name: use lowercase letters, digits and \\'-\\', starting and ending with a letter or digit'",
    }]))]
    pub name: String,

    /// Higher goes first.
    pub value: i32,

    #[serde(default)]
    pub preemption_policy: PreemptionPolicy,

    /// Limits for the jobs of this class together, within the namespace's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<QuotaLimits>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Whether jobs of a class may suspend lower-priority jobs to make room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PreemptionPolicy {
    #[default]
    PreemptLowerPriority,
    Never,
}

/// What the quota's jobs use, and who waits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamQuotaStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["type"],
    ))]
    pub conditions: Vec<Condition>,

    /// Use by all admitted jobs.
    #[serde(default)]
    pub used: QuotaUsage,

    /// Jobs waiting for room, in the order they will be admitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued: Vec<QueuedJob>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUsage {
    #[serde(default)]
    pub jobs: u32,
    #[serde(default)]
    pub parallelism: u32,
    #[serde(default)]
    pub workers: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// A job that does not fit yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueuedJob {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class: Option<String>,
    /// Which limit it does not fit, e.g. `maxParallelism: needs 8, 4 free`.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub since: Option<String>,
    /// Whether it was suspended to make room for a higher priority (and resumes by itself).
    #[serde(default)]
    pub preempted: bool,
}

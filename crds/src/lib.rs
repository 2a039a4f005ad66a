//! The Sluice custom resources, `StreamJob` and `StreamQuota` (`sluice.dev/v1alpha1`): their
//! types, CEL validation rules and the same rules in Rust, and StreamJob manifest loading.
//!
//! Without features this crate needs no Kubernetes crates: the runtime reads the same
//! manifest to run a job embedded (`sluice run job.yaml`) through [`parse_manifest`]. The
//! `kube` feature adds the API types the operator uses (`StreamJob`, `StreamQuota`, derived
//! with `kube::CustomResource` around the very same spec types) and the CRDs ([`crd`]).
//!
//! The other contracts between the operator and the runtime: [`control`], the JSON of the
//! coordinator's control API, and [`command`], the runtime's command line, which the
//! operator writes into its pods.

pub mod backoff;
pub mod command;
pub mod control;
mod duration;
mod fingerprint;
mod manifest;
mod operation;
mod quantity;
mod quota;
mod spec;
mod status;
pub mod tls;
mod validate;

#[cfg(feature = "kube")]
pub mod crd;

pub use duration::{HumanDuration, DURATION_MAX_LENGTH, DURATION_PATTERN};
pub use manifest::{parse_manifest, ManifestError, ObjectMeta, StreamJobManifest};
pub use operation::{
    BackoffStep, Deploying, Operation, OperationStep, SavepointRequested, SavepointStep,
};
pub use quantity::{Quantity, QUANTITY_MAX_LENGTH, QUANTITY_PATTERN};
pub use quota::{
    PreemptionPolicy, PriorityClass, QueuedJob, QuotaLimits, QuotaUsage, StreamQuotaSpec,
    StreamQuotaStatus,
};
pub use spec::{
    Backoff, Checkpointing, DesiredState, JobSpec, OnDelete, PodRole, ResourceRequirements,
    RestartPolicy, Rollback, SavepointRetention, Savepoints, SecretKeySelector, SecretReference,
    Secrets, SnapshotEncryption, StreamJobSpec, UpgradeMode, API_GROUP, API_VERSION,
    DEFAULT_MAX_PARALLELISM, KIND, MAX_MAX_PARALLELISM, MAX_NAME_LENGTH,
};
pub use status::{
    condition_types, CheckpointInfo, Condition, ConditionStatus, ErrorInfo, Failure, HealthFinding,
    HealthReason, JobMetrics, KeyGroupSkew, MetricsReading, OperationKind, OperatorShare, Phase,
    RestartStatus, RestartWait, SavepointInfo, SavepointState, SavepointTrigger, SpecRevision,
    StreamJobStatus,
};
pub use validate::{
    validate, validate_name, validate_quota, validate_update, FieldError, ValidationErrors,
};

#[cfg(feature = "kube")]
pub use quota::StreamQuota;
#[cfg(feature = "kube")]
pub use spec::StreamJob;

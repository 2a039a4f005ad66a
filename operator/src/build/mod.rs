//! The children of a StreamJob, built from the revision it runs: pure functions from spec to
//! Kubernetes objects, so that every field the operator sets is tested without a cluster.
//!
//! One job is a coordinator Deployment (one pod: it must never run twice) and Service, a
//! worker StatefulSet (stable names for the coordinator's status) and headless Service, a
//! ConfigMap with the manifest the coordinator runs, a PodDisruptionBudget, and the Secret
//! with the control API's token (created once, never rewritten); and, unless the operator is
//! told otherwise, NetworkPolicies that let in only what each pod serves (`network`).
//!
//! The objects are k8s-openapi's typed structs, so that a misspelt field does not compile;
//! only the user's pod template overrides are merged as JSON (`pods`). The containers'
//! arguments are the runtime's command line as `sluice_crds::command` writes it (`args`).

mod args;
mod jobs;
mod network;
mod pods;
#[cfg(test)]
mod tests;

pub use args::{coordinator_args, worker_args};
pub use jobs::{preflight, savepoint_cleanup, CLEANUP_SAVEPOINTS};
pub use network::NetworkAccess;
pub use pods::merge;

use crate::error::Error;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, StatefulSet, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sluice_crds::{SpecRevision, StreamJobSpec};
use std::collections::BTreeMap;

/// Where workers reach the coordinator.
pub const COORDINATOR_PORT: u16 = 6123;
/// The control API (the operator's and the probes' way in).
pub const CONTROL_PORT: u16 = 8081;
/// The job's Prometheus metrics, without a token: what the chart's PodMonitor scrapes.
pub const METRICS_PORT: u16 = 9249;
/// Where workers receive records from each other.
pub const DATA_PORT: u16 = 6124;
/// Key of the token in the Secret the operator generates.
pub const TOKEN_KEY: &str = "token";
const MANIFEST_DIR: &str = "/etc/sluice";
const STATE_DIR: &str = "/var/lib/sluice/state";
/// Where job pods mount their certificates (`sluice_crds::tls`); not below the manifest's
/// read-only mount, where no mount point can be made.
const TLS_DIR: &str = "/etc/sluice-tls";

/// Names and labels of one StreamJob's children.
#[derive(Clone, Debug)]
pub struct JobRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl JobRef {
    pub fn coordinator(&self) -> String {
        format!("{}-coordinator", self.name)
    }
    pub fn worker(&self) -> String {
        format!("{}-worker", self.name)
    }
    pub fn manifest(&self) -> String {
        format!("{}-job", self.name)
    }
    pub fn token(&self) -> String {
        format!("{}-token", self.name)
    }
    pub fn preflight(&self) -> String {
        format!("{}-preflight", self.name)
    }
    pub fn savepoint_cleanup(&self) -> String {
        format!("{}-savepoint-cleanup", self.name)
    }
    /// Labels every child carries; `role` tells coordinator from workers.
    pub fn labels(&self, role: Option<&str>) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "sluice".to_string()),
            ("app.kubernetes.io/instance".to_string(), self.name.clone()),
            (
                "app.kubernetes.io/managed-by".to_string(),
                "sluice-operator".to_string(),
            ),
            ("sluice.dev/job".to_string(), self.name.clone()),
        ]);
        if let Some(role) = role {
            l.insert("sluice.dev/role".to_string(), role.to_string());
        }
        l
    }
    /// The label selector of the job's workers (the scale subresource's `selector`).
    pub fn worker_selector(&self) -> String {
        format!("sluice.dev/job={},sluice.dev/role=worker", self.name)
    }
    /// Every pod of the job, the pre-flight and cleanup Jobs' too.
    fn pods_selector(&self) -> LabelSelector {
        match_labels(BTreeMap::from([(
            "sluice.dev/job".to_string(),
            self.name.clone(),
        )]))
    }
    /// The job's pods of the given roles.
    fn role_selector(&self, roles: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "sluice.dev/role".into(),
                operator: "In".into(),
                values: Some(roles.iter().map(|r| r.to_string()).collect()),
            }]),
            ..self.pods_selector()
        }
    }
    fn owner(&self) -> OwnerReference {
        OwnerReference {
            api_version: sluice_crds::API_VERSION.into(),
            kind: sluice_crds::KIND.into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
    fn metadata(&self, name: String, role: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(role)),
            owner_references: Some(vec![self.owner()]),
            ..ObjectMeta::default()
        }
    }
}

/// Where a job's snapshots go.
pub struct Storage {
    /// This run's checkpoints.
    pub checkpoints: Option<String>,
    /// The job's savepoints (each operation's in a directory of its own below).
    pub savepoints: Option<String>,
}

impl Storage {
    pub fn of(job: &JobRef, spec: &StreamJobSpec, run: Option<&str>) -> Self {
        let base = spec.checkpointing.storage.as_deref().map(trim_slash);
        let scoped = |root: &str| format!("{root}/{}/{}", job.namespace, job.name);
        Storage {
            checkpoints: base.zip(run).map(|(b, r)| format!("{}/{r}", scoped(b))),
            savepoints: spec
                .savepoints
                .storage
                .as_deref()
                .map(|s| scoped(trim_slash(s)))
                .or_else(|| base.map(|b| scoped(&format!("{b}/savepoints")))),
        }
    }
}

fn trim_slash(s: &str) -> &str {
    s.trim_end_matches('/')
}

/// Workers needed for a parallelism: every subtask needs a slot.
pub fn worker_count(spec: &StreamJobSpec) -> u32 {
    spec.parallelism.div_ceil(spec.slots_per_worker.max(1))
}

/// The children that run one revision.
pub struct Children {
    pub manifest: ConfigMap,
    pub coordinator: Deployment,
    pub coordinator_service: Service,
    pub workers: StatefulSet,
    pub worker_service: Service,
    pub disruption_budget: PodDisruptionBudget,
    /// Empty unless [`Children::with_network_policies`] asks for them.
    pub network_policies: Vec<NetworkPolicy>,
}

impl Children {
    /// Gives the job's pods the Kubernetes PriorityClass of its priority, so that the
    /// scheduler orders and preempts pods as the operator orders jobs. A class the user set
    /// in a pod template stays.
    pub fn with_priority_class(mut self, class: &str) -> Self {
        let templates = [
            self.coordinator.spec.as_mut().map(|s| &mut s.template),
            self.workers.spec.as_mut().map(|s| &mut s.template),
        ];
        for pod in templates
            .into_iter()
            .flatten()
            .filter_map(|t| t.spec.as_mut())
        {
            pod.priority_class_name
                .get_or_insert_with(|| class.to_string());
        }
        self
    }

    /// Lets into the job's pods only the connections each role serves (`network`).
    pub fn with_network_policies(mut self, job: &JobRef, access: &NetworkAccess) -> Self {
        self.network_policies = network::network_policies(job, access);
        self
    }
}

pub fn children(job: &JobRef, revision: &SpecRevision) -> Result<Children, Error> {
    let spec = &revision.spec;
    let coordinator_labels = job.labels(Some("coordinator"));
    let worker_labels = job.labels(Some("worker"));
    let coordinator = Deployment {
        metadata: job.metadata(job.coordinator(), Some("coordinator")),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            // Never two coordinators of one job at once.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..DeploymentStrategy::default()
            }),
            selector: match_labels(coordinator_labels.clone()),
            template: pods::coordinator(job, revision)?,
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let workers = StatefulSet {
        metadata: job.metadata(job.worker(), Some("worker")),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas(worker_count(spec))?),
            service_name: Some(job.worker()),
            // The coordinator waits for all of them; one at a time would only be slower.
            pod_management_policy: Some("Parallel".into()),
            selector: match_labels(worker_labels.clone()),
            template: pods::worker(job, revision)?,
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    Ok(Children {
        manifest: manifest_config_map(job, job.manifest(), spec)?,
        coordinator,
        coordinator_service: Service {
            metadata: job.metadata(job.coordinator(), Some("coordinator")),
            spec: Some(ServiceSpec {
                selector: Some(coordinator_labels),
                ports: Some(vec![
                    service_port("workers", COORDINATOR_PORT),
                    service_port("control", CONTROL_PORT),
                    service_port("metrics", METRICS_PORT),
                ]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        },
        workers,
        worker_service: Service {
            metadata: job.metadata(job.worker(), Some("worker")),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                selector: Some(worker_labels),
                ports: Some(vec![service_port("data", DATA_PORT)]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        },
        // Every pod of a job is needed: a drain may take one at a time, and the job restarts
        // from its latest checkpoint after each. Only the coordinator and the workers: the
        // pods of the pre-flight and cleanup Jobs belong to a controller without a scale, so
        // a budget over them only yields the disruption controller's warnings.
        disruption_budget: PodDisruptionBudget {
            metadata: job.metadata(job.name.clone(), None),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(job.role_selector(&["coordinator", "worker"])),
                ..PodDisruptionBudgetSpec::default()
            }),
            ..PodDisruptionBudget::default()
        },
        network_policies: Vec::new(),
    })
}

fn match_labels(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

/// A port of a Service, targeting the container port of the same name.
fn service_port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: port.into(),
        target_port: Some(IntOrString::String(name.into())),
        ..ServicePort::default()
    }
}

fn replicas(count: u32) -> Result<i32, Error> {
    i32::try_from(count).map_err(|_| Error::Build(format!("{count} workers: too many")))
}

fn image(spec: &StreamJobSpec) -> Result<&str, Error> {
    spec.image
        .as_deref()
        .ok_or_else(|| Error::Build("spec.image: required to run the job on Kubernetes".into()))
}

fn manifest_config_map(
    job: &JobRef,
    name: String,
    spec: &StreamJobSpec,
) -> Result<ConfigMap, Error> {
    Ok(ConfigMap {
        metadata: job.metadata(name, None),
        data: Some(BTreeMap::from([("job.yaml".into(), manifest(job, spec)?)])),
        ..ConfigMap::default()
    })
}

/// The StreamJob the runtime reads: the spec under the job's name.
fn manifest(job: &JobRef, spec: &StreamJobSpec) -> Result<String, Error> {
    let manifest = sluice_crds::StreamJobManifest::new(job.name.clone(), spec.clone());
    // Through a JSON value, which orders the keys as earlier operators wrote them: another
    // text would change the ConfigMap of every running job on an operator upgrade.
    let value = serde_json::to_value(&manifest)
        .map_err(|e| Error::Build(format!("the job manifest: {e}")))?;
    serde_yaml::to_string(&value).map_err(|e| Error::Build(format!("the job manifest: {e}")))
}

/// The Secret holding a job's certificates, as `sluice_crds::tls` lays it out.
pub fn tls_secret(job: &JobRef, issued: sluice_crds::tls::JobCertificates) -> Secret {
    use sluice_crds::tls::{secret_name, CA_FILE, CERT_FILE, KEY_FILE};
    Secret {
        metadata: job.metadata(secret_name(&job.name), None),
        type_: Some("kubernetes.io/tls".into()),
        string_data: Some(BTreeMap::from([
            (CA_FILE.into(), issued.ca),
            (CERT_FILE.into(), issued.cert),
            (KEY_FILE.into(), issued.key),
        ])),
        ..Secret::default()
    }
}

/// The Secret holding a generated control API token.
pub fn token_secret(job: &JobRef, token: &str) -> Result<Secret, Error> {
    Ok(Secret {
        metadata: job.metadata(job.token(), None),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([(TOKEN_KEY.into(), token.into())])),
        ..Secret::default()
    })
}

//! Pod templates: the operator's, then `spec.podTemplate`, then the role's overrides, merged
//! in that order.

use super::args::{coordinator_args, worker_args};
use super::{
    image, JobRef, CONTROL_PORT, COORDINATOR_PORT, DATA_PORT, MANIFEST_DIR, METRICS_PORT,
    STATE_DIR, TLS_DIR, TOKEN_KEY,
};
use crate::error::Error;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretEnvSource,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use sluice_crds::{SnapshotEncryption, SpecRevision, StreamJobSpec};
use std::collections::BTreeMap;

/// The name of the container running `sluice`, which overrides merge into by name.
pub(super) const CONTAINER: &str = "sluice";

/// The user and group every job pod runs as: not root, and not a user of the node (the
/// images hold no other user, so any number would do; this is the one distroless images
/// call `nonroot`, and the chart runs the operator as).
const POD_USER: i64 = 65532;

/// Whose pod a template is: the role's settings and overrides apply.
pub(super) enum Role {
    Coordinator,
    Worker,
    /// A Job's pod (its role label): runs with the coordinator's settings.
    Tool(&'static str),
}

impl Role {
    fn label(&self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
            Role::Tool(label) => label,
        }
    }
}

/// The coordinator's pod.
pub(super) fn coordinator(job: &JobRef, revision: &SpecRevision) -> Result<PodTemplateSpec, Error> {
    let spec = &revision.spec;
    let token = {
        let (name, key) = match &spec.secrets.token {
            Some(t) => (t.name.clone(), t.key.clone()),
            None => (job.token(), TOKEN_KEY.to_string()),
        };
        EnvVar {
            name: "SLUICE_CONTROL_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name,
                    key,
                    ..SecretKeySelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }
    };
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image(spec)?.into()),
        args: Some(coordinator_args(job, revision).to_args()),
        env: Some([vec![token, pod_name()], snapshot_key(spec)].concat()),
        env_from: Some(env_from(spec)),
        ports: Some(vec![
            container_port("workers", COORDINATOR_PORT),
            container_port("control", CONTROL_PORT),
            container_port("metrics", METRICS_PORT),
        ]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".into()),
                port: IntOrString::String("control".into()),
                // The kubelet does not check the certificate; it only needs to speak TLS.
                scheme: Some("HTTPS".into()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(2),
            ..Probe::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "manifest".into(),
                mount_path: MANIFEST_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            state_mount(),
            tls_mount(),
        ]),
        ..Container::default()
    };
    let volumes = vec![
        Volume {
            name: "manifest".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: job.manifest(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        state_volume(),
        tls_volume(job),
    ];
    template(
        job,
        spec,
        Role::Coordinator,
        revision_annotations(revision),
        container,
        volumes,
    )
}

/// A worker's pod.
pub(super) fn worker(job: &JobRef, revision: &SpecRevision) -> Result<PodTemplateSpec, Error> {
    let spec = &revision.spec;
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image(spec)?.into()),
        args: Some(worker_args(job, spec).to_args()),
        env: Some([vec![pod_name()], snapshot_key(spec)].concat()),
        env_from: Some(env_from(spec)),
        ports: Some(vec![container_port("data", DATA_PORT)]),
        volume_mounts: Some(vec![state_mount(), tls_mount()]),
        ..Container::default()
    };
    template(
        job,
        spec,
        Role::Worker,
        revision_annotations(revision),
        container,
        vec![state_volume(), tls_volume(job)],
    )
}

/// Which revision and run a pod belongs to.
fn revision_annotations(revision: &SpecRevision) -> BTreeMap<String, String> {
    let mut annotations =
        BTreeMap::from([("sluice.dev/spec-hash".to_string(), revision.hash.clone())]);
    if let Some(run) = &revision.run {
        annotations.insert("sluice.dev/run".into(), run.clone());
    }
    annotations
}

/// `POD_NAME`, which names a worker in the coordinator's status.
fn pod_name() -> EnvVar {
    EnvVar {
        name: "POD_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port.into(),
        ..ContainerPort::default()
    }
}

fn state_mount() -> VolumeMount {
    VolumeMount {
        name: "state".into(),
        mount_path: STATE_DIR.into(),
        ..VolumeMount::default()
    }
}

fn state_volume() -> Volume {
    empty_dir("state")
}

const TMP_VOLUME: &str = "tmp";

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// The pod's half of the `restricted` standard. `fs_group` makes the volumes that support
/// it (emptyDir, most PersistentVolumes) writable by the pod's group.
fn restricted_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(POD_USER),
        run_as_group: Some(POD_USER),
        fs_group: Some(POD_USER),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// The container's half: no capabilities, no way to gain privileges, nothing written to
/// the image.
fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn tls_mount() -> VolumeMount {
    VolumeMount {
        name: "tls".into(),
        mount_path: TLS_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// The job's certificates: its pods prove to each other that they belong to it.
fn tls_volume(job: &JobRef) -> Volume {
    Volume {
        name: "tls".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(sluice_crds::tls::secret_name(&job.name)),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The snapshot key's id and the key from its Secret, for every process that reads or
/// writes snapshots.
pub(super) fn snapshot_key(spec: &StreamJobSpec) -> Vec<EnvVar> {
    let Some(encryption) = &spec.checkpointing.encryption else {
        return Vec::new();
    };
    vec![
        EnvVar {
            name: SnapshotEncryption::KEY_ID_ENV.into(),
            value: Some(encryption.key_id.clone()),
            ..EnvVar::default()
        },
        EnvVar {
            name: SnapshotEncryption::KEY_ENV.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: encryption.secret.name.clone(),
                    key: encryption.secret.key.clone(),
                    ..SecretKeySelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
    ]
}

/// The job's secrets as environment variables.
pub(super) fn env_from(spec: &StreamJobSpec) -> Vec<EnvFromSource> {
    spec.secrets
        .env
        .iter()
        .map(|s| EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: s.name.clone(),
                ..SecretEnvSource::default()
            }),
            ..EnvFromSource::default()
        })
        .collect()
}

/// A pod template: ours, then `spec.podTemplate`, then the role's, merged in that order.
pub(super) fn template(
    job: &JobRef,
    spec: &StreamJobSpec,
    role: Role,
    annotations: BTreeMap<String, String>,
    mut container: Container,
    volumes: Vec<Volume>,
) -> Result<PodTemplateSpec, Error> {
    let (settings, role_field) = match role {
        Role::Worker => (&spec.worker, "spec.worker.podTemplate"),
        Role::Coordinator | Role::Tool(_) => (&spec.coordinator, "spec.coordinator.podTemplate"),
    };
    if !settings.resources.is_empty() {
        container.resources = Some(resources(&settings.resources));
    }
    // The `restricted` Pod Security Standard: a job's pods run in a namespace that enforces
    // it. The root filesystem is read-only, so what the process writes goes to volumes:
    // state to `state`, temporary files (a heap job's restore) to `tmp`.
    container.security_context = Some(restricted_container());
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(VolumeMount {
            name: TMP_VOLUME.into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        });
    let volumes = [volumes, vec![empty_dir(TMP_VOLUME)]].concat();
    let ours = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(job.labels(Some(role.label()))),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: Some(volumes),
            // A coordinator cancelling, a worker closing its connections: seconds.
            termination_grace_period_seconds: Some(30),
            // Nothing in a job's pods calls the Kubernetes API: no credentials to steal.
            automount_service_account_token: Some(false),
            security_context: Some(restricted_pod()),
            ..PodSpec::default()
        }),
    };
    let overlays = [
        ("spec.podTemplate", &spec.pod_template),
        (role_field, &settings.pod_template),
    ];
    if overlays.iter().all(|(_, overlay)| overlay.is_none()) {
        return Ok(ours);
    }
    let mut template =
        serde_json::to_value(&ours).map_err(|e| Error::Build(format!("the pod template: {e}")))?;
    let mut merged = ours;
    for (field, overlay) in overlays {
        if let Some(overlay) = overlay {
            merge(&mut template, overlay);
            // Checked after each overlay so that a bad one names its field.
            merged = serde_json::from_value(template.clone())
                .map_err(|e| Error::Build(format!("{field}: {e}")))?;
        }
    }
    Ok(merged)
}

/// The container's resources: the role's requests and limits, an absent map for none.
fn resources(role: &sluice_crds::ResourceRequirements) -> ResourceRequirements {
    let quantities = |map: &BTreeMap<String, sluice_crds::Quantity>| {
        (!map.is_empty()).then(|| {
            map.iter()
                .map(|(name, q)| (name.clone(), Quantity(q.as_str().to_string())))
                .collect()
        })
    };
    ResourceRequirements {
        requests: quantities(&role.requests),
        limits: quantities(&role.limits),
        ..ResourceRequirements::default()
    }
}

/// Merges `overlay` into `base`: objects key by key, lists of named objects (containers,
/// volumes, env, ports …) entry by entry by `name`, anything else replaced.
pub fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) if o.iter().all(named) && b.iter().all(named) => {
            for item in o {
                match b.iter_mut().find(|e| e["name"] == item["name"]) {
                    Some(existing) => merge(existing, item),
                    None => b.push(item.clone()),
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn named(v: &Value) -> bool {
    v.get("name").is_some_and(Value::is_string)
}

//! The crate's manifests run this crate's job: the embedded one as it is, the Kubernetes one
//! with the same settings except where it must differ (more clicks, a throttled sink, output
//! on the volume every pod mounts).

use serde_json::Value;
use sluice_crds::{parse_manifest, StreamJobManifest};
use sluice_example_sessions::{register, JOB_NAME};
use sluice_runtime::jobs::JobRegistry;
use std::path::Path;

fn load(relative: &str) -> StreamJobManifest {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: cannot read: {e}", path.display()));
    parse_manifest(&text, relative).unwrap_or_else(|e| panic!("{e}"))
}

fn builds(manifest: &StreamJobManifest) {
    let mut registry = JobRegistry::new();
    register(&mut registry);
    let spec = &manifest.spec;
    assert_eq!(spec.job.name, JOB_NAME);
    registry
        .build(
            &spec.job.name,
            spec.parallelism as usize,
            spec.max_parallelism,
            &spec.job.config,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", manifest.metadata.name));
}

/// The config without what the Kubernetes manifest changes on purpose.
fn comparable(config: &Value) -> Value {
    let mut config = config.clone();
    let object = config.as_object_mut().expect("config is an object");
    object.remove("output");
    object.remove("sink");
    if let Some(generator) = object.get_mut("generator").and_then(Value::as_object_mut) {
        generator.remove("clicks");
    }
    config
}

#[test]
fn the_embedded_and_kubernetes_manifests_run_the_same_job() {
    let embedded = load("sessions.yaml");
    let kubernetes = load("kubernetes/sessions.yaml");
    builds(&embedded);
    builds(&kubernetes);
    assert_eq!(embedded.metadata.name, kubernetes.metadata.name);
    assert_eq!(embedded.spec.parallelism, kubernetes.spec.parallelism);
    assert_eq!(
        embedded.spec.max_parallelism,
        kubernetes.spec.max_parallelism
    );
    assert_eq!(
        comparable(&embedded.spec.job.config),
        comparable(&kubernetes.spec.job.config)
    );
    assert_eq!(
        kubernetes.spec.image.as_deref(),
        Some("sluice.local/sessions:dev")
    );
}

#[test]
fn the_kubernetes_manifest_writes_only_under_its_volume() {
    let manifest = load("kubernetes/sessions.yaml");
    let mount = manifest
        .spec
        .pod_template
        .as_ref()
        .and_then(|t| t.pointer("/spec/containers/0/volumeMounts/0/mountPath"))
        .and_then(Value::as_str)
        .expect("a volume mount")
        .to_string();
    let output = manifest.spec.job.config["output"].as_str().expect("output");
    assert!(Path::new(output).starts_with(&mount), "{output}");
    let storage = manifest
        .spec
        .checkpointing
        .storage
        .as_deref()
        .expect("checkpoint storage");
    assert!(
        Path::new(storage.trim_start_matches("file://")).starts_with(&mount),
        "{storage}"
    );
}

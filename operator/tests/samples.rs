//! The StreamJob samples for Kubernetes load, pass validation and become children; they
//! stay in step with the embedded samples they are made from, and keep their checkpoints,
//! savepoints and output in object storage, reached with the keys of one Secret, never on a
//! node's disk.

use serde_json::Value;
use sluice_crds::{parse_manifest, SpecRevision, StreamJobManifest};
use sluice_operator::build::{children, JobRef};
use std::path::{Path, PathBuf};

/// The embedded samples, run with `sluice run`.
fn embedded_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/samples");
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// The samples the operator runs, one per embedded sample.
fn kubernetes_dir() -> PathBuf {
    embedded_dir().join("kubernetes")
}

/// Every sample the operator runs: those of the embedded samples, and those reading and
/// writing Kafka (`kubernetes/kafka`, the forms of `config/samples/kafka`).
fn every_kubernetes_sample() -> Vec<PathBuf> {
    let mut files = yaml_files(&kubernetes_dir());
    files.extend(yaml_files(&kubernetes_dir().join("kafka")));
    files
}

/// The `.yaml` files directly in `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: cannot list: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("{}: cannot list: {e}", dir.display()))
                .path()
        })
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> StreamJobManifest {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: cannot read: {e}", path.display()));
    parse_manifest(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"))
}

/// `spec.job.config` without what a Kubernetes sample changes on purpose: `output` (a path
/// on the shared volume), `generator.events` and `sink` (more events, written at a bounded
/// rate: a job that runs long enough to upgrade, without filling the node's disk).
fn comparable_config(config: &Value) -> Value {
    let mut config = config.clone();
    if let Some(object) = config.as_object_mut() {
        object.remove("output");
        object.remove("sink");
        // Brokers are addressed differently from a pod than from the machine.
        if let Some(kafka) = object.get_mut("kafka").and_then(Value::as_object_mut) {
            kafka.remove("bootstrapServers");
        }
        if let Some(generator) = object.get_mut("generator").and_then(Value::as_object_mut) {
            generator.remove("events");
        }
    }
    config
}

/// How the Kubernetes sample `kubernetes` (read from `file`) departs from the embedded
/// sample `embedded`, one message per field.
fn drift(file: &str, embedded: &StreamJobManifest, kubernetes: &StreamJobManifest) -> Vec<String> {
    let mut problems = Vec::new();
    let mut compare = |field: &str, want: String, got: String| {
        if want != got {
            problems.push(format!(
                "{file}: {field} is {got}, the embedded sample has {want}"
            ));
        }
    };
    compare(
        "metadata.name",
        format!("{:?}", embedded.metadata.name),
        format!("{:?}", kubernetes.metadata.name),
    );
    compare(
        "spec.job.name",
        format!("{:?}", embedded.spec.job.name),
        format!("{:?}", kubernetes.spec.job.name),
    );
    compare(
        "spec.parallelism",
        embedded.spec.parallelism.to_string(),
        kubernetes.spec.parallelism.to_string(),
    );
    compare(
        "spec.maxParallelism",
        embedded.spec.max_parallelism.to_string(),
        kubernetes.spec.max_parallelism.to_string(),
    );
    compare(
        "spec.job.config (without output, generator.events and sink)",
        comparable_config(&embedded.spec.job.config).to_string(),
        comparable_config(&kubernetes.spec.job.config).to_string(),
    );
    problems
}

/// The Secret holding the S3 endpoint and keys of the samples (`object-storage/secret.yaml`).
const STORAGE_SECRET: &str = "sluice-object-storage";

/// Where the Kubernetes sample `manifest` (read from `file`) keeps data anywhere but in
/// object storage (or Kafka, for output), or cannot reach it, one message per field.
fn storage_problems(file: &str, manifest: &StreamJobManifest) -> Vec<String> {
    let mut problems = Vec::new();
    let is_object_storage = |uri: &str| uri.starts_with("s3://");
    match manifest.spec.job.config.get("output").map(Value::as_str) {
        // Written to brokers.
        Some(Some(output)) if output.starts_with("kafka://") => {}
        Some(Some(output)) if is_object_storage(output) => {}
        Some(Some(output)) => problems.push(format!(
            "{file}: spec.job.config.output {output:?} is not object storage (s3://…)"
        )),
        Some(None) => problems.push(format!("{file}: spec.job.config.output is not a string")),
        None => problems.push(format!("{file}: spec.job.config.output is missing")),
    }
    let storages = [
        (
            "spec.checkpointing.storage",
            manifest.spec.checkpointing.storage.as_deref(),
            true,
        ),
        (
            "spec.savepoints.storage",
            manifest.spec.savepoints.storage.as_deref(),
            false,
        ),
    ];
    for (field, storage, required) in storages {
        match storage {
            None if required => problems.push(format!("{file}: {field} is missing")),
            Some(uri) if !is_object_storage(uri) => problems.push(format!(
                "{file}: {field} {uri:?} is not object storage (s3://…)"
            )),
            _ => {}
        }
    }
    if !manifest
        .spec
        .secrets
        .env
        .iter()
        .any(|s| s.name == STORAGE_SECRET)
    {
        problems.push(format!(
            "{file}: spec.secrets.env does not name {STORAGE_SECRET}, the S3 endpoint and keys"
        ));
    }
    let volumes = manifest
        .spec
        .pod_template
        .as_ref()
        .and_then(|template| template.pointer("/spec/volumes"))
        .and_then(Value::as_array);
    if volumes
        .into_iter()
        .flatten()
        .any(|v| v.get("hostPath").is_some())
    {
        problems.push(format!(
            "{file}: spec.podTemplate.spec.volumes: a hostPath ties the job to one node's disk"
        ));
    }
    problems
}

#[test]
fn every_kubernetes_sample_builds_its_children() {
    let dir = kubernetes_dir();
    let mut seen = 0;
    for path in every_kubernetes_sample() {
        let manifest = load(&path);
        let job = JobRef {
            namespace: "default".into(),
            name: manifest.metadata.name.clone(),
            uid: "uid".into(),
        };
        let mut revision = SpecRevision::new(manifest.spec, Some(1));
        revision.run = Some("run-1".into());
        let built = children(&job, &revision).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let pod = built.workers.spec.unwrap().template.spec.unwrap();
        let secrets: Vec<String> = pod.containers[0]
            .env_from
            .iter()
            .flatten()
            .filter_map(|source| source.secret_ref.as_ref().map(|s| s.name.clone()))
            .collect();
        assert!(
            secrets.iter().any(|name| name == STORAGE_SECRET),
            "{}: the object-storage keys reach the workers ({secrets:?})",
            path.display()
        );
        seen += 1;
    }
    assert!(seen > 0, "{}: no samples", dir.display());
}

#[test]
fn every_embedded_sample_has_a_kubernetes_sample_that_matches_it() {
    let mut problems = Vec::new();
    let pairs = [
        (embedded_dir(), kubernetes_dir()),
        (embedded_dir().join("kafka"), kubernetes_dir().join("kafka")),
    ];
    for (dir, kubernetes) in pairs {
        let embedded = yaml_files(&dir);
        assert!(!embedded.is_empty(), "{}: no samples", dir.display());
        problems.extend(drift_of_samples(&embedded, &kubernetes));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// How the Kubernetes samples in `kubernetes` depart from the `embedded` ones, one message
/// per missing sample or field.
fn drift_of_samples(embedded: &[PathBuf], kubernetes: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for embedded_path in embedded {
        let name = embedded_path
            .file_name()
            .unwrap_or_else(|| panic!("{}: no file name", embedded_path.display()));
        let kubernetes_path = kubernetes.join(name);
        if !kubernetes_path.is_file() {
            problems.push(format!(
                "{}: missing, the Kubernetes sample for {}",
                kubernetes_path.display(),
                embedded_path.display()
            ));
            continue;
        }
        problems.extend(drift(
            &kubernetes_path.display().to_string(),
            &load(embedded_path),
            &load(&kubernetes_path),
        ));
    }
    problems
}

#[test]
fn every_kubernetes_sample_keeps_its_data_in_object_storage() {
    let dir = kubernetes_dir();
    let files = every_kubernetes_sample();
    assert!(!files.is_empty(), "{}: no samples", dir.display());
    let problems: Vec<String> = files
        .iter()
        .flat_map(|path| storage_problems(&path.display().to_string(), &load(path)))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checks above catch what they are meant to, and name the file and the field.
#[test]
fn the_sample_checks_report_drift_and_data_outside_object_storage() {
    let path = kubernetes_dir().join("nexmark-q5.yaml");
    let original = load(&path);
    let file = "k8s/nexmark-q5.yaml";

    let mut changed = original.clone();
    changed.metadata.name = "other".into();
    changed.spec.parallelism += 1;
    changed.spec.job.config["generator"]["outOfOrderMs"] = 1.into();
    changed.spec.job.config["output"] = "/tmp/out".into();
    changed.spec.checkpointing.storage = Some("file:///var/lib/sluice/nexmark-q5/state".into());
    changed.spec.savepoints.storage = Some("file:///var/lib/sluice/savepoints".into());
    changed.spec.secrets.env.clear();
    changed.spec.pod_template = Some(serde_json::json!({
        "spec": {"volumes": [{"name": "data", "hostPath": {"path": "/var/lib/sluice"}}]}
    }));

    let drifted = drift(file, &original, &changed);
    for field in ["metadata.name", "spec.parallelism", "spec.job.config"] {
        assert!(
            drifted
                .iter()
                .any(|p| p.starts_with(&format!("{file}: {field}"))),
            "{field} not reported: {drifted:?}"
        );
    }
    assert_eq!(drifted.len(), 3, "{drifted:?}");

    let outside = storage_problems(file, &changed);
    for field in [
        "spec.job.config.output",
        "spec.checkpointing.storage",
        "spec.savepoints.storage",
        "spec.secrets.env",
        "spec.podTemplate.spec.volumes",
    ] {
        assert!(
            outside
                .iter()
                .any(|p| p.starts_with(&format!("{file}: {field}"))),
            "{field} not reported: {outside:?}"
        );
    }
    assert_eq!(outside.len(), 5, "{outside:?}");

    // Only `output`, `generator.events` and `sink` may differ.
    let mut allowed = original.clone();
    allowed.spec.job.config["generator"]["events"] = 7.into();
    allowed.spec.job.config["sink"] = serde_json::json!({"maxRecordsPerSecond": 7});
    allowed.spec.job.config["output"] = "elsewhere".into();
    assert_eq!(drift(file, &original, &allowed), Vec::<String>::new());
}

/// The Secret the samples name exists as a sample too, with the settings Sluice reads.
#[test]
fn the_object_storage_secret_holds_the_s3_settings_the_samples_need() {
    let path = kubernetes_dir().join("object-storage/secret.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: cannot read: {e}", path.display()));
    let secret: Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    assert_eq!(secret["kind"], "Secret", "{}", path.display());
    assert_eq!(
        secret["metadata"]["name"],
        STORAGE_SECRET,
        "{}",
        path.display()
    );
    for key in [
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    ] {
        assert!(
            secret["stringData"][key].is_string(),
            "{}: stringData.{key} is missing",
            path.display()
        );
    }
}

//! The CRDs (feature `kube`): the committed YAML matches the Rust types, the schemas are
//! structural as the API server requires, and the API types read the same manifests.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use sluice_crds::{crd, parse_manifest, StreamJob, StreamJobManifest};
use std::path::Path;

#[test]
fn committed_crds_match_the_rust_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in crd::COMMITTED_DIRS {
        for (file, definition) in crd::all() {
            let expected = crd::to_yaml(&definition).unwrap();
            let committed = std::fs::read_to_string(root.join(dir).join(file)).unwrap_or_default();
            assert!(
                committed == expected,
                "{dir}/{file} is stale: the Rust types in crds/src changed since it was \
                 generated. Regenerate it from the workspace root with:\n    {}\nand commit the result.",
                crd::REGENERATE
            );
        }
    }
}

fn schema(definition: &CustomResourceDefinition) -> Value {
    let version = &definition.spec.versions[0];
    serde_json::to_value(
        version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap(),
    )
    .unwrap()
}

/// The parts of Kubernetes' "structural schema" rules a derive can break: every node says
/// its type (or is int-or-string / free-form), and nothing hides in anyOf/oneOf branches.
fn assert_structural(node: &Value, path: &str) {
    let obj = node
        .as_object()
        .unwrap_or_else(|| panic!("{path}: not an object"));
    let free = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    assert!(
        obj.contains_key("type") || free || int_or_string,
        "{path}: no type"
    );
    for junctor in ["anyOf", "oneOf", "allOf", "not", "$ref"] {
        assert!(!obj.contains_key(junctor), "{path}: has {junctor}");
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            assert_structural(child, &format!("{path}.{name}"));
        }
    }
    if let Some(items) = obj.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    if let Some(values) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        assert_structural(values, &format!("{path}{{}}"));
    }
}

#[test]
fn schemas_are_structural() {
    for (file, definition) in crd::all() {
        assert_structural(&schema(&definition), file);
    }
}

#[test]
fn the_stream_job_crd_has_its_names_subresources_and_columns() {
    let definition = crd::stream_job();
    let spec = &definition.spec;
    assert_eq!(
        definition.metadata.name.as_deref(),
        Some("streamjobs.sluice.dev")
    );
    assert_eq!(
        (spec.group.as_str(), spec.scope.as_str()),
        ("sluice.dev", "Namespaced")
    );
    assert_eq!(spec.names.kind, "StreamJob");
    assert_eq!(
        spec.names.short_names.as_deref(),
        Some(&["sj".to_string()][..])
    );
    let version = &spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    let sub = version.subresources.as_ref().unwrap();
    assert!(sub.status.is_some());
    let scale = sub.scale.as_ref().unwrap();
    assert_eq!(scale.spec_replicas_path, ".spec.parallelism");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Phase",
            "Parallelism",
            "Target",
            "Records/s",
            "Lag (s)",
            "Last Savepoint",
            "Age"
        ]
    );
}

/// Every CEL rule of the StreamJob schema, as (path, rule).
fn rules(node: &Value, path: &str, out: &mut Vec<(String, String)>) {
    if let Some(list) = node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for rule in list {
            out.push((path.to_string(), rule["rule"].as_str().unwrap().to_string()));
        }
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            rules(child, &format!("{path}.{name}"), out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get(key).filter(|v| v.is_object()) {
            rules(child, &format!("{path}[]"), out);
        }
    }
}

#[test]
fn the_cel_rules_sit_on_the_fields_they_check() {
    let mut found = Vec::new();
    rules(&schema(&crd::stream_job()), "", &mut found);
    let has = |path: &str, rule: &str| found.iter().any(|(p, r)| p == path && r == rule);
    assert!(has(".spec", "self.parallelism <= self.maxParallelism"));
    assert!(has(".spec.parallelism", "self >= 1"));
    assert!(has(".spec.maxParallelism", "self <= 32768"));
    assert!(has(".spec.maxParallelism", "self == oldSelf"));
    assert!(has(".spec.job.name", "size(self) > 0"));
    assert!(has(
        ".spec.rollback",
        "!self.enabled || has(self.readinessTimeout)"
    ));
    assert!(has(".spec.checkpointing.retention", "self >= 1"));
    assert!(has(".spec.savepoints.retention.maxCount", "self >= 1"));
    assert!(
        found.iter().any(|(p, _)| p.is_empty()),
        "no rule on metadata.name"
    );
    // Every duration field carries the duration rule (and its pattern).
    for field in [
        ".spec.checkpointing.interval",
        ".spec.savepoints.periodicInterval",
        ".spec.savepoints.retention.maxAge",
        ".spec.rollback.readinessTimeout",
        ".spec.restartPolicy.backoff.initial",
        ".spec.restartPolicy.backoff.max",
        ".spec.restartPolicy.resetAfter",
    ] {
        assert!(
            has(field, "!self.matches('^(0+(ms|s|m|h))+$')"),
            "{field} lacks the duration rule"
        );
    }
}

#[test]
fn a_manifest_becomes_the_api_object_with_the_same_spec() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/from-cluster.yaml");
    let manifest =
        parse_manifest(&std::fs::read_to_string(path).unwrap(), "from-cluster.yaml").unwrap();
    let job = StreamJob::from(manifest.clone());
    assert_eq!(job.metadata.name.as_deref(), Some("hot-items"));
    assert_eq!(job.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(job.spec, manifest.spec);
    assert_eq!(job.status, manifest.status);
    // As JSON, the way the API server sends it, both types read the other's output.
    let json = serde_json::to_value(&job).unwrap();
    assert_eq!(
        serde_json::from_value::<StreamJob>(json.clone()).unwrap(),
        job
    );
    let back: StreamJobManifest = serde_json::from_value(json).unwrap();
    assert_eq!(back.spec, manifest.spec);
}

//! Manifests from fixtures: valid ones load, and each bad one is rejected with an error that
//! names the field at fault.

use sluice_crds::parse_manifest;

fn load(name: &str) -> Result<sluice_crds::StreamJobManifest, String> {
    let path = format!("{}/tests/fixtures/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    parse_manifest(&text, &format!("{name}.yaml")).map_err(|e| e.to_string())
}

#[test]
fn a_valid_manifest_loads_with_its_fields() {
    let m = load("valid").unwrap();
    assert_eq!(m.metadata.name, "hot-items");
    assert_eq!(m.metadata.namespace.as_deref(), Some("analytics"));
    assert_eq!(m.spec.job.name, "nexmark-q5");
    assert_eq!(m.spec.job.config["generator"]["events"], 1000);
    assert_eq!((m.spec.parallelism, m.spec.max_parallelism), (4, 256));
}

#[test]
fn defaults_apply_to_omitted_fields() {
    let yaml = "apiVersion: sluice.dev/v1alpha1\nkind: StreamJob\nmetadata: {name: x}\nspec: {job: {name: q}}\n";
    let m = parse_manifest(yaml, "inline").unwrap();
    assert_eq!((m.spec.parallelism, m.spec.max_parallelism), (1, 128));
    assert!(m.spec.job.config.is_null());
}

#[test]
fn bad_manifests_name_the_field() {
    let cases = [
        (
            "parallelism-not-a-number",
            "parallelism-not-a-number.yaml: spec.parallelism: invalid type: string \"four\", expected u32",
        ),
        (
            "parallelism-above-max",
            "parallelism-above-max.yaml: spec.parallelism: 300 exceeds spec.maxParallelism (256)",
        ),
        (
            "unknown-field",
            "unknown-field.yaml: spec.job.confg: unknown field `confg`, expected `name` or `config`",
        ),
        (
            "wrong-kind",
            "wrong-kind.yaml: apiVersion: expected \"sluice.dev/v1alpha1\", found \"apps/v1\"",
        ),
        (
            "missing-job",
            "missing-job.yaml: spec: missing field `job`",
        ),
        (
            "many-errors",
            "many-errors.yaml: spec.job.name: \"Nexmark_Q5\" is not a job name: use 1-63 lowercase letters, digits and '-'; \
             spec.job.config: must be a mapping; spec.maxParallelism: 40000 is outside 1..=32768; \
             spec.parallelism: must be at least 1",
        ),
    ];
    for (fixture, expected) in cases {
        assert_eq!(load(fixture).unwrap_err(), expected, "fixture {fixture}");
    }
}

#[test]
fn yaml_syntax_errors_say_where() {
    let err = parse_manifest("apiVersion: [unclosed", "broken.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("broken.yaml: not a YAML document: "),
        "{err}"
    );
    assert!(err.contains("line 1"), "{err}");
}

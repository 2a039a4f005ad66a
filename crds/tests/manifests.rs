//! Manifests from fixtures: valid ones load with their fields, and each bad one is rejected
//! with an error that names the field at fault.

use sluice_crds::{
    parse_manifest, DesiredState, HumanDuration, JobSpec, OnDelete, Quantity, StreamJobManifest,
    StreamJobSpec, UpgradeMode,
};

fn load(name: &str) -> Result<StreamJobManifest, String> {
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
fn every_field_of_the_spec_loads() {
    let m = load("full").unwrap();
    let s = &m.spec;
    assert_eq!(m.metadata.labels["team"], "ads");
    assert_eq!(m.metadata.annotations["owner"], "ads@example.com");
    assert_eq!(
        s.image.as_deref(),
        Some("registry.example.com/sluice-jobs:1.4.2")
    );
    assert_eq!(s.job.config["window"]["slideMs"], 2000);
    assert_eq!(
        (s.parallelism, s.max_parallelism, s.slots_per_worker),
        (6, 512, 2)
    );
    assert_eq!(
        s.coordinator.resources.requests["cpu"],
        Quantity::from("500m")
    );
    assert_eq!(s.worker.resources.requests["cpu"], Quantity::from("2"));
    assert_eq!(
        s.worker.resources.limits["nvidia.com/gpu"],
        Quantity::from("1")
    );
    assert_eq!(
        s.worker.pod_template.as_ref().unwrap()["spec"]["nodeSelector"]["pool"],
        "streaming"
    );
    assert_eq!(
        s.pod_template.as_ref().unwrap()["metadata"]["labels"]["cost-center"],
        "ads"
    );
    let c = &s.checkpointing;
    assert_eq!(c.interval.to_std().unwrap().as_secs(), 60);
    assert_eq!(c.storage.as_deref(), Some("s3://checkpoints/hot-items"));
    assert_eq!((c.retention, c.unaligned), (5, true));
    let sp = &s.savepoints;
    assert_eq!(sp.trigger_nonce, Some(3));
    assert_eq!(sp.periodic_interval, Some(HumanDuration::from("6h")));
    assert_eq!(sp.retention.max_count, 10);
    assert_eq!(
        sp.retention
            .max_age
            .as_ref()
            .and_then(HumanDuration::to_std),
        Some(std::time::Duration::from_secs(168 * 3600))
    );
    assert_eq!(sp.on_delete, OnDelete::None);
    assert_eq!(sp.storage.as_deref(), Some("s3://savepoints/hot-items"));
    assert_eq!(s.upgrade_mode, UpgradeMode::LastState);
    assert_eq!(s.state, DesiredState::Suspended);
    assert_eq!(
        s.initial_savepoint.as_deref(),
        Some("s3://savepoints/hot-items/sp-000042")
    );
    assert!(s.allow_non_restored_state);
    assert!(s.rollback.enabled);
    assert_eq!(
        s.rollback.readiness_timeout,
        Some(HumanDuration::from("5m"))
    );
    let r = &s.restart_policy;
    assert_eq!(
        r.backoff.max.to_std(),
        Some(std::time::Duration::from_secs(150))
    );
    assert_eq!((r.backoff.multiplier, r.backoff.jitter), (1.5, 0.0));
    assert_eq!(r.max_restarts, Some(20));
    assert_eq!(r.reset_after, HumanDuration::from("30m"));
    assert_eq!(s.priority.as_deref(), Some("critical"));
    let token = s.secrets.token.as_ref().unwrap();
    assert_eq!(
        (token.name.as_str(), token.key.as_str()),
        ("hot-items-control", "api-token")
    );
    assert_eq!(s.secrets.env[0].name, "s3-credentials");
}

#[test]
fn omitted_fields_take_the_defaults_the_crd_declares() {
    let yaml = "apiVersion: sluice.dev/v1alpha1\nkind: StreamJob\nmetadata: {name: x}\nspec: {job: {name: q}}\n";
    let m = parse_manifest(yaml, "inline").unwrap();
    assert_eq!(m.spec, StreamJobSpec::new(JobSpec::new("q")));
    let s = &m.spec;
    assert_eq!(
        (s.parallelism, s.max_parallelism, s.slots_per_worker),
        (1, 128, 1)
    );
    assert!(s.job.config.is_null());
    assert_eq!(s.checkpointing.interval, HumanDuration::from("30s"));
    assert_eq!(s.checkpointing.retention, 3);
    assert_eq!(s.savepoints.retention.max_count, 5);
    assert_eq!(s.savepoints.on_delete, OnDelete::Savepoint);
    assert_eq!(s.upgrade_mode, UpgradeMode::Savepoint);
    assert_eq!(s.state, DesiredState::Running);
    assert_eq!(s.restart_policy.backoff.initial, HumanDuration::from("10s"));
    assert_eq!(s.restart_policy.backoff.max, HumanDuration::from("5m"));
    assert_eq!(s.restart_policy.reset_after, HumanDuration::from("10m"));
    assert_eq!(s.secrets.token, None);
}

#[test]
fn an_object_read_back_from_a_cluster_loads() {
    let m = load("from-cluster").unwrap();
    assert_eq!(m.metadata.name, "hot-items");
    assert_eq!(m.spec.job.name, "nexmark-q5");
    let status = m.status.unwrap();
    assert_eq!(status.replicas, Some(2));
    assert_eq!(
        status.condition("Ready").map(|c| c.reason.as_str()),
        Some("Running")
    );
}

#[test]
fn a_manifest_survives_writing_and_reading_back() {
    let m = load("full").unwrap();
    let yaml = serde_yaml::to_string(&m).unwrap();
    assert_eq!(parse_manifest(&yaml, "again").unwrap(), m);
}

#[test]
fn bad_manifests_name_the_field() {
    let cases: &[(&str, &str)] = &[
        (
            "parallelism-not-a-number",
            "parallelism-not-a-number.yaml: spec.parallelism: invalid type: string \"four\", expected u32",
        ),
        (
            "parallelism-above-max",
            "parallelism-above-max.yaml: spec.parallelism: 300 is above spec.maxParallelism (256)",
        ),
        (
            "unknown-field",
            "unknown-field.yaml: spec.job.confg: unknown field `confg`, expected `name` or `config`",
        ),
        (
            "unknown-field-in-list",
            "unknown-field-in-list.yaml: spec.secrets.env[1].nme: unknown field `nme`, expected `name`",
        ),
        (
            "unknown-upgrade-mode",
            "unknown-upgrade-mode.yaml: spec.upgradeMode: unknown variant `rolling`, expected one of `savepoint`, `last-state`, `stateless`",
        ),
        (
            "wrong-kind",
            "wrong-kind.yaml: apiVersion: expected \"sluice.dev/v1alpha1\", found \"apps/v1\"",
        ),
        (
            "missing-api-version",
            "missing-api-version.yaml: apiVersion: expected \"sluice.dev/v1alpha1\", found nothing",
        ),
        ("missing-job", "missing-job.yaml: spec: missing field `job`"),
        (
            "fractional-cpu",
            "fractional-cpu.yaml: spec.worker.resources.requests.cpu: invalid type: floating point `0.5`, \
             expected an integer or a string: write fractions as text (\"0.5\") or in thousandths (500m)",
        ),
        (
            "bad-name",
            "bad-name.yaml: metadata.name: must be at most 45 lowercase letters, digits and '-', starting \
             with a letter and ending with a letter or digit: it names the job's pods and services",
        ),
        (
            "rollback-without-timeout",
            "rollback-without-timeout.yaml: spec.rollback.readinessTimeout: is required when spec.rollback.enabled is true",
        ),
        (
            "many-errors",
            "many-errors.yaml: spec.job.name: \"Nexmark_Q5\" is not a job name: use lowercase letters, digits and '-', \
             starting and ending with a letter or digit; spec.job.config: must be a mapping; \
             spec.parallelism: 0 is below the minimum of 1; spec.maxParallelism: 40000 is above the maximum of 32768",
        ),
        (
            "bad-durations",
            "bad-durations.yaml: spec.checkpointing.interval: \"5 minutes\" is not a duration such as 30s, 5m or 1h30m \
             (whole numbers of ms, s, m or h); spec.savepoints.periodicInterval: \"0s\" must be longer than zero; \
             spec.savepoints.retention.maxAge: \"7d\" is not a duration such as 30s, 5m or 1h30m (whole numbers of ms, s, m or h); \
             spec.restartPolicy.backoff.max: \"10s\" is shorter than spec.restartPolicy.backoff.initial (\"1m\")",
        ),
        (
            "bad-resources-and-uris",
            "bad-resources-and-uris.yaml: spec.worker.resources.requests.cpu: must not be negative; \
             spec.worker.resources.requests.memory: \"4GB\" is not a quantity such as 500m, 2 or 4Gi; \
             spec.worker.resources.limits[nvidia.com/gpu]: \"lots\" is not a quantity such as 500m, 2 or 4Gi; \
             spec.checkpointing.storage: \"/var/lib/sluice\" is not a URI such as s3://bucket/path or file:///var/lib/sluice; \
             spec.checkpointing.retention: 0 is below the minimum of 1; \
             spec.checkpointing.encryption.keyId: \"key 1\" is not a key id: use letters, digits, '-', '_' and '.'; \
             spec.checkpointing.encryption.secret.name: \"Snapshot-Keys\" is not a Secret name: use lowercase letters, digits, '-' and '.'; \
             spec.initialSavepoint: \"sp-000042\" is not a URI such as s3://bucket/path or file:///var/lib/sluice",
        ),
        (
            "bad-policies",
            "bad-policies.yaml: spec.image: must not be empty; spec.slotsPerWorker: 0 is below the minimum of 1; \
             spec.savepoints.retention.maxCount: 0 is below the minimum of 1; \
             spec.restartPolicy.backoff.multiplier: must be at least 1; \
             spec.restartPolicy.backoff.jitter: must be between 0 and 1; \
             spec.priority: \"High\" is not a priority class name: use lowercase letters, digits and '-', starting and ending with a letter or digit; \
             spec.secrets.token.name: \"Control_Token\" is not a Secret name: use lowercase letters, digits, '-' and '.'; \
             spec.secrets.token.key: \"api token\" is not a Secret key: use letters, digits, '-', '_' and '.'; \
             spec.secrets.env[1].name: \"-kafka\" is not a Secret name: use lowercase letters, digits, '-' and '.'",
        ),
    ];
    for (fixture, expected) in cases {
        assert_eq!(&load(fixture).unwrap_err(), expected, "fixture {fixture}");
    }
}

#[test]
fn a_misspelt_spec_field_is_named_with_the_fields_there_are() {
    let err = load("unknown-spec-field").unwrap_err();
    assert!(
        err.starts_with("unknown-spec-field.yaml: spec.paralelism: unknown field `paralelism`, expected one of `image`, `job`, `parallelism`"),
        "{err}"
    );
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

//! The objects a job's revision becomes, compared with `fixtures/children.yaml`: a change to
//! them changes (and may restart) every running job's children on an operator upgrade, so
//! it must be deliberate. After one, write the fixture anew with
//! `SLUICE_WRITE_FIXTURES=1 cargo test -p sluice-operator --test children` and review it.

use serde::Serialize;
use sluice_crds::{parse_manifest, SpecRevision};
use sluice_operator::build::{
    children, preflight, savepoint_cleanup, token_secret, JobRef, NetworkAccess,
};
use std::path::Path;

/// Every part of a spec the children depend on: storage, secrets, resources and pod
/// template overrides of both kinds.
const MANIFEST: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: StreamJob
metadata: {name: q5}
spec:
  image: sluice:1
  job: {name: nexmark-q5, config: {output: /data/out}}
  parallelism: 5
  slotsPerWorker: 2
  checkpointing: {storage: "file:///data/ck/", interval: 2s}
  allowNonRestoredState: true
  secrets:
    token: {name: q5-api, key: bearer}
    env: [{name: s3}, {name: kafka}]
  coordinator:
    resources: {requests: {cpu: 500m}, limits: {memory: 1Gi}}
    podTemplate:
      metadata: {annotations: {team: streams}}
      spec:
        nodeSelector: {disk: ssd}
        containers: [{name: sluice, env: [{name: RUST_LOG, value: info}]}, {name: proxy, image: proxy:2}]
  worker:
    resources: {requests: {memory: 2Gi}}
  podTemplate:
    spec:
      volumes: [{name: data, hostPath: {path: /srv}}]
      containers: [{name: sluice, volumeMounts: [{name: data, mountPath: /data}]}]
"#;

fn yaml(object: &impl Serialize) -> String {
    serde_yaml::to_string(object).unwrap()
}

#[test]
fn a_revision_becomes_the_same_children_as_before() {
    let manifest = parse_manifest(MANIFEST, "children.rs").unwrap();
    let job = JobRef {
        namespace: "streams".into(),
        name: manifest.metadata.name.clone(),
        uid: "0b5e1c9e-7d4f-4f43-9a4e-2f1d6f0c3a11".into(),
    };
    let mut revision = SpecRevision::new(manifest.spec, Some(3));
    revision.run = Some("run-7".into());
    revision.restore_from = Some("file:///data/ck/savepoints/streams/q5/sp-0000000004".into());
    let built = children(&job, &revision).unwrap().with_network_policies(
        &job,
        &NetworkAccess {
            control_namespaces: vec!["sluice-system".into(), "monitoring".into()],
        },
    );
    let (check_manifest, check) = preflight(
        &job,
        &revision,
        "file:///data/ck/savepoints/streams/q5/sp-0000000004",
    )
    .unwrap();
    let cleanup = savepoint_cleanup(
        &job,
        &revision.spec,
        &["file:///data/ck/savepoints/streams/q5/sp-0000000001".into()],
    )
    .unwrap();
    let documents = [
        yaml(&built.manifest),
        yaml(&built.coordinator),
        yaml(&built.coordinator_service),
        yaml(&built.workers),
        yaml(&built.worker_service),
        yaml(&built.disruption_budget),
        yaml(&built.network_policies),
        yaml(&check_manifest),
        yaml(&check),
        yaml(&cleanup),
        yaml(&token_secret(&job, "generated-token").unwrap()),
    ];
    let text = documents.join("---\n");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/children.yaml");
    if std::env::var_os("SLUICE_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let fixture = std::fs::read_to_string(&path).unwrap_or_default();
    let first_difference = fixture
        .lines()
        .zip(text.lines())
        .position(|(a, b)| a != b)
        .map_or(fixture.lines().count().min(text.lines().count()), |i| i);
    assert!(
        fixture == text,
        "{} differs from the built children from line {}:\n{}",
        path.display(),
        first_difference + 1,
        text.lines()
            .skip(first_difference)
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

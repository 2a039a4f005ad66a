//! The children the operator applies, compared whole with the objects committed under
//! `tests/fixtures/children/`. A change of a pod template restarts every running job when
//! the new operator applies it, so such a change must be deliberate: rewrite the fixtures
//! with `SLUICE_WRITE_FIXTURES=1 cargo test -p sluice-operator --test children` and review
//! the diff.

use serde::Serialize;
use serde_json::{json, Value};
use sluice_crds::{parse_manifest, SpecRevision};
use sluice_operator::build::{self, JobRef};
use std::path::PathBuf;

fn job() -> JobRef {
    JobRef {
        namespace: "analytics".into(),
        name: "hot-items".into(),
        uid: "uid-7".into(),
    }
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn revision(file: &str, restore_from: Option<&str>) -> SpecRevision {
    let path = if file == "full.yaml" {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/tests/fixtures/full.yaml")
    } else {
        fixtures().join(file)
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let manifest = parse_manifest(&text, file).unwrap();
    let mut r = SpecRevision::new(manifest.spec, Some(3));
    r.run = Some("run-1795773600000".into());
    r.restore_from = restore_from.map(str::to_string);
    r
}

fn value(object: &impl Serialize) -> Value {
    serde_json::to_value(object).unwrap()
}

/// Compares `actual` with the committed fixture `name`, or writes it when asked to.
fn check(name: &str, actual: Value) {
    let path = fixtures().join("children").join(format!("{name}.json"));
    if std::env::var_os("SLUICE_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text = serde_json::to_string_pretty(&actual).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
        return;
    }
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        committed == actual,
        "{name} differs from {}:\n{}",
        path.display(),
        serde_json::to_string_pretty(&actual).unwrap()
    );
}

fn check_children(name: &str, revision: &SpecRevision) {
    let c = build::children(&job(), revision).unwrap();
    check(
        name,
        json!({
            "manifest": value(&c.manifest),
            "coordinator": value(&c.coordinator),
            "coordinatorService": value(&c.coordinator_service),
            "workers": value(&c.workers),
            "workerService": value(&c.worker_service),
            "disruptionBudget": value(&c.disruption_budget),
        }),
    );
}

#[test]
fn a_job_with_every_field_set_gets_the_same_children_as_before() {
    check_children(
        "full",
        &revision("full.yaml", Some("s3://savepoints/hot-items/sp-7")),
    );
}

#[test]
fn a_job_as_users_write_it_gets_the_same_children_as_before() {
    check_children("running-job", &revision("running-job.yaml", None));
}

#[test]
fn a_job_without_checkpoint_storage_gets_the_same_children_as_before() {
    check_children(
        "stateless",
        &revision("stateless-job.yaml", Some("file:///data/sp/sp-1")),
    );
}

#[test]
fn the_preflight_cleanup_and_token_objects_are_the_same_as_before() {
    let full = revision("full.yaml", None);
    let (config, check_job) =
        build::preflight(&job(), &full, "s3://savepoints/hot-items/sp-9").unwrap();
    let cleanup = build::savepoint_cleanup(
        &job(),
        &full.spec,
        &[
            "s3://savepoints/hot-items/sp-1".into(),
            "s3://savepoints/hot-items/sp-2".into(),
        ],
    )
    .unwrap();
    let token = build::token_secret(&job(), "0123abcd").unwrap();
    check(
        "tools",
        json!({
            "preflightConfig": value(&config),
            "preflight": value(&check_job),
            "cleanup": value(&cleanup),
            "token": value(&token),
        }),
    );
}

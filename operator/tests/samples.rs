//! The StreamJob samples for Kubernetes load, pass validation and become children.

use sluice_crds::{parse_manifest, SpecRevision};
use sluice_operator::build::{children, JobRef};
use std::path::Path;

#[test]
fn every_kubernetes_sample_builds_its_children() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/samples/kubernetes");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let manifest =
            parse_manifest(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
        let job = JobRef {
            namespace: "default".into(),
            name: manifest.metadata.name.clone(),
            uid: "uid".into(),
        };
        let mut revision = SpecRevision::new(manifest.spec, Some(1));
        revision.run = Some("run-1".into());
        let built = children(&job, &revision).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let pod = built.workers.spec.unwrap().template.spec.unwrap();
        assert!(
            pod.volumes.unwrap().iter().any(|v| v.name == "data"),
            "{}: the shared volume reaches the workers",
            path.display()
        );
        seen += 1;
    }
    assert!(seen > 0);
}

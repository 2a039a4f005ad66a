//! The corpus of malformed StreamJobs (`malformed-streamjobs.yaml`, shared with the cluster
//! test that applies it to a real API server): `sluice run` refuses each one with an error
//! that names the field its `# field:` line gives.

use sluice_crds::parse_manifest;

/// One document of the corpus: the field at fault and the YAML.
struct Case {
    field: String,
    yaml: String,
}

fn corpus() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/malformed-streamjobs.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    text.split("\n---\n")
        .skip(1) // the header
        .map(|doc| Case {
            field: doc
                .lines()
                .find_map(|l| l.strip_prefix("# field: "))
                .unwrap_or_else(|| panic!("a document without `# field:`: {doc}"))
                .to_string(),
            yaml: doc.to_string(),
        })
        .collect()
}

/// Whether `message` points at `field`: as the path in front of the reason, or (a missing
/// field) as the parent's path with the field's name.
fn names(message: &str, field: &str) -> bool {
    let (parent, leaf) = field.rsplit_once('.').unwrap_or(("", field));
    message.contains(&format!("{field}: "))
        || message.contains(&format!("{parent}: missing field `{leaf}`"))
}

#[test]
fn the_corpus_has_at_least_fifty_documents_each_under_its_own_name() {
    let cases = corpus();
    assert!(cases.len() >= 50, "{} documents", cases.len());
    let mut names: Vec<&str> = cases
        .iter()
        .map(|c| {
            c.yaml
                .lines()
                .find_map(|l| l.strip_prefix("metadata: {name: "))
                .expect("metadata on one line")
        })
        .collect();
    names.sort_unstable();
    let all = names.len();
    names.dedup();
    assert_eq!(names.len(), all, "every document has its own name");
}

#[test]
fn every_malformed_stream_job_is_refused_with_an_error_naming_its_field() {
    let mut wrong = Vec::new();
    for (i, case) in corpus().iter().enumerate() {
        let origin = format!("document {}", i + 1);
        match parse_manifest(&case.yaml, &origin) {
            Ok(_) => wrong.push(format!("{origin} ({}): accepted", case.field)),
            Err(e) if !names(&e.to_string(), &case.field) => {
                wrong.push(format!("{origin} ({}): {e}", case.field))
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

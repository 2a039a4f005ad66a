//! The corpus of malformed StreamJobs (`crds/tests/malformed-streamjobs.yaml`, which
//! `sluice run` refuses in the crds tests) created on the real API server as `kubectl
//! apply` creates them, with strict field validation (so that an unknown field is refused
//! rather than dropped): each is refused, with a message that names the field its `# field:`
//! line gives, and none is stored.
//!
//! Not `--server-side`: a server-side apply answers a value of the wrong type with a 500
//! ("failed to create typed patch object"), which names the field but is not a refusal.

use kube::api::{DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, Request};
use kube::{Api, Resource};
use sluice_crds::StreamJob;
use sluice_e2e::e2e_test;

const CORPUS: &str = include_str!("../../../crds/tests/malformed-streamjobs.yaml");

/// The API server writes a map's key in a CEL rule's path as `limits[cpu]`, but as
/// `limits.cpu` in a schema error: compare in the dotted form.
fn dotted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close) if after[..close].starts_with(|c: char| c.is_ascii_alphabetic()) => {
                out.push('.');
                out.push_str(&after[..close]);
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn map_keys_in_brackets_read_as_dotted() {
    assert_eq!(
        dotted("spec.coordinator.resources.limits[cpu]: Invalid value: -1"),
        "spec.coordinator.resources.limits.cpu: Invalid value: -1"
    );
    assert_eq!(dotted("spec.secrets.env[1].nme"), "spec.secrets.env[1].nme");
}

e2e_test!(
    every_malformed_stream_job_is_refused_by_the_api_server_naming_its_field,
    |ns| {
        let resource = ApiResource::erase::<StreamJob>(&());
        let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
        let collection = Request::new(DynamicObject::url_path(&resource, Some(&ns.name)));
        let mut wrong = Vec::new();
        let documents: Vec<&str> = CORPUS.split("\n---\n").skip(1).collect();
        assert!(documents.len() >= 50, "{} documents", documents.len());
        for (i, document) in documents.iter().enumerate() {
            let field = document
                .lines()
                .find_map(|l| l.strip_prefix("# field: "))
                .expect("`# field:` in every document");
            let object: serde_json::Value = serde_yaml::from_str(document)
                .unwrap_or_else(|e| panic!("document {}: {e}", i + 1));
            let body = serde_json::to_vec(&object).expect("JSON");
            let mut create = collection
                .create(&PostParams::default(), body)
                .expect("a request");
            let strict = format!("{}&fieldValidation=Strict", create.uri());
            *create.uri_mut() = strict.parse().expect("a URI");
            match ns.client.request::<DynamicObject>(create).await {
                Ok(_) => wrong.push(format!("document {} ({field}): accepted", i + 1)),
                Err(kube::Error::Api(e))
                    if [400, 422].contains(&e.code) && dotted(&e.message).contains(field) => {}
                Err(e) => wrong.push(format!("document {} ({field}): {e}", i + 1)),
            }
        }
        assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
        let stored = api.list(&ListParams::default()).await?.items;
        assert!(stored.is_empty(), "stored: {stored:?}");
        Ok(())
    }
);

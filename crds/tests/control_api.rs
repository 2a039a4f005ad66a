//! The control API's types against its reference, `docs/control-api.md`: every JSON example
//! there reads into its type and writes back as the same JSON, and every word the reference
//! lists for a phase, state or kind is one the types use.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sluice_crds::control::{
    Accepted, CompatibilityReport, CompatibilityRequest, ErrorBody, Health, HealthStatus, JobPhase,
    JobStatus, Probe, SavepointRequest, SavepointState, SavepointStatus, SnapshotKind,
    StopAccepted, StopRequest, SubtaskState,
};
use std::fmt::Debug;

fn reference() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/control-api.md");
    std::fs::read_to_string(path).unwrap()
}

/// The text of the section under the heading `## {heading}`, up to the next one.
fn section(heading: &str) -> String {
    let doc = reference();
    let start = doc
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("no section '{heading}' in docs/control-api.md"));
    let rest = &doc[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    rest[..end].to_string()
}

/// Every JSON document of the section's ```json blocks, in order (a block may hold several,
/// one per line).
fn examples(heading: &str) -> Vec<Value> {
    let text = section(heading);
    let mut out = Vec::new();
    for block in text.split("```json\n").skip(1) {
        let body = block.split("```").next().unwrap();
        for value in serde_json::Deserializer::from_str(body).into_iter::<Value>() {
            out.push(value.unwrap_or_else(|e| panic!("{heading}: {e} in\n{body}")));
        }
    }
    assert!(!out.is_empty(), "no JSON example under '{heading}'");
    out
}

/// The example reads into `T` and writes back as the same JSON.
fn round_trip<T: Serialize + DeserializeOwned + Debug>(heading: &str, example: &Value) -> T {
    let typed: T = serde_json::from_value(example.clone())
        .unwrap_or_else(|e| panic!("{heading}: {e}: {example}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, example, "{heading}: {typed:?}");
    typed
}

#[test]
fn the_job_status_example_is_a_job_status() {
    let [status] = &examples("`GET /v1/job`")[..] else {
        panic!("one example expected")
    };
    let status: JobStatus = round_trip("GET /v1/job", status);
    assert_eq!(status.phase, JobPhase::Running);
    let last = status.checkpoints.last_completed.unwrap();
    assert_eq!(last.kind, SnapshotKind::Checkpoint);
    assert_eq!(status.subtasks[0].state, SubtaskState::Running);
}

#[test]
fn the_savepoint_examples_are_a_request_and_its_acceptance() {
    let heading = "`POST /v1/savepoints`";
    let [request, accepted] = &examples(heading)[..] else {
        panic!("a request and a reply expected")
    };
    let request: SavepointRequest = round_trip(heading, request);
    assert!(request.target_directory.is_some() && !request.stop);
    round_trip::<Accepted>(heading, accepted);

    let heading = "`GET /v1/savepoints/{id}`";
    let [status] = &examples(heading)[..] else {
        panic!("one example expected")
    };
    let status: SavepointStatus = round_trip(heading, status);
    assert_eq!(status.status, SavepointState::Completed);
}

#[test]
fn the_stop_examples_are_requests_and_acceptances() {
    let heading = "`POST /v1/stop`";
    let [with_savepoint, cancel, accepted, accepted_cancel] = &examples(heading)[..] else {
        panic!("two requests and two replies expected")
    };
    let with_savepoint: StopRequest = round_trip(heading, with_savepoint);
    assert!(with_savepoint.savepoint);
    // A cancel is sent as the reference shows it: `{"savepoint": false}`, nothing more.
    let cancel: StopRequest = round_trip(heading, cancel);
    assert_eq!(
        cancel,
        StopRequest {
            savepoint: false,
            target_directory: None
        }
    );
    let accepted: StopAccepted = round_trip(heading, accepted);
    assert!(accepted.savepoint_id.is_some());
    let accepted_cancel: StopAccepted = round_trip(heading, accepted_cancel);
    assert_eq!(accepted_cancel.savepoint_id, None);
}

#[test]
fn the_compatibility_examples_are_a_request_and_a_report() {
    let heading = "`POST /v1/compatibility`";
    let [request, report] = &examples(heading)[..] else {
        panic!("a request and a report expected")
    };
    round_trip::<CompatibilityRequest>(heading, request);
    let report: CompatibilityReport = round_trip(heading, report);
    assert!(!report.compatible && report.drops_state);
}

#[test]
fn the_error_examples_are_error_bodies() {
    let heading = "Authentication";
    let errors = examples(heading);
    assert_eq!(errors.len(), 2);
    for e in &errors {
        round_trip::<ErrorBody>(heading, e);
    }
}

/// The probes' bodies are written inline in the text: `{"status": "ok"}` and
/// `{"ready": true, "phase": "running"}`.
#[test]
fn the_probe_bodies_are_as_the_reference_writes_them() {
    let text = section("`GET /healthz`, `GET /readyz`");
    let health = serde_json::to_string(&Health {
        status: HealthStatus::Ok,
    })
    .unwrap();
    assert_eq!(health, r#"{"status":"ok"}"#);
    assert!(text.contains(r#"`200 {"status": "ok"}`"#), "{text}");
    let ready = serde_json::to_string(&Probe {
        ready: true,
        phase: JobPhase::Running,
    })
    .unwrap();
    assert_eq!(ready, r#"{"ready":true,"phase":"running"}"#);
    assert!(
        text.contains(r#"`200 {"ready": true, "phase": "running"}`"#),
        "{text}"
    );
}

/// The row of the table whose first cell is `` `{field}` ``.
fn row(heading: &str, field: &str) -> String {
    let text = section(heading);
    let prefix = format!("| `{field}` |");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no row {field} under {heading}"))
        .to_string()
}

fn word<T: Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn every_phase_state_and_kind_is_the_word_the_reference_lists() {
    let heading = "`GET /v1/job`";
    let phases = row(heading, "phase");
    for phase in JobPhase::ALL {
        assert_eq!(word(phase), phase.as_str());
        assert!(phases.contains(&format!("`{phase}`")), "{phase}: {phases}");
    }
    let states = row(heading, "subtasks[].state");
    for state in SubtaskState::ALL {
        assert_eq!(word(state), state.as_str());
        assert!(
            states.contains(&format!("`{}`", state.as_str())),
            "{states}"
        );
    }
    let kinds = row(heading, "checkpoints.lastCompleted");
    for kind in SnapshotKind::ALL {
        let kind = word(kind);
        assert!(kinds.contains(&format!("`{kind}`")), "{kind}: {kinds}");
    }
    let savepoint = section("`GET /v1/savepoints/{id}`");
    for state in SavepointState::ALL {
        let state = word(state);
        assert!(savepoint.contains(&format!("`{state}`")), "{state}");
    }
}

//! The operation under way (`status.operation`): the operator's write-ahead log entry.
//!
//! Each step of the lifecycle is a variant of [`OperationStep`] carrying exactly what that
//! step needs to resume after an operator restart, so the state machine in the operator
//! matches on steps instead of spelling step names and detail keys. On the wire a step is
//! its name (`step`) and its data (`details`): the CRD schema stays one string and one
//! free-form object, so steps can grow without a CRD change.
//!
//! A status written by another version of the operator may name a step this one does not
//! know, or carry details it cannot read: that reads as [`OperationStep::Unrecognised`]
//! rather than failing, because an object that fails to decode stops the operator's watch
//! of every StreamJob, not just this one.

use crate::status::{OperationKind, SavepointTrigger};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;

/// A step of the lifecycle in progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub kind: OperationKind,
    /// The step it is at (`step`) and what the step needs to resume (`details`).
    #[serde(flatten)]
    pub step: OperationStep,
    #[schemars(extend("format" = "date-time"))]
    pub started_at: String,
    /// The savepoint the operation asked for or restores from, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint: Option<String>,
    /// Attempts of the current step, for retries with backoff.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
}

/// For `skip_serializing_if`: a count of zero is left out of the status.
pub(crate) fn is_zero<N: Default + PartialEq>(n: &N) -> bool {
    *n == N::default()
}

/// How far an operation got.
///
/// ```text
///  Savepoint                          a savepoint, the job keeps running
///  [PreflightSavepoint, PreflightCheck]  upgrades: a savepoint the new image checks
///  Stopping                           stop with a savepoint (or cancel)
///  Deploying                          the new revision's pods start
///  Backoff                            restarts: the wait before the job's pods start again
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "WireStep", into = "WireStep")]
pub enum OperationStep {
    /// A savepoint without stop (manual or periodic).
    Savepoint(SavepointStep),
    /// Upgrades: a savepoint without stop, for the new revision's image to check.
    PreflightSavepoint(Option<SavepointRequested>),
    /// Upgrades: the new revision's image checks `operation.savepoint`.
    PreflightCheck,
    /// The running job stops: with a savepoint when one was asked for, else cancelled (or
    /// already gone).
    Stopping(Option<SavepointRequested>),
    /// The new revision's pods start.
    Deploying(Deploying),
    /// The job failed for good (or `spec.restartNonce` changed): its pods go, and it starts
    /// again from its newest checkpoint once the backoff has passed and they are gone.
    Backoff(BackoffStep),
    /// A step this operator does not know (written by another version): started over.
    Unrecognised { step: String, details: Value },
}

/// A savepoint request the coordinator was sent (or is about to be).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavepointRequested {
    /// Unique to the operation: a savepoint found there is this request's, even when its id
    /// was lost.
    pub target_directory: String,
    pub requested_at: String,
    /// The coordinator's id for the request, once it has answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavepointStep {
    pub trigger: SavepointTrigger,
    /// The `spec.savepoints.triggerNonce` it answers (manual savepoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<i64>,
    #[serde(flatten)]
    pub request: Option<SavepointRequested>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deploying {
    /// When the operation's stop (or savepoint) began, for its duration: the readiness
    /// timeout counts from the step's own start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackoffStep {
    /// The end of the backoff.
    pub until: String,
    /// Asked for by `spec.restartNonce`, not a failure: it does not count towards
    /// `maxRestarts`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
}

impl OperationStep {
    /// The step's name, as `status.operation.step` shows it.
    pub fn name(&self) -> &str {
        match self {
            OperationStep::Savepoint(_) => "Savepoint",
            OperationStep::PreflightSavepoint(_) => "PreflightSavepoint",
            OperationStep::PreflightCheck => "PreflightCheck",
            OperationStep::Stopping(_) => "Stopping",
            OperationStep::Deploying(_) => "Deploying",
            OperationStep::Backoff(_) => "Backoff",
            OperationStep::Unrecognised { step, .. } => step,
        }
    }

    /// The savepoint request the step made, if it makes one.
    pub fn savepoint_request(&self) -> Option<&SavepointRequested> {
        match self {
            OperationStep::Savepoint(s) => s.request.as_ref(),
            OperationStep::PreflightSavepoint(r) | OperationStep::Stopping(r) => r.as_ref(),
            _ => None,
        }
    }

    /// The savepoint request the step made, to record the coordinator's id for it.
    pub fn savepoint_request_mut(&mut self) -> Option<&mut SavepointRequested> {
        self.savepoint_slot()?.as_mut()
    }

    /// Where a step that waits for a savepoint keeps its request; `None` for the others.
    pub fn savepoint_slot(&mut self) -> Option<&mut Option<SavepointRequested>> {
        match self {
            OperationStep::Savepoint(s) => Some(&mut s.request),
            OperationStep::PreflightSavepoint(r) | OperationStep::Stopping(r) => Some(r),
            _ => None,
        }
    }
}

/// `step` and `details` as they are written in the status.
#[derive(Serialize, Deserialize)]
struct WireStep {
    step: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    details: Value,
}

impl From<OperationStep> for WireStep {
    fn from(s: OperationStep) -> Self {
        let step = s.name().to_string();
        // Serialising these plain structs cannot fail.
        let details = match s {
            OperationStep::Savepoint(d) => serde_json::to_value(d),
            OperationStep::PreflightSavepoint(d) | OperationStep::Stopping(d) => {
                serde_json::to_value(d)
            }
            OperationStep::PreflightCheck => Ok(Value::Null),
            OperationStep::Deploying(d) => serde_json::to_value(d),
            OperationStep::Backoff(d) => serde_json::to_value(d),
            OperationStep::Unrecognised { details, .. } => Ok(details),
        }
        .unwrap_or(Value::Null);
        // An empty object says nothing: leave `details` out, as for a step without data.
        let details = match details {
            Value::Object(m) if m.is_empty() => Value::Null,
            d => d,
        };
        WireStep { step, details }
    }
}

impl From<WireStep> for OperationStep {
    fn from(w: WireStep) -> Self {
        // Absent details are an empty object to a struct, and `None` to an optional request.
        fn read<T: serde::de::DeserializeOwned>(details: &Value) -> Option<T> {
            let details = match details {
                Value::Null => Value::Object(Default::default()),
                d => d.clone(),
            };
            serde_json::from_value(details).ok()
        }
        fn read_request(details: &Value) -> Option<Option<SavepointRequested>> {
            serde_json::from_value(details.clone()).ok()
        }
        let known = match w.step.as_str() {
            "Savepoint" => read(&w.details).map(OperationStep::Savepoint),
            "PreflightSavepoint" => read_request(&w.details).map(OperationStep::PreflightSavepoint),
            "PreflightCheck" => Some(OperationStep::PreflightCheck),
            "Stopping" => read_request(&w.details).map(OperationStep::Stopping),
            "Deploying" => read(&w.details).map(OperationStep::Deploying),
            "Backoff" => read(&w.details).map(OperationStep::Backoff),
            _ => None,
        };
        known.unwrap_or(OperationStep::Unrecognised {
            step: w.step,
            details: w.details,
        })
    }
}

/// The schema of the two fields as written: a step name and a free-form object.
impl JsonSchema for OperationStep {
    fn schema_name() -> Cow<'static, str> {
        "OperationStep".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "properties": {
                "step": {
                    "description": "How far the operation got: Savepoint, PreflightSavepoint, PreflightCheck, Stopping, Deploying or Backoff.",
                    "type": "string",
                },
                "details": {
                    "description": "What the step needs to resume (its savepoint request, …).",
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true,
                },
            },
            "required": ["step"],
        })
    }
}

impl Operation {
    pub fn new(kind: OperationKind, step: OperationStep, started_at: String) -> Self {
        Operation {
            kind,
            step,
            started_at,
            savepoint: None,
            attempts: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(step: OperationStep) -> Value {
        let op = Operation::new(OperationKind::Upgrade, step, "2026-12-05T10:00:00Z".into());
        let written = serde_json::to_value(&op).unwrap();
        let read: Operation = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(read, op);
        written
    }

    #[test]
    fn steps_are_a_name_and_their_details() {
        let request = SavepointRequested {
            target_directory: "s3://b/sp/20261205T100000Z".into(),
            requested_at: "2026-12-05T10:00:01Z".into(),
            savepoint_id: Some("a-1".into()),
        };
        let written = round_trip(OperationStep::Stopping(Some(request.clone())));
        assert_eq!(written["step"], "Stopping");
        assert_eq!(
            written["details"],
            json!({"targetDirectory": "s3://b/sp/20261205T100000Z",
                   "requestedAt": "2026-12-05T10:00:01Z", "savepointId": "a-1"})
        );
        let written = round_trip(OperationStep::Savepoint(SavepointStep {
            trigger: SavepointTrigger::Periodic,
            nonce: Some(7),
            request: Some(request),
        }));
        assert_eq!(written["details"]["trigger"], "Periodic");
        assert_eq!(written["details"]["nonce"], 7);
        assert_eq!(written["details"]["savepointId"], "a-1");

        let written = round_trip(OperationStep::PreflightCheck);
        assert_eq!(
            written,
            json!({"kind": "Upgrade", "step": "PreflightCheck",
                                   "startedAt": "2026-12-05T10:00:00Z"})
        );
        let written = round_trip(OperationStep::Stopping(None));
        assert!(written.get("details").is_none());
        round_trip(OperationStep::Deploying(Deploying::default()));
        round_trip(OperationStep::Backoff(BackoffStep {
            until: "2026-12-05T20:00:00Z".into(),
            manual: true,
        }));
        round_trip(OperationStep::Deploying(Deploying {
            since: Some("2026-12-05T09:59:00Z".into()),
        }));
    }

    #[test]
    fn an_unknown_step_or_unreadable_details_read_as_unrecognised() {
        let op: Operation = serde_json::from_value(json!({
            "kind": "Upgrade", "step": "Draining", "details": {"pods": "3"},
            "startedAt": "2026-12-05T10:00:00Z"
        }))
        .unwrap();
        assert_eq!(
            op.step,
            OperationStep::Unrecognised {
                step: "Draining".into(),
                details: json!({"pods": "3"})
            }
        );
        // Written back as it was read.
        assert_eq!(serde_json::to_value(&op).unwrap()["details"]["pods"], "3");

        // A savepoint step whose trigger is no trigger this operator knows.
        let op: Operation = serde_json::from_value(json!({
            "kind": "Savepoint", "step": "Savepoint", "details": {"trigger": "Hourly"},
            "startedAt": "2026-12-05T10:00:00Z"
        }))
        .unwrap();
        assert_eq!(op.step.name(), "Savepoint");
        assert!(matches!(op.step, OperationStep::Unrecognised { .. }));
    }
}

//! Pods the namespace refuses to create: a pod template the `restricted` Pod Security
//! Standard forbids, a ResourceQuota used up, a LimitRange exceeded. No pod exists to report
//! it; the controller that tried (the coordinator's ReplicaSet, the workers' StatefulSet, a
//! tool's Job) says why only in a `FailedCreate` event, which it repeats as it retries.

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The event reason every controller gives a pod it could not create.
pub const FAILED_CREATE: &str = "FailedCreate";

/// How recent a refusal must be to count: the controllers retry within seconds at first, so
/// an older event is one the pods have since got past (a quota freed, a pod evicted later).
const RECENT: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// A child of the job that creates pods, and when it was made: an event older than the
/// object is about an earlier run's object of the same name.
pub struct Creator<'a> {
    pub kind: CreatorKind,
    pub name: &'a str,
    pub created: Option<&'a Time>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreatorKind {
    /// The pods are created by its ReplicaSets, named `<deployment>-<pod template hash>`.
    Deployment,
    StatefulSet,
    Job,
}

impl Creator<'_> {
    fn wrote(&self, event: &Event) -> bool {
        let object = &event.involved_object;
        let (Some(kind), Some(name)) = (object.kind.as_deref(), object.name.as_deref()) else {
            return false;
        };
        match self.kind {
            CreatorKind::Deployment => {
                kind == "ReplicaSet"
                    && name
                        .strip_prefix(self.name)
                        .and_then(|rest| rest.strip_prefix('-'))
                        .is_some_and(|hash| {
                            !hash.is_empty() && hash.chars().all(|c| c.is_ascii_alphanumeric())
                        })
            }
            CreatorKind::StatefulSet => kind == "StatefulSet" && name == self.name,
            CreatorKind::Job => kind == "Job" && name == self.name,
        }
    }
}

/// Why `creator` could not create its pods: the message of its newest `FailedCreate` event
/// from its own lifetime and the last minute, if there is one.
pub fn refusal(events: &[Event], creator: &Creator, now: jiff::Timestamp) -> Option<String> {
    let created = creator.created.map(|t| t.0);
    events
        .iter()
        .filter(|e| e.reason.as_deref() == Some(FAILED_CREATE) && creator.wrote(e))
        .filter_map(|e| Some((last_seen(e)?, e)))
        .filter(|(at, _)| created.is_none_or(|c| *at >= c) && now.duration_since(*at) <= RECENT)
        .max_by_key(|(at, _)| *at)
        .and_then(|(_, e)| e.message.as_deref())
        .map(|m| m.trim().to_string())
}

/// When the event last happened: core events from the controllers' recorder carry
/// `lastTimestamp`; those written through `events.k8s.io` carry `eventTime` or a series.
fn last_seen(event: &Event) -> Option<jiff::Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0)
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-12-08T10:00:00Z";

    fn time(at: &str) -> Time {
        Time(at.parse().unwrap())
    }

    fn event(kind: &str, name: &str, reason: &str, at: &str, message: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{name}.1"), "namespace": "streams"},
            "involvedObject": {"kind": kind, "name": name, "namespace": "streams"},
            "reason": reason,
            "message": message,
            "lastTimestamp": at,
        }))
        .unwrap()
    }

    const FORBIDDEN: &str = "pods \"q5-worker-0\" is forbidden: violates PodSecurity \"restricted:latest\": hostPath volumes (volume \"data\")";

    #[test]
    fn the_newest_refusal_of_the_creator_since_it_was_made_is_the_reason() {
        let created = time("2026-12-08T09:59:00Z");
        let workers = Creator {
            kind: CreatorKind::StatefulSet,
            name: "q5-worker",
            created: Some(&created),
        };
        let events = [
            // An earlier run's StatefulSet of the same name.
            event(
                "StatefulSet",
                "q5-worker",
                FAILED_CREATE,
                "2026-12-08T09:58:59Z",
                "old",
            ),
            event(
                "StatefulSet",
                "q5-worker",
                FAILED_CREATE,
                "2026-12-08T09:59:30Z",
                "first",
            ),
            event(
                "StatefulSet",
                "q5-worker",
                FAILED_CREATE,
                "2026-12-08T09:59:50Z",
                FORBIDDEN,
            ),
            event(
                "StatefulSet",
                "q5-worker",
                "SuccessfulCreate",
                "2026-12-08T09:59:55Z",
                "ok",
            ),
            event(
                "StatefulSet",
                "q5-worker-x",
                FAILED_CREATE,
                "2026-12-08T09:59:58Z",
                "other",
            ),
            event(
                "Job",
                "q5-worker",
                FAILED_CREATE,
                "2026-12-08T09:59:59Z",
                "a Job",
            ),
        ];
        let now = NOW.parse().unwrap();
        assert_eq!(refusal(&events, &workers, now).as_deref(), Some(FORBIDDEN));
        // A minute later, with no new attempt refused, the pods got past it.
        let later = "2026-12-08T10:00:51Z".parse().unwrap();
        assert_eq!(refusal(&events, &workers, later), None);
    }

    #[test]
    fn a_deployment_is_refused_through_its_replica_sets_and_no_other_deployment_s() {
        let coordinator = Creator {
            kind: CreatorKind::Deployment,
            name: "q5-coordinator",
            created: None,
        };
        let now = NOW.parse().unwrap();
        let at = "2026-12-08T09:59:59Z";
        let refused = |kind, name| {
            refusal(
                &[event(kind, name, FAILED_CREATE, at, "no")],
                &coordinator,
                now,
            )
        };
        assert_eq!(
            refused("ReplicaSet", "q5-coordinator-7c9f8d6b5").as_deref(),
            Some("no")
        );
        assert_eq!(
            refused("ReplicaSet", "q5-coordinator-x-coordinator-7c9f8d6b5"),
            None
        );
        assert_eq!(refused("ReplicaSet", "q5-coordinator"), None);
        assert_eq!(refused("Deployment", "q5-coordinator"), None);
    }
}

//! Who may open a connection to a job's pods. One policy isolates every pod of the job (no
//! ingress at all: the pre-flight and cleanup pods listen on nothing); two more let in only
//! what each role serves:
//!
//! - a worker's data port, from the job's coordinator and workers;
//! - the coordinator's port for workers, from the job's workers;
//! - the coordinator's control API and its metrics port (the same metrics, without a
//!   token), from the namespaces named in [`NetworkAccess`]: the operator's, and a metrics
//!   scraper's.
//!
//! Egress is left open: a job reads and writes brokers, object stores and databases that
//! only its author knows. `kubectl port-forward` still reaches the control API, as its
//! connections start inside the pod. Traffic from the node (the kubelet's probes) is allowed
//! by the usual network plugins whatever a policy says.

use super::{JobRef, CONTROL_PORT, COORDINATOR_PORT, DATA_PORT, METRICS_PORT};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label the API server puts on every namespace, holding its name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Who, besides the job's own pods, may connect to a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkAccess {
    /// Namespaces whose pods may call the control API: the operator's, and where the job
    /// metrics are scraped from.
    pub control_namespaces: Vec<String>,
}

/// The job's NetworkPolicies.
pub fn network_policies(job: &JobRef, access: &NetworkAccess) -> Vec<NetworkPolicy> {
    let coordinator = job.role_selector(&["coordinator"]);
    let workers = job.role_selector(&["worker"]);
    let from_pods = |selector: LabelSelector| NetworkPolicyPeer {
        pod_selector: Some(selector),
        ..NetworkPolicyPeer::default()
    };
    let control_clients = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.into(),
                operator: "In".into(),
                values: Some(access.control_namespaces.clone()),
            }]),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    vec![
        policy(job, job.name.clone(), None, job.pods_selector(), vec![]),
        policy(
            job,
            job.coordinator(),
            Some("coordinator"),
            coordinator,
            vec![
                allow(from_pods(workers.clone()), &[COORDINATOR_PORT]),
                allow(control_clients, &[CONTROL_PORT, METRICS_PORT]),
            ],
        ),
        policy(
            job,
            job.worker(),
            Some("worker"),
            workers,
            vec![allow(
                from_pods(job.role_selector(&["coordinator", "worker"])),
                &[DATA_PORT],
            )],
        ),
    ]
}

fn policy(
    job: &JobRef,
    name: String,
    role: Option<&str>,
    pods: LabelSelector,
    ingress: Vec<NetworkPolicyIngressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: job.metadata(name, role),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            ..NetworkPolicySpec::default()
        }),
    }
}

fn allow(from: NetworkPolicyPeer, ports: &[u16]) -> NetworkPolicyIngressRule {
    let port = |port: &u16| NetworkPolicyPort {
        port: Some(IntOrString::Int((*port).into())),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    };
    NetworkPolicyIngressRule {
        from: Some(vec![from]),
        ports: Some(ports.iter().map(port).collect()),
    }
}

#[cfg(test)]
mod tests {
    //! The policies read as the API documents them, by a small evaluator written here: a
    //! pod selected by no policy accepts everything; a selected pod accepts what some rule
    //! of some policy selecting it allows, and nothing else.

    use super::*;
    use std::collections::BTreeMap;

    struct Pod {
        namespace: &'static str,
        labels: BTreeMap<String, String>,
    }

    fn pod(namespace: &'static str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            namespace,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn job_pod(namespace: &'static str, job: &str, role: &str) -> Pod {
        pod(
            namespace,
            &[("sluice.dev/job", job), ("sluice.dev/role", role)],
        )
    }

    fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
        let labels_match = selector
            .match_labels
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
            assert_eq!(e.operator, "In", "the evaluator knows only In");
            let values = e.values.as_deref().unwrap_or_default();
            labels.get(&e.key).is_some_and(|v| values.contains(v))
        });
        labels_match && expressions_match
    }

    fn peer_admits(peer: &NetworkPolicyPeer, policy_namespace: &str, from: &Pod) -> bool {
        let namespace_labels =
            BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), from.namespace.to_string())]);
        let namespace_ok = match &peer.namespace_selector {
            Some(selector) => selects(selector, &namespace_labels),
            None => from.namespace == policy_namespace,
        };
        let pod_ok = peer
            .pod_selector
            .as_ref()
            .is_none_or(|s| selects(s, &from.labels));
        namespace_ok && pod_ok
    }

    fn admits(policies: &[NetworkPolicy], from: &Pod, to: &Pod, port: u16) -> bool {
        let selecting: Vec<_> = policies
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(to.namespace))
            .filter_map(|p| Some((p.metadata.namespace.as_deref()?, p.spec.as_ref()?)))
            .filter(|(_, s)| {
                s.pod_selector
                    .as_ref()
                    .is_some_and(|s| selects(s, &to.labels))
            })
            .collect();
        if selecting.is_empty() {
            return true;
        }
        selecting.iter().any(|(namespace, spec)| {
            spec.ingress.iter().flatten().any(|rule| {
                let port_ok = rule.ports.as_deref().is_none_or(|ports| {
                    ports.is_empty()
                        || ports
                            .iter()
                            .any(|p| p.port == Some(IntOrString::Int(port.into())))
                });
                let from_ok = rule.from.as_deref().is_none_or(|peers| {
                    peers.is_empty() || peers.iter().any(|p| peer_admits(p, namespace, from))
                });
                port_ok && from_ok
            })
        })
    }

    #[test]
    fn each_port_of_a_job_admits_only_its_own_clients() {
        let job = JobRef {
            namespace: "streams".into(),
            name: "q5".into(),
            uid: "u-1".into(),
        };
        let access = NetworkAccess {
            control_namespaces: vec!["sluice-system".into(), "monitoring".into()],
        };
        let policies = network_policies(&job, &access);
        let worker = job_pod("streams", "q5", "worker");
        let coordinator = job_pod("streams", "q5", "coordinator");
        let preflight = job_pod("streams", "q5", "preflight");
        let operator = pod("sluice-system", &[("app.kubernetes.io/name", "sluice")]);
        let prometheus = pod("monitoring", &[("app", "prometheus")]);
        let neighbour = pod("streams", &[("app", "web")]);
        let other_job_worker = job_pod("streams", "fraud", "worker");
        let impostor = job_pod("elsewhere", "q5", "worker");
        let cases: &[(&str, &Pod, &Pod, u16, bool)] = &[
            ("worker to worker, data", &worker, &worker, DATA_PORT, true),
            (
                "coordinator to worker, data",
                &coordinator,
                &worker,
                DATA_PORT,
                true,
            ),
            (
                "worker to coordinator",
                &worker,
                &coordinator,
                COORDINATOR_PORT,
                true,
            ),
            (
                "operator to control API",
                &operator,
                &coordinator,
                CONTROL_PORT,
                true,
            ),
            (
                "scraper to control API",
                &prometheus,
                &coordinator,
                CONTROL_PORT,
                true,
            ),
            (
                "scraper to metrics",
                &prometheus,
                &coordinator,
                METRICS_PORT,
                true,
            ),
            (
                "neighbour to metrics",
                &neighbour,
                &coordinator,
                METRICS_PORT,
                false,
            ),
            (
                "another job's worker to worker",
                &other_job_worker,
                &worker,
                DATA_PORT,
                false,
            ),
            (
                "same labels, other namespace",
                &impostor,
                &worker,
                DATA_PORT,
                false,
            ),
            (
                "pre-flight pod to worker",
                &preflight,
                &worker,
                DATA_PORT,
                false,
            ),
            ("neighbour to worker", &neighbour, &worker, DATA_PORT, false),
            (
                "neighbour to control API",
                &neighbour,
                &coordinator,
                CONTROL_PORT,
                false,
            ),
            (
                "operator to worker, data",
                &operator,
                &worker,
                DATA_PORT,
                false,
            ),
            (
                "operator to coordinator's worker port",
                &operator,
                &coordinator,
                COORDINATOR_PORT,
                false,
            ),
            (
                "worker to control API",
                &worker,
                &coordinator,
                CONTROL_PORT,
                false,
            ),
            (
                "coordinator to itself, worker port",
                &coordinator,
                &coordinator,
                COORDINATOR_PORT,
                false,
            ),
            (
                "worker to pre-flight pod",
                &worker,
                &preflight,
                DATA_PORT,
                false,
            ),
            (
                "operator to pre-flight pod",
                &operator,
                &preflight,
                CONTROL_PORT,
                false,
            ),
        ];
        for (what, from, to, port, expected) in cases {
            assert_eq!(admits(&policies, from, to, *port), *expected, "{what}");
        }
        // A pod of another job is not touched by these policies.
        assert!(admits(&policies, &neighbour, &other_job_worker, DATA_PORT));
    }
}

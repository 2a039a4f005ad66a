//! A job's NetworkPolicies, enforced: the local cluster runs a policy enforcer beside its
//! bridge network plugin (`e2e/cluster/network-policies.sh`), so what the policies let in is
//! what a pod can reach. Each refusal is paired with a connection to the same address and
//! port that succeeds, so a closed port cannot pass for a policy.
//!
//! A module of the operator tests (see kafka.rs for why).

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::Api;
use sluice_crds::StreamJob;
use sluice_e2e::jobs::{remove, start_q0};
use sluice_e2e::{e2e_test, run_pod, E2eError, Result, ECHO_IMAGE};
use sluice_operator::build::{CONTROL_PORT, COORDINATOR_PORT, DATA_PORT};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The operator's namespace, as `e2e/ci.sh` installs the chart: its pods may call the
/// control API.
const OPERATOR_NAMESPACE: &str = "sluice-system";

/// Opens a TCP connection from a new pod in `pods`' namespace, trying for `seconds`:
/// whether it connected, and what the probe said.
async fn probe(
    pods: &Api<Pod>,
    name: &str,
    to: SocketAddr,
    seconds: u32,
) -> Result<(bool, String)> {
    let (to, seconds) = (to.to_string(), seconds.to_string());
    run_pod(pods, name, ECHO_IMAGE, &["connect", &to, &seconds]).await
}

/// A probe from `pods`' namespace to `to`, once: refused, with what the probe said. The
/// job has run for a while, so the enforcer's rules for its pods are in place, and a
/// probe pod that is no allowed peer is refused from its first packet.
async fn refused(pods: &Api<Pod>, name: &str, to: SocketAddr) -> Result<String> {
    let (connected, said) = probe(pods, name, to, 0).await?;
    assert!(
        !connected,
        "{name}: {to} let a pod of the job's namespace in"
    );
    Ok(said)
}

fn ip_of(pods: &[Pod], role: &str) -> Result<std::net::IpAddr> {
    pods.iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("sluice.dev/role"))
                .map(String::as_str)
                == Some(role)
        })
        .find_map(|p| p.status.as_ref()?.pod_ip.as_ref()?.parse().ok())
        .ok_or_else(|| E2eError::Config(format!("no {role} pod with an address")))
}

e2e_test!(
    a_jobs_pods_refuse_connections_its_network_policies_do_not_allow,
    |ns| {
        let api: Api<StreamJob> = ns.api();
        let (dir, _, _) = start_q0(&ns, &api, "q0-net", |_| {}).await?;
        let pods = ns
            .api::<Pod>()
            .list(&ListParams::default().labels("sluice.dev/job=q0-net"))
            .await?
            .items;
        let data = SocketAddr::new(ip_of(&pods, "worker")?, DATA_PORT);
        let control = SocketAddr::new(ip_of(&pods, "coordinator")?, CONTROL_PORT);
        let coordinator = SocketAddr::new(ip_of(&pods, "coordinator")?, COORDINATOR_PORT);

        // From the node, whose traffic every policy lets in (the kubelet's probes): the
        // ports are open.
        for to in [data, control, coordinator] {
            TcpStream::connect_timeout(&to, Duration::from_secs(5))
                .map_err(|e| E2eError::Config(format!("{to} from the node: {e}")))?;
        }
        // The control API from the operator's namespace: let in.
        let operators: Api<Pod> = Api::namespaced(ns.client.clone(), OPERATOR_NAMESPACE);
        // A new pod is let in once the enforcer has seen it: moments, but not at once.
        let probe_name = format!("{}-probe", ns.name);
        let (connected, said) = probe(&operators, &probe_name, control, 60).await?;
        assert!(
            connected,
            "the operator's namespace cannot reach {control}: {said}"
        );

        // From a pod of the job's namespace that is not the job's: nothing.
        let here: Api<Pod> = ns.api();
        for (name, to) in [
            ("data", data),
            ("control", control),
            ("coordinator", coordinator),
        ] {
            let said = refused(&here, name, to).await?;
            eprintln!(
                "{name} port {to} refused a pod of the namespace: {}",
                said.trim()
            );
        }
        remove(&dir);
        Ok(())
    }
);

//! Flags, leader election and the controller loop.

use crate::build::NetworkAccess;
use crate::control::ControlClient;
use crate::error::Error;
use crate::leader::{LeaderElection, RENEW_EVERY};
use crate::metrics::Metrics;
use crate::ratelimit::TokenBucket;
use crate::reconcile::{reconcile, Context};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client};
use sluice_crds::StreamJob;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "sluice-operator", about = "Reconciles StreamJob resources")]
struct Args {
    /// Namespaces to watch, comma-separated; all namespaces when empty.
    #[arg(
        long,
        env = "SLUICE_WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    watch_namespaces: Vec<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: String,
    /// Log lines as JSON objects or as text; `RUST_LOG` filters them (default `info`).
    #[arg(long, value_parser = ["json", "text"], default_value = "json")]
    log_format: String,
    /// Hold a Lease before acting, so that replicas take turns.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    #[arg(long, default_value = "sluice-operator")]
    lease_name: String,
    /// The Lease's namespace, and the operator's, whose pods may call jobs' control APIs
    /// [default: the pod's, from POD_NAMESPACE].
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's name in the Lease and in events [default: POD_NAME].
    #[arg(long, env = "POD_NAME", default_value = "sluice-operator")]
    identity: String,
    /// Restarts after failures, across all jobs, per minute: when many jobs fail at once,
    /// their restarts are spread out at this rate.
    #[arg(long, default_value_t = 30)]
    restarts_per_minute: u32,
    /// Restarts that may happen at once before the rate applies.
    #[arg(long, default_value_t = 5)]
    restart_burst: u32,
    /// The Kubernetes PriorityClass for the pods of each job priority, as
    /// `priority=PriorityClass` pairs, comma-separated; pods of other priorities get none.
    #[arg(long, value_delimiter = ',', value_parser = priority_class_pair)]
    pod_priority_classes: Vec<(String, String)>,
    /// Give every job NetworkPolicies that let into its pods only what each serves.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    network_policies: bool,
    /// Namespaces, besides the operator's own, whose pods may call a job's control API (and
    /// so scrape its metrics), comma-separated.
    #[arg(long, value_delimiter = ',')]
    control_api_namespaces: Vec<String>,
}

fn priority_class_pair(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((priority, class)) if !priority.is_empty() && !class.is_empty() => {
            Ok((priority.to_string(), class.to_string()))
        }
        _ => Err(format!("{pair:?} is not priority=PriorityClass")),
    }
}

pub async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    crate::log::init(args.log_format == "json");
    // kube's TLS provider, named: whether another one is linked in too depends on what the
    // binary was built with (cargo unifies features across a workspace build), and with two
    // rustls picks none.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new()?);
    let listener = crate::http::bind(&args.metrics_addr).await?;
    tokio::spawn(crate::http::serve(listener, metrics.clone()));

    let mut held_lease = None;
    if args.leader_election {
        let election = Arc::new(LeaderElection::new(
            client.clone(),
            &args.lease_namespace,
            &args.lease_name,
            &args.identity,
        ));
        held_lease = Some(election.clone());
        tracing::info!(
            identity = %args.identity,
            lease = %format_args!("{}/{}", args.lease_namespace, args.lease_name),
            "waiting for the lease"
        );
        while !election.try_acquire().await.unwrap_or(false) {
            tokio::time::sleep(RENEW_EVERY).await;
        }
        tracing::info!(identity = %args.identity, "leads");
        metrics.set_leading(true);
        // Losing the lease ends the process: a replica that cannot renew must stop acting at
        // once, and a fresh start is the simplest way to stand by again.
        tokio::spawn(async move {
            let mut failures = 0;
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                match election.try_acquire().await {
                    Ok(true) => failures = 0,
                    Ok(false) => {
                        tracing::warn!("lost the lease to another replica; exiting");
                        std::process::exit(1);
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, failures, "renewing the lease");
                        // Renewals fail for a whole lease duration: another replica may lead.
                        if failures >= 3 {
                            std::process::exit(1);
                        }
                    }
                }
            }
        });
    } else {
        metrics.set_leading(true);
    }

    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "sluice-operator".into(),
                instance: Some(args.identity.clone()),
            },
        ),
        control: ControlClient,
        metrics,
        restart_permit: Arc::new(TokenBucket::new(
            args.restarts_per_minute,
            args.restart_burst,
        )),
        admission: tokio::sync::Mutex::new(()),
        pod_priority_classes: args.pod_priority_classes.iter().cloned().collect(),
        network: args.network_policies.then(|| NetworkAccess {
            control_namespaces: std::iter::once(args.lease_namespace.clone())
                .chain(args.control_api_namespaces.iter().cloned())
                .filter(|n| !n.is_empty())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        }),
    });
    let namespaces: Vec<Option<String>> = {
        let named: Vec<_> = args
            .watch_namespaces
            .iter()
            .filter(|n| !n.is_empty())
            .map(|n| Some(n.clone()))
            .collect();
        if named.is_empty() {
            vec![None]
        } else {
            named
        }
    };
    let controllers = namespaces.into_iter().map(|ns| {
        let jobs: Api<StreamJob> = api(&client, ns.as_deref());
        Controller::new(jobs, watcher::Config::default())
            .owns(
                api::<Deployment>(&client, ns.as_deref()),
                watcher::Config::default(),
            )
            .owns(
                api::<StatefulSet>(&client, ns.as_deref()),
                watcher::Config::default(),
            )
            // The pre-flight and cleanup Jobs: their end moves the plan on at once.
            .owns(
                api::<k8s_openapi::api::batch::v1::Job>(&client, ns.as_deref()),
                watcher::Config::default(),
            )
            .shutdown_on_signal()
            .run(reconcile, error_policy, ctx.clone())
            .boxed()
    });
    tracing::info!("reconciling StreamJobs");
    futures::stream::select_all(controllers)
        // Failed reconciles are logged by `error_policy`.
        .for_each(|_| async {})
        .await;
    // SIGTERM: the controllers have stopped; hand over at once.
    if let Some(election) = held_lease {
        if let Err(e) = election.release().await {
            tracing::warn!(error = %e, "releasing the lease");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn error_policy(job: Arc<StreamJob>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(
        namespace = %kube::ResourceExt::namespace(job.as_ref()).unwrap_or_default(),
        name = %kube::ResourceExt::name_any(job.as_ref()),
        error = %error,
        "reconcile failed"
    );
    Action::requeue(error.retry_after())
}

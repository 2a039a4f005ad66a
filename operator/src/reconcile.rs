//! One reconcile of a StreamJob: observe → plan (pure, `plan/`) → write the status →
//! apply → publish events. The status is written before anything is acted on, so that an
//! operator stopped between the two finds the step it was about to take.

use crate::build::{self, JobRef, CONTROL_PORT, TOKEN_KEY};
use crate::control::{ControlClient, Endpoint};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::plan::{self, Action, Cleanup, Inputs, Observed, PodFailure, Preflight};
use crate::ratelimit::RestartPermit;
use crate::refusals::{refusal, Creator, CreatorKind, FAILED_CREATE};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, Service};
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;
use sluice_crds::{StreamJob, StreamJobStatus};
use std::collections::hash_map::DefaultHasher;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub const FIELD_MANAGER: &str = "sluice-operator";
/// Held until the job is stopped as `spec.savepoints.onDelete` asks.
pub const FINALIZER: &str = "sluice.dev/stop-job";

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub control: ControlClient,
    pub metrics: Arc<Metrics>,
    /// The operator-wide restart rate limit.
    pub restart_permit: Arc<dyn RestartPermit>,
    /// Held by reconciles that may admit a job under a StreamQuota, from the count to the
    /// status write, so that two jobs never both take the last room.
    pub admission: tokio::sync::Mutex<()>,
    /// The Kubernetes PriorityClass of each job priority (`spec.priority`) the chart created.
    pub pod_priority_classes: std::collections::BTreeMap<String, String>,
    /// Who may connect to a job's pods; no NetworkPolicies when `None`.
    pub network: Option<build::NetworkAccess>,
}

pub async fn reconcile(sj: Arc<StreamJob>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&sj, &ctx).await;
    ctx.metrics
        .reconciled(result.is_ok(), started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(sj: &StreamJob, ctx: &Context) -> Result<Requeue, Error> {
    let namespace = sj.namespace().unwrap_or_default();
    let job = JobRef {
        namespace: namespace.clone(),
        name: sj.name_any(),
        uid: sj.uid().unwrap_or_default(),
    };
    let client = ctx.client.clone();
    let jobs: Api<StreamJob> = Api::namespaced(client.clone(), &namespace);
    let deleting = sj.meta().deletion_timestamp.is_some();
    if !deleting && !sj.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = sj.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        jobs.patch(
            &job.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})),
        )
        .await?;
    }
    if deleting && !sj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Requeue::await_change());
    }

    let status = sj.status.clone().unwrap_or_default();
    let token = match token(&client, &job, sj, !deleting).await? {
        Some(t) => t,
        // Going away without ever having had a token: nothing ran that could be stopped.
        None => {
            let mut status = status;
            let coordinator = Endpoint {
                address: None,
                token: String::new(),
                tls: None,
            };
            let mut writer = StatusWriter {
                jobs: jobs.clone(),
                name: job.name.clone(),
                resource_version: None,
            };
            return apply(
                ctx,
                &job,
                sj,
                &mut status,
                Action::ReleaseFinalizer,
                &coordinator,
                &mut writer,
            )
            .await
            .map(|()| Requeue::await_change());
        }
    };
    let coordinator = Endpoint {
        address: control_address(&client, &job).await?,
        token,
        tls: certificates(&client, &job, !deleting).await?,
    };
    let _admitting = match crate::quota::may_be_admitted(sj) {
        true => Some(ctx.admission.lock().await),
        false => None,
    };
    let decision = crate::quota::decide(&client, sj).await?;
    let observed = observe(ctx, &job, &status, &coordinator).await?;
    let plan = plan::plan(&Inputs {
        job: &job,
        spec: &sj.spec,
        generation: sj.meta().generation,
        deleting,
        status: &status,
        observed: &observed,
        now: SystemTime::now(),
        restart_permit: ctx.restart_permit.as_ref(),
        admission: decision.as_ref(),
    });

    // Written even when unchanged: the write's resourceVersion precondition is what stops a
    // reconcile of a stale copy (the watch cache can lag behind our own last write) from
    // acting on an outdated log.
    let mut writer = StatusWriter {
        jobs: jobs.clone(),
        name: job.name.clone(),
        resource_version: sj.meta().resource_version.clone(),
    };
    match writer.write(&plan.status).await {
        Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 => {
            return Ok(Requeue::requeue(std::time::Duration::from_millis(500)));
        }
        other => other?,
    }
    ctx.metrics
        .phase(&job.namespace, &job.name, plan.status.phase);
    for note in &plan.notes {
        publish(ctx, sj, note).await;
    }
    for timing in &plan.timings {
        ctx.metrics.timing(timing);
    }
    let mut status = plan.status;
    for action in plan.actions {
        apply(
            ctx,
            &job,
            sj,
            &mut status,
            action,
            &coordinator,
            &mut writer,
        )
        .await?;
    }
    Ok(Requeue::requeue(plan.requeue))
}

/// The control API's address: the Service's cluster IP, which needs no DNS (a long
/// namespace can make `<service>.<namespace>.svc` fall through to the node's search
/// domains); `None` while there is no Service.
async fn control_address(client: &Client, job: &JobRef) -> Result<Option<String>, Error> {
    let services: Api<Service> = Api::namespaced(client.clone(), &job.namespace);
    Ok(services
        .get_opt(&job.coordinator())
        .await?
        .and_then(|s| s.spec?.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None")
        .map(|ip| format!("{ip}:{CONTROL_PORT}")))
}

/// The job's certificates (`sluice_crds::tls`): a client configuration trusting the CA of
/// its Secret, which the operator issues once (when `create` allows; `None` when there is
/// none). Pods mount the Secret; it goes with the StreamJob.
async fn certificates(
    client: &Client,
    job: &JobRef,
    create: bool,
) -> Result<Option<Arc<rustls::ClientConfig>>, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &job.namespace);
    let name = sluice_crds::tls::secret_name(&job.name);
    let ca = match secrets.get_opt(&name).await? {
        Some(secret) => secret
            .data
            .and_then(|mut d| d.remove(sluice_crds::tls::CA_FILE))
            .map(|b| b.0)
            .ok_or_else(|| {
                Error::Config(format!(
                    "Secret {name} has no key {}",
                    sluice_crds::tls::CA_FILE
                ))
            })?,
        None if create => {
            let issued = sluice_crds::tls::issue(&job.name, &[])
                .map_err(|e| Error::Config(e.to_string()))?;
            let ca = issued.ca.clone().into_bytes();
            secrets
                .create(&PostParams::default(), &build::tls_secret(job, issued))
                .await?;
            ca
        }
        None => return Ok(None),
    };
    Endpoint::trusting(&ca)
        .map(Some)
        .map_err(|e| Error::Config(format!("Secret {name}, {}: {e}", sluice_crds::tls::CA_FILE)))
}

/// The control API token: the user's Secret, or one the operator generates once (when
/// `create` allows; `None` when there is none).
async fn token(
    client: &Client,
    job: &JobRef,
    sj: &StreamJob,
    create: bool,
) -> Result<Option<String>, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &job.namespace);
    let (name, key) = match &sj.spec.secrets.token {
        Some(t) => (t.name.clone(), t.key.clone()),
        None => (job.token(), TOKEN_KEY.to_string()),
    };
    if let Some(secret) = secrets.get_opt(&name).await? {
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&key))
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_string());
        return value.map(Some).ok_or_else(|| {
            Error::Config(format!(
                "Secret {name} has no key {key} (spec.secrets.token)"
            ))
        });
    }
    if !create {
        return Ok(None);
    }
    if sj.spec.secrets.token.is_some() {
        return Err(Error::Config(format!(
            "Secret {name} of spec.secrets.token does not exist"
        )));
    }
    let token = random_token()?;
    secrets
        .create(&PostParams::default(), &build::token_secret(job, &token)?)
        .await?;
    Ok(Some(token))
}

fn random_token() -> Result<String, Error> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::Config(format!("/dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

async fn observe(
    ctx: &Context,
    job: &JobRef,
    status: &StreamJobStatus,
    coordinator: &Endpoint,
) -> Result<Observed, Error> {
    let client = &ctx.client;
    let mut observed = Observed::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &job.namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("sluice.dev/job={}", job.name)))
        .await?;
    // The job's own pods: a pre-flight or cleanup Job is reported by its step.
    let job_pods = || {
        list.items.iter().filter(|p| {
            matches!(
                p.labels().get("sluice.dev/role").map(String::as_str),
                Some("coordinator" | "worker")
            )
        })
    };
    observed.pod_runs = job_pods()
        .map(|p| {
            p.annotations()
                .get("sluice.dev/run")
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    observed.crash = list.items.iter().find_map(crash_of);
    let now = jiff::Timestamp::now();
    observed.pod_failure = job_pods().find_map(|p| pod_failure_of(p, now));

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &job.namespace);
    let deployment = deployments.get_opt(&job.coordinator()).await?;
    match (&coordinator.address, deployment.is_some()) {
        (Some(_), true) => match ctx.control.job(coordinator).await {
            Ok(view) => observed.job = Some(view),
            Err(e) => observed.unreachable = Some(e.to_string()),
        },
        _ => observed.unreachable = Some("no coordinator deployed".into()),
    }
    if let Some(id) = status
        .operation
        .as_ref()
        .and_then(|o| o.step.savepoint_request())
        .and_then(|r| r.savepoint_id.as_ref())
    {
        if observed.job.is_some() {
            observed.savepoint = ctx
                .control
                .savepoint_status(coordinator, id)
                .await
                .unwrap_or(None);
        }
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), &job.namespace);
    let preflight = jobs.get_opt(&job.preflight()).await?;
    observed.preflight = match tool_outcome(preflight.as_ref(), &pods).await {
        None => Preflight::Absent,
        Some(ToolOutcome::Running) => Preflight::Running,
        Some(ToolOutcome::Succeeded) => Preflight::Passed,
        Some(ToolOutcome::Failed(report)) => Preflight::Failed(report),
    };

    let expected = status
        .target
        .as_ref()
        .map_or(0, |t| 1 + build::worker_count(&t.spec) as usize);
    let missing =
        deployment.is_some() && job_pods().count() < expected && observed.pod_failure.is_none();
    if missing || observed.preflight == Preflight::Running {
        let made = Made {
            deployment: deployment.as_ref(),
            preflight: preflight.as_ref(),
        };
        observe_refusals(client, job, made, missing, &mut observed, now).await?;
    }
    let cleanup = jobs.get_opt(&job.savepoint_cleanup()).await?;
    let savepoints: Vec<String> = cleanup
        .as_ref()
        .and_then(|j| j.annotations().get(build::CLEANUP_SAVEPOINTS))
        .and_then(|list| serde_json::from_str(list).ok())
        .unwrap_or_default();
    observed.cleanup = match tool_outcome(cleanup.as_ref(), &pods).await {
        None => Cleanup::Absent,
        Some(ToolOutcome::Running) => Cleanup::Running,
        Some(ToolOutcome::Succeeded) => Cleanup::Succeeded(savepoints),
        Some(ToolOutcome::Failed(report)) => Cleanup::Failed { savepoints, report },
    };
    Ok(observed)
}

/// The children of a job that create its pods, as observed.
struct Made<'a> {
    deployment: Option<&'a Deployment>,
    preflight: Option<&'a Job>,
}

/// Pods missing, or a pre-flight without an end: maybe the namespace refuses to create
/// them (`refusals`), which only their controllers' events tell.
async fn observe_refusals(
    client: &Client,
    job: &JobRef,
    made: Made<'_>,
    missing: bool,
    observed: &mut Observed,
    now: jiff::Timestamp,
) -> Result<(), Error> {
    let events: Api<Event> = Api::namespaced(client.clone(), &job.namespace);
    let failed_create = ListParams::default().fields(&format!("reason={FAILED_CREATE}"));
    let events = events.list(&failed_create).await?.items;
    if missing {
        let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &job.namespace);
        let by_name = ListParams::default().fields(&format!("metadata.name={}", job.worker()));
        let statefulset = statefulsets.list(&by_name).await?.items;
        let (coordinator, workers) = (job.coordinator(), job.worker());
        let creators = [
            (
                CreatorKind::Deployment,
                &coordinator,
                made.deployment.map(|d| &d.metadata),
            ),
            (
                CreatorKind::StatefulSet,
                &workers,
                statefulset.first().map(|s| &s.metadata),
            ),
        ];
        observed.pod_failure = creators.into_iter().find_map(|(kind, name, made)| {
            let creator = Creator {
                kind,
                name,
                created: made?.creation_timestamp.as_ref(),
            };
            refusal(&events, &creator, now).map(|why| PodFailure {
                pod: name.clone(),
                message: format!("{kind:?} {name} cannot create its pods: {why}"),
            })
        });
    }
    if observed.preflight == Preflight::Running {
        let name = job.preflight();
        let creator = Creator {
            kind: CreatorKind::Job,
            name: &name,
            created: made
                .preflight
                .and_then(|j| j.metadata.creation_timestamp.as_ref()),
        };
        if let Some(why) = refusal(&events, &creator, now) {
            observed.preflight =
                Preflight::Failed(format!("the pre-flight's pod cannot be created: {why}"));
        }
    }
    Ok(())
}

enum ToolOutcome {
    Running,
    Succeeded,
    /// With the last lines its pod printed: the tool's own words.
    Failed(String),
}

/// How a run-to-completion Job of the operator's (pre-flight, cleanup) ended, if it exists.
async fn tool_outcome(found: Option<&Job>, pods: &Api<Pod>) -> Option<ToolOutcome> {
    let found = found?;
    let ended = |kind: &str| {
        found
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
    };
    Some(if ended("Complete") {
        ToolOutcome::Succeeded
    } else if ended("Failed") {
        ToolOutcome::Failed(last_lines(pods, &found.name_any()).await)
    } else {
        ToolOutcome::Running
    })
}

async fn last_lines(pods: &Api<Pod>, job_name: &str) -> String {
    let failed = format!("Job {job_name} failed");
    let Ok(list) = pods
        .list(&ListParams::default().labels(&format!("job-name={job_name}")))
        .await
    else {
        return failed;
    };
    for pod in list {
        if let Ok(logs) = pods.logs(&pod.name_any(), &LogParams::default()).await {
            let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(6)..].join(" / ");
            if !tail.is_empty() {
                return tail;
            }
        }
    }
    failed
}

/// A container that keeps failing, named with why: waiting for a reason that does not go away
/// by itself, or not ready again since a failed exit.
fn crash_of(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|c| {
        let waiting = c
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_deref());
        let stuck = waiting.filter(|r| {
            matches!(
                *r,
                "CrashLoopBackOff"
                    | "ErrImagePull"
                    | "ImagePullBackOff"
                    | "ErrImageNeverPull"
                    | "CreateContainerConfigError"
                    | "InvalidImageName"
            )
        });
        let failed_exit = c
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            // A failure it has recovered from is history, not a pod that keeps failing.
            .filter(|t| t.exit_code != 0 && c.restart_count > 0 && !c.ready);
        if stuck.is_none() && failed_exit.is_none() {
            return None;
        }
        let exit = failed_exit
            .map(|t| format!(" ({})", exit_of(t)))
            .unwrap_or_default();
        Some(format!(
            "pod {} container {}: {}{exit}, {} restart(s)",
            pod.name_any(),
            c.name,
            stuck.unwrap_or("restarted"),
            c.restart_count
        ))
    })
}

/// `exit code 2: <the container's message>`.
fn exit_of(t: &k8s_openapi::api::core::v1::ContainerStateTerminated) -> String {
    let message = t
        .message
        .as_deref()
        .map(|m| format!(": {}", m.trim()))
        .unwrap_or_default();
    format!("exit code {}{message}", t.exit_code)
}

/// How long a pod may stay unschedulable before the job counts as failed: long enough for a
/// cluster autoscaler to add a node.
const UNSCHEDULABLE_GRACE: jiff::SignedDuration = jiff::SignedDuration::from_secs(120);

/// A pod that will not run unless the job restarts: evicted, unschedulable for longer than
/// the grace, or a container crash-looping (after two restarts: one crash is the kubelet's
/// and the coordinator's to recover from) or unable to get its image or config.
fn pod_failure_of(pod: &Pod, now: jiff::Timestamp) -> Option<PodFailure> {
    let status = pod.status.as_ref()?;
    let name = pod.name_any();
    let failure = |message: String| PodFailure {
        pod: name.clone(),
        message: format!("pod {name}: {message}"),
    };
    if status.phase.as_deref() == Some("Failed") {
        return Some(failure(format!(
            "{} ({})",
            status.reason.as_deref().unwrap_or("failed"),
            status.message.as_deref().unwrap_or("").trim()
        )));
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(c) = unschedulable {
        let since = c.last_transition_time.as_ref().map(|t| t.0);
        if since.is_some_and(|t| now.duration_since(t) >= UNSCHEDULABLE_GRACE) {
            return Some(failure(format!(
                "cannot be scheduled: {}",
                c.message.as_deref().unwrap_or("").trim()
            )));
        }
    }
    status.container_statuses.iter().flatten().find_map(|c| {
        let state = c.state.as_ref();
        let waiting = state
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_deref());
        // Between two crashes the kubelet reports the container waiting in CrashLoopBackOff
        // or, in recent versions, still terminated: either way, a failed exit it has not
        // recovered from.
        let failed_exit = state
            .and_then(|s| s.terminated.as_ref())
            .or_else(|| {
                c.last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .filter(|_| !c.ready)
            })
            .filter(|t| t.exit_code != 0);
        let crash_loop =
            c.restart_count >= 2 && (waiting == Some("CrashLoopBackOff") || failed_exit.is_some());
        let cannot_start = matches!(
            waiting,
            Some(
                "ErrImagePull"
                    | "ImagePullBackOff"
                    | "ErrImageNeverPull"
                    | "InvalidImageName"
                    | "CreateContainerConfigError"
            )
        );
        if !crash_loop && !cannot_start {
            return None;
        }
        let how = waiting.unwrap_or("CrashLoopBackOff");
        let exit = failed_exit
            .map(|t| format!(", last {}", exit_of(t)))
            .unwrap_or_default();
        Some(failure(format!(
            "container {} {how} after {} restart(s){exit}",
            c.name, c.restart_count
        )))
    })
}

/// Writes the status only over the version of the object the plan was made from.
struct StatusWriter {
    jobs: Api<StreamJob>,
    name: String,
    resource_version: Option<String>,
}

impl StatusWriter {
    async fn write(&mut self, status: &StreamJobStatus) -> Result<(), Error> {
        let patch = json!({
            "apiVersion": sluice_crds::API_VERSION,
            "kind": sluice_crds::KIND,
            "metadata": {"resourceVersion": self.resource_version},
            "status": status,
        });
        let written = self
            .jobs
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await?;
        self.resource_version = written.metadata.resource_version;
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    ctx: &Context,
    job: &JobRef,
    sj: &StreamJob,
    status: &mut StreamJobStatus,
    action: Action,
    coordinator: &Endpoint,
    writer: &mut StatusWriter,
) -> Result<(), Error> {
    let client = &ctx.client;
    let ns = &job.namespace;
    match action {
        Action::Deploy(revision) => {
            let class = revision
                .spec
                .priority
                .as_ref()
                .and_then(|p| ctx.pod_priority_classes.get(p));
            let mut c = match build::children(job, &revision) {
                Ok(c) => c,
                Err(e) => {
                    warn(ctx, sj, "InvalidSpec", e.to_string()).await;
                    return Err(e);
                }
            };
            if let Some(class) = class {
                c = c.with_priority_class(class);
            }
            if let Some(access) = &ctx.network {
                c = c.with_network_policies(job, access);
            }
            // Policies first: no pod of the job is up before they are.
            for policy in &c.network_policies {
                server_side_apply(client, ns, policy).await?;
            }
            server_side_apply(client, ns, &c.manifest).await?;
            server_side_apply(client, ns, &c.coordinator_service).await?;
            server_side_apply(client, ns, &c.worker_service).await?;
            server_side_apply(client, ns, &c.disruption_budget).await?;
            server_side_apply(client, ns, &c.workers).await?;
            server_side_apply(client, ns, &c.coordinator).await?;
        }
        Action::RemovePods => {
            // The plan deploys again only once no pod of the old run is left, so the
            // objects can go at once and the garbage collector take their pods after.
            let dp = DeleteParams::background();
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
            let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
            ignore_missing(deployments.delete(&job.coordinator(), &dp).await.map(drop))?;
            ignore_missing(sets.delete(&job.worker(), &dp).await.map(drop))?;
        }
        Action::Savepoint { target, stop } => {
            match ctx.control.savepoint(coordinator, &target, stop).await {
                Ok(id) => {
                    let request = status
                        .operation
                        .as_mut()
                        .and_then(|o| o.step.savepoint_request_mut());
                    if let Some(request) = request {
                        request.savepoint_id = Some(id);
                        writer.write(status).await?;
                    }
                    ctx.metrics.savepoint_requested();
                }
                // Asked again on the next reconcile, up to the operation's attempts.
                Err(e) => warn(ctx, sj, "SavepointRequestFailed", e.to_string()).await,
            }
        }
        Action::Cancel => {
            if let Err(e) = ctx.control.cancel(coordinator).await {
                warn(ctx, sj, "CancelFailed", e.to_string()).await;
            }
        }
        Action::Preflight {
            revision,
            savepoint,
        } => {
            let (config, check) = build::preflight(job, &revision, &savepoint)?;
            server_side_apply(client, ns, &config).await?;
            create_job(client, ns, &check).await?;
        }
        Action::DeleteSavepoints { spec, savepoints } => {
            let cleanup = build::savepoint_cleanup(job, &spec, &savepoints)?;
            create_job(client, ns, &cleanup).await?;
        }
        Action::RemoveCleanup => delete_job(client, ns, &job.savepoint_cleanup()).await?,
        Action::RemovePreflight => {
            delete_job(client, ns, &job.preflight()).await?;
            let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            ignore_missing(
                maps.delete(&job.preflight(), &DeleteParams::default())
                    .await
                    .map(drop),
            )?;
        }
        Action::ReleaseFinalizer => {
            ctx.metrics.forget(&job.namespace, &job.name);
            let finalizers: Vec<String> = sj
                .finalizers()
                .iter()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect();
            writer
                .jobs
                .patch(
                    &job.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})),
                )
                .await?;
        }
    }
    Ok(())
}

/// Creates a run-to-completion Job; one already there (from a reconcile that had not seen it
/// yet) is the same Job, observed on the next reconcile.
async fn create_job(client: &Client, ns: &str, job: &Job) -> Result<(), Error> {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    match api.create(&PostParams::default(), job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn delete_job(client: &Client, ns: &str, name: &str) -> Result<(), Error> {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    ignore_missing(
        api.delete(name, &DeleteParams::background())
            .await
            .map(drop),
    )
}

fn ignore_missing(r: Result<(), kube::Error>) -> Result<(), Error> {
    match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => Ok(other?),
    }
}

async fn server_side_apply<K>(client: &Client, ns: &str, object: &K) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + serde::de::DeserializeOwned
        + Clone
        + Debug,
    <K as Resource>::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(())
}

async fn warn(ctx: &Context, sj: &StreamJob, reason: &'static str, message: String) {
    let note = plan::Note {
        warning: true,
        reason,
        message,
    };
    publish(ctx, sj, &note).await;
}

/// The event's action: its reason and a digest of its message. kube's `Recorder` folds
/// events with the same reason and action into one series that keeps the first message, so
/// with one action for all, "savepoint B completed" after "savepoint A completed" would be
/// shown as A twice. Equal notes still form a series; different ones are events of their own.
fn event_action(note: &plan::Note) -> String {
    let mut digest = DefaultHasher::new();
    note.message.hash(&mut digest);
    format!("{}-{:016x}", note.reason, digest.finish())
}

async fn publish(ctx: &Context, sj: &StreamJob, note: &plan::Note) {
    let event = KubeEvent {
        type_: if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: note.reason.to_string(),
        note: Some(note.message.chars().take(1000).collect()),
        action: event_action(note),
        secondary: None,
    };
    let (namespace, name) = (sj.namespace().unwrap_or_default(), sj.name_any());
    if let Err(e) = ctx.recorder.publish(&event, &sj.object_ref(&())).await {
        tracing::warn!(%namespace, %name, reason = note.reason, "event not published: {e}");
    }
    if note.warning {
        tracing::warn!(%namespace, %name, reason = note.reason, "{}", note.message);
    } else {
        tracing::info!(%namespace, %name, reason = note.reason, "{}", note.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(reason: &'static str, message: &str) -> plan::Note {
        plan::Note {
            warning: false,
            reason,
            message: message.to_string(),
        }
    }

    #[test]
    fn two_savepoints_are_two_events_and_a_repeat_is_one_series() {
        let first = note(
            "SavepointCompleted",
            "Upgrade savepoint file:///sp/sp-0000000002",
        );
        let second = note(
            "SavepointCompleted",
            "Upgrade savepoint file:///sp/sp-0000000004",
        );
        assert_ne!(event_action(&first), event_action(&second));
        assert_eq!(
            event_action(&first),
            event_action(&note(
                "SavepointCompleted",
                "Upgrade savepoint file:///sp/sp-0000000002"
            ))
        );
        // The API server's limit for an event's action.
        assert!(event_action(&first).len() <= 128);
    }

    fn pod(container_status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "fraud-worker-1"},
            "status": {"containerStatuses": [container_status]}
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_that_keeps_failing_is_one_not_ready_since_a_failed_exit_or_stuck_waiting() {
        let failed_before = serde_json::json!({
            "name": "sluice", "image": "sluice", "imageID": "", "ready": true,
            "restartCount": 1,
            "lastState": {"terminated": {"exitCode": 101, "reason": "Error"}},
            "state": {"running": {}}
        });
        assert_eq!(crash_of(&pod(failed_before.clone())), None);

        let mut failing = failed_before;
        failing["ready"] = false.into();
        failing["state"] = serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}});
        assert!(crash_of(&pod(failing)).is_some_and(|why| why.contains("CrashLoopBackOff")));
    }

    #[test]
    fn a_pod_that_will_not_run_without_a_restart_of_the_job_is_a_failure() {
        let now: jiff::Timestamp = "2026-12-05T21:04:00Z".parse().unwrap();
        // As a 1.35 kubelet reports a crash loop between two restarts: terminated, not waiting.
        let looping = serde_json::json!({
            "name": "sluice", "image": "sluice", "imageID": "", "ready": false,
            "restartCount": 5,
            "lastState": {"terminated": {"exitCode": 2, "reason": "Error"}},
            "state": {"terminated": {"exitCode": 2, "reason": "Error"}}
        });
        let failure = pod_failure_of(&pod(looping.clone()), now).unwrap();
        assert_eq!(failure.pod, "fraud-worker-1");
        assert_eq!(
            failure.message,
            "pod fraud-worker-1: container sluice CrashLoopBackOff after 5 restart(s), last exit code 2"
        );
        // One crash is the kubelet's and the coordinator's to recover from.
        let mut once = looping.clone();
        once["restartCount"] = 1.into();
        assert_eq!(pod_failure_of(&pod(once), now), None);
        let mut recovered = looping;
        recovered["ready"] = true.into();
        recovered["state"] = serde_json::json!({"running": {}});
        assert_eq!(pod_failure_of(&pod(recovered), now), None);

        let no_image = serde_json::json!({
            "name": "sluice", "image": "sluice", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": "ErrImageNeverPull"}}
        });
        assert!(pod_failure_of(&pod(no_image), now)
            .is_some_and(|f| f.message.contains("ErrImageNeverPull")));

        let unschedulable = |since: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "fraud-worker-1"},
                "status": {"phase": "Pending", "conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/1 nodes are available: 1 Insufficient cpu.",
                    "lastTransitionTime": since
                }]}
            }))
            .unwrap()
        };
        assert_eq!(
            pod_failure_of(&unschedulable("2026-12-05T21:03:00Z"), now),
            None
        );
        assert!(
            pod_failure_of(&unschedulable("2026-12-05T21:01:00Z"), now).is_some_and(|f| f
                .message
                .ends_with("cannot be scheduled: 0/1 nodes are available: 1 Insufficient cpu."))
        );

        let evicted: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "fraud-coordinator-x"},
            "status": {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}
        }))
        .unwrap();
        assert_eq!(
            pod_failure_of(&evicted, now).unwrap().message,
            "pod fraud-coordinator-x: Evicted (The node was low on resource: memory.)"
        );
    }
}

//! The cluster side of StreamQuota admission: lists the namespace's quotas and StreamJobs,
//! turns each job's status into where it stands with the quota, runs the pure
//! [`admission::admit`], and writes what each quota holds to its status. Every job's
//! reconcile evaluates the whole namespace and acts on its own decision only; the decisions
//! agree because the evaluation is deterministic.

use crate::admission::{self, Candidate, Decision, Demand, Quota, Standing};
use crate::error::Error;
use crate::plan::parse_time;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sluice_crds::{condition_types, DesiredState, OperationKind, Phase, StreamJob, StreamQuota};
use std::time::SystemTime;

/// What the namespace's quotas decide for `job`; `None` when the namespace has no quota.
pub async fn decide(client: &Client, job: &StreamJob) -> Result<Option<Decision>, Error> {
    let namespace = job.namespace().unwrap_or_default();
    let quotas_api: Api<StreamQuota> = Api::namespaced(client.clone(), &namespace);
    let quotas = quotas_api.list(&ListParams::default()).await?.items;
    if quotas.is_empty() {
        return Ok(None);
    }
    let jobs_api: Api<StreamJob> = Api::namespaced(client.clone(), &namespace);
    let jobs = jobs_api.list(&ListParams::default()).await?.items;
    let mut candidates = Vec::new();
    let mut own_error = None;
    for j in &jobs {
        match candidate(j) {
            Ok(Some(c)) => candidates.push(c),
            Ok(None) => {}
            Err(e) if j.name_any() == job.name_any() => own_error = Some(e),
            Err(e) => tracing::warn!(job = %j.name_any(), "not counted against the quota: {e}"),
        }
    }
    if let Some(e) = own_error {
        return Ok(Some(Decision::Queue {
            reason: format!("its demand cannot be counted: {e}"),
        }));
    }
    let names: Vec<String> = quotas.iter().map(ResourceExt::name_any).collect();
    let views: Vec<Quota> = quotas
        .iter()
        .zip(&names)
        .map(|(q, name)| Quota {
            name,
            spec: &q.spec,
        })
        .collect();
    let decided = admission::admit(&views, &candidates)
        .map_err(|e| Error::Config(format!("StreamQuota in {namespace}: {e}")))?;
    let mut status = admission::quota_status(&candidates, &decided);
    for quota in &quotas {
        status.observed_generation = quota.metadata.generation;
        status.conditions = quota
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        if quota.status.as_ref() != Some(&status) {
            let patch = json!({ "status": status });
            quotas_api
                .patch_status(
                    &quota.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
    }
    Ok(decided.decision(&job.name_any()).cloned())
}

/// Whether a reconcile of `job` may admit it: such reconciles take turns, so that two jobs
/// never both take the last room.
pub fn may_be_admitted(job: &StreamJob) -> bool {
    let phase = job.status.as_ref().and_then(|s| s.phase);
    job.spec.state == DesiredState::Running
        && matches!(
            phase,
            None | Some(Phase::Pending | Phase::Queued | Phase::Suspended | Phase::Preempted)
        )
}

/// Where a job stands with the quota, from its status; `None` for jobs that take nothing and
/// do not wait (suspended by their user, finished, failed for good).
fn candidate(job: &StreamJob) -> Result<Option<Candidate>, admission::AdmissionError> {
    let status = job.status.clone().unwrap_or_default();
    let op = status.operation.as_ref().map(|o| o.kind);
    let since = || {
        status
            .condition(condition_types::ADMITTED)
            .and_then(|c| parse_time(&c.last_transition_time))
    };
    let standing = if job.metadata.deletion_timestamp.is_some() {
        // Its pods hold their room until they are gone.
        Standing::Admitted { busy: true }
    } else {
        match status.phase {
            Some(Phase::Finished | Phase::Failed) => return Ok(None),
            None | Some(Phase::Pending | Phase::Queued | Phase::Suspended | Phase::Preempted)
                if job.spec.state == DesiredState::Suspended =>
            {
                return Ok(None)
            }
            None | Some(Phase::Pending | Phase::Queued | Phase::Suspended) => Standing::Waiting {
                preempted: false,
                since: since(),
            },
            Some(Phase::Preempted) => Standing::Waiting {
                preempted: true,
                since: since(),
            },
            Some(Phase::Suspending) if op == Some(OperationKind::Preempt) => Standing::Leaving,
            _ => Standing::Admitted {
                busy: op.is_some_and(|k| k != OperationKind::Savepoint),
            },
        }
    };
    Ok(Some(Candidate {
        name: job.name_any(),
        created: job
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| SystemTime::from(t.0))
            .unwrap_or(SystemTime::UNIX_EPOCH),
        priority_class: job.spec.priority.clone(),
        demand: Demand::of(&job.spec)?,
        standing,
    }))
}

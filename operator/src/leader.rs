//! Leader election with a `coordination.k8s.io` Lease, so that two operator replicas never
//! act on the same job: the holder renews it, the others take it over once it expires.
//! Optimistic concurrency (the Lease's resourceVersion) decides races.

use crate::error::Error;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use std::time::Duration;

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl LeaderElection {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        LeaderElection {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
        }
    }

    /// Takes or renews the lease; true while this replica holds it.
    pub async fn try_acquire(&self) -> Result<bool, Error> {
        let now = jiff::Timestamp::now();
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": self.name},
                "spec": self.spec(now, 0),
            }))
            .map_err(|e| Error::Config(e.to_string()))?;
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let expired = spec.renew_time.as_ref().is_none_or(|MicroTime(t)| {
            let duration = spec.lease_duration_seconds.unwrap_or(15);
            now.as_second() > t.as_second() + i64::from(duration)
        });
        if holder != self.identity && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(holder != self.identity);
        let mut next = lease.clone();
        next.spec = Some(
            serde_json::from_value(self.spec(now, transitions))
                .map_err(|e| Error::Config(e.to_string()))?,
        );
        if holder == self.identity {
            // Keep the acquire time of our own term.
            if let (Some(n), Some(old)) = (next.spec.as_mut(), spec.acquire_time) {
                n.acquire_time = Some(old);
            }
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lease up, so that a standby takes over at once instead of after it expires.
    pub async fn release(&self) -> Result<(), Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }

    fn spec(&self, now: jiff::Timestamp, transitions: i32) -> serde_json::Value {
        let t = now.to_string();
        json!({
            "holderIdentity": self.identity,
            "leaseDurationSeconds": LEASE_DURATION.as_secs(),
            "acquireTime": t,
            "renewTime": t,
            "leaseTransitions": transitions,
        })
    }
}

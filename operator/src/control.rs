//! A client of a coordinator's control API (`docs/control-api.md`): what the operator
//! observes of a running job and how it asks for savepoints and stops.

use crate::error::Error;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_crds::control::{
    Accepted, ErrorBody, JobStatus, SavepointRequest, SavepointStatus, StopRequest,
};
use std::time::Duration;

#[derive(Clone)]
pub struct ControlClient {
    agent: ureq::Agent,
}

impl Default for ControlClient {
    fn default() -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Coordinators are reached inside the cluster, never through a proxy.
            .proxy(None)
            // No kept-alive connections: a Service's cluster IP outlives the pods behind it
            // (and is reused by later Services), so a pooled connection can reach the wrong
            // process.
            .max_idle_connections(0)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        ControlClient { agent }
    }
}

impl ControlClient {
    pub async fn job(&self, base: &str, token: &str) -> Result<JobStatus, Error> {
        self.call(base, "/v1/job", token, None::<()>).await
    }

    pub async fn savepoint_status(
        &self,
        base: &str,
        token: &str,
        id: &str,
    ) -> Result<Option<SavepointStatus>, Error> {
        let path = format!("/v1/savepoints/{id}");
        match self.call(base, &path, token, None::<()>).await {
            Ok(status) => Ok(Some(status)),
            // An id of an earlier coordinator process: the request is lost with it.
            Err(Error::Control { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Asks for a savepoint (and a stop after it); returns the request's id.
    pub async fn savepoint(
        &self,
        base: &str,
        token: &str,
        target: &str,
        stop: bool,
    ) -> Result<String, Error> {
        let request = SavepointRequest {
            target_directory: Some(target.to_string()),
            stop,
        };
        let accepted: Accepted = self
            .call(base, "/v1/savepoints", token, Some(request))
            .await?;
        Ok(accepted.id)
    }

    /// Stops the job without a savepoint: output since its latest checkpoint is dropped.
    pub async fn cancel(&self, base: &str, token: &str) -> Result<(), Error> {
        let request = StopRequest {
            savepoint: false,
            target_directory: None,
        };
        // The reply names no savepoint when cancelling: nothing in it to keep.
        self.call::<_, serde::de::IgnoredAny>(base, "/v1/stop", token, Some(request))
            .await
            .map(drop)
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        token: &str,
        body: Option<B>,
    ) -> Result<T, Error> {
        let body = body
            .map(|b| serde_json::to_value(b))
            .transpose()
            .map_err(|e| Error::control(base, path, 0, e.to_string()))?;
        let (agent, url, auth) = (
            self.agent.clone(),
            format!("{base}{path}"),
            format!("Bearer {token}"),
        );
        let (status, text) = tokio::task::spawn_blocking(move || {
            let response = match body {
                None => agent.get(&url).header("Authorization", &auth).call(),
                Some(b) => agent.post(&url).header("Authorization", &auth).send_json(b),
            };
            let mut response = response.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let text = response
                .body_mut()
                .read_to_string()
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((status, text))
        })
        .await
        .map_err(|e| Error::control(base, path, 0, e.to_string()))?
        .map_err(|e| Error::control(base, path, 0, e))?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.error)
                .unwrap_or(text);
            return Err(Error::control(base, path, status, message));
        }
        serde_json::from_str(&text).map_err(|e| Error::control(base, path, status, e.to_string()))
    }
}

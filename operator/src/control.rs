//! A client of a coordinator's control API (`docs/control-api.md`): what the operator
//! observes of a running job and how it asks for savepoints and stops.

use crate::error::Error;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// `GET /v1/job`, the fields the operator acts on.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub phase: String,
    #[serde(default)]
    pub parallelism: u32,
    #[serde(default)]
    pub checkpoints: CheckpointsView,
    #[serde(default)]
    pub restored_from: Option<String>,
    #[serde(default)]
    pub errors: Vec<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointsView {
    #[serde(default)]
    pub last_completed: Option<SnapshotView>,
    #[serde(default)]
    pub last_failure: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct SnapshotView {
    pub id: u64,
    pub kind: String,
    pub location: String,
}

/// `GET /v1/savepoints/{id}`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct SavepointView {
    pub status: String,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

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
    pub async fn job(&self, base: &str, token: &str) -> Result<JobView, Error> {
        let body = self.call(base, "/v1/job", token, None).await?;
        parse(base, "/v1/job", body)
    }

    pub async fn savepoint_status(
        &self,
        base: &str,
        token: &str,
        id: &str,
    ) -> Result<Option<SavepointView>, Error> {
        let path = format!("/v1/savepoints/{id}");
        match self.call(base, &path, token, None).await {
            Ok(body) => parse(base, &path, body).map(Some),
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
        let body = json!({"targetDirectory": target, "stop": stop});
        let reply = self.call(base, "/v1/savepoints", token, Some(body)).await?;
        reply
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::control(base, "/v1/savepoints", 0, "no id in the reply"))
    }

    /// Stops the job without a savepoint: output since its latest checkpoint is dropped.
    pub async fn cancel(&self, base: &str, token: &str) -> Result<(), Error> {
        self.call(base, "/v1/stop", token, Some(json!({"savepoint": false})))
            .await
            .map(drop)
    }

    async fn call(
        &self,
        base: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<Value, Error> {
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
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or(text);
            return Err(Error::control(base, path, status, message));
        }
        serde_json::from_str(&text).map_err(|e| Error::control(base, path, status, e.to_string()))
    }
}

fn parse<T: serde::de::DeserializeOwned>(base: &str, path: &str, v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|e| Error::control(base, path, 200, e.to_string()))
}

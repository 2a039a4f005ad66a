//! A client of a coordinator's control API (`docs/control-api.md`): what the operator
//! observes of a running job and how it asks for savepoints and stops.
//!
//! The API serves HTTPS with the job's certificate (`sluice_crds::tls`). The operator
//! reaches it at its Service's cluster IP, which no certificate names, so it checks the
//! name every job certificate carries, against the job's own CA and nothing else: a
//! process that is not the job's coordinator cannot pose as it and learn the token.

use crate::error::Error;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_crds::control::{
    Accepted, ErrorBody, JobStatus, SavepointRequest, SavepointStatus, StopRequest,
};
use std::sync::Arc;
use std::time::Duration;

/// How long one call may take, connection and handshake included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How the operator reaches one job's coordinator.
pub struct Endpoint {
    /// `<cluster IP>:<port>` of the coordinator's Service; `None` while there is none.
    pub address: Option<String>,
    pub token: String,
    /// Trusts the job's CA only; `None` before the job has certificates.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Endpoint {
    /// A client configuration trusting only the CA in `ca_pem`.
    pub fn trusting(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(cert.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        if roots.is_empty() {
            return Err("no CA certificate".into());
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// Calls coordinators' control APIs; a new connection per call: a Service's cluster IP
/// outlives the pods behind it (and is reused by later Services), so a kept connection
/// could reach the wrong process.
#[derive(Clone, Default)]
pub struct ControlClient;

impl ControlClient {
    pub async fn job(&self, to: &Endpoint) -> Result<JobStatus, Error> {
        self.call(to, "/v1/job", None::<()>).await
    }

    pub async fn savepoint_status(
        &self,
        to: &Endpoint,
        id: &str,
    ) -> Result<Option<SavepointStatus>, Error> {
        let path = format!("/v1/savepoints/{id}");
        match self.call(to, &path, None::<()>).await {
            Ok(status) => Ok(Some(status)),
            // An id of an earlier coordinator process: the request is lost with it.
            Err(Error::Control { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Asks for a savepoint (and a stop after it); returns the request's id.
    pub async fn savepoint(
        &self,
        to: &Endpoint,
        target: &str,
        stop: bool,
    ) -> Result<String, Error> {
        let request = SavepointRequest {
            target_directory: Some(target.to_string()),
            stop,
        };
        let accepted: Accepted = self.call(to, "/v1/savepoints", Some(request)).await?;
        Ok(accepted.id)
    }

    /// Stops the job without a savepoint: output since its latest checkpoint is dropped.
    pub async fn cancel(&self, to: &Endpoint) -> Result<(), Error> {
        let request = StopRequest {
            savepoint: false,
            target_directory: None,
        };
        // The reply names no savepoint when cancelling: nothing in it to keep.
        self.call::<_, serde::de::IgnoredAny>(to, "/v1/stop", Some(request))
            .await
            .map(drop)
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        to: &Endpoint,
        path: &str,
        body: Option<B>,
    ) -> Result<T, Error> {
        let Some(address) = &to.address else {
            return Err(Error::control(
                "",
                path,
                0,
                "the coordinator has no Service yet",
            ));
        };
        let base = format!("https://{address}");
        let fail = |status: u16, message: String| Error::control(&base, path, status, message);
        let Some(tls) = &to.tls else {
            return Err(fail(0, "the job has no certificates yet".into()));
        };
        let body = body
            .map(|b| serde_json::to_vec(&b))
            .transpose()
            .map_err(|e| fail(0, e.to_string()))?;
        let exchange = exchange(address, tls.clone(), path, &to.token, body);
        let (status, text) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| fail(0, format!("no answer within {CALL_TIMEOUT:?}")))?
            .map_err(|e| fail(0, e))?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.error)
                .unwrap_or(text);
            return Err(fail(status, message));
        }
        serde_json::from_str(&text).map_err(|e| fail(status, e.to_string()))
    }
}

/// One request on a connection of its own: the status and the body.
async fn exchange(
    address: &str,
    tls: Arc<rustls::ClientConfig>,
    path: &str,
    token: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, String), String> {
    let name = rustls::pki_types::ServerName::try_from(sluice_crds::tls::PEER_NAME)
        .map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    // Drives the connection; it ends with the response.
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .uri(path)
        .header(hyper::header::HOST, address)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    let request = match body {
        None => request
            .method(hyper::Method::GET)
            .body(Full::new(Bytes::new())),
        Some(b) => request
            .method(hyper::Method::POST)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(b))),
    }
    .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

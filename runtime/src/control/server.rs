//! The HTTP server: binding, routing, authentication, JSON in and out.

use super::auth;
use super::model::{
    Accepted, CompatibilityRequest, ErrorBody, JobError, Phase, Probe, SavepointRequest,
    StopAccepted, StopRequest,
};
use super::prometheus;
use super::savepoints::Savepoints;
use super::JobControl;
use crate::error::Error;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use sluice_http::header::{HeaderValue, ALLOW, AUTHORIZATION, WWW_AUTHENTICATE};
use sluice_http::{json, Request, Response, StatusCode};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Request bodies are small JSON objects; anything larger is refused unread.
const MAX_BODY: usize = 64 * 1024;

/// The job page (`GET /`): one self-contained file that reads `v1/job`.
const JOB_PAGE: &str = include_str!("page/job.html");

fn job_page() -> Response {
    sluice_http::response(StatusCode::OK, "text/html; charset=utf-8", JOB_PAGE)
}

/// How the control API is served.
#[derive(Clone, Debug, Default)]
pub struct ControlConfig {
    /// `host:port` to listen on; port 0 takes a free port.
    pub addr: String,
    /// The bearer token every request but the probes must carry; without one the API
    /// listens on loopback only.
    pub token: Option<String>,
    /// Savepoint storage (URI) for requests that name none.
    pub default_savepoint_dir: Option<String>,
    /// Serves HTTPS with this configuration (the job's certificate) when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// A listening socket, bound before the job starts so that a bad address or a missing
/// token fails the run before any work.
pub struct BoundControl {
    listener: TcpListener,
    addr: SocketAddr,
    config: ControlConfig,
}

impl BoundControl {
    pub fn bind(config: ControlConfig) -> Result<Self, Error> {
        let (listener, addr) = bind_listener(&config.addr, |addr| {
            auth::check_exposure(addr, config.token.as_deref())
        })?;
        Ok(BoundControl {
            listener,
            addr,
            config,
        })
    }

    /// The address it listens on, with the actual port.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the API for `job` on a thread of its own until the returned server is shut
    /// down or dropped.
    pub fn serve(self, job: Arc<dyn JobControl>) -> Result<ControlServer, Error> {
        let savepoints = Arc::new(Savepoints::new());
        let state = Arc::new(State {
            registry: registry(&job)?,
            job,
            token: self.config.token,
            default_savepoint_dir: self.config.default_savepoint_dir,
            savepoints: savepoints.clone(),
            stop: Mutex::new(()),
        });
        let serving = Serving::spawn("control-api", self.listener, self.config.tls, move |req| {
            let state = state.clone();
            async move { respond(&state, req).await }
        })?;
        Ok(ControlServer {
            addr: self.addr,
            savepoints,
            serving,
        })
    }
}

/// The read-only endpoint, apart from the control API: `GET /metrics`, `GET /v1/job` and
/// the job page at `/`, with no token, so that a scraper holds no credential that could
/// stop the job or take a savepoint, and a browser reaches the page through
/// `kubectl port-forward` without one (a browser cannot add a bearer token to a page it
/// opens). What it serves is what the API serves at the same paths: counters and status
/// named by job, operator and subtask, never a record's content or a secret.
pub struct BoundMetrics {
    listener: TcpListener,
    addr: SocketAddr,
}

impl BoundMetrics {
    pub fn bind(addr: &str) -> Result<Self, Error> {
        let (listener, addr) = bind_listener(addr, |_| Ok(()))?;
        Ok(BoundMetrics { listener, addr })
    }

    /// The address it listens on, with the actual port.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `job`'s metrics on a thread of its own until the returned server is dropped.
    pub fn serve(self, job: Arc<dyn JobControl>) -> Result<MetricsServer, Error> {
        let registry = Arc::new(registry(&job)?);
        let serving = Serving::spawn("metrics", self.listener, None, move |req: Request| {
            let (registry, job) = (registry.clone(), job.clone());
            async move { read_only(&registry, job.as_ref(), &req) }
        })?;
        Ok(MetricsServer {
            addr: self.addr,
            _serving: serving,
        })
    }
}

/// The serving metrics endpoint; dropping it stops serving.
pub struct MetricsServer {
    addr: SocketAddr,
    _serving: Serving,
}

impl MetricsServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

fn read_only(registry: &::prometheus::Registry, job: &dyn JobControl, req: &Request) -> Response {
    let path = req.uri().path();
    if !matches!(path, "/" | "/metrics" | "/v1/job") {
        let message = format!("no endpoint at {path}: this port serves /, /v1/job and /metrics");
        return ApiError::new(StatusCode::NOT_FOUND, message).response();
    }
    if req.method() != sluice_http::Method::GET {
        return method_not_allowed(path, "GET", req.method());
    }
    match path {
        "/" => job_page(),
        "/v1/job" => {
            // This port needs no token: it shows no key, whatever the job's setting.
            let mut status = job.status();
            status.errors.iter_mut().for_each(JobError::redact_key);
            json(StatusCode::OK, &status)
        }
        _ => sluice_http::metrics(registry),
    }
}

/// 405, with the method `path` takes in `Allow`.
fn method_not_allowed(path: &str, allowed: &'static str, got: &sluice_http::Method) -> Response {
    let message = format!("{path} takes {allowed}, not {got}");
    let mut r = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, message).response();
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allowed));
    r
}

fn registry(job: &Arc<dyn JobControl>) -> Result<::prometheus::Registry, Error> {
    prometheus::registry(job.clone()).map_err(|e| Error::Control(format!("metrics registry: {e}")))
}

/// Binds `addr` once `check` accepts the address it resolves to. Bound before the job
/// starts, so that a bad address fails the run before any work.
fn bind_listener(
    addr: &str,
    check: impl FnOnce(SocketAddr) -> Result<(), Error>,
) -> Result<(TcpListener, SocketAddr), Error> {
    let bad = |message: String| Error::Control(format!("{addr}: {message}"));
    let resolved = addr
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))?;
    check(resolved)?;
    let listener = TcpListener::bind(resolved).map_err(|e| bad(format!("cannot listen: {e}")))?;
    // Tokio takes the socket over; it must not block.
    listener
        .set_nonblocking(true)
        .map_err(|e| bad(e.to_string()))?;
    let bound = listener.local_addr().map_err(|e| bad(e.to_string()))?;
    Ok((listener, bound))
}

/// A server on a single-threaded runtime of its own thread; dropping it stops serving:
/// idle connections are closed, requests in flight get a moment to finish.
struct Serving {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Serving {
    fn spawn<H, F>(
        name: &str,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: H,
    ) -> Result<Self, Error>
    where
        H: Fn(Request) -> F + Clone + Send + Sync + 'static,
        F: std::future::Future<Output = Response> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io(format!("{name} runtime"), e))?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel();
        let server = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let stopped = async {
                                // A dropped sender stops the server too.
                                let _ = stopped.await;
                            };
                            sluice_http::serve(listener, tls, handler, stopped).await
                        }
                        Err(e) => tracing::error!(error = %e, server, "cannot serve"),
                    }
                })
            })
            .map_err(|e| Error::io(format!("{name} thread"), e))?;
        Ok(Serving {
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    fn stop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            // The server may be gone already; nothing else to stop then.
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The running API; dropping it stops serving.
pub struct ControlServer {
    addr: SocketAddr,
    savepoints: Arc<Savepoints>,
    serving: Serving,
}

impl ControlServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits, at most `timeout`, until a client has read the outcome of every
    /// stop-with-savepoint asked for through the API, so that a process which ends with its
    /// job does not exit before telling where the savepoint went.
    pub fn wait_for_stop_reported(&self, timeout: Duration) {
        self.savepoints.wait_for_stop_reported(timeout);
    }

    /// Stops serving: idle connections are closed, requests in flight get a moment to finish.
    pub fn shutdown(mut self) {
        self.serving.stop();
    }
}

struct State {
    /// The process's metrics: the job's, read from its status when scraped.
    registry: ::prometheus::Registry,
    job: Arc<dyn JobControl>,
    token: Option<String>,
    default_savepoint_dir: Option<String>,
    savepoints: Arc<Savepoints>,
    /// Held while checking that the job may be stopped and starting the stop, so that two
    /// requests cannot both start one.
    stop: Mutex<()>,
}

/// An error response: its status and what was wrong.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn response(self) -> Response {
        let mut r = json(
            self.status,
            &ErrorBody {
                error: self.message,
            },
        );
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn internal(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
}

/// The method each endpoint answers.
fn allowed_method(path: &str) -> Option<&'static str> {
    match path {
        "/" | "/healthz" | "/readyz" | "/metrics" | "/v1/job" => Some("GET"),
        "/v1/savepoints" | "/v1/stop" | "/v1/compatibility" => Some("POST"),
        p if savepoint_id(p).is_some() => Some("GET"),
        _ => None,
    }
}

fn savepoint_id(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/savepoints/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

async fn respond(state: &Arc<State>, req: Request) -> Response {
    route(state, req).await.unwrap_or_else(ApiError::response)
}

async fn route(state: &Arc<State>, req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path().to_string();
    // Probes stay open: the kubelet carries no token.
    if !matches!(path.as_str(), "/healthz" | "/readyz") {
        let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
        if let Some(why) = auth::refusal(state.token.as_deref(), header) {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, why));
        }
    }
    let Some(method) = allowed_method(&path) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no endpoint at {path}"),
        ));
    };
    if req.method().as_str() != method {
        return Ok(method_not_allowed(&path, method, req.method()));
    }
    let ok = StatusCode::OK;
    match path.as_str() {
        "/" => Ok(job_page()),
        "/healthz" => Ok(json(ok, &serde_json::json!({ "status": "ok" }))),
        "/readyz" => {
            let phase = state.job.status().phase;
            let ready = phase == Phase::Running;
            let status = if ready {
                ok
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Ok(json(status, &Probe { ready, phase }))
        }
        "/metrics" => Ok(sluice_http::metrics(&state.registry)),
        "/v1/job" => Ok(json(ok, &state.job.status())),
        "/v1/savepoints" => {
            let request: SavepointRequest = read_json(req).await?;
            let target = target_uri(request.target_directory, state)?;
            let id = start_savepoint(state, target, request.stop)?;
            Ok(json(StatusCode::ACCEPTED, &Accepted { id }))
        }
        "/v1/stop" => {
            let request: StopRequest = read_json(req).await?;
            let savepoint_id = if request.savepoint {
                let target = target_uri(request.target_directory, state)?;
                Some(start_savepoint(state, target, true)?)
            } else {
                let _guard = state.stop.lock().unwrap_or_else(|p| p.into_inner());
                stoppable(state)?;
                tracing::info!("control API: cancelling the job (stop without a savepoint)");
                state.job.cancel();
                None
            };
            Ok(json(StatusCode::ACCEPTED, &StopAccepted { savepoint_id }))
        }
        "/v1/compatibility" => {
            let request: CompatibilityRequest = read_json(req).await?;
            let location = storage_location(&request.savepoint, "savepoint")?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let job = state.job.clone();
            let allow = request.allow_non_restored_state;
            // Reading a snapshot blocks (and drives a runtime of its own).
            std::thread::Builder::new()
                .name("compat-check".into())
                .spawn(move || {
                    let _ = tx.send(job.compatibility(&location, allow));
                })
                .map_err(|e| internal(format!("cannot start the check: {e}")))?;
            let report = rx
                .await
                .map_err(|_| internal("the check ended without a result"))?
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("cannot read savepoint {}: {e}", request.savepoint),
                    )
                })?;
            Ok(json(ok, &report))
        }
        p => match savepoint_id(p).and_then(|id| state.savepoints.get(id).map(|s| (id, s))) {
            Some((_, status)) => Ok(json(ok, &status)),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown savepoint id '{}'",
                    savepoint_id(p).unwrap_or_default()
                ),
            )),
        },
    }
}

/// Refuses a savepoint or stop unless the job runs and no stop is under way.
fn stoppable(state: &State) -> Result<(), ApiError> {
    let conflict = |m: &str| Err(ApiError::new(StatusCode::CONFLICT, m));
    match state.job.status().phase {
        Phase::Running if state.savepoints.stop_in_progress() => {
            conflict("the job is already stopping")
        }
        Phase::Running => Ok(()),
        Phase::Starting => conflict("the job is still starting"),
        Phase::Stopping => conflict("the job is already stopping"),
        Phase::Finished => conflict("the job already finished"),
        Phase::Failed => conflict("the job failed"),
        Phase::Restarting => conflict("the job is restarting after a failure"),
    }
}

fn start_savepoint(state: &State, target: String, stop: bool) -> Result<String, ApiError> {
    let _guard = state.stop.lock().unwrap_or_else(|p| p.into_inner());
    stoppable(state)?;
    let id = state
        .savepoints
        .start(state.job.clone(), target.clone(), stop)
        .map_err(|e| internal(format!("cannot start the savepoint: {e}")))?;
    tracing::info!(
        savepoint = %id,
        storage = %target,
        stop,
        "control API: savepoint {id} into {target}{}",
        if stop { ", then stop" } else { "" }
    );
    Ok(id)
}

/// The savepoint storage a request names, or the server's default.
fn target_uri(given: Option<String>, state: &State) -> Result<String, ApiError> {
    match given {
        Some(t) => storage_location(&t, "targetDirectory"),
        None => state.default_savepoint_dir.clone().ok_or_else(|| {
            bad_request("request body: field 'targetDirectory' is required (no default savepoint directory is configured)")
        }),
    }
}

/// A storage location from a request: a URI, or an absolute path (a relative one would
/// depend on the server's working directory, which a client cannot know).
fn storage_location(text: &str, field: &str) -> Result<String, ApiError> {
    if text.contains("://") {
        Ok(text.to_string())
    } else if text.starts_with('/') {
        Ok(format!("file://{text}"))
    } else {
        Err(bad_request(format!(
            "request body: field '{field}': '{text}' is neither an absolute path nor a \
             file:// or s3:// URI"
        )))
    }
}

async fn read_json<T: DeserializeOwned>(req: Request) -> Result<T, ApiError> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body exceeds {MAX_BODY} bytes"),
                )
            } else {
                bad_request(format!("reading the request body: {e}"))
            }
        })?
        .to_bytes();
    parse_json(&bytes)
}

/// Parses a request body, naming the field that is wrong. An empty body is `{}`.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.trim_ascii().is_empty() {
        b"{}"
    } else {
        bytes
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            bad_request(format!("request body: {inner}"))
        } else {
            bad_request(format!("request body: field '{path}': {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| bad_request(format!("request body: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of<T: DeserializeOwned + std::fmt::Debug>(body: &str) -> String {
        parse_json::<T>(body.as_bytes()).unwrap_err().message
    }

    #[test]
    fn bad_request_bodies_name_the_field() {
        let e = error_of::<SavepointRequest>(r#"{"stop": "yes"}"#);
        assert!(
            e.starts_with("request body: field 'stop': invalid type: string \"yes\""),
            "{e}"
        );
        let e = error_of::<SavepointRequest>(r#"{"targetDir": "/x"}"#);
        assert!(e.contains("unknown field `targetDir`"), "{e}");
        let e = error_of::<StopRequest>("");
        assert!(e.contains("missing field `savepoint`"), "{e}");
        let e = error_of::<StopRequest>(r#"{"savepoint": false} x"#);
        assert!(e.contains("trailing characters"), "{e}");
        let e = error_of::<CompatibilityRequest>("{");
        assert!(e.contains("EOF"), "{e}");
        let ok: SavepointRequest = parse_json(b"").unwrap();
        assert_eq!(ok, SavepointRequest::default());
    }

    #[test]
    fn storage_locations_are_uris_or_absolute_paths() {
        assert_eq!(
            storage_location("/sp", "f").ok(),
            Some("file:///sp".to_string())
        );
        assert_eq!(
            storage_location("s3://b/p", "f").ok(),
            Some("s3://b/p".to_string())
        );
        let e = storage_location("sp", "targetDirectory").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.message.contains("field 'targetDirectory'"),
            "{}",
            e.message
        );
    }
}

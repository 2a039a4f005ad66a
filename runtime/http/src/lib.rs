//! The small HTTP layer both Sluice binaries serve through: the runtime's control API and
//! the operator's `/metrics` and probes. [`serve`] runs a handler (a request in, a response
//! out) on a listener until told to stop; the helpers build the few kinds of responses the
//! two servers send (JSON, text, Prometheus text), and [`scrape`] describes metric families
//! that a process computes when it is scraped.
//!
//! It is plain `hyper` (HTTP/1.1) over tokio rather than `axum`. Both servers have a handful
//! of routes that one `match` dispatches clearly; the control API parses request bodies by
//! hand so that a bad field is named in the error, which is where axum's extractors would
//! have helped; and hyper and tokio are in the tree anyway, while axum would add tower and
//! its router for little. The crate knows nothing of jobs or Kubernetes, so both the
//! runtime and the operator can depend on it.

pub mod dashboard;
pub mod scrape;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use hyper::{header, Method, StatusCode};

/// A request as the handler receives it.
pub type Request = hyper::Request<Incoming>;
/// Response bodies are whole in memory: every answer is small.
pub type Body = Full<Bytes>;
pub type Response = hyper::Response<Body>;

/// The Prometheus text exposition format (0.0.4), which `/metrics` speaks.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long open connections get, once shutdown is asked for, to finish the request they
/// are serving; after that they are closed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long a client may take over its TLS handshake before its connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `handler` on `listener` until `shutdown` completes: then accepting stops, idle
/// connections close, and requests in flight get [`SHUTDOWN_GRACE`] to finish. With `tls`,
/// every connection is HTTPS.
pub async fn serve<H, F>(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            // Reap finished connections so that the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (handler, closed, tls) = (handler.clone(), closed.clone(), tls.clone());
                    connections.spawn(async move {
                        let Some(tls) = tls else {
                            return serve_connection(stream, handler, closed).await;
                        };
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                            Ok(Ok(stream)) => serve_connection(stream, handler, closed).await,
                            Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    // Nobody may be listening any more; the connections then end by themselves.
    let _ = closing.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::debug!("closing connections still busy after the shutdown grace");
    }
    // Dropping the set aborts whatever is left.
}

/// Serves the requests of one connection until it ends or `closed` changes (to closing).
async fn serve_connection<S, H, F>(
    stream: S,
    handler: H,
    mut closed: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let response = handler(req);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    // A connection error (the client went away, a malformed request) concerns that client
    // only.
    tokio::select! {
        _ = connection.as_mut() => {}
        // The one change is to closing (or the server is gone).
        _ = closed.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// A response with `content_type` and `body`.
pub fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    response(status, "text/plain; charset=utf-8", body.into())
}

/// `value` as a JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => response(status, "application/json", bytes),
        // The servers' types always serialize; this only keeps a server from panicking.
        Err(e) => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            serde_json::json!({ "error": format!("encoding the response: {e}") }).to_string(),
        ),
    }
}

/// What `registry` gathers now, in the Prometheus text format.
pub fn metrics(registry: &prometheus::Registry) -> Response {
    let mut out = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut out) {
        Ok(()) => response(StatusCode::OK, PROMETHEUS_CONTENT_TYPE, out),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_until_shut_down() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            rt.block_on(serve(
                listener,
                None,
                |req: Request| async move {
                    match req.uri().path() {
                        "/j" => json(StatusCode::OK, &serde_json::json!({"a": 1})),
                        _ => text(StatusCode::NOT_FOUND, "not found\n"),
                    }
                },
                async {
                    let _ = stopped.await;
                },
            ))
        });
        let j = get(addr, "/j");
        assert!(j.starts_with("HTTP/1.1 200 OK\r\n"), "{j}");
        assert!(j.contains("content-type: application/json\r\n"), "{j}");
        assert!(j.ends_with("{\"a\":1}"), "{j}");
        let n = get(addr, "/x");
        assert!(n.starts_with("HTTP/1.1 404 Not Found\r\n"), "{n}");
        assert!(n.ends_with("not found\n"), "{n}");
        stop.send(()).unwrap();
        server.join().unwrap();
        assert!(std::net::TcpStream::connect(addr).is_err());
    }

    #[test]
    fn metrics_speak_the_text_format() {
        let registry = prometheus::Registry::new();
        let c = prometheus::IntCounter::new("x_total", "Xs.").unwrap();
        registry.register(Box::new(c.clone())).unwrap();
        c.inc();
        let r = metrics(&registry);
        assert_eq!(r.headers()[CONTENT_TYPE], PROMETHEUS_CONTENT_TYPE);
    }
}

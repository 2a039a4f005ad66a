//! `/metrics`, `/healthz` (the process serves) and `/readyz` (it leads, or stands by ready
//! to): what the Deployment's probes and Prometheus read. Served through `sluice_http`, the
//! layer the runtime's control API uses too.

use crate::metrics::Metrics;
use sluice_http::{Request, Response, StatusCode};
use std::sync::Arc;

/// Binds `addr` (the `--metrics-addr` flag), so that a bad address fails the start.
pub async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-addr {addr}: {e}"))?;
    tracing::info!(%addr, "metrics and probes on http://{addr}");
    Ok(listener)
}

/// Serves until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let handler = move |req: Request| {
        let response = respond(&req, &metrics);
        async move { response }
    };
    sluice_http::serve(listener, None, handler, std::future::pending()).await;
}

fn respond(req: &Request, metrics: &Metrics) -> Response {
    match req.uri().path() {
        "/metrics" => sluice_http::metrics(metrics.registry()),
        "/healthz" | "/readyz" => sluice_http::text(StatusCode::OK, "ok\n"),
        _ => sluice_http::text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

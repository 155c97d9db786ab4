//! The admin HTTP listener: `/metrics` (Prometheus text or OpenMetrics, by `Accept`), `/livez`
//! and `/readyz`.
//!
//! It exposes nothing but metrics and health: no keys, no versions, no configuration.
//! `/livez` answers 200 while the process can serve HTTP at all (a restart would not help
//! otherwise). `/readyz` answers 200 only while the sidecar can vouch for versions: Redis
//! verified, subscription live, every shard synced, its server_id registered as its own (no
//! other live process has it), and not shutting down.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::exposition;
use crate::process::readiness::Readiness;

pub fn router(readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

async fn metrics(State(readiness): State<Arc<Readiness>>, headers: HeaderMap) -> impl IntoResponse {
    let state = readiness.versions();
    state.metrics.ready.set(i64::from(readiness.is_ready()));
    state.record_mirror_size();
    let openmetrics = state.metrics.encode();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if exposition::wants_openmetrics(accept) {
        (
            [(header::CONTENT_TYPE, exposition::OPENMETRICS_CONTENT_TYPE)],
            openmetrics,
        )
    } else {
        (
            [(header::CONTENT_TYPE, exposition::TEXT_CONTENT_TYPE)],
            exposition::openmetrics_to_text(&openmetrics),
        )
    }
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> (StatusCode, &'static str) {
    if readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else if readiness.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if !readiness.versions().link.is_connected() {
        (StatusCode::SERVICE_UNAVAILABLE, "redis unavailable\n")
    } else if !readiness.versions().link.scripts().usable() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "redis lacks this sidecar's functions library (run coherence-sidecar functions load)\n",
        )
    } else if !readiness.is_registered() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_id not registered (in use by another live process?)\n",
        )
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "subscription not synced\n")
    }
}

//! The admin HTTP listener: `/metrics` (Prometheus text), `/livez` and `/readyz`.
//!
//! It exposes nothing but metrics and health: no keys, no versions, no configuration.
//! `/livez` answers 200 while the process can serve HTTP at all (a restart would not help
//! otherwise). `/readyz` answers 200 only while the sidecar can vouch for versions: Redis
//! verified, subscription live, every shard synced, and not shutting down.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::state::SidecarState;

pub fn router(state: Arc<SidecarState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<SidecarState>>) -> impl IntoResponse {
    state.metrics.ready.set(i64::from(state.is_ready()));
    state.metrics.mirror_keys.set(state.mirror.len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<SidecarState>>) -> (StatusCode, &'static str) {
    if state.is_ready() {
        (StatusCode::OK, "ready\n")
    } else if state
        .shutting_down
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if !state.link.is_connected() {
        (StatusCode::SERVICE_UNAVAILABLE, "redis unavailable\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "subscription not synced\n")
    }
}

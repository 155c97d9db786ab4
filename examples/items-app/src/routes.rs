//! The HTTP API, with the cache rules around the queries: reads go through the
//! `CoherentCache` (stamp before load, single flight), writes commit to PostgreSQL first and
//! then bump the item's coherence key so every instance drops its copy.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use coherence_client::{CoherentCache, Consistency};
use serde::Deserialize;

use crate::db::{Db, Item, ItemInput};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The source of truth.
    pub db: Arc<Db>,
    /// Items by id; `None` caches "no such item" (a create bumps the key too).
    pub items: CoherentCache<i64, Option<Item>>,
}

/// The coherence key guarding one item.
pub fn item_key(id: &i64) -> String {
    format!("item:{id}")
}

/// `GET /items/{id}`, `PUT /items/{id}`, `POST /items`, `GET /stats`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/items", axum::routing::post(create_item))
        .route("/items/{id}", get(read_item).put(update_item))
        .route("/stats", get(stats))
        .with_state(state)
}

#[derive(Deserialize)]
struct ReadParams {
    /// `strong` for a read that reflects every write completed before it began.
    consistency: Option<String>,
}

async fn read_item(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(params): Query<ReadParams>,
) -> Response {
    let consistency = match params.consistency.as_deref() {
        None | Some("bounded") => Consistency::Bounded,
        Some("strong") => Consistency::Strong,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("consistency must be bounded or strong, not {other:?}"),
            )
                .into_response()
        }
    };
    let db = Arc::clone(&state.db);
    let loaded = state
        .items
        .get_or_load_with(id, consistency, move || async move { db.get(id).await })
        .await;
    match loaded {
        Ok(Some(item)) => Json(item).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, format!("no item {id}")).into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("database: {}", crate::db::describe(&err)),
        )
            .into_response(),
    }
}

async fn create_item(State(state): State<AppState>, Json(input): Json<ItemInput>) -> Response {
    match state.db.insert(&input).await {
        Ok(item) => {
            let headers = after_write(&state, item.id).await;
            (StatusCode::CREATED, headers, Json(item)).into_response()
        }
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("database: {}", crate::db::describe(&err)),
        )
            .into_response(),
    }
}

async fn update_item(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(input): Json<ItemInput>,
) -> Response {
    match state.db.update(id, &input).await {
        Ok(Some(item)) => {
            let headers = after_write(&state, id).await;
            (headers, Json(item)).into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, format!("no item {id}")).into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("database: {}", crate::db::describe(&err)),
        )
            .into_response(),
    }
}

/// The write has committed: tell every instance. A bump that fails after its retries is
/// reported in `x-coherence-not-bumped` (and logged): other instances may serve the old
/// item until it is bumped.
async fn after_write(state: &AppState, id: i64) -> HeaderMap {
    let report = state.items.invalidate_after_write(&[id]).await;
    let mut headers = HeaderMap::new();
    if !report.is_complete() {
        tracing::warn!(keys = ?report.not_bumped, error = ?report.last_error, "could not bump after a write");
        if let Ok(value) = HeaderValue::from_str(&report.not_bumped.join(",")) {
            headers.insert("x-coherence-not-bumped", value);
        }
    }
    headers
}

async fn stats(State(state): State<AppState>) -> Response {
    let cache = state.items.stats();
    let mirror = state.items.client().stats();
    Json(serde_json::json!({
        "cache": { "hits": cache.hits, "loads": cache.loads, "uncached_loads": cache.uncached_loads, "stale": cache.stale },
        "mirror": {
            "trusted": state.items.client().is_trusted(),
            "hits": mirror.hits, "misses": mirror.misses, "reconnects": mirror.reconnects,
            "resyncs": mirror.resyncs, "invalidations": mirror.invalidations,
            "fallback_failures": mirror.fallback_failures,
        },
    }))
    .into_response()
}

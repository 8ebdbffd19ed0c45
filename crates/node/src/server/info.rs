//! `/health`, `/info` and `/resources`.

use std::sync::Arc;

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, error::ApiQuery};
use crate::stats::snapshot::{Snapshot, View};

/// `GET /health`: the node is up.
#[utoipa::path(get, path = "/health", tag = "node",
    responses((status = 200, description = "`{\"status\": \"healthy\"}`")))]
pub(super) async fn health() -> Json<Value> {
    Json(json!({"status": "healthy"}))
}

/// `GET /info`: running containers, pending jobs, chain status and version.
#[utoipa::path(get, path = "/info", tag = "node",
    responses((status = 200, description = "Node information")))]
pub(super) async fn info(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(Snapshot::take(&state, View::Info).await.info()?))
}

#[derive(Deserialize)]
pub(super) struct ResourcesQuery {
    model_id: Option<String>,
    #[serde(default)]
    system: bool,
}

/// `GET /resources[?model_id=][&system=true]`: each container's `/service-resources`; with
/// `system=true` also the host's CPU, memory, disk and GPUs under `system` and the provider's
/// prices per container under `pricing` (opt-in, because
/// Ritual's clients and routers read every key of this object as a container id).
#[utoipa::path(get, path = "/resources", tag = "node",
    params(
        ("model_id" = Option<String>, Query, description = "Ask the containers about this model"),
        ("system" = Option<bool>, Query, description = "Add host statistics under `system` and prices under `pricing`"),
    ),
    responses(
        (status = 200, description = "`{container_id: resources}`; failing containers are left out"),
        (status = 400, description = "A parameter is not of its type (`system` must be true or false)"),
        (status = 429, description = "Rate limited"),
    ))]
pub(super) async fn resources(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<ResourcesQuery>,
) -> Json<Value> {
    let mut resources = state.orchestrator.resources(q.model_id.as_deref()).await;
    if q.system {
        let sampler = state.system.clone();
        if let Ok(system) = tokio::task::spawn_blocking(move || sampler.sample()).await {
            resources.insert("system".into(), json!(system));
        }
        resources.insert("pricing".into(), json!(state.admin.state().settings.pricing));
    }
    Json(Value::Object(resources))
}

/// `GET /metrics`: Prometheus text exposition (not rate limited: scrapers poll it). Answers while
/// the store is down too (`infernet_store_up 0`).
pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let snapshot = Snapshot::take(&state, View::Metrics).await;
    let mut body = state.orchestrator.metrics().render(&snapshot.gauges());
    if let Some(status) = &snapshot.chain_status {
        status.render(&mut body);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

//! `/health`, `/info` and `/resources`.

use std::sync::Arc;

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiError, AppState, error::ApiQuery};
use crate::containers::ContainerState;

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
    let pending = state.store.pending_count().await?;
    let sampler = state.system.clone();
    let system = tokio::task::spawn_blocking(move || sampler.sample()).await.ok();
    let (running, states): (Vec<Value>, Map<String, Value>) = {
        let states = state.states.read().expect("container states poisoned");
        let running = state
            .containers
            .iter()
            .filter(|c| states.get(&c.id) == Some(&ContainerState::Running))
            .map(|c| json!(c))
            .collect();
        let all = states.iter().map(|(id, s)| (id.clone(), json!(s))).collect();
        (running, all)
    };
    let mut chain = json!({"address": state.chain.address, "enabled": state.chain.enabled});
    if let Some(id) = state.chain.chain_id {
        chain["chain_id"] = json!(id);
    }
    if let Some(coordinator) = &state.chain.coordinator {
        chain["coordinator"] = json!(coordinator);
    }
    if let Some(status) = &state.chain_status {
        chain["state"] = status.to_json();
    }
    let pending_onchain = state.chain_status.as_ref().map(|s| s.running()).unwrap_or(0);
    Ok(Json(json!({
        "chain": chain,
        "containers": running,
        "container_states": states,
        "pending": {"offchain": pending, "onchain": pending_onchain},
        "store": state.store.backend(),
        "system": system,
        "version": env!("CARGO_PKG_VERSION"),
    })))
}

#[derive(Deserialize)]
pub(super) struct ResourcesQuery {
    model_id: Option<String>,
    #[serde(default)]
    system: bool,
}

/// `GET /resources[?model_id=][&system=true]`: each container's `/service-resources`; with
/// `system=true` also the host's CPU, memory, disk and GPUs under `system` (opt-in, because
/// Ritual's clients and routers read every key of this object as a container id).
#[utoipa::path(get, path = "/resources", tag = "node",
    params(
        ("model_id" = Option<String>, Query, description = "Ask the containers about this model"),
        ("system" = Option<bool>, Query, description = "Add host statistics under `system`"),
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
    }
    Json(Value::Object(resources))
}

/// `GET /metrics`: Prometheus text exposition (not rate limited: scrapers poll it).
pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let pending_offchain = state.store.pending_count().await?;
    let containers_up = {
        let states = state.states.read().expect("container states poisoned");
        state
            .containers
            .iter()
            .map(|c| (c.id.clone(), states.get(&c.id) == Some(&ContainerState::Running)))
            .collect()
    };
    let gauges = crate::stats::metrics::Gauges {
        pending_offchain,
        pending_onchain: state.chain_status.as_ref().map(|s| s.running()).unwrap_or(0),
        containers_up,
    };
    let mut body = state.orchestrator.metrics().render(&gauges);
    if let Some(status) = &state.chain_status {
        status.render(&mut body);
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

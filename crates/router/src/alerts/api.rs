//! The operator's alert API, every request signed with NIP-98 by the operator's key or made with
//! the control interface's session of that key (the app's calls: cookie, and the CSRF token for
//! changes):
//!
//! - `GET /api/v1/alerts[?status=firing|resolved][&node=…][&limit=…][&before=…]`: alerts of the
//!   nodes that name the signer as their operator, newest first (`next` pages on);
//! - `GET /api/v1/alerts/settings`: the signer's rules, webhooks, silences and whether alerts
//!   come as Nostr direct messages (the defaults when they set none);
//! - `PUT /api/v1/alerts/settings`: replaces them; a bad field is a 400 naming it (`error`, and
//!   `field` with every problem in `problems`, so a form can show each beside its field);
//! - `POST /api/v1/alerts/{id}/ack`: acknowledges an alert of one of the signer's nodes.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use infernet_identity::PublicKey;
use infernet_service::web::SessionError;
use serde_json::{Value, json};

use super::{OperatorSettings, event};
use crate::{
    db::{alerts::AlertFilter, now_ms},
    gateway::client::{ApiError, Caller, Client, Posted},
    server::RouterState,
};

/// Alerts per page at most.
pub const MAX_PAGE: i64 = 500;

/// The routes.
pub fn routes() -> Router<Arc<RouterState>> {
    Router::new()
        .route("/api/v1/alerts", get(list))
        .route("/api/v1/alerts/settings", get(get_settings).put(put_settings))
        .route("/api/v1/alerts/{id}/ack", post(ack))
}

/// The operator who signed, or whose session this is (the ui's check: CSRF for changes); 401
/// (403 for a session's change without its CSRF token) otherwise.
fn operator(state: &RouterState, method: &Method, headers: &HeaderMap, client: Client) -> Result<PublicKey, ApiError> {
    match client {
        Client::Key(key) => Ok(key),
        Client::Addr(_) => state.ui.session_key(method, headers).map_err(|e| match e {
            SessionError::NoSession => unsigned(),
            SessionError::Csrf => ApiError(StatusCode::FORBIDDEN, e.to_string()),
        }),
        Client::ApiKey(_) => Err(unsigned()),
    }
}

fn unsigned() -> ApiError {
    ApiError(
        StatusCode::UNAUTHORIZED,
        "sign this request with your operator key (NIP-98 Authorization: Nostr …) or sign in to the control interface"
            .into(),
    )
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// `GET /api/v1/alerts`.
async fn list(
    State(state): State<Arc<RouterState>>,
    method: Method,
    headers: HeaderMap,
    Caller(client): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let key = operator(&state, &method, &headers, client)?;
    let mut filter = AlertFilter {
        operator: Some(key.to_hex()),
        limit: 100,
        ..AlertFilter::default()
    };
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "status" if v == "firing" || v == "resolved" => filter.status = Some(v.into_owned()),
            "status" => return Err(bad(format!("status: firing or resolved, got {v:?}"))),
            "node" if !v.is_empty() && v.len() <= 256 => filter.node = Some(v.into_owned()),
            "limit" => {
                filter.limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| bad(format!("limit: a whole number from 1 to {MAX_PAGE}, got {v:?}")))?
            }
            "before" => {
                filter.before = Some(
                    v.parse::<i64>()
                        .map_err(|_| bad("before: the `next` of a previous page"))?,
                )
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter {other:?}; use status, node, limit, before"
                )));
            }
        }
    }
    let alerts = state.alerts.db.alerts(&filter).await?;
    let next = (alerts.len() as i64 == filter.limit)
        .then(|| alerts.last().map(|a| a.started_at))
        .flatten();
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|a| {
            let mut v = json!(event(a));
            v["silenced"] = json!(a.silenced);
            v["acked_at"] = json!(a.acked_at.map(super::rfc3339));
            v
        })
        .collect();
    Ok(Json(json!({"alerts": alerts, "next": next})))
}

/// `GET /api/v1/alerts/settings`.
async fn get_settings(
    State(state): State<Arc<RouterState>>,
    method: Method,
    headers: HeaderMap,
    Caller(client): Caller,
) -> Result<Json<Value>, ApiError> {
    let key = operator(&state, &method, &headers, client)?;
    let settings = match state.alerts.db.alert_settings(&key.to_hex()).await? {
        Some(text) => serde_json::from_str(&text).unwrap_or_default(),
        None => OperatorSettings {
            rules: state.alerts.settings.rules.clone(),
            ..OperatorSettings::default()
        },
    };
    Ok(Json(json!(settings.shown(!state.alerts.settings.relays.is_empty()))))
}

/// `PUT /api/v1/alerts/settings`.
async fn put_settings(
    State(state): State<Arc<RouterState>>,
    method: Method,
    posted: Posted,
) -> Result<Json<Value>, Response> {
    let key = operator(&state, &method, &posted.headers, posted.client).map_err(IntoResponse::into_response)?;
    let settings = OperatorSettings::parse(&posted.body, state.alerts.settings.allow_private).map_err(|problems| {
        let first = &problems[0];
        let each: Vec<Value> = problems
            .iter()
            .map(|p| json!({"field": p.path, "message": p.message}))
            .collect();
        let body = json!({"error": first.to_string(), "field": first.path, "problems": each});
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    })?;
    let text = serde_json::to_string(&settings).map_err(|e| bad(e.to_string()).into_response())?;
    state
        .alerts
        .db
        .put_alert_settings(&key.to_hex(), &text, now_ms())
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    state.alerts.settings_changed();
    Ok(Json(json!(settings.shown(!state.alerts.settings.relays.is_empty()))))
}

/// `POST /api/v1/alerts/{id}/ack`.
async fn ack(
    State(state): State<Arc<RouterState>>,
    method: Method,
    Path(id): Path<String>,
    posted: Posted,
) -> Result<Json<Value>, ApiError> {
    let key = operator(&state, &method, &posted.headers, posted.client)?.to_hex();
    let db = &state.alerts.db;
    let not_found = || ApiError(StatusCode::NOT_FOUND, format!("no alert {id:?} of your nodes"));
    let alert = db.alert(&id).await?.ok_or_else(not_found)?;
    if !alert.operators.split_whitespace().any(|o| o == key) {
        return Err(not_found());
    }
    db.ack_alert(&id, &key, now_ms()).await?;
    let alert = db.alert(&id).await?.ok_or_else(not_found)?;
    let mut v = json!(event(&alert));
    v["acked_at"] = json!(alert.acked_at.map(super::rfc3339));
    Ok(Json(v))
}

//! `/api/v1/link/{npub}/admin/…`: an operator's signed admin request for a node that nobody can
//! reach, relayed over its link. The request is signed by the operator for
//! `infernet://{npub}/admin/…` and the node checks that signature itself: the router only
//! passes it on, so it cannot forge a command, and a request signed for one node does nothing on
//! another.

use std::sync::Arc;

use axum::{
    body::{Body, Bytes},
    extract::{Path, RawQuery, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::TryStreamExt;
use infernet_service::http::error;
use infernet_types::link::MAX_PATH;

use crate::server::RouterState;

/// Relays the request to the node over its link; its answer streams back as it comes.
pub async fn relay(
    State(state): State<Arc<RouterState>>,
    Path((node, rest)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(link) = state.gateway.links().get(&node) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no node {node} is linked to this router; reach it directly, or through the router it links to"),
        );
    };
    let mut path = format!("/admin/{rest}");
    if let Some(q) = query {
        path = format!("{path}?{q}");
    }
    if path.len() > MAX_PATH {
        return error(StatusCode::URI_TOO_LONG, format!("paths are at most {MAX_PATH} bytes"));
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = (!body.is_empty()).then_some(body);
    let timeout = state.gateway.dispatch_timeout();
    match link
        .send(method.as_str(), &path, authorization, None, body, timeout)
        .await
    {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
            let mut response = Body::from_stream(answer.bytes_stream().map_err(std::io::Error::other)).into_response();
            *response.status_mut() = status;
            if let Some(ct) = content_type {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("relaying to {node}: {e}")),
    }
}

//! `/api/v1/link/{npub}/admin/…`: an operator's signed admin request for a node that nobody can
//! reach, relayed over its link. The request is signed by the operator for
//! `infernet://{npub}/admin/…` and the node checks that signature itself: the router only
//! passes it on, so it cannot forge a command, and a request signed for one node does nothing on
//! another. A node linked to another replica is reached through that replica ([`super::peer`]).

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{OriginalUri, Path, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::Response,
};
use infernet_service::http::error;

use super::peer::{Forward, passed, raw_path};
use crate::server::RouterState;

/// Relays the request to the node over its link, held here or by another replica; its answer
/// streams back as it comes.
pub async fn relay(
    State(state): State<Arc<RouterState>>,
    Path((node, _)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(holder) = state.gateway.holders().find(&node) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no node {node} is linked to this router; reach it directly, or through the router it links to"),
        );
    };
    let path = match raw_path(&uri, &format!("/api/v1/link/{node}")) {
        Ok(path) => path,
        Err((status, why)) => return error(status, why),
    };
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    // Checked here as the node will check it: only its operators' requests reach it (each one
    // spends its admin limit, and all of them reach it from this router).
    let operators: Vec<infernet_identity::PublicKey> = state
        .registry
        .identity(&node)
        .map(|identity| {
            identity
                .operators
                .iter()
                .filter_map(|o| infernet_identity::parse_public_key(o).ok())
                .collect()
        })
        .unwrap_or_default();
    let signed_for = format!("infernet://{node}{path}");
    if let Err(e) = state
        .gateway
        .verify_relayed(authorization, method.as_str(), &signed_for, &body, &operators)
    {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        return error(
            status,
            format!("sign the request as one of the node's operators, for {signed_for}: {e}"),
        );
    }
    let call = Forward {
        method: method.as_str(),
        path: &path,
        authorization: authorization.map(str::to_owned),
        client: None,
        body: (!body.is_empty()).then_some(body),
        timeout: state.gateway.dispatch_timeout(),
    };
    match holder.send(state.gateway.http(), state.gateway.identity(), call).await {
        Ok(answer) => passed(answer),
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("relaying to {node}: {e}")),
    }
}

//! Calls to a node whose link another replica holds: `METHOD
//! {replica}/api/v1/internal/link/{npub}{path}`, signed with the router's key (which the replicas
//! share; the holder accepts no other signer), the call's own signature and stated client in
//! headers. The holder passes the call over the link and streams the node's answer back as it
//! arrives (back-pressure end to end: nothing is buffered beyond the link's window and the
//! sockets'); a client that goes away drops the connection, and the holder cancels the call.
//!
//! Answers the holder passes from the node carry [`RELAYED`]; any other answer is the holder's
//! own (the node is not linked there any more, or its link failed) and reads as the node
//! unreachable.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{OriginalUri, Path, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use infernet_identity::{Identity, nip98};
use infernet_service::{client_ip::CLIENT_HEADER, http::error};
use infernet_types::link::MAX_PATH;

use super::holders::Holder;
use crate::{gateway::dispatch::NodeError, server::RouterState};

/// Marks an answer the holder passed from the node.
pub const RELAYED: &str = "x-infernet-relayed";
/// The call's own `Authorization` (the router's or an operator's signature for the node).
pub const NODE_AUTHORIZATION: &str = "x-infernet-node-authorization";
/// Most bytes of a holder's own error read.
const MAX_HOLDER_ERROR: usize = 4096;

/// A call to a linked node's API.
#[derive(Debug, Clone)]
pub struct Forward<'a> {
    /// Its method.
    pub method: &'a str,
    /// Its path and query on the node.
    pub path: &'a str,
    /// Its signature for the node.
    pub authorization: Option<String>,
    /// The client stated.
    pub client: Option<String>,
    /// Its body.
    pub body: Option<Bytes>,
    /// Deadline until the answer's head.
    pub timeout: Duration,
}

impl Holder {
    /// Sends `call` over the link, here or through the replica that holds it (signed by
    /// `identity`, over `http`): the node's answer, whose body arrives as the node sends it.
    pub async fn send(
        &self,
        http: &reqwest::Client,
        identity: &Identity,
        call: Forward<'_>,
    ) -> Result<reqwest::Response, NodeError> {
        let (node, replica, seen) = match self {
            Holder::Here(link) => {
                return link
                    .send(
                        call.method,
                        call.path,
                        call.authorization,
                        call.client,
                        call.body,
                        call.timeout,
                    )
                    .await;
            }
            Holder::Peer { node, replica, seen } => (node, replica, *seen),
        };
        let url = format!("{}/api/v1/internal/link/{node}{}", replica.url(), call.path);
        let method = reqwest::Method::from_bytes(call.method.as_bytes())
            .map_err(|_| NodeError::Unreachable(format!("method {} cannot be relayed", call.method)))?;
        let signature = nip98::authorization(identity, call.method, &url, call.body.as_deref());
        // The answer's trailers (a stream's receipt) come through too.
        let mut request = http
            .request(method, &url)
            .header(header::AUTHORIZATION, signature)
            .header(header::TE, "trailers");
        if let Some(a) = call.authorization {
            request = request.header(NODE_AUTHORIZATION, a);
        }
        if let Some(c) = call.client {
            request = request.header(CLIENT_HEADER, c);
        }
        if let Some(body) = call.body {
            request = request.header(header::CONTENT_TYPE, "application/json").body(body);
        }
        let answer = match tokio::time::timeout(call.timeout, request.send()).await {
            Err(_) => return Err(NodeError::Timeout(call.timeout)),
            Ok(Err(e)) => {
                if refused(&e) {
                    replica.mark_gone(seen);
                }
                return Err(NodeError::Unreachable(format!(
                    "the replica holding its link does not answer: {}",
                    std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string)
                )));
            }
            Ok(Ok(answer)) => answer,
        };
        if answer.headers().contains_key(RELAYED) {
            return Ok(answer);
        }
        let status = answer.status().as_u16();
        let mut answer = answer;
        let text = crate::body::read_at_most(&mut answer, MAX_HOLDER_ERROR)
            .await
            .map(|b| String::from_utf8_lossy(&b).chars().take(500).collect::<String>())
            .unwrap_or_default();
        Err(NodeError::Unreachable(format!(
            "the replica holding its link answered HTTP {status}: {text}"
        )))
    }
}

/// Whether the holder refused the connection: nothing listens there (a busy or slow holder, or
/// this host out of ports, is not gone).
fn refused(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = s.source();
    }
    false
}

/// The node's answer as an HTTP response, its body streamed as it arrives, and its trailers (a
/// stream's receipt) after it, for a caller that takes them.
pub(super) fn passed(answer: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let body = axum::http::Response::from(answer).into_body();
    let mut response = axum::body::Body::new(body).into_response();
    *response.status_mut() = status;
    if let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    let headers = response.headers_mut();
    headers.insert(
        header::TRAILER,
        axum::http::HeaderValue::from_static(infernet_types::RECEIPT_TRAILERS),
    );
    // The node chose the type, and anyone may link a node: what it answers is never a page of
    // the router's origin (where the fleet UI and its session live) that runs script.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    response
}

/// The path and query of `uri` after `prefix`, as the caller wrote them (still percent-encoded:
/// the node reads its own path), at most [`MAX_PATH`] bytes; or the status and error to answer.
pub(super) fn raw_path(uri: &axum::http::Uri, prefix: &str) -> Result<String, (StatusCode, String)> {
    let Some(rest) = uri.path().strip_prefix(prefix).filter(|r| r.starts_with('/')) else {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("the path must start with {prefix}/, the node's key written as it is"),
        ));
    };
    let path = match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    if path.len() > MAX_PATH {
        return Err((StatusCode::URI_TOO_LONG, format!("paths are at most {MAX_PATH} bytes")));
    }
    Ok(path)
}

/// `ANY /api/v1/internal/link/{npub}/{path}`: a peer replica's call to a node linked here.
pub async fn endpoint(
    State(state): State<Arc<RouterState>>,
    Path((node, _)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signed = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Err(e) = state
        .gateway
        .verify_replica(authorization, method.as_str(), signed, &body)
    {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        return error(status, format!("only the router's replicas may call this: {e}"));
    }
    let Some(link) = state.gateway.links().get(&node) else {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            format!("node {node} is not linked to this replica (any more)"),
        );
    };
    let path = match raw_path(&uri, &format!("/api/v1/internal/link/{node}")) {
        Ok(path) => path,
        Err((status, why)) => return error(status, why),
    };
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let call = Forward {
        method: method.as_str(),
        path: &path,
        authorization: text(NODE_AUTHORIZATION),
        client: text(CLIENT_HEADER),
        body: (!body.is_empty()).then_some(body),
        timeout: state.gateway.dispatch_timeout(),
    };
    match Holder::Here(link)
        .send(state.gateway.http(), state.gateway.identity(), call)
        .await
    {
        Ok(answer) => {
            let mut response = passed(answer);
            response
                .headers_mut()
                .insert(RELAYED, axum::http::HeaderValue::from_static("1"));
            response
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, format!("calling {node} over its link: {e}")),
    }
}

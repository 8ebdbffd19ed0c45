//! Jobs a trusted router dispatches for its clients. Every job the router's gateway runs reaches
//! the node from the router's address, so that address must not be what the node rate-limits
//! and files jobs under. A router listed in `network.routers` signs each dispatch (NIP-98, the
//! body's hash included) with a `client` tag naming the client it dispatches for, and sends the
//! same value in `X-Infernet-Client`; the node then charges its rate limit to that client and
//! files the job under it, so the client, through the router, reads back only its own jobs.
//! A router that knows this node's key (from `/info`'s `node`) authenticates a dispatch with a
//! MAC under the key the two share instead (see [`infernet_identity::dispatch`]): the same
//! checks, without a signature to verify per job.
//!
//! The stated client is an IP address: the client's own for anonymous clients, and for clients
//! the router knows by key an address the router derives from the key (in `fd00::/8`), so the
//! node's rate limiter and job store, keyed by address, need nothing new.
//!
//! A request with the header but no valid signature from a trusted router is refused (401): a
//! client cannot pick the address it is charged to. Such requests skip the rate limit (which
//! charges the stated client), so the work of checking them is limited by itself: an address
//! whose dispatches were refused [`REFUSED_PER_MINUTE`] times in a minute is answered 429 before
//! the body of its next one is read or its signature checked. A router whose dispatches pass is
//! never charged.

use std::{net::IpAddr, sync::Arc};

use axum::{
    body::{Body, Bytes},
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, Method, Uri},
    middleware::Next,
    response::{IntoResponse, Response},
};
use infernet_service::client_ip::StatedClient;

use super::{ApiError, AppState};

pub use infernet_service::client_ip::CLIENT_HEADER;

/// Refused router dispatches an address may send per minute before the next ones are refused
/// unread.
pub const REFUSED_PER_MINUTE: u64 = 30;

/// The bucket of refused dispatches in [`AppState::refused_dispatches`].
const REFUSED: &str = "refused router dispatch";

/// Whether a request says it comes from a router, for a client.
pub(super) fn names_client(headers: &HeaderMap) -> bool {
    headers.contains_key(CLIENT_HEADER)
}

/// A router's dispatch, checked.
pub(super) struct Routed {
    /// The client the router states.
    pub client: IpAddr,
    /// The body, to hand on.
    pub bytes: Bytes,
    /// The router.
    pub router: RoutedBy,
}

/// Which router dispatched a request (an extension of the requests the middleware checked).
#[derive(Debug, Clone, Copy)]
pub(super) struct RoutedBy(pub infernet_identity::PublicKey);

/// Checks a router's dispatch from `peer` (the address it came from, as the rate limit finds
/// it): reads the body (within `server.max_body_size`) and answers the client the router signed
/// for, with the body to hand on. A refusal counts against `peer`; past [`REFUSED_PER_MINUTE`],
/// the dispatch is refused (429) before anything else.
pub(super) async fn verify<B>(
    state: &AppState,
    peer: IpAddr,
    (method, uri, headers): (&Method, &Uri, &HeaderMap),
    body: B,
) -> Result<Routed, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    state
        .refused_dispatches
        .peek(REFUSED, peer)
        .map_err(|refused| ApiError::TooManyRequests {
            retry_after: refused.retry_after(),
        })?;
    let checked = check(state, method, uri, headers, body).await;
    if checked.is_err() {
        // Counted, not refused: the answer is the refusal itself.
        let _ = state.refused_dispatches.admit(REFUSED, peer);
    }
    checked
}

async fn check<B>(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: B,
) -> Result<Routed, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(routers) = &state.routers else {
        return Err(ApiError::Unauthorized(format!(
            "this node trusts no router (network.routers is empty); send no {CLIENT_HEADER} header"
        )));
    };
    // What reading took is given back once the request is rebuilt: its handler reads it again.
    let (bytes, _read) = super::jobs::read_bytes(body, state.max_body, state.orchestrator.budget()).await?;
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let stated = headers.get(CLIENT_HEADER).and_then(|v| v.to_str().ok());
    let (router, signed) = routers
        .check_dispatch(
            method.as_str(),
            path,
            (authorization, stated),
            &bytes,
            infernet_identity::unix_now(),
        )
        .map_err(|e| ApiError::Unauthorized(format!("router dispatch refused: {e}")))?;
    let client = match (signed.as_deref(), stated) {
        (Some(signed), Some(stated)) if signed == stated => signed
            .parse::<IpAddr>()
            .map_err(|_| ApiError::Unauthorized(format!("the stated client {signed:?} is not an IP address")))?,
        _ => {
            return Err(ApiError::Unauthorized(format!(
                "the router's signature must carry a `client` tag equal to the {CLIENT_HEADER} header"
            )));
        }
    };
    Ok(Routed {
        client,
        bytes,
        router: RoutedBy(router),
    })
}

/// Middleware in front of the job routes: a router's dispatch is checked, and the client it
/// states goes on with the request as [`StatedClient`] (the rate limiter and the `ClientIp`
/// extractor take it from there). Other requests pass untouched.
pub(super) async fn middleware(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if !names_client(req.headers()) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let peer = super::ClientIp::resolve(peer.ip(), &parts.headers, &state.trusted_proxies);
    match verify(&state, peer, (&parts.method, &parts.uri, &parts.headers), body).await {
        Ok(Routed { client, bytes, router }) => {
            parts.extensions.insert(StatedClient(client));
            parts.extensions.insert(router);
            next.run(Request::from_parts(parts, Body::from(bytes))).await
        }
        Err(e) => e.into_response(),
    }
}

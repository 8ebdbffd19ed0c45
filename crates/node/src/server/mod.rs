//! REST server: the API Ritual's clients call, one file per endpoint family. Handlers stay thin:
//! parse, ask the Guardian, hand over to the Orchestrator or the store.

mod error;
mod front;
mod info;
mod jobs;
mod openapi;
pub mod rate_limit;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    Router,
    extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Request, State},
    http::{HeaderMap, request::Parts},
    middleware::{self, Next},
    response::Response,
    routing::{get, post, put},
};
use ipnet::IpNet;

pub use error::ApiError;
pub use front::serve;
pub use openapi::ApiDoc;

use crate::{containers::States, guardian::Guardian, orchestrator::Orchestrator, store::JobStore};
use rate_limit::RateLimiter;

/// What `/info` says of a container.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerInfo {
    /// Shown to users.
    pub description: String,
    /// May start a pipeline.
    pub external: bool,
    /// Container id.
    pub id: String,
    /// Image (empty for remote and process services).
    pub image: String,
}

/// What `/info` says of the chain side.
#[derive(Debug, Clone, Default)]
pub struct ChainInfo {
    /// The config enables the chain.
    pub enabled: bool,
    /// The node's address (checksummed), empty when the chain is off.
    pub address: String,
    /// Chain id of the RPC endpoint.
    pub chain_id: Option<u64>,
    /// The coordinator the node serves (checksummed).
    pub coordinator: Option<String>,
}

/// Everything the handlers share.
pub struct AppState {
    /// Request filter.
    pub guardian: Guardian,
    /// Pipeline runner.
    pub orchestrator: Arc<Orchestrator>,
    /// Job store.
    pub store: Arc<dyn JobStore>,
    /// Containers, in config order.
    pub containers: Vec<ContainerInfo>,
    /// Cached container states.
    pub states: States,
    /// Chain status.
    pub chain: ChainInfo,
    /// Checks delegated subscriptions (chain enabled only).
    pub delegated: Option<Arc<crate::chain::delegated::DelegatedIntake>>,
    /// What the chain side is doing (chain enabled only).
    pub chain_status: Option<Arc<crate::chain::status::ChainStatus>>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Per-client rate limit.
    pub limiter: RateLimiter,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Most jobs in one batch.
    pub max_batch: usize,
    /// Host statistics (CPU, memory, disk, GPUs).
    pub system: Arc<crate::stats::system::SystemStats>,
    /// The node's key, its operators and what they set.
    pub admin: Arc<crate::admin::Admin>,
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, the last address in
/// `X-Forwarded-For` that is not a trusted proxy. A body or an untrusted header never sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The client address of a request from `peer` with `headers`, believing only `trusted` proxies.
    pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
        let peer = peer.to_canonical();
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
        if !is_trusted(&peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical())
            .collect();
        forwarded.into_iter().rev().find(|ip| !is_trusted(ip)).unwrap_or(peer)
    }
}

impl FromRequestParts<Arc<AppState>> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| ApiError::BadRequest("Could not get client IP address".into()))?;
        Ok(Self(Self::resolve(peer.ip(), &parts.headers, &state.trusted_proxies)))
    }
}

#[derive(Clone)]
struct Limited {
    state: Arc<AppState>,
    route: &'static str,
}

async fn rate_limit(
    State(limited): State<Limited>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let client = ClientIp::resolve(peer.ip(), req.headers(), &limited.state.trusted_proxies);
    rate_limit::enforce(&limited.state.limiter, limited.route, client, req, next).await
}

/// Builds the HTTP router.
pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.max_body;
    let limited = |route: &'static str| {
        middleware::from_fn_with_state(
            Limited {
                state: state.clone(),
                route,
            },
            rate_limit,
        )
    };
    Router::new()
        .route("/health", get(info::health).route_layer(limited("GET /health")))
        .route("/info", get(info::info).route_layer(limited("GET /info")))
        .route(
            "/resources",
            get(info::resources).route_layer(limited("GET /resources")),
        )
        .route(
            "/api/jobs",
            post(jobs::create)
                .route_layer(limited("POST /api/jobs"))
                .merge(get(jobs::results).route_layer(limited("GET /api/jobs"))),
        )
        .route(
            "/api/jobs/batch",
            post(jobs::batch).route_layer(limited(jobs::BATCH_BUCKET)),
        )
        .route(
            front::STREAM,
            post(jobs::stream_route).route_layer(limited(front::STREAM_BUCKET)),
        )
        .route("/api/status", put(jobs::status))
        .route("/openapi.json", get(openapi::document))
        .route("/metrics", get(info::metrics))
        .merge(crate::admin::routes())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_trusted() {
        let peer: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(ClientIp::resolve(peer, &headers("10.0.0.1"), &[]), peer);
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let trusted = vec!["127.0.0.0/8".parse().unwrap()];
        // The right-most untrusted hop is the client; earlier entries are client-controlled.
        assert_eq!(
            ClientIp::resolve(proxy, &headers("1.1.1.1, 198.51.100.7, 127.0.0.2"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(ClientIp::resolve(proxy, &HeaderMap::new(), &trusted), proxy);
        assert_eq!(
            ClientIp::resolve("::ffff:203.0.113.5".parse().unwrap(), &HeaderMap::new(), &[]),
            peer
        );
    }
}

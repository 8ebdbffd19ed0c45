//! REST server: the API Ritual's clients call, one file per endpoint family. Handlers stay thin:
//! parse, ask the Guardian, hand over to the Orchestrator or the store.

mod error;
mod front;
mod info;
mod jobs;
mod openapi;
mod routed;

pub use routed::{CLIENT_HEADER, REFUSED_PER_MINUTE as REFUSED_DISPATCHES_PER_MINUTE};

use std::{net::SocketAddr, sync::Arc};

use arc_swap::ArcSwap;
use axum::{
    Router,
    extract::{ConnectInfo, DefaultBodyLimit, Request, State},
    middleware::{self, Next},
    response::Response,
    routing::{get, post, put},
};
use infernet_service::client_ip::{StatedClient, TrustedProxies};
use ipnet::IpNet;

pub use error::ApiError;
pub use front::serve;
pub use infernet_service::{client_ip::ClientIp, rate_limit};
pub use openapi::ApiDoc;

use crate::{
    config::{ContainerSpec, ValidConfig},
    containers::{ContainerManager, States},
    guardian::Guardian,
    orchestrator::{Orchestrator, OrchestratorError},
    store::JobStore,
};
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

impl ContainerInfo {
    /// What `/info` says of `spec`.
    pub fn of(spec: &ContainerSpec) -> Self {
        Self {
            description: spec.raw.description.clone(),
            external: spec.external,
            id: spec.id.clone(),
            image: spec.raw.image.clone(),
        }
    }
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
    /// Request filter; swapped whole when the operator changes the containers.
    pub guardian: ArcSwap<Guardian>,
    /// Pipeline runner.
    pub orchestrator: Arc<Orchestrator>,
    /// Job store.
    pub store: Arc<dyn JobStore>,
    /// Containers, in config order; swapped whole when the operator changes them.
    pub containers: ArcSwap<Vec<ContainerInfo>>,
    /// Starts, watches and stops the containers the node runs.
    pub manager: Arc<ContainerManager>,
    /// The config the node started with (the containers it runs now: see `manager`), for
    /// checking the containers an operator adds against the rest of it.
    pub config: ValidConfig,
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
    /// Who may `PUT /api/status`: by TCP peer, never by a proxy's header.
    pub status_sources: Vec<IpNet>,
    /// Per-client rate limit.
    pub limiter: RateLimiter,
    /// Router dispatches refused, per address ([`REFUSED_DISPATCHES_PER_MINUTE`] a minute): past
    /// it, an address's dispatches are refused (429) before their body is read or checked.
    pub refused_dispatches: RateLimiter,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Most jobs in one batch.
    pub max_batch: usize,
    /// Host statistics (CPU, memory, disk, GPUs).
    pub system: Arc<crate::stats::system::SystemStats>,
    /// The node's key, its operators and what they set.
    pub admin: Arc<crate::admin::Admin>,
    /// Checks the dispatches of the routers in `network.routers` (none: no router is trusted).
    pub routers: Option<crate::admin::auth::OperatorAuth>,
    /// The node's own dashboard: sessions and the last 24 h.
    pub dashboard: Arc<crate::dashboard::Dashboard>,
}

impl AppState {
    /// Serves jobs on `containers` from now on: the Orchestrator's targets first, so that a job
    /// the Guardian admits finds its container.
    pub fn serve(&self, containers: &[ContainerSpec]) -> Result<(), OrchestratorError> {
        self.orchestrator.serve(containers)?;
        for c in containers {
            self.orchestrator.metrics().add_container(&c.id);
        }
        let payment = self.config.payment_address().is_some();
        self.guardian
            .store(Arc::new(Guardian::new(containers, self.chain.enabled, payment)));
        self.containers
            .store(Arc::new(containers.iter().map(ContainerInfo::of).collect()));
        Ok(())
    }
}

impl TrustedProxies for AppState {
    fn trusted_proxies(&self) -> &[IpNet] {
        &self.trusted_proxies
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
    let client = match req.extensions().get::<StatedClient>() {
        Some(StatedClient(client)) => *client,
        None => ClientIp::resolve(peer.ip(), req.headers(), &limited.state.trusted_proxies),
    };
    rate_limit::enforce(&limited.state.limiter, limited.route, client, req, next).await
}

/// The rate-limit bucket of every `/admin/…` route: charged before the signature is checked.
const ADMIN_BUCKET: &str = "/admin";

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
            "/api/jobs/{id}",
            axum::routing::delete(jobs::cancel).route_layer(limited("DELETE /api/jobs")),
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
        .route(
            "/identity",
            get(crate::admin::identity).route_layer(limited("GET /identity")),
        )
        .route("/openapi.json", get(openapi::document))
        .route("/metrics", get(info::metrics))
        .merge(crate::admin::routes().route_layer(limited(ADMIN_BUCKET)))
        .merge(crate::dashboard::routes())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), routed::middleware))
        .with_state(state)
}

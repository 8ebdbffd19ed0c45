//! The router's REST API (Ritual-compatible paths) plus registration, health and metrics.
//! Every error, including axum's own 404, 405 and 413, is JSON `{"error": …}`.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{ConnectInfo, DefaultBodyLimit, RawQuery, Request, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use infernet_service::{
    client_ip::ClientIp,
    rate_limit::{self, RateLimiter},
};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use infernet_identity::{npub, parse_public_key, statement, unix_now};

use crate::{
    address::{AddressError, NodeAddr},
    gateway, ledger, ranking,
    registry::{ContainerSummary, NodeIdentity, NodeReport, Registry, RegistryError},
    resources::{self, FanOut},
};

/// Most nodes one `/api/v1/ips` answer may hold.
pub const MAX_N: usize = 100;

/// Largest heartbeat body taken by `/api/v1/register`.
pub const MAX_HEARTBEAT_BYTES: usize = 1 << 20;

/// Shared state of the handlers.
pub struct RouterState {
    /// The node table.
    pub registry: Arc<Registry>,
    /// Per-client limiter.
    pub limiter: RateLimiter,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Bearer token nodes must present to register; registration is off without one.
    pub registration_token: Option<infernet_service::secret::Secret>,
    /// How long a registration lasts without a new heartbeat.
    pub registration_ttl: Duration,
    /// Client for `/resources` aggregation.
    pub client: reqwest::Client,
    /// Bounds of the `/resources` aggregation.
    pub resources: FanOut,
    /// Duration of the last probe round (µs).
    pub last_round_micros: Arc<AtomicU64>,
    /// Requests answered, per route.
    pub requests: [AtomicU64; ROUTES.len()],
    /// The gateway: jobs submitted to the network.
    pub gateway: Arc<crate::gateway::Gateway>,
    /// The alert engine.
    pub alerts: Arc<crate::alerts::Alerts>,
    /// The control interface: sessions, the nodes' last heartbeats, their history.
    pub ui: Arc<crate::ui::Ui>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// The client of a request from `peer`: the address a trusted proxy states, or the peer's.
pub(crate) fn client_ip(state: &RouterState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    ClientIp::resolve(peer.ip(), headers, &state.trusted_proxies)
}

#[derive(Clone)]
struct Limited {
    state: Arc<RouterState>,
    counter: usize,
}

async fn rate_limit(
    State(l): State<Limited>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    match admit(&l.state, l.counter, peer, &mut req).await {
        Ok(Admitted::Keyed) => next.run(req).await,
        Ok(Admitted::Limited(allowed)) => allowed.stamp(&l.state.limiter, next.run(req).await),
        Err(refused) => refused,
    }
}

/// How a request was let through [`admit`].
pub(crate) enum Admitted {
    /// With an API key, checked (and charged, for a job): a [`crate::keys::Keyed`] extension.
    Keyed,
    /// Within its address's limit: the answer is to be stamped with the limit's headers.
    Limited(rate_limit::Allowed),
}

/// Counts a request to the `counter`th of [`ROUTES`] and lets it through, or answers it: a client
/// with an API key is held to its key's quotas instead of its address's limit (a heartbeat's
/// bearer is the registration token, not an API key).
pub(crate) async fn admit(
    state: &RouterState,
    counter: usize,
    peer: SocketAddr,
    req: &mut Request,
) -> Result<Admitted, Response> {
    let route = ROUTES[counter];
    state.requests[counter].fetch_add(1, Ordering::Relaxed);
    if route != REGISTER_ROUTE
        && let Some(token) = crate::keys::bearer(req.headers())
    {
        let db = &state.gateway.db();
        let keyed = crate::keys::check(db, token)
            .await
            .map_err(IntoResponse::into_response)?;
        if route == JOBS_ROUTE && req.method() == axum::http::Method::POST {
            crate::keys::charge(db, &keyed, crate::db::now_ms())
                .await
                .map_err(IntoResponse::into_response)?;
        }
        req.extensions_mut().insert(keyed);
        return Ok(Admitted::Keyed);
    }
    let client = client_ip(state, peer, req.headers());
    match state.limiter.admit(route, client) {
        Ok(allowed) => Ok(Admitted::Limited(allowed)),
        Err(refused) => Err(refused.into_response()),
    }
}

/// `GET /api/v1/ips?container=…&n=3&offset=0`.
async fn ips(State(state): State<Arc<RouterState>>, RawQuery(raw): RawQuery) -> Response {
    let mut containers = Vec::new();
    let (mut n, mut offset) = (3usize, 0usize);
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "container" if !v.is_empty() => containers.push(v.into_owned()),
            "n" => match v.parse::<usize>() {
                Ok(x) if (1..=MAX_N).contains(&x) => n = x,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("n must be a whole number from 1 to {MAX_N}, got \"{v}\""),
                    );
                }
            },
            "offset" => match v.parse::<usize>() {
                Ok(x) => offset = x,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("offset must be a whole number from 0, got \"{v}\""),
                    );
                }
            },
            _ => {}
        }
    }
    if containers.is_empty() {
        return error(StatusCode::BAD_REQUEST, "No containers specified");
    }
    let snapshot = state.registry.snapshot();
    Json(ranking::select(&snapshot, &containers, n, offset)).into_response()
}

/// `GET /api/v1/containers`: containers that available nodes run for outside clients
/// (`external`), with how many nodes run each.
async fn containers(State(state): State<Arc<RouterState>>) -> Json<Vec<Value>> {
    let snapshot = state.registry.snapshot();
    let mut seen: Vec<(String, usize, String)> = Vec::new();
    for node in &snapshot.available {
        for c in node.report.containers.iter().filter(|c| c.external) {
            match seen.iter_mut().find(|(id, _, _)| id == &c.id) {
                Some((_, count, description)) => {
                    *count += 1;
                    if description.is_empty() {
                        description.clone_from(&c.description);
                    }
                }
                None => seen.push((c.id.clone(), 1, c.description.clone())),
            }
        }
    }
    Json(
        seen.into_iter()
            .map(|(id, count, description)| json!({"id": id, "count": count, "description": description}))
            .collect(),
    )
}

/// `GET /api/v1/resources[?model_id=]`: every available node's `/resources`, keyed by node;
/// nodes that did not answer within the deadline as `{"error": "late: …"}`.
async fn resources(State(state): State<Arc<RouterState>>, RawQuery(raw): RawQuery) -> Json<Map<String, Value>> {
    let model = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "model_id")
        .map(|(_, v)| v.into_owned());
    let nodes: Vec<(String, String)> = state
        .registry
        .snapshot()
        .available
        .iter()
        // Linked nodes have no address; Ritual's `/resources` is keyed by address.
        .filter(|n| !n.linked)
        .map(|n| (n.key.clone(), n.url.clone()))
        .collect();
    Json(resources::gather(&state.client, nodes, model.as_deref(), state.resources).await)
}

#[derive(Deserialize)]
struct Heartbeat {
    /// `host:port` or URL; when absent, the caller's address with `port`.
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    containers: Vec<ContainerSummary>,
    #[serde(default)]
    pending: Option<Value>,
}

impl Heartbeat {
    /// The node's address: as given, or the caller's address with `port`.
    fn node_addr(&self, source: IpAddr) -> Result<NodeAddr, AddressError> {
        let text = match &self.address {
            Some(a) => a.clone(),
            None if source.is_ipv6() => format!("[{source}]:{}", self.port()),
            None => format!("{source}:{}", self.port()),
        };
        NodeAddr::parse(&text).unwrap_or(Err(AddressError::Empty))
    }

    fn port(&self) -> u16 {
        self.port.unwrap_or(crate::address::DEFAULT_PORT)
    }

    /// Pending jobs, as a number or as `{offchain, onchain}`.
    fn load(&self) -> u64 {
        match &self.pending {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            Some(Value::Object(o)) => o.values().filter_map(Value::as_u64).fold(0, u64::saturating_add),
            _ => 0,
        }
    }
}

/// The `d` tag of a node's heartbeat statement (the node's `admin::HEARTBEAT_SUBJECT`).
const HEARTBEAT_SUBJECT: &str = "infernet-heartbeat";
/// How old a signed heartbeat may be (either side of this router's clock).
const HEARTBEAT_MAX_AGE: u64 = 120;

/// Why a heartbeat body was refused.
#[derive(Debug, thiserror::Error)]
enum HeartbeatError {
    /// Not JSON, or not a heartbeat's shape (400).
    #[error("invalid heartbeat: {0}")]
    Invalid(#[from] serde_json::Error),
    /// `signed` is there but not a string (400).
    #[error("`signed` must be a Nostr event as a string")]
    SignedNotText,
    /// The signed statement does not verify: bad signature, wrong subject, too old (401).
    #[error("heartbeat signature: {0}")]
    Signature(#[from] statement::StatementError),
}

impl HeartbeatError {
    /// The status of the answer.
    fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) | Self::SignedNotText => StatusCode::BAD_REQUEST,
            Self::Signature(_) => StatusCode::UNAUTHORIZED,
        }
    }
}

/// A heartbeat's body: `{"signed": <Nostr event>}` from nodes that sign (this project's), else the
/// heartbeat itself. A signed heartbeat's content is what counts; its signer is the node's identity.
fn read_heartbeat(body: &[u8]) -> Result<(Heartbeat, Option<(NodeIdentity, Value)>), HeartbeatError> {
    let value: Value = serde_json::from_slice(body)?;
    let Some(signed) = value.get("signed") else {
        return Ok((serde_json::from_value(value)?, None));
    };
    let text = signed.as_str().ok_or(HeartbeatError::SignedNotText)?;
    let checked = statement::verify(text, HEARTBEAT_SUBJECT, unix_now(), HEARTBEAT_MAX_AGE)?;
    let operators = checked.content["operators"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .filter_map(Value::as_str)
                .filter_map(|k| parse_public_key(k).ok())
                .map(|k| npub(&k))
                .take(MAX_OPERATORS)
                .collect()
        })
        .unwrap_or_default();
    let identity = NodeIdentity {
        key: npub(&checked.signer),
        operators,
        address_signed: checked.content.get("address").is_some_and(Value::is_string),
    };
    Ok((
        serde_json::from_value(checked.content.clone())?,
        Some((identity, checked.content)),
    ))
}

/// Most operators kept per node.
const MAX_OPERATORS: usize = 16;

/// `POST /api/v1/register`: a node announces itself (its metric sender's heartbeat). Signed
/// heartbeats are accepted as they are; unsigned ones only with the registration token, which,
/// when set, every heartbeat must carry.
async fn register(
    State(state): State<Arc<RouterState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(token) = &state.registration_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(token.expose()) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("heartbeat larger than {MAX_HEARTBEAT_BYTES} bytes"),
            );
        }
        Err(e) => return error(e.status(), e.body_text()),
    };
    let (beat, identity) = match read_heartbeat(&body) {
        Ok(read) => read,
        Err(e) => return error(e.status(), e.to_string()),
    };
    if identity.is_none() && state.registration_token.is_none() {
        return error(
            StatusCode::FORBIDDEN,
            "unsigned heartbeats need a registration token, and this router has none: sign heartbeats with the node's key (infernet-node does) or start the router with --registration-token",
        );
    }
    let source = client_ip(&state, peer, &headers);
    let addr = match beat.node_addr(source) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let key = addr.key();
    let url = addr.base_url();
    let (identity, content) = identity.map_or((None, None), |(i, c)| (Some(i), Some(c)));
    let report = NodeReport {
        pending: beat.load(),
        containers: beat.containers,
        offer: Default::default(),
    };
    if let Err(e) = state
        .registry
        .register(addr, report, state.registration_ttl, source, Instant::now(), identity)
    {
        let status = match e {
            RegistryError::Full { .. } => StatusCode::SERVICE_UNAVAILABLE,
            RegistryError::SourceFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            RegistryError::Unbound { .. } => StatusCode::CONFLICT,
        };
        return error(status, e.to_string());
    }
    state.alerts.seen(&key);
    if let Some(content) = content {
        state.ui.heartbeat(&key, &url, &content);
    }
    Json(json!({"address": key, "ttl": state.registration_ttl.as_secs()})).into_response()
}

/// `GET /api/v1/nodes`: every known node with its state and why it is excluded.
async fn nodes(State(state): State<Arc<RouterState>>) -> Json<Value> {
    Json(json!(state.registry.view(Instant::now())))
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(state): State<Arc<RouterState>>) -> Response {
    let snapshot = state.registry.snapshot();
    let available = snapshot.available.len();
    let mut out = String::new();
    out.push_str(
        "# HELP infernet_router_nodes Nodes known to the router, by state.\n# TYPE infernet_router_nodes gauge\n",
    );
    out.push_str(&format!("infernet_router_nodes{{state=\"available\"}} {available}\n"));
    out.push_str(&format!(
        "infernet_router_nodes{{state=\"unavailable\"}} {}\n",
        snapshot.known - available
    ));
    out.push_str("# HELP infernet_router_probe_round_seconds Duration of the last probe round.\n# TYPE infernet_router_probe_round_seconds gauge\n");
    out.push_str(&format!(
        "infernet_router_probe_round_seconds {}\n",
        state.last_round_micros.load(Ordering::Relaxed) as f64 / 1e6
    ));
    out.push_str("# HELP infernet_router_requests_total Requests received, by route.\n# TYPE infernet_router_requests_total counter\n");
    for (i, route) in ROUTES.iter().enumerate() {
        out.push_str(&format!(
            "infernet_router_requests_total{{route=\"{route}\"}} {}\n",
            state.requests[i].load(Ordering::Relaxed)
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The rate-limit bucket of the gateway's job routes (batch items are charged to it too).
pub const JOBS_ROUTE: &str = "/api/v1/jobs";

/// The gateway's stream route (answered by [`crate::front::Front`] directly; [`app`] names it
/// too, spelled out for the OpenAPI test that reads the routes from the source).
pub const STREAM_ROUTE: &str = "/api/v1/jobs/stream";

/// [`JOBS_ROUTE`]'s place in [`ROUTES`] (found at compile time).
pub(crate) const JOBS_COUNTER: usize = counter_of(JOBS_ROUTE);

/// The place of `route` in [`ROUTES`]; a route not there does not compile.
const fn counter_of(route: &str) -> usize {
    let mut i = 0;
    while i < ROUTES.len() {
        if ROUTES[i].len() == route.len() {
            let (a, b) = (ROUTES[i].as_bytes(), route.as_bytes());
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("not a rate-limited route")
}

pub(crate) const ROUTES: [&str; 9] = [
    "/api/v1/ips",
    "/api/v1/containers",
    "/api/v1/resources",
    "/health",
    JOBS_ROUTE,
    "/api/v1/route",
    "/api/v1/nodes/{node}",
    REGISTER_ROUTE,
    RELAY_ROUTE,
];

/// The rate-limit bucket of operators' requests relayed to linked nodes: limited here, by the
/// caller's address, so that strangers cannot spend a node's own admin limit (every relayed
/// request reaches the node from the router).
const RELAY_ROUTE: &str = "/api/v1/link/{node}/admin";

/// The rate-limit bucket of node heartbeats.
const REGISTER_ROUTE: &str = "/api/v1/register";

/// The HTTP router.
pub fn app(state: Arc<RouterState>, max_body: usize) -> Router {
    // Each route's bucket, named as in `ROUTES` (a name not there fails as the app is built).
    let limited = |route: &'static str| {
        middleware::from_fn_with_state(
            Limited {
                state: state.clone(),
                counter: counter_of(route),
            },
            rate_limit,
        )
    };
    let api = Router::new()
        .route("/api/v1/ips", get(ips).route_layer(limited("/api/v1/ips")))
        .route("/api/v1/link", get(crate::link::endpoint))
        .route(
            "/api/v1/link/{node}/admin/{*rest}",
            axum::routing::any(crate::link::relay).layer(limited(RELAY_ROUTE)),
        )
        .route(
            "/api/v1/internal/link/{node}/{*rest}",
            axum::routing::any(crate::link::peer::endpoint),
        )
        .route(
            "/api/v1/containers",
            get(containers).route_layer(limited("/api/v1/containers")),
        )
        .route(
            "/api/v1/resources",
            get(resources).route_layer(limited("/api/v1/resources")),
        )
        .route(
            "/health",
            get(|| async { Json(json!({"status": "healthy"})) }).route_layer(limited("/health")),
        )
        .route(
            "/api/v1/register",
            post(register)
                .layer(DefaultBodyLimit::max(MAX_HEARTBEAT_BYTES))
                .route_layer(limited(REGISTER_ROUTE)),
        )
        .route("/api/v1/nodes", get(nodes))
        .route(
            "/api/v1/jobs",
            post(gateway::submit)
                .get(gateway::list)
                .route_layer(limited(JOBS_ROUTE)),
        )
        .route(
            "/api/v1/jobs/{id}",
            get(gateway::job)
                .delete(gateway::cancel)
                .route_layer(limited(JOBS_ROUTE)),
        )
        .route(
            "/api/v1/jobs/stream",
            post(gateway::stream).route_layer(limited(JOBS_ROUTE)),
        )
        .route(
            "/api/v1/jobs/batch",
            post(gateway::batch).route_layer(limited(JOBS_ROUTE)),
        )
        .route(
            "/api/v1/route",
            get(gateway::route).route_layer(limited("/api/v1/route")),
        )
        .route("/api/v1/identity", get(gateway::identity))
        .merge(crate::alerts::api::routes().route_layer(limited("/api/v1/route")))
        .route(
            "/api/v1/nodes/{node}",
            get(ledger::api::node).route_layer(limited("/api/v1/nodes/{node}")),
        )
        .route(
            "/api/v1/nodes/{node}/jobs",
            get(ledger::api::node_jobs).route_layer(limited("/api/v1/nodes/{node}")),
        )
        .route(
            "/api/v1/earnings",
            get(ledger::api::earnings).route_layer(limited("/api/v1/nodes/{node}")),
        )
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { Json(openapi()) }))
        .merge(crate::ui::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state);
    // Around the whole router, so that it sees answers as they leave it (405 with `Allow`).
    Router::new()
        .fallback_service(api)
        .layer(middleware::from_fn(json_errors))
}

/// Rewrites error answers that are not JSON (axum's 405, a 413 or 408 from a layer) as
/// `{"error": …}`, keeping their status and headers.
async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Error texts of axum and tower are short; a longer one is cut, not buffered.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match (status, parts.headers.get(header::ALLOW)) {
        (StatusCode::METHOD_NOT_ALLOWED, Some(allow)) => {
            format!(
                "method {method} not allowed here; use {}",
                allow.to_str().unwrap_or("GET")
            )
        }
        _ if !text.is_empty() => text,
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(json!({ "error": message }).to_string()))
}

/// The OpenAPI document (hand-written; a test checks that every served route is in it).
pub fn openapi() -> Value {
    let ok = |d: &str| json!({"200": {"description": d}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Infernet router", "version": env!("CARGO_PKG_VERSION")},
        "paths": {
            "/api/v1/ips": {"get": {
                "summary": "Nodes (host:port) that run every given container, least loaded first",
                "parameters": [
                    {"name": "container", "in": "query", "required": true, "schema": {"type": "array", "items": {"type": "string"}}, "style": "form", "explode": true},
                    {"name": "n", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_N, "default": 3}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}}
                ],
                "responses": {"200": {"description": "node addresses"}, "400": {"description": "no container, or bad n/offset"}, "429": {"description": "rate limited"}}}},
            "/api/v1/containers": {"get": {"summary": "Containers that available nodes run for outside clients (external)", "responses": ok("[{id, count, description}]")}},
            "/api/v1/resources": {"get": {"summary": "Each available node's /resources; nodes not answered by the deadline as {error: \"late: …\"}", "responses": ok("{node: resources}")}},
            "/api/v1/register": {"post": {"summary": "Node heartbeat (bearer token); the node is handed out once a probe of its /info succeeded",
                "responses": {"200": {"description": "registered"}, "400": {"description": "invalid heartbeat"}, "401": {"description": "missing or wrong token"},
                    "403": {"description": "registration is off"}, "409": {"description": "the node's key is registered elsewhere and this heartbeat's address is not signed"}, "413": {"description": "heartbeat too large"},
                    "429": {"description": "too many registrations from this address"}, "503": {"description": "too many registrations"}}}},
            "/api/v1/nodes": {"get": {"summary": "Every known node and its state", "responses": ok("nodes")}},
            "/api/v1/alerts": {"get": {"summary": "Alerts of the operator's nodes, newest first (NIP-98 signed by the operator, or the operator's control-interface session); ?status=firing|resolved, node, limit, before",
                "responses": {"200": {"description": "{alerts: [{id, status, rule, node, subject, summary, started_at, resolved_at, silenced, acked_at}], next}"},
                    "400": {"description": "bad parameter"}, "401": {"description": "neither signed nor signed in"}}}},
            "/api/v1/alerts/settings": {
                "get": {"summary": "The operator's alert rules, webhooks, silences and direct_messages (Nostr DMs through the router's relays; defaults when unset); signed or with a session", "responses": {"200": {"description": "{rules, webhooks, silences, direct_messages}"}, "401": {"description": "neither signed nor signed in"}}},
                "put": {"summary": "Replace the operator's alert settings; signed, or with a session and its CSRF token", "responses": {"200": {"description": "the settings stored"}, "400": {"description": "{error, field, problems: [{field, message}]}: every bad field, named"}, "401": {"description": "neither signed nor signed in"}, "403": {"description": "a session without its CSRF token"}}}},
            "/api/v1/alerts/{id}/ack": {"post": {"summary": "Acknowledge an alert of one of the operator's nodes; signed, or with a session and its CSRF token",
                "responses": {"200": {"description": "the alert"}, "401": {"description": "neither signed nor signed in"}, "403": {"description": "a session without its CSRF token"}, "404": {"description": "no such alert of the operator's nodes"}}}},
            "/api/v1/jobs": {
                "post": {"summary": "Submit a job to the network (the node's job body plus requirements, max_price, max_seconds, deadline_s, callback_url); Idempotency-Key answers the first job again",
                    "responses": {"200": {"description": "{id, node, status}"}, "400": {"description": "a bad field, named"}, "401": {"description": "bad signature or API key"},
                        "429": {"description": "rate limit or quota (Retry-After)"}, "503": {"description": "no node qualifies, with the reason per filter"}}},
                "get": {"summary": "The caller's own jobs, newest first; ?status, container, limit, after", "responses": ok("{jobs, next}")}},
            "/api/v1/jobs/{id}": {
                "get": {"summary": "A job's record with the result read from its node", "responses": {"200": {"description": "{id, node, status, result}"}, "404": {"description": "no such job of the caller's"}}},
                "delete": {"summary": "Cancel a job that has not ended", "responses": {"200": {"description": "cancelled"}, "404": {"description": "unknown"}, "409": {"description": "already ended"}}}},
            "/api/v1/jobs/stream": {"post": {"summary": "The node's stream passed through; the first line is the router's job id", "responses": ok("text stream")}},
            "/api/v1/jobs/batch": {"post": {"summary": "Job bodies spread over qualifying nodes, answered in input order", "responses": ok("[{id, node, status} | {status: failed, error}]")}},
            "/api/v1/route": {"get": {"summary": "Explain a choice: candidates with scores, and the filter that left each other node out", "responses": ok("{candidates, excluded}")}},
            "/api/v1/identity": {"get": {"summary": "The router's key and price unit", "responses": ok("{router, price_unit}")}},
            "/api/v1/nodes/{node}": {"get": {"summary": "A node's public record as this router measured it (success, latency, uptime, jobs per day, exclusions over 24 h)", "responses": {"200": {"description": "the record"}, "404": {"description": "unknown node"}}}},
            "/api/v1/nodes/{node}/jobs": {"get": {"summary": "A node's ledger rows with receipt checks; only for its operator (NIP-98); ?from, to, limit, after, format=csv|json",
                "responses": {"200": {"description": "rows"}, "401": {"description": "not signed"}, "403": {"description": "not the node's operator"}}}},
            "/api/v1/earnings": {"get": {"summary": "Earnings per day, week or month beside the previous period; ?node= (public) or ?operator= (signed by that operator); from, to, by, format",
                "responses": {"200": {"description": "{periods, total, previous_total, settled: false}"}, "400": {"description": "bad parameter"}, "401": {"description": "operator view not signed"}}}},
            "/api/v1/link": {"get": {"summary": "A node's link (WebSocket upgrade): challenge, signed hello, then jobs over one connection", "responses": {"101": {"description": "switching protocols"}}}},
            "/api/v1/internal/link/{node}/{rest}": {"post": {"summary": "Between replicas on one database only (NIP-98 signed by the router's own key): a call to a node whose link this replica holds, passed over the link, the answer streamed back", "responses": ok("the node's answer, marked x-infernet-relayed")}},
            "/api/v1/link/{node}/admin/{rest}": {"post": {"summary": "Relay an operator's signed admin request (signed for infernet://{npub}/admin/…) to a linked node", "responses": ok("the node's answer")}},
            "/api/v1/session": {
                "post": {"summary": "Sign in to the control interface with a NIP-98 event: a session cookie and a CSRF token", "responses": {"200": {"description": "{csrf, pubkey}"}, "401": {"description": "no valid NIP-98 event"}}},
                "get": {"summary": "The current session", "responses": {"200": {"description": "{pubkey, csrf}"}, "401": {"description": "no session"}}},
                "delete": {"summary": "Sign out: the session ends on the server", "responses": ok("signed out")}},
            "/api/v1/fleet": {"get": {"summary": "The signed-in operator's nodes with their state (session)", "responses": ok("nodes")}},
            "/api/v1/fleet/jobs": {"get": {"summary": "The operator's jobs from the ledger, filtered and paged (session)", "responses": ok("jobs")}},
            "/api/v1/fleet/earnings": {"get": {"summary": "The operator's earnings per node and container (session)", "responses": ok("earnings")}},
            "/api/v1/fleet/nodes": {"post": {"summary": "Add a node by address: listed under the operator only if its signed statement names them (session, CSRF); loopback, private, link-local and unspecified addresses (after resolving the name) only with --fleet-private-addresses",
                "responses": {"200": {"description": "the node, or what to set"}, "400": {"description": "a bad or refused address, named"}, "502": {"description": "the node answered no signed statement"}}}},
            "/api/v1/fleet/{node}/history": {"get": {"summary": "A node's metric history for the plots (session)", "responses": ok("points")}},
            "/api/v1/fleet/{node}/admin": {"post": {"summary": "Relay a browser-signed admin request to the node (session, CSRF); the router cannot forge it", "responses": ok("the node's answer")}},
            "/": {"get": {"summary": "The control interface (web app shell)", "responses": ok("HTML")}},
            "/manifest.webmanifest": {"get": {"summary": "The web app's manifest", "responses": ok("JSON")}},
            "/sw.js": {"get": {"summary": "The web app's service worker", "responses": ok("JavaScript")}},
            "/ui/{file}": {"get": {"summary": "The web app's embedded files", "responses": {"200": {"description": "the file"}, "404": {"description": "no such file"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": ok("OpenAPI 3.1")}},
            "/health": {"get": {"summary": "Liveness", "responses": ok("{status: healthy}")}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": ok("text")}}
        }
    })
}

#[cfg(test)]
mod openapi_tests {
    /// Every route the router serves is in its OpenAPI document, so clients can trust it.
    #[test]
    fn every_route_is_documented() {
        let doc = super::openapi();
        let paths = doc["paths"].as_object().unwrap();
        let sources = [
            include_str!("server.rs"),
            include_str!("ui/mod.rs"),
            include_str!("alerts/api.rs"),
        ];
        let mut seen = 0;
        for source in sources {
            // The code, not its tests (this one names `.route(` too).
            let source = source.split("#[cfg(test)]").next().unwrap();
            for (at, _) in source.match_indices(".route(") {
                let rest = source[at..].trim_start_matches(".route(").trim_start();
                let Some(rest) = rest.strip_prefix('"') else {
                    // A constant: the session path.
                    assert!(rest.starts_with("SESSION_PATH"), "{}", &rest[..40.min(rest.len())]);
                    assert!(paths.contains_key(crate::ui::SESSION_PATH));
                    continue;
                };
                let path = &rest[..rest.find('"').unwrap()];
                let documented = path.replace("{*rest}", "{rest}");
                assert!(
                    paths.contains_key(&documented),
                    "{path} is served but not in /openapi.json"
                );
                seen += 1;
            }
        }
        assert!(seen >= 25, "only {seen} routes found");
    }
}

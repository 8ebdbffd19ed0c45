//! The router's REST API (Ritual-compatible paths) plus registration, health and metrics.

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
    body::Bytes,
    extract::{ConnectInfo, RawQuery, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures::StreamExt;
use infernet_service::{
    client_ip::ClientIp,
    rate_limit::{self, RateLimiter},
};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    address::NodeAddr,
    ranking,
    registry::{ContainerSummary, NodeReport, Registry},
};

/// Most nodes one `/api/v1/ips` answer may hold.
pub const MAX_N: usize = 100;

/// Shared state of the handlers.
pub struct RouterState {
    /// The node table.
    pub registry: Arc<Registry>,
    /// Per-client limiter.
    pub limiter: RateLimiter,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Bearer token nodes must present to register; registration is off without one.
    pub registration_token: Option<String>,
    /// How long a registration lasts without a new heartbeat.
    pub registration_ttl: Duration,
    /// Client for `/resources` aggregation.
    pub client: reqwest::Client,
    /// Duration of the last probe round (µs).
    pub last_round_micros: Arc<AtomicU64>,
    /// Requests answered, per route.
    pub requests: [AtomicU64; 4],
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

fn client_ip(state: &RouterState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    ClientIp::resolve(peer.ip(), headers, &state.trusted_proxies)
}

#[derive(Clone)]
struct Limited {
    state: Arc<RouterState>,
    route: &'static str,
    counter: usize,
}

async fn rate_limit(
    State(l): State<Limited>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    l.state.requests[l.counter].fetch_add(1, Ordering::Relaxed);
    let client = client_ip(&l.state, peer, req.headers());
    rate_limit::enforce(&l.state.limiter, l.route, client, req, next).await
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
    Json(ranking::select(&snapshot, &containers, n, offset, &mut rand::rng())).into_response()
}

/// `GET /api/v1/containers`: containers on available nodes with how many nodes run each.
async fn containers(State(state): State<Arc<RouterState>>) -> Json<Vec<Value>> {
    let snapshot = state.registry.snapshot();
    let mut seen: Vec<(String, usize, String)> = Vec::new();
    for node in &snapshot.available {
        for c in &node.report.containers {
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

/// `GET /api/v1/resources[?model_id=]`: every available node's `/resources`, keyed by node.
async fn resources(State(state): State<Arc<RouterState>>, RawQuery(raw): RawQuery) -> Json<Map<String, Value>> {
    let model = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "model_id")
        .map(|(_, v)| v.into_owned());
    let nodes: Vec<(String, String)> = state
        .registry
        .snapshot()
        .available
        .iter()
        .map(|n| (n.key.clone(), n.url.clone()))
        .collect();
    let calls = nodes.into_iter().map(|(key, url)| {
        let mut req = state
            .client
            .get(format!("{url}/resources"))
            .timeout(Duration::from_secs(3));
        if let Some(m) = &model {
            req = req.query(&[("model_id", m)]);
        }
        async move {
            let value = async {
                req.send()
                    .await
                    .ok()?
                    .error_for_status()
                    .ok()?
                    .json::<Value>()
                    .await
                    .ok()
            }
            .await;
            value.map(|v| (key, v))
        }
    });
    let answers: Vec<Option<(String, Value)>> = futures::stream::iter(calls).buffer_unordered(32).collect().await;
    Json(answers.into_iter().flatten().collect())
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

/// `POST /api/v1/register`: a node announces itself (its metric sender's heartbeat).
async fn register(
    State(state): State<Arc<RouterState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = &state.registration_token else {
        return error(
            StatusCode::FORBIDDEN,
            "registration is off on this router (start it with --registration-token)",
        );
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented != Some(token.as_str()) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let beat: Heartbeat = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid heartbeat: {e}")),
    };
    let text = match beat.address {
        Some(a) => a,
        None => {
            let ip = client_ip(&state, peer, &headers);
            let host = if ip.is_ipv6() {
                format!("[{ip}]")
            } else {
                ip.to_string()
            };
            format!("{host}:{}", beat.port.unwrap_or(crate::address::DEFAULT_PORT))
        }
    };
    let addr = match NodeAddr::parse(&text) {
        Some(Ok(a)) => a,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, e),
        None => return error(StatusCode::BAD_REQUEST, "empty address"),
    };
    let pending = beat
        .pending
        .map(|p| match p {
            Value::Number(n) => n.as_u64().unwrap_or(0),
            Value::Object(o) => o.values().filter_map(Value::as_u64).sum(),
            _ => 0,
        })
        .unwrap_or(0);
    let key = addr.key();
    state.registry.register(
        addr,
        NodeReport {
            containers: beat.containers,
            pending,
        },
        state.registration_ttl,
        Instant::now(),
    );
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

const ROUTES: [&str; 4] = ["/api/v1/ips", "/api/v1/containers", "/api/v1/resources", "/health"];

/// The HTTP router.
pub fn app(state: Arc<RouterState>) -> Router {
    let limited = |i: usize| {
        middleware::from_fn_with_state(
            Limited {
                state: state.clone(),
                route: ROUTES[i],
                counter: i,
            },
            rate_limit,
        )
    };
    Router::new()
        .route("/api/v1/ips", get(ips).route_layer(limited(0)))
        .route("/api/v1/containers", get(containers).route_layer(limited(1)))
        .route("/api/v1/resources", get(resources).route_layer(limited(2)))
        .route(
            "/health",
            get(|| async { Json(json!({"status": "healthy"})) }).route_layer(limited(3)),
        )
        .route("/api/v1/register", post(register))
        .route("/api/v1/nodes", get(nodes))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { Json(openapi()) }))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .with_state(state)
}

/// The OpenAPI document (hand-written: five small routes).
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
            "/api/v1/containers": {"get": {"summary": "Containers on available nodes", "responses": ok("[{id, count, description}]")}},
            "/api/v1/resources": {"get": {"summary": "Each available node's /resources", "responses": ok("{node: resources}")}},
            "/api/v1/register": {"post": {"summary": "Node heartbeat (bearer token)", "responses": ok("registered")}},
            "/api/v1/nodes": {"get": {"summary": "Every known node and its state", "responses": ok("nodes")}},
            "/health": {"get": {"summary": "Liveness", "responses": ok("{status: healthy}")}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": ok("text")}}
        }
    })
}

//! The control interface of the fleet: the web app at `/` (shell, files, manifest, service
//! worker; no data), the operator's session, and the data behind it, each with the session:
//!
//! - `POST|GET|DELETE /api/v1/session` — a NIP-98 signed `POST` opens a session (cookie and CSRF
//!   token); `GET` says who is signed in; `DELETE` ends it on the server;
//! - `GET /api/v1/fleet` — the nodes whose own signed statements name the signed-in key;
//! - `GET /api/v1/fleet/{node}/history?range=1h|24h|7d|30d` — the plots' points ([`history`]);
//! - `GET /api/v1/fleet/jobs?node=&container=&outcome=&page=` — the ledger of those nodes;
//! - `GET /api/v1/fleet/earnings` — jobs and earnings of the last day, week and month against
//!   the period before, per node and per container set (by the ledger's prices);
//! - `POST /api/v1/fleet/nodes` — "add a node": fetches the node's signed statement at the
//!   address given and says whether it names the signed-in key, and what to set if not;
//! - `POST /api/v1/fleet/{node}/admin` — relays a request the operator's extension signed for
//!   the node's admin API and answers the node's status and body. The router adds nothing: it
//!   cannot make such a request, only pass it on.

pub mod add_node;
mod fleet;
pub mod history;
mod ledger;
mod relay;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{ConnectInfo, Path, RawQuery, State},
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use infernet_identity::{PublicKey, nip98::Verifier, npub, parse_public_key};
use infernet_service::web::{self, App, SessionLimits, Sessions};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{db::Db, server::RouterState};
use fleet::fleet_of;

/// Where the session lives.
pub const SESSION_PATH: &str = "/api/v1/session";
/// Most nodes kept with their last heartbeat (the registry's bound is the other).
pub const MAX_NODES: usize = 10_000;
/// Largest part of a heartbeat kept for the dashboard (prices, availability), in bytes of JSON.
const MAX_KEPT: usize = 16 * 1024;
/// Largest body relayed to a node's admin API, and largest answer read back.
pub const MAX_RELAY: usize = 1 << 20;
/// Most jobs on one page.
pub const PAGE: i64 = 50;
/// How long a relayed admin request may take (adding a container pulls and starts it).
const RELAY_TIMEOUT: Duration = Duration::from_secs(300);

const APP: App<'static> = App {
    base: "/",
    mode: "fleet",
    title: "Infernet fleet",
    session: SESSION_PATH,
    assets: "/ui/",
    sw: "/sw.js",
    manifest: "/manifest.webmanifest",
};

/// Settings of the control interface.
#[derive(Debug, Clone, Copy, Default)]
pub struct UiSettings {
    /// Bounds of the session table.
    pub sessions: SessionLimits,
    /// "Add a node" may fetch from loopback, private, link-local and unspecified addresses
    /// (`--fleet-private-addresses`; off: any signed-in key could make the router call its own
    /// network).
    pub private_addresses: bool,
}

/// What a node's last signed heartbeat said, for the dashboard.
#[derive(Debug, Clone)]
struct Beat {
    at: Instant,
    url: String,
    content: Value,
    /// When the node's last history sample was taken, and its latency histogram then (running
    /// totals per bucket).
    sampled: Option<(Instant, Option<[i64; history::LATENCY_BUCKETS]>)>,
}

/// Nodes' heartbeats become history samples at most this often (a node beating faster does not
/// make the database work harder).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// The control interface's state.
pub struct Ui {
    sessions: Sessions,
    verifier: Verifier,
    /// Origins the session request may be signed for.
    bases: Vec<String>,
    secure: bool,
    beats: Mutex<HashMap<String, Beat>>,
    history: history::HistorySender,
    db: Db,
    /// The unit the ledger's prices are in.
    price_unit: String,
    /// See [`UiSettings::private_addresses`].
    private_addresses: bool,
}

impl Ui {
    /// The interface of a router reached at `public_url` (if set) and on `port`, pricing in
    /// `price_unit`; answers the history writer's receiving end too (run [`history::run`] with it).
    pub fn new(
        settings: UiSettings,
        public_url: Option<&str>,
        port: u16,
        db: Db,
        price_unit: &str,
    ) -> (Self, mpsc::Receiver<history::Sample>) {
        let mut bases: Vec<String> = public_url.iter().map(|u| u.trim_end_matches('/').to_string()).collect();
        bases.push(format!("http://127.0.0.1:{port}"));
        bases.push(format!("http://localhost:{port}"));
        let (history, samples) = mpsc::channel(history::QUEUE);
        let ui = Self {
            sessions: Sessions::new(settings.sessions),
            verifier: Verifier::new(60, 10_000),
            secure: public_url.is_some_and(|u| u.starts_with("https://")),
            bases,
            beats: Mutex::new(HashMap::new()),
            history,
            db,
            price_unit: price_unit.to_string(),
            private_addresses: settings.private_addresses,
        };
        (ui, samples)
    }

    /// The operator key of the request's session, checked as every data call of the app is (the
    /// CSRF token for a change): other APIs take it beside a NIP-98 signature.
    pub fn session_key(&self, method: &Method, headers: &HeaderMap) -> Result<PublicKey, web::SessionError> {
        let session = self.sessions.check(method, headers)?;
        // Sessions hold the key they were opened for, as npub: it parses.
        parse_public_key(&session.signer).map_err(|_| web::SessionError::NoSession)
    }

    /// Takes note of a node's signed heartbeat (its content, the node at `url`): the fleet page
    /// shows it and the plots get a sample.
    pub fn heartbeat(&self, key: &str, url: &str, content: &Value) {
        let keep = |v: &Value| {
            if v.to_string().len() <= MAX_KEPT {
                v.clone()
            } else {
                Value::Null
            }
        };
        let kept = json!({
            "version": content["version"].as_str().map(|v| v.chars().take(64).collect::<String>()),
            "node": content["node"].as_str().map(|v| v.chars().take(128).collect::<String>()),
            "jobs": keep(&content["jobs"]),
            "system": keep(&content["system"]),
            "pricing": keep(&content["pricing"]),
            "availability": keep(&content["availability"]),
            "chain": keep(&content["chain"]),
            "container_restarts": keep(&content["container_restarts"]),
            "container_states": keep(&content["container_states"]),
            "pending": keep(&content["pending"]),
        });
        let latency = latency_counts(&content["job_latency"]);
        let mut sample = sample(key, &kept);
        let now = Instant::now();
        let send = {
            let mut beats = self.beats.lock().expect("beats poisoned");
            let previous = beats.get(key).and_then(|b| b.sampled);
            let send = previous.is_none_or(|(at, _)| now.duration_since(at) >= SAMPLE_EVERY);
            // Jobs since the previous sample per bucket; a node that restarted starts over.
            if let (true, Some(current), Some((_, Some(before)))) = (send, latency, previous) {
                let restarted = current.iter().zip(&before).any(|(n, b)| n < b);
                for (i, d) in sample.latency.iter_mut().enumerate() {
                    *d = if restarted { current[i] } else { current[i] - before[i] };
                }
            }
            if beats.len() >= MAX_NODES
                && !beats.contains_key(key)
                && let Some(oldest) = beats.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| k.clone())
            {
                beats.remove(&oldest);
            }
            beats.insert(
                key.to_string(),
                Beat {
                    at: now,
                    url: url.to_string(),
                    content: kept,
                    sampled: if send { Some((now, latency)) } else { previous },
                },
            );
            send
        };
        if send && self.history.try_send(sample).is_err() {
            tracing::debug!(node = %key, "history queue full; a sample was dropped");
        }
    }
}

/// A heartbeat's `job_latency` as running totals per bucket, when its bounds are ours.
fn latency_counts(v: &Value) -> Option<[i64; history::LATENCY_BUCKETS]> {
    let bounds: Vec<f64> = v["le"].as_array()?.iter().filter_map(Value::as_f64).collect();
    if bounds != history::LATENCY_BOUNDS {
        return None;
    }
    let counts = v["counts"].as_array()?;
    let mut out = [0i64; history::LATENCY_BUCKETS];
    if counts.len() != out.len() {
        return None;
    }
    for (o, c) in out.iter_mut().zip(counts) {
        *o = c.as_i64().filter(|c| *c >= 0)?;
    }
    Some(out)
}

/// The plot sample of a heartbeat (without latency: that needs the previous heartbeat).
fn sample(key: &str, kept: &Value) -> history::Sample {
    let s = &kept["system"];
    let total = s["memory_total_bytes"].as_f64().unwrap_or(0.0);
    let gpus: Vec<f64> = s["gpus"]
        .as_array()
        .map(|g| g.iter().filter_map(|g| g["utilization_percent"].as_f64()).collect())
        .unwrap_or_default();
    let (mut ok, mut failed) = (0i64, 0i64);
    if let Some(jobs) = kept["jobs"].as_object() {
        for j in jobs.values() {
            ok += j["success"].as_i64().unwrap_or(0);
            failed += j["failure"].as_i64().unwrap_or(0);
        }
    }
    let pending = kept["pending"]
        .as_object()
        .map_or(0, |p| p.values().filter_map(Value::as_i64).sum());
    history::Sample {
        node: key.to_string(),
        at: infernet_identity::unix_now() as i64,
        cpu: s["cpu_percent"].as_f64().unwrap_or(0.0),
        memory: if total > 0.0 {
            100.0 * s["memory_used_bytes"].as_f64().unwrap_or(0.0) / total
        } else {
            0.0
        },
        gpu: (!gpus.is_empty()).then(|| gpus.iter().sum::<f64>() / gpus.len() as f64),
        pending,
        jobs_ok: ok,
        jobs_failed: failed,
        latency: [0; history::LATENCY_BUCKETS],
    }
}

/// Counts a request that makes the router work for anyone (a sign-in, a node's statement fetched)
/// against the client's rate limit on `route`: `Err` answers 429.
fn admit(
    state: &RouterState,
    route: &'static str,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<infernet_service::rate_limit::Allowed, infernet_service::rate_limit::Refused> {
    let client = infernet_service::client_ip::ClientIp::resolve(peer.ip(), headers, &state.trusted_proxies);
    state.limiter.admit(route, client)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

use web::pages::refused;

/// The routes of the control interface.
pub fn routes() -> Router<Arc<RouterState>> {
    Router::new()
        .route("/", get(shell))
        .route("/ui/{file}", get(asset))
        .route("/manifest.webmanifest", get(manifest))
        .route("/sw.js", get(service_worker))
        .route(SESSION_PATH, post(open).get(who).delete(close))
        .route("/api/v1/fleet", get(fleet::fleet))
        .route("/api/v1/fleet/jobs", get(ledger::jobs))
        .route("/api/v1/fleet/earnings", get(ledger::earnings))
        .route("/api/v1/fleet/nodes", post(add_node::add_node))
        .route("/api/v1/fleet/{node}/history", get(fleet::history_of))
        .route("/api/v1/fleet/{node}/admin", post(relay::relay))
}

async fn shell() -> Response {
    web::pages::shell_page(&APP)
}

async fn asset(Path(file): Path<String>) -> Response {
    web::pages::asset_page(&file).unwrap_or_else(|| error(StatusCode::NOT_FOUND, format!("no file {file} in the app")))
}

async fn manifest() -> Response {
    web::pages::manifest_page(&APP)
}

async fn service_worker() -> Response {
    web::pages::service_worker_page(&APP)
}

/// `POST /api/v1/session`: a NIP-98 event signed for this URL opens a session.
async fn open(
    State(state): State<Arc<RouterState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let allowed = match admit(&state, SESSION_PATH, peer, &headers) {
        Ok(a) => a,
        Err(refused) => return refused.into_response(),
    };
    allowed.stamp(&state.limiter, sign_in(&state, &method, &uri, &headers, &body))
}

/// Opens a session when the request is signed (NIP-98) for this router's session URL.
fn sign_in(state: &RouterState, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    let ui = &state.ui;
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let urls: Vec<String> = ui.bases.iter().map(|b| format!("{b}{path}")).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let received = infernet_identity::nip98::Received {
        method: method.as_str(),
        urls: &urls,
        body,
    };
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let signer = match ui
        .verifier
        .verify(authorization, &received, infernet_identity::unix_now(), |_| true)
    {
        Ok(k) => npub(&k),
        Err(e) => {
            return error(
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED),
                e.to_string(),
            );
        }
    };
    web::pages::signed_in(&ui.sessions, &signer, "/", ui.secure)
}

/// `GET /api/v1/session`: who is signed in, and the CSRF token of the session.
async fn who(State(state): State<Arc<RouterState>>, method: Method, headers: HeaderMap) -> Response {
    web::pages::who(&state.ui.sessions, &method, &headers)
}

/// `DELETE /api/v1/session`: signs out (the session ends on the server).
async fn close(State(state): State<Arc<RouterState>>, method: Method, headers: HeaderMap) -> Response {
    web::pages::signed_out(&state.ui.sessions, &method, &headers, "/", state.ui.secure)
}

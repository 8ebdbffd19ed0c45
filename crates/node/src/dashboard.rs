//! The node's own dashboard at `/dashboard`: the web app the router serves for a fleet, here for
//! this node alone. The shell and its files need no session; the data does:
//!
//! - `POST|GET|DELETE /dashboard/session` — a NIP-98 request signed by one of `operator.pubkeys`
//!   for this node's URL opens a session (cookie and CSRF token); `GET` says who; `DELETE` ends it;
//! - `GET /dashboard/api/status` — the node as the fleet page shows one;
//! - `GET /dashboard/api/history?range=1h|24h` — the last 24 h, one point a minute, kept in memory.
//!
//! Changes go to the signed admin API (`/admin/…`) directly, each signed by the extension.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use infernet_identity::npub;
use infernet_service::web::{self, App, SessionLimits, Sessions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{
    server::AppState,
    stats::snapshot::{Snapshot, View},
};

/// Where the session lives.
pub const SESSION_PATH: &str = "/dashboard/session";
/// Points kept: one a minute for 24 h.
pub const HISTORY: usize = 24 * 60;
/// Time between points.
pub const STEP: Duration = Duration::from_secs(60);

const APP: App<'static> = App {
    base: "/dashboard/",
    mode: "node",
    title: "Infernet node",
    session: SESSION_PATH,
    assets: "/dashboard/ui/",
    sw: "/dashboard/sw.js",
    manifest: "/dashboard/manifest.webmanifest",
};

/// One point of the node's plots.
#[derive(Debug, Clone, serde::Serialize)]
struct Point {
    t: i64,
    cpu: f64,
    memory: f64,
    gpu: Option<f64>,
    pending: f64,
    jobs: Option<f64>,
    success: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    #[serde(skip)]
    totals: (u64, u64),
    /// The latency histogram's bounds (s) and running totals per bucket.
    #[serde(skip)]
    latency: (Vec<f64>, Vec<i64>),
}

/// The dashboard's state: sessions and the last 24 h.
#[derive(Debug)]
pub struct Dashboard {
    sessions: Sessions,
    history: Mutex<VecDeque<Point>>,
    secure: bool,
}

impl Dashboard {
    /// A dashboard with `limits` on its sessions; `secure` when the node is reached over TLS.
    pub fn new(limits: SessionLimits, secure: bool) -> Self {
        Self {
            sessions: Sessions::new(limits),
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            secure,
        }
    }

    fn push(&self, mut point: Point) {
        let mut history = self.history.lock().expect("history poisoned");
        if let Some(prev) = history.back() {
            let (ok, failed) = point.totals;
            let (pok, pfailed) = prev.totals;
            let (dok, dfailed) = if ok < pok || failed < pfailed {
                (ok, failed)
            } else {
                (ok - pok, failed - pfailed)
            };
            let minutes = ((point.t - prev.t) as f64 / 60.0).max(1.0 / 60.0);
            point.jobs = Some((dok + dfailed) as f64 / minutes);
            point.success = (dok + dfailed > 0).then(|| 100.0 * dok as f64 / (dok + dfailed) as f64);
            let (bounds, now) = &point.latency;
            let (_, before) = &prev.latency;
            if now.len() == before.len() {
                let restarted = now.iter().zip(before).any(|(n, b)| n < b);
                let since: Vec<i64> = now
                    .iter()
                    .zip(before)
                    .map(|(n, b)| if restarted { *n } else { n - b })
                    .collect();
                point.p50 = web::latency_quantile(bounds, &since, 0.5);
                point.p99 = web::latency_quantile(bounds, &since, 0.99);
            }
        }
        if history.len() >= HISTORY {
            history.pop_front();
        }
        history.push_back(point);
    }
}

/// The node's entry, as the fleet page shows one.
async fn entry(state: &AppState) -> Value {
    let snapshot = Snapshot::take(state, View::Heartbeat).await;
    let states: Vec<Value> = snapshot
        .states
        .iter()
        .map(|(id, s)| json!({"id": id, "state": s}))
        .collect();
    let mut beat = snapshot.heartbeat();
    let (mut ok, mut failed) = (0u64, 0u64);
    if let Some(jobs) = beat["jobs"].as_object() {
        for j in jobs.values() {
            ok += j["success"].as_u64().unwrap_or(0);
            failed += j["failure"].as_u64().unwrap_or(0);
        }
    }
    let open = beat["availability"]["open"].as_bool().unwrap_or(true);
    let containers: Vec<Value> = beat["containers"]
        .as_array()
        .map(|c| c.iter().map(|c| c["id"].clone()).collect())
        .unwrap_or_default();
    let mut problems = Vec::new();
    if !open {
        problems.push(format!(
            "not taking jobs now: {}",
            beat["availability"]["reason"].as_str().unwrap_or("closed")
        ));
    }
    if state.admin.operators().is_empty() {
        problems.push("no operator.pubkeys: nobody can manage this node".to_string());
    }
    beat["key"] = json!("this");
    beat["name"] = beat["node"].clone();
    beat["status"] = json!(if open { "up" } else { "closed" });
    beat["open"] = json!(open);
    beat["heartbeat_age"] = json!(0);
    beat["containers"] = json!(containers);
    beat["container_states"] = json!(states);
    beat["jobs"] = json!({
        "succeeded": ok, "failed": failed, "total": ok + failed,
        "success_rate": (ok + failed > 0).then(|| 100.0 * ok as f64 / (ok + failed) as f64),
    });
    beat["problems"] = json!(problems);
    beat
}

fn point_of(entry: &Value) -> Point {
    let s = &entry["system"];
    let total = s["memory_total_bytes"].as_f64().unwrap_or(0.0);
    let gpus: Vec<f64> = s["gpus"]
        .as_array()
        .map(|g| g.iter().filter_map(|g| g["utilization_percent"].as_f64()).collect())
        .unwrap_or_default();
    let pending = entry["pending"]
        .as_object()
        .map_or(0, |p| p.values().filter_map(Value::as_u64).sum::<u64>());
    Point {
        t: infernet_identity::unix_now() as i64,
        cpu: s["cpu_percent"].as_f64().unwrap_or(0.0),
        memory: if total > 0.0 {
            100.0 * s["memory_used_bytes"].as_f64().unwrap_or(0.0) / total
        } else {
            0.0
        },
        gpu: (!gpus.is_empty()).then(|| gpus.iter().sum::<f64>() / gpus.len() as f64),
        pending: pending as f64,
        jobs: None,
        success: None,
        totals: (
            entry["jobs"]["succeeded"].as_u64().unwrap_or(0),
            entry["jobs"]["failed"].as_u64().unwrap_or(0),
        ),
        latency: (
            entry["job_latency"]["le"]
                .as_array()
                .map(|b| b.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default(),
            entry["job_latency"]["counts"]
                .as_array()
                .map(|c| c.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default(),
        ),
        p50: None,
        p99: None,
    }
}

/// Takes a point now and every [`STEP`] until `shutdown`.
pub async fn sample(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(STEP);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let point = point_of(&entry(&state).await);
        state.dashboard.push(point);
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

use web::pages::refused;

/// The dashboard's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/dashboard", get(|| async { Redirect::permanent("/dashboard/") }))
        .route("/dashboard/", get(shell))
        .route("/dashboard/ui/{file}", get(asset))
        .route("/dashboard/manifest.webmanifest", get(manifest))
        .route("/dashboard/sw.js", get(service_worker))
        .route(SESSION_PATH, post(open).get(who).delete(close))
        .route("/dashboard/api/status", get(status))
        .route("/dashboard/api/history", get(history))
}

async fn shell() -> Response {
    web::pages::shell_page(&APP)
}

async fn asset(Path(file): Path<String>) -> Response {
    web::pages::asset_page(&file)
        .unwrap_or_else(|| error(StatusCode::NOT_FOUND, format!("no file {file} in the dashboard")))
}

async fn manifest() -> Response {
    web::pages::manifest_page(&APP)
}

async fn service_worker() -> Response {
    web::pages::service_worker_page(&APP)
}

/// `POST /dashboard/session`: only an operator of this node signs in.
async fn open(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let signer = match state.admin.check_operator(
        method.as_str(),
        path,
        authorization,
        &body,
        infernet_identity::unix_now(),
    ) {
        Ok(k) => npub(&k),
        Err(e) => {
            return error(
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED),
                e.to_string(),
            );
        }
    };
    let dashboard = &state.dashboard;
    web::pages::signed_in(&dashboard.sessions, &signer, "/dashboard", dashboard.secure)
}

async fn who(State(state): State<Arc<AppState>>, method: Method, headers: HeaderMap) -> Response {
    web::pages::who(&state.dashboard.sessions, &method, &headers)
}

async fn close(State(state): State<Arc<AppState>>, method: Method, headers: HeaderMap) -> Response {
    let dashboard = &state.dashboard;
    web::pages::signed_out(&dashboard.sessions, &method, &headers, "/dashboard", dashboard.secure)
}

/// `GET /dashboard/api/status`.
async fn status(State(state): State<Arc<AppState>>, method: Method, headers: HeaderMap) -> Response {
    if let Err(e) = state.dashboard.sessions.check(&method, &headers) {
        return refused(e);
    }
    Json(json!({"node": entry(&state).await})).into_response()
}

/// `GET /dashboard/api/history?range=1h|24h`.
async fn history(
    State(state): State<Arc<AppState>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(e) = state.dashboard.sessions.check(&method, &headers) {
        return refused(e);
    }
    let mut span = 3600;
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match (k.as_ref(), v.as_ref()) {
            ("range", "1h") => span = 3600,
            ("range", "24h") => span = 24 * 3600,
            ("range", other) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("range: 1h or 24h (the node keeps 24 h; the router keeps more), got {other:?}"),
                );
            }
            (other, _) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{other}: unknown parameter; known: range"),
                );
            }
        }
    }
    let from = infernet_identity::unix_now() as i64 - span;
    let points: Vec<Point> = state
        .dashboard
        .history
        .lock()
        .expect("history poisoned")
        .iter()
        .filter(|p| p.t >= from)
        .cloned()
        .collect();
    Json(json!({"node": "this", "step": STEP.as_secs(), "points": points})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: i64, totals: (u64, u64)) -> Point {
        Point {
            t,
            cpu: 1.0,
            memory: 2.0,
            gpu: None,
            pending: 0.0,
            jobs: None,
            success: None,
            p50: None,
            p99: None,
            totals,
            latency: (vec![0.01, 0.1], vec![0, totals.0 as i64, 0]),
        }
    }

    #[test]
    fn history_is_bounded_and_rates_come_from_totals() {
        let d = Dashboard::new(SessionLimits::default(), false);
        d.push(point(0, (0, 0)));
        d.push(point(60, (3, 1)));
        let h = d.history.lock().unwrap();
        assert_eq!((h[1].jobs, h[1].success), (Some(4.0), Some(75.0)));
        // Three jobs of 10 to 100 ms since the previous point: the median half-way.
        assert!((h[1].p50.unwrap() - 55.0).abs() < 1e-9, "{:?}", h[1].p50);
        drop(h);
        for i in 0..(HISTORY as i64 + 10) {
            d.push(point(120 + i * 60, (3, 1)));
        }
        assert_eq!(d.history.lock().unwrap().len(), HISTORY);
    }
}

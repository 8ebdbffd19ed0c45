//! The operator's signed admin API and the node's own identity.
//!
//! Every `/admin/…` request must be signed by one of `operator.pubkeys` (NIP-98, see [`auth`]);
//! nothing about managing the node rests on an IP address or a shared password. What the API sets
//! is kept across restarts ([`state`]). `GET /identity` answers a fresh statement signed by the
//! node's own key (made at first start, mode 0600) naming the node, its operators, its URL, version
//! and containers, so a router or a dashboard can check whom the node belongs to.
//!
//! Endpoints: `GET /admin/status`; `POST /admin/pause`, `/admin/resume`, `/admin/drain`;
//! `GET|PUT /admin/settings` (the provider's settings: availability, pricing, limits);
//! `GET /admin/logs?since=&level=&limit=` (the node's recent log lines); `GET|POST
//! /admin/containers`, `PUT|DELETE /admin/containers/{id}` (see [`containers`]).

pub mod auth;
pub mod containers;
mod diagnostics;
pub mod state;

use std::{path::Path, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequest, RawQuery, Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use infernet_identity::{Identity, KeyError, PublicKey, nip98::AuthError, npub, statement};
use infernet_types::settings::{Host, Problems, Settings};
use serde_json::{Value, json};

use self::{
    auth::OperatorAuth,
    state::{AdminState, Mode, Persisted, StateError},
};
use crate::{config::ValidConfig, server::AppState};

/// Largest admin request body.
const MAX_BODY: usize = 1 << 20;
/// The `d` tag of the node's identity statement.
pub const IDENTITY_SUBJECT: &str = "infernet-node";
/// The `d` tag of a heartbeat: the node's statement of its state to a router.
pub const HEARTBEAT_SUBJECT: &str = "infernet-heartbeat";

/// Why the admin side could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The node's key could not be read or made.
    #[error("node key: {0}")]
    Key(#[from] KeyError),
    /// The admin state could not be read.
    #[error("admin state: {0}")]
    State(#[from] StateError),
    /// The containers the operator set no longer pass the config's checks.
    #[error(
        "{path}: the containers set through the admin API are not valid with this config: {problems}; fix config.json, or remove \"containers\" from that file to run config.json's"
    )]
    Containers {
        /// The admin state file.
        path: std::path::PathBuf,
        /// Every problem, with its path.
        problems: String,
    },
}

/// The node's identity, its operators and what they set.
#[derive(Debug)]
pub struct Admin {
    identity: Identity,
    auth: OperatorAuth,
    state: AdminState,
    public_url: Option<String>,
    /// Container changes are made one at a time.
    changes: tokio::sync::Mutex<()>,
}

impl Admin {
    /// Loads (or makes, at first start) the node's key and reads the admin state beside it; the
    /// node serves on `port`.
    pub fn open(config: &ValidConfig, port: u16) -> Result<Self, AdminError> {
        let operator = &config.operator;
        if let Some(dir) = operator.node_key.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let (identity, created) = Identity::load_or_create(&operator.node_key)?;
        if created {
            tracing::info!(key = %operator.node_key.display(), node = %identity.npub(), "made the node's key");
        }
        let state_path = operator
            .node_key
            .parent()
            .unwrap_or(Path::new(""))
            .join("infernet-admin.json");
        if operator.pubkeys.is_empty() {
            tracing::info!("no operator.pubkeys: the admin API refuses every request");
        }
        Ok(Self {
            auth: OperatorAuth::new(operator, port, &identity.public_key()),
            state: AdminState::open(state_path)?,
            identity,
            public_url: operator.public_url.clone(),
            changes: tokio::sync::Mutex::new(()),
        })
    }

    /// `config` with the containers the operator set through the API in place of its own, if
    /// they set any, each with the limits the provider's settings give it.
    pub fn containers_over(&self, mut config: ValidConfig) -> Result<ValidConfig, AdminError> {
        let persisted = self.state.get();
        let Some(entries) = persisted.containers else {
            containers::limit(&mut config.containers, &persisted.settings.limits);
            return Ok(config);
        };
        let mut valid = containers::parse_entries(&entries)
            .and_then(|(parsed, unknown)| containers::with_containers(&config, parsed, &unknown))
            .map_err(|problems| AdminError::Containers {
                path: self.state.path().to_path_buf(),
                problems: problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
            })?;
        tracing::info!(
            state = %self.state.path().display(),
            containers = valid.containers.len(),
            "running the containers set through the admin API, not config.json's"
        );
        containers::limit(&mut valid.containers, &persisted.settings.limits);
        Ok(valid)
    }

    /// The node's own key.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The operators' keys, as `npub1…`.
    pub fn operators(&self) -> Vec<String> {
        self.auth.operators().iter().map(npub).collect()
    }

    /// The operator who signed `method path_and_query` with `body` for this node, at `now` (the
    /// dashboard's sign-in is checked as admin requests are).
    pub fn check_operator(
        &self,
        method: &str,
        path_and_query: &str,
        authorization: Option<&str>,
        body: &[u8],
        now: u64,
    ) -> Result<PublicKey, AuthError> {
        self.auth.check(method, path_and_query, authorization, body, now)
    }

    /// Whether the node is reached over TLS (its `operator.public_url` is `https://`).
    pub fn secure(&self) -> bool {
        self.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
    }

    /// What the operator set.
    pub fn state(&self) -> Persisted {
        self.state.get()
    }

    /// Whether a new off-chain job is taken now (see [`state::gate`]).
    pub fn gate(&self) -> Result<(), state::Closed> {
        self.state.with(|s| state::gate(s, jiff::Timestamp::now()))
    }
}

/// The admin routes (`/identity` is served beside them: [`identity`]).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/status", get(status))
        .route("/admin/pause", post(pause))
        .route("/admin/resume", post(resume))
        .route("/admin/drain", post(drain))
        .route("/admin/settings", get(settings).put(put_settings))
        .route("/admin/logs", get(logs))
        .route("/admin/containers", get(containers::list).post(containers::add))
        .route(
            "/admin/containers/{id}",
            axum::routing::put(containers::replace).delete(containers::remove),
        )
}

/// An admin answer that is not a success.
#[derive(Debug)]
enum Refusal {
    /// The request is not signed by an operator (401), or the replay cache is full (503).
    Auth(AuthError),
    /// The body is too large (413).
    TooLarge,
    /// The body is not valid (400), with every problem.
    Invalid(Problems),
    /// The body is not JSON text (400).
    BadRequest(String),
    /// The change could not be kept (500).
    State(StateError),
    /// No such container (404).
    NotFound(String),
    /// The change clashes with what runs (409): a duplicate id, no room for another container.
    Conflict(String),
    /// The container did not come up (400 for an image that cannot be found, else 422).
    Start(crate::containers::ContainerError),
    /// The node failed to apply a checked change (500).
    Internal(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            Self::Auth(e) => (
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED),
                json!({"error": e.to_string()}),
            ),
            Self::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": format!("admin request body larger than {MAX_BODY} bytes")}),
            ),
            Self::Invalid(problems) => (
                StatusCode::BAD_REQUEST,
                json!({
                    "error": problems.to_string(),
                    "problems": problems.0.iter().map(|p| json!({"path": p.path, "message": p.message})).collect::<Vec<_>>(),
                }),
            ),
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, json!({"error": message})),
            Self::State(e) => {
                tracing::error!(error = %e, "cannot keep an admin change");
                (StatusCode::INTERNAL_SERVER_ERROR, json!({"error": e.to_string()}))
            }
            Self::NotFound(message) => (StatusCode::NOT_FOUND, json!({"error": message})),
            Self::Conflict(message) => (StatusCode::CONFLICT, json!({"error": message})),
            Self::Start(e @ crate::containers::ContainerError::NoImage { .. }) => (
                StatusCode::BAD_REQUEST,
                json!({"error": e.to_string(), "problems": [{"path": "image", "message": e.to_string()}]}),
            ),
            Self::Start(e) => (StatusCode::UNPROCESSABLE_ENTITY, json!({"error": e.to_string()})),
            Self::Internal(message) => {
                tracing::error!(error = %message, "cannot apply an admin change");
                (StatusCode::INTERNAL_SERVER_ERROR, json!({"error": message}))
            }
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(self, Self::Auth(_)) && status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Nostr"));
        }
        response
    }
}

/// A request signed by an operator, with its body.
struct Signed {
    operator: PublicKey,
    body: Bytes,
}

impl FromRequest<Arc<AppState>> for Signed {
    type Rejection = Refusal;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let method = req.method().as_str().to_string();
        let target = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_string(), |pq| pq.as_str().to_string());
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Unsigned: refused before a byte of the body is read.
        if authorization.is_none() {
            return Err(Refusal::Auth(AuthError::Missing));
        }
        let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| Refusal::TooLarge)?;
        let operator = state
            .admin
            .auth
            .check(
                &method,
                &target,
                authorization.as_deref(),
                &body,
                infernet_identity::unix_now(),
            )
            .map_err(Refusal::Auth)?;
        Ok(Self { operator, body })
    }
}

/// `GET /identity`: a fresh statement signed by the node's key.
pub async fn identity(State(state): State<Arc<AppState>>) -> Response {
    let admin = &state.admin;
    let content = json!({
        "node": admin.identity.npub(),
        "operators": admin.operators(),
        "url": admin.public_url,
        "version": env!("CARGO_PKG_VERSION"),
        "containers": state.containers.load().iter().filter(|c| c.external).map(|c| c.id.as_str()).collect::<Vec<_>>(),
        "pricing": admin.state.get().settings.pricing,
    });
    let signed = statement::sign(&admin.identity, IDENTITY_SUBJECT, &content).expect("JSON values always serialise");
    ([(header::CONTENT_TYPE, "application/json")], signed).into_response()
}

/// What `/admin/status` and the mode changes answer.
fn status_body(state: &AppState, persisted: &Persisted) -> Value {
    let gate = state::gate(persisted, jiff::Timestamp::now());
    let (taking_jobs, reason, available_at) = match gate {
        Ok(()) => (true, None, None),
        Err(closed) => (false, Some(closed.reason), closed.available_at.map(|t| t.to_string())),
    };
    json!({
        "mode": persisted.mode,
        "taking_jobs": taking_jobs,
        "reason": reason,
        "available_at": available_at,
        "node": state.admin.identity.npub(),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// `GET /admin/status`: the mode, and the host's `diagnostics` (see [`diagnostics`]).
async fn status(State(state): State<Arc<AppState>>, signed: Signed) -> Json<Value> {
    tracing::debug!(operator = %npub(&signed.operator), "admin status");
    let mut body = status_body(&state, &state.admin.state.get());
    body["diagnostics"] = diagnostics::diagnostics(&state).await;
    Json(body)
}

async fn set_mode(state: &AppState, signed: &Signed, mode: Mode) -> Result<Json<Value>, Refusal> {
    let persisted = state.admin.state.update(|s| s.mode = mode).map_err(Refusal::State)?;
    tracing::info!(operator = %npub(&signed.operator), ?mode, "operator changed the node's mode");
    Ok(Json(status_body(state, &persisted)))
}

/// `POST /admin/pause`: no new off-chain jobs until resumed.
async fn pause(State(state): State<Arc<AppState>>, signed: Signed) -> Result<Json<Value>, Refusal> {
    set_mode(&state, &signed, Mode::Paused).await
}

/// `POST /admin/resume`.
async fn resume(State(state): State<Arc<AppState>>, signed: Signed) -> Result<Json<Value>, Refusal> {
    set_mode(&state, &signed, Mode::Serving).await
}

/// `POST /admin/drain`: finish running jobs, take no new ones.
async fn drain(State(state): State<Arc<AppState>>, signed: Signed) -> Result<Json<Value>, Refusal> {
    set_mode(&state, &signed, Mode::Draining).await
}

/// `GET /admin/settings`.
async fn settings(State(state): State<Arc<AppState>>, _signed: Signed) -> Json<Settings> {
    Json(state.admin.state.get().settings)
}

/// `PUT /admin/settings`: the whole settings document, checked against this node and its host.
async fn put_settings(State(state): State<Arc<AppState>>, signed: Signed) -> Result<Json<Settings>, Refusal> {
    let text =
        std::str::from_utf8(&signed.body).map_err(|_| Refusal::BadRequest("the body is not UTF-8 text".into()))?;
    let settings = Settings::parse(text).map_err(Refusal::Invalid)?;
    // The host's fixed resources, read once at start (a full sample blocks on disks and NVML).
    let hardware = state.system.hardware();
    let host = Host {
        cpus: hardware.cpus,
        memory_mb: hardware.memory_mb,
        gpus: u32::try_from(hardware.gpus.len()).unwrap_or(u32::MAX),
    };
    let containers = state.containers.load();
    let ids: Vec<&str> = containers.iter().map(|c| c.id.as_str()).collect();
    settings.check(&ids, &host).map_err(Refusal::Invalid)?;
    let _one_at_a_time = state.admin.changes.lock().await;
    let persisted = state
        .admin
        .state
        .update(|s| s.settings = settings)
        .map_err(Refusal::State)?;
    // `max_jobs` applies at once; CPUs, memory and GPUs when the container is next created.
    state.manager.set_limits(&persisted.settings.limits);
    state
        .serve(&state.manager.specs())
        .map_err(|e| Refusal::Internal(e.to_string()))?;
    tracing::info!(operator = %npub(&signed.operator), "operator changed the provider's settings");
    Ok(Json(persisted.settings))
}

/// Most lines one `/admin/logs` answer holds.
const MAX_LOG_LINES: usize = 2000;

/// `GET /admin/logs?since=<RFC 3339 or Unix seconds>&level=<error|warn|info>&limit=<n>`: the
/// node's recent log lines (info and above, newest last), each as the JSON object the log file has.
async fn logs(RawQuery(raw): RawQuery, _signed: Signed) -> Result<Json<Value>, Refusal> {
    let (mut since, mut level, mut limit) = (None, 3, 200);
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "since" => {
                let parsed = value.parse::<jiff::Timestamp>().ok().or_else(|| {
                    value
                        .parse::<i64>()
                        .ok()
                        .and_then(|s| jiff::Timestamp::from_second(s).ok())
                });
                since = Some(parsed.ok_or_else(|| {
                    Refusal::BadRequest(format!("since: {value:?} is not a time (RFC 3339 or Unix seconds)"))
                })?);
            }
            "level" => {
                level = crate::logging::level_rank(&value).ok_or_else(|| {
                    Refusal::BadRequest(format!("level: {value:?} is not error, warn, info or debug"))
                })?;
            }
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LOG_LINES).contains(n))
                    .ok_or_else(|| Refusal::BadRequest(format!("limit: use 1 to {MAX_LOG_LINES}")))?;
            }
            other => {
                return Err(Refusal::BadRequest(format!(
                    "unknown parameter {other:?}: use since, level, limit"
                )));
            }
        }
    }
    let lines: Vec<Value> = crate::logging::recent()
        .read(since, level, limit)
        .into_iter()
        .map(|l| serde_json::from_str(&l.line).unwrap_or(Value::String(l.line)))
        .collect();
    Ok(Json(json!({"lines": lines})))
}

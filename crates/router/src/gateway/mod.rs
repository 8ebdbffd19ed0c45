//! The gateway: a client submits a job once, the router chooses the node ([`crate::choose`]),
//! dispatches it ([`dispatch`]), records it in the database and answers.
//!
//! A job's way through: `POST /api/v1/jobs` → the job's row (`queued`; a repeated
//! `Idempotency-Key` of the same client answers the first job) → claimed by this replica
//! (`running`, attempt 1, leased) → the chooser's order → the first node that accepts (a refusal
//! or a failure moves on to the next, at most `attempts` nodes) → the row names the node and the
//! job's id there → `{"id", "node"}`. The router keeps no inputs or outputs: `GET
//! /api/v1/jobs/{id}` reads the result from the node that ran the job and records how it ended.
//!
//! Clients are known by their NIP-98 signature (`npub:<hex>`) or, unsigned, by their address
//! (`addr:<hash>`, the address itself is not stored). A client reads and cancels only its own
//! jobs. Nodes are told the client as an address derived from that identity (see
//! [`Client::stated`]), so their rate limits apply per client, not to the router.

pub mod callback;
pub mod dispatch;
pub mod pipeline;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{ConnectInfo, Path, RawQuery, State},
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use infernet_identity::{Identity, PublicKey, nip98::Verifier};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::{
    choose::{self, Ask, Candidate, Choice, Record, Requirements},
    db::{
        Db, DbError,
        jobs::{Inserted, Job, JobStatus, Lease, NewJob},
        nodes::NodeSeen,
        now_ms,
    },
    registry::{NodeReport, Registry},
    server::RouterState,
};
use dispatch::{Call, Outcome};

/// Weight of the newest latency in a node's per-container average.
const LATENCY_WEIGHT: f64 = 0.2;
/// Node and container-set pairs whose latency is kept.
const MAX_LATENCY_KEYS: usize = 100_000;

/// How the gateway works.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// The router's key file (made at first start, mode 0600): it signs dispatches.
    pub key_file: PathBuf,
    /// The URL clients reach the router at, as they sign it (`https://router.example`); requests
    /// signed for `http://127.0.0.1:{port}` and `http://localhost:{port}` pass too.
    pub public_url: Option<String>,
    /// The unit prices are compared in (`--price-unit`).
    pub price_unit: String,
    /// Nodes tried per job at most.
    pub attempts: usize,
    /// Time a node has to accept a job (and to answer a result read).
    pub dispatch_timeout: Duration,
    /// Jobs in one batch at most.
    pub max_batch: usize,
    /// Jobs of a batch dispatched at once.
    pub batch_concurrency: usize,
    /// How long a claimed job stays leased to this replica without news.
    pub lease: Duration,
    /// Largest request body.
    pub max_body: usize,
    /// Longest wait between two reads of a watched job's result (callbacks).
    pub callback_poll: Duration,
    /// Attempts to post a callback.
    pub callback_attempts: u32,
    /// Whether callbacks may go to loopback, private and link-local addresses.
    pub callbacks_to_private: bool,
    /// Jobs with callbacks watched at once by this replica.
    pub max_watched: usize,
    /// How long a watched job's node may not answer before the job is failed.
    pub node_gone_after: Duration,
    /// How often jobs whose watcher stopped are looked for.
    pub callback_sweep: Duration,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            key_file: "infernet-router.nsec".into(),
            public_url: None,
            price_unit: "USD".into(),
            attempts: 3,
            dispatch_timeout: Duration::from_secs(10),
            max_batch: 1000,
            batch_concurrency: 32,
            lease: Duration::from_secs(300),
            max_body: 4 << 20,
            callback_poll: Duration::from_secs(5),
            callback_attempts: 6,
            callbacks_to_private: false,
            max_watched: 10_000,
            node_gone_after: Duration::from_secs(600),
            callback_sweep: Duration::from_secs(30),
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The key file.
    #[error("router key {path}: {source}")]
    Key {
        /// Its path.
        path: PathBuf,
        /// Why.
        source: infernet_identity::KeyError,
    },
    /// The records could not be read.
    #[error("{0}")]
    Database(#[from] DbError),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// The gateway's state.
pub struct Gateway {
    db: Db,
    registry: Arc<Registry>,
    http: reqwest::Client,
    identity: Identity,
    settings: GatewaySettings,
    /// Each node's record as measured (loaded from the database, kept in step with it).
    records: RwLock<HashMap<String, Record>>,
    verifier: Verifier,
    /// Origins clients may sign requests for.
    bases: Vec<String>,
    /// This replica's name in leases.
    replica: String,
    /// Latency per node and container set (a moving average, ms), at most [`MAX_LATENCY_KEYS`].
    latency: RwLock<HashMap<(String, String), f64>>,
    /// Free callback watchers.
    watchers: Arc<tokio::sync::Semaphore>,
    /// Queues ledger rows for the batch writer.
    ledger: crate::db::batcher::BatchSender,
    /// Outcomes per node not saved yet: results, failures, sum of measured latencies (ms).
    unsaved: std::sync::Mutex<HashMap<String, (i64, i64, i64)>>,
    /// Posts callbacks (no redirects, a timeout).
    callbacks: reqwest::Client,
}

impl Gateway {
    /// The gateway of a router listening on `port`, and the writer of its ledger rows (run it as a
    /// task: it commits them in batches).
    pub async fn new(
        db: Db,
        registry: Arc<Registry>,
        settings: GatewaySettings,
        port: u16,
    ) -> Result<(Self, crate::db::batcher::BatchWriter), GatewayError> {
        let (identity, created) = Identity::load_or_create(&settings.key_file).map_err(|source| GatewayError::Key {
            path: settings.key_file.clone(),
            source,
        })?;
        if created {
            tracing::info!(key = %settings.key_file.display(), "made the router's key");
        }
        tracing::info!(router = %identity.npub(), "router identity: list it in nodes' network.routers");
        let records = db
            .nodes()
            .await?
            .into_iter()
            .map(|n| {
                let record = Record {
                    jobs_ok: n.jobs_ok.max(0) as u64,
                    jobs_failed: n.jobs_failed.max(0) as u64,
                    latency_ms: (n.jobs_ok > 0).then(|| n.latency_ms_sum as f64 / n.jobs_ok as f64),
                };
                (n.key, record)
            })
            .collect();
        let mut bases: Vec<String> = settings
            .public_url
            .iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        bases.push(format!("http://127.0.0.1:{port}"));
        bases.push(format!("http://localhost:{port}"));
        let (ledger, writer) = crate::db::batcher::batcher(db.clone(), Default::default());
        let gateway = Self {
            ledger,
            db,
            registry,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .connect_timeout(settings.dispatch_timeout)
                .build()?,
            identity,
            records: RwLock::new(records),
            verifier: Verifier::new(60, 100_000),
            bases,
            replica: uuid::Uuid::new_v4().to_string(),
            latency: RwLock::default(),
            unsaved: Default::default(),
            watchers: Arc::new(tokio::sync::Semaphore::new(settings.max_watched.max(1))),
            callbacks: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()?,
            settings,
        };
        Ok((gateway, writer))
    }

    /// The router's public key, `npub1…`.
    pub fn npub(&self) -> String {
        self.identity.npub()
    }

    fn lease(&self) -> Lease<'_> {
        Lease {
            owner: &self.replica,
            now: now_ms(),
            duration: self.settings.lease,
        }
    }

    fn call(&self, node: &str, client: IpAddr) -> Call<'_> {
        Call {
            http: &self.http,
            identity: &self.identity,
            base: format!("http://{node}"),
            client,
            timeout: self.settings.dispatch_timeout,
        }
    }

    /// The job `node_job` of `client` as `node` has it: how it stands and its result.
    pub(crate) async fn read_result(
        &self,
        node: &str,
        node_job: &str,
        client: &str,
    ) -> Result<(JobStatus, Option<infernet_types::ContainerResult>), String> {
        let call = self.call(node, stated(client));
        let path = format!(
            "/api/jobs?id={}",
            form_urlencoded::byte_serialize(node_job.as_bytes()).collect::<String>()
        );
        let response = call.send(reqwest::Method::GET, &path, None).await?;
        let status = response.status();
        let body = dispatch::read(response, self.settings.dispatch_timeout).await?;
        if !status.is_success() {
            return Err(format!("the node answered HTTP {status}"));
        }
        let list: Vec<infernet_types::JobResult> =
            serde_json::from_slice(&body).map_err(|e| format!("the node's answer is not a job result: {e}"))?;
        let result = list
            .into_iter()
            .find(|r| r.id == node_job)
            .ok_or_else(|| "the node no longer has the job (its retention passed?)".to_string())?;
        let status = match result.status {
            infernet_types::JobStatus::Success => JobStatus::Succeeded,
            infernet_types::JobStatus::Failed => JobStatus::Failed,
            infernet_types::JobStatus::Running => JobStatus::Running,
        };
        Ok((status, result.result))
    }

    /// The chooser's answer for `ask` among the available nodes (with `explain`, among every known
    /// node, each exclusion with its reason).
    pub fn choose(&self, ask: &JobAsk, explain: bool) -> Choice {
        let snapshot = self.registry.snapshot();
        let records = self.records.read().expect("records poisoned");
        let latency = self.latency.read().expect("latency poisoned");
        let containers = ask.containers.join("\u{1f}");
        // The latency for these containers where measured, the node's overall one otherwise.
        let record = |node: &str| {
            let mut r = records.get(node).copied().unwrap_or_default();
            if let Some(l) = latency.get(&(node.to_string(), containers.clone())) {
                r.latency_ms = Some(*l);
            }
            r
        };
        let a = ask.as_ask(&self.settings.price_unit);
        let healthy = snapshot.available.iter().map(|n| Candidate {
            node: &n.key,
            healthy: true,
            last_error: None,
            uptime: n.uptime,
            report: &n.report,
            record: record(&n.key),
        });
        if !explain {
            return choose::choose(&a, healthy, false);
        }
        let unhealthy: Vec<(String, Option<String>, NodeReport)> = self
            .registry
            .view(Instant::now())
            .into_iter()
            .filter(|v| !v.available)
            .map(|v| {
                let report = NodeReport {
                    containers: v
                        .containers
                        .iter()
                        .map(|id| crate::registry::ContainerSummary {
                            id: id.clone(),
                            description: String::new(),
                            external: true,
                        })
                        .collect(),
                    ..Default::default()
                };
                (v.address, v.last_error, report)
            })
            .collect();
        let sick = unhealthy.iter().map(|(node, error, report)| Candidate {
            node,
            healthy: false,
            last_error: error.as_deref(),
            uptime: 0.0,
            report,
            record: record(node),
        });
        choose::choose(&a, healthy.chain(sick), true)
    }

    /// Writes the ledger row of `done`, a job that ended on a node: who ran what for whom, how
    /// long (from submission to the end the router saw) and at what price by the node's pricing
    /// as it advertises it now (per job plus per second of that time; none when it prices in
    /// another unit). Accounted, not settled. Queued for the batch writer; a full queue drops the
    /// row with a warning rather than hold the job up.
    fn account(&self, done: &Job) {
        let (Some(node), Some(finished_at)) = (&done.node, done.finished_at) else {
            return;
        };
        let duration_ms = (finished_at - done.created_at).max(0);
        let snapshot = self.registry.snapshot();
        let offer = snapshot
            .available
            .iter()
            .find(|n| &n.key == node)
            .map(|n| &n.report.offer);
        let price = offer.and_then(|offer| {
            done.containers
                .iter()
                .try_fold(0.0, |total, c| match offer.pricing.get(c) {
                    None => Some(total),
                    Some(p) if p.unit == self.settings.price_unit => {
                        Some(total + p.of_job(duration_ms as f64 / 1000.0))
                    }
                    Some(_) => None,
                })
        });
        let row = crate::db::ledger::LedgerRow {
            job_id: done.id.clone(),
            client: done.client.clone(),
            api_key_id: None,
            node: node.clone(),
            operator: None,
            containers: done.containers.clone(),
            started_at: done.created_at,
            finished_at,
            outcome: done.status.as_str().to_string(),
            duration_ms,
            price,
            unit: Some(self.settings.price_unit.clone()),
            receipt: None,
        };
        if let Err(e) = self.ledger.try_send(crate::db::batcher::Record::Ledger(row)) {
            tracing::warn!(job = %done.id, error = %e, "ledger row dropped");
        }
    }

    /// Counts a job's outcome on `node` in its record, here and in the database: a result (with
    /// the latency measured, when it was: streams, watched jobs and pipeline stages; a job read
    /// only when its client asked has none) or a failure. The latency is also kept per container
    /// set, in memory, so that nodes are compared with their peers for the same containers.
    fn record(self: &Arc<Self>, node: &str, containers: &[String], ok: bool, latency_ms: Option<i64>) {
        {
            let mut records = self.records.write().expect("records poisoned");
            let r = records.entry(node.to_string()).or_default();
            if ok {
                if let Some(l) = latency_ms {
                    let timed = r.jobs_ok.max(1) as f64;
                    r.latency_ms = Some(r.latency_ms.map_or(l as f64, |mean| mean + (l as f64 - mean) / timed));
                }
                r.jobs_ok += 1;
            } else {
                r.jobs_failed += 1;
            }
        }
        if let (true, Some(l)) = (ok, latency_ms) {
            let mut by = self.latency.write().expect("latency poisoned");
            let key = (node.to_string(), containers.join("\u{1f}"));
            let full = by.len() >= MAX_LATENCY_KEYS;
            match by.entry(key) {
                std::collections::hash_map::Entry::Occupied(mut mean) => {
                    *mean.get_mut() += LATENCY_WEIGHT * (l as f64 - *mean.get());
                }
                std::collections::hash_map::Entry::Vacant(slot) if !full => {
                    slot.insert(l as f64);
                }
                std::collections::hash_map::Entry::Vacant(_) => {}
            }
        }
        let mut tally = self.unsaved.lock().expect("tally poisoned");
        let t = tally.entry(node.to_string()).or_default();
        if ok {
            t.0 += 1;
            t.2 += latency_ms.unwrap_or(0).max(0);
        } else {
            t.1 += 1;
        }
    }

    /// Every second until `shutdown` (and once more then), adds the outcomes counted since to
    /// the nodes' records in the database: one write per node per second, not one per job. A
    /// crash loses at most the last second's counts.
    pub async fn save_records(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), DbError> {
        loop {
            let stop = tokio::select! {
                () = shutdown.cancelled() => true,
                () = tokio::time::sleep(Duration::from_secs(1)) => false,
            };
            let tally = std::mem::take(&mut *self.unsaved.lock().expect("tally poisoned"));
            for (node, (ok, failed, latency)) in tally {
                let write = async {
                    if !self.db.add_job_outcomes(&node, ok, failed, latency).await? {
                        self.db
                            .upsert_node(&NodeSeen {
                                key: &node,
                                address: &node,
                                operator: None,
                                statement: None,
                                now: now_ms(),
                            })
                            .await?;
                        self.db.add_job_outcomes(&node, ok, failed, latency).await?;
                    }
                    Ok::<_, DbError>(())
                };
                if let Err(e) = write.await {
                    tracing::warn!(%node, error = %e, "could not save a node's record");
                }
            }
            if stop {
                return Ok(());
            }
        }
    }
}

/// Who submits: a signer, or an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Signed with NIP-98.
    Key(PublicKey),
    /// Unsigned, from this address.
    Addr(IpAddr),
}

impl Client {
    /// How jobs are filed: `npub:<hex>` or `addr:<first 16 bytes of SHA-256 of the address, hex>`.
    pub fn id(&self) -> String {
        match self {
            Self::Key(k) => format!("npub:{}", k.to_hex()),
            Self::Addr(ip) => format!("addr:{}", hex::encode(&Sha256::digest(ip.to_string().as_bytes())[..16])),
        }
    }

    /// The address nodes are told for this client: `fd` followed by 15 bytes of the SHA-256 of
    /// [`Client::id`], a unique-local IPv6 address no real client has.
    pub fn stated(&self) -> IpAddr {
        stated(&self.id())
    }
}

/// [`Client::stated`] of a client id.
pub fn stated(id: &str) -> IpAddr {
    let hash = Sha256::digest(id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes[0] = 0xfd;
    bytes[1..].copy_from_slice(&hash[..15]);
    IpAddr::V6(Ipv6Addr::from(bytes))
}

/// An error answer: `{"error": …}` with its status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        tracing::warn!(error = %e, "database");
        Self(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the router's database failed: {e}"),
        )
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// A job as a client asks for it.
#[derive(Debug, Clone)]
pub struct JobAsk {
    /// Its containers, in order.
    pub containers: Vec<String>,
    /// Its input.
    pub data: Value,
    /// Passed on to the node.
    pub requires_proof: bool,
    /// What it needs of the host.
    pub requirements: Requirements,
    /// Most it may cost.
    pub max_price: Option<f64>,
    /// Compute seconds priced.
    pub max_seconds: f64,
    /// Time to find a node that accepts it.
    pub deadline: Option<Duration>,
    /// Where its final result is posted.
    pub callback_url: Option<String>,
}

/// Longest `max_seconds` and `deadline_s` taken: a day.
const MAX_SECONDS: f64 = 86_400.0;

impl JobAsk {
    /// Parses a job body; errors name the field (`at` prefixes it, for batch items).
    pub fn parse(v: &Value, at: &str) -> Result<Self, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("{at}the job must be a JSON object"))?;
        const KNOWN: [&str; 8] = [
            "containers",
            "data",
            "requires_proof",
            "requirements",
            "max_price",
            "max_seconds",
            "deadline_s",
            "callback_url",
        ];
        if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!("{at}{k}: unknown field; known: {}", KNOWN.join(", ")));
        }
        let callback_url = match obj.get("callback_url") {
            None | Some(Value::Null) => None,
            Some(Value::String(u)) => Some(callback::check_url(u, true).map_err(|e| format!("{at}callback_url: {e}"))?),
            Some(_) => return Err(format!("{at}callback_url: must be a URL string")),
        };
        let containers: Vec<String> = match obj.get("containers") {
            Some(Value::Array(items)) if !items.is_empty() && items.len() <= 64 => items
                .iter()
                .enumerate()
                .map(|(i, c)| match c.as_str() {
                    Some(s) if !s.is_empty() && s.len() <= 256 => Ok(s.to_string()),
                    _ => Err(format!(
                        "{at}containers[{i}]: must be a container id (a non-empty string)"
                    )),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(format!("{at}containers: must be a list of 1 to 64 container ids")),
        };
        let number = |name: &str, max: f64| -> Result<Option<f64>, String> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(x) if x.is_finite() && x >= 0.0 && x <= max => Ok(Some(x)),
                    _ => Err(format!("{at}{name}: must be a number from 0 to {max}")),
                },
            }
        };
        let requirements = match obj.get("requirements") {
            None | Some(Value::Null) => Requirements::default(),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("{at}requirements: {e}"))?,
        };
        let max_seconds = number("max_seconds", MAX_SECONDS)?.unwrap_or(60.0);
        let requires_proof = match obj.get("requires_proof") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(format!("{at}requires_proof: must be true or false")),
        };
        Ok(Self {
            containers,
            data: obj.get("data").cloned().unwrap_or_else(|| json!({})),
            requires_proof,
            requirements,
            max_price: number("max_price", f64::MAX)?,
            max_seconds,
            deadline: number("deadline_s", MAX_SECONDS)?.map(Duration::from_secs_f64),
            callback_url,
        })
    }

    fn as_ask<'a>(&'a self, unit: &'a str) -> Ask<'a> {
        Ask {
            containers: &self.containers,
            requirements: &self.requirements,
            max_price: self.max_price,
            max_seconds: self.max_seconds,
            unit,
        }
    }

    /// The body the node takes.
    fn node_body(&self) -> Bytes {
        let mut body = json!({"containers": self.containers, "data": self.data});
        if self.requires_proof {
            body["requires_proof"] = json!(true);
        }
        Bytes::from(body.to_string())
    }
}

/// Who is asking: the NIP-98 signer when the request is signed (401 when the signature does not
/// check out), the address otherwise.
fn client(
    state: &RouterState,
    peer: SocketAddr,
    headers: &HeaderMap,
    method: &str,
    uri: &Uri,
    body: &[u8],
) -> Result<Client, ApiError> {
    let Some(authorization) = headers.get(header::AUTHORIZATION) else {
        return Ok(Client::Addr(infernet_service::client_ip::ClientIp::resolve(
            peer.ip(),
            headers,
            &state.trusted_proxies,
        )));
    };
    let gw = &state.gateway;
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let urls: Vec<String> = gw.bases.iter().map(|b| format!("{b}{path}")).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let received = infernet_identity::nip98::Received {
        method,
        urls: &urls,
        body,
    };
    gw.verifier
        .verify(
            authorization.to_str().ok(),
            &received,
            infernet_identity::unix_now(),
            |_| true,
        )
        .map(Client::Key)
        .map_err(|e| {
            ApiError(
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED),
                e.to_string(),
            )
        })
}

/// A `POST`: its client (as [`client`] finds it, the body's hash checked for a signed one), its
/// headers and its body (at most `max_body` bytes: 413 beyond).
pub struct Posted {
    /// Who sent it.
    pub client: Client,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl axum::extract::FromRequest<Arc<RouterState>> for Posted {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &Arc<RouterState>) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| bad("the client's address is unknown"))?;
        let limit = state.gateway.settings.max_body;
        let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
            ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {limit} bytes, or was cut"),
            )
        })?;
        let client = client(state, peer, &parts.headers, parts.method.as_str(), &parts.uri, &body)?;
        Ok(Self {
            client,
            headers: parts.headers,
            body,
        })
    }
}

/// The client of a request without a body (`GET`, `DELETE`), as [`client`] finds it.
pub struct Caller(pub Client);

impl axum::extract::FromRequestParts<Arc<RouterState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<RouterState>,
    ) -> Result<Self, Self::Rejection> {
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| bad("the client's address is unknown"))?;
        client(state, peer, &parts.headers, parts.method.as_str(), &parts.uri, b"").map(Self)
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= 255 => Ok(Some(k.to_string())),
            _ => Err(bad("Idempotency-Key: must be 1 to 255 visible ASCII characters")),
        },
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))
}

/// Where a new job went.
enum Placed {
    /// To `node`.
    New { job: Job, node: String },
    /// The client's earlier job with the same idempotency key.
    Existing(Job),
}

/// Inserts and claims a job, then dispatches it along `order` (the chooser's, or a batch's plan).
async fn place(
    gw: &Arc<Gateway>,
    client: &Client,
    ask: &JobAsk,
    idempotency_key: Option<&str>,
    plan: Option<(&Choice, Vec<usize>)>,
) -> Result<Placed, ApiError> {
    if let Some(url) = &ask.callback_url {
        callback::check_url(url, gw.settings.callbacks_to_private).map_err(|e| bad(format!("callback_url: {e}")))?;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let client_id = client.id();
    let inserted = gw
        .db
        .insert_job(&NewJob {
            id: &id,
            client: &client_id,
            idempotency_key,
            containers: &ask.containers,
            callback_url: ask.callback_url.as_deref(),
            now: now_ms(),
        })
        .await?;
    let job = match inserted {
        Inserted::Existing(job) => return Ok(Placed::Existing(job)),
        Inserted::Created(job) => job,
    };
    let Some(job) = gw.db.claim_job(&job.id, &gw.lease()).await? else {
        return Err(ApiError(StatusCode::CONFLICT, "the job was claimed elsewhere".into()));
    };
    let owned;
    let (choice, order) = match plan {
        Some(p) => p,
        None => {
            owned = gw.choose(ask, false);
            let order = choose::pick(&owned.candidates, &mut rand::rng());
            (&owned, order)
        }
    };
    if choice.candidates.is_empty() {
        // No node serves the whole list: its stages may still run on several nodes.
        if let Some(stages) = pipeline::plan(gw, ask) {
            return pipeline::start(gw, client, ask, job, stages).await;
        }
        let why = gw.choose(ask, true).why_none(&ask.as_ask(&gw.settings.price_unit));
        fail(gw, &job, &why).await;
        return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, why));
    }
    match dispatch_along(gw, choice, &order, ask.node_body(), client.stated(), ask.deadline).await {
        Ok((node, node_job)) => {
            gw.db
                .set_job_node(&job.id, job.attempt, &node, Some(&node_job), &gw.lease())
                .await?;
            if job.callback_url.is_some() {
                gw.watch(Job {
                    node: Some(node.clone()),
                    node_job: Some(node_job),
                    ..job.clone()
                });
            }
            Ok(Placed::New { job, node })
        }
        Err(e) => {
            fail(gw, &job, &e.1).await;
            Err(e)
        }
    }
}

/// Offers `body` to the candidates of `choice` in `order` (at most `attempts` of them, within
/// `deadline`): the node that accepted it and its id there.
async fn dispatch_along(
    gw: &Arc<Gateway>,
    choice: &Choice,
    order: &[usize],
    body: Bytes,
    stated: IpAddr,
    deadline: Option<Duration>,
) -> Result<(String, String), ApiError> {
    let mut tried = Vec::new();
    let attempts = async {
        for &i in order.iter().take(gw.settings.attempts.max(1)) {
            let node = &choice.candidates[i].node;
            match gw.call(node, stated).submit(body.clone()).await {
                Outcome::Accepted(node_job) => return Ok((node.clone(), node_job)),
                Outcome::Refused(why) => tried.push(format!("{node} refused: {why}")),
                Outcome::Failed(why) => {
                    gw.record(node, &[], false, None);
                    tried.push(format!("{node} failed: {why}"));
                }
                Outcome::Invalid { status, message } => {
                    return Err(ApiError(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                        message,
                    ));
                }
            }
        }
        Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no node accepted the job: {}", tried.join("; ")),
        ))
    };
    match deadline {
        Some(d) => tokio::time::timeout(d, attempts).await.unwrap_or_else(|_| {
            Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no node accepted the job within deadline_s ({d:?})"),
            ))
        }),
        None => attempts.await,
    }
}

async fn fail(gw: &Gateway, job: &Job, why: &str) {
    if let Err(e) = gw
        .db
        .finish_job(&job.id, job.attempt, JobStatus::Failed, Some(why), now_ms())
        .await
    {
        tracing::warn!(job = %job.id, error = %e, "could not record a failed job");
    }
}

fn placed_json(placed: &Placed) -> Value {
    match placed {
        Placed::New { job, node, .. } => json!({"id": job.id, "node": node, "status": "running"}),
        Placed::Existing(job) => json!({"id": job.id, "node": job.node, "status": job.status.as_str()}),
    }
}

/// `POST /api/v1/jobs`.
pub async fn submit(
    State(state): State<Arc<RouterState>>,
    Posted { client, headers, body }: Posted,
) -> Result<Json<Value>, ApiError> {
    let key = idempotency_key(&headers)?;
    let ask = JobAsk::parse(&parse_body(&body)?, "").map_err(bad)?;
    let placed = place(&state.gateway, &client, &ask, key.as_deref(), None).await?;
    Ok(Json(placed_json(&placed)))
}

/// A job of `client`, or 404 (also for another client's job).
async fn own_job(gw: &Gateway, client: &Client, id: &str) -> Result<Job, ApiError> {
    let not_found = || ApiError(StatusCode::NOT_FOUND, format!("no job {id}"));
    if id.len() > 64 {
        return Err(not_found());
    }
    let job = gw.db.job(id).await?.ok_or_else(not_found)?;
    if job.client != client.id() {
        return Err(not_found());
    }
    Ok(job)
}

/// `GET /api/v1/jobs/{id}`: the record, with the result read from the node.
pub async fn job(
    State(state): State<Arc<RouterState>>,
    Caller(client): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let gw = &state.gateway;
    let mut job = own_job(gw, &client, &id).await?;
    let mut answer = json!({"id": job.id, "node": job.node, "status": job.status.as_str(), "result": null});
    if let Some(error) = &job.error {
        answer["error"] = json!(error);
    }
    let (Some(node), Some(node_job)) = (job.node.clone(), job.node_job.clone()) else {
        return Ok(Json(answer));
    };
    if job.status == JobStatus::Cancelled {
        return Ok(Json(answer));
    }
    match gw.read_result(&node, &node_job, &job.client).await {
        Ok((status, result)) => {
            if job.status == JobStatus::Running && status.is_final() {
                let error = (status == JobStatus::Failed).then(|| "the node reports the job failed".to_string());
                if let Some(done) = gw
                    .db
                    .finish_job(&job.id, job.attempt, status, error.as_deref(), now_ms())
                    .await?
                {
                    gw.record(&node, &job.containers, status == JobStatus::Succeeded, None);
                    gw.account(&done);
                    job = done;
                }
            }
            answer["status"] = json!(job.status.as_str());
            answer["result"] = json!(result);
        }
        Err(e) => {
            answer["warning"] = json!(format!("could not read the result from {node}: {e}"));
        }
    }
    Ok(Json(answer))
}

/// `DELETE /api/v1/jobs/{id}`: cancels a job that has not finished; a late answer of the node is
/// dropped.
pub async fn cancel(
    State(state): State<Arc<RouterState>>,
    Caller(client): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let gw = &state.gateway;
    let job = own_job(gw, &client, &id).await?;
    match gw.db.cancel_job(&job.id, now_ms()).await? {
        Some(job) => {
            let mut answer = json!({"id": job.id, "node": job.node, "status": job.status.as_str()});
            // The node is told, so it stops the work; its late answer is not taken either way.
            if let (Some(node), Some(node_job)) = (&job.node, &job.node_job) {
                let path = format!(
                    "/api/jobs/{}",
                    form_urlencoded::byte_serialize(node_job.as_bytes()).collect::<String>()
                );
                let told = match gw
                    .call(node, stated(&job.client))
                    .send(reqwest::Method::DELETE, &path, None)
                    .await
                {
                    Ok(r) if r.status().is_success() => "stopped".to_string(),
                    Ok(r) if r.status() == StatusCode::CONFLICT => "had already ended".to_string(),
                    Ok(r) => format!("answered HTTP {}", r.status()),
                    Err(e) => e,
                };
                answer["node_said"] = json!(told);
            }
            Ok(Json(answer))
        }
        None => Err(ApiError(
            StatusCode::CONFLICT,
            format!("job {id} has already ended ({})", job.status),
        )),
    }
}

/// `POST /api/v1/jobs/batch`: jobs spread over the qualifying nodes in proportion to their
/// scores, answered in input order; one failing item never fails the others.
pub async fn batch(
    State(state): State<Arc<RouterState>>,
    Posted { client, body, .. }: Posted,
) -> Result<Json<Value>, ApiError> {
    let gw = &state.gateway;
    let items = match parse_body(&body)? {
        Value::Array(items) => items,
        _ => return Err(bad("the body must be a list of jobs")),
    };
    if items.len() > gw.settings.max_batch {
        return Err(bad(format!(
            "{} jobs in one batch; at most {} (--max-batch)",
            items.len(),
            gw.settings.max_batch
        )));
    }
    let asks: Vec<Result<JobAsk, String>> = items
        .iter()
        .enumerate()
        .map(|(i, v)| JobAsk::parse(v, &format!("[{i}].")))
        .collect();
    // One plan per kind of job: the chooser once, then each job its node by `spread`.
    let mut plans: HashMap<String, (Choice, std::vec::IntoIter<usize>)> = HashMap::new();
    let mut orders: Vec<Option<(String, Vec<usize>)>> = Vec::with_capacity(asks.len());
    let kind = |a: &JobAsk| json!([a.containers, a.requirements, a.max_price, a.max_seconds]).to_string();
    let counts = asks.iter().flatten().fold(HashMap::new(), |mut m, a| {
        *m.entry(kind(a)).or_insert(0usize) += 1;
        m
    });
    for ask in &asks {
        let Ok(ask) = ask else {
            orders.push(None);
            continue;
        };
        let k = kind(ask);
        let (choice, spread) = plans.entry(k.clone()).or_insert_with(|| {
            let choice = gw.choose(ask, false);
            let spread = choose::spread(&choice.candidates, counts[&k]);
            (choice, spread.into_iter())
        });
        let first = spread.next();
        // The planned node first, then the others best first.
        let order: Vec<usize> = first
            .into_iter()
            .chain((0..choice.candidates.len()).filter(|&i| Some(i) != first))
            .collect();
        orders.push(Some((k, order)));
    }
    let plans = &plans;
    let client = &client;
    let answers: Vec<Value> = futures::stream::iter(asks.into_iter().zip(orders))
        .map(|(ask, order)| async move {
            let ask = match ask {
                Ok(a) => a,
                Err(e) => return json!({"id": null, "node": null, "status": "failed", "error": e}),
            };
            let plan = order.map(|(k, order)| (&plans[&k].0, order));
            match place(gw, client, &ask, None, plan).await {
                Ok(placed) => placed_json(&placed),
                Err(ApiError(_, e)) => json!({"id": null, "node": null, "status": "failed", "error": e}),
            }
        })
        .buffered(gw.settings.batch_concurrency.max(1))
        .collect()
        .await;
    Ok(Json(Value::Array(answers)))
}

/// Longest first line (the node's job id) a node's stream may start with.
const MAX_ID_LINE: usize = 1024;

/// `POST /api/v1/jobs/stream`: the node's stream passed through as it arrives (the first line is
/// the router's job id instead of the node's). A stream that has started is never run again
/// elsewhere: if it breaks, the client sees it end early and the job is recorded failed.
pub async fn stream(
    State(state): State<Arc<RouterState>>,
    Posted { client, body, .. }: Posted,
) -> Result<Response, ApiError> {
    let gw = &state.gateway;
    let ask = JobAsk::parse(&parse_body(&body)?, "").map_err(bad)?;
    if ask.callback_url.is_some() {
        return Err(bad(
            "callback_url: a stream is answered as it runs; submit to /api/v1/jobs for a callback",
        ));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let client_id = client.id();
    let job = match gw
        .db
        .insert_job(&NewJob {
            id: &id,
            client: &client_id,
            idempotency_key: None,
            containers: &ask.containers,
            callback_url: None,
            now: now_ms(),
        })
        .await?
    {
        Inserted::Created(job) | Inserted::Existing(job) => job,
    };
    let Some(job) = gw.db.claim_job(&job.id, &gw.lease()).await? else {
        return Err(ApiError(StatusCode::CONFLICT, "the job was claimed elsewhere".into()));
    };
    let choice = gw.choose(&ask, false);
    if choice.candidates.is_empty() {
        let why = gw.choose(&ask, true).why_none(&ask.as_ask(&gw.settings.price_unit));
        fail(gw, &job, &why).await;
        return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, why));
    }
    let order = choose::pick(&choice.candidates, &mut rand::rng());
    let node_body = ask.node_body();
    let stated = client.stated();
    let mut tried = Vec::new();
    for &i in order.iter().take(gw.settings.attempts.max(1)) {
        let node = choice.candidates[i].node.clone();
        let call = gw.call(&node, stated);
        let response = match call
            .send(reqwest::Method::POST, "/api/jobs/stream", Some(node_body.clone()))
            .await
        {
            Ok(r) => r,
            Err(why) => {
                gw.record(&node, &[], false, None);
                tried.push(format!("{node} failed: {why}"));
                continue;
            }
        };
        let status = response.status();
        if !status.is_success() {
            let text = dispatch::read(response, gw.settings.dispatch_timeout)
                .await
                .unwrap_or_default();
            match dispatch::classify(status.as_u16(), &text) {
                Outcome::Refused(why) => tried.push(format!("{node} refused: {why}")),
                Outcome::Invalid { status, message } => {
                    fail(gw, &job, &message).await;
                    return Err(ApiError(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                        message,
                    ));
                }
                Outcome::Failed(why) | Outcome::Accepted(why) => {
                    gw.record(&node, &[], false, None);
                    tried.push(format!("{node} failed: {why}"));
                }
            }
            continue;
        }
        // The node's id line, then the rest as it comes.
        let mut body = response.bytes_stream();
        let mut head = Vec::new();
        let id_line = tokio::time::timeout(gw.settings.dispatch_timeout, async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| format!("the stream broke: {e}"))?;
                head.extend_from_slice(&chunk);
                if let Some(end) = head.iter().position(|&b| b == b'\n') {
                    let rest = head.split_off(end + 1);
                    let line = String::from_utf8_lossy(&head[..end]).trim().to_string();
                    return Ok((line, rest));
                }
                if head.len() > MAX_ID_LINE {
                    break;
                }
            }
            Err("the node's stream did not start with its job id".to_string())
        })
        .await
        .unwrap_or_else(|_| Err("the node's stream did not start in time".into()));
        let (node_job, rest) = match id_line {
            Ok(x) => x,
            Err(why) => {
                gw.record(&node, &[], false, None);
                tried.push(format!("{node} failed: {why}"));
                continue;
            }
        };
        gw.db
            .set_job_node(&job.id, job.attempt, &node, Some(&node_job), &gw.lease())
            .await?;
        let first = Bytes::from([format!("{}\n", job.id).into_bytes(), rest].concat());
        let started = Instant::now();
        let finish = Finish {
            gw: gw.clone(),
            job: job.clone(),
            node: node.clone(),
            started,
            ok: false,
        };
        let tail = futures::stream::unfold((body, Some(finish)), |(mut body, mut finish)| async move {
            match body.next().await {
                Some(Ok(chunk)) => Some((Ok::<_, std::io::Error>(chunk), (body, finish))),
                Some(Err(e)) => {
                    drop(finish.take());
                    Some((Err(std::io::Error::other(e)), (body, None)))
                }
                None => {
                    if let Some(mut f) = finish.take() {
                        f.ok = true;
                    }
                    None
                }
            }
        });
        let stream = futures::stream::once(async move { Ok(first) }).chain(tail);
        return Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from_stream(stream),
        )
            .into_response());
    }
    let why = format!("no node accepted the job: {}", tried.join("; "));
    fail(gw, &job, &why).await;
    Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, why))
}

/// Records how a stream ended when it is dropped: whole (`ok`), or broken or abandoned.
struct Finish {
    gw: Arc<Gateway>,
    job: Job,
    node: String,
    started: Instant,
    ok: bool,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let (gw, job, node, ok) = (self.gw.clone(), self.job.clone(), self.node.clone(), self.ok);
        let latency = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let (status, error) = match ok {
                true => (JobStatus::Succeeded, None),
                false => (JobStatus::Failed, Some("the stream ended early")),
            };
            match gw.db.finish_job(&job.id, job.attempt, status, error, now_ms()).await {
                Ok(Some(done)) => {
                    gw.record(&node, &job.containers, ok, Some(latency));
                    gw.account(&done);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(job = %job.id, error = %e, "could not record a stream's end"),
            }
        });
    }
}

/// `GET /api/v1/route?container=…`: the chooser's reasoning for a job like the query describes
/// (`requirements` fields, `max_price`, `max_seconds` as query parameters).
pub async fn route(State(state): State<Arc<RouterState>>, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    let mut job = serde_json::Map::new();
    let mut containers = Vec::new();
    let mut requirements = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let number = || {
            v.parse::<f64>()
                .map_err(|_| bad(format!("{k}: must be a number, got {v:?}")))
        };
        match k.as_ref() {
            "container" => containers.push(json!(v)),
            "max_price" | "max_seconds" => {
                job.insert(k.to_string(), json!(number()?));
            }
            "gpus" => {
                let n: u32 = v
                    .parse()
                    .map_err(|_| bad(format!("gpus: must be a whole number, got {v:?}")))?;
                requirements.insert("gpus".into(), json!(n));
            }
            "gpu_memory_gb" | "cpus" | "memory_gb" => {
                requirements.insert(k.to_string(), json!(number()?));
            }
            "gpu_model" => {
                requirements.insert("gpu_model".into(), json!(v));
            }
            other => return Err(bad(format!("{other}: unknown parameter"))),
        }
    }
    job.insert("containers".into(), Value::Array(containers));
    job.insert("requirements".into(), Value::Object(requirements));
    let ask = JobAsk::parse(&Value::Object(job), "").map_err(bad)?;
    let choice = state.gateway.choose(&ask, true);
    let why = choice
        .candidates
        .is_empty()
        .then(|| choice.why_none(&ask.as_ask(&state.gateway.settings.price_unit)));
    Ok(Json(json!({
        "unit": state.gateway.settings.price_unit,
        "candidates": choice.candidates,
        "excluded": choice.excluded,
        "none": why,
    })))
}

/// `GET /api/v1/identity`: the router's key, for nodes' `network.routers`.
pub async fn identity(State(state): State<Arc<RouterState>>) -> Json<Value> {
    Json(json!({"router": state.gateway.npub(), "price_unit": state.gateway.settings.price_unit}))
}

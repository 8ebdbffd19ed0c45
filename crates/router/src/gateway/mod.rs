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

mod ask;
pub mod callback;
pub mod client;
pub mod dispatch;
mod jobs;
pub mod keys;
mod lease;
pub mod pipeline;
mod stream;

pub use ask::JobAsk;
pub use client::{ApiError, Caller, Client, Posted, stated};
pub use jobs::{batch, cancel, identity, job, list, route, submit};
pub use stream::stream;

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use infernet_identity::{Identity, nip98::Verifier};
use tokio_util::sync::CancellationToken;

use crate::{
    choose::{self, Candidate, Choice, Record},
    db::{
        Db, DbError,
        jobs::{Job, JobStatus, Lease},
        nodes::NodeSeen,
        now_ms,
    },
    registry::{NodeReport, Registry, Snapshot, TermsOf},
};
use dispatch::Call;

/// Weight of the newest latency in a node's per-container average.
const LATENCY_WEIGHT: f64 = 0.2;
/// Node and container-set pairs whose latency is kept.
const MAX_LATENCY_KEYS: usize = 100_000;

/// The terms of `snapshot`'s nodes for `containers` in `unit`, in its order: read from the
/// reports on first use and kept with the snapshot (within [`crate::registry::MAX_TERMS`] and
/// [`crate::registry::MAX_TERM_SETS`]).
fn terms(snapshot: &Snapshot, containers: &[String], unit: &str) -> TermsOf {
    let key = (containers.to_vec(), unit.to_string());
    if let Some(terms) = snapshot.terms.lock().expect("terms poisoned").sets.get(&key) {
        return terms.clone();
    }
    // Read outside the lock: other decisions go on meanwhile (two may read the same set).
    let terms: TermsOf = Arc::new(
        snapshot
            .available
            .iter()
            .enumerate()
            .map(|(i, n)| (i as u32, choose::Terms::of(containers, unit, &n.report)))
            .filter(|(_, t)| t.serves)
            .collect(),
    );
    let mut cache = snapshot.terms.lock().expect("terms poisoned");
    // An empty set (nobody serves these containers) costs an entry too.
    let cost = terms.len().max(1);
    let room = cache.entries + cost <= crate::registry::MAX_TERMS && cache.sets.len() < crate::registry::MAX_TERM_SETS;
    if room && !cache.sets.contains_key(&key) {
        cache.entries += cost;
        cache.sets.insert(key, terms.clone());
    }
    terms
}

/// A hash map with a fast hash (foldhash) for the maps looked up per node in every decision;
/// their keys are node names the router's operator lists or nodes registered, not a client's.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The value of `key` in `map`, made (default) when missing. Unlike `entry`, it copies the key
/// only when it is new: these maps are updated with every job.
fn slot<'m, K, Q, V>(map: &'m mut FastMap<K, V>, key: &Q) -> &'m mut V
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: ToOwned<Owned = K> + std::hash::Hash + Eq + ?Sized,
    V: Default,
{
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("just made")
}

/// Latency per container set and node (a moving average, ms), at most [`MAX_LATENCY_KEYS`] pairs:
/// by container set first, so that a decision finds its set once and then each node by name.
#[derive(Debug, Default)]
struct Latencies {
    by: FastMap<Vec<String>, FastMap<String, f64>>,
    pairs: usize,
}

impl Latencies {
    /// The latencies measured for `containers`, by node.
    fn of(&self, containers: &[String]) -> Option<&FastMap<String, f64>> {
        self.by.get(containers)
    }

    /// Adds a latency of `node` for `containers` to its average.
    fn add(&mut self, containers: &[String], node: &str, latency: f64) {
        if let Some(mean) = self.by.get_mut(containers).and_then(|m| m.get_mut(node)) {
            *mean += LATENCY_WEIGHT * (latency - *mean);
            return;
        }
        if self.pairs >= MAX_LATENCY_KEYS {
            return;
        }
        slot(&mut self.by, containers).insert(node.to_string(), latency);
        self.pairs += 1;
    }
}

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
    /// Longest silence of a node in the middle of a stream; past it the stream ends as broken.
    pub stream_idle: Duration,
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
    /// Jobs this replica follows at once (callbacks and pipelines).
    pub max_watched: usize,
    /// How long a watched job's node may not answer before the job is failed.
    pub node_gone_after: Duration,
    /// How long a watched job (a callback's, a pipeline's stage) may run before the router stops
    /// waiting, fails it and tells its node to stop it (default a day): a node that says
    /// "running" for ever must not hold a watcher for ever.
    pub max_running: Duration,
    /// How often jobs whose watcher stopped are looked for.
    pub callback_sweep: Duration,
    /// How long ledger rows are kept (`--ledger-retention-days`, default 400 days: a year and
    /// the month before it, for year-on-year earnings).
    pub ledger_retention: Duration,
    /// Nodes' links to this replica.
    pub link: crate::link::LinkSettings,
    /// Certificate authorities trusted for nodes that serve HTTPS, besides the system's.
    pub node_roots: Vec<reqwest::Certificate>,
    /// How often the counters of nodes' public records (probes, jobs, exclusions) are written
    /// (default 60 s; a crash loses at most this much of them).
    pub samples_flush: Duration,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            key_file: "infernet-router.nsec".into(),
            public_url: None,
            price_unit: "USD".into(),
            attempts: 3,
            dispatch_timeout: Duration::from_secs(10),
            stream_idle: Duration::from_secs(120),
            max_batch: 1000,
            batch_concurrency: 32,
            lease: Duration::from_secs(300),
            max_body: 4 << 20,
            callback_poll: Duration::from_secs(5),
            callback_attempts: 6,
            callbacks_to_private: false,
            max_watched: 10_000,
            node_gone_after: Duration::from_secs(600),
            max_running: Duration::from_secs(86_400),
            callback_sweep: Duration::from_secs(30),
            ledger_retention: Duration::from_secs(400 * 86_400),
            link: Default::default(),
            node_roots: Vec::new(),
            samples_flush: Duration::from_secs(60),
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
    records: RwLock<FastMap<String, Record>>,
    /// Clients' signed requests: replays refused.
    verifier: Verifier,
    /// Peer replicas' calls, apart from clients': strangers signing with fresh keys fill the
    /// clients' replay cache (it answers busy then), and must not stop the replicas' calls.
    replica_verifier: Verifier,
    /// Operators' requests relayed to linked nodes (checked here too: strangers' requests must
    /// not reach the node, where they would spend its admin limit).
    relay_verifier: Verifier,
    /// Origins clients may sign requests for.
    bases: Vec<String>,
    /// This replica's name in leases.
    replica: String,
    /// Latency per container set and node (a moving average, ms).
    latency: RwLock<Latencies>,
    /// Free watchers: jobs this replica follows at once (callbacks, pipelines).
    watchers: Arc<tokio::sync::Semaphore>,
    /// Queues ledger rows for the batch writer.
    ledger: crate::db::batcher::BatchSender,
    /// Writes job rows in group commits.
    jobs: crate::db::job_writer::JobWriter,
    /// Outcomes per node not saved yet: results, failures, sum of measured latencies (ms).
    unsaved: std::sync::Mutex<FastMap<String, (i64, i64, i64)>>,
    /// Posts callbacks (no redirects, a timeout).
    callbacks: reqwest::Client,
    /// Per node and minute counters for nodes' public records.
    samples: Arc<crate::ledger::samples::Samples>,
    /// Nodes linked to this replica: dispatched to over their link.
    links: Arc<crate::link::Links>,
    /// Which replica holds each linked node's link: this one, or a peer that passes calls on.
    holders: Arc<crate::link::Holders>,
    /// Keys shared with nodes, for dispatches with a MAC instead of a signature.
    dispatch_keys: Arc<keys::DispatchKeys>,
    /// Connections to nodes on plain `http`, for streams.
    pools: dispatch::Pools,
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
        let replica = uuid::Uuid::new_v4().to_string();
        let links = Arc::new(crate::link::Links::new(settings.link.clone()));
        let dispatch_keys = Arc::new(keys::DispatchKeys::new(identity.clone()));
        let holders = Arc::new(crate::link::Holders::new(
            db.clone(),
            registry.clone(),
            (links.clone(), dispatch_keys.clone()),
            replica.clone(),
            settings
                .link
                .replica_url
                .clone()
                .unwrap_or_else(|| format!("http://127.0.0.1:{port}")),
            settings.link.replica_refresh,
        ));
        let gateway = Self {
            ledger,
            jobs: crate::db::job_writer::JobWriter::new(db.clone(), Default::default()),
            db,
            registry,
            http: reqwest::Client::builder()
                .tls_certs_merge(settings.node_roots.clone())
                .pool_max_idle_per_host(64)
                .connect_timeout(settings.dispatch_timeout)
                .build()?,
            records: RwLock::new(records),
            verifier: Verifier::new(60, 100_000),
            replica_verifier: Verifier::new(60, 100_000),
            relay_verifier: Verifier::new(60, 100_000),
            bases,
            replica,
            latency: RwLock::default(),
            unsaved: Default::default(),
            samples: Default::default(),
            watchers: Arc::new(tokio::sync::Semaphore::new(settings.max_watched.max(1))),
            callbacks: {
                let builder = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(Duration::from_secs(10));
                match settings.callbacks_to_private {
                    true => builder,
                    false => builder.dns_resolver(Arc::new(callback::PublicOnly)),
                }
                .build()?
            },
            links,
            holders,
            dispatch_keys,
            pools: dispatch::Pools::default(),
            identity,
            settings,
        };
        Ok((gateway, writer))
    }

    /// The router's database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The keys shared with nodes (the prober learns nodes' keys into it).
    pub fn dispatch_keys(&self) -> Arc<keys::DispatchKeys> {
        self.dispatch_keys.clone()
    }

    /// The counters of nodes' public records.
    pub fn samples(&self) -> Arc<crate::ledger::samples::Samples> {
        self.samples.clone()
    }

    /// Where ledger rows and metric samples are queued.
    pub fn batch_sender(&self) -> crate::db::batcher::BatchSender {
        self.ledger.clone()
    }

    /// The registry of nodes.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The gateway's settings.
    pub fn settings(&self) -> &GatewaySettings {
        &self.settings
    }

    /// The writer of job rows (run it as a task: it commits them in groups).
    pub fn job_writer(&self) -> crate::db::job_writer::JobWriter {
        self.jobs.clone()
    }

    /// The router's key.
    pub fn identity(&self) -> &Identity {
        &self.identity
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

    /// Time a node has to answer a dispatch.
    pub fn dispatch_timeout(&self) -> Duration {
        self.settings.dispatch_timeout
    }

    /// The links nodes hold to this replica.
    pub fn links(&self) -> &Arc<crate::link::Links> {
        &self.links
    }

    /// Where each linked node's link is held (here or by a peer replica).
    pub fn holders(&self) -> &Arc<crate::link::Holders> {
        &self.holders
    }

    /// The client dispatches and peer calls go out on.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A dispatch to `node` for `client`: over HTTP, or over its link when it is linked to this
    /// replica or a peer (then signed for `infernet://{npub}`, the address a linked node knows
    /// itself by).
    fn call(&self, node: &str, client: IpAddr) -> Call<'_> {
        let link = self.holders.find(node);
        Call {
            http: &self.http,
            pools: &self.pools,
            identity: &self.identity,
            // A node named by its key has no address: without its link here, no way to it.
            base: match link.is_some() || node.starts_with("npub1") {
                true => format!("infernet://{node}"),
                // As listed or registered: `https://` for nodes that serve TLS.
                false => {
                    let snapshot = self.registry.snapshot();
                    match snapshot.available.binary_search_by(|n| n.key.as_str().cmp(node)) {
                        Ok(i) => snapshot.available[i].url.clone(),
                        Err(_) => format!("http://{node}"),
                    }
                }
            },
            // Keyed by address for a node reached over HTTP, by its key for a linked one.
            shared: self.dispatch_keys.get(node),
            link,
            client,
            timeout: self.settings.dispatch_timeout,
        }
    }

    /// Tells `node` to stop its job `node_job` of `client`: what it said (`stopped`, `had already
    /// ended`, another status, or why it could not be asked).
    pub(crate) async fn stop_on_node(&self, node: &str, node_job: &str, client: &str) -> String {
        let path = format!(
            "/api/jobs/{}",
            form_urlencoded::byte_serialize(node_job.as_bytes()).collect::<String>()
        );
        match self
            .call(node, stated(client))
            .send(reqwest::Method::DELETE, &path, None)
            .await
        {
            Ok(r) if r.status().is_success() => "stopped".to_string(),
            Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => "had already ended".to_string(),
            Ok(r) => format!("answered HTTP {}", r.status()),
            Err(e) => e.to_string(),
        }
    }

    /// The job `node_job` of `client` as `node` has it: how it stands and its result.
    pub(crate) async fn read_result(
        &self,
        node: &str,
        node_job: &str,
        client: &str,
    ) -> Result<(JobStatus, Option<infernet_types::ContainerResult>), dispatch::NodeError> {
        self.read_job(node, node_job, client).await.map(|(s, r, _)| (s, r))
    }

    /// [`Gateway::read_result`], with the node's signed receipt once the job has ended.
    pub(crate) async fn read_job(
        &self,
        node: &str,
        node_job: &str,
        client: &str,
    ) -> Result<(JobStatus, Option<infernet_types::ContainerResult>, Option<String>), dispatch::NodeError> {
        let call = self.call(node, stated(client));
        let path = format!(
            "/api/jobs?id={}",
            form_urlencoded::byte_serialize(node_job.as_bytes()).collect::<String>()
        );
        let response = call.send(reqwest::Method::GET, &path, None).await?;
        let status = response.status();
        let body = dispatch::read(response, self.settings.dispatch_timeout).await?;
        if !status.is_success() {
            return Err(dispatch::NodeError::Status(status.as_u16()));
        }
        let list: Vec<infernet_types::JobResult> =
            serde_json::from_slice(&body).map_err(|e| dispatch::NodeError::NotResult(e.to_string()))?;
        let result = list
            .into_iter()
            .find(|r| r.id == node_job)
            .ok_or(dispatch::NodeError::Gone)?;
        let status = match result.status {
            infernet_types::JobStatus::Success => JobStatus::Succeeded,
            infernet_types::JobStatus::Failed => JobStatus::Failed,
            infernet_types::JobStatus::Running => JobStatus::Running,
        };
        Ok((status, result.result, result.receipt))
    }

    /// The decision for `jobs` jobs of `ask` about to be dispatched: [`Gateway::choose`], counted
    /// in the public record of every node a filter left out ("why am I not getting jobs").
    pub fn decide(&self, ask: &JobAsk, jobs: u64) -> Choice {
        self.choose_counted(ask, false, jobs)
    }

    /// The chooser's answer for `ask` among the available nodes (with `explain`, among every known
    /// node, each exclusion with its reason).
    pub fn choose(&self, ask: &JobAsk, explain: bool) -> Choice {
        self.choose_counted(ask, explain, 0)
    }

    fn choose_counted(&self, ask: &JobAsk, explain: bool, jobs: u64) -> Choice {
        let snapshot = self.registry.snapshot();
        let records = self.records.read().expect("records poisoned");
        let latency = self.latency.read().expect("latency poisoned");
        let measured = latency.of(&ask.containers);
        // The latency for these containers where measured, the node's overall one otherwise.
        let record = |node: &str| {
            let mut r = records.get(node).copied().unwrap_or_default();
            if let Some(l) = measured.and_then(|m| m.get(node)) {
                r.latency_ms = Some(*l);
            }
            r
        };
        let a = ask.as_ask(&self.settings.price_unit);
        let candidate = |i: usize, terms| {
            let n = &snapshot.available[i];
            Candidate {
                node: &n.key,
                healthy: true,
                last_error: None,
                uptime: n.uptime,
                report: &n.report,
                record: record(&n.key),
                terms,
            }
        };
        if !explain {
            // Only the nodes that serve the containers are looked at; the others are counted.
            let serving = terms(&snapshot, &ask.containers, &self.settings.price_unit);
            let nodes = serving.iter().map(|&(i, terms)| candidate(i as usize, Some(terms)));
            let mut choice = choose::choose(&a, nodes, false);
            choice.counts[choose::Filter::Containers as usize] += snapshot.available.len() - serving.len();
            // Counted in the snapshot decided with, at the nodes' positions there.
            for (at, filter) in &mut choice.left_out {
                *at = serving[*at].0 as usize;
                if jobs > 0 {
                    snapshot.available[*at].passed_over.count(*filter, jobs);
                }
            }
            return choice;
        }
        let healthy = (0..snapshot.available.len()).map(|i| candidate(i, None));
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
            terms: None,
            node,
            healthy: false,
            last_error: error.as_deref(),
            uptime: 0.0,
            report,
            record: record(node),
        });
        choose::choose(&a, healthy.chain(sick), true)
    }

    /// The receipt `node` signed for the stream `node_job` of `client`, read from it once the
    /// stream's body has ended: the node stores the stream's result and receipt before it sends
    /// that end. `None` (logged) when the node does not answer with one, as a node outside a
    /// network or an older node does not.
    pub(crate) async fn stream_receipt(&self, node: &str, node_job: &str, client: &str) -> Option<String> {
        match self.read_job(node, node_job, client).await {
            Ok((_, _, receipt)) => receipt,
            Err(e) => {
                tracing::debug!(%node, job = %node_job, error = %e, "no receipt for a stream");
                None
            }
        }
    }

    /// Writes the ledger row of `done` with the node's signed `receipt` ([`crate::ledger::row`]):
    /// who ran what for whom, how long and at what price by the node's pricing as it advertises
    /// it now, or as its receipt states. Accounted, not settled. Queued for the batch writer; a
    /// full queue drops the row with a warning rather than hold the job up.
    pub(crate) fn account_with(&self, done: &Job, receipt: Option<crate::ledger::receipt::Received>) {
        let (Some(node), Some(finished_at)) = (&done.node, done.finished_at) else {
            return;
        };
        let snapshot = self.registry.snapshot();
        // The snapshot's nodes are in address order.
        let pricing = snapshot
            .available
            .binary_search_by(|n| n.key.as_str().cmp(node))
            .ok()
            .map(|i| &snapshot.available[i].report.offer.pricing);
        let identity = self.registry.identity(node);
        let terms = crate::ledger::NodeTerms {
            pricing,
            key: identity
                .as_ref()
                .and_then(|i| infernet_identity::parse_public_key(&i.key).ok()),
            operator: identity
                .as_ref()
                .and_then(|i| i.operators.first())
                .and_then(|o| infernet_identity::parse_public_key(o).ok())
                .map(|k| k.to_hex()),
        };
        let row = crate::ledger::row(done, node, finished_at, &self.settings.price_unit, &terms, receipt);
        if let Err(e) = self.ledger.try_send(crate::db::batcher::Record::Ledger(row)) {
            tracing::warn!(job = %done.id, error = %e, "ledger row dropped");
        }
    }

    /// Counts a job's outcome on `node` in its record, here and in the database: a result (with
    /// the latency measured, when it was: streams, watched jobs and pipeline stages; a job read
    /// only when its client asked has none) or a failure. The latency is also kept per container
    /// set, in memory, so that nodes are compared with their peers for the same containers.
    fn record(self: &Arc<Self>, node: &str, containers: &[String], ok: bool, latency_ms: Option<i64>) {
        self.samples.job(node, ok, latency_ms);
        {
            let mut records = self.records.write().expect("records poisoned");
            let r = slot(&mut records, node);
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
            self.latency
                .write()
                .expect("latency poisoned")
                .add(containers, node, l as f64);
        }
        let mut tally = self.unsaved.lock().expect("tally poisoned");
        let t = slot(&mut tally, node);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A client naming ever new container sets (served by nobody, so each costs one entry) makes
    /// a snapshot keep at most [`crate::registry::MAX_TERM_SETS`] of them; the answers stay right.
    #[test]
    fn a_snapshot_keeps_a_bounded_number_of_container_sets() {
        let snapshot = Snapshot::default();
        for i in 0..crate::registry::MAX_TERM_SETS + 100 {
            assert!(terms(&snapshot, &[format!("c{i}")], "USD").is_empty());
        }
        let cache = snapshot.terms.lock().unwrap();
        assert_eq!(cache.sets.len(), crate::registry::MAX_TERM_SETS);
        assert_eq!(cache.entries, crate::registry::MAX_TERM_SETS);
    }
}

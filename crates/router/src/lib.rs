//! `infernet-router`: tracks Infernet nodes and either tells clients which ones can serve their
//! job (Ritual's API: clients then call the nodes) or runs the job for them (the gateway).
//!
//! - [`address`] — node addresses as operators write them;
//! - [`alerts`] — the alert rules, the engine that evaluates them, webhooks;
//! - [`db`] — the database (SQLite or PostgreSQL): nodes, jobs, the ledger, keys, metrics;
//! - [`registry`] — the node table, with hysteresis;
//! - [`monitor`] — the prober;
//! - [`ranking`] — which nodes `/api/v1/ips` hands out;
//! - [`choose`] — the chooser: which node runs a gateway job (filters, score, pick);
//! - [`gateway`] — jobs submitted to the network: dispatch, results, streams, batches,
//!   pipelines, callbacks, ledger rows;
//! - [`keys`] — API keys the operator issues to clients, and their quotas;
//! - [`ledger`] — ledger rows, node receipts, node records and earnings;
//! - [`link`] — the server end of nodes' links (nodes behind NAT);
//! - [`resources`] — the bounded `/resources` fan-out;
//! - [`server`] — the REST API;
//! - [`ui`] — the control interface: the operator's web app, sessions, fleet data.

pub mod address;
pub mod alerts;
pub mod body;
pub mod choose;
pub mod db;
pub mod front;
pub mod gateway;
pub mod keys;
pub mod ledger;
pub mod link;
pub mod monitor;
pub mod ranking;
pub mod registry;
pub mod resources;
pub mod server;
pub mod ui;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use infernet_service::{
    rate_limit::RateLimiter,
    tasks::{TaskError, TaskManager},
};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    address::NodeAddr,
    monitor::{Monitor, ProbeSettings},
    registry::{Hysteresis, Limits, Registry},
    resources::FanOut,
    server::RouterState,
};

/// Everything the router needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Nodes of the static list.
    pub listed: Vec<NodeAddr>,
    /// Probing.
    pub probe: ProbeSettings,
    /// Hysteresis.
    pub hysteresis: Hysteresis,
    /// Requests per minute per client and route.
    pub requests_per_minute: u64,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Token nodes present to register (registration is off without one).
    pub registration_token: Option<infernet_service::secret::Secret>,
    /// Lifetime of a registration.
    pub registration_ttl: Duration,
    /// Bounds on registrations.
    pub registrations: Limits,
    /// Bounds of the `/api/v1/resources` fan-out.
    pub resources: FanOut,
    /// The database, opened and migrated at start.
    pub database: db::DbSettings,
    /// Connection timeouts and limit of the REST server.
    pub limits: infernet_service::http::Limits,
    /// The gateway.
    pub gateway: gateway::GatewaySettings,
    /// Alerts.
    pub alerts: alerts::AlertSettings,
    /// The listener's certificate chain and key (PEM files): with them it serves HTTPS (and
    /// `wss://` links) itself.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The control interface.
    pub ui: ui::UiSettings,
}

/// How long requests in flight may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

/// A started router.
pub struct RunningRouter {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its database.
    pub db: db::Db,
    tasks: TaskManager,
}

impl RunningRouter {
    /// Asks the router to stop.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.tasks.shutdown_token()
    }

    /// Waits until it stopped; the error names the task that failed.
    pub async fn wait(self) -> Result<(), TaskError> {
        self.tasks.shutdown_token().cancelled().await;
        self.tasks.wait().await;
        self.tasks.failure().map_or(Ok(()), Err)
    }
}

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listener has no local address (the socket is unusable).
    #[error("{0}")]
    Listener(#[source] std::io::Error),
    /// The database could not be opened or migrated.
    #[error("{0}")]
    Database(#[from] db::DbError),
    /// The gateway could not start.
    #[error("{0}")]
    Gateway(#[from] gateway::GatewayError),
    /// An HTTP client (the prober's or the `/resources` fan-out's) could not be built.
    #[error("HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    /// The TLS certificate or key.
    #[error("{0}")]
    Tls(#[from] infernet_service::http::TlsError),
}

/// The URL peers reach a replica listening on `addr` at, when `--replica-url` is not given: the
/// address itself (loopback for an unspecified one, which only a replica on the same host can
/// use; `main` refuses that with PostgreSQL).
fn replica_url(addr: SocketAddr, tls: bool) -> String {
    let mut at = addr;
    if at.ip().is_unspecified() {
        at.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("{}://{at}", if tls { "https" } else { "http" })
}

/// Starts the prober and the server on `listener`.
pub async fn start(settings: Settings, listener: TcpListener) -> Result<RunningRouter, StartError> {
    let addr = listener.local_addr().map_err(StartError::Listener)?;
    let db = db::Db::open(&settings.database).await?;
    let registry = Arc::new(Registry::new(
        settings.listed,
        settings.hysteresis,
        settings.registrations,
    ));
    let monitor = Monitor::trusting(registry.clone(), settings.probe, settings.gateway.node_roots.clone())?;
    let max_body = settings.gateway.max_body;
    let (ui, history) = ui::Ui::new(
        settings.ui,
        settings.gateway.public_url.as_deref(),
        addr.port(),
        db.clone(),
        &settings.gateway.price_unit,
    );
    let mut gateway_settings = settings.gateway;
    if gateway_settings.link.replica_url.is_none() {
        gateway_settings.link.replica_url = Some(replica_url(addr, settings.tls.is_some()));
    }
    let (gateway, ledger_writer) =
        gateway::Gateway::new(db.clone(), registry.clone(), gateway_settings, addr.port()).await?;
    let gateway = Arc::new(gateway);
    let (alerts, deliveries) = alerts::Alerts::new(
        db.clone(),
        registry.clone(),
        settings.alerts,
        gateway.identity().clone(),
    );
    let monitor = monitor.with_alerts(alerts.clone());
    let monitor = monitor
        .with_samples(gateway.samples())
        .with_dispatch_keys(gateway.dispatch_keys());
    let state = Arc::new(RouterState {
        registry,
        limiter: RateLimiter::new(settings.requests_per_minute, Duration::from_secs(60)),
        trusted_proxies: settings.trusted_proxies,
        registration_token: settings.registration_token,
        registration_ttl: settings.registration_ttl,
        client: reqwest::Client::builder().pool_max_idle_per_host(4).build()?,
        resources: settings.resources,
        last_round_micros: monitor.last_round_micros.clone(),
        requests: Default::default(),
        gateway: gateway.clone(),
        alerts: alerts.clone(),
        ui: Arc::new(ui),
    });
    let tasks = TaskManager::new();
    let shutdown = tasks.shutdown_token();
    let monitor_shutdown = shutdown.clone();
    tasks.spawn_critical("monitor", async move {
        monitor.run(monitor_shutdown).await;
        Ok::<_, std::convert::Infallible>(())
    });
    let ledger_shutdown = tasks.shutdown_token();
    tasks.spawn_critical("ledger-writer", async move {
        ledger_writer.run(ledger_shutdown).await;
        Ok::<_, std::convert::Infallible>(())
    });
    let linked = alerts::linked::Poller {
        alerts: alerts.clone(),
        links: gateway.links().clone(),
        probe: settings.probe,
    };
    let linked_shutdown = tasks.shutdown_token();
    tasks.spawn_critical("linked-info", async move {
        linked.run(linked_shutdown).await;
        Ok::<_, std::convert::Infallible>(())
    });
    let alerts_shutdown = tasks.shutdown_token();
    tasks.spawn_critical("alerts", async move {
        alerts.run(alerts_shutdown).await;
        Ok::<_, std::convert::Infallible>(())
    });
    let deliveries_shutdown = tasks.shutdown_token();
    tasks.spawn_critical("alert-deliveries", async move {
        deliveries.run(deliveries_shutdown).await;
        Ok::<_, std::convert::Infallible>(())
    });
    let job_writer = gateway.job_writer();
    let job_writer_shutdown = tasks.shutdown_token();
    tasks.spawn_critical("job-writer", async move {
        job_writer.run(job_writer_shutdown).await;
        Ok::<_, std::convert::Infallible>(())
    });
    let saver = gateway.clone();
    let saver_shutdown = tasks.shutdown_token();
    tasks.spawn_critical("node-records", saver.save_records(saver_shutdown));
    let (samples, samples_to, samples_shutdown) = (gateway.samples(), gateway.batch_sender(), tasks.shutdown_token());
    let (flush_every, samples_registry) = (gateway.settings().samples_flush, state.registry.clone());
    tasks.spawn_critical("metric-samples", async move {
        samples
            .flush(samples_to, samples_registry, flush_every, samples_shutdown)
            .await
    });
    let retention = (gateway.clone(), tasks.shutdown_token());
    tasks.spawn_critical("ledger-retention", async move {
        ledger::retention(retention.0, retention.1).await
    });
    let sweep = gateway.clone();
    let sweep_shutdown = tasks.shutdown_token();
    tasks.spawn_critical("callbacks", sweep.sweep_callbacks(sweep_shutdown));
    let (holders, holders_shutdown) = (gateway.holders().clone(), tasks.shutdown_token());
    tasks.spawn_critical("link-holders", holders.run(holders_shutdown));
    let leases = gateway.clone();
    let leases_shutdown = tasks.shutdown_token();
    tasks.spawn_critical("leases", leases.sweep_leases(leases_shutdown));
    let (settle, settle_shutdown) = (gateway.clone(), tasks.shutdown_token());
    tasks.spawn_critical("linked-jobs", settle.settle_linked_jobs(settle_shutdown));
    let history_db = db.clone();
    let history_shutdown = tasks.shutdown_token();
    tasks.spawn_critical("node-history", async move {
        ui::history::run(history_db, history, history_shutdown).await;
        Ok::<_, std::convert::Infallible>(())
    });
    let front_state = state.clone();
    let app = server::app(state, max_body);
    let limits = settings.limits;
    let tls = match &settings.tls {
        Some((cert, key)) => Some(infernet_service::http::acceptor(cert, key)?),
        None => None,
    };
    tasks.spawn_critical("rest-server", async move {
        let make = |peer| front::Front::new(front_state.clone(), app.clone(), peer);
        match tls {
            Some(acceptor) => {
                infernet_service::http::serve_tls(listener, acceptor, limits, shutdown, DRAIN, make).await
            }
            None => infernet_service::http::serve(listener, limits, shutdown, DRAIN, make).await,
        }
        Ok::<_, std::convert::Infallible>(())
    });
    tracing::info!(%addr, "router serving");
    Ok(RunningRouter { addr, db, tasks })
}

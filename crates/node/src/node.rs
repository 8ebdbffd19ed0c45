//! Wires the components together: store, Container Manager, Orchestrator, Guardian, the chain
//! side (Listener, Processor, Wallet) when enabled, REST server, and runs them until shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    admin::Admin,
    chain::{self, Chain, NodeKey},
    config::ValidConfig,
    containers::{ContainerError, ContainerManager},
    guardian::Guardian,
    orchestrator::{Orchestrator, OrchestratorError},
    server::{self, AppState, ChainInfo, ContainerInfo, rate_limit::RateLimiter},
    stats::{
        metrics::Metrics,
        sender::{self, SenderSettings},
        system::SystemStats,
    },
    store::{self, JobStore, StoreError},
    tasks::TaskManager,
};

/// How long running jobs may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(30);

/// Why the node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The job store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A container could not be started.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// The Orchestrator could not be built.
    #[error(transparent)]
    Orchestrator(#[from] OrchestratorError),
    /// The REST port could not be bound.
    #[error("cannot listen on {addr}: {source} (is another node running? change server.port)")]
    Bind {
        /// Address tried.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The chain could not be reached or is not an Infernet deployment.
    #[error(transparent)]
    Chain(#[from] chain::ChainError),
    /// The node's key or the operator's saved state could not be read.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    /// A critical task failed.
    #[error(transparent)]
    TaskFailed(#[from] infernet_service::tasks::TaskError),
    /// `server.tls` could not be loaded.
    #[error("server.tls: {0}")]
    Tls(#[from] infernet_service::http::TlsError),
    /// The node's own task ended abnormally (panicked).
    #[error("the node's task {0}")]
    Aborted(String),
}

/// A node to start.
pub struct Node {
    config: ValidConfig,
}

/// A started node.
pub struct RunningNode {
    /// The address the REST server listens on.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<Result<(), NodeError>>,
}

impl RunningNode {
    /// Asks the node to stop (as SIGTERM does).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A token cancelled when the node shuts down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the node has stopped.
    pub async fn wait(self) -> Result<(), NodeError> {
        self.done
            .await
            .unwrap_or_else(|e| Err(NodeError::Aborted(e.to_string())))
    }
}

impl Node {
    /// A node for a validated config.
    pub fn new(config: ValidConfig) -> Self {
        Self { config }
    }

    /// Binds the configured address and starts the node.
    pub async fn start(self) -> Result<RunningNode, NodeError> {
        let server = &self.config.config.server;
        let addr = format!("{}:{}", server.bind, server.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| NodeError::Bind { addr, source })?;
        self.start_on(listener).await
    }

    /// Starts the node on an already bound listener (tests bind port 0).
    pub async fn start_on(self, listener: TcpListener) -> Result<RunningNode, NodeError> {
        let addr = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: "listener".into(),
            source,
        })?;
        let store = store::open(&self.config).await?;
        let admin = Arc::new(crate::admin::Admin::open(&self.config, addr.port())?);
        // The containers the operator set through the admin API win over config.json's.
        let config = admin.containers_over(self.config)?;
        let routers = (!config.routers.is_empty()).then(|| {
            crate::admin::auth::OperatorAuth::signed_by(
                config.routers.clone(),
                config.operator.public_url.as_deref(),
                addr.port(),
                &admin.identity().public_key(),
                crate::admin::auth::ROUTER_REPLAY_CAPACITY,
            )
            .sharing_keys(admin.identity())
        });
        tracing::info!(node = %admin.identity().npub(), "node identity");
        tracing::info!(backend = store.backend(), "job store ready");
        // The chain first: a wrong RPC, key or Registry stops the node before any container starts.
        let chain = match config.config.chain.enabled {
            true => Some(chain::connect(&config.config.chain).await?),
            false => None,
        };
        let manager = Arc::new(ContainerManager::new(&config).await?);
        manager.start_all().await?;

        let tls = match &config.config.server.tls {
            Some(tls) => Some(infernet_service::http::acceptor(
                std::path::Path::new(&tls.cert),
                std::path::Path::new(&tls.key),
            )?),
            None => None,
        };
        let tasks = TaskManager::new();
        let state = app_state(&config, store, (admin, routers), chain, manager.clone(), &tasks)?;
        spawn_services(&config, (listener, tls), &state, &manager, &tasks);
        tracing::info!(%addr, containers = config.containers.len(), "node serving");
        let shutdown = tasks.shutdown_token();
        let done = tokio::spawn(shut_down(state, tasks, manager));
        Ok(RunningNode { addr, shutdown, done })
    }
}

/// The Orchestrator, the Guardian and the chain services, gathered into what handlers share.
fn app_state(
    config: &ValidConfig,
    store: Arc<dyn JobStore>,
    (admin, routers): (Arc<Admin>, Option<crate::admin::auth::OperatorAuth>),
    chain: Option<(Chain, NodeKey)>,
    manager: Arc<ContainerManager>,
    tasks: &TaskManager,
) -> Result<Arc<AppState>, NodeError> {
    let metrics = Arc::new(Metrics::new(config.containers.iter().map(|c| c.id.as_str())));
    let mut orchestrator = Orchestrator::new(config, store.clone(), metrics)?;
    if routers.is_some() {
        orchestrator = orchestrator.with_receipts(crate::receipt::Receipts::new(admin.clone()));
    }
    let orchestrator = Arc::new(orchestrator);
    let guardian = Guardian::new(&config.containers, chain.is_some(), config.payment_address().is_some());
    let (chain_info, services) = match chain {
        Some((chain, key)) => {
            let gate: chain::processor::ChainGate = {
                let admin = admin.clone();
                Arc::new(move || crate::admin::state::gate_chain(&admin.state(), jiff::Timestamp::now()))
            };
            let services = chain::start(&chain, key, config, &guardian, orchestrator.clone(), gate, tasks);
            let info = ChainInfo {
                enabled: true,
                chain_id: Some(chain.chain_id),
                coordinator: Some(chain.coordinator.to_checksum(None)),
                address: chain.node_address.to_checksum(None),
            };
            (info, Some(services))
        }
        None => (ChainInfo::default(), None),
    };
    let server = &config.config.server;
    let rate = &server.rate_limit;
    Ok(Arc::new(AppState {
        guardian: ArcSwap::from_pointee(guardian),
        orchestrator,
        store,
        containers: ArcSwap::from_pointee(config.containers.iter().map(ContainerInfo::of).collect()),
        states: manager.states(),
        manager,
        config: config.clone(),
        chain: chain_info,
        delegated: services.as_ref().map(|s| s.delegated.clone()),
        chain_status: services.map(|s| s.status),
        trusted_proxies: config.trusted_proxies.clone(),
        status_sources: config.status_sources.clone(),
        limiter: RateLimiter::new(rate.num_requests, Duration::from_secs_f64(rate.period)),
        refused_dispatches: RateLimiter::new(crate::server::REFUSED_DISPATCHES_PER_MINUTE, Duration::from_secs(60)),
        max_body: usize::try_from(server.max_body_size).unwrap_or(usize::MAX),
        max_batch: usize::try_from(server.max_batch_items).unwrap_or(usize::MAX),
        system: {
            let system = Arc::new(SystemStats::new());
            // Read once now, so that no request waits for it.
            system.hardware();
            system
        },
        routers,
        dashboard: Arc::new(crate::dashboard::Dashboard::new(
            config.operator.sessions,
            admin.secure(),
        )),
        admin,
    }))
}

/// Spawns the REST server, container supervision and (when configured) the metric sender.
fn spawn_services(
    config: &ValidConfig,
    (listener, tls): (TcpListener, Option<tokio_rustls::TlsAcceptor>),
    state: &Arc<AppState>,
    manager: &Arc<ContainerManager>,
    tasks: &TaskManager,
) {
    let shutdown = tasks.shutdown_token();
    let (serve_state, serve_shutdown) = (state.clone(), shutdown.clone());
    let limits = config.config.server.limits();
    tasks.spawn_critical("rest-server", async move {
        server::serve(listener, tls, serve_state, limits, serve_shutdown, DRAIN).await;
        Ok::<_, NodeError>(())
    });
    let supervisor = manager.clone();
    tasks.spawn_critical("container-manager", async move {
        supervisor.supervise(shutdown).await;
        Ok::<_, NodeError>(())
    });
    if let Some(text) = &config.config.network.url {
        match crate::link::LinkUrl::parse(text) {
            Ok(url) => {
                let (link_state, link_shutdown) = (state.clone(), tasks.shutdown_token());
                let ca_file = config.config.network.ca_file.clone();
                tasks.spawn_critical("link", async move {
                    crate::link::run(link_state, url, ca_file, link_shutdown).await;
                    Ok::<_, NodeError>(())
                });
            }
            // Validation refused it already.
            Err(e) => tracing::error!(error = %e, "network.url"),
        }
    }
    let (dashboard_state, dashboard_shutdown) = (state.clone(), tasks.shutdown_token());
    tasks.spawn_critical("dashboard-history", async move {
        crate::dashboard::sample(dashboard_state, dashboard_shutdown).await;
        Ok::<_, NodeError>(())
    });
    let stats = &config.config.stats;
    match (&stats.endpoint, config.config.forward_stats) {
        (Some(endpoint), true) => {
            let settings = SenderSettings {
                endpoint: endpoint.clone(),
                token: stats.token.clone(),
                interval: Duration::from_secs_f64(stats.interval),
                advertise: stats.advertise.clone(),
                port: config.config.server.port,
            };
            let (sender_state, sender_shutdown) = (state.clone(), tasks.shutdown_token());
            tasks.spawn_critical("metric-sender", async move {
                sender::run(sender_state, settings, sender_shutdown).await;
                Ok::<_, NodeError>(())
            });
        }
        (None, true) => tracing::info!("metric sender off: no stats.endpoint configured"),
        (_, false) => tracing::info!("metric sender off: forward_stats is false"),
    }
}

/// Waits for shutdown, then drains running jobs (up to [`DRAIN`]), the tasks and the containers.
async fn shut_down(state: Arc<AppState>, tasks: TaskManager, manager: Arc<ContainerManager>) -> Result<(), NodeError> {
    tasks.shutdown_token().cancelled().await;
    tracing::info!("shutting down: no new jobs, waiting for running ones");
    let jobs = state.orchestrator.jobs();
    jobs.close();
    if tokio::time::timeout(DRAIN, jobs.wait()).await.is_err() {
        tracing::warn!("jobs still running after {DRAIN:?}; stopping anyway");
    }
    tasks.wait().await;
    manager.stop_all().await;
    tracing::info!("shutdown complete");
    match tasks.failure() {
        Some(failure) => Err(NodeError::TaskFailed(failure)),
        None => Ok(()),
    }
}

//! Container Manager: starts the services the node runs itself, waits until they answer, watches
//! them for the node's whole life, and stops them at shutdown.
//!
//! How a service runs is a [`ContainerRuntime`]: [`docker::DockerRuntime`] runs a Docker container
//! on the local engine, [`process::ProcessRuntime`] runs a local program (no Docker needed).
//! Remote (`url`) and unmanaged (`manage_containers: false`) services are only called, never
//! started. State is cached here, so `/info` never asks a runtime (SE-8).

pub mod docker;
pub mod process;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use async_trait::async_trait;
use infernet_service::retry::{RetryPolicy, Sleeper};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{ContainerSpec, Runtime, ValidConfig};

/// What the node knows of a container's service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "detail")]
pub enum ContainerState {
    /// Being started, or restarted after a failure.
    Starting,
    /// Serving.
    Running,
    /// Stopped unexpectedly; the detail says why.
    Failed(String),
    /// Stopped by the node.
    Stopped,
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Starting => f.write_str("starting"),
            Self::Running => f.write_str("running"),
            Self::Failed(why) => write!(f, "failed: {why}"),
            Self::Stopped => f.write_str("stopped"),
        }
    }
}

/// A container failure, reported by container id.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The service could not be started.
    #[error("container {id}: cannot start: {message}")]
    Start {
        /// Container id.
        id: String,
        /// Why.
        message: String,
    },
    /// The service did not answer in time.
    #[error("container {id}: not ready after {waited:?} (port {port}); last output:\n{logs}")]
    NotReady {
        /// Container id.
        id: String,
        /// Port probed.
        port: u16,
        /// How long the node waited.
        waited: Duration,
        /// Last lines the service printed.
        logs: String,
    },
    /// The container engine cannot be used (message says what to do).
    #[error("{0}")]
    Engine(String),
}

/// Runs services of one kind (local processes, Docker containers).
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Starts the service (or adopts one already running with the same settings).
    async fn start(&self, spec: &ContainerSpec) -> Result<(), ContainerError>;
    /// Waits until the service exits on its own and returns why (never returns while it runs).
    async fn wait_exit(&self, id: &str) -> String;
    /// Last lines the service printed (for error reports).
    async fn recent_logs(&self, id: &str) -> String;
    /// Stops the service.
    async fn stop(&self, id: &str);
}

/// Restarts of a service that went down: waits bounded by 0.5 s, doubling up to 30 s, with full
/// jitter, for as long as it takes.
const RESTART: RetryPolicy = RetryPolicy {
    base_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(30),
    max_attempts: u32::MAX,
};
/// A service up this long is considered healthy again: its next failure restarts it quickly.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Cached states, shared with the REST server.
pub type States = Arc<RwLock<crate::FastMap<String, ContainerState>>>;

/// Starts, watches and stops the node's containers.
pub struct ContainerManager {
    specs: Vec<ContainerSpec>,
    startup_wait: Duration,
    process: Arc<process::ProcessRuntime>,
    docker: Option<Arc<docker::DockerRuntime>>,
    states: States,
}

impl ContainerManager {
    /// Plans the containers of a validated config, connecting to Docker if any container needs
    /// it; nothing runs yet.
    pub async fn new(config: &ValidConfig) -> Result<Self, ContainerError> {
        let docker = if config.containers.iter().any(|c| c.runtime == Runtime::Docker) {
            let credentials = config.config.docker.clone();
            Some(Arc::new(docker::DockerRuntime::connect(credentials).await?))
        } else {
            None
        };
        let states = config
            .containers
            .iter()
            .map(|c| {
                let state = match c.runtime {
                    Runtime::Process(_) | Runtime::Docker => ContainerState::Starting,
                    Runtime::Remote | Runtime::Unmanaged => ContainerState::Running,
                };
                (c.id.clone(), state)
            })
            .collect();
        Ok(Self {
            specs: config.containers.clone(),
            startup_wait: Duration::from_secs_f64(config.config.startup_wait),
            process: Arc::new(process::ProcessRuntime::default()),
            docker,
            states: Arc::new(RwLock::new(states)),
        })
    }

    /// The cached container states.
    pub fn states(&self) -> States {
        self.states.clone()
    }

    fn runtime(&self, spec: &ContainerSpec) -> Option<Arc<dyn ContainerRuntime>> {
        match spec.runtime {
            Runtime::Process(_) => Some(self.process.clone()),
            Runtime::Docker => self.docker.clone().map(|d| d as Arc<dyn ContainerRuntime>),
            Runtime::Remote | Runtime::Unmanaged => None,
        }
    }

    fn set_state(&self, id: &str, state: ContainerState) {
        self.states
            .write()
            .expect("container states poisoned")
            .insert(id.to_string(), state);
    }

    /// Starts every managed service and waits until each answers (at most `startup_wait`).
    pub async fn start_all(&self) -> Result<(), ContainerError> {
        let starts = self.specs.iter().filter_map(|spec| {
            let runtime = self.runtime(spec)?;
            Some(async move {
                runtime.start(spec).await?;
                tracing::info!(container = %spec.id, port = spec.port, "container started, waiting until it answers");
                if let Err(e) = wait_ready(spec.port, self.startup_wait).await {
                    let logs = runtime.recent_logs(&spec.id).await;
                    runtime.stop(&spec.id).await;
                    return Err(ContainerError::NotReady {
                        id: spec.id.clone(),
                        port: spec.port,
                        waited: e,
                        logs,
                    });
                }
                self.set_state(&spec.id, ContainerState::Running);
                tracing::info!(container = %spec.id, "container ready");
                Ok(())
            })
        });
        let results = futures::future::join_all(starts).await;
        let mut first_error = None;
        for r in results {
            if let Err(e) = r {
                tracing::error!(error = %e, "container failed to start");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => {
                self.stop_all().await;
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Watches managed services until `shutdown`, restarting any that exits, with backoff.
    pub async fn supervise(self: Arc<Self>, shutdown: CancellationToken) {
        let watchers = self.specs.iter().filter_map(|spec| {
            let runtime = self.runtime(spec)?;
            let shutdown = shutdown.clone();
            let this = self.clone();
            Some(async move {
                let mut backoff = RESTART.backoff(Sleeper::default());
                // When the service was last seen answering (None while it is down).
                let mut up_since = Some(tokio::time::Instant::now());
                loop {
                    let reason = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        reason = runtime.wait_exit(&spec.id) => reason,
                    };
                    // A service that stayed up a while starts over; one that keeps failing (crash
                    // loop, unhealthy) waits longer each time, which also keeps the logs readable.
                    if up_since.take().is_some_and(|t| t.elapsed() >= STABLE_AFTER) {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay().unwrap_or(RESTART.max_delay);
                    let logs = runtime.recent_logs(&spec.id).await;
                    tracing::warn!(container = %spec.id, %reason, %logs, "container down; restarting in {delay:?}");
                    this.set_state(&spec.id, ContainerState::Failed(reason));
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = backoff.sleep(delay) => {}
                    }
                    this.set_state(&spec.id, ContainerState::Starting);
                    let started = match runtime.start(spec).await {
                        Ok(()) => {
                            let ready = wait_ready(spec.port, this.startup_wait.max(Duration::from_secs(1))).await;
                            if ready.is_err() {
                                tracing::warn!(container = %spec.id, "restarted container does not answer; stopping it to try again");
                                // Stopped, it is seen as down again by `wait_exit`.
                                runtime.stop(&spec.id).await;
                            }
                            ready.is_ok()
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "container restart failed");
                            false
                        }
                    };
                    if started {
                        tracing::info!(container = %spec.id, "container back up");
                        this.set_state(&spec.id, ContainerState::Running);
                        up_since = Some(tokio::time::Instant::now());
                    }
                }
            })
        });
        futures::future::join_all(watchers).await;
    }

    /// Stops every managed service.
    pub async fn stop_all(&self) {
        let stops = self.specs.iter().filter_map(|spec| {
            let runtime = self.runtime(spec)?;
            Some(async move {
                runtime.stop(&spec.id).await;
                self.set_state(&spec.id, ContainerState::Stopped);
            })
        });
        futures::future::join_all(stops).await;
    }
}

/// Probes `127.0.0.1:port` until an HTTP server answers there; on timeout returns how long it
/// waited. An accepted connection is not enough: Docker's port proxy accepts connections before
/// the service inside listens.
async fn wait_ready(port: u16, max: Duration) -> Result<(), Duration> {
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(10);
    loop {
        if answers_http(port).await {
            return Ok(());
        }
        if start.elapsed() >= max {
            return Err(start.elapsed());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// Whether an HTTP server answers a request on `127.0.0.1:port` (any status counts).
async fn answers_http(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 5];
        tcp.read_exact(&mut head).await.ok()?;
        Some(&head == b"HTTP/")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Some(true))
    )
}

//! Container Manager: starts the services the node runs itself, waits until they answer, watches
//! them for the node's whole life, and stops them at shutdown.
//!
//! How a service runs is a [`ContainerRuntime`]: [`process::ProcessRuntime`] runs a local program
//! (no Docker needed). Remote (`url`) and unmanaged (`manage_containers: false`) services are only
//! called, never started. State is cached here, so `/info` never asks a runtime (SE-8).

pub mod process;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use async_trait::async_trait;
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
    /// This build cannot run the container.
    #[error("container {id}: {message}")]
    Unsupported {
        /// Container id.
        id: String,
        /// Why and what to do instead.
        message: String,
    },
}

/// Runs services of one kind (local processes, Docker containers).
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Starts the service (or adopts one already running with the same settings).
    async fn start(&self, spec: &ContainerSpec) -> Result<(), ContainerError>;
    /// Waits until the service exits on its own and returns why (never returns while it runs).
    async fn wait_exit(&self, id: &str) -> String;
    /// Last lines the service printed (for error reports).
    fn recent_logs(&self, id: &str) -> String;
    /// Stops the service.
    async fn stop(&self, id: &str);
}

/// Cached states, shared with the REST server.
pub type States = Arc<RwLock<HashMap<String, ContainerState>>>;

/// Starts, watches and stops the node's containers.
pub struct ContainerManager {
    specs: Vec<ContainerSpec>,
    startup_wait: Duration,
    process: Arc<process::ProcessRuntime>,
    states: States,
}

impl ContainerManager {
    /// Plans the containers of a validated config; nothing runs yet.
    pub fn new(config: &ValidConfig) -> Result<Self, ContainerError> {
        for spec in &config.containers {
            if spec.runtime == Runtime::Docker {
                return Err(ContainerError::Unsupported {
                    id: spec.id.clone(),
                    message: format!(
                        "image {} needs the Docker runtime, which this build does not include yet; run the service yourself and set manage_containers: false, or give the container a `process` or `url`",
                        spec.raw.image
                    ),
                });
            }
        }
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
            _ => None,
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
                    let logs = runtime.recent_logs(&spec.id);
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
                let mut backoff = Duration::from_millis(500);
                loop {
                    let reason = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        reason = runtime.wait_exit(&spec.id) => reason,
                    };
                    tracing::warn!(container = %spec.id, %reason, logs = %runtime.recent_logs(&spec.id), "container exited; restarting in {backoff:?}");
                    this.set_state(&spec.id, ContainerState::Failed(reason));
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    this.set_state(&spec.id, ContainerState::Starting);
                    let started = match runtime.start(spec).await {
                        Ok(()) => wait_ready(spec.port, this.startup_wait.max(Duration::from_secs(1))).await.is_ok(),
                        Err(e) => {
                            tracing::warn!(error = %e, "container restart failed");
                            false
                        }
                    };
                    if started {
                        tracing::info!(container = %spec.id, "container back up");
                        this.set_state(&spec.id, ContainerState::Running);
                        backoff = Duration::from_millis(500);
                    } else {
                        backoff = (backoff * 2).min(Duration::from_secs(30));
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

/// Probes `127.0.0.1:port` until it accepts a connection; on timeout returns how long it waited.
async fn wait_ready(port: u16, max: Duration) -> Result<(), Duration> {
    let start = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(10);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if start.elapsed() >= max {
            return Err(start.elapsed());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

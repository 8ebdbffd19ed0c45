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
use futures::StreamExt;
use infernet_service::retry::{RetryPolicy, Sleeper};
use serde::Serialize;
use tokio::sync::mpsc;
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
    /// The image is neither pullable nor present locally.
    #[error(
        "container {id}: image {image} not found: it could not be pulled ({pull}) and is not present locally; check the name, the registry and the `docker` credentials, or build it locally"
    )]
    NoImage {
        /// Container id.
        id: String,
        /// The image asked for.
        image: String,
        /// Why the pull failed.
        pull: String,
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
    /// Stops the service and removes what the node made for it (a Docker container).
    async fn remove(&self, id: &str);
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

/// A watcher's future: one per managed container, polled by [`ContainerManager::supervise`].
type Watcher = futures::future::BoxFuture<'static, ()>;

/// Most containers waiting to be watched (deploys are one at a time, so one would do).
const WATCH_QUEUE: usize = 16;

/// Starts, watches and stops the node's containers; the operator adds and removes them while the
/// node runs ([`ContainerManager::deploy`], [`ContainerManager::withdraw`]).
///
/// ```text
///   start_all ─┐            deploy ─┐ (start, wait until it answers)
///              ▼                    ▼
///   supervise: one watcher per container ── exits? restart with backoff
///              ▲                    │
///   withdraw ──┘ cancel its watcher, stop and remove the container
/// ```
pub struct ContainerManager {
    /// The containers the node runs now.
    specs: std::sync::Mutex<Vec<ContainerSpec>>,
    startup_wait: Duration,
    /// Longest a pull may go without progress.
    pull_idle: Duration,
    process: Arc<process::ProcessRuntime>,
    /// Connected at start when a configured container needs it, else at the first deploy that does.
    docker: tokio::sync::OnceCell<Arc<docker::DockerRuntime>>,
    credentials: Option<crate::config::DockerConfig>,
    states: States,
    /// Each watched container's watcher stops when its token is cancelled.
    watched: std::sync::Mutex<crate::FastMap<String, CancellationToken>>,
    /// Parent of every watcher's token; cancelled at shutdown.
    root: CancellationToken,
    /// Times each container went down and was restarted (or is being restarted).
    restarts: std::sync::Mutex<crate::FastMap<String, u64>>,
    /// Watchers of deployed containers, on their way to [`Self::supervise`].
    queue: (mpsc::Sender<Watcher>, tokio::sync::Mutex<mpsc::Receiver<Watcher>>),
}

impl ContainerManager {
    /// Plans the containers of a validated config, connecting to Docker if any container needs
    /// it; nothing runs yet.
    pub async fn new(config: &ValidConfig) -> Result<Self, ContainerError> {
        let credentials = config.config.docker.clone();
        let pull_idle = Duration::from_secs_f64(config.config.pull_idle_timeout);
        let docker = tokio::sync::OnceCell::new();
        if config.containers.iter().any(|c| c.runtime == Runtime::Docker) {
            let connected = docker::DockerRuntime::connect(credentials.clone())
                .await?
                .with_pull_idle(pull_idle);
            docker.set(Arc::new(connected)).ok();
        }
        let states = config
            .containers
            .iter()
            .map(|c| (c.id.clone(), initial_state(c)))
            .collect();
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        Ok(Self {
            specs: std::sync::Mutex::new(config.containers.clone()),
            startup_wait: Duration::from_secs_f64(config.config.startup_wait),
            pull_idle,
            process: Arc::new(process::ProcessRuntime::default()),
            docker,
            credentials,
            states: Arc::new(RwLock::new(states)),
            watched: std::sync::Mutex::default(),
            root: CancellationToken::new(),
            restarts: std::sync::Mutex::default(),
            queue: (tx, tokio::sync::Mutex::new(rx)),
        })
    }

    /// The cached container states.
    pub fn states(&self) -> States {
        self.states.clone()
    }

    /// Times each container went down since the node started, by container id (containers
    /// that never went down are not listed).
    pub fn restarts(&self) -> Vec<(String, u64)> {
        let restarts = self.restarts.lock().expect("restart counts poisoned");
        let mut counts: Vec<(String, u64)> = restarts.iter().map(|(id, n)| (id.clone(), *n)).collect();
        counts.sort_unstable();
        counts
    }

    /// The containers the node runs now.
    pub fn specs(&self) -> Vec<ContainerSpec> {
        self.specs.lock().expect("container specs poisoned").clone()
    }

    /// Gives the containers their `limits` from the provider's settings (Docker applies them when
    /// it next creates a container).
    pub fn set_limits(&self, limits: &std::collections::BTreeMap<String, infernet_types::settings::Limits>) {
        let mut specs = self.specs.lock().expect("container specs poisoned");
        for spec in specs.iter_mut() {
            spec.limits = limits.get(&spec.id).cloned().unwrap_or_default();
        }
    }

    /// The runtime that runs `spec`, connecting to Docker when it is first needed.
    async fn runtime(&self, spec: &ContainerSpec) -> Result<Option<Arc<dyn ContainerRuntime>>, ContainerError> {
        Ok(match spec.runtime {
            Runtime::Process(_) => Some(self.process.clone()),
            Runtime::Docker => {
                let docker = self
                    .docker
                    .get_or_try_init(|| async {
                        docker::DockerRuntime::connect(self.credentials.clone())
                            .await
                            .map(|d| Arc::new(d.with_pull_idle(self.pull_idle)))
                    })
                    .await?;
                Some(docker.clone())
            }
            Runtime::Remote | Runtime::Unmanaged => None,
        })
    }

    /// The runtime of a container already running (Docker is connected by then).
    fn running_runtime(&self, spec: &ContainerSpec) -> Option<Arc<dyn ContainerRuntime>> {
        match spec.runtime {
            Runtime::Process(_) => Some(self.process.clone()),
            Runtime::Docker => self.docker.get().map(|d| d.clone() as Arc<dyn ContainerRuntime>),
            Runtime::Remote | Runtime::Unmanaged => None,
        }
    }

    fn set_state(&self, id: &str, state: ContainerState) {
        self.states
            .write()
            .expect("container states poisoned")
            .insert(id.to_string(), state);
    }

    /// Starts `spec` on `runtime` and waits until it answers (at most `startup_wait`); one that
    /// does not is stopped again.
    async fn start_ready(&self, runtime: &dyn ContainerRuntime, spec: &ContainerSpec) -> Result<(), ContainerError> {
        runtime.start(spec).await?;
        tracing::info!(container = %spec.id, port = spec.port, "container started, waiting until it answers");
        if let Err(waited) = wait_ready(spec.port, self.startup_wait).await {
            let logs = runtime.recent_logs(&spec.id).await;
            runtime.stop(&spec.id).await;
            return Err(ContainerError::NotReady {
                id: spec.id.clone(),
                port: spec.port,
                waited,
                logs,
            });
        }
        self.set_state(&spec.id, ContainerState::Running);
        tracing::info!(container = %spec.id, "container ready");
        Ok(())
    }

    /// Starts every managed service and waits until each answers (at most `startup_wait`).
    pub async fn start_all(&self) -> Result<(), ContainerError> {
        let specs = self.specs();
        let starts = specs.iter().filter_map(|spec| {
            let runtime = self.running_runtime(spec)?;
            Some(async move { self.start_ready(runtime.as_ref(), spec).await })
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

    /// Runs a new container: pulls its image, starts it, waits until it answers, then watches
    /// it like the configured ones. On failure nothing of it is left running.
    pub async fn deploy(self: &Arc<Self>, spec: ContainerSpec) -> Result<(), ContainerError> {
        self.set_state(&spec.id, initial_state(&spec));
        let started = async {
            if let Some(runtime) = self.runtime(&spec).await? {
                self.start_ready(runtime.as_ref(), &spec).await?;
                let token = self.root.child_token();
                self.watched
                    .lock()
                    .expect("watchers poisoned")
                    .insert(spec.id.clone(), token.clone());
                let watcher = self.clone().watch(runtime, spec.clone(), token);
                // Bounded; `supervise` takes each at once.
                if self.queue.0.send(watcher).await.is_err() {
                    return Err(ContainerError::Engine("the node is shutting down".into()));
                }
            }
            Ok(())
        };
        if let Err(e) = started.await {
            self.states.write().expect("container states poisoned").remove(&spec.id);
            return Err(e);
        }
        self.specs.lock().expect("container specs poisoned").push(spec);
        Ok(())
    }

    /// Stops watching the container `id`, stops it and removes it (a Docker container is
    /// deleted). Returns its spec, if the node ran it.
    pub async fn withdraw(&self, id: &str) -> Option<ContainerSpec> {
        let spec = {
            let mut specs = self.specs.lock().expect("container specs poisoned");
            let at = specs.iter().position(|s| s.id == id)?;
            specs.remove(at)
        };
        if let Some(token) = self.watched.lock().expect("watchers poisoned").remove(id) {
            token.cancel();
        }
        if let Some(runtime) = self.running_runtime(&spec) {
            runtime.remove(id).await;
        }
        self.states.write().expect("container states poisoned").remove(id);
        self.restarts.lock().expect("restart counts poisoned").remove(id);
        tracing::info!(container = %id, "container withdrawn");
        Some(spec)
    }

    /// Watches managed services until `shutdown`, restarting any that exits, with backoff; also
    /// watches those deployed later.
    pub async fn supervise(self: Arc<Self>, shutdown: CancellationToken) {
        let mut watchers: futures::stream::FuturesUnordered<Watcher> = self
            .specs()
            .into_iter()
            .filter_map(|spec| {
                let runtime = self.running_runtime(&spec)?;
                let token = self.root.child_token();
                self.watched
                    .lock()
                    .expect("watchers poisoned")
                    .insert(spec.id.clone(), token.clone());
                Some(self.clone().watch(runtime, spec, token))
            })
            .collect();
        let mut queue = self.queue.1.lock().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(watcher) = queue.recv() => watchers.push(watcher),
                Some(()) = watchers.next(), if !watchers.is_empty() => {}
            }
        }
        self.root.cancel();
    }

    /// Restarts `spec` whenever it exits, until `stop` is cancelled.
    fn watch(
        self: Arc<Self>,
        runtime: Arc<dyn ContainerRuntime>,
        spec: ContainerSpec,
        stop: CancellationToken,
    ) -> Watcher {
        Box::pin(async move {
            let mut backoff = RESTART.backoff(Sleeper::default());
            // When the service was last seen answering (None while it is down).
            let mut up_since = Some(tokio::time::Instant::now());
            loop {
                let reason = tokio::select! {
                    _ = stop.cancelled() => return,
                    reason = runtime.wait_exit(&spec.id) => reason,
                };
                // A service that stayed up a while starts over; one that keeps failing (crash
                // loop, unhealthy) waits longer each time, which also keeps the logs readable.
                if up_since.take().is_some_and(|t| t.elapsed() >= STABLE_AFTER) {
                    backoff.reset();
                }
                let delay = backoff.next_delay().unwrap_or(RESTART.max_delay);
                *self
                    .restarts
                    .lock()
                    .expect("restart counts poisoned")
                    .entry(spec.id.clone())
                    .or_default() += 1;
                let logs = runtime.recent_logs(&spec.id).await;
                tracing::warn!(container = %spec.id, %reason, %logs, "container down; restarting in {delay:?}");
                self.set_state(&spec.id, ContainerState::Failed(reason));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = backoff.sleep(delay) => {}
                }
                self.set_state(&spec.id, ContainerState::Starting);
                let started = match runtime.start(&spec).await {
                    Ok(()) => {
                        let ready = wait_ready(spec.port, self.startup_wait.max(Duration::from_secs(1))).await;
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
                    self.set_state(&spec.id, ContainerState::Running);
                    up_since = Some(tokio::time::Instant::now());
                }
            }
        })
    }

    /// Stops every managed service.
    pub async fn stop_all(&self) {
        let specs = self.specs();
        let stops = specs.iter().filter_map(|spec| {
            let runtime = self.running_runtime(spec)?;
            Some(async move {
                runtime.stop(&spec.id).await;
                self.set_state(&spec.id, ContainerState::Stopped);
            })
        });
        futures::future::join_all(stops).await;
    }
}

/// What the node knows of a container before it has started it.
fn initial_state(spec: &ContainerSpec) -> ContainerState {
    match spec.runtime {
        Runtime::Process(_) | Runtime::Docker => ContainerState::Starting,
        Runtime::Remote | Runtime::Unmanaged => ContainerState::Running,
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

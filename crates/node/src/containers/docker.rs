//! The `docker` runtime: runs a container's service on the local Docker engine through `bollard`.
//!
//! The container is named after the config `id` (as Ritual's node does) and labelled
//! [`LABEL_NODE`] plus [`LABEL_HASH`], a hash of everything the config decides (image and the
//! image id it resolved to, command, env, volumes, port, bind address, GPU, the provider's
//! limits). An existing container is reused only when that hash still matches; otherwise it is
//! recreated (SE-6/7). The limits (`limits.<id>` of the admin settings) become its host config:
//! `cpus` as NanoCpus, `memory_mb` as Memory, `gpus` as an NVIDIA device request for a count or
//! for device ids. The service's port 3000 is published on `127.0.0.1:{port}` only, so nobody can
//! bypass the Guardian by calling it directly (SE-51). Registry credentials from `docker` are sent
//! as real credentials (SE-5). The node supervises the container itself, so no Docker restart policy is set.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use bollard::{
    API_DEFAULT_VERSION, Docker,
    auth::DockerCredentials,
    errors::Error as DockerError,
    models::{ContainerCreateBody, ContainerStateStatusEnum, DeviceRequest, HealthStatusEnum, HostConfig, PortBinding},
    query_parameters::{
        CreateContainerOptionsBuilder, CreateImageOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
        StopContainerOptionsBuilder,
    },
};
use futures::StreamExt;
use infernet_types::settings::Gpus;
use serde_json::json;
use tokio::sync::Mutex;

use super::{ContainerError, ContainerRuntime, process::env_value};
use crate::config::{ContainerSpec, DockerConfig};

/// Label on every container the node creates.
pub const LABEL_NODE: &str = "infernet.node";
/// Label holding the hash of the config a container was created from.
pub const LABEL_HASH: &str = "infernet.config-hash";
/// Host address managed containers' ports are published on.
pub const BIND: &str = "127.0.0.1";
/// The port a managed service listens on inside its container.
const CONTAINER_PORT: &str = "3000/tcp";
/// Lines of container output kept for error reports.
const LOG_LINES: &str = "40";
/// Seconds a container gets to stop after SIGTERM before it is killed.
const STOP_GRACE: i32 = 10;
/// How often a running container's health is checked.
const HEALTH_POLL: Duration = Duration::from_secs(2);
/// How often pull progress is logged at INFO.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Docker Hub's address for credentials.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// Runs services as Docker containers.
pub struct DockerRuntime {
    /// For short calls (the client's default 120 s timeout).
    api: Docker,
    /// For pulls and waits, which last as long as they need.
    streams: Docker,
    credentials: Option<DockerConfig>,
    /// Longest a pull may go without progress (`pull_idle_timeout`).
    pull_idle: Duration,
    /// Per image: pulled yet? (Restarts do not pull again; different images pull in parallel.)
    pulled: std::sync::Mutex<HashMap<String, Arc<Mutex<bool>>>>,
}

/// Where the engine is expected, for error messages.
fn engine_address() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 404, .. })
}

/// The server's message of an engine error, without bollard's wrapping.
fn message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// `image` with `:latest` added when it names neither a tag nor a digest (the engine would
/// otherwise pull every tag).
fn with_tag(image: &str) -> String {
    let name = image.rsplit('/').next().unwrap_or(image);
    if name.contains(':') || name.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// The registry an image comes from, as Docker names it for credentials.
fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first.to_string(),
        _ => DOCKER_HUB.to_string(),
    }
}

/// What went wrong in a step of this runtime; [`DockerRuntime`] wraps it in a [`ContainerError`]
/// naming the container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StepError {
    /// `command` opens a `'` it never closes.
    #[error("unterminated single quote")]
    UnterminatedSingleQuote,
    /// `command` opens a `"` it never closes.
    #[error("unterminated double quote")]
    UnterminatedDoubleQuote,
    /// `command` ends in a lone `\`.
    #[error("trailing backslash")]
    TrailingBackslash,
    /// The engine or the registry failed the pull (their message).
    #[error("{0}")]
    Pull(String),
}

/// Splits a command line as a POSIX shell does (quotes and backslashes; no expansion), the way
/// Ritual's node passes `command` to Docker.
pub(crate) fn shell_split(line: &str) -> Result<Vec<String>, StepError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(StepError::UnterminatedSingleQuote),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(StepError::UnterminatedDoubleQuote),
                        },
                        Some(c) => word.push(c),
                        None => return Err(StepError::UnterminatedDoubleQuote),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => word.push(c),
                    None => return Err(StepError::TrailingBackslash),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// 64-bit FNV-1a: stable across Rust versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What the config decides about a container, ready to create it.
struct Desired {
    body: ContainerCreateBody,
    hash: String,
}

fn desired(spec: &ContainerSpec, image_id: &str) -> Result<Desired, ContainerError> {
    let raw = &spec.raw;
    let cmd = shell_split(&raw.command).map_err(|e| ContainerError::Start {
        id: spec.id.clone(),
        message: format!("command {:?}: {e}", raw.command),
    })?;
    let mut env: Vec<String> = raw.env.iter().map(|(k, v)| format!("{k}={}", env_value(v))).collect();
    env.sort();
    let hash = fnv1a(
        json!({
            "image": raw.image, "image_id": image_id, "cmd": cmd, "env": env,
            "volumes": raw.volumes, "port": spec.port, "bind": BIND, "gpu": raw.gpu,
            "limits": spec.limits,
        })
        .to_string()
        .as_bytes(),
    );
    let hash = format!("{hash:016x}");
    let host_config = HostConfig {
        port_bindings: Some(HashMap::from([(
            CONTAINER_PORT.to_string(),
            Some(vec![PortBinding {
                host_ip: Some(BIND.into()),
                host_port: Some(spec.port.to_string()),
            }]),
        )])),
        binds: (!raw.volumes.is_empty()).then(|| raw.volumes.clone()),
        nano_cpus: spec.limits.cpus.map(|cpus| (cpus * 1e9).round() as i64),
        memory: spec
            .limits
            .memory_mb
            .map(|mb| i64::try_from(mb.saturating_mul(1 << 20)).unwrap_or(i64::MAX)),
        device_requests: gpu_request(spec),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(raw.image.clone()),
        cmd: (!cmd.is_empty()).then_some(cmd),
        env: Some(env),
        exposed_ports: Some(vec![CONTAINER_PORT.into()]),
        labels: Some(HashMap::from([
            (LABEL_NODE.to_string(), "1".to_string()),
            (LABEL_HASH.to_string(), hash.clone()),
        ])),
        host_config: Some(host_config),
        ..Default::default()
    };
    Ok(Desired { body, hash })
}

/// The GPUs `spec` gets: those its limits name (a count or device ids), else all of them with
/// `gpu: true`, else none.
fn gpu_request(spec: &ContainerSpec) -> Option<Vec<DeviceRequest>> {
    let nvidia = |count, device_ids| DeviceRequest {
        driver: Some("nvidia".into()),
        count,
        device_ids,
        capabilities: Some(vec![vec!["gpu".into()]]),
        ..Default::default()
    };
    match &spec.limits.gpus {
        Some(Gpus::Count(n)) => Some(vec![nvidia(Some(i64::from(*n)), None)]),
        Some(Gpus::Devices(ids)) => Some(vec![nvidia(None, Some(ids.iter().map(u32::to_string).collect()))]),
        None => spec.raw.gpu.then(|| vec![nvidia(Some(-1), None)]),
    }
}

/// What `GET /admin/status` says of the Docker engine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineStatus {
    /// Where the node looks for it (`DOCKER_HOST` or the default socket).
    pub address: String,
    /// It answered.
    pub reachable: bool,
    /// Its version, when it answered.
    pub version: Option<String>,
    /// It has the NVIDIA runtime, which GPU device requests need.
    pub nvidia_runtime: bool,
    /// Why it could not be asked.
    pub error: Option<String>,
}

/// How long the status waits for the engine.
const STATUS_WAIT: Duration = Duration::from_secs(3);

/// Asks the engine the node uses whether it runs, and with which runtimes.
pub async fn engine_status() -> EngineStatus {
    engine_status_at(&engine_address()).await
}

/// [`engine_status`] of the engine at `address`.
pub async fn engine_status_at(address: &str) -> EngineStatus {
    let down = |error: String| EngineStatus {
        address: address.to_string(),
        reachable: false,
        version: None,
        nvidia_runtime: false,
        error: Some(format!(
            "{error}; start dockerd, or set DOCKER_HOST to where it listens"
        )),
    };
    let docker = if address.starts_with("unix://") {
        Docker::connect_with_unix(address, STATUS_WAIT.as_secs(), API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_http(address, STATUS_WAIT.as_secs(), API_DEFAULT_VERSION)
    };
    let docker = match docker {
        Ok(docker) => docker,
        Err(e) => return down(message(&e)),
    };
    match tokio::time::timeout(STATUS_WAIT, docker.info()).await {
        Ok(Ok(info)) => EngineStatus {
            address: address.to_string(),
            reachable: true,
            version: info.server_version,
            nvidia_runtime: info.runtimes.is_some_and(|r| r.contains_key("nvidia")),
            error: None,
        },
        Ok(Err(e)) => down(message(&e)),
        Err(_) => down(format!("no answer within {STATUS_WAIT:?}")),
    }
}

impl DockerRuntime {
    /// Connects to the local engine (`DOCKER_HOST` or `/var/run/docker.sock`) and agrees on an API
    /// version with it.
    pub async fn connect(credentials: Option<DockerConfig>) -> Result<Self, ContainerError> {
        Self::connect_to(&engine_address(), credentials).await
    }

    /// Abandons a pull after `idle` without progress (default 300 s).
    pub fn with_pull_idle(self, idle: Duration) -> Self {
        Self {
            pull_idle: idle,
            ..self
        }
    }

    /// Connects to the engine at `address` (`unix://…`, `tcp://…` or `http://…`).
    pub async fn connect_to(address: &str, credentials: Option<DockerConfig>) -> Result<Self, ContainerError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            ContainerError::Engine(format!(
                "cannot reach Docker at {address}: {e}; start dockerd or set manage_containers: false"
            ))
        };
        let docker = if address.starts_with("unix://") {
            Docker::connect_with_unix(address, 120, API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_http(address, 120, API_DEFAULT_VERSION)
        }
        .map_err(|e| unreachable(&e))?;
        let docker = match tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version()).await {
            Ok(Ok(docker)) => docker,
            Ok(Err(e)) => return Err(unreachable(&e)),
            Err(_) => return Err(unreachable(&"no answer within 10 s")),
        };
        docker.ping().await.map_err(|e| unreachable(&e))?;
        tracing::info!(engine = %address, api = %docker.client_version(), "connected to Docker");
        Ok(Self {
            streams: docker.clone().with_timeout(Duration::from_secs(365 * 24 * 3600)),
            api: docker,
            credentials,
            pull_idle: Duration::from_secs(300),
            pulled: std::sync::Mutex::default(),
        })
    }

    /// Pulls `image` (once per node run), logging progress; falls back to a local copy when the
    /// pull fails. Returns the local image id.
    async fn ensure_image(&self, id: &str, image: &str) -> Result<String, ContainerError> {
        let once = self
            .pulled
            .lock()
            .expect("pull table poisoned")
            .entry(image.to_string())
            .or_default()
            .clone();
        let mut pulled = once.lock().await;
        let mut pull_error = None;
        if !*pulled {
            match self.pull(image).await {
                Ok(()) => *pulled = true,
                Err(e) => {
                    tracing::warn!(container = %id, %image, error = %e, "pull failed; trying a local copy");
                    // With a local copy, restarts do not retry the pull.
                    *pulled = self.api.inspect_image(image).await.is_ok();
                    pull_error = Some(e.to_string());
                }
            }
        }
        drop(pulled);
        match self.api.inspect_image(image).await {
            Ok(found) => Ok(found.id.unwrap_or_default()),
            Err(e) if is_not_found(&e) => Err(ContainerError::NoImage {
                id: id.to_string(),
                image: image.to_string(),
                pull: pull_error.unwrap_or_else(|| "pulled earlier in this run".into()),
            }),
            Err(e) => Err(ContainerError::Start {
                id: id.to_string(),
                message: format!("cannot inspect image {image}: {}", message(&e)),
            }),
        }
    }

    async fn pull(&self, image: &str) -> Result<(), StepError> {
        let reference = with_tag(image);
        let credentials = self.credentials.as_ref().map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.expose().to_string()),
            serveraddress: Some(registry_of(image)),
            ..Default::default()
        });
        let options = CreateImageOptionsBuilder::new().from_image(&reference).build();
        tracing::info!(image = %reference, "pulling image, this may take a while");
        let mut progress = self.streams.create_image(Some(options), None, credentials);
        let mut last_report = tokio::time::Instant::now();
        let idle = self.pull_idle;
        // Dropping the stream closes the request, and the engine cancels the pull.
        let stalled = || {
            StepError::Pull(format!(
                "no progress from the registry for {} s; the pull was abandoned (pull_idle_timeout)",
                idle.as_secs_f64()
            ))
        };
        while let Some(item) = tokio::time::timeout(idle, progress.next())
            .await
            .map_err(|_| stalled())?
        {
            let info = item.map_err(|e| StepError::Pull(message(&e)))?;
            if let Some(detail) = info.error_detail {
                return Err(StepError::Pull(detail.message.unwrap_or_else(|| "pull failed".into())));
            }
            let status = info.status.unwrap_or_default();
            let layer = info.id.unwrap_or_default();
            let progress = match info.progress_detail {
                Some(d) => format!(
                    "{}/{} bytes",
                    d.current.unwrap_or_default(),
                    d.total.unwrap_or_default()
                ),
                None => String::new(),
            };
            tracing::debug!(image = %reference, %layer, %status, %progress, "pull progress");
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = tokio::time::Instant::now();
                tracing::info!(image = %reference, %layer, %status, %progress, "still pulling");
            }
        }
        tracing::info!(image = %reference, "image pulled");
        Ok(())
    }

    /// Creates the container of `spec` (its image pulled or found locally) without starting it:
    /// how its host config (limits, GPUs) can be checked on a host that could not run it.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<(), ContainerError> {
        let image_id = self.ensure_image(&spec.id, &spec.raw.image).await?;
        self.create_only(spec, desired(spec, &image_id)?).await
    }

    async fn create_only(&self, spec: &ContainerSpec, desired: Desired) -> Result<(), ContainerError> {
        let options = CreateContainerOptionsBuilder::new().name(&spec.id).build();
        self.api
            .create_container(Some(options), desired.body)
            .await
            .map_err(|e| start_error(spec, &e))?;
        Ok(())
    }

    async fn create_and_start(&self, spec: &ContainerSpec, desired: Desired) -> Result<(), ContainerError> {
        self.create_only(spec, desired).await?;
        if let Err(e) = self.api.start_container(&spec.id, None).await {
            self.delete(&spec.id).await;
            return Err(start_error(spec, &e));
        }
        tracing::info!(container = %spec.id, port = spec.port, image = %spec.raw.image, "started new container");
        Ok(())
    }

    async fn delete(&self, id: &str) {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        if let Err(e) = self.api.remove_container(id, Some(options)).await
            && !is_not_found(&e)
        {
            tracing::warn!(container = %id, error = %message(&e), "cannot remove container");
        }
    }

    async fn wait_stopped(&self, id: &str) -> String {
        let mut wait = self.streams.wait_container(id, None);
        match wait.next().await {
            Some(Ok(exit)) => format!("container exited with status {}", exit.status_code),
            Some(Err(DockerError::DockerContainerWaitError { code, error })) if error.is_empty() => {
                format!("container exited with status {code}")
            }
            Some(Err(DockerError::DockerContainerWaitError { code, error })) => {
                format!("container exited with status {code}: {error}")
            }
            Some(Err(e)) if is_not_found(&e) => "container was removed".into(),
            Some(Err(e)) => format!("lost track of the container: {}", message(&e)),
            None => "container wait ended without a status".into(),
        }
    }

    /// Returns once the container's own HEALTHCHECK reports it unhealthy (then stops it).
    async fn wait_unhealthy(&self, id: &str) -> String {
        loop {
            tokio::time::sleep(HEALTH_POLL).await;
            let Ok(inspect) = self.api.inspect_container(id, None).await else {
                continue; // `wait_stopped` reports a vanished container
            };
            let health = inspect.state.and_then(|s| s.health);
            if let Some(health) = health
                && health.status == Some(HealthStatusEnum::UNHEALTHY)
            {
                let streak = health.failing_streak.unwrap_or_default();
                self.stop(id).await;
                return format!("container unhealthy (its health check failed {streak} times in a row)");
            }
        }
    }
}

/// A start failure with what to do about it.
fn start_error(spec: &ContainerSpec, e: &DockerError) -> ContainerError {
    let why = message(e);
    let message = if spec.raw.gpu && (why.contains("device driver") || why.contains("nvidia")) {
        format!(
            "gpu is true but this Docker engine has no GPU runtime ({why}); install the NVIDIA Container Toolkit and restart dockerd, or set gpu: false"
        )
    } else if why.contains("port is already allocated") || why.contains("address already in use") {
        format!(
            "port {} on {BIND} is taken ({why}); pick another containers[].port",
            spec.port
        )
    } else {
        why
    };
    ContainerError::Start {
        id: spec.id.clone(),
        message,
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn start(&self, spec: &ContainerSpec) -> Result<(), ContainerError> {
        let image_id = self.ensure_image(&spec.id, &spec.raw.image).await?;
        let desired = desired(spec, &image_id)?;
        match self.api.inspect_container(&spec.id, None).await {
            Ok(existing) => {
                let hash = existing
                    .config
                    .and_then(|c| c.labels)
                    .and_then(|mut l| l.remove(LABEL_HASH));
                if hash.as_deref() == Some(desired.hash.as_str()) {
                    let running = existing.state.and_then(|s| s.status) == Some(ContainerStateStatusEnum::RUNNING);
                    if !running {
                        self.api
                            .start_container(&spec.id, None)
                            .await
                            .map_err(|e| start_error(spec, &e))?;
                    }
                    tracing::info!(container = %spec.id, port = spec.port, was_running = running, "reusing existing container (config unchanged)");
                    return Ok(());
                }
                tracing::info!(
                    container = %spec.id,
                    created_by_node = hash.is_some(),
                    "existing container does not match the config; recreating it"
                );
                self.delete(&spec.id).await;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(ContainerError::Start {
                    id: spec.id.clone(),
                    message: format!("cannot inspect existing container: {}", message(&e)),
                });
            }
        }
        self.create_and_start(spec, desired).await
    }

    async fn wait_exit(&self, id: &str) -> String {
        tokio::select! {
            reason = self.wait_stopped(id) => reason,
            reason = self.wait_unhealthy(id) => reason,
        }
    }

    async fn recent_logs(&self, id: &str) -> String {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(LOG_LINES)
            .build();
        let lines = self.api.logs(id, Some(options)).collect::<Vec<_>>();
        match tokio::time::timeout(Duration::from_secs(5), lines).await {
            Ok(chunks) => chunks
                .into_iter()
                .filter_map(Result::ok)
                .map(|chunk| String::from_utf8_lossy(&chunk.into_bytes()).into_owned())
                .collect::<String>()
                .trim_end()
                .to_string(),
            Err(_) => "(logs unavailable: Docker did not answer within 5 s)".into(),
        }
    }

    async fn stop(&self, id: &str) {
        let options = StopContainerOptionsBuilder::new().t(STOP_GRACE).build();
        match self.api.stop_container(id, Some(options)).await {
            Ok(()) => tracing::info!(container = %id, "container stopped"),
            Err(DockerError::DockerResponseServerError {
                status_code: 304 | 404, ..
            }) => {}
            Err(e) => tracing::warn!(container = %id, error = %message(&e), "cannot stop container"),
        }
    }

    async fn remove(&self, id: &str) {
        self.stop(id).await;
        self.delete(id).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_engine_says_what_to_do() {
        let Err(e) = DockerRuntime::connect_to("unix:///nonexistent/docker.sock", None).await else {
            panic!("connected to a socket that does not exist");
        };
        let e = e.to_string();
        assert!(
            e.starts_with("cannot reach Docker at unix:///nonexistent/docker.sock: "),
            "{e}"
        );
        assert!(e.ends_with("start dockerd or set manage_containers: false"), "{e}");
    }

    #[tokio::test]
    async fn a_missing_engine_is_reported_not_reachable() {
        let status = engine_status_at("unix:///nonexistent/docker.sock").await;
        assert!(!status.reachable && !status.nvidia_runtime);
        assert!(status.error.unwrap().contains("start dockerd"));
    }

    #[test]
    fn commands_split_like_a_shell() {
        assert_eq!(shell_split("").unwrap(), Vec::<String>::new());
        assert_eq!(
            shell_split(r#"--model 'my model' --say "a \"b\"" x\ y"#).unwrap(),
            ["--model", "my model", "--say", r#"a "b""#, "x y"]
        );
        assert_eq!(shell_split("''").unwrap(), [""]);
        assert!(shell_split("'open").is_err());
    }

    #[test]
    fn untagged_images_pull_latest_only() {
        assert_eq!(
            with_tag("ritualnetwork/hello-world-infernet"),
            "ritualnetwork/hello-world-infernet:latest"
        );
        assert_eq!(with_tag("localhost:5000/svc"), "localhost:5000/svc:latest");
        assert_eq!(with_tag("localhost:5000/svc:1.0"), "localhost:5000/svc:1.0");
        assert_eq!(with_tag("svc@sha256:abc"), "svc@sha256:abc");
    }

    #[test]
    fn credentials_go_to_the_image_registry() {
        assert_eq!(registry_of("ritualnetwork/svc:1"), DOCKER_HUB);
        assert_eq!(registry_of("svc"), DOCKER_HUB);
        assert_eq!(registry_of("ghcr.io/org/svc"), "ghcr.io");
        assert_eq!(registry_of("localhost:5000/svc"), "localhost:5000");
    }
}

//! Node configuration: the Ritual 1.4 `config.json` schema with its defaults, plus our extensions.
//!
//! Loading is two steps: [`load`] parses the JSON (lax about numbers written as strings, like
//! Ritual's node; unknown keys are warned about with their path), then [`validate`] checks every
//! cross-field rule and reports all problems at once, each with its path and a fix.

mod lax;
mod validate;

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use validate::{ConfigProblem, ContainerSpec, Runtime, ValidConfig, ValidOperator, validate};

pub use infernet_service::secret::Secret;

/// `Debug` as the serialized form, so that URLs and env values are redacted there too.
macro_rules! debug_as_serialized {
    ($($ty:ty),*) => {$(
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let shown = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
                write!(f, "{} {shown}", stringify!($ty))
            }
        }
    )*};
}
debug_as_serialized!(ContainerConfig, ChainConfig, StatsConfig);

/// How `infernet-node check` (and anything else serializing the config) shows values that may
/// hold secrets.
mod redact {
    use infernet_service::secret::SensitiveUrl;
    use serde::{Serialize, Serializer, ser::SerializeMap};
    use serde_json::{Map, Value};

    /// A URL as `scheme://host[:port]`, with `/…` when anything was left out.
    pub(super) fn url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
        match SensitiveUrl::parse(url) {
            Ok(url) => url.serialize(s),
            Err(_) if url.is_empty() => s.serialize_str(""),
            Err(_) => s.serialize_str("<invalid URL>"),
        }
    }

    /// An optional URL, as [`url`].
    pub(super) fn opt_url<S: Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => url(value, s),
            None => s.serialize_none(),
        }
    }

    /// Environment variables: their names, each with a redacted value.
    pub(super) fn env<S: Serializer>(env: &Map<String, Value>, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(env.len()))?;
        for key in env.keys() {
            map.serialize_entry(key, "<redacted>")?;
        }
        map.end()
    }
}

/// The whole `config.json`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Config {
    /// Containers (services) this node serves.
    #[serde(default)]
    pub containers: Vec<ContainerConfig>,
    /// Chain settings; the chain side is off unless `enabled`.
    #[serde(default)]
    pub chain: ChainConfig,
    /// Registry credentials for pulling private images.
    #[serde(default)]
    pub docker: Option<DockerConfig>,
    /// Send node statistics to `stats.endpoint` (nothing is sent when no endpoint is set).
    #[serde(default = "yes", deserialize_with = "lax::bool")]
    pub forward_stats: bool,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Start and stop the containers (true) or call services the operator runs (false).
    #[serde(default = "yes", deserialize_with = "lax::bool")]
    pub manage_containers: bool,
    /// Redis job store; when absent, the embedded store (`store`) is used.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// REST server.
    #[serde(default)]
    pub server: ServerConfig,
    /// Longest time to wait for managed containers to answer before serving (seconds).
    #[serde(default = "default_startup_wait", deserialize_with = "lax::f64")]
    pub startup_wait: f64,
    /// Embedded job store (used when there is no `redis` section).
    #[serde(default)]
    pub store: StoreConfig,
    /// Where the metric sender sends heartbeats (extension; with `forward_stats`).
    #[serde(default)]
    pub stats: StatsConfig,
    /// Who may manage this node through the signed admin API, and the node's own key (extension).
    #[serde(default)]
    pub operator: OperatorConfig,
}

fn yes() -> bool {
    true
}
fn default_startup_wait() -> f64 {
    5.0
}

/// One container (`containers[]`).
#[derive(Clone, Deserialize, Serialize)]
pub struct ContainerConfig {
    /// Container id: routing key, Docker container name and on-chain id component.
    pub id: String,
    /// Docker image (required when managed by Docker).
    #[serde(default)]
    pub image: String,
    /// Base URL of a remote service; a container with a `url` is called there and never managed.
    /// It may carry credentials or a token in its query (shown redacted).
    #[serde(default, serialize_with = "redact::url")]
    pub url: String,
    /// Bearer token sent to the service (`Authorization: Bearer …`).
    #[serde(default)]
    pub bearer: Secret,
    /// Host port of the service (managed: published port; unmanaged: where it listens).
    #[serde(default, deserialize_with = "lax::opt_u16")]
    pub port: Option<u16>,
    /// May be the first container of a pipeline (reachable by clients).
    #[serde(default = "yes", deserialize_with = "lax::bool")]
    pub external: bool,
    /// Give the container all GPUs.
    #[serde(default, deserialize_with = "lax::bool")]
    pub gpu: bool,
    /// Token address → minimum payment (on-chain and delegated jobs).
    #[serde(default)]
    pub accepted_payments: BTreeMap<String, Value>,
    /// Client IPs/CIDRs allowed to send off-chain jobs (empty: everyone).
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// Subscription owners allowed on chain (empty: everyone).
    #[serde(default)]
    pub allowed_addresses: Vec<String>,
    /// Subscription owners allowed for delegated subscriptions (empty: everyone).
    #[serde(default)]
    pub allowed_delegate_addresses: Vec<String>,
    /// Shown in `/info`.
    #[serde(default)]
    pub description: String,
    /// Container command (shell-split, as Docker does).
    #[serde(default)]
    pub command: String,
    /// Container environment (values shown redacted: they often are tokens).
    #[serde(default, serialize_with = "redact::env")]
    pub env: Map<String, Value>,
    /// The last container of a pipeline can produce proofs.
    #[serde(default, deserialize_with = "lax::bool")]
    pub generates_proofs: bool,
    /// Docker-style bind mounts (`host:container[:mode]`).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Run the service as a local process instead of a Docker container (extension).
    #[serde(default)]
    pub process: Option<ProcessConfig>,
    /// Timeout of one call to this container, in seconds (extension; Ritual: 180).
    #[serde(default = "default_call_timeout", deserialize_with = "lax::f64")]
    pub timeout: f64,
    /// Most bytes one call to this container may answer, streamed or not (extension); past it the
    /// job fails and the connection is dropped.
    #[serde(default = "default_max_output", deserialize_with = "lax::u64")]
    pub max_output_size: u64,
}

fn default_call_timeout() -> f64 {
    180.0
}
fn default_max_output() -> u64 {
    32 << 20
}

/// A service run as a local process by the node (the `process` container runtime).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ProcessConfig {
    /// Program to run: a path, or a name looked up next to `infernet-node` and then in `PATH`.
    pub program: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `chain`.
#[derive(Clone, Deserialize, Serialize)]
pub struct ChainConfig {
    /// Serve on-chain and delegated subscriptions.
    #[serde(default, deserialize_with = "lax::bool")]
    pub enabled: bool,
    /// JSON-RPC endpoint (shown as `scheme://host[:port]`: paths and queries often hold API keys).
    #[serde(default, serialize_with = "redact::opt_url")]
    pub rpc_url: Option<String>,
    /// How many blocks to stay behind head.
    #[serde(default = "one", deserialize_with = "lax::u64")]
    pub trail_head_blocks: u64,
    /// Address of the Infernet `Registry`.
    #[serde(default)]
    pub registry_address: Option<String>,
    /// The node's wallet.
    #[serde(default)]
    pub wallet: Option<WalletConfig>,
    /// Subscription sync.
    #[serde(default)]
    pub snapshot_sync: SnapshotSyncConfig,
}

fn one() -> u64 {
    1
}

impl Default for ChainConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            rpc_url: None,
            trail_head_blocks: 1,
            registry_address: None,
            wallet: None,
            snapshot_sync: SnapshotSyncConfig::default(),
        }
    }
}

/// `chain.wallet`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WalletConfig {
    /// Gas cap of any transaction.
    #[serde(default = "default_max_gas", deserialize_with = "lax::u64")]
    pub max_gas_limit: u64,
    /// The node's private key (hex, with or without `0x`).
    #[serde(default)]
    pub private_key: Option<Secret>,
    /// Infernet `Wallet` that receives payments.
    #[serde(default)]
    pub payment_address: Option<String>,
    /// Simulation errors that do not stop a delivery.
    #[serde(default)]
    pub allowed_sim_errors: Vec<String>,
}

fn default_max_gas() -> u64 {
    5_000_000
}

/// `chain.snapshot_sync`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SnapshotSyncConfig {
    /// Pause between batches (seconds).
    #[serde(default = "default_sync_sleep", deserialize_with = "lax::f64")]
    pub sleep: f64,
    /// Subscriptions per batch.
    #[serde(default = "default_batch", deserialize_with = "lax::u64")]
    pub batch_size: u64,
    /// First subscription id to sync.
    #[serde(default, deserialize_with = "lax::u64")]
    pub starting_sub_id: u64,
    /// Period of the follow loop (seconds).
    #[serde(default = "default_sync_period", deserialize_with = "lax::f64")]
    pub sync_period: f64,
}

fn default_sync_sleep() -> f64 {
    1.0
}
fn default_batch() -> u64 {
    500
}
fn default_sync_period() -> f64 {
    0.5
}

impl Default for SnapshotSyncConfig {
    fn default() -> Self {
        Self {
            sleep: 1.0,
            batch_size: 500,
            starting_sub_id: 0,
            sync_period: 0.5,
        }
    }
}

/// `docker`: registry credentials.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DockerConfig {
    /// Registry user.
    pub username: String,
    /// Registry password or token.
    pub password: Secret,
}

/// `redis`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RedisConfig {
    /// Host name.
    #[serde(default = "default_redis_host")]
    pub host: String,
    /// Port.
    #[serde(default = "default_redis_port", deserialize_with = "lax::u16")]
    pub port: u16,
}

fn default_redis_host() -> String {
    "redis".into()
}
fn default_redis_port() -> u16 {
    6379
}

/// `log`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LogConfig {
    /// Log file.
    #[serde(default = "default_log_path")]
    pub path: String,
    /// Rotate the file at this size (bytes).
    #[serde(default = "default_log_size", deserialize_with = "lax::u64")]
    pub max_file_size: u64,
    /// Rotated files kept.
    #[serde(default = "default_backups", deserialize_with = "lax::u64")]
    pub backup_count: u64,
}

fn default_log_path() -> String {
    "infernet_node.log".into()
}
fn default_log_size() -> u64 {
    1 << 30
}
fn default_backups() -> u64 {
    2
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            path: default_log_path(),
            max_file_size: default_log_size(),
            backup_count: default_backups(),
        }
    }
}

/// `server`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerConfig {
    /// REST port.
    #[serde(default = "default_server_port", deserialize_with = "lax::u16")]
    pub port: u16,
    /// Address to listen on (extension; default all interfaces, like Ritual's node).
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Per-client rate limit.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Proxies (IPs/CIDRs) whose `X-Forwarded-For` is believed (extension; default none).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Largest request body accepted, in bytes (extension).
    #[serde(default = "default_max_body", deserialize_with = "lax::u64")]
    pub max_body_size: u64,
    /// Most jobs in one `POST /api/jobs/batch` (extension).
    #[serde(default = "default_max_batch", deserialize_with = "lax::u64")]
    pub max_batch_items: u64,
    /// Longest time from the first byte of a request head to its end, in seconds (extension).
    #[serde(default = "default_header_timeout", deserialize_with = "lax::f64")]
    pub header_timeout: f64,
    /// Longest time from a request head to the end of its body, in seconds (extension).
    #[serde(default = "default_body_timeout", deserialize_with = "lax::f64")]
    pub body_timeout: f64,
    /// Longest time a connection stays open without a request, in seconds (extension).
    #[serde(default = "default_idle_timeout", deserialize_with = "lax::f64")]
    pub idle_timeout: f64,
    /// Most connections open at once; at the limit the longest-idle one is closed (extension).
    #[serde(default = "default_max_connections", deserialize_with = "lax::u64")]
    pub max_connections: u64,
}

impl ServerConfig {
    /// The connection limits these settings describe (validated: every value in range).
    pub fn limits(&self) -> infernet_service::http::Limits {
        let seconds = |s: f64| std::time::Duration::from_secs_f64(s.clamp(0.001, validate::MAX_SECONDS));
        infernet_service::http::Limits {
            header_read: seconds(self.header_timeout),
            body_read: seconds(self.body_timeout),
            idle: seconds(self.idle_timeout),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX).max(1),
        }
    }
}

fn default_server_port() -> u16 {
    4000
}
fn default_bind() -> String {
    "0.0.0.0".into()
}
fn default_max_body() -> u64 {
    16 << 20
}
fn default_max_batch() -> u64 {
    1000
}
fn default_header_timeout() -> f64 {
    10.0
}
fn default_body_timeout() -> f64 {
    30.0
}
fn default_idle_timeout() -> f64 {
    60.0
}
fn default_max_connections() -> u64 {
    10_000
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            port: default_server_port(),
            bind: default_bind(),
            rate_limit: RateLimitConfig::default(),
            trusted_proxies: Vec::new(),
            max_body_size: default_max_body(),
            max_batch_items: default_max_batch(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

/// `server.rate_limit`: `num_requests` per `period` seconds, per client and route.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RateLimitConfig {
    /// Requests allowed per period.
    #[serde(default = "sixty", deserialize_with = "lax::u64")]
    pub num_requests: u64,
    /// Period in seconds.
    #[serde(default = "sixty_f", deserialize_with = "lax::f64")]
    pub period: f64,
}

fn sixty() -> u64 {
    60
}
fn sixty_f() -> f64 {
    60.0
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            num_requests: 60,
            period: 60.0,
        }
    }
}

/// `store` (extension): the embedded job store and result lifetimes.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StoreConfig {
    /// File of the embedded store.
    #[serde(default = "default_store_path")]
    pub path: String,
    /// Seconds a finished result is kept (0: until evicted).
    #[serde(default = "default_result_ttl", deserialize_with = "lax::u64")]
    pub result_ttl: u64,
    /// Seconds a running job stays visible without finishing (Ritual: 900).
    #[serde(default = "default_pending_ttl", deserialize_with = "lax::u64")]
    pub pending_ttl: u64,
    /// Most jobs kept by the embedded store; the least recently used are evicted past it.
    #[serde(default = "default_max_jobs", deserialize_with = "lax::u64")]
    pub max_jobs: u64,
    /// Most jobs whose records are held in memory while the store does not take writes (Redis
    /// down, a full disk); written once it does.
    #[serde(default = "default_max_held_writes", deserialize_with = "lax::u64")]
    pub max_held_writes: u64,
    /// Longest wait, in seconds, between retries of held writes.
    #[serde(default = "default_retry_max_delay", deserialize_with = "lax::f64")]
    pub retry_max_delay: f64,
    /// Largest job result stored, in bytes (Redis or embedded): a larger off-chain result fails
    /// the job, a longer stream is stored cut to it and marked truncated.
    #[serde(default = "default_max_result", deserialize_with = "lax::u64")]
    pub max_result_size: u64,
}

fn default_max_result() -> u64 {
    4 << 20
}

/// `operator` (extension): the operators' keys, the node's own key and the URL operators reach it at.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct OperatorConfig {
    /// Operators' Nostr public keys (`npub1…` or 64 hex) allowed to sign admin requests; none: the
    /// admin API refuses everyone.
    #[serde(default)]
    pub pubkeys: Vec<String>,
    /// The node's own key file (made at first start, mode 0600); default `infernet-node.nsec` beside
    /// the embedded store's file.
    #[serde(default)]
    pub node_key: Option<String>,
    /// The URL operators reach the node at, as they sign it (`https://node.example:4000`); needed
    /// behind a proxy. Requests signed for `http://127.0.0.1:{port}` or `http://localhost:{port}`
    /// are accepted too.
    #[serde(default)]
    pub public_url: Option<String>,
}

/// `stats` (extension): the metric sender's heartbeat, e.g. to a router's registration endpoint.
/// It carries the node's address, containers, load and job counters: never job data, results or
/// client addresses.
#[derive(Clone, Deserialize, Serialize)]
pub struct StatsConfig {
    /// URL to POST heartbeats to (`http://router:4100/api/v1/register`); none: nothing is sent.
    #[serde(default, serialize_with = "redact::opt_url")]
    pub endpoint: Option<String>,
    /// Bearer token for the endpoint.
    #[serde(default)]
    pub token: Secret,
    /// Seconds between heartbeats.
    #[serde(default = "default_stats_interval", deserialize_with = "lax::f64")]
    pub interval: f64,
    /// Address clients should use for this node (`host:port` or URL); default: the address the
    /// endpoint sees the heartbeat come from, with `server.port`.
    #[serde(default)]
    pub advertise: Option<String>,
}

fn default_stats_interval() -> f64 {
    60.0
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            token: Secret::default(),
            interval: default_stats_interval(),
            advertise: None,
        }
    }
}

/// Default file of the embedded store.
pub const DEFAULT_STORE_PATH: &str = "infernet-jobs.db";
/// Where earlier builds kept it by default (converted and moved on first use).
pub const LEGACY_STORE_PATH: &str = "infernet-jobs.redb";

fn default_store_path() -> String {
    DEFAULT_STORE_PATH.into()
}
fn default_result_ttl() -> u64 {
    7 * 24 * 3600
}
fn default_pending_ttl() -> u64 {
    900
}
fn default_max_jobs() -> u64 {
    100_000
}

fn default_max_held_writes() -> u64 {
    10_000
}

fn default_retry_max_delay() -> f64 {
    5.0
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: default_store_path(),
            result_ttl: default_result_ttl(),
            pending_ttl: default_pending_ttl(),
            max_jobs: default_max_jobs(),
            max_held_writes: default_max_held_writes(),
            retry_max_delay: default_retry_max_delay(),
            max_result_size: default_max_result(),
        }
    }
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source} (pass --config PATH or set INFERNET_CONFIG_PATH)")]
    Read {
        /// The path tried.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid JSON or a value has the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// File path.
        path: String,
        /// What is wrong, with the key path and line.
        message: String,
    },
}

/// A parsed config and the unknown keys found in it (warnings, with their paths).
#[derive(Debug)]
pub struct Loaded {
    /// The parsed config.
    pub config: Config,
    /// Paths of keys this node does not know (ignored).
    pub unknown_keys: Vec<String>,
}

/// Reads and parses a config file.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text).map_err(|message| LoadError::Parse {
        path: path.display().to_string(),
        message,
    })
}

/// Parses config JSON text.
pub fn parse(text: &str) -> Result<Loaded, String> {
    let mut unknown_keys = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    let mut record = |path: serde_ignored::Path<'_>| unknown_keys.push(render_path(&path));
    let ignored = serde_ignored::Deserializer::new(&mut de, &mut record);
    let config: Config = serde_path_to_error::deserialize(ignored).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })?;
    de.end().map_err(|e| e.to_string())?;
    Ok(Loaded { config, unknown_keys })
}

/// `containers[0].colour`, the notation of every other config message.
fn render_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", render_path(parent)),
        Path::Map { parent, key } => match render_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => render_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_gets_ritual_defaults() {
        let loaded = parse("{}").unwrap();
        let c = loaded.config;
        assert!(c.containers.is_empty());
        assert!(!c.chain.enabled);
        assert_eq!(c.chain.trail_head_blocks, 1);
        assert_eq!(c.chain.snapshot_sync.batch_size, 500);
        assert!(c.forward_stats);
        assert!(c.manage_containers);
        assert_eq!(c.server.port, 4000);
        assert_eq!(c.server.rate_limit.num_requests, 60);
        assert_eq!(c.startup_wait, 5.0);
        assert_eq!(c.log.max_file_size, 1 << 30);
        assert!(c.redis.is_none());
        assert_eq!(c.stats.interval, 60.0);
        assert!(c.stats.endpoint.is_none());
    }

    #[test]
    fn container_defaults_and_lax_numbers() {
        let c = parse(r#"{"containers": [{"id": "a", "port": "3001", "external": "false"}]}"#)
            .unwrap()
            .config;
        let a = &c.containers[0];
        assert_eq!(a.port, Some(3001));
        assert!(!a.external);
        assert_eq!(a.timeout, 180.0);
        assert!(!a.gpu && !a.generates_proofs);
    }

    #[test]
    fn unknown_keys_are_reported_with_their_path() {
        let loaded = parse(r#"{"log_path": "x", "containers": [{"id": "a", "colour": 1}]}"#).unwrap();
        assert_eq!(
            loaded.unknown_keys,
            vec!["log_path".to_string(), "containers[0].colour".to_string()]
        );
    }

    #[test]
    fn type_errors_name_the_key() {
        let err = parse(r#"{"containers": [{"id": "a"}, {"id": "b", "port": "x"}]}"#).unwrap_err();
        assert!(err.starts_with("containers[1].port:"), "{err}");
        let err = parse(r#"{"server": {"port": 70000}}"#).unwrap_err();
        assert!(err.starts_with("server.port:"), "{err}");
        assert!(parse("{").is_err());
    }

    #[test]
    fn secrets_are_redacted_in_debug_and_serialize() {
        let c = parse(r#"{"chain": {"wallet": {"private_key": "0xdeadbeef"}}}"#)
            .unwrap()
            .config;
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("deadbeef"), "{dbg}");
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("deadbeef"), "{json}");
        assert!(json.contains("<redacted>"));
    }

    #[test]
    fn urls_and_env_values_are_redacted_when_serialized() {
        let c = parse(
            r#"{"chain": {"rpc_url": "https://u:PASS@rpc.example:8443/v2/APIKEY?k=S3CRET"},
                "containers": [{"id": "a", "url": "http://u:PASS@svc:3000/api?token=S3CRET",
                                "env": {"API_TOKEN": "S3CRET", "N": 3}}]}"#,
        )
        .unwrap()
        .config;
        let json = serde_json::to_value(&c).unwrap();
        for secret in ["PASS", "APIKEY", "S3CRET"] {
            assert!(!json.to_string().contains(secret), "{json}");
        }
        assert_eq!(json["chain"]["rpc_url"], "https://rpc.example:8443/…");
        assert_eq!(json["containers"][0]["url"], "http://svc:3000/…");
        assert_eq!(
            json["containers"][0]["env"],
            serde_json::json!({"API_TOKEN": "<redacted>", "N": "<redacted>"})
        );
        assert_eq!(
            serde_json::to_value(&parse("{}").unwrap().config).unwrap()["chain"]["rpc_url"],
            Value::Null
        );
    }
}

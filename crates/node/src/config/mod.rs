//! Node configuration: the Ritual 1.4 `config.json` schema with its defaults, plus our extensions.
//!
//! Loading is two steps: [`load`] parses the JSON (lax about numbers written as strings, like
//! Ritual's node; unknown keys are warned about with their path), then [`validate`] checks every
//! cross-field rule and reports all problems at once, each with its path and a fix.

mod chain;
mod containers;
mod lax;
mod server;
mod store;
mod validate;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use chain::{ChainConfig, SnapshotSyncConfig, WalletConfig};
pub use containers::{ContainerConfig, ProcessConfig};
pub use server::{RateLimitConfig, ServerConfig};
pub use store::{DEFAULT_STORE_PATH, LEGACY_STORE_PATH, RedisConfig, StoreConfig};
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
    /// Longest time an image pull may go without any progress from the engine before it is
    /// abandoned (seconds; extension): a registry that stops answering must not hold a boot or
    /// an operator's deploy forever. A pull that progresses may take as long as it needs.
    #[serde(default = "default_pull_idle_timeout", deserialize_with = "lax::f64")]
    pub pull_idle_timeout: f64,
    /// Embedded job store (used when there is no `redis` section).
    #[serde(default)]
    pub store: StoreConfig,
    /// Where the metric sender sends heartbeats (extension; with `forward_stats`).
    #[serde(default)]
    pub stats: StatsConfig,
    /// Who may manage this node through the signed admin API, and the node's own key (extension).
    #[serde(default)]
    pub operator: OperatorConfig,
    /// The network this node serves (extension): the routers whose signed dispatches it trusts.
    #[serde(default)]
    pub network: NetworkConfig,
}

fn yes() -> bool {
    true
}
fn default_startup_wait() -> f64 {
    5.0
}
fn default_pull_idle_timeout() -> f64 {
    300.0
}

/// `docker`: registry credentials.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DockerConfig {
    /// Registry user.
    pub username: String,
    /// Registry password or token.
    pub password: Secret,
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
    /// Dashboard sessions (`/dashboard`) open at once; at the limit the oldest ends (default 1000).
    #[serde(default)]
    pub max_sessions: Option<usize>,
    /// Seconds a dashboard session lasts from sign-in (default 43200: 12 h; 60 to 2592000).
    #[serde(default)]
    pub session_lifetime: Option<f64>,
}

/// `network` (extension).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct NetworkConfig {
    /// Routers (`npub1…` or 64 hex) whose signed dispatches the node trusts: for a job a router
    /// signs (NIP-98, with a `client` tag), the node charges its rate limit to, and files the job
    /// under, the client the router states instead of the router's own address.
    #[serde(default)]
    pub routers: Vec<String>,
    /// The router's link endpoint (`wss://router.example:4100/api/v1/link`): the node dials out
    /// and serves the network over that one connection (for nodes nobody can connect to). Plain
    /// `ws://` only to a loopback address. The router must be one of `routers`.
    #[serde(default, serialize_with = "redact::opt_url")]
    pub url: Option<String>,
    /// A PEM file of certificate authorities to trust for `wss://`, besides the system's (a
    /// router with a private CA).
    #[serde(default)]
    pub ca_file: Option<String>,
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
    parse(&text).map_err(|e| LoadError::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Config text that does not parse: where (a key path, when known) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The key path (`containers[0].port`), when the problem is at a key.
    pub path: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{path}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses config JSON text.
pub fn parse(text: &str) -> Result<Loaded, ParseError> {
    let mut unknown_keys = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    let mut record = |path: serde_ignored::Path<'_>| unknown_keys.push(render_path(&path));
    let ignored = serde_ignored::Deserializer::new(&mut de, &mut record);
    let config: Config = serde_path_to_error::deserialize(ignored).map_err(|e| {
        let path = e.path().to_string();
        ParseError {
            path: (path != ".").then_some(path),
            message: e.into_inner().to_string(),
        }
    })?;
    de.end().map_err(|e| ParseError {
        path: None,
        message: e.to_string(),
    })?;
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
    use serde_json::Value;

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
        assert_eq!(err.path.as_deref(), Some("containers[1].port"), "{err}");
        assert!(err.to_string().starts_with("containers[1].port:"), "{err}");
        let err = parse(r#"{"server": {"port": 70000}}"#).unwrap_err();
        assert_eq!(err.path.as_deref(), Some("server.port"), "{err}");
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

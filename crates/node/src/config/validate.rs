//! Cross-field validation: every problem at once, each with its key path and how to fix it.

use std::{collections::BTreeMap, fmt, net::IpAddr, str::FromStr, time::Duration};

use alloy_primitives::{Address, U256};
use ipnet::IpNet;
use serde_json::Value;

use infernet_service::secret::SensitiveUrl;

mod containers;

use super::{
    ChainConfig, Config, ContainerConfig, ProcessConfig, Secret, ServerConfig, SnapshotSyncConfig, StatsConfig,
};
use containers::check_containers;

/// One problem (error or warning) found in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Key path, e.g. `containers[2].port`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// How the node reaches (and possibly runs) a container's service.
#[derive(Debug, Clone, PartialEq)]
pub enum Runtime {
    /// Remote service at `url`; never managed.
    Remote,
    /// A service the operator runs on this host (`manage_containers: false`).
    Unmanaged,
    /// A local process started by the node.
    Process(ProcessConfig),
    /// A Docker container started by the node.
    Docker,
}

/// A container with every field checked and normalised.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Container id.
    pub id: String,
    /// Base URL of the service (`http://127.0.0.1:3000`, or `url`, which may carry credentials
    /// and a query: paths are joined before the query).
    pub base_url: SensitiveUrl,
    /// Host port (managed and unmanaged local services).
    pub port: u16,
    /// Bearer token for the service.
    pub bearer: Secret,
    /// May start a pipeline.
    pub external: bool,
    /// Can produce proofs.
    pub generates_proofs: bool,
    /// Allowed client networks (empty: all).
    pub allowed_ips: Vec<IpNet>,
    /// Allowed on-chain owners (empty: all).
    pub allowed_addresses: Vec<Address>,
    /// Allowed delegated owners (empty: all).
    pub allowed_delegate_addresses: Vec<Address>,
    /// Token → minimum amount.
    pub accepted_payments: BTreeMap<Address, U256>,
    /// Timeout of one call.
    pub timeout: Duration,
    /// How the service is run.
    pub runtime: Runtime,
    /// The raw config entry (image, command, env, volumes, gpu, description…).
    pub raw: ContainerConfig,
    /// What the provider lets it use (`limits.<id>` of the admin settings; none in the file).
    pub limits: infernet_types::settings::Limits,
}

/// A config that passed validation, with derived values.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// The config as written (with defaults).
    pub config: Config,
    /// Containers in config order.
    pub containers: Vec<ContainerSpec>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Who may `PUT /api/status` (`server.status_sources`).
    pub status_sources: Vec<IpNet>,
    /// Who manages the node, and its own key.
    pub operator: ValidOperator,
    /// Routers whose signed dispatches the node trusts (`network.routers`).
    pub routers: Vec<infernet_identity::PublicKey>,
    /// Things worth a warning (unknown keys, ignored settings, auto-assigned ports).
    pub warnings: Vec<ConfigProblem>,
}

/// `operator`, checked.
#[derive(Debug, Clone)]
pub struct ValidOperator {
    /// Keys allowed to sign admin requests.
    pub pubkeys: Vec<infernet_identity::PublicKey>,
    /// The node's key file.
    pub node_key: std::path::PathBuf,
    /// The node's public base URL (no trailing slash), when set.
    pub public_url: Option<String>,
    /// Bounds of the dashboard's sessions.
    pub sessions: infernet_service::web::SessionLimits,
}

impl ValidConfig {
    /// The container with this id.
    pub fn container(&self, id: &str) -> Option<&ContainerSpec> {
        self.containers.iter().find(|c| c.id == id)
    }

    /// The node's payment wallet (`chain.wallet.payment_address`), when it has one.
    pub fn payment_address(&self) -> Option<Address> {
        let wallet = self.config.chain.wallet.as_ref()?;
        parse_address(wallet.payment_address.as_deref()?)
    }
}

struct Problems {
    errors: Vec<ConfigProblem>,
    warnings: Vec<ConfigProblem>,
}

impl Problems {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigProblem {
            path: path.into(),
            message: message.into(),
        });
    }
    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigProblem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// The networks of `list` (IPs or CIDRs); an error named `{field}[i]` for each that is not one.
fn nets(list: &[String], field: &str, p: &mut Problems) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for (i, s) in list.iter().enumerate() {
        match parse_net(s) {
            Some(n) => nets.push(n),
            None => p.error(format!("{field}[{i}]"), format!("\"{s}\" is not an IP address or CIDR")),
        }
    }
    nets
}

/// Parses an IP or CIDR the way Ritual's node does (non-strict: host bits allowed, a bare IP is /32
/// or /128).
pub(crate) fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Ok(ip) = IpAddr::from_str(s) {
        return Some(IpNet::from(ip.to_canonical()));
    }
    IpNet::from_str(s).ok().map(|n| n.trunc())
}

fn parse_address(s: &str) -> Option<Address> {
    let s = s.trim();
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if hex.len() != 40 {
        return None;
    }
    Address::from_str(s).ok()
}

fn parse_amount(v: &Value) -> Option<U256> {
    match v {
        Value::Number(n) => n.as_u64().map(U256::from),
        Value::String(s) => U256::from_str(s.trim()).ok(),
        _ => None,
    }
}

/// What is wrong with a URL; the messages never repeat it (it may hold credentials or a token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum UrlProblem {
    /// No `scheme://`.
    #[error("not a URL; write it as {0}://host[:port][/path]")]
    NotUrl(String),
    /// A scheme not taken here.
    #[error("scheme \"{scheme}\" is not supported; use one of {supported}")]
    Scheme {
        /// The URL's.
        scheme: String,
        /// Those taken, comma-separated.
        supported: String,
    },
    /// No host.
    #[error("the URL has no host; write it as scheme://host[:port][/path]")]
    NoHost,
    /// A port that is not a number up to 65535.
    #[error("the URL has an invalid port \"{0}\"")]
    Port(String),
    /// Anything else the URL parser refuses.
    #[error("{0}")]
    Invalid(String),
}

/// Checks a URL.
fn check_url(s: &str, schemes: &[&str]) -> Result<(), UrlProblem> {
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(UrlProblem::NotUrl(schemes[0].to_string()));
    };
    if !schemes.contains(&scheme.to_ascii_lowercase().as_str()) {
        return Err(UrlProblem::Scheme {
            scheme: scheme.to_string(),
            supported: schemes.join(", "),
        });
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if host_port.starts_with('[') {
        host_port
            .split(']')
            .next()
            .map(|h| h.trim_start_matches('['))
            .unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return Err(UrlProblem::NoHost);
    }
    if let Some(port) = host_port
        .strip_prefix('[')
        .and_then(|h| h.split_once("]:"))
        .map(|(_, p)| p)
        .or_else(|| {
            if host_port.starts_with('[') {
                None
            } else {
                host_port.split_once(':').map(|(_, p)| p)
            }
        })
        && port.parse::<u16>().is_err()
    {
        return Err(UrlProblem::Port(port.to_string()));
    }
    SensitiveUrl::parse(s)
        .map(drop)
        .map_err(|e| UrlProblem::Invalid(e.to_string()))
}

/// Longest duration accepted anywhere in the config (one year), so every value fits a `Duration`.
pub(super) const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;
/// Most jobs the embedded store may be told to keep (its index numbers them in 32 bits).
const MAX_STORE_JOBS: u64 = 1_000_000_000;

fn positive(x: f64) -> bool {
    x > 0.0 && x <= MAX_SECONDS
}

fn non_negative(x: f64) -> bool {
    (0.0..=MAX_SECONDS).contains(&x)
}

fn is_private_key(s: &str) -> bool {
    let hex = s.trim().trim_start_matches("0x");
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks a parsed config; `unknown_keys` come from [`super::parse`] and become warnings.
pub fn validate(config: Config, unknown_keys: &[String]) -> Result<ValidConfig, Vec<ConfigProblem>> {
    let mut p = Problems {
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    for key in unknown_keys {
        p.warn(
            key.clone(),
            "unknown key, ignored (check its spelling against the config reference)",
        );
    }
    check_server(&config.server, &mut p);
    check_size_limits(&config, &mut p);
    let trusted_proxies = check_connections(&config.server, &mut p);
    let status_sources = nets(&config.server.status_sources, "server.status_sources", &mut p);
    if !non_negative(config.startup_wait) {
        p.error(
            "startup_wait",
            "must be zero or a positive number of seconds (at most one year)",
        );
    }
    if !non_negative(config.pull_idle_timeout) || config.pull_idle_timeout == 0.0 {
        p.error(
            "pull_idle_timeout",
            "must be a positive number of seconds (at most one year)",
        );
    }
    check_store(&config, &mut p);
    check_stats(&config.stats, &mut p);
    check_chain(&config.chain, &mut p);
    let containers = check_containers(&config, &mut p);
    let operator = validate_operator(&config, &mut p);
    let routers = keys(&config.network.routers, "network.routers", &mut p);
    check_link(&config.network, &mut p);
    if p.errors.is_empty() {
        Ok(ValidConfig {
            config,
            containers,
            trusted_proxies,
            status_sources,
            operator,
            routers,
            warnings: p.warnings,
        })
    } else {
        Err(p.errors)
    }
}

/// `server`: the address, the port and the rate limit.
fn check_server(server: &ServerConfig, p: &mut Problems) {
    if let Some(tls) = &server.tls {
        for (path, file) in [("server.tls.cert", &tls.cert), ("server.tls.key", &tls.key)] {
            if !std::path::Path::new(file).is_file() {
                p.error(path, format!("{file:?} is not a file: give a PEM file"));
            }
        }
    }
    if IpAddr::from_str(&server.bind).is_err() {
        p.error(
            "server.bind",
            format!("\"{}\" is not an IP address; use 0.0.0.0, 127.0.0.1 or ::", server.bind),
        );
    }
    if server.port == 0 {
        p.error(
            "server.port",
            "port 0 is not allowed; pick the port clients will call (default 4000)",
        );
    }
    if server.rate_limit.num_requests == 0 {
        p.error("server.rate_limit.num_requests", "must be at least 1");
    }
    if !positive(server.rate_limit.period) {
        p.error(
            "server.rate_limit.period",
            "must be a positive number of seconds (at most one year)",
        );
    }
}

/// The size limits of a request (`server`) and of a stored result (`store`).
fn check_size_limits(config: &Config, p: &mut Problems) {
    if config.server.max_body_size == 0 {
        p.error("server.max_body_size", "must be at least 1 byte");
    }
    if config.server.max_buffered_bytes < (1 << 20).max(config.server.max_body_size) {
        p.error(
            "server.max_buffered_bytes",
            "must be at least 1048576 bytes (1 MiB) and at least server.max_body_size, or the largest bodies could never be read",
        );
    }
    if config.server.max_batch_items == 0 {
        p.error("server.max_batch_items", "must be at least 1");
    }
    if config.store.max_result_size == 0 {
        p.error("store.max_result_size", "must be at least 1 byte");
    }
}

/// `server`: connection timeouts and limit, and the trusted proxies (returned parsed).
fn check_connections(server: &ServerConfig, p: &mut Problems) -> Vec<IpNet> {
    for (key, value) in [
        ("server.header_timeout", server.header_timeout),
        ("server.body_timeout", server.body_timeout),
        ("server.idle_timeout", server.idle_timeout),
    ] {
        if !positive(value) {
            p.error(key, "must be a positive number of seconds (at most one year)");
        }
    }
    if server.max_connections == 0 {
        p.error(
            "server.max_connections",
            "must be at least 1 (default 10000); the open-file limit is raised to its hard limit at start",
        );
    }
    nets(&server.trusted_proxies, "server.trusted_proxies", p)
}

/// `redis` and `store`: where jobs are kept and how many.
fn check_store(config: &Config, p: &mut Problems) {
    if let Some(redis) = &config.redis
        && redis.host.trim().is_empty()
    {
        p.error(
            "redis.host",
            "must not be empty; remove the `redis` section to use the embedded store",
        );
    }
    let store = &config.store;
    if config.redis.is_none() && store.path.trim().is_empty() {
        p.error("store.path", "must name the embedded store's database file");
    }
    if store.max_jobs == 0 {
        p.error("store.max_jobs", "must be at least 1");
    } else if store.max_jobs > MAX_STORE_JOBS {
        p.error(
            "store.max_jobs",
            format!(
                "must be at most {MAX_STORE_JOBS} (the embedded store's index holds about 125 bytes of memory per job)"
            ),
        );
    }
    if store.max_held_writes == 0 {
        p.error(
            "store.max_held_writes",
            "must be at least 1 (results written while the store is down are held up to this many jobs)",
        );
    }
    if !(store.retry_max_delay.is_finite() && store.retry_max_delay > 0.0) {
        p.error("store.retry_max_delay", "must be a number of seconds above 0, e.g. 5");
    }
}

/// `stats`: the heartbeat's endpoint and interval.
fn check_stats(stats: &StatsConfig, p: &mut Problems) {
    if let Some(endpoint) = &stats.endpoint
        && let Err(e) = check_url(endpoint, &["http", "https"])
    {
        p.error("stats.endpoint", e.to_string());
    }
    if !positive(stats.interval) {
        p.error(
            "stats.interval",
            "must be a positive number of seconds (at most one year)",
        );
    }
}

/// `network.url`: a WebSocket URL, TLS unless to loopback; a router to trust for it.
fn check_link(network: &super::NetworkConfig, p: &mut Problems) {
    let Some(text) = &network.url else { return };
    match crate::link::LinkUrl::parse(text) {
        Ok(_) if network.routers.is_empty() => p.error(
            "network.routers",
            "network.url links to a router: list its key here too (GET /api/v1/identity on the router tells it)",
        ),
        Ok(_) => {}
        Err(e) => p.error("network.url", e.to_string()),
    }
    if let Some(ca) = &network.ca_file
        && !std::path::Path::new(ca).is_file()
    {
        p.error(
            "network.ca_file",
            format!("{ca:?} is not a file: give a PEM file of CA certificates"),
        );
    }
}

/// `chain`: what an enabled chain needs, and the payment address whenever it is set.
fn check_chain(chain: &ChainConfig, p: &mut Problems) {
    if chain.enabled {
        check_chain_endpoints(chain, p);
        check_wallet_key(chain, p);
        check_snapshot_sync(&chain.snapshot_sync, p);
        if !positive(chain.balance_period) {
            p.error(
                "chain.balance_period",
                "must be a positive number of seconds (at most one year)",
            );
        }
    }
    if let Some(w) = &chain.wallet
        && let Some(a) = w.payment_address.as_deref().map(str::trim)
        && !a.is_empty()
        && parse_address(a).is_none()
    {
        p.error(
            "chain.wallet.payment_address",
            format!("\"{a}\" is not an address (0x followed by 40 hex digits)"),
        );
    }
}

/// `chain.rpc_url` and `chain.registry_address` of an enabled chain.
fn check_chain_endpoints(chain: &ChainConfig, p: &mut Problems) {
    match chain.rpc_url.as_deref().map(str::trim) {
        None | Some("") => p.error("chain.rpc_url", "must be defined when chain is enabled"),
        Some(url) => {
            if let Err(e) = check_url(url, &["http", "https"]) {
                p.error("chain.rpc_url", e.to_string());
            }
        }
    }
    match chain.registry_address.as_deref().map(str::trim) {
        None | Some("") => p.error("chain.registry_address", "must be defined when chain is enabled"),
        Some(a) if parse_address(a).is_none() => p.error(
            "chain.registry_address",
            format!("\"{a}\" is not an address (0x followed by 40 hex digits)"),
        ),
        Some(_) => {}
    }
}

/// `chain.wallet` of an enabled chain: it and its private key must be there.
fn check_wallet_key(chain: &ChainConfig, p: &mut Problems) {
    match &chain.wallet {
        None => p.error("chain.wallet", "must be defined when chain is enabled"),
        Some(w) => match &w.private_key {
            Some(k) if !k.is_empty() => {
                if !is_private_key(k.expose()) {
                    p.error(
                        "chain.wallet.private_key",
                        "must be 32 bytes of hex (64 hex digits, 0x optional)",
                    );
                }
            }
            _ => p.error("chain.wallet.private_key", "must be defined when chain is enabled"),
        },
    }
}

/// `chain.snapshot_sync` of an enabled chain.
fn check_snapshot_sync(sync: &SnapshotSyncConfig, p: &mut Problems) {
    if sync.batch_size == 0 {
        p.error("chain.snapshot_sync.batch_size", "must be at least 1");
    }
    if !positive(sync.sync_period) {
        p.error(
            "chain.snapshot_sync.sync_period",
            "must be a positive number of seconds (at most one year)",
        );
    }
    if !non_negative(sync.sleep) {
        p.error(
            "chain.snapshot_sync.sleep",
            "must be zero or a positive number of seconds (at most one year)",
        );
    }
}

/// Public keys in either form (`npub1…` or hex), each problem named `{path}[i]`.
fn keys(texts: &[String], path: &str, p: &mut Problems) -> Vec<infernet_identity::PublicKey> {
    let mut keys = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match infernet_identity::parse_public_key(text) {
            Ok(key) => keys.push(key),
            Err(e) => p.error(format!("{path}[{i}]"), e.to_string()),
        }
    }
    keys
}

/// `operator`: keys in either form, a public URL that is an http(s) origin.
fn validate_operator(config: &Config, p: &mut Problems) -> ValidOperator {
    let operator = &config.operator;
    let pubkeys = keys(&operator.pubkeys, "operator.pubkeys", p);
    let public_url = operator.public_url.as_deref().and_then(|text| {
        let base = text.trim_end_matches('/');
        let parsed = url::Url::parse(base).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.path() == "/" && u.query().is_none()
        });
        if parsed.is_none() {
            p.error(
                "operator.public_url",
                format!("{text:?} is not an http(s) origin such as https://node.example:4000 (no path or query)"),
            );
        }
        parsed.map(|_| base.to_string())
    });
    let node_key = match &operator.node_key {
        Some(path) => std::path::PathBuf::from(path),
        None => std::path::Path::new(&config.store.path)
            .parent()
            .unwrap_or(std::path::Path::new(""))
            .join("infernet-node.nsec"),
    };
    let mut sessions = infernet_service::web::SessionLimits::default();
    match operator.max_sessions {
        Some(0) => p.error("operator.max_sessions", "must be at least 1"),
        Some(n) => sessions.max = n,
        None => {}
    }
    match operator.session_lifetime {
        Some(s) if (60.0..=2_592_000.0).contains(&s) => sessions.lifetime = std::time::Duration::from_secs_f64(s),
        Some(s) => p.error(
            "operator.session_lifetime",
            format!("must be from 60 to 2592000 seconds, got {s}"),
        ),
        None => {}
    }
    ValidOperator {
        pubkeys,
        node_key,
        public_url,
        sessions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn check(json: &str) -> Result<ValidConfig, Vec<ConfigProblem>> {
        let loaded = parse(json).unwrap();
        validate(loaded.config, &loaded.unknown_keys)
    }

    fn paths(errs: &[ConfigProblem]) -> Vec<&str> {
        errs.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn dashboard_sessions_are_bounded_by_the_operator_settings() {
        let ok = check(r#"{"operator": {"max_sessions": 5, "session_lifetime": 600}}"#).unwrap();
        assert_eq!(ok.operator.sessions.max, 5);
        assert_eq!(ok.operator.sessions.lifetime, std::time::Duration::from_secs(600));
        let bad = check(r#"{"operator": {"max_sessions": 0, "session_lifetime": 5}}"#).unwrap_err();
        assert_eq!(paths(&bad), ["operator.max_sessions", "operator.session_lifetime"]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errs = check(
            r#"{
              "chain": {"enabled": true, "wallet": {}},
              "containers": [
                {"id": "a", "image": "x", "port": 3000, "allowed_ips": ["10.0.0.0/33"]},
                {"id": "a", "image": "x", "port": 3000, "allowed_addresses": ["0x12"]},
                {"id": "c", "accepted_payments": {"0x0000000000000000000000000000000000000000": -1}}
              ]
            }"#,
        )
        .unwrap_err();
        assert_eq!(
            paths(&errs),
            vec![
                "chain.rpc_url",
                "chain.registry_address",
                "chain.wallet.private_key",
                "containers[0].allowed_ips[0]",
                "containers[1].id",
                "containers[1].allowed_addresses[0]",
                "containers[1].port",
                "containers[2].image",
                "containers[2].accepted_payments.0x0000000000000000000000000000000000000000",
            ]
        );
        assert!(errs[4].message.contains("duplicate id \"a\""));
    }

    #[test]
    fn a_pull_idle_timeout_must_be_positive() {
        assert!(check(r#"{"pull_idle_timeout": 30}"#).is_ok());
        for bad in ["0", "-1", "1e12"] {
            let errs = check(&format!(r#"{{"pull_idle_timeout": {bad}}}"#)).unwrap_err();
            assert_eq!(paths(&errs), vec!["pull_idle_timeout"], "{bad}");
        }
    }

    #[test]
    fn the_store_bound_must_fit_its_index() {
        for (max_jobs, ok) in [
            (0, false),
            (1, true),
            (1_000_000_000, true),
            (1_000_000_001, false),
            (u64::MAX, false),
        ] {
            let result = check(&format!(r#"{{"store": {{"max_jobs": {max_jobs}}}}}"#));
            assert_eq!(result.is_ok(), ok, "max_jobs {max_jobs}");
            if let Err(errs) = result {
                assert_eq!(paths(&errs), vec!["store.max_jobs"]);
            }
        }
    }

    #[test]
    fn chain_enabled_without_wallet_names_wallet() {
        let errs = check(r#"{"chain": {"enabled": true, "rpc_url": "http://localhost:8545", "registry_address": "0x3B1554f346DFe5c482Bb4BA31b880c1C18412170"}}"#).unwrap_err();
        assert_eq!(paths(&errs), vec!["chain.wallet"]);
    }

    #[test]
    fn rpc_url_accepts_localhost_and_service_names() {
        for url in [
            "http://localhost:8545",
            "http://anvil:8545",
            "https://rpc.example/v1/key",
            "ws://127.0.0.1:8546",
        ] {
            assert!(check_url(url, &["http", "https", "ws", "wss"]).is_ok(), "{url}");
        }
        for url in ["localhost:8545", "ftp://x", "http://", "http://host:port"] {
            assert!(check_url(url, &["http", "https", "ws", "wss"]).is_err(), "{url}");
        }
    }

    #[test]
    fn default_ports_are_assigned_like_ritual() {
        let v = check(
            r#"{"containers": [{"id": "a", "image": "i"}, {"id": "b", "image": "i"}, {"id": "c", "image": "i"}]}"#,
        )
        .unwrap();
        let ports: Vec<u16> = v.containers.iter().map(|c| c.port).collect();
        assert_eq!(ports, vec![3000, 3999, 3998]);
        assert_eq!(v.warnings.len(), 2);
    }

    #[test]
    fn remote_and_unmanaged_targets() {
        let v = check(r#"{"manage_containers": false, "containers": [{"id": "a", "port": 3001}, {"id": "b", "url": "https://svc.example/api/", "bearer": "t"}]}"#).unwrap();
        assert_eq!(v.containers[0].base_url.expose().as_str(), "http://127.0.0.1:3001/");
        assert_eq!(v.containers[0].runtime, Runtime::Unmanaged);
        assert_eq!(
            v.containers[1].base_url.join("service_output").expose().as_str(),
            "https://svc.example/api/service_output"
        );
        assert_eq!(v.containers[1].runtime, Runtime::Remote);
    }

    #[test]
    fn addresses_and_payments_are_normalised() {
        let v = check(
            r#"{"manage_containers": false, "containers": [{"id": "a",
            "allowed_addresses": ["0x3b1554f346dfe5c482bb4ba31b880c1c18412170"],
            "accepted_payments": {"0x3b1554f346dfe5c482bb4ba31b880c1c18412170": "1000000000000000000000"}}]}"#,
        )
        .unwrap();
        let c = &v.containers[0];
        let token = Address::from_str("0x3B1554f346DFe5c482Bb4BA31b880c1C18412170").unwrap();
        assert_eq!(c.allowed_addresses, vec![token]);
        assert_eq!(c.accepted_payments[&token], U256::from(10).pow(U256::from(21)));
    }

    #[test]
    fn ip_allow_list_is_non_strict() {
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("::ffff:1.2.3.4").unwrap().to_string(), "1.2.3.4/32");
        assert!(parse_net("1.2.3").is_none());
    }
}

//! `server`: the REST server's address, limits and rate limit.

use serde::{Deserialize, Serialize};

use super::{lax, validate};

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
    /// Addresses (IPs or CIDRs) allowed to `PUT /api/status`: the node's own host and its
    /// containers (extension; Ritual's node has a fixed list, with all of 192.168.0.0/16).
    #[serde(default = "default_status_sources")]
    pub status_sources: Vec<String>,
    /// Largest request body accepted, in bytes (extension).
    #[serde(default = "default_max_body", deserialize_with = "lax::u64")]
    pub max_body_size: u64,
    /// Memory, in bytes, that large jobs' data and containers' large answers may hold at once,
    /// across the node (extension; see `orchestrator::budget`).
    #[serde(default = "default_max_buffered", deserialize_with = "lax::u64")]
    pub max_buffered_bytes: u64,
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
    /// Serve HTTPS with this certificate chain and key (extension; default plain HTTP), so that
    /// routers' dispatches to the node are encrypted without a proxy.
    #[serde(default)]
    pub tls: Option<ServerTls>,
}

/// `server.tls`: PEM files.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerTls {
    /// The certificate chain.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

impl ServerConfig {
    /// The connection limits these settings describe (validated: every value in range).
    pub fn limits(&self) -> infernet_service::http::Limits {
        let seconds = |s: f64| std::time::Duration::from_secs_f64(s.clamp(0.001, validate::MAX_SECONDS));
        infernet_service::http::Limits {
            header_read: seconds(self.header_timeout),
            body_read: seconds(self.body_timeout),
            idle: seconds(self.idle_timeout),
            write_stall: infernet_service::http::Limits::default().write_stall,
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
fn default_max_buffered() -> u64 {
    64 << 20
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
/// Loopback, and Docker's bridge networks (172.17.0.0 to 172.31.255.255, its default pools).
fn default_status_sources() -> Vec<String> {
    [
        "127.0.0.0/8",
        "::1",
        "172.17.0.0/16",
        "172.18.0.0/15",
        "172.20.0.0/14",
        "172.24.0.0/13",
    ]
    .map(String::from)
    .to_vec()
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
            status_sources: default_status_sources(),
            max_body_size: default_max_body(),
            max_buffered_bytes: default_max_buffered(),
            max_batch_items: default_max_batch(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            tls: None,
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

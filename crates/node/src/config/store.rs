//! `store` and `redis`: where jobs are kept, for how long, and how much.

use serde::{Deserialize, Serialize};

use super::lax;

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

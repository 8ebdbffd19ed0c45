//! `chain`: the RPC endpoint, the Registry, the node's wallet and subscription sync.

use serde::{Deserialize, Serialize};

use super::{Secret, lax, redact};

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
    /// How often the wallets' balances are read for `/info`, `/metrics` and the heartbeat
    /// (seconds).
    #[serde(default = "default_balance_period", deserialize_with = "lax::f64")]
    pub balance_period: f64,
}

fn default_balance_period() -> f64 {
    60.0
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
            balance_period: default_balance_period(),
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

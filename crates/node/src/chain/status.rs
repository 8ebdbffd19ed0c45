//! What the chain side is doing, for `/info` and `/metrics`: the answer to "why is my node idle".

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use std::collections::VecDeque;

use alloy::primitives::{Address, U256};
use serde_json::{Value, json};

/// Subscriptions given up that `/info` lists (the latest ones).
pub const GIVEN_UP_SHOWN: usize = 16;

use super::rpc::{ERROR_KINDS, RpcErrorCounts};

/// The wallets' balances at one block, in wei.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balances {
    /// Block they were read at.
    pub block: u64,
    /// The node's own account (pays gas).
    pub node: (Address, U256),
    /// The payment wallet (receives payments), when the node has one.
    pub payment: Option<(Address, U256)>,
}

/// Wei in one ether.
const WEI_PER_ETH: f64 = 1e18;

/// `wei` in ether, for gauges (a float: exact amounts are in `/info`).
fn eth(wei: U256) -> f64 {
    f64::from(wei) / WEI_PER_ETH
}

/// Counters and gauges of the chain side (atomics: written by the tasks, read by the server).
#[derive(Debug, Default)]
pub struct ChainStatus {
    head: AtomicU64,
    head_timestamp: AtomicU64,
    synced_block: AtomicU64,
    synced_subscription: AtomicU64,
    snapshot_done: AtomicBool,
    outside_hours: AtomicBool,
    tracked_onchain: AtomicU64,
    tracked_delegated: AtomicU64,
    running: AtomicU64,
    delivered: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
    tx_sent: AtomicU64,
    tx_mined: AtomicU64,
    tx_reverted: AtomicU64,
    tx_failed: AtomicU64,
    tx_replaced: AtomicU64,
    tx_pending: AtomicU64,
    nonce: AtomicU64,
    /// The latest balances read ([`ChainStatus::set_balances`]).
    balances: Mutex<Option<Balances>>,
    given_up: AtomicU64,
    /// The latest subscriptions given up, and why (at most [`GIVEN_UP_SHOWN`]).
    given_up_recent: Mutex<VecDeque<(String, String)>>,
    last_error: Mutex<Option<String>>,
    reaction: crate::stats::metrics::Histogram,
    /// RPC errors by kind and calls sent.
    pub rpc: Arc<RpcErrorCounts>,
}

macro_rules! bump {
    ($($(#[$doc:meta])* $name:ident => $field:ident),* $(,)?) => {
        $($(#[$doc])* pub fn $name(&self) { self.$field.fetch_add(1, Ordering::Relaxed); })*
    };
}

impl ChainStatus {
    /// Status sharing the RPC's error counters.
    pub fn new(rpc: Arc<RpcErrorCounts>) -> Self {
        Self { rpc, ..Self::default() }
    }

    bump! {
        /// A delivery was mined successfully.
        delivered => delivered,
        /// An interval was skipped (served by others, cancelled, not payable).
        skipped => skipped,
        /// A job failed (container, simulation or transaction).
        job_failed => failed,
        /// A transaction was sent.
        tx_sent => tx_sent,
        /// A transaction was mined with status 1.
        tx_mined => tx_mined,
        /// A transaction was mined and reverted.
        tx_reverted => tx_reverted,
        /// A transaction could not be sent or lost its nonce.
        tx_failed => tx_failed,
        /// A stuck transaction was replaced.
        tx_replaced => tx_replaced,
    }

    /// Time from a due block to the delivery's send, container calls excluded.
    pub fn observe_reaction(&self, d: std::time::Duration) {
        self.reaction.observe(d);
    }

    /// A new head block.
    pub fn set_head(&self, number: u64, timestamp: u64) {
        self.head.store(number, Ordering::Relaxed);
        self.head_timestamp.store(timestamp, Ordering::Relaxed);
    }

    /// The listener has read subscriptions up to `subscription` as of `block`.
    pub fn set_synced(&self, block: u64, subscription: u64) {
        self.synced_block.store(block, Ordering::Relaxed);
        self.synced_subscription.store(subscription, Ordering::Relaxed);
    }

    /// Whether subscriptions wait for the provider's hours; `true` when this changed it.
    pub fn set_outside_hours(&self, outside: bool) -> bool {
        self.outside_hours.swap(outside, Ordering::Relaxed) != outside
    }

    /// The snapshot sync at start has finished.
    pub fn set_snapshot_done(&self) {
        self.snapshot_done.store(true, Ordering::Relaxed);
    }

    /// Subscriptions the processor tracks.
    pub fn set_tracked(&self, onchain: usize, delegated: usize) {
        self.tracked_onchain.store(onchain as u64, Ordering::Relaxed);
        self.tracked_delegated.store(delegated as u64, Ordering::Relaxed);
    }

    /// Chain jobs running now.
    pub fn set_running(&self, n: usize) {
        self.running.store(n as u64, Ordering::Relaxed);
    }

    /// Chain jobs running now.
    pub fn running(&self) -> u64 {
        self.running.load(Ordering::Relaxed)
    }

    /// Transactions sent and not mined yet.
    pub fn set_tx_pending(&self, n: usize) {
        self.tx_pending.store(n as u64, Ordering::Relaxed);
    }

    /// The wallets' balances, as just read.
    pub fn set_balances(&self, balances: Balances) {
        *self.balances.lock().expect("status poisoned") = Some(balances);
    }

    /// The latest balances read, if any.
    pub fn balances(&self) -> Option<Balances> {
        *self.balances.lock().expect("status poisoned")
    }

    /// The node's next nonce.
    pub fn set_nonce(&self, nonce: u64) {
        self.nonce.store(nonce, Ordering::Relaxed);
    }

    /// The node gave up on a subscription it can never serve (`key`), because of `reason`.
    pub fn gave_up(&self, key: String, reason: String) {
        self.given_up.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.given_up_recent.lock().expect("status poisoned");
        if recent.len() == GIVEN_UP_SHOWN {
            recent.pop_front();
        }
        recent.push_back((key, reason));
    }

    /// Records (or clears) the latest persistent problem.
    pub fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().expect("status poisoned") = error;
    }

    /// The heartbeat's view: what the router's alert rules read (sync lag, transactions,
    /// balances).
    pub fn summary(&self) -> Value {
        let full = self.to_json();
        json!({
            "head_block": full["head_block"],
            "synced_block": full["synced_block"],
            "transactions": full["transactions"],
            "balances": full["balances"],
            "last_error": full["last_error"],
            "outside_hours": full["outside_hours"],
        })
    }

    /// `/info` view.
    pub fn to_json(&self) -> Value {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "head_block": get(&self.head),
            "head_timestamp": get(&self.head_timestamp),
            "synced_block": get(&self.synced_block),
            "synced_subscription_id": get(&self.synced_subscription),
            "snapshot_synced": self.snapshot_done.load(Ordering::Relaxed),
            "outside_hours": self.outside_hours.load(Ordering::Relaxed),
            "tracked": {"onchain": get(&self.tracked_onchain), "delegated": get(&self.tracked_delegated)},
            "deliveries": {
                "delivered": get(&self.delivered), "skipped": get(&self.skipped), "failed": get(&self.failed),
                "given_up": get(&self.given_up),
            },
            "given_up": self.given_up_recent.lock().expect("status poisoned").iter()
                .map(|(subscription, reason)| json!({"subscription": subscription, "reason": reason}))
                .collect::<Vec<_>>(),
            "transactions": {
                "sent": get(&self.tx_sent), "mined": get(&self.tx_mined), "reverted": get(&self.tx_reverted),
                "failed": get(&self.tx_failed), "replaced": get(&self.tx_replaced), "next_nonce": get(&self.nonce),
                "pending": get(&self.tx_pending),
            },
            "balances": self.balances().map(|b| {
                let wallet = |(address, wei): (Address, U256)| json!({"address": address, "wei": wei.to_string(), "eth": eth(wei)});
                json!({"block": b.block, "node": wallet(b.node), "payment": b.payment.map(wallet)})
            }),
            "rpc_calls": self.rpc.calls(),
            "last_error": *self.last_error.lock().expect("status poisoned"),
        })
    }

    /// Prometheus text of the chain metrics.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(out, "infernet_chain_head_block", "Latest block seen.", get(&self.head));
        gauge(
            out,
            "infernet_chain_synced_block",
            "Block up to which subscriptions are synced.",
            get(&self.synced_block),
        );
        gauge(
            out,
            "infernet_chain_synced_subscription_id",
            "Highest subscription id read.",
            get(&self.synced_subscription),
        );
        let _ = writeln!(
            out,
            "# HELP infernet_chain_subscriptions_tracked Subscriptions the processor tracks.\n# TYPE infernet_chain_subscriptions_tracked gauge\ninfernet_chain_subscriptions_tracked{{kind=\"onchain\"}} {}\ninfernet_chain_subscriptions_tracked{{kind=\"delegated\"}} {}",
            get(&self.tracked_onchain),
            get(&self.tracked_delegated)
        );
        out.push_str("# HELP infernet_chain_transactions_total Transactions by outcome.\n# TYPE infernet_chain_transactions_total counter\n");
        for (label, v) in [
            ("sent", &self.tx_sent),
            ("mined", &self.tx_mined),
            ("reverted", &self.tx_reverted),
            ("failed", &self.tx_failed),
            ("replaced", &self.tx_replaced),
        ] {
            let _ = writeln!(
                out,
                "infernet_chain_transactions_total{{outcome=\"{label}\"}} {}",
                get(v)
            );
        }
        gauge(
            out,
            "infernet_chain_transactions_pending",
            "Transactions sent and not mined yet.",
            get(&self.tx_pending),
        );
        if let Some(b) = self.balances() {
            out.push_str("# HELP infernet_chain_balance_eth Balance of the node's account and of its payment wallet, in ether.\n# TYPE infernet_chain_balance_eth gauge\n");
            for (wallet, balance) in [("node", Some(b.node)), ("payment", b.payment)] {
                if let Some((_, wei)) = balance {
                    let _ = writeln!(out, "infernet_chain_balance_eth{{wallet=\"{wallet}\"}} {}", eth(wei));
                }
            }
        }
        out.push_str("# HELP infernet_chain_deliveries_total Subscription intervals by outcome.\n# TYPE infernet_chain_deliveries_total counter\n");
        for (label, v) in [
            ("delivered", &self.delivered),
            ("skipped", &self.skipped),
            ("failed", &self.failed),
            ("given_up", &self.given_up),
        ] {
            let _ = writeln!(out, "infernet_chain_deliveries_total{{outcome=\"{label}\"}} {}", get(v));
        }
        out.push_str("# HELP infernet_chain_reaction_seconds From the block a subscription became due in to its delivery being sent, container calls excluded.\n# TYPE infernet_chain_reaction_seconds histogram\n");
        self.reaction.render(out, "infernet_chain_reaction_seconds", "");
        out.push_str("# HELP infernet_rpc_errors_total RPC errors by kind (every attempt).\n# TYPE infernet_rpc_errors_total counter\n");
        for kind in ERROR_KINDS {
            let _ = writeln!(
                out,
                "infernet_rpc_errors_total{{kind=\"{}\"}} {}",
                kind.label(),
                self.rpc.get(kind)
            );
        }
        let _ = writeln!(
            out,
            "# HELP infernet_rpc_calls_total JSON-RPC calls sent (a batch of n counts n).\n# TYPE infernet_rpc_calls_total counter\ninfernet_rpc_calls_total {}",
            self.rpc.calls()
        );
    }
}

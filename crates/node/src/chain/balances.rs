//! Reads the balances of the node's account (it pays gas) and of its payment wallet (it is
//! paid) every `chain.balance_period`, for `/info`, `/metrics` and the heartbeat: an operator
//! learns that funds run low before deliveries start failing.

use std::{sync::Arc, time::Duration};

use alloy::{eips::BlockId, primitives::Address};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    blocks::{Head, Throttle},
    rpc::{Read, Rpc},
    status::{Balances, ChainStatus},
};

/// Reads the balances at the latest head, at most once a period.
pub struct BalanceWatcher {
    /// The endpoint.
    pub rpc: Rpc,
    /// The node's account.
    pub node: Address,
    /// The payment wallet, when the node has one.
    pub payment: Option<Address>,
    /// Time between reads (`chain.balance_period`).
    pub period: Duration,
    /// Where the balances are published.
    pub status: Arc<ChainStatus>,
}

impl BalanceWatcher {
    /// Reads until `shutdown`; a failed read keeps the previous balances and is retried next
    /// period.
    pub async fn run(self, mut heads: watch::Receiver<Option<Head>>, shutdown: CancellationToken) {
        let mut warnings = Throttle::new(Duration::from_secs(300));
        let reads: Vec<Read> = std::iter::once(self.node)
            .chain(self.payment)
            .map(Read::Balance)
            .collect();
        loop {
            let head = tokio::select! {
                _ = shutdown.cancelled() => return,
                head = heads.wait_for(Option::is_some) => match head {
                    Ok(head) => head.expect("waited for a head"),
                    Err(_) => return,
                },
            };
            match self.read(&reads, head.number).await {
                Ok(balances) => self.status.set_balances(balances),
                Err(e) => {
                    if let Some(suppressed) = warnings.allow() {
                        tracing::warn!(error = %e, suppressed, "cannot read the wallets' balances; retrying next period");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.period) => {}
            }
        }
    }

    async fn read(&self, reads: &[Read], block: u64) -> Result<Balances, super::rpc::RpcError> {
        let answers = self.rpc.read_batch(reads, BlockId::number(block)).await?;
        let mut words = answers
            .into_iter()
            .map(|a| a.map(|word| alloy::primitives::U256::from_be_slice(&word)));
        let node = words.next().expect("one answer per read")?;
        let payment = match self.payment {
            Some(address) => Some((address, words.next().expect("one answer per read")?)),
            None => None,
        };
        Ok(Balances {
            block,
            node: (self.node, node),
            payment,
        })
    }
}

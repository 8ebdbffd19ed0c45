//! The chain head: one task polls the latest block and publishes it; the Listener, the Processor
//! and the Wallet all run off these updates (no component polls the chain on its own clock).
//!
//! Polling adapts to the chain: after a new block, the next poll waits about one block time
//! (learnt from the blocks seen), then polls every `sync_period` at most until the next block
//! shows up. On a 1 s chain that is close to one `eth_getBlockByNumber` per block.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{rpc::Rpc, status::ChainStatus};

/// A block as the chain side needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Block number.
    pub number: u64,
    /// Block timestamp (the Coordinator's `block.timestamp`).
    pub timestamp: u64,
    /// EIP-1559 base fee (`None` on legacy chains).
    pub base_fee: Option<u64>,
}

/// Shortest wait between two polls that found nothing new.
const MIN_RETRY: Duration = Duration::from_millis(25);

/// Warnings that could repeat every tick are logged once, then at most every `every`.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// A throttle that lets one message through per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a message should be logged now (`n` = messages suppressed since the last).
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// The condition cleared: the next message is logged at once.
    pub fn reset(&mut self) {
        self.last = None;
        self.suppressed = 0;
    }
}

/// Polls the head and publishes it.
pub struct BlockWatcher {
    /// Endpoint.
    pub rpc: Rpc,
    /// Longest wait between polls (`chain.snapshot_sync.sync_period`).
    pub sync_period: Duration,
    /// Status for `/info`.
    pub status: Arc<ChainStatus>,
}

impl BlockWatcher {
    /// Runs until shutdown. RPC failures are logged (throttled) and retried; they never end it.
    pub async fn run(self, heads: watch::Sender<Option<Head>>, shutdown: CancellationToken) {
        let mut last: Option<(Head, Instant)> = None;
        // Learnt time between blocks; unknown until two consecutive blocks were seen.
        let mut block_time: Option<Duration> = None;
        let mut throttle = Throttle::new(Duration::from_secs(30));
        let mut wait = Duration::ZERO;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let block = match self.rpc.latest_block().await {
                Ok(b) => b,
                Err(e) => {
                    if let Some(suppressed) = throttle.allow() {
                        tracing::warn!(error = %e, suppressed, "cannot read the latest block; retrying");
                    }
                    self.status.set_error(Some(format!("reading the latest block: {e}")));
                    failing = true;
                    wait = self.sync_period;
                    continue;
                }
            };
            throttle.reset();
            // Clear only this task's own error: the Listener reports its own.
            if std::mem::take(&mut failing) {
                self.status.set_error(None);
            }
            let head = Head {
                number: block.header.number,
                timestamp: block.header.timestamp,
                base_fee: block.header.base_fee_per_gas,
            };
            let now = Instant::now();
            match last {
                Some((prev, _)) if head.number <= prev.number => {
                    // Nothing new: poll again soon, but not faster than a twentieth of a block.
                    let retry = block_time.map(|t| t / 20).unwrap_or(self.sync_period);
                    wait = retry.clamp(MIN_RETRY, self.sync_period.max(MIN_RETRY));
                }
                _ => {
                    if let Some((prev, seen)) = last
                        && head.number == prev.number + 1
                    {
                        let gap = now.duration_since(seen);
                        block_time = Some(match block_time {
                            Some(t) => (t * 3 + gap) / 4,
                            None => gap,
                        });
                    }
                    last = Some((head, now));
                    self.status.set_head(head.number, head.timestamp);
                    if heads.send(Some(head)).is_err() {
                        return;
                    }
                    // Next poll just before the next block is due: the delay after a block
                    // shrinks each block until one poll comes early and retries.
                    // Capped at four sync periods, so irregular chains (a devnet mining on demand)
                    // are still seen promptly.
                    wait = block_time
                        .map(|t| t.saturating_sub(t / 100 + Duration::from_millis(5)))
                        .unwrap_or(self.sync_period)
                        .min(self.sync_period * 4);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_through_per_period() {
        let mut t = Throttle::new(Duration::from_secs(60));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        t.reset();
        assert_eq!(t.allow(), Some(0));
    }
}

//! Listener: finds the subscriptions the node should serve.
//!
//! At start it reads every subscription from `starting_sub_id + 1` to the Coordinator's highest id
//! in `batch_size` batches through the `Reader` (the snapshot sync), staying `trail_head_blocks`
//! behind head and sleeping `sleep` seconds between batches. Then, on each new block, one `id()`
//! call tells whether subscriptions were created, and only new ones are read. Each subscription is
//! screened on its own (the Guardian, completion, cancellation), so one bad subscription never
//! stops a batch; a failing RPC is retried with capped backoff and shown in `/info`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use alloy::{eips::BlockId, primitives::Address};
use infernet_contracts::bindings::{EIP712Coordinator, Reader};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use infernet_types::Subscription;

use super::{
    blocks::{Head, Throttle},
    lookup::ContainerLookup,
    processor::ProcessorHandle,
    rpc::{Rpc, RpcError},
    status::ChainStatus,
};
use crate::guardian::Guardian;

/// Longest wait between two attempts at a failing batch.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Batches `(from, to_exclusive)` covering `[start, end]` (empty when `start > end`).
pub fn batches(start: u64, end: u64, size: u64) -> Vec<(u64, u64)> {
    let size = size.max(1);
    let mut out = Vec::new();
    let mut from = start;
    while from <= end {
        let to = end.min(from.saturating_add(size - 1));
        out.push((from, to + 1));
        from = to + 1;
    }
    out
}

/// The Listener's settings and collaborators.
pub struct Listener {
    /// Endpoint.
    pub rpc: Rpc,
    /// `EIP712Coordinator`.
    pub coordinator: Address,
    /// `Reader`.
    pub reader: Address,
    /// Blocks to stay behind head.
    pub trail_head_blocks: u64,
    /// Subscriptions per `readSubscriptionBatch`.
    pub batch_size: u64,
    /// Sync starts after this id.
    pub starting_sub_id: u64,
    /// Pause between batches.
    pub sleep: Duration,
    /// Container-id table.
    pub lookup: Arc<ContainerLookup>,
    /// Request filter.
    pub guardian: Guardian,
    /// Where accepted subscriptions go.
    pub processor: ProcessorHandle,
    /// Status for `/info`.
    pub status: Arc<ChainStatus>,
}

/// Why a subscription is not tracked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum Ignored {
    /// The id holds no subscription.
    #[error("Subscription not found")]
    NotFound,
    /// Its owner cancelled it.
    #[error("Subscription cancelled")]
    Cancelled,
    /// `frequency` or `redundancy` is 0.
    #[error("frequency or redundancy is 0: it can never be delivered")]
    Undeliverable,
    /// Past its last interval.
    #[error("Subscription expired")]
    Expired,
    /// Its last interval has all its responses.
    #[error("Subscription completed")]
    Completed,
    /// The Guardian or the payment rules refused it.
    #[error("{} {}", .0.error, .0.params)]
    Rejected(crate::guardian::Rejection),
}

impl Ignored {
    /// The reason without its parameters, to count ignored subscriptions by.
    fn label(&self) -> &'static str {
        match self {
            Self::Rejected(r) => r.error,
            Self::NotFound => "Subscription not found",
            Self::Cancelled => "Subscription cancelled",
            Self::Undeliverable => "frequency or redundancy is 0",
            Self::Expired => "Subscription expired",
            Self::Completed => "Subscription completed",
        }
    }
}

/// The containers of a subscription to track, or why it is not tracked.
fn screen(
    guardian: &Guardian,
    lookup: &ContainerLookup,
    id: u32,
    sub: &Subscription,
    now: u64,
    completed: bool,
) -> Result<Arc<[String]>, Ignored> {
    if sub.is_empty() {
        return Err(Ignored::NotFound);
    }
    if sub.is_cancelled() {
        return Err(Ignored::Cancelled);
    }
    if sub.is_undeliverable() {
        return Err(Ignored::Undeliverable);
    }
    if sub.is_active(now) && sub.interval_at(now) > sub.frequency {
        return Err(Ignored::Expired);
    }
    if completed {
        return Err(Ignored::Completed);
    }
    let hash = format!("{:#x}", sub.container_id);
    let containers = lookup.get(&sub.container_id).unwrap_or_default();
    let rejection = Ignored::Rejected;
    guardian
        .check_subscription_containers(containers, sub.owner, sub.requires_proof(), false, &hash)
        .map_err(rejection)?;
    guardian
        .check_payment(
            containers,
            sub.payment_token,
            sub.payment_amount,
            json!({"subscription_id": id}),
        )
        .map_err(rejection)?;
    Ok(containers.into())
}

impl Listener {
    /// Runs until shutdown: snapshot sync, then follows new blocks.
    pub async fn run(self, mut heads: watch::Receiver<Option<Head>>, shutdown: CancellationToken) {
        let head = tokio::select! {
            _ = shutdown.cancelled() => return,
            h = heads.wait_for(Option::is_some) => match h.ok().and_then(|h| *h) {
                Some(h) => h,
                None => return,
            },
        };
        let mut last_sub = self.starting_sub_id;
        let started = std::time::Instant::now();
        tracing::info!(
            from = last_sub + 1,
            block = head.number.saturating_sub(self.trail_head_blocks),
            "started snapshot sync"
        );
        let Some(mut last_block) = self.sync_to(head, &mut last_sub, &shutdown, true).await else {
            return;
        };
        self.status.set_snapshot_done();
        tracing::info!(up_to = last_sub, block = last_block, took = ?started.elapsed(), "finished snapshot sync");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = heads.changed() => if changed.is_err() { return },
            }
            let Some(head) = *heads.borrow_and_update() else {
                continue;
            };
            if head.number.saturating_sub(self.trail_head_blocks) <= last_block {
                continue;
            }
            match self.sync_to(head, &mut last_sub, &shutdown, false).await {
                Some(block) => last_block = block,
                None => return,
            }
        }
    }

    /// Reads every subscription created up to the trailed block of `head`. Returns that block,
    /// or `None` at shutdown. Retries failures until they clear.
    async fn sync_to(
        &self,
        head: Head,
        last_sub: &mut u64,
        shutdown: &CancellationToken,
        snapshot: bool,
    ) -> Option<u64> {
        let target = head.number.saturating_sub(self.trail_head_blocks);
        let block = BlockId::number(target);
        let mut throttle = Throttle::new(Duration::from_secs(30));
        let next = self
            .retrying("reading Coordinator.id()", &mut throttle, shutdown, || {
                self.rpc.call(self.coordinator, &EIP712Coordinator::idCall {}, block)
            })
            .await?;
        let highest = u64::from(next).saturating_sub(1);
        let ranges = batches(*last_sub + 1, highest, self.batch_size);
        if snapshot && !ranges.is_empty() {
            tracing::info!(
                subscriptions = highest - *last_sub,
                batches = ranges.len(),
                "syncing subscriptions"
            );
        }
        for (i, (from, to)) in ranges.iter().copied().enumerate() {
            let what = format!("syncing subscriptions {from}..{}", to - 1);
            self.retrying(&what, &mut throttle, shutdown, || {
                self.sync_batch(from, to, block, head.timestamp)
            })
            .await?;
            *last_sub = to - 1;
            self.status.set_synced(target, *last_sub);
            if i + 1 < ranges.len() && !self.sleep.is_zero() {
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(self.sleep) => {}
                }
            }
        }
        self.status.set_synced(target, *last_sub);
        Some(target)
    }

    /// Runs `attempt` until it succeeds, backing off (capped) between failures and showing the
    /// failure in `/info`; `None` at shutdown.
    async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        throttle: &mut Throttle,
        shutdown: &CancellationToken,
        mut attempt: F,
    ) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RpcError>>,
    {
        let base = self.sleep.max(Duration::from_millis(250));
        for failures in 0u32.. {
            let e = match attempt().await {
                Ok(v) => {
                    if failures > 0 {
                        self.status.set_error(None);
                    }
                    return Some(v);
                }
                Err(e) => e,
            };
            let delay = base.saturating_mul(1 << failures.min(10)).min(MAX_BACKOFF);
            if let Some(suppressed) = throttle.allow() {
                tracing::warn!(error = %e, attempt = failures + 1, retry_in = ?delay, suppressed, "{what} failed; retrying");
            }
            self.status.set_error(Some(format!("{what}: {e}")));
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        None
    }

    async fn sync_batch(&self, from: u64, to: u64, block: BlockId, now: u64) -> Result<(), RpcError> {
        let (start, end) = (
            u32::try_from(from).unwrap_or(u32::MAX),
            u32::try_from(to).unwrap_or(u32::MAX),
        );
        let subs: Vec<Subscription> = self
            .rpc
            .call(
                self.reader,
                &Reader::readSubscriptionBatchCall {
                    startId: start,
                    endId: end,
                },
                block,
            )
            .await?
            .into_iter()
            .map(Subscription::from)
            .collect();
        // Subscriptions in their last interval may be complete already: one batched read of their
        // response counts (skipped when there are none).
        let last: Vec<(u32, u32)> = subs
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                !s.is_empty() && s.is_active(now) && !s.is_undeliverable() && s.interval_at(now) == s.frequency
            })
            .map(|(i, s)| (start + i as u32, s.frequency))
            .collect();
        let mut completed = BTreeMap::new();
        if !last.is_empty() {
            let counts = self
                .rpc
                .call(
                    self.reader,
                    &Reader::readRedundancyCountBatchCall {
                        ids: last.iter().map(|(id, _)| *id).collect(),
                        intervals: last.iter().map(|(_, k)| *k).collect(),
                    },
                    block,
                )
                .await?;
            for ((id, _), count) in last.iter().zip(counts) {
                completed.insert(*id, count);
            }
        }
        let (mut tracked, mut ignored) = (0usize, BTreeMap::<&str, usize>::new());
        for (i, sub) in subs.into_iter().enumerate() {
            let id = start + i as u32;
            let done = completed.get(&id).is_some_and(|c| *c >= sub.redundancy);
            match screen(&self.guardian, &self.lookup, id, &sub, now, done) {
                Ok(containers) => {
                    tracing::debug!(id, containers = ?containers, "relayed subscription");
                    self.processor.track_onchain(id, sub, containers);
                    tracked += 1;
                }
                Err(reason) => {
                    tracing::debug!(id, %reason, "ignored subscription");
                    *ignored.entry(reason.label()).or_default() += 1;
                }
            }
        }
        tracing::info!(from, to = to - 1, tracked, ignored = ?ignored, "subscriptions synced");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_the_range_exactly() {
        assert_eq!(batches(1, 0, 500), vec![]);
        assert_eq!(batches(1, 1, 500), vec![(1, 2)]);
        assert_eq!(batches(1, 1000, 500), vec![(1, 501), (501, 1001)]);
        assert_eq!(batches(1, 1001, 500), vec![(1, 501), (501, 1001), (1001, 1002)]);
        assert_eq!(batches(10, 5, 3), vec![], "starting past the highest id reads nothing");
    }
}

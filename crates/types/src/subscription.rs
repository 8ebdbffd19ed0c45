//! The Infernet `Subscription` struct and the interval arithmetic of the Coordinator.
//!
//! Time is always a block timestamp passed in, never the local clock (Ritual's node used the
//! local clock and disagreed with the chain when they drifted).

use alloy_primitives::{Address, B256, U256};

/// `activeAt` of a cancelled subscription.
pub const CANCELLED: u32 = u32::MAX;

/// A subscription: the on-chain struct (same fields, same order), or the one a delegated
/// subscription's signer signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Consumer contract.
    pub owner: Address,
    /// First timestamp at which delivery is allowed.
    pub active_at: u32,
    /// Seconds per interval (0: one interval).
    pub period: u32,
    /// Number of intervals.
    pub frequency: u32,
    /// Nodes per interval.
    pub redundancy: u16,
    /// Container pipeline hash.
    pub container_id: B256,
    /// Output goes to the Inbox.
    pub lazy: bool,
    /// Proof verifier (zero: none).
    pub verifier: Address,
    /// Payment per delivery.
    pub payment_amount: U256,
    /// Payment token (zero: ETH).
    pub payment_token: Address,
    /// Consumer wallet.
    pub wallet: Address,
}

impl Subscription {
    /// Whether this is the zeroed struct of an id that does not exist.
    pub fn is_empty(&self) -> bool {
        self.owner == Address::ZERO
    }

    /// Whether the owner cancelled it.
    pub fn is_cancelled(&self) -> bool {
        self.active_at == CANCELLED
    }

    /// Whether it can be delivered at `now` (the Coordinator's `SubscriptionNotActive` check).
    pub fn is_active(&self, now: u64) -> bool {
        !self.is_cancelled() && now >= u64::from(self.active_at)
    }

    /// The interval at `now` (`getSubscriptionInterval`); meaningful only when active.
    pub fn interval_at(&self, now: u64) -> u32 {
        if self.period == 0 {
            return 1;
        }
        let elapsed = now.saturating_sub(u64::from(self.active_at));
        u32::try_from(elapsed / u64::from(self.period) + 1).unwrap_or(u32::MAX)
    }

    /// The first timestamp of interval `k` (1-based).
    pub fn interval_start(&self, k: u32) -> u64 {
        u64::from(self.active_at) + u64::from(k.saturating_sub(1)) * u64::from(self.period)
    }

    /// Whether interval `k` is the last one or beyond (no further interval can be served).
    pub fn is_last(&self, k: u32) -> bool {
        self.period == 0 || k >= self.frequency
    }

    /// Whether a proof is required.
    pub fn requires_proof(&self) -> bool {
        self.verifier != Address::ZERO
    }

    /// Whether deliveries are paid.
    pub fn is_paid(&self) -> bool {
        self.payment_amount > U256::ZERO
    }

    /// Whether the subscription can never be delivered (`frequency` or `redundancy` 0).
    pub fn is_undeliverable(&self) -> bool {
        self.frequency == 0 || self.redundancy == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(active_at: u32, period: u32, frequency: u32) -> Subscription {
        Subscription {
            owner: Address::repeat_byte(1),
            active_at,
            period,
            frequency,
            redundancy: 1,
            container_id: B256::ZERO,
            lazy: false,
            verifier: Address::ZERO,
            payment_amount: U256::ZERO,
            payment_token: Address::ZERO,
            wallet: Address::ZERO,
        }
    }

    #[test]
    fn intervals_follow_the_coordinator() {
        // The SDK reference: activeAt = now - 125, period 60 -> interval 3.
        let s = sub(1_000, 60, 5);
        assert_eq!(s.interval_at(1_125), 3);
        assert_eq!(s.interval_at(1_000), 1);
        assert_eq!(s.interval_at(1_059), 1);
        assert_eq!(s.interval_at(1_060), 2);
        assert_eq!(s.interval_start(3), 1_120);
        assert!(s.is_active(1_000) && !s.is_active(999));
        assert!(!s.is_last(4) && s.is_last(5));
        let callback = sub(1_000, 0, 1);
        assert_eq!(callback.interval_at(5_000_000), 1);
        assert!(callback.is_last(1));
        let cancelled = sub(CANCELLED, 60, 5);
        assert!(cancelled.is_cancelled() && !cancelled.is_active(u64::MAX));
    }
}

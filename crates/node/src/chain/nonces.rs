//! The Wallet's decision core: nonces and fees. Pure: plain data in, decisions out; the Wallet
//! task around it signs, sends and reads the chain.
//!
//! - Fees follow web3's defaults, as Ritual's node (node reference §7.9): EIP-1559
//!   `max_fee = 2 · base_fee + priority_fee`, legacy `gas_price = base_fee`.
//! - A transaction unmined after [`STUCK_BLOCKS`] blocks and [`STUCK_MIN`] is replaced: same
//!   nonce, both fees raised 25 % (every client's replacement rule asks for 10 %), at most
//!   [`MAX_REPLACEMENTS`] times. Ritual's node never replaced one (SE-37).
//! - A refused transaction at the end of a batch gives its nonce back; one before accepted ones
//!   leaves a gap, filled with an empty transfer so the later ones can be mined.
//! - At start, transactions an earlier run left pending are waited for, and after
//!   [`STARTUP_WAIT`] cancelled with empty transfers at a high fee, so a restart never races its
//!   own deliveries.

use std::time::Duration;

use super::rpc::{Refusal, SendError};

/// Blocks a transaction may stay unmined before it is replaced with higher fees.
pub const STUCK_BLOCKS: u64 = 4;
/// Shortest time before a replacement (slow chains have few blocks).
pub const STUCK_MIN: Duration = Duration::from_secs(10);
/// Replacements of one transaction before the wallet stops raising its fees.
pub const MAX_REPLACEMENTS: u32 = 6;
/// Priority fee when the endpoint cannot tell one (1 gwei).
pub const DEFAULT_PRIORITY_FEE: u128 = 1_000_000_000;
/// Longest wait at start for an earlier run's transactions before cancelling them.
pub const STARTUP_WAIT: Duration = Duration::from_secs(60);
/// Fee doublings tried for one cancelling transfer.
pub const CANCEL_TRIES: u32 = 5;
/// Blocks a looked-up priority fee is reused for.
pub const PRIORITY_FEE_BLOCKS: u64 = 50;

/// The fees of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    /// `maxFeePerGas`, or the gas price of a legacy transaction.
    pub max_fee: u128,
    /// `maxPriorityFeePerGas` (unused by legacy transactions).
    pub priority_fee: u128,
    /// A chain without EIP-1559 (no base fee in its blocks).
    pub legacy: bool,
}

/// Fees for a transaction sent now, given the base fee and the priority fee the endpoint
/// suggests.
pub fn fees(base_fee: u128, priority_fee: u128, legacy: bool) -> Fees {
    if legacy {
        Fees {
            max_fee: base_fee,
            priority_fee: base_fee,
            legacy,
        }
    } else {
        Fees {
            max_fee: base_fee.saturating_mul(2).saturating_add(priority_fee),
            priority_fee,
            legacy,
        }
    }
}

/// What to do at start, seeing the account's `latest` and `pending` nonces after waiting
/// `waited`; `cancelled` when the earlier transactions were cancelled already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    /// Nothing pending: send from this nonce.
    Ready(u64),
    /// Wait for the pending ones to be mined.
    Wait,
    /// They are stuck: replace nonces `from..to` with empty transfers.
    Cancel {
        /// First pending nonce.
        from: u64,
        /// One past the last.
        to: u64,
    },
}

/// See [`Startup`].
pub fn startup(latest: u64, pending: u64, waited: Duration, cancelled: bool) -> Startup {
    if latest >= pending {
        Startup::Ready(latest)
    } else if waited > STARTUP_WAIT && !cancelled {
        Startup::Cancel {
            from: latest,
            to: pending,
        }
    } else {
        Startup::Wait
    }
}

/// First fee of a cancelling transfer: well above what the stuck one may have paid.
pub fn cancel_fee(base_fee: u128) -> u128 {
    base_fee.saturating_mul(4).max(DEFAULT_PRIORITY_FEE * 4)
}

/// What follows one cancelling transfer's send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelStep {
    /// The nonce is taken care of: on to the next.
    Next,
    /// Try again at this fee.
    Raise(u128),
}

/// See [`CancelStep`]; `fee` is the fee just tried.
pub fn after_cancel(sent: Result<(), &SendError>, fee: u128) -> CancelStep {
    use super::rpc::Refusal::{AlreadyKnown, NonceTooLow};
    match sent {
        // Mined meanwhile, or this very transfer is in the pool: done either way.
        Ok(()) | Err(SendError::Refused(NonceTooLow(_) | AlreadyKnown(_))) => CancelStep::Next,
        Err(_) => CancelStep::Raise(fee.saturating_mul(2)),
    }
}

/// What a send's answer means for one transaction of a batch, in round `round` (0 or 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Taken (or possibly taken: no answer): watch it for its receipt.
    Sent,
    /// Its nonce is out of step with the chain: sign it again from the chain's nonce.
    Resign,
    /// Refused (why): it will not be mined, and its nonce is free again.
    Failed(Refusal),
}

/// See [`Verdict`]. A transaction without an answer is watched like a sent one (its hash is
/// known); if it never shows up it is replaced.
pub fn verdict<T>(answer: Result<T, SendError>, round: u32) -> Verdict {
    match answer {
        Ok(_) | Err(SendError::NoAnswer(_)) => Verdict::Sent,
        Err(SendError::Refused(Refusal::AlreadyKnown(_))) => Verdict::Sent,
        Err(SendError::Refused(r)) if round == 0 && r.is_nonce_error() => Verdict::Resign,
        Err(SendError::Refused(r)) => Verdict::Failed(r),
    }
}

/// Nonces of refused transactions: those at the end give their nonces back (the new next
/// nonce), those before accepted ones are gaps to fill.
pub fn gaps(mut failed: Vec<u64>, mut next_nonce: u64) -> (u64, Vec<u64>) {
    failed.sort_unstable();
    failed.dedup();
    while failed.last().is_some_and(|n| n + 1 == next_nonce) {
        failed.pop();
        next_nonce -= 1;
    }
    (next_nonce, failed)
}

/// An unmined transaction's nonce is below the account's `latest`: another transaction took it,
/// unless its own receipt may just be late (it was sent in the last block).
pub fn nonce_taken(nonce: u64, latest: u64, head_block: u64, sent_block: u64) -> bool {
    nonce < latest && head_block > sent_block + 1
}

/// Whether a transaction sent at `sent_block`, `since_sent` ago, is stuck at `head_block`.
pub fn is_stuck(head_block: u64, sent_block: u64, since_sent: Duration) -> bool {
    head_block >= sent_block + STUCK_BLOCKS && since_sent >= STUCK_MIN
}

/// What to do with a stuck transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacement {
    /// Send it again with these fees.
    Bump(Fees),
    /// Its fees were raised [`MAX_REPLACEMENTS`] times: keep watching (it may still be mined,
    /// and its nonce must not be reused).
    KeepWatching,
}

/// See [`Replacement`]: `fees` are the stuck one's, `replacements` its bumps so far.
pub fn replacement(fees: Fees, replacements: u32, base_fee: u128) -> Replacement {
    if replacements >= MAX_REPLACEMENTS {
        return Replacement::KeepWatching;
    }
    let priority_fee = fees.priority_fee.saturating_mul(5) / 4 + 1;
    let max_fee = (fees.max_fee.saturating_mul(5) / 4 + 1).max(base_fee.saturating_mul(2) + priority_fee);
    Replacement::Bump(Fees {
        max_fee,
        priority_fee,
        legacy: fees.legacy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::rpc::{RpcError, RpcErrorKind};

    fn refused(r: Refusal) -> Result<(), SendError> {
        Err(SendError::Refused(r))
    }

    fn no_answer() -> SendError {
        SendError::NoAnswer(RpcError::Call {
            method: "eth_sendRawTransaction".into(),
            message: "timed out".into(),
            kind: RpcErrorKind::Timeout,
            revert: None,
        })
    }

    #[test]
    fn fees_follow_web3s_defaults() {
        assert_eq!(
            fees(10, 3, false),
            Fees {
                max_fee: 23,
                priority_fee: 3,
                legacy: false
            }
        );
        assert_eq!(
            fees(10, 3, true),
            Fees {
                max_fee: 10,
                priority_fee: 10,
                legacy: true
            }
        );
        assert_eq!(fees(u128::MAX, 1, false).max_fee, u128::MAX);
    }

    #[test]
    fn startup_waits_for_an_earlier_run_then_cancels_once() {
        let long = STARTUP_WAIT + Duration::from_secs(1);
        assert_eq!(startup(5, 5, Duration::ZERO, false), Startup::Ready(5));
        assert_eq!(startup(6, 5, long, true), Startup::Ready(6));
        assert_eq!(startup(5, 7, Duration::ZERO, false), Startup::Wait);
        assert_eq!(startup(5, 7, STARTUP_WAIT, false), Startup::Wait);
        assert_eq!(startup(5, 7, long, false), Startup::Cancel { from: 5, to: 7 });
        assert_eq!(
            startup(5, 7, long, true),
            Startup::Wait,
            "cancelled already: wait for them"
        );
    }

    #[test]
    fn cancelling_a_range_raises_the_fee_until_the_nonce_is_taken() {
        assert_eq!(cancel_fee(0), DEFAULT_PRIORITY_FEE * 4);
        assert_eq!(cancel_fee(DEFAULT_PRIORITY_FEE * 2), DEFAULT_PRIORITY_FEE * 8);
        assert_eq!(after_cancel(Ok(()), 8), CancelStep::Next);
        for taken in [
            Refusal::NonceTooLow("nonce too low".into()),
            Refusal::AlreadyKnown("already known".into()),
        ] {
            assert_eq!(after_cancel(refused(taken).as_ref().map(|_| ()), 8), CancelStep::Next);
        }
        let underpriced = refused(Refusal::Underpriced("replacement transaction underpriced".into()));
        assert_eq!(after_cancel(underpriced.as_ref().map(|_| ()), 8), CancelStep::Raise(16));
        assert_eq!(after_cancel(Err(&no_answer()), u128::MAX), CancelStep::Raise(u128::MAX));
    }

    #[test]
    fn each_send_answer_has_one_verdict() {
        let ok: Result<(), SendError> = Ok(());
        assert_eq!(verdict(ok, 0), Verdict::Sent);
        assert_eq!(verdict(Err::<(), _>(no_answer()), 1), Verdict::Sent);
        let known = refused(Refusal::AlreadyKnown("already known".into()));
        assert_eq!(verdict(known, 0), Verdict::Sent);
        for nonce in [
            Refusal::NonceTooLow("nonce too low".into()),
            Refusal::NonceTooHigh("nonce too high".into()),
        ] {
            assert_eq!(verdict(refused(nonce.clone()), 0), Verdict::Resign);
            assert_eq!(
                verdict(refused(nonce.clone()), 1),
                Verdict::Failed(nonce),
                "a third round is not tried"
            );
        }
        for other in [
            Refusal::Underpriced("underpriced".into()),
            Refusal::InsufficientFunds("insufficient funds".into()),
            Refusal::Reverted {
                selector: None,
                message: "reverted".into(),
            },
            Refusal::Other("invalid sender".into()),
        ] {
            assert_eq!(verdict(refused(other.clone()), 0), Verdict::Failed(other));
        }
    }

    #[test]
    fn refused_nonces_at_the_end_are_given_back_and_earlier_ones_are_gaps() {
        assert_eq!(gaps(vec![], 10), (10, vec![]));
        assert_eq!(gaps(vec![9, 8], 10), (8, vec![]), "all at the end");
        assert_eq!(gaps(vec![9, 5, 6], 10), (9, vec![5, 6]));
        assert_eq!(gaps(vec![5], 10), (10, vec![5]), "before accepted ones");
        assert_eq!(gaps(vec![7, 7, 9, 8], 10), (7, vec![]), "duplicates count once");
    }

    #[test]
    fn a_nonce_below_the_chains_is_given_up_after_a_block_of_grace() {
        assert!(!nonce_taken(5, 5, 100, 90), "not below the chain's nonce");
        assert!(!nonce_taken(4, 5, 100, 99), "its receipt may be a block late");
        assert!(!nonce_taken(4, 5, 100, 100));
        assert!(nonce_taken(4, 5, 101, 99));
    }

    #[test]
    fn a_transaction_is_stuck_after_blocks_and_time_both() {
        assert!(!is_stuck(13, 10, STUCK_MIN), "three blocks");
        assert!(!is_stuck(14, 10, STUCK_MIN - Duration::from_millis(1)), "too soon");
        assert!(is_stuck(14, 10, STUCK_MIN));
    }

    #[test]
    fn a_replacement_raises_both_fees_by_a_quarter_and_stops_after_the_last() {
        let old = Fees {
            max_fee: 100,
            priority_fee: 10,
            legacy: false,
        };
        assert_eq!(
            replacement(old, 0, 10),
            Replacement::Bump(Fees {
                max_fee: 126,
                priority_fee: 13,
                legacy: false
            })
        );
        // A base fee that rose meanwhile lifts the max fee above it.
        assert_eq!(
            replacement(old, 3, 100),
            Replacement::Bump(Fees {
                max_fee: 213,
                priority_fee: 13,
                legacy: false
            })
        );
        let legacy = Fees { legacy: true, ..old };
        assert!(matches!(replacement(legacy, 0, 10), Replacement::Bump(f) if f.legacy));
        assert_ne!(replacement(old, MAX_REPLACEMENTS - 1, 0), Replacement::KeepWatching);
        assert_eq!(replacement(old, MAX_REPLACEMENTS, 0), Replacement::KeepWatching);
    }
}

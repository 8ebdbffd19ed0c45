//! Infernet contract errors: revert selectors to names, messages, and what they mean for a
//! delivery.

use alloy::sol_types::SolError;
use infernet_contracts::bindings;

/// A custom error of the Infernet contracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfernetError {
    /// 4-byte selector.
    pub selector: [u8; 4],
    /// Solidity name.
    pub name: &'static str,
    /// What it means, for logs.
    pub message: &'static str,
}

/// An entry of the table: the selector comes from the contract's generated binding.
macro_rules! error {
    ($contract:ident :: $name:ident, $message:expr) => {
        InfernetError {
            selector: <bindings::$contract::$name as SolError>::SELECTOR,
            name: stringify!($name),
            message: $message,
        }
    };
}

const TABLE: &[InfernetError] = &[
    error!(
        EIP712Coordinator::InvalidWallet,
        "Invalid wallet, please make sure you're using a wallet created from Infernet's `WalletFactory`."
    ),
    error!(
        EIP712Coordinator::IntervalMismatch,
        "Interval mismatch. The interval is not the current one."
    ),
    error!(
        EIP712Coordinator::IntervalCompleted,
        "Interval completed. Redundancy has been already met for the current interval"
    ),
    error!(EIP712Coordinator::UnauthorizedVerifier, "Verifier is not authorized."),
    error!(
        EIP712Coordinator::NodeRespondedAlready,
        "Node already responded for this interval"
    ),
    error!(EIP712Coordinator::SubscriptionNotFound, "Subscription not found"),
    error!(EIP712Coordinator::ProofRequestNotFound, "Proof request not found"),
    error!(
        EIP712Coordinator::NotSubscriptionOwner,
        "Caller is not the owner of the subscription"
    ),
    error!(
        EIP712Coordinator::SubscriptionCompleted,
        "Subscription is already completed, another node has likely already delivered the response"
    ),
    error!(EIP712Coordinator::SubscriptionNotActive, "Subscription is not active"),
    error!(
        EIP712Coordinator::UnsupportedVerifierToken,
        "Unsupported verifier token. Attempting to pay a `IVerifier`-contract in a token it does not support receiving payments in"
    ),
    error!(EIP712Coordinator::SignerMismatch, "Signer does not match."),
    error!(EIP712Coordinator::SignatureExpired, "EIP-712 Signature has expired."),
    error!(
        EIP712Coordinator::InvalidSignature,
        "The signature does not recover to an address."
    ),
    error!(Wallet::TransferFailed, "Token transfer failed."),
    error!(Wallet::ETHTransferFailed, "ETH transfer failed."),
    error!(
        Wallet::InsufficientFunds,
        "Insufficient funds. You either are trying to withdraw `amount > unlockedBalance` or are trying to escrow `amount > unlockedBalance` or attempting to unlock `amount > lockedBalance`"
    ),
    error!(Wallet::InsufficientAllowance, "Insufficient allowance."),
    error!(
        Allowlist::NodeNotAllowed,
        "Node is not allowed to deliver this subscription."
    ),
    error!(TestToken::InsufficientBalance, "Insufficient balance."),
    error!(Wallet::NotCoordinator, "Caller is not the coordinator."),
    error!(EIP712Coordinator::Reentrancy, "Reentrant call."),
];

impl InfernetError {
    /// The error whose selector starts `revert`.
    pub fn decode(revert: &[u8]) -> Option<Self> {
        let selector: [u8; 4] = revert.get(..4)?.try_into().ok()?;
        TABLE.iter().find(|e| e.selector == selector).copied()
    }

    /// The error named in an error text (some endpoints put the selector only in the message);
    /// read once, where an RPC error is made ([`super::rpc::Rpc`]).
    pub fn find_in(text: &str) -> Option<Self> {
        let lower = text.to_ascii_lowercase();
        TABLE
            .iter()
            .find(|e| {
                lower.contains(&format!("0x{}", alloy::primitives::hex::encode(e.selector))) || text.contains(e.name)
            })
            .copied()
    }

    /// Whether the interval is settled for this node, so nothing should be sent for it:
    /// delivered by us or by enough others, or the subscription is over.
    pub fn interval_is_settled(&self) -> bool {
        matches!(
            self.name,
            "NodeRespondedAlready" | "IntervalCompleted" | "SubscriptionCompleted" | "IntervalMismatch"
        )
    }

    /// Whether the subscription cannot be served any more (drop it).
    pub fn subscription_is_over(&self) -> bool {
        matches!(
            self.name,
            "SubscriptionCompleted"
                | "SubscriptionNotFound"
                | "SignerMismatch"
                | "SignatureExpired"
                | "InvalidSignature"
        )
    }
}

impl std::fmt::Display for InfernetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_selector_matches_the_compiled_contracts() {
        let text = include_str!("../../../../contracts/out/selectors.json");
        for e in TABLE {
            let entry = format!("\"{}()\": \"0x{}\"", e.name, alloy::primitives::hex::encode(e.selector));
            assert!(text.contains(&entry), "{entry} not in contracts/out/selectors.json");
        }
        assert!(InfernetError::decode(&[0, 1]).is_none());
        let found = InfernetError::find_in("execution reverted: custom error 0x88a21e4f").unwrap();
        assert_eq!(found.name, "NodeRespondedAlready");
        assert!(found.interval_is_settled());
    }
}

//! Infernet contract errors: revert selectors to names, messages, and what they mean for a
//! delivery.

use alloy::primitives::Bytes;

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

const fn e(selector: [u8; 4], name: &'static str, message: &'static str) -> InfernetError {
    InfernetError {
        selector,
        name,
        message,
    }
}

const TABLE: &[InfernetError] = &[
    e(
        [0x23, 0x45, 0x5b, 0xa1],
        "InvalidWallet",
        "Invalid wallet, please make sure you're using a wallet created from Infernet's `WalletFactory`.",
    ),
    e(
        [0x4d, 0xb3, 0x10, 0xc3],
        "IntervalMismatch",
        "Interval mismatch. The interval is not the current one.",
    ),
    e(
        [0x2f, 0x4c, 0xa8, 0x5b],
        "IntervalCompleted",
        "Interval completed. Redundancy has been already met for the current interval",
    ),
    e(
        [0xb9, 0x85, 0x7a, 0xa1],
        "UnauthorizedVerifier",
        "Verifier is not authorized.",
    ),
    e(
        [0x88, 0xa2, 0x1e, 0x4f],
        "NodeRespondedAlready",
        "Node already responded for this interval",
    ),
    e(
        [0x1a, 0x00, 0x35, 0x4f],
        "SubscriptionNotFound",
        "Subscription not found",
    ),
    e(
        [0x1d, 0x68, 0xb3, 0x7c],
        "ProofRequestNotFound",
        "Proof request not found",
    ),
    e(
        [0xa7, 0xfb, 0xa7, 0x11],
        "NotSubscriptionOwner",
        "Caller is not the owner of the subscription",
    ),
    e(
        [0xae, 0x67, 0x04, 0xa7],
        "SubscriptionCompleted",
        "Subscription is already completed, another node has likely already delivered the response",
    ),
    e(
        [0xef, 0xb7, 0x4e, 0xfe],
        "SubscriptionNotActive",
        "Subscription is not active",
    ),
    e(
        [0xe2, 0x37, 0x27, 0x99],
        "UnsupportedVerifierToken",
        "Unsupported verifier token. Attempting to pay a `IVerifier`-contract in a token it does not support receiving payments in",
    ),
    e([0x10, 0xc7, 0x4b, 0x03], "SignerMismatch", "Signer does not match."),
    e(
        [0x08, 0x19, 0xbd, 0xcd],
        "SignatureExpired",
        "EIP-712 Signature has expired.",
    ),
    e(
        [0x8b, 0xaa, 0x57, 0x9f],
        "InvalidSignature",
        "The signature does not recover to an address.",
    ),
    e([0x90, 0xb8, 0xec, 0x18], "TransferFailed", "Token transfer failed."),
    e([0xb1, 0x2d, 0x13, 0xeb], "ETHTransferFailed", "ETH transfer failed."),
    e(
        [0x35, 0x66, 0x80, 0xb7],
        "InsufficientFunds",
        "Insufficient funds. You either are trying to withdraw `amount > unlockedBalance` or are trying to escrow `amount > unlockedBalance` or attempting to unlock `amount > lockedBalance`",
    ),
    e(
        [0x13, 0xbe, 0x25, 0x2b],
        "InsufficientAllowance",
        "Insufficient allowance.",
    ),
    e(
        [0x42, 0x76, 0x49, 0x46],
        "NodeNotAllowed",
        "Node is not allowed to deliver this subscription.",
    ),
    e([0xf4, 0xd6, 0x78, 0xb8], "InsufficientBalance", "Insufficient balance."),
    e(
        [0x9e, 0xc8, 0x53, 0xe6],
        "NotCoordinator",
        "Caller is not the coordinator.",
    ),
    e([0xab, 0x14, 0x3c, 0x06], "Reentrancy", "Reentrant call."),
];

impl InfernetError {
    /// The error whose selector starts `revert`.
    pub fn decode(revert: &[u8]) -> Option<Self> {
        let selector: [u8; 4] = revert.get(..4)?.try_into().ok()?;
        TABLE.iter().find(|e| e.selector == selector).copied()
    }

    /// The error named in an error text (some endpoints put the selector only in the message).
    pub fn find_in(text: &str) -> Option<Self> {
        let lower = text.to_ascii_lowercase();
        TABLE
            .iter()
            .find(|e| {
                lower.contains(&format!("0x{}", alloy::primitives::hex::encode(e.selector))) || text.contains(e.name)
            })
            .copied()
    }

    /// From revert data or, failing that, from the error text.
    pub fn from_revert(data: Option<&Bytes>, text: &str) -> Option<Self> {
        data.and_then(|d| Self::decode(d)).or_else(|| Self::find_in(text))
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

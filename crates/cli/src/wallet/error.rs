//! How `infernet wallet` fails, and which failures are the command line's fault.

use alloy::primitives::{Address, TxHash};

use crate::commands::Failure;

#[derive(Debug, thiserror::Error)]
pub(super) enum WalletCmdError {
    /// A write was asked for without a key.
    #[error("wallet {command} sends a transaction: give --private-key or set INFERNET_PRIVATE_KEY")]
    MissingKey {
        /// The subcommand.
        command: &'static str,
    },
    /// The key does not parse (its text is not repeated).
    #[error("--private-key: not a private key; expected 32 bytes of hex, e.g. 0xac09…ff80")]
    BadKey,
    /// `create` without a Registry.
    #[error("wallet create finds the WalletFactory through the Registry: give --registry or set INFERNET_REGISTRY")]
    MissingRegistry,
    /// `--rpc-url` is not a URL.
    #[error("--rpc-url: {0:?} is not a URL; expected e.g. http://127.0.0.1:8545")]
    BadRpcUrl(String),
    /// The chain could not be reached.
    #[error("could not reach the chain at {url}: {message}; check --rpc-url (or INFERNET_RPC_URL)")]
    Unreachable {
        /// The endpoint, credentials hidden.
        url: String,
        /// What the transport said.
        message: String,
    },
    /// A contract reverted with an error we could decode.
    #[error("{call} reverted with {error}{}", hint.as_deref().map(|h| format!(": {h}")).unwrap_or_default())]
    Reverted {
        /// Contract and function, e.g. `Wallet.withdraw`.
        call: &'static str,
        /// The custom error's signature or the revert reason.
        error: String,
        /// What to do about it.
        hint: Option<String>,
    },
    /// The address called has no code.
    #[error("{call}: {address} has no contract code on this chain; check the address and --rpc-url")]
    NoCode {
        /// Contract and function.
        call: &'static str,
        /// The address called.
        address: Address,
    },
    /// The chain refused a call or transaction for another reason (funds for gas, bad nonce, …).
    #[error("{call} failed: {message}")]
    Refused {
        /// Contract and function.
        call: &'static str,
        /// What the chain said.
        message: String,
    },
    /// `--wallet` was not created by the Registry's WalletFactory.
    #[error(
        "{wallet} is not a Wallet of the WalletFactory {factory}; create one with `infernet wallet create`, or \
         check --registry"
    )]
    NotAWallet {
        /// The address given.
        wallet: Address,
        /// The Registry's factory.
        factory: Address,
    },
    /// A transaction was sent but not confirmed.
    #[error("{call}: no receipt for transaction {tx}: {message}; check it before sending again")]
    Receipt {
        /// Contract and function.
        call: &'static str,
        /// The transaction.
        tx: TxHash,
        /// Why.
        message: String,
    },
    /// A transaction was mined but reverted.
    #[error("{call}: transaction {tx} was mined but reverted")]
    MinedButReverted {
        /// Contract and function.
        call: &'static str,
        /// The transaction.
        tx: TxHash,
    },
    /// A token's `transfer` returned false.
    #[error("token {token} refused the transfer (transfer returned false); check the key's token balance")]
    TransferFalse {
        /// The token.
        token: Address,
    },
    /// `createWallet` did not report the new wallet.
    #[error("WalletFactory.createWallet: transaction {tx} emitted no WalletCreated event")]
    NoWalletCreated {
        /// The transaction.
        tx: TxHash,
    },
}

impl WalletCmdError {
    /// The command line is at fault (exit 2), not the chain (exit 1).
    pub(super) fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::MissingKey { .. } | Self::BadKey | Self::MissingRegistry | Self::BadRpcUrl(_)
        )
    }
}

impl From<WalletCmdError> for Failure {
    fn from(e: WalletCmdError) -> Self {
        if e.is_usage() {
            Self::Usage(e.to_string())
        } else {
            Self::Runtime(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_exit_2_and_chain_errors_exit_1() {
        assert!(WalletCmdError::BadKey.is_usage());
        assert!(WalletCmdError::MissingKey { command: "fund" }.is_usage());
        assert!(WalletCmdError::MissingRegistry.is_usage());
        let reverted = WalletCmdError::Reverted {
            call: "Wallet.withdraw",
            error: "InsufficientFunds()".into(),
            hint: None,
        };
        assert!(!reverted.is_usage());
        assert_eq!(
            reverted.to_string(),
            "Wallet.withdraw reverted with InsufficientFunds()"
        );
        assert!(matches!(Failure::from(WalletCmdError::BadKey), Failure::Usage(_)));
        assert!(matches!(Failure::from(reverted), Failure::Runtime(_)));
    }
}

//! The chain side of `infernet wallet`: the connection, contract calls and transactions, and the
//! decoding of a refusal into a [`WalletCmdError`] that says why.

use std::time::Duration;

use alloy::contract::Error as ContractError;
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, PendingTransactionBuilder, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{GenericContractError, SolInterface};
use alloy::transports::RpcError;
use infernet_contracts::bindings::TestToken::TestTokenErrors;
use infernet_contracts::bindings::Wallet::WalletErrors;
use infernet_contracts::bindings::{Registry, WalletFactory};
use infernet_service::secret::SensitiveUrl;

use super::{ChainArgs, error::WalletCmdError};

/// How long a write waits to be mined before giving up (the transaction may still be mined later).
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(120);

alloy::sol! {
    /// The part of ERC-20 the wallet commands use.
    #[sol(rpc)]
    interface IERC20 {
        function balanceOf(address account) external view returns (uint256);
        function transfer(address to, uint256 amount) external returns (bool);
    }
}

/// A connection to the chain, signing with the key if there is one.
pub(super) struct Chain {
    pub(super) provider: DynProvider,
    /// Shown as `scheme://host[:port]`: paths, user info and queries often carry API keys.
    url: SensitiveUrl,
    pub(super) registry: Option<Address>,
    /// The key's address, for writes.
    from: Option<Address>,
}

impl Chain {
    pub(super) fn connect(args: &ChainArgs, signer: Option<PrivateKeySigner>) -> Result<Self, WalletCmdError> {
        let text = args.rpc_url.trim();
        let with_scheme = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let url = SensitiveUrl::parse(&with_scheme).map_err(|_| WalletCmdError::BadRpcUrl(args.rpc_url.clone()))?;
        infernet_contracts::install_tls_provider();
        let from = signer.as_ref().map(PrivateKeySigner::address);
        let provider = match signer {
            Some(signer) => infernet_contracts::signing_provider(url.expose().clone(), signer),
            None => ProviderBuilder::new().connect_http(url.expose().clone()).erased(),
        };
        Ok(Self {
            provider,
            url,
            registry: args.registry,
            from,
        })
    }

    /// Classifies an error of `call` at `address`: unreachable chain, decoded revert, no code, refusal.
    pub(super) fn error(&self, call: &'static str, address: Address, e: ContractError) -> WalletCmdError {
        if let ContractError::ZeroData(..) = e {
            return WalletCmdError::NoCode { call, address };
        }
        if let ContractError::TransportError(RpcError::Transport(kind)) = &e {
            return WalletCmdError::Unreachable {
                url: self.url.to_string(),
                message: self.url.scrub(&kind.to_string()),
            };
        }
        if let Some(error) = e.as_decoded_interface_error::<WalletErrors>() {
            let signature = WalletErrors::signature_by_selector(error.selector()).unwrap_or("an unknown error");
            return WalletCmdError::Reverted {
                call,
                error: signature.to_string(),
                hint: self.hint(&error),
            };
        }
        if let Some(error) = e.as_decoded_interface_error::<TestTokenErrors>() {
            let signature = TestTokenErrors::signature_by_selector(error.selector()).unwrap_or("an unknown error");
            return WalletCmdError::Reverted {
                call,
                error: signature.to_string(),
                hint: None,
            };
        }
        if e.as_revert_data().is_some_and(|data| data.is_empty()) {
            let contract = call.split('.').next().unwrap_or(call);
            return WalletCmdError::Reverted {
                call,
                error: "no reason".into(),
                hint: Some(format!("is {address} the right {contract} address?")),
            };
        }
        if let Some(error) = e.as_decoded_interface_error::<GenericContractError>() {
            return WalletCmdError::Reverted {
                call,
                error: error.to_string(),
                hint: None,
            };
        }
        WalletCmdError::Refused {
            call,
            message: self.url.scrub(&e.to_string()),
        }
    }

    /// What to do about a Wallet error.
    fn hint(&self, error: &WalletErrors) -> Option<String> {
        let key = self.from.map(|a| format!(" (this key is {a})")).unwrap_or_default();
        match error {
            WalletErrors::Unauthorized(_) => Some(format!(
                "only the wallet's owner may do this; sign with the owner's key{key}, see `infernet wallet owner`"
            )),
            WalletErrors::InsufficientFunds(_) => Some(
                "the amount is more than the wallet's unlocked balance (see `infernet wallet balance`; funds \
                 escrowed for subscriptions stay locked)"
                    .into(),
            ),
            _ => None,
        }
    }

    /// Waits for `pending` to be mined and checks it succeeded.
    /// Sends `call` (a contract call on `to`) and waits for its successful receipt.
    pub(super) async fn transact<P: Provider, D: alloy::contract::CallDecoder>(
        &self,
        name: &'static str,
        to: Address,
        call: alloy::contract::CallBuilder<P, D>,
    ) -> Result<TransactionReceipt, WalletCmdError> {
        let pending = call.send().await.map_err(|e| self.error(name, to, e))?;
        self.confirm(name, pending).await
    }

    pub(super) async fn confirm(
        &self,
        call: &'static str,
        pending: PendingTransactionBuilder<alloy::network::Ethereum>,
    ) -> Result<TransactionReceipt, WalletCmdError> {
        let tx = *pending.tx_hash();
        let receipt = pending
            .with_timeout(Some(RECEIPT_TIMEOUT))
            .get_receipt()
            .await
            .map_err(|e| WalletCmdError::Receipt {
                call,
                tx,
                message: self.url.scrub(&e.to_string()),
            })?;
        if !receipt.status() {
            return Err(WalletCmdError::MinedButReverted { call, tx });
        }
        Ok(receipt)
    }

    /// The Registry's WalletFactory.
    pub(super) async fn factory(&self, registry: Address) -> Result<Address, WalletCmdError> {
        Registry::new(registry, &self.provider)
            .WALLET_FACTORY()
            .call()
            .await
            .map_err(|e| self.error("Registry.WALLET_FACTORY", registry, e))
    }

    /// Refuses an address that is not a wallet: with --registry, one the factory did not create;
    /// without, one without code (ETH sent there would be gone).
    pub(super) async fn ensure_wallet(&self, wallet: Address) -> Result<(), WalletCmdError> {
        let Some(registry) = self.registry else {
            let code = self
                .provider
                .get_code_at(wallet)
                .await
                .map_err(|e| self.error("eth_getCode", wallet, e.into()))?;
            return if code.is_empty() {
                Err(WalletCmdError::NoCode {
                    call: "--wallet",
                    address: wallet,
                })
            } else {
                Ok(())
            };
        };
        let factory = self.factory(registry).await?;
        let valid = WalletFactory::new(factory, &self.provider)
            .isValidWallet(wallet)
            .call()
            .await
            .map_err(|e| self.error("WalletFactory.isValidWallet", factory, e))?;
        if valid {
            Ok(())
        } else {
            Err(WalletCmdError::NotAWallet { wallet, factory })
        }
    }

    pub(super) async fn balance(&self, wallet: Address, token: Address) -> Result<U256, WalletCmdError> {
        if token.is_zero() {
            return self
                .provider
                .get_balance(wallet)
                .await
                .map_err(|e| self.error("eth_getBalance", wallet, e.into()));
        }
        IERC20::new(token, &self.provider)
            .balanceOf(wallet)
            .call()
            .await
            .map_err(|e| self.error("ERC20.balanceOf", token, e))
    }
}

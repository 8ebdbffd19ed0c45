//! Deployment of the protocol contracts in the reference order (Registry first, with the pre-computed CREATE
//! addresses of the five contracts that follow it), and of the example consumers used by the devnet.

use alloy::contract::RawCallBuilder;
use alloy::network::ReceiptResponse;
use alloy::primitives::{Address, B256};
use alloy::providers::Provider;

use crate::bindings::{
    EIP712Coordinator, ExampleCallbackConsumer, ExampleDelegatorConsumer, ExampleSubscriptionConsumer, Fee, Inbox,
    Reader, Registry, TestToken, WalletFactory,
};

/// Protocol fee the reference deployment script uses: 500 basis points (5 %).
pub const DEFAULT_FEE_BPS: u16 = 500;

/// Errors of deploying.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A JSON-RPC request failed (node down, wrong URL).
    #[error("JSON-RPC request failed: {0}")]
    Rpc(#[from] alloy::transports::TransportError),
    /// Sending a deployment or call failed (estimation revert, funds).
    #[error("contract transaction failed: {0}")]
    Contract(#[from] alloy::contract::Error),
    /// Waiting for a receipt failed.
    #[error("waiting for the receipt failed: {0}")]
    Receipt(#[from] alloy::providers::PendingTransactionError),
    /// A deployment transaction was mined but reverted.
    #[error("deploying {contract} reverted (tx {tx})")]
    Reverted {
        /// Contract name.
        contract: &'static str,
        /// Transaction hash.
        tx: B256,
    },
    /// A contract did not land at its pre-computed address: another transaction from the deployer interleaved.
    #[error(
        "{contract} deployed at {actual:?}, expected {expected}: do not send other transactions from the deployer \
         while deploying"
    )]
    AddressMismatch {
        /// Contract name.
        contract: &'static str,
        /// Pre-computed address.
        expected: Address,
        /// Address from the receipt.
        actual: Option<Address>,
    },
    /// A Registry getter disagrees with the deployment.
    #[error("Registry.{getter}() returned {actual}, expected {expected}")]
    RegistryMismatch {
        /// Getter name.
        getter: &'static str,
        /// Deployed address.
        expected: Address,
        /// Returned address.
        actual: Address,
    },
}

/// Parameters of [`deploy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeployParams {
    /// Owner of `Fee`, receives the protocol fee.
    pub fee_recipient: Address,
    /// Protocol fee in basis points.
    pub fee_bps: u16,
}

impl DeployParams {
    /// The reference parameters: fee 5 % to `fee_recipient`.
    pub fn new(fee_recipient: Address) -> Self {
        Self {
            fee_recipient,
            fee_bps: DEFAULT_FEE_BPS,
        }
    }
}

/// Addresses of the protocol contracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployment {
    /// `Registry`.
    pub registry: Address,
    /// `EIP712Coordinator`.
    pub coordinator: Address,
    /// `Inbox`.
    pub inbox: Address,
    /// `Reader`.
    pub reader: Address,
    /// `Fee`.
    pub fee: Address,
    /// `WalletFactory`.
    pub wallet_factory: Address,
}

impl Deployment {
    /// Where a deployment by `deployer` starting at `nonce` puts each contract.
    pub fn precompute(deployer: Address, nonce: u64) -> Self {
        Self {
            registry: deployer.create(nonce),
            coordinator: deployer.create(nonce + 1),
            inbox: deployer.create(nonce + 2),
            reader: deployer.create(nonce + 3),
            fee: deployer.create(nonce + 4),
            wallet_factory: deployer.create(nonce + 5),
        }
    }
}

/// Deploys Registry, EIP712Coordinator, Inbox, Reader, Fee and WalletFactory from `deployer` (whose key the
/// provider must hold), then checks every Registry getter. No other transaction from `deployer` may be sent
/// meanwhile.
pub async fn deploy<P: Provider>(
    provider: &P,
    deployer: Address,
    params: DeployParams,
) -> Result<Deployment, DeployError> {
    let nonce = provider.get_transaction_count(deployer).pending().await?;
    let d = Deployment::precompute(deployer, nonce);
    let steps: [(&'static str, Address, RawCallBuilder<&P>); 6] = [
        (
            "Registry",
            d.registry,
            Registry::deploy_builder(provider, d.coordinator, d.inbox, d.reader, d.fee, d.wallet_factory),
        ),
        (
            "EIP712Coordinator",
            d.coordinator,
            EIP712Coordinator::deploy_builder(provider, d.registry),
        ),
        ("Inbox", d.inbox, Inbox::deploy_builder(provider, d.registry)),
        ("Reader", d.reader, Reader::deploy_builder(provider, d.registry)),
        (
            "Fee",
            d.fee,
            Fee::deploy_builder(provider, params.fee_recipient, params.fee_bps),
        ),
        (
            "WalletFactory",
            d.wallet_factory,
            WalletFactory::deploy_builder(provider, d.registry),
        ),
    ];
    // One at a time: each constructor reads the Registry, so gas estimation needs the previous ones mined.
    for (i, (contract, expected, builder)) in (0u64..).zip(steps) {
        let receipt = builder
            .from(deployer)
            .nonce(nonce + i)
            .send()
            .await?
            .get_receipt()
            .await?;
        if !receipt.status() {
            return Err(DeployError::Reverted {
                contract,
                tx: receipt.transaction_hash(),
            });
        }
        if receipt.contract_address() != Some(expected) {
            return Err(DeployError::AddressMismatch {
                contract,
                expected,
                actual: receipt.contract_address(),
            });
        }
        tracing::debug!(contract, %expected, "deployed");
    }

    let registry = Registry::new(d.registry, provider);
    let checks = [
        ("COORDINATOR", d.coordinator, registry.COORDINATOR().call().await?),
        ("INBOX", d.inbox, registry.INBOX().call().await?),
        ("READER", d.reader, registry.READER().call().await?),
        ("FEE", d.fee, registry.FEE().call().await?),
        (
            "WALLET_FACTORY",
            d.wallet_factory,
            registry.WALLET_FACTORY().call().await?,
        ),
    ];
    for (getter, expected, actual) in checks {
        if expected != actual {
            return Err(DeployError::RegistryMismatch {
                getter,
                expected,
                actual,
            });
        }
    }
    Ok(d)
}

/// Addresses of the example and test contracts the devnet deploys next to the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Examples {
    /// `TestToken` ("Infernet Test Token", TEST), mintable by anyone.
    pub token: Address,
    /// `ExampleCallbackConsumer`: one-shot requests.
    pub callback_consumer: Address,
    /// `ExampleSubscriptionConsumer`: recurring subscriptions.
    pub subscription_consumer: Address,
    /// `ExampleDelegatorConsumer`: delegated subscriptions signed by `delegate_signer`.
    pub delegator_consumer: Address,
}

/// Deploys TestToken and the three example consumers against `registry`.
pub async fn deploy_examples<P: Provider>(
    provider: &P,
    registry: Address,
    delegate_signer: Address,
) -> Result<Examples, DeployError> {
    let token = TestToken::deploy(provider, "Infernet Test Token".into(), "TEST".into()).await?;
    let callback = ExampleCallbackConsumer::deploy(provider, registry).await?;
    let subscription = ExampleSubscriptionConsumer::deploy(provider, registry).await?;
    let delegator = ExampleDelegatorConsumer::deploy(provider, registry, delegate_signer).await?;
    Ok(Examples {
        token: *token.address(),
        callback_consumer: *callback.address(),
        subscription_consumer: *subscription.address(),
        delegator_consumer: *delegator.address(),
    })
}

#[cfg(test)]
mod tests {
    use alloy::primitives::address;

    use super::*;

    #[test]
    fn precomputed_addresses_match_the_reference_deployment() {
        let d = Deployment::precompute(address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266"), 0);
        assert_eq!(d.registry, address!("5FbDB2315678afecb367f032d93F642f64180aa3"));
        assert_eq!(d.coordinator, address!("e7f1725E7734CE288F8367e1Bb143E90bb3F0512"));
        assert_eq!(d.inbox, address!("9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"));
        assert_eq!(d.reader, address!("Cf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9"));
        assert_eq!(d.fee, address!("Dc64a140Aa3E981100a9becA4E685f962f0cF6C9"));
        assert_eq!(d.wallet_factory, address!("5FC8d32690cc91D4c39d9d3abcBD16989F875707"));
    }
}

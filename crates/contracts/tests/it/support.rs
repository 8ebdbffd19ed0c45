//! Shared helpers: a started devnet with providers per role, time travel, revert decoding.

use std::fmt::Debug;

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolInterface;
use infernet_contracts::bindings::EIP712Coordinator::{self, EIP712CoordinatorErrors, EIP712CoordinatorInstance};
use infernet_contracts::devnet::{self, Devnet, DevnetOptions};

/// A devnet plus ready providers for the roles the tests use.
pub(crate) struct Chain {
    pub(crate) devnet: Devnet,
    /// Account #0: deployer, fee recipient, owner of consumer wallets.
    pub(crate) deployer: DynProvider,
    /// Account #1: the node of the devnet.
    pub(crate) node: DynProvider,
    /// Account #3: a second node.
    pub(crate) node2: DynProvider,
}

impl Chain {
    pub(crate) async fn start() -> Self {
        let devnet = Devnet::start(DevnetOptions::default())
            .await
            .expect("devnet starts (run `cd contracts && npm ci`)");
        let deployer = devnet.provider(devnet::signer(devnet::DEPLOYER));
        let node = devnet.provider(devnet::signer(devnet::NODE));
        let node2 = devnet.provider(devnet::signer(3));
        Self {
            devnet,
            deployer,
            node,
            node2,
        }
    }

    pub(crate) fn signer(&self, index: usize) -> PrivateKeySigner {
        devnet::signer(index)
    }

    pub(crate) fn address(&self, index: usize) -> Address {
        devnet::signer(index).address()
    }

    /// The coordinator as seen by `provider`.
    pub(crate) fn coordinator(&self, provider: &DynProvider) -> EIP712CoordinatorInstance<DynProvider> {
        EIP712Coordinator::new(self.devnet.deployment.coordinator, provider.clone())
    }

    /// Timestamp of the latest block.
    pub(crate) async fn now(&self) -> u64 {
        self.deployer
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .expect("get block")
            .expect("latest block exists")
            .header
            .timestamp
    }

    /// Mines a block at `timestamp`, so calls and estimates see that time.
    pub(crate) async fn mine_at(&self, timestamp: u64) {
        let _: () = self
            .deployer
            .raw_request("evm_setNextBlockTimestamp".into(), (timestamp,))
            .await
            .expect("set time");
        let _: String = self.deployer.raw_request("evm_mine".into(), ()).await.expect("mine");
    }

    pub(crate) async fn balance(&self, who: Address) -> U256 {
        self.deployer.get_balance(who).await.expect("balance")
    }
}

/// Sends `call` and waits for a successful receipt.
pub(crate) async fn send<P: Provider, D: CallDecoder>(call: CallBuilder<P, D>) -> TransactionReceipt {
    let receipt = call
        .send()
        .await
        .expect("transaction accepted")
        .get_receipt()
        .await
        .expect("receipt");
    assert!(receipt.status(), "transaction reverted: {receipt:?}");
    receipt
}

/// Sends `call`, expects it to revert, and decodes the revert into `E`'s custom errors.
pub(crate) async fn revert<E: SolInterface + Debug, P: Provider, D: CallDecoder>(call: CallBuilder<P, D>) -> E {
    match call.send().await {
        Ok(pending) => panic!("expected a revert, transaction {} was sent", pending.tx_hash()),
        Err(e) => e
            .as_decoded_interface_error::<E>()
            .unwrap_or_else(|| panic!("not a known custom error: {e}")),
    }
}

/// Sends `call`, expects a coordinator custom error.
pub(crate) async fn coordinator_revert<P: Provider, D: CallDecoder>(
    call: CallBuilder<P, D>,
) -> EIP712CoordinatorErrors {
    revert::<EIP712CoordinatorErrors, P, D>(call).await
}

/// One ether.
pub(crate) fn ether(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18))
}

/// `n` thousandths of an ether.
pub(crate) fn milli_ether(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(15))
}

/// Id from the `SubscriptionCreated` event of `receipt`.
pub(crate) fn created_id(receipt: &TransactionReceipt) -> u32 {
    receipt
        .decoded_log::<EIP712Coordinator::SubscriptionCreated>()
        .expect("SubscriptionCreated emitted")
        .data
        .id
}

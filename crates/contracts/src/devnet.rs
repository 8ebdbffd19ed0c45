//! A ready-to-use local chain: anvil on 127.0.0.1 with the protocol, a test token, the example consumers and
//! a funded payment wallet for the node.
//!
//! Roles (anvil's default accounts): #0 deploys, owns the consumers' wallets and receives the protocol fee;
//! #1 is the node; #2 signs delegated subscriptions for `ExampleDelegatorConsumer`.

use std::path::PathBuf;

use alloy::primitives::{Address, U256, uint};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;

use crate::anvil::{Anvil, AnvilError, AnvilInstance, dev_signer};
use crate::bindings::{TestToken, WalletFactory};
use crate::deploy::{DeployError, DeployParams, Deployment, Examples, deploy, deploy_examples};

/// Account index of the deployer.
pub const DEPLOYER: usize = 0;
/// Account index of the node.
pub const NODE: usize = 1;
/// Account index of the delegated-subscription signer.
pub const DELEGATE_SIGNER: usize = 2;

/// ETH the devnet puts in the node's payment wallet.
pub const NODE_WALLET_ETH: U256 = uint!(1_000_000_000_000_000_000_U256);
/// TEST tokens (18 decimals) minted to the node and to its payment wallet.
pub const NODE_TOKENS: U256 = uint!(1_000_000_000_000_000_000_000_U256);

/// Errors of starting the devnet.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// anvil could not be started.
    #[error(transparent)]
    Anvil(#[from] AnvilError),
    /// Deploying failed.
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// A setup transaction (wallet creation, funding, minting) failed.
    #[error("devnet setup transaction failed: {0}")]
    Setup(#[from] alloy::contract::Error),
    /// `createWallet` did not report the new wallet.
    #[error("WalletFactory.createWallet emitted no WalletCreated event")]
    NoWalletCreated,
}

impl From<alloy::providers::PendingTransactionError> for DevnetError {
    fn from(e: alloy::providers::PendingTransactionError) -> Self {
        Self::Setup(e.into())
    }
}

impl From<alloy::transports::TransportError> for DevnetError {
    fn from(e: alloy::transports::TransportError) -> Self {
        Self::Setup(e.into())
    }
}

/// Options of [`Devnet::start`].
#[derive(Debug, Clone, Default)]
pub struct DevnetOptions {
    /// Port on 127.0.0.1 (0 = any free port).
    pub port: u16,
    /// Mine a block every this many seconds after setup (`None` = mine on every transaction).
    pub block_time: Option<u64>,
    /// anvil binary (`None` = look it up, see [`crate::anvil`]).
    pub anvil: Option<PathBuf>,
}

/// A running devnet; anvil stops when it is dropped.
#[derive(Debug)]
pub struct Devnet {
    anvil: AnvilInstance,
    /// Protocol contracts.
    pub deployment: Deployment,
    /// Token and example consumers.
    pub examples: Examples,
    /// The node's `Wallet` (created by the `WalletFactory`, owned by the node, funded with ETH and TEST).
    pub node_payment_wallet: Address,
}

impl Devnet {
    /// Starts anvil, deploys everything and funds the node.
    pub async fn start(options: DevnetOptions) -> Result<Self, DevnetError> {
        let mut anvil = Anvil::new().port(options.port);
        if let Some(path) = options.anvil {
            anvil = anvil.binary(path);
        }
        let anvil = anvil.spawn()?;
        let deployer = signer(DEPLOYER);
        let node = signer(NODE);
        let provider = wallet_provider(&anvil, deployer.clone());

        let deployment = deploy(&provider, deployer.address(), DeployParams::new(deployer.address())).await?;
        let examples = deploy_examples(&provider, deployment.registry, signer(DELEGATE_SIGNER).address()).await?;

        let factory = WalletFactory::new(deployment.wallet_factory, &provider);
        let receipt = factory.createWallet(node.address()).send().await?.get_receipt().await?;
        let created = receipt
            .decoded_log::<WalletFactory::WalletCreated>()
            .ok_or(DevnetError::NoWalletCreated)?;
        let node_payment_wallet = created.data.wallet;

        let fund = alloy::rpc::types::TransactionRequest::default()
            .to(node_payment_wallet)
            .value(NODE_WALLET_ETH);
        provider.send_transaction(fund).await?.get_receipt().await?;
        let token = TestToken::new(examples.token, &provider);
        for to in [node.address(), node_payment_wallet] {
            token.mint(to, NODE_TOKENS).send().await?.get_receipt().await?;
        }

        if let Some(secs) = options.block_time {
            let _: () = provider.raw_request("evm_setIntervalMining".into(), (secs,)).await?;
        }
        Ok(Self {
            anvil,
            deployment,
            examples,
            node_payment_wallet,
        })
    }

    /// The running anvil.
    pub fn anvil(&self) -> &AnvilInstance {
        &self.anvil
    }

    /// The running anvil, e.g. to check it is still alive.
    pub fn anvil_mut(&mut self) -> &mut AnvilInstance {
        &mut self.anvil
    }

    /// HTTP JSON-RPC endpoint.
    pub fn endpoint(&self) -> String {
        self.anvil.endpoint()
    }

    /// A provider that signs with `signer`.
    pub fn provider(&self, signer: PrivateKeySigner) -> DynProvider {
        wallet_provider(&self.anvil, signer)
    }

    /// Stops anvil.
    pub fn stop(self) {
        self.anvil.stop();
    }
}

/// Signer of a devnet role ([`DEPLOYER`], [`NODE`], [`DELEGATE_SIGNER`], or index 3).
pub fn signer(index: usize) -> PrivateKeySigner {
    // The indices used here are below DEV_ACCOUNT_COUNT, whose keys are constants checked by a unit test.
    #[allow(clippy::expect_used)]
    dev_signer(index).expect("devnet roles use the first anvil accounts")
}

/// A provider that signs with `signer`, connected to `anvil` (see [`crate::signing_provider`]).
pub fn wallet_provider(anvil: &AnvilInstance, signer: PrivateKeySigner) -> DynProvider {
    crate::signing_provider(anvil.endpoint_url(), signer)
}

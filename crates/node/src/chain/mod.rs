//! Chain side of the node: on-chain subscriptions of the Infernet `Coordinator` and delegated
//! subscriptions, delivered on chain.
//!
//! The parts, as in Ritual's architecture:
//! - [`blocks::BlockWatcher`] polls the head and publishes each new block;
//! - [`listener::Listener`] finds subscriptions (snapshot sync, then new ones per block);
//! - [`processor::Processor`] runs, per block, what its scheduling core ([`schedule`]) finds
//!   due: the pre-check reads ([`precheck`]), the jobs ([`job`]) and their deliveries, whose
//!   calldata [`coordinator`] builds;
//! - [`wallet::Wallet`] holds the key and sends every transaction; its nonce and fee decisions
//!   are in [`nonces`];
//! - [`delegated::DelegatedIntake`] checks delegated subscriptions before `POST /api/jobs` answers.

pub mod balances;
pub mod blocks;
pub mod coordinator;
pub mod delegated;
pub mod encoding;
pub mod errors;
pub mod job;
pub mod listener;
pub mod lookup;
pub mod nonces;
pub mod payment;
pub mod precheck;
pub mod processor;
pub mod rpc;
pub mod rpc_error;
pub mod schedule;
pub mod sender;
pub mod status;
pub mod wallet;

use std::{str::FromStr, sync::Arc, time::Duration};

use alloy::{eips::BlockId, primitives::Address, signers::local::PrivateKeySigner, sol_types::SolCall};
use infernet_contracts::bindings::Registry;
use tokio::sync::watch;

use crate::{config::ValidConfig, guardian::Guardian, orchestrator::Orchestrator, tasks::TaskManager};
use rpc::{Read, RetryPolicy, Rpc};
use status::ChainStatus;

/// How long one boot-time RPC call may take, retries included.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the chain side could not start.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The private key does not parse (it is never printed).
    #[error("chain.wallet.private_key: not a valid secp256k1 key")]
    Key,
    /// The RPC endpoint failed.
    #[error("RPC {url}: {message} (check chain.rpc_url and that the endpoint is up)")]
    Rpc {
        /// The endpoint, without credentials or path.
        url: String,
        /// What failed.
        message: String,
    },
    /// The Registry could not be read.
    #[error("no Infernet Registry at {address} on chain {chain_id}: {message} (check chain.registry_address)")]
    Registry {
        /// Address tried.
        address: Address,
        /// Chain id of the endpoint.
        chain_id: u64,
        /// What failed.
        message: String,
    },
}

/// The chain as the node sees it after boot.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The endpoint.
    pub rpc: Rpc,
    /// Chain id of the RPC endpoint.
    pub chain_id: u64,
    /// The node's account (from its key).
    pub node_address: Address,
    /// Infernet `Registry`.
    pub registry: Address,
    /// `EIP712Coordinator`.
    pub coordinator: Address,
    /// `Reader`.
    pub reader: Address,
    /// `Inbox`.
    pub inbox: Address,
    /// `WalletFactory`.
    pub wallet_factory: Address,
}

/// The node's key, on its way to the Wallet task (never printed).
pub struct NodeKey(PrivateKeySigner);

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({} <redacted>)", self.0.address())
    }
}

/// Why one boot-time RPC call failed.
#[derive(Debug, thiserror::Error)]
enum BootCallError {
    /// The endpoint answered with an error.
    #[error("{what} failed: {error}")]
    Failed {
        /// The call.
        what: &'static str,
        /// Its error.
        error: rpc::RpcError,
    },
    /// No answer in time.
    #[error("{what} did not answer within {RPC_TIMEOUT:?}")]
    Timeout {
        /// The call.
        what: &'static str,
    },
}

async fn timed<T>(
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, rpc::RpcError>>,
) -> Result<T, BootCallError> {
    match tokio::time::timeout(RPC_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(error)) => Err(BootCallError::Failed { what, error }),
        Err(_) => Err(BootCallError::Timeout { what }),
    }
}

/// A chain task for the [`TaskManager`], which takes tasks that may fail; these cannot, and end
/// only at shutdown.
async fn task(run: impl std::future::Future<Output = ()>) -> Result<(), std::convert::Infallible> {
    run.await;
    Ok(())
}

/// Connects to the chain of a validated config: key, chain id, Registry lookup.
pub async fn connect(config: &crate::config::ChainConfig) -> Result<(Chain, NodeKey), ChainError> {
    crate::install_tls_provider();
    let key = config
        .wallet
        .as_ref()
        .and_then(|w| w.private_key.as_ref())
        .ok_or(ChainError::Key)?;
    let signer = PrivateKeySigner::from_str(key.expose().trim()).map_err(|_| ChainError::Key)?;
    let raw_url = config.rpc_url.as_deref().unwrap_or_default();
    // `scheme://host[:port]`: paths, user info and queries often carry API keys.
    let url = infernet_service::secret::SensitiveUrl::parse(raw_url)
        .map_or_else(|_| "<invalid URL>".into(), |u| u.to_string());
    let rpc_error = |message: &dyn std::fmt::Display| ChainError::Rpc {
        url: url.clone(),
        message: message.to_string(),
    };
    let rpc = Rpc::new(raw_url, RetryPolicy::default()).map_err(|e| rpc_error(&e))?;
    let chain_id = timed("eth_chainId", rpc.chain_id()).await.map_err(|e| rpc_error(&e))?;
    let registry_address =
        Address::from_str(config.registry_address.as_deref().unwrap_or_default().trim()).map_err(|e| {
            ChainError::Registry {
                address: Address::ZERO,
                chain_id,
                message: e.to_string(),
            }
        })?;
    let registry_error = |message: String| ChainError::Registry {
        address: registry_address,
        chain_id,
        message,
    };
    let code = timed("eth_getCode", rpc.code(registry_address))
        .await
        .map_err(|e| rpc_error(&e))?;
    if code.is_empty() {
        return Err(registry_error("no contract code there".into()));
    }
    // The four getters go out in one JSON-RPC batch.
    let getter = |data: Vec<u8>| Read::Call {
        to: registry_address,
        data: data.into(),
    };
    let reads = [
        getter(Registry::COORDINATORCall {}.abi_encode()),
        getter(Registry::READERCall {}.abi_encode()),
        getter(Registry::INBOXCall {}.abi_encode()),
        getter(Registry::WALLET_FACTORYCall {}.abi_encode()),
    ];
    let answers = timed("Registry getters", rpc.read_batch(&reads, BlockId::latest()))
        .await
        .map_err(|e| registry_error(e.to_string()))?;
    let Ok([coordinator, reader, inbox, wallet_factory]) = <[_; 4]>::try_from(answers) else {
        return Err(registry_error(
            "the batch of Registry getters came back incomplete".into(),
        ));
    };
    let answer = |what: &str, decoded: Result<Address, rpc::RpcError>| {
        decoded.map_err(|e| registry_error(format!("{what} failed: {e}")))
    };
    let coordinator = answer(
        "Registry.COORDINATOR()",
        rpc::decode::<Registry::COORDINATORCall>(coordinator),
    )?;
    let reader = answer("Registry.READER()", rpc::decode::<Registry::READERCall>(reader))?;
    let inbox = answer("Registry.INBOX()", rpc::decode::<Registry::INBOXCall>(inbox))?;
    let wallet_factory = answer(
        "Registry.WALLET_FACTORY()",
        rpc::decode::<Registry::WALLET_FACTORYCall>(wallet_factory),
    )?;
    tracing::info!(chain_id, node = %signer.address(), %coordinator, %reader, rpc = %url, "chain connected");
    let chain = Chain {
        rpc,
        chain_id,
        node_address: signer.address(),
        registry: registry_address,
        coordinator,
        reader,
        inbox,
        wallet_factory,
    };
    Ok((chain, NodeKey(signer)))
}

/// The running chain side.
pub struct ChainServices {
    /// Checks delegated subscriptions for the REST server.
    pub delegated: Arc<delegated::DelegatedIntake>,
    /// What it is doing.
    pub status: Arc<ChainStatus>,
}

/// Starts the BlockWatcher, Wallet, Processor and Listener as supervised tasks.
pub fn start(
    chain: &Chain,
    key: NodeKey,
    config: &ValidConfig,
    guardian: &Guardian,
    orchestrator: Arc<Orchestrator>,
    gate: processor::ChainGate,
    tasks: &TaskManager,
) -> ChainServices {
    let chain_config = &config.config.chain;
    let wallet_config = chain_config.wallet.as_ref();
    let status = Arc::new(ChainStatus::new(chain.rpc.counts.clone()));
    let (heads_tx, heads) = watch::channel(None);
    let sync = &chain_config.snapshot_sync;
    let watcher = blocks::BlockWatcher {
        rpc: chain.rpc.clone(),
        sync_period: Duration::from_secs_f64(sync.sync_period),
        status: status.clone(),
    };
    tasks.spawn_critical("block-watcher", task(watcher.run(heads_tx, tasks.shutdown_token())));
    let balances = balances::BalanceWatcher {
        rpc: chain.rpc.clone(),
        node: chain.node_address,
        payment: config.payment_address(),
        period: Duration::from_secs_f64(chain_config.balance_period),
        status: status.clone(),
    };
    tasks.spawn_critical("balances", task(balances.run(heads.clone(), tasks.shutdown_token())));
    let wallet = wallet::spawn(
        chain.rpc.clone(),
        key.0,
        wallet::WalletSettings {
            max_gas_limit: wallet_config.map(|w| w.max_gas_limit).unwrap_or(5_000_000),
            allowed_sim_errors: wallet_config.map(|w| w.allowed_sim_errors.clone()).unwrap_or_default(),
            chain_id: chain.chain_id,
        },
        heads.clone(),
        status.clone(),
        tasks,
    );
    let (processor, handle, inbox) = processor::new(processor::ProcessorParts {
        rpc: chain.rpc.clone(),
        coordinator: chain.coordinator,
        wallet_factory: chain.wallet_factory,
        reader: chain.reader,
        payment_wallet: config.payment_address(),
        wallet,
        orchestrator,
        status: status.clone(),
        gate,
    });
    tasks.spawn_critical(
        "processor",
        task(processor.run(inbox, heads.clone(), tasks.shutdown_token())),
    );
    let lookup = Arc::new(lookup::ContainerLookup::new(
        config.containers.iter().map(|c| (c.id.as_str(), c.external)),
    ));
    tracing::info!(pipelines = lookup.len(), "container lookup ready");
    let listener = listener::Listener {
        rpc: chain.rpc.clone(),
        coordinator: chain.coordinator,
        reader: chain.reader,
        trail_head_blocks: chain_config.trail_head_blocks,
        batch_size: sync.batch_size,
        starting_sub_id: sync.starting_sub_id,
        sleep: Duration::from_secs_f64(sync.sleep),
        lookup: lookup.clone(),
        guardian: guardian.clone(),
        processor: handle.clone(),
        status: status.clone(),
    };
    tasks.spawn_critical("listener", task(listener.run(heads, tasks.shutdown_token())));
    let delegated = Arc::new(delegated::DelegatedIntake {
        rpc: chain.rpc.clone(),
        chain_id: chain.chain_id,
        coordinator: chain.coordinator,
        lookup,
        guardian: guardian.clone(),
        processor: handle,
    });
    ChainServices { delegated, status }
}

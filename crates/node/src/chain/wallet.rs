//! Wallet: the only holder of the node's key and the only sender of its transactions.
//!
//! One task owns the key and the nonce. Callers simulate first ([`Wallet::simulate`], an
//! `eth_estimateGas` that reverts like the transaction would), then hand the transaction over
//! ([`Wallet::send`]) and get its outcome once mined. The task signs locally, sends, watches
//! receipts on every new block, replaces a transaction that stays unmined (same nonce, higher
//! fees), and at start waits for transactions an earlier run left in the mempool, so a restart
//! never races its own deliveries. The task is [`super::sender`]; its nonce and fee decisions
//! are in [`super::nonces`].

use std::{fmt, sync::Arc, time::Instant};

use alloy::{
    primitives::{Address, B256, Bytes},
    rpc::types::{TransactionReceipt, TransactionRequest},
    signers::local::PrivateKeySigner,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    blocks::Head,
    errors::InfernetError,
    rpc::{Refusal, Rpc, RpcError, RpcErrorKind},
    sender::Sender,
    status::ChainStatus,
};

/// Gas added to an estimate (consumers' callbacks vary between estimate and inclusion).
const GAS_MARGIN_PERCENT: u64 = 20;

/// A transaction to send.
#[derive(Clone)]
pub struct TxRequest {
    /// Contract called.
    pub to: Address,
    /// Calldata.
    pub data: Bytes,
    /// What it is, for logs (`deliverCompute sub 3 interval 2`).
    pub label: String,
}

impl fmt::Debug for TxRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxRequest")
            .field("to", &self.to)
            .field("label", &self.label)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Why a simulation says no.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SimulationError {
    /// The call reverts with an Infernet error.
    #[error("{0}")]
    Infernet(InfernetError),
    /// The call reverts otherwise (consumer logic, panics).
    #[error("reverts: {0}")]
    Reverted(String),
    /// The estimate is above `chain.wallet.max_gas_limit`.
    #[error("needs {needed} gas, above chain.wallet.max_gas_limit ({limit})")]
    GasLimit {
        /// Estimated gas.
        needed: u64,
        /// Configured cap.
        limit: u64,
    },
    /// The RPC endpoint failed.
    #[error("simulation could not run: {0}")]
    Rpc(RpcError),
}

impl SimulationError {
    /// Whether simulating again later may succeed: not above the configured gas cap.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::GasLimit { .. })
    }
}

/// A simulated transaction, ready to send.
#[derive(Debug, Clone)]
pub struct Simulated {
    pub(super) request: TxRequest,
    pub(super) gas_limit: u64,
}

/// How a sent transaction ended.
#[derive(Debug, Clone)]
pub enum TxOutcome {
    /// Mined (successfully or not).
    Mined {
        /// Hash of the transaction that was mined (a replacement's, if replaced).
        hash: B256,
        /// Status 1.
        success: bool,
        /// The receipt.
        receipt: Box<TransactionReceipt>,
        /// When the (first) transaction was handed to the endpoint.
        sent_at: Instant,
    },
    /// Never mined: sending failed or another transaction took its nonce.
    Failed(TxError),
}

/// Why a transaction was not mined.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TxError {
    /// The wallet task is gone.
    #[error("the wallet task has stopped")]
    Stopped,
    /// The node stopped with the transaction in flight.
    #[error("node shutting down; nonce {0} may still be mined")]
    ShuttingDown(u64),
    /// The key could not sign it.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The node's account cannot pay for gas.
    #[error("{refusal} (fund the node's account {account} with the chain's gas token)")]
    NoGasFunds {
        /// The endpoint's refusal.
        refusal: Refusal,
        /// The node's account.
        account: Address,
    },
    /// The endpoint refused it.
    #[error("{0}")]
    Refused(Refusal),
    /// Another transaction took its nonce.
    #[error("nonce {0} was used by another transaction")]
    NonceTaken(u64),
}

impl TxError {
    /// Whether sending again may get it mined: not when the wallet task is gone.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Stopped | Self::ShuttingDown(_))
    }

    pub(super) fn refused(refusal: Refusal, account: Address) -> Self {
        match refusal {
            Refusal::InsufficientFunds(_) => Self::NoGasFunds { refusal, account },
            refusal => Self::Refused(refusal),
        }
    }
}

/// A transaction for the wallet task and where its outcome goes.
pub(super) type Command = (Simulated, oneshot::Sender<TxOutcome>);

/// Handle to the wallet task (cheap to clone).
#[derive(Clone)]
pub struct Wallet {
    rpc: Rpc,
    address: Address,
    max_gas_limit: u64,
    allowed_sim_errors: Arc<[String]>,
    commands: mpsc::Sender<Command>,
    ready: watch::Receiver<bool>,
}

impl fmt::Debug for Wallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wallet")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Settings of the wallet.
#[derive(Debug, Clone)]
pub struct WalletSettings {
    /// Gas cap of any transaction.
    pub max_gas_limit: u64,
    /// Simulation errors that do not stop a send (case-insensitive substrings).
    pub allowed_sim_errors: Vec<String>,
    /// Chain id to sign for.
    pub chain_id: u64,
}

impl Wallet {
    /// The node's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Waits until transactions of an earlier run are settled (see the module docs).
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Simulates `request` from the node's address; on success, it can be sent.
    pub async fn simulate(&self, request: TxRequest) -> Result<Simulated, SimulationError> {
        let tx = TransactionRequest::default()
            .from(self.address)
            .to(request.to)
            .input(request.data.clone().into());
        match self.rpc.estimate_gas(&tx).await {
            Ok(gas) => {
                if gas > self.max_gas_limit {
                    return Err(SimulationError::GasLimit {
                        needed: gas,
                        limit: self.max_gas_limit,
                    });
                }
                let gas_limit = (gas + gas * GAS_MARGIN_PERCENT / 100).min(self.max_gas_limit);
                Ok(Simulated { request, gas_limit })
            }
            Err(e) => {
                let text = e.to_string();
                let infernet = e.revert_data().and_then(|d| InfernetError::decode(d));
                let haystack = format!("{text} {}", infernet.map(|i| i.name).unwrap_or_default()).to_lowercase();
                if let Some(allowed) = self
                    .allowed_sim_errors
                    .iter()
                    .find(|a| !a.is_empty() && haystack.contains(&a.to_lowercase()))
                {
                    tracing::info!(tx = %request.label, allowed = %allowed, error = %text,
                        "simulation error is allowed by chain.wallet.allowed_sim_errors; sending with max_gas_limit");
                    return Ok(Simulated {
                        request,
                        gas_limit: self.max_gas_limit,
                    });
                }
                Err(match (infernet, e.kind()) {
                    (Some(i), _) => SimulationError::Infernet(i),
                    (None, RpcErrorKind::Revert) => SimulationError::Reverted(text),
                    (None, _) => SimulationError::Rpc(e),
                })
            }
        }
    }

    /// Sends a simulated transaction and waits until it is mined or given up.
    pub async fn send(&self, tx: Simulated) -> TxOutcome {
        let (reply, outcome) = oneshot::channel();
        if self.commands.send((tx, reply)).await.is_err() {
            return TxOutcome::Failed(TxError::Stopped);
        }
        outcome.await.unwrap_or(TxOutcome::Failed(TxError::Stopped))
    }
}

/// Starts the wallet task; the key moves into it and never leaves.
pub fn spawn(
    rpc: Rpc,
    signer: PrivateKeySigner,
    settings: WalletSettings,
    heads: watch::Receiver<Option<Head>>,
    status: Arc<ChainStatus>,
    tasks: &crate::tasks::TaskManager,
) -> Wallet {
    let (commands, rx) = mpsc::channel(1024);
    let (ready_tx, ready) = watch::channel(false);
    let wallet = Wallet {
        rpc: rpc.clone(),
        address: signer.address(),
        max_gas_limit: settings.max_gas_limit,
        allowed_sim_errors: settings.allowed_sim_errors.into(),
        commands,
        ready,
    };
    let sender = Sender::new(rpc, signer, settings.chain_id, status);
    let shutdown = tasks.shutdown_token();
    tasks.spawn_critical("wallet", super::task(sender.run(rx, heads, ready_tx, shutdown)));
    wallet
}

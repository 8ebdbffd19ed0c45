//! One delivery attempt of the Processor: run the pipeline, encode its output, escrow the stake of
//! a proof subscription, simulate, send, and report how it ended.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::{
    eips::BlockId,
    primitives::{Address, B256},
    sol_types::SolCall,
};
use infernet_contracts::bindings::{EIP712Coordinator, Wallet as PaymentWallet};
use infernet_types::{ContainerResult, JobLocation};
use serde_json::Value;

use super::{
    coordinator,
    encoding::{EncodingError, encode_output},
    errors::InfernetError,
    rpc::{Rpc, RpcError},
    schedule::{Delivery, JobSpec},
    wallet::{SimulationError, TxError, TxOutcome, TxRequest, Wallet},
};
use crate::orchestrator::{JobInput, Orchestrator};

/// Everything a job needs (shared by all jobs).
pub struct JobContext {
    /// Endpoint.
    pub rpc: Rpc,
    /// Transaction sender.
    pub wallet: Wallet,
    /// Pipeline runner.
    pub orchestrator: Arc<Orchestrator>,
    /// `EIP712Coordinator`.
    pub coordinator: Address,
    /// The node's address.
    pub node: Address,
    /// The node's payment wallet (`chain.wallet.payment_address`).
    pub payment_wallet: Option<Address>,
}

/// Why a delivery attempt failed (it may be tried again).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// The pipeline gave no result.
    #[error("container results empty")]
    NoResults,
    /// A container failed.
    #[error("container {container} failed: {error}")]
    Container {
        /// Which.
        container: String,
        /// Its error.
        error: String,
    },
    /// The last container answered with a `code` other than 200.
    #[error("container execution errored with code {0}")]
    Code(String),
    /// The output cannot be encoded for the chain.
    #[error("output cannot be delivered: {0}")]
    Output(#[from] EncodingError),
    /// A proof subscription needs the node's payment wallet to escrow its stake.
    #[error("a proof subscription needs chain.wallet.payment_address")]
    NoPaymentWallet,
    /// The escrow allowance could not be read.
    #[error("reading the escrow allowance: {0}")]
    EscrowRead(RpcError),
    /// The escrow approval was not mined.
    #[error("escrow approval: {0}")]
    Escrow(Box<DeliveryError>),
    /// The simulation says no.
    #[error("simulation: {0}")]
    Simulation(SimulationError),
    /// The transaction was mined and reverted.
    #[error("transaction {0} reverted")]
    Reverted(B256),
    /// The transaction was never mined.
    #[error("{0}")]
    NotMined(TxError),
}

impl DeliveryError {
    /// Whether another attempt may succeed; one that would fail the same way (a setting, the
    /// node stopping) is not made.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::NoPaymentWallet => false,
            Self::Simulation(e) => e.is_retryable(),
            Self::NotMined(e) => e.is_retryable(),
            Self::Escrow(e) => e.is_retryable(),
            _ => true,
        }
    }
}

/// How a job ended.
#[derive(Debug)]
pub enum Report {
    /// Delivered.
    Delivered {
        /// The id the delivery created, from its `SubscriptionCreated` log.
        created_id: Option<u32>,
        /// From the block that made it due to the transaction's send, container calls excluded.
        reaction: Duration,
        /// Time in the containers.
        containers: Duration,
    },
    /// Nothing to send: the interval is settled.
    Settled(InfernetError),
    /// The subscription cannot be served any more.
    Over(InfernetError),
    /// The attempt failed.
    Failed(DeliveryError),
}

/// One delivery attempt.
pub struct Job {
    /// Shared context.
    pub ctx: Arc<JobContext>,
    /// When the block that made it due was received.
    pub seen: Instant,
    /// What to run and deliver.
    pub spec: JobSpec,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The last container's output, or why there is none to deliver.
fn last_output(results: &[ContainerResult]) -> Result<&Value, DeliveryError> {
    let output = match results.last() {
        None => return Err(DeliveryError::NoResults),
        Some(ContainerResult::Error { container, error }) => {
            return Err(DeliveryError::Container {
                container: container.clone(),
                error: error.clone(),
            });
        }
        Some(ContainerResult::Output { output, .. }) => output,
    };
    match output.get("code") {
        Some(code) if code != "200" && code != 200 => Err(DeliveryError::Code(code.to_string())),
        _ => Ok(output),
    }
}

impl Job {
    /// Runs the attempt to its end.
    pub async fn run(self) -> Report {
        let called = Instant::now();
        let (data, containers) = match self.compute().await {
            Ok(done) => done,
            Err(e) => return Report::Failed(e),
        };
        if self.spec.sub.requires_proof()
            && let Err(e) = self.escrow().await
        {
            return Report::Failed(e);
        }
        let node_wallet = self.ctx.payment_wallet.unwrap_or(Address::ZERO);
        let (data, label) = coordinator::deliver(
            &self.spec.delivery,
            &self.spec.sub,
            self.spec.interval,
            data,
            node_wallet,
        );
        let request = TxRequest {
            to: self.ctx.coordinator,
            data,
            label,
        };
        let simulating = Instant::now();
        let simulated = match self.ctx.wallet.simulate(request).await {
            Ok(s) => s,
            Err(SimulationError::Infernet(e)) if e.subscription_is_over() => return Report::Over(e),
            Err(SimulationError::Infernet(e)) if e.interval_is_settled() => return Report::Settled(e),
            Err(e) => return Report::Failed(DeliveryError::Simulation(e)),
        };
        tracing::debug!(
            key = %self.spec.key,
            checks_ms = ms(called.saturating_duration_since(self.seen)),
            containers_ms = ms(containers),
            simulation_ms = ms(simulating.elapsed()),
            "ready to send"
        );
        match self.ctx.wallet.send(simulated).await {
            TxOutcome::Mined {
                success: true,
                receipt,
                sent_at,
                ..
            } => Report::Delivered {
                created_id: receipt
                    .decoded_log::<EIP712Coordinator::SubscriptionCreated>()
                    .map(|log| log.data.id),
                reaction: sent_at.saturating_duration_since(self.seen).saturating_sub(containers),
                containers,
            },
            TxOutcome::Mined { hash, .. } => Report::Failed(DeliveryError::Reverted(hash)),
            TxOutcome::Failed(why) => Report::Failed(DeliveryError::NotMined(why)),
        }
    }

    /// Runs the pipeline: its output encoded for the chain, and the time in the containers.
    async fn compute(&self) -> Result<(super::encoding::ChainOutput, Duration), DeliveryError> {
        let spec = &self.spec;
        let (source, data) = match &spec.delivery {
            Delivery::Delegatee(parts) => (JobLocation::Offchain, Value::Object(parts.data.clone())),
            Delivery::Compute(_) => (
                JobLocation::Onchain,
                Value::String(alloy::primitives::hex::encode(spec.inputs.clone().unwrap_or_default())),
            ),
        };
        let input = JobInput {
            source,
            destination: JobLocation::Onchain,
            data,
        };
        let called = Instant::now();
        let (results, raw) = self
            .ctx
            .orchestrator
            .run_pipeline(&spec.containers, input, spec.sub.requires_proof())
            .await;
        let containers = called.elapsed();
        let output = last_output(&results)?;
        Ok((encode_output(output, &raw)?, containers))
    }

    /// A proof-verified delivery locks `payment_amount` of the node's own wallet as stake: the
    /// node wallet must allow the node's address that much (Ritual's escrow step), sent through
    /// the Wallet like any other transaction.
    async fn escrow(&self) -> Result<(), DeliveryError> {
        let wallet = self.ctx.payment_wallet.ok_or(DeliveryError::NoPaymentWallet)?;
        let sub = &self.spec.sub;
        let allowance = PaymentWallet::allowanceCall {
            spender: self.ctx.node,
            token: sub.payment_token,
        };
        let allowance = self
            .ctx
            .rpc
            .call(wallet, &allowance, BlockId::latest())
            .await
            .map_err(DeliveryError::EscrowRead)?;
        if allowance >= sub.payment_amount {
            return Ok(());
        }
        tracing::info!(key = %self.spec.key, amount = %sub.payment_amount, "escrowing reward in wallet");
        let call = PaymentWallet::approveCall {
            spender: self.ctx.node,
            token: sub.payment_token,
            amount: sub.payment_amount,
        };
        let request = TxRequest {
            to: wallet,
            data: call.abi_encode().into(),
            label: format!("Wallet.approve escrow for {}", self.spec.key),
        };
        let escrow = |e: DeliveryError| DeliveryError::Escrow(Box::new(e));
        let simulated = self
            .ctx
            .wallet
            .simulate(request)
            .await
            .map_err(|e| escrow(DeliveryError::Simulation(e)))?;
        match self.ctx.wallet.send(simulated).await {
            TxOutcome::Mined { success: true, .. } => Ok(()),
            TxOutcome::Mined { hash, .. } => Err(escrow(DeliveryError::Reverted(hash))),
            TxOutcome::Failed(why) => Err(escrow(DeliveryError::NotMined(why))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_a_successful_last_output_is_delivered() {
        assert!(matches!(last_output(&[]), Err(DeliveryError::NoResults)));
        let failed = ContainerResult::Error {
            container: "c".into(),
            error: "boom".into(),
        };
        assert_eq!(
            last_output(&[failed]).unwrap_err().to_string(),
            "container c failed: boom"
        );
        let output = |v: Value| ContainerResult::Output {
            container: "c".into(),
            output: v,
        };
        assert!(matches!(
            last_output(&[output(json!({"code": "500"}))]),
            Err(DeliveryError::Code(_))
        ));
        for ok in [json!({"code": "200"}), json!({"code": 200}), json!({"output": 1})] {
            assert!(last_output(&[output(ok.clone())]).is_ok(), "{ok}");
        }
    }

    #[test]
    fn only_failures_another_attempt_could_fix_are_retried() {
        let gas = SimulationError::GasLimit { needed: 2, limit: 1 };
        for hopeless in [
            DeliveryError::NoPaymentWallet,
            DeliveryError::Simulation(gas.clone()),
            DeliveryError::NotMined(TxError::Stopped),
            DeliveryError::Escrow(Box::new(DeliveryError::NotMined(TxError::ShuttingDown(3)))),
        ] {
            assert!(!hopeless.is_retryable(), "{hopeless}");
        }
        for worth_retrying in [
            DeliveryError::NoResults,
            DeliveryError::Code("500".into()),
            DeliveryError::Reverted(B256::ZERO),
            DeliveryError::NotMined(TxError::NonceTaken(3)),
            DeliveryError::Simulation(SimulationError::Reverted("consumer reverted".into())),
            DeliveryError::Escrow(Box::new(DeliveryError::Reverted(B256::ZERO))),
        ] {
            assert!(worth_retrying.is_retryable(), "{worth_retrying}");
        }
    }
}

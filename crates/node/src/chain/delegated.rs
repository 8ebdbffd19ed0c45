//! Delegated subscriptions from `POST /api/jobs`: every check that can fail is done before the
//! client gets its 200 — the Guardian, the payment rules, and the EIP-712 signature against the
//! owner's `getSigner()` — so a bad submission is a clear 4xx instead of a silent log line.

use std::sync::Arc;

use alloy::{
    eips::BlockId,
    primitives::{Address, Signature},
};
use infernet_contracts::bindings::{Delegator, EIP712Coordinator};
use infernet_contracts::eip712::{self, DelegateSubscription};
use infernet_types::DelegatedRequest;
use serde_json::json;

use super::{
    coordinator::delegate_key,
    lookup::ContainerLookup,
    processor::{DelegatedParts, ProcessorHandle},
    rpc::{Rpc, RpcError},
};
use crate::guardian::{Guardian, Rejection};

/// Why a delegated subscription was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The Guardian or the payment rules refused it (405, as Ritual's node).
    #[error("{}", .0.error)]
    Rejected(Rejection),
    /// The signature is not the owner's signer's (403).
    #[error("{0}")]
    Signature(String),
    /// The chain could not be asked (503; the client may retry).
    #[error("cannot check the subscription on chain right now: {0}")]
    Chain(#[from] RpcError),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Stopping,
}

/// Checks delegated subscriptions and hands them to the Processor.
pub struct DelegatedIntake {
    /// Endpoint.
    pub rpc: Rpc,
    /// Chain id (EIP-712 domain).
    pub chain_id: u64,
    /// `EIP712Coordinator` (EIP-712 verifying contract).
    pub coordinator: Address,
    /// Container-id table.
    pub lookup: Arc<ContainerLookup>,
    /// Request filter.
    pub guardian: Guardian,
    /// Where accepted subscriptions go.
    pub processor: ProcessorHandle,
}

impl DelegatedIntake {
    /// Checks `request` and tracks it. Idempotent: the same owner and nonce again is accepted
    /// without a second delivery. The Guardian's first checks (chain enabled, expiry,
    /// [`Guardian::check_delegated_precondition`]) come before the request is parsed in full, so
    /// the REST handler runs them first.
    pub async fn accept(&self, request: DelegatedRequest) -> Result<(), IntakeError> {
        let DelegatedRequest {
            subscription,
            signature,
            data,
            raw_subscription,
        } = request;
        let hash = format!("{:#x}", subscription.container_id);
        let containers = self.lookup.get(&subscription.container_id).unwrap_or_default();
        self.guardian
            .check_subscription_containers(
                containers,
                subscription.owner,
                subscription.requires_proof(),
                true,
                &hash,
            )
            .map_err(IntakeError::Rejected)?;
        self.guardian
            .check_payment(
                containers,
                subscription.payment_token,
                subscription.payment_amount,
                json!({"delegated_subscription": raw_subscription}),
            )
            .map_err(IntakeError::Rejected)?;

        let message = DelegateSubscription {
            nonce: signature.nonce,
            expiry: signature.expiry,
            sub: (&subscription).into(),
        };
        let digest = eip712::signing_hash(&message, self.chain_id, self.coordinator);
        let recovered = Signature::new(signature.r, signature.s, signature.v == 28)
            .recover_address_from_prehash(&digest)
            .map_err(|e| IntakeError::Signature(format!("signature does not recover to a signer: {e}")))?;
        let expected = owner_signer(&self.rpc, subscription.owner).await?;
        if expected == Address::ZERO {
            return Err(IntakeError::Signature(format!(
                "Subscription signer mismatch: owner {} has no getSigner() (it must be a Delegator contract)",
                subscription.owner
            )));
        }
        if recovered != expected {
            return Err(IntakeError::Signature(format!(
                "Subscription signer mismatch: signed by {recovered}, but owner {} accepts signatures from {expected} \
                 (check the chain id {} and coordinator {} the signature was made for)",
                subscription.owner, self.chain_id, self.coordinator
            )));
        }
        let created = created_id(&self.rpc, self.coordinator, subscription.owner, signature.nonce).await?;
        let parts = DelegatedParts { signature, data };
        if self
            .processor
            .track_delegated(subscription, containers.into(), parts, created)
            .await
        {
            Ok(())
        } else {
            Err(IntakeError::Stopping)
        }
    }
}

/// The owner's `getSigner()` (zero when the call fails, as Ritual's node treats it).
async fn owner_signer(rpc: &Rpc, owner: Address) -> Result<Address, RpcError> {
    match rpc.call(owner, &Delegator::getSignerCall {}, BlockId::latest()).await {
        Ok(signer) => Ok(signer),
        Err(e) if !e.is_retryable() => Ok(Address::ZERO),
        Err(e) => Err(e),
    }
}

/// `delegateCreatedIds(owner, nonce)`: the on-chain id of a delegated subscription, if created.
async fn created_id(rpc: &Rpc, coordinator: Address, owner: Address, nonce: u32) -> Result<Option<u32>, RpcError> {
    let call = EIP712Coordinator::delegateCreatedIdsCall(delegate_key(owner, nonce));
    let id = rpc.call(coordinator, &call, BlockId::latest()).await?;
    Ok((id != 0).then_some(id))
}

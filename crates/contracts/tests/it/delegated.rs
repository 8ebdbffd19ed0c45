//! Delegated subscriptions: created and delivered in one `deliverComputeDelegatee` from an EIP-712 signature.

use alloy::primitives::{Address, Bytes, U256, keccak256};
use alloy::providers::DynProvider;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolValue;
use infernet_contracts::bindings::EIP712Coordinator::{self, EIP712CoordinatorErrors};
use infernet_contracts::bindings::ExampleDelegatorConsumer;
use infernet_contracts::container_id;
use infernet_contracts::devnet::DELEGATE_SIGNER;
use infernet_contracts::eip712::{self, DelegateSubscription, Subscription};

use crate::support::{Chain, coordinator_revert, created_id, send};

/// A one-shot subscription owned by the devnet's delegator consumer, active now.
async fn message(chain: &Chain, nonce: u32, expiry: u32) -> DelegateSubscription {
    let now = u32::try_from(chain.now().await).expect("timestamp fits u32");
    let owner = chain.devnet.examples.delegator_consumer;
    DelegateSubscription {
        nonce,
        expiry,
        sub: Subscription::unpaid(owner, now, 0, 1, 1, container_id("hello-world"), false),
    }
}

/// `deliverComputeDelegatee` for interval 1 with `signed` submitted under `nonce`.
fn deliver(
    chain: &Chain,
    signer: &PrivateKeySigner,
    signed: &DelegateSubscription,
    nonce: u32,
) -> alloy::contract::SolCallBuilder<DynProvider, EIP712Coordinator::deliverComputeDelegateeCall> {
    let d = chain.devnet.deployment;
    let sig = eip712::sign(signer, signed, 31337, d.coordinator).expect("local signing");
    chain
        .coordinator(&chain.node)
        .deliverComputeDelegatee(
            nonce,
            signed.expiry,
            signed.sub.clone().into(),
            sig.v,
            sig.r,
            sig.s,
            1,
            Bytes::from_static(b"in"),
            Bytes::from_static(b"out"),
            Bytes::new(),
            Address::ZERO,
        )
        .with_cloned_provider()
}

#[tokio::test]
async fn valid_signature_creates_and_delivers_the_subscription() {
    let chain = Chain::start().await;
    let signer = chain.signer(DELEGATE_SIGNER);
    let now = u32::try_from(chain.now().await).unwrap();
    let msg = message(&chain, 7, now + 3600).await;
    let receipt = send(deliver(&chain, &signer, &msg, 7)).await;
    let id = created_id(&receipt);
    let fulfilled = receipt
        .decoded_log::<EIP712Coordinator::SubscriptionFulfilled>()
        .expect("SubscriptionFulfilled");
    assert_eq!((fulfilled.data.id, fulfilled.data.node), (id, chain.address(1)));

    let coordinator = chain.coordinator(&chain.node);
    let owner = chain.devnet.examples.delegator_consumer;
    let stored: Subscription = coordinator.getSubscription(id).call().await.unwrap().into();
    assert_eq!(stored, msg.sub, "stored verbatim from the signed struct");
    let key = keccak256((owner, 7u32).abi_encode());
    assert_eq!(coordinator.delegateCreatedIds(key).call().await.unwrap(), id);
    assert_eq!(coordinator.maxSubscriberNonce(owner).call().await.unwrap(), 7);
    let consumer = ExampleDelegatorConsumer::new(owner, &chain.deployer);
    assert_eq!(consumer.deliveryCount().call().await.unwrap(), U256::from(1));
    assert_eq!(
        consumer.lastDelivery().call().await.unwrap().output,
        Bytes::from_static(b"out")
    );

    // Replaying the same (owner, nonce) finds the existing subscription, whose only slot is used.
    let err = coordinator_revert(deliver(&chain, &signer, &msg, 7)).await;
    assert!(matches!(err, EIP712CoordinatorErrors::IntervalCompleted(_)), "{err:?}");
    assert_eq!(coordinator.id().call().await.unwrap(), id + 1, "no second subscription");
}

#[tokio::test]
async fn submitting_under_another_nonce_than_signed_is_rejected() {
    let chain = Chain::start().await;
    let now = u32::try_from(chain.now().await).unwrap();
    let msg = message(&chain, 1, now + 3600).await;
    let err = coordinator_revert(deliver(&chain, &chain.signer(DELEGATE_SIGNER), &msg, 2)).await;
    assert!(matches!(err, EIP712CoordinatorErrors::SignerMismatch(_)), "{err:?}");
}

#[tokio::test]
async fn expired_signature_is_rejected() {
    let chain = Chain::start().await;
    let now = u32::try_from(chain.now().await).unwrap();
    // Expiry is exclusive: a signature expiring at the current second is already expired.
    let msg = message(&chain, 1, now).await;
    let err = coordinator_revert(deliver(&chain, &chain.signer(DELEGATE_SIGNER), &msg, 1)).await;
    assert!(matches!(err, EIP712CoordinatorErrors::SignatureExpired(_)), "{err:?}");
}

#[tokio::test]
async fn signature_from_another_signer_is_rejected() {
    let chain = Chain::start().await;
    let now = u32::try_from(chain.now().await).unwrap();
    let msg = message(&chain, 1, now + 3600).await;
    // Account #0 is not the consumer's getSigner().
    let err = coordinator_revert(deliver(&chain, &chain.signer(0), &msg, 1)).await;
    assert!(matches!(err, EIP712CoordinatorErrors::SignerMismatch(_)), "{err:?}");
    assert_eq!(
        chain.coordinator(&chain.node).id().call().await.unwrap(),
        1,
        "nothing created"
    );
}

//! One-shot (callback) subscriptions.

use alloy::primitives::{Address, Bytes, U256};
use infernet_contracts::bindings::EIP712Coordinator::{self, EIP712CoordinatorErrors};
use infernet_contracts::bindings::ExampleCallbackConsumer;
use infernet_contracts::container_id;

use crate::support::{Chain, coordinator_revert, created_id, send};

#[tokio::test]
async fn callback_is_delivered_once_and_redelivery_is_rejected() {
    let chain = Chain::start().await;
    let consumer = ExampleCallbackConsumer::new(chain.devnet.examples.callback_consumer, &chain.deployer);
    let inputs = Bytes::from_static(b"{\"prompt\":\"hi\"}");
    let receipt = send(consumer.requestCompute(
        "hello-world".into(),
        inputs.clone(),
        1,
        Address::ZERO,
        U256::ZERO,
        Address::ZERO,
        Address::ZERO,
    ))
    .await;
    let id = created_id(&receipt);
    assert_eq!(id, 1);

    let coordinator = chain.coordinator(&chain.node);
    let sub = coordinator.getSubscription(id).call().await.unwrap();
    assert_eq!(sub.owner, chain.devnet.examples.callback_consumer);
    assert_eq!((sub.frequency, sub.period, sub.redundancy, sub.lazy), (1, 0, 1, false));
    // On chain the container id is keccak256(abi.encode("hello-world")): the reference vector.
    assert_eq!(sub.containerId, container_id("hello-world"));
    let served = consumer
        .getContainerInputs(id, 1, 0, chain.address(1))
        .call()
        .await
        .unwrap();
    assert_eq!(served, inputs);

    let output = Bytes::from_static(b"hello, world!");
    let deliver = || coordinator.deliverCompute(id, 1, inputs.clone(), output.clone(), Bytes::new(), Address::ZERO);
    let receipt = send(deliver()).await;
    let fulfilled = receipt
        .decoded_log::<EIP712Coordinator::SubscriptionFulfilled>()
        .expect("SubscriptionFulfilled");
    assert_eq!((fulfilled.data.id, fulfilled.data.node), (id, chain.address(1)));
    assert_eq!(consumer.latestOutput(id).call().await.unwrap(), output);
    let delivery = consumer.lastDelivery().call().await.unwrap();
    assert_eq!(
        (delivery.subscriptionId, delivery.interval, delivery.redundancy),
        (id, 1, 1)
    );
    assert_eq!(
        (delivery.node, delivery.input, delivery.proof),
        (chain.address(1), inputs.clone(), Bytes::new())
    );

    // Redundancy 1 is used up: the same node and any other node see IntervalCompleted.
    let err = coordinator_revert(deliver()).await;
    assert!(matches!(err, EIP712CoordinatorErrors::IntervalCompleted(_)), "{err:?}");
    let other = chain.coordinator(&chain.node2);
    let err =
        coordinator_revert(other.deliverCompute(id, 1, inputs.clone(), output.clone(), Bytes::new(), Address::ZERO))
            .await;
    assert!(matches!(err, EIP712CoordinatorErrors::IntervalCompleted(_)), "{err:?}");
    // A one-shot subscription has only interval 1.
    let err = coordinator_revert(coordinator.deliverCompute(id, 2, inputs, output, Bytes::new(), Address::ZERO)).await;
    assert!(matches!(err, EIP712CoordinatorErrors::IntervalMismatch(_)), "{err:?}");
    assert_eq!(consumer.deliveryCount().call().await.unwrap(), U256::from(1));
}

#[tokio::test]
async fn unknown_subscription_is_rejected() {
    let chain = Chain::start().await;
    let coordinator = chain.coordinator(&chain.node);
    let err =
        coordinator_revert(coordinator.deliverCompute(42, 1, Bytes::new(), Bytes::new(), Bytes::new(), Address::ZERO))
            .await;
    assert!(
        matches!(err, EIP712CoordinatorErrors::SubscriptionNotFound(_)),
        "{err:?}"
    );
}

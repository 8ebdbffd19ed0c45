//! Recurring subscriptions: intervals, redundancy, lazy delivery into the Inbox, cancellation.

use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::SolValue;
use infernet_contracts::bindings::EIP712Coordinator::{self, EIP712CoordinatorErrors};
use infernet_contracts::bindings::{ExampleSubscriptionConsumer, Inbox, Reader};
use infernet_contracts::container_id;

use crate::support::{Chain, coordinator_revert, created_id, send};

const PERIOD: u32 = 100;

/// Creates a subscription through `ExampleSubscriptionConsumer`; returns its id and `activeAt`.
async fn subscribe(chain: &Chain, frequency: u32, period: u32, redundancy: u16, lazy: bool) -> (u32, u32) {
    let consumer = ExampleSubscriptionConsumer::new(chain.devnet.examples.subscription_consumer, &chain.deployer);
    send(consumer.setInputData(Bytes::from_static(b"tick"))).await;
    let receipt = send(consumer.createSubscription(
        "hello-world".into(),
        frequency,
        period,
        redundancy,
        lazy,
        Address::ZERO,
        U256::ZERO,
        Address::ZERO,
        Address::ZERO,
    ))
    .await;
    let id = created_id(&receipt);
    let sub = chain
        .coordinator(&chain.deployer)
        .getSubscription(id)
        .call()
        .await
        .unwrap();
    (id, sub.activeAt)
}

/// What the consumer serves as inputs for `(id, interval)`.
fn inputs(id: u32, interval: u32) -> Bytes {
    (id, interval, Bytes::from_static(b"tick")).abi_encode_params().into()
}

#[tokio::test]
async fn recurring_subscription_with_redundancy_two_over_three_intervals() {
    let chain = Chain::start().await;
    let (id, active_at) = subscribe(&chain, 3, PERIOD, 2, false).await;
    let node1 = chain.coordinator(&chain.node);
    let node2 = chain.coordinator(&chain.node2);
    let consumer = ExampleSubscriptionConsumer::new(chain.devnet.examples.subscription_consumer, &chain.deployer);
    let deliver = |c: &EIP712Coordinator::EIP712CoordinatorInstance<_>, interval: u32| {
        c.deliverCompute(
            id,
            interval,
            inputs(id, interval),
            Bytes::from(format!("out {interval}").into_bytes()),
            Bytes::new(),
            Address::ZERO,
        )
        .with_cloned_provider()
    };

    // createSubscription sets activeAt one period ahead.
    assert!(u64::from(active_at) > chain.now().await);
    let err = coordinator_revert(deliver(&node1, 1)).await;
    assert!(
        matches!(err, EIP712CoordinatorErrors::SubscriptionNotActive(_)),
        "{err:?}"
    );

    for interval in 1..=3u32 {
        chain.mine_at(u64::from(active_at + (interval - 1) * PERIOD + 10)).await;
        assert_eq!(
            node1.getSubscriptionInterval(active_at, PERIOD).call().await.unwrap(),
            interval
        );
        let served = consumer
            .getContainerInputs(id, interval, 0, chain.address(1))
            .call()
            .await
            .unwrap();
        assert_eq!(served, inputs(id, interval));

        send(deliver(&node1, interval)).await;
        // The same node cannot fill the second slot of the interval.
        let err = coordinator_revert(deliver(&node1, interval)).await;
        assert!(
            matches!(err, EIP712CoordinatorErrors::NodeRespondedAlready(_)),
            "interval {interval}: {err:?}"
        );
        // Delivering for another interval than the current one is rejected.
        let err = coordinator_revert(deliver(&node2, interval + 1)).await;
        assert!(
            matches!(err, EIP712CoordinatorErrors::IntervalMismatch(_)),
            "interval {interval}: {err:?}"
        );
        send(deliver(&node2, interval)).await;
        // Redundancy 2 reached: a third node is too late.
        let third = chain.coordinator(&chain.devnet.provider(chain.signer(2)));
        let err = coordinator_revert(deliver(&third, interval)).await;
        assert!(
            matches!(err, EIP712CoordinatorErrors::IntervalCompleted(_)),
            "interval {interval}: {err:?}"
        );
        let last = consumer.lastDelivery().call().await.unwrap();
        assert_eq!(
            (last.interval, last.redundancy, last.node),
            (interval, 2, chain.address(3))
        );
    }

    // Interval 4 is past frequency 3.
    chain.mine_at(u64::from(active_at + 3 * PERIOD + 10)).await;
    let err = coordinator_revert(deliver(&node1, 4)).await;
    assert!(
        matches!(err, EIP712CoordinatorErrors::SubscriptionCompleted(_)),
        "{err:?}"
    );

    assert_eq!(consumer.deliveryCount().call().await.unwrap(), U256::from(6));
    let reader = Reader::new(chain.devnet.deployment.reader, &chain.deployer);
    let counts = reader
        .readRedundancyCountBatch(vec![id; 4], vec![1, 2, 3, 4])
        .call()
        .await
        .unwrap();
    assert_eq!(counts, vec![2, 2, 2, 0]);
    let subs = reader.readSubscriptionBatch(id, id + 1).call().await.unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!((subs[0].frequency, subs[0].redundancy), (3, 2));
}

#[tokio::test]
async fn lazy_output_lands_in_the_inbox() {
    let chain = Chain::start().await;
    let (id, active_at) = subscribe(&chain, 1, 0, 1, true).await;
    assert!(u64::from(active_at) <= chain.now().await, "period 0 is active at once");
    let node = chain.coordinator(&chain.node);
    let output = Bytes::from_static(b"a large result");
    let proof = Bytes::from_static(b"proof");
    let receipt = send(node.deliverCompute(id, 1, inputs(id, 1), output.clone(), proof.clone(), Address::ZERO)).await;
    let item = receipt
        .decoded_log::<Inbox::NewInboxItem>()
        .expect("NewInboxItem emitted");
    let cid = container_id("hello-world");
    assert_eq!(
        (item.data.containerId, item.data.node, item.data.index),
        (cid, chain.address(1), U256::ZERO)
    );

    // The consumer only gets a pointer: no input/output, the container id and the inbox index.
    let consumer = ExampleSubscriptionConsumer::new(chain.devnet.examples.subscription_consumer, &chain.deployer);
    let delivery = consumer.lastDelivery().call().await.unwrap();
    assert!(delivery.input.is_empty() && delivery.output.is_empty() && delivery.proof.is_empty());
    assert_eq!((delivery.containerId, delivery.index), (cid, U256::ZERO));

    let inbox = Inbox::new(chain.devnet.deployment.inbox, &chain.deployer);
    let stored = inbox.read(cid, chain.address(1), U256::ZERO).call().await.unwrap();
    assert_eq!((stored.subscriptionId, stored.interval), (id, 1));
    assert_eq!(
        (stored.input, stored.output, stored.proof),
        (inputs(id, 1), output, proof)
    );
    // Only the coordinator may write on a subscription's behalf.
    let direct = Inbox::new(chain.devnet.deployment.inbox, &chain.node);
    let err = crate::support::revert::<Inbox::InboxErrors, _, _>(direct.writeViaCoordinator(
        cid,
        chain.address(1),
        id,
        1,
        Bytes::new(),
        Bytes::new(),
        Bytes::new(),
    ))
    .await;
    assert!(matches!(err, Inbox::InboxErrors::NotCoordinator(_)), "{err:?}");
}

#[tokio::test]
async fn cancelled_subscription_cannot_be_delivered() {
    let chain = Chain::start().await;
    let (id, active_at) = subscribe(&chain, 5, PERIOD, 1, false).await;
    let node = chain.coordinator(&chain.node);
    chain.mine_at(u64::from(active_at + 10)).await;
    send(node.deliverCompute(
        id,
        1,
        inputs(id, 1),
        Bytes::from_static(b"1"),
        Bytes::new(),
        Address::ZERO,
    ))
    .await;

    // Only the owner (the consumer contract) may cancel.
    let err = coordinator_revert(chain.coordinator(&chain.deployer).cancelSubscription(id)).await;
    assert!(
        matches!(err, EIP712CoordinatorErrors::NotSubscriptionOwner(_)),
        "{err:?}"
    );

    let consumer = ExampleSubscriptionConsumer::new(chain.devnet.examples.subscription_consumer, &chain.deployer);
    let receipt = send(consumer.cancelSubscription(id)).await;
    let cancelled = receipt
        .decoded_log::<EIP712Coordinator::SubscriptionCancelled>()
        .expect("SubscriptionCancelled");
    assert_eq!(cancelled.data.id, id);
    assert_eq!(node.getSubscription(id).call().await.unwrap().activeAt, u32::MAX);

    chain.mine_at(u64::from(active_at + PERIOD + 10)).await;
    let err = coordinator_revert(node.deliverCompute(
        id,
        2,
        inputs(id, 2),
        Bytes::from_static(b"2"),
        Bytes::new(),
        Address::ZERO,
    ))
    .await;
    assert!(
        matches!(err, EIP712CoordinatorErrors::SubscriptionNotActive(_)),
        "{err:?}"
    );
    assert_eq!(consumer.deliveryCount().call().await.unwrap(), U256::from(1));
}

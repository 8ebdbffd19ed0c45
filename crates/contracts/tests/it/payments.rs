//! Paid deliveries through `Wallet`s: the protocol fee split, and the atomic verifier flow.

use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::DynProvider;
use infernet_contracts::bindings::EIP712Coordinator::{self, EIP712CoordinatorErrors};
use infernet_contracts::bindings::{AtomicVerifier, ExampleCallbackConsumer, Wallet, WalletFactory};

use crate::support::{Chain, coordinator_revert, created_id, ether, milli_ether, send};

/// A consumer wallet owned by the deployer, holding `funds` ETH, that lets the callback consumer spend `allowance`.
async fn consumer_wallet(chain: &Chain, funds: U256, allowance: U256) -> Address {
    let factory = WalletFactory::new(chain.devnet.deployment.wallet_factory, &chain.deployer);
    let receipt = send(factory.createWallet(chain.address(0))).await;
    let wallet = receipt
        .decoded_log::<WalletFactory::WalletCreated>()
        .expect("WalletCreated")
        .data
        .wallet;
    assert!(factory.isValidWallet(wallet).call().await.unwrap());
    let fund = alloy::rpc::types::TransactionRequest::default().to(wallet).value(funds);
    alloy::providers::Provider::send_transaction(&chain.deployer, fund)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let w = Wallet::new(wallet, &chain.deployer);
    send(w.approve(chain.devnet.examples.callback_consumer, Address::ZERO, allowance)).await;
    wallet
}

/// A one-shot request paying `amount` ETH from `wallet`, optionally verified by `verifier`.
async fn paid_request(chain: &Chain, amount: U256, wallet: Address, verifier: Address) -> u32 {
    let consumer = ExampleCallbackConsumer::new(chain.devnet.examples.callback_consumer, &chain.deployer);
    let receipt = send(consumer.requestCompute(
        "hello-world".into(),
        Bytes::from_static(b"in"),
        1,
        Address::ZERO,
        amount,
        wallet,
        verifier,
    ))
    .await;
    created_id(&receipt)
}

fn deliver(
    coordinator: &EIP712Coordinator::EIP712CoordinatorInstance<DynProvider>,
    id: u32,
    node_wallet: Address,
) -> alloy::contract::SolCallBuilder<DynProvider, EIP712Coordinator::deliverComputeCall> {
    coordinator
        .deliverCompute(
            id,
            1,
            Bytes::from_static(b"in"),
            Bytes::from_static(b"out"),
            Bytes::from_static(b"proof"),
            node_wallet,
        )
        .with_cloned_provider()
}

#[tokio::test]
async fn paid_delivery_splits_the_payment_between_node_and_protocol() {
    let chain = Chain::start().await;
    let wallet = consumer_wallet(&chain, ether(2), ether(1)).await;
    let id = paid_request(&chain, ether(1), wallet, Address::ZERO).await;
    let node = chain.coordinator(&chain.node);
    let node_wallet = chain.devnet.node_payment_wallet;

    // The node must name a wallet created by the WalletFactory.
    let err = coordinator_revert(deliver(&node, id, chain.address(1))).await;
    assert!(matches!(err, EIP712CoordinatorErrors::InvalidWallet(_)), "{err:?}");

    let fee_recipient = chain.address(0);
    let before = (
        chain.balance(node_wallet).await,
        chain.balance(fee_recipient).await,
        chain.balance(wallet).await,
    );
    send(deliver(&node, id, node_wallet)).await;
    let after = (
        chain.balance(node_wallet).await,
        chain.balance(fee_recipient).await,
        chain.balance(wallet).await,
    );

    // Fee 5 % is charged twice (10 %): node wallet +0.9, protocol +0.1, consumer wallet -1.
    assert_eq!(after.0 - before.0, milli_ether(900), "node wallet");
    assert_eq!(after.1 - before.1, milli_ether(100), "fee recipient");
    assert_eq!(before.2 - after.2, ether(1), "consumer wallet");
    let w = Wallet::new(wallet, &chain.deployer);
    assert_eq!(
        w.allowance(chain.devnet.examples.callback_consumer, Address::ZERO)
            .call()
            .await
            .unwrap(),
        U256::ZERO
    );

    // No allowance left: the next paid request cannot be delivered.
    let id2 = paid_request(&chain, ether(1), wallet, Address::ZERO).await;
    let err = crate::support::revert::<Wallet::WalletErrors, _, _>(deliver(&node, id2, node_wallet)).await;
    assert!(matches!(err, Wallet::WalletErrors::InsufficientAllowance(_)), "{err:?}");
}

#[tokio::test]
async fn atomic_verifier_pays_on_a_valid_proof_and_slashes_on_an_invalid_one() {
    let chain = Chain::start().await;
    let verifier = AtomicVerifier::deploy(&chain.deployer, chain.devnet.deployment.registry)
        .await
        .unwrap();
    send(verifier.updateSupportedToken(Address::ZERO, true)).await;
    send(verifier.updateFee(Address::ZERO, milli_ether(100))).await;
    let verifier_addr = *verifier.address();

    let wallet = consumer_wallet(&chain, ether(2), ether(2)).await;
    let node_wallet = chain.devnet.node_payment_wallet;
    // The node's own wallet escrows the payment as stake: the node must be allowed to lock it.
    send(Wallet::new(node_wallet, &chain.node).approve(chain.address(1), Address::ZERO, ether(10))).await;
    let node = chain.coordinator(&chain.node);
    let fee_recipient = chain.address(0);
    let balances = async || {
        (
            chain.balance(node_wallet).await,
            chain.balance(fee_recipient).await,
            chain.balance(verifier_addr).await,
            chain.balance(wallet).await,
        )
    };

    let id = paid_request(&chain, ether(1), wallet, verifier_addr).await;
    let before = balances().await;
    let receipt = send(deliver(&node, id, node_wallet)).await;
    let after = balances().await;
    let verified = receipt
        .decoded_log::<EIP712Coordinator::ProofVerified>()
        .expect("ProofVerified");
    assert!(verified.data.valid);
    assert_eq!(
        (verified.data.id, verified.data.node, verified.data.verifier),
        (id, chain.address(1), verifier_addr)
    );
    assert_eq!(after.0 - before.0, milli_ether(800), "node wallet");
    assert_eq!(after.1 - before.1, milli_ether(105), "fee recipient");
    assert_eq!(after.2 - before.2, milli_ether(95), "verifier");
    assert_eq!(before.3 - after.3, ether(1), "consumer wallet");
    let key = alloy::primitives::keccak256(alloy::sol_types::SolValue::abi_encode(&(id, 1u32, chain.address(1))));
    let request = node.proofRequests(key).call().await.unwrap();
    assert_eq!(request.expiry, 0, "the proof request is settled and deleted");

    // Invalid proof: fees are still paid, the node's stake (1 ETH) goes to the consumer's wallet.
    send(verifier.setNextValidityFalse()).await;
    let id = paid_request(&chain, ether(1), wallet, verifier_addr).await;
    let before = balances().await;
    let receipt = send(deliver(&node, id, node_wallet)).await;
    let after = balances().await;
    assert!(
        !receipt
            .decoded_log::<EIP712Coordinator::ProofVerified>()
            .expect("ProofVerified")
            .data
            .valid
    );
    assert_eq!(before.0 - after.0, ether(1), "node wallet slashed");
    assert_eq!(after.1 - before.1, milli_ether(105), "fee recipient");
    assert_eq!(after.2 - before.2, milli_ether(95), "verifier");
    assert_eq!(
        after.3 - before.3,
        milli_ether(800),
        "consumer wallet: +1 stake - 0.2 fees"
    );

    // An unsupported token is refused before anything moves.
    send(verifier.updateSupportedToken(Address::ZERO, false)).await;
    let id = paid_request(&chain, ether(1), wallet, verifier_addr).await;
    let err = coordinator_revert(deliver(&node, id, node_wallet)).await;
    assert!(
        matches!(err, EIP712CoordinatorErrors::UnsupportedVerifierToken(_)),
        "{err:?}"
    );
}

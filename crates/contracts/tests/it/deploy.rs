//! Deployment in the Registry-first order.

use alloy::providers::Provider;
use infernet_contracts::bindings::{EIP712Coordinator, Fee, Registry};
use infernet_contracts::{DeployParams, Deployment, deploy};

use crate::support::Chain;

#[tokio::test]
async fn fresh_chain_gets_the_reference_addresses_and_wiring() {
    let chain = Chain::start().await;
    let deployer = chain.address(0);
    // The devnet deployed from account #0 starting at nonce 0: the reference addresses.
    assert_eq!(chain.devnet.deployment, Deployment::precompute(deployer, 0));
    assert_eq!(
        chain.devnet.deployment.registry,
        alloy::primitives::address!("5FbDB2315678afecb367f032d93F642f64180aa3")
    );

    let d = chain.devnet.deployment;
    let registry = Registry::new(d.registry, &chain.deployer);
    assert_eq!(registry.COORDINATOR().call().await.unwrap(), d.coordinator);
    assert_eq!(registry.WALLET_FACTORY().call().await.unwrap(), d.wallet_factory);
    for address in [d.registry, d.coordinator, d.inbox, d.reader, d.fee, d.wallet_factory] {
        assert!(
            !chain.deployer.get_code_at(address).await.unwrap().is_empty(),
            "no code at {address}"
        );
    }
    let fee = Fee::new(d.fee, &chain.deployer);
    assert_eq!(fee.FEE().call().await.unwrap(), 500);
    assert_eq!(fee.FEE_RECIPIENT().call().await.unwrap(), deployer);
    let coordinator = EIP712Coordinator::new(d.coordinator, &chain.deployer);
    assert_eq!(coordinator.EIP712_NAME().call().await.unwrap(), "InfernetCoordinator");
    assert_eq!(coordinator.id().call().await.unwrap(), 1);
}

#[tokio::test]
async fn a_second_deployment_uses_the_deployers_current_nonce() {
    let chain = Chain::start().await;
    let deployer = chain.address(0);
    let nonce = chain.deployer.get_transaction_count(deployer).await.unwrap();
    let params = DeployParams {
        fee_recipient: chain.address(2),
        fee_bps: 250,
    };
    let second = deploy(&chain.deployer, deployer, params)
        .await
        .expect("second deployment");
    assert_eq!(second, Deployment::precompute(deployer, nonce));
    assert_ne!(second.registry, chain.devnet.deployment.registry);
    let fee = Fee::new(second.fee, &chain.deployer);
    assert_eq!(fee.FEE().call().await.unwrap(), 250);
    assert_eq!(fee.FEE_RECIPIENT().call().await.unwrap(), chain.address(2));
}

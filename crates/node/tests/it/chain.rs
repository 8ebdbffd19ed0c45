//! The chain side at boot, against a devnet (anvil + our contracts).

use infernet_contracts::{Devnet, DevnetOptions};
use serde_json::{Value, json};

use crate::support::{TestNode, client, get_json};

/// anvil's account #1, the devnet's node.
pub(crate) const NODE_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const NODE_ADDRESS: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

pub(crate) async fn devnet() -> Devnet {
    Devnet::start(DevnetOptions {
        port: 0,
        block_time: None,
        anvil: None,
    })
    .await
    .expect("devnet (anvil from contracts/node_modules)")
}

/// A `chain` section for `devnet`.
pub(crate) fn chain_config(devnet: &Devnet) -> Value {
    json!({
        "enabled": true,
        "rpc_url": devnet.endpoint(),
        "registry_address": devnet.deployment.registry.to_string(),
        "trail_head_blocks": 0,
        "wallet": {"private_key": NODE_KEY}
    })
}

#[tokio::test]
async fn a_chain_node_boots_against_the_registry_and_shows_its_address() {
    let devnet = devnet().await;
    let node = TestNode::start(json!({"manage_containers": false, "chain": chain_config(&devnet)})).await;
    let info: Value = get_json(&client(), node.at("/info")).await;
    assert_eq!(info["chain"]["enabled"], true);
    assert_eq!(info["chain"]["address"], NODE_ADDRESS);
    assert_eq!(info["chain"]["chain_id"], 31337);
    assert_eq!(
        info["chain"]["coordinator"],
        devnet.deployment.coordinator.to_checksum(None)
    );
}

#[tokio::test]
async fn a_wrong_registry_or_rpc_stops_the_node_with_a_clear_error() {
    let devnet = devnet().await;
    let mut chain = chain_config(&devnet);
    chain["registry_address"] = json!(NODE_ADDRESS);
    let err = TestNode::try_start(json!({"manage_containers": false, "chain": chain}))
        .await
        .err()
        .expect("the node should not start");
    assert!(
        err.contains("no Infernet Registry at") && err.contains("no contract code"),
        "{err}"
    );

    let mut chain = chain_config(&devnet);
    chain["rpc_url"] = json!("http://127.0.0.1:1/v1/SECRETKEY");
    let err = TestNode::try_start(json!({"manage_containers": false, "chain": chain}))
        .await
        .err()
        .expect("the node should not start");
    assert!(
        err.contains("RPC http://127.0.0.1:1/…") && err.contains("eth_chainId"),
        "{err}"
    );
    assert!(!err.contains("SECRETKEY"), "the RPC URL's key must not be shown: {err}");
}

#[tokio::test]
async fn boot_survives_an_rpc_that_rate_limits_at_first() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use axum::{
        Router,
        body::Bytes,
        http::{StatusCode, header},
        response::IntoResponse,
        routing::post,
    };
    let devnet = devnet().await;
    let upstream = devnet.endpoint();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    // A proxy in front of anvil: the first three calls are refused with 429, then it forwards.
    let port = crate::support::serve(Router::new().route(
        "/",
        post(move |body: Bytes| {
            let (counter, upstream) = (counter.clone(), upstream.clone());
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) < 3 {
                    return (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
                }
                let answer = client()
                    .post(&upstream)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                ([(header::CONTENT_TYPE, "application/json")], answer).into_response()
            }
        }),
    ))
    .await;
    let mut chain = chain_config(&devnet);
    chain["rpc_url"] = json!(format!("http://127.0.0.1:{port}"));
    let node = TestNode::start(json!({"manage_containers": false, "chain": chain})).await;
    let info: Value = get_json(&client(), node.at("/info")).await;
    assert_eq!(info["chain"]["chain_id"], 31337);
    assert!(calls.load(Ordering::SeqCst) > 3, "the refused calls were retried");
}

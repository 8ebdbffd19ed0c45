//! One snapshot of the node: the heartbeat a router reads says what `/info` says, chain jobs
//! included.

use alloy::primitives::{Address, Bytes, U256};
use axum::{Json, Router, http::StatusCode, routing::post};
use infernet_contracts::{bindings::ExampleCallbackConsumer, devnet};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{
    chain::{chain_config, devnet},
    outage::{Gate, until},
    support::{TestNode, client, get_json, serve},
};

#[tokio::test]
async fn the_heartbeat_counts_the_chain_jobs_that_info_shows_running() {
    let devnet = devnet().await;
    let (beats, mut heard) = watch::channel(Value::Null);
    let beats = std::sync::Arc::new(beats);
    let router = serve(Router::new().route(
        "/api/v1/register",
        post(move |Json(beat): Json<Value>| {
            beats.send_replace(crate::support::heartbeat_of(&beat));
            async { StatusCode::OK }
        }),
    ))
    .await;
    // The chain job's container holds the call: the job stays running until it is opened.
    let gate = Gate::start().await;
    let mut chain = chain_config(&devnet);
    chain["snapshot_sync"] = json!({"sleep": 0.05, "batch_size": 50, "sync_period": 0.1});
    let node = TestNode::start(json!({
        "manage_containers": false,
        "containers": [{"id": "hello-world", "port": gate.port}],
        "chain": chain,
        "forward_stats": true,
        "stats": {"endpoint": format!("http://127.0.0.1:{router}/api/v1/register"), "interval": 0.05},
    }))
    .await;

    let p = devnet.provider(devnet::signer(devnet::DEPLOYER));
    let consumer = ExampleCallbackConsumer::new(devnet.examples.callback_consumer, &p);
    let request = consumer.requestCompute(
        "hello-world".into(),
        Bytes::from_static(b"\x01"),
        1,
        Address::ZERO,
        U256::ZERO,
        Address::ZERO,
        Address::ZERO,
    );
    let receipt = request.send().await.unwrap().get_receipt().await.unwrap();
    assert!(receipt.status());
    gate.wait_for_calls(1).await;
    let info_url = node.at("/info");
    until("/info to show the chain job running", || async {
        get_json::<Value>(&client(), info_url.clone()).await["pending"]["onchain"] == 1
    })
    .await;
    let info: Value = get_json(&client(), info_url.clone()).await;

    // A heartbeat sent from now on says the same.
    heard.mark_unchanged();
    tokio::time::timeout(std::time::Duration::from_secs(10), heard.changed())
        .await
        .expect("a heartbeat within 10 s")
        .unwrap();
    let beat = heard.borrow().clone();
    assert_eq!(beat["pending"], info["pending"], "heartbeat {beat}\n/info {info}");
    // And carries what the router's alert rules read: the chain's sync and transactions, the
    // containers' restarts, the host's memory and disk.
    let state = &beat["chain"]["state"];
    assert!(
        state["head_block"].as_u64().unwrap() >= receipt.block_number.unwrap(),
        "{beat}"
    );
    assert_eq!(state["transactions"]["pending"], 0, "{beat}");
    assert!(beat["container_restarts"].is_object(), "{beat}");
    assert!(beat["system"]["memory_total_bytes"].as_u64().unwrap() > 0, "{beat}");
    assert!(beat["system"]["disk_total_bytes"].as_u64().unwrap() > 0, "{beat}");
    gate.open();
}

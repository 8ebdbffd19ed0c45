//! Signed heartbeats: a node is known by its key, and listed under an operator only when its own
//! statement names that operator; unsigned heartbeats need the registration token.

use std::time::Duration;

use infernet_identity::{Identity, statement};
use serde_json::{Value, json};

use super::{NodeProc, client, eventually, get, router, service, settings};

async fn register(url: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(format!("{url}/api/v1/register"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_node_that_signs_its_heartbeats_registers_without_a_token_under_its_key() {
    let mut open = settings(&[]);
    open.registration_token = None;
    let url = router(open).await;
    let operator = Identity::generate();
    let fast = service(Duration::ZERO).await;
    let node = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"stats": {"endpoint": format!("{url}/api/v1/register"), "interval": 0.2},
               "operator": {"pubkeys": [operator.public_key().to_hex()]}}),
    );
    eventually(format!("{url}/api/v1/ips?container=x"), |v| {
        v.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let identity = client()
        .get(format!("http://{}/identity", node.key()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let node_key = statement::verify(&identity, "infernet-node", infernet_identity::unix_now(), 60)
        .unwrap()
        .signer;
    let nodes = get(format!("{url}/api/v1/nodes")).await.1;
    assert_eq!(nodes[0]["address"], node.key());
    assert_eq!(nodes[0]["identity"]["key"], infernet_identity::npub(&node_key));
    assert_eq!(nodes[0]["identity"]["operators"], json!([operator.npub()]));
}

#[tokio::test]
async fn unsigned_forged_and_stale_heartbeats_are_refused_and_a_key_moves_its_registration() {
    let mut open = settings(&[]);
    open.registration_token = None;
    let url = router(open).await;
    let beat = |port: u16| json!({"address": format!("127.0.0.1:{port}"), "containers": [{"id": "x"}], "node": "n", "operators": []});

    let (status, answer) = register(&url, &beat(1)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("registration token"),
        "{answer}"
    );

    let node = Identity::generate();
    let signed = statement::sign(&node, "infernet-heartbeat", &beat(1)).unwrap();
    let forged = signed.replace("127.0.0.1:1", "127.0.0.1:2");
    let (status, answer) = register(&url, &json!({"signed": forged})).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("signature"), "{answer}");
    let stale = statement::sign_at(
        &node,
        "infernet-heartbeat",
        &beat(1),
        infernet_identity::unix_now() - 600,
    )
    .unwrap();
    let (status, answer) = register(&url, &json!({"signed": stale})).await;
    assert_eq!(status, 401, "{answer}");
    // Signed 600 s ago, checked a moment later: 600 or 601 s.
    assert!(answer["error"].as_str().unwrap().contains("signed 60"), "{answer}");

    assert_eq!(register(&url, &json!({"signed": signed})).await.0, 200);
    let moved = statement::sign(&node, "infernet-heartbeat", &beat(2)).unwrap();
    assert_eq!(register(&url, &json!({"signed": moved})).await.0, 200);
    let nodes = get(format!("{url}/api/v1/nodes")).await.1;
    let addresses: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, ["127.0.0.1:2"], "one registration per node key");
    assert_eq!(nodes[0]["identity"]["key"], node.npub());
}

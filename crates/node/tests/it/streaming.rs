//! `POST /api/jobs/stream`.

use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;

use crate::support::{Stub, TestNode, client, get_json, hello_world_config, open_stream, stub, unmanaged, wait_job};

#[tokio::test]
async fn stream_sends_the_id_line_then_the_output_and_stores_it() {
    let node = TestNode::start(hello_world_config()).await;
    let response = open_stream(
        &node.url,
        json!({"containers": ["hello-world"], "data": {"tokens": 500}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    let (id, output) = body.split_once('\n').unwrap();
    let expected: String = (0..500).map(|i| format!("token-{i} ")).collect();
    assert_eq!(output, expected);
    let job = wait_job(&node, id, false).await;
    assert_eq!(job["status"], "success");
    assert_eq!(
        job["result"],
        json!({"container": "hello-world", "output": {"output": expected}})
    );
}

#[tokio::test]
async fn stream_output_reaches_the_client_as_the_container_sends_it() {
    let gate: &'static Notify = Box::leak(Box::new(Notify::new()));
    let port = stub(Stub::Gated(gate)).await;
    let node = TestNode::start(json!({"manage_containers": false, "containers": [unmanaged("gated", port)]})).await;
    // The container sends its second chunk only once the client holds the first.
    let mut received = Vec::new();
    let early = tokio::time::timeout(Duration::from_secs(10), async {
        let mut response = open_stream(&node.url, json!({"containers": ["gated"], "data": {}})).await;
        assert_eq!(response.status(), 200);
        while !received.ends_with(b"first ") {
            let chunk = response.chunk().await.unwrap().expect("the stream ended early");
            received.extend_from_slice(&chunk);
        }
        response
    })
    .await;
    let Ok(mut response) = early else {
        panic!(
            "the node held the output back; the client had {:?}",
            String::from_utf8_lossy(&received)
        );
    };
    gate.notify_one();
    while let Some(chunk) = response.chunk().await.unwrap() {
        received.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(received).unwrap();
    let (id, output) = text.split_once('\n').unwrap();
    assert_eq!(output, "first second");
    let job = wait_job(&node, id, false).await;
    assert_eq!(job["result"]["output"], json!({"output": "first second"}));
}

#[tokio::test]
async fn a_stream_is_abandoned_only_after_its_container_is_silent_for_the_timeout() {
    // Four chunks 0.3 s apart outlast the 0.5 s timeout together, never between two of them.
    let port = stub(Stub::Trickle(4, Duration::from_millis(300))).await;
    let node = TestNode::start(json!({"manage_containers": false,
        "containers": [{"id": "slow", "port": port, "timeout": 0.5}]}))
    .await;
    let started = std::time::Instant::now();
    let mut response = open_stream(&node.url, json!({"containers": ["slow"], "data": {}})).await;
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    let ended = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let took = started.elapsed();
    assert!(ended.is_err(), "an abandoned stream must not look complete");
    let text = String::from_utf8(received).unwrap();
    let (id, output) = text.split_once('\n').unwrap();
    assert_eq!(
        output, "tick tick tick tick ",
        "every chunk before the silence reaches the client"
    );
    // 1.2 s of chunks, then 0.5 s of silence.
    assert!(took >= Duration::from_millis(1600), "abandoned after {took:?}");
    let job = wait_job(&node, id, false).await;
    assert_eq!(job["status"], "failed");
    let error = job["result"]["error"].as_str().unwrap();
    assert!(error.contains("container slow sent nothing for 0.5s"), "{error}");
}

/// Reads a stream's body as Ritual's client does: the id line first, then the rest to the end.
/// Answers the id, the output, and whether the body ended normally.
async fn read_as_ritual_client(mut response: reqwest::Response) -> (String, String, bool) {
    let mut received = Vec::new();
    let ended = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => break true,
            Err(_) => break false,
        }
    };
    let text = String::from_utf8(received).unwrap();
    let (id, output) = text.split_once('\n').expect("an id line");
    (id.to_string(), output.to_string(), ended)
}

#[tokio::test]
async fn the_id_line_comes_at_once_while_the_container_thinks() {
    let node = TestNode::start(hello_world_config()).await;
    // A connection that is already open, as a client's would be: only the node's time counts.
    let client = client();
    let _: serde_json::Value = get_json(&client, node.at("/health")).await;
    let started = std::time::Instant::now();
    let mut response = client
        .post(node.at("/api/jobs/stream"))
        .json(&json!({"containers": ["hello-world"], "data": {"delay_ms": 1000, "tokens": 50}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().expect("a first piece");
    let first_byte = started.elapsed();
    println!("time to first byte: {first_byte:?}");
    assert!(
        first_byte < Duration::from_millis(50),
        "the first byte took {first_byte:?}: the id line waited for the container"
    );
    let id = String::from_utf8(first.to_vec()).unwrap();
    assert!(id.ends_with('\n') && id.len() == 37, "{id:?}");
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    let rest = String::from_utf8(rest).unwrap();
    let expected: String = (0..50).map(|i| format!("token-{i} ")).collect();
    assert_eq!(rest, expected);
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "the container thought for 1 s"
    );
    let job = wait_job(&node, id.trim_end(), false).await;
    assert_eq!(job["result"]["output"], json!({"output": expected}));

    // Ritual's client: the id line, then the body, read in one go.
    let response = open_stream(
        &node.url,
        json!({"containers": ["hello-world"], "data": {"delay_ms": 300, "tokens": 20}}),
    )
    .await;
    let (id, output, ended) = read_as_ritual_client(response).await;
    assert!(ended);
    assert_eq!(output, (0..20).map(|i| format!("token-{i} ")).collect::<String>());
    assert_eq!(wait_job(&node, &id, false).await["status"], "success");
}

#[tokio::test]
async fn a_stream_whose_answer_never_starts_fails_after_the_id_line() {
    let port = stub(Stub::Slow(Duration::from_secs(30))).await;
    let node = TestNode::start(json!({"manage_containers": false,
        "containers": [{"id": "mute", "port": port, "timeout": 0.3}]}))
    .await;
    let response = open_stream(&node.url, json!({"containers": ["mute"], "data": {}})).await;
    assert_eq!(response.status(), 200);
    let (id, output, ended) = read_as_ritual_client(response).await;
    assert!(!ended, "a failed stream must not look complete");
    assert_eq!(output, "");
    let job = wait_job(&node, &id, false).await;
    assert_eq!(job["status"], "failed");
    let error = job["result"]["error"].as_str().unwrap();
    assert!(error.contains("did not answer within 0.3s"), "{error}");
}

#[tokio::test]
async fn a_stream_from_an_unreachable_container_fails_after_the_id_line() {
    let port = crate::support::free_port();
    let node = TestNode::start(json!({"manage_containers": false, "containers": [unmanaged("gone", port)]})).await;
    let response = open_stream(&node.url, json!({"containers": ["gone"], "data": {}})).await;
    assert_eq!(response.status(), 200);
    let (id, _, ended) = read_as_ritual_client(response).await;
    assert!(!ended);
    let job = wait_job(&node, &id, false).await;
    assert_eq!(job["status"], "failed");
    assert!(
        job["result"]["error"].as_str().unwrap().contains("unreachable"),
        "{job}"
    );
}

#[tokio::test]
async fn a_stream_that_breaks_is_an_error_for_the_client_and_in_the_result() {
    let port = stub(Stub::BreaksMidStream).await;
    let node = TestNode::start(json!({"manage_containers": false, "containers": [unmanaged("flaky", port)]})).await;
    let response = open_stream(&node.url, json!({"containers": ["flaky"], "data": {}})).await;
    assert_eq!(response.status(), 200);
    // The body ends abnormally rather than looking complete.
    assert!(response.text().await.is_err());
    let ids: Vec<String> = get_json(&client(), node.at("/api/jobs")).await;
    let job = wait_job(&node, &ids[0], false).await;
    assert_eq!(job["status"], "failed");
    assert!(job["result"]["error"].as_str().unwrap().contains("flaky"), "{job}");
}

#[tokio::test]
async fn stream_refuses_delegated_subscriptions_and_guardian_rejections() {
    let node = TestNode::start(hello_world_config()).await;
    let r = open_stream(&node.url, json!({"subscription": {}, "signature": {}, "data": {}})).await;
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "Streaming only supported for OffchainJob requests."
    );
    let r = open_stream(&node.url, json!({"containers": ["nope"], "data": {}})).await;
    assert_eq!(r.status(), 405);
}

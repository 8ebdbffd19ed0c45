//! Memory has a bound: container output per call, stored results, nesting of `data`, batch size.

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use infernet_testkit::{ChildGuard, rss_kib, wait_healthy};
use serde_json::{Value, json};

use crate::support::{Stub, TestNode, client, free_port, get_json, open_stream, stub, unmanaged, wait_job};

const MIB: usize = 1 << 20;

/// `depth` levels of `{"a": …}`, the outermost included.
fn nested(depth: usize) -> Value {
    (1..depth).fold(json!({}), |inner, _| json!({ "a": inner }))
}

/// Reads a whole body; answers its bytes and whether it ended normally.
async fn read_all(mut response: reqwest::Response) -> (Vec<u8>, bool) {
    let mut received = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => return (received, true),
            Err(_) => return (received, false),
        }
    }
}

#[tokio::test]
async fn a_container_that_streams_forever_is_cut_at_its_output_limit_and_the_node_stays_small() {
    let port = stub(Stub::Flood).await;
    let dir = tempfile::tempdir().unwrap();
    let node_port = free_port();
    let config = dir.path().join("config.json");
    // Default limits: 32 MiB per call.
    let settings = json!({
        "server": {"port": node_port, "bind": "127.0.0.1", "rate_limit": {"num_requests": 1000, "period": 1}},
        "manage_containers": false,
        "store": {"path": dir.path().join("jobs.db")},
        "log": {"path": dir.path().join("node.log")},
        "containers": [unmanaged("flood", port)],
    });
    std::fs::write(&config, settings.to_string()).unwrap();
    let node = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_infernet-node"))
            .args(["--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_healthy(node_port, Duration::from_secs(30));
    let url = format!("http://127.0.0.1:{node_port}");

    // The node's resident memory, sampled while the stream runs.
    let (pid, done, peak) = (node.id(), Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let idle = rss_kib(pid);
    let response = open_stream(&url, json!({"containers": ["flood"], "data": {}})).await;
    assert_eq!(response.status(), 200);
    let (received, ended) = tokio::time::timeout(Duration::from_secs(60), read_all(response))
        .await
        .expect("the stream was never cut");
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    assert!(!ended, "a stream cut at the limit must not look complete");
    let text = String::from_utf8(received).unwrap();
    let (id, output) = text.split_once('\n').unwrap();
    // Up to the limit; what the server still held to send when the body failed may be lost.
    assert!(
        (31 * MIB..=32 * MIB).contains(&output.len()),
        "the client got {} bytes",
        output.len()
    );
    let peak_mib = peak.load(Ordering::Relaxed) / 1024;
    assert!(
        peak_mib < idle / 1024 + 40,
        "the node grew from {} MiB to {peak_mib} MiB forwarding the stream",
        idle / 1024
    );
    let job: Value = get_json(&client(), format!("{url}/api/jobs?id={id}")).await;
    assert_eq!(job[0]["status"], "failed", "{job}");
    let error = job[0]["result"]["error"].as_str().unwrap();
    assert!(
        error.contains("container flood sent more than 33554432 bytes") && error.contains("max_output_size"),
        "{error}"
    );
    println!(
        "flooding stream: node RSS {} MiB idle, {peak_mib} MiB peak",
        idle / 1024
    );
}

#[tokio::test]
async fn a_long_stream_reaches_the_client_whole_and_is_stored_cut_and_marked_truncated() {
    let port = stub(Stub::Streams(3 * MIB)).await;
    let node = TestNode::start(json!({"manage_containers": false,
        "store": {"max_result_size": MIB},
        "containers": [unmanaged("long", port)]}))
    .await;
    let response = open_stream(&node.url, json!({"containers": ["long"], "data": {}})).await;
    let (received, ended) = read_all(response).await;
    assert!(ended);
    let text = String::from_utf8(received).unwrap();
    let (id, output) = text.split_once('\n').unwrap();
    assert_eq!(output.len(), 3 * MIB);
    let job = wait_job(&node, id, false).await;
    assert_eq!(job["status"], "success");
    let stored = &job["result"]["output"];
    assert_eq!(stored["truncated"], true, "{}", &job.to_string()[..200]);
    assert_eq!(stored["output"].as_str().unwrap().len(), MIB);
}

#[tokio::test]
async fn a_huge_answer_fails_the_job_at_once_with_the_limit_named() {
    let port = stub(Stub::Huge(1 << 30)).await;
    let node = TestNode::start(json!({"manage_containers": false,
        "containers": [{"id": "huge", "port": port, "max_output_size": MIB}]}))
    .await;
    let started = Instant::now();
    let id = crate::support::submit(&node, json!({"containers": ["huge"], "data": {}})).await;
    let job = wait_job(&node, &id, false).await;
    // Reading the whole gigabyte would take far longer (and as much memory).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(job["status"], "failed");
    let error = job["result"]["error"].as_str().unwrap();
    assert!(
        error.contains("container huge sent more than 1048576 bytes") && error.contains("max_output_size"),
        "{error}"
    );
}

#[tokio::test]
async fn a_result_larger_than_the_store_takes_fails_with_the_limit_named() {
    let port = stub(Stub::Echo("echo")).await;
    let node = TestNode::start(json!({"manage_containers": false,
        "store": {"max_result_size": 4096},
        "containers": [unmanaged("echo", port)]}))
    .await;
    let small = crate::support::submit(&node, json!({"containers": ["echo"], "data": {"text": "y"}})).await;
    assert_eq!(wait_job(&node, &small, false).await["status"], "success");
    let text = "y".repeat(10_000);
    let large = crate::support::submit(&node, json!({"containers": ["echo"], "data": {"text": text}})).await;
    let job = wait_job(&node, &large, true).await;
    assert_eq!(job["status"], "failed");
    let error = job["result"]["error"].as_str().unwrap();
    assert!(
        error.contains("more than the 4096 bytes the node stores (store.max_result_size)"),
        "{error}"
    );
    assert!(job.to_string().len() < 1024, "nothing of the output is kept");
}

#[tokio::test]
async fn data_nested_too_deep_to_read_back_is_refused_at_submission() {
    let port = stub(Stub::Echo("echo")).await;
    let node = TestNode::start(json!({"manage_containers": false, "containers": [unmanaged("echo", port)]})).await;
    for path in ["/api/jobs", "/api/jobs/stream"] {
        let r = client()
            .post(node.at(path))
            .json(&json!({"containers": ["echo"], "data": nested(124)}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let error = r.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_string();
        assert!(error.contains("data: nested deeper than 100 levels"), "{path}: {error}");
    }
    let answers: Value = client()
        .post(node.at("/api/jobs/batch"))
        .json(&json!([{"containers": ["echo"], "data": nested(124)}]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        answers[0]["error"].as_str().unwrap().contains("100 levels"),
        "{answers}"
    );
    // At the limit a job is kept, and it reads back.
    let id = crate::support::submit(&node, json!({"containers": ["echo"], "data": nested(100)})).await;
    let job = wait_job(&node, &id, true).await;
    assert_ne!(job["status"], "running");
}

#[tokio::test]
async fn a_batch_has_an_item_cap_and_each_item_costs_a_request_of_the_rate_limit() {
    let port = stub(Stub::Echo("echo")).await;
    let node = TestNode::start(json!({"manage_containers": false,
        "server": {"rate_limit": {"num_requests": 5, "period": 60}},
        "containers": [unmanaged("echo", port)]}))
    .await;
    let item = json!({"containers": ["echo"], "data": {}});
    let r = client()
        .post(node.at("/api/jobs/batch"))
        .json(&vec![item.clone(); 8])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answers: Vec<Value> = r.json().await.unwrap();
    assert!(answers[..5].iter().all(|a| a["id"].is_string()), "{answers:?}");
    for answer in &answers[5..] {
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains("rate limit"), "{error}");
    }
    let r = client()
        .post(node.at("/api/jobs/batch"))
        .json(&vec![item.clone()])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "the batch used up the client's requests");

    let node = TestNode::start(json!({"manage_containers": false, "containers": [unmanaged("echo", port)]})).await;
    let r = client()
        .post(node.at("/api/jobs/batch"))
        .json(&vec![item; 10_001])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let error = r.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("at most 1000 jobs (server.max_batch_items), this one has 10001"),
        "{error}"
    );
    let ids: Vec<String> = get_json(&client(), node.at("/api/jobs")).await;
    assert!(ids.is_empty(), "nothing of a refused batch is accepted");
}

#[tokio::test]
async fn large_jobs_share_one_node_wide_buffer_and_small_ones_never_wait_for_it() {
    let slow = stub(Stub::Slow(Duration::from_millis(1500))).await;
    let huge = stub(Stub::Huge(5 * MIB / 2)).await;
    let node = TestNode::start(json!({"manage_containers": false,
        "server": {"max_buffered_bytes": 2 * MIB, "max_body_size": 2 * MIB},
        "containers": [unmanaged("slow", slow), {"id": "huge", "port": huge}]}))
    .await;
    let url = format!("{}/api/jobs", node.url);
    let large = |text: String| json!({"containers": ["slow"], "data": {"text": text}});
    // A 1.5 MiB job holds the whole buffer while it runs: a second one is refused at once, with
    // the setting named and a time to retry; a small job still runs.
    let first = client()
        .post(&url)
        .json(&large("a".repeat(3 * MIB / 2)))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let second = client()
        .post(&url)
        .json(&large("b".repeat(3 * MIB / 2)))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 503);
    assert_eq!(second.headers()["retry-after"], "1");
    let error: Value = second.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("server.max_buffered_bytes"),
        "{error}"
    );
    let small = client()
        .post(&url)
        .json(&json!({"containers": ["slow"], "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    // Once the first has ended, the buffer is free again.
    let first_id = first.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    wait_job(&node, &first_id, false).await;
    let third = client()
        .post(&url)
        .json(&large("c".repeat(3 * MIB / 2)))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 200);
    let third_id = third.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    // While it holds the buffer, a container answer past the first free MiB cannot be buffered:
    // the call fails at once, naming the setting.
    let id = crate::support::submit(&node, json!({"containers": ["huge"], "data": {}})).await;
    let job = wait_job(&node, &id, false).await;
    assert_eq!(job["status"], "failed");
    let error = job["result"]["error"].as_str().unwrap();
    assert!(error.contains("server.max_buffered_bytes"), "{error}");
    // With the buffer free, the same answer fits (1 MiB free + 2 MiB of budget).
    wait_job(&node, &third_id, false).await;
    let id = crate::support::submit(&node, json!({"containers": ["huge"], "data": {}})).await;
    assert_eq!(wait_job(&node, &id, false).await["status"], "success");
    // Reading results takes from the same buffer: one large result is read, two at once are
    // more than it holds (refused at once, naming the setting), the same id twice is one.
    let other = crate::support::submit(&node, json!({"containers": ["huge"], "data": {}})).await;
    assert_eq!(wait_job(&node, &other, false).await["status"], "success");
    let read = |query: String| {
        let url = url.clone();
        async move { client().get(format!("{url}?{query}")).send().await.unwrap() }
    };
    let one = read(format!("id={id}&id={id}")).await;
    assert_eq!(one.status(), 200);
    assert_eq!(one.json::<Vec<Value>>().await.unwrap().len(), 1);
    let both = read(format!("id={id}&id={other}")).await;
    assert_eq!(both.status(), 503);
    let error: Value = both.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("server.max_buffered_bytes"),
        "{error}"
    );
}

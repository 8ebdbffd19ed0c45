//! Off-chain jobs through pipelines of 1–3 containers, and container failures.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Stub, TestNode, stub, submit, unmanaged, wait_job};

async fn three_stub_node() -> TestNode {
    let (a, b, c) = (
        stub(Stub::Echo("a")).await,
        stub(Stub::Echo("b")).await,
        stub(Stub::Echo("c")).await,
    );
    TestNode::start(json!({
        "manage_containers": false,
        "containers": [unmanaged("a", a), unmanaged("b", b), unmanaged("c", c)]
    }))
    .await
}

#[tokio::test]
async fn single_container_job_returns_its_output() {
    let node = three_stub_node().await;
    let id = submit(&node, json!({"containers": ["a"], "data": {"prompt": "hi"}})).await;
    let job = wait_job(&node, &id, false).await;
    assert_eq!(job["status"], "success");
    assert_eq!(job["id"], id.as_str());
    assert!(job.get("intermediate_results").is_none(), "hidden unless asked: {job}");
    assert_eq!(
        job["result"],
        json!({"container": "a", "output": {"by": "a", "received":
            {"source": 1, "destination": 1, "data": {"prompt": "hi"}, "requires_proof": false}}})
    );
}

#[tokio::test]
async fn two_container_pipeline_feeds_output_into_the_next() {
    let node = three_stub_node().await;
    let id = submit(&node, json!({"containers": ["a", "b"], "data": {"x": 1}})).await;
    let job = wait_job(&node, &id, true).await;
    assert_eq!(job["status"], "success");
    let first = &job["intermediate_results"][0];
    assert_eq!(first["container"], "a");
    let b_received = &job["result"]["output"]["received"];
    assert_eq!(b_received["source"], 1);
    assert_eq!(b_received["data"], first["output"], "b gets a's whole output as data");
}

#[tokio::test]
async fn three_container_pipeline_chains_destinations_and_proof_flag() {
    let node = TestNode::start(json!({
        "manage_containers": false,
        "containers": [
            unmanaged("a", stub(Stub::Echo("a")).await),
            unmanaged("b", stub(Stub::Echo("b")).await),
            {"id": "c", "port": stub(Stub::Echo("c")).await, "generates_proofs": true}
        ]
    }))
    .await;
    let id = submit(
        &node,
        json!({"containers": ["a", "b", "c"], "data": {"n": 3}, "requires_proof": true}),
    )
    .await;
    let job = wait_job(&node, &id, true).await;
    assert_eq!(job["status"], "success");
    let inter = job["intermediate_results"].as_array().unwrap();
    assert_eq!(inter.len(), 2);
    let received_by_b = &inter[1]["output"]["received"];
    assert_eq!(received_by_b["data"]["by"], "a");
    let received_by_c = &job["result"]["output"]["received"];
    assert_eq!(received_by_c["data"]["by"], "b");
    for r in [&inter[0]["output"]["received"], received_by_b, received_by_c] {
        assert_eq!(
            (
                r["source"].clone(),
                r["destination"].clone(),
                r["requires_proof"].clone()
            ),
            (json!(1), json!(1), json!(true))
        );
    }
}

#[tokio::test]
async fn hello_world_process_serves_a_job_end_to_end() {
    let node = TestNode::start(crate::support::hello_world_config()).await;
    let id = submit(&node, json!({"containers": ["hello-world"], "data": {"name": "ada"}})).await;
    let job = wait_job(&node, &id, false).await;
    assert_eq!(
        job["result"]["output"],
        json!({"message": "hello, world!", "input": {"name": "ada"}})
    );
}

async fn failing_job(kind: Stub, timeout: Option<f64>) -> Value {
    let port = stub(kind).await;
    let mut entry = json!({"id": "bad", "port": port});
    if let Some(t) = timeout {
        entry["timeout"] = json!(t);
    }
    let good = stub(Stub::Echo("good")).await;
    let node =
        TestNode::start(json!({"manage_containers": false, "containers": [unmanaged("good", good), entry]})).await;
    let id = submit(&node, json!({"containers": ["good", "bad", "good"], "data": {}})).await;
    let job = wait_job(&node, &id, true).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(
        job["intermediate_results"][0]["container"], "good",
        "results before the failure are kept"
    );
    assert_eq!(job["result"]["container"], "bad");
    job["result"]["error"].as_str().unwrap().to_string().into()
}

#[tokio::test]
async fn non_2xx_answer_fails_the_job_with_status_and_body() {
    let error = failing_job(Stub::Fails, None).await;
    let error = error.as_str().unwrap();
    assert!(
        error.contains("HTTP 500") && error.contains("model exploded"),
        "{error}"
    );
}

#[tokio::test]
async fn non_json_answer_fails_the_job() {
    let error = failing_job(Stub::NotJson, None).await;
    assert!(error.as_str().unwrap().contains("not JSON: plain words"), "{error}");
}

#[tokio::test]
async fn slow_container_times_out_per_call() {
    let error = failing_job(Stub::Slow(Duration::from_secs(5)), Some(0.3)).await;
    assert!(
        error.as_str().unwrap().contains("did not answer within 0.3s"),
        "{error}"
    );
}

#[tokio::test]
async fn unreachable_container_fails_the_job_with_its_address() {
    let port = crate::support::free_port();
    let node = TestNode::start(json!({"manage_containers": false, "containers": [unmanaged("gone", port)]})).await;
    let id = submit(&node, json!({"containers": ["gone"], "data": {}})).await;
    let job = wait_job(&node, &id, false).await;
    assert_eq!(job["status"], "failed");
    let error = job["result"]["error"].as_str().unwrap();
    assert!(
        error.contains("unreachable") && error.contains(&port.to_string()),
        "{error}"
    );
}

/// Runs a job on a node whose one container is `container`, served by `service`; answers the
/// finished job and the service's port.
async fn job_on(service: axum::Router, container: impl FnOnce(u16) -> Value, data: Value) -> (Value, u16) {
    let port = crate::support::serve(service).await;
    let container = container(port);
    let id = container["id"].clone();
    let node = TestNode::start(json!({"manage_containers": false, "containers": [container]})).await;
    let job_id = submit(&node, json!({"containers": [id], "data": data})).await;
    (wait_job(&node, &job_id, false).await, port)
}

#[tokio::test]
async fn remote_container_gets_the_bearer_token() {
    use axum::{Json, Router, http::HeaderMap, routing::post};
    let service = Router::new().route(
        "/v1/service_output",
        post(|headers: HeaderMap| async move {
            Json(json!({"auth": headers.get("authorization").and_then(|v| v.to_str().ok())}))
        }),
    );
    let remote = |port| json!({"id": "remote", "url": format!("http://127.0.0.1:{port}/v1/"), "bearer": "s3cret"});
    let (job, _) = job_on(service, remote, json!({})).await;
    assert_eq!(job["result"]["output"], json!({"auth": "Bearer s3cret"}));
}

#[tokio::test]
async fn https_container_is_never_called_in_plain_text() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use axum::{Json, Router, routing::post};
    // A plain-HTTP service behind an `https` URL: the node must attempt TLS (and fail), never
    // send the job in the clear.
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let service = Router::new().route(
        "/service_output",
        post(move || async move {
            seen.fetch_add(1, Ordering::SeqCst);
            Json(json!({"leaked": true}))
        }),
    );
    let remote = |port| json!({"id": "remote", "url": format!("https://127.0.0.1:{port}"), "bearer": "s3cret"});
    let (job, port) = job_on(service, remote, json!({})).await;
    assert_eq!(job["status"], "failed");
    let error = job["result"]["error"].as_str().unwrap();
    // Where it was called, redacted: a container URL's path and query may hold keys.
    assert!(error.contains(&format!("https://127.0.0.1:{port}/…")), "{error}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the service answered a plain-text call"
    );
}

#[tokio::test]
async fn redirected_container_calls_are_followed() {
    use axum::{
        Json, Router,
        response::{IntoResponse, Redirect},
        routing::post,
    };
    // As Ritual's node: a container that moved its endpoint still serves the job.
    let service = Router::new()
        .route(
            "/service_output",
            post(|| async { Redirect::temporary("/v2/service_output").into_response() }),
        )
        .route(
            "/v2/service_output",
            post(|Json(input): Json<serde_json::Value>| async move { Json(json!({"moved": input["data"]})) }),
        );
    let (job, _) = job_on(service, |port| unmanaged("moved", port), json!({"x": 1})).await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(job["result"]["output"], json!({"moved": {"x": 1}}));
}

#[tokio::test]
async fn a_see_other_redirect_is_fetched_once_and_never_posts_twice() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use axum::{
        Json, Router,
        response::{IntoResponse, Redirect},
        routing::{get, post},
    };
    let posts = Arc::new(AtomicUsize::new(0));
    let counted = posts.clone();
    // A service that takes the job and points at its result (Post/Redirect/Get).
    let service = Router::new()
        .route(
            "/service_output",
            post(move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Redirect::to("/result").into_response()
            }),
        )
        .route("/result", get(|| async { Json(json!({"fetched": true})) }));
    let (job, _) = job_on(service, |port| unmanaged("prg", port), json!({"x": 1})).await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(job["result"]["output"], json!({"fetched": true}));
    assert_eq!(posts.load(Ordering::SeqCst), 1, "the job was posted more than once");
}

/// What the raw service does with a connection once it has answered.
#[derive(Clone, Copy, Debug)]
enum AfterAnswer {
    /// Waits for the next request.
    KeepOpen,
    /// Drops it without saying so (no `Connection: close`).
    Drop,
    /// Closes its sending side a moment later and waits for the node to close the connection.
    HalfClose,
}

/// A bare HTTP service answering `{"served": true}`. Answers its port, a count of the
/// connections it accepted and a count of those the node closed.
async fn raw_service(
    after: AfterAnswer,
) -> (
    u16,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let released = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (accepted, closed) = (connections.clone(), released.clone());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    // Head and the (small) body: enough once the JSON object closes.
                    let mut request = Vec::new();
                    while !request.ends_with(b"}") {
                        let Ok(n @ 1..) = socket.read(&mut buf).await else {
                            closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            return;
                        };
                        request.extend_from_slice(&buf[..n]);
                    }
                    // Origin-form target and a Host header, as HTTP/1.1 servers require.
                    let head = String::from_utf8_lossy(&request).to_lowercase();
                    let proper = head.starts_with("post /service_output http/1.1\r\n")
                        && head.contains(&format!("\r\nhost: 127.0.0.1:{port}\r\n"));
                    let (status, body) = if proper {
                        ("200 OK", r#"{"served": true}"#.to_string())
                    } else {
                        ("400 Bad Request", format!(r#"{{"bad request": {:?}}}"#, head))
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    socket.write_all(answer.as_bytes()).await.unwrap();
                    match after {
                        AfterAnswer::KeepOpen => {}
                        AfterAnswer::Drop => return,
                        AfterAnswer::HalfClose => {
                            // Later, when the node holds the connection idle.
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            socket.shutdown().await.unwrap();
                            // Only the node's close ends this read.
                            while matches!(socket.read(&mut buf).await, Ok(1..)) {}
                            closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, connections, released)
}

#[tokio::test]
async fn container_connections_are_kept_alive_and_dead_ones_are_not_reused() {
    for (close, expected) in [(AfterAnswer::KeepOpen, 1), (AfterAnswer::Drop, 3)] {
        let (port, connections, _) = raw_service(close).await;
        let node = TestNode::start(json!({"manage_containers": false, "containers": [unmanaged("raw", port)]})).await;
        for i in 0..3 {
            let id = submit(&node, json!({"containers": ["raw"], "data": {"i": i}})).await;
            let job = wait_job(&node, &id, false).await;
            assert_eq!(job["status"], "success", "{close:?} job {i}: {job}");
            assert_eq!(job["result"]["output"], json!({"served": true}));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let made = connections.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(made, expected, "{close:?}: {made} connections for 3 sequential jobs");
    }
}

#[tokio::test]
async fn an_idle_container_connection_the_container_closed_is_released() {
    // No call needs the connection again: the node still closes its end, rather than leave the
    // socket open (CLOSE_WAIT) for as long as the container gets no calls.
    let (port, connections, released) = raw_service(AfterAnswer::HalfClose).await;
    let node = TestNode::start(json!({"manage_containers": false, "containers": [unmanaged("raw", port)]})).await;
    let id = submit(&node, json!({"containers": ["raw"], "data": {}})).await;
    let job = wait_job(&node, &id, false).await;
    assert_eq!(job["status"], "success", "{job}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while released.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the node kept the closed connection open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

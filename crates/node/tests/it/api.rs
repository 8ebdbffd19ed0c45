//! Every endpoint, the Guardian's rejections, rate limiting and bad input, over real HTTP.

use serde_json::{Value, json};

use crate::support::{RedisServer, Stub, TestNode, client, client_from, get_json, stub, submit, unmanaged, wait_job};

async fn echo_node(extra: Value) -> TestNode {
    let mut config = json!({
        "manage_containers": false,
        "containers": [
            {"id": "echo", "port": stub(Stub::Echo("echo")).await, "description": "echoes"},
            {"id": "internal", "port": stub(Stub::Echo("internal")).await, "external": false},
            {"id": "lan-only", "port": stub(Stub::Echo("lan")).await, "allowed_ips": ["127.0.0.2"]},
        ]
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    TestNode::start(config).await
}

async fn post(node: &TestNode, path: &str, body: &str) -> (u16, Value) {
    let r = client()
        .post(node.at(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn health_info_resources_and_openapi() {
    let node = TestNode::start(crate::support::hello_world_config()).await;
    let health: Value = get_json(&client(), node.at("/health")).await;
    assert_eq!(health, json!({"status": "healthy"}));

    let info: Value = get_json(&client(), node.at("/info")).await;
    assert_eq!(
        info["containers"],
        json!([{"description": "", "external": true, "id": "hello-world", "image": ""}])
    );
    assert_eq!(info["pending"], json!({"offchain": 0, "onchain": 0}));
    assert_eq!(info["chain"], json!({"address": "", "enabled": false}));
    assert_eq!(info["store"], "embedded");
    assert!(info["system"]["memory_total_bytes"].as_u64().unwrap() > 0, "{info}");
    assert!(info["system"]["gpus"].is_array());

    let resources: Value = get_json(&client(), node.at("/resources")).await;
    assert_eq!(
        resources,
        json!({"hello-world": {"models": ["hello-world"], "service": "hello-world"}})
    );
    let resources: Value = get_json(&client(), node.at("/resources?model_id=hello-world")).await;
    assert_eq!(resources["hello-world"]["supported"], true);
    // Host statistics only when asked for: every other key is a container id.
    let resources: Value = get_json(&client(), node.at("/resources?system=true")).await;
    assert_eq!(resources["hello-world"]["service"], "hello-world");
    assert!(resources["system"]["cpus"].as_u64().unwrap() >= 1, "{resources}");
    assert!(resources["system"]["gpus"].is_array(), "{resources}");
    let r = client().get(node.at("/resources?system=foo")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let answer: Value = r.json().await.expect("a JSON error");
    assert!(answer["error"].as_str().unwrap().contains("system"), "{answer}");

    let doc: Value = get_json(&client(), node.at("/openapi.json")).await;
    for path in [
        "/health",
        "/info",
        "/resources",
        "/api/jobs",
        "/api/jobs/batch",
        "/api/jobs/stream",
        "/api/status",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"].get("JobResult").is_some());
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["JobRequest"]["properties"]["containers"]["minItems"], 1);
    assert_eq!(
        schemas["JobsAnswer"]["anyOf"].as_array().map(Vec::len),
        Some(2),
        "GET /api/jobs answers results or ids: {}",
        schemas["JobsAnswer"]
    );
    assert!(
        doc["paths"]["/api/jobs/stream"]["post"]["responses"]
            .get("400")
            .is_some()
    );
    assert!(doc["paths"]["/api/status"]["put"].get("requestBody").is_some());

    let r = client().get(node.at("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let r = client().delete(node.at("/api/jobs")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
}

#[tokio::test]
async fn guardian_rejections_are_405_with_params() {
    let node = echo_node(json!({})).await;
    let cases = [
        (
            json!({"containers": ["echo", "ghost"], "data": {}}),
            "Container not supported",
            json!({"container": "ghost"}),
        ),
        (
            json!({"containers": ["internal"], "data": {}}),
            "First container must be external",
            json!({"first_container": "internal"}),
        ),
        (
            json!({"containers": ["echo"], "data": {}, "requires_proof": true}),
            "Container does not generate proof",
            json!({"container": "echo"}),
        ),
        (
            json!({"containers": ["lan-only"], "data": {}}),
            "Container not allowed for address",
            json!({"container": "lan-only", "address": "127.0.0.1"}),
        ),
        // The body cannot claim another address.
        (
            json!({"containers": ["lan-only"], "data": {}, "ip": "127.0.0.2"}),
            "Container not allowed for address",
            json!({"container": "lan-only", "address": "127.0.0.1"}),
        ),
    ];
    for (body, error, params) in cases {
        let (status, answer) = post(&node, "/api/jobs", &body.to_string()).await;
        assert_eq!(status, 405, "{body}");
        assert_eq!(answer, json!({"error": error, "params": params}), "{body}");
    }
    // From the allowed address it goes through.
    let r = client_from("127.0.0.2")
        .post(node.at("/api/jobs"))
        .json(&json!({"containers": ["lan-only"], "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A delegated subscription without a chain is refused with a serialisable body (Ritual: 500).
    let (status, answer) = post(
        &node,
        "/api/jobs",
        r#"{"subscription": {"owner": "0x01"}, "signature": {"expiry": 1}, "data": {}}"#,
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(
        answer,
        json!({"error": "Chain not enabled", "params": {"delegated_subscription": {"owner": "0x01"}}})
    );
}

#[tokio::test]
async fn bad_input_is_a_4xx_with_a_clear_error() {
    let node =
        echo_node(json!({"server": {"max_body_size": 1024, "rate_limit": {"num_requests": 100000, "period": 1}}}))
            .await;
    for (body, status, needle) in [
        ("{not json", 400, "not valid JSON"),
        ("[1, 2]", 400, "found an array"),
        (r#"{"containers": "echo", "data": {}}"#, 400, "containers"),
        (r#"{"containers": ["echo", 7], "data": {}}"#, 400, "containers[1]"),
        (r#"{"containers": ["echo"], "data": [1]}"#, 400, "data"),
        (r#"{"containers": ["echo"]}"#, 400, "missing field `data`"),
        (
            r#"{"containers": [], "data": {}}"#,
            400,
            "containers: name at least one container",
        ),
        (
            r#"{"containers": ["echo"], "data": {}, "requires_proof": "yes"}"#,
            400,
            "requires_proof",
        ),
    ] {
        // The streaming route is answered by the server's front, not the router: same errors.
        for path in ["/api/jobs", "/api/jobs/stream"] {
            let (got, answer) = post(&node, path, body).await;
            assert_eq!(got, status, "{path} {body}: {answer}");
            assert!(
                answer["error"].as_str().unwrap().contains(needle),
                "{path} {body}: {answer}"
            );
        }
    }
    let big = format!(r#"{{"containers": ["echo"], "data": {{"x": "{}"}}}}"#, "a".repeat(4096));
    for path in ["/api/jobs", "/api/jobs/stream"] {
        let (got, answer) = post(&node, path, &big).await;
        assert_eq!(got, 413, "{path}");
        assert!(answer["error"].as_str().unwrap().contains("1024"), "{path}: {answer}");
        let r = client()
            .post(node.at(path))
            .body(vec![b'{', 0xff, 0xfe, b'}'])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let answer: Value = r.json().await.unwrap();
        assert!(
            answer["error"].as_str().unwrap().contains("not UTF-8"),
            "{path}: {answer}"
        );
    }
    let (got, answer) = post(&node, "/api/jobs/batch", r#"{"containers": ["echo"], "data": {}}"#).await;
    assert_eq!(got, 400);
    assert!(
        answer["error"].as_str().unwrap().starts_with("Expected a list"),
        "{answer}"
    );
    // Unknown ids: an empty list, not an error.
    let jobs: Value = get_json(&client(), node.at("/api/jobs?id=unknown")).await;
    assert_eq!(jobs, json!([]));
}

#[tokio::test]
async fn batch_answers_each_item_in_order() {
    let node = echo_node(json!({})).await;
    let (status, answers) = post(
        &node,
        "/api/jobs/batch",
        &json!([
            {"containers": ["echo"], "data": {"i": 0}},
            {"containers": ["ghost"], "data": {}},
            {"containers": 5},
            {"containers": ["echo"], "data": {"i": 3}},
        ])
        .to_string(),
    )
    .await;
    assert_eq!(status, 200);
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 4);
    assert_eq!(
        answers[1],
        json!({"error": "Container not supported", "params": {"container": "ghost"}})
    );
    assert!(answers[2]["error"].as_str().unwrap().contains("containers"));
    for i in [0, 3] {
        let job = wait_job(&node, answers[i]["id"].as_str().unwrap(), false).await;
        assert_eq!(job["result"]["output"]["received"]["data"], json!({"i": i}));
    }
}

#[tokio::test]
async fn results_are_readable_by_id_anywhere_but_listed_only_for_their_client() {
    let node = echo_node(json!({})).await;
    let id = submit(&node, json!({"containers": ["echo"], "data": {}})).await;
    wait_job(&node, &id, false).await;
    let mine: Vec<String> = get_json(&client(), node.at("/api/jobs")).await;
    assert_eq!(mine, vec![id.clone()]);
    let done: Vec<String> = get_json(&client(), node.at("/api/jobs?pending=false")).await;
    assert_eq!(done, vec![id.clone()]);
    let pending: Vec<String> = get_json(&client(), node.at("/api/jobs?pending=true")).await;
    assert!(pending.is_empty());
    let other = client_from("127.0.0.2");
    let theirs: Vec<String> = get_json(&other, node.at("/api/jobs")).await;
    assert!(theirs.is_empty());
    let by_id: Value = get_json(&other, node.at(&format!("/api/jobs?id={id}"))).await;
    assert_eq!(by_id[0]["status"], "success");
}

#[tokio::test]
async fn rate_limit_is_per_client_with_retry_after_and_not_spoofable() {
    let node = echo_node(json!({"server": {"rate_limit": {"num_requests": 3, "period": 60}}})).await;
    let c = client();
    for i in 0..3 {
        let r = c.get(node.at("/health")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.headers()["ratelimit-limit"], "3");
        assert_eq!(r.headers()["ratelimit-remaining"], (2 - i).to_string().as_str());
    }
    let r = c
        .get(node.at("/health"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert!(
        r.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("too many requests")
    );
    // Another route has its own bucket; another client has its own too.
    assert_eq!(c.get(node.at("/info")).send().await.unwrap().status(), 200);
    // The streaming route, answered by the server's front, is limited alike (a refused body
    // counts too: the limit comes first).
    for i in 0..3 {
        let r = c
            .post(node.at("/api/jobs/stream"))
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "stream request {i}");
        assert_eq!(r.headers()["ratelimit-remaining"], (2 - i).to_string().as_str());
    }
    let r = c
        .post(node.at("/api/jobs/stream"))
        .body(json!({"containers": ["echo"], "data": {}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        client_from("127.0.0.2")
            .get(node.at("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn status_reports_from_local_containers() {
    let node = echo_node(json!({})).await;
    let put = |body: Value| client().put(node.at("/api/status")).json(&body).send();
    let r = put(json!({"id": "ext-1", "status": "running", "containers": ["echo"]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pending: Vec<String> = get_json(&client(), node.at("/api/jobs?pending=true")).await;
    assert_eq!(pending, vec!["ext-1"]);
    let r = put(json!({"id": "ext-1", "status": "success", "containers": ["echo"]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let job: Value = get_json(&client(), node.at("/api/jobs?id=ext-1")).await;
    assert_eq!(job, json!([{"id": "ext-1", "result": null, "status": "success"}]));
    let r = put(json!({"id": "ext-1", "status": "exploded"})).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = put(json!({"status": "success"})).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = put(json!({"id": "ext-2", "status": "success"})).await.unwrap();
    assert_eq!(r.status(), 400, "`containers` is required");
    let answer: Value = r.json().await.unwrap();
    assert!(answer["error"].as_str().unwrap().contains("containers"), "{answer}");
    // The original client of a known job keeps it.
    let id = submit(&node, json!({"containers": ["echo"], "data": {}})).await;
    wait_job(&node, &id, false).await;
    let r = client_from("127.0.0.3")
        .put(node.at("/api/status"))
        .json(&json!({"id": id, "status": "failed", "containers": ["echo"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mine: Vec<String> = get_json(&client(), node.at("/api/jobs")).await;
    assert!(mine.contains(&id));
}

/// Who may report statuses is `server.status_sources` (by TCP peer), checked before the body
/// is read; a report is small.
#[tokio::test]
async fn status_reports_come_only_from_the_listed_sources() {
    let node = echo_node(json!({"server": {"status_sources": ["127.0.0.2/32"]}})).await;
    let report = json!({"id": "ext-1", "status": "running", "containers": ["echo"]});
    let put = |from: &str, body: Value| client_from(from).put(node.at("/api/status")).json(&body).send();
    let r = put("127.0.0.1", report.clone()).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"error": "Unauthorized"}));
    assert_eq!(put("127.0.0.2", report).await.unwrap().status(), 200);
    let huge = json!({"id": "ext-2", "status": "running", "containers": ["echo"], "data": "x".repeat(100_000)});
    assert_eq!(put("127.0.0.2", huge).await.unwrap().status(), 413);
}

#[tokio::test]
async fn redis_backed_node_serves_jobs() {
    let redis = RedisServer::start();
    let port = stub(Stub::Echo("echo")).await;
    let node = TestNode::start(json!({
        "manage_containers": false,
        "redis": {"host": "127.0.0.1", "port": redis.port},
        "containers": [unmanaged("echo", port)]
    }))
    .await;
    let info: Value = get_json(&client(), node.at("/info")).await;
    assert_eq!(info["store"], "redis");
    let id = submit(&node, json!({"containers": ["echo"], "data": {"r": 1}})).await;
    let job = wait_job(&node, &id, false).await;
    assert_eq!(job["status"], "success");
    let mine: Vec<String> = get_json(&client(), node.at("/api/jobs")).await;
    assert_eq!(mine, vec![id]);
}

#[tokio::test]
async fn a_killed_service_process_is_restarted_and_serves_again() {
    let tag = uuid::Uuid::new_v4().to_string();
    let port = crate::support::free_port();
    let node = TestNode::start(json!({"containers": [
        {"id": "hello-world", "port": port, "process": {"program": "hello-world", "args": [&tag]}}
    ]}))
    .await;
    let pid = pid_of(&tag);
    assert_ne!(pid, 0, "hello-world is not running");
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut saw_failure = false;
    loop {
        let info: Value = get_json(&client(), node.at("/info")).await;
        let state = info["container_states"]["hello-world"]["state"].clone();
        saw_failure |= state == "failed" || state == "starting";
        if state == "running" && pid_of(&tag) != pid && pid_of(&tag) != 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not restarted: {info}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(saw_failure, "the exit was never visible in /info");
    let id = submit(&node, json!({"containers": ["hello-world"], "data": {}})).await;
    assert_eq!(wait_job(&node, &id, false).await["status"], "success");
}

/// The pid of the process whose command line contains `tag` (0 if none).
fn pid_of(tag: &str) -> u32 {
    let out = std::process::Command::new("pgrep").args(["-f", tag]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn metrics_count_jobs_and_container_calls_after_known_traffic() {
    let node = TestNode::start(json!({
        "manage_containers": false,
        "containers": [unmanaged("echo", stub(Stub::Echo("echo")).await), unmanaged("broken", stub(Stub::Fails).await)]
    }))
    .await;
    for _ in 0..2 {
        let id = submit(&node, json!({"containers": ["echo"], "data": {}})).await;
        wait_job(&node, &id, false).await;
    }
    let id = submit(&node, json!({"containers": ["echo", "broken"], "data": {}})).await;
    wait_job(&node, &id, false).await;
    let streamed = client()
        .post(node.at("/api/jobs/stream"))
        .json(&json!({"containers": ["echo"], "data": {}}))
        .send()
        .await
        .unwrap();
    let (stream_id, _) = streamed
        .text()
        .await
        .unwrap()
        .split_once('\n')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap();
    wait_job(&node, &stream_id, false).await;

    let r = client().get(node.at("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("{name} {labels:?} missing from:\n{text}"));
        match &sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_) => {
                panic!("{name} is not a number")
            }
        }
    };
    assert_eq!(
        value("infernet_jobs_total", &[("source", "offchain"), ("outcome", "success")]),
        3.0
    );
    assert_eq!(
        value("infernet_jobs_total", &[("source", "offchain"), ("outcome", "failure")]),
        1.0
    );
    assert_eq!(
        value(
            "infernet_container_calls_total",
            &[("container", "echo"), ("outcome", "success")]
        ),
        4.0
    );
    assert_eq!(
        value(
            "infernet_container_calls_total",
            &[("container", "broken"), ("outcome", "failure")]
        ),
        1.0
    );
    assert_eq!(value("infernet_jobs_pending", &[("source", "offchain")]), 0.0);
    assert_eq!(value("infernet_container_up", &[("container", "echo")]), 1.0);
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "infernet_job_duration_seconds")
        .expect("histogram");
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert_eq!(buckets.last().unwrap().count, 4.0, "+Inf bucket counts every job");
        }
        other => panic!("job duration should be a histogram, got {other:?}"),
    }
}

#[tokio::test]
async fn heartbeats_carry_load_and_counters_but_never_job_data_or_client_addresses() {
    use std::sync::{Arc, Mutex};

    use axum::{Router, http::HeaderMap, routing::post};
    type Beats = Arc<Mutex<Vec<(Option<String>, Value)>>>;
    let beats: Beats = Arc::default();
    let sink = beats.clone();
    let port = crate::support::serve(Router::new().route(
        "/register",
        post(move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                sink.lock().unwrap().push((auth, crate::support::heartbeat_of(&body)));
                "ok"
            }
        }),
    ))
    .await;
    let node = TestNode::start(json!({
        "manage_containers": false,
        "stats": {"endpoint": format!("http://127.0.0.1:{port}/register"), "token": "tok", "interval": 0.1},
        "containers": [{"id": "echo", "port": stub(Stub::Echo("echo")).await, "description": "echoes"}]
    }))
    .await;
    let r = client_from("127.0.0.2")
        .post(node.at("/api/jobs"))
        .json(&json!({"containers": ["echo"], "data": {"marker": "private-input-7f3a"}}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    wait_job(&node, &id, false).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let beat = loop {
        let found = beats
            .lock()
            .unwrap()
            .iter()
            // The counter moves as the job ends, the pending count once its result is stored:
            // a heartbeat between the two has both; the test waits for the settled one.
            .find(|(_, b)| b["jobs"]["offchain"]["success"] == 1 && b["pending"]["offchain"] == 0)
            .cloned();
        if let Some(found) = found {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "no heartbeat after the job");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(beat.0.as_deref(), Some("Bearer tok"));
    let body = beat.1;
    assert_eq!(
        body["containers"],
        json!([{"id": "echo", "description": "echoes", "external": true}])
    );
    assert_eq!(body["pending"], json!({"offchain": 0, "onchain": 0}));
    assert!(body["system"]["cpus"].as_u64().unwrap() >= 1);
    let text = body.to_string();
    for leak in ["private-input-7f3a", "127.0.0.2", &id] {
        assert!(!text.contains(leak), "{leak} leaked into the heartbeat: {text}");
    }
}

#[tokio::test]
async fn delegated_subscriptions_are_checked_in_ritual_order_on_a_chain_node() {
    let devnet = crate::chain::devnet().await;
    let node = TestNode::start(json!({
        "manage_containers": false,
        "chain": crate::chain::chain_config(&devnet),
        "containers": [unmanaged("echo", stub(Stub::Echo("echo")).await)]
    }))
    .await;
    let (status, answer) = post(
        &node,
        "/api/jobs",
        r#"{"subscription": {}, "signature": {"expiry": 1}, "data": {}}"#,
    )
    .await;
    assert_eq!(status, 405, "an expired signature is refused first: {answer}");
    assert_eq!(answer["error"], "Signature expired");
    let (status, answer) = post(
        &node,
        "/api/jobs",
        r#"{"subscription": {}, "signature": {"expiry": 4000000000}, "data": {}}"#,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"],
        "invalid delegated subscription request: subscription.owner: missing field"
    );
}

#[tokio::test]
async fn a_client_cancels_its_running_job_and_nobody_else_can() {
    let node = TestNode::start(json!({"manage_containers": false,
        "containers": [unmanaged("slow", stub(Stub::Slow(std::time::Duration::from_secs(30))).await),
                       unmanaged("echo", stub(Stub::Echo("echo")).await)]}))
    .await;
    let id = submit(&node, json!({"containers": ["slow"], "data": {}})).await;
    // Another client (another loopback address) does not see it.
    let other = client_from("127.0.0.2");
    let r = other.delete(node.at(&format!("/api/jobs/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = client()
        .delete(node.at(&format!("/api/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Stopped at once, not after the container's 30 s.
    let job = wait_job(&node, &id, false).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["result"]["error"], "cancelled by the client");
    let info: Value = get_json(&client(), node.at("/info")).await;
    assert_eq!(info["pending"]["offchain"], 0, "{info}");
    // Ended jobs cannot be cancelled; unknown ones are not found.
    let r = client()
        .delete(node.at(&format!("/api/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let done = submit(&node, json!({"containers": ["echo"], "data": {}})).await;
    wait_job(&node, &done, false).await;
    assert_eq!(
        client()
            .delete(node.at(&format!("/api/jobs/{done}")))
            .send()
            .await
            .unwrap()
            .status(),
        409
    );
    assert_eq!(
        client()
            .delete(node.at("/api/jobs/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // A stream that runs is not said to have ended: closing its connection stops it.
    let mut stream = client()
        .post(node.at("/api/jobs/stream"))
        .json(&json!({"containers": ["slow"], "data": {}}))
        .send()
        .await
        .unwrap();
    let first = stream.chunk().await.unwrap().unwrap();
    let streaming = String::from_utf8_lossy(&first)
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    let r = client()
        .delete(node.at(&format!("/api/jobs/{streaming}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("is a stream"));
}

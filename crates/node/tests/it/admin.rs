//! The operator's signed admin API over real HTTP: who may call it, pause/resume/drain, the
//! provider's settings, the node's signed identity, and what survives a restart.

use infernet_identity::{Identity, nip98, statement};
use serde_json::{Value, json};

use crate::support::{Stub, TestNode, client, get_json, stub, unmanaged};

/// A node managed by `operator`, its store (and so its key and admin state) in `dir`, sending
/// heartbeats to `beats` when given.
async fn managed_node(operator: &Identity, dir: &std::path::Path, echo_port: u16) -> TestNode {
    managed_node_beating(operator, dir, echo_port, None).await
}

async fn managed_node_beating(
    operator: &Identity,
    dir: &std::path::Path,
    echo_port: u16,
    beats: Option<u16>,
) -> TestNode {
    let mut config = json!({
        "manage_containers": false,
        "containers": [unmanaged("echo", echo_port)],
        "store": {"path": dir.join("jobs.db").display().to_string()},
        "operator": {"pubkeys": [operator.npub()]},
    });
    if let Some(port) = beats {
        config["stats"] = json!({"endpoint": format!("http://127.0.0.1:{port}/register"), "interval": 0.05});
    }
    TestNode::start(config).await
}

/// A heartbeat sink: the latest heartbeat received, checked and unwrapped.
async fn heartbeat_sink() -> (u16, tokio::sync::watch::Receiver<Value>) {
    use axum::{Router, routing::post};
    let (beats, heard) = tokio::sync::watch::channel(Value::Null);
    let beats = std::sync::Arc::new(beats);
    let port = crate::support::serve(Router::new().route(
        "/register",
        post(move |axum::Json(body): axum::Json<Value>| {
            beats.send_replace(crate::support::heartbeat_of(&body));
            async { "ok" }
        }),
    ))
    .await;
    (port, heard)
}

/// Sends `method path` with `body`, signed by `signer` for the node's URL (or the `signed_url` given).
pub(crate) async fn signed(
    node: &TestNode,
    signer: &Identity,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let url = node.at(path);
    let body = body.map(Value::to_string);
    let header = nip98::authorization(signer, method, &url, body.as_deref().map(str::as_bytes));
    send(method, &url, Some(header), body).await
}

async fn send(method: &str, url: &str, authorization: Option<String>, body: Option<String>) -> (u16, Value) {
    let mut request = client().request(method.parse().unwrap(), url);
    if let Some(header) = authorization {
        request = request.header("authorization", header);
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The node's signed identity statement, checked.
async fn identity_of(node: &TestNode) -> statement::Statement {
    let signed = client()
        .get(node.at("/identity"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    statement::verify(&signed, "infernet-node", infernet_identity::unix_now(), 60).unwrap()
}

async fn submit_job(node: &TestNode) -> (u16, Value) {
    send(
        "POST",
        &node.at("/api/jobs"),
        None,
        Some(json!({"containers": ["echo"], "data": {}}).to_string()),
    )
    .await
}

#[tokio::test]
async fn only_a_fresh_request_signed_by_an_operator_for_this_node_is_obeyed() {
    let operator = Identity::generate();
    let dir = tempfile::tempdir().unwrap();
    let node = managed_node(&operator, dir.path(), stub(Stub::Echo("echo")).await).await;
    let url = node.at("/admin/pause");
    let body = json!({}).to_string();
    let now = infernet_identity::unix_now();
    let sign = |who: &Identity, method: &str, url: &str, payload: &str, at: u64| {
        nip98::authorization_at(who, method, url, Some(payload.as_bytes()), at)
    };

    // Each refusal says why, with 401.
    let forged = {
        let good = sign(&operator, "POST", &url, &body, now);
        let event = String::from_utf8(base64_decode(&good["Nostr ".len()..])).unwrap();
        let mut event: Value = serde_json::from_str(&event).unwrap();
        event["created_at"] = json!(now - 1);
        format!("Nostr {}", base64_encode(event.to_string().as_bytes()))
    };
    let cases = [
        (None, "needs a NIP-98"),
        (Some(forged), "signature is invalid"),
        (
            Some(sign(&operator, "POST", &url, &body, now - 120)),
            "away from the server's clock",
        ),
        (
            Some(sign(&operator, "POST", &node.at("/admin/resume"), &body, now)),
            "`u` tag",
        ),
        (Some(sign(&operator, "GET", &url, &body, now)), "`method` tag"),
        (
            Some(sign(&operator, "POST", &url, "{\"other\":1}", now)),
            "does not match",
        ),
        (
            Some(sign(&Identity::generate(), "POST", &url, &body, now)),
            "is not allowed",
        ),
    ];
    for (header, why) in cases {
        let (status, answer) = send("POST", &url, header, Some(body.clone())).await;
        assert_eq!(status, 401, "{why}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(why), "{why}: {answer}");
    }
    let (status, _) = submit_job(&node).await;
    assert_eq!(status, 200, "nothing above paused the node");

    // The operator's request is obeyed once; the same event again is a replay.
    let header = sign(&operator, "POST", &url, &body, now);
    let (status, answer) = send("POST", &url, Some(header.clone()), Some(body.clone())).await;
    assert_eq!((status, answer["mode"].as_str()), (200, Some("paused")), "{answer}");
    let (status, answer) = send("POST", &url, Some(header), Some(body.clone())).await;
    assert_eq!(status, 401);
    assert!(answer["error"].as_str().unwrap().contains("used before"), "{answer}");
}

#[tokio::test]
async fn admin_calls_and_the_identity_are_rate_limited_and_an_unsigned_call_is_refused_before_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let operator = Identity::generate();
    let node = TestNode::start(json!({
        "manage_containers": false,
        "containers": [unmanaged("echo", stub(Stub::Echo("echo")).await)],
        "operator": {"pubkeys": [operator.npub()]},
        "server": {"rate_limit": {"num_requests": 2, "period": 600}},
    }))
    .await;
    // No Authorization header, and a body announced but never sent: 401 at once, not after the
    // node waited for the body.
    let mut conn = tokio::net::TcpStream::connect(node.url.trim_start_matches("http://"))
        .await
        .unwrap();
    conn.write_all(b"POST /admin/pause HTTP/1.1\r\nHost: node\r\nContent-Length: 1000000\r\n\r\n{")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(std::time::Duration::from_secs(5), conn.read_exact(&mut head))
        .await
        .expect("no answer before the body came")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 401");
    // That call counted: the admin routes allow one more of this client, signed or not.
    let (status, answer) = signed(&node, &operator, "GET", "/admin/status", None).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = signed(&node, &operator, "GET", "/admin/status", None).await;
    assert_eq!(status, 429, "{answer}");
    // `/identity` has its own allowance.
    for expected in [200, 200, 429] {
        let response = client().get(node.at("/identity")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), expected);
    }
}

#[tokio::test]
async fn pause_drain_and_a_schedule_refuse_jobs_and_the_settings_survive_a_restart() {
    let operator = Identity::generate();
    let dir = tempfile::tempdir().unwrap();
    let echo = stub(Stub::Echo("echo")).await;
    let (sink, mut heard) = heartbeat_sink().await;
    let node = managed_node_beating(&operator, dir.path(), echo, Some(sink)).await;

    for (path, mode) in [("/admin/pause", "paused"), ("/admin/drain", "draining")] {
        let (status, answer) = signed(&node, &operator, "POST", path, Some(&json!({}))).await;
        assert_eq!(
            (status, answer["taking_jobs"].as_bool()),
            (200, Some(false)),
            "{answer}"
        );
        let (status, refused) = submit_job(&node).await;
        assert_eq!(status, 503, "{refused}");
        assert!(refused["error"].as_str().unwrap().contains(mode), "{refused}");
    }
    let (status, _) = signed(&node, &operator, "POST", "/admin/resume", Some(&json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(submit_job(&node).await.0, 200);

    // Bad settings: 400 naming each field.
    let bad = json!({"availability": {"timezone": "Mars/Olympus", "weekly": []},
                     "pricing": {"echo": {"per_job": -1, "unit": "USD"}},
                     "limits": {"echo": {"memory_mb": 1u64 << 40}}});
    let (status, answer) = signed(&node, &operator, "PUT", "/admin/settings", Some(&bad)).await;
    assert_eq!(status, 400, "{answer}");
    let paths: Vec<&str> = answer["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["availability.timezone", "pricing.echo.per_job"], "{answer}");
    let beyond = json!({"limits": {"echo": {"memory_mb": 1u64 << 40}}});
    let (status, answer) = signed(&node, &operator, "PUT", "/admin/settings", Some(&beyond)).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["problems"][0]["path"], "limits.echo.memory_mb");

    // A schedule with no opening now: the node refuses jobs and says when it opens.
    let tomorrow = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(36))
        .unwrap();
    let date = tomorrow.to_zoned_datetime(jiff::tz::TimeZone::UTC).date().to_string();
    let settings = json!({
        "availability": {"timezone": "UTC", "weekly": [], "exceptions": [{"date": date, "available": true}]},
        "pricing": {"echo": {"per_job": 0.002, "per_second": 0.0005, "unit": "USD"}},
    });
    let (status, answer) = signed(&node, &operator, "PUT", "/admin/settings", Some(&settings)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, refused) = submit_job(&node).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["available_at"], format!("{date}T00:00:00Z"), "{refused}");

    // The price and the closed hours show in /info and the (signed) heartbeat.
    let info: Value = get_json(&client(), node.at("/info")).await;
    assert_eq!(info["pricing"]["echo"]["per_job"], 0.002, "{info}");
    assert_eq!(info["availability"]["open"], false);
    assert_eq!(info["availability"]["available_at"], format!("{date}T00:00:00Z"));
    let beat = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        heard.wait_for(|b| b["pricing"]["echo"]["per_job"] == 0.002),
    )
    .await
    .expect("a heartbeat with the new price within 10 s")
    .unwrap()
    .clone();
    assert_eq!(beat["availability"], info["availability"]);
    let resources: Value = get_json(&client(), node.at("/resources?system=true")).await;
    assert_eq!(resources["pricing"]["echo"]["per_second"], 0.0005, "{resources}");

    // The price shows in the node's signed identity.
    let checked = identity_of(&node).await;
    assert_eq!(checked.content["pricing"]["echo"]["per_job"], 0.002);
    assert_eq!(checked.content["operators"], json!([operator.npub()]));
    let node_key = checked.signer;
    let mut node = node;
    let running = node.node.take().unwrap();
    running.shutdown();
    running.wait().await.unwrap();

    // Restarted on the same store: same key, same settings, still outside its hours.
    let node = managed_node(&operator, dir.path(), echo).await;
    let (status, answer) = signed(&node, &operator, "GET", "/admin/settings", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["pricing"], settings["pricing"],
        "what the API set outlives a restart"
    );
    assert_eq!(
        answer["availability"]["exceptions"],
        settings["availability"]["exceptions"]
    );
    assert_eq!(submit_job(&node).await.0, 503);
    let checked = identity_of(&node).await;
    assert_eq!(checked.signer, node_key, "the node keeps its key");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A node that runs the hello-world program as `hello` and is managed by `operator`, its store
/// (and so its admin state) in `dir`.
async fn hello_node(operator: &Identity, dir: &std::path::Path, port: u16) -> TestNode {
    TestNode::start(json!({
        "containers": [hello_process("hello", port)],
        "store": {"path": dir.join("jobs.db").display().to_string()},
        "operator": {"pubkeys": [operator.npub()]},
    }))
    .await
}

fn hello_process(id: &str, port: u16) -> Value {
    json!({"id": id, "port": port, "process": {"program": "hello-world"}})
}

/// Runs a job on `container`: the finished job, or the refusal's status and body.
async fn job_on(node: &TestNode, container: &str) -> Result<Value, (u16, Value)> {
    let body = json!({"containers": [container], "data": {"name": "ada"}}).to_string();
    let (status, answer) = send("POST", &node.at("/api/jobs"), None, Some(body)).await;
    if status != 200 {
        return Err((status, answer));
    }
    Ok(crate::support::wait_job(node, answer["id"].as_str().unwrap(), false).await)
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn problem_paths(answer: &Value) -> Vec<&str> {
    answer["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems listed: {answer}"))
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn an_operator_adds_replaces_and_removes_containers_and_a_restart_keeps_them() {
    let operator = Identity::generate();
    let dir = tempfile::tempdir().unwrap();
    let (first, added, moved) = (
        crate::support::free_port(),
        crate::support::free_port(),
        crate::support::free_port(),
    );
    let node = hello_node(&operator, dir.path(), first).await;
    let (status, listed) = signed(&node, &operator, "GET", "/admin/containers", None).await;
    assert_eq!(
        (status, listed["from"].as_str()),
        (200, Some("config.json")),
        "{listed}"
    );
    assert_eq!(listed["containers"][0]["entry"]["id"], "hello");

    // Added: started, answering, then serving jobs.
    let entry = hello_process("hello2", added);
    let (status, answer) = signed(&node, &operator, "POST", "/admin/containers", Some(&entry)).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["state"]["state"], "running", "{answer}");
    let job = job_on(&node, "hello2").await.unwrap();
    assert_eq!(job["result"]["output"]["message"], "hello, world!", "{job}");
    let info: Value = get_json(&client(), node.at("/info")).await;
    assert_eq!(info["containers"][1]["id"], "hello2", "{info}");

    // Refused: the same id again (409), a bad field or a port in use (400 naming the field).
    let mut again = entry.clone();
    again["description"] = json!("the same id again");
    let (status, answer) = signed(&node, &operator, "POST", "/admin/containers", Some(&again)).await;
    assert_eq!(status, 409, "{answer}");
    let bad = json!({"id": "other", "port": "x"});
    let (status, answer) = signed(&node, &operator, "POST", "/admin/containers", Some(&bad)).await;
    assert_eq!((status, problem_paths(&answer)), (400, vec!["port"]), "{answer}");
    let taken = hello_process("other", added);
    let (status, answer) = signed(&node, &operator, "POST", "/admin/containers", Some(&taken)).await;
    assert_eq!((status, problem_paths(&answer)), (400, vec!["port"]), "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("already used"), "{answer}");
    let (status, _) = signed(
        &node,
        &operator,
        "PUT",
        "/admin/containers/nothing",
        Some(&hello_process("nothing", moved)),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = signed(&node, &operator, "DELETE", "/admin/containers/nothing", None).await;
    assert_eq!(status, 404);

    // Replaced: the new one serves on its port, the old one is gone.
    let (status, answer) = signed(
        &node,
        &operator,
        "PUT",
        "/admin/containers/hello2",
        Some(&hello_process("hello2", moved)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["entry"]["port"], moved);
    assert!(!answers(added), "the replaced program still listens");
    assert!(job_on(&node, "hello2").await.is_ok());

    // Removed: not served, not running.
    let (status, answer) = signed(&node, &operator, "DELETE", "/admin/containers/hello", None).await;
    assert_eq!(status, 200, "{answer}");
    assert!(!answers(first), "the removed program still listens");
    let (status, refused) = job_on(&node, "hello").await.unwrap_err();
    assert_eq!(
        (status, refused["error"].as_str()),
        (405, Some("Container not supported"))
    );

    // Restarted with the same config.json: the operator's list wins.
    let mut node = node;
    let running = node.node.take().unwrap();
    running.shutdown();
    running.wait().await.unwrap();
    let node = hello_node(&operator, dir.path(), first).await;
    let (_, listed) = signed(&node, &operator, "GET", "/admin/containers", None).await;
    assert_eq!(listed["from"], "admin", "{listed}");
    let ids: Vec<&str> = listed["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["entry"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["hello2"]);
    assert!(job_on(&node, "hello2").await.is_ok());
    assert_eq!(job_on(&node, "hello").await.unwrap_err().0, 405);
}

#[tokio::test]
async fn over_its_max_jobs_a_container_refuses_new_jobs_with_429_and_retry_after() {
    let operator = Identity::generate();
    let slow = stub(Stub::Slow(std::time::Duration::from_secs(2))).await;
    let node = TestNode::start(json!({
        "manage_containers": false,
        "containers": [unmanaged("slow", slow)],
        "operator": {"pubkeys": [operator.npub()]},
    }))
    .await;
    let limits = json!({"limits": {"slow": {"max_jobs": 1}}});
    let (status, answer) = signed(&node, &operator, "PUT", "/admin/settings", Some(&limits)).await;
    assert_eq!(status, 200, "{answer}");

    let job = || {
        client()
            .post(node.at("/api/jobs"))
            .json(&json!({"containers": ["slow"], "data": {}}))
    };
    let first = job().send().await.unwrap();
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let over = job().send().await.unwrap();
    assert_eq!(over.status(), 429);
    assert_eq!(over.headers()["retry-after"], "1");
    let refused: Value = over.json().await.unwrap();
    assert!(refused["error"].as_str().unwrap().contains("max_jobs"), "{refused}");

    // Once the running job is done, the container takes the next one.
    crate::support::wait_job(&node, first["id"].as_str().unwrap(), false).await;
    assert_eq!(job().send().await.unwrap().status(), 200);
}

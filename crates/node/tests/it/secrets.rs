//! Secrets stay secret: container URLs with credentials and a query token are called at the
//! right path, and neither job errors, logs nor `check` show the password or the token.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::Request};
use serde_json::{Value, json};

use crate::support::{client, free_port, get_json, serve};

const NODE: &str = env!("CARGO_BIN_EXE_infernet-node");
const PASS: &str = "pw-8c1f2e";
const TOKEN: &str = "tok-5d9a77";

/// A container service that records the request target and `Authorization` of every call.
async fn recording_service() -> (u16, Arc<Mutex<Vec<(String, String)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let router = Router::new().fallback(move |req: Request| {
        let log = log.clone();
        async move {
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            log.lock().unwrap().push((req.uri().to_string(), auth));
            Json(json!({"ok": true}))
        }
    });
    (serve(router).await, seen)
}

struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn finished(url: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let jobs: Value = get_json(&client(), format!("{url}/api/jobs?id={id}")).await;
        if jobs[0]["status"] != "running" {
            return jobs[0].clone();
        }
        assert!(Instant::now() < deadline, "job {id} did not finish: {jobs}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn submit(url: &str, container: &str) -> String {
    let v: Value = client()
        .post(format!("{url}/api/jobs"))
        .json(&json!({"containers": [container], "data": {"x": 1}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["id"].as_str().unwrap().to_string()
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(PASS) && !text.contains(TOKEN),
        "{what} shows a secret:\n{text}"
    );
}

#[tokio::test]
async fn container_urls_with_credentials_and_a_query_are_called_right_and_never_shown() {
    let (service, seen) = recording_service().await;
    let closed = free_port();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("config.json");
    let log = dir.path().join("node.log");
    std::fs::write(
        &config,
        json!({
            "server": {"port": port, "bind": "127.0.0.1"},
            "log": {"path": log},
            "manage_containers": false,
            "store": {"path": dir.path().join("jobs.db")},
            "containers": [
                {"id": "svc", "url": format!("http://agent:{PASS}@127.0.0.1:{service}/api?token={TOKEN}")},
                {"id": "down", "url": format!("http://agent:{PASS}@127.0.0.1:{closed}/api?token={TOKEN}")},
                {"id": "plain-down", "url": format!("http://127.0.0.1:{closed}/api?token={TOKEN}")}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let output = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
    let node = NodeProcess(
        Command::new(NODE)
            .args(["--config", config.to_str().unwrap()])
            .env("RUST_LOG", "debug")
            .stdout(Stdio::from(output("stdout")))
            .stderr(Stdio::from(output("stderr")))
            .spawn()
            .unwrap(),
    );
    infernet_testkit::wait_healthy(port, Duration::from_secs(30));
    let url = format!("http://127.0.0.1:{port}");

    let ok = finished(&url, &submit(&url, "svc").await).await;
    assert_eq!(ok["status"], "success", "{ok}");
    let calls = seen.lock().unwrap().clone();
    assert_eq!(
        calls[0].0,
        format!("/api/service_output?token={TOKEN}"),
        "path before query"
    );
    assert!(calls[0].1.starts_with("Basic "), "credentials sent: {:?}", calls[0]);

    let mut shown = Vec::new();
    for container in ["down", "plain-down"] {
        let failed = finished(&url, &submit(&url, container).await).await;
        assert_eq!(failed["status"], "failed", "{failed}");
        let error = failed["result"]["error"].as_str().unwrap().to_string();
        assert!(error.contains("127.0.0.1"), "the error still says where: {error}");
        shown.push(error);
        let stream = client()
            .post(format!("{url}/api/jobs/stream"))
            .json(&json!({"containers": [container], "data": {}}))
            .send()
            .await
            .unwrap();
        // The id line comes first; the failed call then ends the body abnormally, and the stored
        // result says why.
        let mut body = Vec::new();
        let mut chunks = stream.bytes_stream();
        while let Some(Ok(chunk)) = futures::StreamExt::next(&mut chunks).await {
            body.extend_from_slice(&chunk);
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let id = body.lines().next().unwrap_or_default().to_string();
        let failed = finished(&url, &id).await;
        assert_eq!(failed["status"], "failed", "{failed}");
        shown.push(body);
        shown.push(failed.to_string());
    }
    for text in &shown {
        assert_no_secret("a job error", text);
    }
    // SAFETY: a signal to the child started above.
    unsafe { libc::kill(node.0.id() as i32, libc::SIGTERM) };
    drop(node);
    for file in ["stdout", "stderr"] {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert_no_secret(&format!("the node's {file}"), &text);
    }
    if Path::new(&log).exists() {
        assert_no_secret("the node's log file", &std::fs::read_to_string(&log).unwrap());
    }
}

#[test]
fn check_shows_rpc_urls_as_scheme_host_port_and_env_values_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({
            "chain": {"rpc_url": format!("https://user:{PASS}@rpc.example:8443/v2/{TOKEN}?key={TOKEN}")},
            "containers": [
                {"id": "a", "image": "x", "env": {"HF_TOKEN": TOKEN, "PASSWORD": PASS}},
                {"id": "b", "url": format!("https://u:{PASS}@svc.example/api?token={TOKEN}")}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let out = Command::new(NODE)
        .args(["check", "--config", config.to_str().unwrap()])
        .env_remove("INFERNET_CONFIG_PATH")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_no_secret("check's output", &stdout);
    assert_no_secret("check's messages", &stderr);
    let effective: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(effective["chain"]["rpc_url"], "https://rpc.example:8443/…");
    assert_eq!(
        effective["containers"][0]["env"],
        json!({"HF_TOKEN": "<redacted>", "PASSWORD": "<redacted>"})
    );
    assert_eq!(effective["containers"][1]["url"], "https://svc.example/…");
}

#[tokio::test]
async fn the_metric_sender_logs_its_endpoint_redacted() {
    let closed = free_port();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({
            "server": {"port": port, "bind": "127.0.0.1"},
            "manage_containers": false,
            "store": {"path": dir.path().join("jobs.db")},
            "forward_stats": true,
            "stats": {
                "endpoint": format!("http://agent:{PASS}@127.0.0.1:{closed}/api/v1/register?token={TOKEN}"),
                "interval": 0.05
            }
        })
        .to_string(),
    )
    .unwrap();
    let output = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
    let node = NodeProcess(
        Command::new(NODE)
            .args(["--config", config.to_str().unwrap()])
            .env("RUST_LOG", "debug")
            .stdout(Stdio::from(output("stdout")))
            .stderr(Stdio::from(output("stderr")))
            .spawn()
            .unwrap(),
    );
    infernet_testkit::wait_healthy(port, Duration::from_secs(30));
    let logs = || {
        ["stdout", "stderr"]
            .map(|f| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default())
            .concat()
    };
    // The failed delivery is logged once, with the endpoint and the client's error.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !logs().contains("heartbeat not delivered") {
        assert!(Instant::now() < deadline, "no delivery failure logged:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SAFETY: a signal to the child started above.
    unsafe { libc::kill(node.0.id() as i32, libc::SIGTERM) };
    drop(node);
    let text = logs();
    assert_no_secret("the metric sender's log", &text);
    assert!(
        text.contains(&format!("http://127.0.0.1:{closed}/…")),
        "the log still says where:\n{text}"
    );
}

//! `infernet job|stream|results` through a router's gateway, with an API key or an nsec, against
//! a real `infernet-router` and `infernet-node`.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use axum::{Json, Router, body::Bytes, response::IntoResponse, routing::post};
use infernet_identity::Identity;
use infernet_testkit::{ChildGuard, free_port, wait_healthy, workspace_binary};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_infernet");

/// A container that echoes the job data, and streams two chunks for a streaming call.
fn start_echo() -> u16 {
    async fn service_output(body: Bytes) -> axum::response::Response {
        let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if input["destination"] == json!(2) {
            return "chunk-1 chunk-2".into_response();
        }
        Json(json!({"echo": input["data"]})).into_response()
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(listener, Router::new().route("/service_output", post(service_output))).await;
        });
    });
    port
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("INFERNET_ROUTER")
        .env_remove("INFERNET_API_KEY")
        .env_remove("INFERNET_NSEC")
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(out: Output) -> String {
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status.code()
    );
    stdout
}

#[test]
fn jobs_go_through_the_router_with_a_key_or_an_nsec() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let router_key = Identity::generate();
    let key_file = dir.path().join("infernet-router.nsec");
    std::fs::write(&key_file, router_key.nsec()).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let echo = start_echo();
    let node_port = free_port();
    let config = json!({
        "manage_containers": false,
        "containers": [{"id": "echo", "port": echo}],
        "log": {"path": dir.path().join("node.log")},
        "store": {"path": dir.path().join("jobs.db")},
        "server": {"port": node_port, "bind": "127.0.0.1", "rate_limit": {"num_requests": 100000, "period": 1}},
        "network": {"routers": [router_key.npub()]},
    });
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let _node = ChildGuard(
        Command::new(workspace_binary("infernet-node"))
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_healthy(node_port, Duration::from_secs(30));
    let ips = dir.path().join("ips.txt");
    std::fs::write(&ips, format!("127.0.0.1:{node_port}\n")).unwrap();
    let database = format!("sqlite://{}", dir.path().join("router.db").display());
    let router_bin = workspace_binary("infernet-router");
    // The operator issues a key of 2 jobs a minute, beside the router's database.
    let issued = Command::new(&router_bin)
        .args([
            "keys",
            "add",
            "--per-minute",
            "2",
            "--label",
            "cli test",
            "--database-url",
            &database,
        ])
        .output()
        .unwrap();
    let issued: Value = serde_json::from_str(&ok(issued)).unwrap();
    let api_key = issued["key"].as_str().unwrap().to_string();
    let router_port = free_port();
    let _router = ChildGuard(
        Command::new(&router_bin)
            .args(["--port", &router_port.to_string(), "--bind", "127.0.0.1", "--ips-file"])
            .arg(&ips)
            .args(["--refresh-interval", "0.2", "--database-url", &database])
            .current_dir(dir.path())
            .env_remove("KEY_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let router = format!("http://127.0.0.1:{router_port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run(&["--router", &router, "find", "-c", "echo"]);
        if out.status.success() && !out.stdout.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the router never handed out the node");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Wait for the rest of the minute when it is nearly over: the quota counts calendar minutes.
    let into = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 60_000;
    if into > 50_000 {
        std::thread::sleep(Duration::from_millis((60_000 - into + 100) as u64));
    }

    // With the key: a job waited for prints its output; another prints its id; the third is over
    // the quota.
    let with_key = ["--router", router.as_str(), "--api-key", api_key.as_str()];
    let out = ok(run(&[
        &with_key[..],
        &["job", "-c", "echo", "--data", r#"{"n": 1}"#, "--sync"],
    ]
    .concat()));
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!({"echo": {"n": 1}}));
    let id = ok(run(
        &[&with_key[..], &["job", "-c", "echo", "--data", r#"{"n": 2}"#]].concat()
    ));
    let id = id.trim();
    let refused = run(&[&with_key[..], &["job", "-c", "echo", "--data", "{}"]].concat());
    let (_, stderr) = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("429") && stderr.contains("2 jobs per minute") && stderr.contains("retry after"),
        "{stderr}"
    );
    // Reading results is not charged.
    let deadline = Instant::now() + Duration::from_secs(10);
    let results = loop {
        let results: Value =
            serde_json::from_str(&ok(run(&[&with_key[..], &["--json", "results", id]].concat()))).unwrap();
        if results[0]["status"] != "running" {
            break results;
        }
        assert!(Instant::now() < deadline, "{results}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(results[0]["status"], "succeeded", "{results}");
    assert_eq!(results[0]["result"]["output"], json!({"echo": {"n": 2}}));

    // With an nsec: signed requests, known by the key; another key does not see the job.
    let client = Identity::generate();
    let nsec = client.nsec();
    let with_nsec = ["--router", router.as_str(), "--nsec", nsec.as_str()];
    let out = ok(run(&[
        &with_nsec[..],
        &["--json", "job", "-c", "echo", "--data", r#"{"n": 3}"#, "--sync"],
    ]
    .concat()));
    let job: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["result"]["output"], json!({"echo": {"n": 3}}), "{job}");
    let job_id = job["id"].as_str().unwrap();
    ok(run(&[&with_nsec[..], &["results", job_id]].concat()));
    let stranger = Identity::generate().nsec();
    let other = run(&["--router", &router, "--nsec", &stranger, "results", job_id]);
    assert_eq!(other.status.code(), Some(1));
    assert!(text(&other).1.contains("404"), "{}", text(&other).1);

    let streamed = run(&[&with_nsec[..], &["stream", "-c", "echo", "--data", "{}"]].concat());
    let (stdout, stderr) = text(&streamed);
    assert!(streamed.status.success(), "{stderr}");
    assert_eq!(stdout, "chunk-1 chunk-2");
    assert!(!stderr.trim().is_empty(), "the job id goes to stderr");

    let bad = run(&[
        "--router",
        &router,
        "--api-key",
        "ik_nope",
        "job",
        "-c",
        "echo",
        "--data",
        "{}",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad).1.contains("401") && text(&bad).1.contains("unknown or revoked"),
        "{}",
        text(&bad).1
    );
    let bad = run(&[
        "--router", &router, "--nsec", "nope", "job", "-c", "echo", "--data", "{}",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad).1);
}

//! Every client command against a real `infernet-node` and `infernet-router`.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::RawQuery,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use infernet_testkit::{ChildGuard, free_port, workspace_binary};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_infernet");

/// The container stub: echoes the job data; streams two chunks for streaming calls; answers 500
/// when the data says `"fail": true`. Runs on its own thread and runtime so that blocking on the
/// `infernet` processes never starves it.
fn start_stub() -> u16 {
    async fn service_output(body: Bytes) -> Response {
        let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if input["data"]["fail"] == json!(true) {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"detail": "model exploded"})),
            )
                .into_response();
        }
        if input["destination"] == json!(2) {
            let chunks =
                futures::stream::iter(["chunk-1 ", "chunk-2"].map(|c| Ok::<_, std::io::Error>(Bytes::from(c))));
            return Response::new(Body::from_stream(chunks));
        }
        Json(json!({"echo": input["data"]})).into_response()
    }
    async fn resources(RawQuery(query): RawQuery) -> Json<Value> {
        Json(json!({"query": query}))
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("stub runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let app = Router::new()
                .route("/service_output", post(service_output))
                .route("/service-resources", get(resources));
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
        });
    });
    port
}

/// A node, a router tracking it, and the stub container behind the node.
struct Cluster {
    node: String,
    router: String,
    _router: ChildGuard,
    _node: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Self {
        let node_bin = workspace_binary("infernet-node");
        let router_bin = workspace_binary("infernet-router");
        let dir = tempfile::tempdir().expect("tempdir");
        let stub = start_stub();
        let node_port = free_port();
        let config = json!({
            "manage_containers": false,
            "containers": [{"id": "echo", "port": stub, "description": "echoes its input"}],
            "log": {"path": dir.path().join("node.log")},
            "store": {"path": dir.path().join("jobs.db")},
            "server": {"port": node_port, "bind": "127.0.0.1", "rate_limit": {"num_requests": 100000, "period": 1}},
        });
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, config.to_string()).expect("write config");
        let node = ChildGuard(
            Command::new(node_bin)
                .arg("--config")
                .arg(&config_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn infernet-node"),
        );
        let node_url = format!("http://127.0.0.1:{node_port}");
        wait_until("the node answers /health", || {
            cli(&node_url, "", &["health"]).status.success()
        });

        let ips = dir.path().join("ips.txt");
        std::fs::write(&ips, format!("127.0.0.1:{node_port}\n")).expect("write ips.txt");
        let router_port = free_port();
        let router = ChildGuard(
            Command::new(router_bin)
                .args(["--port", &router_port.to_string(), "--bind", "127.0.0.1", "--ips-file"])
                .arg(&ips)
                .args(["--refresh-interval", "0.2", "--ratelimit-reqs-per-min", "100000"])
                // Its database and key in the test's directory, not the working directory.
                .current_dir(dir.path())
                .env_remove("DATABASE_URL")
                .env_remove("KEY_FILE")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn infernet-router"),
        );
        let router_url = format!("http://127.0.0.1:{router_port}");
        wait_until("the router hands out the node", || {
            let out = cli("", &router_url, &["find", "-c", "echo"]);
            out.status.success() && !out.stdout.is_empty()
        });
        Self {
            node: node_url,
            router: router_url,
            _router: router,
            _node: node,
            _dir: dir,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        cli(&self.node, &self.router, args)
    }
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `infernet` with the node and router given by environment.
fn cli(node: &str, router: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("INFERNET_NODE", node)
        .env("INFERNET_ROUTER", router)
        .output()
        .expect("run infernet")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts exit 0 and returns stdout.
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "expected success, got {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn every_command_works_against_a_real_node_and_router() {
    let c = Cluster::start();

    // Node information.
    assert_eq!(ok(c.run(&["health"])), "healthy\n");
    assert_eq!(json_of(&ok(c.run(&["health", "--json"]))), json!({"status": "healthy"}));
    let info = ok(c.run(&["info"]));
    assert!(info.contains("chain       disabled"), "{info}");
    assert!(info.contains("echo  running  echoes its input"), "{info}");
    let info = json_of(&ok(c.run(&["info", "--json"])));
    assert_eq!(info["containers"][0]["id"], "echo");
    let resources = json_of(&ok(c.run(&["resources", "--model-id", "m1"])));
    assert_eq!(resources, json!({"echo": {"query": "model_id=m1"}}));

    // A job, asynchronously then its result; the node URL may omit the scheme.
    let bare = c.node.trim_start_matches("http://");
    let id = ok(c.run(&["--node", bare, "job", "-c", "echo", "--data", r#"{"name": "ada"}"#]));
    let id = id.trim().to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let mut results = Value::Null;
    wait_until("the job finishes", || {
        results = json_of(&ok(c.run(&["results", &id, "--json"])));
        results[0]["status"] != "running"
    });
    assert_eq!(results[0]["status"], "success", "{results}");
    assert_eq!(results[0]["result"]["output"], json!({"echo": {"name": "ada"}}));
    let with_intermediate = json_of(&ok(c.run(&["results", &id, "--intermediate"])));
    assert_eq!(with_intermediate[0]["intermediate_results"], json!([]));

    // --sync prints the output; data may come from a file.
    let data_file = c._dir.path().join("data.json");
    std::fs::write(&data_file, r#"{"from": "file"}"#).expect("write data");
    let data_arg = format!("@{}", data_file.display());
    let out = ok(c.run(&["job", "-c", "echo", "--data", &data_arg, "--sync", "--timeout", "20"]));
    assert_eq!(json_of(&out), json!({"echo": {"from": "file"}}));

    // A failing job: exit 1, the container's error on stderr, the job on stdout.
    let out = c.run(&["job", "-c", "echo", "--data", r#"{"fail": true}"#, "--sync"]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(stderr(&out).starts_with("error: job "), "{}", stderr(&out));
    assert!(stderr(&out).contains("failed in container echo"), "{}", stderr(&out));
    assert_eq!(json_of(&stdout(&out))["status"], "failed");

    // Ids: all, only finished; none running by now.
    let all = ok(c.run(&["ids"]));
    assert!(all.lines().any(|l| l == id), "{id} in {all}");
    assert_eq!(all.lines().count(), 3, "{all}");
    let completed = json_of(&ok(c.run(&["ids", "--completed", "--json"])));
    assert_eq!(completed.as_array().map(Vec::len), Some(3), "{completed}");
    assert_eq!(ok(c.run(&["ids", "--pending"])), "");

    // Streaming: the id on stderr, the bytes on stdout.
    let out = c.run(&["stream", "-c", "echo", "--data", "{}"]);
    let streamed = ok(out.clone());
    assert_eq!(streamed, "chunk-1 chunk-2");
    let stream_id = stderr(&out).trim().to_string();
    assert_eq!(stream_id.len(), 36, "a UUID on stderr: {stream_id}");
    wait_until("the streamed job is recorded", || {
        json_of(&ok(c.run(&["results", &stream_id, "--json"])))[0]["status"] == "success"
    });

    // A delegated subscription: this node runs without a chain, so it answers an error.
    let out = c.run(&[
        "sub",
        "--subscription",
        r#"{"owner": "0x0000000000000000000000000000000000000001", "containers": "echo"}"#,
        "--signature",
        r#"{"nonce": 0, "expiry": 99999999999, "v": 27, "r": "0x01", "s": "0x01"}"#,
        "--data",
        "{}",
    ]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}", stdout(&out));
    let message = stderr(&out);
    assert!(
        message.starts_with("error: ") && message.contains("/api/jobs answered"),
        "{message}"
    );

    // Signed here (EIP-712): the node gets a well-formed request and says why it cannot take it.
    let out = c.run(&[
        "sub",
        "--subscription",
        r#"{"owner": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "active_at": 0, "period": 0, "frequency": 1,
            "redundancy": 1, "containers": ["echo"], "lazy": false}"#,
        "--private-key",
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        "--coordinator",
        "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
        "--chain-id",
        "31337",
    ]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}", stdout(&out));
    assert!(stderr(&out).contains("Chain not enabled"), "{}", stderr(&out));

    // The router.
    let node_addr = bare.to_string();
    assert_eq!(ok(c.run(&["find", "-c", "echo", "-n", "1"])), format!("{node_addr}\n"));
    assert_eq!(
        json_of(&ok(c.run(&["find", "-c", "echo", "--json"]))),
        json!([node_addr])
    );
    assert_eq!(ok(c.run(&["find", "-c", "echo", "--offset", "1"])), "");
    assert_eq!(ok(c.run(&["containers"])), "echo  1  echoes its input\n");
    assert_eq!(
        json_of(&ok(c.run(&["containers", "--json"]))),
        json!([{"id": "echo", "count": 1, "description": "echoes its input"}])
    );

    // Errors the server answers are exit 1 with its message.
    let out = c.run(&["job", "-c", "nope", "--data", "{}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("Container not supported"), "{}", stderr(&out));
    let out = c.run(&["find", "-c", "echo", "-n", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("n must be a whole number from 1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_usage_exits_2_and_names_the_argument() {
    for (args, expected) in [
        (&["job", "-c", "echo", "--data", "{oops"][..], "--data: not valid JSON"),
        (
            &["job", "-c", "echo", "--data", "[1, 2]"][..],
            "--data: expected a JSON object, found an array",
        ),
        (&["job", "--data", "{}"][..], "--container"),
        (&["job", "-c", "echo", "--data", "{}", "--timeout", "5"][..], "--sync"),
        (&["ids", "--pending", "--completed"][..], "cannot be used with"),
        (
            &["sub", "--subscription", "{}", "--signature", "nope"][..],
            "--signature: not valid JSON",
        ),
        (
            &["sub", "--subscription", "{}"][..],
            "give --signature, or --private-key",
        ),
        (
            &[
                "sub",
                "--subscription",
                "{\"owner\": \"x\"}",
                "--private-key",
                "0x01",
                "--coordinator",
                "0x0000000000000000000000000000000000000001",
                "--chain-id",
                "1",
            ][..],
            // Fields are checked in Ritual's order: the owner before the containers.
            "subscription.owner: \"x\" is not an address",
        ),
        (&["results"][..], "<IDS>"),
        (&["frobnicate"][..], "unrecognized subcommand"),
    ] {
        // Nothing listens on port 1: usage errors must be reported before any request.
        let out = cli("127.0.0.1:1", "127.0.0.1:1", args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
    for command in ["health", "job", "find", "sub", "stream", "containers"] {
        let out = cli("", "", &[command, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        assert!(stdout(&out).contains("Usage: infernet"), "{command} --help");
    }
}

#[test]
fn an_unreachable_node_exits_1_and_says_what_to_do() {
    let port = free_port(); // bound then released: nothing listens there
    let out = cli(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{port}"), &["health"]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.starts_with(&format!("error: could not reach http://127.0.0.1:{port}/health")),
        "{message}"
    );
    assert!(message.contains("is the server running there?"), "{message}");
    let out = cli("", &format!("127.0.0.1:{port}"), &["containers"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("could not reach"), "{}", stderr(&out));
}

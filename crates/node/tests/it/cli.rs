//! The `infernet-node` binary: config checks, exit codes, restarts and signals.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::support::{Stub, client, free_port, get_json, open_stream, stub};

const NODE: &str = env!("CARGO_BIN_EXE_infernet-node");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(NODE)
        .args(args)
        .env_remove("INFERNET_CONFIG_PATH")
        .output()
        .unwrap()
}

#[test]
fn ritual_sample_config_loads_unchanged_and_check_redacts_secrets() {
    let out = run(&[
        "check",
        "--config",
        fixture("ritual-config.sample.json").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let effective: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(effective["containers"][0]["port"], 3000);
    assert_eq!(effective["chain"]["wallet"]["private_key"], "<redacted>");
    assert_eq!(effective["docker"]["password"], "<redacted>");
    assert!(!stdout.contains("59c6995e") && !stderr.contains("59c6995e"));
    assert!(stderr.contains("OK"), "{stderr}");
}

#[test]
fn invalid_config_lists_every_problem_and_exits_2_without_binding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let port = free_port();
    std::fs::write(
        &path,
        json!({
            "server": {"port": port},
            "chain": {"enabled": true},
            "containers": [{"id": "a", "image": "x", "allowed_ips": ["nope"]}, {"id": "a", "image": "x", "port": 3000}],
            "typo_key": 1
        })
        .to_string(),
    )
    .unwrap();
    for args in [vec!["check", "--config"], vec!["--config"]] {
        let mut args = args;
        args.push(path.to_str().unwrap());
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        for needle in [
            "chain.rpc_url",
            "chain.registry_address",
            "chain.wallet",
            "containers[0].allowed_ips[0]",
            "containers[1].id",
            "containers[1].port",
        ] {
            assert!(stderr.contains(needle), "{needle} missing from:\n{stderr}");
        }
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "the port must not be bound"
        );
    }
    let out = run(&["--config", dir.path().join("missing.json").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
    let out = Command::new(NODE)
        .env("INFERNET_CONFIG_PATH", path.to_str().unwrap())
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "INFERNET_CONFIG_PATH is honoured");
}

struct NodeProcess {
    child: Child,
    url: String,
}

impl NodeProcess {
    fn spawn(config: &Path, port: u16) -> Self {
        let child = Command::new(NODE)
            .args(["--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        infernet_testkit::wait_healthy(port, Duration::from_secs(30));
        Self { child, url }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn submit_to(url: &str, container: &str) -> String {
    let v: Value = client()
        .post(format!("{url}/api/jobs"))
        .json(&json!({"containers": [container], "data": {}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["id"].as_str().unwrap().to_string()
}

async fn job(url: &str, id: &str) -> Value {
    let v: Value = get_json(&client(), format!("{url}/api/jobs?id={id}")).await;
    v[0].clone()
}

#[tokio::test]
async fn results_survive_kill_9_and_interrupted_jobs_are_reported_failed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({
            "server": {"port": port, "bind": "127.0.0.1"},
            "log": {"path": dir.path().join("node.log")},
            "manage_containers": false,
            "store": {"path": dir.path().join("jobs.db")},
            "containers": [
                {"id": "fast", "port": stub(Stub::Echo("fast")).await},
                {"id": "slow", "port": stub(Stub::Slow(Duration::from_secs(60))).await}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let mut node = NodeProcess::spawn(&config, port);
    let fast = submit_to(&node.url, "fast").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while job(&node.url, &fast).await["status"] != "success" {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let slow = submit_to(&node.url, "slow").await;
    assert_eq!(job(&node.url, &slow).await["status"], "running");
    let streamed = open_stream(&node.url, json!({"containers": ["fast"], "data": {}}))
        .await
        .text()
        .await
        .unwrap();
    let (streamed_id, streamed_output) = streamed.split_once('\n').unwrap();
    // A stream's record reaches the file within 20 ms of the stream's end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.child.kill().unwrap(); // SIGKILL
    node.child.wait().unwrap();

    let node = NodeProcess::spawn(&config, port);
    let kept = job(&node.url, &fast).await;
    assert_eq!(kept["status"], "success");
    assert_eq!(kept["result"]["output"]["by"], "fast");
    let stream = job(&node.url, streamed_id).await;
    assert_eq!(stream["status"], "success", "{stream}");
    assert_eq!(stream["result"]["output"]["output"], streamed_output);
    let cut = job(&node.url, &slow).await;
    assert_eq!(cut["status"], "failed");
    assert!(
        cut["result"]["error"].as_str().unwrap().contains("node stopped"),
        "{cut}"
    );
}

#[tokio::test]
async fn sigterm_stops_the_node_and_its_services_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let tag = uuid::Uuid::new_v4().to_string();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({
            "server": {"port": port, "bind": "127.0.0.1"},
            "log": {"path": dir.path().join("node.log")},
            "store": {"path": dir.path().join("jobs.db")},
            "containers": [{"id": "hello-world", "port": free_port(), "process": {"program": "hello-world", "args": [tag]}}]
        })
        .to_string(),
    )
    .unwrap();
    let mut node = NodeProcess::spawn(&config, port);
    let pgrep = || {
        Command::new("pgrep")
            .args(["-f", &tag])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(pgrep(), "hello-world should run");
    Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status()
        .unwrap();
    let status = node.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!pgrep(), "hello-world must be stopped with the node");
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    const KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
    const BEARER: &str = "bearer-s3cret-value";
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("node.log");
    let config = dir.path().join("config.json");
    let remote = stub(Stub::Echo("remote")).await;
    let devnet = crate::chain::devnet().await;
    let mut chain = crate::chain::chain_config(&devnet);
    chain["wallet"]["private_key"] = json!(KEY);
    std::fs::write(
        &config,
        json!({
            "server": {"port": port, "bind": "127.0.0.1"},
            "log": {"path": log},
            "store": {"path": dir.path().join("jobs.db")},
            "chain": chain,
            "containers": [{"id": "remote", "url": format!("http://127.0.0.1:{remote}"), "bearer": BEARER}]
        })
        .to_string(),
    )
    .unwrap();
    let check = run(&["check", "--config", config.to_str().unwrap()]);
    let node = NodeProcess::spawn(&config, port);
    let id = submit_to(&node.url, "remote").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while job(&node.url, &id).await["status"] != "success" {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(node);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("node serving"), "the log file is written: {logged}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    for (what, text) in [("log file", &logged), ("check output", &printed)] {
        assert!(!text.contains(&KEY[2..]), "private key in the {what}");
        assert!(!text.contains(BEARER), "bearer token in the {what}");
    }
}

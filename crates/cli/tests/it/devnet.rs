//! `infernet devnet`: starts, writes a usable config, stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use alloy::providers::{Provider, ProviderBuilder};
use infernet_testkit::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_infernet");
/// Private key of anvil account #1, the devnet's node.
const NODE_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

#[tokio::test]
async fn devnet_starts_writes_a_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("config.json");
    let port = free_port();
    let child = Command::new(BIN)
        .args([
            "devnet",
            "--port",
            &port.to_string(),
            "--node-port",
            "4123",
            "--config-out",
        ])
        .arg(&config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn infernet");
    let mut child = StopOnDrop(child);

    // Collect stdout lines on a thread; wait for the "ready" line.
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let ready = line.starts_with("ready");
                lines.push(line);
                if ready {
                    break;
                }
            }
            Err(_) => {
                let _ = child.0.kill();
                panic!("no ready line within 60 s; output so far:\n{}", lines.join("\n"));
            }
        }
    }
    let output = lines.join("\n");
    let anvil_pid: u32 = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("anvil pid"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no anvil pid line in:\n{output}"));
    assert!(output.contains(NODE_KEY), "node key printed:\n{output}");
    assert!(
        output.contains("0x5FbDB2315678afecb367f032d93F642f64180aa3"),
        "registry printed:\n{output}"
    );

    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).expect("config written")).expect("valid JSON");
    let rpc_url = format!("http://127.0.0.1:{port}");
    assert_eq!(config["chain"]["enabled"], true);
    assert_eq!(config["chain"]["rpc_url"], rpc_url.as_str());
    assert_eq!(config["chain"]["wallet"]["private_key"], NODE_KEY);
    assert_eq!(config["manage_containers"], true);
    assert_eq!(config["server"]["port"], 4123);
    assert_eq!(config["containers"][0]["id"], "hello-world");
    assert_eq!(config["containers"][0]["port"], 3000);
    assert_eq!(config["containers"][0]["process"]["program"], "hello-world");
    let registry: Address = config["chain"]["registry_address"]
        .as_str()
        .expect("registry_address")
        .parse()
        .expect("an address");

    infernet_contracts::install_tls_provider();
    let provider = ProviderBuilder::new().connect_http(rpc_url.parse().expect("url"));
    let code = provider.get_code_at(registry).await.expect("eth_getCode");
    assert!(!code.is_empty(), "no code at the registry {registry}");
    let payment: Address = config["chain"]["wallet"]["payment_address"]
        .as_str()
        .expect("payment_address")
        .parse()
        .expect("address");
    assert!(provider.get_balance(payment).await.expect("balance") > alloy::primitives::U256::ZERO);

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().expect("try_wait") {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.0.kill();
            panic!("infernet devnet did not exit within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0), "exit status {exit}");
    assert!(
        !Path::new(&format!("/proc/{anvil_pid}")).exists(),
        "anvil (pid {anvil_pid}) still running"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open"
    );
}

#[test]
fn bad_usage_exits_with_2() {
    let out = Command::new(BIN)
        .args(["devnet", "--port", "not-a-port"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--port"));
    let out = Command::new(BIN).arg("no-such-command").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn anvil_that_cannot_start_is_a_runtime_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["devnet", "--port", "0", "--anvil", "/nonexistent/anvil", "--config-out"])
        .arg(dir.path().join("c.json"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/anvil"));
    assert!(!dir.path().join("c.json").exists());
}

/// `infernet devnet` stopped like an operator would (SIGTERM, so it stops its anvil too) if a test
/// fails before doing it; killed if it does not exit.
struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

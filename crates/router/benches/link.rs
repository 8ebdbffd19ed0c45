//! Link benchmark: jobs through the gateway over a node's link against jobs through the gateway
//! over HTTP to the same node, in one run.
//!
//! Starts `hello-world` and one `infernet-node` (release builds, each its own process), and two
//! `infernet-router`s with the same key: one lists the node by address (HTTP dispatch), the node
//! links to the other (`network.url`). Prints, for streams and async submissions, the p50 and p99
//! of one client's requests one after the other and the p50 the link adds, then the throughput
//! at 16 concurrent clients and the link's ratio to HTTP. `BENCH_SECONDS` sets each load phase
//! (default 3), `BENCH_SEQUENTIAL` the requests of each one-client phase (default 500).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use infernet_identity::Identity;
use infernet_testkit::{ChildGuard, free_port, percentile, wait_healthy, workspace_binary};

const CLIENTS: usize = 16;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One request and its whole answer; panics on anything but 200.
async fn once(client: &reqwest::Client, url: &str, body: &'static str) {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = r.status();
    let text = r.bytes().await.expect("body");
    assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&text));
}

async fn sequential(url: &str, body: &'static str, n: u64) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let start = Instant::now();
        once(&client, url, body).await;
        latencies.push(start.elapsed());
    }
    latencies.sort();
    latencies
}

async fn throughput(url: &str, body: &'static str, duration: Duration) -> f64 {
    let client = reqwest::Client::new();
    let end = Instant::now() + duration;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_string());
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < end {
                    once(&client, &url, body).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("client");
    }
    total as f64 / duration.as_secs_f64()
}

/// An `infernet-router` on a free port with `key_file`, listing `ips`: its port.
fn router(dir: &std::path::Path, name: &str, key_file: &std::path::Path, ips: &str) -> (u16, ChildGuard) {
    let port = free_port();
    let ips_file = dir.join(format!("{name}-ips.txt"));
    std::fs::write(&ips_file, ips).expect("ips");
    let child = Command::new(workspace_binary("infernet-router"))
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--refresh-interval",
            "1",
        ])
        .args(["--ratelimit-reqs-per-min", "1000000000"])
        .arg("--ips-file")
        .arg(&ips_file)
        .arg("--key-file")
        .arg(key_file)
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.join(format!("{name}.db")).display()))
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("infernet-router");
    let guard = ChildGuard(child);
    wait_healthy(port, Duration::from_secs(20));
    (port, guard)
}

fn main() {
    infernet_service::install_tls_provider();
    let seconds = Duration::from_secs(env_or("BENCH_SECONDS", 3));
    let n = env_or("BENCH_SEQUENTIAL", 500);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = Identity::generate();
    let key_file = dir.path().join("router.nsec");
    std::fs::write(&key_file, key.nsec()).expect("key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("mode");
    }
    let service_port = free_port();
    let _service = ChildGuard(
        Command::new(workspace_binary("hello-world"))
            .env("HOST", "127.0.0.1")
            .env("PORT", service_port.to_string())
            .stderr(Stdio::null())
            .spawn()
            .expect("hello-world"),
    );
    let node_port = free_port();
    let (http_port, _http_router) = router(dir.path(), "http", &key_file, &format!("127.0.0.1:{node_port}\n"));
    let (link_port, _link_router) = router(dir.path(), "link", &key_file, "");
    let config = dir.path().join("node.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "server": {"port": node_port, "bind": "127.0.0.1", "rate_limit": {"num_requests": 1_000_000_000u64, "period": 1}},
            "manage_containers": false,
            "store": {"path": dir.path().join("jobs.db")},
            "log": {"path": dir.path().join("node.log")},
            "network": {"routers": [key.npub()], "url": format!("ws://127.0.0.1:{link_port}/api/v1/link")},
            "containers": [{"id": "hello-world", "port": service_port}]
        })
        .to_string(),
    )
    .expect("config");
    let _node = ChildGuard(
        Command::new(workspace_binary("infernet-node"))
            .args(["--config", config.to_str().expect("utf-8")])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("infernet-node"),
    );
    wait_healthy(node_port, Duration::from_secs(20));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        for (port, what) in [
            (http_port, "ips?container=hello-world"),
            (link_port, "route?container=hello-world"),
        ] {
            loop {
                let v: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/{what}"))
                    .await
                    .expect("router")
                    .json()
                    .await
                    .expect("json");
                let found = v.as_array().is_some_and(|a| !a.is_empty())
                    || v["candidates"].as_array().is_some_and(|a| !a.is_empty());
                if found {
                    break;
                }
                assert!(Instant::now() < deadline, "router {port} never had the node");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let body = r#"{"containers": ["hello-world"], "data": {"prompt": "hi"}}"#;
    let (http, link) = (
        format!("http://127.0.0.1:{http_port}"),
        format!("http://127.0.0.1:{link_port}"),
    );
    let pairs = [("stream", "/api/v1/jobs/stream"), ("async ", "/api/v1/jobs")];
    println!(
        "link benchmark: one node, through the gateway over HTTP and over its link, {CLIENTS} clients for throughput"
    );
    for (label, path) in pairs {
        let (over_http, over_link) = (format!("{http}{path}"), format!("{link}{path}"));
        runtime.block_on(sequential(&over_http, body, 50));
        runtime.block_on(sequential(&over_link, body, 50));
        let h = runtime.block_on(sequential(&over_http, body, n));
        let l = runtime.block_on(sequential(&over_link, body, n));
        let (hp50, lp50) = (percentile(&h, 0.5), percentile(&l, 0.5));
        println!(
            "{label} one client: http p50 {:.3} ms p99 {:.3} ms | link p50 {:.3} ms p99 {:.3} ms | link adds p50 {:.3} ms",
            ms(hp50),
            ms(percentile(&h, 0.99)),
            ms(lp50),
            ms(percentile(&l, 0.99)),
            ms(lp50.saturating_sub(hp50)),
        );
        let ht = runtime.block_on(throughput(&over_http, body, seconds));
        let lt = runtime.block_on(throughput(&over_link, body, seconds));
        println!(
            "{label} {CLIENTS} clients: http {ht:.0} req/s | link {lt:.0} req/s | link / http {:.2}",
            lt / ht
        );
    }
}

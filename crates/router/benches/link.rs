//! Link benchmark: jobs through the gateway over a node's link against jobs through the gateway
//! over HTTP to the same node, in one run.
//!
//! Starts `hello-world` and one `infernet-node` (release builds, each its own process), and three
//! `infernet-router`s with the same key: one lists the node by address (HTTP dispatch), the node
//! links to the second (`network.url`), and the third shares the second's database, so that its
//! jobs reach the node through the second (a peer replica). Prints, for streams and async
//! submissions, the p50 and p99 of one client's requests one after the other and the p50 the
//! link (and the hop between replicas) adds, then the throughput at 16 concurrent clients and the
//! ratios to HTTP. `BENCH_SECONDS` sets each load phase (default 3), `BENCH_CLIENTS` the clients
//! of the throughput phases (default 16), `BENCH_SEQUENTIAL` the requests of each one-client
//! phase (default 500).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

mod load;
use load::{clients, ms, sequential, throughput};

use infernet_identity::Identity;
use infernet_testkit::{ChildGuard, env_or, free_port, percentile, wait_healthy, workspace_binary};

/// An `infernet-router` on a free port with `key_file`, listing `ips`, on the SQLite file
/// `{db}.db`: its port.
fn router(dir: &std::path::Path, name: &str, db: &str, key_file: &std::path::Path, ips: &str) -> (u16, ChildGuard) {
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
            "--replica-refresh",
            "1",
        ])
        .args(["--ratelimit-reqs-per-min", "1000000000"])
        .arg("--ips-file")
        .arg(&ips_file)
        .arg("--key-file")
        .arg(key_file)
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.join(format!("{db}.db")).display()))
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
    infernet_testkit::write_secret(&key_file, &key.nsec());
    let (service_port, _service) = infernet_testkit::hello_world();
    let node_port = free_port();
    let (http_port, _http_router) = router(
        dir.path(),
        "http",
        "http",
        &key_file,
        &format!("127.0.0.1:{node_port}\n"),
    );
    let (link_port, _link_router) = router(dir.path(), "link", "link", &key_file, "");
    let (peer_port, _peer_router) = router(dir.path(), "peer", "link", &key_file, "");
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
            (peer_port, "route?container=hello-world"),
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
    println!("routers: over HTTP :{http_port}, over the link :{link_port}, via a peer replica :{peer_port}");
    let body = r#"{"containers": ["hello-world"], "data": {"prompt": "hi"}}"#;
    let base = |port: u16| format!("http://127.0.0.1:{port}");
    let (http, link, peer) = (base(http_port), base(link_port), base(peer_port));
    let pairs = [("stream", "/api/v1/jobs/stream"), ("async ", "/api/v1/jobs")];
    let clients = clients();
    println!(
        "link benchmark: one node, through the gateway over HTTP, over its link, and over its link through a peer replica; {clients} clients for throughput"
    );
    for (label, path) in pairs {
        let urls = [
            format!("{http}{path}"),
            format!("{link}{path}"),
            format!("{peer}{path}"),
        ];
        for url in &urls {
            runtime.block_on(sequential(url, body, 50));
        }
        let p50s: Vec<(f64, f64)> = urls
            .iter()
            .map(|url| {
                let l = runtime.block_on(sequential(url, body, n));
                (ms(percentile(&l, 0.5)), ms(percentile(&l, 0.99)))
            })
            .collect();
        let [(hp50, hp99), (lp50, lp99), (pp50, pp99)] = p50s[..] else {
            unreachable!("three targets")
        };
        println!(
            "{label} one client: http p50 {hp50:.3} ms p99 {hp99:.3} ms | link p50 {lp50:.3} ms p99 {lp99:.3} ms \
             (adds {:+.3} ms) | via peer p50 {pp50:.3} ms p99 {pp99:.3} ms (adds {:+.3} ms)",
            lp50 - hp50,
            pp50 - hp50,
        );
        let rates: Vec<f64> = urls
            .iter()
            .map(|url| runtime.block_on(throughput(url, body, clients, seconds)))
            .collect();
        let (ht, lt, pt) = (rates[0], rates[1], rates[2]);
        println!(
            "{label} {clients} clients: http {ht:.0} req/s | link {lt:.0} req/s | via peer {pt:.0} req/s | link / http {:.2} | via peer / http {:.2}",
            lt / ht,
            pt / ht
        );
    }
}

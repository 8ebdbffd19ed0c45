//! Router benchmark: one full probe round over 1,000 node endpoints, and `/api/v1/ips` latency
//! under load, in one run.
//!
//! The 1,000 nodes are lightweight `/info` endpoints served by this process (each on its own
//! loopback port); the router under load is the release binary in its own process. Prints the round time against the refresh interval (30 s by default) and the
//! p50/p99 of `/api/v1/ips` at 16 concurrent clients. `BENCH_SECONDS` sets the load phase
//! (default 5).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Json, Router, routing::get};
use infernet_router::{
    address::NodeAddr,
    monitor::{Monitor, ProbeSettings},
    registry::{Hysteresis, Limits, Registry},
};
use serde_json::json;

const NODES: usize = 1000;
const CLIENTS: usize = 16;
const REFRESH: Duration = Duration::from_secs(30);

async fn fake_nodes() -> Vec<NodeAddr> {
    let mut addrs = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let containers = if i % 2 == 0 {
            json!([{"id": "x", "description": "", "external": true}])
        } else {
            json!([{"id": "x", "description": "", "external": true}, {"id": "y", "description": "", "external": true}])
        };
        let info = json!({"chain": {"address": "", "enabled": false}, "containers": containers,
            "pending": {"offchain": i % 17, "onchain": 0}, "version": "bench"});
        let app = Router::new().route("/info", get(move || std::future::ready(Json(info.clone()))));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        addrs.push(
            NodeAddr::parse(&format!("127.0.0.1:{port}"))
                .expect("line")
                .expect("addr"),
        );
    }
    addrs
}

/// Latency figures of one load phase (milliseconds).
struct Figures {
    requests: usize,
    throughput: f64,
    p50: f64,
    p99: f64,
}

/// `CLIENTS` closed-loop clients on `url` for `seconds`.
async fn load(url: String, seconds: u64) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .expect("client");
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = client.get(&url).send().await.expect("request");
                    assert!(r.status().is_success());
                    r.bytes().await.expect("body");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| infernet_testkit::percentile(&all, p).as_secs_f64() * 1000.0;
    Figures {
        requests: all.len(),
        throughput: all.len() as f64 / elapsed,
        p50: pct(0.5),
        p99: pct(0.99),
    }
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let addrs = fake_nodes().await;
        let settings = ProbeSettings {
            interval: REFRESH,
            timeout: Duration::from_secs(3),
            concurrency: 64,
            max_body_bytes: 256 * 1024,
        };
        let registry = Arc::new(Registry::new(
            addrs.clone(),
            Hysteresis {
                leave_after: 2,
                return_after: 2,
            },
            Limits {
                max_registrations: 0,
                max_per_source: 0,
            },
        ));
        let monitor = Monitor::new(registry.clone(), settings).expect("monitor");
        let cold = monitor.round().await;
        let warm = monitor.round().await;
        assert_eq!(
            registry.snapshot().available.len(),
            NODES,
            "every node should be available"
        );

        // The router under load runs as its own process (the release binary), as deployed: the
        // 1,000 fake nodes and the load generator stay in this one.
        let dir = tempfile::tempdir().expect("tempdir");
        let ips = dir.path().join("ips.txt");
        std::fs::write(&ips, addrs.iter().map(|a| a.key() + "\n").collect::<String>()).expect("ips.txt");
        let port = infernet_testkit::free_port();
        let _router = infernet_testkit::ChildGuard(
            std::process::Command::new(infernet_testkit::workspace_binary("infernet-router"))
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--ips-file",
                    ips.to_str().expect("utf-8"),
                ])
                .args(["--ratelimit-reqs-per-min", "1000000000", "--refresh-interval", "30"])
                .current_dir(dir.path())
                .env("RUST_LOG", "warn")
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("infernet-router"),
        );
        let url = format!("http://127.0.0.1:{port}/api/v1/ips?container=x&container=y&n=3");
        // Wait for the router's own first round.
        let client = reqwest::Client::new();
        loop {
            let Ok(response) = client.get(&url).send().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let v: Vec<String> = response.json().await.expect("json");
            if v.len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Baseline in the same run: the router's cheapest route, /health, under the same load.
        let health = load(format!("http://127.0.0.1:{port}/health"), seconds).await;
        let ips = load(url, seconds).await;
        println!("router benchmark: {NODES} nodes, probe concurrency 64, {CLIENTS} clients for {seconds} s");
        println!("full probe round (cold)       : {:.1} ms", cold.as_secs_f64() * 1000.0);
        println!(
            "full probe round (warm)       : {:.1} ms = {:.4} of the {} s refresh interval (target <= 1)",
            warm.as_secs_f64() * 1000.0,
            warm.as_secs_f64() / REFRESH.as_secs_f64(),
            REFRESH.as_secs()
        );
        for (name, f) in [("/health (baseline)", &health), ("/api/v1/ips", &ips)] {
            println!(
                "{name:<30}: {:>6.0} req/s  p50 {:.3} ms  p99 {:.3} ms  ({} requests)",
                f.throughput, f.p50, f.p99, f.requests
            );
        }
        println!(
            "/api/v1/ips p99 vs /health p99 : {:.2}x (target p99 <= 2 ms)",
            ips.p99 / health.p99
        );
    });
}

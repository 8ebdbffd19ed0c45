//! Streaming overhead of the node, measured against the service it proxies, in one run.
//!
//! Starts `hello-world` and an `infernet-node` (release builds, embedded store) on loopback, then
//! drives the same streaming work at 16 concurrent connections twice: directly at the service's
//! `POST /service_output`, and through the node's `POST /api/jobs/stream`. Prints throughput,
//! p50/p99 latency of both, their ratio, the latency the node adds, and the node's RSS idle and
//! under load.
//!
//! Run with `make bench` (builds the binaries first). `BENCH_SECONDS` sets the duration of each
//! phase (default 5).

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use infernet_testkit::{ChildGuard, free_port, percentile, rss_kib, wait_healthy, wait_port, workspace_binary};

const CONCURRENCY: usize = 16;

struct Figures {
    requests: usize,
    seconds: f64,
    p50: Duration,
    p99: Duration,
}

impl Figures {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// Runs `CONCURRENCY` workers posting `body` to `url` for `duration`; each request reads the
/// whole streamed body.
async fn load(url: String, body: &'static str, duration: Duration) -> Figures {
    infernet_node::install_tls_provider();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (url, stop, errors) = (url.clone(), stop.clone(), errors.clone());
            tokio::spawn(async move {
                // One connection per worker, kept alive.
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .expect("client");
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let ok = match client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                        _ => false,
                    };
                    if ok {
                        latencies.push(t.elapsed());
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "requests failed during the benchmark"
    );
    all.sort();
    let pct = |p: f64| percentile(&all, p);
    Figures {
        requests: all.len(),
        seconds,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

/// Open-loop load: one request every `1/rate` seconds for `duration`, each on a pooled connection,
/// whatever the previous ones are doing. Latency here is the path's own cost, not queueing.
async fn paced(url: String, body: &'static str, rate: u32, duration: Duration) -> Figures {
    infernet_node::install_tls_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut requests = Vec::new();
    while start.elapsed() < duration {
        ticker.tick().await;
        let (client, url) = (client.clone(), url.clone());
        requests.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())?;
            r.bytes().await.ok()?;
            Some(t.elapsed())
        }));
    }
    let mut all = Vec::with_capacity(requests.len());
    for r in requests {
        all.push(r.await.expect("request task").expect("paced request failed"));
    }
    let seconds = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| percentile(&all, p);
    Figures {
        requests: all.len(),
        seconds,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(seconds);
    let dir = tempfile::tempdir().expect("tempdir");
    let service_port = free_port();
    let node_port = free_port();
    let _service = ChildGuard(
        Command::new(workspace_binary("hello-world"))
            .env("HOST", "127.0.0.1")
            .env("PORT", service_port.to_string())
            .stderr(Stdio::null())
            .spawn()
            .expect("hello-world"),
    );
    wait_port(service_port, Duration::from_secs(20));
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "server": {"port": node_port, "bind": "127.0.0.1", "rate_limit": {"num_requests": 1_000_000_000u64, "period": 1}},
            "manage_containers": false,
            "store": {"path": dir.path().join("jobs.redb")},
            "containers": [{"id": "hello-world", "port": service_port}]
        })
        .to_string(),
    )
    .expect("config");
    let node = ChildGuard(
        Command::new(workspace_binary("infernet-node"))
            .args(["--config", config.to_str().expect("utf-8 path")])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("infernet-node"),
    );
    wait_healthy(node_port, Duration::from_secs(20));
    let node_pid = node.id();
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = rss_kib(node_pid);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let direct_body = r#"{"source": 1, "destination": 2, "data": {"prompt": "hi"}}"#;
    let node_body = r#"{"containers": ["hello-world"], "data": {"prompt": "hi"}}"#;
    // Warm both paths (connections, allocator) before measuring.
    runtime.block_on(load(
        format!("http://127.0.0.1:{service_port}/service_output"),
        direct_body,
        Duration::from_millis(500),
    ));
    runtime.block_on(load(
        format!("http://127.0.0.1:{node_port}/api/jobs/stream"),
        node_body,
        Duration::from_millis(500),
    ));

    let direct = runtime.block_on(load(
        format!("http://127.0.0.1:{service_port}/service_output"),
        direct_body,
        duration,
    ));
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(node_pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let through = runtime.block_on(load(
        format!("http://127.0.0.1:{node_port}/api/jobs/stream"),
        node_body,
        duration,
    ));
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    // Latency below saturation: the same offered load on both paths.
    const RATE: u32 = 1000;
    let direct_paced = runtime.block_on(paced(
        format!("http://127.0.0.1:{service_port}/service_output"),
        direct_body,
        RATE,
        duration,
    ));
    let node_paced = runtime.block_on(paced(
        format!("http://127.0.0.1:{node_port}/api/jobs/stream"),
        node_body,
        RATE,
        duration,
    ));

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("streaming benchmark: {CONCURRENCY} connections, {seconds} s per phase");
    println!(
        "direct  POST /service_output : {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  ({} requests)",
        direct.throughput(),
        ms(direct.p50),
        ms(direct.p99),
        direct.requests
    );
    println!(
        "node    POST /api/jobs/stream: {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  ({} requests)",
        through.throughput(),
        ms(through.p50),
        ms(through.p99),
        through.requests
    );
    println!(
        "ratio node/direct throughput : {:.2} (target >= 0.50)",
        through.throughput() / direct.throughput()
    );
    println!(
        "added p50 latency, saturated : {:.3} ms",
        ms(through.p50) - ms(direct.p50)
    );
    println!(
        "at {RATE} req/s offered (open loop): direct p50 {:.3} ms p99 {:.3} ms; node p50 {:.3} ms p99 {:.3} ms",
        ms(direct_paced.p50),
        ms(direct_paced.p99),
        ms(node_paced.p50),
        ms(node_paced.p99)
    );
    println!(
        "added p50 latency below saturation: {:.3} ms (target <= 0.3 ms)",
        ms(node_paced.p50) - ms(direct_paced.p50)
    );
    println!(
        "node RSS idle                : {:.1} MB (target <= 20 MB)",
        idle_rss as f64 / 1024.0
    );
    println!(
        "node RSS peak under load     : {:.1} MB (target <= 60 MB)",
        peak.load(Ordering::Relaxed) as f64 / 1024.0
    );
}

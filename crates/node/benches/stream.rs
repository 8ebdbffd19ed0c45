//! Streaming overhead of the node, measured against the service it proxies, in one run.
//!
//! Starts `hello-world`, an `infernet-node` (release builds, embedded store) and a bare forwarding
//! proxy on loopback, then drives the same streaming work at 16 concurrent connections along three
//! paths, interleaved over several rounds so that drift in the machine hits them alike:
//! - directly at the service's `POST /service_output`;
//! - through the forwarding proxy: a process that does nothing but pass each request to the
//!   service and its answer back, on pooled keep-alive connections. It is the floor any proxy pays
//!   here, where the load generator, the service and the proxy share the same cores and a proxy
//!   holds two sockets per request where the service holds one;
//! - through the node's `POST /api/jobs/stream` (parse, Guardian, rate limit, job id, store, and
//!   the streamed answer).
//!
//! Prints throughput and p50/p99 latency of each path, the ratios node/direct, floor/direct and
//! node/floor, the CPU time each process spends per request, the latency the node adds at a fixed
//! offered load, and the node's RSS idle and under load.
//!
//! Run with `make bench` (builds the binaries first). `BENCH_SECONDS` sets the length of each
//! measured phase (default 3) and `BENCH_ROUNDS` the number of rounds (default 5).

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, header::CONTENT_TYPE};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use infernet_testkit::{
    ChildGuard, cpu_time, env_or, free_port, percentile, rss_kib, wait_healthy, wait_port, workspace_binary,
};

const CONCURRENCY: usize = 16;
/// Set when the benchmark re-executes itself as the forwarding proxy: `<listen port>:<service port>`.
const FORWARD_ENV: &str = "STREAM_BENCH_FORWARD";

struct Figures {
    requests: usize,
    seconds: f64,
    /// Sorted.
    latencies: Vec<Duration>,
}

impl Figures {
    fn new(mut latencies: Vec<Duration>, seconds: f64) -> Self {
        latencies.sort();
        Self {
            requests: latencies.len(),
            seconds,
            latencies,
        }
    }

    fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn latency(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
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
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.expect("worker"));
    }
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "requests failed during the benchmark ({url})"
    );
    Figures::new(latencies, seconds)
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
    let mut latencies = Vec::with_capacity(requests.len());
    for r in requests {
        latencies.push(r.await.expect("request task").expect("paced request failed"));
    }
    Figures::new(latencies, start.elapsed().as_secs_f64())
}

/// The forwarding proxy: passes each request's body to the service's `/service_output` and
/// answers with the service's whole answer. Nothing else: no parsing, checks, ids or store.
fn forward_proxy(listen: u16, service: u16) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let upstream: hyper::Uri = format!("http://127.0.0.1:{service}/service_output")
            .parse()
            .expect("uri");
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", listen))
            .await
            .expect("forward proxy: bind");
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let _ = socket.set_nodelay(true);
            let (client, upstream) = (client.clone(), upstream.clone());
            tokio::spawn(async move {
                let forward = move |request: Request<Incoming>| forward_one(client.clone(), upstream.clone(), request);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), hyper::service::service_fn(forward))
                    .await;
            });
        }
    });
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn forward_one(
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: hyper::Uri,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let body = request.into_body().collect().await?.to_bytes();
    let forwarded = Request::post(upstream)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(body))?;
    let answer = client.request(forwarded).await?;
    let answer = answer.into_body().collect().await?.to_bytes();
    Ok(Response::builder()
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(answer))?)
}

/// One way to the service, and what was measured along it.
struct Path {
    label: &'static str,
    url: String,
    body: &'static str,
    /// The proxy in between, if any.
    proxy: Option<u32>,
    rounds: Vec<Figures>,
    /// CPU time of the load generator, the service and the proxy over all rounds.
    cpu: [Duration; 3],
}

impl Path {
    fn requests(&self) -> usize {
        self.rounds.iter().map(|r| r.requests).sum()
    }

    fn median_throughput(&self) -> f64 {
        median(self.rounds.iter().map(Figures::throughput).collect())
    }

    /// Latency percentiles over all rounds.
    fn latencies(&self, ps: [f64; 2]) -> [Duration; 2] {
        let all = Figures::new(
            self.rounds.iter().flat_map(|r| r.latencies.iter().copied()).collect(),
            0.0,
        );
        ps.map(|p| all.latency(p))
    }

    fn cpu_per_request(&self) -> [f64; 3] {
        self.cpu.map(|d| d.as_secs_f64() * 1e6 / self.requests().max(1) as f64)
    }

    /// Median over the rounds of this path's throughput divided by `other`'s in the same round.
    fn ratio_to(&self, other: &Path) -> f64 {
        median(
            self.rounds
                .iter()
                .zip(&other.rounds)
                .map(|(a, b)| a.throughput() / b.throughput())
                .collect(),
        )
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Starts a node on embedded defaults in front of the service; returns it and its port.
fn start_node(binary: &std::path::Path, service_port: u16, dir: &std::path::Path, name: &str) -> (ChildGuard, u16) {
    let port = free_port();
    let config = dir.join(format!("config-{name}.json"));
    std::fs::write(
        &config,
        serde_json::json!({
            "server": {"port": port, "bind": "127.0.0.1", "rate_limit": {"num_requests": 1_000_000_000u64, "period": 1}},
            "manage_containers": false,
            "store": {"path": dir.join(format!("jobs-{name}.db"))},
            "log": {"path": dir.join(format!("infernet_node-{name}.log"))},
            "containers": [{"id": "hello-world", "port": service_port}]
        })
        .to_string(),
    )
    .expect("config");
    let node = ChildGuard(
        Command::new(binary)
            .args(["--config", config.to_str().expect("utf-8 path")])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("infernet-node"),
    );
    wait_healthy(port, Duration::from_secs(20));
    (node, port)
}

fn main() {
    if let Ok(spec) = std::env::var(FORWARD_ENV) {
        let (listen, service) = spec.split_once(':').expect("<listen>:<service>");
        forward_proxy(
            listen.parse().expect("listen port"),
            service.parse().expect("service port"),
        );
        return;
    }
    let seconds = env_or("BENCH_SECONDS", 3);
    let rounds = env_or("BENCH_ROUNDS", 5);
    let duration = Duration::from_secs(seconds);
    let dir = tempfile::tempdir().expect("tempdir");
    // Each port is picked once the previous one is taken, so no two can be the same.
    let (service_port, service) = infernet_testkit::hello_world();
    let forward_port = free_port();
    let mut forwarder = ChildGuard(
        Command::new(std::env::current_exe().expect("own path"))
            .env(FORWARD_ENV, format!("{forward_port}:{service_port}"))
            .spawn()
            .expect("forward proxy"),
    );
    wait_port(forward_port, Duration::from_secs(20));
    assert!(
        forwarder.0.try_wait().expect("forward proxy status").is_none(),
        "the forwarding proxy exited"
    );
    let node = start_node(&workspace_binary("infernet-node"), service_port, dir.path(), "a");
    // `BENCH_NODE_B=<binary>`: a second build measured in the same run, for A/B comparisons.
    let node_b = std::env::var_os("BENCH_NODE_B")
        .map(|binary| start_node(std::path::Path::new(&binary), service_port, dir.path(), "b"));
    let node_pid = node.0.id();
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = rss_kib(node_pid);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let direct_body = r#"{"source": 1, "destination": 2, "data": {"prompt": "hi"}}"#;
    let node_body = r#"{"containers": ["hello-world"], "data": {"prompt": "hi"}}"#;
    let path = |label, url, body, proxy| Path {
        label,
        url,
        body,
        proxy,
        rounds: Vec::new(),
        cpu: [Duration::ZERO; 3],
    };
    let mut paths = [
        path(
            "direct  POST /service_output ",
            format!("http://127.0.0.1:{service_port}/service_output"),
            direct_body,
            None,
        ),
        path(
            "forwarding proxy (the floor) ",
            format!("http://127.0.0.1:{forward_port}/service_output"),
            direct_body,
            Some(forwarder.id()),
        ),
        path(
            "node    POST /api/jobs/stream",
            format!("http://127.0.0.1:{}/api/jobs/stream", node.1),
            node_body,
            Some(node_pid),
        ),
    ]
    .into_iter()
    .chain(node_b.as_ref().map(|(b, port)| {
        path(
            "node B  POST /api/jobs/stream",
            format!("http://127.0.0.1:{port}/api/jobs/stream"),
            node_body,
            Some(b.id()),
        )
    }))
    .collect::<Vec<_>>();
    // Warm every path (connections, allocator) before measuring.
    for p in &paths {
        runtime.block_on(load(p.url.clone(), p.body, Duration::from_millis(500)));
    }

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
    let cpu = |proxy: Option<u32>| {
        [
            cpu_time(std::process::id()),
            cpu_time(service.id()),
            proxy.map_or(Duration::ZERO, cpu_time),
        ]
    };
    for _ in 0..rounds {
        for p in &mut paths {
            let before = cpu(p.proxy);
            p.rounds.push(runtime.block_on(load(p.url.clone(), p.body, duration)));
            let after = cpu(p.proxy);
            for i in 0..3 {
                p.cpu[i] += after[i] - before[i];
            }
        }
    }
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    // Latency below saturation: the same offered load on both paths.
    const RATE: u32 = 1000;
    let paced_seconds = Duration::from_secs(seconds.max(3));
    let (direct, floor, through) = (&paths[0], &paths[1], &paths[2]);
    let direct_paced = runtime.block_on(paced(direct.url.clone(), direct_body, RATE, paced_seconds));
    let node_paced = runtime.block_on(paced(through.url.clone(), node_body, RATE, paced_seconds));

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "streaming benchmark: {CONCURRENCY} connections, {rounds} rounds of {seconds} s per path, paths interleaved"
    );
    println!(
        "path                            req/s (median)   p50 ms   p99 ms   CPU us per request: load generator / service / proxy"
    );
    for p in &paths {
        let [generator, service, proxy] = p.cpu_per_request();
        let [p50, p99] = p.latencies([0.50, 0.99]);
        println!(
            "{}  {:>14.0}  {:>7.3}  {:>7.3}   {generator:.1} / {service:.1} / {proxy:.1}  ({} requests)",
            p.label,
            p.median_throughput(),
            ms(p50),
            ms(p99),
            p.requests()
        );
    }
    println!(
        "ratio node/direct throughput  : {:.2} (target >= 0.50)",
        through.ratio_to(direct)
    );
    println!(
        "ratio floor/direct throughput : {:.2} (what forwarding alone costs here)",
        floor.ratio_to(direct)
    );
    println!(
        "ratio node/floor throughput   : {:.2} (the node's own work)",
        through.ratio_to(floor)
    );
    if let Some(b) = paths.get(3) {
        println!("ratio node B/direct throughput: {:.2}", b.ratio_to(direct));
        println!("ratio node B/node throughput  : {:.2}", b.ratio_to(through));
        let b_paced = runtime.block_on(paced(b.url.clone(), node_body, RATE, paced_seconds));
        println!(
            "at {RATE} req/s offered: node B p50 {:.3} ms p99 {:.3} ms",
            ms(b_paced.latency(0.50)),
            ms(b_paced.latency(0.99))
        );
    }
    println!(
        "at {RATE} req/s offered (open loop): direct p50 {:.3} ms p99 {:.3} ms; node p50 {:.3} ms p99 {:.3} ms",
        ms(direct_paced.latency(0.50)),
        ms(direct_paced.latency(0.99)),
        ms(node_paced.latency(0.50)),
        ms(node_paced.latency(0.99)),
    );
    println!(
        "added p50 latency below saturation: {:.3} ms (target <= 0.3 ms)",
        ms(node_paced.latency(0.50)) - ms(direct_paced.latency(0.50))
    );
    println!(
        "node RSS idle                 : {:.1} MB (target <= 20 MB)",
        idle_rss as f64 / 1024.0
    );
    println!(
        "node RSS peak under load      : {:.1} MB (target <= 60 MB)",
        peak.load(Ordering::Relaxed) as f64 / 1024.0
    );
}

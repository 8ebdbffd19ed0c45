//! Gateway benchmark: jobs through the router's gateway against the same jobs sent to the node
//! directly, in one run, with the router's database on (a SQLite file); and the chooser's
//! decision time among 10,000 registered nodes.
//!
//! Starts `hello-world`, an `infernet-node` that trusts the router, and the `infernet-router`
//! (release builds, each its own process). Prints, for streams (`/api/jobs/stream` against
//! `/api/v1/jobs/stream`) and async submissions (`/api/jobs` against `/api/v1/jobs`):
//! - p50 and p99 of one client's requests, one after the other, and the p50 the gateway adds;
//! - throughput at 16 concurrent clients and the gateway's ratio to direct.
//!
//! First, the p50/p99 of one decision over 10,000 nodes, as the gateway makes it: the registry's
//! snapshot, each node's record and latency, filters, score, the count in every left-out node's
//! public record, and the pick (and, for comparison, of the pure chooser alone).
//!
//! Options: `BENCH_SECONDS` sets each load phase (default 3), `BENCH_CLIENTS` the clients of the
//! throughput phases (default 16), `BENCH_SEQUENTIAL` the requests of each one-client phase
//! (default 500); `BENCH_TOKENS=n` makes each job stream `n` tokens, as a model's answer comes
//! (default: `hello-world`'s two words); `BENCH_ONLY=chooser` runs the decisions only,
//! `BENCH_ONLY=stream` the streams only. `BENCH_ROUTER_B=<binary>` runs a second router build
//! beside the first (same key, its own database), measured in the same run.
//! `BENCH_PIN=1` models a router on a machine of its own: the routers run on CPU 0, and the node,
//! `hello-world` and the clients on CPU 1, so that direct and gateway runs give the node's side the
//! same one core, and the router's work does not take the node's CPU (on two cores, unpinned, the
//! router and the node share them, and the ratio measures their sum).

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

mod load;
use load::{clients, ms, sequential, throughput};

use infernet_identity::Identity;
use infernet_router::{
    address::NodeAddr,
    choose::{self, Ask, Candidate, Record, Requirements},
    db::{Db, DbSettings, nodes::NodeSeen},
    gateway::{Gateway, GatewaySettings, JobAsk},
    registry::{ContainerSummary, Hysteresis, Limits, NodeReport, Offer, Registry},
};
use infernet_testkit::{ChildGuard, cpu_time, env_or, free_port, percentile, wait_healthy, workspace_binary};

// The router's allocator, so that a decision here costs what it costs in the router.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODES: usize = 10_000;

/// Decisions per measurement (`BENCH_DECISIONS`).
fn decisions() -> usize {
    env_or("BENCH_DECISIONS", 1000u64) as usize
}

/// p50 and p99 of one decision over [`NODES`] nodes: through a [`Gateway`] (its registry, records
/// in a SQLite file), then of the pure chooser alone.
fn chooser(runtime: &tokio::runtime::Runtime, dir: &std::path::Path) -> [(Duration, Duration); 2] {
    let reports: Vec<NodeReport> = (0..NODES)
        .map(|i| NodeReport {
            containers: ["hello-world", "other"]
                .iter()
                .take(1 + i % 2)
                .map(|id| ContainerSummary {
                    id: id.to_string(),
                    description: String::new(),
                    external: true,
                })
                .collect(),
            pending: (i % 13) as u64,
            offer: Offer {
                pricing: BTreeMap::from([(
                    "hello-world".to_string(),
                    infernet_types::settings::Price {
                        per_job: Some((i % 100) as f64 / 1000.0),
                        per_second: None,
                        unit: "USD".into(),
                    },
                )]),
                open: i % 10 != 0,
                ..Default::default()
            },
        })
        .collect();
    let names: Vec<String> = (0..NODES)
        .map(|i| format!("10.{}.{}.{}:4000", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let records: Vec<Record> = (0..NODES)
        .map(|i| Record {
            jobs_ok: (i % 50) as u64,
            jobs_failed: (i % 7) as u64,
            latency_ms: (i % 3 != 0).then_some(50.0 + (i % 400) as f64),
        })
        .collect();
    let through_gateway = runtime.block_on(async {
        let db = Db::open(&DbSettings::new(format!(
            "sqlite://{}",
            dir.join("chooser.db").display()
        )))
        .await
        .expect("database");
        for (name, r) in names.iter().zip(&records) {
            let seen = NodeSeen {
                key: name,
                address: name,
                operator: None,
                statement: None,
                now: 0,
            };
            db.upsert_node(&seen).await.expect("node");
            let latency_sum = r.latency_ms.map_or(0, |l| (l * r.jobs_ok as f64) as i64);
            db.add_job_outcomes(name, r.jobs_ok as i64, r.jobs_failed as i64, latency_sum)
                .await
                .expect("record");
        }
        let listed = names
            .iter()
            .map(|n| NodeAddr::parse(n).expect("an address").expect("a valid address"))
            .collect();
        let hysteresis = Hysteresis {
            leave_after: 1,
            return_after: 1,
        };
        let limits = Limits {
            max_registrations: NODES,
            max_per_source: NODES,
        };
        let registry = std::sync::Arc::new(Registry::new(listed, hysteresis, limits));
        registry.apply(names.iter().cloned().zip(reports.iter().cloned().map(Ok)).collect());
        assert_eq!(registry.snapshot().available.len(), NODES);
        let settings = GatewaySettings {
            key_file: dir.join("chooser.nsec"),
            ..Default::default()
        };
        let (gateway, _ledger) = Gateway::new(db, registry.clone(), settings, 0).await.expect("gateway");
        let ask = JobAsk::parse(
            &serde_json::json!({"containers": ["hello-world"], "data": {}, "max_price": 0.05}),
            "",
        )
        .expect("ask");
        let mut rng = rand::rng();
        let mut times = Vec::with_capacity(decisions());
        for _ in 0..decisions() {
            let start = Instant::now();
            let choice = gateway.decide(&ask, 1);
            let order = choose::pick(&choice.candidates, &mut rng);
            std::hint::black_box(order);
            times.push(start.elapsed());
        }
        let passed_over: u64 = registry
            .take_passed_over()
            .iter()
            .map(|(_, c)| c.iter().sum::<u64>())
            .sum();
        assert!(
            passed_over >= decisions() as u64,
            "the decisions were counted in the nodes' records"
        );
        times.sort();
        (percentile(&times, 0.5), percentile(&times, 0.99))
    });
    let containers = vec!["hello-world".to_string()];
    let requirements = Requirements::default();
    let ask = Ask {
        containers: &containers,
        requirements: &requirements,
        max_price: Some(0.05),
        max_seconds: 60.0,
        unit: "USD",
    };
    let mut rng = rand::rng();
    let mut times = Vec::with_capacity(decisions());
    for _ in 0..decisions() {
        let start = Instant::now();
        let choice = choose::choose(
            &ask,
            (0..NODES).map(|i| Candidate {
                node: &names[i],
                healthy: true,
                last_error: None,
                uptime: 1.0 - (i % 5) as f64 / 20.0,
                report: &reports[i],
                record: records[i],
                terms: None,
            }),
            false,
        );
        let order = choose::pick(&choice.candidates, &mut rng);
        std::hint::black_box(order);
        times.push(start.elapsed());
    }
    times.sort();
    [through_gateway, (percentile(&times, 0.5), percentile(&times, 0.99))]
}

/// Pins the process `pid` to `cpu` with util-linux's `taskset`: the threads it has started too
/// when `all`, else its main thread (and the threads and processes it starts later, which
/// inherit the mask).
fn pin(pid: u32, cpu: u32, all: bool) {
    let mut taskset = Command::new("taskset");
    if all {
        taskset.arg("-a");
    }
    let status = taskset
        .args(["-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("taskset (util-linux)");
    assert!(status.success(), "taskset -p -c {cpu} {pid}: {status}");
}

fn main() {
    infernet_service::install_tls_provider();
    // Before any thread starts: the runtime's workers, the node and hello-world inherit CPU 1.
    let pinned = std::env::var("BENCH_PIN").is_ok_and(|v| v == "1");
    if pinned {
        pin(std::process::id(), 1, false);
    }
    let seconds = Duration::from_secs(env_or("BENCH_SECONDS", 3));
    let n = env_or("BENCH_SEQUENTIAL", 500);
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The decisions first, on a quiet machine: after the load phases the router and the node
    // still write their backlogs for a while, and their work would be timed as the chooser's.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only != "stream" {
        print_chooser(&runtime, dir.path());
    }
    if only == "chooser" {
        return;
    }
    let key = Identity::generate();
    let key_file = dir.path().join("router.nsec");
    infernet_testkit::write_secret(&key_file, &key.nsec());

    let (service_port, _service) = infernet_testkit::hello_world();
    let node_port = free_port();
    let config = dir.path().join("node.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "server": {"port": node_port, "bind": "127.0.0.1", "rate_limit": {"num_requests": 1_000_000_000u64, "period": 1}},
            "manage_containers": false,
            "store": {"path": dir.path().join("jobs.db")},
            "log": {"path": dir.path().join("node.log")},
            "network": {"routers": [key.npub()]},
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
    let ips = dir.path().join("ips.txt");
    std::fs::write(&ips, format!("127.0.0.1:{node_port}\n")).expect("ips");
    // `BENCH_ROUTER_B=<binary>`: a second router build beside the first (same key, its own
    // database), measured in the same run, for A/B comparisons.
    let mut routers = vec![start_router(
        &workspace_binary("infernet-router"),
        &ips,
        &key_file,
        dir.path(),
        "a",
    )];
    if let Some(b) = std::env::var_os("BENCH_ROUTER_B") {
        routers.push(start_router(std::path::Path::new(&b), &ips, &key_file, dir.path(), "b"));
    }
    if pinned {
        for (_, router) in &routers {
            pin(router.0.id(), 0, true);
        }
    }
    for (port, _) in &routers {
        runtime.block_on(listed(*port));
    }
    // The floor of any HTTP hop: nginx passing the node's stream through, when installed.
    let nginx = start_nginx(dir.path(), node_port);
    if let (Some(nginx), true) = (&nginx, pinned) {
        pin(nginx.1.id(), 0, true);
    }

    // `BENCH_TOKENS=n`: streams of n tokens, as a model's answer comes (by default, two words).
    let clients = clients();
    let body: &'static str = match env_or("BENCH_TOKENS", 0u64) {
        0 => r#"{"containers": ["hello-world"], "data": {"prompt": "hi"}}"#,
        n => Box::leak(format!(r#"{{"containers": ["hello-world"], "data": {{"tokens": {n}}}}}"#).into_boxed_str()),
    };
    let node = format!("http://127.0.0.1:{node_port}");
    println!(
        "gateway benchmark: one node, router database on (SQLite file), {clients} clients for throughput{}",
        match pinned {
            true => "; pinned: routers on CPU 0, node, hello-world and clients on CPU 1",
            false => "",
        }
    );
    for (label, direct, gateway) in [
        ("stream", "/api/jobs/stream", "/api/v1/jobs/stream"),
        ("async ", "/api/jobs", "/api/v1/jobs"),
    ]
    .into_iter()
    .filter(|(label, ..)| only != "stream" || *label == "stream")
    {
        let direct = format!("{node}{direct}");
        // Warm every path.
        runtime.block_on(sequential(&direct, body, 50));
        for (port, _) in &routers {
            runtime.block_on(sequential(&format!("http://127.0.0.1:{port}{gateway}"), body, 50));
        }
        let d = runtime.block_on(sequential(&direct, body, n));
        let dp50 = percentile(&d, 0.5);
        println!(
            "{label} one client: direct p50 {:.3} ms p99 {:.3} ms",
            ms(dp50),
            ms(percentile(&d, 0.99))
        );
        for ((port, _), name) in routers.iter().zip(["gateway", "gateway B"]) {
            let g = runtime.block_on(sequential(&format!("http://127.0.0.1:{port}{gateway}"), body, n));
            let gp50 = percentile(&g, 0.5);
            println!(
                "{label} one client: {name} p50 {:.3} ms p99 {:.3} ms | added p50 {:.3} ms",
                ms(gp50),
                ms(percentile(&g, 0.99)),
                ms(gp50.saturating_sub(dp50)),
            );
        }
        let node_before = cpu_time(_node.id());
        let dt = runtime.block_on(throughput(&direct, body, clients, seconds));
        println!(
            "{label} {clients} clients: direct {dt:.0} req/s | CPU per direct job: node {:.0} µs",
            (cpu_time(_node.id()) - node_before).as_secs_f64() * 1e6 / (dt * seconds.as_secs_f64()).max(1.0)
        );
        if let (Some((port, nginx)), "stream") = (&nginx, label) {
            let (node_before, nginx_before) = (cpu_time(_node.id()), cpu_time(nginx.id()));
            let url = format!("http://127.0.0.1:{port}{}", "/api/jobs/stream");
            runtime.block_on(sequential(&url, body, 50));
            let ft = runtime.block_on(throughput(&url, body, clients, seconds));
            let jobs = ft * seconds.as_secs_f64();
            let per_job = |before: Duration, pid: u32| (cpu_time(pid) - before).as_secs_f64() * 1e6 / jobs.max(1.0);
            println!(
                "{label} {clients} clients: nginx pass-through (the floor of one hop) {ft:.0} req/s | / direct {:.2} | CPU per job: nginx {:.0} µs, node {:.0} µs",
                ft / dt,
                per_job(nginx_before, nginx.id()),
                per_job(node_before, _node.id()),
            );
        }
        for ((port, router), name) in routers.iter().zip(["gateway", "gateway B"]) {
            let (node_before, router_before) = (cpu_time(_node.id()), cpu_time(router.0.id()));
            let gt = runtime.block_on(throughput(
                &format!("http://127.0.0.1:{port}{gateway}"),
                body,
                clients,
                seconds,
            ));
            let jobs = gt * seconds.as_secs_f64();
            let per_job = |before: Duration, pid: u32| (cpu_time(pid) - before).as_secs_f64() * 1e6 / jobs.max(1.0);
            println!(
                "{label} {clients} clients: {name} {gt:.0} req/s | {name} / direct {:.2} | CPU per gateway job: router {:.0} µs, node {:.0} µs",
                gt / dt,
                per_job(router_before, router.0.id()),
                per_job(node_before, _node.id()),
            );
        }
    }
}

/// nginx (one process, no master) on a free port, passing everything through to the node with
/// keep-alive and without buffering, when `nginx` is installed: the cost of one HTTP hop that
/// does nothing else, as a baseline for the gateway's.
fn start_nginx(dir: &std::path::Path, node_port: u16) -> Option<(u16, ChildGuard)> {
    let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let port = free_port();
    let root = dir.join("nginx");
    std::fs::create_dir_all(&root).expect("nginx dir");
    let d = root.display();
    let conf = format!(
        "master_process off; daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
         upstream node {{ server 127.0.0.1:{node_port}; keepalive 64; }}\n\
         server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://node; proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\"; proxy_buffering off; proxy_request_buffering off; }} }} }}\n"
    );
    let path = root.join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx.conf");
    let child = match Command::new(binary)
        .arg("-p")
        .arg(&root)
        .arg("-e")
        .arg(root.join("error.log"))
        .arg("-c")
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => ChildGuard(child),
        Err(e) => {
            eprintln!("nginx did not start ({e}): no floor measured");
            return None;
        }
    };
    // The floor is a comparison, not the benchmark: without it the gateway is still measured.
    let started = std::panic::catch_unwind(|| wait_healthy(port, Duration::from_secs(10)));
    if started.is_err() {
        let log = std::fs::read_to_string(root.join("error.log")).unwrap_or_default();
        eprintln!("nginx did not answer: no floor measured; its log:\n{log}");
        return None;
    }
    Some((port, child))
}

/// Starts the router `binary` on a free port over the node list `ips`, with the key `key_file`
/// and its own database (named by `name`); its port and process.
fn start_router(
    binary: &std::path::Path,
    ips: &std::path::Path,
    key_file: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
) -> (u16, ChildGuard) {
    let port = free_port();
    let child = ChildGuard(
        Command::new(binary)
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
            .arg(ips)
            .arg("--key-file")
            .arg(key_file)
            .arg("--database-url")
            .arg(format!("sqlite://{}", dir.join(format!("router-{name}.db")).display()))
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("infernet-router"),
    );
    wait_healthy(port, Duration::from_secs(20));
    (port, child)
}

/// Waits until the router on `port` lists the node.
async fn listed(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ips: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/ips?container=hello-world"))
            .await
            .expect("ips")
            .json()
            .await
            .expect("json");
        if ips.as_array().is_some_and(|a| !a.is_empty()) {
            return;
        }
        assert!(Instant::now() < deadline, "the router never listed the node");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_chooser(runtime: &tokio::runtime::Runtime, dir: &std::path::Path) {
    let [(p50, p99), (pure50, pure99)] = chooser(runtime, dir);
    println!(
        "chooser over {NODES} nodes (half serve the job, a tenth closed, prices 0-0.099): one decision p50 {:.3} ms p99 {:.3} ms (the pure chooser alone: p50 {:.3} ms p99 {:.3} ms)",
        ms(p50),
        ms(p99),
        ms(pure50),
        ms(pure99)
    );
}

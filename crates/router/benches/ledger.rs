//! Ledger benchmark: how fast the router records ledger rows, its RSS with 10,000 nodes and
//! 1,000,000 ledger rows, and `GET /api/v1/earnings` over a year of rows.
//!
//! 1. Recording: 1,000 rows a second through the batch writer (as the gateway queues them) for
//!    `BENCH_SECONDS` (default 5): whether the queue ever refused one, and how far the writer
//!    lags at the end; then as fast as the queue takes them, until the ledger holds 1,000,000
//!    rows (a year of jobs of 10,000 nodes, one node — the "hot" one — with a fifth of them).
//! 2. The `infernet-router` binary (release) on that SQLite file, listing 10,000 nodes (closed
//!    loopback ports: they are probed and fail): its RSS once a probe round ran.
//! 3. `GET /api/v1/earnings?node=<hot>` over the last 365 days, by day and by month, and the hot
//!    node's public record `GET /api/v1/nodes/<hot>` (30 days, up to now: partial days at its
//!    edge), `BENCH_REQUESTS` (default 200) each, one after the other: p50 and p99.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use infernet_router::db::{
    Db, DbSettings,
    batcher::{BatchSettings, Record, batcher},
    ledger::LedgerRow,
    now_ms,
};
use infernet_testkit::{ChildGuard, env_or, free_port, percentile, rss_kib, wait_healthy, workspace_binary};
use tokio_util::sync::CancellationToken;

const NODES: usize = 10_000;
const ROWS: usize = 1_000_000;
const DAY_MS: i64 = 86_400_000;
const HOT: &str = "10.0.0.1:4000";

fn node(i: usize) -> String {
    format!("10.{}.{}.{}:4000", i / 62_500, (i / 250) % 250, i % 250 + 1)
}

/// Row `i` of the year ending `now`: every fifth on the hot node, spread evenly over the year.
fn row(i: usize, now: i64) -> LedgerRow {
    let at = now - 365 * DAY_MS + (i as i64) * (365 * DAY_MS / ROWS as i64);
    let node = if i.is_multiple_of(5) {
        HOT.to_string()
    } else {
        node(1 + i % (NODES - 1))
    };
    LedgerRow {
        job_id: format!("job-{i:07}"),
        client: format!("addr:{:032x}", i % 1000),
        api_key_id: None,
        node,
        operator: Some("ab".repeat(32)),
        containers: vec!["hello-world".into()],
        started_at: at - 1_500,
        finished_at: at,
        outcome: if i.is_multiple_of(50) { "failed" } else { "succeeded" }.into(),
        duration_ms: 1_500,
        price: Some(0.0025),
        unit: Some("USD".into()),
        receipt: None,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let seconds = env_or("BENCH_SECONDS", 5);
    let requests = env_or("BENCH_REQUESTS", 200) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("router.db").display());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let now = now_ms();

    runtime.block_on(async {
        let db = Db::open(&DbSettings::new(&url)).await.expect("database");
        let (tx, writer) = batcher(db.clone(), BatchSettings::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(writer.run(stop.clone()));
        let written = tx.written();

        // 1,000 a second, as the gateway queues them (try_send: a full queue drops the row).
        let paced = (seconds * 1000) as usize;
        let start = Instant::now();
        let mut refused = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for i in 0..paced {
            if i.is_multiple_of(10) {
                tick.tick().await;
            }
            if tx.try_send(Record::Ledger(row(i, now))).is_err() {
                refused += 1;
            }
        }
        let lag = paced as u64 - *written.borrow();
        tx.flush().await.expect("flush");
        // Keeping up: nothing refused, and no more uncommitted at the end than two batch delays
        // (100 ms each) of rows: the batch waiting and the one being committed.
        let kept_up = refused == 0 && lag <= 200;
        println!(
            "recording at 1,000 rows/s for {seconds} s: {paced} rows in {:.2} s, {refused} refused by a full queue, {lag} not yet committed at the end: {}",
            start.elapsed().as_secs_f64(),
            if kept_up { "kept up" } else { "FELL BEHIND" }
        );

        let start = Instant::now();
        for i in paced..ROWS {
            tx.send(Record::Ledger(row(i, now))).await.expect("send");
        }
        tx.flush().await.expect("flush");
        let took = start.elapsed();
        println!(
            "recording flat out: {} rows in {:.1} s, {:.0} rows/s",
            ROWS - paced,
            took.as_secs_f64(),
            (ROWS - paced) as f64 / took.as_secs_f64()
        );
        stop.cancel();
        task.await.expect("writer");
        db.close().await;
    });

    let ips = dir.path().join("ips.txt");
    let list: String = (0..NODES)
        .map(|i| format!("127.1.{}.{}:9\n", i / 250, i % 250 + 1))
        .collect();
    std::fs::write(&ips, list).expect("ips.txt");
    let port = free_port();
    let router = ChildGuard(
        Command::new(workspace_binary("infernet-router"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--ips-file"])
            .arg(&ips)
            .args(["--database-url", &url, "--ratelimit-reqs-per-min", "1000000"])
            .args(["--probe-concurrency", "256", "--probe-timeout", "1"])
            .current_dir(dir.path())
            .env_remove("KEY_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn infernet-router"),
    );
    wait_healthy(port, Duration::from_secs(30));
    // The first probe round over every node.
    std::thread::sleep(Duration::from_secs(5));
    let rss = rss_kib(router.id());
    println!(
        "router RSS with {NODES} nodes and {ROWS} ledger rows: {:.1} MB",
        rss as f64 / 1024.0
    );

    runtime.block_on(async {
        infernet_service::install_tls_provider();
        let client = reqwest::Client::new();
        let today = now.div_euclid(DAY_MS);
        let from = today - 364;
        let date = |day: i64| {
            let secs = day * 86_400;
            let out = Command::new("date")
                .args(["-u", "-d", &format!("@{secs}"), "+%F"])
                .output()
                .expect("date");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let (from, to) = (date(from), date(today));
        // `requests` GETs of `url` one after the other: their times, sorted, and the last answer.
        let measure = |url: String| {
            let client = client.clone();
            async move {
                let mut took = Vec::with_capacity(requests);
                let mut last = serde_json::Value::Null;
                for _ in 0..requests {
                    let start = Instant::now();
                    let r = client.get(&url).send().await.expect("request");
                    assert_eq!(r.status(), 200);
                    last = r.json().await.expect("json");
                    took.push(start.elapsed());
                }
                took.sort();
                (took, last)
            }
        };
        for by in ["day", "month"] {
            let (took, v) = measure(format!(
                "http://127.0.0.1:{port}/api/v1/earnings?node={HOT}&from={from}&to={to}&by={by}"
            ))
            .await;
            println!(
                "GET /api/v1/earnings over 365 days by {by} ({} rows of the node): p50 {:.1} ms, p99 {:.1} ms",
                v["total"]["jobs"].as_i64().unwrap_or(0),
                ms(percentile(&took, 0.5)),
                ms(percentile(&took, 0.99))
            );
        }
        let (took, v) = measure(format!("http://127.0.0.1:{port}/api/v1/nodes/{HOT}")).await;
        let jobs: i64 = v["jobs_per_day"]
            .as_array()
            .map_or(0, |days| days.iter().filter_map(|d| d["jobs"].as_i64()).sum());
        println!(
            "GET /api/v1/nodes/{HOT} (30 days, {jobs} rows of the node): p50 {:.1} ms, p99 {:.1} ms",
            ms(percentile(&took, 0.5)),
            ms(percentile(&took, 0.99))
        );
    });
    drop(router);
}

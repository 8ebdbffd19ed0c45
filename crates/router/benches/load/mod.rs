//! Load helpers shared by the router's benches that call the gateway over HTTP (`gateway`,
//! `link`): one request, one client's requests in a row, and closed-loop clients.

use std::time::{Duration, Instant};

/// Closed-loop clients of the throughput phases (`BENCH_CLIENTS`, default 16).
pub(crate) fn clients() -> usize {
    infernet_testkit::env_or("BENCH_CLIENTS", 16).max(1) as usize
}

/// `d` in milliseconds.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One request and its whole answer; panics on anything but 200 (a benchmark of errors is none).
pub(crate) async fn once(client: &reqwest::Client, url: &str, body: &'static str) {
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

/// `n` requests one after the other: sorted latencies.
pub(crate) async fn sequential(url: &str, body: &'static str, n: u64) -> Vec<Duration> {
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

/// `clients` closed-loop clients for `duration`: requests per second.
pub(crate) async fn throughput(url: &str, body: &'static str, clients: usize, duration: Duration) -> f64 {
    let client = reqwest::Client::new();
    let end = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients.max(1))
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

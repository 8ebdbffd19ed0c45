//! Connections have timeouts and a limit, tested with real sockets: idle and slow-header
//! connections beyond the limit do not keep a normal client out; a half-sent head, a stalled
//! body and an idle keep-alive connection are closed after their timeouts; the soft open-file
//! limit is raised to the hard one.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::support::{TestNode, free_port};

/// A node with short windows and a small connection limit.
async fn node(max_connections: u64) -> TestNode {
    TestNode::start(json!({
        "containers": [],
        "server": {
            "header_timeout": 0.4,
            "body_timeout": 0.6,
            "idle_timeout": 0.8,
            "max_connections": max_connections
        }
    }))
    .await
}

fn addr(node: &TestNode) -> String {
    node.url.trim_start_matches("http://").to_string()
}

/// Waits until the server closes `tcp` (EOF or reset), at most `within`; returns how long that took.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| start.elapsed())
}

#[tokio::test]
async fn a_normal_client_is_always_served_beyond_the_connection_limit() {
    // Long windows: here connections go only because the limit sheds them.
    let node = TestNode::start(json!({
        "containers": [],
        "server": {"header_timeout": 30, "idle_timeout": 60, "max_connections": 200}
    }))
    .await;
    let addr = addr(&node);
    // A new connection per request: a new client every time.
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let mut hostile = Vec::new();
    let mut latencies = Vec::new();
    for round in 0..20 {
        for i in 0..25 {
            let mut tcp = TcpStream::connect(&addr).await.unwrap();
            if (round + i) % 2 == 1 {
                // Slow header: half a request head, never finished.
                tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
            }
            hostile.push(tcp);
        }
        let start = Instant::now();
        let answer = fresh.get(node.at("/health")).send().await;
        latencies.push(start.elapsed());
        let status = answer.map(|r| r.status().as_u16());
        assert_eq!(
            status.ok(),
            Some(200),
            "refused after {} hostile connections",
            hostile.len()
        );
    }
    // 500 hostile connections were opened against a limit of 200: the oldest were closed.
    let checks = hostile
        .iter_mut()
        .map(|tcp| closed_within(tcp, Duration::from_millis(500)));
    let closed = futures::future::join_all(checks)
        .await
        .iter()
        .filter(|c| c.is_some())
        .count();
    assert!(closed >= 300, "only {closed} of 500 hostile connections were closed");
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    println!("normal client p99 with 500 hostile connections: {p99:?}");
}

#[tokio::test]
async fn half_a_request_head_is_closed_after_the_header_timeout() {
    let node = node(100).await;
    let mut tcp = TcpStream::connect(addr(&node)).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let took = closed_within(&mut tcp, Duration::from_secs(5)).await.expect("closed");
    assert!(took >= Duration::from_millis(350), "closed too early: {took:?}");
}

#[tokio::test]
async fn a_stalled_body_is_closed_after_the_body_timeout() {
    let node = node(100).await;
    let mut tcp = TcpStream::connect(addr(&node)).await.unwrap();
    tcp.write_all(
        b"POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"contain",
    )
    .await
    .unwrap();
    let took = closed_within(&mut tcp, Duration::from_secs(5)).await.expect("closed");
    assert!(took >= Duration::from_millis(550), "closed too early: {took:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let node = node(100).await;
    let mut tcp = TcpStream::connect(addr(&node)).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let took = closed_within(&mut tcp, Duration::from_secs(5)).await.expect("closed");
    // Longer than the header timeout: an idle connection is not a slow head.
    assert!(took >= Duration::from_millis(600), "closed too early: {took:?}");
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({
            "server": {"port": port, "bind": "127.0.0.1"},
            "log": {"path": dir.path().join("node.log")},
            "store": {"path": dir.path().join("jobs.db")},
            "containers": []
        })
        .to_string(),
    )
    .unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -Sn 256 && exec \"$0\" --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_infernet-node"))
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    infernet_testkit::wait_healthy(port, Duration::from_secs(30));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "soft limit raised to the hard one: {line}");
    assert_ne!(numbers[0], "256", "{line}");
}

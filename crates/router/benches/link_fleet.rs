//! Link fleet benchmark: the router's CPU and RSS while 1,000 linked nodes heartbeat.
//!
//! Starts one `infernet-router` (release build, SQLite file) and, in this process, `BENCH_NODES`
//! (default 1,000) simulated nodes: each its own key and its own WebSocket to `/api/v1/link`,
//! speaking the link protocol as a node does (the router's challenge answered with a signed
//! hello announcing one container, then a heartbeat every period the router's welcome gives,
//! and an answer to each request the router sends over the link, such as the alert engine's
//! `/info` reads). Once all are linked, it measures the router over `BENCH_SECONDS` (default 60):
//! CPU as a share of one core, and RSS at the end. Targets: ≤ 5 % of one core, ≤ 150 MB.
//!
//! `BENCH_HEARTBEAT` sets the router's `--link-heartbeat` (default 15 s, the router's default).

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{SinkExt, StreamExt};
use infernet_identity::{Identity, statement};
use infernet_testkit::{ChildGuard, cpu_time, env_or, free_port, rss_kib, wait_healthy, workspace_binary};
use infernet_types::link::{
    Announce, AnnouncedContainer, HELLO_SUBJECT, HelloContent, Message, VERSION, decode, encode,
};
use tokio_tungstenite::tungstenite::Message as Ws;

/// What each simulated node announces.
fn announce() -> Announce {
    Announce {
        containers: vec![AnnouncedContainer {
            id: "hello-world".into(),
            description: String::new(),
            external: true,
        }],
        ..Announce::default()
    }
}

/// A node's `/info`, as the router's alert engine reads it over the link.
fn info(node: &str) -> Vec<u8> {
    serde_json::json!({
        "node": node,
        "containers": [{"id": "hello-world", "description": "", "external": true}],
        "pending": {"offchain": 0, "onchain": 0},
        "jobs": {},
        "container_states": {"hello-world": "running"},
        "version": "bench",
    })
    .to_string()
    .into_bytes()
}

/// One simulated node: links, then heartbeats and answers requests until the process ends.
async fn node(url: String, linked: Arc<AtomicUsize>, requests: Arc<AtomicUsize>) {
    let identity = Identity::generate();
    // The router admits only so many handshakes at once (503): retry after a short pause, as a
    // node's backoff does.
    let mut socket = loop {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((socket, _)) => break socket,
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 503 => {
                let pause = 20 + (rand_fraction(&identity) * 200.0) as u64;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            Err(e) => panic!("connect: {e}"),
        }
    };
    let next = |frame: Option<Result<Ws, _>>| match frame {
        Some(Ok(Ws::Binary(bytes))) => Some(bytes),
        Some(Ok(_)) => None,
        Some(Err(e)) => panic!("link broke: {e}"),
        None => panic!("the router closed the link"),
    };
    let challenge = loop {
        if let Some(bytes) = next(socket.next().await) {
            break bytes;
        }
    };
    let Ok((Message::Challenge { nonce, router, .. }, _)) = decode(&challenge) else {
        panic!("expected a challenge");
    };
    let content = HelloContent {
        nonce,
        router,
        version: VERSION,
        operators: Vec::new(),
        announce: announce(),
    };
    let hello = Message::Hello {
        version: VERSION,
        statement: statement::sign(&identity, HELLO_SUBJECT, &content).expect("sign"),
    };
    socket
        .send(Ws::Binary(encode(&hello, b"").into()))
        .await
        .expect("hello");
    let welcome = loop {
        if let Some(bytes) = next(socket.next().await) {
            break bytes;
        }
    };
    let period = match decode(&welcome) {
        Ok((Message::Welcome { heartbeat_s, .. }, _)) => Duration::from_secs(heartbeat_s.max(1)),
        other => panic!("expected a welcome, got {other:?}"),
    };
    linked.fetch_add(1, Ordering::Relaxed);
    let body = info(&identity.npub());
    // Spread the beats over the period, as nodes that started at different times would.
    let mut beat = tokio::time::interval_at(
        tokio::time::Instant::now() + period.mul_f64(rand_fraction(&identity)),
        period,
    );
    loop {
        tokio::select! {
            _ = beat.tick() => {
                let frame = encode(&Message::Heartbeat { announce: announce() }, b"");
                socket.send(Ws::Binary(frame.into())).await.expect("heartbeat");
            }
            frame = socket.next() => {
                let Some(bytes) = next(frame) else { continue };
                if let Ok((Message::Request { call, .. }, _)) = decode(&bytes) {
                    requests.fetch_add(1, Ordering::Relaxed);
                    let head = Message::Head { call, status: 200, content_type: Some("application/json".into()) };
                    socket.send(Ws::Binary(encode(&head, b"").into())).await.expect("head");
                    socket.send(Ws::Binary(encode(&Message::Chunk { call }, &body).into())).await.expect("chunk");
                    socket.send(Ws::Binary(encode(&Message::End { call, error: None, trailers: Default::default() }, b"").into())).await.expect("end");
                }
            }
        }
    }
}

/// A number in [0, 1) from the node's key: a fixed spread without a random source.
fn rand_fraction(identity: &Identity) -> f64 {
    let key = identity.public_key().to_bytes();
    f64::from(u16::from_be_bytes([key[0], key[1]])) / 65_536.0
}

fn main() {
    infernet_service::install_tls_provider();
    let nodes = env_or("BENCH_NODES", 1_000) as usize;
    let seconds = env_or("BENCH_SECONDS", 60);
    let heartbeat = env_or("BENCH_HEARTBEAT", 15);
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("router.nsec");
    infernet_testkit::write_secret(&key_file, &Identity::generate().nsec());
    let port = free_port();
    let router = ChildGuard(
        Command::new(workspace_binary("infernet-router"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--link-heartbeat", &heartbeat.to_string()])
            .args(["--ratelimit-reqs-per-min", "1000000"])
            .args(["--max-links-per-source", "100000"])
            .arg("--key-file")
            .arg(&key_file)
            .arg("--database-url")
            .arg(format!("sqlite://{}", dir.path().join("router.db").display()))
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("infernet-router"),
    );
    wait_healthy(port, Duration::from_secs(20));
    let idle_rss = rss_kib(router.id());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (linked, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let url = format!("ws://127.0.0.1:{port}/api/v1/link");
    let started = Instant::now();
    runtime.block_on(async {
        for _ in 0..nodes {
            tokio::spawn(node(url.clone(), linked.clone(), requests.clone()));
        }
        while linked.load(Ordering::Relaxed) < nodes {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "only {} of {nodes} nodes linked in 120 s",
                linked.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let link_time = started.elapsed();
    let (cpu_before, requests_before, at) = (cpu_time(router.id()), requests.load(Ordering::Relaxed), Instant::now());
    runtime.block_on(async { tokio::time::sleep(Duration::from_secs(seconds)).await });
    let elapsed = at.elapsed();
    let cpu = (cpu_time(router.id()) - cpu_before).as_secs_f64() / elapsed.as_secs_f64();
    let served = requests.load(Ordering::Relaxed) - requests_before;
    let nodes_seen: serde_json::Value = runtime.block_on(async {
        reqwest::get(format!("http://127.0.0.1:{port}/api/v1/route?container=hello-world"))
            .await
            .expect("route")
            .json()
            .await
            .expect("json")
    });
    let candidates = nodes_seen["candidates"].as_array().map_or(0, Vec::len);
    println!(
        "link fleet: {nodes} nodes linked in {:.1} s, heartbeat every {heartbeat} s; over {:.0} s: router CPU {:.2} % of one core, RSS {:.1} MB (idle, no links: {:.1} MB); {served} requests over the links answered; /api/v1/route lists {candidates} candidates",
        link_time.as_secs_f64(),
        elapsed.as_secs_f64(),
        cpu * 100.0,
        rss_kib(router.id()) as f64 / 1024.0,
        idle_rss as f64 / 1024.0,
    );
    // The simulated nodes go first: they would take the router's exit for a broken link.
    runtime.shutdown_background();
    drop(router);
}

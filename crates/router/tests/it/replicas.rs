//! Several router replicas on one database: a node linked to one replica serves jobs submitted
//! to another (async, streams, cancels, its operator's admin requests), the call passing between
//! the replicas; when its link moves to another replica, jobs keep reaching it; a replica that
//! is gone leaves its nodes unlinked.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Body, routing};
use infernet_identity::{Identity, nip98};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{
    NodeProc, client,
    db::{Backend, TestDb},
    ended, eventually,
    gateway::{key_file, post},
    get, service, settings,
};

/// A replica: its URL, what stops it, and its end.
struct Replica {
    url: String,
    stop: CancellationToken,
    stopped: tokio::task::JoinHandle<()>,
    db: infernet_router::db::Db,
}

impl Replica {
    async fn start(key: &Identity, db: &TestDb) -> Self {
        let mut s = settings(&[]);
        s.gateway.key_file = key_file(key);
        s.gateway.dispatch_timeout = Duration::from_secs(5);
        s.gateway.link.heartbeat = Duration::from_secs(1);
        s.gateway.link.replica_refresh = Duration::from_millis(200);
        s.database = db.settings.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = infernet_router::start(s, listener).await.unwrap();
        let url = format!("http://{}", running.addr);
        let (stop, db) = (running.shutdown_token(), running.db.clone());
        let stopped = tokio::spawn(async move {
            running.wait().await.unwrap();
        });
        Self { url, stop, stopped, db }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.stopped.await.unwrap();
    }
}

/// A load balancer in front of the replicas: forwards each connection to the replica it points
/// at when the connection comes.
async fn balancer(to: Arc<Mutex<SocketAddr>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            let target = *to.lock().unwrap();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    port
}

fn addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

/// A container that streams `first\n`, then one more line per permit of `gate`, three in all.
async fn gated_stream(gate: Arc<Semaphore>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().route(
        "/service_output",
        routing::post(move || {
            let gate = gate.clone();
            async move {
                let lines = futures::stream::unfold(0, move |n| {
                    let gate = gate.clone();
                    async move {
                        if n == 3 {
                            return None;
                        }
                        if n > 0 {
                            gate.acquire().await.unwrap().forget();
                        }
                        Some((Ok::<_, Infallible>(format!("line {n}\n")), n + 1))
                    }
                });
                Body::from_stream(lines)
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// Linked nodes a replica lists (held by it or a peer), by key.
fn linked(nodes: &Value) -> Vec<String> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["address"].as_str().is_some_and(|a| a.starts_with("npub1")) && n["available"] == true)
        .map(|n| n["address"].as_str().unwrap().to_string())
        .collect()
}

async fn a_node_linked_to_one_replica_serves_jobs_submitted_to_another(backend: Backend) {
    let (key, operator) = (Identity::generate(), Identity::generate());
    let db = TestDb::new(backend);
    let (a, b) = (Replica::start(&key, &db).await, Replica::start(&key, &db).await);
    let to = Arc::new(Mutex::new(addr(&a.url)));
    let lb = balancer(to.clone()).await;
    let (fast, slow, gate) = (
        service(Duration::ZERO).await,
        service(Duration::from_secs(30)).await,
        Arc::new(Semaphore::new(0)),
    );
    let streaming = gated_stream(gate.clone()).await;
    let _node = NodeProc::start_with(
        json!([{"id": "x", "port": fast}, {"id": "slow", "port": slow}, {"id": "lines", "port": streaming}]),
        json!({"network": {"routers": [key.npub()], "url": format!("ws://127.0.0.1:{lb}/api/v1/link")},
               "operator": {"pubkeys": [operator.npub()]}}),
    );
    let nodes = eventually(format!("{}/api/v1/nodes", a.url), |v| linked(v).len() == 1).await;
    let npub = linked(&nodes)[0].clone();
    // B learns of the node from the database: a candidate of its chooser, by its key.
    eventually(format!("{}/api/v1/nodes", b.url), |v| linked(v) == vec![npub.clone()]).await;
    // A's row deleted (as a peer does when A was too slow to renew it): A writes it again.
    a.db.expire_links(i64::MAX).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while a.db.peer_links("nobody", 0, 10).await.unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "A never wrote its link's row again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(format!("{}/api/v1/nodes", b.url), |v| linked(v) == vec![npub.clone()]).await;
    let (_, route) = get(format!("{}/api/v1/route?container=x", b.url)).await;
    assert_eq!(route["candidates"][0]["node"], json!(npub), "{route}");

    // An async job submitted to B runs on the node through A; its result reads through either.
    let (status, placed) = post(
        format!("{}/api/v1/jobs", b.url),
        &json!({"containers": ["x"], "data": {"n": 1}}),
    )
    .await;
    assert_eq!((status, &placed["node"]), (200, &json!(npub)), "{placed}");
    let id = placed["id"].as_str().unwrap();
    for url in [&b.url, &a.url] {
        let done = ended(url, id).await;
        assert_eq!(
            (done["status"].as_str(), &done["result"]["output"]),
            (Some("succeeded"), &json!({"ok": true})),
            "{done}"
        );
    }

    // A stream through B: each line reaches the client before the container writes the next.
    let mut r = client()
        .post(format!("{}/api/v1/jobs/stream", b.url))
        .json(&json!({"containers": ["lines"], "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut text = String::new();
    let want = |text: &str, lines: usize| text.matches('\n').count() >= lines;
    for (lines, release) in [(2, true), (3, true), (4, false)] {
        while !want(&text, lines) {
            let chunk = tokio::time::timeout(Duration::from_secs(10), r.chunk())
                .await
                .expect("a line held back between the replicas")
                .unwrap()
                .expect("the stream ended early");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        if release {
            gate.add_permits(1);
        }
    }
    while let Some(chunk) = r.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let (stream_id, output) = text.split_once('\n').unwrap();
    assert_eq!(output, "line 0\nline 1\nline 2\n");
    assert_eq!(ended(&a.url, stream_id).await["status"], "succeeded");

    // A job cancelled through B: the node is told, through A.
    let (status, placed) = post(format!("{}/api/v1/jobs", b.url), &json!({"containers": ["slow"]})).await;
    assert_eq!(status, 200, "{placed}");
    let slow_id = placed["id"].as_str().unwrap();
    let r = client()
        .delete(format!("{}/api/v1/jobs/{slow_id}", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cancelled: Value = r.json().await.unwrap();
    assert_eq!(cancelled["node_said"], "stopped", "{cancelled}");

    // The operator's admin request through B reaches the node, which checks the signature.
    let relay = format!("{}/api/v1/link/{npub}/admin/status", b.url);
    let signed = nip98::authorization(&operator, "GET", &format!("infernet://{npub}/admin/status"), None);
    let r = client()
        .get(&relay)
        .header("authorization", signed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap().is_object());
    let r = client().get(&relay).send().await.unwrap();
    assert_eq!(r.status(), 401, "unsigned: refused by the node");

    // Only the replicas may call A's internal route: unsigned, or signed by another key, 401.
    let internal = format!("{}/api/v1/internal/link/{npub}/admin/status", a.url);
    let stranger = nip98::authorization(&Identity::generate(), "GET", &internal, None);
    for authorization in [String::new(), stranger] {
        let r = client()
            .get(&internal)
            .header("authorization", authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }

    // A stops: the node's link moves to B (the balancer now points there), and jobs submitted
    // to B, or to a replica started since, keep reaching it.
    *to.lock().unwrap() = addr(&b.url);
    a.stop().await;
    let (status, placed) = loop {
        let (status, placed) = post(
            format!("{}/api/v1/jobs", b.url),
            &json!({"containers": ["x"], "data": {}}),
        )
        .await;
        if status == 200 {
            break (status, placed);
        }
        assert_eq!(status, 503, "{placed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((status, &placed["node"]), (200, &json!(npub)), "{placed}");
    assert_eq!(
        ended(&b.url, placed["id"].as_str().unwrap()).await["status"],
        "succeeded"
    );
    let c = Replica::start(&key, &db).await;
    eventually(format!("{}/api/v1/nodes", c.url), |v| linked(v) == vec![npub.clone()]).await;
    let (status, placed) = post(
        format!("{}/api/v1/jobs", c.url),
        &json!({"containers": ["x"], "data": {}}),
    )
    .await;
    assert_eq!((status, &placed["node"]), (200, &json!(npub)), "{placed}");
    assert_eq!(
        ended(&c.url, placed["id"].as_str().unwrap()).await["status"],
        "succeeded"
    );
    drop((b.db, c.db));
}

mod a_node_linked_to_one_replica_serves_jobs_submitted_to_another {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_node_linked_to_one_replica_serves_jobs_submitted_to_another(super::Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_node_linked_to_one_replica_serves_jobs_submitted_to_another(super::Backend::Postgres).await
    }
}

/// A replica that is gone: its links count as unlinked once it refuses a connection, or once
/// its rows were not renewed in time.
#[tokio::test]
async fn the_nodes_of_a_replica_that_is_gone_are_unlinked() {
    let key = Identity::generate();
    let db = TestDb::new(Backend::Sqlite);
    let b = Replica::start(&key, &db).await;
    let dead = Identity::generate().npub();
    let announce = json!({"containers": [{"id": "x", "description": "", "external": true}], "pending": 0,
                          "pricing": {}, "open": true})
    .to_string();
    // A replica that died without releasing its link: nothing listens at its URL.
    let port = infernet_testkit::free_port();
    let holding = infernet_router::db::link_holders::Holding {
        node: &dead,
        replica: "dead-replica",
        replica_url: &format!("http://127.0.0.1:{port}"),
        announce: &announce,
        operators: "[]",
        // Renewed a minute ahead: it does not lapse during the test, only the refused connection
        // can unlink its node.
        now: infernet_router::db::now_ms() + 60_000,
    };
    b.db.hold_link(&holding).await.unwrap();
    eventually(format!("{}/api/v1/nodes", b.url), |v| linked(v) == vec![dead.clone()]).await;
    let (status, e) = post(
        format!("{}/api/v1/jobs", b.url),
        &json!({"containers": ["x"], "data": {}}),
    )
    .await;
    assert_eq!(status, 503, "{e}");
    assert!(e.to_string().contains("does not answer"), "{e}");
    // Refused: unlinked at once, and its row no longer counts.
    eventually(format!("{}/api/v1/nodes", b.url), |v| linked(v).is_empty()).await;
    let (status, _) = post(
        format!("{}/api/v1/jobs", b.url),
        &json!({"containers": ["x"], "data": {}}),
    )
    .await;
    assert_eq!(status, 503);

    // A row written long ago (its replica stopped renewing it) is not a candidate, and is deleted.
    let old = Identity::generate().npub();
    let stale = infernet_router::db::link_holders::Holding {
        node: &old,
        replica: "another-dead-replica",
        now: infernet_router::db::now_ms() - 60_000,
        ..holding
    };
    b.db.hold_link(&stale).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while b
        .db
        .peer_links("nobody", 0, 10)
        .await
        .unwrap()
        .iter()
        .any(|l| l.node == old)
    {
        assert!(std::time::Instant::now() < deadline, "the lapsed row is never deleted");
        let (_, nodes) = get(format!("{}/api/v1/nodes", b.url)).await;
        assert!(!linked(&nodes).contains(&old), "{nodes}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.stop().await;
}

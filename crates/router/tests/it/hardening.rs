//! The router as clients, hostile clients and hostile nodes use it, against in-process fake
//! nodes on 127.0.0.1: stable paging, registration limits and probing, the bounded `/resources`
//! fan-out, endless bodies, JSON errors, the default port.

use std::{
    collections::HashSet,
    convert::Infallible,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Json, Router, body::Body, response::IntoResponse, routing::get};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{client, eventually, keys, router, settings};

/// What a fake node's endpoint does.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// Answers at once.
    Fast,
    /// Never answers.
    Hang,
    /// Streams a body that never ends.
    Endless,
}

/// A body that never ends, 64 KiB at a time.
fn endless() -> Body {
    let chunk = axum::body::Bytes::from(vec![b' '; 64 * 1024]);
    Body::from_stream(futures::stream::repeat(Ok::<_, Infallible>(chunk)))
}

/// Serves `answer` for `/info` (with `containers`, its load changing within one load class from
/// probe to probe) and `resources` for `/resources`; every `/info` answered bumps `probes`.
async fn fake_node(containers: Value, info: Answer, resources: Answer, probes: Arc<watch::Sender<u64>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let key = listener.local_addr().unwrap().to_string();
    let calls = Arc::new(AtomicU64::new(0));
    let behave = |answer: Answer, body: Value| async move {
        match answer {
            Answer::Fast => Json(body).into_response(),
            Answer::Hang => std::future::pending().await,
            Answer::Endless => ([("content-type", "application/json")], endless()).into_response(),
        }
    };
    let app = Router::new()
        .route(
            "/info",
            get(move || {
                let pending = 100 + calls.fetch_add(1, Ordering::Relaxed) % 3;
                let body = json!({"version": "fake", "containers": containers.clone(),
                    "pending": {"offchain": pending, "onchain": 0}, "chain": {"enabled": false, "address": ""}});
                let probes = probes.clone();
                async move {
                    let answer = behave(info, body).await;
                    probes.send_modify(|n| *n += 1);
                    answer
                }
            }),
        )
        .route(
            "/resources",
            get(move || behave(resources, json!({"x": {"hardware": "fake"}}))),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    key
}

fn x() -> Value {
    json!([{"id": "x", "description": "", "external": true}])
}

fn probes() -> Arc<watch::Sender<u64>> {
    Arc::new(watch::Sender::new(0))
}

async fn register(url: &str, address: &str) -> (u16, Value) {
    let r = client()
        .post(format!("{url}/api/v1/register"))
        .bearer_auth("t0ken")
        .json(&json!({"address": address, "containers": x(), "pending": {"offchain": 0, "onchain": 0}}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn pages_with_offset_neither_overlap_nor_miss_a_node_across_probe_rounds() {
    let probed = probes();
    let mut listed = Vec::new();
    for _ in 0..30 {
        listed.push(fake_node(x(), Answer::Fast, Answer::Fast, probed.clone()).await);
    }
    let mut s = settings(&listed);
    s.probe.interval = Duration::from_millis(50);
    let url = router(s).await;
    eventually(format!("{url}/api/v1/ips?container=x&n=100"), |v| keys(v).len() == 30).await;
    let mut rounds = probed.subscribe();
    let mut seen = Vec::new();
    for page in 0..3 {
        let answer = super::get(format!("{url}/api/v1/ips?container=x&n=10&offset={}", page * 10)).await;
        seen.extend(keys(&answer.1));
        // Every node's load moved between pages (within its load class): two more rounds.
        let now = *rounds.borrow_and_update();
        rounds.wait_for(|n| *n >= now + 60).await.unwrap();
    }
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        (seen.len(), distinct.len()),
        (30, 30),
        "three pages of 10 should be the 30 nodes once each: {seen:?}"
    );
}

#[tokio::test]
async fn a_registered_node_is_handed_out_only_after_a_good_probe() {
    let mut s = settings(&[]);
    // One round at start, then none: only the probe of a newcomer can make it available.
    s.probe.interval = Duration::from_secs(3600);
    // Failed probes alone would not eject a node that was handed out: only never handing it out
    // keeps it away.
    s.hysteresis.leave_after = 100;
    let url = router(s).await;
    let closed = format!("127.0.0.1:{}", infernet_testkit::free_port());
    assert_eq!(register(&url, &closed).await.0, 200);
    let nodes = eventually(format!("{url}/api/v1/nodes"), |v| !v[0]["last_error"].is_null()).await;
    assert_eq!(nodes[0]["available"], false, "{nodes}");
    let ips = format!("{url}/api/v1/ips?container=x&n=10");
    assert!(
        keys(&super::get(ips.clone()).await.1).is_empty(),
        "a dead node was handed out"
    );
    // Registering again changes nothing.
    assert_eq!(register(&url, &closed).await.0, 200);
    assert!(keys(&super::get(ips.clone()).await.1).is_empty());

    let good = fake_node(x(), Answer::Fast, Answer::Fast, probes()).await;
    assert_eq!(register(&url, &good).await.0, 200);
    eventually(ips, |v| keys(v) == vec![good.clone()]).await;
}

#[tokio::test]
async fn registrations_are_capped_and_resources_answers_within_its_deadline() {
    let mut s = settings(&[]);
    s.registrations.max_registrations = 40;
    s.resources.deadline = Duration::from_millis(500);
    // More calls at once than hanging nodes: the fast ones all get their turn.
    s.resources.concurrency = 32;
    let url = router(s).await;
    let probed = probes();
    let (mut fast, mut slow) = (Vec::new(), Vec::new());
    for i in 0..40 {
        let answer = if i % 2 == 0 { Answer::Fast } else { Answer::Hang };
        let key = fake_node(x(), Answer::Fast, answer, probed.clone()).await;
        assert_eq!(register(&url, &key).await.0, 200);
        if answer == Answer::Fast {
            fast.push(key)
        } else {
            slow.push(key)
        }
    }
    let one_more = fake_node(x(), Answer::Fast, Answer::Fast, probed.clone()).await;
    let (status, body) = register(&url, &one_more).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("--max-registrations"),
        "{body}"
    );
    eventually(format!("{url}/api/v1/ips?container=x&n=100"), |v| keys(v).len() == 40).await;

    let started = Instant::now();
    let (status, resources) = super::get(format!("{url}/api/v1/resources")).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_millis(2000),
        "took {took:?} with a 500 ms deadline"
    );
    for key in &fast {
        assert_eq!(resources[key], json!({"x": {"hardware": "fake"}}), "{key}");
    }
    for key in &slow {
        let error = resources[key]["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("late"), "{key}: {}", resources[key]);
    }

    // Per source: a second router allowing two registrations from one address.
    let mut s = settings(&[]);
    s.registrations.max_per_source = 2;
    let url = router(s).await;
    assert_eq!(register(&url, &fast[0]).await.0, 200);
    assert_eq!(register(&url, &fast[1]).await.0, 200);
    let (status, body) = register(&url, &fast[2]).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1 already registered 2"),
        "{body}"
    );
}

#[tokio::test]
async fn a_node_with_an_endless_body_is_cut_off_and_healthy_nodes_stay_listed() {
    let hostile = fake_node(x(), Answer::Endless, Answer::Fast, probes()).await;
    let healthy = fake_node(x(), Answer::Fast, Answer::Endless, probes()).await;
    let mut s = settings(&[hostile.clone(), healthy.clone()]);
    // A timeout far longer than the test: only the byte limit can end the hostile probe.
    s.probe.timeout = Duration::from_secs(600);
    s.probe.max_body_bytes = 64 * 1024;
    s.resources.max_body_bytes = 64 * 1024;
    s.resources.deadline = Duration::from_secs(600);
    let url = router(s).await;
    let nodes = eventually(format!("{url}/api/v1/nodes"), |v| {
        v.as_array()
            .unwrap()
            .iter()
            .any(|n| n["address"] == hostile.as_str() && !n["last_error"].is_null())
    })
    .await;
    let hostile_view = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["address"] == hostile.as_str())
        .unwrap();
    assert!(
        hostile_view["last_error"]
            .as_str()
            .unwrap()
            .contains("/info answer larger than 65536 bytes"),
        "{hostile_view}"
    );
    for _ in 0..5 {
        let ips = eventually(format!("{url}/api/v1/ips?container=x&n=10"), |v| !keys(v).is_empty()).await;
        assert_eq!(keys(&ips), vec![healthy.clone()]);
    }
    // The healthy node's endless /resources is cut off too: the answer comes, without it.
    let started = Instant::now();
    let (status, resources) = super::get(format!("{url}/api/v1/resources")).await;
    assert_eq!((status, resources), (200, json!({})));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn containers_that_nodes_keep_internal_are_not_counted() {
    let p = probes();
    let a = fake_node(
        json!([{"id": "x", "description": "", "external": true}, {"id": "y", "description": "", "external": false}]),
        Answer::Fast,
        Answer::Fast,
        p.clone(),
    )
    .await;
    let b = fake_node(
        json!([{"id": "y", "description": "why", "external": true}, {"id": "z", "description": "", "external": false}]),
        Answer::Fast,
        Answer::Fast,
        p,
    )
    .await;
    let url = router(settings(&[a, b])).await;
    eventually(format!("{url}/api/v1/ips?container=y"), |v| keys(v).len() == 1).await;
    let (_, containers) = super::get(format!("{url}/api/v1/containers")).await;
    let mut containers = containers.as_array().unwrap().clone();
    containers.sort_by_key(|c| c["id"].as_str().unwrap().to_string());
    assert_eq!(
        containers,
        vec![
            json!({"id": "x", "count": 1, "description": ""}),
            json!({"id": "y", "count": 1, "description": "why"}),
        ]
    );
}

#[tokio::test]
async fn every_error_is_json() {
    let url = router(settings(&[])).await;
    let c = client();
    let check = |r: reqwest::Response, status: u16| async move {
        assert_eq!(r.status().as_u16(), status);
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("application/json"), "{ct}");
        let v: Value = r.json().await.unwrap();
        v["error"].as_str().unwrap().to_string()
    };
    let e = check(c.post(format!("{url}/api/v1/ips")).send().await.unwrap(), 405).await;
    assert!(e.contains("GET"), "{e}");
    check(c.put(format!("{url}/health")).send().await.unwrap(), 405).await;
    check(c.get(format!("{url}/nope")).send().await.unwrap(), 404).await;
    // The stream route (answered by the router's front, not the app) gives the same errors. A
    // heartbeat carries the registration token; a stream, no key (an unknown one is 401).
    for (route, bearer, size) in [
        ("/api/v1/register", Some("t0ken"), 2 << 20),
        ("/api/v1/jobs/stream", None, 5 << 20),
    ] {
        let mut request = c
            .post(format!("{url}{route}"))
            .header("content-type", "application/json")
            .body(vec![b' '; size]);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let e = check(request.send().await.unwrap(), 413).await;
        assert!(e.contains("larger than"), "{route}: {e}");
    }
    let r = c
        .post(format!("{url}/api/v1/jobs/stream"))
        .body("{")
        .send()
        .await
        .unwrap();
    let e = check(r, 400).await;
    assert!(e.contains("not JSON"), "{e}");
}

#[test]
fn the_router_listens_on_4100_by_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_infernet-router"))
        .arg("--help")
        .env_remove("PORT")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let port = help
        .lines()
        .skip_while(|l| !l.contains("--port"))
        .take(8)
        .collect::<String>();
    assert!(port.contains("[default: 4100]"), "{help}");
}

/// `/api/v1/register` is charged to the caller's rate limit like every other route: a source that
/// heartbeats faster than the limit is answered 429 before its heartbeat is read.
#[tokio::test]
async fn registration_is_rate_limited() {
    let mut s = settings(&[]);
    s.requests_per_minute = 3;
    let url = router(s).await;
    for i in 0..3 {
        let (status, body) = register(&url, &format!("127.0.0.1:{}", 20_000 + i)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = register(&url, "127.0.0.1:20003").await;
    assert_eq!(status, 429, "{body}");
    assert!(body["error"].as_str().unwrap().contains("too many requests"), "{body}");
}

/// `/api/v1/resources` holds at most `max_total_bytes` of nodes' answers in all: past it the
/// gathering stops and the other nodes are listed as over budget, however many nodes answer.
#[tokio::test]
async fn resources_answers_hold_a_total_byte_budget() {
    let mut s = settings(&[]);
    // One fake node's answer (`{"x":{"hardware":"fake"}}`) is 25 bytes: room for two.
    s.resources.max_total_bytes = 60;
    let url = router(s).await;
    let probed = probes();
    for _ in 0..6 {
        let key = fake_node(x(), Answer::Fast, Answer::Fast, probed.clone()).await;
        assert_eq!(register(&url, &key).await.0, 200);
    }
    eventually(format!("{url}/api/v1/ips?container=x&n=100"), |v| keys(v).len() == 6).await;
    let (status, resources) = super::get(format!("{url}/api/v1/resources")).await;
    assert_eq!(status, 200);
    let answers = resources.as_object().unwrap();
    assert_eq!(answers.len(), 6, "{resources}");
    let held = answers.values().filter(|v| v.get("x").is_some()).count();
    let over = answers
        .values()
        .filter(|v| v["error"].as_str().is_some_and(|e| e.starts_with("over budget")))
        .count();
    assert_eq!((held, over), (2, 4), "{resources}");
}

//! The gateway against real nodes: a job submitted once runs on a node the router chose, its
//! result reads back through the router, and only its client sees it.

use std::time::{Duration, Instant};

use infernet_identity::{Identity, nip98};
use serde_json::{Value, json};

use super::{NodeProc, client, ended, eventually, get, post_stream_x, router, service, settings, stream_x};

/// `key` in a key file of its own (mode 0600, as the router insists).
pub(super) fn key_file(key: &Identity) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = tempfile::tempdir().unwrap().keep().join("router.nsec");
    std::fs::write(&path, key.nsec()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A router whose key the nodes trust, and its URL.
async fn gateway_router(listed: &[String], key: &Identity) -> String {
    let mut s = settings(listed);
    s.gateway.key_file = key_file(key);
    s.gateway.dispatch_timeout = Duration::from_secs(5);
    router(s).await
}

/// Waits until the router hands out `n` nodes for `container`.
async fn serving(url: &str, container: &str, n: usize) {
    eventually(format!("{url}/api/v1/ips?container={container}&n=5"), |v| {
        v.as_array().is_some_and(|a| a.len() == n)
    })
    .await;
}

pub(super) async fn post(url: String, body: &Value) -> (u16, Value) {
    let r = client().post(url).json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_gateway_runs_jobs_on_chosen_nodes_and_answers_only_their_client() {
    let key = Identity::generate();
    let trust = json!({"network": {"routers": [key.npub()]}});
    let fast = service(Duration::ZERO).await;
    let slow = service(Duration::from_secs(30)).await;
    let a = NodeProc::start_with(
        json!([{"id": "x", "port": fast}, {"id": "slow", "port": slow}]),
        trust.clone(),
    );
    let b = NodeProc::start_with(json!([{"id": "x", "port": fast}]), trust.clone());
    // Serves `y` but does not trust the router: it refuses (401), it is not at fault.
    let c = NodeProc::start(json!([{"id": "y", "port": fast}]));
    let url = gateway_router(&[a.key(), b.key(), c.key()], &key).await;
    serving(&url, "x", 2).await;
    serving(&url, "y", 1).await;

    // Submit once; the node that took it answers the result through the router.
    let (status, placed) = post(
        format!("{url}/api/v1/jobs"),
        &json!({"containers": ["x"], "data": {"n": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{placed}");
    let id = placed["id"].as_str().unwrap().to_string();
    assert!([a.key(), b.key()].contains(&placed["node"].as_str().unwrap().to_string()));
    let done = ended(&url, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["output"], json!({"ok": true}), "{done}");
    assert_eq!(done["node"], placed["node"]);

    // The node filed the job under the client the router stated, not under the router's address
    // (which is also this test's): asked directly, it lists no job of ours.
    let node = placed["node"].as_str().unwrap();
    let (_, ours) = get(format!("http://{node}/api/jobs")).await;
    assert_eq!(
        ours,
        json!([]),
        "the node filed the gateway's job under the router's address"
    );
    // Nobody else can claim to be a router's client.
    let r = client()
        .post(format!("http://{node}/api/jobs"))
        .header("x-infernet-client", "10.9.8.7")
        .json(&json!({"containers": ["x"], "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Another client (a signed one) does not see the job.
    let stranger = Identity::generate();
    let job_url = format!("{url}/api/v1/jobs/{id}");
    let auth = nip98::authorization(&stranger, "GET", &job_url, None);
    let r = client()
        .get(&job_url)
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A forged signature is refused, not treated as anonymous.
    let r = client()
        .get(&job_url)
        .header("authorization", "Nostr e30=")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The same Idempotency-Key answers the first job.
    let idem = |n: u32| {
        client()
            .post(format!("{url}/api/v1/jobs"))
            .header("idempotency-key", "order-17")
            .json(&json!({"containers": ["x"], "data": {"n": n}}))
            .send()
    };
    let first: Value = idem(1).await.unwrap().json().await.unwrap();
    let again: Value = idem(2).await.unwrap().json().await.unwrap();
    assert_eq!(first["id"], again["id"]);

    // The caller's own jobs, newest first, by page; nobody else's.
    let (status, page) = get(format!("{url}/api/v1/jobs?limit=1&container=x")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["jobs"][0]["id"], first["id"], "{page}");
    let next = page["next"].as_str().unwrap();
    let (_, older) = get(format!("{url}/api/v1/jobs?limit=1&after={next}")).await;
    assert_eq!(older["jobs"][0]["id"].as_str(), Some(id.as_str()), "{older}");
    let list_url = format!("{url}/api/v1/jobs");
    let auth = nip98::authorization(&stranger, "GET", &list_url, None);
    let theirs: Value = client()
        .get(&list_url)
        .header("authorization", auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs, json!({"jobs": [], "next": null}));
    assert_eq!(get(format!("{url}/api/v1/jobs?status=done")).await.0, 400);

    // Errors: the field named, 503 saying why, refusals passed over.
    let (status, e) = post(format!("{url}/api/v1/jobs"), &json!({"data": {}})).await;
    assert_eq!(
        (status, e["error"].as_str().unwrap().starts_with("containers:")),
        (400, true),
        "{e}"
    );
    let (status, e) = post(
        format!("{url}/api/v1/jobs"),
        &json!({"containers": ["x"], "max_price": "cheap"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().starts_with("max_price:"), "{e}");
    for path in ["/api/v1/jobs", "/api/v1/jobs/stream"] {
        let (status, e) = post(format!("{url}{path}"), &json!({"containers": ["x"], "deadline_s": 0})).await;
        assert_eq!(status, 400, "{path}: {e}");
        assert!(e["error"].as_str().unwrap().starts_with("deadline_s:"), "{e}");
    }
    let (status, e) = post(format!("{url}/api/v1/jobs"), &json!({"containers": ["nope"]})).await;
    assert_eq!(
        (status, e["error"].as_str().unwrap()),
        (503, "no available node serves nope")
    );
    let (status, e) = post(
        format!("{url}/api/v1/jobs"),
        &json!({"containers": ["x"], "requirements": {"gpus": 1}}),
    )
    .await;
    assert_eq!(status, 503);
    assert!(e["error"].as_str().unwrap().contains("2 by hardware"), "{e}");
    let (status, e) = post(format!("{url}/api/v1/jobs"), &json!({"containers": ["y"]})).await;
    assert_eq!(status, 503);
    assert!(e["error"].as_str().unwrap().contains("refused: HTTP 401"), "{e}");

    // /route explains the choice.
    let (status, route) = get(format!("{url}/api/v1/route?container=x&gpus=1")).await;
    assert_eq!(status, 200);
    assert_eq!(route["candidates"], json!([]));
    assert!(
        route["excluded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["filter"] == "hardware" && e["reason"].as_str().unwrap().contains("GPU")),
        "{route}"
    );
    let (_, route) = get(format!("{url}/api/v1/route?container=x")).await;
    assert_eq!(route["candidates"].as_array().unwrap().len(), 2, "{route}");

    // A stream: the router's id first, then the node's output as it comes.
    let stream_id = stream_x(&url).await;
    let streamed = ended(&url, &stream_id).await;
    assert_eq!(streamed["status"], "succeeded", "{streamed}");

    // A batch: in input order, a bad item fails alone, the jobs spread over both nodes.
    let mut items: Vec<Value> = (0..20)
        .map(|n| json!({"containers": ["x"], "data": {"n": n}}))
        .collect();
    items.push(json!({"containers": []}));
    let (status, answers) = post(format!("{url}/api/v1/jobs/batch"), &json!(items)).await;
    assert_eq!(status, 200, "{answers}");
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 21);
    assert!(
        answers[20]["error"].as_str().unwrap().starts_with("[20].containers"),
        "{}",
        answers[20]
    );
    let failed: Vec<&Value> = answers[..20].iter().filter(|a| a["node"].is_null()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let nodes: std::collections::BTreeSet<&str> = answers[..20].iter().map(|a| a["node"].as_str().unwrap()).collect();
    assert_eq!(nodes.len(), 2, "{answers:?}");

    // Cancel a job that has not finished; its late answer is not taken.
    let (_, slow_job) = post(format!("{url}/api/v1/jobs"), &json!({"containers": ["slow"]})).await;
    let slow_id = slow_job["id"].as_str().unwrap_or_else(|| panic!("{slow_job}"));
    let r = client()
        .delete(format!("{url}/api/v1/jobs/{slow_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cancelled: Value = r.json().await.unwrap();
    assert_eq!(
        cancelled["node_said"], "stopped",
        "the node is told and stops the job: {cancelled}"
    );
    assert_eq!(
        get(format!("{url}/api/v1/jobs/{slow_id}")).await.1["status"],
        "cancelled"
    );
    let r = client()
        .delete(format!("{url}/api/v1/jobs/{slow_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(
        client()
            .get(format!("{url}/api/v1/jobs/unknown"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    drop(c);
}

/// A node's refused router dispatches are limited by themselves (they skip the rate limit, which
/// charges the stated client): past 30 a minute from one address, the next is refused (429)
/// before it is read, on the stream route too; that address's unrouted requests are served.
#[tokio::test]
async fn refused_dispatches_are_limited_per_address() {
    let key = Identity::generate();
    let fast = service(Duration::ZERO).await;
    let node = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"network": {"routers": [key.npub()]}}),
    );
    let job = json!({"containers": ["x"], "data": {}});
    let forged = |route: &'static str| {
        client()
            .post(format!("http://{}{route}", node.key()))
            .header("x-infernet-client", "10.9.8.7")
            .json(&job)
            .send()
    };
    for _ in 0..30 {
        assert_eq!(forged("/api/jobs").await.unwrap().status(), 401);
    }
    for route in ["/api/jobs", "/api/jobs/stream"] {
        let r = forged(route).await.unwrap();
        assert_eq!(r.status(), 429, "{route}");
        assert!(r.headers().contains_key("retry-after"), "{route}");
    }
    let r = client()
        .post(format!("http://{}/api/jobs", node.key()))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn a_node_that_died_is_passed_over_and_counted() {
    let key = Identity::generate();
    let trust = json!({"network": {"routers": [key.npub()]}});
    let fast = service(Duration::ZERO).await;
    let mut a = NodeProc::start_with(json!([{"id": "x", "port": fast}]), trust.clone());
    let b = NodeProc::start_with(json!([{"id": "x", "port": fast}]), trust);
    let mut s = settings(&[a.key(), b.key()]);
    // The prober would take it out after two rounds; slow it so the gateway meets the dead node.
    s.probe.interval = Duration::from_secs(60);
    s.gateway.key_file = key_file(&key);
    let url = router(s).await;
    serving(&url, "x", 2).await;
    a.kill();
    // Jobs keep landing on the live node; each time the dead one is tried first, it is counted,
    // until it ranks last.
    for n in 0.. {
        let (status, placed) = post(
            format!("{url}/api/v1/jobs"),
            &json!({"containers": ["x"], "data": {"n": n}}),
        )
        .await;
        assert_eq!(status, 200, "{placed}");
        assert_eq!(placed["node"], b.key());
        let (_, route) = get(format!("{url}/api/v1/route?container=x")).await;
        let order: Vec<&str> = route["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["node"].as_str().unwrap())
            .collect();
        if order == [b.key().as_str(), a.key().as_str()] {
            break;
        }
        assert!(n < 40, "the dead node is never counted: {route}");
    }
}

/// Two routers on one database are one router to their clients: a job submitted through one reads
/// back through the other, a client's repeated `Idempotency-Key` runs one job whichever router it
/// reaches, and a router started later on the database (a restart) answers what was answered.
async fn routers_on_one_database_are_one_router(backend: super::db::Backend) {
    let key = Identity::generate();
    let fast = service(Duration::ZERO).await;
    let node = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"network": {"routers": [key.npub()]}}),
    );
    let db = super::db::TestDb::new(backend);
    let replica = || {
        let mut s = settings(&[node.key()]);
        s.gateway.key_file = key_file(&key);
        s.database = db.settings.clone();
        router(s)
    };
    let (one, two) = (replica().await, replica().await);
    for url in [&one, &two] {
        serving(url, "x", 1).await;
    }
    let (status, placed) = post(
        format!("{one}/api/v1/jobs"),
        &json!({"containers": ["x"], "data": {"n": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{placed}");
    let id = placed["id"].as_str().unwrap();
    let done = ended(&two, id).await;
    assert_eq!(
        (done["status"].as_str(), &done["result"]["output"]),
        (Some("succeeded"), &json!({"ok": true}))
    );

    // The same key through both routers at once: one job.
    let submit = |url: String| async move {
        client()
            .post(format!("{url}/api/v1/jobs"))
            .header("idempotency-key", "once")
            .json(&json!({"containers": ["x"], "data": {"n": 2}}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let (a, b) = tokio::join!(submit(one.clone()), submit(two.clone()));
    assert_eq!(a["id"], b["id"], "{a} {b}");

    // A router started anew on the database knows both jobs.
    let three = replica().await;
    assert_eq!(ended(&three, id).await["status"], "succeeded");
    assert_eq!(ended(&three, a["id"].as_str().unwrap()).await["status"], "succeeded");
}

mod routers_on_one_database_are_one_router {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::routers_on_one_database_are_one_router(super::super::db::Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::routers_on_one_database_are_one_router(super::super::db::Backend::Postgres).await
    }
}

/// A receiver of callbacks on loopback: its URL, and the bodies it was posted, in order.
async fn receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                tx.send(body).unwrap();
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

#[tokio::test]
async fn a_callback_is_posted_once_the_job_ended_and_taken_over_when_its_router_stopped() {
    let key = Identity::generate();
    let fast = service(Duration::ZERO).await;
    let node = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"network": {"routers": [key.npub()]}}),
    );
    let (hook, mut posted) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let database = infernet_router::db::DbSettings::new(format!("sqlite://{}", dir.path().join("r.db").display()));
    let gateway_settings = |private: bool| {
        let mut s = settings(&[node.key()]);
        s.gateway.key_file = key_file(&key);
        s.gateway.callbacks_to_private = private;
        s.gateway.callback_poll = Duration::from_millis(50);
        s.gateway.callback_sweep = Duration::from_millis(100);
        s.database = database.clone();
        s
    };
    let url = router(gateway_settings(true)).await;
    serving(&url, "x", 1).await;
    let (placed, body) = with_callback(&url, &hook, &mut posted).await;
    assert_eq!(body["id"], placed["id"]);
    assert_eq!(
        (body["status"].as_str(), &body["result"]["output"]),
        (Some("succeeded"), &json!({"ok": true}))
    );
    assert_eq!(
        get(format!("{url}/api/v1/jobs/{}", placed["id"].as_str().unwrap()))
            .await
            .1["status"],
        "succeeded"
    );

    // By default a router calls only public addresses back.
    let strict = router(gateway_settings(false)).await;
    let (status, e) = post(
        format!("{strict}/api/v1/jobs"),
        &json!({"containers": ["x"], "callback_url": hook}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("callback_url: names a loopback"),
        "{e}"
    );

    // A job whose watching router died (its lease ran out) is taken over by a router on the
    // database, and its callback posted.
    let r = client()
        .post(format!("http://{}/api/jobs", node.key()))
        .json(&json!({"containers": ["x"], "data": {}}))
        .send()
        .await
        .unwrap();
    let node_job = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let db = infernet_router::db::Db::open(&database).await.unwrap();
    let now = infernet_router::db::now_ms();
    let containers = vec!["x".to_string()];
    let gone = infernet_router::db::jobs::Lease {
        owner: "a router that died",
        now,
        duration: Duration::ZERO,
    };
    db.insert_job(&infernet_router::db::jobs::NewJob {
        id: "orphan",
        client: "addr:someone",
        idempotency_key: None,
        containers: &containers,
        callback_url: Some(&hook),
        now,
    })
    .await
    .unwrap();
    let claimed = db.claim_job("orphan", &gone).await.unwrap().unwrap();
    assert!(
        db.set_job_node("orphan", claimed.attempt, &node.key(), Some(&node_job), &gone)
            .await
            .unwrap()
    );
    let body = tokio::time::timeout(Duration::from_secs(10), posted.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (body["id"].as_str(), body["status"].as_str()),
        (Some("orphan"), Some("succeeded"))
    );
    // Once: nothing more arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), posted.recv())
            .await
            .is_err()
    );
}

/// A node's 413 is its own body limit: the job goes to a node that takes it, and only when no
/// node does is the client answered 413 (not a 503 to retry).
#[tokio::test]
async fn a_job_too_large_for_one_node_goes_to_another_and_for_all_is_413() {
    let key = Identity::generate();
    let fast = service(Duration::ZERO).await;
    let network = json!({"routers": [key.npub()]});
    let small = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"network": network, "server": {"max_body_size": 2048}}),
    );
    let big = NodeProc::start_with(json!([{"id": "x", "port": fast}]), json!({"network": network}));
    let job = json!({"containers": ["x"], "data": {"text": "a".repeat(8192)}});
    let mut s = settings(&[small.key(), big.key()]);
    s.gateway.key_file = key_file(&key);
    let url = router(s).await;
    serving(&url, "x", 2).await;
    for _ in 0..4 {
        let (status, placed) = post(format!("{url}/api/v1/jobs"), &job).await;
        assert_eq!(
            (status, placed["node"].as_str()),
            (200, Some(big.key().as_str())),
            "{placed}"
        );
    }
    let mut s = settings(&[small.key()]);
    s.gateway.key_file = key_file(&key);
    let only_small = router(s).await;
    serving(&only_small, "x", 1).await;
    let (status, e) = post(format!("{only_small}/api/v1/jobs"), &job).await;
    assert_eq!(status, 413, "{e}");
    assert!(e["error"].as_str().unwrap().contains("HTTP 413"), "{e}");
}

/// A node that says "running" for ever does not hold a watcher for ever: past `max_running` the
/// job fails, its callback says why, and the node is told to stop it.
#[tokio::test]
async fn a_watched_job_that_runs_too_long_fails_and_its_node_is_told_to_stop() {
    let key = Identity::generate();
    let slow = service(Duration::from_secs(60)).await;
    let node = NodeProc::start_with(
        json!([{"id": "x", "port": slow}]),
        json!({"network": {"routers": [key.npub()]}}),
    );
    let (hook, mut posted) = receiver().await;
    let mut s = settings(&[node.key()]);
    s.gateway.key_file = key_file(&key);
    s.gateway.callbacks_to_private = true;
    s.gateway.callback_poll = Duration::from_millis(50);
    s.gateway.max_running = Duration::from_millis(500);
    let url = router(s).await;
    serving(&url, "x", 1).await;
    let (placed, body) = with_callback(&url, &hook, &mut posted).await;
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("still running after"),
        "{body}"
    );
    // The node stopped it: its own result, read through the router, says so.
    let job = get(format!("{url}/api/v1/jobs/{}", placed["id"].as_str().unwrap()))
        .await
        .1;
    assert_eq!(
        (job["status"].as_str(), job["result"]["error"].as_str()),
        (Some("failed"), Some("cancelled by the client")),
        "{job}"
    );
}

/// Submits a job of `x` with `hook` as its callback through the router at `url`: its placement,
/// and the callback's body once `posted` has it.
async fn with_callback(
    url: &str,
    hook: &str,
    posted: &mut tokio::sync::mpsc::UnboundedReceiver<Value>,
) -> (Value, Value) {
    let (status, placed) = post(
        format!("{url}/api/v1/jobs"),
        &json!({"containers": ["x"], "data": {}, "callback_url": hook}),
    )
    .await;
    assert_eq!(status, 200, "{placed}");
    let body = tokio::time::timeout(Duration::from_secs(10), posted.recv())
        .await
        .unwrap()
        .unwrap();
    (placed, body)
}

/// A container service answering `{"seen": <the data it was given>}`.
async fn echo() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/service_output",
        axum::routing::post(|axum::Json(input): axum::Json<Value>| async move {
            axum::Json(json!({"seen": input["data"]}))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test]
async fn a_pipeline_no_node_serves_whole_runs_its_stages_on_several_nodes() {
    let key = Identity::generate();
    let trust = json!({"network": {"routers": [key.npub()]}});
    let port = echo().await;
    let a = NodeProc::start_with(json!([{"id": "first", "port": port}]), trust.clone());
    let b = NodeProc::start_with(json!([{"id": "second", "port": port}]), trust);
    let url = gateway_router(&[a.key(), b.key()], &key).await;
    serving(&url, "second", 1).await;
    serving(&url, "first", 1).await;
    let (status, placed) = post(
        format!("{url}/api/v1/jobs"),
        &json!({"containers": ["first", "second"], "data": {"n": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{placed}");
    assert_eq!(placed["node"], a.key());
    let done = ended(&url, placed["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["node"], b.key());
    assert_eq!(done["result"]["output"], json!({"seen": {"seen": {"n": 1}}}), "{done}");
    // A stage nobody serves: 503, as for a single container.
    let (status, e) = post(format!("{url}/api/v1/jobs"), &json!({"containers": ["first", "third"]})).await;
    assert_eq!(status, 503, "{e}");
}

#[tokio::test]
async fn nodes_are_compared_on_the_latency_of_the_containers_asked_for() {
    let key = Identity::generate();
    let trust = json!({"network": {"routers": [key.npub()]}});
    let (fast, slow) = (service(Duration::ZERO).await, service(Duration::from_millis(150)).await);
    // Each node is fast at one container and slow at the other: overall they are alike.
    let a = NodeProc::start_with(
        json!([{"id": "x", "port": fast}, {"id": "y", "port": slow}]),
        trust.clone(),
    );
    let b = NodeProc::start_with(json!([{"id": "x", "port": slow}, {"id": "y", "port": fast}]), trust);
    let url = gateway_router(&[a.key(), b.key()], &key).await;
    eventually(format!("{url}/api/v1/ips?container=x&container=y&n=5"), |v| {
        v.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    let first = |container: &'static str| {
        let url = url.clone();
        async move {
            let (_, route) = get(format!("{url}/api/v1/route?container={container}")).await;
            route["candidates"][0]["node"].as_str().unwrap().to_string()
        }
    };
    // Streams measure latency; run them until each container has been timed on both nodes.
    for n in 0.. {
        for container in ["x", "y"] {
            let r = client()
                .post(format!("{url}/api/v1/jobs/stream"))
                .json(&json!({"containers": [container], "data": {}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap();
        }
        if first("x").await == a.key() && first("y").await == b.key() {
            break;
        }
        assert!(n < 40, "the ranking never followed the per-container latency");
    }
}

#[tokio::test]
async fn every_job_a_node_ran_is_a_ledger_row_priced_by_its_pricing() {
    let key = Identity::generate();
    let operator = Identity::generate();
    let slowish = service(Duration::from_millis(300)).await;
    let node = NodeProc::start_with(
        json!([{"id": "x", "port": slowish}]),
        json!({"network": {"routers": [key.npub()]}, "operator": {"pubkeys": [operator.npub()]}}),
    );
    // The provider prices x at 0.01 per job plus 0.5 per second.
    let settings_url = format!("http://{}/admin/settings", node.key());
    let body = json!({"pricing": {"x": {"per_job": 0.01, "per_second": 0.5, "unit": "USD"}}}).to_string();
    let auth = nip98::authorization(&operator, "PUT", &settings_url, Some(body.as_bytes()));
    let r = client()
        .put(&settings_url)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let dir = tempfile::tempdir().unwrap();
    let database = infernet_router::db::DbSettings::new(format!("sqlite://{}", dir.path().join("r.db").display()));
    let mut s = settings(&[node.key()]);
    s.gateway.key_file = key_file(&key);
    s.database = database.clone();
    let url = router(s).await;
    // Served once the prober has read the price.
    eventually(format!("{url}/api/v1/route?container=x"), |v| {
        v["candidates"][0]["price"].as_f64().is_some_and(|p| p > 0.01)
    })
    .await;
    let id = stream_x(&url).await;
    let db = infernet_router::db::Db::open(&database).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let row = loop {
        let rows = db.ledger_of_node(&node.key(), 0, i64::MAX, 10).await.unwrap();
        if let Some(row) = rows.into_iter().find(|r| r.job_id == id) {
            break row;
        }
        assert!(std::time::Instant::now() < deadline, "no ledger row for {id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (row.outcome.as_str(), row.containers.clone()),
        ("succeeded", vec!["x".to_string()])
    );
    assert!(row.duration_ms >= 300, "{row:?}");
    let expected = 0.01 + 0.5 * row.duration_ms as f64 / 1000.0;
    assert!((row.price.unwrap() - expected).abs() < 1e-9, "{row:?}");
    assert_eq!(row.unit.as_deref(), Some("USD"));
    assert!(row.client.starts_with("addr:"), "clients appear as hashes: {row:?}");
}

#[tokio::test]
async fn each_item_of_a_batch_costs_a_request_of_the_rate_limit() {
    let key = Identity::generate();
    let fast = service(Duration::ZERO).await;
    let node = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"network": {"routers": [key.npub()]}}),
    );
    let mut s = settings(&[node.key()]);
    s.gateway.key_file = key_file(&key);
    s.requests_per_minute = 5;
    let url = router(s).await;
    // Waiting for the node costs no request of the jobs' bucket.
    serving(&url, "x", 1).await;
    let items: Vec<Value> = (0..8).map(|n| json!({"containers": ["x"], "data": {"n": n}})).collect();
    let (status, answers) = post(format!("{url}/api/v1/jobs/batch"), &json!(items)).await;
    assert_eq!(status, 200, "{answers}");
    let answers = answers.as_array().unwrap();
    let ran = answers.iter().filter(|a| a["id"].is_string()).count();
    let limited = answers
        .iter()
        .filter(|a| a["error"].as_str().is_some_and(|e| e.contains("rate limit")))
        .count();
    // The batch request itself and items 1 to 4 fill the 5 a minute; item 0 rides on the request.
    assert_eq!((ran, limited), (5, 3), "{answers:?}");
    assert!(answers[7]["error"].is_string());
}

#[tokio::test]
async fn a_node_that_goes_silent_mid_stream_is_cut_and_the_job_recorded_failed() {
    let key = Identity::generate();
    // Its node sends the id line at once, then nothing for 30 s.
    let silent = service(Duration::from_secs(30)).await;
    let node = NodeProc::start_with(
        json!([{"id": "x", "port": silent}]),
        json!({"network": {"routers": [key.npub()]}}),
    );
    let mut s = settings(&[node.key()]);
    s.gateway.key_file = key_file(&key);
    s.gateway.stream_idle = Duration::from_millis(300);
    let url = router(s).await;
    serving(&url, "x", 1).await;
    let started = Instant::now();
    let mut r = post_stream_x(&url).await;
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    let id = String::from_utf8_lossy(&first).trim().to_string();
    // The body ends abnormally after the idle window, not after the node's 30 s.
    loop {
        match r.chunk().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended as if whole"),
            Err(_) => break,
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let job = ended(&url, &id).await;
    assert_eq!(job["status"], "failed", "{job}");
}

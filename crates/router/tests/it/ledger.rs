//! Clients, quotas, the ledger and receipts, on SQLite and PostgreSQL: what a client with an API
//! key, a provider reading its earnings and an operator checking receipts would see.

use std::time::Duration;

use infernet_identity::{Identity, nip98};
use infernet_router::{
    db::{
        Db,
        ledger::{DaySum, LedgerRow, Whose},
    },
    keys,
};
use serde_json::{Value, json};

use super::{
    NodeProc, client,
    db::{Backend, TestDb},
    eventually, post_stream_x, router, service, settings,
};

on_both!(
    a_quota_refuses_the_next_job_across_two_routers,
    a_quota_holds_under_concurrent_replicas,
    a_receipt_is_kept_with_its_row_and_a_forged_one_is_detected,
    a_stream_ends_with_a_verified_receipt_and_a_forged_one_is_flagged,
    earnings_sum_what_the_rows_say_across_a_month_boundary,
    day_sums_answer_what_the_rows_say_before_and_after_retention,
    an_operator_sees_only_their_nodes,
);

/// `key` in a key file of its own (mode 0600, as the router insists).
fn key_file(key: &Identity) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = tempfile::tempdir().unwrap().keep().join("router.nsec");
    std::fs::write(&path, key.nsec()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Waits, when the current minute is nearly over, for the next one: a test that counts a
/// per-minute quota must not see its window turn.
async fn early_in_a_minute() {
    let into = infernet_router::db::now_ms().rem_euclid(60_000);
    if into > 45_000 {
        tokio::time::sleep(Duration::from_millis((60_000 - into + 100) as u64)).await;
    }
}

async fn issue(db: &Db, per_minute: Option<i64>, per_day: Option<i64>) -> (String, String) {
    let out = keys::run(
        db,
        keys::Command::Add {
            per_minute,
            per_day,
            label: Some("test".into()),
        },
        infernet_router::db::now_ms(),
    )
    .await
    .unwrap();
    (
        out["key"].as_str().unwrap().to_string(),
        out["id"].as_str().unwrap().to_string(),
    )
}

async fn submit(url: &str, key: &str) -> reqwest::Response {
    submit_to(url, "/api/v1/jobs", key).await
}

async fn submit_to(url: &str, route: &str, key: &str) -> reqwest::Response {
    client()
        .post(format!("{url}{route}"))
        .bearer_auth(key)
        .json(&json!({"containers": ["x"], "data": {}}))
        .send()
        .await
        .unwrap()
}

/// A key with a quota of 3 jobs a minute: two routers on one database admit 3 between them (one a
/// stream), the 4th is refused with 429 and `Retry-After`, a stream too; the key's holder lists
/// its own 3 jobs; a revoked or made-up key is refused with 401, on either route.
async fn a_quota_refuses_the_next_job_across_two_routers(backend: Backend) {
    let router_key = Identity::generate();
    let fast = service(Duration::ZERO).await;
    let node = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"network": {"routers": [router_key.npub()]}}),
    );
    let t = TestDb::new(backend);
    let db = Db::open(&t.settings).await.unwrap();
    let (key, id) = issue(&db, Some(3), Some(1000)).await;
    let replica = || {
        let mut s = settings(&[node.key()]);
        s.gateway.key_file = key_file(&router_key);
        s.database = t.settings.clone();
        // The address limit is low: a key holder is held to its quota instead.
        s.requests_per_minute = 2;
        router(s)
    };
    let (one, two) = (replica().await, replica().await);
    for url in [&one, &two] {
        eventually(format!("{url}/api/v1/route?container=x"), |v| {
            v["candidates"].as_array().is_some_and(|c| c.len() == 1)
        })
        .await;
    }
    early_in_a_minute().await;
    // The stream route is answered by the router's front, without the app's layers: the key is
    // checked and charged there too.
    for (url, route) in [
        (&one, "/api/v1/jobs"),
        (&two, "/api/v1/jobs/stream"),
        (&one, "/api/v1/jobs"),
    ] {
        let r = submit_to(url, route, &key).await;
        let status = r.status();
        // Read to its end: the stream's job ends whole.
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "{text}");
    }
    let stream = submit_to(&one, "/api/v1/jobs/stream", &key).await;
    assert_eq!(stream.status(), 429, "{}", stream.text().await.unwrap());
    let refused = submit(&two, &key).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("3 jobs per minute"), "{body}");
    assert_eq!(body["retry_after"], retry);

    // Reading is not charged; the key's holder sees its own jobs, filed under the key's id
    // (listed through the replica that ran the stream: its row may not be committed yet, and a
    // replica's listing commits its own rows first).
    let list: Value = client()
        .get(format!("{two}/api/v1/jobs"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 3, "{list}");
    let anonymous: Value = client()
        .get(format!("{one}/api/v1/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(anonymous["jobs"].as_array().unwrap().len(), 0, "{anonymous}");

    let listed = keys::run(&db, keys::Command::List, infernet_router::db::now_ms())
        .await
        .unwrap();
    assert_eq!(listed[0]["used_this_minute"], 3, "{listed}");
    keys::run(&db, keys::Command::Revoke { id }, infernet_router::db::now_ms())
        .await
        .unwrap();
    for bad in [key.as_str(), "ik_made_up"] {
        for route in ["/api/v1/jobs", "/api/v1/jobs/stream"] {
            let r = submit_to(&one, route, bad).await;
            assert_eq!(r.status(), 401, "{route}");
            let body: Value = r.json().await.unwrap();
            assert!(body["error"].as_str().unwrap().contains("unknown or revoked"), "{body}");
        }
    }
}

/// Two pools on one database (two router replicas) charging a key with a quota of 5 at once, 40
/// times: exactly 5 are admitted; a refused job counts nothing, so the day's count is 5 too.
async fn a_quota_holds_under_concurrent_replicas(backend: Backend) {
    let t = TestDb::new(backend);
    let (a, b) = (
        Db::open(&t.settings).await.unwrap(),
        Db::open(&t.settings).await.unwrap(),
    );
    let (key, id) = issue(&a, Some(5), Some(100)).await;
    let keyed = keys::check(&a, &key).await.unwrap();
    let now = 1_800_000_000_000 + 1_000;
    let charges = (0..40).map(|i| {
        let db = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { keys::charge(&db, &keyed, now).await.is_ok() }
    });
    let admitted = futures::future::join_all(charges)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    assert_eq!(admitted, 5);
    assert_eq!(a.api_key_usage(&id, now).await.unwrap(), (5, 5));
    // The next minute admits again, up to the day's quota.
    assert!(keys::charge(&b, &keyed, now + 60_000).await.is_ok());
    assert_eq!(a.api_key_usage(&id, now + 60_000).await.unwrap(), (1, 6));
}

/// A node that trusts `router` and whose operator is `operator`, pricing x at 0.01 per job plus
/// 0.5 per second, behind a container that takes `delay`.
async fn priced_node(router: &Identity, operator: &Identity, delay: Duration) -> NodeProc {
    priced_node_with(router, operator, delay, json!({})).await
}

/// [`priced_node`] with more top-level config keys.
async fn priced_node_with(router: &Identity, operator: &Identity, delay: Duration, extra: Value) -> NodeProc {
    let port = service(delay).await;
    let mut config = json!({"network": {"routers": [router.npub()]}, "operator": {"pubkeys": [operator.npub()]}});
    for (k, v) in extra.as_object().into_iter().flatten() {
        config[k] = v.clone();
    }
    let node = NodeProc::start_with(json!([{"id": "x", "port": port}]), config);
    let url = format!("http://{}/admin/settings", node.key());
    let body = json!({"pricing": {"x": {"per_job": 0.01, "per_second": 0.5, "unit": "USD"}}}).to_string();
    let auth = nip98::authorization(operator, "PUT", &url, Some(body.as_bytes()));
    let r = client()
        .put(&url)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    node
}

/// The node's key, from its signed `/identity`.
async fn node_key(node: &NodeProc) -> infernet_identity::PublicKey {
    let text = client()
        .get(format!("http://{}/identity", node.key()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    infernet_identity::statement::verify(&text, "infernet-node", infernet_identity::unix_now(), 60)
        .unwrap()
        .signer
}

/// Submits a job of container x and reads it back until it ended; its id.
async fn run_job(url: &str, auth: Option<&str>) -> String {
    let mut r = client().post(format!("{url}/api/v1/jobs"));
    if let Some(key) = auth {
        r = r.bearer_auth(key);
    }
    let placed: Value = r
        .json(&json!({"containers": ["x"], "data": {}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = placed["id"].as_str().unwrap_or_else(|| panic!("{placed}")).to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut r = client().get(format!("{url}/api/v1/jobs/{id}"));
        if let Some(key) = auth {
            r = r.bearer_auth(key);
        }
        let job: Value = r.send().await.unwrap().json().await.unwrap();
        if job["status"] != "running" {
            assert_eq!(job["status"], "succeeded", "{job}");
            return id;
        }
        assert!(std::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// The ledger row of job `id`, once written.
pub(super) async fn ledger_row(db: &Db, node: &str, id: &str) -> infernet_router::db::ledger::LedgerRow {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = db.ledger_of_node(node, 0, i64::MAX, 1000).await.unwrap();
        if let Some(row) = rows.into_iter().find(|r| r.job_id == id) {
            return row;
        }
        assert!(std::time::Instant::now() < deadline, "no ledger row for {id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A router on `database` whose key `router_key` is, listing `nodes`; waits until x is served.
async fn gateway(router_key: &Identity, nodes: &[String], database: &infernet_router::db::DbSettings) -> String {
    let mut s = settings(nodes);
    s.gateway.key_file = key_file(router_key);
    s.gateway.samples_flush = Duration::from_millis(200);
    s.database = database.clone();
    let url = router(s).await;
    eventually(format!("{url}/api/v1/route?container=x"), |v| {
        v["candidates"].as_array().is_some_and(|c| c.len() == nodes.len())
            && v["candidates"][0]["price"].as_f64().is_some_and(|p| p > 0.01)
    })
    .await;
    url
}

/// A node in a network signs a receipt for each job: the router keeps it with the row and
/// accounts the node's stated duration and price; the row checks out against the node's key, and
/// stops checking out once its price is changed in the database or the receipt is swapped for
/// one another key signed.
async fn a_receipt_is_kept_with_its_row_and_a_forged_one_is_detected(backend: Backend) {
    use infernet_router::ledger::receipt::{Check, check};
    let (router_key, operator) = (Identity::generate(), Identity::generate());
    let node = priced_node(&router_key, &operator, Duration::from_millis(200)).await;
    let t = TestDb::new(backend);
    let url = gateway(&router_key, &[node.key()], &t.settings).await;
    let id = run_job(&url, None).await;
    let db = Db::open(&t.settings).await.unwrap();
    let row = ledger_row(&db, &node.key(), &id).await;
    let job = db.job(&id).await.unwrap().unwrap();
    let key = node_key(&node).await;
    let receipt = infernet_router::ledger::receipt::read(row.receipt.as_deref().expect("a receipt")).unwrap();
    assert_eq!(receipt.signer, key);
    assert_eq!(receipt.receipt.job, job.node_job.clone().unwrap());
    assert!((200..2000).contains(&row.duration_ms), "{row:?}");
    assert_eq!(i64::try_from(receipt.receipt.duration_ms).unwrap(), row.duration_ms);
    let expected = 0.01 + 0.5 * row.duration_ms as f64 / 1000.0;
    assert!((row.price.unwrap() - expected).abs() < 1e-9, "{row:?}");
    assert_eq!(
        check(&row, job.node_job.as_deref(), Some(&key)),
        Check::Valid {
            signer: infernet_identity::npub(&key)
        }
    );

    // The row's price raised in the database.
    let raise = "UPDATE ledger SET price = price * 2 WHERE job_id = $1";
    match db.pool() {
        infernet_router::db::Pool::Sqlite(p) => sqlx::query(raise).bind(&id).execute(p).await.map(drop),
        infernet_router::db::Pool::Postgres(p) => sqlx::query(raise).bind(&id).execute(p).await.map(drop),
    }
    .unwrap();
    let raised = ledger_row(&db, &node.key(), &id).await;
    assert!(
        matches!(check(&raised, job.node_job.as_deref(), Some(&key)), Check::Forged { ref why } if why.contains("price")),
        "{:?}",
        check(&raised, job.node_job.as_deref(), Some(&key))
    );
    // A receipt made up with another key, saying what the row says.
    let made_up =
        infernet_identity::statement::sign(&Identity::generate(), "infernet-receipt", &receipt.receipt).unwrap();
    let forged = infernet_router::db::ledger::LedgerRow {
        receipt: Some(made_up),
        ..row.clone()
    };
    assert!(matches!(
        check(&forged, job.node_job.as_deref(), Some(&key)),
        Check::Forged { ref why } if why.contains("not by the node's key")
    ));

    // The node's public record: a job asked at a price below the node's leaves it out by price,
    // and the record says so beside its uptime, jobs per day and latency.
    let (status, _) = {
        let r = client()
            .post(format!("{url}/api/v1/jobs"))
            .json(&json!({"containers": ["x"], "data": {}, "max_price": 0.001}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(status, 503);
    let record = eventually(format!("{url}/api/v1/nodes/{}", node.key()), |v| {
        v["excluded_24h"]["price"] == 1 && v["uptime"]["24h"].as_f64().is_some_and(|u| u > 0.9)
    })
    .await;
    assert_eq!(record["jobs_per_day"][0]["jobs"], 1, "{record}");
    assert_eq!(record["latency_ms"][0]["containers"], json!(["x"]), "{record}");
    assert_eq!(
        record["latency_ms"][0]["mean_ms"].as_f64(),
        Some(row.duration_ms as f64)
    );
    assert_eq!(record["excluded_24h"]["hours"], 0);
    let (status, body) = super::get(format!("{url}/api/v1/nodes/10.9.9.9:1")).await;
    assert_eq!(status, 404, "{body}");
}

/// A stream through the router: once it has ended, its ledger row holds the receipt the node
/// signed for it, with the node's duration and price, and the operator's list of the node's jobs
/// shows it valid; a receipt another key signed, put in the row's place, is shown forged.
async fn a_stream_ends_with_a_verified_receipt_and_a_forged_one_is_flagged(backend: Backend) {
    let (router_key, operator) = (Identity::generate(), Identity::generate());
    let t = TestDb::new(backend);
    // The node registers with signed heartbeats: the router knows its key and operator.
    let mut s = settings(&[]);
    s.registration_token = None;
    s.gateway.key_file = key_file(&router_key);
    s.database = t.settings.clone();
    let url = router(s).await;
    let stats = json!({"stats": {"endpoint": format!("{url}/api/v1/register"), "interval": 0.2}});
    let node = priced_node_with(&router_key, &operator, Duration::from_millis(200), stats).await;
    eventually(format!("{url}/api/v1/route?container=x"), |v| {
        v["candidates"][0]["price"].as_f64().is_some_and(|p| p > 0.01)
    })
    .await;
    let db = Db::open(&t.settings).await.unwrap();
    let (id, receipt) = stream_with_receipt(&url, &db, &node.key(), node_key(&node).await, &operator).await;
    let id = id.as_str();
    let made_up =
        infernet_identity::statement::sign(&Identity::generate(), "infernet-receipt", &receipt.receipt).unwrap();
    let swap = "UPDATE ledger SET receipt = $1 WHERE job_id = $2";
    match db.pool() {
        infernet_router::db::Pool::Sqlite(p) => sqlx::query(swap).bind(&made_up).bind(id).execute(p).await.map(drop),
        infernet_router::db::Pool::Postgres(p) => sqlx::query(swap).bind(&made_up).bind(id).execute(p).await.map(drop),
    }
    .unwrap();
    let jobs_url = format!("{url}/api/v1/nodes/{}/jobs", node.key());
    let check = receipt_check(&jobs_url, &operator, id).await;
    assert_eq!(check["receipt"], "forged", "{check}");
    assert!(
        check["why"].as_str().unwrap().contains("not by the node's key"),
        "{check}"
    );
    // The receipt comes in the stream's trailer when the router asks (`TE: trailers`), so the
    // router needs no second request; not otherwise.
    let key = node_key(&node).await;
    for asks in [true, false] {
        let (trailer, node_job) = dispatched_stream(&router_key, &node.key(), key, asks).await;
        match (asks, trailer) {
            (true, Some((r, mac))) => {
                let taken = infernet_router::ledger::receipt::take(&r, Some(&key), &node_job, &["x".to_string()]);
                assert_eq!(taken.unwrap().receipt.status, "success");
                // MAC'd with the key only this router and the node hold.
                let shared = infernet_identity::dispatch::DispatchKey::derive(&router_key, &key).unwrap();
                let mac = mac.expect("the receipt's MAC");
                assert!(shared.check_receipt_mac(r.as_bytes(), &mac));
                assert!(!shared.check_receipt_mac(r.replace("success", "failed").as_bytes(), &mac));
            }
            (false, None) => {}
            (asks, trailer) => panic!("trailers asked for: {asks}; trailer: {trailer:?}"),
        }
    }
    // A client calling the node itself gets no receipt: only jobs a router dispatched are signed.
    let direct = reqwest::Client::new()
        .post(format!("http://{}/api/jobs/stream", node.key()))
        .json(&json!({"containers": ["x"], "data": {}}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let direct_id = direct.lines().next().unwrap().trim().to_string();
    let result = eventually(format!("http://{}/api/jobs?id={direct_id}", node.key()), |v| {
        v[0]["status"].as_str().is_some_and(|s| s != "running")
    })
    .await;
    assert!(result[0].get("receipt").is_none_or(Value::is_null), "{result}");
}

/// Streams a job of x on `node` (key `key`) as the router with key `router` dispatches it (a
/// MAC, a stated client), asking for trailers or not: the receipt of the trailer and its MAC, if
/// one came, and the node's job id.
async fn dispatched_stream(
    router: &Identity,
    node: &str,
    key: infernet_identity::PublicKey,
    trailers: bool,
) -> (Option<(String, Option<String>)>, String) {
    use futures::StreamExt;
    let shared = infernet_identity::dispatch::DispatchKey::derive(router, &key).unwrap();
    let (url, body, stated) = (
        format!("http://{node}/api/jobs/stream"),
        br#"{"containers":["x"],"data":{}}"#,
        "fd00::7",
    );
    let auth = infernet_identity::dispatch::authorization(&shared, &router.public_key(), "POST", &url, stated, body);
    let mut request = client()
        .post(&url)
        .header("authorization", auth)
        .header("x-infernet-client", stated)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if trailers {
        request = request.header("te", "trailers");
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = axum::http::Response::<reqwest::Body>::from(response);
    let mut frames = http_body_util::BodyStream::new(response.into_body());
    let (mut data, mut trailer) = (Vec::new(), None);
    while let Some(frame) = frames.next().await {
        match frame.unwrap().into_data() {
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(frame) => {
                let trailers = frame.trailers_ref().unwrap();
                let value = |name| trailers.get(name).map(|v| v.to_str().unwrap().to_string());
                trailer = value(infernet_types::RECEIPT_TRAILER)
                    .map(|receipt| (receipt, value(infernet_types::RECEIPT_MAC_TRAILER)));
            }
        }
    }
    let text = String::from_utf8(data).unwrap();
    let (node_job, output) = text.split_once('\n').unwrap();
    assert_eq!(serde_json::from_str::<Value>(output).unwrap(), json!({"ok": true}));
    (trailer, node_job.to_string())
}

/// The `check` of job `id` in the operator's list of its node's jobs at `jobs_url`.
async fn receipt_check(jobs_url: &str, operator: &Identity, id: &str) -> Value {
    let (status, text) = get_as(jobs_url, Some(operator)).await;
    assert_eq!(status, 200, "{text}");
    let page: Value = serde_json::from_str(&text).unwrap();
    let job = page["jobs"].as_array().unwrap().iter().find(|j| j["job"] == id);
    job.unwrap_or_else(|| panic!("no {id} in {page}"))["check"].clone()
}

/// Streams a job of x through the router at `url` to `node` (key `key`, operated by `operator`)
/// and reads the stream whole: the ledger row the router writes holds the receipt `key` signed,
/// with the node's duration and price, and the operator's list of the node's jobs shows it
/// valid. The router's job id and the receipt.
async fn stream_with_receipt(
    url: &str,
    db: &Db,
    node: &str,
    key: infernet_identity::PublicKey,
    operator: &Identity,
) -> (String, infernet_router::ledger::receipt::Signed) {
    let body = post_stream_x(url).await.text().await.unwrap();
    let (id, output) = body.split_once('\n').unwrap_or_else(|| panic!("{body}"));
    assert_eq!(serde_json::from_str::<Value>(output).unwrap(), json!({"ok": true}));
    let row = ledger_row(db, node, id).await;
    let receipt = infernet_router::ledger::receipt::read(row.receipt.as_deref().expect("a receipt")).unwrap();
    assert_eq!(receipt.signer, key);
    assert_eq!(
        Some(receipt.receipt.job.clone()),
        db.job(id).await.unwrap().unwrap().node_job
    );
    assert_eq!(receipt.receipt.status, "success");
    assert_eq!(row.operator, Some(operator.public_key().to_hex()));
    assert!((200..2000).contains(&row.duration_ms), "{row:?}");
    assert_eq!(i64::try_from(receipt.receipt.duration_ms).unwrap(), row.duration_ms);
    let expected = 0.01 + 0.5 * row.duration_ms as f64 / 1000.0;
    assert!((row.price.unwrap() - expected).abs() < 1e-9, "{row:?}");
    assert_eq!(
        receipt_check(&format!("{url}/api/v1/nodes/{node}/jobs"), operator, id).await,
        json!({"receipt": "valid", "signer": infernet_identity::npub(&key)})
    );
    (id.to_string(), receipt)
}

/// The same over a link: a node behind NAT streams through its link, and the router reads the
/// stream's receipt back over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_over_a_link_ends_with_a_verified_receipt() {
    let (router_key, operator) = (Identity::generate(), Identity::generate());
    let t = TestDb::new(Backend::Sqlite);
    let mut s = settings(&[]);
    s.gateway.key_file = key_file(&router_key);
    s.gateway.link.heartbeat = Duration::from_secs(1);
    s.database = t.settings.clone();
    let url = router(s).await;
    let network = json!({"network": {"routers": [router_key.npub()], "url": super::link::link_url(&url)}});
    let node = priced_node_with(&router_key, &operator, Duration::from_millis(200), network).await;
    let route = eventually(format!("{url}/api/v1/route?container=x"), |v| {
        v["candidates"][0]["price"].as_f64().is_some_and(|p| p > 0.01)
    })
    .await;
    let npub = route["candidates"][0]["node"].as_str().unwrap().to_string();
    assert!(npub.starts_with("npub1"), "{route}");
    let db = Db::open(&t.settings).await.unwrap();
    stream_with_receipt(&url, &db, &npub, node_key(&node).await, &operator).await;
}

/// Writes `rows` through the batch writer, as the gateway does.
async fn write_rows(db: &Db, rows: Vec<LedgerRow>) {
    use infernet_router::db::batcher::{BatchSettings, Record, batcher};
    let (tx, writer) = batcher(db.clone(), BatchSettings::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(writer.run(stop.clone()));
    for r in rows {
        tx.send(Record::Ledger(r)).await.unwrap();
    }
    tx.flush().await.unwrap();
    stop.cancel();
    task.await.unwrap();
}

/// A succeeded row of `node` filed under `operator`, finished at `at` (Unix ms), priced `price`.
fn priced_row(id: &str, node: &str, operator: Option<&str>, at: i64, price: f64) -> LedgerRow {
    LedgerRow {
        job_id: id.into(),
        client: "npub:aa".into(),
        api_key_id: None,
        node: node.into(),
        operator: operator.map(str::to_string),
        containers: vec!["x".into()],
        started_at: at - 1000,
        finished_at: at,
        outcome: "succeeded".into(),
        duration_ms: 1000,
        price: Some(price),
        unit: Some("USD".into()),
        receipt: None,
    }
}

/// Unix ms of `y-m-d` at `h` o'clock UTC.
fn at(y: i32, m: u32, d: u32, h: i64) -> i64 {
    let days = {
        let (y, m) = (i64::from(if m <= 2 { y - 1 } else { y }), i64::from(m));
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
        era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
    };
    days * 86_400_000 + h * 3_600_000
}

async fn get_as(url: &str, signer: Option<&Identity>) -> (u16, String) {
    let mut r = client().get(url);
    if let Some(id) = signer {
        r = r.header("authorization", nip98::authorization(id, "GET", url, None));
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Rows on both sides of the end of November: by day, week and month the answer sums what the
/// rows say, each period beside the one before it, and the CSV export says the same.
async fn earnings_sum_what_the_rows_say_across_a_month_boundary(backend: Backend) {
    let t = TestDb::new(backend);
    let db = Db::open(&t.settings).await.unwrap();
    let node = "10.0.0.1:4000";
    write_rows(
        &db,
        vec![
            priced_row("a", node, None, at(2026, 10, 31, 23), 8.0),
            priced_row("b", node, None, at(2026, 11, 29, 12), 1.0),
            priced_row("c", node, None, at(2026, 11, 30, 23), 2.0),
            priced_row("d", node, None, at(2026, 12, 1, 0), 4.0),
            priced_row("e", node, None, at(2026, 12, 1, 5), 0.5),
            priced_row("f", "10.0.0.2:4000", None, at(2026, 12, 1, 5), 100.0),
        ],
    )
    .await;
    let mut s = settings(&[]);
    s.database = t.settings.clone();
    let url = router(s).await;
    let ask = |q: &str| {
        let url = format!("{url}/api/v1/earnings?node={node}&{q}");
        async move {
            let (status, body) = get_as(&url, None).await;
            assert_eq!(status, 200, "{body}");
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };

    let days = ask("from=2026-11-30&to=2026-12-01&by=day").await;
    let periods = days["periods"].as_array().unwrap();
    assert_eq!(periods.len(), 2, "{days}");
    assert_eq!(
        (periods[0]["start"].as_str(), periods[0]["earned"].as_f64()),
        (Some("2026-11-30"), Some(2.0))
    );
    assert_eq!(periods[0]["previous"]["start"], "2026-11-29");
    assert_eq!(periods[0]["previous"]["earned"], 1.0);
    assert_eq!(
        (periods[1]["jobs"].as_i64(), periods[1]["earned"].as_f64()),
        (Some(2), Some(4.5))
    );
    assert_eq!(days["total"]["earned"], 6.5);
    assert_eq!(days["settled"], false);

    // 2026-11-30 is a Monday: the week of Dec 1 starts on it.
    let weeks = ask("from=2026-12-01&to=2026-12-06&by=week").await;
    assert_eq!(weeks["from"], "2026-11-30");
    assert_eq!(weeks["periods"][0]["earned"], 6.5, "{weeks}");
    assert_eq!(weeks["periods"][0]["previous"]["earned"], 1.0);

    let months = ask("from=2026-11-01&to=2026-12-31&by=month").await;
    let m = months["periods"].as_array().unwrap();
    assert_eq!(m.len(), 2, "{months}");
    assert_eq!(
        (m[0]["start"].as_str(), m[0]["earned"].as_f64(), m[0]["jobs"].as_i64()),
        (Some("2026-11-01"), Some(3.0), Some(2))
    );
    assert_eq!(m[0]["previous"]["earned"], 8.0);
    assert_eq!(
        (m[1]["earned"].as_f64(), m[1]["previous"]["earned"].as_f64()),
        (Some(4.5), Some(3.0))
    );
    assert_eq!(months["total"]["earned"], 7.5);
    assert_eq!(months["previous_total"]["earned"], 8.0 + 3.0);

    let (status, csv) = get_as(
        &format!("{url}/api/v1/earnings?node={node}&from=2026-11-01&to=2026-12-31&by=month&format=csv"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "start,jobs,succeeded,earned_USD,duration_ms,previous_start,previous_jobs,previous_earned_USD"
    );
    assert_eq!(lines[1], "2026-11-01,2,2,3,2000,2026-10-01,1,8");
    assert_eq!(lines[2], "2026-12-01,2,2,4.5,2000,2026-11-01,2,3");

    for (q, needle) in [
        ("by=year", "by: one of day, week, month"),
        ("from=2026-13-01", "from: a date"),
        ("from=2026-12-02&to=2026-12-01", "is after to"),
        ("nope=1", "nope: unknown parameter"),
    ] {
        let (status, body) = get_as(&format!("{url}/api/v1/earnings?node={node}&{q}"), None).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body.contains(needle), "{q}: {body}");
    }
}

/// A small deterministic generator (xorshift64*): the same cases on every run.
struct Cases(u64);

impl Cases {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    fn pick<'a, T>(&mut self, of: &'a [T]) -> &'a T {
        &of[self.below(of.len() as u64) as usize]
    }
}

/// What `whose` rows finished in `[from, to)` sum to per UTC day, summed here from the rows.
fn day_sums_of(rows: &[LedgerRow], whose: Whose<'_>, from: i64, to: i64) -> Vec<DaySum> {
    let mut days = std::collections::BTreeMap::<i64, DaySum>::new();
    for r in rows {
        let mine = match whose {
            Whose::Node(n) => r.node == n,
            Whose::Operator(o) => r.operator.as_deref() == Some(o),
        };
        if !mine || r.finished_at < from || r.finished_at >= to {
            continue;
        }
        let day = r.finished_at / 86_400_000;
        let d = days.entry(day).or_insert(DaySum {
            day,
            ..DaySum::default()
        });
        d.jobs += 1;
        d.succeeded += i64::from(r.outcome == "succeeded");
        d.earned += r.price.unwrap_or(0.0);
        d.duration_ms += r.duration_ms;
    }
    days.into_values().collect()
}

/// What the fleet's earnings and a node's record read, summed here from the rows: per node and
/// container set, jobs and prices (`None` read as 0); per container set of `node`, succeeded
/// rows and their mean duration, most first.
#[expect(clippy::type_complexity, reason = "a test's oracle, shaped as the answers it checks")]
fn totals_of(
    rows: &[LedgerRow],
    node: &str,
    from: i64,
    to: i64,
) -> (Vec<(String, String, i64, f64)>, Vec<(Vec<String>, i64, f64)>) {
    let mut totals = std::collections::BTreeMap::<(String, String), (i64, f64)>::new();
    let mut sets = std::collections::BTreeMap::<String, (Vec<String>, i64, i64)>::new();
    for r in rows.iter().filter(|r| r.finished_at >= from && r.finished_at < to) {
        let containers = serde_json::to_string(&r.containers).unwrap();
        let t = totals.entry((r.node.clone(), containers.clone())).or_default();
        t.0 += 1;
        t.1 += r.price.unwrap_or(0.0);
        if r.node == node && r.outcome == "succeeded" {
            let s = sets.entry(containers).or_insert((r.containers.clone(), 0, 0));
            s.1 += 1;
            s.2 += r.duration_ms;
        }
    }
    let mut latency: Vec<(Vec<String>, i64, f64)> = sets
        .into_values()
        .map(|(c, jobs, ms)| (c, jobs, ms as f64 / jobs as f64))
        .collect();
    latency.sort_by_key(|l| std::cmp::Reverse(l.1));
    (
        totals
            .into_iter()
            .map(|((n, c), (jobs, earned))| (n, c, jobs, earned))
            .collect(),
        latency,
    )
}

/// Random rows of three nodes and two operators around the end of November, written in batches
/// (some twice): for random ranges, whole days and ms-cut ones, the day sums the earnings read
/// (and the fleet's earnings and a node's latency per container set) equal the sums of the rows,
/// and still do after retention cuts twice into one day. Prices are eighths, so that sums in any
/// order are exact.
async fn day_sums_answer_what_the_rows_say_before_and_after_retention(backend: Backend) {
    const DAY: i64 = 86_400_000;
    let t = TestDb::new(backend);
    let db = Db::open(&t.settings).await.unwrap();
    let nodes = ["10.0.0.1:4000", "10.0.0.2:4000", "10.0.0.3:4000"];
    let operators = [None, Some("op-a"), Some("op-b")];
    let sets: [&[&str]; 3] = [&["x"], &["x", "y"], &["y"]];
    let (start, end) = (at(2026, 11, 24, 0), at(2026, 12, 6, 0));
    let mut cases = Cases(0x9e37_79b9_7f4a_7c15);
    let mut rows: Vec<LedgerRow> = Vec::new();
    for batch in 0..4 {
        let mut written = Vec::new();
        for i in 0..150 {
            let node = *cases.pick(&nodes);
            let finished = start + cases.below((end - start) as u64) as i64;
            let row = LedgerRow {
                job_id: format!("j{batch}-{i}"),
                client: "npub:aa".into(),
                api_key_id: None,
                node: node.into(),
                // A node's rows are filed under one operator, or under none.
                operator: operators[nodes.iter().position(|n| *n == node).unwrap()].map(str::to_string),
                containers: cases.pick(&sets).iter().map(|c| c.to_string()).collect(),
                started_at: finished - 500,
                finished_at: finished,
                outcome: cases.pick(&["succeeded", "succeeded", "failed"]).to_string(),
                duration_ms: cases.below(10_000) as i64,
                price: (cases.below(4) > 0).then(|| cases.below(80) as f64 / 8.0),
                unit: Some("USD".into()),
                receipt: None,
            };
            written.push(row);
        }
        // A row written again (with another price) is kept and counted once, as first written.
        let mut again = written[..10].to_vec();
        again.iter_mut().for_each(|r| r.price = Some(1000.0));
        rows.extend(written.iter().cloned());
        written.extend(again);
        write_rows(&db, written).await;
    }
    let check = |rows: Vec<LedgerRow>, cases: &mut Cases| {
        let ranges: Vec<(i64, i64)> = (0..12)
            .map(|i| {
                let from = start - DAY + cases.below((end - start) as u64) as i64;
                let to = from + cases.below(8 * DAY as u64) as i64;
                // Every other range in whole days, as `/api/v1/earnings` asks.
                if i % 2 == 0 {
                    (from / DAY * DAY, to / DAY * DAY + DAY)
                } else {
                    (from, to)
                }
            })
            .chain([(start - 40 * DAY, end + 40 * DAY)])
            .collect();
        let db = db.clone();
        async move {
            for (from, to) in ranges {
                for whose in [
                    Whose::Node(nodes[0]),
                    Whose::Node(nodes[2]),
                    Whose::Operator("op-a"),
                    Whose::Operator("op-b"),
                ] {
                    assert_eq!(
                        db.ledger_days(whose, from, to).await.unwrap(),
                        day_sums_of(&rows, whose, from, to),
                        "{whose:?} in [{from}, {to})"
                    );
                }
                let all: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
                let (totals, latency) = totals_of(&rows, nodes[1], from, to);
                let read: Vec<(String, String, i64, f64)> = db
                    .ledger_totals(&all, from, to)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(n, c, jobs, earned)| (n, c, jobs, earned.unwrap_or(0.0)))
                    .collect();
                assert_eq!(read, totals, "totals in [{from}, {to})");
                let read: Vec<(Vec<String>, i64, f64)> = db
                    .ledger_latency(nodes[1], from, to)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|l| (l.containers, l.jobs, l.mean_ms))
                    .collect();
                assert_eq!(read, latency, "latency in [{from}, {to})");
            }
        }
    };
    check(rows.clone(), &mut cases).await;
    // Retention cuts into a day, then further into the same day.
    let first_cut = start + 2 * DAY + 5 * 3_600_000 + cases.below(3_600_000) as i64;
    for cut in [first_cut, first_cut + 7 * 3_600_000] {
        let gone = rows.iter().filter(|r| r.finished_at < cut).count() as u64;
        assert!(gone > 0);
        assert_eq!(db.prune_ledger(cut).await.unwrap(), gone);
        rows.retain(|r| r.finished_at >= cut);
        check(rows.clone(), &mut cases).await;
    }
    // New rows after retention are added to what is left.
    let late = vec![priced_row("late", nodes[0], None, first_cut + 8 * 3_600_000, 2.5)];
    rows.extend(late.iter().cloned());
    write_rows(&db, late).await;
    check(rows, &mut cases).await;
}

/// Two operators' nodes in one ledger: each operator, signing with NIP-98, reads their node's
/// rows (clients as hashes, each receipt's check) and their earnings, and is refused the other's;
/// an unsigned request is refused.
async fn an_operator_sees_only_their_nodes(backend: Backend) {
    let t = TestDb::new(backend);
    let db = Db::open(&t.settings).await.unwrap();
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (a, b) = ("10.0.0.1:4000", "10.0.0.2:4000");
    let now = infernet_router::db::now_ms();
    let alice_hex = alice.public_key().to_hex();
    let bob_hex = bob.public_key().to_hex();
    write_rows(
        &db,
        vec![
            priced_row("a1", a, Some(&alice_hex), now - 60_000, 1.0),
            priced_row("a2", a, Some(&alice_hex), now - 30_000, 2.0),
            priced_row("b1", b, Some(&bob_hex), now - 30_000, 5.0),
        ],
    )
    .await;
    let mut s = settings(&[]);
    s.database = t.settings.clone();
    let url = router(s).await;

    let (status, body) = get_as(&format!("{url}/api/v1/nodes/{a}/jobs"), Some(&alice)).await;
    assert_eq!(status, 200, "{body}");
    let rows: Value = serde_json::from_str(&body).unwrap();
    let jobs = rows["jobs"].as_array().unwrap();
    assert_eq!(
        jobs.iter().map(|j| j["job"].as_str().unwrap()).collect::<Vec<_>>(),
        ["a1", "a2"]
    );
    assert!(jobs[0]["client"].as_str().unwrap().starts_with("client:"), "{body}");
    assert!(!body.contains("npub:aa"), "clients appear only as hashes: {body}");
    assert_eq!(jobs[0]["check"]["receipt"], "missing");

    let (status, csv) = get_as(&format!("{url}/api/v1/nodes/{a}/jobs?format=csv&limit=1"), Some(&alice)).await;
    assert_eq!(status, 200);
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.lines().nth(1).unwrap().starts_with("a1,client:"), "{csv}");

    let (status, body) = get_as(&format!("{url}/api/v1/nodes/{a}/jobs"), Some(&bob)).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = get_as(&format!("{url}/api/v1/nodes/{a}/jobs"), None).await;
    assert_eq!(status, 401, "{body}");

    let mine = format!("{url}/api/v1/earnings?operator={}", alice.npub());
    let (status, body) = get_as(&mine, Some(&alice)).await;
    assert_eq!(status, 200, "{body}");
    let earned: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(earned["total"]["earned"], 3.0, "bob's 5.0 is not alice's: {body}");
    let (status, _) = get_as(&mine, Some(&bob)).await;
    assert_eq!(status, 403);
    let (status, _) = get_as(&mine, None).await;
    assert_eq!(status, 401);
    // A node's own earnings are public.
    let (status, body) = get_as(&format!("{url}/api/v1/earnings?node={b}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["total"]["earned"], 5.0);
}

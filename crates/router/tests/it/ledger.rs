//! Clients, quotas, the ledger and receipts, on SQLite and PostgreSQL: what a client with an API
//! key, a provider reading its earnings and an operator checking receipts would see.

use std::time::Duration;

use infernet_identity::{Identity, nip98};
use infernet_router::{db::Db, keys};
use serde_json::{Value, json};

use super::{
    NodeProc, client,
    db::{Backend, TestDb},
    eventually, router, service, settings,
};

/// Each test `async fn name(Backend)` runs as `name::sqlite` and `name::postgres`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await
            }
        }
    )*};
}

on_both!(
    a_quota_refuses_the_next_job_across_two_routers,
    a_quota_holds_under_concurrent_replicas,
    a_receipt_is_kept_with_its_row_and_a_forged_one_is_detected,
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
    client()
        .post(format!("{url}/api/v1/jobs"))
        .bearer_auth(key)
        .json(&json!({"containers": ["x"], "data": {}}))
        .send()
        .await
        .unwrap()
}

/// A key with a quota of 3 jobs a minute: two routers on one database admit 3 between them, the
/// 4th is refused with 429 and `Retry-After`; the key's holder lists its own 3 jobs; a revoked or
/// made-up key is refused with 401.
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
    for url in [&one, &two, &one] {
        let r = submit(url, &key).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let refused = submit(&two, &key).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("3 jobs per minute"), "{body}");
    assert_eq!(body["retry_after"], retry);

    // Reading is not charged; the key's holder sees its own jobs, filed under the key's id.
    let list: Value = client()
        .get(format!("{one}/api/v1/jobs"))
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
        let r = submit(&one, bad).await;
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("unknown or revoked"), "{body}");
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
    let port = service(delay).await;
    let node = NodeProc::start_with(
        json!([{"id": "x", "port": port}]),
        json!({"network": {"routers": [router.npub()]}, "operator": {"pubkeys": [operator.npub()]}}),
    );
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
async fn ledger_row(db: &Db, node: &str, id: &str) -> infernet_router::db::ledger::LedgerRow {
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
}

//! Clients, quotas, the ledger and receipts, on SQLite and PostgreSQL: what a client with an API
//! key, a provider reading its earnings and an operator checking receipts would see.

use std::time::Duration;

use infernet_identity::Identity;
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

//! The database layer, the same suite on a real SQLite file and on a real PostgreSQL server.
//!
//! PostgreSQL: one throwaway cluster per test binary (`initdb` + `pg_ctl` under a temp dir, as
//! the `postgres` user when the tests run as root), one database per test, dropped after it; the
//! server is stopped and its directory removed when the binary exits. Needs Debian's
//! `postgresql` (scripts/install-test-deps.sh installs it).

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use infernet_router::db::{
    Db, DbError, DbSettings, Dialect, Pool,
    api_keys::ApiKey,
    batcher::{BatchError, BatchSettings, Record, batcher},
    job_writer::{JobWriter, JobWriterSettings},
    jobs::{Inserted, Job, JobStatus, Lease, NewJob},
    ledger::LedgerRow,
    metrics::MetricSample,
    nodes::NodeSeen,
};
use infernet_testkit::free_port;
use tokio_util::sync::CancellationToken;

/// A running PostgreSQL cluster.
struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    pid: i32,
}

static POSTGRES: OnceLock<Postgres> = OnceLock::new();

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn pg_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL is not installed: run scripts/install-test-deps.sh")
}

/// `program args…`, as the `postgres` user when we are root (PostgreSQL refuses to run as root).
fn as_postgres(program: &Path) -> Command {
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command) {
    let out = c.output().expect("run a PostgreSQL tool");
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn postgres() -> &'static Postgres {
    POSTGRES.get_or_init(|| {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("infernet-pg-")
            .tempdir()
            .unwrap()
            .keep();
        if unsafe { libc::geteuid() } == 0 {
            run({
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(&dir);
                c
            });
        }
        let data = dir.join("data");
        let mut initdb = as_postgres(&bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]);
        run(initdb);
        let port = free_port();
        let mut start = as_postgres(&bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                dir.display()
            ))
            .arg("start");
        run(start);
        let pid = std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse().ok())
            .expect("postmaster.pid names the server");
        unsafe { libc::atexit(stop_postgres) };
        Postgres { bin, dir, port, pid }
    })
}

/// At exit: a fast shutdown of the server, then its directory goes.
extern "C" fn stop_postgres() {
    let Some(pg) = POSTGRES.get() else { return };
    unsafe { libc::kill(pg.pid, libc::SIGINT) };
    for _ in 0..200 {
        if unsafe { libc::kill(pg.pid, 0) } != 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&pg.dir);
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Backend {
    Sqlite,
    Postgres,
}

/// One test's database; removed on drop.
pub(super) struct TestDb {
    pub(super) settings: DbSettings,
    /// The SQLite file's directory.
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database's name.
    pg_name: Option<String>,
}

impl TestDb {
    pub(super) fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("router.db").display());
                Self {
                    settings: DbSettings::new(url),
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                static N: AtomicU32 = AtomicU32::new(0);
                let pg = postgres();
                let name = format!("t{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
                let mut c = as_postgres(&pg.bin.join("createdb"));
                c.args([
                    "-h",
                    &pg.dir.display().to_string(),
                    "-p",
                    &pg.port.to_string(),
                    "-U",
                    "postgres",
                    &name,
                ]);
                run(c);
                Self {
                    settings: DbSettings::new(format!("postgres://postgres@127.0.0.1:{}/{name}", pg.port)),
                    _dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// A new pool on the database, as a router process (re)starting would open it.
    async fn open(&self) -> Db {
        Db::open(&self.settings).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let (Some(name), Some(pg)) = (&self.pg_name, POSTGRES.get()) {
            let mut c = as_postgres(&pg.bin.join("dropdb"));
            c.args([
                "-h",
                &pg.dir.display().to_string(),
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
                "--force",
                name,
            ]);
            let _ = c.output();
        }
    }
}

/// `$body` with `$p` bound to `$db`'s pool, whichever its dialect.
macro_rules! with_pool {
    ($db:expr, |$p:ident| $body:expr) => {
        match $db.pool() {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

on_both!(
    migrations_apply_once_and_reopen_cleanly,
    a_database_newer_than_the_binary_is_refused,
    a_repeated_idempotency_key_returns_the_first_job,
    two_replicas_never_claim_the_same_job,
    a_late_answer_of_an_earlier_attempt_changes_nothing,
    a_restart_loses_nothing,
    nodes_keep_their_record_and_settings,
    api_keys_are_found_by_hash_until_revoked,
    the_batcher_commits_by_size_by_time_and_on_shutdown,
    the_batcher_queue_is_bounded,
    a_clients_jobs_list_newest_first_by_page_and_filter,
    an_alert_fires_once_per_replica_set_and_resolves_once,
    a_linked_nodes_job_lapses_and_is_taken_as_a_new_attempt,
    job_rows_in_group_commits_never_undo_an_end_and_a_stop_loses_none,
    a_held_job_row_is_replaced_by_a_newer_one_or_written_when_read_or_due,
    a_ledger_written_before_the_day_sums_is_summed_by_their_migration,
    a_links_holder_is_recorded_renewed_moved_and_lapses,
    a_nodes_error_with_a_nul_is_kept_cleaned_and_its_commit_lands,
    jobs_no_replica_placed_end_failed_once_their_lease_ran_out,
);

fn new_job<'a>(id: &'a str, client: &'a str, key: Option<&'a str>, containers: &'a [String]) -> NewJob<'a> {
    NewJob {
        id,
        client,
        idempotency_key: key,
        containers,
        callback_url: None,
        now: 1_000,
    }
}

fn lease(owner: &str, now: i64) -> Lease<'_> {
    Lease {
        owner,
        now,
        duration: Duration::from_secs(30),
    }
}

fn hello() -> Vec<String> {
    vec!["hello-world".to_owned()]
}

fn ledger_row(job: &str, finished_at: i64) -> LedgerRow {
    LedgerRow {
        job_id: job.into(),
        client: "addr:ab12".into(),
        api_key_id: None,
        node: "node-a".into(),
        operator: Some("op".into()),
        containers: hello(),
        started_at: finished_at - 250,
        finished_at,
        outcome: "succeeded".into(),
        duration_ms: 250,
        price: Some(0.002),
        unit: Some("USD".into()),
        receipt: Some(r#"{"sig":"…"}"#.into()),
    }
}

const TABLES: [&str; 14] = [
    "alert_settings",
    "alerts",
    "api_key_usage",
    "api_keys",
    "jobs",
    "ledger",
    "ledger_days",
    "link_holders",
    "link_inputs",
    "metric_samples",
    "node_history",
    "node_settings",
    "nodes",
    "operators",
];

async fn migrations_apply_once_and_reopen_cleanly(backend: Backend) {
    let t = TestDb::new(backend);
    let db = t.open().await;
    let tables = db.describe().await.unwrap();
    assert_eq!(tables.keys().map(String::as_str).collect::<Vec<_>>(), TABLES);
    if let Pool::Sqlite(p) = db.pool() {
        // Readers do not wait for the writer.
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(p).await.unwrap();
        assert_eq!(mode, "wal");
    }
    db.close().await;
    // A second start finds everything applied.
    let again = t.open().await;
    assert_eq!(again.describe().await.unwrap(), tables);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_is_the_same_on_both_dialects() {
    let (lite, pg) = (TestDb::new(Backend::Sqlite), TestDb::new(Backend::Postgres));
    let (lite, pg) = (lite.open().await, pg.open().await);
    assert_eq!((lite.dialect(), pg.dialect()), (Dialect::Sqlite, Dialect::Postgres));
    let (lite, pg) = (lite.describe().await.unwrap(), pg.describe().await.unwrap());
    assert_eq!(lite.keys().collect::<Vec<_>>(), pg.keys().collect::<Vec<_>>());
    for (table, columns) in &lite {
        assert_eq!(columns, &pg[table], "table {table}");
    }
    assert!(
        lite["jobs"]
            .iter()
            .any(|c| c.name == "lease_until" && c.data_type == "bigint" && c.nullable)
    );
}

async fn a_database_newer_than_the_binary_is_refused(backend: Backend) {
    let t = TestDb::new(backend);
    let db = t.open().await;
    // What a newer router would have left behind.
    let sql = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
               VALUES ($1, 'from the future', $2, $3, 0)";
    let inserted = with_pool!(db, |p| sqlx::query(sql)
        .bind(9_999_i64)
        .bind(true)
        .bind(vec![0u8; 48])
        .execute(p)
        .await
        .map(|r| r.rows_affected()));
    assert_eq!(inserted.unwrap(), 1);
    db.close().await;
    let e = Db::open(&t.settings).await.unwrap_err();
    assert!(matches!(e, DbError::NewerThanBinary { version: 9_999 }), "{e:?}");
    let shown = e.to_string();
    assert!(shown.contains("9999") && shown.contains("newer version"), "{shown}");
}

async fn a_repeated_idempotency_key_returns_the_first_job(backend: Backend) {
    let t = TestDb::new(backend);
    let (a, b) = (t.open().await, t.open().await);
    let c = hello();
    let first = a.insert_job(&new_job("j1", "npub:alice", Some("k"), &c)).await.unwrap();
    assert!(matches!(first, Inserted::Created(ref j) if j.id == "j1" && j.status == JobStatus::Queued));
    // The retry, through the other replica, gets the first job.
    let retry = b.insert_job(&new_job("j2", "npub:alice", Some("k"), &c)).await.unwrap();
    assert_eq!(retry, Inserted::Existing(first.job().clone()));
    assert!(b.job("j2").await.unwrap().is_none());
    // The key is the client's own: another client's "k" is another job; no key, no dedup.
    let other = a.insert_job(&new_job("j3", "npub:bob", Some("k"), &c)).await.unwrap();
    assert!(matches!(other, Inserted::Created(_)));
    for id in ["j4", "j5"] {
        let n = a.insert_job(&new_job(id, "npub:alice", None, &c)).await.unwrap();
        assert!(matches!(n, Inserted::Created(_)));
    }
    // Two replicas racing with one key: one job.
    let (r1, r2) = (
        new_job("r1", "npub:carol", Some("race"), &c),
        new_job("r2", "npub:carol", Some("race"), &c),
    );
    let (x, y) = tokio::join!(a.insert_job(&r1), b.insert_job(&r2));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.job().id, y.job().id);
    assert_eq!([&x, &y].iter().filter(|i| matches!(i, Inserted::Created(_))).count(), 1);
}

async fn two_replicas_never_claim_the_same_job(backend: Backend) {
    let t = TestDb::new(backend);
    let (a, b) = (t.open().await, t.open().await);
    let c = hello();
    let ids: Vec<String> = (0..40).map(|i| format!("job-{i:02}")).collect();
    for id in &ids {
        a.insert_job(&new_job(id, "npub:alice", None, &c)).await.unwrap();
    }
    let claimer = |db: Db, owner: &'static str| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(job) = db.claim_next_job(&lease(owner, 2_000)).await.unwrap() {
                assert_eq!(
                    (job.status, job.attempt, job.lease_owner.as_deref()),
                    (JobStatus::Running, 1, Some(owner))
                );
                got.push(job.id);
            }
            got
        })
    };
    let (x, y) = tokio::join!(claimer(a.clone(), "replica-a"), claimer(b.clone(), "replica-b"));
    let (x, y) = (x.unwrap(), y.unwrap());
    let (xs, ys): (HashSet<_>, HashSet<_>) = (x.iter().collect(), y.iter().collect());
    assert!(
        xs.is_disjoint(&ys),
        "claimed twice: {:?}",
        xs.intersection(&ys).collect::<Vec<_>>()
    );
    assert_eq!(x.len() + y.len(), ids.len());

    // One job, both replicas at once: exactly one wins.
    a.insert_job(&new_job("solo", "npub:alice", None, &c)).await.unwrap();
    let (la, lb) = (lease("replica-a", 3_000), lease("replica-b", 3_000));
    let (p, q) = tokio::join!(a.claim_job("solo", &la), b.claim_job("solo", &lb));
    assert_eq!([p.unwrap(), q.unwrap()].iter().flatten().count(), 1);
}

async fn a_linked_nodes_job_lapses_and_is_taken_as_a_new_attempt(backend: Backend) {
    let t = TestDb::new(backend);
    let db = t.open().await;
    let node = "npub1linked";
    for id in ["j", "k"] {
        db.insert_job(&new_job(id, "npub:alice", None, &hello())).await.unwrap();
        let job = db.claim_job(id, &lease("a", 1_000)).await.unwrap().unwrap();
        assert!(
            db.set_job_node(id, job.attempt, node, Some("n-1"), &lease("a", 1_000))
                .await
                .unwrap()
        );
    }
    db.keep_link_input("j", r#"{"containers":["hello-world"]}"#, 1_000)
        .await
        .unwrap();
    // Held for the gateway's lease (30 s): nothing lapsed.
    assert!(db.lapsed_linked_jobs(2_000, 10).await.unwrap().is_empty());
    // The link closed at 2 s: the lease ends 30 s later, not before.
    assert_eq!(db.lapse_node_jobs(node, &lease("a", 2_000)).await.unwrap(), 2);
    assert!(db.lapsed_linked_jobs(31_000, 10).await.unwrap().is_empty());
    let lapsed = db.lapsed_linked_jobs(33_000, 10).await.unwrap();
    assert_eq!(lapsed.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["j", "k"]);
    // Taken from the node: attempt 2, no node; the node's late answer of attempt 1 is refused.
    let again = db.retake_job("j", 1, &lease("a", 33_000)).await.unwrap().unwrap();
    assert_eq!((again.attempt, again.node.as_deref()), (2, None));
    assert!(db.retake_job("j", 1, &lease("b", 33_001)).await.unwrap().is_none());
    assert!(
        db.finish_job("j", 1, JobStatus::Succeeded, None, 33_002)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        db.link_input("j").await.unwrap().as_deref(),
        Some(r#"{"containers":["hello-world"]}"#)
    );
    assert!(
        db.finish_job("j", 2, JobStatus::Succeeded, None, 34_000)
            .await
            .unwrap()
            .is_some()
    );
    // Its input goes once it ended.
    assert_eq!(db.forget_link_inputs().await.unwrap(), 1);
    assert_eq!(db.link_input("j").await.unwrap(), None);
}

async fn a_late_answer_of_an_earlier_attempt_changes_nothing(backend: Backend) {
    let t = TestDb::new(backend);
    let db = t.open().await;
    db.insert_job(&new_job("j", "npub:alice", None, &hello()))
        .await
        .unwrap();
    let first = db.claim_job("j", &lease("a", 2_000)).await.unwrap().unwrap();
    assert!(
        db.set_job_node("j", first.attempt, "node-a", Some("n-1"), &lease("a", 2_100))
            .await
            .unwrap()
    );
    // Held: another replica cannot take it while the lease runs.
    assert!(db.claim_job("j", &lease("b", 2_200)).await.unwrap().is_none());
    // The lease ran out (replica a died): b takes it as attempt 2.
    assert_eq!(db.requeue_expired_jobs(40_000).await.unwrap(), 1);
    let second = db.claim_job("j", &lease("b", 40_000)).await.unwrap().unwrap();
    assert_eq!((second.attempt, second.node.as_deref()), (2, Some("node-a")));
    assert!(
        !db.set_job_node("j", 1, "node-x", None, &lease("a", 40_001))
            .await
            .unwrap()
    );
    assert!(
        db.finish_job("j", 1, JobStatus::Failed, Some("late"), 40_002)
            .await
            .unwrap()
            .is_none()
    );
    let done = db
        .finish_job("j", 2, JobStatus::Succeeded, None, 40_003)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (done.status, done.finished_at, done.lease_owner),
        (JobStatus::Succeeded, Some(40_003), None)
    );
    // Final: cannot be cancelled or claimed again.
    assert!(db.cancel_job("j", 40_004).await.unwrap().is_none());
    assert!(db.claim_job("j", &lease("c", 99_000)).await.unwrap().is_none());
    db.insert_job(&new_job("k", "npub:alice", None, &hello()))
        .await
        .unwrap();
    let cancelled = db.cancel_job("k", 5_000).await.unwrap().unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(db.claim_next_job(&lease("a", 6_000)).await.unwrap().is_none());
}

async fn a_restart_loses_nothing(backend: Backend) {
    let t = TestDb::new(backend);
    let db = t.open().await;
    let c = hello();
    db.insert_job(&new_job("j1", "npub:alice", Some("k1"), &c))
        .await
        .unwrap();
    let claimed = db.claim_job("j1", &lease("a", 2_000)).await.unwrap().unwrap();
    db.finish_job("j1", claimed.attempt, JobStatus::Succeeded, None, 2_500)
        .await
        .unwrap();
    db.insert_job(&new_job("j2", "npub:alice", None, &c)).await.unwrap();
    db.upsert_node(&NodeSeen {
        key: "node-a",
        address: "127.0.0.1:4000",
        operator: Some("op"),
        statement: Some("{}"),
        now: 1_000,
    })
    .await
    .unwrap();
    db.put_node_settings("node-a", r#"{"pricing":{}}"#, 1_000)
        .await
        .unwrap();
    // Ledger rows go through the batcher; a clean stop drains it.
    let (sender, writer) = batcher(
        db.clone(),
        BatchSettings {
            max_delay: Duration::from_secs(3600),
            ..Default::default()
        },
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(writer.run(stop.clone()));
    sender.send(Record::Ledger(ledger_row("j1", 2_500))).await.unwrap();
    stop.cancel();
    task.await.unwrap();
    let before = (
        db.job("j1").await.unwrap(),
        db.job("j2").await.unwrap(),
        db.node("node-a").await.unwrap(),
    );
    db.close().await;
    drop(db);

    let db = t.open().await;
    let after = (
        db.job("j1").await.unwrap(),
        db.job("j2").await.unwrap(),
        db.node("node-a").await.unwrap(),
    );
    assert_eq!(before, after);
    assert_eq!(after.0.unwrap().status, JobStatus::Succeeded);
    assert_eq!(after.1.unwrap().status, JobStatus::Queued);
    assert_eq!(
        db.node_settings("node-a").await.unwrap().as_deref(),
        Some(r#"{"pricing":{}}"#)
    );
    assert_eq!(
        db.ledger_of_node("node-a", 0, i64::MAX, 10).await.unwrap(),
        vec![ledger_row("j1", 2_500)]
    );
    // The idempotency key still holds after the restart.
    let retry = db
        .insert_job(&new_job("j9", "npub:alice", Some("k1"), &c))
        .await
        .unwrap();
    assert!(matches!(retry, Inserted::Existing(ref j) if j.id == "j1"));
}

async fn nodes_keep_their_record_and_settings(backend: Backend) {
    let t = TestDb::new(backend);
    let db = t.open().await;
    let seen = |now, statement| NodeSeen {
        key: "npubhex",
        address: "10.0.0.1:4000",
        operator: Some("ophex"),
        statement,
        now,
    };
    let n = db.upsert_node(&seen(1_000, Some("s1"))).await.unwrap();
    assert_eq!((n.first_seen, n.last_seen, n.probes_ok), (1_000, 1_000, 0));
    assert!(db.record_probe("npubhex", true, 1_100).await.unwrap());
    assert!(db.record_probe("npubhex", false, 1_200).await.unwrap());
    assert!(db.record_probe("npubhex", false, 1_300).await.unwrap());
    assert!(db.add_job_outcomes("npubhex", 1, 1, 40).await.unwrap());
    assert!(!db.record_probe("unknown", true, 1_300).await.unwrap());
    // A heartbeat without a statement keeps the last one and the record.
    let n = db.upsert_node(&seen(2_000, None)).await.unwrap();
    assert_eq!(n.statement.as_deref(), Some("s1"));
    assert_eq!(
        (
            n.first_seen,
            n.last_seen,
            n.probes_ok,
            n.probes_failed,
            n.failures_in_a_row
        ),
        (1_000, 2_000, 1, 2, 2)
    );
    assert_eq!((n.jobs_ok, n.jobs_failed, n.latency_ms_sum), (1, 1, 40));
    assert_eq!(db.operator("ophex").await.unwrap().unwrap().last_seen, 2_000);
    assert_eq!(db.nodes_of_operator("ophex").await.unwrap(), vec![n.clone()]);
    assert_eq!(db.nodes().await.unwrap(), vec![n]);
    db.put_node_settings("npubhex", "{\"a\":1}", 3_000).await.unwrap();
    db.put_node_settings("npubhex", "{\"a\":2}", 3_001).await.unwrap();
    assert_eq!(db.node_settings("npubhex").await.unwrap().as_deref(), Some("{\"a\":2}"));
    // Settings only for known nodes, and they go with the node.
    assert!(db.put_node_settings("unknown", "{}", 3_000).await.is_err());
    assert!(db.delete_node("npubhex").await.unwrap());
    assert!(db.node_settings("npubhex").await.unwrap().is_none());
}

async fn api_keys_are_found_by_hash_until_revoked(backend: Backend) {
    let t = TestDb::new(backend);
    let db = t.open().await;
    let key = ApiKey {
        id: "k1".into(),
        hash: "ab".repeat(32),
        label: Some("lab".into()),
        per_minute: Some(10),
        per_day: None,
        created_at: 1_000,
        revoked_at: None,
    };
    db.insert_api_key(&key).await.unwrap();
    assert!(
        db.insert_api_key(&ApiKey {
            id: "k2".into(),
            ..key.clone()
        })
        .await
        .is_err(),
        "hashes are unique"
    );
    assert_eq!(db.active_api_key(&key.hash).await.unwrap(), Some(key.clone()));
    assert!(db.revoke_api_key("k1", 2_000).await.unwrap());
    assert!(!db.revoke_api_key("k1", 2_001).await.unwrap());
    assert!(db.active_api_key(&key.hash).await.unwrap().is_none());
    assert_eq!(db.api_keys().await.unwrap()[0].revoked_at, Some(2_000));
}

async fn the_batcher_commits_by_size_by_time_and_on_shutdown(backend: Backend) {
    let t = TestDb::new(backend);
    let db = t.open().await;
    let written = |n: u64| move |w: &u64| *w >= n;
    // By size: three records fill a batch, with an hour's delay.
    let (sender, writer) = batcher(
        db.clone(),
        BatchSettings {
            capacity: 100,
            max_batch: 3,
            max_delay: Duration::from_secs(3600),
            ..Default::default()
        },
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(writer.run(stop.clone()));
    for i in 0..3 {
        sender
            .try_send(Record::Ledger(ledger_row(&format!("s{i}"), 10_000 + i)))
            .unwrap();
    }
    let mut w = sender.written();
    tokio::time::timeout(Duration::from_secs(10), w.wait_for(written(3)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(db.ledger_of_node("node-a", 0, i64::MAX, 100).await.unwrap().len(), 3);
    // Samples of one minute add up, in one batch or across batches; a repeated row is kept once.
    let sample = MetricSample {
        node: "node-a".into(),
        minute: 7,
        jobs_ok: 2,
        jobs_failed: 1,
        latency_ms_sum: 80,
        probes_ok: 1,
        probes_failed: 0,
        excluded_price: 3,
        excluded_hours: 0,
        excluded_hardware: 0,
        excluded_health: 0,
        excluded_load: 1,
    };
    sender.try_send(Record::Metrics(sample.clone())).unwrap();
    sender.try_send(Record::Metrics(sample.clone())).unwrap();
    sender.try_send(Record::Ledger(ledger_row("s0", 10_000))).unwrap();
    sender.flush().await.unwrap();
    let got = db.metric_samples("node-a", 0, 100).await.unwrap();
    assert_eq!(
        got,
        vec![MetricSample {
            jobs_ok: 4,
            jobs_failed: 2,
            latency_ms_sum: 160,
            probes_ok: 2,
            excluded_price: 6,
            excluded_load: 2,
            ..sample
        }]
    );
    assert_eq!(db.ledger_of_node("node-a", 0, i64::MAX, 100).await.unwrap().len(), 3);
    // On shutdown what is queued is written.
    sender.try_send(Record::Ledger(ledger_row("last", 20_000))).unwrap();
    stop.cancel();
    task.await.unwrap();
    assert_eq!(db.ledger_of_node("node-a", 20_000, 20_001, 1).await.unwrap().len(), 1);
    // Retention: rows finished before the cut go, later ones stay.
    assert_eq!(db.prune_ledger(20_000).await.unwrap(), 3);
    assert_eq!(
        db.ledger_of_node("node-a", 0, i64::MAX, 100).await.unwrap(),
        vec![ledger_row("last", 20_000)]
    );
    assert_eq!(db.prune_metric_samples(8).await.unwrap(), 1);
    assert!(matches!(
        sender.try_send(Record::Ledger(ledger_row("x", 1))),
        Err(BatchError::Closed)
    ));

    // By time: one record, a short delay.
    let (sender, writer) = batcher(
        db.clone(),
        BatchSettings {
            capacity: 100,
            max_batch: 1000,
            max_delay: Duration::from_millis(50),
            ..Default::default()
        },
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(writer.run(stop.clone()));
    sender.try_send(Record::Ledger(ledger_row("timed", 30_000))).unwrap();
    let mut w = sender.written();
    tokio::time::timeout(Duration::from_secs(10), w.wait_for(written(1)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(db.ledger_of_node("node-a", 30_000, 30_001, 1).await.unwrap().len(), 1);
    stop.cancel();
    task.await.unwrap();
}

async fn the_batcher_queue_is_bounded(backend: Backend) {
    let t = TestDb::new(backend);
    let db = t.open().await;
    let (sender, writer) = batcher(
        db.clone(),
        BatchSettings {
            capacity: 2,
            max_batch: 10,
            max_delay: Duration::from_millis(10),
            ..Default::default()
        },
    );
    sender.try_send(Record::Ledger(ledger_row("a", 1))).unwrap();
    sender.try_send(Record::Ledger(ledger_row("b", 2))).unwrap();
    let e = sender.try_send(Record::Ledger(ledger_row("c", 3))).unwrap_err();
    assert!(matches!(e, BatchError::Full { capacity: 2 }), "{e}");
    assert!(e.to_string().contains("not keeping up"));
    // Once the writer runs, the queue drains and there is room again.
    let stop = CancellationToken::new();
    let task = tokio::spawn(writer.run(stop.clone()));
    sender.flush().await.unwrap();
    sender.try_send(Record::Ledger(ledger_row("c", 3))).unwrap();
    sender.flush().await.unwrap();
    assert_eq!(db.ledger_of_node("node-a", 0, 10, 10).await.unwrap().len(), 3);
    stop.cancel();
    task.await.unwrap();
}

async fn a_clients_jobs_list_newest_first_by_page_and_filter(backend: Backend) {
    let t = TestDb::new(backend);
    let db = t.open().await;
    let hello = vec!["hello".to_string()];
    // A container id with LIKE's wildcards in it matches only itself.
    let odd = vec!["a_b%c".to_string()];
    let axbyc = vec!["aXbYc".to_string()];
    for i in 0..5 {
        let id = format!("j{i}");
        let containers = match i {
            3 => &odd,
            4 => &axbyc,
            _ => &hello,
        };
        let mut new = new_job(&id, "npub:alice", None, containers);
        new.now = 1_000 + i;
        db.insert_job(&new).await.unwrap();
    }
    db.insert_job(&new_job("other", "npub:bob", None, &hello))
        .await
        .unwrap();
    db.cancel_job("j1", 2_000).await.unwrap();
    let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let all = db.jobs_of_client("npub:alice", None, None, None, 10).await.unwrap();
    assert_eq!(ids(all), ["j4", "j3", "j2", "j1", "j0"], "newest first, only alice's");
    // Pages of two, each after the last of the one before.
    let first = db.jobs_of_client("npub:alice", None, None, None, 2).await.unwrap();
    let last = first.last().unwrap();
    let second = db
        .jobs_of_client("npub:alice", None, None, Some((last.created_at, &last.id)), 2)
        .await
        .unwrap();
    assert_eq!(
        (ids(first), ids(second)),
        (
            vec!["j4".to_string(), "j3".to_string()],
            vec!["j2".to_string(), "j1".to_string()]
        )
    );
    let cancelled = db
        .jobs_of_client("npub:alice", Some(JobStatus::Cancelled), None, None, 10)
        .await
        .unwrap();
    assert_eq!(ids(cancelled), ["j1"]);
    let odd_only = db
        .jobs_of_client("npub:alice", None, Some("a_b%c"), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(odd_only), ["j3"]);
    let hello_only = db
        .jobs_of_client("npub:alice", None, Some("hello"), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(hello_only), ["j2", "j1", "j0"]);
}

async fn an_alert_fires_once_per_replica_set_and_resolves_once(backend: Backend) {
    use infernet_router::db::alerts::{Alert, AlertFilter};
    let t = TestDb::new(backend);
    let db = t.open().await;
    let alert = |id: &str, node: &str| Alert {
        id: id.into(),
        node: node.into(),
        rule: "offline".into(),
        subject: String::new(),
        operators: format!("{} {}", "aa".repeat(32), "bb".repeat(32)),
        summary: "gone".into(),
        status: "firing".into(),
        silenced: false,
        started_at: 1_000,
        resolved_at: None,
        acked_at: None,
        acked_by: None,
    };
    assert!(db.fire_alert(&alert("a1", "n1")).await.unwrap());
    // Another replica raising the same alert finds it firing.
    assert!(!db.fire_alert(&alert("a2", "n1")).await.unwrap());
    assert!(db.fire_alert(&alert("a3", "n2")).await.unwrap());
    let firing: Vec<String> = db.firing_alerts(10).await.unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(firing, ["a1", "a3"]);
    assert!(db.resolve_alert("a1", 2_000).await.unwrap());
    assert!(!db.resolve_alert("a1", 2_001).await.unwrap(), "resolved once");
    // Once resolved, the same condition can fire again.
    assert!(db.fire_alert(&alert("a4", "n1")).await.unwrap());
    let mine = AlertFilter {
        operator: Some("bb".repeat(32)),
        limit: 10,
        ..AlertFilter::default()
    };
    assert_eq!(db.alerts(&mine).await.unwrap().len(), 3);
    let resolved = AlertFilter {
        status: Some("resolved".into()),
        node: Some("n1".into()),
        ..mine.clone()
    };
    let listed = db.alerts(&resolved).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id.as_str(), listed[0].resolved_at), ("a1", Some(2_000)));
    let stranger = AlertFilter {
        operator: Some("cc".repeat(32)),
        ..mine
    };
    assert!(db.alerts(&stranger).await.unwrap().is_empty());
    assert!(db.ack_alert("a3", &"bb".repeat(32), 3_000).await.unwrap());
    assert_eq!(db.alert("a3").await.unwrap().unwrap().acked_at, Some(3_000));
    assert_eq!(
        db.forget_alerts(2_500).await.unwrap(),
        1,
        "the resolved one, ended before"
    );
    db.put_alert_settings(&"aa".repeat(32), "{}", 1).await.unwrap();
    db.put_alert_settings(&"aa".repeat(32), r#"{"webhooks": []}"#, 2)
        .await
        .unwrap();
    assert_eq!(
        db.all_alert_settings(10).await.unwrap(),
        [("aa".repeat(32), r#"{"webhooks": []}"#.to_string())]
    );
}

on_both!(node_history_sums_per_minute_and_hour_and_prunes);

/// The control interface's plots: samples of one minute add up, the hour holds them all, a
/// node's job totals become rates, and retention removes minutes before hours.
async fn node_history_sums_per_minute_and_hour_and_prunes(backend: Backend) {
    use infernet_router::ui::history::Sample;
    let t = TestDb::new(backend);
    let db = t.open().await;
    let sample = |at: i64, cpu: f64, ok: i64| Sample {
        node: "node-a".into(),
        at,
        cpu,
        memory: 50.0,
        gpu: None,
        pending: 2,
        jobs_ok: ok,
        jobs_failed: 0,
        latency: [0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    };
    // Two samples in minute 100, one in minute 101: one hour (6000 s starts hour 1).
    for s in [sample(6000, 10.0, 5), sample(6030, 30.0, 5), sample(6060, 40.0, 11)] {
        db.add_history(&s).await.unwrap();
    }
    db.add_history(&Sample {
        node: "node-b".into(),
        ..sample(6000, 99.0, 0)
    })
    .await
    .unwrap();
    let minutes = db.history("node-a", 60, 0).await.unwrap();
    assert_eq!(minutes.len(), 2);
    assert_eq!((minutes[0].t, minutes[0].cpu, minutes[0].pending), (6000, 20.0, 2.0));
    assert_eq!(
        (minutes[1].cpu, minutes[1].jobs, minutes[1].success),
        (40.0, Some(6.0), Some(100.0))
    );
    let hours = db.history("node-a", 3600, 0).await.unwrap();
    assert_eq!(hours.len(), 1);
    assert_eq!((hours[0].t, hours[0].cpu, hours[0].memory), (3600, 80.0 / 3.0, 50.0));
    assert!(
        db.history("node-a", 60, 6060).await.unwrap().len() == 1,
        "from a time on"
    );
    // Minutes before 6060 go; hours stay until their own cut.
    assert_eq!(db.prune_history(6060, 0).await.unwrap(), 2);
    assert_eq!(db.history("node-a", 60, 0).await.unwrap().len(), 1);
    assert_eq!(db.history("node-a", 3600, 0).await.unwrap().len(), 1);
    assert_eq!(db.prune_history(6060, 7200).await.unwrap(), 2);
    assert!(db.history("node-a", 3600, 0).await.unwrap().is_empty());
}

fn running(id: &str, node: Option<&str>) -> Job {
    Job {
        id: id.into(),
        client: "npub:alice".into(),
        idempotency_key: None,
        containers: hello(),
        status: JobStatus::Running,
        node: node.map(Into::into),
        node_job: node.map(|_| format!("on-{id}")),
        attempt: 1,
        lease_owner: Some("a".into()),
        lease_until: Some(10_000),
        callback_url: None,
        error: None,
        created_at: 1_000,
        updated_at: 1_000,
        finished_at: None,
    }
}

/// A replica that stopped while placing a job leaves it running on no node (or queued, before
/// its claim): once its lease has run out the job ends failed, saying why; jobs on a node, and
/// those whose lease still runs, are left alone.
async fn jobs_no_replica_placed_end_failed_once_their_lease_ran_out(backend: Backend) {
    let t = TestDb::new(backend);
    let db = t.open().await;
    let containers = hello();
    let Inserted::Created(_) = db
        .insert_job(&new_job("queued", "npub:a", Some("k1"), &containers))
        .await
        .unwrap()
    else {
        panic!("a new job")
    };
    let writer = JobWriter::new(db.clone(), JobWriterSettings::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(writer.clone().run(stop.clone()));
    for job in [
        running("orphan", None),
        Job {
            lease_until: Some(50_000),
            ..running("leased", None)
        },
        running("placed", Some("n1")),
    ] {
        assert!(writer.put_acked(job).await);
    }
    stop.cancel();
    task.await.unwrap();
    // At 20 s: the orphan's lease (10 s) ran out; the queued one (created at 1 s) is older than 5 s.
    assert_eq!(
        db.fail_orphaned_jobs(20_000, 5_000, "replica stopped").await.unwrap(),
        2
    );
    for (id, status) in [
        ("orphan", JobStatus::Failed),
        ("queued", JobStatus::Failed),
        ("leased", JobStatus::Running),
        ("placed", JobStatus::Running),
    ] {
        let job = db.job(id).await.unwrap().unwrap();
        assert_eq!(job.status, status, "{id}");
        if status == JobStatus::Failed {
            assert_eq!(
                (job.error.as_deref(), job.finished_at),
                (Some("replica stopped"), Some(20_000))
            );
        }
    }
    // A retry with the key finds the failed job, not one that never ends.
    let Inserted::Existing(again) = db
        .insert_job(&new_job("other", "npub:a", Some("k1"), &containers))
        .await
        .unwrap()
    else {
        panic!("the first job")
    };
    assert_eq!((again.id.as_str(), again.status), ("queued", JobStatus::Failed));
}

/// A node's error text is kept as a row may keep it: a NUL (which PostgreSQL refuses in text) and
/// other control characters become spaces, and it is cut at `MAX_ERROR` characters; the other
/// rows of its commit land with it.
async fn a_nodes_error_with_a_nul_is_kept_cleaned_and_its_commit_lands(backend: Backend) {
    use infernet_router::db::jobs::MAX_ERROR;
    let t = TestDb::new(backend);
    let db = t.open().await;
    let writer = JobWriter::new(db.clone(), JobWriterSettings::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(writer.clone().run(stop.clone()));
    let hostile = Job {
        status: JobStatus::Failed,
        error: Some(format!("HTTP 500: bad\0answer\x1b[31m\n{}", "x".repeat(5 * MAX_ERROR))),
        finished_at: Some(2_000),
        ..running("hostile", Some("n1"))
    };
    let (a, b) = tokio::join!(
        writer.put_acked(hostile),
        writer.put_acked(running("neighbour", Some("n1")))
    );
    assert!(a && b, "both rows of the commit are written");
    let error = db.job("hostile").await.unwrap().unwrap().error.unwrap();
    assert!(error.starts_with("HTTP 500: bad answer [31m\nxx"), "{error:?}");
    assert_eq!(error.chars().count(), MAX_ERROR);
    assert!(db.job("neighbour").await.unwrap().is_some());
    // The same through the end of an attempt.
    db.finish_job("neighbour", 1, JobStatus::Failed, Some("a\0b"), 3_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        db.job("neighbour").await.unwrap().unwrap().error.as_deref(),
        Some("a b")
    );
    stop.cancel();
    task.await.unwrap();
}

/// The gateway's job rows go through a group-commit writer: many rows share a commit and each is
/// readable once settled; a row never writes over one that ended elsewhere, nor erases a known
/// node; a clean stop commits what waits, and rows handed over after it are written directly.
async fn job_rows_in_group_commits_never_undo_an_end_and_a_stop_loses_none(backend: Backend) {
    let t = TestDb::new(backend);
    let db = t.open().await;
    let writer = JobWriter::new(
        db.clone(),
        JobWriterSettings {
            capacity: 64,
            ..Default::default()
        },
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(writer.clone().run(stop.clone()));
    // More rows than the writer holds: handing over waits for room, nothing is dropped.
    let mut last = 0;
    for i in 0..300 {
        last = writer.put(running(&format!("j{i}"), None)).await;
    }
    writer.committed(last).await;
    assert_eq!(writer.backlog(), 0);
    for i in [0, 150, 299] {
        assert_eq!(
            db.job(&format!("j{i}")).await.unwrap().unwrap().status,
            JobStatus::Running
        );
    }
    // Read-your-writes: a settled job is in the database.
    writer.put(running("fresh", Some("n1"))).await;
    writer.settle("fresh").await;
    assert_eq!(db.job("fresh").await.unwrap().unwrap().node.as_deref(), Some("n1"));
    // An end written elsewhere (a cancel) is not written over, and the caller is told.
    assert!(db.cancel_job("j0", 2_000).await.unwrap().is_some());
    let late = Job {
        status: JobStatus::Succeeded,
        finished_at: Some(2_500),
        ..running("j0", Some("n1"))
    };
    assert!(!writer.put_acked(late).await);
    assert_eq!(db.job("j0").await.unwrap().unwrap().status, JobStatus::Cancelled);
    // A row without its node (a failure recorded from the job as first taken) keeps the node.
    let failed = Job {
        status: JobStatus::Failed,
        error: Some("broke".into()),
        finished_at: Some(3_000),
        ..running("fresh", None)
    };
    assert!(writer.put_acked(failed).await);
    let fresh = db.job("fresh").await.unwrap().unwrap();
    assert_eq!((fresh.status, fresh.node.as_deref()), (JobStatus::Failed, Some("n1")));
    // A later attempt's row is not written over by an earlier one's.
    assert!(
        writer
            .put_acked(Job {
                attempt: 2,
                ..running("j1", Some("n2"))
            })
            .await
    );
    assert!(
        !writer
            .put_acked(Job {
                status: JobStatus::Failed,
                ..running("j1", Some("n1"))
            })
            .await
    );
    assert_eq!(db.job("j1").await.unwrap().unwrap().node.as_deref(), Some("n2"));
    // A clean stop commits what waits; afterwards rows are written by their callers.
    let waiting = writer.put(running("at-stop", None));
    waiting.await;
    stop.cancel();
    task.await.unwrap();
    assert!(db.job("at-stop").await.unwrap().is_some());
    assert!(writer.put_acked(running("after-stop", None)).await);
    assert!(db.job("after-stop").await.unwrap().is_some());
}

/// A held row (a stream's running row) is not written while held; a newer row of the job (its
/// end) replaces it, so only that is written; a read through the writer, its hold passing or a
/// stop write it. A row nobody waits for waits for company, up to its gathering time, unless a
/// read asks for it.
async fn a_held_job_row_is_replaced_by_a_newer_one_or_written_when_read_or_due(backend: Backend) {
    let t = TestDb::new(backend);
    let db = t.open().await;
    let settings = |hold| JobWriterSettings {
        hold,
        gather: hold,
        ..Default::default()
    };
    let writer = JobWriter::new(db.clone(), settings(Duration::from_secs(3600)));
    let stop = CancellationToken::new();
    let task = tokio::spawn(writer.clone().run(stop.clone()));
    // Replaced by its end: only the end is written, and nothing stays behind.
    writer.put_later(running("short", Some("n1"))).await;
    // A commit after it does not take it.
    let other = writer.put(running("other", None)).await;
    writer.committed(other).await;
    assert!(db.job("other").await.unwrap().is_some());
    assert!(db.job("short").await.unwrap().is_none(), "a held row was written");
    let done = Job {
        status: JobStatus::Succeeded,
        finished_at: Some(2_000),
        ..running("short", Some("n1"))
    };
    // Its end waits for company (an hour here): a row somebody waits for takes it along in its
    // commit, which starts at once. (`join!` polls in order: the end is handed over first.)
    let (ended, ()) = tokio::join!(writer.put_acked_batched(done), async {
        let other = writer.put(running("other-2", None)).await;
        writer.committed(other).await;
    });
    assert!(ended);
    assert_eq!(db.job("short").await.unwrap().unwrap().status, JobStatus::Succeeded);
    assert_eq!(writer.backlog(), 0);
    // Alone and not read, it waits all of its gathering time.
    let end = tokio::spawn({
        let writer = writer.clone();
        async move { writer.put_acked_batched(running("lonely", None)).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while writer.backlog() == 0 {
        assert!(std::time::Instant::now() < deadline, "the row was never handed over");
        tokio::task::yield_now().await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), async {
            while db.job("lonely").await.unwrap().is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .is_err(),
        "a row nobody waits for was committed before its gathering time"
    );
    writer.settle("lonely").await;
    let end = tokio::time::timeout(Duration::from_secs(10), end);
    assert!(end.await.expect("committed once read").unwrap());
    // Read through the writer: written at once.
    writer.put_later(running("read", Some("n2"))).await;
    writer.settle("read").await;
    assert_eq!(db.job("read").await.unwrap().unwrap().node.as_deref(), Some("n2"));
    // A listing of a client's jobs writes that client's held rows, and not another's.
    let of = |id: &str, client: &str| Job {
        client: client.to_string(),
        ..running(id, Some("n2"))
    };
    writer.put_later(of("mine", "key:a")).await;
    writer.put_later(of("theirs", "key:b")).await;
    writer.flush_for("key:a").await;
    assert!(db.job("mine").await.unwrap().is_some());
    assert!(
        db.job("theirs").await.unwrap().is_none(),
        "another client's hold was cut short"
    );
    writer.flush().await;
    assert!(db.job("theirs").await.unwrap().is_some());
    // A stop writes what is held.
    writer.put_later(running("at-stop", Some("n3"))).await;
    stop.cancel();
    task.await.unwrap();
    assert!(db.job("at-stop").await.unwrap().is_some());
    // Its hold passed: written without a read.
    let writer = JobWriter::new(db.clone(), settings(Duration::from_millis(50)));
    let stop = CancellationToken::new();
    let task = tokio::spawn(writer.clone().run(stop.clone()));
    writer.put_later(running("long", Some("n4"))).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while writer.backlog() > 0 {
        assert!(std::time::Instant::now() < deadline, "the held row was never written");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(db.job("long").await.unwrap().unwrap().status, JobStatus::Running);
    // A row nobody waits for is committed once its gathering time has passed.
    let done = Job {
        status: JobStatus::Succeeded,
        finished_at: Some(3_000),
        ..running("long", Some("n4"))
    };
    let end = tokio::time::timeout(Duration::from_secs(10), writer.put_acked_batched(done));
    assert!(end.await.expect("committed within its gathering time"));
    stop.cancel();
    task.await.unwrap();
    // A writer full of held rows still takes a row somebody waits for: the held ones go first.
    let writer = JobWriter::new(
        db.clone(),
        JobWriterSettings {
            capacity: 4,
            ..settings(Duration::from_secs(3600))
        },
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(writer.clone().run(stop.clone()));
    for i in 0..4 {
        writer.put_later(running(&format!("held-{i}"), None)).await;
    }
    let waited = tokio::time::timeout(Duration::from_secs(10), writer.put_acked(running("waited", None)));
    assert!(waited.await.expect("a full writer made room"));
    assert!(db.job("held-0").await.unwrap().is_some());
    stop.cancel();
    task.await.unwrap();
}

/// Migration 7 fills the ledger's day sums from the rows already there (on a database that had a
/// ledger before it), per node, day, operator and containers; later rows add to them.
async fn a_ledger_written_before_the_day_sums_is_summed_by_their_migration(backend: Backend) {
    let t = TestDb::new(backend);
    let day = 20_000 * 86_400_000_i64;
    {
        let old = Db::open_before(&t.settings, Some(7)).await.unwrap();
        for (id, at, outcome, price, operator) in [
            ("a", day + 5, "succeeded", Some(1.5), None),
            ("b", day + 9, "failed", None, None),
            ("c", day + 86_400_000, "succeeded", Some(2.0), None),
            ("d", day + 7, "succeeded", Some(0.25), Some("op1")),
        ] {
            let sql = "INSERT INTO ledger (job_id, client, node, operator, containers, started_at, finished_at, \
                       outcome, duration_ms, price) VALUES ($1, 'addr:x', 'n', $2, '[\"x\"]', $3, $3, $4, 100, $5)";
            with_pool!(old, |p| {
                sqlx::query(sql)
                    .bind(id)
                    .bind(operator)
                    .bind(at)
                    .bind(outcome)
                    .bind(price)
                    .execute(p)
                    .await
                    .unwrap();
            });
        }
        old.close().await;
    }
    let db = Db::open(&t.settings).await.unwrap();
    let sql = "SELECT day, operator, jobs, succeeded, earned, duration_ms, succeeded_ms FROM ledger_days \
               ORDER BY day, operator";
    let sums: Vec<(i64, String, i64, i64, f64, i64, i64)> =
        with_pool!(db, |p| sqlx::query_as(sql).fetch_all(p).await.unwrap());
    assert_eq!(
        sums,
        [
            (20_000, String::new(), 2, 1, 1.5, 200, 100),
            (20_000, "op1".to_string(), 1, 1, 0.25, 100, 100),
            (20_001, String::new(), 1, 1, 2.0, 100, 100)
        ]
    );
}

/// Which replica holds a link: the newest hello wins, a holder's close does not take a link that
/// moved on, renewals keep a replica's rows fresh and rows not renewed lapse.
async fn a_links_holder_is_recorded_renewed_moved_and_lapses(backend: Backend) {
    use infernet_router::db::link_holders::Holding;
    let t = TestDb::new(backend);
    let db = t.open().await;
    let at = |node: &'static str, replica: &'static str, now: i64| Holding {
        node,
        replica,
        replica_url: if replica == "a" {
            "http://a:4100"
        } else {
            "http://b:4100"
        },
        announce: r#"{"containers":[]}"#,
        operators: "[]",
        now,
    };
    db.hold_link(&at("n1", "a", 1_000)).await.unwrap();
    db.hold_link(&at("n2", "a", 1_000)).await.unwrap();
    let seen_by_b = db.peer_links("b", 0, 10).await.unwrap();
    assert_eq!(
        seen_by_b
            .iter()
            .map(|l| (l.node.as_str(), l.replica_url.as_str()))
            .collect::<Vec<_>>(),
        [("n1", "http://a:4100"), ("n2", "http://a:4100")]
    );
    assert!(
        db.peer_links("a", 0, 10).await.unwrap().is_empty(),
        "a replica's own links are not its peers'"
    );
    // n1 moves to b; a's close of its old link leaves b's row.
    db.hold_link(&at("n1", "b", 2_000)).await.unwrap();
    db.release_link("n1", "a").await.unwrap();
    db.update_link_announce("n1", "a", r#"{"stale":true}"#).await.unwrap();
    let n1 = db.peer_links("a", 0, 10).await.unwrap();
    assert_eq!((n1.len(), n1[0].replica.as_str()), (1, "b"));
    assert_eq!(
        n1[0].announce, r#"{"containers":[]}"#,
        "a no longer writes n1's announce"
    );
    db.update_link_announce("n1", "b", r#"{"containers":[],"pending":3}"#)
        .await
        .unwrap();
    assert!(db.peer_links("a", 0, 10).await.unwrap()[0].announce.contains("pending"));
    // a renews its rows; b does not: only b's row lapses.
    assert_eq!(db.refresh_links("a", 9_000).await.unwrap(), 1);
    assert_eq!(db.peer_links("b", 5_000, 10).await.unwrap().len(), 1);
    assert!(db.peer_links("a", 5_000, 10).await.unwrap().is_empty());
    assert_eq!(db.expire_links(5_000).await.unwrap(), 1);
    assert_eq!(db.peer_links("x", 0, 10).await.unwrap().len(), 1);
    // A stopping replica releases all it holds.
    assert_eq!(db.release_replica("a").await.unwrap(), 1);
    assert!(db.peer_links("x", 0, 10).await.unwrap().is_empty());
}

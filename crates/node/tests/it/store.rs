//! One suite, run against both backends (a real `redis-server` for Redis).

use std::{net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use infernet_types::{ContainerResult, JobResult, JobStatus};
use serde_json::{Value, json};

use infernet_node::store::{EmbeddedStore, INTERRUPTED, JobStore, Lifetimes, ListFilter, RedisStore, StoredJob};

use crate::support::RedisServer;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn done(id: &str) -> JobResult {
    JobResult::finished(
        id,
        vec![
            ContainerResult::Output {
                container: "a".into(),
                output: json!({"step": 1}),
            },
            ContainerResult::Output {
                container: "b".into(),
                output: json!({"step": 2}),
            },
        ],
    )
}

const LONG: Lifetimes = Lifetimes {
    pending: Duration::from_secs(900),
    result: None,
};

/// A backend under test, reopenable to simulate a restart.
enum Backend {
    Embedded {
        _dir: tempfile::TempDir,
        path: PathBuf,
        max_jobs: u64,
    },
    Redis {
        server: RedisServer,
    },
}

impl Backend {
    fn embedded(max_jobs: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        Self::Embedded {
            _dir: dir,
            path,
            max_jobs,
        }
    }

    fn redis() -> Self {
        Self::Redis {
            server: RedisServer::start(),
        }
    }

    async fn open(&self, lifetimes: Lifetimes) -> Arc<dyn JobStore> {
        match self {
            Self::Embedded { path, max_jobs, .. } => {
                Arc::new(EmbeddedStore::open(path, lifetimes, *max_jobs).await.unwrap())
            }
            Self::Redis { server } => Arc::new(RedisStore::connect("127.0.0.1", server.port, lifetimes).await.unwrap()),
        }
    }
}

async fn lifecycle(backend: Backend) {
    let store = backend.open(LONG).await;
    let alice = ip("192.0.2.1");
    store.put(alice, &JobResult::running("j1")).await.unwrap();
    assert_eq!(store.pending_count().await.unwrap(), 1);
    assert_eq!(store.list(alice, ListFilter::Pending).await.unwrap(), vec!["j1"]);
    assert!(store.list(alice, ListFilter::Completed).await.unwrap().is_empty());
    let got = store.get(&["j1".into()]).await.unwrap();
    assert_eq!(
        got,
        vec![StoredJob {
            owner: alice,
            job: JobResult::running("j1")
        }]
    );

    store.put(alice, &done("j1")).await.unwrap();
    assert_eq!(store.pending_count().await.unwrap(), 0);
    assert_eq!(store.list(alice, ListFilter::Completed).await.unwrap(), vec!["j1"]);
    assert!(store.list(alice, ListFilter::Pending).await.unwrap().is_empty());
    let got = store.get(&["j1".into()]).await.unwrap();
    assert_eq!(got[0].job.status, JobStatus::Success);
    assert_eq!(got[0].job, done("j1"));
}

async fn scoping_and_order(backend: Backend) {
    let store = backend.open(LONG).await;
    let alice = ip("192.0.2.1");
    let bob = ip("::1");
    store.put(alice, &done("a1")).await.unwrap();
    store.put(alice, &JobResult::running("a2")).await.unwrap();
    store.put(bob, &done("b1")).await.unwrap();
    let mut alice_ids = store.list(alice, ListFilter::All).await.unwrap();
    alice_ids.sort();
    assert_eq!(alice_ids, vec!["a1", "a2"]);
    // IPv6 owners get whole ids back (Ritual's node mangled them).
    assert_eq!(store.list(bob, ListFilter::All).await.unwrap(), vec!["b1"]);
    assert!(
        store
            .list(ip("198.51.100.9"), ListFilter::All)
            .await
            .unwrap()
            .is_empty()
    );
    // By id from anywhere, in the order asked, duplicates once, unknown ids left out.
    let ids: Vec<String> = ["b1", "nope", "a1", "b1"].iter().map(|s| s.to_string()).collect();
    let got = store.get(&ids).await.unwrap();
    let got: Vec<(&str, IpAddr)> = got.iter().map(|j| (j.job.id.as_str(), j.owner)).collect();
    assert_eq!(got, vec![("b1", bob), ("a1", alice)]);
}

async fn restart_keeps_results_and_fails_running(backend: Backend) {
    let alice = ip("192.0.2.1");
    {
        let store = backend.open(LONG).await;
        store.put(alice, &done("kept")).await.unwrap();
        store.put(alice, &JobResult::running("cut")).await.unwrap();
    }
    let store = backend.open(LONG).await;
    let got = store.get(&["kept".into(), "cut".into()]).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].job, done("kept"));
    assert_eq!(got[1].job.status, JobStatus::Failed);
    assert!(matches!(&got[1].job.result, Some(ContainerResult::Error { error, .. }) if error == INTERRUPTED));
    assert_eq!(store.pending_count().await.unwrap(), 0);
}

async fn lifetimes_expire(backend: Backend) {
    let short = Lifetimes {
        pending: Duration::from_secs(1),
        result: Some(Duration::from_secs(1)),
    };
    let store = backend.open(short).await;
    let alice = ip("192.0.2.1");
    store.put(alice, &JobResult::running("p")).await.unwrap();
    store.put(alice, &done("d")).await.unwrap();
    assert_eq!(store.get(&["p".into(), "d".into()]).await.unwrap().len(), 2);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(store.get(&["p".into(), "d".into()]).await.unwrap().is_empty());
    assert!(store.list(alice, ListFilter::All).await.unwrap().is_empty());
}

#[tokio::test]
async fn embedded_lifecycle() {
    lifecycle(Backend::embedded(100)).await;
}
#[tokio::test]
async fn redis_lifecycle() {
    lifecycle(Backend::redis()).await;
}
#[tokio::test]
async fn embedded_scoping_and_order() {
    scoping_and_order(Backend::embedded(100)).await;
}
#[tokio::test]
async fn redis_scoping_and_order() {
    scoping_and_order(Backend::redis()).await;
}
#[tokio::test]
async fn embedded_restart() {
    restart_keeps_results_and_fails_running(Backend::embedded(100)).await;
}
#[tokio::test]
async fn redis_restart() {
    restart_keeps_results_and_fails_running(Backend::redis()).await;
}
#[tokio::test]
async fn embedded_lifetimes() {
    lifetimes_expire(Backend::embedded(100)).await;
}
#[tokio::test]
async fn redis_lifetimes() {
    lifetimes_expire(Backend::redis()).await;
}

#[tokio::test]
async fn embedded_evicts_least_recently_used() {
    let backend = Backend::embedded(3);
    let store = backend.open(LONG).await;
    let alice = ip("192.0.2.1");
    for id in ["1", "2", "3"] {
        store.put(alice, &done(id)).await.unwrap();
    }
    // Reading "1" makes "2" the least recently used.
    assert_eq!(store.get(&["1".into()]).await.unwrap().len(), 1);
    store.put(alice, &done("4")).await.unwrap();
    let mut ids = store.list(alice, ListFilter::All).await.unwrap();
    ids.sort();
    assert_eq!(ids, vec!["1", "3", "4"]);
    drop(store);
    // The eviction reached the file too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let store = backend.open(LONG).await;
    let mut ids = store.list(alice, ListFilter::All).await.unwrap();
    ids.sort();
    assert_eq!(ids, vec!["1", "3", "4"]);
}

#[tokio::test]
async fn a_full_embedded_store_evicts_a_hundredth_at_a_time() {
    let store = Backend::embedded(300).open(LONG).await;
    let alice = ip("192.0.2.1");
    for i in 0..300 {
        store.put(alice, &done(&format!("j{i}"))).await.unwrap();
    }
    assert_eq!(store.list(alice, ListFilter::All).await.unwrap().len(), 300);
    // One job over the bound evicts the four oldest (down to 297); the next three evict nothing.
    store.put(alice, &done("j300")).await.unwrap();
    let ids = store.list(alice, ListFilter::All).await.unwrap();
    assert_eq!(ids.len(), 297);
    for gone in ["j0", "j1", "j2", "j3"] {
        assert!(!ids.iter().any(|id| id == gone), "{gone} should be evicted");
    }
    assert!(ids.iter().any(|id| id == "j4") && ids.iter().any(|id| id == "j300"));
    for i in 301..304 {
        store.put(alice, &done(&format!("j{i}"))).await.unwrap();
    }
    assert_eq!(store.list(alice, ListFilter::All).await.unwrap().len(), 300);
}

#[tokio::test]
async fn a_full_embedded_store_sweeps_out_the_oldest_rows_and_keeps_touched_ones() {
    let backend = Backend::embedded(6400);
    let alice = ip("192.0.2.1");
    {
        let store = backend.open(LONG).await;
        for i in 0..6400 {
            store.put_detached(alice, done(&format!("j{i}")));
        }
        // Jobs read again are recent again: the eviction passes them by.
        assert_eq!(store.get(&["j10".into(), "j20".into()]).await.unwrap().len(), 2);
        // Over capacity: the 65 least recently used go at once (j0..j66 but j10 and j20).
        store.put(alice, &done("j6400")).await.unwrap();
    }
    // Reopened with room to spare, so only what the file holds decides what is listed.
    let Backend::Embedded { path, .. } = &backend else {
        unreachable!()
    };
    let store = EmbeddedStore::open(path, LONG, 100_000).await.unwrap();
    let ids = store.list(alice, ListFilter::All).await.unwrap();
    assert_eq!(ids.len(), 6336);
    let held = |id: &str| ids.iter().any(|i| i == id);
    assert!(held("j10") && held("j20") && held("j67") && held("j6400"));
    assert!(!held("j0") && !held("j11") && !held("j66"));
    let kept = store.get(&["j10".into(), "j67".into()]).await.unwrap();
    assert!(kept.iter().all(|j| j.job == done(&j.job.id)) && kept.len() == 2);
}

#[tokio::test]
async fn an_awaited_write_is_not_held_back_by_lingering_detached_ones() {
    // Detached writes may wait for company; a caller waiting for its own write must not wait
    // with them. The linger here is long enough that waiting it out would fail the test.
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with_linger(&dir.path().join("jobs.db"), LONG, 100_000, Duration::from_secs(60))
        .await
        .unwrap();
    let alice = ip("192.0.2.1");
    // Two waves make the writer busy, so the third one lingers.
    for wave in 0..3 {
        for i in 0..200 {
            store.put_detached(alice, done(&format!("w{wave}-{i}")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::timeout(Duration::from_secs(20), store.put(alice, &done("awaited")))
        .await
        .expect("the awaited write waited for the detached ones' linger")
        .unwrap();
    let got = store.get(&["awaited".into(), "w2-199".into()]).await.unwrap();
    assert_eq!(got.len(), 2);
}

async fn detached_writes_keep_their_order(backend: Backend) {
    let store = backend.open(LONG).await;
    let alice = ip("192.0.2.1");
    for i in 0..50 {
        let id = format!("s{i}");
        store.put_detached(alice, JobResult::running(&id));
        store.put_detached(alice, done(&id));
    }
    let ids: Vec<String> = (0..50).map(|i| format!("s{i}")).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = store.get(&ids).await.unwrap();
        if got.len() == 50 && got.iter().all(|j| j.job.status == JobStatus::Success) {
            break;
        }
        assert!(got.iter().all(|j| j.job.id.starts_with('s')));
        assert!(
            std::time::Instant::now() < deadline,
            "detached writes not applied in order"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.pending_count().await.unwrap(), 0);
}

#[tokio::test]
async fn embedded_detached_writes_are_read_at_once_in_order_and_kept() {
    let backend = Backend::embedded(1000);
    let alice = ip("192.0.2.1");
    {
        let store = backend.open(LONG).await;
        store.put(alice, &done("acked")).await.unwrap();
        for i in 0..200 {
            let id = format!("s{i}");
            store.put_detached(alice, JobResult::running(&id));
            store.put_detached(alice, done(&id));
        }
        // Whether a row is committed yet or still queued, a reader gets the latest write, in the
        // order asked.
        let asked = ["s199", "nobody", "acked", "s0", "s199"].map(String::from);
        let got = store.get(&asked).await.unwrap();
        let ids: Vec<&str> = got.iter().map(|j| j.job.id.as_str()).collect();
        assert_eq!(ids, ["s199", "acked", "s0"]);
        assert!(got.iter().all(|j| j.job == done(&j.job.id) && j.owner == alice));
        assert_eq!(store.pending_count().await.unwrap(), 0);
    }
    // Closing the store writes what is queued.
    let store = backend.open(LONG).await;
    let ids: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
    let got = store.get(&ids).await.unwrap();
    assert_eq!(got.len(), 200);
    assert!(got.iter().all(|j| j.job == done(&j.job.id)));
}

#[tokio::test]
async fn embedded_detached_order() {
    detached_writes_keep_their_order(Backend::embedded(100)).await;
}
#[tokio::test]
async fn redis_detached_order() {
    detached_writes_keep_their_order(Backend::redis()).await;
}

/// A job whose output is `size` bytes of version `version`.
fn versioned(id: &str, version: usize, size: usize) -> JobResult {
    JobResult::finished(
        id,
        vec![ContainerResult::Output {
            container: "a".into(),
            output: json!({"version": version, "pad": "x".repeat(size)}),
        }],
    )
}

fn version_of(job: &StoredJob) -> u64 {
    match &job.job.result {
        Some(ContainerResult::Output { output, .. }) => output["version"].as_u64().unwrap(),
        other => panic!("unexpected result {other:?}"),
    }
}

#[tokio::test]
async fn a_torn_or_damaged_tail_is_cut_off_kept_aside_and_the_rest_survives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let alice = ip("192.0.2.1");
    {
        let store = EmbeddedStore::open(&path, LONG, 100).await.unwrap();
        for i in 0..5 {
            store.put(alice, &done(&format!("j{i}"))).await.unwrap();
        }
    }
    let whole = std::fs::read(&path).unwrap();
    // A write cut short by a crash: a frame head that promises more than follows.
    let torn = [&200u32.to_le_bytes()[..], &[0xab; 4], b"{\"id\":"].concat();
    std::fs::write(&path, [whole.as_slice(), &torn].concat()).unwrap();
    {
        let store = EmbeddedStore::open(&path, LONG, 100).await.unwrap();
        let ids: Vec<String> = (0..5).map(|i| format!("j{i}")).collect();
        assert_eq!(store.get(&ids).await.unwrap().len(), 5);
        assert_eq!(std::fs::read(&path).unwrap(), whole, "the torn frame is cut off");
        assert_eq!(std::fs::read(dir.path().join("jobs.db.damaged")).unwrap(), torn);
        // Writing goes on after the cut.
        store.put(alice, &done("after")).await.unwrap();
    }
    // A flipped byte in the last record: that record goes, the ones before it stay.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let store = EmbeddedStore::open(&path, LONG, 100).await.unwrap();
    let got = store.get(&["j4".into(), "after".into()]).await.unwrap();
    assert_eq!(got.iter().map(|j| j.job.id.as_str()).collect::<Vec<_>>(), ["j4"]);
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    // Both cuts are kept, in order.
    let kept = std::fs::read(dir.path().join("jobs.db.damaged")).unwrap();
    assert_eq!(kept, [torn.as_slice(), &bytes[whole.len()..]].concat());
}

#[tokio::test]
async fn a_file_of_superseded_records_is_compacted_while_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let alice = ip("192.0.2.1");
    let ids: Vec<String> = (0..50).map(|i| format!("job-{i}")).collect();
    let store = Arc::new(EmbeddedStore::open(&path, LONG, 1000).await.unwrap());
    // A reader that keeps asking for every job while the file is rewritten under it.
    let reader = {
        let (store, ids) = (store.clone(), ids.clone());
        tokio::spawn(async move {
            let mut reads = 0;
            loop {
                let got = store.get(&ids).await.expect("a read failed during compaction");
                if got.len() == ids.len() && got.iter().all(|j| version_of(j) == 79) {
                    return reads;
                }
                reads += 1;
                tokio::task::yield_now().await;
            }
        })
    };
    // A job written once stays live across every compaction.
    store.put(alice, &done("keeper")).await.unwrap();
    // 80 versions of 50 jobs of ~4 KB: ~16 MB written, ~200 KB live: several compactions.
    for version in 0..80 {
        for id in &ids {
            store.put(alice, &versioned(id, version, 4000)).await.unwrap();
        }
    }
    let reads = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(reads > 0);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 10 << 20, "the file was not compacted: {size} bytes");
    drop(store);
    let store = EmbeddedStore::open(&path, LONG, 1000).await.unwrap();
    let got = store.get(&ids).await.unwrap();
    assert_eq!(got.len(), 50);
    assert!(got.iter().all(|j| version_of(j) == 79));
    assert!(!dir.path().join("jobs.db.compact").exists());
    // After a restart (the replay leaves the file's position at its end) compaction goes on.
    for version in 80..160 {
        for id in &ids {
            store.put(alice, &versioned(id, version, 4000)).await.unwrap();
        }
    }
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(
        size < 10 << 20,
        "the file was not compacted after a restart: {size} bytes"
    );
    let got = store.get(&["keeper".into(), ids[7].clone()]).await.unwrap();
    assert_eq!(got[0].job, done("keeper"));
    assert_eq!(version_of(&got[1]), 159);
}

/// A store file as earlier builds wrote it: the records (JSON) in redb's `jobs` table, keyed 1, 2, …
fn write_redb(path: &std::path::Path, records: &[Value]) {
    let table: redb::TableDefinition<'_, u64, &[u8]> = redb::TableDefinition::new("jobs");
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut rows = txn.open_table(table).unwrap();
        for (key, record) in (1u64..).zip(records) {
            rows.insert(key, serde_json::to_vec(record).unwrap().as_slice())
                .unwrap();
        }
    }
    txn.commit().unwrap();
}

#[tokio::test]
async fn a_store_file_of_the_earlier_redb_format_is_converted_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.redb");
    let mut records: Vec<Value> = [("old-1", "192.0.2.1"), ("old-2", "192.0.2.2")]
        .into_iter()
        .map(|(id, owner)| json!({"id": id, "owner": owner, "expires": 0, "job": done(id)}))
        .collect();
    records.push(json!({"id": "old-3", "owner": "192.0.2.1", "expires": 0, "job": JobResult::running("old-3")}));
    write_redb(&path, &records);
    let store = EmbeddedStore::open(&path, LONG, 100).await.unwrap();
    let got = store
        .get(&["old-1".into(), "old-2".into(), "old-3".into()])
        .await
        .unwrap();
    assert_eq!(
        got[0],
        StoredJob {
            owner: ip("192.0.2.1"),
            job: done("old-1")
        }
    );
    assert_eq!(got[1].owner, ip("192.0.2.2"));
    // A job running when the old build stopped is reported failed, as after any restart.
    assert_eq!(got[2].job.status, JobStatus::Failed);
    assert_eq!(&std::fs::read(&path).unwrap()[..8], b"INFJOBS1");
    assert_eq!(
        store.list(ip("192.0.2.1"), ListFilter::All).await.unwrap(),
        ["old-1", "old-3"]
    );
}

#[tokio::test]
async fn a_store_file_in_use_by_another_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let _first = EmbeddedStore::open(&path, LONG, 100).await.unwrap();
    let err = EmbeddedStore::open(&path, LONG, 100)
        .await
        .err()
        .expect("a second store opened the file");
    assert!(err.to_string().contains("another node"), "{err}");
    // And a file that is not a job store is not taken for one.
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, "some notes of mine").unwrap();
    let err = EmbeddedStore::open(&other, LONG, 100)
        .await
        .err()
        .expect("a text file opened as a store");
    assert!(err.to_string().contains("not an Infernet job store"), "{err}");
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "some notes of mine");
}

#[tokio::test]
async fn a_record_superseded_before_it_is_written_never_reaches_the_file() {
    // A stream's running record is superseded by its result within milliseconds: only the
    // result is written. The long linger keeps every write queued until the store closes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let alice = ip("192.0.2.1");
    {
        let store = EmbeddedStore::open_with_linger(&path, LONG, 1000, Duration::from_secs(60))
            .await
            .unwrap();
        for i in 0..100 {
            let id = format!("s{i}");
            store.put_detached(alice, JobResult::running(&id));
            store.put_detached(alice, done(&id));
        }
        // Queued, not written: still answered from memory.
        assert_eq!(store.get(&["s7".into()]).await.unwrap()[0].job, done("s7"));
    }
    let file = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&file);
    assert_eq!(text.matches(r#""status":"success""#).count(), 100);
    assert!(
        !text.contains(r#""status":"running""#),
        "a superseded running record was written"
    );
    let store = EmbeddedStore::open(&path, LONG, 1000).await.unwrap();
    assert_eq!(store.list(alice, ListFilter::Completed).await.unwrap().len(), 100);
}

#[tokio::test]
async fn a_node_on_the_default_store_name_takes_over_the_earlier_default_file_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("infernet-jobs.redb");
    write_redb(
        &legacy,
        &[json!({"id": "kept", "owner": "192.0.2.1", "expires": 0, "job": done("kept")})],
    );
    let path = dir.path().join("infernet-jobs.db");
    let config = dir.path().join("config.json");
    std::fs::write(&config, json!({"store": {"path": path}, "containers": []}).to_string()).unwrap();
    let loaded = infernet_node::config::load(&config).unwrap();
    let valid = infernet_node::config::validate(loaded.config, &loaded.unknown_keys).unwrap();
    let store = infernet_node::store::open(&valid).await.unwrap();
    assert_eq!(store.get(&["kept".into()]).await.unwrap()[0].job, done("kept"));
    assert!(!legacy.exists(), "the earlier file was left beside the new one");
    assert_eq!(&std::fs::read(&path).unwrap()[..8], b"INFJOBS1");
}

#[tokio::test]
async fn a_file_of_jobs_expired_while_the_node_was_down_is_compacted_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let alice = ip("192.0.2.1");
    let short = Lifetimes {
        pending: Duration::from_secs(900),
        result: Some(Duration::from_secs(1)),
    };
    {
        let store = EmbeddedStore::open(&path, short, 10_000).await.unwrap();
        // ~6 MB of results that expire after a second.
        for i in 0..1500 {
            store.put(alice, &versioned(&format!("j{i}"), 0, 4000)).await.unwrap();
        }
    }
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 5 << 20, "{size}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Reopened and left alone: no write comes to trigger it.
    let _store = EmbeddedStore::open(&path, short, 10_000).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&path).unwrap().len() > 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "the expired records were not compacted away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! Every accepted job ends when its store goes away mid-run: Redis stopped and restarted, a full
//! filesystem under the embedded store. A result the store cannot take is held, shown to readers
//! and written once the store takes writes again; the node keeps answering throughout.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Json, Router, routing::post};
use infernet_node::store::{EmbeddedStore, JobStore, Lifetimes, RedisStore};
use infernet_types::JobStatus;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::support::{TestNode, client, free_port, get_json, serve, submit, unmanaged};

const JOBS: usize = 10;
const WAIT: Duration = Duration::from_secs(20);
const LIFETIMES: Lifetimes = Lifetimes {
    pending: Duration::from_secs(900),
    result: None,
};

/// A container service that holds every call until it is opened.
pub(crate) struct Gate {
    pub(crate) port: u16,
    arrived: Arc<AtomicUsize>,
    open: watch::Sender<bool>,
}

impl Gate {
    pub(crate) async fn start() -> Self {
        let arrived = Arc::new(AtomicUsize::new(0));
        let (open, opened) = watch::channel(false);
        let counter = arrived.clone();
        let port = serve(Router::new().route(
            "/service_output",
            post(move || {
                let (counter, mut opened) = (counter.clone(), opened.clone());
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = opened.wait_for(|open| *open).await;
                    // Large enough that a record never fits in what is left of a page.
                    Json(json!({"answer": 42, "padding": "x".repeat(8192)}))
                }
            }),
        ))
        .await;
        Self { port, arrived, open }
    }

    pub(crate) async fn wait_for_calls(&self, n: usize) {
        until(&format!("{n} calls at the container"), || async {
            self.arrived.load(Ordering::SeqCst) >= n
        })
        .await;
    }

    pub(crate) fn open(&self) {
        self.open.send_replace(true);
    }
}

pub(crate) async fn until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gauge of the node's `/metrics`.
async fn gauge(node: &TestNode, name: &str) -> Option<f64> {
    let response = client().get(node.at("/metrics")).send().await.ok()?;
    assert_eq!(response.status(), 200, "/metrics answers whatever the store does");
    let text = response.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Submits `JOBS` jobs to the gated container and waits until each is running there.
async fn start_jobs(node: &TestNode, gate: &Gate) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..JOBS {
        ids.push(submit(node, json!({"containers": ["held"], "data": {}})).await);
    }
    gate.wait_for_calls(JOBS).await;
    ids
}

/// `GET /api/jobs` of all `ids` at once: the status and the body.
async fn read_jobs(node: &TestNode, ids: &[String]) -> (u16, String) {
    let query: Vec<String> = ids.iter().map(|id| format!("id={id}")).collect();
    let response = client()
        .get(node.at(&format!("/api/jobs?{}", query.join("&"))))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Asserts that every job of `ids` reads back finished with the container's answer.
fn assert_all_finished(body: &str, ids: &[String]) {
    let jobs: Vec<Value> = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(jobs.len(), ids.len(), "{body}");
    for job in jobs {
        assert_eq!(job["status"], "success", "{job}");
        assert_eq!(job["result"]["output"]["answer"], 42, "{job}");
    }
}

/// A `redis-server` with an append-only file that survives a stop, on a fixed loopback port.
struct AofRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl AofRedis {
    fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for these tests (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether Redis answers a read (not only accepts connections, nor says it is loading).
    fn answers(&self) -> bool {
        let Ok(mut con) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut reply = [0u8; 64];
        con.write_all(b"EXISTS probe\r\n").is_ok() && con.read(&mut reply).is_ok_and(|n| reply[..n].starts_with(b":"))
    }

    /// Stops Redis at once (SIGKILL; every write is in the append-only file already).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for AofRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn jobs_that_finish_while_redis_is_down_end_and_reads_answer_as_soon_as_it_is_back() {
    let mut redis = AofRedis::start();
    let gate = Gate::start().await;
    let node = TestNode::start(json!({
        "manage_containers": false,
        "containers": [unmanaged("held", gate.port)],
        "redis": {"host": "127.0.0.1", "port": redis.port},
        "store": {"retry_max_delay": 0.2},
    }))
    .await;
    let ids = start_jobs(&node, &gate).await;

    redis.stop();
    gate.open();
    until("every result to be held", || async {
        gauge(&node, "infernet_store_unwritten_records").await == Some(JOBS as f64)
    })
    .await;
    assert_eq!(gauge(&node, "infernet_store_up").await, Some(0.0));
    // While Redis is away, reads say so rather than show the jobs running.
    let (status, body) = read_jobs(&node, &ids).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("redis"), "{body}");

    redis.spawn();
    // The first read once Redis answers again succeeds and finds every job finished.
    let (status, body) = read_jobs(&node, &ids).await;
    assert_eq!(status, 200, "the first read after Redis is back: {body}");
    assert_all_finished(&body, &ids);
    let info: Value = get_json(&client(), node.at("/info")).await;
    assert_eq!(info["pending"]["offchain"], 0, "{info}");
    assert_eq!(gauge(&node, "infernet_store_unwritten_records").await, Some(0.0));
    // And the results are in Redis, for any node reading it.
    let store = RedisStore::connect("127.0.0.1", redis.port, LIFETIMES).await.unwrap();
    let stored = store.get(&ids).await.unwrap();
    assert_eq!(stored.len(), JOBS);
    assert!(stored.iter().all(|s| s.job.status == JobStatus::Success));
}

#[tokio::test]
async fn a_result_written_detached_while_redis_is_down_is_written_once_it_is_back() {
    let mut redis = AofRedis::start();
    let store = RedisStore::connect_with(
        "127.0.0.1",
        redis.port,
        LIFETIMES,
        infernet_node::store::Backlog {
            first_retry: Duration::from_millis(20),
            max_retry: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let owner = "127.0.0.1".parse().unwrap();
    store
        .put(owner, &infernet_types::JobResult::running("s"))
        .await
        .unwrap();
    redis.stop();
    // A stream's records: running, then finished, with nobody waiting on either.
    store.put_detached(owner, infernet_types::JobResult::running("s"));
    let done = infernet_types::JobResult::finished("s", vec![]);
    store.put_detached(owner, done.clone());
    redis.spawn();
    until("the held record to be written", || async { store.unwritten() == 0 }).await;
    assert_eq!(store.pending_count().await.unwrap(), 0);
    let fresh = RedisStore::connect("127.0.0.1", redis.port, LIFETIMES).await.unwrap();
    assert_eq!(fresh.get(&["s".into()]).await.unwrap()[0].job, done);
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (and says why) when this process may not mount.
    fn mount(size: &str) -> Option<Self> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            eprintln!("skipped: mounting a small tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs failed");
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the filesystem with a file; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test]
async fn jobs_that_finish_on_a_full_disk_end_and_are_written_once_space_frees() {
    let Some(tmpfs) = Tmpfs::mount("1m") else { return };
    let path = tmpfs.path().join("jobs.db");
    let gate = Gate::start().await;
    let mut node = TestNode::start(json!({
        "manage_containers": false,
        "containers": [unmanaged("held", gate.port)],
        "store": {"path": path, "retry_max_delay": 0.2},
    }))
    .await;
    let ids = start_jobs(&node, &gate).await;

    let filler = tmpfs.fill();
    gate.open();
    until("every result to be held", || async {
        gauge(&node, "infernet_store_unwritten_records").await == Some(JOBS as f64)
    })
    .await;
    // Readers see every job finished, none running.
    let (status, body) = read_jobs(&node, &ids).await;
    assert_eq!(status, 200, "{body}");
    assert_all_finished(&body, &ids);
    let info: Value = get_json(&client(), node.at("/info")).await;
    assert_eq!(info["pending"]["offchain"], 0, "{info}");
    // A new job is refused, saying why, while the disk is full.
    let response = client()
        .post(node.at("/api/jobs"))
        .json(&json!({"containers": ["held"], "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let error = response.text().await.unwrap();
    assert!(error.contains("No space left"), "{error}");
    let listed: Vec<String> = get_json(&client(), node.at("/api/jobs?pending=true")).await;
    assert!(listed.is_empty(), "a refused job is not left running: {listed:?}");

    std::fs::remove_file(filler).unwrap();
    until("the held results to be written", || async {
        gauge(&node, "infernet_store_unwritten_records").await == Some(0.0)
    })
    .await;
    let running = node.node.take().unwrap();
    running.shutdown();
    running.wait().await.unwrap();
    // Written for good: a store opened afresh reads them finished, not interrupted.
    let store = EmbeddedStore::open(&path, LIFETIMES, 1000).await.unwrap();
    let stored = store.get(&ids).await.unwrap();
    assert_eq!(stored.len(), JOBS);
    assert!(stored.iter().all(|s| s.job.status == JobStatus::Success), "{stored:?}");
}

#[tokio::test]
async fn a_streams_records_written_detached_on_a_full_disk_are_kept_and_written_once_space_frees() {
    let Some(tmpfs) = Tmpfs::mount("256k") else { return };
    let path = tmpfs.path().join("jobs.db");
    let tuning = infernet_node::store::Tuning {
        detached_linger: Duration::ZERO,
        backlog: infernet_node::store::Backlog {
            first_retry: Duration::from_millis(20),
            max_retry: Duration::from_millis(100),
            ..Default::default()
        },
    };
    let store = EmbeddedStore::open_with(&path, LIFETIMES, 1000, tuning).await.unwrap();
    let owner = "127.0.0.1".parse().unwrap();
    let filler = tmpfs.fill();
    // Too large to fit in what is left of the file's last page.
    let output = json!({"output": "y".repeat(16 << 10)});
    let done = infernet_types::JobResult::finished(
        "s",
        vec![infernet_types::ContainerResult::Output {
            container: "c".into(),
            output,
        }],
    );
    store.put_detached(owner, infernet_types::JobResult::running("s"));
    store.put_detached(owner, done.clone());
    // An awaited write comes after them: refused, so they were tried and not taken either.
    let refused = store.put(owner, &infernet_types::JobResult::running("probe")).await;
    assert!(refused.unwrap_err().to_string().contains("No space left"));
    assert_eq!(store.unwritten(), 1, "the finished record is held");
    assert!(store.get(&["probe".into()]).await.unwrap().is_empty());
    assert_eq!(store.get(&["s".into()]).await.unwrap()[0].job, done);
    assert_eq!(store.pending_count().await.unwrap(), 0);

    std::fs::remove_file(filler).unwrap();
    until("the held record to be written", || async { store.unwritten() == 0 }).await;
    drop(store);
    let reopened = EmbeddedStore::open(&path, LIFETIMES, 1000).await.unwrap();
    assert_eq!(reopened.get(&["s".into()]).await.unwrap()[0].job, done);
}

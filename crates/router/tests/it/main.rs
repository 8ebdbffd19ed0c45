//! Router tests against real `infernet-node` processes on loopback; [`hardening`] against
//! in-process fake and hostile nodes; [`db`] the database layer on SQLite and PostgreSQL; [`link`]
//! nodes that dial in over their link; [`replicas`] several routers on one database sharing
//! their links; [`ui`] the control interface, over HTTP and in Chromium.

/// Each test `async fn name(Backend)` runs as `name::sqlite` and `name::postgres` (`Backend` as
/// the calling module names it: [`db::Backend`]).
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

mod alerts;
mod db;
mod gateway;
mod hardening;
mod ledger;
mod link;
mod replicas;
mod signed;
mod ui;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use axum::{Json, Router, routing::post};
use infernet_router::{
    Settings,
    address::NodeAddr,
    monitor::ProbeSettings,
    registry::{Hysteresis, Limits},
    resources::FanOut,
};
use infernet_testkit::{free_port, wait_healthy, workspace_binary};
use serde_json::{Value, json};

/// A container service whose calls take `delay` (to give a node load).
async fn service(delay: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new().route(
        "/service_output",
        post(move || async move {
            tokio::time::sleep(delay).await;
            Json(json!({"ok": true}))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// An `infernet-node` process.
struct NodeProc {
    child: Child,
    port: u16,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl NodeProc {
    fn start(containers: Value) -> Self {
        Self::start_with(containers, json!({}))
    }

    /// A node with extra top-level config keys.
    fn start_with(containers: Value, extra: Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.json");
        let mut body = json!({
                "server": {"port": port, "bind": "127.0.0.1", "rate_limit": {"num_requests": 100000, "period": 1}},
                "manage_containers": false,
                "log": {"path": dir.path().join("node.log")},
                "store": {"path": dir.path().join("jobs.db")},
                "containers": containers
        });
        // One level deep: `server` settings join the port and address above.
        for (k, v) in extra.as_object().unwrap() {
            match (body.get_mut(k).and_then(Value::as_object_mut), v.as_object()) {
                (Some(base), Some(more)) => base.extend(more.clone()),
                _ => body[k] = v.clone(),
            }
        }
        std::fs::write(&config, body.to_string()).unwrap();
        let child = Self::spawn(&config, port);
        Self {
            child,
            port,
            config,
            _dir: dir,
        }
    }

    fn spawn(config: &std::path::Path, port: u16) -> Child {
        let child = Command::new(workspace_binary("infernet-node"))
            .args(["--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_healthy(port, Duration::from_secs(30));
        child
    }

    fn key(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.child = Self::spawn(&self.config, self.port);
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn settings(listed: &[String]) -> Settings {
    Settings {
        listed: listed.iter().map(|s| NodeAddr::parse(s).unwrap().unwrap()).collect(),
        probe: ProbeSettings {
            interval: Duration::from_millis(150),
            timeout: Duration::from_secs(1),
            concurrency: 16,
            max_body_bytes: 256 * 1024,
        },
        hysteresis: Hysteresis {
            leave_after: 2,
            return_after: 2,
        },
        requests_per_minute: 100_000,
        trusted_proxies: Vec::new(),
        registration_token: Some(infernet_service::secret::Secret::new("t0ken")),
        registration_ttl: Duration::from_secs(60),
        registrations: Limits {
            max_registrations: 1000,
            max_per_source: 1000,
        },
        resources: FanOut {
            concurrency: 16,
            deadline: Duration::from_secs(3),
            max_body_bytes: 256 * 1024,
            max_total_bytes: infernet_router::resources::DEFAULT_MAX_TOTAL_BYTES,
        },
        database: infernet_router::db::DbSettings::new("sqlite::memory:"),
        limits: Default::default(),
        gateway: infernet_router::gateway::GatewaySettings {
            key_file: tempfile::tempdir().unwrap().keep().join("router.nsec"),
            ..Default::default()
        },
        alerts: infernet_router::alerts::AlertSettings {
            interval: Duration::from_millis(100),
            retry: infernet_service::retry::RetryPolicy {
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(200),
                max_attempts: 8,
            },
            allow_private: true,
            ..Default::default()
        },
        tls: None,
        ui: Default::default(),
    }
}

async fn router(settings: Settings) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = infernet_router::start(settings, listener).await.unwrap();
    let url = format!("http://{}", running.addr);
    // Runs until the test's runtime ends.
    tokio::spawn(running.wait());
    url
}

fn client() -> reqwest::Client {
    infernet_service::install_tls_provider();
    reqwest::Client::new()
}

async fn get(url: String) -> (u16, Value) {
    let r = client().get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The body of `GET url`, as text.
async fn text(url: String) -> String {
    client().get(url).send().await.unwrap().text().await.unwrap()
}

/// Polls job `id` of the router at `url` until it has ended.
async fn ended(url: &str, id: &str) -> Value {
    ended_with(&client(), url, id, Duration::from_secs(15)).await
}

/// [`ended`] with `http` (a client trusting a test CA, say), for at most `within`.
async fn ended_with(http: &reqwest::Client, url: &str, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let r = http.get(format!("{url}/api/v1/jobs/{id}")).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{text}");
        let job: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        if job["status"] != "running" {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} never ended: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `POST /api/v1/jobs/stream` of a job of container `x` to the router at `url`: the answer as
/// its head came.
async fn post_stream_x(url: &str) -> reqwest::Response {
    client()
        .post(format!("{url}/api/v1/jobs/stream"))
        .json(&json!({"containers": ["x"], "data": {}}))
        .send()
        .await
        .unwrap()
}

/// Streams a job of container `x` (whose service answers `{"ok": true}`) through the router at
/// `url`: checks the answer is the router's id line, then the node's output; the id.
async fn stream_x(url: &str) -> String {
    let r = post_stream_x(url).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let (id, output) = text.split_once('\n').unwrap();
    assert_eq!(serde_json::from_str::<Value>(output).unwrap(), json!({"ok": true}));
    id.to_string()
}

/// Polls `url` until `check` accepts the JSON answer.
async fn eventually(url: String, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v) = get(url.clone()).await;
        if check(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never satisfied the check; last answer {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn keys(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn filters_by_containers_and_external_and_orders_by_load() {
    let slow = service(Duration::from_secs(30)).await;
    let fast = service(Duration::ZERO).await;
    let a = NodeProc::start(json!([{"id": "x", "port": slow}]));
    let b = NodeProc::start(json!([{"id": "x", "port": fast}, {"id": "y", "port": fast, "description": "why"}]));
    let c = NodeProc::start(json!([{"id": "y", "port": fast}, {"id": "z", "port": fast, "external": false}]));
    // The three forms operators write: host:port, http:// URL, and with a comment.
    let url = router(settings(&[
        a.key(),
        format!("http://{}/", b.key()),
        format!("{} # third", c.key()),
    ]))
    .await;

    let both = eventually(format!("{url}/api/v1/ips?container=x&n=5"), |v| keys(v).len() == 2).await;
    let mut both = keys(&both);
    both.sort();
    let mut expected = vec![a.key(), b.key()];
    expected.sort();
    assert_eq!(both, expected);
    assert_eq!(
        keys(&get(format!("{url}/api/v1/ips?container=x&container=y")).await.1),
        vec![b.key()]
    );
    assert!(
        keys(&get(format!("{url}/api/v1/ips?container=z")).await.1).is_empty(),
        "z is not external"
    );

    // Load node a with three running jobs: b comes first for x.
    for _ in 0..3 {
        let r = client()
            .post(format!("http://{}/api/jobs", a.key()))
            .json(&json!({"containers": ["x"], "data": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..20 {
        let order = eventually(format!("{url}/api/v1/ips?container=x"), |v| {
            keys(v).first() == Some(&b.key())
        })
        .await;
        assert_eq!(keys(&order), vec![b.key(), a.key()]);
    }
    assert_eq!(
        keys(&get(format!("{url}/api/v1/ips?container=x&n=1&offset=1")).await.1),
        vec![a.key()]
    );

    let (status, containers) = get(format!("{url}/api/v1/containers")).await;
    assert_eq!(status, 200);
    let find = |id: &str| {
        containers
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(find("x")["count"], 2);
    assert_eq!(find("y"), json!({"id": "y", "count": 2, "description": "why"}));
}

#[tokio::test]
async fn a_node_that_goes_down_leaves_after_the_hysteresis_and_comes_back() {
    let fast = service(Duration::ZERO).await;
    let mut a = NodeProc::start(json!([{"id": "x", "port": fast}]));
    let url = router(settings(&[a.key()])).await;
    let ips = format!("{url}/api/v1/ips?container=x");
    eventually(ips.clone(), |v| keys(v) == vec![a.key()]).await;
    a.kill();
    let gone = Instant::now();
    eventually(ips.clone(), |v| keys(v).is_empty()).await;
    // Two failed probes at 150 ms: not before ~150 ms (one round may already have been due).
    assert!(
        gone.elapsed() >= Duration::from_millis(100),
        "left after {:?}",
        gone.elapsed()
    );
    let nodes = get(format!("{url}/api/v1/nodes")).await.1;
    assert!(
        nodes[0]["last_error"].as_str().unwrap().contains("unreachable"),
        "{nodes}"
    );
    a.restart();
    eventually(ips, |v| keys(v) == vec![a.key()]).await;
}

#[tokio::test]
async fn registration_and_static_list_merge_into_one_entry() {
    let fast = service(Duration::ZERO).await;
    let a = NodeProc::start(json!([{"id": "x", "port": fast}]));
    let d = NodeProc::start(json!([{"id": "x", "port": fast}]));
    let url = router(settings(&[a.key()])).await;
    let beat = |address: String| {
        client()
            .post(format!("{url}/api/v1/register"))
            .bearer_auth("t0ken")
            .json(&json!({"address": address, "containers": [{"id": "x", "description": "", "external": true}], "pending": {"offchain": 0, "onchain": 0}}))
            .send()
    };
    assert_eq!(beat(format!("http://{}", a.key())).await.unwrap().status(), 200);
    assert_eq!(beat(d.key()).await.unwrap().status(), 200);
    let nodes = get(format!("{url}/api/v1/nodes")).await.1;
    let addresses: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses.len(), 2, "{nodes}");
    let ips = eventually(format!("{url}/api/v1/ips?container=x&n=10"), |v| keys(v).len() == 2).await;
    assert!(keys(&ips).contains(&d.key()));
    let wrong = client()
        .post(format!("{url}/api/v1/register"))
        .bearer_auth("nope")
        .json(&json!({"containers": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

#[tokio::test]
async fn bad_parameters_are_400_and_rate_limit_is_not_spoofable() {
    let mut s = settings(&[]);
    s.requests_per_minute = 5;
    let url = router(s).await;
    let (status, body) = get(format!("{url}/api/v1/ips")).await;
    assert_eq!((status, body), (400, json!({"error": "No containers specified"})));
    for q in [
        "container=x&n=0",
        "container=x&n=abc",
        "container=x&offset=-1",
        "container=x&n=101",
    ] {
        let (status, body) = get(format!("{url}/api/v1/ips?{q}")).await;
        assert_eq!(status, 400, "{q}: {body}");
    }
    // Those were 5 requests on the same route: the limit. A forged X-Forwarded-For does not help.
    let r = client()
        .get(format!("{url}/api/v1/ips?container=x"))
        .header("x-forwarded-for", "203.0.113.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // Other routes have their own budget.
    assert_eq!(get(format!("{url}/health")).await.0, 200);
    let metrics = text(format!("{url}/metrics")).await;
    assert!(
        metrics.contains("infernet_router_requests_total{route=\"/api/v1/ips\"} 6"),
        "{metrics}"
    );
    // The stream route (answered by the router's front, not the app's layers) spends the job
    // routes' budget, says what is left, and is counted as they are.
    let job = |route: &'static str| {
        client()
            .post(format!("{url}{route}"))
            .json(&json!({"containers": ["x"], "data": {}}))
            .send()
    };
    for (i, route) in ["/api/v1/jobs/stream", "/api/v1/jobs", "/api/v1/jobs/stream"]
        .into_iter()
        .enumerate()
    {
        let r = job(route).await.unwrap();
        assert_eq!(r.status(), 503, "{route}: no node serves x");
        assert_eq!(
            r.headers()["ratelimit-remaining"],
            (4 - i).to_string().as_str(),
            "{route}"
        );
    }
    job("/api/v1/jobs").await.unwrap();
    job("/api/v1/jobs/stream").await.unwrap();
    let r = job("/api/v1/jobs/stream").await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let metrics = text(format!("{url}/metrics")).await;
    assert!(
        metrics.contains("infernet_router_requests_total{route=\"/api/v1/jobs\"} 6"),
        "{metrics}"
    );
}

#[test]
fn sigterm_exits_0_and_bad_settings_exit_2() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let ips = dir.path().join("ips.txt");
    std::fs::write(&ips, "127.0.0.1:1\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_infernet-router");
    let mut child = Command::new(bin)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--ips-file",
            ips.to_str().unwrap(),
        ])
        // The default database is created in the working directory.
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(dir.path().join("infernet-router.db").is_file());

    std::fs::write(&ips, "127.0.0.1:notaport\n").unwrap();
    let out = Command::new(bin)
        .args([
            "--ips-file",
            ips.to_str().unwrap(),
            "--refresh-interval",
            "0",
            "--database-url",
            "mysql://localhost/x",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid port")
            && stderr.contains("--refresh-interval")
            && stderr.contains("--database-url: unsupported scheme \"mysql\""),
        "{stderr}"
    );

    // PostgreSQL, listening on every address: the peers need --replica-url, and a checked one.
    let postgres = ["--database-url", "postgres://u@127.0.0.1:1/x", "--ips-file", "none.txt"];
    for (extra, said) in [
        (None, "--replica-url: with PostgreSQL"),
        (
            Some("http://u:p@10.0.0.5:4100/x"),
            "--replica-url: expected http(s)://host:port",
        ),
    ] {
        let out = Command::new(bin)
            .args(postgres)
            .args(extra.map(|u| ["--replica-url", u]).into_iter().flatten())
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(said), "{stderr}");
    }
}

#[tokio::test]
async fn a_node_with_a_stats_endpoint_registers_itself_by_heartbeat() {
    let fast = service(Duration::ZERO).await;
    let url = router(settings(&[])).await;
    let node = NodeProc::start_with(
        json!([{"id": "x", "port": fast, "description": "ex"}]),
        json!({"stats": {"endpoint": format!("{url}/api/v1/register"), "token": "t0ken", "interval": 0.2}}),
    );
    let ips = eventually(format!("{url}/api/v1/ips?container=x"), |v| !keys(v).is_empty()).await;
    assert_eq!(
        keys(&ips),
        vec![node.key()],
        "the router learnt the node from its heartbeat alone"
    );
    let nodes = get(format!("{url}/api/v1/nodes")).await.1;
    assert_eq!(nodes[0]["registered"], true);
    assert_eq!(nodes[0]["listed"], false);
    assert_eq!(nodes[0]["containers"], json!(["x"]));
}

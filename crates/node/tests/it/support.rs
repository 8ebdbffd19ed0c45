//! Test support: a real Redis, stub container services and in-process nodes on free ports.

use std::{
    net::{IpAddr, SocketAddr},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use futures::StreamExt;
use infernet_node::{Node, RunningNode, config};
use serde_json::{Value, json};

pub(crate) use infernet_testkit::free_port;

/// A `redis-server` on a free loopback port, killed on drop.
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub(crate) fn start() -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server must be installed for these tests (apt-get install redis-server; `make test` does it)",
            );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child, _dir: dir }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node running in this process on a free port.
pub(crate) struct TestNode {
    pub(crate) url: String,
    pub(crate) node: Option<RunningNode>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// Starts a node from config JSON; `store.path` defaults to a fresh temporary directory and the
    /// rate limit to a generous one.
    pub(crate) async fn start(config: Value) -> Self {
        Self::try_start(config)
            .await
            .unwrap_or_else(|e| panic!("node did not start: {e}"))
    }

    /// Like [`Self::start`], returning the start error instead of panicking.
    pub(crate) async fn try_start(mut config: Value) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let obj = config.as_object_mut().unwrap();
        obj.entry("store")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .unwrap()
            .entry("path")
            .or_insert_with(|| json!(dir.path().join("jobs.db").display().to_string()));
        let server = obj
            .entry("server")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .unwrap();
        server
            .entry("rate_limit")
            .or_insert_with(|| json!({"num_requests": 100000, "period": 1}));
        obj.entry("startup_wait").or_insert(json!(10));
        let loaded = config::parse(&config.to_string()).unwrap();
        let valid = config::validate(loaded.config, &loaded.unknown_keys).unwrap_or_else(|e| panic!("{e:?}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node = Node::new(valid).start_on(listener).await.map_err(|e| e.to_string())?;
        Ok(Self {
            url: format!("http://{}", node.addr),
            node: Some(node),
            _dir: dir,
        })
    }

    pub(crate) fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(node) = &self.node {
            node.shutdown();
        }
    }
}

/// An HTTP client; `from` picks the loopback source address (e.g. 127.0.0.2).
pub(crate) fn client_from(from: &str) -> reqwest::Client {
    infernet_node::install_tls_provider();
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// GETs `url` and decodes the JSON answer.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(client: &reqwest::Client, url: String) -> T {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

pub(crate) fn client() -> reqwest::Client {
    client_from("127.0.0.1")
}

/// Posts `body` to `POST /api/jobs/stream` of the node at `url`; the response's body is left to
/// read.
pub(crate) async fn open_stream(url: &str, body: serde_json::Value) -> reqwest::Response {
    client()
        .post(format!("{url}/api/jobs/stream"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Serves `router` on a free loopback port and returns the port.
pub(crate) async fn serve(router: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });
    port
}

/// Behaviours of stub container services.
#[derive(Clone, Copy)]
pub(crate) enum Stub {
    /// Answers `{"by": name, "received": <the whole request body>}`.
    Echo(&'static str),
    /// Answers HTTP 500 with a JSON body.
    Fails,
    /// Answers 200 with a body that is not JSON.
    NotJson,
    /// Answers after the given delay.
    Slow(Duration),
    /// Streams one chunk, then breaks the connection.
    BreaksMidStream,
    /// Streams `first `, then `second` once the gate is opened.
    Gated(&'static tokio::sync::Notify),
    /// Streams `tick ` the given number of times, a pause before each, then goes silent with
    /// the connection open.
    Trickle(usize, Duration),
    /// Streams 64 KiB pieces of `x` for as long as it is read.
    Flood,
    /// Streams this many bytes of `x` in 64 KiB pieces, then ends.
    Streams(usize),
    /// Answers a JSON string of about this many bytes, sent as it is made (no length announced).
    Huge(usize),
}

/// `pieces` 64 KiB pieces of `x`, or endless ones.
fn pieces(pieces: Option<usize>) -> Body {
    let piece = Bytes::from(vec![b'x'; 64 * 1024]);
    let endless = futures::stream::repeat(piece).map(Ok::<Bytes, std::io::Error>);
    match pieces {
        Some(n) => Body::from_stream(endless.take(n)),
        None => Body::from_stream(endless),
    }
}

/// Starts a stub container service; returns its port.
pub(crate) async fn stub(kind: Stub) -> u16 {
    let handler = move |body: Bytes| async move {
        let received: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match kind {
            Stub::Echo(name) => Json(json!({"by": name, "received": received})).into_response(),
            Stub::Fails => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"detail": "model exploded"})),
            )
                .into_response(),
            Stub::NotJson => "plain words".into_response(),
            Stub::Slow(delay) => {
                tokio::time::sleep(delay).await;
                Json(json!({"late": true})).into_response()
            }
            Stub::BreaksMidStream => {
                // The first chunk goes out with the headers; the break comes a little later.
                let chunks = futures::stream::unfold(0, |step| async move {
                    match step {
                        0 => Some((Ok::<Bytes, std::io::Error>(Bytes::from_static(b"first ")), 1)),
                        1 => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            Some((Err(std::io::Error::other("stub broke")), 2))
                        }
                        _ => None,
                    }
                });
                Response::new(Body::from_stream(chunks))
            }
            Stub::Gated(gate) => {
                let chunks = futures::stream::unfold(0, move |step| async move {
                    let chunk: &'static [u8] = match step {
                        0 => b"first ",
                        1 => {
                            gate.notified().await;
                            b"second"
                        }
                        _ => return None,
                    };
                    Some((Ok::<Bytes, std::io::Error>(Bytes::from_static(chunk)), step + 1))
                });
                Response::new(Body::from_stream(chunks))
            }
            Stub::Flood => Response::new(pieces(None)),
            Stub::Streams(bytes) => Response::new(pieces(Some(bytes.div_ceil(64 * 1024)))),
            Stub::Huge(bytes) => {
                let quote = || futures::stream::once(async { Bytes::from_static(b"\"") });
                let piece = Bytes::from(vec![b'x'; 64 * 1024]);
                let body = quote()
                    .chain(futures::stream::repeat(piece).take(bytes / (64 * 1024)))
                    .chain(quote())
                    .map(Ok::<Bytes, std::io::Error>);
                let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
                (json, Body::from_stream(body)).into_response()
            }
            Stub::Trickle(ticks, pause) => {
                let chunks = futures::stream::unfold(0, move |step| async move {
                    tokio::time::sleep(pause).await;
                    if step == ticks {
                        std::future::pending::<()>().await;
                    }
                    Some((Ok::<Bytes, std::io::Error>(Bytes::from_static(b"tick ")), step + 1))
                });
                Response::new(Body::from_stream(chunks))
            }
        }
    };
    serve(Router::new().route("/service_output", post(handler))).await
}

/// A container entry for a stub running on `port`.
pub(crate) fn unmanaged(id: &str, port: u16) -> Value {
    json!({"id": id, "port": port})
}

/// Polls `GET /api/jobs?id=` until the job is finished.
pub(crate) async fn wait_job(node: &TestNode, id: &str, intermediate: bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = node.at(&format!("/api/jobs?id={id}&intermediate={intermediate}"));
        let jobs: Value = get_json(&client(), url).await;
        if let Some(job) = jobs.as_array().and_then(|a| a.first())
            && job["status"] != "running"
        {
            return job.clone();
        }
        assert!(Instant::now() < deadline, "job {id} did not finish: {jobs}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Submits a job and returns its id.
pub(crate) async fn submit(node: &TestNode, body: Value) -> String {
    let response = client().post(node.at("/api/jobs")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let v: Value = response.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// A config with the hello-world service run by the node as a process.
pub(crate) fn hello_world_config() -> Value {
    json!({
        "containers": [{"id": "hello-world", "port": free_port(), "process": {"program": "hello-world"}}]
    })
}

/// The heartbeat inside a signed heartbeat body (`{"signed": <event>}`), after checking that the
/// node's key signed it and that it names that key as `node`.
pub(crate) fn heartbeat_of(body: &Value) -> Value {
    let event = body["signed"]
        .as_str()
        .unwrap_or_else(|| panic!("an unsigned heartbeat: {body}"));
    let checked = infernet_identity::statement::verify(event, "infernet-heartbeat", infernet_identity::unix_now(), 60)
        .unwrap_or_else(|e| panic!("a heartbeat that does not check out: {e}"));
    assert_eq!(
        checked.content["node"],
        infernet_identity::npub(&checked.signer),
        "signed by the node it names"
    );
    checked.content
}

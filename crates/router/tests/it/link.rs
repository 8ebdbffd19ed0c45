//! Nodes behind NAT: a node process that dials the router over its link serves jobs, streams
//! and batches through the gateway without the router ever connecting to it; and the router's
//! end against hand-made peers that speak another version, lie, or flood.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use infernet_identity::{Identity, statement};
use infernet_types::link::{self, Announce, AnnouncedContainer, HELLO_SUBJECT, HelloContent, Message, VERSION};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{WebSocketStream, tungstenite::Message as Ws};

use super::{
    NodeProc, client, ended, ended_with, eventually,
    gateway::{key_file, post},
    get, post_stream_x, router, service, settings, stream_x,
};

/// A router whose key is `key`, heartbeats on links every second; its URL.
async fn link_router(key: &Identity) -> String {
    let mut s = settings(&[]);
    s.gateway.key_file = key_file(key);
    s.gateway.dispatch_timeout = Duration::from_secs(5);
    s.gateway.link.heartbeat = Duration::from_secs(1);
    router(s).await
}

/// The link URL of the router at `url`.
pub(super) fn link_url(url: &str) -> String {
    format!("{}/api/v1/link", url.replacen("http://", "ws://", 1))
}

/// The linked nodes the router lists, by key.
fn linked(nodes: &Value) -> Vec<String> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["address"].as_str().is_some_and(|a| a.starts_with("npub1")) && n["available"] == true)
        .map(|n| n["address"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_linked_node_serves_jobs_streams_and_batches_named_by_its_key() {
    let (key, operator) = (Identity::generate(), Identity::generate());
    let fast = service(Duration::ZERO).await;
    let url = link_router(&key).await;
    let mut node = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"network": {"routers": [key.npub()], "url": link_url(&url)}, "operator": {"pubkeys": [operator.npub()]}}),
    );
    let nodes = eventually(format!("{url}/api/v1/nodes"), |v| linked(v).len() == 1).await;
    let npub = linked(&nodes)[0].clone();
    assert!(!npub.contains(&node.port.to_string()));

    // Not handed out by address; seen by the chooser under its key.
    let (_, ips) = get(format!("{url}/api/v1/ips?container=x")).await;
    assert_eq!(ips, json!([]), "a linked node has no address to hand out");
    let (_, route) = get(format!("{url}/api/v1/route?container=x")).await;
    assert_eq!(route["candidates"][0]["node"], json!(npub), "{route}");

    // Its operator manages it through the router, signing for the node's link address; the
    // router only relays, the node checks the signature.
    let relay = format!("{url}/api/v1/link/{npub}/admin/status");
    // A path that is no URI path once decoded (it stopped the node once): passed on as written,
    // answered by the node, which stays linked; what a node answers runs no script on the
    // router's origin.
    let odd_url = format!("infernet://{npub}/admin/a%20b");
    let odd = client()
        .get(format!("{url}/api/v1/link/{npub}/admin/a%20b"))
        .header(
            "authorization",
            infernet_identity::nip98::authorization(&operator, "GET", &odd_url, None),
        )
        .send()
        .await
        .unwrap();
    assert!([401, 404].contains(&odd.status().as_u16()), "{}", odd.status());
    assert_eq!(odd.headers()["x-content-type-options"], "nosniff");
    assert!(
        odd.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );
    let signed_for = |u: &str| infernet_identity::nip98::authorization(&operator, "GET", u, None);
    let r = client()
        .get(&relay)
        .header("authorization", signed_for(&format!("infernet://{npub}/admin/status")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap().is_object());
    for authorization in [signed_for(&relay), String::new()] {
        let r = client()
            .get(&relay)
            .header("authorization", authorization)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            401,
            "signed for the router's URL (refused by the node), or not signed (by the router)"
        );
    }
    // Signed by someone who is not its operator: refused by the router, never relayed (it would
    // spend the node's admin limit, which all relayed requests share).
    let r = client()
        .get(&relay)
        .header(
            "authorization",
            infernet_identity::nip98::authorization(
                &Identity::generate(),
                "GET",
                &format!("infernet://{npub}/admin/status"),
                None,
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("one of the node's operators"));
    let stranger = format!("{url}/api/v1/link/{}/admin/status", Identity::generate().npub());
    assert_eq!(client().get(stranger).send().await.unwrap().status(), 404);

    // An async job: placed on the node by its key, its result read back over the link.
    let (status, placed) = post(
        format!("{url}/api/v1/jobs"),
        &json!({"containers": ["x"], "data": {"n": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{placed}");
    assert_eq!(placed["node"], json!(npub));
    let done = ended(&url, placed["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["output"], json!({"ok": true}), "{done}");

    // A stream: the router's id, then the node's output.
    let stream_id = stream_x(&url).await;
    assert_eq!(ended(&url, &stream_id).await["status"], "succeeded");

    // A batch: many calls at once on the one link.
    let items: Vec<Value> = (0..40)
        .map(|n| json!({"containers": ["x"], "data": {"n": n}}))
        .collect();
    let (status, answers) = post(format!("{url}/api/v1/jobs/batch"), &json!(items)).await;
    assert_eq!(status, 200, "{answers}");
    let answers = answers.as_array().unwrap();
    assert!(answers.iter().all(|a| a["node"] == json!(npub)), "{answers:?}");
    for a in answers {
        assert_eq!(ended(&url, a["id"].as_str().unwrap()).await["status"], "succeeded");
    }

    // The link closes with the node: out of dispatch at once, not after probes.
    node.kill();
    let gone = Instant::now();
    eventually(format!("{url}/api/v1/nodes"), |v| linked(v).is_empty()).await;
    assert!(gone.elapsed() < Duration::from_secs(2), "{:?}", gone.elapsed());
    let (status, e) = post(format!("{url}/api/v1/jobs"), &json!({"containers": ["x"]})).await;
    assert_eq!(status, 503, "{e}");

    // Back on its next hello.
    node.restart();
    eventually(format!("{url}/api/v1/nodes"), |v| linked(v) == vec![npub.clone()]).await;
    let (status, placed) = post(format!("{url}/api/v1/jobs"), &json!({"containers": ["x"], "data": {}})).await;
    assert_eq!((status, placed["node"].clone()), (200, json!(npub)), "{placed}");
}

/// A hand-made peer of the router's link endpoint.
struct Peer {
    socket: WebSocketStream<TcpStream>,
    nonce: String,
    router: String,
}

impl Peer {
    async fn connect(url: &str) -> Self {
        let addr = url.trim_start_matches("http://");
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut socket, _) = tokio_tungstenite::client_async(link_url(url), tcp).await.unwrap();
        let Message::Challenge {
            versions,
            nonce,
            router,
        } = Self::read(&mut socket).await.0
        else {
            panic!("no challenge")
        };
        assert_eq!(versions, vec![VERSION]);
        Self { socket, nonce, router }
    }

    async fn read(socket: &mut WebSocketStream<TcpStream>) -> (Message, Vec<u8>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, socket.next())
                .await
                .expect("no frame in time")
            {
                Some(Ok(Ws::Binary(b))) => {
                    let (m, payload) = link::decode(&b).unwrap();
                    return (m, payload.to_vec());
                }
                Some(Ok(Ws::Ping(_) | Ws::Pong(_))) => continue,
                other => panic!("not a frame: {other:?}"),
            }
        }
    }

    async fn send(&mut self, m: &Message, payload: &[u8]) {
        self.socket
            .send(Ws::Binary(link::encode(m, payload).into()))
            .await
            .unwrap();
    }

    fn content(&self) -> HelloContent {
        HelloContent {
            nonce: self.nonce.clone(),
            router: self.router.clone(),
            version: VERSION,
            operators: vec![],
            announce: Announce {
                containers: vec![AnnouncedContainer {
                    id: "x".into(),
                    description: String::new(),
                    external: true,
                }],
                ..Default::default()
            },
        }
    }

    /// Says hello as `key` with `content`; the router's answer.
    async fn hello(&mut self, key: &Identity, version: u32, content: &HelloContent) -> Message {
        let statement = statement::sign(key, HELLO_SUBJECT, content).unwrap();
        self.send(&Message::Hello { version, statement }, b"").await;
        Self::read(&mut self.socket).await.0
    }
}

fn refused(m: &Message) -> &str {
    match m {
        Message::Refused { reason } => reason,
        other => panic!("not refused: {other:?}"),
    }
}

#[tokio::test]
async fn hellos_of_another_version_a_wrong_challenge_or_router_are_refused_by_name() {
    let key = Identity::generate();
    let url = link_router(&key).await;
    let node = Identity::generate();

    let mut p = Peer::connect(&url).await;
    let content = p.content();
    let answer = p.hello(&node, 9, &content).await;
    assert!(refused(&answer).contains("version 9"), "{answer:?}");

    let mut p = Peer::connect(&url).await;
    let mut content = p.content();
    content.nonce = "00".into();
    assert!(refused(&p.hello(&node, VERSION, &content).await).contains("challenge"));

    let mut p = Peer::connect(&url).await;
    let mut content = p.content();
    content.router = Identity::generate().npub();
    assert!(refused(&p.hello(&node, VERSION, &content).await).contains("meant for router"));

    // A statement signed by one key with another's signature spliced in: refused.
    let mut p = Peer::connect(&url).await;
    let content = p.content();
    let mut event: Value = serde_json::from_str(&statement::sign(&node, HELLO_SUBJECT, &content).unwrap()).unwrap();
    event["pubkey"] = json!(Identity::generate().public_key().to_hex());
    p.send(
        &Message::Hello {
            version: VERSION,
            statement: event.to_string(),
        },
        b"",
    )
    .await;
    assert!(refused(&Peer::read(&mut p.socket).await.0).contains("signature"));

    // A good hello is welcomed; a second link of the same key replaces the first.
    let mut first = Peer::connect(&url).await;
    let content = first.content();
    assert!(matches!(
        first.hello(&node, VERSION, &content).await,
        Message::Welcome { .. }
    ));
    let mut second = Peer::connect(&url).await;
    let content = second.content();
    assert!(matches!(
        second.hello(&node, VERSION, &content).await,
        Message::Welcome { .. }
    ));
    let replaced = Peer::read(&mut first.socket).await.0;
    assert!(refused(&replaced).contains("replaced"), "{replaced:?}");
    let nodes = eventually(format!("{url}/api/v1/nodes"), |v| linked(v).len() == 1).await;
    assert_eq!(linked(&nodes), vec![node.npub()]);
}

#[tokio::test]
async fn a_node_that_sends_past_its_credit_is_cut_off_and_the_job_fails_over() {
    let key = Identity::generate();
    let url = link_router(&key).await;
    let mut flood = Peer::connect(&url).await;
    let content = flood.content();
    assert!(matches!(
        flood.hello(&Identity::generate(), VERSION, &content).await,
        Message::Welcome { .. }
    ));
    eventually(format!("{url}/api/v1/nodes"), |v| linked(v).len() == 1).await;
    // A stream goes to it; it answers with far more chunks than its window, unasked.
    let stream = tokio::spawn({
        let url = url.clone();
        async move { post_stream_x(&url).await }
    });
    let (request, _) = Peer::read(&mut flood.socket).await;
    let Message::Request { call, path, .. } = request else {
        panic!("{request:?}")
    };
    assert_eq!(path, "/api/jobs/stream");
    flood
        .send(
            &Message::Head {
                call,
                status: 200,
                content_type: None,
            },
            b"",
        )
        .await;
    let mut cut = false;
    for _ in 0..10 * link::WINDOW {
        if flood
            .socket
            .send(Ws::Binary(link::encode(&Message::Chunk { call }, b"x\n").into()))
            .await
            .is_err()
        {
            cut = true;
            break;
        }
    }
    // The router says why and closes.
    let closing = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(ws)) = flood.socket.next().await {
            if let Ws::Binary(b) = ws
                && let Ok((Message::Refused { reason }, _)) = link::decode(&b)
            {
                return Some(reason);
            }
        }
        None
    })
    .await
    .unwrap();
    assert!(
        cut || closing.as_deref().is_some_and(|r| r.contains("credit")),
        "{closing:?}"
    );
    eventually(format!("{url}/api/v1/nodes"), |v| linked(v).is_empty()).await;
    // The client's stream ends broken, not hanging.
    let r = stream.await.unwrap();
    let text = tokio::time::timeout(Duration::from_secs(5), r.text()).await.unwrap();
    assert!(text.is_err() || !text.unwrap().contains("\n{"));
}

/// A job a linked node finished, that its client has not read yet, is finished in the router's
/// database too (and in its ledger) once it ran a lease: the link's loss for longer than its
/// lease then runs it nowhere again.
#[tokio::test]
async fn a_linked_job_done_but_unread_is_settled_and_never_run_again() {
    let key = Identity::generate();
    let t = super::db::TestDb::new(super::db::Backend::Sqlite);
    let mut s = settings(&[]);
    s.gateway.key_file = key_file(&key);
    s.gateway.link.heartbeat = Duration::from_secs(1);
    s.gateway.link.lease = Duration::from_millis(500);
    s.database = t.settings.clone();
    let url = router(s).await;
    let fast = service(Duration::ZERO).await;
    let _node = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"network": {"routers": [key.npub()], "url": link_url(&url)}}),
    );
    let nodes = eventually(format!("{url}/api/v1/nodes"), |v| linked(v).len() == 1).await;
    let npub = linked(&nodes)[0].clone();
    let (status, placed) = post(format!("{url}/api/v1/jobs"), &json!({"containers": ["x"], "data": {}})).await;
    assert_eq!(status, 200, "{placed}");
    let id = placed["id"].as_str().unwrap().to_string();
    let db = infernet_router::db::Db::open(&t.settings).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let job = db.job(&id).await.unwrap().unwrap();
        if job.status == infernet_router::db::jobs::JobStatus::Succeeded {
            break;
        }
        assert!(Instant::now() < deadline, "never settled: {job:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Filed in the ledger as a read would have; ended, it is no lease's to run again.
    super::ledger::ledger_row(&db, &npub, &id).await;
    assert_eq!(db.job(&id).await.unwrap().unwrap().attempt, 1);
}

/// One address may hold only so many links, starting ones included: a host that opens links
/// with fresh keys cannot fill the router; a place is given back when a link ends.
#[tokio::test]
async fn links_from_one_address_are_capped() {
    let key = Identity::generate();
    let mut s = settings(&[]);
    s.gateway.key_file = key_file(&key);
    s.gateway.link.max_per_source = 2;
    let url = router(s).await;
    let mut first = Peer::connect(&url).await;
    let content = first.content();
    assert!(matches!(
        first.hello(&Identity::generate(), VERSION, &content).await,
        Message::Welcome { .. }
    ));
    // Still in its handshake: it counts too.
    let _second = Peer::connect(&url).await;
    let refused = |url: String| async move {
        let tcp = TcpStream::connect(url.trim_start_matches("http://")).await.unwrap();
        match tokio_tungstenite::client_async(link_url(&url), tcp).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
            other => panic!("not refused: {other:?}"),
        }
    };
    assert_eq!(refused(url.clone()).await, 429);
    // Once the first link has ended (its place is given back as its session ends), a new one
    // is let in.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut socket = loop {
        let tcp = TcpStream::connect(url.trim_start_matches("http://")).await.unwrap();
        match tokio_tungstenite::client_async(link_url(&url), tcp).await {
            Ok((socket, _)) => break socket,
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 429 => {
                assert!(Instant::now() < deadline, "the first link's place was never given back");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let Message::Challenge { nonce, router, .. } = Peer::read(&mut socket).await.0 else {
        panic!("no challenge")
    };
    let mut third = Peer { socket, nonce, router };
    let content = third.content();
    assert!(matches!(
        third.hello(&Identity::generate(), VERSION, &content).await,
        Message::Welcome { .. }
    ));
}

/// A stream's receipt comes over the link with the stream's end, as a trailer does over HTTP:
/// the router files it without asking the node again (this node answers nothing else).
#[tokio::test]
async fn a_linked_nodes_stream_receipt_comes_with_its_end() {
    let key = Identity::generate();
    let t = super::db::TestDb::new(super::db::Backend::Sqlite);
    let mut s = settings(&[]);
    s.gateway.key_file = key_file(&key);
    s.gateway.dispatch_timeout = Duration::from_secs(5);
    s.database = t.settings.clone();
    let url = router(s).await;
    let node = Identity::generate();
    let mut peer = Peer::connect(&url).await;
    // A node that says it checks MACs gets MAC'd calls over its link, as over HTTP.
    let mut content = peer.content();
    content.announce.dispatch_mac = true;
    assert!(matches!(
        peer.hello(&node, VERSION, &content).await,
        Message::Welcome { .. }
    ));
    eventually(format!("{url}/api/v1/nodes"), |v| linked(v).len() == 1).await;
    let stream = tokio::spawn({
        let url = url.clone();
        async move {
            let r = post_stream_x(&url).await;
            r.text().await.unwrap()
        }
    });
    let (request, _) = Peer::read(&mut peer.socket).await;
    let Message::Request {
        call,
        path,
        authorization,
        ..
    } = request
    else {
        panic!("{request:?}")
    };
    assert_eq!(path, "/api/jobs/stream");
    assert!(
        authorization
            .as_deref()
            .is_some_and(infernet_identity::dispatch::is_mac),
        "{authorization:?}"
    );
    let head = Message::Head {
        call,
        status: 200,
        content_type: None,
    };
    peer.send(&head, b"").await;
    peer.send(&Message::Chunk { call }, b"node-job-1\nhello").await;
    let receipt = infernet_types::Receipt {
        job: "node-job-1".into(),
        containers: vec!["x".into()],
        status: "success".into(),
        duration_ms: 5,
        price: None,
        unit: None,
    };
    let signed = statement::sign(&node, infernet_types::RECEIPT_SUBJECT, &receipt).unwrap();
    let end = Message::End {
        call,
        error: None,
        trailers: [(infernet_types::RECEIPT_TRAILER.to_string(), signed)].into(),
    };
    peer.send(&end, b"").await;
    let text = stream.await.unwrap();
    let (id, output) = text.split_once('\n').unwrap_or_else(|| panic!("{text}"));
    assert_eq!(output, "hello");
    let db = infernet_router::db::Db::open(&t.settings).await.unwrap();
    let row = super::ledger::ledger_row(&db, &node.npub(), id).await;
    let filed =
        infernet_router::ledger::receipt::read(row.receipt.as_deref().expect("the receipt of the end")).unwrap();
    assert_eq!((filed.signer, filed.receipt), (node.public_key(), receipt));
}

#[tokio::test]
async fn a_job_whose_linked_node_vanished_after_accepting_runs_elsewhere_with_a_new_attempt() {
    let key = Identity::generate();
    let mut s = settings(&[]);
    s.gateway.key_file = key_file(&key);
    s.gateway.link.heartbeat = Duration::from_secs(1);
    s.gateway.link.lease = Duration::from_secs(1);
    let url = router(s).await;
    // Node a, hand-made: it accepts the job, then its link goes.
    let a_key = Identity::generate();
    let mut a = Peer::connect(&url).await;
    let content = a.content();
    assert!(matches!(
        a.hello(&a_key, VERSION, &content).await,
        Message::Welcome { .. }
    ));
    eventually(format!("{url}/api/v1/nodes"), |v| linked(v).len() == 1).await;
    let submit = tokio::spawn({
        let url = url.clone();
        async move {
            post(
                format!("{url}/api/v1/jobs"),
                &json!({"containers": ["x"], "data": {"n": 7}}),
            )
            .await
        }
    });
    let (request, body) = Peer::read(&mut a.socket).await;
    let Message::Request { call, method, path, .. } = request else {
        panic!("{request:?}")
    };
    assert_eq!((method.as_str(), path.as_str()), ("POST", "/api/jobs"));
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["data"], json!({"n": 7}));
    let head = Message::Head {
        call,
        status: 200,
        content_type: Some("application/json".into()),
    };
    a.send(&head, b"").await;
    a.send(&Message::Chunk { call }, br#"{"id": "a-1"}"#).await;
    a.send(
        &Message::End {
            call,
            error: None,
            trailers: Default::default(),
        },
        b"",
    )
    .await;
    let (status, placed) = submit.await.unwrap();
    assert_eq!((status, placed["node"].clone()), (200, json!(a_key.npub())), "{placed}");
    let id = placed["id"].as_str().unwrap().to_string();

    // Node b, a real one, links; a's link drops for good.
    let fast = service(Duration::ZERO).await;
    let b = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"network": {"routers": [key.npub()], "url": link_url(&url)}}),
    );
    let nodes = eventually(format!("{url}/api/v1/nodes"), |v| linked(v).len() == 2).await;
    let b_key = linked(&nodes).into_iter().find(|k| *k != a_key.npub()).unwrap();
    drop(a);
    let dropped = Instant::now();
    // Within the lease the job waits for a; past it, it runs on b, and b's result is the answer.
    let done = ended(&url, &id).await;
    assert!(
        dropped.elapsed() >= Duration::from_millis(900),
        "{:?}",
        dropped.elapsed()
    );
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["node"], json!(b_key), "{done}");
    assert_eq!(done["result"]["output"], json!({"ok": true}), "{done}");
    drop(b);
}

/// A CA and a server certificate it signed for `ips`, made with `openssl`: (CA, cert, key) paths.
fn certificates(dir: &std::path::Path, ips: &[&str]) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=link test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &["-keyout", "router.key", "-out", "router.csr", "-subj", "/CN=router"],
    ]
    .concat());
    let san: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
    std::fs::write(
        dir.join("ext.cnf"),
        format!(
            "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
            san.join(",")
        ),
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "router.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "router.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join("ca.pem"), dir.join("router.pem"), dir.join("router.key"))
}

/// A router on `bind` serving TLS with `cert` and `key`; its `host:port`.
async fn tls_router(key: &Identity, bind: &str, cert: std::path::PathBuf, tls_key: std::path::PathBuf) -> String {
    tls_router_leasing(key, bind, cert, tls_key, Duration::from_secs(60)).await
}

/// [`tls_router`] with links' jobs leased for `lease`.
async fn tls_router_leasing(
    key: &Identity,
    bind: &str,
    cert: std::path::PathBuf,
    tls_key: std::path::PathBuf,
    lease: Duration,
) -> String {
    let mut s = settings(&[]);
    s.gateway.key_file = key_file(key);
    s.gateway.link.heartbeat = Duration::from_secs(1);
    s.gateway.link.lease = lease;
    s.tls = Some((cert, tls_key));
    let listener = tokio::net::TcpListener::bind(format!("{bind}:0")).await.unwrap();
    let running = infernet_router::start(s, listener).await.unwrap();
    let port = running.addr.port();
    tokio::spawn(running.wait());
    format!("127.0.0.1:{port}")
}

/// A client trusting `ca`.
fn tls_client(ca: &std::path::Path) -> reqwest::Client {
    infernet_service::install_tls_provider();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder().tls_certs_only([ca]).build().unwrap()
}

#[tokio::test]
async fn links_over_tls_with_a_generated_certificate_and_a_wrong_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, tls_key) = certificates(dir.path(), &["127.0.0.1"]);
    let key = Identity::generate();
    let host = tls_router(&key, "127.0.0.1", cert, tls_key).await;
    let url = format!("https://{host}");
    let https = tls_client(&ca);
    let fast = service(Duration::ZERO).await;
    let node = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"network": {"routers": [key.npub()], "url": format!("wss://{host}/api/v1/link"), "ca_file": ca}}),
    );
    // A node that trusts another CA never links: the router's certificate is refused.
    let other = tempfile::tempdir().unwrap();
    let (wrong_ca, _, _) = certificates(other.path(), &["127.0.0.1"]);
    let _stranger = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"network": {"routers": [key.npub()], "url": format!("wss://{host}/api/v1/link"), "ca_file": wrong_ca}}),
    );
    let nodes_url = format!("{url}/api/v1/nodes");
    let deadline = Instant::now() + Duration::from_secs(15);
    let nodes = loop {
        let nodes: Value = https.get(&nodes_url).send().await.unwrap().json().await.unwrap();
        if !linked(&nodes).is_empty() {
            break nodes;
        }
        assert!(Instant::now() < deadline, "never linked over TLS: {nodes}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let npub = linked(&nodes)[0].clone();
    let placed: Value = https
        .post(format!("{url}/api/v1/jobs"))
        .json(&json!({"containers": ["x"], "data": {}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(placed["node"], json!(npub), "{placed}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let nodes: Value = https.get(&nodes_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(linked(&nodes), vec![npub], "only the node trusting the right CA linked");
    // Plain HTTP to a TLS listener gets no answer.
    assert!(client().get(format!("http://{host}/health")).send().await.is_err());
    drop(node);
}

/// A network namespace with a veth pair to this one: the node side is `10.213.N.2`, this side
/// `10.213.N.1`, and nothing from this side can open a connection into it (as behind NAT).
struct Namespace {
    name: String,
    host_ip: String,
    node_ip: String,
}

impl Namespace {
    fn ip(args: &[&str]) {
        let out = std::process::Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn new() -> Self {
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = (std::process::id() + 97 * made) % 250;
        let name = format!("infl{}-{made}", std::process::id());
        let (outer, inner) = (format!("vl{n}a"), format!("vl{n}b"));
        let _ = std::process::Command::new("ip").args(["netns", "del", &name]).output();
        let _ = std::process::Command::new("ip").args(["link", "del", &outer]).output();
        let (host_ip, node_ip) = (format!("10.213.{n}.1"), format!("10.213.{n}.2"));
        Self::ip(&["netns", "add", &name]);
        let ns = Self {
            name: name.clone(),
            host_ip: host_ip.clone(),
            node_ip: node_ip.clone(),
        };
        Self::ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner]);
        Self::ip(&["link", "set", &inner, "netns", &name]);
        Self::ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &outer]);
        Self::ip(&["link", "set", &outer, "up"]);
        Self::ip(&["-n", &name, "addr", "add", &format!("{node_ip}/24"), "dev", &inner]);
        Self::ip(&["-n", &name, "link", "set", &inner, "up"]);
        Self::ip(&["-n", &name, "link", "set", "lo", "up"]);
        // No connection may be opened into the namespace; its own go out and are answered.
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &name, "iptables", "-A", "INPUT", "-i", &inner])
            .args(["-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "iptables: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ns
    }

    /// An `infernet-node` in the namespace serving `x` at `service`, linked to the router on
    /// `port` of this side.
    fn node(
        &self,
        dir: &std::path::Path,
        node_port: u16,
        service: &str,
        router: &Identity,
        port: &str,
        ca: &std::path::Path,
    ) -> std::process::Child {
        let config = dir.join(format!("node-{node_port}.json"));
        std::fs::write(
            &config,
            json!({
                "server": {"port": node_port, "bind": "0.0.0.0", "rate_limit": {"num_requests": 100000, "period": 1}},
                "manage_containers": false,
                "log": {"path": dir.join(format!("node-{node_port}.log"))},
                "store": {"path": dir.join(format!("jobs-{node_port}.db"))},
                "containers": [{"id": "x", "url": service}],
                "network": {"routers": [router.npub()], "url": format!("wss://{}:{port}/api/v1/link", self.host_ip), "ca_file": ca},
            })
            .to_string(),
        )
        .unwrap();
        std::process::Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(infernet_testkit::workspace_binary("infernet-node"))
            .args(["--config", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Drops every packet in and out of the namespace (a cut cable).
    fn cut(&self) {
        for chain in ["INPUT", "OUTPUT"] {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &self.name, "iptables", "-I", chain, "-j", "DROP"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and so the pair.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[tokio::test]
async fn a_node_behind_nat_serves_jobs_streams_and_batches_through_its_link() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: network namespaces need root (CI runs as root)");
        return;
    }
    let ns = Namespace::new();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, tls_key) = certificates(dir.path(), &[&ns.host_ip, "127.0.0.1"]);
    let key = Identity::generate();
    let host = tls_router(&key, "0.0.0.0", cert, tls_key).await;
    let port = host.rsplit_once(':').unwrap().1.to_string();
    let url = format!("https://{host}");
    let https = tls_client(&ca);
    // The node's container, reachable from the namespace (the node calls out to it).
    let listener = tokio::net::TcpListener::bind(format!("{}:0", ns.host_ip))
        .await
        .unwrap();
    let service_url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/service_output",
        axum::routing::post(|| async { axum::Json(json!({"ok": true})) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let node_port = infernet_testkit::free_port();
    let mut node = ns.node(dir.path(), node_port, &service_url, &key, &port, &ca);
    let nodes_url = format!("{url}/api/v1/nodes");
    let deadline = Instant::now() + Duration::from_secs(30);
    let nodes = loop {
        let nodes: Value = https.get(&nodes_url).send().await.unwrap().json().await.unwrap();
        if !linked(&nodes).is_empty() {
            break nodes;
        }
        assert!(Instant::now() < deadline, "the node never linked: {nodes}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let npub = linked(&nodes)[0].clone();
    // Nothing reaches into the namespace from here: the node's own port is closed to us.
    let reach = tokio::time::timeout(
        Duration::from_secs(1),
        TcpStream::connect(format!("{}:{node_port}", ns.node_ip)),
    )
    .await;
    assert!(!matches!(reach, Ok(Ok(_))), "the node's port is reachable from outside");

    let post = |path: &'static str, body: Value| {
        let (https, url) = (https.clone(), url.clone());
        async move { https.post(format!("{url}{path}")).json(&body).send().await.unwrap() }
    };
    let ended = |id: String| {
        let (https, url) = (https.clone(), url.clone());
        async move { ended_with(&https, &url, &id, Duration::from_secs(15)).await }
    };
    let placed: Value = post("/api/v1/jobs", json!({"containers": ["x"], "data": {}}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(placed["node"], json!(npub), "{placed}");
    let done = ended(placed["id"].as_str().unwrap().to_string()).await;
    assert_eq!(
        (done["status"].clone(), done["result"]["output"].clone()),
        (json!("succeeded"), json!({"ok": true})),
        "{done}"
    );

    let text = post("/api/v1/jobs/stream", json!({"containers": ["x"], "data": {}}))
        .await
        .text()
        .await
        .unwrap();
    let (id, output) = text.split_once('\n').unwrap();
    assert_eq!(serde_json::from_str::<Value>(output).unwrap(), json!({"ok": true}));
    assert_eq!(ended(id.to_string()).await["status"], "succeeded");

    let items: Vec<Value> = (0..10)
        .map(|n| json!({"containers": ["x"], "data": {"n": n}}))
        .collect();
    let answers: Value = post("/api/v1/jobs/batch", json!(items)).await.json().await.unwrap();
    for a in answers.as_array().unwrap() {
        assert_eq!(a["node"], json!(npub), "{a}");
        assert_eq!(
            ended(a["id"].as_str().unwrap().to_string()).await["status"],
            "succeeded"
        );
    }
    let _ = node.kill();
    let _ = node.wait();
}

#[tokio::test]
async fn a_link_cut_mid_job_gives_the_client_one_result_from_another_node() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: network namespaces need root (CI runs as root)");
        return;
    }
    let ns = Namespace::new();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, tls_key) = certificates(dir.path(), &[&ns.host_ip, "127.0.0.1"]);
    let key = Identity::generate();
    let host = tls_router_leasing(&key, "0.0.0.0", cert, tls_key, Duration::from_secs(1)).await;
    let port = host.rsplit_once(':').unwrap().1.to_string();
    let url = format!("https://{host}");
    let https = tls_client(&ca);
    // Jobs take 2 s: long enough to cut the first node's link while it runs one.
    let listener = tokio::net::TcpListener::bind(format!("{}:0", ns.host_ip))
        .await
        .unwrap();
    let service_url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/service_output",
        axum::routing::post(|| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            axum::Json(json!({"ok": true}))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut first = ns.node(
        dir.path(),
        infernet_testkit::free_port(),
        &service_url,
        &key,
        &port,
        &ca,
    );
    let nodes_url = format!("{url}/api/v1/nodes");
    let linked_now = || {
        let (https, nodes_url) = (https.clone(), nodes_url.clone());
        async move {
            let nodes: Value = https.get(&nodes_url).send().await.unwrap().json().await.unwrap();
            linked(&nodes)
        }
    };
    let wait_for = |n: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let keys = linked_now().await;
            if keys.len() == n {
                return keys;
            }
            assert!(Instant::now() < deadline, "never {n} linked: {keys:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let a = wait_for(1).await.remove(0);
    let placed: Value = https
        .post(format!("{url}/api/v1/jobs"))
        .json(&json!({"containers": ["x"], "data": {}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(placed["node"], json!(a), "{placed}");
    let id = placed["id"].as_str().unwrap().to_string();
    // A second node, reachable over loopback, links; the first one's packets are dropped.
    let second = NodeProc::start_with(
        json!([{"id": "x", "url": service_url}]),
        json!({"network": {"routers": [key.npub()], "url": format!("wss://{host}/api/v1/link"), "ca_file": ca}}),
    );
    let b = wait_for(2).await.into_iter().find(|k| *k != a).unwrap();
    ns.cut();
    // The router notices the silence (3 heartbeats), waits out the lease, and runs it on b.
    let job = ended_with(&https, &url, &id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["node"], json!(b), "{job}");
    assert_eq!(job["result"]["output"], json!({"ok": true}), "{job}");
    // The first node dies; its answer never counts: the job reads the same from now on.
    let _ = first.kill();
    let _ = first.wait();
    let again: Value = https
        .get(format!("{url}/api/v1/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (again["status"].clone(), again["node"].clone()),
        (json!("succeeded"), json!(b))
    );
    drop(second);
}

#[tokio::test]
async fn a_reachable_node_serves_tls_and_the_gateway_dispatches_to_it_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, tls_key) = certificates(dir.path(), &["127.0.0.1"]);
    let key = Identity::generate();
    let fast = service(Duration::ZERO).await;
    let port = infernet_testkit::free_port();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({
            "server": {"port": port, "bind": "127.0.0.1", "tls": {"cert": cert, "key": tls_key},
                       "rate_limit": {"num_requests": 100000, "period": 1}},
            "manage_containers": false,
            "log": {"path": dir.path().join("node.log")},
            "store": {"path": dir.path().join("jobs.db")},
            "containers": [{"id": "x", "port": fast}],
            "network": {"routers": [key.npub()]},
        })
        .to_string(),
    )
    .unwrap();
    let child = std::process::Command::new(infernet_testkit::workspace_binary("infernet-node"))
        .args(["--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let node = NodeProc {
        child,
        port,
        config,
        _dir: dir,
    };
    let https = tls_client(&ca);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !https
        .get(format!("https://127.0.0.1:{port}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "the node never answered over TLS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        client()
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .is_err()
    );
    let mut s = settings(&[format!("https://127.0.0.1:{}", node.port)]);
    s.gateway.key_file = key_file(&key);
    s.gateway.node_roots = vec![reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap()];
    let url = router(s).await;
    // Probed over HTTPS, dispatched to and read back over HTTPS.
    eventually(format!("{url}/api/v1/ips?container=x"), |v| {
        v.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    let (status, placed) = post(format!("{url}/api/v1/jobs"), &json!({"containers": ["x"], "data": {}})).await;
    assert_eq!(
        (status, placed["node"].clone()),
        (200, json!(format!("127.0.0.1:{port}"))),
        "{placed}"
    );
    let done = ended(&url, placed["id"].as_str().unwrap()).await;
    assert_eq!(done["result"]["output"], json!({"ok": true}), "{done}");
}

/// A hand-made router on a free port, as `router_key`: it challenges each node that dials it,
/// then hands the socket and the node's answer (its hello) to `then`; its link URL.
async fn hand_made_router<F, Fut>(router_key: &Identity, then: F) -> String
where
    F: Fn(axum::extract::ws::WebSocket, Vec<u8>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use axum::extract::ws::{Message as AxWs, WebSocketUpgrade};
    let npub = router_key.npub();
    let app = axum::Router::new().route(
        "/api/v1/link",
        axum::routing::get(move |upgrade: WebSocketUpgrade| {
            let (npub, then) = (npub.clone(), then.clone());
            async move {
                upgrade.on_upgrade(move |mut socket| async move {
                    let challenge = Message::Challenge {
                        versions: vec![VERSION],
                        nonce: "n".into(),
                        router: npub,
                    };
                    let _ = socket.send(AxWs::Binary(link::encode(&challenge, b"").into())).await;
                    if let Some(Ok(AxWs::Binary(hello))) = socket.recv().await {
                        then(socket, hello.to_vec()).await;
                    }
                })
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("ws://{addr}/api/v1/link")
}

#[tokio::test]
async fn a_node_whose_router_falls_silent_links_again() {
    use axum::extract::ws::Message as AxWs;
    let router_key = Identity::generate();
    let welcomed = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = welcomed.clone();
    // A router that welcomes the node, then says nothing more (no frames, no pings) while it
    // keeps the connection open: as one that hung, or behind a NAT that forgot the connection.
    let url = hand_made_router(&router_key, move |mut socket, hello| {
        let counted = counted.clone();
        async move {
            let Ok((Message::Hello { statement, .. }, _)) = link::decode(&hello) else {
                return;
            };
            let event: Value = serde_json::from_str(&statement).unwrap();
            let key = infernet_identity::parse_public_key(event["pubkey"].as_str().unwrap()).unwrap();
            let welcome = Message::Welcome {
                node: infernet_identity::npub(&key),
                heartbeat_s: 1,
            };
            let _ = socket.send(AxWs::Binary(link::encode(&welcome, b"").into())).await;
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Reads (the node's heartbeats), answers nothing.
            while let Some(Ok(_)) = socket.recv().await {}
        }
    })
    .await;
    let fast = service(Duration::ZERO).await;
    let _node = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"network": {"routers": [router_key.npub()], "url": url}}),
    );
    // Three heartbeats of silence, then the node dials again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while welcomed.load(std::sync::atomic::Ordering::Relaxed) < 2 {
        assert!(Instant::now() < deadline, "the node never gave up on its silent router");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_node_logs_why_a_router_refused_its_link_and_retries() {
    use axum::extract::ws::Message as AxWs;
    let router_key = Identity::generate();
    let hellos = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = hellos.clone();
    // A router of a later version: it challenges, reads the hello, and refuses it.
    let url = hand_made_router(&router_key, move |mut socket, hello| {
        let counted = counted.clone();
        async move {
            if link::hello_version(&hello) == Some(VERSION) {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let reason = format!("link protocol version {VERSION} is not spoken by this router (it speaks 99)");
                let _ = socket
                    .send(AxWs::Binary(link::encode(&Message::Refused { reason }, b"").into()))
                    .await;
            }
        }
    })
    .await;
    let fast = service(Duration::ZERO).await;
    let node = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"network": {"routers": [router_key.npub()], "url": url}}),
    );
    let log = node.config.parent().unwrap().join("node.log");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("refused the link")
            && text.contains("it speaks 99")
            && hellos.load(std::sync::atomic::Ordering::Relaxed) >= 2
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node never logged the refusal, or never retried: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

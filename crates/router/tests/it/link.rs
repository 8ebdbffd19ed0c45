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
    NodeProc, client, eventually,
    gateway::{ended, get_json, key_file, post},
    router, service, settings,
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
fn link_url(url: &str) -> String {
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
    let key = Identity::generate();
    let fast = service(Duration::ZERO).await;
    let url = link_router(&key).await;
    let mut node = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"network": {"routers": [key.npub()], "url": link_url(&url)}}),
    );
    let nodes = eventually(format!("{url}/api/v1/nodes"), |v| linked(v).len() == 1).await;
    let npub = linked(&nodes)[0].clone();
    assert!(!npub.contains(&node.port.to_string()));

    // Not handed out by address; seen by the chooser under its key.
    let (_, ips) = get_json(format!("{url}/api/v1/ips?container=x")).await;
    assert_eq!(ips, json!([]), "a linked node has no address to hand out");
    let (_, route) = get_json(format!("{url}/api/v1/route?container=x")).await;
    assert_eq!(route["candidates"][0]["node"], json!(npub), "{route}");

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
    let r = client()
        .post(format!("{url}/api/v1/jobs/stream"))
        .json(&json!({"containers": ["x"], "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let (stream_id, output) = text.split_once('\n').unwrap();
    assert_eq!(serde_json::from_str::<Value>(output).unwrap(), json!({"ok": true}));
    assert_eq!(ended(&url, stream_id).await["status"], "succeeded");

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
        async move {
            client()
                .post(format!("{url}/api/v1/jobs/stream"))
                .json(&json!({"containers": ["x"], "data": {}}))
                .send()
                .await
                .unwrap()
        }
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
    a.send(&Message::End { call, error: None }, b"").await;
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

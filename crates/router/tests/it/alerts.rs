//! Alerts against real nodes: a stopped node fires `offline` once and resolves once, through a
//! webhook that fails twice first, and as Nostr direct messages through a real relay; a
//! container that fails every job trips the success rate, on a reachable node and on a linked
//! one; a silenced rule sends nothing; the operator's settings are checked field by field.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use futures::{SinkExt, StreamExt};
use infernet_identity::{
    Identity,
    dm::{self, Opened},
    nip98,
};
use infernet_router::alerts::{AlertSettings, deliver::Webhook};
use infernet_service::websocket::WsUrl;
use infernet_testkit::free_port;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::{NodeProc, client, eventually, gateway::key_file, router, settings};

/// A webhook receiver that answers 500 to its first `fail` requests, then records the bodies.
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<usize>>,
    bodies: Arc<Mutex<Vec<Value>>>,
    fail: usize,
}

impl Receiver {
    async fn start(fail: usize) -> (Self, String) {
        let receiver = Self {
            fail,
            ..Self::default()
        };
        let app = Router::new()
            .route(
                "/hook",
                post(|State(r): State<Receiver>, Json(body): Json<Value>| async move {
                    let n = {
                        let mut requests = r.requests.lock().unwrap();
                        *requests += 1;
                        *requests
                    };
                    if n <= r.fail {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    r.bodies.lock().unwrap().push(body);
                    StatusCode::OK
                }),
            )
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// Waits until a body satisfies `check`.
    async fn until(&self, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let bodies = self.bodies();
            if check(&bodies) {
                return bodies;
            }
            assert!(Instant::now() < deadline, "never received {what}; got {bodies:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Router settings with `hook` receiving every alert and `rules` as the defaults (the host's
/// rules off: this machine's disk and memory are not the test's).
fn alerting(hook: &str, mut rules: Value) -> infernet_router::Settings {
    for host in ["disk", "memory", "gpu_temperature"] {
        rules[host] = json!({"enabled": false});
    }
    let mut s = settings(&[]);
    s.registration_token = None;
    let defaults = s.alerts.clone();
    s.alerts = AlertSettings {
        webhooks: vec![Webhook::parse(hook, true).unwrap()],
        rules: serde_json::from_value(rules).unwrap(),
        ..defaults
    };
    s
}

/// A node that heartbeats (signed) to `router` every 0.1 s, run by `operator`.
fn node(router: &str, operator: &Identity, containers: Value) -> NodeProc {
    NodeProc::start_with(
        containers,
        json!({"stats": {"endpoint": format!("{router}/api/v1/register"), "interval": 0.1},
               "operator": {"pubkeys": [operator.npub()]}}),
    )
}

/// `method path` on the router, signed by `signer` (unsigned without one).
async fn call(router: &str, signer: Option<&Identity>, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let url = format!("{router}{path}");
    let body = body.map(Value::to_string);
    let mut request = client().request(method.parse().unwrap(), &url);
    if let Some(signer) = signer {
        request = request.header(
            "authorization",
            nip98::authorization(signer, method, &url, body.as_deref().map(str::as_bytes)),
        );
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_stopped_node_fires_once_and_resolves_once_through_a_webhook_that_fails_twice() {
    let (receiver, hook) = Receiver::start(2).await;
    let url = router(alerting(&hook, json!({"offline": {"after_s": 0.6}}))).await;
    let operator = Identity::generate();
    let mut n = node(&url, &operator, json!([{"id": "x", "port": free_port()}]));
    eventually(format!("{url}/api/v1/nodes"), |v| {
        v[0]["identity"]["operators"][0] == operator.npub()
    })
    .await;

    n.kill();
    let bodies = receiver
        .until("the offline alert", |b| b.iter().any(|b| b["status"] == "firing"))
        .await;
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let firing = &bodies[0];
    assert_eq!(firing["rule"], "offline");
    assert_eq!(firing["node"], n.key());
    assert!(
        firing["summary"].as_str().unwrap().starts_with("no probe answered"),
        "{firing}"
    );
    assert!(firing["started_at"].as_str().unwrap().ends_with('Z'), "{firing}");
    assert_eq!(
        *receiver.requests.lock().unwrap(),
        3,
        "two failures, then the one delivery"
    );

    n.restart();
    let bodies = receiver
        .until("the resolution", |b| b.iter().any(|b| b["status"] == "resolved"))
        .await;
    // Firing for many evaluations, yet posted once; resolved once.
    let statuses: Vec<&str> = bodies.iter().map(|b| b["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["firing", "resolved"], "{bodies:?}");
    assert_eq!(bodies[1]["id"], firing["id"]);
    assert!(bodies[1]["resolved_at"].is_string());

    // The operator sees it; an unsigned caller is refused; another key sees none of it.
    let (status, listed) = call(&url, Some(&operator), "GET", "/api/v1/alerts", None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["alerts"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["alerts"][0]["status"], "resolved");
    let (status, refused) = call(&url, None, "GET", "/api/v1/alerts", None).await;
    assert_eq!(status, 401, "{refused}");
    let (_, other) = call(&url, Some(&Identity::generate()), "GET", "/api/v1/alerts", None).await;
    assert_eq!(other["alerts"], json!([]));
    // Acknowledged by its operator only.
    let id = firing["id"].as_str().unwrap();
    let path = format!("/api/v1/alerts/{id}/ack");
    let (status, _) = call(&url, Some(&Identity::generate()), "POST", &path, None).await;
    assert_eq!(status, 404);
    let (status, acked) = call(&url, Some(&operator), "POST", &path, None).await;
    assert_eq!(status, 200, "{acked}");
    assert!(acked["acked_at"].is_string(), "{acked}");

    // The control interface's calls: the same key's session instead of a signature, with its
    // CSRF token for a change; a stranger's session sees nothing.
    let session = format!("{url}/api/v1/session");
    let (cookie, csrf, _) = crate::ui::sign_in(&session, &operator).await;
    let with = |r: reqwest::RequestBuilder, cookie: &str| r.header("cookie", format!("infernet_session={cookie}"));
    let answer = with(client().get(format!("{url}/api/v1/alerts")), &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let listed: Value = answer.json().await.unwrap();
    assert_eq!(listed["alerts"][0]["id"], firing["id"], "{listed}");
    assert!(listed["alerts"][0]["acked_at"].is_string(), "{listed}");
    let ack = format!("{url}{path}");
    let answer = with(client().post(&ack), &cookie).send().await.unwrap();
    assert_eq!(answer.status(), 403, "no CSRF token");
    let answer = with(client().post(&ack), &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let (stranger, _, _) = crate::ui::sign_in(&session, &Identity::generate()).await;
    let theirs: Value = with(client().get(format!("{url}/api/v1/alerts")), &stranger)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["alerts"], json!([]));
    let answer = with(client().post(&ack), &stranger).send().await.unwrap();
    assert_eq!(answer.status(), 403, "a stranger's session without the token");
}

#[tokio::test]
async fn failing_jobs_trip_the_success_rate_and_a_silenced_node_sends_nothing() {
    let (receiver, hook) = Receiver::start(0).await;
    let url = router(alerting(&hook, json!({}))).await;
    let operator = Identity::generate();
    // Containers nobody listens for: every job fails.
    let loud = node(&url, &operator, json!([{"id": "x", "port": free_port()}]));
    let quiet = node(&url, &operator, json!([{"id": "x", "port": free_port()}]));
    eventually(format!("{url}/api/v1/nodes"), |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|n| n["identity"].is_object()))
    })
    .await;

    // Bad settings are refused, naming the field.
    for (bad, field) in [
        (
            json!({"rules": {"success_rate": {"threshold": 2}}}),
            "rules.success_rate.threshold",
        ),
        (json!({"rules": {"latency": {"p99_s": "slow"}}}), "rules.latency.p99_s"),
        (
            json!({"silences": [{"rule": "success_rate", "until": "tomorrow"}]}),
            "silences[0].until",
        ),
        (json!({"webhooks": ["gopher://x"]}), "webhooks[0]"),
    ] {
        let (status, answer) = call(&url, Some(&operator), "PUT", "/api/v1/alerts/settings", Some(&bad)).await;
        assert_eq!(status, 400, "{bad} → {answer}");
        assert!(answer["error"].as_str().unwrap().starts_with(field), "{bad} → {answer}");
    }
    let (status, _) = call(&url, None, "PUT", "/api/v1/alerts/settings", Some(&json!({}))).await;
    assert_eq!(status, 401);
    // Through the control interface's session: every bad field named, for the form to mark.
    let (cookie, csrf, _) = crate::ui::sign_in(&format!("{url}/api/v1/session"), &operator).await;
    let answer = client()
        .put(format!("{url}/api/v1/alerts/settings"))
        .header("cookie", format!("infernet_session={cookie}"))
        .header("x-csrf-token", csrf)
        .json(&json!({"rules": {"success_rate": {"threshold": 2}}, "webhooks": ["gopher://x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["field"], "rules.success_rate.threshold", "{answer}");
    let fields: Vec<&str> = answer["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["rules.success_rate.threshold", "webhooks[0]"], "{answer}");

    let settings = json!({
        "rules": {"success_rate": {"threshold": 0.9, "window_s": 60, "min_jobs": 5},
                  "disk": {"enabled": false}, "memory": {"enabled": false}},
        "silences": [{"rule": "success_rate", "node": quiet.key(), "until": "2099-01-01T00:00:00Z"}],
    });
    let (status, saved) = call(&url, Some(&operator), "PUT", "/api/v1/alerts/settings", Some(&settings)).await;
    assert_eq!(status, 200, "{saved}");
    let (_, read) = call(&url, Some(&operator), "GET", "/api/v1/alerts/settings", None).await;
    assert_eq!(read["rules"]["success_rate"]["min_jobs"], 5, "{read}");
    assert_eq!(
        read["rules"]["offline"]["after_s"], 90.0,
        "the rest keep their defaults: {read}"
    );

    for n in [&loud, &quiet] {
        for _ in 0..6 {
            let answer = client()
                .post(format!("http://{}/api/jobs", n.key()))
                .json(&json!({"containers": ["x"], "data": {}}))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
        }
    }
    let bodies = receiver
        .until("the success-rate alert", |b| {
            b.iter().any(|b| b["rule"] == "success_rate")
        })
        .await;
    assert_eq!(bodies[0]["node"], loud.key(), "{bodies:?}");
    // Judged once 5 jobs ended (min_jobs), or all 6.
    let summary = bodies[0]["summary"].as_str().unwrap();
    assert!(
        ["0 of 5 jobs succeeded (0 %)", "0 of 6 jobs succeeded (0 %)"]
            .iter()
            .any(|s| summary.starts_with(s)),
        "{bodies:?}"
    );
    // The quiet node's alert is recorded, silenced, and never sent.
    let listed = eventually_signed(&url, &operator, |alerts| alerts.len() == 2).await;
    let quiet_alert = listed.iter().find(|a| a["node"] == quiet.key()).unwrap();
    assert_eq!(quiet_alert["silenced"], true, "{listed:?}");
    assert!(receiver.bodies().iter().all(|b| b["node"] != quiet.key()));
}

/// Polls the operator's alerts until `check` accepts them.
async fn eventually_signed(url: &str, operator: &Identity, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v) = call(url, Some(operator), "GET", "/api/v1/alerts", None).await;
        let alerts = v["alerts"].as_array().cloned().unwrap_or_default();
        if check(&alerts) {
            return alerts;
        }
        assert!(Instant::now() < deadline, "alerts never satisfied the check: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A relay (rust-nostr's local relay, on loopback) that refuses the first `refuse` events it is
/// sent, and its `ws://` URL. Dropping it stops it.
async fn nostr_relay(refuse: usize) -> (nostr_relay_builder::LocalRelay, String) {
    use nostr_relay_builder::prelude::{BoxedFuture, LocalRelay, PolicyResult, RelayBuilder, WritePolicy};

    #[derive(Debug)]
    struct RefuseFirst(AtomicUsize, usize);
    impl WritePolicy for RefuseFirst {
        fn admit_event<'a>(
            &'a self,
            _: &'a nostr_relay_builder::prelude::Event,
            _: &'a std::net::SocketAddr,
        ) -> BoxedFuture<'a, PolicyResult> {
            Box::pin(async move {
                match self.0.fetch_add(1, Ordering::SeqCst) < self.1 {
                    true => PolicyResult::Reject("not now".into()),
                    false => PolicyResult::Accept,
                }
            })
        }
    }
    let relay = LocalRelay::new(RelayBuilder::default().write_policy(RefuseFirst(AtomicUsize::new(0), refuse)));
    relay.run().await.unwrap();
    let url = relay.url().await.to_string();
    (relay, url)
}

/// The direct messages `to` receives on `relay` (a live subscription to gift wraps tagged with
/// its key), opened with its key, once `check` accepts them.
async fn direct_messages(relay: &str, to: &Identity, check: impl Fn(&[Opened]) -> bool) -> Vec<Opened> {
    let (mut socket, _) = tokio_tungstenite::connect_async(relay).await.unwrap();
    let req = json!(["REQ", "alerts", {"kinds": [1059], "#p": [to.public_key().to_hex()]}]);
    socket.send(Ws::text(req.to_string())).await.unwrap();
    let mut opened = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut stored = false;
    loop {
        if stored && check(&opened) {
            return opened;
        }
        let next = tokio::time::timeout_at(deadline, socket.next()).await;
        let Ok(Some(Ok(Ws::Text(text)))) = next else {
            panic!("the messages never satisfied the check: {opened:?} (last: {next:?})");
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        match message[0].as_str().unwrap() {
            "EVENT" => opened.push(dm::unwrap(to, &message[2].to_string()).unwrap()),
            "EOSE" => stored = true,
            other => panic!("the relay answered {other}: {message}"),
        }
    }
}

#[tokio::test]
async fn alerts_reach_the_operators_key_as_nostr_direct_messages_unless_turned_off() {
    // The relay refuses the first message: the delivery is tried again.
    let (_relay, relay_url) = nostr_relay(1).await;
    let (receiver, hook) = Receiver::start(0).await;
    let key = Identity::generate();
    let mut s = alerting(&hook, json!({"offline": {"after_s": 0.6}}));
    s.gateway.key_file = key_file(&key);
    s.alerts.relays = vec![WsUrl::parse(&relay_url).unwrap()];
    let url = router(s).await;
    let (operator, quiet) = (Identity::generate(), Identity::generate());

    // Operators choose; a bad value is refused naming the field.
    let (status, answer) = call(&url, Some(&operator), "GET", "/api/v1/alerts/settings", None).await;
    assert_eq!((status, &answer["direct_messages"]), (200, &json!(true)), "{answer}");
    let bad = json!({"direct_messages": "yes"});
    let (status, answer) = call(&url, Some(&quiet), "PUT", "/api/v1/alerts/settings", Some(&bad)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().starts_with("direct_messages"),
        "{answer}"
    );
    // (The node's first operator with settings gives its rules: the same short window here.)
    let off = json!({"direct_messages": false, "rules": {"offline": {"after_s": 0.6},
        "disk": {"enabled": false}, "memory": {"enabled": false}, "gpu_temperature": {"enabled": false}}});
    let (status, answer) = call(&url, Some(&quiet), "PUT", "/api/v1/alerts/settings", Some(&off)).await;
    assert_eq!((status, &answer["direct_messages"]), (200, &json!(false)), "{answer}");

    let mut n = NodeProc::start_with(
        json!([{"id": "x", "port": free_port()}]),
        json!({"stats": {"endpoint": format!("{url}/api/v1/register"), "interval": 0.1},
               "operator": {"pubkeys": [operator.npub(), quiet.npub()]}}),
    );
    eventually(format!("{url}/api/v1/nodes"), |v| {
        v[0]["identity"]["operators"][1] == quiet.npub()
    })
    .await;

    n.kill();
    let firing = direct_messages(&relay_url, &operator, |m| !m.is_empty()).await;
    assert_eq!(firing.len(), 1, "{firing:?}");
    let message = &firing[0];
    assert_eq!(message.kind, 14, "a NIP-17 direct message");
    assert_eq!(message.sender, key.public_key(), "sealed by the router's key");
    assert_eq!(message.author, key.public_key());
    let line = format!("[FIRING] offline on {}: no probe answered", n.key());
    assert!(message.content.starts_with(&line), "{}", message.content);

    n.restart();
    let both = direct_messages(&relay_url, &operator, |m| m.len() == 2).await;
    let resolved = format!("[RESOLVED] offline on {}", n.key());
    assert!(both.iter().any(|m| m.content.starts_with(&resolved)), "{both:?}");
    // The webhook got the same two changes; by then the DMs of both went out, none to `quiet`.
    receiver
        .until("the resolution", |b| b.iter().any(|b| b["status"] == "resolved"))
        .await;
    assert_eq!(direct_messages(&relay_url, &quiet, |_| true).await, []);
    assert_eq!(direct_messages(&relay_url, &operator, |_| true).await.len(), 2);
}

#[tokio::test]
async fn a_linked_node_whose_jobs_fail_trips_the_success_rate() {
    let (receiver, hook) = Receiver::start(0).await;
    let key = Identity::generate();
    let mut s = alerting(
        &hook,
        json!({"success_rate": {"threshold": 0.9, "window_s": 60, "min_jobs": 5}}),
    );
    s.gateway.key_file = key_file(&key);
    let url = router(s).await;
    let operator = Identity::generate();
    let link = format!("{}/api/v1/link", url.replacen("http://", "ws://", 1));
    // A container nobody listens for: every job fails. The router cannot reach the node; it
    // reads the node's figures over the link the node dialled.
    let n = NodeProc::start_with(
        json!([{"id": "x", "port": free_port()}]),
        json!({"network": {"routers": [key.npub()], "url": link}, "operator": {"pubkeys": [operator.npub()]}}),
    );
    let nodes = eventually(format!("{url}/api/v1/nodes"), |v| {
        v[0]["address"].as_str().is_some_and(|a| a.starts_with("npub1"))
    })
    .await;
    let npub = nodes[0]["address"].as_str().unwrap().to_string();
    // Jobs fail one after another until the rule trips: the rule counts the failures after the
    // router's first reading of the node, which may come after the first jobs.
    let deadline = Instant::now() + Duration::from_secs(20);
    let alert = loop {
        let answer = client()
            .post(format!("http://127.0.0.1:{}/api/jobs", n.port))
            .json(&json!({"containers": ["x"], "data": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let bodies = receiver.bodies();
        if let Some(alert) = bodies.iter().find(|b| b["rule"] == "success_rate") {
            break alert.clone();
        }
        assert!(
            Instant::now() < deadline,
            "never received the success-rate alert; got {bodies:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(alert["node"], json!(npub), "{alert}");
    let summary = alert["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("0 of ") && summary.contains(" jobs succeeded (0 %)"),
        "{alert}"
    );
    let bodies = receiver.bodies();
    assert!(
        bodies.iter().all(|b| b["rule"] != "offline"),
        "a linked node is alive: {bodies:?}"
    );
}

//! The control interface: the fleet app at `/` and a node's own dashboard at `/dashboard`, over
//! plain HTTP (every page and action), and in Chromium (`ui/test/browser.mjs`, driven as an
//! operator would, with a NIP-07 signer injected that holds the test key).

use std::{path::PathBuf, process::Command, time::Duration};

use infernet_identity::{Identity, nip98};
use serde_json::{Value, json};

use super::{NodeProc, client, eventually, router, service, settings};

/// A router open to signed heartbeats, and two nodes of `operator` beating to it that take its
/// gateway's jobs.
async fn fleet(operator: &Identity) -> (String, NodeProc, NodeProc, u16) {
    use std::os::unix::fs::PermissionsExt;
    let router_key = Identity::generate();
    let key_file = tempfile::tempdir().unwrap().keep().join("router.nsec");
    std::fs::write(&key_file, router_key.nsec()).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut open = settings(&[]);
    open.registration_token = None;
    open.gateway.key_file = key_file;
    // The nodes are on 127.0.0.1: "add a node" may fetch from there.
    open.ui.private_addresses = true;
    // Nodes' records (what the chooser left out) reach the database quickly.
    open.gateway.samples_flush = Duration::from_millis(200);
    let url = router(open).await;
    let fast = service(Duration::ZERO).await;
    let node = || {
        NodeProc::start_with(
            json!([{"id": "x", "port": fast}]),
            json!({"stats": {"endpoint": format!("{url}/api/v1/register"), "interval": 0.2},
                   "operator": {"pubkeys": [operator.public_key().to_hex()]},
                   "network": {"routers": [router_key.npub()]}}),
        )
    };
    let (a, b) = (node(), node());
    (url, a, b, fast)
}

/// A request with the session cookie (and the CSRF token, when given).
fn with_session(r: reqwest::RequestBuilder, cookie: &str, csrf: Option<&str>) -> reqwest::RequestBuilder {
    let r = r.header("cookie", format!("infernet_session={cookie}"));
    match csrf {
        Some(t) => r.header("x-csrf-token", t),
        None => r,
    }
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Signs in at `url` (a session endpoint) as `who`: the cookie's token, the CSRF token and the
/// whole `Set-Cookie` header.
pub(crate) async fn sign_in(url: &str, who: &Identity) -> (String, String, String) {
    let r = client()
        .post(url)
        .header("authorization", nip98::authorization(who, "POST", url, None))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let token = set
        .strip_prefix("infernet_session=")
        .and_then(|s| s.split(';').next())
        .unwrap()
        .to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["signer"], who.npub());
    (token, body["csrf"].as_str().unwrap().to_string(), set)
}

#[tokio::test]
async fn the_fleet_app_needs_a_session_for_data_and_relays_only_signed_changes() {
    let operator = Identity::generate();
    let (url, a, b, _) = fleet(&operator).await;
    // A node of someone else beating to the same router: never in this operator's fleet.
    let other = NodeProc::start_with(
        json!([{"id": "x", "port": service(Duration::ZERO).await}]),
        json!({"stats": {"endpoint": format!("{url}/api/v1/register"), "interval": 0.2},
               "operator": {"pubkeys": [Identity::generate().public_key().to_hex()]}}),
    );

    // The shell, its files, the manifest and the service worker: no session needed, no data.
    let page = client().get(format!("{url}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"<link rel="manifest" href="/manifest.webmanifest">"#),
        "{html}"
    );
    assert!(!html.contains(&a.key()), "the shell holds no data");
    let manifest: Value = client()
        .get(format!("{url}/manifest.webmanifest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (manifest["start_url"].as_str(), manifest["display"].as_str()),
        (Some("/"), Some("standalone"))
    );
    for icon in manifest["icons"].as_array().unwrap() {
        let r = client()
            .get(format!("{url}{}", icon["src"].as_str().unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{icon}");
        assert_eq!(r.headers()["content-type"], icon["type"].as_str().unwrap());
    }
    let sw = client()
        .get(format!("{url}/sw.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        sw.contains("const SHELL") && sw.contains("addEventListener('fetch'"),
        "{sw}"
    );
    let missing = json_of(client().get(format!("{url}/ui/nothing.js")).send().await.unwrap()).await;
    assert_eq!(missing.0, 404);
    assert!(missing.1["error"].as_str().unwrap().contains("nothing.js"));

    // Data without a session: 401. A session request unsigned, signed for another URL or by a
    // replayed event: 401 with the reason.
    for path in ["/api/v1/fleet", "/api/v1/session", "/api/v1/fleet/jobs"] {
        let (status, body) = json_of(client().get(format!("{url}{path}")).send().await.unwrap()).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains("sign in"), "{body}");
    }
    let session = format!("{url}/api/v1/session");
    let (status, body) = json_of(client().post(&session).send().await.unwrap()).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("NIP-98"), "{body}");
    let elsewhere = nip98::authorization(&operator, "POST", "https://evil.example/api/v1/session", None);
    let (status, body) = json_of(
        client()
            .post(&session)
            .header("authorization", &elsewhere)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("`u` tag"), "{body}");
    let header = nip98::authorization(&operator, "POST", &session, None);
    let r = client()
        .post(&session)
        .header("authorization", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly")
            && set.contains("SameSite=Strict")
            && set.contains("Path=/")
            && !set.contains("Secure"),
        "{set}"
    );
    let (status, _) = json_of(
        client()
            .post(&session)
            .header("authorization", &header)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "a replayed sign-in is refused");

    let (cookie, csrf, _) = sign_in(&session, &operator).await;
    let get = |path: String| with_session(client().get(format!("{url}{path}")), &cookie, None).send();

    // The fleet: both nodes of the operator, up, with what their heartbeats say; not the other.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let nodes = loop {
        let (status, body) = json_of(get("/api/v1/fleet".into()).await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        let nodes = body["nodes"].as_array().unwrap().clone();
        if nodes.len() == 2 && nodes.iter().all(|n| n["status"] == "up" && n["version"].is_string()) {
            break nodes;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fleet never showed both nodes up: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut keys: Vec<&str> = nodes.iter().map(|n| n["key"].as_str().unwrap()).collect();
    keys.sort();
    let mut want = [a.key(), b.key()];
    want.sort();
    assert_eq!(keys, want);
    assert!(!keys.contains(&other.key().as_str()));
    let first = nodes.iter().find(|n| n["key"] == a.key()).unwrap();
    assert_eq!(first["containers"], json!(["x"]));
    assert_eq!(first["container_states"][0]["id"], "x", "{first}");
    assert!(first["system"]["cpus"].as_u64().unwrap() >= 1, "{first}");
    assert!(first["heartbeat_age"].as_f64().unwrap() < 5.0, "{first}");

    // History: points arrive from heartbeats; bad ranges and strangers' nodes are refused.
    let history = format!("/api/v1/fleet/{}/history?range=1h", a.key());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = json_of(get(history.clone()).await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        if let Some(p) = body["points"].as_array().and_then(|p| p.first()) {
            assert!(p["memory"].as_f64().unwrap() > 0.0, "{p}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no history point: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for range in ["30d", "7d", "24h"] {
        let (status, body) = json_of(
            get(format!("/api/v1/fleet/{}/history?range={range}", a.key()))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{range}: {body}");
        assert!(!body["points"].as_array().unwrap().is_empty(), "{range}: {body}");
    }
    let (status, body) = json_of(
        get(format!("/api/v1/fleet/{}/history?range=2h", a.key()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("1h, 24h, 7d, 30d"), "{body}");
    let (status, _) = json_of(get(format!("/api/v1/fleet/{}/history", other.key())).await.unwrap()).await;
    assert_eq!(status, 404);

    // Jobs: filtered and paged; bad filters are 400.
    let (status, body) = json_of(
        get(format!("/api/v1/fleet/jobs?node={}&outcome=failed&page=1", a.key()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["page"].as_i64(), body["more"].as_bool()),
        (200, Some(1), Some(false)),
        "{body}"
    );
    for (q, word) in [
        ("outcome=lost", "outcome"),
        ("page=0", "page"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = json_of(get(format!("/api/v1/fleet/jobs?{q}")).await.unwrap()).await;
        assert_eq!(status, 400, "{q}");
        assert!(body["error"].as_str().unwrap().contains(word), "{body}");
    }
    let (status, _) = json_of(get(format!("/api/v1/fleet/jobs?node={}", other.key())).await.unwrap()).await;
    assert_eq!(status, 404);

    // Earnings: three periods, each against the one before; nothing ran through the gateway yet.
    let (status, body) = json_of(get("/api/v1/fleet/earnings".into()).await.unwrap()).await;
    assert_eq!((status, body["unit"].as_str()), (200, Some("USD")), "{body}");
    let periods: Vec<&str> = body["periods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["period"].as_str().unwrap())
        .collect();
    assert_eq!(periods, ["day", "week", "month"]);
    assert_eq!(body["periods"][0]["current"]["jobs"], 0);

    // Add a node: the router reads its signed statement and says what to set.
    let add = |address: String, csrf: Option<&str>| {
        with_session(client().post(format!("{url}/api/v1/fleet/nodes")), &cookie, csrf)
            .json(&json!({ "address": address }))
            .send()
    };
    let (status, body) = json_of(add(a.key(), Some(&csrf)).await.unwrap()).await;
    assert_eq!(
        (status, body["names_you"].as_bool(), body["in_fleet"].as_bool()),
        (200, Some(true), Some(true)),
        "{body}"
    );
    let (status, body) = json_of(add(format!("http://{}", other.key()), Some(&csrf)).await.unwrap()).await;
    assert_eq!((status, body["names_you"].as_bool()), (200, Some(false)), "{body}");
    assert!(
        body["next"].as_str().unwrap().contains(&operator.npub()),
        "says which key to add: {body}"
    );
    let (status, body) = json_of(add("127.0.0.1:1".into(), Some(&csrf)).await.unwrap()).await;
    assert_eq!(status, 502, "{body}");
    let (status, _) = json_of(add("not a host:port:x".into(), Some(&csrf)).await.unwrap()).await;
    assert_eq!(status, 400);
    let (status, _) = json_of(add(a.key(), None).await.unwrap()).await;
    assert_eq!(status, 403);

    // A change: the operator signs a PUT for the node's own URL; the router relays it.
    let relay = format!("{url}/api/v1/fleet/{}/admin", a.key());
    let settings = json!({"pricing": {"x": {"per_job": 0.5, "unit": "USD"}}}).to_string();
    let signed = |who: &Identity| {
        let node_url = format!("http://{}/admin/settings", a.key());
        json!({"method": "PUT", "path": "/admin/settings", "body": settings,
               "authorization": nip98::authorization(who, "PUT", &node_url, Some(settings.as_bytes()))})
    };
    let post = |body: Value, csrf: Option<&str>| with_session(client().post(&relay), &cookie, csrf).json(&body).send();
    let (status, body) = json_of(post(signed(&operator), None).await.unwrap()).await;
    assert_eq!(status, 403, "no CSRF token: {body}");
    assert!(body["error"].as_str().unwrap().contains("x-csrf-token"), "{body}");
    // Signed by someone else: the node refuses, and the page sees the node's answer.
    let (status, body) = json_of(post(signed(&Identity::generate()), Some(&csrf)).await.unwrap()).await;
    assert_eq!((status, body["status"].as_u64()), (200, Some(401)), "{body}");
    assert!(
        body["body"]["error"].as_str().unwrap().contains("not allowed"),
        "{body}"
    );
    let (status, body) = json_of(post(signed(&operator), Some(&csrf)).await.unwrap()).await;
    assert_eq!((status, body["status"].as_u64()), (200, Some(200)), "{body}");
    assert_eq!(body["body"]["pricing"]["x"]["per_job"], 0.5);
    // The router reports the node's new price from its next heartbeat.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = json_of(get("/api/v1/fleet".into()).await.unwrap()).await;
        let n = body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["key"] == a.key())
            .cloned()
            .unwrap();
        if n["pricing"]["x"]["per_job"] == 0.5 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "price never reported: {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Signed for the node's key instead of its address (what the page does): accepted too.
    let by_key = format!("infernet://{}/admin/status", first["node"].as_str().unwrap());
    let status_request = json!({"method": "GET", "path": "/admin/status",
        "authorization": nip98::authorization(&operator, "GET", &by_key, None)});
    let (status, body) = json_of(post(status_request, Some(&csrf)).await.unwrap()).await;
    assert_eq!((status, body["status"].as_u64()), (200, Some(200)), "{body}");
    assert!(body["body"]["diagnostics"]["clock"]["unix_ms"].is_i64(), "{body}");
    // Bad relays: outside the admin API, unknown method, not JSON, a node not of this operator.
    for (body, word) in [
        (
            json!({"method": "GET", "path": "/api/jobs", "authorization": "Nostr x"}),
            "path",
        ),
        (
            json!({"method": "PATCH", "path": "/admin/settings", "authorization": "Nostr x"}),
            "method",
        ),
        (json!({"method": "GET", "path": "/admin/status"}), "authorization"),
    ] {
        let (status, answer) = json_of(post(body.clone(), Some(&csrf)).await.unwrap()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(word), "{answer}");
    }
    let (status, _) = json_of(
        with_session(
            client().post(format!("{url}/api/v1/fleet/{}/admin", other.key())),
            &cookie,
            Some(&csrf),
        )
        .json(&json!({"method": "GET", "path": "/admin/status", "authorization": "Nostr x"}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 404);

    // Sign out: the CSRF token is needed, then the session is gone on the server.
    let out = format!("{url}/api/v1/session");
    let (status, _) = json_of(with_session(client().delete(&out), &cookie, None).send().await.unwrap()).await;
    assert_eq!(status, 403);
    let r = with_session(client().delete(&out), &cookie, Some(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let (status, _) = json_of(get("/api/v1/fleet".into()).await.unwrap()).await;
    assert_eq!(status, 401, "the session ended on the server");
}

#[tokio::test]
async fn a_nodes_dashboard_lets_only_its_operators_in() {
    let operator = Identity::generate();
    let fast = service(Duration::ZERO).await;
    let node = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"operator": {"pubkeys": [operator.public_key().to_hex()]}}),
    );
    let base = format!("http://{}", node.key());
    let r = client().get(format!("{base}/dashboard/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"href="/dashboard/manifest.webmanifest""#) && html.contains(r#"data-mode="node""#));
    let manifest = eventually(format!("{base}/dashboard/manifest.webmanifest"), |m| {
        m["scope"] == "/dashboard/"
    })
    .await;
    assert_eq!(manifest["start_url"], "/dashboard/");
    let sw = client()
        .get(format!("{base}/dashboard/sw.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(sw.contains("/dashboard/ui/app.js"), "{sw}");
    assert_eq!(
        client()
            .get(format!("{base}/dashboard/ui/app.css"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let (status, _) = json_of(
        client()
            .get(format!("{base}/dashboard/api/status"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    // Only a key in operator.pubkeys signs in.
    let session = format!("{base}/dashboard/session");
    let stranger = Identity::generate();
    let (status, body) = json_of(
        client()
            .post(&session)
            .header("authorization", nip98::authorization(&stranger, "POST", &session, None))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("not allowed"), "{body}");
    let (cookie, csrf, set) = sign_in(&session, &operator).await;
    assert!(
        set.contains("Path=/dashboard") && set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );

    let (status, body) = json_of(
        with_session(client().get(format!("{base}/dashboard/api/status")), &cookie, None)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node"]["containers"], json!(["x"]));
    assert_eq!(body["node"]["status"], "up");
    let (status, body) = json_of(
        with_session(
            client().get(format!("{base}/dashboard/api/history?range=1h")),
            &cookie,
            None,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !body["points"].as_array().unwrap().is_empty(),
        "a point is taken at start: {body}"
    );
    let (status, body) = json_of(
        with_session(
            client().get(format!("{base}/dashboard/api/history?range=7d")),
            &cookie,
            None,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("24 h"), "{body}");

    let r = with_session(client().delete(&session), &cookie, Some(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _) = json_of(
        with_session(client().get(format!("{base}/dashboard/api/status")), &cookie, None)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
}

/// The repository's `ui/` folder.
fn ui_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ui")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_app_works_in_chromium() {
    let dir = ui_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir() && dir.join("node_modules/nostr-tools").is_dir(),
        "the browser test's npm packages are not installed in {}: run scripts/install-test-deps.sh",
        dir.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: run scripts/install-test-deps.sh (Debian's chromium) or set CHROMIUM"
    );
    let operator = Identity::generate();
    let (url, a, b, _) = fleet(&operator).await;
    let added = service(Duration::ZERO).await;
    // The browser starts once both nodes are listed under the operator and have history.
    eventually(format!("{url}/api/v1/nodes"), |v| {
        v.as_array().is_some_and(|n| {
            n.iter()
                .filter(|n| n["available"] == true && n["identity"].is_object())
                .count()
                == 2
        })
    })
    .await;
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
    // The browser stops the second node near the end, to see it alerted as down.
    let down = b.child.id();
    let run = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("test/browser.mjs")
            .current_dir(ui_dir())
            .env("ROUTER", &url)
            .env("NSEC", operator.nsec())
            .env("NODES", format!("{},{}", a.key(), b.key()))
            .env("SERVICE_PORT", added.to_string())
            .env("DOWN_PID", down.to_string())
            .env("OUT", &out)
            .env("CHROMIUM", chromium)
            .output()
            .expect("node runs (install Node.js)")
    })
    .await
    .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    assert!(
        run.status.success(),
        "the browser test failed:\n{}{}",
        text(&run.stdout),
        text(&run.stderr)
    );
}

#[tokio::test]
async fn add_a_node_refuses_the_routers_own_networks_unless_allowed() {
    // The default: --fleet-private-addresses off.
    let url = router(settings(&[])).await;
    let operator = Identity::generate();
    let (cookie, csrf, _) = sign_in(&format!("{url}/api/v1/session"), &operator).await;
    // A node really listens there: refused before any request is made to it.
    let fast = service(Duration::ZERO).await;
    for address in [
        format!("127.0.0.1:{fast}"),
        format!("http://localhost:{fast}"),
        "[::1]:4000".into(),
        "0.0.0.0:4000".into(),
        "192.168.1.20:4000".into(),
        "169.254.169.254:80".into(),
    ] {
        let (status, body) = json_of(
            with_session(client().post(format!("{url}/api/v1/fleet/nodes")), &cookie, Some(&csrf))
                .json(&json!({ "address": address }))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{address}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.starts_with("address: ") && error.contains("--fleet-private-addresses"),
            "{address}: {body}"
        );
    }
}

#[tokio::test]
async fn sign_ins_are_rate_limited_per_client() {
    let mut s = settings(&[]);
    s.requests_per_minute = 2;
    let url = router(s).await;
    let session = format!("{url}/api/v1/session");
    for _ in 0..2 {
        let (status, _) = json_of(client().post(&session).send().await.unwrap()).await;
        assert_eq!(status, 401);
    }
    let r = client().post(&session).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn jobs_and_earnings_come_from_the_ledger_of_the_operators_nodes() {
    use std::os::unix::fs::PermissionsExt;
    let operator = Identity::generate();
    let router_key = Identity::generate();
    let key_file = tempfile::tempdir().unwrap().keep().join("router.nsec");
    std::fs::write(&key_file, router_key.nsec()).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut s = settings(&[]);
    s.registration_token = None;
    s.gateway.key_file = key_file;
    let url = router(s).await;
    let fast = service(Duration::ZERO).await;
    let node = NodeProc::start_with(
        json!([{"id": "x", "port": fast}]),
        json!({"stats": {"endpoint": format!("{url}/api/v1/register"), "interval": 0.2},
               "operator": {"pubkeys": [operator.public_key().to_hex()]},
               "network": {"routers": [router_key.npub()]}}),
    );
    // The operator prices x at 0.5 USD a job, signed straight to the node.
    let admin = format!("http://{}/admin/settings", node.key());
    let body = json!({"pricing": {"x": {"per_job": 0.5, "unit": "USD"}}}).to_string();
    let r = client()
        .put(&admin)
        .header(
            "authorization",
            nip98::authorization(&operator, "PUT", &admin, Some(body.as_bytes())),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Once the router prices the node (it is left out for a maximum of 0.1), run a job through it.
    eventually(format!("{url}/api/v1/route?container=x&max_price=0.1"), |v| {
        v["candidates"].as_array().is_some_and(Vec::is_empty) && v["excluded"].as_array().is_some_and(|e| !e.is_empty())
    })
    .await;
    let placed: Value = client()
        .post(format!("{url}/api/v1/jobs"))
        .json(&json!({"containers": ["x"], "data": {}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = placed["id"].as_str().unwrap_or_else(|| panic!("{placed}")).to_string();
    eventually(format!("{url}/api/v1/jobs/{id}"), |j| j["status"] == "succeeded").await;

    let (cookie, _, _) = sign_in(&format!("{url}/api/v1/session"), &operator).await;
    let get = |path: &str| with_session(client().get(format!("{url}{path}")), &cookie, None).send();
    // The ledger row is written in a group commit: it shows up shortly.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let jobs = loop {
        let (status, body) = json_of(get("/api/v1/fleet/jobs").await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        if body["jobs"].as_array().is_some_and(|j| !j.is_empty()) {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job never reached the ledger: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let job = &jobs["jobs"][0];
    assert_eq!(
        (job["id"].as_str(), job["node"].as_str()),
        (Some(id.as_str()), Some(node.key().as_str()))
    );
    assert_eq!(
        (job["outcome"].as_str(), job["price"].as_f64()),
        (Some("succeeded"), Some(0.5)),
        "{job}"
    );
    // Filters: by container and outcome.
    let (_, none) = json_of(get("/api/v1/fleet/jobs?outcome=failed").await.unwrap()).await;
    assert_eq!(none["jobs"], json!([]));
    let (_, other) = json_of(get("/api/v1/fleet/jobs?container=y").await.unwrap()).await;
    assert_eq!(other["jobs"], json!([]));
    let (_, same) = json_of(get("/api/v1/fleet/jobs?container=x").await.unwrap()).await;
    assert_eq!(same["jobs"].as_array().unwrap().len(), 1);
    // Earnings: the day holds the job and its price, per node and per container; nothing before.
    let (_, money) = json_of(get("/api/v1/fleet/earnings").await.unwrap()).await;
    let day = &money["periods"][0];
    assert_eq!(
        (day["current"]["jobs"].as_i64(), day["current"]["earned"].as_f64()),
        (Some(1), Some(0.5)),
        "{money}"
    );
    assert_eq!(day["current"]["by_node"][node.key()]["earned"], 0.5);
    assert_eq!(day["current"]["by_container"]["x"]["jobs"], 1);
    assert_eq!(day["previous"]["jobs"], 0);
    // Another operator sees none of it.
    let (stranger, _, _) = sign_in(&format!("{url}/api/v1/session"), &Identity::generate()).await;
    let (_, theirs) = json_of(
        with_session(client().get(format!("{url}/api/v1/fleet/jobs")), &stranger, None)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(theirs["jobs"], json!([]));
}

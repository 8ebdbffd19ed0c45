//! One link's life on the node: dial, prove the key, then serve the router's calls and
//! heartbeat until the link breaks.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::ConnectInfo,
    http::{HeaderValue, Request, header},
};
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use infernet_identity::{npub, parse_public_key, statement};
use infernet_types::link::{
    Announce, HELLO_SUBJECT, HelloContent, MAX_CALLS, MAX_CHUNK, MAX_PATH, Message, VERSION, WINDOW, decode, encode,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::{Message as Ws, protocol::WebSocketConfig};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::LinkUrl;
use crate::{server::AppState, stats::snapshot::Snapshot};

/// Time to connect, finish TLS and the WebSocket handshake, and be welcomed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest frame taken from the router: a request with a body of at most this size.
const MAX_ROUTER_FRAME: usize = 64 << 20;
/// Frames queued for the writer, at most (each at most a chunk and its header).
const QUEUED_FRAMES: usize = 256;

/// Why a link ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No TCP connection, TLS or WebSocket handshake.
    #[error("connecting: {0}")]
    Connect(String),
    /// The router refused the link or closed it, and said why.
    #[error("{0}")]
    Refused(String),
    /// The router broke the protocol.
    #[error("the router broke the link protocol: {0}")]
    Protocol(String),
    /// The connection broke.
    #[error("{0}")]
    Broken(String),
}

type Socket = infernet_service::websocket::Socket;

async fn connect(url: &LinkUrl, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Socket, SessionError> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_ROUTER_FRAME))
        .max_frame_size(Some(MAX_ROUTER_FRAME))
        .max_write_buffer_size(8 << 20);
    infernet_service::websocket::dial(url, tls, config)
        .await
        .map_err(|e| SessionError::Connect(e.to_string()))
}

/// The next binary frame, skipping pings.
async fn next_frame(socket: &mut Socket) -> Result<Bytes, SessionError> {
    loop {
        if let Some(b) = next_message(socket).await? {
            return Ok(b);
        }
    }
}

/// The router's next WebSocket message: a frame, or `None` for a ping or pong (a sign of life).
async fn next_message(socket: &mut Socket) -> Result<Option<Bytes>, SessionError> {
    match socket.next().await {
        Some(Ok(Ws::Binary(b))) => Ok(Some(b)),
        Some(Ok(Ws::Ping(_) | Ws::Pong(_))) => Ok(None),
        Some(Ok(Ws::Close(_))) | None => Err(SessionError::Broken("the router closed the link".into())),
        Some(Ok(_)) => Err(SessionError::Protocol("a frame that is not binary".into())),
        Some(Err(e)) => Err(SessionError::Broken(e.to_string())),
    }
}

/// What the node serves now, as its `/info` says (`None` when the store cannot count its jobs).
async fn announce(state: &AppState) -> Option<Announce> {
    #[derive(serde::Deserialize)]
    struct Info {
        containers: Vec<infernet_types::link::AnnouncedContainer>,
        pending: Pending,
        #[serde(default)]
        pricing: Option<std::collections::BTreeMap<String, infernet_types::settings::Price>>,
        #[serde(default)]
        availability: Option<Availability>,
        #[serde(default)]
        hardware: Option<infernet_types::Hardware>,
        #[serde(default)]
        dispatch_mac: Option<u64>,
    }
    #[derive(serde::Deserialize)]
    struct Pending {
        offchain: u64,
        onchain: u64,
    }
    #[derive(serde::Deserialize)]
    struct Availability {
        open: bool,
        #[serde(default)]
        available_at: Option<String>,
    }
    let info = Snapshot::take(state, crate::stats::snapshot::View::Heartbeat)
        .await
        .info()
        .ok()?;
    let info: Info = serde_json::from_value(info)
        .inspect_err(|e| tracing::warn!(error = %e, "link: the node's /info does not read as an announce"))
        .ok()?;
    Some(Announce {
        containers: info.containers,
        pending: info.pending.offchain.saturating_add(info.pending.onchain),
        pricing: info.pricing.unwrap_or_default(),
        open: info.availability.as_ref().is_none_or(|a| a.open),
        available_at: info.availability.and_then(|a| a.available_at),
        hardware: info.hardware,
        dispatch_mac: info.dispatch_mac == Some(1),
    })
}

/// One link: `Ok` when shut down, else why it ended.
pub(super) async fn run(
    state: &Arc<AppState>,
    url: &LinkUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    shutdown: &CancellationToken,
) -> Result<(), SessionError> {
    let (mut socket, heartbeat) = tokio::time::timeout(CONNECT_TIMEOUT, handshake(state, url, tls))
        .await
        .map_err(|_| SessionError::Connect(format!("not linked within {CONNECT_TIMEOUT:?}")))??;
    let (frames, mut outgoing) = mpsc::channel::<Vec<u8>>(QUEUED_FRAMES);
    let calls: Calls = Arc::default();
    let tracker = TaskTracker::new();
    let stop = shutdown.child_token();
    let router = crate::server::router(state.clone());
    let silence = heartbeat * 3;
    let mut beats = tokio::time::interval(heartbeat);
    beats.tick().await;
    // The router pings every heartbeat: past three without a word from it, the link is dead
    // (a router that crashed, a NAT that forgot the connection), whatever this node sends.
    let mut quiet_until = tokio::time::Instant::now() + silence;
    let ended = loop {
        tokio::select! {
            () = stop.cancelled() => break Ok(()),
            Some(frame) = outgoing.recv() => {
                if let Err(e) = tokio::time::timeout(silence, socket.send(Ws::Binary(frame.into()))).await
                    .map_err(|_| "the router read nothing for three heartbeats".to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                {
                    break Err(SessionError::Broken(e));
                }
            }
            _ = beats.tick() => {
                if let Some(announce) = announce(state).await
                    && frames.try_send(encode(&Message::Heartbeat { announce }, b"")).is_err()
                {
                    tracing::debug!("link: writer busy; heartbeat skipped");
                }
            }
            () = tokio::time::sleep_until(quiet_until) => {
                break Err(SessionError::Broken(format!("nothing from the router for {silence:?}")));
            }
            read = next_message(&mut socket) => {
                quiet_until = tokio::time::Instant::now() + silence;
                let bytes = match read {
                    Err(e) => break Err(e),
                    Ok(None) => continue,
                    Ok(Some(b)) => b,
                };
                if let Err(e) = on_frame(&bytes, &router, &calls, &frames, &tracker, &stop) {
                    break Err(e);
                }
            }
        }
    };
    // The calls of a broken link end with it.
    stop.cancel();
    tracker.close();
    let _ = socket.close(None).await;
    ended
}

async fn handshake(
    state: &AppState,
    url: &LinkUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<(Socket, Duration), SessionError> {
    let mut socket = connect(url, tls).await?;
    let (versions, nonce, router) = match decode(&next_frame(&mut socket).await?) {
        Ok((
            Message::Challenge {
                versions,
                nonce,
                router,
            },
            _,
        )) => (versions, nonce, router),
        Ok((Message::Refused { reason }, _)) => return Err(SessionError::Refused(reason)),
        _ => return Err(SessionError::Protocol("expected a challenge".into())),
    };
    if !versions.contains(&VERSION) {
        return Err(SessionError::Refused(format!(
            "the router speaks link protocol versions {versions:?}, this node {VERSION}: run versions that share one"
        )));
    }
    let trusted = state.routers.as_ref().map_or(&[][..], |r| r.operators());
    if !parse_public_key(&router).is_ok_and(|k| trusted.contains(&k)) {
        return Err(SessionError::Refused(format!(
            "the router at {} is {router}, which is not in network.routers",
            url.url
        )));
    }
    let content = HelloContent {
        nonce,
        router,
        version: VERSION,
        operators: state.admin.operators(),
        announce: announce(state).await.unwrap_or_default(),
    };
    let signed = statement::sign(state.admin.identity(), HELLO_SUBJECT, &content)
        .map_err(|e| SessionError::Protocol(e.to_string()))?;
    let hello = encode(
        &Message::Hello {
            version: VERSION,
            statement: signed,
        },
        b"",
    );
    socket
        .send(Ws::Binary(hello.into()))
        .await
        .map_err(|e| SessionError::Broken(e.to_string()))?;
    match decode(&next_frame(&mut socket).await?) {
        Ok((Message::Welcome { node, heartbeat_s }, _)) => {
            tracing::info!(url = %url.url, %node, "link: up");
            if node != npub(&state.admin.identity().public_key()) {
                return Err(SessionError::Protocol(format!("welcomed as {node}")));
            }
            Ok((socket, Duration::from_secs(heartbeat_s.clamp(1, 3600))))
        }
        Ok((Message::Refused { reason }, _)) => Err(SessionError::Refused(reason)),
        _ => Err(SessionError::Protocol("expected a welcome".into())),
    }
}

/// The calls running: each one's credit and its stop.
type Calls = Arc<Mutex<HashMap<u64, (Arc<Semaphore>, CancellationToken)>>>;

fn on_frame(
    bytes: &Bytes,
    router: &Router,
    calls: &Calls,
    frames: &mpsc::Sender<Vec<u8>>,
    tracker: &TaskTracker,
    stop: &CancellationToken,
) -> Result<(), SessionError> {
    let (message, payload) = decode(bytes).map_err(|e| SessionError::Protocol(e.to_string()))?;
    let payload = bytes.slice(bytes.len() - payload.len()..);
    match message {
        Message::Request {
            call,
            method,
            path,
            authorization,
            client,
        } => {
            let mut running = calls.lock().expect("calls poisoned");
            if running.len() >= MAX_CALLS || running.contains_key(&call) {
                return Err(SessionError::Protocol(format!(
                    "call {call}: a duplicate, or more than {MAX_CALLS} at once"
                )));
            }
            let credit = Arc::new(Semaphore::new(WINDOW as usize));
            let cancel = stop.child_token();
            running.insert(call, (credit.clone(), cancel.clone()));
            drop(running);
            let request = build(&method, &path, authorization, client, payload);
            let (router, frames, calls) = (router.clone(), frames.clone(), calls.clone());
            tracker.spawn(async move {
                tokio::select! {
                    () = serve(call, request, router, &frames, &credit) => {}
                    () = cancel.cancelled() => {}
                }
                calls.lock().expect("calls poisoned").remove(&call);
            });
        }
        Message::Credit { call, chunks } => {
            if let Some((credit, _)) = calls.lock().expect("calls poisoned").get(&call) {
                // Never more than a window ahead, whatever the router says.
                let room = (2 * WINDOW as usize).saturating_sub(credit.available_permits());
                credit.add_permits((chunks as usize).min(room));
            }
        }
        Message::Cancel { call } => {
            if let Some((_, cancel)) = calls.lock().expect("calls poisoned").remove(&call) {
                cancel.cancel();
            }
        }
        Message::Refused { reason } => return Err(SessionError::Refused(reason)),
        other => {
            return Err(SessionError::Protocol(format!("unexpected {other:?}")));
        }
    }
    Ok(())
}

/// The router's request as the node's API takes it, or why it is not one (a path that is no
/// URI path, a method that is no method): answered 400, never dropped.
fn build(
    method: &str,
    path: &str,
    authorization: Option<String>,
    client: Option<String>,
    body: Bytes,
) -> Result<Request<Body>, String> {
    if !path.starts_with('/') || path.len() > MAX_PATH {
        return Err(format!("the path must start with / and be at most {MAX_PATH} bytes"));
    }
    let uri: axum::http::Uri = path.parse().map_err(|e| format!("the path is not a URI path: {e}"))?;
    let method = axum::http::Method::from_bytes(method.as_bytes())
        .map_err(|_| "the method is not an HTTP method".to_string())?;
    let has_body = !body.is_empty();
    let mut request = Request::new(Body::from(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    if let Some(v) = authorization.and_then(|a| HeaderValue::from_str(&a).ok()) {
        headers.insert(header::AUTHORIZATION, v);
    }
    if let Some(v) = client.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(crate::server::CLIENT_HEADER, v);
    }
    if has_body {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    // An answer's trailers (a stream's receipt) go back with its end.
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    // Requests over the link come from the router; its signed `client` is who is charged.
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([0, 0, 0, 0], 0))));
    Ok(request)
}

/// Runs `request` through the node's API and sends the answer back: head, chunks within the
/// router's credit, end.
async fn serve(
    call: u64,
    request: Result<Request<Body>, String>,
    router: Router,
    frames: &mpsc::Sender<Vec<u8>>,
    credit: &Semaphore,
) {
    let response = match request {
        Ok(request) => match tower::ServiceExt::oneshot(router, request).await {
            Ok(r) => r,
            Err(never) => match never {},
        },
        Err(why) => infernet_service::http::error(axum::http::StatusCode::BAD_REQUEST, why),
    };
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let head = Message::Head {
        call,
        status: response.status().as_u16(),
        content_type,
    };
    if frames.send(encode(&head, b"")).await.is_err() {
        return;
    }
    let mut body = response.into_body();
    let mut trailers = BTreeMap::new();
    let error = loop {
        match body.frame().await {
            None => break None,
            Some(Err(e)) => break Some(e.to_string()),
            Some(Ok(frame)) => {
                let data = match frame.into_data() {
                    Ok(data) => data,
                    Err(frame) => {
                        if let Ok(map) = frame.into_trailers() {
                            trailers.extend(
                                map.iter()
                                    .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned()))),
                            );
                        }
                        continue;
                    }
                };
                for piece in data.chunks(MAX_CHUNK) {
                    let Ok(permit) = credit.acquire().await else { return };
                    permit.forget();
                    if frames.send(encode(&Message::Chunk { call }, piece)).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let _ = frames.send(encode(&Message::End { call, error, trailers }, b"")).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_that_is_no_http_request_is_refused_not_a_panic() {
        let build = |method: &str, path: &str| build(method, path, None, None, Bytes::new());
        for (method, path, why) in [
            ("GET", "/admin/a b", "not a URI path"),
            ("GET", "admin/status", "must start with /"),
            ("G ET", "/admin/status", "not an HTTP method"),
        ] {
            let e = build(method, path).unwrap_err();
            assert!(e.contains(why), "{method} {path}: {e}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH));
        assert!(build("GET", &long).is_err());
        let ok = build("POST", "/api/jobs/stream?x=1").unwrap();
        assert_eq!(
            (ok.method().as_str(), ok.uri().to_string()),
            ("POST", "/api/jobs/stream?x=1".to_string())
        );
        assert_eq!(ok.headers()[header::TE], "trailers");
    }
}

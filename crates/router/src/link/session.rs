//! One link's life on the router: the challenge, the hello's check, then the reader (the node's
//! heartbeats and answers) and the writer (requests, credits, cancels, pings) until either side
//! closes it or the node breaks a rule.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{
        ConnectInfo, State,
        ws::{Message as Ws, WebSocket, WebSocketUpgrade},
    },
    http::StatusCode,
    response::{IntoResponse, Response},
};
use futures::{SinkExt, StreamExt, stream::SplitSink};
use infernet_identity::{npub, parse_public_key, statement, unix_now};
use infernet_types::link::{
    self, HELLO_SUBJECT, HelloContent, MAX_CHUNK, MAX_NODE_FRAME, Message, VERSION, decode, encode,
};
use tokio::sync::mpsc;

use super::{
    Holders, Links,
    call::{Head, Link, Piece, QUEUED_REQUESTS},
    report,
};
use crate::{
    registry::{NodeIdentity, Registry},
    server::RouterState,
};

/// How old a hello may be, either side of this router's clock.
const HELLO_MAX_AGE: u64 = 120;
/// Longest wait to tell a node why its link closes.
const CLOSING: Duration = Duration::from_secs(2);
/// Operators kept per node.
const MAX_OPERATORS: usize = 16;

/// Bytes of a link's read buffer.
const READ_BUFFER: usize = 16 * 1024;
/// Trailers of one answer kept at most (a stream's has two).
const MAX_TRAILERS: usize = 16;

/// `GET /api/v1/link`: a node's link (WebSocket upgrade).
pub async fn endpoint(
    State(state): State<Arc<RouterState>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let links = state.gateway.links().clone();
    let source = crate::server::client_ip(&state, peer, &headers);
    let Some(slot) = links.place_for(source) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(serde_json::json!({"error": format!(
                "{} links from {source} already (--max-links-per-source); retry later",
                links.settings.max_per_source
            )})),
        )
            .into_response();
    };
    let Ok(permit) = links.handshakes.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"error": "too many links starting at once; retry later"})),
        )
            .into_response();
    };
    let (registry, router, gateway) = (state.registry.clone(), state.gateway.npub(), state.gateway.clone());
    let holders = gateway.holders().clone();
    upgrade
        .max_message_size(MAX_NODE_FRAME)
        .max_frame_size(MAX_NODE_FRAME)
        .max_write_buffer_size(8 << 20)
        // Allocated per link up front (128 KiB by default): 1,000 idle links held 128 MB of
        // read buffers (`--bench link_fleet`). Frames larger than this take several reads.
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| async move {
            // Held as long as the link is.
            let _slot = slot;
            let (tx, rx) = socket.split();
            let mut tx = tx;
            let mut rx = rx;
            let hello = tokio::time::timeout(links.settings.hello_timeout, handshake(&mut tx, &mut rx, &router))
                .await
                .unwrap_or_else(|_| Err("no hello in time".into()));
            drop(permit);
            match hello {
                Ok((identity, announce)) => {
                    // Calls to a node that checks MACs are MAC'd, over its link too.
                    gateway
                        .dispatch_keys()
                        .learn_linked(&identity.key, announce.dispatch_mac);
                    let held = Held {
                        links,
                        registry,
                        holders,
                    };
                    if let Some(closed) = run(held, identity, announce, tx, rx).await {
                        gateway.link_closed(&closed).await;
                    }
                }
                Err(reason) => {
                    tracing::debug!(%reason, "link refused");
                    let _ = tx.send(frame(&Message::Refused { reason })).await;
                    let _ = tx.close().await;
                }
            }
        })
}

fn frame(message: &Message) -> Ws {
    Ws::Binary(encode(message, b"").into())
}

type Rx = futures::stream::SplitStream<WebSocket>;
type Tx = SplitSink<WebSocket, Ws>;

/// The challenge and the hello's check: the node's identity and what it announced, or why not.
async fn handshake(tx: &mut Tx, rx: &mut Rx, router: &str) -> Result<(NodeIdentity, link::Announce), String> {
    let nonce = format!("{:032x}", rand::random::<u128>());
    tx.send(frame(&Message::Challenge {
        versions: vec![VERSION],
        nonce: nonce.clone(),
        router: router.to_string(),
    }))
    .await
    .map_err(|e| format!("sending the challenge: {e}"))?;
    let bytes = loop {
        match rx.next().await {
            Some(Ok(Ws::Binary(b))) => break b,
            Some(Ok(Ws::Ping(_) | Ws::Pong(_))) => continue,
            Some(Ok(_)) => return Err("expected a hello frame (binary)".into()),
            Some(Err(e)) => return Err(format!("reading the hello: {e}")),
            None => return Err("closed before its hello".into()),
        }
    };
    match link::hello_version(&bytes) {
        Some(VERSION) => {}
        Some(v) => {
            return Err(format!(
                "link protocol version {v} is not spoken by this router (it speaks {VERSION}); run node and router versions that share one"
            ));
        }
        None => return Err("the first frame must be a hello".into()),
    }
    let Ok((Message::Hello { statement, .. }, _)) = decode(&bytes) else {
        return Err("the hello is not a hello of this version".into());
    };
    let checked = statement::verify(&statement, HELLO_SUBJECT, unix_now(), HELLO_MAX_AGE)
        .map_err(|e| format!("the hello's signature: {e}"))?;
    let content: HelloContent =
        serde_json::from_value(checked.content).map_err(|e| format!("the hello's content: {e}"))?;
    if content.nonce != nonce {
        return Err("the hello does not sign this link's challenge".into());
    }
    if content.router != router {
        return Err(format!(
            "the hello is meant for router {}, not this one ({router})",
            content.router
        ));
    }
    if content.version != VERSION {
        return Err("the signed version differs from the hello's".into());
    }
    let operators = content
        .operators
        .iter()
        .filter_map(|k| parse_public_key(k).ok())
        .map(|k| npub(&k))
        .take(MAX_OPERATORS)
        .collect();
    let identity = NodeIdentity {
        key: npub(&checked.signer),
        operators,
        // A linked node has no address: nothing to move.
        address_signed: true,
    };
    Ok((identity, content.announce))
}

/// Where a link is kept: this replica's links, its registry, and the record for its peers.
struct Held {
    links: Arc<Links>,
    registry: Arc<Registry>,
    holders: Arc<Holders>,
}

/// Holds the link until it closes; the node is in dispatch meanwhile. The node's key when it
/// left dispatch as the link closed (not replaced by a newer link).
async fn run(
    Held {
        links,
        registry,
        holders,
    }: Held,
    identity: NodeIdentity,
    announce: link::Announce,
    mut tx: Tx,
    rx: Rx,
) -> Option<String> {
    let (requests, requests_rx) = mpsc::channel(QUEUED_REQUESTS);
    let (control, control_rx) = mpsc::unbounded_channel();
    let link = Arc::new(Link::new(identity.key.clone(), links.next_id(), requests, control));
    if let Err(e) = links.insert(link.clone()) {
        let _ = tx.send(frame(&Message::Refused { reason: e.to_string() })).await;
        let _ = tx.close().await;
        return None;
    }
    let heartbeat = links.settings.heartbeat;
    let welcome = frame(&Message::Welcome {
        node: identity.key.clone(),
        heartbeat_s: heartbeat.as_secs().max(1),
    });
    if tx.send(welcome).await.is_err() {
        links.remove(&link);
        return None;
    }
    let key = identity.key.clone();
    holders.hold(&identity, &announce).await;
    registry.link(identity, report(announce));
    let silence = heartbeat * 3;
    let mut writer = std::pin::pin!(write(&link, tx, requests_rx, control_rx, heartbeat, silence));
    let reader = read(&link, (&registry, &holders), rx, silence);
    let why = tokio::select! {
        why = &mut writer => why,
        why = reader => {
            // The writer says why to the node, then closes.
            link.close(&why);
            writer.await
        }
    };
    // Out of dispatch at once, unless a newer link of the same key took its place.
    let unlinked = links.remove(&link);
    if unlinked {
        registry.unlink(&key);
        holders.release(&key).await;
    }
    link.fail_calls();
    tracing::info!(node = %key, reason = %why, "link closed");
    unlinked.then_some(key)
}

/// Writes requests, credits, cancels and pings until the link closes; a write that does not
/// complete within `silence` (a node that does not read) closes it.
async fn write(
    link: &Link,
    mut tx: Tx,
    mut requests: mpsc::Receiver<Vec<u8>>,
    mut control: mpsc::UnboundedReceiver<Vec<u8>>,
    ping: Duration,
    silence: Duration,
) -> String {
    let mut ticks = tokio::time::interval(ping);
    ticks.tick().await;
    loop {
        let next = tokio::select! {
            biased;
            () = link.closed.cancelled() => {
                let reason = link.reason().unwrap_or_else(|| "closed".into());
                let _ = tokio::time::timeout(silence.min(CLOSING), async {
                    tx.send(frame(&Message::Refused { reason: reason.clone() })).await?;
                    tx.close().await
                }).await;
                return reason;
            }
            Some(f) = control.recv() => Ws::Binary(f.into()),
            Some(f) = requests.recv() => Ws::Binary(f.into()),
            _ = ticks.tick() => Ws::Ping(Bytes::new()),
        };
        match tokio::time::timeout(silence, tx.send(next)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return format!("writing: {e}"),
            Err(_) => return format!("the node read nothing for {silence:?}"),
        }
    }
}

/// Reads the node's frames until the link closes: heartbeats update its announce, answers go
/// to their calls. A rule broken closes the link.
async fn read(link: &Link, keep: (&Registry, &Holders), mut rx: Rx, silence: Duration) -> String {
    // A node heartbeats once a period (silence is three): one that sends faster has its extra
    // heartbeats dropped, so that it cannot make the router rebuild its registry per frame.
    let mut beats = Beats {
        last: None,
        gap: silence / 6,
    };
    loop {
        let ws = match tokio::time::timeout(silence, rx.next()).await {
            Err(_) => return format!("nothing from the node for {silence:?}"),
            Ok(None) => return "the node closed it".into(),
            Ok(Some(Err(e))) => return format!("reading: {e}"),
            Ok(Some(Ok(ws))) => ws,
        };
        let bytes = match ws {
            Ws::Binary(b) => b,
            Ws::Ping(_) | Ws::Pong(_) => continue,
            Ws::Close(_) => return "the node closed it".into(),
            Ws::Text(_) => return "a text frame: the link speaks binary frames".into(),
        };
        if let Err(why) = on_frame(link, keep, bytes, &mut beats) {
            return why;
        }
    }
}

/// When a link's last heartbeat was taken, and the least time between two taken.
struct Beats {
    last: Option<tokio::time::Instant>,
    gap: Duration,
}

impl Beats {
    /// Whether a heartbeat arriving at `now` is taken.
    fn take(&mut self, now: tokio::time::Instant) -> bool {
        if self.last.is_some_and(|last| now < last + self.gap) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// One frame of the node's.
fn on_frame(
    link: &Link,
    (registry, holders): (&Registry, &Holders),
    bytes: Bytes,
    beats: &mut Beats,
) -> Result<(), String> {
    let (message, payload) = decode(&bytes).map_err(|e| e.to_string())?;
    let payload_at = bytes.len() - payload.len();
    let mut calls = link.calls.lock().expect("calls poisoned");
    match message {
        Message::Heartbeat { announce } => {
            drop(calls);
            if beats.take(tokio::time::Instant::now()) {
                holders.announced(link.node(), &announce);
                registry.relink(link.node(), report(announce));
            }
        }
        Message::Head {
            call,
            status,
            content_type,
        } => {
            let Some(slot) = calls.get_mut(&call) else {
                return Ok(());
            };
            let Some(head) = slot.head.take() else {
                return Err(format!("a second head for call {call}"));
            };
            if !(100..=999).contains(&status) {
                return Err(format!("status {status} for call {call}"));
            }
            let _ = head.send(Head { status, content_type });
        }
        Message::Chunk { call } => {
            if payload.len() > MAX_CHUNK {
                return Err(format!("a chunk of {} bytes (at most {MAX_CHUNK})", payload.len()));
            }
            let Some(slot) = calls.get(&call) else { return Ok(()) };
            if slot.head.is_some() {
                return Err(format!("a chunk before the head of call {call}"));
            }
            match slot.body.try_send(Piece::Data(bytes.slice(payload_at..))) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(format!("call {call}: chunks sent past the router's credit"));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    calls.remove(&call);
                }
            }
        }
        Message::End { call, error, trailers } => {
            if let Some(slot) = calls.remove(&call) {
                let end = match error {
                    Some(e) => Err(e.chars().take(500).collect()),
                    None => Ok(header_map(trailers)),
                };
                // A slot for the end is always free: the window leaves one.
                let _ = slot.body.try_send(Piece::End(end));
            }
        }
        other => {
            return Err(format!("a node may not send {}", kind(&other)));
        }
    }
    Ok(())
}

/// A node's trailers as HTTP has them: at most [`MAX_TRAILERS`], each a valid header; the rest
/// is dropped.
fn header_map(trailers: std::collections::BTreeMap<String, String>) -> axum::http::HeaderMap {
    trailers
        .into_iter()
        .filter_map(|(name, value)| {
            Some((
                axum::http::HeaderName::from_bytes(name.as_bytes()).ok()?,
                axum::http::HeaderValue::from_str(&value).ok()?,
            ))
        })
        .take(MAX_TRAILERS)
        .collect()
}

fn kind(message: &Message) -> &'static str {
    match message {
        Message::Challenge { .. } => "challenge",
        Message::Hello { .. } => "a second hello",
        Message::Welcome { .. } => "welcome",
        Message::Refused { .. } => "refused",
        Message::Request { .. } => "request",
        Message::Credit { .. } => "credit",
        Message::Cancel { .. } => "cancel",
        _ => "that",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_faster_than_half_a_period_are_dropped() {
        let mut beats = Beats {
            last: None,
            gap: Duration::from_millis(500),
        };
        let start = tokio::time::Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert!(beats.take(at(0)));
        for _ in 0..100 {
            assert!(!beats.take(at(1)), "a flood is dropped");
        }
        assert!(!beats.take(at(499)));
        assert!(beats.take(at(500)), "the next on time is taken");
        assert!(beats.take(at(1500)));
    }
}

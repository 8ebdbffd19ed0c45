//! Alerts as Nostr direct messages: each change of state of an alert goes to every operator the
//! node names, as a NIP-17 private message from the router's own key
//! ([`infernet_identity::dm`]), published to the router's relays (`--alert-relay`).
//!
//! The publisher is a small WebSocket client (one connection per relay and delivery): it sends
//! `["EVENT", wrap]` for each operator's gift wrap and waits for `["OK", id, true, …]` for each,
//! within [`super::deliver::TIMEOUT`]. A relay that refuses (`false`), closes or cannot be
//! reached is tried again with the webhooks' backoff; relays that accepted are not sent to
//! again. A relay's answers are read at most [`MAX_RELAY_MESSAGE`] bytes each.

use std::{collections::HashSet, sync::Arc};

use futures::{SinkExt, StreamExt};
use infernet_identity::{
    Identity, PublicKey,
    dm::{self, GiftWrap},
};
use infernet_service::{
    retry::RetryPolicy,
    websocket::{self, WsUrl},
};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{Message as Ws, protocol::WebSocketConfig};

use super::deliver::{Event, TIMEOUT};

/// Relays at most (`--alert-relay`).
pub const MAX_RELAYS: usize = 16;
/// Operators one alert is sent to at most (the operators its node names).
pub const MAX_RECIPIENTS: usize = 16;
/// Largest message read from a relay.
pub const MAX_RELAY_MESSAGE: usize = 64 * 1024;

/// Why a relay did not take the messages.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// No connection, TLS or WebSocket handshake.
    #[error("{0}")]
    Connect(#[from] websocket::DialError),
    /// The relay answered `["OK", id, false, message]`.
    #[error("refused: {0}")]
    Refused(String),
    /// The relay closed the connection before it answered every message.
    #[error("closed the connection before answering")]
    Closed,
    /// The connection broke.
    #[error("{0}")]
    Broken(String),
    /// No answer within the time limit.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// The router's relays and the key it writes as.
#[derive(Debug, Clone)]
pub struct Relays {
    /// The router's key: the messages' sender.
    pub identity: Identity,
    /// Where messages are published.
    pub relays: Vec<WsUrl>,
    /// TLS for `wss://` relays.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Relays {
    /// Publishes as `identity` to `relays`; `wss://` ones with the system's roots.
    pub fn new(identity: Identity, relays: Vec<WsUrl>) -> Self {
        let tls = match relays.iter().any(|r| r.tls) {
            false => None,
            true => websocket::client_tls(Vec::new())
                .map_err(|e| tracing::error!(error = %e, "alerts: no TLS for wss:// relays; they will not be reached"))
                .ok(),
        };
        Self { identity, relays, tls }
    }
}

/// The text operators read: the alert's line, then its id.
fn message(event: &Event) -> String {
    format!("{}\n\nalert {}", event.line(), event.id)
}

/// Sends `event` to `to` through every relay, retrying relays that did not take it.
pub(super) async fn deliver(relays: Arc<Relays>, retry: RetryPolicy, to: Vec<PublicKey>, event: Arc<Event>) {
    let text = message(&event);
    let wraps: Vec<GiftWrap> = to
        .iter()
        .filter_map(|k| match dm::wrap(&relays.identity, k, &text) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, alert = %event.id, "alert message not wrapped");
                None
            }
        })
        .collect();
    if wraps.is_empty() {
        return;
    }
    let mut pending: Vec<&WsUrl> = relays.relays.iter().collect();
    let mut attempt = 1;
    loop {
        let outcomes = futures::future::join_all(pending.iter().map(|relay| async {
            let outcome = tokio::time::timeout(TIMEOUT, publish(relay, relays.tls.clone(), &wraps)).await;
            (*relay, outcome.unwrap_or(Err(RelayError::Timeout(TIMEOUT))))
        }))
        .await;
        pending.clear();
        for (relay, outcome) in outcomes {
            match outcome {
                Ok(()) => {
                    tracing::info!(relay = %relay.url, alert = %event.id, status = %event.status, "alert message published")
                }
                Err(e) => {
                    tracing::debug!(relay = %relay.url, alert = %event.id, attempt, error = %e, "alert message not published");
                    pending.push(relay);
                }
            }
        }
        if pending.is_empty() {
            return;
        }
        if !retry.allows(attempt + 1) {
            for relay in pending {
                tracing::warn!(relay = %relay.url, alert = %event.id, attempts = attempt, "alert message not published; giving up");
            }
            return;
        }
        tokio::time::sleep(retry.jittered_delay(attempt - 1)).await;
        attempt += 1;
    }
}

/// Publishes `wraps` to `relay` and waits until it accepted each.
async fn publish(relay: &WsUrl, tls: Option<Arc<rustls::ClientConfig>>, wraps: &[GiftWrap]) -> Result<(), RelayError> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_RELAY_MESSAGE))
        .max_frame_size(Some(MAX_RELAY_MESSAGE));
    let mut socket = websocket::dial(relay, tls, config).await?;
    let broken = |e: &dyn std::fmt::Display| RelayError::Broken(relay.url.scrub(&e.to_string()));
    for wrap in wraps {
        let frame = format!("[\"EVENT\",{}]", wrap.json);
        socket.feed(Ws::text(frame)).await.map_err(|e| broken(&e))?;
    }
    socket.flush().await.map_err(|e| broken(&e))?;
    let mut waiting: HashSet<&str> = wraps.iter().map(|w| w.id.as_str()).collect();
    while !waiting.is_empty() {
        let text = match socket.next().await {
            Some(Ok(Ws::Text(t))) => t,
            Some(Ok(Ws::Close(_))) | None => return Err(RelayError::Closed),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(broken(&e)),
        };
        match answer(&text) {
            Some((id, true, _)) => {
                waiting.remove(id.as_str());
            }
            Some((id, false, why)) if waiting.contains(id.as_str()) => return Err(RelayError::Refused(why)),
            // Notices, other events' answers, AUTH challenges: not what is awaited.
            _ => {}
        }
    }
    let _ = socket.close(None).await;
    Ok(())
}

/// `["OK", id, accepted, message]` as its parts.
fn answer(text: &str) -> Option<(String, bool, String)> {
    let v: Value = serde_json::from_str(text).ok()?;
    let a = v.as_array()?;
    if a.first()?.as_str()? != "OK" {
        return None;
    }
    let message: String = a
        .get(3)
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(512)
        .collect();
    Some((a.get(1)?.as_str()?.to_string(), a.get(2)?.as_bool()?, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_answers_are_read_for_their_verdict() {
        assert_eq!(
            answer(r#"["OK","ab",true,""]"#),
            Some(("ab".into(), true, String::new()))
        );
        assert_eq!(
            answer(r#"["OK","ab",false,"blocked: no DMs here"]"#),
            Some(("ab".into(), false, "blocked: no DMs here".into()))
        );
        assert_eq!(answer(r#"["NOTICE","slow down"]"#), None);
        assert_eq!(answer(r#"["OK","ab","yes"]"#), None);
        assert_eq!(answer("not json"), None);
    }

    #[test]
    fn the_message_names_the_rule_the_node_and_the_alert() {
        let event = Event {
            id: "a1".into(),
            status: "firing".into(),
            rule: "offline".into(),
            node: "10.0.0.5:4000".into(),
            subject: String::new(),
            summary: "no probe answered".into(),
            started_at: "2026-12-03T10:00:00Z".into(),
            resolved_at: None,
        };
        assert_eq!(
            message(&event),
            "[FIRING] offline on 10.0.0.5:4000: no probe answered\n\nalert a1"
        );
    }
}

//! Alert deliveries: one POST per change of state to each webhook, in the webhook's format,
//! retried with backoff until it answers 2xx or the attempts run out.
//!
//! - Generic: `{"id", "status", "rule", "node", "subject", "summary", "started_at"[,
//!   "resolved_at"]}` (`status` is `firing` or `resolved`, times RFC 3339).
//! - `slack:URL`: `{"text": …}`, as Slack's incoming webhooks take it.
//! - `discord:URL`: `{"content": …}` (at most 2,000 characters), as Discord's webhooks take it.
//! - Operators' Nostr keys: a NIP-17 direct message through the router's relays, one delivery
//!   per change of state for all of the alert's operators ([`super::nostr`]).
//!
//! The queue is bounded ([`QUEUE`]): when a flood of alerts fills it, further deliveries are
//! dropped with a warning rather than held in memory. [`CONCURRENCY`] deliveries run at once;
//! each attempt has [`TIMEOUT`]; redirects are not followed.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, future::Either};
use infernet_identity::PublicKey;
use infernet_service::{retry::RetryPolicy, secret::SensitiveUrl};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::nostr::{self, Relays};
use crate::gateway::callback::{UrlError, check_url};

/// Deliveries waiting at most.
pub const QUEUE: usize = 1024;
/// Deliveries in flight at most.
pub const CONCURRENCY: usize = 16;
/// Time limit of one attempt.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest Discord message.
const DISCORD_MAX: usize = 2000;

/// A webhook's payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per change.
    Generic,
    /// Slack's `{"text"}`.
    Slack,
    /// Discord's `{"content"}`.
    Discord,
}

/// Where alerts are posted.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// Its payload format.
    pub format: Format,
    /// Its URL (shown redacted: webhook URLs are secrets).
    pub url: SensitiveUrl,
}

impl Webhook {
    /// `URL`, `slack:URL` or `discord:URL`; http(s) only, and not a private address unless
    /// `allow_private`.
    pub fn parse(text: &str, allow_private: bool) -> Result<Self, UrlError> {
        let text = text.trim();
        let (format, url) = match text.split_once(':') {
            Some(("slack", rest)) => (Format::Slack, rest),
            Some(("discord", rest)) => (Format::Discord, rest),
            _ => (Format::Generic, text),
        };
        let checked = check_url(url, allow_private)?;
        let url = SensitiveUrl::parse(&checked).map_err(|_| UrlError::Scheme)?;
        Ok(Self { format, url })
    }
}

/// An alert's change of state, as delivered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// The alert's id.
    pub id: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// The rule.
    pub rule: String,
    /// The node.
    pub node: String,
    /// What on the node (`""`: the node itself).
    pub subject: String,
    /// What is wrong.
    pub summary: String,
    /// When it started firing (RFC 3339).
    pub started_at: String,
    /// When it resolved (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
}

impl Event {
    /// One line for people: `[FIRING] offline on 10.0.0.5:4000: no probe answered …`.
    pub fn line(&self) -> String {
        let on = match self.subject.as_str() {
            "" => self.node.clone(),
            s => format!("{} ({s})", self.node),
        };
        let mut line = format!(
            "[{}] {} on {on}: {}",
            self.status.to_uppercase(),
            self.rule,
            self.summary
        );
        if let Some(at) = &self.resolved_at {
            line.push_str(&format!(" (since {}, resolved {at})", self.started_at));
        }
        line
    }

    /// The body posted to a webhook of `format`.
    pub fn body(&self, format: Format) -> Value {
        match format {
            Format::Generic => json!(self),
            Format::Slack => json!({"text": self.line()}),
            Format::Discord => json!({"content": self.line().chars().take(DISCORD_MAX).collect::<String>()}),
        }
    }
}

/// Where one delivery goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A webhook.
    Webhook(Webhook),
    /// Direct messages to these operators through the router's relays.
    Nostr(Vec<PublicKey>),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Webhook(w) => write!(f, "{}", w.url),
            Self::Nostr(to) => write!(f, "direct messages to {} operators", to.len()),
        }
    }
}

/// The sending end of the delivery queue.
pub struct Outbox(mpsc::Sender<(Target, Arc<Event>)>);

impl Outbox {
    /// Queues a delivery; dropped with a warning when the queue is full.
    pub fn push(&self, target: Target, event: Arc<Event>) {
        if let Err(e) = self.0.try_send((target, event)) {
            let (target, event) = match &e {
                mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d) => d,
            };
            tracing::warn!(%target, alert = %event.id, "alert delivery queue full; delivery dropped");
        }
    }
}

/// The receiving end: run it with [`Worker::run`].
pub struct Worker {
    queue: mpsc::Receiver<(Target, Arc<Event>)>,
    retry: RetryPolicy,
    relays: Option<Arc<Relays>>,
    /// Webhooks may name the router's own networks (`--callbacks-to-private`).
    allow_private: bool,
}

/// A bounded queue and its worker; direct messages go through `relays`.
pub fn queue(retry: RetryPolicy, relays: Option<Relays>, allow_private: bool) -> (Outbox, Worker) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (
        Outbox(tx),
        Worker {
            queue: rx,
            retry,
            relays: relays.map(Arc::new),
            allow_private,
        },
    )
}

impl Worker {
    /// Delivers until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT);
        // As for callbacks: a webhook's name is resolved to public addresses only when called.
        let builder = match self.allow_private {
            true => builder,
            false => builder.dns_resolver(Arc::new(crate::gateway::callback::PublicOnly)),
        };
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "alerts: no HTTP client; alerts are recorded but not delivered");
                return;
            }
        };
        let mut running = futures::stream::FuturesUnordered::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                next = self.queue.recv(), if running.len() < CONCURRENCY => match next {
                    Some((Target::Webhook(webhook), event)) => {
                        running.push(Either::Left(deliver(client.clone(), self.retry, webhook, event)))
                    }
                    Some((Target::Nostr(to), event)) => {
                        if let Some(relays) = &self.relays {
                            running.push(Either::Right(nostr::deliver(relays.clone(), self.retry, to, event)));
                        }
                    }
                    None => return,
                },
                Some(()) = running.next(), if !running.is_empty() => {}
            }
        }
    }
}

/// Posts `event` to `webhook`, retrying until 2xx or the attempts run out.
async fn deliver(client: reqwest::Client, retry: RetryPolicy, webhook: Webhook, event: Arc<Event>) {
    let body = event.body(webhook.format);
    let mut attempt = 1;
    loop {
        let outcome = client
            .post(webhook.url.expose().clone())
            .json(&body)
            .send()
            .await
            .map(|r| r.status());
        let why = match outcome {
            Ok(status) if status.is_success() => {
                tracing::info!(webhook = %webhook.url, alert = %event.id, status = %event.status, "alert delivered");
                return;
            }
            Ok(status) => format!("answered HTTP {}", status.as_u16()),
            Err(e) => webhook.url.scrub(&e.to_string()),
        };
        if !retry.allows(attempt + 1) {
            tracing::warn!(webhook = %webhook.url, alert = %event.id, attempts = attempt, %why, "alert not delivered; giving up");
            return;
        }
        tokio::time::sleep(retry.jittered_delay(attempt - 1)).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(resolved: bool) -> Event {
        Event {
            id: "a1".into(),
            status: if resolved { "resolved" } else { "firing" }.into(),
            rule: "offline".into(),
            node: "10.0.0.5:4000".into(),
            subject: String::new(),
            summary: "no probe answered, heartbeat or link message for 95 s".into(),
            started_at: "2026-12-03T10:00:00Z".into(),
            resolved_at: resolved.then(|| "2026-12-03T10:05:00Z".into()),
        }
    }

    #[test]
    fn each_format_has_its_payload() {
        let generic = event(false).body(Format::Generic);
        assert_eq!(generic["status"], "firing");
        assert_eq!(generic["started_at"], "2026-12-03T10:00:00Z");
        assert!(generic.get("resolved_at").is_none());
        assert_eq!(event(true).body(Format::Generic)["resolved_at"], "2026-12-03T10:05:00Z");
        let slack = event(false).body(Format::Slack);
        assert_eq!(
            slack,
            json!({"text": "[FIRING] offline on 10.0.0.5:4000: no probe answered, heartbeat or link message for 95 s"})
        );
        let discord = event(true).body(Format::Discord);
        assert!(discord["content"].as_str().unwrap().starts_with("[RESOLVED] offline"));
    }

    #[test]
    fn webhooks_name_their_format_and_refuse_private_addresses_unless_allowed() {
        let slack = Webhook::parse("slack:https://hooks.slack.com/services/T/B/secret", false).unwrap();
        assert_eq!(slack.format, Format::Slack);
        assert!(!format!("{:?}", slack.url).contains("secret"));
        assert_eq!(
            Webhook::parse("https://example.com/h", false).unwrap().format,
            Format::Generic
        );
        assert_eq!(
            Webhook::parse("discord:https://discord.com/api/webhooks/1/x", false)
                .unwrap()
                .format,
            Format::Discord
        );
        assert_eq!(Webhook::parse("http://127.0.0.1:9/h", false), Err(UrlError::Private));
        assert!(Webhook::parse("http://127.0.0.1:9/h", true).is_ok());
        assert_eq!(Webhook::parse("ftp://example.com", false), Err(UrlError::Scheme));
    }
}

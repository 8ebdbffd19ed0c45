//! The metric sender: a heartbeat with the node's identity, containers, load and job counters,
//! sent to `stats.endpoint` (a router's registration endpoint) every `stats.interval`, as a
//! statement signed by the node's key (`{"signed": <Nostr event>}`). It never carries job data,
//! results or client addresses. Failures are logged once, not at every beat. The endpoint may hold
//! a token (user info, query): logs, errors and `Debug` show it redacted.

use std::{fmt, sync::Arc, time::Duration};

use infernet_service::secret::SensitiveUrl;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::snapshot::{Snapshot, View};
use crate::{config::Secret, server::AppState};

/// Where and how often to send.
#[derive(Clone)]
pub struct SenderSettings {
    /// URL to POST to, as configured (may hold a token; shown only through [`SensitiveUrl`]).
    pub endpoint: String,
    /// Bearer token.
    pub token: Secret,
    /// Time between heartbeats.
    pub interval: Duration,
    /// Address to advertise (`host:port` or URL), if set.
    pub advertise: Option<String>,
    /// The node's REST port.
    pub port: u16,
}

impl fmt::Debug for SenderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoint = SensitiveUrl::parse(&self.endpoint);
        f.debug_struct("SenderSettings")
            .field("endpoint", &endpoint.as_ref().map_or("<invalid URL>", |u| u.redacted()))
            .field("token", &self.token)
            .field("interval", &self.interval)
            .field("advertise", &self.advertise)
            .field("port", &self.port)
            .finish()
    }
}

/// Why a heartbeat was not delivered (logged once until it recovers).
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    /// The router answered with an error status.
    #[error("HTTP {0}")]
    Status(u16),
    /// The request failed; the client's message, with the endpoint redacted.
    #[error("{0}")]
    Request(String),
}

/// Builds one heartbeat, from the snapshot `/info` reads too.
pub async fn heartbeat(state: &AppState, settings: &SenderSettings) -> Value {
    let mut beat = Snapshot::take(state, View::Heartbeat).await.heartbeat();
    beat["port"] = json!(settings.port);
    if let Some(address) = &settings.advertise {
        beat["address"] = json!(address);
    }
    beat
}

/// Sends heartbeats until `shutdown`.
pub async fn run(state: Arc<AppState>, settings: SenderSettings, shutdown: CancellationToken) {
    crate::install_tls_provider();
    // `validate` has accepted the URL already; this only keeps a bad one out of the log.
    let endpoint = match SensitiveUrl::parse(&settings.endpoint) {
        Ok(url) => url,
        Err(e) => {
            tracing::error!(error = %e, "metric sender off: stats.endpoint is not a URL");
            return;
        }
    };
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "metric sender off: cannot create its HTTP client");
            return;
        }
    };
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    tracing::info!(%endpoint, interval = ?settings.interval, "metric sender on");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let beat = heartbeat(&state, &settings).await;
        // Signed by the node's key: the router knows the node by that key, and believes whom it
        // belongs to only from the node's own statement.
        let signed = infernet_identity::statement::sign(state.admin.identity(), crate::admin::HEARTBEAT_SUBJECT, &beat)
            .expect("JSON values always serialise");
        let mut request = client.post(endpoint.expose().clone()).json(&json!({"signed": signed}));
        if !settings.token.is_empty() {
            request = request.bearer_auth(settings.token.expose());
        }
        let outcome = match request.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(DeliveryError::Status(r.status().as_u16())),
            // reqwest's message names the URL: show it redacted.
            Err(e) => Err(DeliveryError::Request(endpoint.scrub(&e.to_string()))),
        };
        match outcome {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(%endpoint, "heartbeats delivered again");
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%endpoint, %error, "heartbeat not delivered; retrying every interval (logged again when it recovers)");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_endpoint_token() {
        let settings = SenderSettings {
            endpoint: "https://agent:pw-31c@router.example/api/v1/register?token=tok-9f2".into(),
            token: Secret::new("bearer-77a"),
            interval: Duration::from_secs(1),
            advertise: None,
            port: 4000,
        };
        let shown = format!("{settings:?}");
        for secret in ["pw-31c", "tok-9f2", "bearer-77a", "agent"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("https://router.example/…"), "{shown}");
    }
}

//! The metric sender: a heartbeat with the node's identity, containers, load and job counters,
//! sent to `stats.endpoint` (a router's registration endpoint) every `stats.interval`. It never
//! carries job data, results or client addresses. Failures are logged once, not at every beat.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::snapshot::Snapshot;
use crate::{config::Secret, server::AppState};

/// Where and how often to send.
#[derive(Debug, Clone)]
pub struct SenderSettings {
    /// URL to POST to.
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

/// Builds one heartbeat, from the snapshot `/info` reads too.
pub async fn heartbeat(state: &AppState, settings: &SenderSettings) -> Value {
    let mut beat = Snapshot::take(state, true).await.heartbeat();
    beat["port"] = json!(settings.port);
    if let Some(address) = &settings.advertise {
        beat["address"] = json!(address);
    }
    beat
}

/// Sends heartbeats until `shutdown`.
pub async fn run(state: Arc<AppState>, settings: SenderSettings, shutdown: CancellationToken) {
    crate::install_tls_provider();
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
    tracing::info!(endpoint = %settings.endpoint, interval = ?settings.interval, "metric sender on");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let beat = heartbeat(&state, &settings).await;
        let mut request = client.post(&settings.endpoint).json(&beat);
        if !settings.token.is_empty() {
            request = request.bearer_auth(settings.token.expose());
        }
        let outcome = match request.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(endpoint = %settings.endpoint, "heartbeats delivered again");
            }
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(endpoint = %settings.endpoint, %error, "heartbeat not delivered; retrying every interval (logged again when it recovers)");
            }
            _ => {}
        }
    }
}

//! Linked nodes' figures for the alert rules: nobody can connect to a linked node, so the prober
//! never reads its `/info`. This poller asks for it over the node's link instead, at the prober's
//! interval, with the prober's timeout, byte limit and concurrency, and hands the answer to the
//! engine exactly as the prober does for reachable nodes: every rule judges both alike.

use std::sync::Arc;

use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Alerts;
use crate::{
    link::{Link, Links},
    monitor::{ProbeError, ProbeSettings, read_json},
};

/// Reads linked nodes' `/info` for the alert engine.
pub struct Poller {
    /// Where the answers go.
    pub alerts: Arc<Alerts>,
    /// The links this replica holds.
    pub links: Arc<Links>,
    /// Interval, timeout, byte limit and concurrency: the prober's.
    pub probe: ProbeSettings,
}

impl Poller {
    /// Polls every `probe.interval` until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.probe.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            self.round().await;
        }
    }

    /// One `/info` of every linked node.
    pub async fn round(&self) {
        let probe = &self.probe;
        futures::stream::iter(self.links.all())
            .map(|link| async move {
                let info = tokio::time::timeout(probe.timeout, info(&link, probe))
                    .await
                    .unwrap_or(Err(ProbeError::Timeout(probe.timeout)));
                (link, info)
            })
            .buffer_unordered(probe.concurrency.max(1))
            .for_each(|(link, info)| async move {
                match info {
                    Ok(info) => self.alerts.observe(link.node(), &info),
                    Err(e) => tracing::debug!(node = %link.node(), error = %e, "alerts: no /info over the link"),
                }
            })
            .await;
    }
}

/// `GET /info` over `link`, at most `probe.max_body_bytes` of it.
async fn info(link: &Arc<Link>, probe: &ProbeSettings) -> Result<Value, ProbeError> {
    let response = link.send("GET", "/info", None, None, None, probe.timeout).await?;
    read_json(response, "/info", probe.timeout, probe.max_body_bytes).await
}

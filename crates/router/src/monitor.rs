//! The prober: every refresh interval, `GET /info` on every node, concurrently (bounded), with a
//! timeout and pooled connections. Rounds start at a fixed rate; a slow node costs one timeout,
//! not the whole schedule.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::registry::{ContainerSummary, NodeReport, Registry};

/// The part of a node's `/info` the router relies on.
#[derive(Deserialize)]
struct Info {
    containers: Vec<ContainerSummary>,
    pending: Pending,
}

#[derive(Deserialize)]
struct Pending {
    #[serde(default)]
    offchain: u64,
    #[serde(default)]
    onchain: u64,
}

/// Probe settings.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSettings {
    /// Time between round starts.
    pub interval: Duration,
    /// Timeout of one probe.
    pub timeout: Duration,
    /// Probes in flight at once.
    pub concurrency: usize,
}

/// Runs probe rounds until `shutdown`.
pub struct Monitor {
    registry: Arc<Registry>,
    client: reqwest::Client,
    settings: ProbeSettings,
    /// Duration of the last round, in microseconds.
    pub last_round_micros: Arc<AtomicU64>,
}

async fn probe(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<NodeReport, String> {
    let response = client
        .get(format!("{url}/info"))
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {timeout:?}")
            } else {
                format!("unreachable: {e}")
            }
        })?;
    if !response.status().is_success() {
        return Err(format!("/info answered HTTP {}", response.status().as_u16()));
    }
    let info: Info = response
        .json()
        .await
        .map_err(|e| format!("/info is not a node's answer: {e}"))?;
    Ok(NodeReport {
        containers: info.containers,
        pending: info.pending.offchain + info.pending.onchain,
    })
}

impl Monitor {
    /// A monitor over `registry`.
    pub fn new(registry: Arc<Registry>, settings: ProbeSettings) -> Result<Self, reqwest::Error> {
        infernet_service::install_tls_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(settings.interval * 3)
            .build()?;
        Ok(Self {
            registry,
            client,
            settings,
            last_round_micros: Arc::default(),
        })
    }

    /// One round over every node; returns how long it took.
    pub async fn round(&self) -> Duration {
        let start = Instant::now();
        let targets = self.registry.targets(start);
        let timeout = self.settings.timeout;
        let results = futures::stream::iter(targets)
            .map(|(key, url)| async move {
                let result = probe(&self.client, &url, timeout).await;
                (key, result)
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        self.registry.apply(results);
        let took = start.elapsed();
        self.last_round_micros.store(took.as_micros() as u64, Ordering::Relaxed);
        took
    }

    /// Probes at a fixed rate until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let took = self.round().await;
            if took > self.settings.interval {
                tracing::warn!(?took, interval = ?self.settings.interval, "probe round longer than the refresh interval; raise --probe-concurrency");
            } else {
                tracing::debug!(?took, "probe round");
            }
        }
    }
}

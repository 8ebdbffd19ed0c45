//! The prober: every refresh interval, `GET /info` on every node, concurrently (bounded), with a
//! timeout, a byte limit on the answer and pooled connections. Rounds start at a fixed rate; a
//! slow node costs one timeout, not the whole schedule. Nodes that just registered are probed at
//! once, so they are served as soon as they answered, not a whole interval later.
//!
//! The byte limit exists because an `/info` body that never ends grew the router to 1.16 GB
//! within the 3 s timeout; now such a node costs at most `max_body_bytes` while it is read.

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

use crate::registry::{ContainerSummary, NodeReport, Offer, Registry};

/// Why a node's answer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The node did not answer (or finish its body) in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed.
    #[error("unreachable: {0}")]
    Unreachable(reqwest::Error),
    /// The node answered with an error status.
    #[error("{path} answered HTTP {status}")]
    Status {
        /// `/info` or `/resources`.
        path: &'static str,
        /// The status code.
        status: u16,
    },
    /// The body was longer than the router reads from a node.
    #[error("{path} answer larger than {limit} bytes (the router's --probe-max-bytes); not read further")]
    TooLarge {
        /// `/info` or `/resources`.
        path: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The node's link failed the request.
    #[error("over its link: {0}")]
    Link(#[from] crate::gateway::dispatch::NodeError),
    /// The body is not the JSON a node answers.
    #[error("{path} is not a node's answer: {source}")]
    NotNodeAnswer {
        /// `/info` or `/resources`.
        path: &'static str,
        /// What did not parse.
        source: serde_json::Error,
    },
}

impl ProbeError {
    fn from_reqwest(e: reqwest::Error, timeout: Duration) -> Self {
        if e.is_timeout() {
            Self::Timeout(timeout)
        } else {
            Self::Unreachable(e)
        }
    }
}

/// The part of a node's `/info` the router relies on.
#[derive(Deserialize)]
struct Info {
    containers: Vec<ContainerSummary>,
    pending: Pending,
    #[serde(default)]
    pricing: std::collections::BTreeMap<String, infernet_types::settings::Price>,
    #[serde(default)]
    availability: Option<Availability>,
    #[serde(default)]
    hardware: Option<infernet_types::Hardware>,
}

#[derive(Deserialize)]
struct Availability {
    #[serde(default = "open")]
    open: bool,
    #[serde(default)]
    available_at: Option<String>,
}

fn open() -> bool {
    true
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
    /// Largest body read from a node (`/info`, `/resources`).
    pub max_body_bytes: usize,
}

/// `GET {url}{path}` and parse its JSON, reading at most `limit` bytes within `timeout`.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    path: &'static str,
    timeout: Duration,
    limit: usize,
) -> Result<T, ProbeError> {
    // The request's timeout covers the body too, so a slow drip ends at `timeout`.
    let response = request
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| ProbeError::from_reqwest(e, timeout))?;
    read_json(response, path, timeout, limit).await
}

/// The JSON of a node's answer to `path`, reading at most `limit` bytes; a read that fails after
/// `timeout` counts as the timeout.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    mut response: reqwest::Response,
    path: &'static str,
    timeout: Duration,
    limit: usize,
) -> Result<T, ProbeError> {
    if !response.status().is_success() {
        return Err(ProbeError::Status {
            path,
            status: response.status().as_u16(),
        });
    }
    let body = crate::body::read_at_most(&mut response, limit)
        .await
        .map_err(|e| match e {
            crate::body::BodyError::TooLarge => ProbeError::TooLarge { path, limit },
            crate::body::BodyError::Read(e) => ProbeError::from_reqwest(e, timeout),
        })?;
    serde_json::from_slice(&body).map_err(|source| ProbeError::NotNodeAnswer { path, source })
}

/// Reads a node's `/info`: the report the registry keeps, and the whole answer (the alert rules
/// read more of it).
async fn probe(
    client: &reqwest::Client,
    url: &str,
    settings: &ProbeSettings,
) -> Result<(NodeReport, serde_json::Value), ProbeError> {
    let body: serde_json::Value = get_json(
        client.get(format!("{url}/info")),
        "/info",
        settings.timeout,
        settings.max_body_bytes,
    )
    .await?;
    let info = Info::deserialize(&body).map_err(|source| ProbeError::NotNodeAnswer { path: "/info", source })?;
    let report = NodeReport {
        containers: info.containers,
        // Saturating: a node's numbers are outside input.
        pending: info.pending.offchain.saturating_add(info.pending.onchain),
        offer: Offer {
            pricing: info.pricing,
            open: info.availability.as_ref().is_none_or(|a| a.open),
            available_at: info.availability.and_then(|a| a.available_at),
            hardware: info.hardware,
        },
    };
    Ok((report, body))
}

/// Runs probe rounds until `shutdown`.
pub struct Monitor {
    registry: Arc<Registry>,
    client: reqwest::Client,
    settings: ProbeSettings,
    /// Duration of the last round, in microseconds.
    pub last_round_micros: Arc<AtomicU64>,
    /// Reads every answer too, when set.
    alerts: Option<Arc<crate::alerts::Alerts>>,
    /// Counts each probe for the node's public record.
    samples: Option<Arc<crate::ledger::samples::Samples>>,
    /// Learns nodes' keys from their answers, for the gateway's MAC'd dispatches.
    dispatch_keys: Option<Arc<crate::gateway::keys::DispatchKeys>>,
}

impl Monitor {
    /// A monitor over `registry`.
    pub fn new(registry: Arc<Registry>, settings: ProbeSettings) -> Result<Self, reqwest::Error> {
        Self::trusting(registry, settings, Vec::new())
    }

    /// A monitor over `registry` that also trusts `roots` for nodes served over HTTPS.
    pub fn trusting(
        registry: Arc<Registry>,
        settings: ProbeSettings,
        roots: Vec<reqwest::Certificate>,
    ) -> Result<Self, reqwest::Error> {
        infernet_service::install_tls_provider();
        let client = reqwest::Client::builder()
            .tls_certs_merge(roots)
            .connect_timeout(settings.timeout)
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(settings.interval * 3)
            .build()?;
        Ok(Self {
            registry,
            client,
            settings,
            last_round_micros: Arc::default(),
            alerts: None,
            samples: None,
            dispatch_keys: None,
        })
    }

    /// Hands every node's answer to the alert engine too.
    pub fn with_alerts(mut self, alerts: Arc<crate::alerts::Alerts>) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Counts every probe in `samples` (uptime in nodes' public records).
    pub fn with_samples(self, samples: Arc<crate::ledger::samples::Samples>) -> Self {
        Self {
            samples: Some(samples),
            ..self
        }
    }

    /// Learns each node's key from its answers into `keys`.
    pub fn with_dispatch_keys(self, keys: Arc<crate::gateway::keys::DispatchKeys>) -> Self {
        Self {
            dispatch_keys: Some(keys),
            ..self
        }
    }

    /// One round over every node; returns how long it took.
    pub async fn round(&self) -> Duration {
        let start = Instant::now();
        self.probe_all(self.registry.targets(start)).await;
        let took = start.elapsed();
        self.last_round_micros.store(took.as_micros() as u64, Ordering::Relaxed);
        took
    }

    async fn probe_all(&self, targets: Vec<(String, String)>) {
        let results = futures::stream::iter(targets)
            .map(|(key, url)| async move {
                let result = probe(&self.client, &url, &self.settings).await;
                (key, result)
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        let results: Vec<(String, Result<NodeReport, ProbeError>)> = results
            .into_iter()
            .map(|(key, result)| {
                let report = result.map(|(report, info)| {
                    if let Some(alerts) = &self.alerts {
                        alerts.observe(&key, &info);
                    }
                    if let Some(keys) = &self.dispatch_keys {
                        keys.learn(&key, &info);
                    }
                    report
                });
                (key, report)
            })
            .collect();
        if let Some(samples) = &self.samples {
            for (node, result) in &results {
                samples.probe(node, result.is_ok());
            }
        }
        self.registry.apply(results);
    }

    /// Probes at a fixed rate until `shutdown`, and nodes that just registered at once.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.registry.joined() => {
                    self.probe_all(self.registry.unprobed()).await;
                    continue;
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot HTTP server on loopback that answers `head` and then `body_chunks` of 64 KiB.
    async fn serve_once(head: &'static str, body_chunks: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(head.as_bytes()).await;
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..body_chunks {
                if socket.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        url
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_refused_without_reading_it_all() {
        infernet_service::install_tls_provider();
        let client = reqwest::Client::new();
        // 64 MiB announced without a length: refused after 1 MiB, long before the timeout.
        let url = serve_once("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n", 1024).await;
        let started = Instant::now();
        let err = get_json::<serde_json::Value>(client.get(&url), "/info", Duration::from_secs(30), 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::TooLarge { limit: 1048576, .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // A declared length past the limit is refused before any body byte is read.
        let url = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 99999999\r\n\r\n", 0).await;
        let err = get_json::<serde_json::Value>(client.get(&url), "/info", Duration::from_secs(30), 1 << 20)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("larger than 1048576 bytes"), "{err}");
    }

    #[tokio::test]
    async fn loads_past_u64_saturate_instead_of_overflowing() {
        infernet_service::install_tls_provider();
        let body = r#"{"containers": [], "pending": {"offchain": 18446744073709551615, "onchain": 7}}"#;
        let head: &'static str = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        let url = serve_once(head, 0).await;
        let settings = ProbeSettings {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            concurrency: 1,
            max_body_bytes: 1024,
        };
        let (report, _) = probe(&reqwest::Client::new(), &url, &settings).await.unwrap();
        assert_eq!(report.pending, u64::MAX);
    }
}

//! Observability: Prometheus metrics, host statistics and the metric sender (heartbeats).

pub mod metrics;
pub mod sender;
pub mod system;

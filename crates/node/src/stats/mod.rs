//! Observability: one snapshot of the node, Prometheus metrics, host statistics and the metric
//! sender (heartbeats).

pub mod metrics;
pub mod sender;
pub mod snapshot;
pub mod system;

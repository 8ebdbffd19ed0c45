//! Observability: Prometheus metrics (and, with the operations work, the metric sender and system
//! stats).

pub mod metrics;
pub mod system;

//! Metric samples: per node and minute, counters that add up as samples arrive (two samples for
//! the same minute, from two replicas or two flushes, sum). Written through the
//! [`batcher`](super::batcher).

use super::{Db, DbError, from_row, on_pool};

/// Counters of one node over one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSample {
    /// The node's key.
    pub node: String,
    /// Unix time / 60.
    pub minute: i64,
    /// Jobs it ran to a result.
    pub jobs_ok: i64,
    /// Jobs it failed.
    pub jobs_failed: i64,
    /// Sum of the latencies of `jobs_ok`, in ms.
    pub latency_ms_sum: i64,
    /// Probes answered.
    pub probes_ok: i64,
    /// Probes failed.
    pub probes_failed: i64,
}

/// Adds one sample; parameters in column order.
pub(super) const ADD: &str = "INSERT INTO metric_samples (node, minute, jobs_ok, jobs_failed, latency_ms_sum, \
     probes_ok, probes_failed) VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (node, minute) DO UPDATE SET jobs_ok = metric_samples.jobs_ok + excluded.jobs_ok, \
     jobs_failed = metric_samples.jobs_failed + excluded.jobs_failed, \
     latency_ms_sum = metric_samples.latency_ms_sum + excluded.latency_ms_sum, \
     probes_ok = metric_samples.probes_ok + excluded.probes_ok, \
     probes_failed = metric_samples.probes_failed + excluded.probes_failed";

from_row!(MetricSample, |row| Ok(MetricSample {
    node: row.try_get("node")?,
    minute: row.try_get("minute")?,
    jobs_ok: row.try_get("jobs_ok")?,
    jobs_failed: row.try_get("jobs_failed")?,
    latency_ms_sum: row.try_get("latency_ms_sum")?,
    probes_ok: row.try_get("probes_ok")?,
    probes_failed: row.try_get("probes_failed")?,
}));

impl Db {
    /// The node's samples for minutes in `[from, to)`, oldest first.
    pub async fn metric_samples(&self, node: &str, from: i64, to: i64) -> Result<Vec<MetricSample>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(
                "SELECT node, minute, jobs_ok, jobs_failed, latency_ms_sum, probes_ok, probes_failed \
                 FROM metric_samples WHERE node = $1 AND minute >= $2 AND minute < $3 ORDER BY minute",
            )
            .bind(node)
            .bind(from)
            .bind(to)
            .fetch_all(p)
            .await?
        }))
    }

    /// Deletes samples older than `minute` (retention); returns how many.
    pub async fn prune_metric_samples(&self, minute: i64) -> Result<u64, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query("DELETE FROM metric_samples WHERE minute < $1")
                .bind(minute)
                .execute(p)
                .await?
                .rows_affected()
        }))
    }
}

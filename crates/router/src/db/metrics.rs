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
    /// Times the choice left it out: price above the client's maximum (or another unit).
    pub excluded_price: i64,
    /// … outside its available hours.
    pub excluded_hours: i64,
    /// … hardware short of the requirements.
    pub excluded_hardware: i64,
    /// … not healthy.
    pub excluded_health: i64,
    /// … too loaded.
    pub excluded_load: i64,
}

macro_rules! cols {
    () => {
        "node, minute, jobs_ok, jobs_failed, latency_ms_sum, probes_ok, probes_failed, \
         excluded_price, excluded_hours, excluded_hardware, excluded_health, excluded_load"
    };
}

/// Adds one sample; parameters in [`cols!`] order.
pub(super) const ADD: &str = concat!(
    "INSERT INTO metric_samples (",
    cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (node, minute) DO UPDATE SET jobs_ok = metric_samples.jobs_ok + excluded.jobs_ok, \
     jobs_failed = metric_samples.jobs_failed + excluded.jobs_failed, \
     latency_ms_sum = metric_samples.latency_ms_sum + excluded.latency_ms_sum, \
     probes_ok = metric_samples.probes_ok + excluded.probes_ok, \
     probes_failed = metric_samples.probes_failed + excluded.probes_failed, \
     excluded_price = metric_samples.excluded_price + excluded.excluded_price, \
     excluded_hours = metric_samples.excluded_hours + excluded.excluded_hours, \
     excluded_hardware = metric_samples.excluded_hardware + excluded.excluded_hardware, \
     excluded_health = metric_samples.excluded_health + excluded.excluded_health, \
     excluded_load = metric_samples.excluded_load + excluded.excluded_load"
);

from_row!(MetricSample, |row| Ok(MetricSample {
    node: row.try_get("node")?,
    minute: row.try_get("minute")?,
    jobs_ok: row.try_get("jobs_ok")?,
    jobs_failed: row.try_get("jobs_failed")?,
    latency_ms_sum: row.try_get("latency_ms_sum")?,
    probes_ok: row.try_get("probes_ok")?,
    probes_failed: row.try_get("probes_failed")?,
    excluded_price: row.try_get("excluded_price")?,
    excluded_hours: row.try_get("excluded_hours")?,
    excluded_hardware: row.try_get("excluded_hardware")?,
    excluded_health: row.try_get("excluded_health")?,
    excluded_load: row.try_get("excluded_load")?,
}));

impl Db {
    /// The node's samples for minutes in `[from, to)`, oldest first.
    pub async fn metric_samples(&self, node: &str, from: i64, to: i64) -> Result<Vec<MetricSample>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM metric_samples WHERE node = $1 AND minute >= $2 AND minute < $3 ORDER BY minute"
            ))
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

/// A node's samples over a range, summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricTotals {
    /// Jobs with a result.
    pub jobs_ok: i64,
    /// Jobs failed.
    pub jobs_failed: i64,
    /// Probes answered.
    pub probes_ok: i64,
    /// Probes failed.
    pub probes_failed: i64,
    /// Left out by price.
    pub excluded_price: i64,
    /// … by hours.
    pub excluded_hours: i64,
    /// … by hardware.
    pub excluded_hardware: i64,
    /// … by health.
    pub excluded_health: i64,
    /// Refused a job (busy).
    pub excluded_load: i64,
}

from_row!(MetricTotals, |row| {
    let get = |c: &str| row.try_get::<Option<i64>, _>(c).map(Option::unwrap_or_default);
    Ok(MetricTotals {
        jobs_ok: get("jobs_ok")?,
        jobs_failed: get("jobs_failed")?,
        probes_ok: get("probes_ok")?,
        probes_failed: get("probes_failed")?,
        excluded_price: get("excluded_price")?,
        excluded_hours: get("excluded_hours")?,
        excluded_hardware: get("excluded_hardware")?,
        excluded_health: get("excluded_health")?,
        excluded_load: get("excluded_load")?,
    })
});

impl Db {
    /// The node's samples for minutes in `[from, to)`, summed.
    pub async fn metric_totals(&self, node: &str, from: i64, to: i64) -> Result<MetricTotals, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(
                "SELECT CAST(SUM(jobs_ok) AS BIGINT) AS jobs_ok, CAST(SUM(jobs_failed) AS BIGINT) AS jobs_failed, \
                 CAST(SUM(probes_ok) AS BIGINT) AS probes_ok, CAST(SUM(probes_failed) AS BIGINT) AS probes_failed, \
                 CAST(SUM(excluded_price) AS BIGINT) AS excluded_price, \
                 CAST(SUM(excluded_hours) AS BIGINT) AS excluded_hours, \
                 CAST(SUM(excluded_hardware) AS BIGINT) AS excluded_hardware, \
                 CAST(SUM(excluded_health) AS BIGINT) AS excluded_health, \
                 CAST(SUM(excluded_load) AS BIGINT) AS excluded_load \
                 FROM metric_samples WHERE node = $1 AND minute >= $2 AND minute < $3",
            )
            .bind(node)
            .bind(from)
            .bind(to)
            .fetch_one(p)
            .await?
        }))
    }
}

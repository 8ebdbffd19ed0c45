//! Metric history for the plots: what nodes' signed heartbeats said (CPU, memory, GPU, pending
//! jobs, running job totals), summed per minute (kept [`MINUTES_KEPT`]) and per hour (kept
//! [`HOURS_KEPT`]) in the `node_history` table. Heartbeats reach the writer through a bounded
//! queue (a full queue drops the sample, never blocks a heartbeat); the writer also prunes.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::{Db, DbError, from_row, on_pool};

/// Upper bounds (s) of the latency buckets nodes report (`job_latency.le` in their heartbeats);
/// a last bucket counts the jobs above every bound.
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 180.0,
];
/// Latency buckets stored per row.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS.len() + 1;

/// Per-minute rows are kept this long.
pub const MINUTES_KEPT: Duration = Duration::from_secs(48 * 3600);
/// Per-hour rows are kept this long.
pub const HOURS_KEPT: Duration = Duration::from_secs(90 * 24 * 3600);
/// Samples waiting for the writer at most.
pub const QUEUE: usize = 4096;
/// How often old rows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// One heartbeat's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The node's key (`host:port`).
    pub node: String,
    /// When it arrived (Unix seconds).
    pub at: i64,
    /// CPU use, percent.
    pub cpu: f64,
    /// Memory in use, percent.
    pub memory: f64,
    /// Mean GPU use, percent, when the node has GPUs.
    pub gpu: Option<f64>,
    /// Pending jobs.
    pub pending: i64,
    /// Jobs run to a result since the node started.
    pub jobs_ok: i64,
    /// Jobs failed since the node started.
    pub jobs_failed: i64,
    /// Jobs finished since the previous heartbeat, per latency bucket ([`LATENCY_BOUNDS`]).
    pub latency: [i64; LATENCY_BUCKETS],
}

/// One point of a plot.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Point {
    /// Start of the bucket (Unix seconds).
    pub t: i64,
    /// Mean CPU use, percent.
    pub cpu: f64,
    /// Mean memory use, percent.
    pub memory: f64,
    /// Mean GPU use, percent (none without GPUs).
    pub gpu: Option<f64>,
    /// Mean pending jobs.
    pub pending: f64,
    /// Jobs finished per minute since the previous point (none for the first).
    pub jobs: Option<f64>,
    /// Share of those that succeeded, percent (none when none finished).
    pub success: Option<f64>,
    /// Median job latency in the bucket, ms (none without jobs).
    pub p50: Option<f64>,
    /// 99th percentile job latency in the bucket, ms (none without jobs).
    pub p99: Option<f64>,
}

/// The ranges the plots offer: (name, span, step).
pub const RANGES: [(&str, i64, i64); 4] = [
    ("1h", 3600, 60),
    ("24h", 24 * 3600, 60),
    ("7d", 7 * 24 * 3600, 3600),
    ("30d", 30 * 24 * 3600, 3600),
];

/// The latency columns, in order.
macro_rules! lat_cols {
    () => {
        "lat0, lat1, lat2, lat3, lat4, lat5, lat6, lat7, lat8, lat9, lat10, lat11, lat12, lat13, lat14"
    };
}

const UPSERT: &str = concat!(
    "INSERT INTO node_history (node, step, bucket, samples, cpu_sum, memory_sum, gpu_sum, gpu_samples, \
     pending_sum, jobs_ok, jobs_failed, ",
    lat_cols!(),
    ") VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25) \
     ON CONFLICT (node, step, bucket) DO UPDATE SET samples = node_history.samples + 1, \
     cpu_sum = node_history.cpu_sum + excluded.cpu_sum, \
     memory_sum = node_history.memory_sum + excluded.memory_sum, \
     gpu_sum = node_history.gpu_sum + excluded.gpu_sum, \
     gpu_samples = node_history.gpu_samples + excluded.gpu_samples, \
     pending_sum = node_history.pending_sum + excluded.pending_sum, \
     jobs_ok = excluded.jobs_ok, jobs_failed = excluded.jobs_failed, \
     lat0 = node_history.lat0 + excluded.lat0, lat1 = node_history.lat1 + excluded.lat1, lat2 = node_history.lat2 + excluded.lat2, lat3 = node_history.lat3 + excluded.lat3, lat4 = node_history.lat4 + excluded.lat4, lat5 = node_history.lat5 + excluded.lat5, lat6 = node_history.lat6 + excluded.lat6, lat7 = node_history.lat7 + excluded.lat7, lat8 = node_history.lat8 + excluded.lat8, lat9 = node_history.lat9 + excluded.lat9, lat10 = node_history.lat10 + excluded.lat10, lat11 = node_history.lat11 + excluded.lat11, lat12 = node_history.lat12 + excluded.lat12, lat13 = node_history.lat13 + excluded.lat13, lat14 = node_history.lat14 + excluded.lat14"
);

/// One stored row.
#[derive(Debug, Clone)]
struct Row {
    bucket: i64,
    samples: i64,
    cpu: f64,
    memory: f64,
    gpu: f64,
    gpu_samples: i64,
    pending: i64,
    ok: i64,
    failed: i64,
    latency: [i64; LATENCY_BUCKETS],
}

from_row!(Row, |row| {
    let mut latency = [0i64; LATENCY_BUCKETS];
    for (i, l) in latency.iter_mut().enumerate() {
        *l = row.try_get(format!("lat{i}").as_str())?;
    }
    Ok(Row {
        bucket: row.try_get("bucket")?,
        samples: row.try_get("samples")?,
        cpu: row.try_get("cpu_sum")?,
        memory: row.try_get("memory_sum")?,
        gpu: row.try_get("gpu_sum")?,
        gpu_samples: row.try_get("gpu_samples")?,
        pending: row.try_get("pending_sum")?,
        ok: row.try_get("jobs_ok")?,
        failed: row.try_get("jobs_failed")?,
        latency,
    })
});

impl Db {
    /// Adds `sample` to its minute and its hour.
    pub async fn add_history(&self, s: &Sample) -> Result<(), DbError> {
        for step in [60i64, 3600] {
            on_pool!(self, |p| {
                sqlx::query(UPSERT)
                    .bind(&s.node)
                    .bind(step)
                    .bind(s.at.div_euclid(step))
                    .bind(s.cpu)
                    .bind(s.memory)
                    .bind(s.gpu.unwrap_or(0.0))
                    .bind(i64::from(s.gpu.is_some()))
                    .bind(s.pending)
                    .bind(s.jobs_ok)
                    .bind(s.jobs_failed)
                    .bind(s.latency[0])
                    .bind(s.latency[1])
                    .bind(s.latency[2])
                    .bind(s.latency[3])
                    .bind(s.latency[4])
                    .bind(s.latency[5])
                    .bind(s.latency[6])
                    .bind(s.latency[7])
                    .bind(s.latency[8])
                    .bind(s.latency[9])
                    .bind(s.latency[10])
                    .bind(s.latency[11])
                    .bind(s.latency[12])
                    .bind(s.latency[13])
                    .bind(s.latency[14])
                    .execute(p)
                    .await
                    .map(|_| ())?
            });
        }
        Ok(())
    }

    /// The node's points of `step` seconds from `from` (Unix seconds), oldest first.
    pub async fn history(&self, node: &str, step: i64, from: i64) -> Result<Vec<Point>, DbError> {
        let rows: Vec<Row> = on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "SELECT bucket, samples, cpu_sum, memory_sum, gpu_sum, gpu_samples, pending_sum, jobs_ok, \
                 jobs_failed, ",
                lat_cols!(),
                " FROM node_history WHERE node = $1 AND step = $2 AND bucket >= $3 ORDER BY bucket"
            ))
            .bind(node)
            .bind(step)
            .bind(from.div_euclid(step))
            .fetch_all(p)
            .await?
        });
        Ok(points(&rows, step))
    }

    /// Deletes minutes older than `minutes_before` and hours older than `hours_before` (Unix s).
    pub async fn prune_history(&self, minutes_before: i64, hours_before: i64) -> Result<u64, DbError> {
        let mut gone = 0;
        for (step, before) in [(60i64, minutes_before), (3600, hours_before)] {
            gone += on_pool!(self, |p| {
                sqlx::query("DELETE FROM node_history WHERE step = $1 AND bucket < $2")
                    .bind(step)
                    .bind(before.div_euclid(step))
                    .execute(p)
                    .await?
                    .rows_affected()
            });
        }
        Ok(gone)
    }
}

/// The `q` quantile (0 to 1) of a stored latency histogram, in ms.
pub fn quantile(counts: &[i64; LATENCY_BUCKETS], q: f64) -> Option<f64> {
    infernet_service::web::latency_quantile(&LATENCY_BOUNDS, counts, q)
}

/// Rows to points: means of the gauges, job rates from the differences of the totals (a node
/// that restarted counts from zero again), latency quantiles from the bucket's histogram.
fn points(rows: &[Row], step: i64) -> Vec<Point> {
    let mut out = Vec::with_capacity(rows.len());
    let mut previous: Option<(i64, i64, i64)> = None;
    for r in rows {
        let n = r.samples.max(1) as f64;
        let (jobs, success) = match previous {
            Some((b, pok, pfailed)) => {
                let (dok, dfailed) = if r.ok < pok || r.failed < pfailed {
                    (r.ok, r.failed)
                } else {
                    (r.ok - pok, r.failed - pfailed)
                };
                let minutes = ((r.bucket - b) * step) as f64 / 60.0;
                let done = dok + dfailed;
                (
                    Some(done as f64 / minutes.max(1.0)),
                    (done > 0).then(|| 100.0 * dok as f64 / done as f64),
                )
            }
            None => (None, None),
        };
        previous = Some((r.bucket, r.ok, r.failed));
        out.push(Point {
            t: r.bucket * step,
            cpu: r.cpu / n,
            memory: r.memory / n,
            gpu: (r.gpu_samples > 0).then(|| r.gpu / r.gpu_samples as f64),
            pending: r.pending as f64 / n,
            jobs,
            success,
            p50: quantile(&r.latency, 0.5),
            p99: quantile(&r.latency, 0.99),
        });
    }
    out
}

/// Hands samples to the writer.
pub type HistorySender = mpsc::Sender<Sample>;

/// Writes samples until `shutdown`, pruning every [`PRUNE_EVERY`].
pub async fn run(db: Db, mut samples: mpsc::Receiver<Sample>, shutdown: CancellationToken) {
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = prune.tick() => {
                let now = infernet_identity::unix_now() as i64;
                let minutes = now - MINUTES_KEPT.as_secs() as i64;
                let hours = now - HOURS_KEPT.as_secs() as i64;
                if let Err(e) = db.prune_history(minutes, hours).await {
                    tracing::warn!(error = %e, "could not prune the node history");
                }
            }
            sample = samples.recv() => {
                let Some(sample) = sample else { return };
                if let Err(e) = db.add_history(&sample).await {
                    tracing::warn!(node = %sample.node, error = %e, "a history sample was not saved");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(bucket: i64, samples: i64, cpu: f64, gpu: (f64, i64), pending: i64, ok: i64, failed: i64) -> Row {
        Row {
            bucket,
            samples,
            cpu,
            memory: 40.0 * samples as f64,
            gpu: gpu.0,
            gpu_samples: gpu.1,
            pending,
            ok,
            failed,
            latency: [0; LATENCY_BUCKETS],
        }
    }

    #[test]
    fn points_average_gauges_and_difference_totals() {
        let rows = vec![
            row(10, 2, 50.0, (0.0, 0), 4, 10, 0),
            row(11, 1, 20.0, (90.0, 1), 1, 16, 2),
            row(13, 1, 20.0, (0.0, 0), 0, 3, 1),
        ];
        let p = points(&rows, 60);
        assert_eq!(p[0].t, 600);
        assert_eq!((p[0].cpu, p[0].memory, p[0].gpu, p[0].pending), (25.0, 40.0, None, 2.0));
        assert_eq!((p[0].jobs, p[0].success, p[0].p50), (None, None, None));
        assert_eq!((p[1].jobs, p[1].success, p[1].gpu), (Some(8.0), Some(75.0), Some(90.0)));
        // The node restarted: its totals start again.
        assert_eq!((p[2].jobs, p[2].success), (Some(2.0), Some(75.0)));
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut counts = [0i64; LATENCY_BUCKETS];
        assert_eq!(quantile(&counts, 0.5), None);
        // 100 jobs between 10 and 25 ms: the median half-way, p99 near the top.
        counts[5] = 100;
        assert!((quantile(&counts, 0.5).unwrap() - 17.5).abs() < 1e-9);
        assert!((quantile(&counts, 0.99).unwrap() - 24.85).abs() < 1e-9);
        // One job above every bound: p99 of 100 jobs stays in the bucket, the maximum at 180 s.
        counts[5] = 99;
        counts[14] = 1;
        assert!(quantile(&counts, 0.99).unwrap() <= 25.0);
        assert_eq!(quantile(&counts, 1.0), Some(180_000.0));
    }
}

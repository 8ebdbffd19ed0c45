//! Metric history for the plots: what nodes' signed heartbeats said (CPU, memory, GPU, pending
//! jobs, running job totals), summed per minute (kept [`MINUTES_KEPT`]) and per hour (kept
//! [`HOURS_KEPT`]) in the `node_history` table. Heartbeats reach the writer through a bounded
//! queue (a full queue drops the sample, never blocks a heartbeat); the writer also prunes.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::{Db, DbError, on_pool};

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
}

/// The ranges the plots offer: (name, span, step).
pub const RANGES: [(&str, i64, i64); 4] = [
    ("1h", 3600, 60),
    ("24h", 24 * 3600, 60),
    ("7d", 7 * 24 * 3600, 3600),
    ("30d", 30 * 24 * 3600, 3600),
];

const UPSERT: &str = "INSERT INTO node_history (node, step, bucket, samples, cpu_sum, memory_sum, gpu_sum, \
     gpu_samples, pending_sum, jobs_ok, jobs_failed) VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (node, step, bucket) DO UPDATE SET samples = node_history.samples + 1, \
     cpu_sum = node_history.cpu_sum + excluded.cpu_sum, \
     memory_sum = node_history.memory_sum + excluded.memory_sum, \
     gpu_sum = node_history.gpu_sum + excluded.gpu_sum, \
     gpu_samples = node_history.gpu_samples + excluded.gpu_samples, \
     pending_sum = node_history.pending_sum + excluded.pending_sum, \
     jobs_ok = excluded.jobs_ok, jobs_failed = excluded.jobs_failed";

type Row = (i64, i64, f64, f64, f64, i64, i64, i64, i64);

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
            sqlx::query_as(
                "SELECT bucket, samples, cpu_sum, memory_sum, gpu_sum, gpu_samples, pending_sum, jobs_ok, \
                 jobs_failed FROM node_history WHERE node = $1 AND step = $2 AND bucket >= $3 ORDER BY bucket",
            )
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

/// Rows to points: means of the gauges, job rates from the differences of the totals (a node
/// that restarted counts from zero again).
fn points(rows: &[Row], step: i64) -> Vec<Point> {
    let mut out = Vec::with_capacity(rows.len());
    let mut previous: Option<(i64, i64, i64)> = None;
    for &(bucket, samples, cpu, memory, gpu, gpu_samples, pending, ok, failed) in rows {
        let n = samples.max(1) as f64;
        let (jobs, success) = match previous {
            Some((b, pok, pfailed)) => {
                let (dok, dfailed) = if ok < pok || failed < pfailed {
                    (ok, failed)
                } else {
                    (ok - pok, failed - pfailed)
                };
                let minutes = ((bucket - b) * step) as f64 / 60.0;
                let done = dok + dfailed;
                (
                    Some(done as f64 / minutes.max(1.0)),
                    (done > 0).then(|| 100.0 * dok as f64 / done as f64),
                )
            }
            None => (None, None),
        };
        previous = Some((bucket, ok, failed));
        out.push(Point {
            t: bucket * step,
            cpu: cpu / n,
            memory: memory / n,
            gpu: (gpu_samples > 0).then(|| gpu / gpu_samples as f64),
            pending: pending as f64 / n,
            jobs,
            success,
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

    #[test]
    fn points_average_gauges_and_difference_totals() {
        let rows = vec![
            (10, 2, 50.0, 80.0, 0.0, 0, 4, 10, 0),
            (11, 1, 20.0, 40.0, 90.0, 1, 1, 16, 2),
            (13, 1, 20.0, 40.0, 0.0, 0, 0, 3, 1),
        ];
        let p = points(&rows, 60);
        assert_eq!(p[0].t, 600);
        assert_eq!((p[0].cpu, p[0].memory, p[0].gpu, p[0].pending), (25.0, 40.0, None, 2.0));
        assert_eq!((p[0].jobs, p[0].success), (None, None));
        assert_eq!((p[1].jobs, p[1].success, p[1].gpu), (Some(8.0), Some(75.0), Some(90.0)));
        // The node restarted: its totals start again.
        assert_eq!((p[2].jobs, p[2].success), (Some(2.0), Some(75.0)));
    }
}

//! The ledger: one row per finished routed job — who ran what, for whom, for how long, at what
//! price (accounted by the node's advertised pricing, not settled), with the receipt the node
//! signed. Rows are written through the [`batcher`](super::batcher); writing a row twice keeps
//! the first.

use super::{
    Db, DbError, from_row,
    ledger_days::{self, Split},
    on_pool, parse_column,
};

/// A ledger row.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    /// The job's id.
    pub job_id: String,
    /// The client (`npub:<hex>`, `key:<id>`, `addr:<hash>`).
    pub client: String,
    /// The API key it came with.
    pub api_key_id: Option<String>,
    /// The node that ran it.
    pub node: String,
    /// That node's operator.
    pub operator: Option<String>,
    /// The containers, in order.
    pub containers: Vec<String>,
    /// Dispatched at (Unix ms).
    pub started_at: i64,
    /// Finished at (Unix ms).
    pub finished_at: i64,
    /// How it ended (a job status, e.g. `succeeded`).
    pub outcome: String,
    /// Compute time the node reported, in ms.
    pub duration_ms: i64,
    /// Price in `unit`.
    pub price: Option<f64>,
    /// The router's price unit.
    pub unit: Option<String>,
    /// The node's signed receipt, as sent.
    pub receipt: Option<String>,
}

macro_rules! cols {
    () => {
        "job_id, client, api_key_id, node, operator, containers, started_at, finished_at, outcome, \
         duration_ms, price, unit, receipt"
    };
}

/// Columns of a ledger row, as [`cols!`] names them.
pub(super) const COLS: usize = 13;

/// Inserts `rows` rows, each its 13 parameters in [`cols!`] order; a row already there is kept.
/// Returns the ids of the rows it inserted.
pub(super) fn insert(rows: usize, numbered: bool) -> String {
    let mut sql = String::with_capacity(200 + rows * 60);
    sql.push_str(concat!("INSERT INTO ledger (", cols!(), ") VALUES "));
    super::push_values(&mut sql, rows, COLS, numbered);
    sql.push_str(" ON CONFLICT (job_id) DO NOTHING RETURNING job_id");
    sql
}

from_row!(LedgerRow, |row| {
    let containers: String = row.try_get("containers")?;
    Ok(LedgerRow {
        job_id: row.try_get("job_id")?,
        client: row.try_get("client")?,
        api_key_id: row.try_get("api_key_id")?,
        node: row.try_get("node")?,
        operator: row.try_get("operator")?,
        containers: parse_column("containers", &containers, |s| serde_json::from_str(s))?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        outcome: row.try_get("outcome")?,
        duration_ms: row.try_get("duration_ms")?,
        price: row.try_get("price")?,
        unit: row.try_get("unit")?,
        receipt: row.try_get("receipt")?,
    })
});

impl Db {
    /// The node's rows finished in `[from, to)` (Unix ms), oldest first, at most `limit`.
    pub async fn ledger_of_node(&self, node: &str, from: i64, to: i64, limit: i64) -> Result<Vec<LedgerRow>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM ledger WHERE node = $1 AND finished_at >= $2 AND finished_at < $3 \
                 ORDER BY finished_at, job_id LIMIT $4"
            ))
            .bind(node)
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }

    /// Deletes rows finished before `before` (Unix ms; retention) and takes them off the day
    /// sums ([`ledger_days`]), in one transaction; returns how many rows.
    ///
    /// A row finished before `before` but inserted while this runs (on PostgreSQL) would be
    /// deleted without being taken off its day: rows are written as their jobs end, long after
    /// any retention's cut.
    pub async fn prune_ledger(&self, before: i64) -> Result<u64, DbError> {
        let day = ledger_days::day_of(before);
        Ok(on_pool!(self, |p| {
            let mut tx = p.begin().await?;
            sqlx::query(ledger_days::SUBTRACT)
                .bind(day)
                .bind(before)
                .execute(&mut *tx)
                .await?;
            sqlx::query(ledger_days::DELETE).bind(day).execute(&mut *tx).await?;
            let deleted = sqlx::query("DELETE FROM ledger WHERE finished_at < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            deleted
        }))
    }
}

/// Whose rows an aggregate sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose<'a> {
    /// One node's (its `host:port`).
    Node(&'a str),
    /// One operator's (hex key), over all their nodes.
    Operator(&'a str),
}

/// The rows of one UTC day, summed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DaySum {
    /// Days since the Unix epoch.
    pub day: i64,
    /// Rows.
    pub jobs: i64,
    /// Rows that succeeded.
    pub succeeded: i64,
    /// Sum of their prices (rows without a price count 0).
    pub earned: f64,
    /// Sum of their durations, ms.
    pub duration_ms: i64,
}

from_row!(DaySum, |row| Ok(DaySum {
    day: row.try_get("day")?,
    jobs: row.try_get("jobs")?,
    succeeded: row.try_get("succeeded")?,
    earned: row.try_get::<Option<f64>, _>("earned")?.unwrap_or(0.0),
    duration_ms: row.try_get("duration_ms")?,
}));

/// A container set's jobs and their mean duration.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerLatency {
    /// The containers, in order.
    pub containers: Vec<String>,
    /// Rows that succeeded.
    pub jobs: i64,
    /// Their mean duration, ms.
    pub mean_ms: f64,
}

from_row!(ContainerLatency, |row| {
    let containers: String = row.try_get("containers")?;
    Ok(ContainerLatency {
        containers: parse_column("containers", &containers, |s| serde_json::from_str(s))?,
        jobs: row.try_get("jobs")?,
        mean_ms: row.try_get::<Option<f64>, _>("mean_ms")?.unwrap_or(0.0),
    })
});

/// A ledger row with the job's id on its node (when the job's record is still kept).
#[derive(Debug, Clone, PartialEq)]
pub struct RowWithJob {
    /// The row.
    pub row: LedgerRow,
    /// The job's id on the node.
    pub node_job: Option<String>,
}

from_row!(RowWithJob, |row| Ok(RowWithJob {
    row: <LedgerRow as sqlx::FromRow<_>>::from_row(row)?,
    node_job: row.try_get("node_job")?,
}));

/// Sums per day of the rows; `$1` the node or operator, `$2`/`$3` the range in ms. The casts keep
/// both dialects' column types the same (PostgreSQL sums `BIGINT` as `NUMERIC`).
macro_rules! days {
    ($col:literal) => {
        concat!(
            "SELECT CAST(finished_at / 86400000 AS BIGINT) AS day, CAST(COUNT(*) AS BIGINT) AS jobs, \
             CAST(SUM(CASE WHEN outcome = 'succeeded' THEN 1 ELSE 0 END) AS BIGINT) AS succeeded, \
             SUM(price) AS earned, CAST(SUM(duration_ms) AS BIGINT) AS duration_ms \
             FROM ledger WHERE ",
            $col,
            " = $1 AND finished_at >= $2 AND finished_at < $3 GROUP BY finished_at / 86400000 ORDER BY 1"
        )
    };
}

/// The same from the day sums; `$2`/`$3` the range in days.
macro_rules! summed_days {
    ($col:literal) => {
        concat!(
            "SELECT day, CAST(SUM(jobs) AS BIGINT) AS jobs, CAST(SUM(succeeded) AS BIGINT) AS succeeded, \
             SUM(earned) AS earned, CAST(SUM(duration_ms) AS BIGINT) AS duration_ms FROM ledger_days WHERE ",
            $col,
            " = $1 AND day >= $2 AND day < $3 GROUP BY day ORDER BY 1"
        )
    };
}

impl Db {
    /// Rows of `whose` finished in `[from, to)` (Unix ms), summed per UTC day, oldest first: the
    /// whole days from their sums ([`ledger_days`]), the partial days at the edges from the rows.
    pub async fn ledger_days(&self, whose: Whose<'_>, from: i64, to: i64) -> Result<Vec<DaySum>, DbError> {
        let (rows, sums, key) = match whose {
            Whose::Node(n) => (days!("node"), summed_days!("node"), n),
            Whose::Operator(o) => (days!("operator"), summed_days!("operator"), o),
        };
        let split = Split::of(from, to);
        let mut days = Vec::new();
        for (sql, range) in [(rows, split.head), (sums, split.days), (rows, split.tail)] {
            let Some((from, to)) = range else { continue };
            let part: Vec<DaySum> = on_pool!(self, |p| {
                sqlx::query_as(sql).bind(key).bind(from).bind(to).fetch_all(p).await?
            });
            days.extend(part);
        }
        Ok(days)
    }

    /// The node's succeeded rows finished in `[from, to)`, per container set: how many, and their
    /// mean duration; most run first, at most 100 sets. Whole days from their sums.
    pub async fn ledger_latency(&self, node: &str, from: i64, to: i64) -> Result<Vec<ContainerLatency>, DbError> {
        const ROWS: &str = "SELECT containers, CAST(COUNT(*) AS BIGINT), CAST(SUM(duration_ms) AS BIGINT) \
             FROM ledger WHERE node = $1 AND finished_at >= $2 AND finished_at < $3 AND outcome = 'succeeded' \
             GROUP BY containers";
        const SUMS: &str = "SELECT containers, CAST(SUM(succeeded) AS BIGINT), CAST(SUM(succeeded_ms) AS BIGINT) \
             FROM ledger_days WHERE node = $1 AND day >= $2 AND day < $3 GROUP BY containers";
        let split = Split::of(from, to);
        let mut sets = std::collections::BTreeMap::<String, (i64, i64)>::new();
        for (sql, range) in [(ROWS, split.head), (SUMS, split.days), (ROWS, split.tail)] {
            let Some((from, to)) = range else { continue };
            let part: Vec<(String, i64, i64)> = on_pool!(self, |p| {
                sqlx::query_as(sql).bind(node).bind(from).bind(to).fetch_all(p).await?
            });
            for (containers, jobs, ms) in part {
                let set = sets.entry(containers).or_default();
                set.0 += jobs;
                set.1 += ms;
            }
        }
        let mut sets: Vec<(String, (i64, i64))> = sets.into_iter().filter(|(_, (jobs, _))| *jobs > 0).collect();
        // Most run first, then by containers (the map's order; the sort is stable).
        sets.sort_by_key(|(_, (jobs, _))| std::cmp::Reverse(*jobs));
        sets.into_iter()
            .take(100)
            .map(|(containers, (jobs, ms))| {
                Ok(ContainerLatency {
                    containers: parse_column("containers", &containers, |s| serde_json::from_str(s))?,
                    jobs,
                    mean_ms: ms as f64 / jobs as f64,
                })
            })
            .collect()
    }

    /// Rows of `nodes` (the first 500) finished in `[from, to)`, per node and container set (as
    /// stored): how many, and their prices summed (`None`: no row had one). Whole days from their
    /// sums (where a day with no priced row sums to `Some(0.0)`).
    pub async fn ledger_totals(
        &self,
        nodes: &[String],
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, String, i64, Option<f64>)>, DbError> {
        let nodes = &nodes[..nodes.len().min(500)];
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = (1..=nodes.len()).map(|i| format!("${i}")).collect();
        let (a, b) = (nodes.len() + 1, nodes.len() + 2);
        let list = list.join(", ");
        let rows = format!(
            "SELECT node, containers, CAST(COUNT(*) AS BIGINT), SUM(price) FROM ledger WHERE node IN ({list}) \
             AND finished_at >= ${a} AND finished_at < ${b} GROUP BY node, containers"
        );
        let sums = format!(
            "SELECT node, containers, CAST(SUM(jobs) AS BIGINT), SUM(earned) FROM ledger_days \
             WHERE node IN ({list}) AND day >= ${a} AND day < ${b} GROUP BY node, containers"
        );
        let split = Split::of(from, to);
        let mut totals = std::collections::BTreeMap::<(String, String), (i64, Option<f64>)>::new();
        for (sql, range) in [(&rows, split.head), (&sums, split.days), (&rows, split.tail)] {
            let Some((from, to)) = range else { continue };
            let part: Vec<(String, String, i64, Option<f64>)> = on_pool!(self, |p| {
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
                for node in nodes {
                    q = q.bind(node);
                }
                q.bind(from).bind(to).fetch_all(p).await?
            });
            for (node, containers, jobs, earned) in part {
                let t = totals.entry((node, containers)).or_default();
                t.0 += jobs;
                t.1 = match (t.1, earned) {
                    (Some(x), Some(y)) => Some(x + y),
                    (x, y) => x.or(y),
                };
            }
        }
        Ok(totals
            .into_iter()
            .map(|((node, containers), (jobs, earned))| (node, containers, jobs, earned))
            .collect())
    }

    /// The node's rows filed under `operator`, finished in `[from, to)`, oldest first, after the
    /// cursor `after` (`(finished_at, job_id)` of the last row of the previous page), at most
    /// `limit`; each with the job's id on the node.
    pub async fn ledger_rows(
        &self,
        node: &str,
        operator: &str,
        (from, to): (i64, i64),
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<RowWithJob>, DbError> {
        let (after_at, after_id) = after.unwrap_or((i64::MIN, ""));
        Ok(on_pool!(self, |p| {
            sqlx::query_as(
                "SELECT l.job_id, l.client, l.api_key_id, l.node, l.operator, l.containers, l.started_at, \
                 l.finished_at, l.outcome, l.duration_ms, l.price, l.unit, l.receipt, j.node_job \
                 FROM ledger l LEFT JOIN jobs j ON j.id = l.job_id \
                 WHERE l.node = $1 AND l.operator = $2 AND l.finished_at >= $3 AND l.finished_at < $4 \
                 AND (l.finished_at > $5 OR (l.finished_at = $5 AND l.job_id > $6)) \
                 ORDER BY l.finished_at, l.job_id LIMIT $7",
            )
            .bind(node)
            .bind(operator)
            .bind(from)
            .bind(to)
            .bind(after_at)
            .bind(after_id)
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }

    /// Whether `operator` has rows of `node`.
    pub async fn operates(&self, node: &str, operator: &str) -> Result<bool, DbError> {
        let found: Option<i64> = on_pool!(self, |p| {
            sqlx::query_scalar("SELECT CAST(1 AS BIGINT) FROM ledger WHERE node = $1 AND operator = $2 LIMIT 1")
                .bind(node)
                .bind(operator)
                .fetch_optional(p)
                .await?
        });
        Ok(found.is_some())
    }
}

//! The ledger: one row per finished routed job — who ran what, for whom, for how long, at what
//! price (accounted by the node's advertised pricing, not settled), with the receipt the node
//! signed. Rows are written through the [`batcher`](super::batcher); writing a row twice keeps
//! the first.

use super::{Db, DbError, from_row, on_pool, parse_column};

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

/// Inserts one row; the 13 parameters in [`cols!`] order. A row already there is kept.
pub(super) const INSERT: &str = concat!(
    "INSERT INTO ledger (",
    cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (job_id) DO NOTHING"
);

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

    /// Deletes rows finished before `before` (Unix ms; retention); returns how many.
    pub async fn prune_ledger(&self, before: i64) -> Result<u64, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query("DELETE FROM ledger WHERE finished_at < $1")
                .bind(before)
                .execute(p)
                .await?
                .rows_affected()
        }))
    }
}

//! Nodes the router knows, keyed by the node's Nostr public key (hex), or by `host:port` for a
//! node that signs nothing (a listed or legacy one), with the health record the router measured:
//! probes, job outcomes and latency, kept across restarts.

use super::{Db, DbError, from_row, on_pool};

/// A node's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Public key hex, or `host:port`.
    pub key: String,
    /// Where the router reaches it (`host:port` or a URL).
    pub address: String,
    /// The operator its signed statement names (public key hex).
    pub operator: Option<String>,
    /// First seen (Unix ms).
    pub first_seen: i64,
    /// Last heard from (Unix ms).
    pub last_seen: i64,
    /// Its last signed statement (hello or heartbeat), as sent.
    pub statement: Option<String>,
    /// Probes answered.
    pub probes_ok: i64,
    /// Probes that failed.
    pub probes_failed: i64,
    /// Probes failed since the last good one.
    pub failures_in_a_row: i64,
    /// Last probe (Unix ms).
    pub last_probe_at: Option<i64>,
    /// Jobs it ran to a result.
    pub jobs_ok: i64,
    /// Jobs it failed (refusals do not count).
    pub jobs_failed: i64,
    /// Sum of the latencies of `jobs_ok`, in ms (mean = sum / jobs_ok).
    pub latency_ms_sum: i64,
}

macro_rules! cols {
    () => {
        "key, address, operator, first_seen, last_seen, statement, probes_ok, probes_failed, \
         failures_in_a_row, last_probe_at, jobs_ok, jobs_failed, latency_ms_sum"
    };
}

from_row!(Node, |row| Ok(Node {
    key: row.try_get("key")?,
    address: row.try_get("address")?,
    operator: row.try_get("operator")?,
    first_seen: row.try_get("first_seen")?,
    last_seen: row.try_get("last_seen")?,
    statement: row.try_get("statement")?,
    probes_ok: row.try_get("probes_ok")?,
    probes_failed: row.try_get("probes_failed")?,
    failures_in_a_row: row.try_get("failures_in_a_row")?,
    last_probe_at: row.try_get("last_probe_at")?,
    jobs_ok: row.try_get("jobs_ok")?,
    jobs_failed: row.try_get("jobs_failed")?,
    latency_ms_sum: row.try_get("latency_ms_sum")?,
}));

/// What a registration, heartbeat or the static list tells about a node.
#[derive(Debug, Clone, Copy)]
pub struct NodeSeen<'a> {
    /// Public key hex, or `host:port`.
    pub key: &'a str,
    /// Where to reach it.
    pub address: &'a str,
    /// The operator its verified statement names.
    pub operator: Option<&'a str>,
    /// The statement, as sent (kept when `None`).
    pub statement: Option<&'a str>,
    /// Now (Unix ms).
    pub now: i64,
}

impl Db {
    /// Inserts or refreshes a node (and its operator), keeping its health record.
    pub async fn upsert_node(&self, seen: &NodeSeen<'_>) -> Result<Node, DbError> {
        on_pool!(self, |p| {
            let mut tx = p.begin().await?;
            if let Some(operator) = seen.operator {
                sqlx::query(super::operators::UPSERT)
                    .bind(operator)
                    .bind(seen.now)
                    .execute(&mut *tx)
                    .await?;
            }
            let node: Node = sqlx::query_as(concat!(
                "INSERT INTO nodes (key, address, operator, first_seen, last_seen, statement) \
                 VALUES ($1, $2, $3, $4, $4, $5) \
                 ON CONFLICT (key) DO UPDATE SET address = excluded.address, \
                 operator = excluded.operator, last_seen = excluded.last_seen, \
                 statement = COALESCE(excluded.statement, nodes.statement) RETURNING ",
                cols!()
            ))
            .bind(seen.key)
            .bind(seen.address)
            .bind(seen.operator)
            .bind(seen.now)
            .bind(seen.statement)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(node)
        })
    }

    /// A node by key.
    pub async fn node(&self, key: &str) -> Result<Option<Node>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM nodes WHERE key = $1"))
                .bind(key)
                .fetch_optional(p)
                .await?
        }))
    }

    /// Every node, by key (to load the registry at start).
    pub async fn nodes(&self) -> Result<Vec<Node>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM nodes ORDER BY key"))
                .fetch_all(p)
                .await?
        }))
    }

    /// The nodes whose statements name `operator`.
    pub async fn nodes_of_operator(&self, operator: &str) -> Result<Vec<Node>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM nodes WHERE operator = $1 ORDER BY key"
            ))
            .bind(operator)
            .fetch_all(p)
            .await?
        }))
    }

    /// Counts one probe of `key`. `false` for an unknown node.
    pub async fn record_probe(&self, key: &str, ok: bool, now: i64) -> Result<bool, DbError> {
        let done = on_pool!(self, |p| {
            sqlx::query(
                "UPDATE nodes SET probes_ok = probes_ok + $2, probes_failed = probes_failed + 1 - $2, \
                 failures_in_a_row = CASE WHEN $2 = 1 THEN 0 ELSE failures_in_a_row + 1 END, \
                 last_probe_at = $3, last_seen = CASE WHEN $2 = 1 THEN $3 ELSE last_seen END \
                 WHERE key = $1",
            )
            .bind(key)
            .bind(i64::from(ok))
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Adds `ok` results (their latencies summing to `latency_ms_sum`) and `failed` failures to
    /// `key`'s record (a refusal — busy, paused, outside its hours — is not an outcome). `false` for
    /// an unknown node.
    pub async fn add_job_outcomes(
        &self,
        key: &str,
        ok: i64,
        failed: i64,
        latency_ms_sum: i64,
    ) -> Result<bool, DbError> {
        let done = on_pool!(self, |p| {
            sqlx::query(
                "UPDATE nodes SET jobs_ok = jobs_ok + $2, jobs_failed = jobs_failed + $3, \
                 latency_ms_sum = latency_ms_sum + $4 WHERE key = $1",
            )
            .bind(key)
            .bind(ok.max(0))
            .bind(failed.max(0))
            .bind(latency_ms_sum.max(0))
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Forgets a node (its settings go with it; ledger rows stay).
    pub async fn delete_node(&self, key: &str) -> Result<bool, DbError> {
        let done = on_pool!(self, |p| {
            sqlx::query("DELETE FROM nodes WHERE key = $1")
                .bind(key)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }
}

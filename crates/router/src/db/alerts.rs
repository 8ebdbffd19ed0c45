//! Alerts and each operator's alert settings. A firing alert is one row, unique per node, rule
//! and subject while it fires: the replica whose insert lands sends it, the others adopt it.

use super::{Db, DbError, from_row, on_pool};

/// An alert's row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Alert {
    /// Id (UUID).
    pub id: String,
    /// The node (`host:port`, or its key for a linked node).
    pub node: String,
    /// The rule ([`crate::alerts::rules::RULES`]).
    pub rule: String,
    /// What on the node: `""`, a container id, a wallet, a GPU index.
    pub subject: String,
    /// Hex keys of the operators the node named, space-separated.
    #[serde(skip)]
    pub operators: String,
    /// What was wrong when it fired.
    pub summary: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// A silence matched: not delivered.
    pub silenced: bool,
    /// Fired at (Unix ms).
    pub started_at: i64,
    /// Resolved at (Unix ms).
    pub resolved_at: Option<i64>,
    /// Acknowledged at (Unix ms).
    pub acked_at: Option<i64>,
    /// Who acknowledged it (hex key).
    pub acked_by: Option<String>,
}

macro_rules! cols {
    () => {
        "id, node, rule, subject, operators, summary, status, silenced, started_at, resolved_at, \
         acked_at, acked_by"
    };
}

from_row!(Alert, |row| Ok(Alert {
    id: row.try_get("id")?,
    node: row.try_get("node")?,
    rule: row.try_get("rule")?,
    subject: row.try_get("subject")?,
    operators: row.try_get("operators")?,
    summary: row.try_get("summary")?,
    status: row.try_get("status")?,
    silenced: row.try_get::<i64, _>("silenced")? != 0,
    started_at: row.try_get("started_at")?,
    resolved_at: row.try_get("resolved_at")?,
    acked_at: row.try_get("acked_at")?,
    acked_by: row.try_get("acked_by")?,
}));

/// Which alerts a listing wants.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Only alerts of nodes that named this operator (hex).
    pub operator: Option<String>,
    /// Only `firing` or `resolved` ones.
    pub status: Option<String>,
    /// Only this node's.
    pub node: Option<String>,
    /// Started before this time (Unix ms): the next page.
    pub before: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

impl Db {
    /// Inserts a firing alert; `false` when one already fires for its node, rule and subject
    /// (another replica raised it).
    pub async fn fire_alert(&self, alert: &Alert) -> Result<bool, DbError> {
        let done = on_pool!(self, |p| {
            sqlx::query(concat!(
                "INSERT INTO alerts (",
                cols!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, 'firing', $7, $8, NULL, NULL, NULL) ON CONFLICT DO NOTHING"
            ))
            .bind(&alert.id)
            .bind(&alert.node)
            .bind(&alert.rule)
            .bind(&alert.subject)
            .bind(&alert.operators)
            .bind(&alert.summary)
            .bind(i64::from(alert.silenced))
            .bind(alert.started_at)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Every firing alert (at start, and for replicas to adopt what another raised).
    pub async fn firing_alerts(&self, limit: i64) -> Result<Vec<Alert>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM alerts WHERE status = 'firing' ORDER BY started_at LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }

    /// Resolves a firing alert; `false` when it was not firing any more (another replica resolved
    /// it).
    pub async fn resolve_alert(&self, id: &str, now: i64) -> Result<bool, DbError> {
        let done = on_pool!(self, |p| {
            sqlx::query("UPDATE alerts SET status = 'resolved', resolved_at = $2 WHERE id = $1 AND status = 'firing'")
                .bind(id)
                .bind(now)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    /// One alert.
    pub async fn alert(&self, id: &str) -> Result<Option<Alert>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM alerts WHERE id = $1"))
                .bind(id)
                .fetch_optional(p)
                .await?
        }))
    }

    /// Alerts newest first, as `filter` says.
    pub async fn alerts(&self, filter: &AlertFilter) -> Result<Vec<Alert>, DbError> {
        let operator = filter.operator.as_ref().map(|o| format!("%{o}%"));
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM alerts WHERE ($1 IS NULL OR operators LIKE $1) AND ($2 IS NULL OR status = $2) \
                 AND ($3 IS NULL OR node = $3) AND ($4 IS NULL OR started_at < $4) \
                 ORDER BY started_at DESC, id LIMIT $5"
            ))
            .bind(operator.as_deref())
            .bind(filter.status.as_deref())
            .bind(filter.node.as_deref())
            .bind(filter.before)
            .bind(filter.limit)
            .fetch_all(p)
            .await?
        }))
    }

    /// Marks an alert acknowledged by `by`; `false` when there is no such alert.
    pub async fn ack_alert(&self, id: &str, by: &str, now: i64) -> Result<bool, DbError> {
        let done = on_pool!(self, |p| {
            sqlx::query("UPDATE alerts SET acked_at = $2, acked_by = $3 WHERE id = $1")
                .bind(id)
                .bind(now)
                .bind(by)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    /// Deletes resolved alerts that ended before `before` (retention).
    pub async fn forget_alerts(&self, before: i64) -> Result<u64, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query("DELETE FROM alerts WHERE status = 'resolved' AND resolved_at < $1")
                .bind(before)
                .execute(p)
                .await?
                .rows_affected()
        }))
    }

    /// Stores an operator's alert settings (JSON text).
    pub async fn put_alert_settings(&self, operator: &str, settings: &str, now: i64) -> Result<(), DbError> {
        on_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO alert_settings (operator, settings, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (operator) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
            )
            .bind(operator)
            .bind(settings)
            .bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// An operator's alert settings (JSON text), if they set any.
    pub async fn alert_settings(&self, operator: &str) -> Result<Option<String>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_scalar("SELECT settings FROM alert_settings WHERE operator = $1")
                .bind(operator)
                .fetch_optional(p)
                .await?
        }))
    }

    /// Every operator's alert settings, `(operator, JSON text)`, at most `limit`.
    pub async fn all_alert_settings(&self, limit: i64) -> Result<Vec<(String, String)>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as("SELECT operator, settings FROM alert_settings ORDER BY operator LIMIT $1")
                .bind(limit)
                .fetch_all(p)
                .await?
        }))
    }
}

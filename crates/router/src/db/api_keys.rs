//! API keys the router's operator issues (`infernet-router keys add`). Only a hash of a key is
//! stored: the key itself is shown once, when it is made, and a client presents it as a bearer
//! token that the router hashes to look it up.

use super::{Db, DbError, from_row, on_pool};

/// An API key's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Public id (what ledger rows and listings show).
    pub id: String,
    /// Hash of the key (hex); never the key.
    pub hash: String,
    /// The operator's note.
    pub label: Option<String>,
    /// Jobs per minute at most; `None`: no limit.
    pub per_minute: Option<i64>,
    /// Jobs per day at most; `None`: no limit.
    pub per_day: Option<i64>,
    /// Issued at (Unix ms).
    pub created_at: i64,
    /// Revoked at (Unix ms).
    pub revoked_at: Option<i64>,
}

macro_rules! cols {
    () => {
        "id, hash, label, per_minute, per_day, created_at, revoked_at"
    };
}

from_row!(ApiKey, |row| Ok(ApiKey {
    id: row.try_get("id")?,
    hash: row.try_get("hash")?,
    label: row.try_get("label")?,
    per_minute: row.try_get("per_minute")?,
    per_day: row.try_get("per_day")?,
    created_at: row.try_get("created_at")?,
    revoked_at: row.try_get("revoked_at")?,
}));

impl Db {
    /// Stores a new key (its id and hash must be new).
    pub async fn insert_api_key(&self, key: &ApiKey) -> Result<(), DbError> {
        on_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO api_keys (id, hash, label, per_minute, per_day, created_at, revoked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&key.id)
            .bind(&key.hash)
            .bind(&key.label)
            .bind(key.per_minute)
            .bind(key.per_day)
            .bind(key.created_at)
            .bind(key.revoked_at)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// The key with this hash, unless revoked.
    pub async fn active_api_key(&self, hash: &str) -> Result<Option<ApiKey>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM api_keys WHERE hash = $1 AND revoked_at IS NULL"
            ))
            .bind(hash)
            .fetch_optional(p)
            .await?
        }))
    }

    /// Every key, revoked ones too, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<ApiKey>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM api_keys ORDER BY created_at, id"))
                .fetch_all(p)
                .await?
        }))
    }

    /// Revokes key `id`. `false` when unknown or already revoked.
    pub async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool, DbError> {
        let done = on_pool!(self, |p| {
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }
}

/// A quota's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// A calendar minute (UTC).
    Minute,
    /// A calendar day (UTC).
    Day,
}

impl Span {
    /// Its length in ms.
    pub fn ms(self) -> i64 {
        match self {
            Self::Minute => 60_000,
            Self::Day => 86_400_000,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Day => "day",
        }
    }
}

/// A job refused by a key's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota {
    /// The quota that is used up.
    pub span: Span,
    /// Its limit.
    pub limit: i64,
    /// When its window ends (Unix ms): the client may try again then.
    pub until: i64,
}

impl Db {
    /// Counts one job against key `id`'s quotas (`per_minute`, `per_day`; `None`: no limit) at
    /// `now`, or refuses it when a quota is used up (then nothing is counted). Windows are fixed
    /// (calendar minute and day, UTC). The check and the increment are one statement per window,
    /// in one transaction: replicas sharing the database never admit more than the limit between
    /// them.
    pub async fn charge_api_key(
        &self,
        id: &str,
        per_minute: Option<i64>,
        per_day: Option<i64>,
        now: i64,
    ) -> Result<Result<(), OverQuota>, DbError> {
        let quotas: Vec<(Span, i64)> = [(Span::Minute, per_minute), (Span::Day, per_day)]
            .into_iter()
            .filter_map(|(span, limit)| Some((span, limit?)))
            .collect();
        if quotas.is_empty() {
            return Ok(Ok(()));
        }
        const CHARGE: &str = "INSERT INTO api_key_usage (key_id, span, window_start, used) VALUES ($1, $2, $3, 1) \
             ON CONFLICT (key_id, span, window_start) DO UPDATE SET used = api_key_usage.used + 1 \
             WHERE api_key_usage.used < $4 RETURNING used";
        on_pool!(self, |p| {
            let mut tx = p.begin().await?;
            for &(span, limit) in &quotas {
                let start = now - now.rem_euclid(span.ms());
                let over = OverQuota {
                    span,
                    limit,
                    until: start + span.ms(),
                };
                if limit < 1 {
                    return Ok(Err(over));
                }
                let used: Option<i64> = sqlx::query_scalar(CHARGE)
                    .bind(id)
                    .bind(span.as_str())
                    .bind(start)
                    .bind(limit)
                    .fetch_optional(&mut *tx)
                    .await?;
                if used.is_none() {
                    // Dropping the transaction rolls back what an earlier window counted.
                    return Ok(Err(over));
                }
            }
            tx.commit().await?;
            Ok(Ok(()))
        })
    }

    /// Jobs counted against key `id` in the windows holding `now`: (this minute, today).
    pub async fn api_key_usage(&self, id: &str, now: i64) -> Result<(i64, i64), DbError> {
        let mut used = [0i64; 2];
        for (i, span) in [Span::Minute, Span::Day].into_iter().enumerate() {
            let start = now - now.rem_euclid(span.ms());
            let n: Option<i64> = on_pool!(self, |p| {
                sqlx::query_scalar(
                    "SELECT used FROM api_key_usage WHERE key_id = $1 AND span = $2 AND window_start = $3",
                )
                .bind(id)
                .bind(span.as_str())
                .bind(start)
                .fetch_optional(p)
                .await?
            });
            used[i] = n.unwrap_or(0);
        }
        Ok((used[0], used[1]))
    }

    /// Deletes usage windows that started before `before` (Unix ms); returns how many.
    pub async fn prune_api_key_usage(&self, before: i64) -> Result<u64, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query("DELETE FROM api_key_usage WHERE window_start < $1")
                .bind(before)
                .execute(p)
                .await?
                .rows_affected()
        }))
    }

    /// The key with id `id`, revoked or not.
    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKey>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM api_keys WHERE id = $1"))
                .bind(id)
                .fetch_optional(p)
                .await?
        }))
    }
}

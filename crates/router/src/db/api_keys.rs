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

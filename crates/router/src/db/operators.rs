//! Operators: Nostr public keys (hex) that a node's verified statement names. A row exists once a
//! node named the key; which nodes an operator has is [`Db::nodes_of_operator`].

use super::{Db, DbError, from_row, on_pool};

/// Inserts an operator or moves its `last_seen` ($1 pubkey, $2 now).
pub(super) const UPSERT: &str = "INSERT INTO operators (pubkey, first_seen, last_seen) VALUES ($1, $2, $2) \
     ON CONFLICT (pubkey) DO UPDATE SET last_seen = excluded.last_seen";

/// An operator's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// Public key, 64 hex.
    pub pubkey: String,
    /// First named by a node (Unix ms).
    pub first_seen: i64,
    /// Last named by a node (Unix ms).
    pub last_seen: i64,
}

from_row!(Operator, |row| Ok(Operator {
    pubkey: row.try_get("pubkey")?,
    first_seen: row.try_get("first_seen")?,
    last_seen: row.try_get("last_seen")?,
}));

impl Db {
    /// An operator by public key.
    pub async fn operator(&self, pubkey: &str) -> Result<Option<Operator>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as("SELECT pubkey, first_seen, last_seen FROM operators WHERE pubkey = $1")
                .bind(pubkey)
                .fetch_optional(p)
                .await?
        }))
    }
}

//! The settings document each node advertises (availability, pricing, limits), kept as the node
//! sent it; the router's choice parses it. Deleted with the node.

use super::{Db, DbError, on_pool};

impl Db {
    /// Stores `settings` (JSON text) for the known node `node`.
    pub async fn put_node_settings(&self, node: &str, settings: &str, now: i64) -> Result<(), DbError> {
        on_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO node_settings (node, settings, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (node) DO UPDATE SET settings = excluded.settings, \
                 updated_at = excluded.updated_at",
            )
            .bind(node)
            .bind(settings)
            .bind(now)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// The node's settings document, if it advertised one.
    pub async fn node_settings(&self, node: &str) -> Result<Option<String>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_scalar("SELECT settings FROM node_settings WHERE node = $1")
                .bind(node)
                .fetch_optional(p)
                .await?
        }))
    }
}

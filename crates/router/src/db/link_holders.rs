//! Which replica holds each linked node's link (see [`crate::link::holders`]): a row per node,
//! written at its hello by the replica that holds the link, deleted when the link closes, and
//! refreshed by that replica on a short period so that the rows of a replica that died stop
//! counting.

use super::{Db, DbError, from_row, on_pool};

/// A link as its holder records it.
#[derive(Debug, Clone, Copy)]
pub struct Holding<'a> {
    /// The node's key, `npub1…`.
    pub node: &'a str,
    /// The holding replica's id.
    pub replica: &'a str,
    /// The URL the replica's peers reach it at.
    pub replica_url: &'a str,
    /// What the node announced (JSON).
    pub announce: &'a str,
    /// The operators it names (JSON array of `npub1…`).
    pub operators: &'a str,
    /// Unix ms.
    pub now: i64,
}

/// A link held by some replica, as its peers read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLink {
    /// The node's key, `npub1…`.
    pub node: String,
    /// The holding replica's id.
    pub replica: String,
    /// The URL its peers reach it at.
    pub replica_url: String,
    /// What the node announced last (JSON).
    pub announce: String,
    /// The operators it names (JSON array).
    pub operators: String,
    /// When the holder last refreshed the row (Unix ms, the holder's clock).
    pub seen: i64,
}

from_row!(HeldLink, |row| {
    Ok(HeldLink {
        node: row.try_get("node")?,
        replica: row.try_get("replica")?,
        replica_url: row.try_get("replica_url")?,
        announce: row.try_get("announce")?,
        operators: row.try_get("operators")?,
        seen: row.try_get("seen")?,
    })
});

impl Db {
    /// Records that `h.replica` holds the link of `h.node` from now on (a link held elsewhere
    /// before moved here: the newest hello wins).
    pub async fn hold_link(&self, h: &Holding<'_>) -> Result<(), DbError> {
        on_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO link_holders (node, replica, replica_url, announce, operators, since, seen) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (node) DO UPDATE SET \
                 replica = excluded.replica, replica_url = excluded.replica_url, \
                 announce = excluded.announce, operators = excluded.operators, \
                 since = excluded.since, seen = excluded.seen",
            )
            .bind(h.node)
            .bind(h.replica)
            .bind(h.replica_url)
            .bind(h.announce)
            .bind(h.operators)
            .bind(h.now)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// What `node`, linked to `replica`, announced since; nothing when its link moved on.
    pub async fn update_link_announce(&self, node: &str, replica: &str, announce: &str) -> Result<(), DbError> {
        on_pool!(self, |p| {
            sqlx::query("UPDATE link_holders SET announce = $3 WHERE node = $1 AND replica = $2")
                .bind(node)
                .bind(replica)
                .bind(announce)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// `replica` is alive at `now`: the leases of every link it holds are renewed, in one
    /// statement whatever their number.
    pub async fn refresh_links(&self, replica: &str, now: i64) -> Result<u64, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query("UPDATE link_holders SET seen = $2 WHERE replica = $1")
                .bind(replica)
                .bind(now)
                .execute(p)
                .await?
                .rows_affected()
        }))
    }

    /// The link of `node` closed on `replica` (a row another replica took since stays).
    pub async fn release_link(&self, node: &str, replica: &str) -> Result<(), DbError> {
        on_pool!(self, |p| {
            sqlx::query("DELETE FROM link_holders WHERE node = $1 AND replica = $2")
                .bind(node)
                .bind(replica)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Every link `replica` holds is released (it stops).
    pub async fn release_replica(&self, replica: &str) -> Result<u64, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query("DELETE FROM link_holders WHERE replica = $1")
                .bind(replica)
                .execute(p)
                .await?
                .rows_affected()
        }))
    }

    /// Links held by replicas other than `replica` and refreshed at `fresh_since` or later, at
    /// most `limit`, in key order.
    pub async fn peer_links(&self, replica: &str, fresh_since: i64, limit: i64) -> Result<Vec<HeldLink>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(
                "SELECT node, replica, replica_url, announce, operators, seen FROM link_holders \
                 WHERE replica <> $1 AND seen >= $2 ORDER BY node LIMIT $3",
            )
            .bind(replica)
            .bind(fresh_since)
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }

    /// Deletes the rows not refreshed since `before` (their replica died); returns how many.
    pub async fn expire_links(&self, before: i64) -> Result<u64, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query("DELETE FROM link_holders WHERE seen < $1")
                .bind(before)
                .execute(p)
                .await?
                .rows_affected()
        }))
    }
}

//! Leases of jobs on linked nodes: the inputs kept to run a job again, the lease that starts when
//! a node's link closes, and taking a lapsed job away from its node (a new attempt, so the old
//! node's late answer is fenced off by [`Db::finish_job`]).

use super::{Db, DbError, jobs::Job, jobs::Lease, on_pool};
use crate::db::jobs::cols;

impl Db {
    /// Keeps `ask` (the job as its client asked for it) of job `id`, dispatched to a linked node.
    pub async fn keep_link_input(&self, id: &str, ask: &str, now: i64) -> Result<(), DbError> {
        on_pool!(self, |p| {
            sqlx::query(
                "INSERT INTO link_inputs (job_id, ask, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (job_id) DO NOTHING",
            )
            .bind(id)
            .bind(ask)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// The kept input of job `id`.
    pub async fn link_input(&self, id: &str) -> Result<Option<String>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_scalar("SELECT ask FROM link_inputs WHERE job_id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?
        }))
    }

    /// Drops the inputs of jobs that ended; returns how many.
    pub async fn forget_link_inputs(&self) -> Result<u64, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query(
                "DELETE FROM link_inputs WHERE job_id IN \
                 (SELECT id FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled'))",
            )
            .execute(p)
            .await?
            .rows_affected()
        }))
    }

    /// The running jobs of `node` are leased until `lease.until()` and no longer: its link closed.
    pub async fn lapse_node_jobs(&self, node: &str, lease: &Lease<'_>) -> Result<u64, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query(
                "UPDATE jobs SET lease_owner = $2, lease_until = $3, updated_at = $4 \
                 WHERE status = 'running' AND node = $1",
            )
            .bind(node)
            .bind(lease.owner)
            .bind(lease.until())
            .bind(lease.now)
            .execute(p)
            .await?
            .rows_affected()
        }))
    }

    /// Ends as failed, with `why`, the jobs no node took whose replica stopped before it placed
    /// them: running on no node with their lease run out before `now`, or queued since before
    /// `queued_before` (never claimed). Their client reads the failure, and a retry with the same
    /// `Idempotency-Key` finds it rather than a job that never ends. How many.
    pub async fn fail_orphaned_jobs(&self, now: i64, queued_before: i64, why: &str) -> Result<u64, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query(
                "UPDATE jobs SET status = 'failed', error = $3, updated_at = $1, finished_at = $1, \
                 lease_owner = NULL, lease_until = NULL \
                 WHERE node IS NULL AND ((status = 'running' AND lease_until < $1) \
                 OR (status = 'queued' AND created_at < $2))",
            )
            .bind(now)
            .bind(queued_before)
            .bind(why)
            .execute(p)
            .await?
            .rows_affected()
        }))
    }

    /// Running jobs a linked node (`npub1…`) accepted, without a callback (their watcher posts
    /// it), whose row has not changed since before `before`: at most `limit`, the longest
    /// unchanged first.
    pub async fn quiet_linked_jobs(&self, before: i64, limit: i64) -> Result<Vec<Job>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM jobs WHERE status = 'running' AND updated_at < $1 AND node LIKE 'npub1%' \
                 AND node_job IS NOT NULL AND callback_url IS NULL ORDER BY updated_at, id LIMIT $2"
            ))
            .bind(before)
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }

    /// Notes that attempt `attempt` of running job `id` was looked at `now` (its `updated_at`).
    pub async fn touch_job(&self, id: &str, attempt: i64, now: i64) -> Result<(), DbError> {
        on_pool!(self, |p| {
            sqlx::query("UPDATE jobs SET updated_at = $3 WHERE id = $1 AND attempt = $2 AND status = 'running'")
                .bind(id)
                .bind(attempt)
                .bind(now)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Running jobs accepted by a linked node (`npub1…`) whose lease ran out before `now`: at most
    /// `limit`, oldest first.
    pub async fn lapsed_linked_jobs(&self, now: i64, limit: i64) -> Result<Vec<Job>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM jobs WHERE status = 'running' AND lease_until < $1 AND node LIKE 'npub1%' \
                 AND node_job IS NOT NULL ORDER BY created_at, id LIMIT $2"
            ))
            .bind(now)
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }

    /// Takes attempt `attempt` of job `id` from its node: attempt + 1, no node yet, leased to
    /// `lease.owner`. `None` when the attempt is no longer the running one (taken by another
    /// replica, ended, cancelled).
    pub async fn retake_job(&self, id: &str, attempt: i64, lease: &Lease<'_>) -> Result<Option<Job>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "UPDATE jobs SET attempt = attempt + 1, node = NULL, node_job = NULL, lease_owner = $3, \
                 lease_until = $4, updated_at = $5 \
                 WHERE id = $1 AND attempt = $2 AND status = 'running' RETURNING ",
                cols!()
            ))
            .bind(id)
            .bind(attempt)
            .bind(lease.owner)
            .bind(lease.until())
            .bind(lease.now)
            .fetch_optional(p)
            .await?
        }))
    }
}

//! Jobs routed through the gateway: the record only (who, which containers, which node, which
//! attempt, how it ended), never a job's inputs or outputs.
//!
//! A job's life: [`Db::insert_job`] (`queued`; a repeated idempotency key returns the first job)
//! → [`Db::claim_job`] / [`Db::claim_next_job`] (`running`, `attempt` + 1, leased to one router
//! replica until a deadline) → [`Db::set_job_node`] (the node it went to, the lease renewed) →
//! [`Db::finish_job`] (`succeeded` / `failed`) or [`Db::cancel_job`]. A claim is one atomic
//! statement, so two replicas never hold the same attempt; a lease that ran out without an answer
//! is given back by [`Db::requeue_expired_jobs`]. Updates after the claim name the attempt they
//! belong to, so the late answer of an earlier attempt changes nothing.

use std::{fmt, str::FromStr, time::Duration};

use super::{Db, DbError, from_row, on_pool, parse_column};

/// Longest error text a job's row keeps, in characters.
pub const MAX_ERROR: usize = 1000;

/// An error text (a node's words, often) as a job's row keeps it: at most [`MAX_ERROR`]
/// characters, control characters but line breaks and tabs as spaces. PostgreSQL refuses a NUL
/// in text, and one refused row would fail every row of its commit.
pub fn stored_text(text: &str) -> String {
    text.chars()
        .take(MAX_ERROR)
        .map(|c| match c {
            '\n' | '\t' => c,
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Accepted, waiting for a replica to dispatch it.
    Queued,
    /// Claimed by a replica (dispatched or about to be).
    Running,
    /// The node answered with a result.
    Succeeded,
    /// No node ran it, or the node failed it.
    Failed,
    /// The client cancelled it.
    Cancelled,
}

impl JobStatus {
    /// How it is stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether nothing more happens to the job.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status the router does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown job status \"{0}\"")]
pub struct UnknownStatus(String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            other => return Err(UnknownStatus(other.to_owned())),
        })
    }
}

/// A job's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its id, as the gateway answered it.
    pub id: String,
    /// Who submitted it (`npub:<hex>`, `key:<api key id>`, `addr:<hash>`).
    pub client: String,
    /// The client's `Idempotency-Key`, unique per client.
    pub idempotency_key: Option<String>,
    /// The containers it runs, in order.
    pub containers: Vec<String>,
    /// Where it is.
    pub status: JobStatus,
    /// The node it went to (the latest attempt's).
    pub node: Option<String>,
    /// The job's id on that node.
    pub node_job: Option<String>,
    /// Claims so far (0 while queued the first time).
    pub attempt: i64,
    /// The replica holding it while running.
    pub lease_owner: Option<String>,
    /// Until when that replica holds it (Unix ms).
    pub lease_until: Option<i64>,
    /// Where the final result is posted.
    pub callback_url: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Submitted at (Unix ms).
    pub created_at: i64,
    /// Last changed at (Unix ms).
    pub updated_at: i64,
    /// Finished at (Unix ms).
    pub finished_at: Option<i64>,
}

/// The columns of [`Job`], in one place for every statement.
macro_rules! cols {
    () => {
        "id, client, idempotency_key, containers, status, node, node_job, attempt, lease_owner, lease_until, \
         callback_url, error, created_at, updated_at, finished_at"
    };
}

pub(crate) use cols;

from_row!(Job, |row| {
    let containers: String = row.try_get("containers")?;
    let status: String = row.try_get("status")?;
    Ok(Job {
        id: row.try_get("id")?,
        client: row.try_get("client")?,
        idempotency_key: row.try_get("idempotency_key")?,
        containers: parse_column("containers", &containers, |s| serde_json::from_str(s))?,
        status: parse_column("status", &status, |s| s.parse())?,
        node: row.try_get("node")?,
        node_job: row.try_get("node_job")?,
        attempt: row.try_get("attempt")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until: row.try_get("lease_until")?,
        callback_url: row.try_get("callback_url")?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        finished_at: row.try_get("finished_at")?,
    })
});

/// What the gateway knows when a job arrives.
#[derive(Debug, Clone, Copy)]
pub struct NewJob<'a> {
    /// Its new id.
    pub id: &'a str,
    /// Who submits it.
    pub client: &'a str,
    /// The client's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<&'a str>,
    /// The containers it runs.
    pub containers: &'a [String],
    /// Where to post the final result.
    pub callback_url: Option<&'a str>,
    /// Now (Unix ms).
    pub now: i64,
}

/// What [`Db::insert_job`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// A new job.
    Created(Job),
    /// The client had sent this idempotency key before: the first job.
    Existing(Job),
}

impl Inserted {
    /// The job, new or first.
    pub fn job(&self) -> &Job {
        match self {
            Self::Created(j) | Self::Existing(j) => j,
        }
    }
}

/// Who takes a job and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    /// The replica (its id; any stable string).
    pub owner: &'a str,
    /// Now (Unix ms).
    pub now: i64,
    /// How long the claim holds without renewal.
    pub duration: Duration,
}

impl Lease<'_> {
    /// When the lease runs out (Unix ms).
    pub fn until(&self) -> i64 {
        self.now
            .saturating_add(i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX))
    }
}

impl Db {
    /// Records a new `queued` job, or returns the client's earlier job with the same idempotency
    /// key (also when two inserts race).
    pub async fn insert_job(&self, new: &NewJob<'_>) -> Result<Inserted, DbError> {
        let containers = super::containers_json(new.containers)?;
        let inserted: Option<Job> = on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "INSERT INTO jobs (id, client, idempotency_key, containers, status, attempt, \
                 callback_url, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, $6) \
                 ON CONFLICT (client, idempotency_key) DO NOTHING RETURNING ",
                cols!()
            ))
            .bind(new.id)
            .bind(new.client)
            .bind(new.idempotency_key)
            .bind(&containers)
            .bind(new.callback_url)
            .bind(new.now)
            .fetch_optional(p)
            .await?
        });
        if let Some(job) = inserted {
            return Ok(Inserted::Created(job));
        }
        // Only a repeated (client, key) conflicts: NULL keys never do.
        let key = new.idempotency_key.unwrap_or_default();
        let first: Option<Job> = on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM jobs WHERE client = $1 AND idempotency_key = $2"
            ))
            .bind(new.client)
            .bind(key)
            .fetch_optional(p)
            .await?
        });
        // Deleted between the two statements (retention): say so rather than insert twice.
        first
            .map(Inserted::Existing)
            .ok_or(DbError::Query(sqlx::Error::RowNotFound))
    }

    /// A job by id.
    pub async fn job(&self, id: &str) -> Result<Option<Job>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!("SELECT ", cols!(), " FROM jobs WHERE id = $1"))
                .bind(id)
                .fetch_optional(p)
                .await?
        }))
    }

    /// Takes job `id` for dispatch if it is queued or its lease ran out: `running`, attempt + 1,
    /// leased to `lease.owner`. `None` when another replica holds it or it has finished.
    pub async fn claim_job(&self, id: &str, lease: &Lease<'_>) -> Result<Option<Job>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "UPDATE jobs SET status = 'running', attempt = attempt + 1, lease_owner = $2, \
                 lease_until = $3, updated_at = $4 \
                 WHERE id = $1 AND (status = 'queued' OR (status = 'running' AND lease_until < $4)) \
                 RETURNING ",
                cols!()
            ))
            .bind(id)
            .bind(lease.owner)
            .bind(lease.until())
            .bind(lease.now)
            .fetch_optional(p)
            .await?
        }))
    }

    /// Takes the oldest queued job for dispatch, as [`Db::claim_job`] does; replicas claiming at
    /// once get different jobs.
    pub async fn claim_next_job(&self, lease: &Lease<'_>) -> Result<Option<Job>, DbError> {
        Ok(on_pool!(
            self,
            // SQLite: the statement holds the database's write lock from start to end.
            sqlite: concat!(
                "UPDATE jobs SET status = 'running', attempt = attempt + 1, lease_owner = $1, \
                 lease_until = $2, updated_at = $3 \
                 WHERE id = (SELECT id FROM jobs WHERE status = 'queued' \
                 ORDER BY created_at, id LIMIT 1) AND status = 'queued' RETURNING ",
                cols!()
            ),
            // PostgreSQL: rows another replica is claiming are skipped, not waited for.
            postgres: concat!(
                "UPDATE jobs SET status = 'running', attempt = attempt + 1, lease_owner = $1, \
                 lease_until = $2, updated_at = $3 \
                 WHERE id = (SELECT id FROM jobs WHERE status = 'queued' \
                 ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 AND status = 'queued' RETURNING ",
                cols!()
            ),
            |p, sql| {
                sqlx::query_as(sql)
                    .bind(lease.owner)
                    .bind(lease.until())
                    .bind(lease.now)
                    .fetch_optional(p)
                    .await?
            }
        ))
    }

    /// Records the node that attempt `attempt` went to (and the job's id there, once it accepted)
    /// and renews the lease. `false` when the attempt is no longer the job's current running one.
    pub async fn set_job_node(
        &self,
        id: &str,
        attempt: i64,
        node: &str,
        node_job: Option<&str>,
        lease: &Lease<'_>,
    ) -> Result<bool, DbError> {
        let done = on_pool!(self, |p| {
            sqlx::query(
                "UPDATE jobs SET node = $3, node_job = $7, lease_owner = $4, lease_until = $5, updated_at = $6 \
                 WHERE id = $1 AND attempt = $2 AND status = 'running'",
            )
            .bind(id)
            .bind(attempt)
            .bind(node)
            .bind(lease.owner)
            .bind(lease.until())
            .bind(lease.now)
            .bind(node_job)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Ends attempt `attempt` with `status` (`succeeded` or `failed`) and `error`. `None` when the
    /// attempt is no longer current (a late answer) or the job was cancelled.
    pub async fn finish_job(
        &self,
        id: &str,
        attempt: i64,
        status: JobStatus,
        error: Option<&str>,
        now: i64,
    ) -> Result<Option<Job>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "UPDATE jobs SET status = $3, error = $4, updated_at = $5, finished_at = $5, \
                 lease_owner = NULL, lease_until = NULL \
                 WHERE id = $1 AND attempt = $2 AND status = 'running' RETURNING ",
                cols!()
            ))
            .bind(id)
            .bind(attempt)
            .bind(status.as_str())
            .bind(error.map(stored_text))
            .bind(now)
            .fetch_optional(p)
            .await?
        }))
    }

    /// Cancels a job that has not finished. `None` when it is unknown or already final.
    pub async fn cancel_job(&self, id: &str, now: i64) -> Result<Option<Job>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "UPDATE jobs SET status = 'cancelled', updated_at = $2, finished_at = $2, \
                 lease_owner = NULL, lease_until = NULL \
                 WHERE id = $1 AND status IN ('queued', 'running') RETURNING ",
                cols!()
            ))
            .bind(id)
            .bind(now)
            .fetch_optional(p)
            .await?
        }))
    }

    /// `client`'s jobs, newest first, at most `limit`: those created before `before` (a
    /// `(created_at, id)` cursor, the last of the previous page), with `status` and running
    /// `container` when given.
    pub async fn jobs_of_client(
        &self,
        client: &str,
        status: Option<JobStatus>,
        container: Option<&str>,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<Job>, DbError> {
        // A container id as it appears, quoted, in the JSON list of the row.
        let quoted = container
            .map(|c| serde_json::to_string(c).unwrap_or_default())
            .map(|q| format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
        let (before_at, before_id) = before.map_or((i64::MAX, ""), |(at, id)| (at, id));
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM jobs WHERE client = $1 \
                 AND ($2 IS NULL OR status = $2) \
                 AND ($3 IS NULL OR containers LIKE $3 ESCAPE '\\') \
                 AND (created_at < $4 OR (created_at = $4 AND id < $5)) \
                 ORDER BY created_at DESC, id DESC LIMIT $6"
            ))
            .bind(client)
            .bind(status.map(JobStatus::as_str))
            .bind(quoted.as_deref())
            .bind(before_at)
            .bind(before_id)
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }

    /// Running jobs that have a callback, a node and a lease that ran out before `now` (their
    /// replica stopped watching them): at most `limit`, oldest first.
    pub async fn unwatched_callback_jobs(&self, now: i64, limit: i64) -> Result<Vec<Job>, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query_as(concat!(
                "SELECT ",
                cols!(),
                " FROM jobs WHERE status = 'running' AND callback_url IS NOT NULL AND node_job IS NOT NULL \
                 AND lease_until < $1 ORDER BY created_at, id LIMIT $2"
            ))
            .bind(now)
            .bind(limit)
            .fetch_all(p)
            .await?
        }))
    }

    /// Renews the lease of attempt `attempt`; `false` when it is no longer the running one.
    pub async fn renew_job_lease(&self, id: &str, attempt: i64, lease: &Lease<'_>) -> Result<bool, DbError> {
        let done = on_pool!(self, |p| {
            sqlx::query(
                "UPDATE jobs SET lease_owner = $3, lease_until = $4, updated_at = $5 \
                 WHERE id = $1 AND attempt = $2 AND status = 'running'",
            )
            .bind(id)
            .bind(attempt)
            .bind(lease.owner)
            .bind(lease.until())
            .bind(lease.now)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Puts running jobs whose lease ran out before `now` back in the queue; returns how many.
    pub async fn requeue_expired_jobs(&self, now: i64) -> Result<u64, DbError> {
        Ok(on_pool!(self, |p| {
            sqlx::query(
                "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_until = NULL, \
                 updated_at = $1 WHERE status = 'running' AND lease_until < $1",
            )
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_unknown_ones_are_refused() {
        for s in [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
        }
        assert!("done".parse::<JobStatus>().is_err());
        assert!(JobStatus::Cancelled.is_final() && !JobStatus::Running.is_final());
    }
}

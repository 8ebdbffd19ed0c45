//! Redis backend, laid out like Ritual's node so both can share one Redis: db 0 holds finished
//! jobs and db 1 running ones, each under the key `{client_ip}:{job_id}` with the `JobResult` JSON
//! as value. A third key per job, `job-owner:{id}` in db 0, maps the id to its client address so a
//! result can be read by id alone.
//!
//! Unlike Ritual's node, a restart does not wipe running jobs: they are recorded as failed; and
//! a finished job that Redis does not take (it is down, or refuses writes) is held in the
//! [`Outbox`] and written once it answers, so no accepted job stays running. A connection that
//! died while Redis was away is replaced before the command is given up: the first command after
//! Redis returns answers.

use std::{
    future::Future,
    net::IpAddr,
    sync::{Arc, Weak},
    time::Duration,
};

use async_trait::async_trait;
use infernet_types::JobResult;
use redis::{RedisResult, aio::ConnectionManager};

use super::{Backlog, Backoff, JobStore, Lifetimes, ListFilter, StoreError, StoredJob, interrupted, outbox::Outbox};

const OWNER_PREFIX: &str = "job-owner:";
/// Records the writer writes between two looks at the outbox.
const WRITE_BATCH: usize = 256;

/// The Redis job store.
pub struct RedisStore {
    db: Arc<Db>,
    outbox: Arc<Outbox>,
}

impl Drop for RedisStore {
    /// Stops the writer once it has written what it can.
    fn drop(&mut self) {
        self.outbox.close();
    }
}

/// The two databases, and how to write a job into them.
struct Db {
    addr: String,
    completed: ConnectionManager,
    pending: ConnectionManager,
    lifetimes: Lifetimes,
    /// One writer of the outbox at a time (the background writer, or a reader catching up).
    draining: tokio::sync::Mutex<()>,
}

fn key(owner: IpAddr, id: &str) -> String {
    format!("{owner}:{id}")
}

async fn open_db(host: &str, port: u16, db: u8) -> Result<ConnectionManager, StoreError> {
    let addr = format!("{host}:{port}");
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        addr.clone()
    };
    let client = redis::Client::open(format!("redis://{authority}/{db}")).map_err(|e| StoreError::Redis {
        addr: addr.clone(),
        message: e.to_string(),
    })?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(2);
    client
        .get_connection_manager_with_config(config)
        .await
        .map_err(|e| StoreError::Redis {
            addr,
            message: format!("cannot connect: {e}"),
        })
}

impl RedisStore {
    /// Connects to db 0 and db 1 and fails the jobs that were running when a node stopped.
    pub async fn connect(host: &str, port: u16, lifetimes: Lifetimes) -> Result<Self, StoreError> {
        Self::connect_with(host, port, lifetimes, Backlog::default()).await
    }

    /// [`Self::connect`], holding writes Redis does not take within `backlog`.
    pub async fn connect_with(
        host: &str,
        port: u16,
        lifetimes: Lifetimes,
        backlog: Backlog,
    ) -> Result<Self, StoreError> {
        let db = Arc::new(Db {
            addr: format!("{host}:{port}"),
            completed: open_db(host, port, 0).await?,
            pending: open_db(host, port, 1).await?,
            lifetimes,
            draining: tokio::sync::Mutex::new(()),
        });
        db.fail_interrupted().await?;
        let outbox = Arc::new(Outbox::new(backlog));
        tokio::spawn(write_owed(Arc::downgrade(&db), outbox.clone(), Backoff::new(backlog)));
        Ok(Self { db, outbox })
    }

    /// Writes what is owed before a read, so readers see every write made so far (when Redis
    /// does not take them, the read fails as well).
    async fn catch_up(&self) {
        if self.outbox.len() > 0 && self.db.drain(&self.outbox).await.is_ok() {
            self.outbox.store_answered();
        }
    }
}

/// The writer of the outbox: writes what is owed as it comes; while Redis does not take writes,
/// retries with backoff, or at once when another write shows it answers again. Ends once the
/// store is dropped.
async fn write_owed(db: Weak<Db>, outbox: Arc<Outbox>, mut backoff: Backoff) {
    loop {
        if outbox.is_failing() {
            tokio::select! {
                () = tokio::time::sleep(backoff.wait()) => {}
                () = outbox.answered.notified() => {}
            }
        } else {
            outbox.added.notified().await;
        }
        let Some(db) = db.upgrade() else { return };
        match db.drain(&outbox).await {
            Ok(written) if outbox.is_failing() => {
                outbox.set_failing(false);
                backoff.reset();
                tracing::info!(written, "redis takes writes again; the held job records are written");
            }
            Ok(_) => {}
            Err(e) if !outbox.is_failing() => {
                outbox.set_failing(true);
                tracing::warn!(error = %e, held = outbox.len(), "redis does not take writes; job records are held and retried");
            }
            Err(_) => {}
        }
        if outbox.is_closed() {
            return;
        }
    }
}

impl Db {
    fn error(&self, e: impl ToString) -> StoreError {
        StoreError::Redis {
            addr: self.addr.clone(),
            message: e.to_string(),
        }
    }

    /// Runs `op` on a connection of `db`; once more if the connection was found dead (the
    /// manager replaces it after the command that found out, so the second try gets the new one).
    async fn run<T, F, Fut>(&self, db: &ConnectionManager, op: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match op(db.clone()).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_io_error() || e.is_unrecoverable_error() => op(db.clone()).await.map_err(|e| self.error(e)),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Sends `cmd` to `db` (see [`Self::run`]).
    async fn query<T: redis::FromRedisValue>(&self, db: &ConnectionManager, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.run(db, |mut con| async move { cmd.query_async(&mut con).await })
            .await
    }

    /// Writes a job's record (JSON `value`): a finished one replaces the running one.
    async fn write(&self, owner: IpAddr, id: &str, value: &str, finished: bool) -> Result<(), StoreError> {
        let k = key(owner, id);
        let owner_key = format!("{OWNER_PREFIX}{id}");
        let owner_ttl = self.lifetimes.result.map(|r| r.max(self.lifetimes.pending));
        if finished {
            let mut pipe = redis::pipe();
            pipe.add_command(set_with_ttl(&k, value, self.lifetimes.result))
                .ignore()
                .add_command(set_with_ttl(&owner_key, &owner.to_string(), owner_ttl))
                .ignore();
            let pipe = &pipe;
            self.run(&self.completed, |mut con| async move {
                pipe.query_async::<()>(&mut con).await
            })
            .await?;
            self.query::<()>(&self.pending, redis::cmd("DEL").arg(&k)).await
        } else {
            self.query::<()>(
                &self.completed,
                &set_with_ttl(&owner_key, &owner.to_string(), owner_ttl),
            )
            .await?;
            self.query::<()>(&self.pending, &set_with_ttl(&k, value, Some(self.lifetimes.pending)))
                .await
        }
    }

    /// Writes what the outbox owes, until it owes nothing or a write fails; returns how many
    /// records were written.
    async fn drain(&self, outbox: &Outbox) -> Result<usize, StoreError> {
        let _turn = self.draining.lock().await;
        let mut written = 0;
        loop {
            let batch = outbox.batch(WRITE_BATCH);
            if batch.is_empty() {
                return Ok(written);
            }
            for (id, owed) in batch {
                self.write(owed.owner, &id, &owed.value, owed.finished).await?;
                outbox.written(&id, owed.seq);
                written += 1;
            }
        }
    }

    async fn fail_interrupted(&self) -> Result<(), StoreError> {
        let keys: Vec<String> = self.query(&self.pending, redis::cmd("KEYS").arg("*")).await?;
        let mut failed = 0usize;
        for k in keys {
            let Some((owner, id)) = k.rsplit_once(':') else {
                continue;
            };
            let Ok(owner) = owner.parse::<IpAddr>() else {
                continue;
            };
            let value: Option<String> = self.query(&self.pending, redis::cmd("GET").arg(&k)).await?;
            if let Some(job) = value.and_then(|v| serde_json::from_str::<JobResult>(&v).ok()) {
                let value = serde_json::to_string(&interrupted(&job)).map_err(|e| self.error(e))?;
                self.write(owner, id, &value, true).await?;
                failed += 1;
            }
        }
        if failed > 0 {
            tracing::warn!(
                jobs = failed,
                "jobs were running when the node stopped; marked as failed"
            );
        }
        Ok(())
    }
}

fn set_with_ttl(key: &str, value: &str, ttl: Option<Duration>) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    if let Some(ttl) = ttl {
        cmd.arg("EX").arg(ttl.as_secs().max(1));
    }
    cmd
}

#[async_trait]
impl JobStore for RedisStore {
    async fn put(&self, owner: IpAddr, job: &JobResult) -> Result<(), StoreError> {
        let value = serde_json::to_string(job).map_err(|e| self.db.error(e))?;
        let finished = job.status.is_final();
        // A job with a record owed is written in its turn, never around it; while Redis refuses
        // writes, a result joins the others at once.
        if self.outbox.owes(&job.id) || (finished && self.outbox.is_failing()) {
            return self.outbox.hold(&job.id, owner, value, finished);
        }
        match self.db.write(owner, &job.id, &value, finished).await {
            Ok(()) => {
                self.outbox.store_answered();
                Ok(())
            }
            Err(e) if finished => {
                tracing::warn!(job = %job.id, error = %e, "cannot write a job result now; held until redis takes it");
                self.outbox.hold(&job.id, owner, value, finished)
            }
            Err(e) => Err(e),
        }
    }

    fn put_detached(&self, owner: IpAddr, job: JobResult) {
        let held = serde_json::to_string(&job)
            .map_err(|e| self.db.error(e))
            .and_then(|value| self.outbox.hold(&job.id, owner, value, job.status.is_final()));
        if let Err(e) = held {
            tracing::error!(job = %job.id, error = %e, "cannot store a job");
        }
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<StoredJob>, StoreError> {
        let mut seen = std::collections::HashSet::new();
        let ids: Vec<&String> = ids.iter().filter(|id| seen.insert(id.as_str())).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.catch_up().await;
        let db = &self.db;
        let owner_keys: Vec<String> = ids.iter().map(|id| format!("{OWNER_PREFIX}{id}")).collect();
        let owners: Vec<Option<String>> = db.query(&db.completed, redis::cmd("MGET").arg(&owner_keys)).await?;
        let found: Vec<(&String, IpAddr)> = ids
            .iter()
            .zip(owners)
            .filter_map(|(id, owner)| Some((*id, owner?.parse::<IpAddr>().ok()?)))
            .collect();
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = found.iter().map(|(id, owner)| key(*owner, id)).collect();
        let done: Vec<Option<String>> = db.query(&db.completed, redis::cmd("MGET").arg(&keys)).await?;
        let running: Vec<Option<String>> = db.query(&db.pending, redis::cmd("MGET").arg(&keys)).await?;
        let mut out = Vec::with_capacity(found.len());
        for (((id, owner), done), running) in found.into_iter().zip(done).zip(running) {
            // A result still owed (the catch-up failed) is newer than what Redis has.
            let owed = self.outbox.finished(id).map(|o| (o.owner, o.value.to_string()));
            let Some((owner, value)) = owed.or(done.or(running).map(|v| (owner, v))) else {
                continue;
            };
            let job = serde_json::from_str::<JobResult>(&value).map_err(|e| StoreError::Corrupt {
                id: id.clone(),
                message: e.to_string(),
            })?;
            out.push(StoredJob { owner, job });
        }
        Ok(out)
    }

    async fn list(&self, owner: IpAddr, filter: ListFilter) -> Result<Vec<String>, StoreError> {
        self.catch_up().await;
        let prefix = format!("{owner}:");
        let pattern = format!("{prefix}*");
        let mut ids = Vec::new();
        let db = &self.db;
        let dbs: &[&ConnectionManager] = match filter {
            ListFilter::All => &[&db.pending, &db.completed],
            ListFilter::Pending => &[&db.pending],
            ListFilter::Completed => &[&db.completed],
        };
        for con in dbs {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
                let (next, keys): (u64, Vec<String>) = db.query(con, &scan).await?;
                ids.extend(own_ids(&keys, &prefix));
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(id.clone()));
        Ok(ids)
    }

    async fn pending_count(&self) -> Result<u64, StoreError> {
        self.catch_up().await;
        self.db.query(&self.db.pending, &redis::cmd("DBSIZE")).await
    }

    fn unwritten(&self) -> usize {
        self.outbox.len()
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

/// The ids of the keys `{owner}:{id}` that are `prefix`'s (`{owner}:`). Split on the prefix, not
/// on ':', so that IPv6 clients get whole ids back. Under an IPv6 owner, a remainder with a ':' is
/// another owner's whose address starts as this one's (`2001:db8::1:5:{id}` under
/// `2001:db8::1:`): the node's ids are UUIDs, and an id a container reported with a ':' is listed
/// only for IPv4 owners, whose prefix cannot be another's.
fn own_ids<'a>(keys: &'a [String], prefix: &'a str) -> impl Iterator<Item = String> + 'a {
    let v6 = prefix.matches(':').count() > 1;
    keys.iter()
        .filter_map(move |k| k.strip_prefix(prefix))
        .filter(move |id| !v6 || !id.contains(':'))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_holds_no_id_of_an_owner_whose_address_extends_the_callers() {
        let keys: Vec<String> = ["2001:db8::1:a1", "2001:db8::1:5:b2", "10.0.0.1:c3", "10.0.0.1:job:4"]
            .map(String::from)
            .to_vec();
        assert_eq!(own_ids(&keys, "2001:db8::1:").collect::<Vec<_>>(), vec!["a1"]);
        assert_eq!(own_ids(&keys, "2001:db8::1:5:").collect::<Vec<_>>(), vec!["b2"]);
        assert_eq!(own_ids(&keys, "10.0.0.1:").collect::<Vec<_>>(), vec!["c3", "job:4"]);
    }
}

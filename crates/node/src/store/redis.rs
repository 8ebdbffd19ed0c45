//! Redis backend, laid out like Ritual's node so both can share one Redis: db 0 holds finished
//! jobs and db 1 running ones, each under the key `{client_ip}:{job_id}` with the `JobResult` JSON
//! as value. A third key per job, `job-owner:{id}` in db 0, maps the id to its client address so a
//! result can be read by id alone.
//!
//! Unlike Ritual's node, a restart does not wipe running jobs: they are recorded as failed.

use std::{net::IpAddr, time::Duration};

use async_trait::async_trait;
use infernet_types::JobResult;
use redis::aio::ConnectionManager;

use super::{JobStore, Lifetimes, ListFilter, StoreError, StoredJob, interrupted};

const OWNER_PREFIX: &str = "job-owner:";

/// The Redis job store.
#[derive(Clone)]
pub struct RedisStore {
    addr: String,
    completed: ConnectionManager,
    pending: ConnectionManager,
    lifetimes: Lifetimes,
    /// Detached writes, applied in order by one background task (which holds a copy without it).
    detached: Option<tokio::sync::mpsc::UnboundedSender<(IpAddr, JobResult)>>,
}

fn key(owner: IpAddr, id: &str) -> String {
    format!("{owner}:{id}")
}

impl RedisStore {
    /// Connects to db 0 and db 1 and fails the jobs that were running when a node stopped.
    pub async fn connect(host: &str, port: u16, lifetimes: Lifetimes) -> Result<Self, StoreError> {
        let addr = format!("{host}:{port}");
        let open = |db: u8| {
            let addr = addr.clone();
            let url = format!(
                "redis://{}/{db}",
                if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    addr.clone()
                }
            );
            async move {
                let client = redis::Client::open(url).map_err(|e| StoreError::Redis {
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
        };
        let mut store = Self {
            completed: open(0).await?,
            pending: open(1).await?,
            addr,
            lifetimes,
            detached: None,
        };
        store.fail_interrupted().await?;
        let (detached, mut queue) = tokio::sync::mpsc::unbounded_channel::<(IpAddr, JobResult)>();
        let writer = store.clone();
        store.detached = Some(detached);
        // Ends when the store, which holds the only sender, is dropped.
        tokio::spawn(async move {
            while let Some((owner, job)) = queue.recv().await {
                if let Err(e) = writer.put(owner, &job).await {
                    tracing::error!(job = %job.id, error = %e, "cannot store job");
                }
            }
        });
        Ok(store)
    }

    fn error(&self, e: impl ToString) -> StoreError {
        StoreError::Redis {
            addr: self.addr.clone(),
            message: e.to_string(),
        }
    }

    async fn fail_interrupted(&self) -> Result<(), StoreError> {
        let mut pending = self.pending.clone();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut pending)
            .await
            .map_err(|e| self.error(e))?;
        let mut failed = 0usize;
        for k in keys {
            let Some((owner, _)) = k.rsplit_once(':') else {
                continue;
            };
            let Ok(owner) = owner.parse::<IpAddr>() else {
                continue;
            };
            let value: Option<String> = redis::cmd("GET")
                .arg(&k)
                .query_async(&mut pending)
                .await
                .map_err(|e| self.error(e))?;
            if let Some(job) = value.and_then(|v| serde_json::from_str::<JobResult>(&v).ok()) {
                self.put(owner, &interrupted(&job)).await?;
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
        let value = serde_json::to_string(job).map_err(|e| self.error(e))?;
        let k = key(owner, &job.id);
        let owner_key = format!("{OWNER_PREFIX}{}", job.id);
        let owner_ttl = self.lifetimes.result.map(|r| r.max(self.lifetimes.pending));
        let mut completed = self.completed.clone();
        let mut pending = self.pending.clone();
        if job.status.is_final() {
            redis::pipe()
                .add_command(set_with_ttl(&k, &value, self.lifetimes.result))
                .ignore()
                .add_command(set_with_ttl(&owner_key, &owner.to_string(), owner_ttl))
                .ignore()
                .query_async::<()>(&mut completed)
                .await
                .map_err(|e| self.error(e))?;
            redis::cmd("DEL")
                .arg(&k)
                .query_async::<()>(&mut pending)
                .await
                .map_err(|e| self.error(e))?;
        } else {
            set_with_ttl(&owner_key, &owner.to_string(), owner_ttl)
                .query_async::<()>(&mut completed)
                .await
                .map_err(|e| self.error(e))?;
            set_with_ttl(&k, &value, Some(self.lifetimes.pending))
                .query_async::<()>(&mut pending)
                .await
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    fn put_detached(&self, owner: IpAddr, job: JobResult) {
        if self.detached.as_ref().is_none_or(|tx| tx.send((owner, job)).is_err()) {
            tracing::error!("redis store writer stopped; job not stored");
        }
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<StoredJob>, StoreError> {
        let mut seen = std::collections::HashSet::new();
        let ids: Vec<&String> = ids.iter().filter(|id| seen.insert(id.as_str())).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut completed = self.completed.clone();
        let mut pending = self.pending.clone();
        let owner_keys: Vec<String> = ids.iter().map(|id| format!("{OWNER_PREFIX}{id}")).collect();
        let owners: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&owner_keys)
            .query_async(&mut completed)
            .await
            .map_err(|e| self.error(e))?;
        let found: Vec<(&String, IpAddr)> = ids
            .iter()
            .zip(owners)
            .filter_map(|(id, owner)| Some((*id, owner?.parse::<IpAddr>().ok()?)))
            .collect();
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = found.iter().map(|(id, owner)| key(*owner, id)).collect();
        let done: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut completed)
            .await
            .map_err(|e| self.error(e))?;
        let running: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut pending)
            .await
            .map_err(|e| self.error(e))?;
        let mut out = Vec::with_capacity(found.len());
        for (((id, owner), done), running) in found.into_iter().zip(done).zip(running) {
            let Some(value) = done.or(running) else {
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
        let prefix = format!("{owner}:");
        let pattern = format!("{prefix}*");
        let mut ids = Vec::new();
        let dbs: &[&ConnectionManager] = match filter {
            ListFilter::All => &[&self.pending, &self.completed],
            ListFilter::Pending => &[&self.pending],
            ListFilter::Completed => &[&self.completed],
        };
        for db in dbs {
            let mut con = (*db).clone();
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut con)
                    .await
                    .map_err(|e| self.error(e))?;
                // Split on the prefix, not on ':', so IPv6 clients get whole ids back.
                ids.extend(keys.iter().filter_map(|k| k.strip_prefix(&prefix)).map(str::to_owned));
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
        let mut pending = self.pending.clone();
        redis::cmd("DBSIZE")
            .query_async(&mut pending)
            .await
            .map_err(|e| self.error(e))
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

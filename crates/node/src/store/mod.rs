//! Cache of off-chain job results: trait [`JobStore`] with an embedded persistent backend (the
//! default, no server needed) and a Redis backend (when the config has a `redis` section).
//!
//! Jobs are stored by id together with the client address that created them. Results can be read
//! by id from any address (ids are random UUIDs, unguessable); listing ids is scoped to the caller.
//!
//! Every accepted job ends: a finished job's record that the store cannot write now (Redis down, a
//! full disk) is held in memory, answered to readers, and written once the store takes it again,
//! retried with backoff. What is held has a bound ([`Backlog`]); past it a record is dropped with
//! an error in the log.

mod embedded;
mod outbox;
mod redis;

use std::{net::IpAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use infernet_types::JobResult;

use crate::config::ValidConfig;

pub use embedded::{EmbeddedStore, Tuning};
pub use redis::RedisStore;

/// Error text stored for jobs that were running when the node stopped.
pub const INTERRUPTED: &str = "the node stopped before this job finished; submit it again";

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded database could not be opened or written.
    #[error("embedded job store {path}: {message}")]
    Embedded {
        /// Database file.
        path: String,
        /// What failed.
        message: String,
    },
    /// Redis could not be reached or answered an error.
    #[error("redis at {addr}: {message} (start Redis there, or remove the `redis` section to use the embedded store)")]
    Redis {
        /// host:port.
        addr: String,
        /// What failed.
        message: String,
    },
    /// The store is not taking writes and holds as many as it may already.
    #[error(
        "the job store is not taking writes and already holds {jobs} jobs ({bytes} bytes) for it, its limit (store.max_held_writes); retry once it answers again"
    )]
    Backlog {
        /// Jobs held.
        jobs: usize,
        /// Bytes of their records.
        bytes: usize,
    },
    /// A stored record could not be decoded.
    #[error("stored job {id} is corrupt: {message}")]
    Corrupt {
        /// Job id.
        id: String,
        /// Decoder error.
        message: String,
    },
}

/// A job and the client address that created it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredJob {
    /// Client address (the job's owner).
    pub owner: IpAddr,
    /// The job.
    pub job: JobResult,
}

/// Which ids `list` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFilter {
    /// Running and finished jobs.
    All,
    /// Running jobs only.
    Pending,
    /// Finished jobs only.
    Completed,
}

/// Lifetimes of stored jobs.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// How long a running job stays visible without finishing.
    pub pending: Duration,
    /// How long a finished result is kept (`None`: until evicted).
    pub result: Option<Duration>,
}

/// Writes held while the store does not take them: their bound, and how they are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Most jobs whose records are held.
    pub max_jobs: usize,
    /// Most bytes of held records.
    pub max_bytes: usize,
    /// Wait before the first retry; it doubles at each failure.
    pub first_retry: Duration,
    /// Longest wait between retries.
    pub max_retry: Duration,
}

impl Default for Backlog {
    fn default() -> Self {
        Self {
            max_jobs: 10_000,
            max_bytes: 64 << 20,
            first_retry: Duration::from_millis(100),
            max_retry: Duration::from_secs(5),
        }
    }
}

impl Backlog {
    /// Whether `jobs` records of `bytes` fit.
    fn fits(&self, jobs: usize, bytes: usize) -> bool {
        jobs <= self.max_jobs && bytes <= self.max_bytes
    }
}

/// Waits between retries of held writes: doubling from the first up to the longest.
#[derive(Debug)]
struct Backoff {
    backlog: Backlog,
    next: Duration,
}

impl Backoff {
    fn new(backlog: Backlog) -> Self {
        Self {
            backlog,
            next: backlog.first_retry,
        }
    }

    /// The wait before the next retry.
    fn wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.backlog.max_retry);
        wait
    }

    /// The store answered: the next failure starts over from the first wait.
    fn reset(&mut self) {
        self.next = self.backlog.first_retry;
    }
}

/// Where off-chain job results live.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Records a job: running jobs expire after the pending lifetime, finished ones replace them.
    async fn put(&self, owner: IpAddr, job: &JobResult) -> Result<(), StoreError>;

    /// Records a job without waiting for it to be stored. Writes from one caller keep their order;
    /// a failure is logged. For hot paths where no client waits on the write.
    fn put_detached(&self, owner: IpAddr, job: JobResult);

    /// Jobs by id, in the order asked, each at most once; unknown or expired ids are left out.
    async fn get(&self, ids: &[String]) -> Result<Vec<StoredJob>, StoreError>;

    /// Ids of the jobs created by `owner`.
    async fn list(&self, owner: IpAddr, filter: ListFilter) -> Result<Vec<String>, StoreError>;

    /// Number of running jobs (all clients).
    async fn pending_count(&self) -> Result<u64, StoreError>;

    /// Records accepted but not written yet: held while the store does not take them, or queued
    /// by [`Self::put_detached`].
    fn unwritten(&self) -> usize;

    /// Backend name for `/info` and logs.
    fn backend(&self) -> &'static str;
}

/// Opens the store the config asks for: Redis when it has a `redis` section, else embedded.
pub async fn open(config: &ValidConfig) -> Result<Arc<dyn JobStore>, StoreError> {
    let store = &config.config.store;
    let lifetimes = Lifetimes {
        pending: Duration::from_secs(store.pending_ttl.max(1)),
        result: (store.result_ttl > 0).then(|| Duration::from_secs(store.result_ttl)),
    };
    let backlog = Backlog {
        max_jobs: usize::try_from(store.max_held_writes).unwrap_or(usize::MAX),
        max_retry: Duration::from_secs_f64(store.retry_max_delay),
        ..Backlog::default()
    };
    let backlog = Backlog {
        first_retry: backlog.first_retry.min(backlog.max_retry),
        ..backlog
    };
    Ok(match &config.config.redis {
        Some(redis) => Arc::new(RedisStore::connect_with(&redis.host, redis.port, lifetimes, backlog).await?),
        None => {
            adopt_legacy_default(&store.path);
            let tuning = embedded::Tuning {
                backlog,
                ..embedded::Tuning::default()
            };
            Arc::new(EmbeddedStore::open_with(store.path.as_ref(), lifetimes, store.max_jobs, tuning).await?)
        }
    })
}

/// Earlier builds kept the embedded store in `infernet-jobs.redb` by default: a store named
/// `infernet-jobs.db` that does not exist yet takes over that file beside it (converted when
/// opened).
fn adopt_legacy_default(path: &str) {
    use crate::config::{DEFAULT_STORE_PATH, LEGACY_STORE_PATH};
    let path = std::path::Path::new(path);
    if path.file_name() != Some(std::ffi::OsStr::new(DEFAULT_STORE_PATH)) || path.exists() {
        return;
    }
    let legacy = path.with_file_name(LEGACY_STORE_PATH);
    if legacy.is_file() {
        match std::fs::rename(&legacy, path) {
            Ok(()) => tracing::info!(from = %legacy.display(), to = %path.display(), "job store moved"),
            Err(e) => {
                tracing::warn!(from = %legacy.display(), error = %e, "cannot take over the earlier job store; starting empty")
            }
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A job that was running when the node stopped, turned into a failure the client can see.
pub(crate) fn interrupted(job: &JobResult) -> JobResult {
    let mut results = job.intermediate_results.clone().unwrap_or_default();
    results.extend(job.result.clone());
    let container = results.last().map(|r| r.container().to_string()).unwrap_or_default();
    results.push(infernet_types::ContainerResult::Error {
        container,
        error: INTERRUPTED.into(),
    });
    JobResult::finished(job.id.clone(), results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time_up_to_the_longest_and_start_over_once_answered() {
        let backlog = Backlog {
            first_retry: Duration::from_millis(100),
            max_retry: Duration::from_millis(350),
            ..Backlog::default()
        };
        let mut backoff = Backoff::new(backlog);
        let waits: Vec<u64> = (0..5).map(|_| backoff.wait().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 350, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.wait(), Duration::from_millis(100));
    }
}

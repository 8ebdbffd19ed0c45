//! Embedded persistent store on `redb`: one file, crash-safe (a result acknowledged as stored
//! survives `kill -9`), pending and result lifetimes, bounded size with least-recently-used
//! eviction.
//!
//! Writes go through one writer thread that commits whatever has queued up in one transaction
//! (group commit), so a busy node pays one fsync per batch rather than per job. An in-memory index
//! (owner, state, expiry, recency) answers listings and eviction without touching the file.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::Path,
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use async_trait::async_trait;
use infernet_types::JobResult;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{JobStore, Lifetimes, ListFilter, StoreError, StoredJob, interrupted, unix_now};

const JOBS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("jobs");
/// Page cache of the database; the index keeps the hot metadata, so this can stay small.
const CACHE_BYTES: usize = 4 << 20;
/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1024;

#[derive(Serialize, Deserialize)]
struct Record {
    owner: IpAddr,
    /// Unix seconds after which the record is gone (0: never).
    expires: u64,
    job: JobResult,
}

#[derive(Debug, Clone)]
struct Meta {
    owner: IpAddr,
    running: bool,
    expires: u64,
    tick: u64,
}

#[derive(Default)]
struct Index {
    jobs: HashMap<String, Meta>,
    /// Recency order: tick → id (smallest tick = least recently used).
    recency: BTreeMap<u64, String>,
    next_tick: u64,
    running: u64,
}

impl Index {
    fn touch(&mut self, id: &str) {
        let tick = self.next_tick;
        if let Some(meta) = self.jobs.get_mut(id) {
            self.recency.remove(&meta.tick);
            meta.tick = tick;
            self.recency.insert(tick, id.to_string());
            self.next_tick += 1;
        }
    }

    fn upsert(&mut self, id: &str, owner: IpAddr, running: bool, expires: u64) {
        self.remove(id);
        let tick = self.next_tick;
        self.next_tick += 1;
        self.jobs.insert(
            id.to_string(),
            Meta {
                owner,
                running,
                expires,
                tick,
            },
        );
        self.recency.insert(tick, id.to_string());
        self.running += u64::from(running);
    }

    fn remove(&mut self, id: &str) -> bool {
        match self.jobs.remove(id) {
            Some(meta) => {
                self.recency.remove(&meta.tick);
                self.running -= u64::from(meta.running);
                true
            }
            None => false,
        }
    }

    fn is_live(meta: &Meta, now: u64) -> bool {
        meta.expires == 0 || meta.expires > now
    }
}

enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

struct Write {
    ops: Vec<Op>,
    ack: Option<oneshot::Sender<Result<(), String>>>,
    /// Stop the writer after this batch (the store is being dropped).
    last: bool,
}

/// The embedded job store.
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: String,
    index: Arc<Mutex<Index>>,
    writer: mpsc::Sender<Write>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    lifetimes: Lifetimes,
    max_jobs: u64,
}

impl Drop for EmbeddedStore {
    /// Flushes queued writes and releases the file, so it can be reopened at once.
    fn drop(&mut self) {
        let _ = self.writer.send(Write {
            ops: Vec::new(),
            ack: None,
            last: true,
        });
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database file, fails jobs that were running when the node stopped,
    /// drops expired ones, and starts the writer thread and the expiry sweeper.
    pub async fn open(path: &Path, lifetimes: Lifetimes, max_jobs: u64) -> Result<Self, StoreError> {
        let path_str = path.display().to_string();
        let err = |message: String| StoreError::Embedded {
            path: path_str.clone(),
            message,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| err(format!("cannot create its directory: {e}")))?;
        }
        let path_owned = path.to_path_buf();
        let (db, index) = tokio::task::spawn_blocking(move || recover(&path_owned, lifetimes))
            .await
            .map_err(|e| err(e.to_string()))?
            .map_err(err)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel::<Write>();
        let writer_db = db.clone();
        let writer_thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&writer_db, &rx))
            .map_err(|e| err(format!("cannot start the writer thread: {e}")))?;
        let store = Self {
            db,
            path: path_str,
            index: Arc::new(Mutex::new(index)),
            writer: tx,
            writer_thread: Some(writer_thread),
            lifetimes,
            max_jobs,
        };
        store.evict_over_capacity();
        store.spawn_sweeper();
        Ok(store)
    }

    fn error(&self, message: impl ToString) -> StoreError {
        StoreError::Embedded {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }

    async fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.writer
            .send(Write {
                ops,
                ack: Some(ack),
                last: false,
            })
            .map_err(|_| self.error("the writer thread stopped"))?;
        done.await
            .map_err(|_| self.error("the writer thread stopped"))?
            .map_err(|e| self.error(e))
    }

    fn write_detached(&self, ops: Vec<Op>) {
        // Deletes of expired or evicted records: losing one to a crash only means it is dropped
        // again at the next start.
        let _ = self.writer.send(Write {
            ops,
            ack: None,
            last: false,
        });
    }

    fn evict_over_capacity(&self) {
        let mut victims = Vec::new();
        {
            let mut index = self.index.lock().expect("store index poisoned");
            while index.jobs.len() as u64 > self.max_jobs {
                let Some((_, id)) = index.recency.pop_first() else {
                    break;
                };
                if let Some(meta) = index.jobs.remove(&id) {
                    index.running -= u64::from(meta.running);
                }
                victims.push(Op::Delete(id));
            }
        }
        if !victims.is_empty() {
            tracing::debug!(
                evicted = victims.len(),
                "job store over capacity, evicted least recently used jobs"
            );
            self.write_detached(victims);
        }
    }

    fn spawn_sweeper(&self) {
        let index = Arc::downgrade(&self.index);
        let writer = self.writer.clone();
        // Runs until the store is dropped (the weak index handle then fails to upgrade).
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(index) = index.upgrade() else { return };
                let ops = expired(&index);
                if !ops.is_empty()
                    && writer
                        .send(Write {
                            ops,
                            ack: None,
                            last: false,
                        })
                        .is_err()
                {
                    return;
                }
            }
        });
    }
}

/// Removes expired jobs from the index and returns the deletes to apply to the file.
fn expired(index: &Mutex<Index>) -> Vec<Op> {
    let now = unix_now();
    let mut index = index.lock().expect("store index poisoned");
    let ids: Vec<String> = index
        .jobs
        .iter()
        .filter(|(_, m)| !Index::is_live(m, now))
        .map(|(id, _)| id.clone())
        .collect();
    ids.into_iter()
        .map(|id| {
            index.remove(&id);
            Op::Delete(id)
        })
        .collect()
}

fn expiry(now: u64, lifetime: Option<Duration>) -> u64 {
    lifetime.map(|d| now + d.as_secs().max(1)).unwrap_or(0)
}

/// Opens the database and rebuilds the index; running jobs become failures, expired ones go.
fn recover(path: &Path, lifetimes: Lifetimes) -> Result<(Database, Index), String> {
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| format!("cannot open: {e} (is another node using this file? set store.path)"))?;
    let now = unix_now();
    let mut index = Index::default();
    let mut rewrites = Vec::new();
    let mut deletes = Vec::new();
    {
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(JOBS).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        let read = db.begin_read().map_err(|e| e.to_string())?;
        let table = read.open_table(JOBS).map_err(|e| e.to_string())?;
        let mut records: Vec<(String, Record)> = Vec::new();
        for row in table.iter().map_err(|e| e.to_string())? {
            let (k, v) = row.map_err(|e| e.to_string())?;
            let id = k.value().to_string();
            match serde_json::from_slice::<Record>(v.value()) {
                Ok(record) if record.expires != 0 && record.expires <= now => deletes.push(id),
                Ok(record) => records.push((id, record)),
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "dropping unreadable job record");
                    deletes.push(id);
                }
            }
        }
        for (id, mut record) in records {
            if !record.job.status.is_final() {
                record.job = interrupted(&record.job);
                record.expires = expiry(now, lifetimes.result);
                rewrites.push((id.clone(), serde_json::to_vec(&record).map_err(|e| e.to_string())?));
            }
            index.upsert(&id, record.owner, false, record.expires);
        }
    }
    if !rewrites.is_empty() || !deletes.is_empty() {
        if !rewrites.is_empty() {
            tracing::warn!(
                jobs = rewrites.len(),
                "jobs were running when the node stopped; marked as failed"
            );
        }
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(JOBS).map_err(|e| e.to_string())?;
            for (id, bytes) in &rewrites {
                table.insert(id.as_str(), bytes.as_slice()).map_err(|e| e.to_string())?;
            }
            for id in &deletes {
                table.remove(id.as_str()).map_err(|e| e.to_string())?;
            }
        }
        txn.commit().map_err(|e| e.to_string())?;
    }
    Ok((db, index))
}

/// Applies queued writes, committing everything that queued up meanwhile in one transaction.
fn writer_loop(db: &Database, rx: &mpsc::Receiver<Write>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let last = batch.iter().any(|w| w.last);
        let result = commit(db, &batch);
        if let Err(e) = &result {
            tracing::error!(error = %e, "job store write failed");
        }
        for w in batch {
            if let Some(ack) = w.ack {
                let _ = ack.send(result.clone());
            }
        }
        if last {
            return;
        }
    }
}

fn commit(db: &Database, batch: &[Write]) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut table = txn.open_table(JOBS).map_err(|e| e.to_string())?;
        for op in batch.iter().flat_map(|w| &w.ops) {
            match op {
                Op::Put(id, bytes) => {
                    table.insert(id.as_str(), bytes.as_slice()).map_err(|e| e.to_string())?;
                }
                Op::Delete(id) => {
                    table.remove(id.as_str()).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

#[async_trait]
impl JobStore for EmbeddedStore {
    async fn put(&self, owner: IpAddr, job: &JobResult) -> Result<(), StoreError> {
        let running = !job.status.is_final();
        let expires = expiry(
            unix_now(),
            if running {
                Some(self.lifetimes.pending)
            } else {
                self.lifetimes.result
            },
        );
        let record = Record {
            owner,
            expires,
            job: job.clone(),
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| self.error(e))?;
        self.write(vec![Op::Put(job.id.clone(), bytes)]).await?;
        self.index
            .lock()
            .expect("store index poisoned")
            .upsert(&job.id, owner, running, expires);
        self.evict_over_capacity();
        Ok(())
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<StoredJob>, StoreError> {
        let now = unix_now();
        let wanted: Vec<String> = {
            let mut index = self.index.lock().expect("store index poisoned");
            let mut seen = std::collections::HashSet::new();
            let live: Vec<String> = ids
                .iter()
                .filter(|id| seen.insert(id.as_str()))
                .filter(|id| index.jobs.get(id.as_str()).is_some_and(|m| Index::is_live(m, now)))
                .cloned()
                .collect();
            for id in &live {
                index.touch(id);
            }
            live
        };
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let db = self.db.clone();
        let rows = tokio::task::spawn_blocking(move || -> Result<Vec<(String, Vec<u8>)>, String> {
            let read = db.begin_read().map_err(|e| e.to_string())?;
            let table = read.open_table(JOBS).map_err(|e| e.to_string())?;
            let mut rows = Vec::with_capacity(wanted.len());
            for id in wanted {
                if let Some(v) = table.get(id.as_str()).map_err(|e| e.to_string())? {
                    let bytes = v.value().to_vec();
                    rows.push((id, bytes));
                }
            }
            Ok(rows)
        })
        .await
        .map_err(|e| self.error(e))?
        .map_err(|e| self.error(e))?;
        rows.into_iter()
            .map(|(id, bytes)| {
                serde_json::from_slice::<Record>(&bytes)
                    .map(|r| StoredJob {
                        owner: r.owner,
                        job: r.job,
                    })
                    .map_err(|e| StoreError::Corrupt {
                        id,
                        message: e.to_string(),
                    })
            })
            .collect()
    }

    async fn list(&self, owner: IpAddr, filter: ListFilter) -> Result<Vec<String>, StoreError> {
        let now = unix_now();
        let index = self.index.lock().expect("store index poisoned");
        // Least recently used first.
        Ok(index
            .recency
            .values()
            .filter_map(|id| index.jobs.get(id).map(|m| (id, m)))
            .filter(|(_, m)| m.owner == owner && Index::is_live(m, now))
            .filter(|(_, m)| match filter {
                ListFilter::All => true,
                ListFilter::Pending => m.running,
                ListFilter::Completed => !m.running,
            })
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn pending_count(&self) -> Result<u64, StoreError> {
        Ok(self.index.lock().expect("store index poisoned").running)
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}

//! Embedded persistent store on `redb`: one file, crash-safe (a result acknowledged as stored
//! survives `kill -9`), pending and result lifetimes, bounded size with least-recently-used
//! eviction.
//!
//! Writes go to one writer thread that commits whatever has queued up in one transaction (group
//! commit), so a busy node pays one fsync per batch rather than per job. A write someone waits
//! for is committed at once; writes nobody waits for (a stream's records) wait up to
//! [`LINGER_DETACHED`] for company, are encoded by the writer, and a row superseded within the
//! batch (a short stream's running record) is never encoded or written. Until its commit, a
//! queued row is answered from memory, so readers always see the latest write. Rows are keyed by a
//! sequence number rather than by the (random) job id, so a batch appends to the same few pages
//! instead of touching one random page per job. An in-memory index (id → key, owner, state,
//! expiry, recency) answers listings and eviction without reading the file.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::Path,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use infernet_types::{JobResult, JobStatus};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::FastMap;

use super::{JobStore, Lifetimes, ListFilter, StoreError, StoredJob, interrupted, unix_now};

const JOBS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("jobs");
/// Page cache of the database; the index keeps the hot metadata, so this can stay small.
const CACHE_BYTES: usize = 4 << 20;
/// Deletions in one batch from which a sweep over their span replaces one lookup each.
const EVICTION_SWEEP: usize = 64;
/// Most writes committed in one transaction.
const MAX_BATCH: usize = 4096;
/// Longest a busy writer waits to fill a batch while a caller awaits one of its writes.
const LINGER: Duration = Duration::from_millis(2);
/// Longest the writer waits to fill a batch nobody awaits: how long a stream's record may stay
/// in memory only (lost to a `kill -9` in that window; the stream's client has its output).
const LINGER_DETACHED: Duration = Duration::from_millis(20);

/// A row, as written from borrowed parts; reads back as a [`Record`].
#[derive(Serialize)]
struct RecordRef<'a> {
    id: &'a str,
    owner: IpAddr,
    expires: u64,
    job: &'a JobResult,
}

#[derive(Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    owner: IpAddr,
    /// Unix seconds after which the record is gone (0: never).
    expires: u64,
    job: JobResult,
}

/// A row as queued: encoded by its writer, or left for the writer thread to encode.
enum Row {
    Encoded(Vec<u8>),
    Fresh(Record),
}

impl Row {
    fn encode(&self) -> Result<std::borrow::Cow<'_, [u8]>, String> {
        match self {
            Self::Encoded(bytes) => Ok(bytes.as_slice().into()),
            Self::Fresh(record) => serde_json::to_vec(record).map(Into::into).map_err(|e| e.to_string()),
        }
    }

    fn record(&self) -> Result<Record, serde_json::Error> {
        match self {
            Self::Encoded(bytes) => serde_json::from_slice(bytes),
            Self::Fresh(record) => Ok(record.clone()),
        }
    }
}

#[derive(Debug, Clone)]
struct Meta {
    key: u64,
    owner: IpAddr,
    running: bool,
    expires: u64,
    tick: u64,
}

impl Meta {
    fn is_live(&self, now: u64) -> bool {
        self.expires == 0 || self.expires > now
    }
}

/// A job id as the index keeps it: the node's own ids (lower-case hyphenated UUIDs) in 16 bytes
/// without an allocation, any other id as given. A full store holds `max_jobs` of these twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum JobKey {
    Uuid([u8; 16]),
    Other(Box<str>),
}

impl JobKey {
    fn new(id: &str) -> Self {
        if let Ok(uuid) = uuid::Uuid::try_parse(id) {
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            // Only the exact text the id was written as maps back to it.
            if uuid.hyphenated().encode_lower(&mut text).as_bytes() == id.as_bytes() {
                return Self::Uuid(uuid.into_bytes());
            }
        }
        Self::Other(id.into())
    }
}

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Uuid(bytes) => uuid::Uuid::from_bytes(*bytes).hyphenated().fmt(f),
            Self::Other(id) => f.write_str(id),
        }
    }
}

#[derive(Default)]
struct Index {
    jobs: FastMap<JobKey, Meta>,
    /// Recency order: tick → id (smallest tick = least recently used).
    recency: BTreeMap<u64, JobKey>,
    next_tick: u64,
    next_key: u64,
    running: u64,
    /// Rows queued but not committed yet, by row key: the freshest state of those jobs.
    unwritten: FastMap<u64, Arc<Row>>,
}

impl Index {
    fn touch(&mut self, id: &JobKey) {
        if let Some(meta) = self.jobs.get_mut(id) {
            restamp(&mut self.recency, &mut self.next_tick, meta, id.clone());
        }
    }

    /// Records a job's state and its queued row; returns the row key (kept from an earlier write
    /// of the same id).
    fn upsert(&mut self, id: JobKey, owner: IpAddr, running: bool, expires: u64, row: Arc<Row>) -> u64 {
        let key = match self.jobs.get_mut(&id) {
            Some(meta) => {
                self.running = self.running - u64::from(meta.running) + u64::from(running);
                (meta.owner, meta.running, meta.expires) = (owner, running, expires);
                restamp(&mut self.recency, &mut self.next_tick, meta, id);
                meta.key
            }
            None => {
                let key = self.next_key + 1;
                let meta = Meta {
                    key,
                    owner,
                    running,
                    expires,
                    tick: 0,
                };
                self.insert(id, meta);
                key
            }
        };
        self.unwritten.insert(key, row);
        key
    }

    /// Forgets the queued rows a commit wrote, unless a newer write of the row came since.
    fn written(&mut self, batch: &[Write]) {
        for op in batch.iter().flat_map(|w| &w.ops) {
            if let Op::Put(key, row) = op
                && self.unwritten.get(key).is_some_and(|queued| Arc::ptr_eq(queued, row))
            {
                self.unwritten.remove(key);
            }
        }
    }

    fn insert(&mut self, id: JobKey, mut meta: Meta) {
        meta.tick = self.next_tick;
        self.next_tick += 1;
        self.next_key = self.next_key.max(meta.key);
        self.running += u64::from(meta.running);
        self.recency.insert(meta.tick, id.clone());
        self.jobs.insert(id, meta);
    }

    fn remove(&mut self, id: &JobKey) -> Option<Meta> {
        let meta = self.jobs.remove(id)?;
        self.recency.remove(&meta.tick);
        self.running -= u64::from(meta.running);
        self.unwritten.remove(&meta.key);
        Some(meta)
    }

    /// Once more than `max_jobs` are held, evicts the least recently used down to 1 % below it, so
    /// a full store evicts (and says so) once per hundredth of its size, not on every job. Returns
    /// the row deletions.
    fn evict_over(&mut self, max_jobs: u64) -> Vec<Op> {
        if self.jobs.len() as u64 <= max_jobs {
            return Vec::new();
        }
        let low_water = max_jobs - max_jobs / 100;
        let mut victims = Vec::new();
        while self.jobs.len() as u64 > low_water {
            let Some(id) = self.recency.first_key_value().map(|(_, id)| id.clone()) else {
                break;
            };
            if let Some(meta) = self.remove(&id) {
                victims.push(Op::Delete(meta.key));
            }
        }
        tracing::debug!(
            evicted = victims.len(),
            "job store over capacity, evicted least recently used jobs"
        );
        victims
    }

    /// Removes jobs past their lifetime; returns their row keys.
    fn expire(&mut self, now: u64) -> Vec<u64> {
        let ids: Vec<JobKey> = self
            .jobs
            .iter()
            .filter(|(_, m)| !m.is_live(now))
            .map(|(id, _)| id.clone())
            .collect();
        ids.iter().filter_map(|id| self.remove(id)).map(|m| m.key).collect()
    }
}

/// Makes a held job the most recently used (one lookup: the caller already holds its entry).
fn restamp(recency: &mut BTreeMap<u64, JobKey>, next_tick: &mut u64, meta: &mut Meta, id: JobKey) {
    recency.remove(&meta.tick);
    meta.tick = *next_tick;
    *next_tick += 1;
    recency.insert(meta.tick, id);
}

enum Op {
    Put(u64, Arc<Row>),
    Delete(u64),
}

struct Write {
    ops: Vec<Op>,
    ack: Option<oneshot::Sender<Result<(), String>>>,
}

/// The writer's queue: producers append, and wake the writer only when it is idle, or when it
/// lingers for a batch nobody awaited and now someone does.
#[derive(Default)]
struct Queue {
    writes: Vec<Write>,
    /// Queued writes with a caller waiting for them.
    awaited: usize,
    idle: bool,
    lingering: bool,
    closed: bool,
}

struct Writer {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// [`LINGER_DETACHED`], unless told otherwise.
    detached_linger: Duration,
}

impl Writer {
    fn push(&self, write: Write) -> Result<(), ()> {
        let mut q = self.queue.lock().expect("writer queue poisoned");
        if q.closed {
            return Err(());
        }
        let first_awaited = write.ack.is_some() && q.awaited == 0;
        q.awaited += usize::from(write.ack.is_some());
        q.writes.push(write);
        if q.idle || (q.lingering && first_awaited) {
            q.idle = false;
            self.wake.notify_one();
        }
        Ok(())
    }

    fn close(&self) {
        let mut q = self.queue.lock().expect("writer queue poisoned");
        q.closed = true;
        self.wake.notify_one();
    }

    /// Waits for writes; returns `None` once closed and drained. The writer lingers to fill the
    /// batch: up to the detached linger while nobody awaits a write, [`LINGER`] once someone
    /// does and the writer is busy.
    fn next_batch(&self, busy: bool) -> Option<Vec<Write>> {
        let mut q = self.queue.lock().expect("writer queue poisoned");
        while q.writes.is_empty() {
            if q.closed {
                return None;
            }
            q.idle = true;
            q = self.wake.wait(q).expect("writer queue poisoned");
        }
        q.idle = false;
        // Writes nobody awaits always wait for company (a stream's two records then become one
        // row); an awaited one only on a busy writer.
        if busy || q.awaited == 0 {
            let start = Instant::now();
            q.lingering = true;
            while !q.closed && q.writes.len() < MAX_BATCH {
                let linger = match (q.awaited, busy) {
                    (0, _) => self.detached_linger,
                    (_, true) => LINGER,
                    (_, false) => Duration::ZERO,
                };
                let Some(left) = (start + linger).checked_duration_since(Instant::now()) else {
                    break;
                };
                q = self.wake.wait_timeout(q, left).expect("writer queue poisoned").0;
            }
            q.lingering = false;
        }
        q.awaited = 0;
        Some(std::mem::take(&mut q.writes))
    }
}

/// The embedded job store.
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: String,
    index: Arc<Mutex<Index>>,
    writer: Arc<Writer>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    lifetimes: Lifetimes,
    max_jobs: u64,
}

impl Drop for EmbeddedStore {
    /// Flushes queued writes and releases the file, so it can be reopened at once.
    fn drop(&mut self) {
        self.writer.close();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

fn expiry(now: u64, lifetime: Option<Duration>) -> u64 {
    lifetime.map(|d| now + d.as_secs().max(1)).unwrap_or(0)
}

impl EmbeddedStore {
    /// Opens (or creates) the database file, fails jobs that were running when the node stopped,
    /// drops expired ones, and starts the writer thread and the expiry sweeper.
    pub async fn open(path: &Path, lifetimes: Lifetimes, max_jobs: u64) -> Result<Self, StoreError> {
        Self::open_with_linger(path, lifetimes, max_jobs, LINGER_DETACHED).await
    }

    /// [`Self::open`], with writes nobody awaits held back up to `detached_linger` to be batched.
    pub async fn open_with_linger(
        path: &Path,
        lifetimes: Lifetimes,
        max_jobs: u64,
        detached_linger: Duration,
    ) -> Result<Self, StoreError> {
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
        let index = Arc::new(Mutex::new(index));
        let writer = Arc::new(Writer {
            queue: Mutex::default(),
            wake: Condvar::new(),
            detached_linger,
        });
        let (writer_db, queue, written) = (db.clone(), writer.clone(), index.clone());
        let writer_thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&writer_db, &queue, &written))
            .map_err(|e| err(format!("cannot start the writer thread: {e}")))?;
        let store = Self {
            db,
            path: path_str,
            index,
            writer,
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

    /// Whether a job in `status` is running, and when its record expires.
    fn lifetime(&self, status: JobStatus) -> (bool, u64) {
        let running = !status.is_final();
        let lifetime = if running {
            Some(self.lifetimes.pending)
        } else {
            self.lifetimes.result
        };
        (running, expiry(unix_now(), lifetime))
    }

    /// Updates the index and queues the row write; `ack` hears of its commit.
    fn enqueue(
        &self,
        id: JobKey,
        owner: IpAddr,
        (running, expires): (bool, u64),
        row: Row,
        ack: Option<oneshot::Sender<Result<(), String>>>,
    ) -> Result<(), StoreError> {
        let row = Arc::new(row);
        let ops = {
            let mut index = self.index.lock().expect("store index poisoned");
            let key = index.upsert(id, owner, running, expires, row.clone());
            let mut ops = vec![Op::Put(key, row)];
            ops.extend(index.evict_over(self.max_jobs));
            ops
        };
        // The evictions travel with the write that caused them.
        self.writer
            .push(Write { ops, ack })
            .map_err(|()| self.error("the store is closed"))
    }

    /// Evicts over-capacity jobs left by an earlier run with a larger `max_jobs`.
    fn evict_over_capacity(&self) {
        let victims = self
            .index
            .lock()
            .expect("store index poisoned")
            .evict_over(self.max_jobs);
        if !victims.is_empty() {
            // Losing an eviction to a crash only means it happens again at the next start.
            let _ = self.writer.push(Write {
                ops: victims,
                ack: None,
            });
        }
    }

    fn spawn_sweeper(&self) {
        let index = Arc::downgrade(&self.index);
        let writer = Arc::downgrade(&self.writer);
        // Ends with the store (the weak handles then fail to upgrade).
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            tick.tick().await;
            loop {
                tick.tick().await;
                let (Some(index), Some(writer)) = (index.upgrade(), writer.upgrade()) else {
                    return;
                };
                let keys = index.lock().expect("store index poisoned").expire(unix_now());
                if !keys.is_empty()
                    && writer
                        .push(Write {
                            ops: keys.into_iter().map(Op::Delete).collect(),
                            ack: None,
                        })
                        .is_err()
                {
                    return;
                }
            }
        });
    }
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
        txn.open_table(JOBS)
            .map_err(|e| format!("{e} (a file of another program or version? set store.path)"))?;
        txn.commit().map_err(|e| e.to_string())?;
        let read = db.begin_read().map_err(|e| e.to_string())?;
        let table = read.open_table(JOBS).map_err(|e| e.to_string())?;
        for row in table.iter().map_err(|e| e.to_string())? {
            let (k, v) = row.map_err(|e| e.to_string())?;
            let key = k.value();
            let mut record = match serde_json::from_slice::<Record>(v.value()) {
                Ok(record) if record.expires != 0 && record.expires <= now => {
                    deletes.push(key);
                    continue;
                }
                Ok(record) => record,
                Err(e) => {
                    tracing::warn!(row = key, error = %e, "dropping unreadable job record");
                    deletes.push(key);
                    continue;
                }
            };
            if !record.job.status.is_final() {
                record.job = interrupted(&record.job);
                record.expires = expiry(now, lifetimes.result);
                rewrites.push((key, serde_json::to_vec(&record).map_err(|e| e.to_string())?));
            }
            index.insert(
                JobKey::new(&record.id),
                Meta {
                    key,
                    owner: record.owner,
                    running: false,
                    expires: record.expires,
                    tick: 0,
                },
            );
        }
    }
    if !rewrites.is_empty() {
        tracing::warn!(
            jobs = rewrites.len(),
            "jobs were running when the node stopped; marked as failed"
        );
    }
    if !rewrites.is_empty() || !deletes.is_empty() {
        let mut ops: Vec<Op> = rewrites
            .into_iter()
            .map(|(k, b)| Op::Put(k, Arc::new(Row::Encoded(b))))
            .collect();
        ops.extend(deletes.into_iter().map(Op::Delete));
        commit(&db, &[Write { ops, ack: None }])?;
    }
    Ok((db, index))
}

/// Applies queued writes, committing each batch in one transaction, until the store closes.
fn writer_loop(db: &Database, writer: &Writer, index: &Mutex<Index>) {
    let mut busy = false;
    while let Some(batch) = writer.next_batch(busy) {
        busy = batch.len() > 1;
        let result = commit(db, &batch);
        if let Err(e) = &result {
            tracing::error!(error = %e, "job store write failed");
        }
        // Committed, or failed for good: either way the file now says what readers get.
        index.lock().expect("store index poisoned").written(&batch);
        for w in batch {
            if let Some(ack) = w.ack {
                let _ = ack.send(result.clone());
            }
        }
    }
}

fn commit(db: &Database, batch: &[Write]) -> Result<(), String> {
    // Only the last write of a row in the batch matters (a job's running record and its result
    // often arrive together).
    let mut latest: BTreeMap<u64, Option<&Row>> = BTreeMap::new();
    for op in batch.iter().flat_map(|w| &w.ops) {
        match op {
            Op::Put(key, row) => latest.insert(*key, Some(&**row)),
            Op::Delete(key) => latest.insert(*key, None),
        };
    }
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut table = txn.open_table(JOBS).map_err(|e| e.to_string())?;
        let deleted: Vec<u64> = latest
            .iter()
            .filter(|(_, row)| row.is_none())
            .map(|(k, _)| *k)
            .collect();
        match (deleted.first(), deleted.last()) {
            // Evictions of a full store take the oldest rows, which sit side by side: one sweep
            // over their span costs far less than looking each one up.
            (Some(&first), Some(&last))
                if deleted.len() >= EVICTION_SWEEP && last - first < 2 * deleted.len() as u64 =>
            {
                table
                    .retain_in(first..=last, |key, _| deleted.binary_search(&key).is_err())
                    .map_err(|e| e.to_string())?;
            }
            _ => {
                for &key in &deleted {
                    table.remove(key).map_err(|e| e.to_string())?;
                }
            }
        }
        for (key, row) in latest {
            if let Some(row) = row {
                table.insert(key, &*row.encode()?).map_err(|e| e.to_string())?;
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

#[async_trait]
impl JobStore for EmbeddedStore {
    async fn put(&self, owner: IpAddr, job: &JobResult) -> Result<(), StoreError> {
        let lifetime = self.lifetime(job.status);
        // Encoded here: the caller lends the job and waits for the write anyway.
        let bytes = serde_json::to_vec(&RecordRef {
            id: &job.id,
            owner,
            expires: lifetime.1,
            job,
        })
        .map_err(|e| self.error(e))?;
        let (ack, done) = oneshot::channel();
        self.enqueue(JobKey::new(&job.id), owner, lifetime, Row::Encoded(bytes), Some(ack))?;
        done.await
            .map_err(|_| self.error("the writer thread stopped"))?
            .map_err(|e| self.error(e))
    }

    fn put_detached(&self, owner: IpAddr, job: JobResult) {
        let lifetime = self.lifetime(job.status);
        let id = JobKey::new(&job.id);
        let record = Record {
            id: job.id.clone(),
            owner,
            expires: lifetime.1,
            job,
        };
        // Only a closing store refuses a job; the writer encodes it.
        if let Err(e) = self.enqueue(id, owner, lifetime, Row::Fresh(record), None) {
            tracing::error!(error = %e, "cannot store a job");
        }
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<StoredJob>, StoreError> {
        let now = unix_now();
        // Each wanted job's row: still in memory, or where it is in the file.
        let wanted: Vec<(String, Result<Arc<Row>, u64>)> = {
            let mut index = self.index.lock().expect("store index poisoned");
            let mut seen = std::collections::HashSet::new();
            let mut live = Vec::new();
            for id in ids.iter().filter(|id| seen.insert(id.as_str())) {
                let key = JobKey::new(id);
                if let Some(meta) = index.jobs.get(&key).filter(|m| m.is_live(now)) {
                    let row = index.unwritten.get(&meta.key).cloned().ok_or(meta.key);
                    live.push((id.clone(), row));
                    index.touch(&key);
                }
            }
            live
        };
        // One slot per wanted job, in the order asked; a job whose row cannot be read stays out.
        let mut rows: Vec<Option<(String, Arc<Row>)>> = Vec::with_capacity(wanted.len());
        let mut in_file = Vec::new();
        for (at, (id, row)) in wanted.into_iter().enumerate() {
            match row {
                Ok(row) => rows.push(Some((id, row))),
                Err(key) => {
                    in_file.push((at, id, key));
                    rows.push(None);
                }
            }
        }
        if !in_file.is_empty() {
            let db = self.db.clone();
            let read = tokio::task::spawn_blocking(move || -> Result<Vec<(usize, String, Vec<u8>)>, String> {
                let read = db.begin_read().map_err(|e| e.to_string())?;
                let table = read.open_table(JOBS).map_err(|e| e.to_string())?;
                let mut found = Vec::with_capacity(in_file.len());
                for (at, id, key) in in_file {
                    // A failed write leaves the job without a row.
                    if let Some(v) = table.get(key).map_err(|e| e.to_string())? {
                        found.push((at, id, v.value().to_vec()));
                    }
                }
                Ok(found)
            })
            .await
            .map_err(|e| self.error(e))?
            .map_err(|e| self.error(e))?;
            for (at, id, bytes) in read {
                rows[at] = Some((id, Arc::new(Row::Encoded(bytes))));
            }
        }
        rows.into_iter()
            .flatten()
            .map(|(id, row)| {
                row.record()
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
            .filter(|(_, m)| m.owner == owner && m.is_live(now))
            .filter(|(_, m)| match filter {
                ListFilter::All => true,
                ListFilter::Pending => m.running,
                ListFilter::Completed => !m.running,
            })
            .map(|(id, _)| id.to_string())
            .collect())
    }

    async fn pending_count(&self) -> Result<u64, StoreError> {
        Ok(self.index.lock().expect("store index poisoned").running)
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}

#[cfg(test)]
mod tests {
    use super::JobKey;

    #[test]
    fn job_keys_give_back_the_exact_id() {
        let uuid = uuid::Uuid::new_v4().to_string();
        let upper = uuid.to_uppercase();
        for id in [uuid.as_str(), upper.as_str(), "status-report-7", "", "{not a uuid}"] {
            assert_eq!(JobKey::new(id).to_string(), id);
        }
        assert!(matches!(JobKey::new(&uuid), JobKey::Uuid(_)));
        // The same UUID written another way is another id.
        assert_ne!(JobKey::new(&uuid), JobKey::new(&upper));
        assert_ne!(JobKey::new(&uuid), JobKey::new(&uuid.replace('-', "")));
    }
}

//! Embedded persistent store: one append-only log file (see [`log`]), crash-safe (a result
//! acknowledged as stored survives `kill -9`), pending and result lifetimes, bounded size with
//! least-recently-used eviction.
//!
//! An in-memory index (id → owner, state, expiry, recency and where the job's latest record is in
//! the file) answers listings, counts and eviction without touching the file; a read of a result
//! is one positioned read. Writes go to one writer thread that appends whatever has queued up in
//! one write (group commit), so a busy node pays one `write` and at most one `fdatasync` per batch
//! rather than per job. A write someone waits for is written (and synced) at once; writes nobody
//! waits for (a stream's records) wait up to [`LINGER_DETACHED`] for company, are encoded by the
//! writer, and a record superseded before it is written (a short stream's running record) is
//! never encoded or written. Until it is written, a queued record is answered from memory, so readers
//! always see the latest write. Once superseded records make up most of the file, the writer
//! rewrites it with the live ones only.
//!
//! When the file does not take a batch (a full disk), finished jobs' records stay in memory,
//! answered to readers, and are written before anything newer at each retry (see [`writer`]); an
//! awaited record of a running job is refused instead, so its job is not accepted.

mod index;
mod legacy;
mod log;
mod lru;
mod recover;
mod writer;

use std::{
    net::IpAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use infernet_types::{JobResult, JobStatus};
use serde::Deserialize;
use tokio::sync::oneshot;

use super::{Backlog, JobStore, Lifetimes, ListFilter, StoreError, StoredJob, unix_now};
use index::{Index, Op, Write};
use log::{Loc, LogError};
use recover::recover;
use writer::{WriteError, Writer};

/// Longest the writer waits to fill a batch nobody awaits: how long a stream's record may stay
/// in memory only (lost to a `kill -9` in that window; the stream's client has its output).
const LINGER_DETACHED: Duration = Duration::from_millis(20);

/// Appends a job's record, as JSON that reads back as a [`Record`]; every record the store writes
/// is encoded here, by hand (the writer thread encodes every stored job: see [`crate::json`]).
fn encode_record(out: &mut Vec<u8>, owner: IpAddr, expires: u64, job: &JobResult) -> Result<(), LogError> {
    out.extend_from_slice(br#"{"id":"#);
    crate::json::write_str(out, &job.id);
    out.extend_from_slice(br#","owner":""#);
    match owner {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
            }
        }
        // Hex digits and colons: nothing to escape.
        IpAddr::V6(v6) => {
            std::io::Write::write_fmt(out, format_args!("{v6}")).map_err(LogError::Encode)?;
        }
    }
    out.extend_from_slice(br#"","expires":"#);
    out.extend_from_slice(itoa::Buffer::new().format(expires).as_bytes());
    out.extend_from_slice(br#","job":"#);
    crate::json::write_job(out, job);
    out.push(b'}');
    Ok(())
}

#[derive(Deserialize)]
struct Record {
    id: String,
    owner: IpAddr,
    /// Unix seconds after which the record is gone (0: never).
    expires: u64,
    job: JobResult,
}

/// What a replay needs of a record (the rest of it is left unparsed).
#[derive(Deserialize)]
struct RecordHead {
    id: String,
    owner: IpAddr,
    expires: u64,
    job: JobHead,
}

#[derive(Deserialize)]
struct JobHead {
    status: JobStatus,
}

/// A record as queued.
struct Row {
    data: RowData,
    /// The job is running (a write of it that fails is refused rather than held).
    running: bool,
    /// A newer record of the job was queued since, or the job is gone: writing this one is
    /// useless (a short stream's running record, for one, is never encoded or written).
    superseded: AtomicBool,
}

/// Encoded by its writer, or left for the writer thread to encode (the job holds the id).
enum RowData {
    Encoded(Vec<u8>),
    Fresh {
        owner: IpAddr,
        expires: u64,
        job: JobResult,
    },
}

impl Row {
    fn new(data: RowData, running: bool) -> Arc<Self> {
        Arc::new(Self {
            data,
            running,
            superseded: AtomicBool::new(false),
        })
    }

    fn supersede(&self) {
        self.superseded.store(true, Ordering::Relaxed);
    }

    fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Relaxed)
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), LogError> {
        match &self.data {
            RowData::Encoded(bytes) => {
                out.extend_from_slice(bytes);
                Ok(())
            }
            RowData::Fresh { owner, expires, job } => encode_record(out, *owner, *expires, job),
        }
    }

    fn record(&self) -> Result<Record, serde_json::Error> {
        match &self.data {
            RowData::Encoded(bytes) => serde_json::from_slice(bytes),
            RowData::Fresh { owner, expires, job } => Ok(Record {
                id: job.id.clone(),
                owner: *owner,
                expires: *expires,
                job: job.clone(),
            }),
        }
    }
}

/// What the index holds per job (a full store holds `max_jobs` of these: kept small).
#[derive(Debug, Clone)]
struct Meta {
    /// Names the job's queued records (unique for the life of the process).
    key: u64,
    owner: IpAddr,
    running: bool,
    expires: u64,
    /// Where the job's latest written record is; `len` 0 until the first is written.
    at: u64,
    len: u32,
}

impl Meta {
    fn is_live(&self, now: u64) -> bool {
        self.expires == 0 || self.expires > now
    }

    fn loc(&self) -> Option<Loc> {
        (self.len > 0).then_some(Loc {
            at: self.at,
            len: self.len,
        })
    }

    /// Moves the job's record to `loc`; returns the length of the one it replaces.
    fn place(&mut self, loc: Loc) -> u64 {
        let old = self.len;
        (self.at, self.len) = (loc.at, loc.len);
        u64::from(old)
    }
}

/// A job id as the index keeps it: the node's own ids (lower-case hyphenated UUIDs) in 16 bytes
/// without an allocation, any other id as given. A full store holds `max_jobs` of these.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum JobKey {
    Uuid([u8; 16]),
    Other(Box<str>),
}

impl JobKey {
    fn new(id: &str) -> Self {
        match parse_lower_hyphenated(id.as_bytes()) {
            Some(bytes) => Self::Uuid(bytes),
            None => Self::Other(id.into()),
        }
    }
}

/// The 16 bytes of a UUID written exactly as the node writes its ids (lower-case hex, hyphens at
/// 8, 13, 18, 23); any other text is `None`, so only that exact text maps back to the id. The
/// `uuid` crate also reads upper case, and at this length only the hyphenated form.
fn parse_lower_hyphenated(text: &[u8]) -> Option<[u8; 16]> {
    if text.len() != 36 || text.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    uuid::Uuid::try_parse_ascii(text).ok().map(uuid::Uuid::into_bytes)
}

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Uuid(bytes) => uuid::Uuid::from_bytes(*bytes).hyphenated().fmt(f),
            Self::Other(id) => f.write_str(id),
        }
    }
}

/// The embedded job store.
pub struct EmbeddedStore {
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

/// How the embedded store batches writes and holds those the file does not take.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// How long writes nobody awaits may wait to be batched with others.
    pub detached_linger: Duration,
    /// Records held while the file does not take them (a full disk).
    pub backlog: Backlog,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            detached_linger: LINGER_DETACHED,
            backlog: Backlog::default(),
        }
    }
}

fn expiry(now: u64, lifetime: Option<Duration>) -> u64 {
    lifetime.map(|d| now.saturating_add(d.as_secs().max(1))).unwrap_or(0)
}

impl EmbeddedStore {
    /// Opens (or creates) the store file, fails jobs that were running when the node stopped,
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
        let tuning = Tuning {
            detached_linger,
            ..Tuning::default()
        };
        Self::open_with(path, lifetimes, max_jobs, tuning).await
    }

    /// [`Self::open`], batching and holding writes as `tuning` says.
    pub async fn open_with(
        path: &Path,
        lifetimes: Lifetimes,
        max_jobs: u64,
        tuning: Tuning,
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
        let (log, index) = tokio::task::spawn_blocking(move || recover(&path_owned, lifetimes))
            .await
            .map_err(|e| err(e.to_string()))?
            .map_err(|e| err(e.to_string()))?;
        let index = Arc::new(Mutex::new(index));
        let writer = Arc::new(Writer::new(tuning.detached_linger));
        let (queue, written) = (writer.clone(), index.clone());
        let writer_thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer::writer_loop(log, &queue, &written, tuning.backlog))
            .map_err(|e| err(format!("cannot start the writer thread: {e}")))?;
        let store = Self {
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

    /// Updates the index and queues the record's write; `ack` hears of it being written.
    fn enqueue(
        &self,
        id: JobKey,
        owner: IpAddr,
        (running, expires): (bool, u64),
        row: RowData,
        ack: Option<oneshot::Sender<Result<(), WriteError>>>,
    ) -> Result<(), StoreError> {
        let row = Row::new(row, running);
        let mut index = self.index.lock().expect("store index poisoned");
        let key = index.upsert(&id, owner, running, expires, row.clone());
        // The evictions travel with the write that caused them.
        let ops = index.evict_over(self.max_jobs);
        // Queued under the index lock, so the file gets the writes in the order the index saw
        // them (the writer takes the two locks one after the other, never together).
        self.writer
            .push(Write {
                put: Some(Op::Put { key, id, row }),
                ops,
                ack,
            })
            .map_err(|()| self.error("the store is closed"))
    }

    /// Evicts over-capacity jobs left by an earlier run with a larger `max_jobs`.
    fn evict_over_capacity(&self) {
        let mut index = self.index.lock().expect("store index poisoned");
        let victims = index.evict_over(self.max_jobs);
        if !victims.is_empty() {
            // Losing an eviction to a crash only means it happens again at the next start.
            let _ = self.writer.push(Write::deletions(victims));
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
                let mut index = index.lock().expect("store index poisoned");
                let ops = index.expire(unix_now());
                if !ops.is_empty() && writer.push(Write::deletions(ops)).is_err() {
                    return;
                }
            }
        });
    }
}

#[async_trait]
impl JobStore for EmbeddedStore {
    async fn put(&self, owner: IpAddr, job: &JobResult) -> Result<(), StoreError> {
        let lifetime = self.lifetime(job.status);
        // Encoded here: the caller lends the job and waits for the write anyway.
        let mut bytes = Vec::new();
        encode_record(&mut bytes, owner, lifetime.1, job).map_err(|e| self.error(e))?;
        let (ack, done) = oneshot::channel();
        self.enqueue(
            JobKey::new(&job.id),
            owner,
            lifetime,
            RowData::Encoded(bytes),
            Some(ack),
        )?;
        done.await
            .map_err(|_| self.error("the writer thread stopped"))?
            .map_err(|e| self.error(e))
    }

    fn put_detached(&self, owner: IpAddr, job: JobResult) {
        let lifetime = self.lifetime(job.status);
        let id = JobKey::new(&job.id);
        let row = RowData::Fresh {
            owner,
            expires: lifetime.1,
            job,
        };
        // Only a closing store refuses a job; the writer encodes it.
        if let Err(e) = self.enqueue(id, owner, lifetime, row, None) {
            tracing::error!(error = %e, "cannot store a job");
        }
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<StoredJob>, StoreError> {
        let now = unix_now();
        // One slot per wanted job, in the order asked: its queued record, or where it is in the
        // file. A job whose record cannot be read stays out.
        let mut rows: Vec<Option<(String, Arc<Row>)>> = Vec::new();
        let mut in_file: Vec<(usize, String, Loc)> = Vec::new();
        let file = {
            let mut index = self.index.lock().expect("store index poisoned");
            let mut seen = std::collections::HashSet::new();
            for id in ids.iter().filter(|id| seen.insert(id.as_str())) {
                let key = JobKey::new(id);
                let Some(meta) = index.jobs.get(&key).filter(|m| m.is_live(now)) else {
                    continue;
                };
                match (index.unwritten.get(&meta.key), meta.loc()) {
                    (Some(row), _) => rows.push(Some((id.clone(), row.clone()))),
                    (None, Some(loc)) => {
                        in_file.push((rows.len(), id.clone(), loc));
                        rows.push(None);
                    }
                    // A failed write leaves the job without a record.
                    (None, None) => continue,
                }
                index.jobs.touch(&key);
            }
            index.file.clone()
        };
        if !in_file.is_empty() {
            let read = tokio::task::spawn_blocking(move || {
                in_file
                    .into_iter()
                    .map(|(at, id, loc)| log::read(&file, loc).map(|bytes| (at, id, bytes)))
                    .collect::<Result<Vec<_>, LogError>>()
            })
            .await
            .map_err(|e| self.error(e))?
            .map_err(|e| self.error(e))?;
            for (at, id, bytes) in read {
                rows[at] = Some((id, Row::new(RowData::Encoded(bytes), false)));
            }
        }
        rows.into_iter()
            .flatten()
            .map(|(id, row)| match row.record() {
                Ok(r) if r.id == id => Ok(StoredJob {
                    owner: r.owner,
                    job: r.job,
                }),
                Ok(r) => Err(StoreError::Corrupt {
                    id,
                    message: format!("the record found is job {}'s", r.id),
                }),
                Err(e) => Err(StoreError::Corrupt {
                    id,
                    message: e.to_string(),
                }),
            })
            .collect()
    }

    async fn list(&self, owner: IpAddr, filter: ListFilter) -> Result<Vec<String>, StoreError> {
        let now = unix_now();
        let index = self.index.lock().expect("store index poisoned");
        // Least recently used first.
        Ok(index
            .jobs
            .iter()
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

    fn unwritten(&self) -> usize {
        self.index.lock().expect("store index poisoned").unwritten.len()
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}

#[cfg(test)]
mod tests {
    use infernet_types::{ContainerResult, JobResult};

    use super::{JobKey, Meta, Record, encode_record};

    #[test]
    fn records_read_back_as_written_whatever_the_id_owner_and_output() {
        let uuid = uuid::Uuid::new_v4().to_string();
        let odd = "a \"quoted\" id\\with\nnew line, tab\t and ünïcode";
        for (id, owner, expires) in [
            (uuid.as_str(), "127.0.0.1", 0),
            (uuid.as_str(), "255.0.10.200", u64::MAX),
            (odd, "::1", 1_700_000_000),
            ("", "2001:db8::ff00:42:8329", 7),
            ("x", "::ffff:10.0.0.1", 7),
        ] {
            let output = ContainerResult::Output {
                container: "c\"1".into(),
                output: serde_json::json!({"output": "line\n\"two\"", "n": [1, 2.5, null]}),
            };
            let job = JobResult::finished(id, vec![output]);
            let mut out = Vec::new();
            encode_record(&mut out, owner.parse().unwrap(), expires, &job).unwrap();
            let record: Record = serde_json::from_slice(&out).expect("valid JSON record");
            assert_eq!(record.id, id);
            assert_eq!(record.owner.to_string(), owner);
            assert_eq!(record.expires, expires);
            assert_eq!(record.job, job);
        }
    }

    #[test]
    fn an_index_entry_stays_small() {
        // A full store holds `max_jobs` of these (store_memory bench: the whole index costs
        // about 125 bytes per job with them).
        assert_eq!(size_of::<JobKey>() + size_of::<Meta>(), 72);
    }

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
        // Hyphens elsewhere (same length, same digits) are another id too.
        let moved = format!("{}-{}", &uuid[..7], &uuid[7..].replacen('-', "", 1));
        assert!(matches!(JobKey::new(&moved), JobKey::Other(_)));
        assert_eq!(JobKey::new(&moved).to_string(), moved);
        let parsed = uuid::Uuid::parse_str(&uuid).unwrap();
        assert_eq!(JobKey::new(&uuid), JobKey::Uuid(parsed.into_bytes()));
    }
}

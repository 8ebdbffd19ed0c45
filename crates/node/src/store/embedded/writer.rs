//! The embedded store's writer thread: appends what is queued in batches (group commit), holds
//! the records of a batch the file did not take (a full disk) and retries them with backoff, and
//! compacts the file when superseded records make up most of it.

use std::{
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use super::{
    Index, Meta, Op, Write,
    log::{Loc, Log, LogError},
};
use crate::store::{Backlog, Backoff, StoreError};

/// Why a queued write was not stored; its caller hears it through the write's ack.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum WriteError {
    /// The record could not be encoded, or the file did not take it (one failure, shared by
    /// every write of the batch).
    #[error("{0}")]
    Log(Arc<LogError>),
    /// The file does not take writes and the records held for the retry fill the backlog.
    #[error("{}", StoreError::Backlog { jobs: *jobs, bytes: *bytes })]
    Backlog {
        /// Jobs held.
        jobs: usize,
        /// Bytes of their records.
        bytes: usize,
    },
}

impl From<LogError> for WriteError {
    fn from(e: LogError) -> Self {
        Self::Log(Arc::new(e))
    }
}

/// Most writes appended in one batch.
const MAX_BATCH: usize = 4096;
/// Longest a busy writer waits to fill a batch while a caller awaits one of its writes.
const LINGER: Duration = Duration::from_millis(2);

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

/// The queue of writes and the writer thread's settings.
pub(super) struct Writer {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// How long writes nobody awaits may wait for company.
    detached_linger: Duration,
}

impl Writer {
    pub(super) fn new(detached_linger: Duration) -> Self {
        Self {
            queue: Mutex::default(),
            wake: Condvar::new(),
            detached_linger,
        }
    }

    pub(super) fn push(&self, write: Write) -> Result<(), ()> {
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

    pub(super) fn close(&self) {
        let mut q = self.queue.lock().expect("writer queue poisoned");
        q.closed = true;
        self.wake.notify_one();
    }

    /// Waits for writes; returns `None` once closed and drained, an empty batch at `retry_at`.
    /// The writer lingers to fill the batch: up to the detached linger while nobody awaits a
    /// write, [`LINGER`] once someone does and the writer is busy.
    fn next_batch(&self, busy: bool, retry_at: Option<Instant>) -> Option<Vec<Write>> {
        let mut q = self.queue.lock().expect("writer queue poisoned");
        while q.writes.is_empty() {
            if q.closed {
                return None;
            }
            q.idle = true;
            q = match retry_at.map(|at| at.checked_duration_since(Instant::now())) {
                None => self.wake.wait(q).expect("writer queue poisoned"),
                Some(Some(left)) => self.wake.wait_timeout(q, left).expect("writer queue poisoned").0,
                Some(None) => {
                    q.idle = false;
                    return Some(Vec::new());
                }
            };
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

/// Records of finished jobs the file did not take (a full disk): answered to readers from the
/// index meanwhile, and written before anything newer at each retry.
struct Held {
    writes: Vec<Write>,
    bytes: usize,
    backlog: Backlog,
    backoff: Backoff,
    /// When to retry (`None`: nothing held).
    retry_at: Option<Instant>,
}

impl Held {
    fn new(backlog: Backlog) -> Self {
        Self {
            writes: Vec::new(),
            bytes: 0,
            backlog,
            backoff: Backoff::new(backlog),
            retry_at: None,
        }
    }

    /// The held writes, then `batch`.
    fn before(&mut self, batch: Vec<Write>) -> Vec<Write> {
        self.bytes = 0;
        let mut writes = std::mem::take(&mut self.writes);
        writes.extend(batch);
        writes
    }

    /// The `retried` held writes went in with the rest.
    fn written(&mut self, retried: usize) {
        if self.retry_at.take().is_some() {
            self.backoff.reset();
            tracing::info!(
                written = retried,
                "job store writes again; the held job records are written"
            );
        }
    }

    /// The file did not take `batch` (`placed`: where each operation's record was to go;
    /// `results`: each write's own outcome). Keeps what must not be lost, answers the callers,
    /// and schedules a retry. Awaited records of running jobs are refused instead (their jobs are
    /// not accepted); deletions are dropped (they happen again).
    fn failed(
        &mut self,
        batch: Vec<Write>,
        placed: &[Option<Loc>],
        results: Vec<Result<(), WriteError>>,
        error: &WriteError,
        index: &Mutex<Index>,
    ) {
        let mut index = index.lock().expect("store index poisoned");
        let mut slot = 0;
        for (write, result) in batch.into_iter().zip(results) {
            // The job's record comes first among a write's operations.
            let len = placed.get(slot).copied().flatten().map_or(0, |l| l.len as usize);
            slot += write.ops().count();
            let Write { put, ack, .. } = write;
            let outcome = match put {
                Some(Op::Put { key, id, row }) => match result {
                    Err(e) => {
                        index.abandon(&id, key, &row);
                        Err(e)
                    }
                    Ok(()) if row.is_superseded() && ack.is_none() => Ok(()),
                    Ok(()) if row.running && ack.is_some() => {
                        index.abandon(&id, key, &row);
                        Err(error.clone())
                    }
                    Ok(()) if self.backlog.fits(self.writes.len() + 1, self.bytes + len) => {
                        self.bytes += len;
                        self.writes.push(Write {
                            put: Some(Op::Put { key, id, row }),
                            ops: Vec::new(),
                            ack: None,
                        });
                        Ok(())
                    }
                    Ok(()) => {
                        let full = WriteError::Backlog {
                            jobs: self.writes.len(),
                            bytes: self.bytes,
                        };
                        tracing::error!(job = %id, error = %full, "a job record is dropped");
                        index.abandon(&id, key, &row);
                        Err(full)
                    }
                },
                _ => Err(error.clone()),
            };
            if let Some(ack) = ack {
                let _ = ack.send(outcome);
            }
        }
        if self.retry_at.is_none() {
            tracing::warn!(
                %error,
                held = self.writes.len(),
                "job store cannot write; finished jobs' records are held in memory and retried"
            );
        }
        self.retry_at = Some(Instant::now() + self.backoff.wait());
    }
}

/// Appends queued writes, one batch at a time, until the store closes; compacts the file when
/// superseded records make up most of it. Records the file does not take are held and retried.
pub(super) fn writer_loop(mut log: Log, writer: &Writer, index: &Mutex<Index>, backlog: Backlog) {
    // A file left mostly superseded (jobs expired or evicted while the node was down) is
    // compacted at once, not at the first write.
    let compact = log.wants_compaction(index.lock().expect("store index poisoned").live);
    if compact {
        compact_log(&mut log, index);
    }
    let mut held = Held::new(backlog);
    let mut busy = false;
    let mut placed = Vec::new();
    while let Some(batch) = writer.next_batch(busy, held.retry_at) {
        busy = batch.len() > 1;
        let retried = held.writes.len();
        let batch = held.before(batch);
        if batch.is_empty() {
            continue;
        }
        let (results, committed) = append(&mut log, &batch, &mut placed, retried > 0);
        if let Err(e) = committed {
            held.failed(batch, &placed, results, &e.into(), index);
            continue;
        }
        held.written(retried);
        let compact = {
            let mut index = index.lock().expect("store index poisoned");
            index.written(&batch, &placed);
            log.wants_compaction(index.live)
        };
        for (w, result) in batch.into_iter().zip(results) {
            if let Some(ack) = w.ack {
                let _ = ack.send(result);
            }
        }
        if compact {
            compact_log(&mut log, index);
        }
    }
    if !held.writes.is_empty() {
        let batch = held.before(Vec::new());
        if let (_, Err(e)) = append(&mut log, &batch, &mut placed, true) {
            tracing::error!(error = %e, jobs = batch.len(), "the store closed before it could write these jobs' records");
        }
    }
}

/// Writes the batch's operations, in order, in one write (synced when someone awaits one of
/// them, or `sync`), leaving out records superseded since they were queued; fills `placed` with
/// where each operation's record goes. Returns each write's own outcome (its record could be
/// encoded), and whether the file took the batch.
fn append(
    log: &mut Log,
    batch: &[Write],
    placed: &mut Vec<Option<Loc>>,
    sync: bool,
) -> (Vec<Result<(), WriteError>>, Result<(), LogError>) {
    placed.clear();
    let mut results: Vec<Result<(), WriteError>> = vec![Ok(()); batch.len()];
    for (write, result) in batch.iter().zip(&mut results) {
        for op in write.ops() {
            let loc = match op {
                // A write someone awaits is written even so: the newer record may be one nobody
                // awaits, written later without a sync.
                Op::Put { row, .. } if row.is_superseded() && write.ack.is_none() => None,
                Op::Put { row, .. } => match log.put(|out| row.encode_into(out)) {
                    Ok(loc) => Some(loc),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot store a job");
                        *result = Err(e.into());
                        None
                    }
                },
                Op::Delete { id } => {
                    log.delete(id);
                    None
                }
            };
            placed.push(loc);
        }
    }
    let committed = log.commit(sync || batch.iter().any(|w| w.ack.is_some()));
    (results, committed)
}

/// Rewrites the file with the live records only; readers switch to the new file and locations
/// at once, under the index lock.
fn compact_log(log: &mut Log, index: &Mutex<Index>) {
    let mut live: Vec<Loc> = {
        let index = index.lock().expect("store index poisoned");
        index.jobs.values().filter_map(Meta::loc).collect()
    };
    live.sort_unstable_by_key(|loc| loc.at);
    // Only this thread moves records, so the locations stay valid while it copies; jobs removed
    // meanwhile are copied too, and their queued deletions follow in the new file.
    let started = Instant::now();
    match log.compact(&live) {
        Ok(moved) => {
            let mut index = index.lock().expect("store index poisoned");
            let mut kept = 0;
            for meta in index.jobs.values_mut() {
                if let Some(loc) = meta.loc()
                    && let Ok(i) = live.binary_search_by_key(&loc.at, |l| l.at)
                {
                    kept += meta.place(Loc {
                        at: moved[i],
                        len: loc.len,
                    });
                }
            }
            index.file = log.file();
            index.live = kept;
            tracing::debug!(
                records = live.len(),
                took_ms = started.elapsed().as_millis(),
                "job store compacted"
            );
        }
        Err(e) => tracing::error!(error = %e, "job store compaction failed; the file keeps growing until it succeeds"),
    }
}

//! Group commit for job rows: the gateway hands the writer a job's whole row each time it changes
//! (placed on a node, ended), and one task upserts every row handed over since its last commit in
//! one statement of one transaction, then starts the next commit at once. Under load many jobs
//! share a commit; alone, a row waits only for the commit in flight.
//!
//! Why: each statement on SQLite is a round trip to sqlx's connection thread, and SQLite takes one
//! writer at a time; four statements per job capped the gateway near a thousand jobs a second and
//! added most of a millisecond to each. Now a job costs the gateway no wait on the database.
//!
//! What a crash can lose: the rows handed over and not yet committed — those of the commit in
//! flight and those that arrived during it (under a millisecond of jobs at ordinary load), at most
//! [`JobWriterSettings::capacity`] rows when the database falls behind (handing over then waits for
//! room). The gateway answers a submitted job only once its first row is committed (that commit
//! runs while the node is called), so what can be lost of an answered job is its node and its end;
//! a stream does not wait, so a crash can lose a stream's whole record (the README lists this). A
//! clean stop loses nothing: the writer commits what is left, and rows handed over after it
//! stopped are written one at a time by their callers.
//!
//! Reads see what they wrote: [`JobWriter::settle`] waits until a job's pending row is committed,
//! so a read through this replica right after an answer finds the job. Another replica sees it
//! once its commit is done.
//!
//! A row nobody waits for ([`JobWriter::put_acked_batched`]: a stream's end, whose ack only
//! decides its ledger row; a held row whose hold passed) waits up to
//! [`JobWriterSettings::gather`] for others to share its commit, unless a row somebody waits for
//! (a submission's answer, a read) comes first: fewer, larger commits write each page once for many
//! rows (one commit per stream wrote the same few pages to the WAL over and over).
//!
//! A row can also be held back ([`JobWriter::put_later`]): a stream's running row waits
//! [`JobWriterSettings::hold`] before it joins a commit, and a newer row of the job (its end)
//! replaces it meanwhile, so that a stream shorter than that writes one row, not two (the running
//! row was a tenth of the gateway's work per streamed job). A read of the job through this
//! replica ([`JobWriter::settle`], [`JobWriter::flush`]) commits a held row at once; another
//! replica sees a stream that runs longer than the hold once it has passed.
//!
//! An upsert never undoes what another writer did: a row that already ended (cancelled, or
//! finished by a read) or that a later attempt holds is left alone, and the caller told so
//! ([`JobWriter::put_acked`] answers `false`).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

use infernet_service::retry::{RetryPolicy, Sleeper};
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{Db, DbError, jobs::Job, on_pool};

/// Rows per statement at most (16 parameters each: well under both dialects' limits).
const ROWS_PER_STATEMENT: usize = 500;

/// Bounds of the job writer.
#[derive(Debug, Clone, Copy)]
pub struct JobWriterSettings {
    /// Rows waiting for a commit at most; handing over more waits for room (default 10,000).
    pub capacity: usize,
    /// How a commit that failed with a retryable error is retried (default: from 10 ms, up to
    /// 5 s apart, for as long as it takes; the rows wait meanwhile).
    pub retry: RetryPolicy,
    /// How long a row handed over with [`JobWriter::put_later`] is held back (default 1 s).
    pub hold: Duration,
    /// How long a row nobody waits for waits for others before its commit starts (default 5 ms).
    pub gather: Duration,
}

impl Default for JobWriterSettings {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            retry: RetryPolicy {
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_secs(5),
                max_attempts: u32::MAX,
            },
            hold: Duration::from_secs(1),
            gather: Duration::from_millis(5),
        }
    }
}

/// A row waiting for its commit, and who waits to know whether it was applied.
struct Pending {
    job: Job,
    seq: u64,
    acks: Vec<oneshot::Sender<bool>>,
}

#[derive(Default)]
struct State {
    /// Rows waiting for the next commit, by job id (a newer row of a job replaces the older).
    waiting: HashMap<String, Pending>,
    /// Rows held back, by job id, with when they join a commit.
    held: HashMap<String, (Job, Instant)>,
    /// Held rows in the order they are due (an entry whose row was replaced is skipped).
    due: VecDeque<(Instant, String)>,
    /// Somebody waits for a row of `waiting`: the next commit starts at once.
    urgent: bool,
    /// Since when the first row of `waiting` that nobody waits for has waited.
    lazy_since: Option<Instant>,
    /// Ids in the commit in flight.
    committing: HashMap<String, u64>,
    /// Sequence number of the last row handed over.
    seq: u64,
    /// The writer has stopped: rows are written by their caller.
    closed: bool,
}

struct Inner {
    db: Db,
    settings: JobWriterSettings,
    state: Mutex<State>,
    /// Wakes the writer.
    work: Notify,
    /// The highest sequence number committed (or given up on).
    committed: watch::Sender<u64>,
}

/// Hands job rows to the writer; cheap to clone.
#[derive(Clone)]
pub struct JobWriter(Arc<Inner>);

impl JobWriter {
    /// A writer of `db`'s job rows; run [`JobWriter::run`] as a task.
    pub fn new(db: Db, settings: JobWriterSettings) -> Self {
        Self(Arc::new(Inner {
            db,
            settings: JobWriterSettings {
                capacity: settings.capacity.max(1),
                ..settings
            },
            state: Mutex::default(),
            work: Notify::new(),
            committed: watch::channel(0).0,
        }))
    }

    /// Hands over `job`'s row for the next commit, waiting for room when the writer is
    /// `capacity` rows behind; the row's sequence number, for [`JobWriter::committed`].
    pub async fn put(&self, job: Job) -> u64 {
        self.hand_over(job, None, true).await
    }

    /// Waits until the row numbered `seq` (and every row handed over before it) is committed or
    /// given up on.
    pub async fn committed(&self, seq: u64) {
        let mut committed = self.0.committed.subscribe();
        let _ = committed.wait_for(|&c| c >= seq).await;
    }

    /// Hands over `job`'s row and waits for its commit: whether it was applied (`false` when the
    /// stored row had already ended or belongs to a later attempt, or the commit failed).
    pub async fn put_acked(&self, job: Job) -> bool {
        let (tx, rx) = oneshot::channel();
        self.hand_over(job, Some(tx), true).await;
        rx.await.unwrap_or(false)
    }

    /// [`JobWriter::put_acked`] for a row whose commit nobody else waits for: it may wait up to
    /// [`JobWriterSettings::gather`] for other rows to share its commit.
    pub async fn put_acked_batched(&self, job: Job) -> bool {
        let (tx, rx) = oneshot::channel();
        self.hand_over(job, Some(tx), false).await;
        rx.await.unwrap_or(false)
    }

    async fn hand_over(&self, job: Job, ack: Option<oneshot::Sender<bool>>, urgent: bool) -> u64 {
        let inner = &self.0;
        let mut committed = inner.committed.subscribe();
        loop {
            let closed = {
                let mut state = inner.state.lock().expect("job writer poisoned");
                if state.closed {
                    true
                } else if state.waiting.len() + state.held.len() < inner.settings.capacity
                    || state.waiting.contains_key(&job.id)
                    || state.held.contains_key(&job.id)
                {
                    // A held row of the job is replaced by this one.
                    state.held.remove(&job.id);
                    state.seq += 1;
                    let seq = state.seq;
                    let entry = state.waiting.entry(job.id.clone()).or_insert_with(|| Pending {
                        job: job.clone(),
                        seq,
                        acks: Vec::new(),
                    });
                    entry.job = job;
                    entry.seq = seq;
                    entry.acks.extend(ack);
                    let wake = mark(&mut state, urgent);
                    drop(state);
                    if wake {
                        inner.work.notify_one();
                    }
                    return seq;
                } else {
                    false
                }
            };
            if closed {
                let applied = match upsert(&inner.db, std::slice::from_ref(&job)).await {
                    Ok(ids) => !ids.is_empty(),
                    Err(e) => {
                        tracing::error!(job = %job.id, error = %e, "job row not written");
                        false
                    }
                };
                if let Some(ack) = ack {
                    let _ = ack.send(applied);
                }
                return 0;
            }
            // Full: wait for a commit to make room (which starts at once).
            inner.state.lock().expect("job writer poisoned").urgent = true;
            inner.work.notify_one();
            if committed.changed().await.is_err() {
                return 0;
            }
        }
    }

    /// Hands over `job`'s row to join a commit once [`JobWriterSettings::hold`] has passed,
    /// unless a newer row of the job replaces it first, or a read asks for it (which commits it
    /// at once). When the writer is full or stopped, it is handed over as by [`JobWriter::put`].
    pub async fn put_later(&self, job: Job) {
        let inner = &self.0;
        {
            let mut state = inner.state.lock().expect("job writer poisoned");
            let room = state.waiting.len() + state.held.len() < inner.settings.capacity;
            if !state.closed && room && !state.waiting.contains_key(&job.id) {
                if state.due.len() >= 2 * inner.settings.capacity {
                    // Entries of rows replaced since: dropped, so that `due` stays bounded.
                    let State { held, due, .. } = &mut *state;
                    due.retain(|(at, id)| held.get(id).is_some_and(|(_, held_at)| held_at == at));
                }
                let at = Instant::now() + inner.settings.hold;
                // Rows are due in the order they are held: the writer, when it waits for one
                // already, wakes for this one after it, and needs no wake-up now.
                let first = state.due.is_empty();
                state.due.push_back((at, job.id.clone()));
                state.held.insert(job.id.clone(), (job, at));
                drop(state);
                if first {
                    inner.work.notify_one();
                }
                return;
            }
        }
        self.put(job).await;
    }

    /// Waits until the pending row of job `id`, if any, is committed (a held row is committed
    /// now).
    pub async fn settle(&self, id: &str) {
        let target = {
            let mut state = self.0.state.lock().expect("job writer poisoned");
            promote(&mut state, id);
            if state.waiting.contains_key(id) {
                state.urgent = true;
                self.0.work.notify_one();
            }
            match (state.waiting.get(id), state.committing.get(id)) {
                (Some(p), _) => p.seq,
                (None, Some(&seq)) => seq,
                (None, None) => return,
            }
        };
        self.committed(target).await;
    }

    /// Waits until every row handed over so far is committed, and the held rows of `client`'s
    /// jobs (now): what a listing of `client`'s jobs must see, without cutting other clients'
    /// holds short.
    pub async fn flush_for(&self, client: &str) {
        let target = {
            let mut state = self.0.state.lock().expect("job writer poisoned");
            let ids: Vec<String> = state
                .held
                .iter()
                .filter(|(_, (job, _))| job.client == client)
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                promote(&mut state, &id);
            }
            if !state.waiting.is_empty() {
                state.urgent = true;
                self.0.work.notify_one();
            }
            state.seq
        };
        self.committed(target).await;
    }

    /// Waits until every row handed over so far is committed (held rows too, now).
    pub async fn flush(&self) {
        let target = {
            let mut state = self.0.state.lock().expect("job writer poisoned");
            promote_all(&mut state);
            if !state.waiting.is_empty() {
                state.urgent = true;
                self.0.work.notify_one();
            }
            state.seq
        };
        self.committed(target).await;
    }

    /// Rows waiting for a commit (the one in flight and held rows included).
    pub fn backlog(&self) -> usize {
        let state = self.0.state.lock().expect("job writer poisoned");
        state.waiting.len() + state.committing.len() + state.held.len()
    }

    /// Commits until `shutdown`, then what is left; rows handed over after that are written by
    /// their callers.
    pub async fn run(self, shutdown: CancellationToken) {
        let inner = &self.0;
        loop {
            let stopping = shutdown.is_cancelled();
            let (batch, wake) = {
                let mut state = inner.state.lock().expect("job writer poisoned");
                if stopping {
                    state.closed = true;
                    promote_all(&mut state);
                }
                let now = Instant::now();
                while let Some((at, id)) = state.due.front().cloned() {
                    if at > now {
                        break;
                    }
                    state.due.pop_front();
                    // Only when the held row is still this one (not replaced, nor taken).
                    if state.held.get(&id).is_some_and(|(_, held_at)| *held_at == at) {
                        promote(&mut state, &id);
                        mark(&mut state, false);
                    }
                }
                if state.urgent && state.waiting.len() + state.held.len() >= inner.settings.capacity {
                    // Full of held rows: a commit of the waiting ones alone would free no room
                    // for the row that waits for it.
                    promote_all(&mut state);
                }
                let gathered = state.lazy_since.map(|since| since + inner.settings.gather);
                let now_or_never = stopping
                    || state.urgent
                    || state.waiting.len() >= ROWS_PER_STATEMENT
                    || gathered.is_some_and(|at| at <= now);
                // Committed now, or woken when the gathering time ends.
                let (batch, gathered) = match now_or_never {
                    true => {
                        state.urgent = false;
                        state.lazy_since = None;
                        (std::mem::take(&mut state.waiting), None)
                    }
                    false => (HashMap::new(), gathered),
                };
                state.committing = batch.iter().map(|(id, p)| (id.clone(), p.seq)).collect();
                let due = state.due.front().map(|(at, _)| *at);
                (batch, due.into_iter().chain(gathered).min())
            };
            if !batch.is_empty() {
                self.commit(batch, &shutdown).await;
            }
            if stopping {
                return;
            }
            let has_more = {
                let state = inner.state.lock().expect("job writer poisoned");
                state.urgent || state.waiting.len() >= ROWS_PER_STATEMENT
            };
            if !has_more {
                let due = async {
                    match wake {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = inner.work.notified() => {}
                    () = due => {}
                    () = shutdown.cancelled() => {}
                }
            }
        }
    }

    /// Commits `batch`, retrying retryable failures (until the router stops), and answers its
    /// waiters.
    async fn commit(&self, batch: HashMap<String, Pending>, shutdown: &CancellationToken) {
        let inner = &self.0;
        let top = batch.values().map(|p| p.seq).max().unwrap_or(0);
        let rows: Vec<Job> = batch.values().map(|p| p.job.clone()).collect();
        let mut backoff = inner.settings.retry.backoff(Sleeper::default());
        let applied = loop {
            match upsert(&inner.db, &rows).await {
                Ok(ids) => break Some(ids),
                Err(e) if e.is_retryable() && !shutdown.is_cancelled() => match backoff.next_delay() {
                    Some(delay) => {
                        tracing::warn!(error = %e, rows = rows.len(), retry_in = ?delay, "job rows not committed");
                        tokio::select! {
                            () = backoff.sleep(delay) => {}
                            () = shutdown.cancelled() => {}
                        }
                    }
                    None => {
                        tracing::error!(error = %e, lost = rows.len(), "job rows dropped");
                        break None;
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, lost = rows.len(), "job rows dropped");
                    break None;
                }
            }
        };
        let applied: std::collections::HashSet<String> = applied.unwrap_or_default().into_iter().collect();
        inner.state.lock().expect("job writer poisoned").committing.clear();
        inner.committed.send_modify(|c| *c = (*c).max(top));
        for (id, p) in batch {
            let ok = applied.contains(&id);
            for ack in p.acks {
                let _ = ack.send(ok);
            }
        }
    }
}

/// Notes a row handed over to `waiting`: one somebody waits for (`urgent`) starts the next commit
/// at once; the first other one starts the gathering time. Whether the writer must wake for it
/// (not for a row that joins others already gathering: the writer wakes for them).
fn mark(state: &mut State, urgent: bool) -> bool {
    match urgent {
        true => {
            state.urgent = true;
            true
        }
        false => {
            let first = state.lazy_since.is_none();
            state.lazy_since.get_or_insert_with(Instant::now);
            first
        }
    }
}

/// Moves job `id`'s held row, if any, to the rows waiting for the next commit. Its entry in
/// `due` is left to be skipped.
fn promote(state: &mut State, id: &str) {
    if let Some((id, (job, _))) = state.held.remove_entry(id) {
        state.seq += 1;
        let seq = state.seq;
        state.waiting.insert(
            id,
            Pending {
                job,
                seq,
                acks: Vec::new(),
            },
        );
    }
}

/// [`promote`] for every held row.
fn promote_all(state: &mut State) {
    let ids: Vec<String> = state.held.keys().cloned().collect();
    for id in ids {
        promote(state, &id);
    }
    state.due.clear();
}

/// Upserts `rows` (distinct ids), atomically: the ids whose row was written. One statement when
/// the rows fit in one (no transaction of its own to begin and commit), otherwise a transaction.
async fn upsert(db: &Db, rows: &[Job]) -> Result<Vec<String>, DbError> {
    let mut written = Vec::with_capacity(rows.len());
    let numbered = db.dialect() == super::Dialect::Postgres;
    on_pool!(db, |p| {
        let mut tx = match rows.len() > ROWS_PER_STATEMENT {
            true => Some(p.begin().await?),
            false => None,
        };
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(statement(chunk.len(), numbered)));
            for job in chunk {
                let containers = super::containers_json(&job.containers)?;
                q = q
                    .bind(job.id.as_str())
                    .bind(job.client.as_str())
                    .bind(job.idempotency_key.as_deref())
                    .bind(containers)
                    .bind(job.status.as_str())
                    .bind(job.node.as_deref())
                    .bind(job.node_job.as_deref())
                    .bind(job.attempt)
                    .bind(job.lease_owner.as_deref())
                    .bind(job.lease_until)
                    .bind(job.callback_url.as_deref())
                    .bind(job.error.as_deref().map(super::jobs::stored_text))
                    .bind(job.created_at)
                    .bind(job.updated_at)
                    .bind(job.finished_at);
            }
            match tx.as_mut() {
                Some(tx) => written.extend(q.fetch_all(&mut **tx).await?),
                None => written.extend(q.fetch_all(p).await?),
            }
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
    });
    Ok(written)
}

/// `INSERT … VALUES (…) × rows ON CONFLICT (id) DO UPDATE … RETURNING id`: a stored row is
/// changed only while it has not ended and no later attempt holds it, and a known node is never
/// erased. Parameters are `$n` for PostgreSQL and anonymous `?` for SQLite (whose lookup of
/// numbered parameters grows with their count, squared over a statement).
fn statement(rows: usize, numbered: bool) -> String {
    const COLS: usize = 15;
    let mut sql = String::with_capacity(400 + rows * 80);
    sql.push_str(
        "INSERT INTO jobs (id, client, idempotency_key, containers, status, node, node_job, attempt, \
         lease_owner, lease_until, callback_url, error, created_at, updated_at, finished_at) VALUES ",
    );
    super::push_values(&mut sql, rows, COLS, numbered);
    sql.push_str(
        " ON CONFLICT (id) DO UPDATE SET status = excluded.status, node = COALESCE(excluded.node, jobs.node), \
         node_job = COALESCE(excluded.node_job, jobs.node_job), attempt = excluded.attempt, \
         lease_owner = excluded.lease_owner, lease_until = excluded.lease_until, error = excluded.error, \
         updated_at = excluded.updated_at, finished_at = excluded.finished_at \
         WHERE jobs.status IN ('queued', 'running') AND jobs.attempt <= excluded.attempt RETURNING id",
    );
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_numbers_every_parameter_once() {
        let sql = statement(2, true);
        assert!(sql.contains("($1,$2,") && sql.contains(",$30)"), "{sql}");
        assert!(!sql.contains("$31"));
        assert_eq!(statement(2, false).matches('?').count(), 30);
    }
}

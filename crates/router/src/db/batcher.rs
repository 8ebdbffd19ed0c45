//! Group commit for ledger rows and metric samples: callers queue records, one writer task commits
//! them many to a transaction, when [`BatchSettings::max_batch`] records are waiting or
//! [`BatchSettings::max_delay`] after the first of a batch, whichever comes first. The ledger
//! rows a batch inserts are added to their days' sums ([`super::ledger_days`]) in its transaction.
//!
//! Why: a commit costs an fsync (SQLite) or a round trip and a WAL flush (PostgreSQL); at a
//! thousand jobs a second, one commit per row would be the router's bottleneck, and the gateway
//! would wait for it. What it costs: records still queued when the process dies are lost — at most
//! `capacity` records, and at most `max_delay` worth of them under normal load. Job rows have their
//! own group-commit writer ([`super::job_writer`]). On a clean shutdown the writer drains the queue
//! before it returns.
//!
//! The queue is bounded: [`BatchSender::try_send`] fails with [`BatchError::Full`] rather than
//! grow, [`BatchSender::send`] waits for room. A batch that fails to commit with a retryable error
//! is retried (by [`BatchSettings::retry`], the workspace's [`RetryPolicy`]) while new records wait in the queue; any other failure drops
//! the batch and says how many records it lost.

use std::time::Duration;

use infernet_service::retry::{RetryPolicy, Sleeper};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{Db, DbError, ledger, ledger_days, metrics, on_pool};
use crate::db::{ledger::LedgerRow, metrics::MetricSample};

/// A record to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A ledger row.
    Ledger(LedgerRow),
    /// A metric sample (added to the minute's counters).
    Metrics(MetricSample),
}

/// Bounds of the batcher.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Records queued at most (default 10,000).
    pub capacity: usize,
    /// Records per transaction at most (default 500).
    pub max_batch: usize,
    /// How long the first record of a batch waits for others (default 100 ms).
    pub max_delay: Duration,
    /// How a batch that failed with a retryable error is retried (default: from 10 ms, up to 5 s
    /// apart, for as long as it takes while the router runs; new records wait in the queue).
    pub retry: RetryPolicy,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            max_batch: 500,
            max_delay: Duration::from_millis(100),
            retry: RetryPolicy {
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_secs(5),
                max_attempts: u32::MAX,
            },
        }
    }
}

/// Errors of the batcher.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The queue holds `capacity` records: the database is not keeping up.
    #[error("the database write queue is full ({capacity} records); the database is not keeping up")]
    Full {
        /// The bound.
        capacity: usize,
    },
    /// The writer has stopped (shutdown).
    #[error("the database writer has stopped")]
    Closed,
    /// The batch holding the caller's records could not be committed.
    #[error("a batch of database writes failed and was dropped; see the router's log")]
    Dropped,
}

#[expect(
    clippy::large_enum_variant,
    reason = "records are nearly every message; boxing them would cost an allocation each"
)]
enum Msg {
    Record(Record),
    Flush(oneshot::Sender<bool>),
}

/// Queues records; cheap to clone.
#[derive(Clone)]
pub struct BatchSender {
    tx: mpsc::Sender<Msg>,
    capacity: usize,
    written: watch::Receiver<u64>,
}

/// Commits what the senders queue; run it as a supervised task.
pub struct BatchWriter {
    db: Db,
    rx: mpsc::Receiver<Msg>,
    settings: BatchSettings,
    written: watch::Sender<u64>,
}

/// A sender and the writer that serves it.
pub fn batcher(db: Db, settings: BatchSettings) -> (BatchSender, BatchWriter) {
    let settings = BatchSettings {
        capacity: settings.capacity.max(1),
        max_batch: settings.max_batch.max(1),
        ..settings
    };
    let (tx, rx) = mpsc::channel(settings.capacity);
    let (written, written_rx) = watch::channel(0);
    let sender = BatchSender {
        tx,
        capacity: settings.capacity,
        written: written_rx,
    };
    (
        sender,
        BatchWriter {
            db,
            rx,
            settings,
            written,
        },
    )
}

impl BatchSender {
    /// Queues `record`, or fails at once when the queue is full.
    pub fn try_send(&self, record: Record) -> Result<(), BatchError> {
        self.tx.try_send(Msg::Record(record)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => BatchError::Full {
                capacity: self.capacity,
            },
            mpsc::error::TrySendError::Closed(_) => BatchError::Closed,
        })
    }

    /// Queues `record`, waiting for room.
    pub async fn send(&self, record: Record) -> Result<(), BatchError> {
        self.tx.send(Msg::Record(record)).await.map_err(|_| BatchError::Closed)
    }

    /// Commits everything queued before this call now; returns once it is committed.
    pub async fn flush(&self) -> Result<(), BatchError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Msg::Flush(done)).await.map_err(|_| BatchError::Closed)?;
        match wait.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(BatchError::Dropped),
            Err(_) => Err(BatchError::Closed),
        }
    }

    /// Records committed so far (a watch: await a count without polling).
    pub fn written(&self) -> watch::Receiver<u64> {
        self.written.clone()
    }
}

impl BatchWriter {
    /// Commits batches until `shutdown`, then drains the queue and returns.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(self.settings.max_batch);
        let mut waiters = Vec::new();
        loop {
            let first = tokio::select! {
                m = self.rx.recv() => m,
                _ = shutdown.cancelled() => None,
            };
            let Some(first) = first else { break };
            take(first, &mut batch, &mut waiters);
            let deadline = tokio::time::Instant::now() + self.settings.max_delay;
            while batch.len() < self.settings.max_batch && waiters.is_empty() {
                tokio::select! {
                    m = self.rx.recv() => match m {
                        Some(m) => take(m, &mut batch, &mut waiters),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = shutdown.cancelled() => break,
                }
            }
            self.commit(&mut batch, &mut waiters, &shutdown).await;
        }
        self.rx.close();
        while let Some(m) = self.rx.recv().await {
            take(m, &mut batch, &mut waiters);
            if batch.len() >= self.settings.max_batch {
                self.commit(&mut batch, &mut waiters, &shutdown).await;
            }
        }
        self.commit(&mut batch, &mut waiters, &shutdown).await;
    }

    /// Writes `batch` in one transaction, retrying while the error is retryable and the router
    /// is not stopping; empties it either way and answers the flush waiters.
    async fn commit(
        &mut self,
        batch: &mut Vec<Record>,
        waiters: &mut Vec<oneshot::Sender<bool>>,
        shutdown: &CancellationToken,
    ) {
        let mut backoff = self.settings.retry.backoff(Sleeper::default());
        let ok = loop {
            if batch.is_empty() {
                break true;
            }
            match write(&self.db, batch).await {
                Ok(()) => {
                    let n = batch.len() as u64;
                    self.written.send_modify(|w| *w += n);
                    break true;
                }
                Err(e) if e.is_retryable() && !shutdown.is_cancelled() => match backoff.next_delay() {
                    Some(delay) => {
                        tracing::warn!(error = %e, records = batch.len(), retry_in = ?delay, "database batch not committed");
                        tokio::select! {
                            _ = backoff.sleep(delay) => {}
                            _ = shutdown.cancelled() => {}
                        }
                    }
                    None => {
                        tracing::error!(error = %e, lost = batch.len(), "database batch dropped");
                        break false;
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, lost = batch.len(), "database batch dropped");
                    break false;
                }
            }
        };
        batch.clear();
        for w in waiters.drain(..) {
            let _ = w.send(ok);
        }
    }
}

fn take(m: Msg, batch: &mut Vec<Record>, waiters: &mut Vec<oneshot::Sender<bool>>) {
    match m {
        Msg::Record(r) => batch.push(r),
        Msg::Flush(w) => waiters.push(w),
    }
}

/// Ledger rows per statement at most (13 parameters each: well under both dialects' limits).
const LEDGER_ROWS_PER_STATEMENT: usize = 500;

/// One transaction for the whole batch: its rows, and what they add to the ledger's day sums.
/// The ledger rows go in multi-row statements: each statement is a round trip to the database
/// (for SQLite, to sqlx's connection thread and back), which cost more than the row itself.
async fn write(db: &Db, batch: &[Record]) -> Result<(), DbError> {
    let numbered = db.dialect() == super::Dialect::Postgres;
    let rows: Vec<(&LedgerRow, String)> = batch
        .iter()
        .filter_map(|r| match r {
            Record::Ledger(row) => Some(row),
            Record::Metrics(_) => None,
        })
        .map(|row| super::containers_json(&row.containers).map(|containers| (row, containers)))
        .collect::<Result<_, _>>()?;
    on_pool!(db, |p| {
        let mut tx = p.begin().await?;
        let mut added = ledger_days::Added::default();
        for chunk in rows.chunks(LEDGER_ROWS_PER_STATEMENT) {
            let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(ledger::insert(chunk.len(), numbered)));
            for (r, containers) in chunk {
                q = q
                    .bind(&r.job_id)
                    .bind(&r.client)
                    .bind(&r.api_key_id)
                    .bind(&r.node)
                    .bind(&r.operator)
                    .bind(containers)
                    .bind(r.started_at)
                    .bind(r.finished_at)
                    .bind(&r.outcome)
                    .bind(r.duration_ms)
                    .bind(r.price)
                    .bind(&r.unit)
                    .bind(&r.receipt);
            }
            let mut inserted: std::collections::HashSet<String> = q.fetch_all(&mut *tx).await?.into_iter().collect();
            // A row written twice is kept once, and counted once.
            for (r, containers) in chunk {
                if inserted.remove(&r.job_id) {
                    added.add(r, containers.clone());
                }
            }
        }
        for record in batch {
            if let Record::Metrics(s) = record {
                sqlx::query(metrics::ADD)
                    .bind(&s.node)
                    .bind(s.minute)
                    .bind(s.jobs_ok)
                    .bind(s.jobs_failed)
                    .bind(s.latency_ms_sum)
                    .bind(s.probes_ok)
                    .bind(s.probes_failed)
                    .bind(s.excluded_price)
                    .bind(s.excluded_hours)
                    .bind(s.excluded_hardware)
                    .bind(s.excluded_health)
                    .bind(s.excluded_load)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for ((node, day, operator, containers), s) in &added.0 {
            sqlx::query(ledger_days::ADD)
                .bind(node)
                .bind(day)
                .bind(operator)
                .bind(containers)
                .bind(s.jobs)
                .bind(s.succeeded)
                .bind(s.earned)
                .bind(s.duration_ms)
                .bind(s.succeeded_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    })
}

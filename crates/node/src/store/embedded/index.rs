//! The embedded store's in-memory index: every job's owner, state, expiry, recency and where
//! its latest record is, plus the records queued but not written yet.

use std::{fs::File, net::IpAddr, sync::Arc};

use super::{JobKey, Meta, Row, log::Loc, lru::Lru};
use crate::FastMap;
use tokio::sync::oneshot;

/// The jobs held, and what the writer has still to write.
pub(super) struct Index {
    /// The jobs held, in recency order.
    pub(super) jobs: Lru<JobKey, Meta>,
    next_key: u64,
    pub(super) running: u64,
    /// Records queued but not written yet, by job key: the freshest state of those jobs.
    pub(super) unwritten: FastMap<u64, Arc<Row>>,
    /// The file the locations point into.
    pub(super) file: Arc<File>,
    /// Length of the frames at the jobs' locations: what a compaction keeps.
    pub(super) live: u64,
}

impl Index {
    pub(super) fn new(file: Arc<File>) -> Self {
        Self {
            jobs: Lru::default(),
            next_key: 0,
            running: 0,
            unwritten: FastMap::default(),
            file,
            live: 0,
        }
    }

    /// Records a job's state and its queued record; returns the job's key (kept from an earlier
    /// write of the same id).
    pub(super) fn upsert(&mut self, id: &JobKey, owner: IpAddr, running: bool, expires: u64, row: Arc<Row>) -> u64 {
        let key = match self.jobs.touch(id) {
            Some(meta) => {
                self.running = self.running - u64::from(meta.running) + u64::from(running);
                (meta.owner, meta.running, meta.expires) = (owner, running, expires);
                meta.key
            }
            None => self.insert(
                id.clone(),
                Meta {
                    key: 0,
                    owner,
                    running,
                    expires,
                    at: 0,
                    len: 0,
                },
            ),
        };
        if let Some(older) = self.unwritten.insert(key, row) {
            older.supersede();
        }
        key
    }

    /// Notes where a batch's records went (`placed`: one slot per operation, in order), and
    /// forgets the queued ones it wrote unless a newer write of the job came since.
    pub(super) fn written(&mut self, batch: &[Write], placed: &[Option<Loc>]) {
        for (op, placed) in batch.iter().flat_map(Write::ops).zip(placed) {
            let Op::Put { key, id, row } = op else { continue };
            if let Some(loc) = *placed
                && let Some(meta) = self.jobs.get_mut(id).filter(|m| m.key == *key)
            {
                self.live = self.live - meta.place(loc) + u64::from(loc.len);
            }
            if self.unwritten.get(key).is_some_and(|queued| Arc::ptr_eq(queued, row)) {
                self.unwritten.remove(key);
            }
        }
    }

    /// A queued record of job `id` (`key`) will never be written: readers stop seeing it, and a
    /// job with no record written is forgotten. A newer record of the job stays.
    pub(super) fn abandon(&mut self, id: &JobKey, key: u64, row: &Arc<Row>) {
        if !self.unwritten.get(&key).is_some_and(|queued| Arc::ptr_eq(queued, row)) {
            return;
        }
        self.unwritten.remove(&key);
        if self.jobs.get(id).is_some_and(|m| m.key == key && m.loc().is_none())
            && let Some(meta) = self.jobs.remove(id)
        {
            self.forget(&meta);
        }
    }

    /// Adds a job not held yet, with a new key; returns the key.
    pub(super) fn insert(&mut self, id: JobKey, mut meta: Meta) -> u64 {
        self.next_key += 1;
        meta.key = self.next_key;
        self.running += u64::from(meta.running);
        self.live += u64::from(meta.len);
        self.jobs.insert_new(id, meta);
        self.next_key
    }

    /// Accounts for a job taken out of `jobs`.
    pub(super) fn forget(&mut self, meta: &Meta) {
        self.running -= u64::from(meta.running);
        self.live -= u64::from(meta.len);
        if let Some(queued) = self.unwritten.remove(&meta.key) {
            queued.supersede();
        }
    }

    /// Once more than `max_jobs` are held, evicts the least recently used down to 1 % below it, so
    /// a full store evicts (and says so) once per hundredth of its size, not on every job. Returns
    /// the deletions.
    pub(super) fn evict_over(&mut self, max_jobs: u64) -> Vec<Op> {
        if self.jobs.len() as u64 <= max_jobs {
            return Vec::new();
        }
        let low_water = max_jobs - max_jobs / 100;
        let mut victims = Vec::with_capacity((self.jobs.len() as u64 - low_water) as usize);
        while self.jobs.len() as u64 > low_water {
            let Some((id, meta)) = self.jobs.pop_lru() else {
                break;
            };
            self.forget(&meta);
            victims.push(Op::Delete { id });
        }
        tracing::debug!(
            evicted = victims.len(),
            "job store over capacity, evicted least recently used jobs"
        );
        victims
    }

    /// Removes jobs past their lifetime; returns the deletions.
    pub(super) fn expire(&mut self, now: u64) -> Vec<Op> {
        let expired = self.jobs.extract_if(|m| !m.is_live(now));
        expired
            .into_iter()
            .map(|(id, meta)| {
                self.forget(&meta);
                Op::Delete { id }
            })
            .collect()
    }
}

pub(super) enum Op {
    Put { key: u64, id: JobKey, row: Arc<Row> },
    Delete { id: JobKey },
}

pub(super) struct Write {
    /// The job written, if any (no allocation for the usual write of one job).
    pub(super) put: Option<Op>,
    /// Further operations, after `put`: the evictions it caused, or a sweep's deletions.
    pub(super) ops: Vec<Op>,
    pub(super) ack: Option<oneshot::Sender<Result<(), super::writer::WriteError>>>,
}

impl Write {
    /// Deletions nobody waits for (evictions at start, expiries).
    pub(super) fn deletions(ops: Vec<Op>) -> Self {
        Self {
            put: None,
            ops,
            ack: None,
        }
    }

    pub(super) fn ops(&self) -> impl Iterator<Item = &Op> {
        self.put.iter().chain(&self.ops)
    }
}

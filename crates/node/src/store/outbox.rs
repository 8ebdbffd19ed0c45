//! Records the Redis store owes: queued by detached writes, or held after a write Redis did not
//! take. One entry per job (a newer record replaces one not written yet, so a job's writes keep
//! their order), written in the background by the store's writer; bounded by a [`Backlog`].

use std::{
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::sync::Notify;

use super::{Backlog, StoreError};
use crate::FastMap;

/// A record owed.
#[derive(Debug, Clone)]
pub(super) struct Owed {
    /// Order of the write: an entry is done only if no newer one replaced it meanwhile.
    pub seq: u64,
    /// The job's owner.
    pub owner: IpAddr,
    /// The job's JSON.
    pub value: Arc<str>,
    /// The job is finished.
    pub finished: bool,
}

#[derive(Default)]
struct State {
    owed: FastMap<String, Owed>,
    bytes: usize,
    seq: u64,
    closed: bool,
}

/// The records owed, and the signals of the writer that pays them.
pub(super) struct Outbox {
    state: Mutex<State>,
    backlog: Backlog,
    /// Redis refused the last write: finished jobs go straight here rather than try first.
    failing: AtomicBool,
    /// A record was added, or the store is closing.
    pub(super) added: Notify,
    /// Redis answered again: retry now rather than at the end of the backoff.
    pub(super) answered: Notify,
}

impl Outbox {
    pub(super) fn new(backlog: Backlog) -> Self {
        Self {
            state: Mutex::default(),
            backlog,
            failing: AtomicBool::new(false),
            added: Notify::new(),
            answered: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("outbox poisoned")
    }

    /// Owes `value` for job `id`, replacing an older record of it; refused past the bound.
    pub(super) fn hold(&self, id: &str, owner: IpAddr, value: String, finished: bool) -> Result<(), StoreError> {
        let mut state = self.state();
        let replaced = state.owed.get(id).map_or(0, |o| o.value.len());
        let jobs = state.owed.len() + usize::from(!state.owed.contains_key(id));
        let bytes = state.bytes - replaced + value.len();
        if !self.backlog.fits(jobs, bytes) {
            return Err(StoreError::Backlog {
                jobs: state.owed.len(),
                bytes: state.bytes,
            });
        }
        state.seq += 1;
        let owed = Owed {
            seq: state.seq,
            owner,
            value: value.into(),
            finished,
        };
        state.bytes = bytes;
        state.owed.insert(id.to_owned(), owed);
        drop(state);
        self.added.notify_one();
        Ok(())
    }

    /// Whether a record of job `id` is owed.
    pub(super) fn owes(&self, id: &str) -> bool {
        self.state().owed.contains_key(id)
    }

    /// The owed record of job `id`, if it is finished: newer than what Redis has.
    pub(super) fn finished(&self, id: &str) -> Option<Owed> {
        self.state().owed.get(id).filter(|o| o.finished).cloned()
    }

    /// Up to `max` owed records, to write.
    pub(super) fn batch(&self, max: usize) -> Vec<(String, Owed)> {
        let state = self.state();
        state
            .owed
            .iter()
            .take(max)
            .map(|(id, o)| (id.clone(), o.clone()))
            .collect()
    }

    /// Record `seq` of job `id` is written: done, unless a newer one replaced it.
    pub(super) fn written(&self, id: &str, seq: u64) {
        let mut state = self.state();
        if let Some(owed) = state.owed.get(id).filter(|o| o.seq == seq) {
            let len = owed.value.len();
            state.owed.remove(id);
            state.bytes -= len;
        }
    }

    /// Records owed.
    pub(super) fn len(&self) -> usize {
        self.state().owed.len()
    }

    pub(super) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    pub(super) fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }

    /// Redis took a write: if records are owed, the writer retries at once.
    pub(super) fn store_answered(&self) {
        if self.is_failing() {
            self.answered.notify_one();
        }
    }

    /// The store is closing: the writer pays what it can and stops.
    pub(super) fn close(&self) {
        self.state().closed = true;
        self.added.notify_one();
        self.answered.notify_one();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.state().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(max_jobs: usize, max_bytes: usize) -> Outbox {
        Outbox::new(Backlog {
            max_jobs,
            max_bytes,
            ..Backlog::default()
        })
    }

    #[test]
    fn a_newer_record_replaces_the_owed_one_and_an_older_write_does_not_clear_it() {
        let outbox = outbox(10, 1000);
        let owner = "127.0.0.1".parse().unwrap();
        outbox.hold("a", owner, "running".into(), false).unwrap();
        let (_, first) = outbox.batch(10).pop().unwrap();
        outbox.hold("a", owner, "done".into(), true).unwrap();
        assert_eq!(outbox.len(), 1);
        // The running record was written meanwhile: the finished one is still owed.
        outbox.written("a", first.seq);
        let (_, owed) = outbox.batch(10).pop().unwrap();
        assert_eq!((&*owed.value, owed.finished), ("done", true));
        outbox.written("a", owed.seq);
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn the_bound_holds_in_jobs_and_in_bytes_and_says_so() {
        let owner = "127.0.0.1".parse().unwrap();
        let outbox = outbox(2, 1000);
        outbox.hold("a", owner, "x".into(), true).unwrap();
        outbox.hold("b", owner, "x".into(), true).unwrap();
        // Replacing a held job's record takes no more room.
        outbox.hold("b", owner, "y".into(), true).unwrap();
        let err = outbox.hold("c", owner, "x".into(), true).unwrap_err();
        assert!(err.to_string().contains("holds 2 jobs"), "{err}");
        assert!(err.to_string().contains("store.max_held_writes"), "{err}");

        let outbox = self::outbox(10, 8);
        outbox.hold("a", owner, "12345".into(), true).unwrap();
        assert!(outbox.hold("b", owner, "12345".into(), true).is_err());
        outbox.hold("a", owner, "1234567".into(), true).unwrap();
    }
}

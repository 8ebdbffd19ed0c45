//! Opening the store: the log is replayed into the index; jobs that were running when the node
//! stopped are failed in a record of their own, expired ones are left out.

use std::{net::IpAddr, path::Path};

use crate::FastMap;

use super::{
    super::{Lifetimes, interrupted, unix_now},
    Index, JobKey, Meta, Record, RecordHead, encode_record, expiry,
    log::{self, Entry, Loc, Log, LogError},
};

/// A job as the replay leaves it.
struct Replayed {
    loc: Loc,
    owner: IpAddr,
    expires: u64,
    running: bool,
    /// Order of the job's latest record in the file.
    seq: u64,
}

/// Opens the log and rebuilds the index; running jobs become failures, expired ones go.
pub(super) fn recover(path: &Path, lifetimes: Lifetimes) -> Result<(Log, Index), LogError> {
    let mut jobs: FastMap<JobKey, Replayed> = FastMap::default();
    let mut seq = 0;
    let mut log = Log::open(path, |loc, entry| match entry {
        Entry::Put(json) => match serde_json::from_slice::<RecordHead>(json) {
            Ok(head) => {
                seq += 1;
                let replayed = Replayed {
                    loc,
                    owner: head.owner,
                    expires: head.expires,
                    running: !head.job.status.is_final(),
                    seq,
                };
                jobs.insert(JobKey::new(&head.id), replayed);
            }
            Err(e) => tracing::warn!(offset = loc.at, error = %e, "skipping an unreadable job record"),
        },
        Entry::Delete(id) => {
            jobs.remove(&JobKey::new(id));
        }
    })?;
    let now = unix_now();
    jobs.retain(|_, job| job.expires == 0 || job.expires > now);
    // Jobs that were running when the node stopped are failed, in a record of their own.
    let file = log.file();
    let mut interrupted_jobs = 0;
    for job in jobs.values_mut().filter(|job| job.running) {
        let mut record: Record = serde_json::from_slice(&log::read(&file, job.loc)?).map_err(LogError::Unreadable)?;
        record.job = interrupted(&record.job);
        record.expires = expiry(now, lifetimes.result);
        job.loc = log.put(|out| encode_record(out, record.owner, record.expires, &record.job))?;
        (job.expires, job.running) = (record.expires, false);
        interrupted_jobs += 1;
    }
    if interrupted_jobs > 0 {
        log.commit(true)?;
        tracing::warn!(
            jobs = interrupted_jobs,
            "jobs were running when the node stopped; marked as failed"
        );
    }
    let mut order: Vec<(JobKey, Replayed)> = jobs.into_iter().collect();
    order.sort_unstable_by_key(|(_, job)| job.seq);
    let mut index = Index::new(log.file());
    for (id, job) in order {
        index.insert(
            id,
            Meta {
                key: 0,
                owner: job.owner,
                running: false,
                expires: job.expires,
                at: job.loc.at,
                len: job.loc.len,
            },
        );
    }
    Ok((log, index))
}

//! Leases of jobs on linked nodes: at least once, with fencing.
//!
//! A job is leased to the node that accepted it. Before it accepted (its link closed first, or
//! it refused), the job goes to the next node at once, as for any node. Once it accepted, a
//! reachable node is asked for the result when the client asks; a linked node whose link closes
//! keeps the job for `link.lease` more: back in time, it goes on with it; not back, the job is
//! taken from it (a new attempt number) and runs on another node, from the input the router kept
//! for that purpose (only while the job runs on a linked node). A job's row is finished only for
//! its current attempt, and its result is read only from the node of that attempt: the first
//! node's late answer is never taken, and the client never sees two results. A job may thus run
//! twice (at least once); what the client is answered comes from one run. Streams are never run
//! again: a stream whose link breaks ends early for its client and is recorded failed.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{
    Gateway, JobAsk,
    jobs::{dispatch_along, fail},
    stated,
};
use crate::{
    choose,
    db::{
        DbError,
        jobs::{Job, JobStatus, Lease},
        now_ms,
    },
};

/// Lapsed jobs taken per sweep at most.
const SWEEP: i64 = 256;

/// Linked jobs asked about per round at most ([`Gateway::settle_linked`]).
const SETTLE: i64 = 64;

/// The error of a job whose router replica stopped before a node took it.
const ORPHANED: &str = "the router replica that was placing the job stopped before a node took it; submit it again";

/// The job as its client asked for it, as the gateway parses it again to run it elsewhere.
fn ask_json(ask: &JobAsk) -> Value {
    let mut v = json!({
        "containers": ask.containers,
        "data": ask.data,
        "requires_proof": ask.requires_proof,
        "requirements": ask.requirements,
        "max_seconds": ask.max_seconds,
    });
    if let Some(p) = ask.max_price {
        v["max_price"] = json!(p);
    }
    if let Some(d) = ask.deadline {
        v["deadline_s"] = json!(d.as_secs_f64());
    }
    if let Some(u) = &ask.callback_url {
        v["callback_url"] = json!(u);
    }
    v
}

impl Gateway {
    fn link_lease(&self) -> Lease<'_> {
        Lease {
            owner: &self.replica,
            now: now_ms(),
            duration: self.settings.link.lease,
        }
    }

    /// `job` (running on `node`) as its node says it stands: when it ended there, its row is
    /// finished, the node's record and the ledger take it; the finished row, or `None` when it
    /// still runs or its row had ended meanwhile.
    pub(super) async fn ended_on_node(
        self: &Arc<Self>,
        job: &Job,
        node: &str,
        status: JobStatus,
        receipt: Option<String>,
    ) -> Result<Option<Job>, DbError> {
        if job.status != JobStatus::Running || !status.is_final() {
            return Ok(None);
        }
        let error = (status == JobStatus::Failed).then_some("the node reports the job failed");
        let done = self
            .db
            .finish_job(&job.id, job.attempt, status, error, now_ms())
            .await?;
        if let Some(done) = &done {
            self.record(node, &job.containers, status == JobStatus::Succeeded, None);
            self.account_with(done, receipt.map(crate::ledger::receipt::Received::plain));
        }
        Ok(done)
    }

    /// Every quarter of `link.lease` until `shutdown`: [`Gateway::settle_linked`] (a task of its
    /// own: a node slow to answer holds up no lease).
    pub async fn settle_linked_jobs(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), DbError> {
        let every = (self.settings.link.lease / 4).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(every) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = self.settle_linked() => {}
            }
        }
    }

    /// Jobs on the nodes linked here that ran at least a lease and nobody read since: the ones
    /// that ended on their node are finished here, so that a link that closes for longer than
    /// its lease does not run again jobs that were done (at most [`SETTLE`] per round, a few
    /// asked at once).
    async fn settle_linked(self: &Arc<Self>) {
        let quiet = i64::try_from(self.settings.link.lease.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        // Quiet jobs of nodes linked to other replicas come too (theirs settle them, which makes
        // them less quiet): four times as many are read as are asked about.
        let jobs = match self.db.quiet_linked_jobs(now.saturating_sub(quiet), 4 * SETTLE).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for linked jobs to settle");
                return;
            }
        };
        let here: Vec<Job> = jobs
            .into_iter()
            .filter(|job| job.node.as_deref().is_some_and(|n| self.links.get(n).is_some()))
            .take(usize::try_from(SETTLE).unwrap_or(usize::MAX))
            .collect();
        futures::stream::iter(here)
            .for_each_concurrent(4, |job| async move {
                let (Some(node), Some(node_job)) = (job.node.clone(), job.node_job.clone()) else {
                    return;
                };
                let ended = match self.read_job(&node, &node_job, &job.client).await {
                    Ok((status, _, receipt)) => self.ended_on_node(&job, &node, status, receipt).await,
                    // The node says nothing now: the lease decides, as before.
                    Err(_) => Ok(None),
                };
                match ended {
                    Ok(Some(_)) => {}
                    // Still running (or unknown): asked again a lease from now.
                    Ok(None) => {
                        if let Err(e) = self.db.touch_job(&job.id, job.attempt, now_ms()).await {
                            tracing::warn!(job = %job.id, error = %e, "could not note a linked job asked about");
                        }
                    }
                    Err(e) => tracing::warn!(job = %job.id, error = %e, "could not settle a linked job"),
                }
            })
            .await;
    }

    /// Whether `node` is a linked node whose link no replica holds: its jobs' leases run out.
    pub(super) fn lapsing(&self, node: &str) -> bool {
        node.starts_with("npub1") && self.holders.find(node).is_none()
    }

    /// `job`, placed on `node`: when that is a linked node, keeps its input to run it elsewhere
    /// should the link close for good.
    pub(super) async fn keep_for_rerun(&self, job: &Job, node: &str, ask: &JobAsk) {
        if !node.starts_with("npub1") {
            return;
        }
        let body = ask_json(ask).to_string();
        if let Err(e) = self.db.keep_link_input(&job.id, &body, now_ms()).await {
            tracing::warn!(job = %job.id, error = %e, "could not keep a linked job's input; it will not run again elsewhere");
        }
    }

    /// `node`'s link closed: its running jobs stay with it for `link.lease`.
    pub async fn link_closed(&self, node: &str) {
        match self.db.lapse_node_jobs(node, &self.link_lease()).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(%node, jobs = n, lease = ?self.settings.link.lease, "link closed with jobs running; they wait for it")
            }
            Err(e) => tracing::warn!(%node, error = %e, "could not start the leases of a closed link's jobs"),
        }
    }

    /// Every quarter of `link.lease` until `shutdown`: jobs whose linked node did not come back
    /// within their lease run elsewhere; inputs of jobs that ended are dropped; jobs whose
    /// replica stopped before a node took them end as failed once their lease has run out.
    pub async fn sweep_leases(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), DbError> {
        let every = (self.settings.link.lease / 4).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(every) => {}
            }
            let jobs = match self.db.lapsed_linked_jobs(now_ms(), SWEEP).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for lapsed leases");
                    continue;
                }
            };
            for job in jobs {
                let Some(node) = job.node.clone() else { continue };
                if !self.lapsing(&node) {
                    // Its node is linked (again): the job stays with it.
                    if let Err(e) = self.db.renew_job_lease(&job.id, job.attempt, &self.lease()).await {
                        tracing::warn!(job = %job.id, error = %e, "could not renew a linked job's lease");
                    }
                    continue;
                }
                self.rerun(job, &node).await;
            }
            if let Err(e) = self.db.forget_link_inputs().await {
                tracing::warn!(error = %e, "could not drop the inputs of ended jobs");
            }
            let now = now_ms();
            let queued_before = now.saturating_sub(i64::try_from(self.settings.lease.as_millis()).unwrap_or(i64::MAX));
            match self.db.fail_orphaned_jobs(now, queued_before, ORPHANED).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    jobs = n,
                    "jobs whose router replica stopped before a node took them ended as failed"
                ),
                Err(e) => tracing::warn!(error = %e, "could not look for jobs no replica placed"),
            }
        }
    }

    /// Takes `job` from `old` (whose lease lapsed) and places it on another node.
    async fn rerun(self: &Arc<Self>, job: Job, old: &str) {
        let ask = match self.db.link_input(&job.id).await {
            Ok(Some(text)) => serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| JobAsk::parse(&v, "").ok()),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "could not read a lapsed job's input");
                return;
            }
        };
        let Some(ask) = ask else {
            fail(
                self,
                &job,
                &format!("the link of {old} closed after it accepted the job, and its input was not kept"),
            )
            .await;
            return;
        };
        let job = match self.db.retake_job(&job.id, job.attempt, &self.lease()).await {
            Ok(Some(job)) => job,
            // Ended, cancelled, or another replica took it.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "could not take a lapsed job");
                return;
            }
        };
        tracing::info!(job = %job.id, node = %old, attempt = job.attempt, "the node's lease lapsed; running the job elsewhere");
        let choice = self.choose(&ask, false);
        let order: Vec<usize> = choose::pick(&choice.candidates, &mut rand::rng())
            .into_iter()
            .filter(|&i| choice.candidates[i].node != old)
            .collect();
        let why = match order.is_empty() {
            true => Err(format!(
                "the link of {old} closed after it accepted the job, and no other node serves it"
            )),
            false => dispatch_along(
                self,
                &choice,
                &order,
                ask.node_body(),
                stated(&job.client),
                ask.deadline,
            )
            .await
            .map_err(|e| e.1),
        };
        match why {
            Ok((node, node_job)) => {
                match self
                    .db
                    .set_job_node(&job.id, job.attempt, &node, Some(&node_job), &self.lease())
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(job = %job.id, error = %e, "could not record a re-run job's node");
                        return;
                    }
                }
                self.keep_for_rerun(&job, &node, &ask).await;
                if job.callback_url.is_some() {
                    self.watch(Job {
                        node: Some(node),
                        node_job: Some(node_job),
                        ..job
                    });
                }
            }
            Err(why) => fail(self, &job, &why).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_ask_parses_back_to_the_same_job() {
        let v = json!({"containers": ["a", "b"], "data": {"n": [1, 2]}, "requires_proof": true,
                       "requirements": {"gpus": 1}, "max_price": 0.5, "max_seconds": 30.0,
                       "deadline_s": 2.5, "callback_url": "https://example.com/cb"});
        let ask = JobAsk::parse(&v, "").unwrap();
        let back = JobAsk::parse(&ask_json(&ask), "").unwrap();
        assert_eq!(format!("{back:?}"), format!("{ask:?}"));
    }
}

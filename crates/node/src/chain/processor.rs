//! Processor: the I/O around the scheduling core ([`super::schedule`]). Block by block it takes
//! what is due, reads the chain for it in one batch ([`super::precheck`]), starts the jobs the
//! core decides to run ([`super::job`]) and feeds their outcomes back.
//!
//! A block with nothing due costs nothing here, however many subscriptions are tracked.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::{eips::BlockId, primitives::Address};
use infernet_types::Subscription;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    blocks::{Head, Throttle},
    coordinator,
    job::{Job, JobContext, Report},
    precheck::{Contracts, pre_check},
    rpc::{Read, Rpc, decode},
    schedule::{After, Decision, JobSpec, Key, Outcome, Schedule, Tracking},
    status::ChainStatus,
    wallet::Wallet,
};
use crate::{orchestrator::Orchestrator, stats::metrics::Source};

pub use super::schedule::DelegatedParts;

enum Command {
    Onchain {
        id: u32,
        sub: Subscription,
        containers: Arc<[String]>,
    },
    Delegated {
        sub: Subscription,
        containers: Arc<[String]>,
        parts: Arc<DelegatedParts>,
        created_id: Option<u32>,
        reply: oneshot::Sender<()>,
    },
}

/// Sends subscriptions to the Processor.
#[derive(Debug, Clone)]
pub struct ProcessorHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl ProcessorHandle {
    /// Tracks an on-chain subscription the Listener accepted.
    pub fn track_onchain(&self, id: u32, sub: Subscription, containers: Arc<[String]>) {
        let _ = self.tx.send(Command::Onchain { id, sub, containers });
    }

    /// Tracks a delegated subscription whose signature was checked; `created_id` is its
    /// on-chain id when it exists there already. The same owner and nonce again changes nothing.
    /// `false` when the Processor has stopped.
    pub async fn track_delegated(
        &self,
        sub: Subscription,
        containers: Arc<[String]>,
        parts: DelegatedParts,
        created_id: Option<u32>,
    ) -> bool {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Delegated {
                sub,
                containers,
                parts: Arc::new(parts),
                created_id,
                reply,
            })
            .is_ok()
            && answer.await.is_ok()
    }
}

/// Collaborators of the Processor.
pub struct ProcessorParts {
    /// Endpoint.
    pub rpc: Rpc,
    /// `EIP712Coordinator`.
    pub coordinator: Address,
    /// `WalletFactory`.
    pub wallet_factory: Address,
    /// `Reader`.
    pub reader: Address,
    /// The node's payment wallet (`chain.wallet.payment_address`).
    pub payment_wallet: Option<Address>,
    /// Transaction sender.
    pub wallet: Wallet,
    /// Pipeline runner.
    pub orchestrator: Arc<Orchestrator>,
    /// Status for `/info`.
    pub status: Arc<ChainStatus>,
    /// Whether subscriptions are served now (the provider's hours).
    pub gate: ChainGate,
}

/// Whether chain subscriptions are served now: `false` outside the provider's hours when they
/// set `availability.chain_outside: false`. Subscriptions due meanwhile stay tracked and are
/// served once it opens, if their interval is still open.
pub type ChainGate = Arc<dyn Fn() -> bool + Send + Sync>;

type Reported = (Key, u32, Instant, Report);

/// The Processor task's state.
pub struct Processor {
    ctx: Arc<JobContext>,
    contracts: Contracts,
    status: Arc<ChainStatus>,
    schedule: Schedule,
    jobs: TaskTracker,
    reports: mpsc::UnboundedSender<Reported>,
    head: Option<Head>,
    /// When the current head was received.
    head_seen: Instant,
    check_warnings: Throttle,
    gate: ChainGate,
}

/// The Processor's receiving ends.
pub struct ProcessorInbox {
    commands: mpsc::UnboundedReceiver<Command>,
    reports: mpsc::UnboundedReceiver<Reported>,
}

/// Creates the Processor and its handle.
pub fn new(parts: ProcessorParts) -> (Processor, ProcessorHandle, ProcessorInbox) {
    let (tx, commands) = mpsc::unbounded_channel();
    let (reports, report_rx) = mpsc::unbounded_channel();
    let node = parts.wallet.address();
    let processor = Processor {
        ctx: Arc::new(JobContext {
            rpc: parts.rpc,
            node,
            wallet: parts.wallet,
            orchestrator: parts.orchestrator,
            coordinator: parts.coordinator,
            payment_wallet: parts.payment_wallet,
        }),
        contracts: Contracts {
            coordinator: parts.coordinator,
            reader: parts.reader,
            wallet_factory: parts.wallet_factory,
            node,
        },
        status: parts.status,
        schedule: Schedule::default(),
        jobs: TaskTracker::new(),
        reports,
        head: None,
        head_seen: Instant::now(),
        check_warnings: Throttle::new(Duration::from_secs(30)),
        gate: parts.gate,
    };
    let inbox = ProcessorInbox {
        commands,
        reports: report_rx,
    };
    (processor, ProcessorHandle { tx }, inbox)
}

impl Processor {
    /// Runs until shutdown.
    pub async fn run(
        mut self,
        mut inbox: ProcessorInbox,
        mut heads: watch::Receiver<Option<Head>>,
        shutdown: CancellationToken,
    ) {
        // Deliveries wait until transactions of an earlier run are settled (no double sends).
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = self.ctx.wallet.ready() => {}
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(command) = inbox.commands.recv() => self.command(command).await,
                Some((key, interval, started, report)) = inbox.reports.recv() => self.report(key, interval, started, report),
                changed = heads.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let head = *heads.borrow_and_update();
                    if let Some(head) = head {
                        self.head = Some(head);
                        self.head_seen = Instant::now();
                        // New subscriptions of this block first, so they are seen as due now.
                        while let Ok(command) = inbox.commands.try_recv() {
                            self.command(command).await;
                        }
                        self.on_block(head).await;
                    }
                }
            }
            // Something became due without a new block (a subscription tracked or moved on
            // within this block): serve it now rather than one block later.
            if let Some(head) = self.head
                && self.schedule.is_due(head.timestamp)
            {
                self.on_block(head).await;
            }
            self.publish();
        }
        self.jobs.close();
        self.jobs.wait().await;
    }

    /// Counts for `/info`; kept as counters so that publishing costs nothing per subscription.
    fn publish(&self) {
        let (onchain, delegated, running) = self.schedule.counts();
        self.status.set_tracked(onchain, delegated);
        self.status.set_running(running);
    }

    fn now(&self) -> u64 {
        self.head.map(|h| h.timestamp).unwrap_or(0)
    }

    async fn command(&mut self, command: Command) {
        let now = self.now();
        match command {
            Command::Onchain { id, sub, containers } => {
                match self.schedule.track_onchain(id, sub.clone(), containers.clone(), now) {
                    Tracking::Tracked => tracing::debug!(id, containers = ?containers, "tracked new subscription"),
                    Tracking::Unchanged => tracing::debug!(id, "already tracked"),
                    Tracking::LookUp(candidates) => {
                        let found = self.created_ids(&candidates).await;
                        if self.schedule.resolve(id, sub, containers, &found, now) == Tracking::Unchanged {
                            tracing::info!(id, "a delegated subscription was created on chain; tracked once");
                        }
                    }
                }
            }
            Command::Delegated {
                sub,
                containers,
                parts,
                created_id,
                reply,
            } => {
                let key = Key::Delegated(sub.owner, parts.signature.nonce);
                if self
                    .schedule
                    .track_delegated(sub, containers.clone(), parts, created_id, now)
                {
                    tracing::info!(%key, containers = ?containers, created = ?created_id, "tracked new delegated subscription");
                } else {
                    tracing::debug!(%key, "already tracked");
                }
                let _ = reply.send(());
            }
        }
    }

    /// `delegateCreatedIds` of each `(owner, nonce)`, `None` where the read failed.
    async fn created_ids(&self, candidates: &[(Address, u32)]) -> Vec<((Address, u32), Option<u32>)> {
        let reads: Vec<Read> = candidates
            .iter()
            .map(|(owner, nonce)| Read::Call {
                to: self.contracts.coordinator,
                data: coordinator::delegate_created_id(*owner, *nonce),
            })
            .collect();
        let answers = self.ctx.rpc.read_batch(&reads, BlockId::latest()).await;
        candidates
            .iter()
            .enumerate()
            .map(|(i, candidate)| {
                let id = match &answers {
                    Ok(a) => a.get(i).cloned().and_then(|a| {
                        decode::<infernet_contracts::bindings::EIP712Coordinator::delegateCreatedIdsCall>(a).ok()
                    }),
                    Err(_) => None,
                };
                (*candidate, id.filter(|id| *id != 0))
            })
            .collect()
    }

    fn report(&mut self, key: Key, k: u32, started: Instant, report: Report) {
        let source = match key {
            Key::Delegated(..) => Source::Delegated,
            Key::Onchain(_) => Source::Onchain,
        };
        let metrics = self.ctx.orchestrator.metrics().clone();
        let now = self.now();
        let outcome = match &report {
            Report::Delivered {
                created_id,
                reaction,
                containers,
            } => {
                self.status.delivered();
                self.status.observe_reaction(*reaction);
                metrics.job(source, true, started.elapsed());
                tracing::info!(%key, interval = k, took = ?started.elapsed(), reaction_ms = ms(*reaction),
                    containers_ms = ms(*containers), "delivered");
                Outcome::Delivered {
                    created_id: *created_id,
                }
            }
            Report::Settled(why) => {
                self.status.skipped();
                tracing::info!(%key, interval = k, reason = %why, "interval needs no delivery from this node");
                Outcome::Settled
            }
            Report::Over(why) => {
                self.status.skipped();
                tracing::info!(%key, reason = %why, "stopped tracking");
                Outcome::Over
            }
            Report::Failed(e) => {
                self.status.job_failed();
                metrics.job(source, false, started.elapsed());
                if e.is_retryable() {
                    Outcome::Failed
                } else {
                    Outcome::FailedForGood
                }
            }
        };
        let after = self.schedule.reported(key, k, outcome, now);
        if let Report::Failed(error) = report {
            match after {
                After::Retry { attempt, at } => {
                    tracing::warn!(%key, interval = k, attempt, %error, retry_at = at, "delivery failed; will retry")
                }
                _ => tracing::error!(%key, interval = k, %error, "giving up on this interval"),
            }
        }
        if matches!(after, After::Finished | After::GaveUpInterval(None)) {
            tracing::info!(%key, reason = "last interval done", "stopped tracking");
        }
    }

    async fn on_block(&mut self, head: Head) {
        let open = (self.gate)();
        if self.status.set_outside_hours(!open) {
            match open {
                true => tracing::info!("the provider's hours have begun: serving subscriptions again"),
                false => tracing::info!(
                    "outside the provider's hours (availability.chain_outside: false): subscriptions wait"
                ),
            }
        }
        if !open {
            return;
        }
        let now = head.timestamp;
        let (due, dropped) = self.schedule.take_due(now);
        for (key, why) in dropped {
            tracing::info!(%key, reason = why, "stopped tracking");
        }
        if due.is_empty() {
            return;
        }
        let checks = pre_check(&self.ctx.rpc, &self.contracts, &due, now).await;
        let mut unchecked: Option<(String, usize)> = None;
        for (d, check) in due.into_iter().zip(checks) {
            let check = match check {
                Ok(check) => check,
                Err(e) => {
                    // The endpoint failed: look again next block.
                    unchecked.get_or_insert_with(|| (e.to_string(), 0)).1 += 1;
                    self.schedule.check_failed(d.key, now);
                    continue;
                }
            };
            let key = d.key;
            match self.schedule.checked(key, d.interval, check, now) {
                Decision::Run(spec) => self.start_job(spec, head),
                Decision::Skipped(why) => {
                    self.status.skipped();
                    tracing::info!(%key, interval = d.interval, "{why}");
                }
                Decision::Dropped(why) => tracing::info!(%key, reason = why, "stopped tracking"),
                Decision::GaveUp(why) => {
                    let reason = format!("payment not possible: {why}");
                    tracing::warn!(%key, %reason, "gave up on the subscription");
                    self.status.gave_up(key.to_string(), reason);
                }
                Decision::Linked(id) => tracing::info!(%key, id, "delegated subscription exists on chain"),
                Decision::Gone => {}
            }
        }
        if let Some((error, subscriptions)) = unchecked
            && let Some(suppressed) = self.check_warnings.allow()
        {
            tracing::warn!(%error, subscriptions, suppressed, "cannot check due subscriptions; retrying next block");
        }
    }

    fn start_job(&mut self, spec: JobSpec, head: Head) {
        let (key, k) = (spec.key, spec.interval);
        let job = Job {
            ctx: self.ctx.clone(),
            seen: self.head_seen,
            spec,
        };
        let reports = self.reports.clone();
        let started = Instant::now();
        tracing::info!(%key, interval = k, block = head.number, "processing subscription");
        self.jobs.spawn(async move {
            let report = job.run().await;
            let _ = reports.send((key, k, started, report));
        });
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

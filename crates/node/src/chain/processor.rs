//! Processor: decides, block by block, which subscriptions are due, runs their pipelines and
//! delivers the results through the Wallet.
//!
//! Each tracked subscription is an explicit state machine:
//!
//! ```text
//!            track                 head.timestamp >= due          pre-check ok
//!   (new) ──────────► Scheduled(due) ─────────────────► checking ─────────────► Running
//!                        ▲   ▲                             │                      │
//!                        │   └── retry (bounded, backoff) ─┼──────────────────────┤ failed
//!                        │                                 │ served by others,    │
//!                        └── next interval ◄───────────────┘ already ours ◄───────┘ delivered
//!                                 │ last interval / cancelled / expired
//!                                 ▼
//!                              dropped
//! ```
//!
//! Only due subscriptions cost RPC calls: the schedule is ordered by due time, so a block with
//! nothing due costs nothing here, however many subscriptions are tracked. The checks of all
//! subscriptions due in a block go out as one JSON-RPC batch.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::{
    eips::BlockId,
    primitives::{Address, B256, Bytes, U256, keccak256},
    sol_types::{SolCall, SolValue},
};
use infernet_contracts::bindings::{
    BaseConsumer, EIP712Coordinator, Reader, TestToken, Wallet as PaymentWallet, WalletFactory,
};
use infernet_types::{ContainerResult, DelegateSignature, JobLocation, Subscription};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    blocks::{Head, Throttle},
    encoding::encode_output,
    rpc::{Read, Rpc, RpcError, decode},
    status::ChainStatus,
    wallet::{SimulationError, TxOutcome, TxRequest, Wallet},
};
use crate::{
    orchestrator::{JobInput, Orchestrator},
    stats::metrics::Source,
};

/// Failed attempts at one interval before the node gives it up.
pub const MAX_ATTEMPTS: u32 = 3;

/// Identity of a tracked subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// On-chain subscription id.
    Onchain(u32),
    /// Delegated subscription: owner and subscriber nonce.
    Delegated(Address, u32),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Onchain(id) => write!(f, "subscription {id}"),
            Self::Delegated(owner, nonce) => write!(f, "delegated subscription {owner}/{nonce}"),
        }
    }
}

/// The signed parts of a delegated subscription.
#[derive(Debug, Clone)]
pub struct DelegatedParts {
    /// The EIP-712 signature.
    pub signature: DelegateSignature,
    /// Input for the first container.
    pub data: Map<String, Value>,
}

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
    /// on-chain id when `createSubscriptionDelegatee` already ran. The same owner and nonce again
    /// changes nothing. `false` when the Processor has stopped.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a block at or after this timestamp.
    Scheduled(u64),
    /// Due in this block; its pre-check is under way.
    Checking,
    /// Its job runs.
    Running,
}

/// Where a tracked subscription comes from, and so how it is delivered.
#[derive(Debug, Clone)]
enum Origin {
    /// On-chain subscription `id`: inputs from the owner, `deliverCompute`.
    Onchain(u32),
    /// Delegated: the request's data as input, `deliverComputeDelegatee`; `created` is its
    /// on-chain id once the first delivery created it.
    Delegated {
        parts: Arc<DelegatedParts>,
        created: Option<u32>,
    },
}

impl Origin {
    /// The on-chain id, when it has one.
    fn chain_id(&self) -> Option<u32> {
        match self {
            Self::Onchain(id) => Some(*id),
            Self::Delegated { created, .. } => *created,
        }
    }

    fn is_delegated(&self) -> bool {
        matches!(self, Self::Delegated { .. })
    }
}

struct Tracked {
    sub: Subscription,
    containers: Arc<[String]>,
    origin: Origin,
    /// The interval being served or to serve next.
    interval: u32,
    attempts: u32,
    phase: Phase,
}

/// What a job reports back.
enum Report {
    Delivered {
        created_id: Option<u32>,
        /// From the block that made it due to the transaction's send, container calls excluded.
        reaction: Duration,
        /// Time in the containers.
        containers: Duration,
    },
    Settled(String),
    Over(String),
    Failed(String),
}

/// Everything a job needs (shared by all jobs).
struct JobContext {
    rpc: Rpc,
    wallet: Wallet,
    orchestrator: Arc<Orchestrator>,
    coordinator: Address,
    node: Address,
    payment_wallet: Option<Address>,
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
}

/// The Processor task's state.
pub struct Processor {
    ctx: Arc<JobContext>,
    wallet_factory: Address,
    reader: Address,
    status: Arc<ChainStatus>,
    tracked: HashMap<Key, Tracked>,
    schedule: BTreeSet<(u64, Key)>,
    /// On-chain ids of delegated subscriptions (the Listener sees them as ordinary ones).
    created: HashMap<u32, Key>,
    jobs: TaskTracker,
    reports: mpsc::UnboundedSender<(Key, u32, Instant, Report)>,
    head: Option<Head>,
    /// When the current head was received.
    head_seen: Instant,
    check_warnings: Throttle,
    /// Tracked delegated subscriptions.
    delegated_count: usize,
    /// Jobs running.
    running: usize,
}

/// Creates the Processor and its handle.
pub fn new(parts: ProcessorParts) -> (Processor, ProcessorHandle, ProcessorInbox) {
    let (tx, commands) = mpsc::unbounded_channel();
    let (reports, report_rx) = mpsc::unbounded_channel();
    let processor = Processor {
        ctx: Arc::new(JobContext {
            rpc: parts.rpc,
            node: parts.wallet.address(),
            wallet: parts.wallet,
            orchestrator: parts.orchestrator,
            coordinator: parts.coordinator,
            payment_wallet: parts.payment_wallet,
        }),
        wallet_factory: parts.wallet_factory,
        reader: parts.reader,
        status: parts.status,
        tracked: HashMap::new(),
        schedule: BTreeSet::new(),
        created: HashMap::new(),
        jobs: TaskTracker::new(),
        reports,
        head: None,
        head_seen: Instant::now(),
        check_warnings: Throttle::new(Duration::from_secs(30)),
        delegated_count: 0,
        running: 0,
    };
    (
        processor,
        ProcessorHandle { tx },
        ProcessorInbox {
            commands,
            reports: report_rx,
        },
    )
}

/// The Processor's receiving ends.
pub struct ProcessorInbox {
    commands: mpsc::UnboundedReceiver<Command>,
    reports: mpsc::UnboundedReceiver<(Key, u32, Instant, Report)>,
}

/// `keccak256(abi.encode(uint32 id, uint32 interval, address node))`: the `nodeResponded` key.
pub fn responded_key(id: u32, interval: u32, node: Address) -> B256 {
    keccak256((id, interval, node).abi_encode())
}

/// What the batched pre-check found for one due subscription.
#[derive(Debug, Default)]
struct Check {
    cancelled: bool,
    served: bool,
    responded: bool,
    /// Why the subscription's wallet cannot pay, when it cannot.
    unpayable: Option<String>,
    /// The consumer's `getContainerInputs` (on-chain subscriptions).
    inputs: Option<Bytes>,
}

/// Where a candidate's answers are in the pre-check batch.
struct Slots {
    inputs: Option<usize>,
    /// Valid wallet, the owner's allowance, the wallet's balance.
    payment: Option<[usize; 3]>,
}

/// Why `sub`'s wallet cannot pay one delivery, if it cannot.
fn unpayable(sub: &Subscription, valid_wallet: bool, allowance: U256, balance: U256) -> Option<String> {
    let (wallet, amount) = (sub.wallet, sub.payment_amount);
    if !valid_wallet {
        Some(format!(
            "subscription wallet {wallet} was not created by the WalletFactory"
        ))
    } else if allowance < amount {
        Some(format!(
            "the owner's allowance in wallet {wallet} is {allowance}, below the payment {amount}"
        ))
    } else if balance < amount {
        Some(format!("wallet {wallet} holds {balance}, below the payment {amount}"))
    } else {
        None
    }
}

/// An error for answers that do not line up with what was asked.
fn short_answer() -> RpcError {
    RpcError::Decode {
        method: "Reader".into(),
        message: "fewer answers than subscriptions asked for".into(),
    }
}

impl Processor {
    /// Runs until shutdown.
    pub async fn run(
        mut self,
        mut inbox: ProcessorInbox,
        mut heads: watch::Receiver<Option<Head>>,
        shutdown: CancellationToken,
    ) -> Result<(), String> {
        // Deliveries wait until transactions of an earlier run are settled (no double sends).
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = self.ctx.wallet.ready() => {}
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(command) = inbox.commands.recv() => self.command(command),
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
                            self.command(command);
                        }
                        self.on_block(head).await;
                    }
                }
            }
            // Something became due without a new block (a subscription tracked or moved on
            // within this block): serve it now rather than one block later.
            if let Some(head) = self.head
                && self.schedule.first().is_some_and(|(due, _)| *due <= head.timestamp)
            {
                self.on_block(head).await;
            }
            self.publish();
        }
        self.jobs.close();
        self.jobs.wait().await;
        Ok(())
    }

    /// Counts for `/info`; kept as counters so that publishing costs nothing per subscription.
    fn publish(&self) {
        self.status
            .set_tracked(self.tracked.len() - self.delegated_count, self.delegated_count);
        self.status.set_running(self.running);
    }

    fn now(&self) -> u64 {
        self.head.map(|h| h.timestamp).unwrap_or(0)
    }

    fn schedule(&mut self, key: Key, due: u64) {
        if let Some(t) = self.tracked.get_mut(&key) {
            if let Phase::Scheduled(old) = t.phase {
                self.schedule.remove(&(old, key));
            }
            t.phase = Phase::Scheduled(due);
            self.schedule.insert((due, key));
        }
    }

    fn drop_tracking(&mut self, key: Key, why: &str) {
        if let Some(t) = self.tracked.remove(&key) {
            if t.origin.is_delegated() {
                self.delegated_count -= 1;
            }
            if let Phase::Scheduled(due) = t.phase {
                self.schedule.remove(&(due, key));
            }
            if let Origin::Delegated { created: Some(id), .. } = t.origin {
                self.created.remove(&id);
            }
            tracing::info!(%key, reason = why, "stopped tracking");
        }
    }

    /// First due time of a new subscription.
    fn first_due(&self, sub: &Subscription) -> (u32, u64) {
        let now = self.now();
        if sub.is_active(now) {
            (sub.interval_at(now), now)
        } else {
            (1, u64::from(sub.active_at))
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Onchain { id, sub, containers } => {
                if self.created.contains_key(&id) {
                    tracing::debug!(id, "already tracked as a delegated subscription");
                    return;
                }
                let key = Key::Onchain(id);
                match self.tracked.get(&key).map(|t| t.phase) {
                    Some(Phase::Running | Phase::Checking) => return,
                    // Tracked again (fresh data): its old schedule entry goes.
                    Some(Phase::Scheduled(due)) => {
                        self.schedule.remove(&(due, key));
                    }
                    None => {}
                }
                let (interval, due) = self.first_due(&sub);
                tracing::debug!(id, containers = ?containers, interval, due, "tracked new subscription");
                self.tracked.insert(
                    key,
                    Tracked {
                        sub,
                        containers,
                        origin: Origin::Onchain(id),
                        interval,
                        attempts: 0,
                        phase: Phase::Scheduled(due),
                    },
                );
                self.schedule.insert((due, key));
            }
            Command::Delegated {
                sub,
                containers,
                parts,
                created_id,
                reply,
            } => {
                let key = Key::Delegated(sub.owner, parts.signature.nonce);
                if self.tracked.contains_key(&key) {
                    tracing::debug!(%key, "already tracked");
                    let _ = reply.send(());
                    return;
                }
                let (interval, due) = self.first_due(&sub);
                tracing::info!(%key, containers = ?containers, interval, due, created = ?created_id, "tracked new delegated subscription");
                self.delegated_count += 1;
                self.tracked.insert(
                    key,
                    Tracked {
                        sub,
                        containers,
                        origin: Origin::Delegated { parts, created: None },
                        interval,
                        attempts: 0,
                        phase: Phase::Scheduled(due),
                    },
                );
                self.schedule.insert((due, key));
                if let Some(id) = created_id {
                    self.link(key, id);
                }
                let _ = reply.send(());
            }
        }
    }

    /// A delegated subscription got its on-chain id: it is served under its delegated key only.
    fn link(&mut self, key: Key, id: u32) {
        if let Some(Tracked {
            origin: Origin::Delegated { created, .. },
            ..
        }) = self.tracked.get_mut(&key)
        {
            *created = Some(id);
        }
        self.created.insert(id, key);
        let onchain = Key::Onchain(id);
        if self.tracked.get(&onchain).is_some_and(|t| t.phase != Phase::Running) {
            self.drop_tracking(onchain, "served as a delegated subscription");
        }
    }

    /// Moves past interval `k`: to the next one, or stops when it was the last.
    fn advance(&mut self, key: Key, k: u32) {
        let Some(t) = self.tracked.get_mut(&key) else { return };
        if t.sub.is_last(k) {
            self.drop_tracking(key, "last interval done");
            return;
        }
        t.interval = k + 1;
        t.attempts = 0;
        let due = t.sub.interval_start(k + 1);
        self.schedule(key, due);
    }

    fn report(&mut self, key: Key, k: u32, started: Instant, report: Report) {
        let Some(t) = self.tracked.get_mut(&key) else { return };
        // No longer running; every branch below schedules it again or drops it.
        if t.phase == Phase::Running {
            self.running -= 1;
        }
        let source = if t.origin.is_delegated() {
            Source::Delegated
        } else {
            Source::Onchain
        };
        let linked = t.origin.chain_id().is_some();
        let metrics = self.ctx.orchestrator.metrics().clone();
        match report {
            Report::Delivered {
                created_id,
                reaction,
                containers,
            } => {
                self.status.delivered();
                self.status.observe_reaction(reaction);
                metrics.job(source, true, started.elapsed());
                tracing::info!(
                    %key,
                    interval = k,
                    took = ?started.elapsed(),
                    reaction_ms = ms(reaction),
                    containers_ms = ms(containers),
                    "delivered"
                );
                if let (Key::Delegated(..), Some(id), false) = (key, created_id, linked) {
                    self.link(key, id);
                }
                self.advance(key, k);
            }
            Report::Settled(why) => {
                self.status.skipped();
                tracing::info!(%key, interval = k, reason = %why, "interval needs no delivery from this node");
                self.advance(key, k);
            }
            Report::Over(why) => {
                self.status.skipped();
                self.drop_tracking(key, &why);
            }
            Report::Failed(why) => {
                self.status.job_failed();
                metrics.job(source, false, started.elapsed());
                t.attempts += 1;
                let attempts = t.attempts;
                if attempts >= MAX_ATTEMPTS {
                    tracing::error!(%key, interval = k, attempts, error = %why, "giving up on this interval");
                    self.advance(key, k);
                } else {
                    // Back off by block time: 2, 4, … seconds, within the interval.
                    let due = self.now() + (1u64 << attempts);
                    tracing::warn!(%key, interval = k, attempt = attempts, error = %why, retry_at = due, "delivery failed; will retry");
                    self.schedule(key, due);
                }
            }
        }
    }

    async fn on_block(&mut self, head: Head) {
        let now = head.timestamp;
        let due: Vec<Key> = self
            .schedule
            .range(..=(now, Key::Delegated(Address::repeat_byte(0xff), u32::MAX)))
            .map(|(_, k)| *k)
            .collect();
        if due.is_empty() {
            return;
        }
        enum Due {
            Wait(u64),
            Drop(&'static str),
            Run(u32),
        }
        let mut candidates = Vec::with_capacity(due.len());
        for key in due {
            let Some(t) = self.tracked.get(&key) else { continue };
            if let Phase::Scheduled(at) = t.phase {
                self.schedule.remove(&(at, key));
            }
            let decision = if t.sub.is_cancelled() {
                Due::Drop("Subscription cancelled")
            } else if !t.sub.is_active(now) {
                Due::Wait(u64::from(t.sub.active_at))
            } else {
                let k = t.sub.interval_at(now);
                if t.sub.period > 0 && k > t.sub.frequency {
                    Due::Drop("Subscription expired")
                } else if k < t.interval {
                    Due::Wait(t.sub.interval_start(t.interval))
                } else {
                    Due::Run(k)
                }
            };
            match decision {
                Due::Drop(why) => self.drop_tracking(key, why),
                Due::Wait(at) => self.schedule(key, at),
                Due::Run(k) => {
                    if let Some(t) = self.tracked.get_mut(&key) {
                        if k > t.interval {
                            // Intervals passed while the node was busy or down: only the current one counts.
                            t.interval = k;
                            t.attempts = 0;
                        }
                        t.phase = Phase::Checking;
                        candidates.push((key, k));
                    }
                }
            }
        }
        let checks = self.pre_check(&candidates, now).await;
        let mut unchecked: Option<(String, usize)> = None;
        for ((key, k), check) in candidates.into_iter().zip(checks) {
            match check {
                Err(e) => {
                    // The endpoint failed: look again next block.
                    unchecked.get_or_insert_with(|| (e.to_string(), 0)).1 += 1;
                    self.schedule(key, now + 1);
                }
                Ok(c) if c.cancelled => self.drop_tracking(key, "Subscription cancelled"),
                Ok(c) if c.responded => {
                    self.status.skipped();
                    tracing::info!(%key, interval = k, "node has already responded for this interval");
                    self.advance(key, k);
                }
                Ok(c) if c.served => {
                    self.status.skipped();
                    tracing::info!(%key, interval = k, "interval already served by enough nodes");
                    self.advance(key, k);
                }
                Ok(Check {
                    unpayable: Some(why), ..
                }) => {
                    self.report(
                        key,
                        k,
                        Instant::now(),
                        Report::Failed(format!("payment not possible: {why}")),
                    );
                }
                Ok(c) => self.start_job(key, k, head, c.inputs),
            }
        }
        if let Some((error, subscriptions)) = unchecked
            && let Some(suppressed) = self.check_warnings.allow()
        {
            tracing::warn!(%error, subscriptions, suppressed, "cannot check due subscriptions; retrying next block");
        }
    }

    /// Cancellation, redundancy, payment and the consumer's inputs for every candidate, in one
    /// JSON-RPC batch: the `Reader` reads the subscriptions (one call per run of consecutive ids)
    /// and all response counts (one call). Only where others have responded already does a second
    /// round ask whether this node was one of them (after a restart it may have been).
    async fn pre_check(&self, candidates: &[(Key, u32)], now: u64) -> Vec<Result<Check, RpcError>> {
        let call = |to: Address, data: Vec<u8>| Read::Call { to, data: data.into() };
        let mut reads = Vec::new();
        let mut push = |read: Read| {
            reads.push(read);
            reads.len() - 1
        };
        let mut ids: Vec<(u32, u32)> = candidates
            .iter()
            .filter_map(|(key, k)| self.tracked[key].origin.chain_id().map(|id| (id, *k)))
            .collect();
        ids.sort_unstable();
        ids.dedup_by_key(|(id, _)| *id);
        // (first id, end id, answer slot) of each run of consecutive ids.
        let mut runs: Vec<(u32, u32, usize)> = Vec::new();
        for (id, _) in &ids {
            match runs.last_mut() {
                Some((_, end, _)) if *end == *id => *end += 1,
                _ => runs.push((*id, *id + 1, 0)),
            }
        }
        for run in &mut runs {
            let batch = Reader::readSubscriptionBatchCall {
                startId: run.0,
                endId: run.1,
            };
            run.2 = push(call(self.reader, batch.abi_encode()));
        }
        let counts_slot = (!ids.is_empty()).then(|| {
            let counts = Reader::readRedundancyCountBatchCall {
                ids: ids.iter().map(|(id, _)| *id).collect(),
                intervals: ids.iter().map(|(_, k)| *k).collect(),
            };
            push(call(self.reader, counts.abi_encode()))
        });
        let slots: Vec<Slots> = candidates
            .iter()
            .map(|(key, k)| {
                let t = &self.tracked[key];
                let inputs = match t.origin {
                    Origin::Onchain(id) => {
                        let inputs = BaseConsumer::getContainerInputsCall {
                            subscriptionId: id,
                            interval: *k,
                            timestamp: u32::try_from(now).unwrap_or(u32::MAX),
                            caller: self.ctx.node,
                        };
                        Some(push(call(t.sub.owner, inputs.abi_encode())))
                    }
                    Origin::Delegated { .. } => None,
                };
                let s = &t.sub;
                let payment = s.is_paid().then(|| {
                    let allowance = PaymentWallet::allowanceCall {
                        spender: s.owner,
                        token: s.payment_token,
                    };
                    let balance = if s.payment_token == Address::ZERO {
                        Read::Balance(s.wallet)
                    } else {
                        call(s.payment_token, TestToken::balanceOfCall(s.wallet).abi_encode())
                    };
                    [
                        push(call(
                            self.wallet_factory,
                            WalletFactory::isValidWalletCall(s.wallet).abi_encode(),
                        )),
                        push(call(s.wallet, allowance.abi_encode())),
                        push(balance),
                    ]
                });
                Slots { inputs, payment }
            })
            .collect();
        let answers = match self.ctx.rpc.read_batch(&reads, BlockId::latest()).await {
            Ok(a) => a,
            Err(e) => return candidates.iter().map(|_| Err(e.clone())).collect(),
        };
        let answer = |i: usize| answers.get(i).cloned().unwrap_or_else(|| Err(short_answer()));

        // On-chain state by id: the subscription and the responses so far.
        let counts = counts_slot
            .map(|i| decode::<Reader::readRedundancyCountBatchCall>(answer(i)))
            .unwrap_or(Ok(Vec::new()));
        let mut onchain: HashMap<u32, Result<(Subscription, u16), RpcError>> = HashMap::new();
        let mut position = 0;
        for (start, end, slot) in &runs {
            let subs = decode::<Reader::readSubscriptionBatchCall>(answer(*slot));
            for (i, id) in (*start..*end).enumerate() {
                let entry = match (&subs, &counts) {
                    (Ok(subs), Ok(counts)) => match (subs.get(i), counts.get(position)) {
                        (Some(s), Some(count)) => Ok((Subscription::from(s.clone()), *count)),
                        _ => Err(short_answer()),
                    },
                    (Err(e), _) | (_, Err(e)) => Err(e.clone()),
                };
                onchain.insert(id, entry);
                position += 1;
            }
        }

        let mut ask_responded = Vec::new();
        let mut out: Vec<Result<Check, RpcError>> = candidates
            .iter()
            .zip(&slots)
            .enumerate()
            .map(|(n, ((key, k), slots))| {
                let t = &self.tracked[key];
                let mut check = Check::default();
                if let Some(id) = t.origin.chain_id() {
                    let (s, count) = onchain.get(&id).cloned().unwrap_or_else(|| Err(short_answer()))?;
                    check.cancelled = s.is_empty() || s.is_cancelled();
                    check.served = count >= t.sub.redundancy;
                    if count > 0 && !check.served {
                        ask_responded.push((n, id, *k));
                    }
                }
                if let Some(i) = slots.inputs {
                    check.inputs = Some(match answer(i) {
                        Ok(raw) => decode::<BaseConsumer::getContainerInputsCall>(Ok(raw)).unwrap_or_default(),
                        // A consumer without inputs (or one that reverts) gets empty input, as
                        // Ritual's node does; a failing endpoint is retried.
                        Err(e) if !e.is_retryable() => Bytes::new(),
                        Err(e) => return Err(e),
                    });
                }
                if let Some([valid, allowance, balance]) = slots.payment {
                    check.unpayable = unpayable(
                        &t.sub,
                        decode::<WalletFactory::isValidWalletCall>(answer(valid))?,
                        decode::<PaymentWallet::allowanceCall>(answer(allowance)).unwrap_or(U256::ZERO),
                        decode::<TestToken::balanceOfCall>(answer(balance))?,
                    );
                }
                Ok(check)
            })
            .collect();

        if !ask_responded.is_empty() {
            let reads: Vec<Read> = ask_responded
                .iter()
                .map(|(_, id, k)| {
                    let responded = EIP712Coordinator::nodeRespondedCall(responded_key(*id, *k, self.ctx.node));
                    call(self.ctx.coordinator, responded.abi_encode())
                })
                .collect();
            let answers = self.ctx.rpc.read_batch(&reads, BlockId::latest()).await;
            for (i, (n, _, _)) in ask_responded.iter().enumerate() {
                let responded = match &answers {
                    Ok(a) => decode::<EIP712Coordinator::nodeRespondedCall>(
                        a.get(i).cloned().unwrap_or_else(|| Err(short_answer())),
                    ),
                    Err(e) => Err(e.clone()),
                };
                match (responded, &mut out[*n]) {
                    (Ok(r), Ok(check)) => check.responded = r,
                    (Err(e), slot) => *slot = Err(e),
                    (Ok(_), Err(_)) => {}
                }
            }
        }
        out
    }

    fn start_job(&mut self, key: Key, k: u32, head: Head, inputs: Option<Bytes>) {
        let Some(t) = self.tracked.get_mut(&key) else { return };
        t.phase = Phase::Running;
        self.running += 1;
        let job = Job {
            ctx: self.ctx.clone(),
            seen: self.head_seen,
            inputs,
            key,
            interval: k,
            sub: t.sub.clone(),
            containers: t.containers.clone(),
            origin: t.origin.clone(),
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

/// One delivery attempt.
struct Job {
    ctx: Arc<JobContext>,
    /// When the block that made it due was received.
    seen: Instant,
    /// The consumer's container inputs, read with the pre-check (on-chain subscriptions).
    inputs: Option<Bytes>,
    key: Key,
    interval: u32,
    sub: Subscription,
    containers: Arc<[String]>,
    origin: Origin,
}

impl Job {
    async fn run(self) -> Report {
        let (source, data) = match &self.origin {
            Origin::Delegated { parts, .. } => (JobLocation::Offchain, Value::Object(parts.data.clone())),
            Origin::Onchain(_) => (
                JobLocation::Onchain,
                Value::String(alloy::primitives::hex::encode(self.inputs.clone().unwrap_or_default())),
            ),
        };
        let input = JobInput {
            source,
            destination: JobLocation::Onchain,
            data,
        };
        let called = Instant::now();
        let (results, raw) = self
            .ctx
            .orchestrator
            .run_pipeline(&self.containers, input, self.sub.requires_proof())
            .await;
        let containers = called.elapsed();
        let output = match results.last() {
            None => return Report::Failed("container results empty".into()),
            Some(ContainerResult::Error { container, error }) => {
                return Report::Failed(format!("container {container} failed: {error}"));
            }
            Some(ContainerResult::Output { output, .. }) => output,
        };
        if let Some(code) = output.get("code")
            && code != "200"
            && code != 200
        {
            return Report::Failed(format!("container execution errored with code {code}"));
        }
        let encoded = match encode_output(output, &raw) {
            Ok(e) => e,
            Err(e) => return Report::Failed(format!("output cannot be delivered: {e}")),
        };
        if self.sub.requires_proof()
            && let Err(e) = self.escrow().await
        {
            return Report::Failed(e);
        }
        let node_wallet = self.ctx.payment_wallet.unwrap_or(Address::ZERO);
        let (data, label) = match &self.origin {
            Origin::Delegated { parts, .. } => {
                let sig = parts.signature;
                let call = EIP712Coordinator::deliverComputeDelegateeCall {
                    nonce: sig.nonce,
                    expiry: sig.expiry,
                    sub: (&self.sub).into(),
                    v: sig.v,
                    r: B256::from(sig.r),
                    s: B256::from(sig.s),
                    deliveryInterval: self.interval,
                    input: encoded.input,
                    output: encoded.output,
                    proof: encoded.proof,
                    nodeWallet: node_wallet,
                };
                (
                    call.abi_encode(),
                    format!("deliverComputeDelegatee {} interval {}", self.key, self.interval),
                )
            }
            Origin::Onchain(id) => {
                let call = EIP712Coordinator::deliverComputeCall {
                    subscriptionId: *id,
                    deliveryInterval: self.interval,
                    input: encoded.input,
                    output: encoded.output,
                    proof: encoded.proof,
                    nodeWallet: node_wallet,
                };
                (
                    call.abi_encode(),
                    format!("deliverCompute {} interval {}", self.key, self.interval),
                )
            }
        };
        let request = TxRequest {
            to: self.ctx.coordinator,
            data: data.into(),
            label,
        };
        let simulating = Instant::now();
        let simulated = match self.ctx.wallet.simulate(request).await {
            Ok(s) => {
                tracing::debug!(
                    key = %self.key,
                    checks_ms = ms(called.saturating_duration_since(self.seen)),
                    containers_ms = ms(containers),
                    simulation_ms = ms(simulating.elapsed()),
                    "ready to send"
                );
                s
            }
            Err(SimulationError::Infernet(e)) if e.subscription_is_over() => return Report::Over(e.to_string()),
            Err(SimulationError::Infernet(e)) if e.interval_is_settled() => return Report::Settled(e.to_string()),
            Err(e) => return Report::Failed(format!("simulation: {e}")),
        };
        match self.ctx.wallet.send(simulated).await {
            TxOutcome::Mined {
                success: true,
                receipt,
                sent_at,
                ..
            } => Report::Delivered {
                created_id: receipt
                    .decoded_log::<EIP712Coordinator::SubscriptionCreated>()
                    .map(|log| log.data.id),
                reaction: sent_at.saturating_duration_since(self.seen).saturating_sub(containers),
                containers,
            },
            TxOutcome::Mined { hash, .. } => Report::Failed(format!("transaction {hash} reverted")),
            TxOutcome::Failed(why) => Report::Failed(why),
        }
    }

    /// A proof-verified delivery locks `payment_amount` of the node's own wallet as stake: the
    /// node wallet must allow the node's address that much (Ritual's escrow step), sent through
    /// the Wallet like any other transaction.
    async fn escrow(&self) -> Result<(), String> {
        let Some(wallet) = self.ctx.payment_wallet else {
            return Err("a proof subscription needs chain.wallet.payment_address".into());
        };
        let allowance = self
            .ctx
            .rpc
            .call(
                wallet,
                &PaymentWallet::allowanceCall {
                    spender: self.ctx.node,
                    token: self.sub.payment_token,
                },
                BlockId::latest(),
            )
            .await
            .map_err(|e| format!("reading the escrow allowance: {e}"))?;
        if allowance >= self.sub.payment_amount {
            return Ok(());
        }
        tracing::info!(key = %self.key, amount = %self.sub.payment_amount, "escrowing reward in wallet");
        let call = PaymentWallet::approveCall {
            spender: self.ctx.node,
            token: self.sub.payment_token,
            amount: self.sub.payment_amount,
        };
        let request = TxRequest {
            to: wallet,
            data: call.abi_encode().into(),
            label: format!("Wallet.approve escrow for {}", self.key),
        };
        let simulated = self
            .ctx
            .wallet
            .simulate(request)
            .await
            .map_err(|e| format!("escrow approval: {e}"))?;
        match self.ctx.wallet.send(simulated).await {
            TxOutcome::Mined { success: true, .. } => Ok(()),
            TxOutcome::Mined { hash, .. } => Err(format!("escrow approval {hash} reverted")),
            TxOutcome::Failed(why) => Err(format!("escrow approval: {why}")),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use alloy::primitives::address;

    use super::*;

    #[test]
    fn the_responded_key_is_abi_encoded() {
        // keccak256(abi.encode(uint32 2, uint32 3, address node)), as the Coordinator computes it.
        let node = address!("70997970C51812dc3A010C7d01b50e0d17dc79C8");
        let mut encoded = vec![0u8; 96];
        encoded[31] = 2;
        encoded[63] = 3;
        encoded[76..96].copy_from_slice(node.as_slice());
        assert_eq!(responded_key(2, 3, node), keccak256(&encoded));
    }
}

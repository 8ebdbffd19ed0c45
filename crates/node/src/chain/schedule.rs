//! The Processor's scheduling core: which tracked subscriptions are due, and what to do next with
//! each. Pure: plain data in, decisions out; no I/O, no clock (time is the head's timestamp, passed
//! in). The Processor around it reads the chain, runs jobs and sends transactions.
//!
//! Each tracked subscription is an explicit state machine:
//!
//! ```text
//!            track                 head.timestamp >= due          pre-check ok
//!   (new) ──────────► Scheduled(due) ─────────────────► Checking ─────────────► Running
//!                        ▲   ▲                             │                      │
//!                        │   └── retry (bounded, backoff) ─┼──────────────────────┤ failed
//!                        │                                 │ served by others,    │
//!                        └── next interval ◄───────────────┘ already ours ◄───────┘ delivered
//!                                 │ last interval / cancelled / expired / cannot be paid
//!                                 ▼
//!                              dropped
//! ```
//!
//! Only due subscriptions cost anything: the queue is ordered by due time, so a block with nothing
//! due costs nothing here, however many subscriptions are tracked.
//!
//! What it serves is Ritual's (node reference §7.8); these differences are deliberate:
//! - each interval is served at most once and missed intervals are skipped, not caught up;
//! - failed attempts are bounded ([`MAX_ATTEMPTS`] per interval, backing off in block time), for
//!   delegated subscriptions too (Ritual's re-ran a failing delegated callback forever, SE-41);
//! - a delegated subscription stays one tracked subscription once it exists on chain, whoever
//!   created it; from its second interval it is delivered with `deliverCompute` on the created id
//!   and the consumer's `getContainerInputs`, as Ritual's node does through its on-chain path;
//! - a subscription whose wallet cannot pay is given up at once, with the reason (Ritual's stops
//!   tracking it too, SE-33), instead of failing attempt after attempt.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use alloy::primitives::{Address, Bytes};
use infernet_types::{DelegateSignature, Subscription};
use serde_json::{Map, Value};

pub use super::payment::{Unpayable, unpayable};

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

/// How one interval is delivered.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// `deliverCompute` on this subscription id; the input is the consumer's `getContainerInputs`.
    Compute(u32),
    /// `deliverComputeDelegatee` with the signed request; the input is the request's data.
    Delegatee(Arc<DelegatedParts>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a block at or after this timestamp.
    Scheduled(u64),
    /// Due; its pre-check is under way.
    Checking,
    /// Its job runs.
    Running,
}

/// Where a tracked subscription comes from.
#[derive(Debug, Clone)]
enum Origin {
    Onchain(u32),
    /// `created` is its on-chain id once known.
    Delegated {
        parts: Arc<DelegatedParts>,
        created: Option<u32>,
    },
}

#[derive(Debug)]
struct Tracked {
    sub: Subscription,
    containers: Arc<[String]>,
    origin: Origin,
    /// The interval being served or to serve next.
    interval: u32,
    attempts: u32,
    phase: Phase,
}

impl Tracked {
    fn chain_id(&self) -> Option<u32> {
        match self.origin {
            Origin::Onchain(id) => Some(id),
            Origin::Delegated { created, .. } => created,
        }
    }

    fn delivery(&self, k: u32) -> Delivery {
        match &self.origin {
            Origin::Onchain(id) => Delivery::Compute(*id),
            Origin::Delegated { created: Some(id), .. } if k >= 2 => Delivery::Compute(*id),
            Origin::Delegated { parts, .. } => Delivery::Delegatee(parts.clone()),
        }
    }
}

/// A due subscription and what its pre-check must read.
#[derive(Debug, Clone)]
pub struct Due {
    /// Which one.
    pub key: Key,
    /// The interval to serve.
    pub interval: u32,
    /// Its terms (owner, payment).
    pub sub: Subscription,
    /// On-chain id whose state is read (cancellation, responses so far).
    pub chain_id: Option<u32>,
    /// Subscription whose consumer's `getContainerInputs` is the job's input.
    pub inputs_of: Option<u32>,
    /// Owner and nonce to look up in `delegateCreatedIds` (not yet known on chain).
    pub find_created: Option<(Address, u32)>,
}

/// What the pre-check found for one due subscription.
#[derive(Debug, Default, Clone)]
pub struct Check {
    /// Cancelled, or gone.
    pub cancelled: bool,
    /// Enough nodes responded for the interval.
    pub served: bool,
    /// This node responded for the interval already.
    pub responded: bool,
    /// Why its wallet cannot pay one delivery, when it cannot.
    pub unpayable: Option<Unpayable>,
    /// Its on-chain id, found in `delegateCreatedIds`.
    pub created: Option<u32>,
    /// The consumer's `getContainerInputs`.
    pub inputs: Option<Bytes>,
}

/// A job to start.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Which subscription.
    pub key: Key,
    /// The interval served.
    pub interval: u32,
    /// Its terms.
    pub sub: Subscription,
    /// The pipeline.
    pub containers: Arc<[String]>,
    /// How the result is delivered.
    pub delivery: Delivery,
    /// The consumer's inputs, for [`Delivery::Compute`].
    pub inputs: Option<Bytes>,
}

/// What to do with a checked subscription.
#[derive(Debug)]
pub enum Decision {
    /// Run its job and deliver.
    Run(JobSpec),
    /// Nothing to send for this interval (why); it moved on.
    Skipped(&'static str),
    /// No longer tracked (why).
    Dropped(&'static str),
    /// Given up: its wallet cannot pay (why); no longer tracked.
    GaveUp(Unpayable),
    /// Its on-chain id was found: it is checked again under that id.
    Linked(u32),
    /// Not tracked any more.
    Gone,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered; `created_id` when the delivery created the subscription on chain.
    Delivered {
        /// From the transaction's `SubscriptionCreated` log.
        created_id: Option<u32>,
    },
    /// Nothing to send: the interval is settled (served by others or by us).
    Settled,
    /// The subscription cannot be served any more.
    Over,
    /// The attempt failed; another may succeed.
    Failed,
    /// The attempt failed in a way another would repeat: the interval is given up at once.
    FailedForGood,
}

/// What follows a job's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Moved on to the next interval, due at this time.
    Next(u64),
    /// It was the last interval: no longer tracked.
    Finished,
    /// No longer tracked (the subscription is over).
    Dropped,
    /// Tried again at this time (attempt number `attempt` failed).
    Retry {
        /// Failed attempts so far at this interval.
        attempt: u32,
        /// When it is due again.
        at: u64,
    },
    /// [`MAX_ATTEMPTS`] failed: the interval is given up (then as [`After::Next`] or
    /// [`After::Finished`]).
    GaveUpInterval(Option<u64>),
    /// Not tracked any more.
    Gone,
}

/// What tracking an on-chain subscription did.
#[derive(Debug, PartialEq, Eq)]
pub enum Tracking {
    /// Now tracked (again, with fresh data).
    Tracked,
    /// Already tracked as a delegated subscription (or running): nothing changed.
    Unchanged,
    /// Delegated subscriptions not yet known on chain have the same terms: it may be one of
    /// them. Look each up in `delegateCreatedIds`, then call [`Schedule::resolve`].
    LookUp(Vec<(Address, u32)>),
}

/// Every tracked subscription and the queue of due times.
#[derive(Debug, Default)]
pub struct Schedule {
    tracked: HashMap<Key, Tracked>,
    queue: BTreeSet<(u64, Key)>,
    /// On-chain ids of delegated subscriptions.
    created: HashMap<u32, Key>,
    delegated: usize,
    running: usize,
}

impl Schedule {
    /// Tracked on-chain subscriptions, tracked delegated ones, jobs running.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.tracked.len() - self.delegated, self.delegated, self.running)
    }

    /// Whether something is due at `now`.
    pub fn is_due(&self, now: u64) -> bool {
        self.queue.first().is_some_and(|(due, _)| *due <= now)
    }

    fn enqueue(&mut self, key: Key, due: u64) {
        if let Some(t) = self.tracked.get_mut(&key) {
            if let Phase::Scheduled(old) = t.phase {
                self.queue.remove(&(old, key));
            }
            t.phase = Phase::Scheduled(due);
            self.queue.insert((due, key));
        }
    }

    fn insert(&mut self, key: Key, sub: Subscription, containers: Arc<[String]>, origin: Origin, now: u64) {
        // A cancelled one is due at once, to be dropped.
        let (interval, due) = if sub.is_active(now) || sub.is_cancelled() {
            (sub.interval_at(now), now)
        } else {
            (1, u64::from(sub.active_at))
        };
        if matches!(origin, Origin::Delegated { .. }) {
            self.delegated += 1;
        }
        let tracked = Tracked {
            sub,
            containers,
            origin,
            interval,
            attempts: 0,
            phase: Phase::Scheduled(due),
        };
        self.tracked.insert(key, tracked);
        self.queue.insert((due, key));
    }

    /// Stops tracking `key`; `false` when it was not tracked.
    pub fn drop_tracking(&mut self, key: Key) -> bool {
        let Some(t) = self.tracked.remove(&key) else {
            return false;
        };
        match t.phase {
            Phase::Scheduled(due) => {
                self.queue.remove(&(due, key));
            }
            Phase::Running => self.running -= 1,
            Phase::Checking => {}
        }
        if let Origin::Delegated { created, .. } = t.origin {
            self.delegated -= 1;
            if let Some(id) = created {
                self.created.remove(&id);
            }
        }
        true
    }

    /// Tracks on-chain subscription `id` that the Listener accepted at `now`.
    pub fn track_onchain(&mut self, id: u32, sub: Subscription, containers: Arc<[String]>, now: u64) -> Tracking {
        if self.created.contains_key(&id) {
            return Tracking::Unchanged;
        }
        let candidates: Vec<(Address, u32)> = self
            .tracked
            .iter()
            .filter_map(|(key, t)| match (key, &t.origin) {
                (Key::Delegated(owner, nonce), Origin::Delegated { created: None, .. }) if t.sub == sub => {
                    Some((*owner, *nonce))
                }
                _ => None,
            })
            .collect();
        if !candidates.is_empty() {
            return Tracking::LookUp(candidates);
        }
        self.replace_onchain(id, sub, containers, now)
    }

    fn replace_onchain(&mut self, id: u32, sub: Subscription, containers: Arc<[String]>, now: u64) -> Tracking {
        let key = Key::Onchain(id);
        match self.tracked.get(&key).map(|t| t.phase) {
            Some(Phase::Running | Phase::Checking) => return Tracking::Unchanged,
            Some(Phase::Scheduled(_)) => {
                self.drop_tracking(key);
            }
            None => {}
        }
        self.insert(key, sub, containers, Origin::Onchain(id), now);
        Tracking::Tracked
    }

    /// After [`Tracking::LookUp`]: `found` is what `delegateCreatedIds` holds for each candidate
    /// (`None` when the lookup failed). A delegated subscription created as `id` takes it over;
    /// otherwise `id` is tracked on its own (a failed lookup is caught by the delegated one's
    /// own pre-check, which looks its id up too).
    pub fn resolve(
        &mut self,
        id: u32,
        sub: Subscription,
        containers: Arc<[String]>,
        found: &[((Address, u32), Option<u32>)],
        now: u64,
    ) -> Tracking {
        match found.iter().find(|(_, created)| *created == Some(id)) {
            Some(((owner, nonce), _)) => {
                self.link(Key::Delegated(*owner, *nonce), id);
                Tracking::Unchanged
            }
            None => self.replace_onchain(id, sub, containers, now),
        }
    }

    /// Tracks a delegated subscription whose signature was checked; `created` is its on-chain id
    /// when it exists already. `false` when it was tracked already (nothing changes).
    pub fn track_delegated(
        &mut self,
        sub: Subscription,
        containers: Arc<[String]>,
        parts: Arc<DelegatedParts>,
        created: Option<u32>,
        now: u64,
    ) -> bool {
        let key = Key::Delegated(sub.owner, parts.signature.nonce);
        if self.tracked.contains_key(&key) {
            return false;
        }
        let origin = Origin::Delegated { parts, created: None };
        self.insert(key, sub, containers, origin, now);
        if let Some(id) = created {
            self.link(key, id);
        }
        true
    }

    /// Delegated `key` exists on chain as `id`: it is served under its delegated key only, and a
    /// separate tracking of `id` (one not running) stops.
    fn link(&mut self, key: Key, id: u32) {
        let Some(Tracked {
            origin: Origin::Delegated { created, .. },
            ..
        }) = self.tracked.get_mut(&key)
        else {
            return;
        };
        *created = Some(id);
        self.created.insert(id, key);
        let onchain = Key::Onchain(id);
        if self.tracked.get(&onchain).is_some_and(|t| t.phase != Phase::Running) {
            self.drop_tracking(onchain);
        }
    }

    /// Takes every subscription due at `now` out of the queue. Those to serve now are returned
    /// (in `Checking`, awaiting [`Schedule::checked`]); the others wait for their next time or are
    /// dropped (returned with why).
    pub fn take_due(&mut self, now: u64) -> (Vec<Due>, Vec<(Key, &'static str)>) {
        let last = (now, Key::Delegated(Address::repeat_byte(0xff), u32::MAX));
        let keys: Vec<Key> = self.queue.range(..=last).map(|(_, k)| *k).collect();
        let (mut due, mut dropped) = (Vec::new(), Vec::new());
        for key in keys {
            let Some(t) = self.tracked.get_mut(&key) else { continue };
            if let Phase::Scheduled(at) = t.phase {
                self.queue.remove(&(at, key));
            }
            let sub = &t.sub;
            if sub.is_cancelled() {
                self.drop_tracking(key);
                dropped.push((key, "Subscription cancelled"));
            } else if !sub.is_active(now) {
                let at = u64::from(sub.active_at);
                self.enqueue(key, at);
            } else if sub.period > 0 && sub.interval_at(now) > sub.frequency {
                self.drop_tracking(key);
                dropped.push((key, "Subscription expired"));
            } else if sub.interval_at(now) < t.interval {
                let at = sub.interval_start(t.interval);
                self.enqueue(key, at);
            } else {
                let k = sub.interval_at(now);
                if k > t.interval {
                    // Intervals passed while the node was busy or down: only the current one counts.
                    t.interval = k;
                    t.attempts = 0;
                }
                t.phase = Phase::Checking;
                let inputs_of = match t.delivery(k) {
                    Delivery::Compute(id) => Some(id),
                    Delivery::Delegatee(_) => None,
                };
                let find_created = match (&t.origin, key) {
                    (Origin::Delegated { created: None, .. }, Key::Delegated(owner, nonce)) => Some((owner, nonce)),
                    _ => None,
                };
                due.push(Due {
                    key,
                    interval: k,
                    sub: t.sub.clone(),
                    chain_id: t.chain_id(),
                    inputs_of,
                    find_created,
                });
            }
        }
        (due, dropped)
    }

    /// The pre-check of a due subscription could not be read: it is looked at again next block.
    pub fn check_failed(&mut self, key: Key, now: u64) {
        self.enqueue(key, now + 1);
    }

    /// What to do with due `key` (interval `k`) after its pre-check found `check` at `now`.
    pub fn checked(&mut self, key: Key, k: u32, check: Check, now: u64) -> Decision {
        let Some(t) = self.tracked.get_mut(&key) else {
            return Decision::Gone;
        };
        if check.cancelled {
            self.drop_tracking(key);
            return Decision::Dropped("Subscription cancelled");
        }
        if let (Origin::Delegated { created: None, .. }, Some(id)) = (&t.origin, check.created) {
            // Created on chain by someone else: its state is read under that id first.
            self.link(key, id);
            self.enqueue(key, now);
            return Decision::Linked(id);
        }
        if check.responded {
            self.advance(key, k);
            return Decision::Skipped("node has already responded for this interval");
        }
        if check.served {
            self.advance(key, k);
            return Decision::Skipped("interval already served by enough nodes");
        }
        if let Some(why) = check.unpayable {
            self.drop_tracking(key);
            return Decision::GaveUp(why);
        }
        t.phase = Phase::Running;
        self.running += 1;
        Decision::Run(JobSpec {
            key,
            interval: k,
            sub: t.sub.clone(),
            containers: t.containers.clone(),
            delivery: t.delivery(k),
            inputs: check.inputs,
        })
    }

    /// Moves past interval `k`: to the next one (due then), or `None` when it was the last.
    fn advance(&mut self, key: Key, k: u32) -> Option<u64> {
        let t = self.tracked.get_mut(&key)?;
        if t.sub.is_last(k) {
            self.drop_tracking(key);
            return None;
        }
        t.interval = k + 1;
        t.attempts = 0;
        let due = t.sub.interval_start(k + 1);
        self.enqueue(key, due);
        Some(due)
    }

    /// What follows `outcome` of the job of `key` at interval `k`, reported at `now`.
    pub fn reported(&mut self, key: Key, k: u32, outcome: Outcome, now: u64) -> After {
        let Some(t) = self.tracked.get_mut(&key) else {
            return After::Gone;
        };
        if t.phase == Phase::Running {
            t.phase = Phase::Checking;
            self.running -= 1;
        }
        let next = |next: Option<u64>| next.map_or(After::Finished, After::Next);
        match outcome {
            Outcome::Delivered { created_id } => {
                if let (Origin::Delegated { created: None, .. }, Some(id)) = (&t.origin, created_id) {
                    self.link(key, id);
                }
                next(self.advance(key, k))
            }
            Outcome::Settled => next(self.advance(key, k)),
            Outcome::Over => {
                self.drop_tracking(key);
                After::Dropped
            }
            Outcome::FailedForGood => After::GaveUpInterval(self.advance(key, k)),
            Outcome::Failed => {
                t.attempts += 1;
                let attempt = t.attempts;
                if attempt >= MAX_ATTEMPTS {
                    return After::GaveUpInterval(self.advance(key, k));
                }
                // Back off by block time: 2, 4, … seconds, within the interval.
                let at = now + (1u64 << attempt);
                self.enqueue(key, at);
                After::Retry { attempt, at }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{B256, U256, address};

    use super::*;

    const OWNER: Address = address!("00000000000000000000000000000000000000aa");

    fn sub(active_at: u32, period: u32, frequency: u32) -> Subscription {
        Subscription {
            owner: OWNER,
            active_at,
            period,
            frequency,
            redundancy: 1,
            container_id: B256::repeat_byte(1),
            lazy: false,
            verifier: Address::ZERO,
            payment_amount: U256::ZERO,
            payment_token: Address::ZERO,
            wallet: Address::ZERO,
        }
    }

    fn containers() -> Arc<[String]> {
        Arc::from(vec!["hello-world".to_string()])
    }

    fn parts(nonce: u32) -> Arc<DelegatedParts> {
        Arc::new(DelegatedParts {
            signature: DelegateSignature {
                nonce,
                expiry: u32::MAX,
                v: 27,
                r: U256::from(1),
                s: U256::from(2),
            },
            data: Map::new(),
        })
    }

    fn onchain(s: &mut Schedule, id: u32, sub: Subscription, now: u64) {
        assert_eq!(s.track_onchain(id, sub, containers(), now), Tracking::Tracked);
    }

    /// Takes what is due at `now`, checks it with `check`, and returns the decisions.
    fn serve(s: &mut Schedule, now: u64, check: Check) -> Vec<Decision> {
        let (due, _) = s.take_due(now);
        due.into_iter()
            .map(|d| s.checked(d.key, d.interval, check.clone(), now))
            .collect()
    }

    fn run(decision: &Decision) -> &JobSpec {
        match decision {
            Decision::Run(job) => job,
            other => panic!("expected a job, got {other:?}"),
        }
    }

    #[test]
    fn a_subscription_is_due_from_its_start_and_not_before() {
        let mut s = Schedule::default();
        onchain(&mut s, 1, sub(100, 10, 3), 50);
        assert!(!s.is_due(99));
        assert!(s.take_due(99).0.is_empty());
        assert!(s.is_due(100));
        let (due, dropped) = s.take_due(100);
        assert!(dropped.is_empty());
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].key, due[0].interval, due[0].chain_id),
            (Key::Onchain(1), 1, Some(1))
        );
        assert_eq!(due[0].inputs_of, Some(1), "on-chain inputs come from the consumer");
        assert_eq!(due[0].find_created, None);
        assert!(!s.is_due(1000), "a subscription being checked is not due again");
    }

    #[test]
    fn an_active_subscription_is_due_at_once_in_its_current_interval() {
        let mut s = Schedule::default();
        onchain(&mut s, 1, sub(100, 10, 5), 125);
        let (due, _) = s.take_due(125);
        assert_eq!(due[0].interval, 3);
    }

    #[test]
    fn a_recurring_subscription_moves_interval_by_interval_until_the_last() {
        let mut s = Schedule::default();
        onchain(&mut s, 1, sub(100, 10, 2), 100);
        let job = run(&serve(&mut s, 100, Check::default())[0]).clone();
        assert_eq!((job.interval, s.counts()), (1, (1, 0, 1)));
        assert!(matches!(job.delivery, Delivery::Compute(1)));
        let after = s.reported(job.key, 1, Outcome::Delivered { created_id: None }, 101);
        assert_eq!((after, s.counts()), (After::Next(110), (1, 0, 0)));
        assert!(s.take_due(109).0.is_empty(), "interval 2 starts at 110");
        let job = run(&serve(&mut s, 110, Check::default())[0]).clone();
        assert_eq!(job.interval, 2);
        assert_eq!(s.reported(job.key, 2, Outcome::Settled, 111), After::Finished);
        assert_eq!(s.counts(), (0, 0, 0));
    }

    #[test]
    fn intervals_missed_while_busy_are_skipped_and_early_ones_wait() {
        let mut s = Schedule::default();
        onchain(&mut s, 1, sub(100, 10, 9), 100);
        let job = run(&serve(&mut s, 100, Check::default())[0]).clone();
        s.reported(job.key, 1, Outcome::Failed, 101);
        // The retry comes due only in interval 4: that one is served, with fresh attempts.
        let job = run(&serve(&mut s, 135, Check::default())[0]).clone();
        assert_eq!(job.interval, 4);
        assert_eq!(
            s.reported(job.key, 4, Outcome::Failed, 136),
            After::Retry { attempt: 1, at: 138 }
        );
    }

    #[test]
    fn failures_are_retried_with_backoff_then_the_interval_is_given_up() {
        let mut s = Schedule::default();
        onchain(&mut s, 1, sub(100, 100, 3), 100);
        let key = Key::Onchain(1);
        run(&serve(&mut s, 100, Check::default())[0]);
        assert_eq!(
            s.reported(key, 1, Outcome::Failed, 100),
            After::Retry { attempt: 1, at: 102 }
        );
        assert!(s.take_due(101).0.is_empty());
        run(&serve(&mut s, 102, Check::default())[0]);
        assert_eq!(
            s.reported(key, 1, Outcome::Failed, 102),
            After::Retry { attempt: 2, at: 106 }
        );
        run(&serve(&mut s, 106, Check::default())[0]);
        assert_eq!(
            s.reported(key, 1, Outcome::Failed, 106),
            After::GaveUpInterval(Some(200))
        );
        // The next interval starts with no failures counted.
        run(&serve(&mut s, 200, Check::default())[0]);
        assert_eq!(
            s.reported(key, 2, Outcome::Failed, 200),
            After::Retry { attempt: 1, at: 202 }
        );
    }

    #[test]
    fn a_failure_for_good_gives_the_interval_up_at_once() {
        let mut s = Schedule::default();
        onchain(&mut s, 1, sub(100, 100, 3), 100);
        run(&serve(&mut s, 100, Check::default())[0]);
        let after = s.reported(Key::Onchain(1), 1, Outcome::FailedForGood, 100);
        assert_eq!(after, After::GaveUpInterval(Some(200)));
        assert!(s.take_due(199).0.is_empty());
    }

    #[test]
    fn a_failing_callback_is_dropped_after_its_attempts() {
        let mut s = Schedule::default();
        onchain(&mut s, 1, sub(0, 0, 1), 10);
        for (now, after) in [
            (10, After::Retry { attempt: 1, at: 12 }),
            (12, After::Retry { attempt: 2, at: 16 }),
            (16, After::GaveUpInterval(None)),
        ] {
            run(&serve(&mut s, now, Check::default())[0]);
            assert_eq!(s.reported(Key::Onchain(1), 1, Outcome::Failed, now), after);
        }
        assert_eq!(s.counts(), (0, 0, 0));
    }

    #[test]
    fn cancelled_and_expired_subscriptions_are_dropped_when_due() {
        let mut s = Schedule::default();
        let mut cancelled = sub(100, 10, 3);
        cancelled.active_at = infernet_types::CANCELLED;
        onchain(&mut s, 1, cancelled, 50);
        onchain(&mut s, 2, sub(100, 10, 3), 50);
        let (due, dropped) = s.take_due(50);
        assert!(due.is_empty());
        assert_eq!(dropped, vec![(Key::Onchain(1), "Subscription cancelled")]);
        let (due, _) = s.take_due(100);
        s.check_failed(due[0].key, 100);
        // Id 2's check failed, and it is looked at again only once it has expired.
        let (due, dropped) = s.take_due(131);
        assert!(due.is_empty());
        assert_eq!(dropped, vec![(Key::Onchain(2), "Subscription expired")]);
        assert_eq!(s.counts(), (0, 0, 0));
    }

    #[test]
    fn a_failed_check_is_retried_next_block() {
        let mut s = Schedule::default();
        onchain(&mut s, 1, sub(0, 0, 1), 10);
        s.take_due(10);
        s.check_failed(Key::Onchain(1), 10);
        assert!(!s.is_due(10));
        assert_eq!(s.take_due(11).0.len(), 1);
    }

    #[test]
    fn the_pre_check_decides_what_is_sent() {
        type Expected = fn(&Decision) -> bool;
        let cases: [(Check, Expected, (usize, usize, usize)); 5] = [
            (
                Check {
                    cancelled: true,
                    ..Check::default()
                },
                |d| matches!(d, Decision::Dropped("Subscription cancelled")),
                (0, 0, 0),
            ),
            (
                Check {
                    responded: true,
                    ..Check::default()
                },
                |d| matches!(d, Decision::Skipped("node has already responded for this interval")),
                (1, 0, 0),
            ),
            (
                Check {
                    served: true,
                    ..Check::default()
                },
                |d| matches!(d, Decision::Skipped("interval already served by enough nodes")),
                (1, 0, 0),
            ),
            (
                Check {
                    unpayable: Some(Unpayable::InvalidWallet(OWNER)),
                    ..Check::default()
                },
                |d| matches!(d, Decision::GaveUp(Unpayable::InvalidWallet(_))),
                (0, 0, 0),
            ),
            (
                Check {
                    inputs: Some(Bytes::from_static(b"in")),
                    ..Check::default()
                },
                |d| matches!(d, Decision::Run(job) if job.inputs.as_ref().map(|b| &b[..]) == Some(&b"in"[..])),
                (1, 0, 1),
            ),
        ];
        for (check, expected, counts) in cases {
            let mut s = Schedule::default();
            onchain(&mut s, 1, sub(100, 10, 3), 100);
            let decisions = serve(&mut s, 100, check.clone());
            assert!(expected(&decisions[0]), "{check:?} gave {:?}", decisions[0]);
            assert_eq!(s.counts(), counts, "{check:?}");
        }
        // Skipped moves to the next interval; on the last one it drops the subscription.
        let mut s = Schedule::default();
        onchain(&mut s, 1, sub(100, 10, 2), 100);
        serve(
            &mut s,
            100,
            Check {
                served: true,
                ..Check::default()
            },
        );
        assert!(s.take_due(109).0.is_empty());
        serve(
            &mut s,
            110,
            Check {
                responded: true,
                ..Check::default()
            },
        );
        assert_eq!(s.counts(), (0, 0, 0));
    }

    #[test]
    fn a_subscription_over_is_dropped_and_unknown_keys_are_gone() {
        let mut s = Schedule::default();
        onchain(&mut s, 1, sub(100, 10, 3), 100);
        run(&serve(&mut s, 100, Check::default())[0]);
        assert_eq!(s.reported(Key::Onchain(1), 1, Outcome::Over, 100), After::Dropped);
        assert_eq!(s.counts(), (0, 0, 0));
        assert_eq!(s.reported(Key::Onchain(1), 1, Outcome::Settled, 100), After::Gone);
        assert!(matches!(
            s.checked(Key::Onchain(1), 1, Check::default(), 100),
            Decision::Gone
        ));
        assert!(!s.drop_tracking(Key::Onchain(1)));
    }

    #[test]
    fn redundancy_and_laziness_are_the_subscriptions_own() {
        let mut s = Schedule::default();
        let mut lazy = sub(100, 10, 3);
        lazy.lazy = true;
        lazy.redundancy = 3;
        onchain(&mut s, 1, lazy.clone(), 100);
        let job = run(&serve(&mut s, 100, Check::default())[0]).clone();
        assert_eq!(job.sub, lazy, "the job delivers the subscription's own terms");
    }

    #[test]
    fn tracking_an_onchain_subscription_again_refreshes_it_unless_it_is_busy() {
        let mut s = Schedule::default();
        onchain(&mut s, 1, sub(100, 10, 3), 50);
        onchain(&mut s, 1, sub(200, 10, 3), 50);
        assert_eq!(s.counts(), (1, 0, 0));
        assert!(s.take_due(150).0.is_empty(), "the old start time is gone");
        assert_eq!(s.take_due(200).0.len(), 1);
        assert_eq!(
            s.track_onchain(1, sub(300, 10, 3), containers(), 200),
            Tracking::Unchanged
        );
    }

    #[test]
    fn a_delegated_subscription_is_created_by_its_first_delivery_then_delivered_on_its_id() {
        let mut s = Schedule::default();
        let terms = sub(100, 10, 3);
        assert!(s.track_delegated(terms.clone(), containers(), parts(7), None, 100));
        assert!(
            !s.track_delegated(terms.clone(), containers(), parts(7), None, 100),
            "same owner and nonce"
        );
        assert_eq!(s.counts(), (0, 1, 0));
        let (due, _) = s.take_due(100);
        assert_eq!((due[0].chain_id, due[0].inputs_of), (None, None));
        assert_eq!(due[0].find_created, Some((OWNER, 7)));
        let job = run(&s.checked(due[0].key, 1, Check::default(), 100)).clone();
        assert!(matches!(&job.delivery, Delivery::Delegatee(p) if p.signature.nonce == 7));
        let key = Key::Delegated(OWNER, 7);
        assert_eq!(
            s.reported(key, 1, Outcome::Delivered { created_id: Some(5) }, 101),
            After::Next(110)
        );
        // The Listener sees id 5 as a new subscription: it is the delegated one.
        assert_eq!(s.track_onchain(5, terms, containers(), 102), Tracking::Unchanged);
        assert_eq!(s.counts(), (0, 1, 0));
        let (due, _) = s.take_due(110);
        assert_eq!(
            (due[0].chain_id, due[0].inputs_of, due[0].find_created),
            (Some(5), Some(5), None)
        );
        let job = run(&s.checked(key, 2, Check::default(), 110)).clone();
        assert!(matches!(job.delivery, Delivery::Compute(5)));
    }

    #[test]
    fn a_delegated_subscription_created_by_someone_else_is_tracked_once() {
        // Known on chain when it is submitted: an on-chain tracking of the id (not running) stops.
        let mut s = Schedule::default();
        let terms = sub(100, 10, 3);
        onchain(&mut s, 5, terms.clone(), 50);
        assert!(s.track_delegated(terms.clone(), containers(), parts(7), Some(5), 50));
        assert_eq!(s.counts(), (0, 1, 0));
        // But a running job of the id is not cut short.
        let mut s = Schedule::default();
        onchain(&mut s, 5, terms.clone(), 100);
        run(&serve(&mut s, 100, Check::default())[0]);
        s.track_delegated(terms.clone(), containers(), parts(7), Some(5), 100);
        assert_eq!(s.counts(), (1, 1, 1));

        // Created after it was submitted: the Listener's sighting is looked up and merged.
        let mut s = Schedule::default();
        s.track_delegated(terms.clone(), containers(), parts(7), None, 50);
        let lookup = s.track_onchain(5, terms.clone(), containers(), 60);
        assert_eq!(lookup, Tracking::LookUp(vec![(OWNER, 7)]));
        let merged = s.resolve(5, terms.clone(), containers(), &[((OWNER, 7), Some(5))], 60);
        assert_eq!((merged, s.counts()), (Tracking::Unchanged, (0, 1, 0)));
        let (due, _) = s.take_due(100);
        assert_eq!(due[0].chain_id, Some(5), "its state is read under the created id");
        assert!(matches!(
            run(&s.checked(due[0].key, 1, Check::default(), 100)).delivery,
            Delivery::Delegatee(_)
        ));

        // Same terms, but another subscription (or the lookup failed): tracked on its own.
        let mut s = Schedule::default();
        s.track_delegated(terms.clone(), containers(), parts(7), None, 50);
        s.track_onchain(6, terms.clone(), containers(), 60);
        let own = s.resolve(6, terms.clone(), containers(), &[((OWNER, 7), None)], 60);
        assert_eq!((own, s.counts()), (Tracking::Tracked, (1, 1, 0)));
        // Its pre-check then finds the delegated one's id: the two become one.
        let (due, _) = s.take_due(100);
        let delegated = due.iter().find(|d| matches!(d.key, Key::Delegated(..))).unwrap();
        let found = Check {
            created: Some(6),
            ..Check::default()
        };
        assert!(matches!(s.checked(delegated.key, 1, found, 100), Decision::Linked(6)));
        assert!(matches!(
            s.checked(Key::Onchain(6), 1, Check::default(), 100),
            Decision::Gone
        ));
        assert_eq!(s.counts(), (0, 1, 0));
        let (due, _) = s.take_due(100);
        assert_eq!(
            (due.len(), due[0].chain_id),
            (1, Some(6)),
            "checked again at once, under its id"
        );
    }

    #[test]
    fn a_delegated_subscription_known_on_chain_at_interval_two_is_delivered_on_its_id() {
        let mut s = Schedule::default();
        s.track_delegated(sub(100, 10, 3), containers(), parts(1), Some(9), 115);
        let (due, _) = s.take_due(115);
        assert_eq!((due[0].interval, due[0].inputs_of), (2, Some(9)));
    }
}

//! The node table: which nodes exist (static list and live registrations), what each last
//! reported, and whether it is handed out, with hysteresis so one failed probe does not eject a
//! node and one success does not bring a dead one back.
//!
//! Registering only puts a node on the probe list: it is handed out once a probe of its `/info`
//! succeeded, and a heartbeat never changes whether it is. Registrations are capped in total and
//! per source address (5,000 unchecked ones once made `/api/v1/resources` take 48 s). A node that
//! was failing when its registration lapsed is remembered for a while, so registering again does
//! not skip `return_after`.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{address::NodeAddr, choose::Filter, monitor::ProbeError, ranking};

/// How long a node that lapsed while failing is remembered.
const FORGET_FAILED_AFTER: Duration = Duration::from_secs(3600);

/// A container as a node's `/info` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSummary {
    /// Container id.
    pub id: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Accepts jobs from outside.
    #[serde(default = "yes")]
    pub external: bool,
}

fn yes() -> bool {
    true
}

/// Who a node is, from its signed heartbeat: its key and the operators its statement names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeIdentity {
    /// The node's key, `npub1…`.
    pub key: String,
    /// Operators (`npub1…`) the node's own statement names; a node is listed under an operator only
    /// when it says so itself.
    pub operators: Vec<String>,
    /// Whether the node's address was part of what it signed (`address` in its heartbeat). When
    /// it was not (the router took the caller's address), the heartbeat cannot move the key's
    /// registration from another address: replayed from elsewhere, it would.
    #[serde(skip)]
    pub address_signed: bool,
}

/// What a node last reported.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeReport {
    /// Running containers.
    pub containers: Vec<ContainerSummary>,
    /// Pending jobs (off-chain + on-chain): the node's load.
    pub pending: u64,
    /// What its provider offers: prices, hours, hardware.
    pub offer: Offer,
}

/// What a node's provider advertises in its `/info` (nodes that advertise nothing, Ritual's
/// among them, are free, always open, and of unknown hardware).
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// Price per container id.
    pub pricing: std::collections::BTreeMap<String, infernet_types::settings::Price>,
    /// Taking new jobs (its schedule, pause or drain allow).
    pub open: bool,
    /// When closed: when it opens again, as it said.
    pub available_at: Option<String>,
    /// Its host's resources, when it says.
    pub hardware: Option<infernet_types::Hardware>,
}

impl Default for Offer {
    fn default() -> Self {
        Self {
            pricing: Default::default(),
            open: true,
            available_at: None,
            hardware: None,
        }
    }
}

/// Hysteresis thresholds.
#[derive(Debug, Clone, Copy)]
pub struct Hysteresis {
    /// Consecutive failed probes before a node leaves.
    pub leave_after: u32,
    /// Consecutive good probes before a node that left comes back.
    pub return_after: u32,
}

/// Bounds on registrations (listed nodes do not count).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Registered nodes tracked at once.
    pub max_registrations: usize,
    /// Registered nodes tracked at once per source address.
    pub max_per_source: usize,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The table holds as many registered nodes as allowed.
    #[error(
        "this router already tracks {max} registered nodes (its --max-registrations); register with another router or retry later"
    )]
    Full {
        /// The limit.
        max: usize,
    },
    /// The node's key is registered at another address, and this heartbeat's address is not
    /// signed (a copy replayed from elsewhere would move it).
    #[error(
        "this node's key is registered at {at}; a heartbeat whose address is not signed cannot move it (advertise the address in the signed heartbeat, or wait for the registration to lapse)"
    )]
    Unbound {
        /// Where the key is registered.
        at: String,
    },
    /// This source address registered as many nodes as allowed.
    #[error("{from} already registered {max} nodes (the router's --max-registrations-per-source)")]
    SourceFull {
        /// The source address.
        from: IpAddr,
        /// The limit.
        max: usize,
    },
}

/// One node's state, as the debug view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// `host:port`.
    pub address: String,
    /// In the static list.
    pub listed: bool,
    /// Has a live registration.
    pub registered: bool,
    /// Handed out to clients.
    pub available: bool,
    /// Consecutive failed probes.
    pub failures: u32,
    /// Why the last probe failed.
    pub last_error: Option<String>,
    /// Running containers.
    pub containers: Vec<String>,
    /// Load.
    pub pending: u64,
    /// The node's key and operators, when its heartbeats are signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<NodeIdentity>,
}

struct NodeState {
    addr: NodeAddr,
    listed: bool,
    registered_until: Option<Instant>,
    /// Address the registration came from.
    source: Option<IpAddr>,
    available: bool,
    probed: bool,
    failures: u32,
    successes: u32,
    report: NodeReport,
    last_error: Option<String>,
    identity: Option<NodeIdentity>,
    /// Share of recent probes answered (a moving average, [`UPTIME_WEIGHT`] per probe).
    uptime: f64,
}

/// Weight of the newest probe in a node's uptime: it reflects about the last 20 probes.
pub const UPTIME_WEIGHT: f64 = 0.05;

/// An available node, as the ranking sees it.
#[derive(Debug, Clone)]
pub struct Available {
    /// `host:port`.
    pub key: String,
    /// Base URL.
    pub url: String,
    /// What it last reported.
    pub report: NodeReport,
    /// Share of its recent probes it answered (0 to 1).
    pub uptime: f64,
    /// Reached over its link (see [`crate::link`]): it has no address, `key` is its `npub1…`,
    /// and `/api/v1/ips` does not hand it out.
    pub linked: bool,
    /// How often the chooser left it out (the same counters from snapshot to snapshot).
    pub passed_over: Arc<PassedOver>,
}

/// How often the chooser left a node out since the counts were last taken, by filter (health,
/// hardware, price, hours; not serving the containers is no reason a provider can act on): the
/// node's public record adds them up. Counted without a lock or a lookup, as the chooser walks
/// every node for every job.
#[derive(Debug, Default)]
pub struct PassedOver([AtomicU64; 4]);

impl PassedOver {
    /// `jobs` more jobs left the node out by `filter`.
    pub fn count(&self, filter: Filter, jobs: u64) {
        let slot = match filter {
            Filter::Containers => return,
            Filter::Health => 0,
            Filter::Hardware => 1,
            Filter::Price => 2,
            Filter::Hours => 3,
        };
        self.0[slot].fetch_add(jobs, Ordering::Relaxed);
    }

    /// The counts by health, hardware, price and hours, reset to zero.
    fn take(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.0[i].swap(0, Ordering::Relaxed))
    }
}

/// The read side: swapped in whole after every change, read without locks held for long.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Available nodes, in address order.
    pub available: Vec<Available>,
    /// Nodes known (available or not).
    pub known: usize,
    /// Seed of the order among equal loads; kept from snapshot to snapshot for as long as what
    /// the order depends on ([`ranking::fingerprint`]) is unchanged.
    pub seed: u64,
    /// Candidates per requested container set, in order (see [`ranking`]); built on first use
    /// and dropped with the snapshot.
    pub orders: Mutex<HashMap<Vec<String>, Arc<Vec<usize>>>>,
    /// The terms of the nodes that serve each container set asked for (see
    /// [`crate::choose::Terms`]); built on first use and dropped with the snapshot.
    pub terms: Mutex<TermsCache>,
}

/// The nodes that serve one container set (their positions in `available`) and their terms for
/// it, in a price unit.
pub type TermsOf = Arc<Vec<(u32, crate::choose::Terms)>>;

/// Nodes' terms kept per snapshot at most, over every container set (about 32 bytes each): a
/// client naming many container sets cannot make a snapshot hold a copy of the fleet for each.
pub const MAX_TERMS: usize = 1_000_000;

/// Container sets whose terms a snapshot keeps at most: their keys are the clients' (container
/// names), and a set nobody serves costs one entry of [`MAX_TERMS`] only.
pub const MAX_TERM_SETS: usize = 1024;

/// A snapshot's [`TermsOf`] per container set and price unit, [`MAX_TERMS`] entries and
/// [`MAX_TERM_SETS`] sets at most.
#[derive(Debug, Default)]
pub struct TermsCache {
    /// By container set and unit.
    pub sets: HashMap<(Vec<String>, String), TermsOf>,
    /// Entries over all sets.
    pub entries: usize,
}

struct Table {
    nodes: BTreeMap<String, NodeState>,
    /// Nodes linked to this replica, by `npub1…`: what each announced, and its identity.
    linked: BTreeMap<String, (NodeReport, NodeIdentity)>,
    /// Nodes linked to other replicas on the same database, by `npub1…` (see
    /// [`crate::link::holders`]); a node linked here as well is taken from `linked`.
    peers: BTreeMap<String, (NodeReport, NodeIdentity)>,
    /// Registered nodes dropped while failing, with when they were dropped.
    failed: HashMap<String, Instant>,
    /// The chooser's counters of every node in a snapshot since they were last taken.
    passed_over: HashMap<String, Arc<PassedOver>>,
    /// The ranking fingerprint of the last snapshot and its seed.
    order: (u64, u64),
    /// When a heartbeat may next sweep lapsed registrations (at most once per [`PURGE_EVERY`]:
    /// a sweep walks the whole table, and heartbeats come from every node).
    next_purge: Option<Instant>,
    /// Sweeps made so far.
    purges: u64,
}

/// Least time between two sweeps of lapsed registrations made by heartbeats.
const PURGE_EVERY: Duration = Duration::from_secs(1);

/// The node table.
pub struct Registry {
    table: Mutex<Table>,
    snapshot: RwLock<Arc<Snapshot>>,
    hysteresis: Hysteresis,
    limits: Limits,
    joined: Notify,
}

impl Registry {
    /// A table with the static list.
    pub fn new(listed: Vec<NodeAddr>, hysteresis: Hysteresis, limits: Limits) -> Self {
        let nodes = listed
            .into_iter()
            .map(|addr| (addr.key(), NodeState::new(addr, true)))
            .collect();
        let registry = Self {
            table: Mutex::new(Table {
                nodes,
                linked: BTreeMap::new(),
                peers: BTreeMap::new(),
                failed: HashMap::new(),
                passed_over: HashMap::new(),
                order: (0, rand::random()),
                next_purge: None,
                purges: 0,
            }),
            snapshot: RwLock::default(),
            hysteresis,
            limits,
            joined: Notify::new(),
        };
        registry.publish(&mut registry.lock());
        registry
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().expect("node table poisoned")
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("snapshot poisoned").clone()
    }

    /// Publishes the table (under its lock, so snapshots are swapped in the table's order).
    fn publish(&self, table: &mut Table) {
        let Table {
            nodes,
            linked,
            peers,
            passed_over,
            ..
        } = &mut *table;
        let mut counters = |key: &String| passed_over.entry(key.clone()).or_default().clone();
        let mut available: Vec<Available> = nodes
            .iter()
            .filter(|(_, n)| n.available)
            .map(|(key, n)| Available {
                key: key.clone(),
                url: n.addr.base_url(),
                report: n.report.clone(),
                uptime: n.uptime,
                linked: false,
                passed_over: counters(key),
            })
            .collect();
        if !linked.is_empty() || !peers.is_empty() {
            let elsewhere = peers.iter().filter(|(key, _)| !linked.contains_key(*key));
            available.extend(linked.iter().chain(elsewhere).map(|(key, (report, _))| Available {
                key: key.clone(),
                url: format!("infernet://{key}"),
                report: report.clone(),
                uptime: 1.0,
                linked: true,
                passed_over: counters(key),
            }));
            // In key order, as readers binary-search it.
            available.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        }
        let fingerprint = ranking::fingerprint(&available);
        if fingerprint != table.order.0 {
            table.order = (fingerprint, rand::random());
        }
        let snapshot = Snapshot {
            available,
            known: table.nodes.len(),
            seed: table.order.1,
            orders: Mutex::default(),
            terms: Mutex::default(),
        };
        *self.snapshot.write().expect("snapshot poisoned") = Arc::new(snapshot);
    }

    /// The chooser's counts of how often each node was left out (by health, hardware, price and
    /// hours) since they were last taken, reset to zero. The counters of a node in no snapshot
    /// any more are dropped once taken.
    pub fn take_passed_over(&self) -> Vec<(String, [u64; 4])> {
        let mut table = self.lock();
        let mut taken = Vec::new();
        table.passed_over.retain(|node, counters| {
            let counts = counters.take();
            if counts.iter().any(|&c| c > 0) {
                taken.push((node.clone(), counts));
            }
            // Held by a snapshot: the current one, or one a decision still reads.
            Arc::strong_count(counters) > 1
        });
        taken
    }

    /// Nodes to probe now; expired registrations of unlisted nodes are dropped first.
    pub fn targets(&self, now: Instant) -> Vec<(String, String)> {
        let mut table = self.lock();
        table.purge(now, self.limits.max_registrations);
        table
            .nodes
            .iter()
            .map(|(k, n)| (k.clone(), n.addr.base_url()))
            .collect()
    }

    /// Nodes never probed yet (just registered).
    pub fn unprobed(&self) -> Vec<(String, String)> {
        let table = self.lock();
        table
            .nodes
            .iter()
            .filter(|(_, n)| !n.probed)
            .map(|(k, n)| (k.clone(), n.addr.base_url()))
            .collect()
    }

    /// Resolves when a node joined by registering since the last call.
    pub async fn joined(&self) {
        self.joined.notified().await
    }

    /// Applies probe results and publishes a new snapshot.
    pub fn apply(&self, results: Vec<(String, Result<NodeReport, ProbeError>)>) {
        let mut table = self.lock();
        for (key, result) in results {
            if let Some(node) = table.nodes.get_mut(&key) {
                node.record(result, self.hysteresis);
            }
        }
        self.publish(&mut table);
    }

    /// A node announced itself from `source`: it joins the probe list (or refreshes its entry)
    /// until `ttl` passes. Only a probe makes it available; its report refreshes the load of an
    /// available node. A signed node (`identity`) has one registration: registering from a new
    /// address replaces the old one.
    pub fn register(
        &self,
        addr: NodeAddr,
        report: NodeReport,
        ttl: Duration,
        source: IpAddr,
        now: Instant,
        identity: Option<NodeIdentity>,
    ) -> Result<(), RegistryError> {
        let mut table = self.lock();
        if table.next_purge.is_none_or(|at| now >= at) {
            table.purge(now, self.limits.max_registrations);
            table.next_purge = Some(now + PURGE_EVERY);
        }
        let key = addr.key();
        // A refresh of the key where it is registered: no other entry can hold the key (a move
        // removes them), so the table is not walked for one.
        let here = table
            .nodes
            .get(&key)
            .and_then(|n| n.identity.as_ref())
            .zip(identity.as_ref())
            .is_some_and(|(at, new)| at.key == new.key);
        if let Some(id) = identity.as_ref().filter(|_| !here) {
            let node_key = id.key.as_str();
            let moved = |k: &String, n: &NodeState| {
                *k != key && !n.listed && n.identity.as_ref().is_some_and(|i| i.key == node_key)
            };
            if !id.address_signed
                && let Some(at) = table.nodes.iter().find(|(k, n)| moved(k, n)).map(|(k, _)| k.clone())
            {
                return Err(RegistryError::Unbound { at });
            }
            let before = table.nodes.len();
            table.nodes.retain(|k, n| !moved(k, n));
            if table.nodes.len() != before {
                self.publish(&mut table);
            }
        }
        if let Some(node) = table.nodes.get_mut(&key) {
            node.registered_until = Some(now + ttl);
            if identity.is_some() {
                node.identity = identity;
            }
            // The offer (prices, hours, hardware) is what the last probe of `/info` read.
            let report = NodeReport {
                offer: node.report.offer.clone(),
                ..report
            };
            if node.available && node.report != report {
                node.report = report;
                self.publish(&mut table);
            }
            return Ok(());
        }
        let registered = table.nodes.values().filter(|n| !n.listed);
        if registered.clone().count() >= self.limits.max_registrations {
            return Err(RegistryError::Full {
                max: self.limits.max_registrations,
            });
        }
        if registered.filter(|n| n.source == Some(source)).count() >= self.limits.max_per_source {
            return Err(RegistryError::SourceFull {
                from: source,
                max: self.limits.max_per_source,
            });
        }
        let mut node = NodeState::new(addr, false);
        node.registered_until = Some(now + ttl);
        node.source = Some(source);
        node.report = report;
        node.identity = identity;
        // Failing when its registration lapsed: it proves itself `return_after` times, as if it
        // had stayed.
        node.probed = table.failed.remove(&key).is_some();
        let probed = node.probed;
        table.nodes.insert(key, node);
        self.publish(&mut table);
        drop(table);
        if !probed {
            self.joined.notify_one();
        }
        Ok(())
    }

    /// The key and operators of node `key`: a `host:port` whose heartbeats are signed, or an
    /// `npub1…` linked to this replica or to a peer replica.
    pub fn identity(&self, key: &str) -> Option<NodeIdentity> {
        let table = self.lock();
        match table.nodes.get(key) {
            Some(n) => n.identity.clone(),
            None => table
                .linked
                .get(key)
                .or_else(|| table.peers.get(key))
                .map(|(_, identity)| identity.clone()),
        }
    }

    /// Puts the node `key` (`npub1…`), linked to this replica, in dispatch at once with what it
    /// announced; a second link of the same key replaces the first's entry.
    pub fn link(&self, identity: NodeIdentity, report: NodeReport) {
        let mut table = self.lock();
        tracing::info!(node = %identity.key, "node linked");
        table.linked.insert(identity.key.clone(), (report, identity));
        self.publish(&mut table);
    }

    /// What a linked node announced since: published when it changed.
    pub fn relink(&self, key: &str, report: NodeReport) {
        let mut table = self.lock();
        if let Some(entry) = table.linked.get_mut(key)
            && entry.0 != report
        {
            entry.0 = report;
            self.publish(&mut table);
        }
    }

    /// Takes the linked node `key` out of dispatch at once (its link closed).
    pub fn unlink(&self, key: &str) {
        let mut table = self.lock();
        if table.linked.remove(key).is_some() {
            tracing::info!(node = %key, "node unlinked");
            self.publish(&mut table);
        }
    }

    /// The nodes linked to other replicas, as their holders last recorded them: published when
    /// the set or what one announced changed.
    pub fn set_peers(&self, peers: BTreeMap<String, (NodeReport, NodeIdentity)>) {
        let mut table = self.lock();
        if table.peers != peers {
            table.peers = peers;
            self.publish(&mut table);
        }
    }

    /// Every node with its state, for the debug view (linked nodes named by their key, whichever
    /// replica holds their link).
    pub fn view(&self, now: Instant) -> Vec<NodeView> {
        let table = self.lock();
        let elsewhere = table.peers.iter().filter(|(key, _)| !table.linked.contains_key(*key));
        let linked = table
            .linked
            .iter()
            .chain(elsewhere)
            .map(|(key, (report, identity))| NodeView {
                address: key.clone(),
                listed: false,
                registered: true,
                available: true,
                failures: 0,
                last_error: None,
                containers: report.containers.iter().map(|c| c.id.clone()).collect(),
                pending: report.pending,
                identity: Some(identity.clone()),
            });
        table
            .nodes
            .iter()
            .map(|(key, n)| NodeView {
                address: key.clone(),
                listed: n.listed,
                registered: n.registered_until.is_some_and(|t| t > now),
                available: n.available,
                failures: n.failures,
                last_error: n.last_error.clone(),
                containers: n.report.containers.iter().map(|c| c.id.clone()).collect(),
                pending: n.report.pending,
                identity: n.identity.clone(),
            })
            .chain(linked)
            .collect()
    }
}

impl Table {
    /// Drops lapsed registrations of unlisted nodes, remembering those that were failing.
    fn purge(&mut self, now: Instant, remember: usize) {
        self.purges += 1;
        let failed = &mut self.failed;
        self.nodes.retain(|key, n| {
            let keep = n.listed || n.registered_until.is_some_and(|t| t > now);
            if !keep && n.probed && !n.available {
                failed.insert(key.clone(), now);
            }
            keep
        });
        failed.retain(|_, t| now.duration_since(*t) < FORGET_FAILED_AFTER);
        while failed.len() > remember {
            let Some(oldest) = failed.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) else {
                break;
            };
            failed.remove(&oldest);
        }
    }
}

impl NodeState {
    fn new(addr: NodeAddr, listed: bool) -> Self {
        Self {
            addr,
            listed,
            registered_until: None,
            source: None,
            available: false,
            probed: false,
            failures: 0,
            successes: 0,
            report: NodeReport::default(),
            last_error: None,
            identity: None,
            uptime: 1.0,
        }
    }

    fn record(&mut self, result: Result<NodeReport, ProbeError>, h: Hysteresis) {
        let answered = if result.is_ok() { 1.0 } else { 0.0 };
        self.uptime += UPTIME_WEIGHT * (answered - self.uptime);
        match result {
            Ok(report) => {
                self.report = report;
                self.last_error = None;
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                // A node seen for the first time is served at once (no empty answers at start-up);
                // one that left must prove itself `return_after` times.
                if !self.probed || self.successes >= h.return_after {
                    if !self.available {
                        tracing::info!(node = %self.addr, "node available");
                    }
                    self.available = true;
                }
            }
            Err(e) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                if self.available && self.failures >= h.leave_after {
                    tracing::warn!(node = %self.addr, error = %e, "node unavailable");
                    self.available = false;
                }
                self.last_error = Some(e.to_string());
            }
        }
        self.probed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> NodeAddr {
        NodeAddr::parse(s).unwrap().unwrap()
    }

    fn report(ids: &[&str]) -> NodeReport {
        NodeReport {
            containers: ids
                .iter()
                .map(|id| ContainerSummary {
                    id: id.to_string(),
                    description: String::new(),
                    external: true,
                })
                .collect(),
            pending: 0,
            offer: Default::default(),
        }
    }

    const LIMITS: Limits = Limits {
        max_registrations: 100,
        max_per_source: 100,
    };

    fn registry(listed: &[&str], leave_after: u32, return_after: u32) -> Registry {
        Registry::new(
            listed.iter().map(|s| addr(s)).collect(),
            Hysteresis {
                leave_after,
                return_after,
            },
            LIMITS,
        )
    }

    fn down() -> Result<NodeReport, ProbeError> {
        Err(ProbeError::Timeout(Duration::from_secs(1)))
    }

    fn keys(r: &Registry) -> Vec<String> {
        r.snapshot().available.iter().map(|a| a.key.clone()).collect()
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn nodes_leave_after_n_failures_and_return_after_m_successes() {
        let r = registry(&["a:1"], 3, 2);
        let key = "a:1".to_string();
        r.apply(vec![(key.clone(), Ok(report(&["x"])))]);
        assert_eq!(r.snapshot().available.len(), 1, "first success serves at once");
        for i in 0..3 {
            assert_eq!(r.snapshot().available.len(), 1, "still there after {i} failures");
            r.apply(vec![(key.clone(), down())]);
        }
        assert!(r.snapshot().available.is_empty());
        r.apply(vec![(key.clone(), Ok(report(&["x"])))]);
        assert!(r.snapshot().available.is_empty(), "one success is not enough to return");
        r.apply(vec![(key.clone(), Ok(report(&["x"])))]);
        assert_eq!(r.snapshot().available.len(), 1);
    }

    #[test]
    fn passed_over_counts_survive_new_snapshots_and_go_with_their_node() {
        let r = registry(&["a:1", "b:2"], 1, 1);
        let up = |keys: &[&str]| r.apply(keys.iter().map(|k| (k.to_string(), Ok(report(&["x"])))).collect());
        up(&["a:1", "b:2"]);
        let first = r.snapshot();
        first.available[0].passed_over.count(Filter::Price, 1);
        first.available[0].passed_over.count(Filter::Containers, 1);
        // A new snapshot (every probe round makes one) counts on the same counters.
        up(&["a:1", "b:2"]);
        let second = r.snapshot();
        second.available[0].passed_over.count(Filter::Hours, 1);
        second.available[1].passed_over.count(Filter::Health, 1);
        second.available[1].passed_over.count(Filter::Hardware, 1);
        let mut taken = r.take_passed_over();
        taken.sort();
        assert_eq!(
            taken,
            vec![("a:1".to_string(), [0, 0, 1, 1]), ("b:2".to_string(), [1, 1, 0, 0])]
        );
        assert!(r.take_passed_over().is_empty(), "taken once");
        // b leaves: counted while a decision still reads its snapshot, then dropped.
        r.apply(vec![("b:2".into(), down())]);
        second.available[1].passed_over.count(Filter::Price, 1);
        drop(first);
        drop(second);
        assert_eq!(r.take_passed_over(), vec![("b:2".to_string(), [0, 0, 1, 0])]);
        assert_eq!(r.lock().passed_over.len(), 1, "only a's counters are kept");
    }

    #[test]
    fn a_node_listed_and_registered_appears_once_and_registrations_expire() {
        let r = registry(&["a:1"], 1, 1);
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        r.register(addr("http://a:1"), report(&["x"]), ttl, LOCAL, now, None)
            .unwrap();
        r.register(addr("b:2"), report(&["y"]), ttl, LOCAL, now, None).unwrap();
        let targets: Vec<String> = r.targets(now).into_iter().map(|(k, _)| k).collect();
        assert_eq!(targets, vec!["a:1", "b:2"]);
        r.apply(vec![
            ("a:1".into(), Ok(report(&["x"]))),
            ("b:2".into(), Ok(report(&["y"]))),
        ]);
        assert_eq!(keys(&r), vec!["a:1", "b:2"]);
        let later = now + Duration::from_secs(11);
        let targets: Vec<String> = r.targets(later).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            targets,
            vec!["a:1"],
            "the listed node stays, the expired registration goes"
        );
    }

    #[test]
    fn a_registered_node_is_handed_out_only_after_a_probe_succeeded() {
        let r = registry(&[], 2, 2);
        let now = Instant::now();
        r.register(addr("b:2"), report(&["x"]), Duration::from_secs(10), LOCAL, now, None)
            .unwrap();
        assert!(keys(&r).is_empty(), "a heartbeat alone does not make a node available");
        assert_eq!(r.unprobed(), vec![("b:2".to_string(), "http://b:2".to_string())]);
        r.apply(vec![("b:2".into(), down())]);
        assert!(keys(&r).is_empty());
        assert!(r.unprobed().is_empty());
    }

    #[test]
    fn a_failing_node_that_registers_again_does_not_skip_return_after() {
        let r = registry(&[], 2, 3);
        let (now, ttl) = (Instant::now(), Duration::from_secs(10));
        let beat = |at: Instant| r.register(addr("b:2"), report(&["x"]), ttl, LOCAL, at, None).unwrap();
        beat(now);
        r.apply(vec![("b:2".into(), Ok(report(&["x"])))]);
        assert_eq!(keys(&r), vec!["b:2"]);
        r.apply(vec![("b:2".into(), down()), ("b:2".into(), down())]);
        assert!(keys(&r).is_empty(), "left after two failures");
        r.apply(vec![("b:2".into(), Ok(report(&["x"])))]);
        beat(now);
        assert!(keys(&r).is_empty(), "a heartbeat does not bring it back early");
        r.apply(vec![("b:2".into(), Ok(report(&["x"])))]);
        assert!(keys(&r).is_empty(), "two good probes of three");

        // Its registration lapses while it fails; registering anew does not start it afresh.
        r.apply(vec![("b:2".into(), down())]);
        let later = now + ttl * 2;
        assert!(r.targets(later).is_empty());
        beat(later);
        assert!(r.unprobed().is_empty(), "not a newcomer");
        for i in 0..2 {
            r.apply(vec![("b:2".into(), Ok(report(&["x"])))]);
            assert!(keys(&r).is_empty(), "good probe {i} of 3");
        }
        r.apply(vec![("b:2".into(), Ok(report(&["x"])))]);
        assert_eq!(keys(&r), vec!["b:2"]);
    }

    #[test]
    fn registrations_are_capped_in_total_and_per_source() {
        let r = Registry::new(
            vec![addr("listed:1")],
            Hysteresis {
                leave_after: 1,
                return_after: 1,
            },
            Limits {
                max_registrations: 3,
                max_per_source: 2,
            },
        );
        let (now, ttl) = (Instant::now(), Duration::from_secs(10));
        let other: IpAddr = "10.0.0.9".parse().unwrap();
        let reg = |a: &str, from: IpAddr| r.register(addr(a), report(&["x"]), ttl, from, now, None);
        assert_eq!(reg("listed:1", LOCAL), Ok(()), "listed nodes do not count");
        assert_eq!(reg("a:1", LOCAL), Ok(()));
        assert_eq!(reg("b:1", LOCAL), Ok(()));
        assert_eq!(
            reg("c:1", LOCAL),
            Err(RegistryError::SourceFull { from: LOCAL, max: 2 })
        );
        assert_eq!(reg("a:1", LOCAL), Ok(()), "a refresh is not a new registration");
        assert_eq!(reg("c:1", other), Ok(()));
        assert_eq!(reg("d:1", other), Err(RegistryError::Full { max: 3 }));
        // Lapsed registrations free their places.
        assert!(
            r.register(addr("d:1"), report(&["x"]), ttl, other, now + ttl * 2, None)
                .is_ok()
        );
    }

    #[test]
    fn a_heartbeat_whose_address_is_not_signed_cannot_move_a_registration() {
        let r = registry(&[], 1, 1);
        let (now, ttl) = (Instant::now(), Duration::from_secs(10));
        let id = |signed| {
            Some(NodeIdentity {
                key: "npub1node".into(),
                operators: Vec::new(),
                address_signed: signed,
            })
        };
        let other: IpAddr = "10.0.0.9".parse().unwrap();
        let reg = |a: &str, from, signed| r.register(addr(a), report(&["x"]), ttl, from, now, id(signed));
        assert_eq!(reg("a:1", LOCAL, false), Ok(()));
        assert_eq!(reg("a:1", LOCAL, false), Ok(()), "a refresh at the same address");
        // The same signed heartbeat replayed from elsewhere: refused, the registration stays.
        assert_eq!(
            reg("b:1", other, false),
            Err(RegistryError::Unbound { at: "a:1".into() })
        );
        assert_eq!(
            r.view(now).iter().map(|v| v.address.clone()).collect::<Vec<_>>(),
            vec!["a:1"]
        );
        // An address the node signed moves it.
        assert_eq!(reg("b:1", other, true), Ok(()));
        assert_eq!(
            r.view(now).iter().map(|v| v.address.clone()).collect::<Vec<_>>(),
            vec!["b:1"]
        );
    }

    #[test]
    fn heartbeats_sweep_the_table_at_most_once_a_second() {
        let r = registry(&[], 1, 1);
        let (now, ttl) = (Instant::now(), Duration::from_secs(10));
        let purges = || r.lock().purges;
        let before = purges();
        for i in 0..100 {
            let at = now + Duration::from_millis(i);
            r.register(addr(&format!("n{i}:1")), report(&["x"]), ttl, LOCAL, at, None)
                .unwrap();
        }
        assert_eq!(purges() - before, 1, "one sweep for 100 heartbeats within a second");
        r.register(
            addr("n0:1"),
            report(&["x"]),
            ttl,
            LOCAL,
            now + Duration::from_secs(2),
            None,
        )
        .unwrap();
        assert_eq!(purges() - before, 2);
    }

    #[test]
    fn the_order_seed_changes_only_with_membership_or_load_class() {
        let r = registry(&["a:1", "b:1"], 1, 1);
        let load = |p: u64| {
            let mut rep = report(&["x"]);
            rep.pending = p;
            Ok(rep)
        };
        r.apply(vec![("a:1".into(), load(100)), ("b:1".into(), load(100))]);
        let seed = r.snapshot().seed;
        r.apply(vec![("a:1".into(), load(101)), ("b:1".into(), load(100))]);
        assert_eq!(r.snapshot().seed, seed, "same load class, same order");
        r.apply(vec![("a:1".into(), load(0)), ("b:1".into(), load(100))]);
        let seed2 = r.snapshot().seed;
        assert_ne!(seed2, seed, "a load class changed");
        r.apply(vec![("a:1".into(), down()), ("b:1".into(), load(100))]);
        assert_ne!(r.snapshot().seed, seed2, "membership changed");
    }
}

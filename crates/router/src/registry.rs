//! The node table: which nodes exist (static list and live registrations), what each last
//! reported, and whether it is available, with hysteresis so one failed probe does not eject a
//! node and one success does not bring a dead one back.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::address::NodeAddr;

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

/// What a node last reported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeReport {
    /// Running containers.
    pub containers: Vec<ContainerSummary>,
    /// Pending jobs (off-chain + on-chain): the node's load.
    pub pending: u64,
}

/// Hysteresis thresholds.
#[derive(Debug, Clone, Copy)]
pub struct Hysteresis {
    /// Consecutive failed probes before a node leaves.
    pub leave_after: u32,
    /// Consecutive good probes before a node that left comes back.
    pub return_after: u32,
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
}

struct NodeState {
    addr: NodeAddr,
    listed: bool,
    registered_until: Option<Instant>,
    available: bool,
    probed: bool,
    failures: u32,
    successes: u32,
    report: NodeReport,
    last_error: Option<String>,
}

/// An available node, as the ranking sees it.
#[derive(Debug, Clone)]
pub struct Available {
    /// `host:port`.
    pub key: String,
    /// Base URL.
    pub url: String,
    /// What it last reported.
    pub report: NodeReport,
}

/// The read side: swapped in whole after every change, read without locks held for long.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Available nodes, in address order.
    pub available: Vec<Available>,
    /// Nodes known (available or not).
    pub known: usize,
    /// Candidates per requested container set, grouped by load class (lowest first); built on
    /// first use and dropped with the snapshot at the next probe round.
    pub groups: Mutex<HashMap<Vec<String>, Arc<Groups>>>,
}

/// Indices into [`Snapshot::available`], one list per load class, lowest class first.
pub type Groups = Vec<Vec<usize>>;

/// The node table.
pub struct Registry {
    nodes: Mutex<BTreeMap<String, NodeState>>,
    snapshot: RwLock<Arc<Snapshot>>,
    hysteresis: Hysteresis,
}

impl Registry {
    /// A table with the static list.
    pub fn new(listed: Vec<NodeAddr>, hysteresis: Hysteresis) -> Self {
        let nodes = listed
            .into_iter()
            .map(|addr| {
                let key = addr.key();
                (key, NodeState::new(addr, true, None))
            })
            .collect();
        let registry = Self {
            nodes: Mutex::new(nodes),
            snapshot: RwLock::default(),
            hysteresis,
        };
        registry.publish();
        registry
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("snapshot poisoned").clone()
    }

    fn publish(&self) {
        let nodes = self.nodes.lock().expect("node table poisoned");
        let available = nodes
            .iter()
            .filter(|(_, n)| n.available)
            .map(|(key, n)| Available {
                key: key.clone(),
                url: n.addr.base_url(),
                report: n.report.clone(),
            })
            .collect();
        let snapshot = Snapshot {
            available,
            known: nodes.len(),
            groups: Mutex::default(),
        };
        drop(nodes);
        *self.snapshot.write().expect("snapshot poisoned") = Arc::new(snapshot);
    }

    /// Nodes to probe now; expired registrations of unlisted nodes are dropped first.
    pub fn targets(&self, now: Instant) -> Vec<(String, String)> {
        let mut nodes = self.nodes.lock().expect("node table poisoned");
        nodes.retain(|_, n| n.listed || n.registered_until.is_some_and(|t| t > now));
        nodes.iter().map(|(k, n)| (k.clone(), n.addr.base_url())).collect()
    }

    /// Applies one round of probe results and publishes a new snapshot.
    pub fn apply(&self, results: Vec<(String, Result<NodeReport, String>)>) {
        {
            let mut nodes = self.nodes.lock().expect("node table poisoned");
            for (key, result) in results {
                if let Some(node) = nodes.get_mut(&key) {
                    node.record(result, self.hysteresis);
                }
            }
        }
        self.publish();
    }

    /// A node announced itself: it joins (or refreshes) the table until `ttl` passes.
    pub fn register(&self, addr: NodeAddr, report: NodeReport, ttl: Duration, now: Instant) {
        {
            let mut nodes = self.nodes.lock().expect("node table poisoned");
            let node = nodes
                .entry(addr.key())
                .or_insert_with(|| NodeState::new(addr, false, None));
            node.registered_until = Some(now + ttl);
            node.report = report;
            // The heartbeat proves the node is alive; probes still decide reachability.
            if node.failures < self.hysteresis.leave_after {
                node.available = true;
            }
        }
        self.publish();
    }

    /// Every node with its state, for the debug view.
    pub fn view(&self, now: Instant) -> Vec<NodeView> {
        let nodes = self.nodes.lock().expect("node table poisoned");
        nodes
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
            })
            .collect()
    }
}

impl NodeState {
    fn new(addr: NodeAddr, listed: bool, registered_until: Option<Instant>) -> Self {
        Self {
            addr,
            listed,
            registered_until,
            available: false,
            probed: false,
            failures: 0,
            successes: 0,
            report: NodeReport::default(),
            last_error: None,
        }
    }

    fn record(&mut self, result: Result<NodeReport, String>, h: Hysteresis) {
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
                self.last_error = Some(e);
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
        }
    }

    #[test]
    fn nodes_leave_after_n_failures_and_return_after_m_successes() {
        let r = Registry::new(
            vec![addr("a:1")],
            Hysteresis {
                leave_after: 3,
                return_after: 2,
            },
        );
        let key = "a:1".to_string();
        r.apply(vec![(key.clone(), Ok(report(&["x"])))]);
        assert_eq!(r.snapshot().available.len(), 1, "first success serves at once");
        for i in 0..3 {
            assert_eq!(r.snapshot().available.len(), 1, "still there after {i} failures");
            r.apply(vec![(key.clone(), Err("down".into()))]);
        }
        assert!(r.snapshot().available.is_empty());
        r.apply(vec![(key.clone(), Ok(report(&["x"])))]);
        assert!(r.snapshot().available.is_empty(), "one success is not enough to return");
        r.apply(vec![(key.clone(), Ok(report(&["x"])))]);
        assert_eq!(r.snapshot().available.len(), 1);
    }

    #[test]
    fn a_node_listed_and_registered_appears_once_and_registrations_expire() {
        let r = Registry::new(
            vec![addr("a:1")],
            Hysteresis {
                leave_after: 1,
                return_after: 1,
            },
        );
        let now = Instant::now();
        r.register(addr("http://a:1"), report(&["x"]), Duration::from_secs(10), now);
        r.register(addr("b:2"), report(&["y"]), Duration::from_secs(10), now);
        assert_eq!(
            r.snapshot()
                .available
                .iter()
                .map(|a| a.key.as_str())
                .collect::<Vec<_>>(),
            vec!["a:1", "b:2"]
        );
        let later = now + Duration::from_secs(11);
        let targets: Vec<String> = r.targets(later).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            targets,
            vec!["a:1"],
            "the listed node stays, the expired registration goes"
        );
    }
}

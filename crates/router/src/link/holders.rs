//! Several replicas on one database: which replica holds each node's link, so that a job
//! submitted to any replica reaches the node through the replica that holds it.
//!
//! The holder writes a row (`link_holders`) at the node's hello, with what the node announced and
//! the URL its peers reach it at (`--replica-url`), keeps the node's announce in it as
//! heartbeats change it, and deletes it when the link closes. Every `refresh` it renews the
//! lease of all its rows in one statement; a row not renewed for [`EXPIRY_REFRESHES`] refreshes
//! (its replica died without deleting it) no longer counts, and is deleted some refreshes later by
//! whichever replica sees it first (a holder that was only slow finds fewer rows than links and
//! writes them again). Each replica reads its peers' rows on the same period: their nodes are
//! candidates of its chooser, named by their key like its own linked nodes.
//!
//! A call to a node held elsewhere goes to the holder over HTTP(S) ([`super::peer`]), signed
//! with the router's key (NIP-98), which every replica shares; the holder passes it over the
//! link and streams the answer back. A holder that cannot be reached (connection refused) counts
//! as gone: its nodes are unlinked here until its rows are renewed again.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use infernet_types::link::Announce;
use tokio_util::sync::CancellationToken;

use super::{Link, Links, report};
use crate::{
    db::{
        Db,
        link_holders::{HeldLink, Holding},
        now_ms,
    },
    registry::{NodeIdentity, NodeReport, Registry},
};

/// Refreshes a holder may miss before its rows stop counting.
pub const EXPIRY_REFRESHES: u32 = 3;
/// Refreshes a holder may miss before its rows are deleted (a holder that was only slow writes
/// its rows again when it finds them gone).
const DELETE_REFRESHES: u32 = 10;
/// Peers' links read per refresh, at most.
const MAX_PEER_LINKS: i64 = 100_000;

/// A replica that holds links, as its peers know it.
#[derive(Debug)]
pub struct Replica {
    id: String,
    url: String,
    /// When it was found unreachable: the newest renewal of its rows seen then (Unix ms).
    gone: Mutex<Option<i64>>,
}

impl Replica {
    /// The URL its peers reach it at.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn is_gone(&self) -> bool {
        self.gone.lock().expect("replica poisoned").is_some()
    }

    /// It refused a connection: its nodes count as unlinked until it renews its rows again.
    pub(super) fn mark_gone(&self, seen: i64) {
        tracing::warn!(replica = %self.id, "the replica holding some nodes' links is unreachable; they count as unlinked");
        self.gone.lock().expect("replica poisoned").get_or_insert(seen);
    }
}

/// Where a linked node's link is held.
#[derive(Debug, Clone)]
pub enum Holder {
    /// By this replica.
    Here(Arc<Link>),
    /// By a peer replica.
    Peer {
        /// The node's key.
        node: String,
        /// The replica.
        replica: Arc<Replica>,
        /// The newest renewal of its rows seen (Unix ms).
        seen: i64,
    },
}

/// Links held by this replica and its peers.
pub struct Holders {
    db: Db,
    registry: Arc<Registry>,
    links: Arc<Links>,
    /// This replica's id.
    replica: String,
    /// The URL peers reach this replica at.
    url: String,
    refresh: Duration,
    /// Nodes linked to peers: their holder and the newest renewal seen.
    peers: RwLock<HashMap<String, (Arc<Replica>, i64)>>,
    /// Peer replicas by id, kept from one read to the next (whether they are gone).
    replicas: Mutex<HashMap<String, Arc<Replica>>>,
    /// Announces of links held here not written yet, by node (at most one per link held).
    announced: Mutex<HashMap<String, String>>,
    /// The links held here as recorded: announce and operators (JSON), by node.
    held: Mutex<HashMap<String, (String, String)>>,
    /// The keys the router shares with nodes: those of nodes linked to peers, that check MACs,
    /// are learnt from their rows, so calls through a peer are MAC'd too.
    keys: Arc<crate::gateway::keys::DispatchKeys>,
}

impl std::fmt::Debug for Holders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holders")
            .field("replica", &self.replica)
            .field("url", &self.url)
            .finish()
    }
}

impl Holders {
    /// The holders of replica `replica`, reached by its peers at `url`, renewing its rows every
    /// `refresh`.
    pub fn new(
        db: Db,
        registry: Arc<Registry>,
        (links, keys): (Arc<Links>, Arc<crate::gateway::keys::DispatchKeys>),
        replica: String,
        url: String,
        refresh: Duration,
    ) -> Self {
        Self {
            keys,
            db,
            registry,
            links,
            replica,
            url: url.trim_end_matches('/').to_string(),
            refresh,
            peers: RwLock::default(),
            replicas: Mutex::default(),
            announced: Mutex::default(),
            held: Mutex::default(),
        }
    }

    /// The URL peers reach this replica at.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the link of node `key` is held, when it is linked to a replica that is not gone.
    pub fn find(&self, key: &str) -> Option<Holder> {
        if let Some(link) = self.links.get(key) {
            return Some(Holder::Here(link));
        }
        let peers = self.peers.read().expect("peers poisoned");
        let (replica, seen) = peers.get(key)?;
        (!replica.is_gone()).then(|| Holder::Peer {
            node: key.to_string(),
            replica: replica.clone(),
            seen: *seen,
        })
    }

    /// The node `identity` linked here with `announce`: recorded for the peers.
    pub(super) async fn hold(&self, identity: &NodeIdentity, announce: &Announce) {
        let announce = serde_json::to_string(announce).unwrap_or_default();
        let operators = serde_json::to_string(&identity.operators).unwrap_or_default();
        self.held
            .lock()
            .expect("held poisoned")
            .insert(identity.key.clone(), (announce.clone(), operators.clone()));
        self.record(&identity.key, &announce, &operators).await;
    }

    /// Writes the row of node `key`, held here.
    async fn record(&self, key: &str, announce: &str, operators: &str) {
        let holding = Holding {
            node: key,
            replica: &self.replica,
            replica_url: &self.url,
            announce,
            operators,
            now: now_ms(),
        };
        if let Err(e) = self.db.hold_link(&holding).await {
            tracing::warn!(node = %key, error = %e, "could not record the link for the other replicas");
        }
    }

    /// A heartbeat of node `key`, linked here: its announce is written with the next renewal.
    pub(super) fn announced(&self, key: &str, announce: &Announce) {
        if let Ok(text) = serde_json::to_string(announce) {
            if let Some(held) = self.held.lock().expect("held poisoned").get_mut(key) {
                held.0.clone_from(&text);
            }
            self.announced
                .lock()
                .expect("announces poisoned")
                .insert(key.to_string(), text);
        }
    }

    /// The link of node `key` closed here.
    pub(super) async fn release(&self, key: &str) {
        self.announced.lock().expect("announces poisoned").remove(key);
        self.held.lock().expect("held poisoned").remove(key);
        if let Err(e) = self.db.release_link(key, &self.replica).await {
            tracing::warn!(node = %key, error = %e, "could not record that the link closed; it lapses");
        }
    }

    /// Renews this replica's rows and reads its peers' every `refresh` until `shutdown`; then
    /// closes the links held here (their nodes dial again, reaching another replica) and deletes
    /// their rows.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), std::convert::Infallible> {
        loop {
            self.tick().await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.refresh) => {}
            }
        }
        self.links.close_all("this router is stopping; link to another");
        if let Err(e) = self.db.release_replica(&self.replica).await {
            tracing::warn!(error = %e, "could not release this replica's links; they lapse");
        }
        Ok(())
    }

    /// One renewal and read.
    async fn tick(&self) {
        let now = now_ms();
        let held = self.held.lock().expect("held poisoned").len();
        match self.db.refresh_links(&self.replica, now).await {
            // Rows deleted while this replica was too slow to renew them: written again.
            Ok(renewed) if (renewed as usize) < held => {
                let all: Vec<(String, (String, String))> = self
                    .held
                    .lock()
                    .expect("held poisoned")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (key, (announce, operators)) in all {
                    self.record(&key, &announce, &operators).await;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not renew this replica's links"),
        }
        let announced = std::mem::take(&mut *self.announced.lock().expect("announces poisoned"));
        for (node, announce) in announced {
            if let Err(e) = self.db.update_link_announce(&node, &self.replica, &announce).await {
                tracing::warn!(%node, error = %e, "could not record a linked node's announce");
            }
        }
        let expiry = i64::try_from((self.refresh * EXPIRY_REFRESHES).as_millis()).unwrap_or(i64::MAX);
        let fresh_since = now.saturating_sub(expiry);
        match self.db.peer_links(&self.replica, fresh_since, MAX_PEER_LINKS).await {
            Ok(rows) => self.apply(rows),
            Err(e) => tracing::warn!(error = %e, "could not read the other replicas' links"),
        }
        let deleted = i64::try_from((self.refresh * DELETE_REFRESHES).as_millis()).unwrap_or(i64::MAX);
        if let Err(e) = self.db.expire_links(now.saturating_sub(deleted)).await {
            tracing::warn!(error = %e, "could not delete lapsed links");
        }
    }

    /// The peers' links as read: the registry's candidates and the holders of calls.
    fn apply(&self, rows: Vec<HeldLink>) {
        let mut replicas = self.replicas.lock().expect("replicas poisoned");
        let mut newest: HashMap<&str, i64> = HashMap::new();
        for row in &rows {
            let n = newest.entry(&row.replica).or_default();
            *n = (*n).max(row.seen);
        }
        replicas.retain(|id, _| newest.contains_key(id.as_str()));
        for (id, seen) in &newest {
            if let Some(r) = replicas.get(*id) {
                let mut gone = r.gone.lock().expect("replica poisoned");
                // Renewed since it was found unreachable: back.
                if gone.is_some_and(|at| *seen > at) {
                    *gone = None;
                }
            }
        }
        let mut peers = HashMap::with_capacity(rows.len());
        let mut candidates = BTreeMap::new();
        for row in rows {
            let replica = replicas
                .entry(row.replica.clone())
                .or_insert_with(|| {
                    Arc::new(Replica {
                        id: row.replica.clone(),
                        url: row.replica_url.clone(),
                        gone: Mutex::default(),
                    })
                })
                .clone();
            if replica.is_gone() {
                continue;
            }
            let Some((report, identity, checks_macs)) = peer_node(&row) else {
                continue;
            };
            self.keys.learn_linked(&row.node, checks_macs);
            candidates.insert(row.node.clone(), (report, identity));
            peers.insert(row.node, (replica, row.seen));
        }
        drop(replicas);
        *self.peers.write().expect("peers poisoned") = peers;
        self.registry.set_peers(candidates);
    }
}

/// A peer's row as the registry keeps it, and whether the node checks MACs; `None` for a row
/// this router cannot read.
fn peer_node(row: &HeldLink) -> Option<(NodeReport, NodeIdentity, bool)> {
    let announce: Announce = serde_json::from_str(&row.announce)
        .map_err(|e| tracing::warn!(node = %row.node, error = %e, "a peer's link row has an announce this router cannot read"))
        .ok()?;
    let operators: Vec<String> = serde_json::from_str(&row.operators).unwrap_or_default();
    let identity = NodeIdentity {
        key: row.node.clone(),
        operators,
        address_signed: true,
    };
    let checks_macs = announce.dispatch_mac;
    Some((report(announce), identity, checks_macs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        db::DbSettings,
        registry::{Hysteresis, Limits},
    };
    use infernet_identity::Identity;

    fn row(node: &str, replica: &str, seen: i64) -> HeldLink {
        HeldLink {
            node: node.into(),
            replica: replica.into(),
            replica_url: format!("http://{replica}:4100"),
            announce:
                r#"{"containers":[{"id":"x","description":"","external":true}],"pending":0,"pricing":{},"open":true}"#
                    .into(),
            operators: "[]".into(),
            seen,
        }
    }

    #[tokio::test]
    async fn a_gone_replicas_nodes_are_unlinked_until_it_renews_its_rows() {
        let db = Db::open(&DbSettings::new("sqlite::memory:")).await.unwrap();
        let registry = Arc::new(Registry::new(
            Vec::new(),
            Hysteresis {
                leave_after: 1,
                return_after: 1,
            },
            Limits {
                max_registrations: 1,
                max_per_source: 1,
            },
        ));
        let links = Arc::new(Links::new(Default::default()));
        let dispatch_keys = Arc::new(crate::gateway::keys::DispatchKeys::new(Identity::generate()));
        let holders = Holders::new(
            db,
            registry.clone(),
            (links, dispatch_keys.clone()),
            "me".into(),
            "http://me:4100/".into(),
            Duration::from_secs(1),
        );
        assert_eq!(holders.url(), "http://me:4100");
        holders.apply(vec![
            row("npub1a", "r1", 1_000),
            row("npub1b", "r2", 1_000),
            row("npub1c", "r1", 900),
        ]);
        assert_eq!(registry.snapshot().available.len(), 3);
        let Some(Holder::Peer { replica, seen, .. }) = holders.find("npub1a") else {
            panic!("npub1a is held by r1")
        };
        assert_eq!((replica.url(), seen), ("http://r1:4100", 1_000));
        // r1 refused a connection: its nodes are unlinked, r2's stay.
        replica.mark_gone(seen);
        assert!(holders.find("npub1a").is_none() && holders.find("npub1c").is_none());
        holders.apply(vec![
            row("npub1a", "r1", 1_000),
            row("npub1b", "r2", 2_000),
            row("npub1c", "r1", 900),
        ]);
        let keys = |r: &Registry| r.snapshot().available.iter().map(|a| a.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&registry), ["npub1b"]);
        // Renewed since: back.
        holders.apply(vec![row("npub1a", "r1", 1_500), row("npub1b", "r2", 2_000)]);
        assert!(holders.find("npub1a").is_some());
        assert_eq!(keys(&registry), ["npub1a", "npub1b"]);
        // A row this router cannot read is left out, not fatal.
        let mut bad = row("npub1d", "r2", 2_000);
        bad.announce = "{".into();
        holders.apply(vec![bad]);
        assert!(registry.snapshot().available.is_empty());
        // A node linked to a peer that checks MACs: its key is learnt, calls through the peer
        // are MAC'd; once its row says it no longer does, the key is forgotten.
        let node = Identity::generate().npub();
        let mut checks = row(&node, "r2", 3_000);
        checks.announce = checks
            .announce
            .replace(r#""open":true"#, r#""open":true,"dispatch_mac":true"#);
        holders.apply(vec![checks]);
        assert!(dispatch_keys.get(&node).is_some());
        holders.apply(vec![row(&node, "r2", 3_500)]);
        assert!(dispatch_keys.get(&node).is_none());
    }
}

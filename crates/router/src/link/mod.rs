//! The server end of the link (`GET /api/v1/link`, a WebSocket on the router's own port): nodes
//! that nobody can connect to dial in, prove their key, and serve the network over that one
//! connection. The protocol is [`infernet_types::link`].
//!
//! A linked node is in dispatch from its hello to the moment its link closes, named by its key
//! (`npub1…`): it has no address, so `/api/v1/ips` and `/api/v1/resources` leave it out, while
//! the gateway, `/api/v1/route` and `/api/v1/nodes` see it. The gateway reaches it exactly as a
//! reachable node: its dispatcher ([`crate::gateway::dispatch::Call`]) sends the same signed
//! request, as a frame on the link instead of over HTTP ([`Link::send`]).
//!
//! Bounds, for a hostile node: links in total (`max_links`) and one per key (a second hello
//! replaces the first); hellos in progress (`max_handshakes`, each within `hello_timeout`);
//! frames from a node ([`MAX_NODE_FRAME`]); calls in flight per link ([`MAX_CALLS`]); chunks
//! buffered per call ([`WINDOW`]: a node that sends past its credit is cut off); a node silent
//! for three heartbeats, or that does not read what the router writes for as long, is cut off.
//!
//! With several replicas on one database, [`holders`] records which replica holds each link and
//! [`peer`] carries a call from any replica to the one that holds the node's link.

mod call;
pub mod holders;
pub mod peer;
mod relay;
mod session;

pub use call::Link;
pub use holders::{Holder, Holders};
pub use relay::relay;
pub use session::endpoint;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use infernet_types::link::{Announce, MAX_CALLS, MAX_NODE_FRAME, WINDOW};
use tokio::sync::Semaphore;

use crate::registry::{ContainerSummary, NodeReport, Offer};

/// How the router's end of links works.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// Links held at once.
    pub max_links: usize,
    /// Links held or starting at once from one address.
    pub max_per_source: usize,
    /// Links between the upgrade and the hello's check at once.
    pub max_handshakes: usize,
    /// Time a node has to send its hello.
    pub hello_timeout: Duration,
    /// Seconds between a node's heartbeats; a link silent for three of them is closed.
    pub heartbeat: Duration,
    /// How long a job a linked node accepted stays with it after its link closed; then it runs
    /// on another node (see `gateway::lease`).
    pub lease: Duration,
    /// The URL this replica's peers on the same database reach it at (`--replica-url`); its
    /// listening address when not given.
    pub replica_url: Option<String>,
    /// How often this replica renews its links' rows and reads its peers' ([`holders`]); a
    /// replica silent for [`holders::EXPIRY_REFRESHES`] of them no longer holds its links.
    pub replica_refresh: Duration,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            max_links: 10_000,
            max_per_source: 256,
            max_handshakes: 256,
            hello_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(15),
            lease: Duration::from_secs(60),
            replica_url: None,
            replica_refresh: Duration::from_secs(5),
        }
    }
}

/// The links this replica holds, one per node key.
pub struct Links {
    settings: LinkSettings,
    held: Mutex<HashMap<String, Arc<Link>>>,
    handshakes: Arc<Semaphore>,
    next_id: std::sync::atomic::AtomicU64,
    /// Links held or starting, by the address they came from.
    sources: Arc<Mutex<HashMap<std::net::IpAddr, usize>>>,
}

/// A link's place among its address's ([`LinkSettings::max_per_source`]): given back when
/// dropped.
pub(crate) struct SourceSlot {
    sources: Arc<Mutex<HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut sources = self.sources.lock().expect("sources poisoned");
        if let Some(n) = sources.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                sources.remove(&self.ip);
            }
        }
    }
}

/// Why a node could not link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// As many links as allowed are held.
    #[error("this router holds {0} links (its --max-links); link to another router or retry later")]
    Full(usize),
}

impl Links {
    /// No links yet.
    pub fn new(settings: LinkSettings) -> Self {
        Self {
            handshakes: Arc::new(Semaphore::new(settings.max_handshakes.max(1))),
            settings,
            held: Mutex::default(),
            next_id: Default::default(),
            sources: Arc::default(),
        }
    }

    /// A place for one more link from `ip`, or `None` when it has [`LinkSettings::max_per_source`].
    pub(crate) fn place_for(&self, ip: std::net::IpAddr) -> Option<SourceSlot> {
        let mut sources = self.sources.lock().expect("sources poisoned");
        let n = sources.entry(ip).or_default();
        if *n >= self.settings.max_per_source {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: self.sources.clone(),
            ip,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Link>>> {
        self.held.lock().expect("links poisoned")
    }

    /// The link of node `key` (`npub1…`), when this replica holds one.
    pub fn get(&self, key: &str) -> Option<Arc<Link>> {
        if !key.starts_with("npub1") {
            return None;
        }
        self.lock().get(key).cloned()
    }

    /// Every link held now.
    pub fn all(&self) -> Vec<Arc<Link>> {
        self.lock().values().cloned().collect()
    }

    /// Links held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Holds `link` for its key; the key's earlier link, if any, is closed.
    fn insert(&self, link: Arc<Link>) -> Result<(), LinkError> {
        let mut held = self.lock();
        if !held.contains_key(link.node()) && held.len() >= self.settings.max_links {
            return Err(LinkError::Full(self.settings.max_links));
        }
        if let Some(old) = held.insert(link.node().to_string(), link) {
            old.close("replaced by a newer link with the same key");
        }
        Ok(())
    }

    /// Lets go of `link`; `true` when it was the one held for its key (not already replaced).
    fn remove(&self, link: &Link) -> bool {
        let mut held = self.lock();
        match held.get(link.node()) {
            Some(current) if current.id() == link.id() => {
                held.remove(link.node());
                true
            }
            _ => false,
        }
    }

    /// Closes every link held, telling each node `reason`.
    pub fn close_all(&self, reason: &str) {
        for link in self.lock().values() {
            link.close(reason);
        }
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// Containers a node's announce may list, at most.
const MAX_CONTAINERS: usize = 1024;

/// What the registry keeps of a node's announce.
fn report(announce: Announce) -> NodeReport {
    NodeReport {
        containers: announce
            .containers
            .into_iter()
            .take(MAX_CONTAINERS)
            .map(|c| ContainerSummary {
                id: c.id,
                description: c.description,
                external: c.external,
            })
            .collect(),
        pending: announce.pending,
        offer: Offer {
            pricing: announce.pricing.into_iter().take(MAX_CONTAINERS).collect(),
            open: announce.open,
            available_at: announce.available_at,
            hardware: announce.hardware,
        },
    }
}

// Compile-time sanity of the bounds the module doc promises.
const _: () = assert!(WINDOW >= 2 && MAX_CALLS > 0 && MAX_NODE_FRAME > 0);

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    fn link(links: &Links, node: &str) -> Arc<Link> {
        let (requests, _) = mpsc::channel(1);
        let (control, _) = mpsc::unbounded_channel();
        Arc::new(Link::new(node.into(), links.next_id(), requests, control))
    }

    #[test]
    fn links_are_capped_in_total_and_one_per_key_the_newest_winning() {
        let links = Links::new(LinkSettings {
            max_links: 1,
            ..Default::default()
        });
        let first = link(&links, "npub1a");
        links.insert(first.clone()).unwrap();
        assert_eq!(links.insert(link(&links, "npub1b")), Err(LinkError::Full(1)));
        // The same key again: the new link replaces the old, which is told why.
        let second = link(&links, "npub1a");
        links.insert(second.clone()).unwrap();
        assert!(first.closed.is_cancelled());
        assert!(first.reason().unwrap().contains("replaced"));
        assert_eq!(links.get("npub1a").unwrap().id(), second.id());
        // The old link's end does not take the new one away.
        assert!(!links.remove(&first));
        assert!(links.remove(&second));
        assert!(links.is_empty());
        assert!(links.get("127.0.0.1:4000").is_none());
    }
}

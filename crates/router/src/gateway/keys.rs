//! The keys this router shares with the nodes it dispatches to over HTTP, for dispatches
//! authenticated by a MAC instead of a signature (see [`infernet_identity::dispatch`]).
//!
//! A node's key is learnt from its `/info` (`node`) at each probe, when the node says it checks
//! such MACs (`dispatch_mac: 1`; other nodes get NIP-98 as before). Nothing rests on that answer
//! being true: a key the node does not hold gives MACs the node refuses (401, the next node is
//! tried and the key is forgotten), and a key derived with a liar's key opens no other node.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use infernet_identity::{Identity, PublicKey, dispatch::DispatchKey, parse_public_key};

/// Most nodes with a shared key kept (the registry's own bound is lower).
pub const MAX_KEYS: usize = 20_000;

/// Shared keys per node (`host:port`).
#[derive(Debug)]
pub struct DispatchKeys {
    identity: Identity,
    keys: Mutex<HashMap<String, (PublicKey, Arc<DispatchKey>)>>,
}

impl DispatchKeys {
    /// Keys of `identity` (the router's).
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            keys: Mutex::default(),
        }
    }

    /// Reads the node key of `node`'s `/info` answer; derives the shared key when it is new.
    pub fn learn(&self, node: &str, info: &serde_json::Value) {
        let checks_macs = info.get("dispatch_mac").and_then(|v| v.as_u64()) == Some(1);
        let key = info.get("node").and_then(|v| v.as_str());
        self.learn_key(node, key, checks_macs);
    }

    /// The key of a node linked here, named by its key (`npub1…`), when its hello says it checks
    /// MACs: calls over its link are then MAC'd too, and its receipts vouched by their MAC.
    pub fn learn_linked(&self, npub: &str, checks_macs: bool) {
        self.learn_key(npub, Some(npub), checks_macs);
    }

    fn learn_key(&self, node: &str, key: Option<&str>, checks_macs: bool) {
        let key = key.and_then(|t| parse_public_key(t).ok());
        let Some(key) = key.filter(|_| checks_macs) else {
            self.forget(node);
            return;
        };
        if self
            .keys
            .lock()
            .expect("keys poisoned")
            .get(node)
            .is_some_and(|(k, _)| *k == key)
        {
            return;
        }
        // One ECDH per node and key, outside the lock.
        let Ok(shared) = DispatchKey::derive(&self.identity, &key) else {
            return;
        };
        let mut keys = self.keys.lock().expect("keys poisoned");
        if keys.len() < MAX_KEYS || keys.contains_key(node) {
            keys.insert(node.to_string(), (key, Arc::new(shared)));
        }
    }

    /// The key shared with `node`, when known.
    pub fn get(&self, node: &str) -> Option<Arc<DispatchKey>> {
        self.keys
            .lock()
            .expect("keys poisoned")
            .get(node)
            .map(|(_, k)| k.clone())
    }

    /// Drops `node`'s key: it no longer says it, or no longer checks MACs.
    fn forget(&self, node: &str) {
        self.keys.lock().expect("keys poisoned").remove(node);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_node_key_is_learnt_from_info_and_forgotten_when_gone() {
        let (router, node) = (Identity::generate(), Identity::generate());
        let keys = DispatchKeys::new(router.clone());
        keys.learn("10.0.0.1:4000", &json!({"node": node.npub()}));
        assert!(
            keys.get("10.0.0.1:4000").is_none(),
            "a node that does not say it checks MACs"
        );
        keys.learn("10.0.0.1:4000", &json!({"node": node.npub(), "dispatch_mac": 1}));
        let shared = keys.get("10.0.0.1:4000").expect("learnt");
        // The node derives the same key from its side: a MAC made with one checks with the other.
        let theirs = DispatchKey::derive(&node, &router.public_key()).expect("key");
        let url = "http://10.0.0.1:4000/api/jobs";
        let header =
            infernet_identity::dispatch::authorization_at(&shared, &router.public_key(), "POST", url, "c", b"", 100);
        let verifier = infernet_identity::nip98::Verifier::new(60, 10);
        let received = infernet_identity::nip98::Received {
            method: "POST",
            urls: &[url],
            body: b"",
        };
        assert_eq!(
            verifier.verify_mac(&header, &received, "c", 100, |_| Some(&theirs)),
            Ok(router.public_key())
        );
        keys.learn("10.0.0.1:4000", &json!({"containers": []}));
        assert!(keys.get("10.0.0.1:4000").is_none());
        keys.learn("10.0.0.2:4000", &json!({"node": "not a key", "dispatch_mac": 1}));
        assert!(keys.get("10.0.0.2:4000").is_none());
    }
}

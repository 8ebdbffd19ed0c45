//! Who may manage the node: a NIP-98 signed request from one of `operator.pubkeys`, signed for a
//! URL this node is reached at. The URLs accepted for a request to `/admin/pause` are
//! `{operator.public_url}/admin/pause`, `http://127.0.0.1:{port}/admin/pause`,
//! `http://localhost:{port}/admin/pause` and, for requests relayed over a worker link,
//! `infernet://{node npub}/admin/pause`. The `Host` header is never believed: a request signed
//! for one node cannot be replayed to another node of the same operator.

use infernet_identity::{
    Identity, PublicKey,
    dispatch::{self, DispatchKey},
    nip98::{AuthError, Received, Verifier},
};

use std::sync::Arc;

use crate::config::ValidOperator;

/// Seconds a signed request stays valid either side of the node's clock.
pub const WINDOW: u64 = 60;
/// Signed requests remembered against replays (within [`WINDOW`]).
const REPLAY_CAPACITY: usize = 10_000;
/// Router dispatches signed with NIP-98 (over a link) remembered against replays: a minute of
/// 1,000 jobs a second, or more (about 50 bytes each). Dispatches with a MAC are checked by their
/// sequence numbers and take no room here (see [`infernet_identity::dispatch`]).
pub const ROUTER_REPLAY_CAPACITY: usize = 100_000;

/// Checks operators' signed requests.
#[derive(Debug)]
pub struct OperatorAuth {
    verifier: Verifier,
    operators: Vec<PublicKey>,
    /// Origins requests may be signed for, without a trailing slash.
    bases: Vec<String>,
    /// The key this node shares with each signer, for dispatches authenticated by a MAC (see
    /// [`infernet_identity::dispatch`]); empty unless [`OperatorAuth::sharing_keys`] made them.
    shared: Vec<(PublicKey, Arc<DispatchKey>)>,
}

impl OperatorAuth {
    /// For a node with `operator` settings, serving on `port`, whose own key is `node`.
    pub fn new(operator: &ValidOperator, port: u16, node: &PublicKey) -> Self {
        Self::signed_by(
            operator.pubkeys.clone(),
            operator.public_url.as_deref(),
            port,
            node,
            REPLAY_CAPACITY,
        )
    }

    /// Requests signed by one of `signers` for this node's URLs (the public one, loopback on
    /// `port`, its link address): the routers' dispatches are checked this way too.
    /// `capacity` signed requests are remembered within the window (an admin API takes a few; a
    /// router's dispatches are every job it sends).
    pub fn signed_by(
        signers: Vec<PublicKey>,
        public_url: Option<&str>,
        port: u16,
        node: &PublicKey,
        capacity: usize,
    ) -> Self {
        let mut bases: Vec<String> = public_url.iter().map(|u| u.to_string()).collect();
        // Either scheme: the node serves HTTPS on the same port with `server.tls`.
        for scheme in ["http", "https"] {
            bases.push(format!("{scheme}://127.0.0.1:{port}"));
            bases.push(format!("{scheme}://localhost:{port}"));
        }
        bases.push(format!("infernet://{}", infernet_identity::npub(node)));
        Self {
            verifier: Verifier::new(WINDOW, capacity),
            operators: signers,
            bases,
            shared: Vec::new(),
        }
    }

    /// Also accepts dispatches authenticated by a MAC under the key `node` shares with each
    /// signer (the routers of `network.routers`). A signer whose key has no shared key (not a
    /// curve point) is still accepted with NIP-98.
    pub fn sharing_keys(mut self, node: &Identity) -> Self {
        self.shared = self
            .operators
            .iter()
            .filter_map(|k| Some((*k, Arc::new(DispatchKey::derive(node, k).ok()?))))
            .collect();
        self
    }

    /// The key shared with `router`, when it has one (see [`OperatorAuth::sharing_keys`]).
    pub fn shared_key(&self, router: &PublicKey) -> Option<&Arc<DispatchKey>> {
        self.shared.iter().find(|(k, _)| k == router).map(|(_, key)| key)
    }

    /// The operators allowed.
    pub fn operators(&self) -> &[PublicKey] {
        &self.operators
    }

    /// The operator who signed `method path_and_query` with `body`, at `now`.
    pub fn check(
        &self,
        method: &str,
        path_and_query: &str,
        authorization: Option<&str>,
        body: &[u8],
        now: u64,
    ) -> Result<PublicKey, AuthError> {
        self.check_tagged(method, path_and_query, authorization, body, now, "u")
            .map(|(signer, _)| signer)
    }

    /// A router's dispatch: the router and the client it states, from a MAC (`InfernetMAC …`,
    /// which covers `stated`, the `X-Infernet-Client` header) or from a NIP-98 event's signed
    /// `client` tag.
    pub fn check_dispatch(
        &self,
        method: &str,
        path_and_query: &str,
        (authorization, stated): (Option<&str>, Option<&str>),
        body: &[u8],
        now: u64,
    ) -> Result<(PublicKey, Option<String>), AuthError> {
        match authorization {
            Some(header) if dispatch::is_mac(header) => {
                let stated = stated.unwrap_or_default();
                let key_of = |k: &PublicKey| self.shared_key(k).map(|key| &**key);
                let router = self.received(method, path_and_query, body, |received| {
                    self.verifier.verify_mac(header, received, stated, now, key_of)
                })?;
                Ok((router, Some(stated.to_string())))
            }
            _ => self.check_tagged(method, path_and_query, authorization, body, now, "client"),
        }
    }

    /// `check` of the request as received: `method path_and_query` with `body`, signed for one
    /// of this node's URLs.
    fn received<T>(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        check: impl FnOnce(&Received<'_>) -> T,
    ) -> T {
        let urls: Vec<String> = self.bases.iter().map(|b| format!("{b}{path_and_query}")).collect();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        check(&Received {
            method,
            urls: &urls,
            body,
        })
    }

    /// [`OperatorAuth::check`], answering also the value of the signed tag `name`.
    pub fn check_tagged(
        &self,
        method: &str,
        path_and_query: &str,
        authorization: Option<&str>,
        body: &[u8],
        now: u64,
        name: &str,
    ) -> Result<(PublicKey, Option<String>), AuthError> {
        self.received(method, path_and_query, body, |received| {
            self.verifier
                .verify_tagged(authorization, received, now, |key| self.operators.contains(key), name)
        })
    }
}

#[cfg(test)]
mod tests {
    use infernet_identity::{Identity, nip98::authorization_at};

    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn requests_signed_for_this_node_by_an_operator_pass() {
        let (operator, node) = (Identity::generate(), Identity::generate());
        let settings = ValidOperator {
            pubkeys: vec![operator.public_key()],
            node_key: "unused".into(),
            public_url: Some("https://node.example".into()),
            sessions: Default::default(),
        };
        let auth = OperatorAuth::new(&settings, 4000, &node.public_key());
        let link = format!("infernet://{}/admin/pause", node.npub());
        for url in [
            "https://node.example/admin/pause",
            "https://node.example:443/admin/pause",
            "http://127.0.0.1:4000/admin/pause",
            "http://localhost:4000/admin/pause",
            link.as_str(),
        ] {
            let header = authorization_at(&operator, "POST", url, Some(b""), NOW);
            assert_eq!(
                auth.check("POST", "/admin/pause", Some(&header), b"", NOW),
                Ok(operator.public_key()),
                "{url}"
            );
        }
        // Another node's link address, another port, another host: refused.
        let other = format!("infernet://{}/admin/pause", Identity::generate().npub());
        for url in [
            other.as_str(),
            "http://127.0.0.1:4001/admin/pause",
            "https://evil.example/admin/pause",
        ] {
            let header = authorization_at(&operator, "POST", url, None, NOW);
            assert!(
                matches!(
                    auth.check("POST", "/admin/pause", Some(&header), b"", NOW),
                    Err(AuthError::Url { .. })
                ),
                "{url}"
            );
        }
        let stranger = Identity::generate();
        let header = authorization_at(&stranger, "POST", "http://127.0.0.1:4000/admin/pause", None, NOW);
        assert_eq!(
            auth.check("POST", "/admin/pause", Some(&header), b"", NOW),
            Err(AuthError::NotAllowed(stranger.npub()))
        );
    }

    #[test]
    fn a_routers_dispatch_passes_with_a_signature_or_a_mac_and_states_its_client() {
        use infernet_identity::{dispatch::DispatchKey, nip98::tagged_authorization_at};
        let (router, node, stranger) = (Identity::generate(), Identity::generate(), Identity::generate());
        let auth =
            OperatorAuth::signed_by(vec![router.public_key()], None, 4000, &node.public_key(), 100).sharing_keys(&node);
        let url = "http://127.0.0.1:4000/api/jobs";
        let body = br#"{"containers":["a"]}"#;
        let check = |header: &str, stated| auth.check_dispatch("POST", "/api/jobs", (Some(header), stated), body, NOW);
        let signed = tagged_authorization_at(&router, "POST", url, Some(body), &[["client", "10.0.0.7"]], NOW);
        assert_eq!(
            check(&signed, Some("10.0.0.7")),
            Ok((router.public_key(), Some("10.0.0.7".into())))
        );
        let key = DispatchKey::derive(&router, &node.public_key()).expect("key");
        let mac = |k: &DispatchKey, by: &Identity, client| {
            dispatch::authorization_at(k, &by.public_key(), "POST", url, client, body, NOW)
        };
        // The MAC covers the stated client: another header value is refused.
        let header = mac(&key, &router, "10.0.0.7");
        assert_eq!(check(&header, Some("10.0.0.8")), Err(AuthError::Signature));
        assert_eq!(
            check(&header, Some("10.0.0.7")),
            Ok((router.public_key(), Some("10.0.0.7".into())))
        );
        assert_eq!(check(&header, Some("10.0.0.7")), Err(AuthError::Replayed));
        // A stranger's MAC under the router's name, and a stranger under its own.
        let forged = DispatchKey::derive(&stranger, &node.public_key()).expect("key");
        assert_eq!(check(&mac(&forged, &router, "c"), Some("c")), Err(AuthError::Signature));
        assert!(matches!(
            check(&mac(&forged, &stranger, "c"), Some("c")),
            Err(AuthError::NotAllowed(_))
        ));
        // A node that shares no keys refuses MACs.
        let plain = OperatorAuth::signed_by(vec![router.public_key()], None, 4000, &node.public_key(), 100);
        assert!(matches!(
            plain.check_dispatch(
                "POST",
                "/api/jobs",
                (Some(&mac(&key, &router, "c")), Some("c")),
                body,
                NOW
            ),
            Err(AuthError::NotAllowed(_))
        ));
    }
}

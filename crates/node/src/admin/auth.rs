//! Who may manage the node: a NIP-98 signed request from one of `operator.pubkeys`, signed for a
//! URL this node is reached at. The URLs accepted for a request to `/admin/pause` are
//! `{operator.public_url}/admin/pause`, `http://127.0.0.1:{port}/admin/pause`,
//! `http://localhost:{port}/admin/pause` and, for requests relayed over a worker link,
//! `infernet://{node npub}/admin/pause`. The `Host` header is never believed: a request signed
//! for one node cannot be replayed to another node of the same operator.

use infernet_identity::{
    PublicKey,
    nip98::{AuthError, Received, Verifier},
};

use crate::config::ValidOperator;

/// Seconds a signed request stays valid either side of the node's clock.
pub const WINDOW: u64 = 60;
/// Signed requests remembered against replays (within [`WINDOW`]).
const REPLAY_CAPACITY: usize = 10_000;
/// Router dispatches remembered against replays: a minute of 1,000 jobs a second, or more
/// (about 50 bytes each).
pub const ROUTER_REPLAY_CAPACITY: usize = 100_000;

/// Checks operators' signed requests.
#[derive(Debug)]
pub struct OperatorAuth {
    verifier: Verifier,
    operators: Vec<PublicKey>,
    /// Origins requests may be signed for, without a trailing slash.
    bases: Vec<String>,
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
        }
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
        let urls: Vec<String> = self.bases.iter().map(|b| format!("{b}{path_and_query}")).collect();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let received = Received {
            method,
            urls: &urls,
            body,
        };
        self.verifier
            .verify_tagged(authorization, &received, now, |key| self.operators.contains(key), name)
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
}

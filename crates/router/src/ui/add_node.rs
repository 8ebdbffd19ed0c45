//! "Add a node": `POST /api/v1/fleet/nodes {address}` reads the node's signed statement
//! (`/identity`) and says whether it names the signed-in key, and what to set if not.
//!
//! Any signed-in key may ask, so the address is where a stranger points the router: the host is
//! resolved first and every address it resolves to is checked with the callbacks' guard
//! ([`crate::gateway::callback::is_private`]); loopback, private, link-local and unspecified ones
//! are refused unless the router runs with `--fleet-private-addresses`. The fetch then goes to
//! the addresses checked (no second lookup a rebinding name could answer differently) and follows
//! no redirect.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{
    Json,
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};
use infernet_identity::npub;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{admit, error, fleet_of, refused};
use crate::{address::NodeAddr, gateway::callback::is_private, server::RouterState};

/// What "add a node" takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNode {
    address: String,
}

/// Largest `/identity` statement read from a node.
const MAX_STATEMENT: usize = 64 * 1024;
/// How long resolving the host and reading the statement may take, each.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Addresses of one host name checked and tried at most.
const MAX_ADDRESSES: usize = 16;

/// Why an address is not fetched.
#[derive(Debug, thiserror::Error)]
pub enum AddressRefused {
    /// The host name does not resolve (or not in time).
    #[error("{host} does not resolve: {reason}")]
    Unresolved {
        /// The host.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// It resolves to an address of the router's own networks.
    #[error(
        "{host} resolves to {ip}, a loopback, private, link-local or unspecified address; this router \
         fetches only public ones (its operator can allow them with --fleet-private-addresses)"
    )]
    Private {
        /// The host.
        host: String,
        /// The address refused.
        ip: IpAddr,
    },
}

/// Why a node's statement could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    /// No HTTP answer.
    #[error("no answer: {0}")]
    NoAnswer(reqwest::Error),
    /// An answer other than 2xx (redirects are not followed).
    #[error("answered HTTP {0}")]
    Status(u16),
    /// More than [`MAX_STATEMENT`] bytes.
    #[error("answer larger than {MAX_STATEMENT} bytes")]
    TooLarge,
    /// The body broke off.
    #[error("answer cut: {0}")]
    Cut(reqwest::Error),
    /// Not UTF-8.
    #[error("answer is not text")]
    NotText,
}

/// The socket addresses of `addr`'s host, each checked unless `allow_private`.
pub async fn resolve(addr: &NodeAddr, allow_private: bool) -> Result<Vec<SocketAddr>, AddressRefused> {
    let host = addr.host.trim_start_matches('[').trim_end_matches(']');
    let unresolved = |reason: String| AddressRefused::Unresolved {
        host: host.to_string(),
        reason,
    };
    let found: Vec<SocketAddr> = match tokio::time::timeout(TIMEOUT, tokio::net::lookup_host((host, addr.port))).await {
        Ok(Ok(found)) => found.take(MAX_ADDRESSES).collect(),
        Ok(Err(e)) => return Err(unresolved(e.to_string())),
        Err(_) => return Err(unresolved(format!("no answer within {} s", TIMEOUT.as_secs()))),
    };
    if found.is_empty() {
        return Err(unresolved("no address".into()));
    }
    if !allow_private && let Some(bad) = found.iter().find(|a| is_private(a.ip())) {
        return Err(AddressRefused::Private {
            host: host.to_string(),
            ip: bad.ip(),
        });
    }
    Ok(found)
}

/// `POST /api/v1/fleet/nodes {address}`: reads the node's signed statement and says whether it
/// names the signed-in key; a node that does joins the fleet with its signed heartbeats.
pub(super) async fn add_node(
    State(state): State<Arc<RouterState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let session = match state.ui.sessions.check(&method, &headers) {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    let allowed = match admit(&state, "/api/v1/fleet/nodes", peer, &headers) {
        Ok(a) => a,
        Err(refused) => return refused.into_response(),
    };
    allowed.stamp(&state.limiter, check_node(&state, &session.signer, &body).await)
}

/// Reads the statement of the node `body` names and says what the operator `signer` must do.
async fn check_node(state: &RouterState, signer: &str, body: &[u8]) -> Response {
    let request: NewNode = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("expected {{address}}: {e}")),
    };
    let addr = match NodeAddr::parse(&request.address) {
        Some(Ok(a)) => a,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("address: {e}")),
        None => return error(StatusCode::BAD_REQUEST, "address: a node's host:port or URL"),
    };
    let resolved = match resolve(&addr, state.ui.private_addresses).await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("address: {e}")),
    };
    let url = format!("{}/identity", addr.base_url());
    let text = match fetch_statement(&addr, &resolved, &url).await {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_GATEWAY, format!("{url}: {e}")),
    };
    let checked = match infernet_identity::statement::verify(&text, "infernet-node", infernet_identity::unix_now(), 300)
    {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!("{url} did not answer a node's signed statement: {e}"),
            );
        }
    };
    let operators: Vec<String> = checked.content["operators"]
        .as_array()
        .map(|o| o.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    let names_you = operators.iter().any(|o| o == signer);
    let key = addr.key();
    let in_fleet = fleet_of(state, signer).iter().any(|n| n["key"] == key);
    let router = state.ui.bases.first().cloned().unwrap_or_default();
    let next = match (names_you, in_fleet) {
        (true, true) => "it is in your fleet".to_string(),
        (true, false) => format!(
            "it names you; it joins your fleet once its signed heartbeats reach this router: set \"stats\": {{\"endpoint\": \"{router}/api/v1/register\"}} in its config.json"
        ),
        (false, _) => format!(
            "it does not name you: add \"{signer}\" to \"operator\": {{\"pubkeys\": [...]}} in its config.json and restart it"
        ),
    };
    Json(json!({
        "address": key,
        "node": npub(&checked.signer),
        "operators": operators,
        "names_you": names_you,
        "in_fleet": in_fleet,
        "next": next,
    }))
    .into_response()
}

/// The body of `GET url` from the addresses `resolved` of `addr`'s host (checked), at most
/// [`MAX_STATEMENT`] bytes, within [`TIMEOUT`], no redirect followed.
async fn fetch_statement(addr: &NodeAddr, resolved: &[SocketAddr], url: &str) -> Result<String, StatementError> {
    let host = addr.host.trim_start_matches('[').trim_end_matches(']');
    // One client per check: it resolves the host to the addresses checked, nowhere else.
    let client = reqwest::Client::builder()
        .resolve_to_addrs(host, resolved)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .build()
        .map_err(StatementError::NoAnswer)?;
    let mut answer = client.get(url).send().await.map_err(StatementError::NoAnswer)?;
    if !answer.status().is_success() {
        return Err(StatementError::Status(answer.status().as_u16()));
    }
    let read = crate::body::read_at_most(&mut answer, MAX_STATEMENT)
        .await
        .map_err(|e| match e {
            crate::body::BodyError::TooLarge => StatementError::TooLarge,
            crate::body::BodyError::Read(e) => StatementError::Cut(e),
        })?;
    String::from_utf8(read).map_err(|_| StatementError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> NodeAddr {
        NodeAddr::parse(text).unwrap().unwrap()
    }

    #[tokio::test]
    async fn loopback_private_and_unspecified_addresses_are_refused_unless_allowed() {
        for text in [
            "127.0.0.1:4000",
            "localhost:4000",
            "[::1]:4000",
            "0.0.0.0:4000",
            "10.1.2.3:4000",
            "169.254.1.1:1",
        ] {
            let refused = resolve(&addr(text), false).await.unwrap_err();
            assert!(
                matches!(refused, AddressRefused::Private { .. })
                    && refused.to_string().contains("--fleet-private-addresses"),
                "{text}: {refused}"
            );
        }
        let allowed = resolve(&addr("127.0.0.1:4000"), true).await.unwrap();
        assert_eq!(allowed, vec![SocketAddr::from(([127, 0, 0, 1], 4000))]);
        let public = resolve(&addr("93.184.215.14:80"), false).await.unwrap();
        assert_eq!(public.len(), 1);
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_named() {
        let refused = resolve(&addr("no-such-host.invalid:4000"), false).await.unwrap_err();
        assert!(matches!(refused, AddressRefused::Unresolved { .. }), "{refused}");
        assert!(refused.to_string().contains("no-such-host.invalid"), "{refused}");
    }
}

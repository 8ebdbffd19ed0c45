//! The link: a node nobody can connect to (at home, behind NAT or a firewall) dials its router
//! (`network.url`) over one WebSocket and serves the network through it. The protocol is
//! [`infernet_types::link`]; the router's end is the router's `link` module.
//!
//! The node proves its key by signing the router's challenge (no shared secret on the wire),
//! announces what it serves, heartbeats, and answers the router's requests: each is an HTTP
//! request to this node's own API, signed by the router as any dispatch is, run through the same
//! axum router as the REST server's requests (rate limits, the router's signature check, the
//! Orchestrator), so a job over the link and a job over HTTP take one path. Answers go back in
//! chunks with the router's credit ([`WINDOW`] chunks ahead at most), many calls at once.
//!
//! A link that breaks is dialled again with the workspace's backoff (full jitter, capped); a
//! router that refuses the link (a version it does not speak, a key it refuses, too many links)
//! says why, and the node logs it.

mod session;
mod tls;

use infernet_service::websocket::{WsUrl, WsUrlError};
use std::{sync::Arc, time::Duration};

use infernet_service::retry::{RetryPolicy, Sleeper};
use infernet_types::link::WINDOW;
use tokio_util::sync::CancellationToken;

use crate::server::AppState;

pub use session::SessionError;
pub use tls::TlsError;

/// Delay bound of the first reconnection.
const BASE_DELAY: Duration = Duration::from_millis(250);
/// Longest wait between two dials.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// A link that lasted this long counts as a success: the next failure starts the backoff over.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Why `network.url` is not a link URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkUrlError {
    /// Not a URL (the text is not repeated: it may hold a credential).
    #[error("network.url is not a URL; expected wss://router.example:4100/api/v1/link")]
    NotUrl,
    /// Another scheme (the URL shown redacted).
    #[error("{0}: the link is a WebSocket, wss:// (or ws:// to a loopback address)")]
    Scheme(String),
    /// Plain text to a host that is not loopback (the URL shown redacted).
    #[error("{0}: plain ws:// is allowed only to a loopback address; use wss://")]
    Plain(String),
}

/// A checked `network.url`; logs, errors and `Debug` show it as `scheme://host[:port]/…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkUrl(WsUrl);

impl std::ops::Deref for LinkUrl {
    type Target = WsUrl;

    fn deref(&self) -> &WsUrl {
        &self.0
    }
}

impl LinkUrl {
    /// `text` as a link URL.
    pub fn parse(text: &str) -> Result<Self, LinkUrlError> {
        let url = WsUrl::parse(text).map_err(|e| match e {
            WsUrlError::NotUrl => LinkUrlError::NotUrl,
            WsUrlError::Scheme(shown) => LinkUrlError::Scheme(shown),
        })?;
        if !url.tls && !url.is_loopback() {
            return Err(LinkUrlError::Plain(url.url.redacted().to_string()));
        }
        Ok(Self(url))
    }
}

/// Keeps the node linked to `url` until `shutdown`, dialling again after each break.
pub async fn run(state: Arc<AppState>, url: LinkUrl, ca_file: Option<String>, shutdown: CancellationToken) {
    let tls = match url.tls.then(|| tls::client_config(ca_file.as_deref())).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            tracing::error!(error = %e, "link: cannot set up TLS; the node stays unlinked");
            return;
        }
    };
    let policy = RetryPolicy {
        base_delay: BASE_DELAY,
        max_delay: MAX_DELAY,
        max_attempts: u32::MAX,
    };
    let mut backoff = policy.backoff(Sleeper::default());
    loop {
        let started = tokio::time::Instant::now();
        let ended = tokio::select! {
            ended = session::run(&state, &url, tls.clone(), &shutdown) => ended,
            () = shutdown.cancelled() => return,
        };
        match &ended {
            Err(SessionError::Refused(reason)) => {
                tracing::error!(url = %url.url, %reason, "link: the router refused the link")
            }
            Err(e) => tracing::warn!(url = %url.url, error = %e, "link: broken"),
            Ok(()) => tracing::info!(url = %url.url, "link: closed"),
        }
        if started.elapsed() >= STABLE_AFTER {
            backoff.reset();
        }
        let delay = backoff.next_delay().unwrap_or(MAX_DELAY);
        tokio::select! {
            () = backoff.sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

const _: () = assert!(WINDOW > 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_links_go_to_loopback_only() {
        let ok = LinkUrl::parse("ws://127.0.0.1:4100/api/v1/link").unwrap();
        assert_eq!((ok.host.as_str(), ok.port, ok.tls), ("127.0.0.1", 4100, false));
        assert!(LinkUrl::parse("ws://localhost/api/v1/link").is_ok());
        assert!(LinkUrl::parse("ws://[::1]:1/x").is_ok());
        assert!(matches!(
            LinkUrl::parse("ws://router.example/api/v1/link"),
            Err(LinkUrlError::Plain(_))
        ));
        assert!(matches!(LinkUrl::parse("ws://10.0.0.1/x"), Err(LinkUrlError::Plain(_))));
        let tls = LinkUrl::parse("wss://router.example/api/v1/link").unwrap();
        assert_eq!((tls.port, tls.tls), (443, true));
        assert!(matches!(
            LinkUrl::parse("https://router.example/"),
            Err(LinkUrlError::Scheme(_))
        ));
        assert!(LinkUrl::parse("router:4100").is_err());
    }

    #[test]
    fn a_credential_in_the_url_never_shows() {
        let url = LinkUrl::parse("wss://u:PASS@router.example/api/v1/link?token=S3CRET").unwrap();
        assert_eq!(url.url.expose().password(), Some("PASS"), "kept for the connection");
        for shown in [format!("{url:?}"), url.url.to_string()] {
            assert!(!shown.contains("PASS") && !shown.contains("S3CRET"), "{shown}");
        }
        for bad in [
            "ws://u:PASS@router.example/x?token=S3CRET",
            "https://u:PASS@router.example/?token=S3CRET",
            "not a url PASS",
        ] {
            let e = LinkUrl::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("PASS") && !e.contains("S3CRET"), "{e}");
        }
    }
}

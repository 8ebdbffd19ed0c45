//! WebSocket clients (the node's link to its router, the router's Nostr relays): a TCP
//! connection, TLS for `wss://` (rustls over ring, the system's roots through the platform
//! verifier as reqwest uses them, plus any extra), then the handshake.

use std::sync::Arc;

use rustls::{ClientConfig, pki_types::CertificateDer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_tungstenite::{WebSocketStream, tungstenite::protocol::WebSocketConfig};

use crate::secret::SensitiveUrl;

/// A connection a WebSocket runs over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open WebSocket.
pub type Socket = WebSocketStream<Box<dyn Io>>;

/// Why a WebSocket URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsUrlError {
    /// Not a URL, or one without a host (the text is not repeated: it may hold a credential).
    #[error("not a URL with a host")]
    NotUrl,
    /// Another scheme (the URL shown redacted).
    #[error("{0}: a WebSocket URL starts with wss:// (or ws://)")]
    Scheme(String),
}

/// A checked `ws://` or `wss://` URL; logs, errors and `Debug` show it redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// The URL as given (redacted when shown).
    pub url: SensitiveUrl,
    /// Its host (without brackets).
    pub host: String,
    /// Its port (the scheme's default when not given).
    pub port: u16,
    /// `wss://`.
    pub tls: bool,
}

impl WsUrl {
    /// `text` as a WebSocket URL.
    pub fn parse(text: &str) -> Result<Self, WsUrlError> {
        let url = SensitiveUrl::parse(text.trim()).map_err(|_| WsUrlError::NotUrl)?;
        let tls = match url.expose().scheme() {
            "wss" => true,
            "ws" => false,
            _ => return Err(WsUrlError::Scheme(url.redacted().to_string())),
        };
        let host = match url.expose().host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(WsUrlError::NotUrl),
        };
        let port = url.expose().port_or_known_default().ok_or(WsUrlError::NotUrl)?;
        Ok(Self { url, host, port, tls })
    }

    /// Whether the host is this machine.
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// Why a WebSocket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The TCP connection, the TLS handshake or the WebSocket handshake failed.
    #[error("connecting: {0}")]
    Connect(String),
}

/// The TLS configuration of WebSocket clients: the system's roots and `extra_roots`.
pub fn client_tls(extra_roots: Vec<CertificateDer<'static>>) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Opens a WebSocket to `url`, over TLS with `tls` for `wss://` (required then).
pub async fn dial(url: &WsUrl, tls: Option<Arc<ClientConfig>>, config: WebSocketConfig) -> Result<Socket, DialError> {
    let fail = |e: &dyn std::fmt::Display| DialError::Connect(url.url.scrub(&e.to_string()));
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| fail(&e))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = match (url.tls, tls) {
        (false, _) => Box::new(tcp),
        (true, None) => return Err(fail(&"wss:// without a TLS configuration")),
        (true, Some(config)) => {
            let name = rustls::pki_types::ServerName::try_from(url.host.clone()).map_err(|e| fail(&e))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| fail(&e))?;
            Box::new(stream)
        }
    };
    let (socket, _) = tokio_tungstenite::client_async_with_config(url.url.expose().as_str(), io, Some(config))
        .await
        .map_err(|e| fail(&e))?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_name_host_port_and_tls() {
        let u = WsUrl::parse("wss://relay.example/x").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("relay.example", 443, true));
        let u = WsUrl::parse("ws://127.0.0.1:7000").unwrap();
        assert_eq!((u.port, u.tls, u.is_loopback()), (7000, false, true));
        assert!(!WsUrl::parse("ws://10.0.0.1").unwrap().is_loopback());
        assert!(matches!(
            WsUrl::parse("https://user:secret@relay.example"),
            Err(WsUrlError::Scheme(s)) if !s.contains("secret")
        ));
        assert_eq!(WsUrl::parse("not a url"), Err(WsUrlError::NotUrl));
    }
}

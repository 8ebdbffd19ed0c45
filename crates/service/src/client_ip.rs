//! Which address a request comes from: the TCP peer, or, when the peer is a trusted proxy, the
//! right-most address in `X-Forwarded-For` that is not a trusted proxy (the earlier entries are
//! whatever the client wrote). A body or an untrusted header never sets it.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use ipnet::IpNet;

/// A server state that says which proxies' `X-Forwarded-For` it believes.
pub trait TrustedProxies {
    /// The trusted proxies (IPs and CIDRs); empty: none.
    fn trusted_proxies(&self) -> &[IpNet];
}

/// The client's address, as an axum extractor (from the connection's [`ConnectInfo`] and the
/// state's [`TrustedProxies`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The client address of a request from `peer` with `headers`, believing only `trusted` proxies.
    pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
        let peer = peer.to_canonical();
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
        if !is_trusted(&peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical())
            .collect();
        forwarded.into_iter().rev().find(|ip| !is_trusted(ip)).unwrap_or(peer)
    }
}

/// The connection's peer address is unknown (the server was not started with connect info): 400.
#[derive(Debug)]
pub struct NoPeerAddress;

impl IntoResponse for NoPeerAddress {
    fn into_response(self) -> Response {
        crate::http::error(StatusCode::BAD_REQUEST, "Could not get client IP address")
    }
}

/// The header a router states the client of a dispatch in (its signed `client` tag says the same).
pub const CLIENT_HEADER: &str = "x-infernet-client";

/// First byte of the addresses a router states its clients as: `fd` (a unique-local IPv6
/// prefix) followed by 15 bytes of a hash of the client's identity, an address no real client of
/// a router has.
pub const STATED_PREFIX: u8 = 0xfd;

/// Whether `ip` is an address a router states a client as (`fd00::/8`): the job was dispatched by
/// a router, for a client it knows.
pub fn is_stated(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.octets()[0] == STATED_PREFIX)
}

/// The client a trusted router stated for a request it signed, set by the server that checked the
/// signature; it wins over the connection's address and `X-Forwarded-For`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatedClient(pub IpAddr);

impl<S> FromRequestParts<Arc<S>> for ClientIp
where
    S: TrustedProxies + Send + Sync,
{
    type Rejection = NoPeerAddress;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<S>) -> Result<Self, Self::Rejection> {
        if let Some(StatedClient(client)) = parts.extensions.get::<StatedClient>() {
            return Ok(Self(*client));
        }
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or(NoPeerAddress)?;
        Ok(Self(Self::resolve(peer.ip(), &parts.headers, state.trusted_proxies())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_trusted() {
        let peer: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(ClientIp::resolve(peer, &headers("10.0.0.1"), &[]), peer);
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let trusted = vec!["127.0.0.0/8".parse().unwrap()];
        // The right-most untrusted hop is the client; earlier entries are client-controlled.
        assert_eq!(
            ClientIp::resolve(proxy, &headers("1.1.1.1, 198.51.100.7, 127.0.0.2"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(ClientIp::resolve(proxy, &HeaderMap::new(), &trusted), proxy);
        assert_eq!(
            ClientIp::resolve("::ffff:203.0.113.5".parse().unwrap(), &HeaderMap::new(), &[]),
            peer
        );
    }

    #[test]
    fn garbage_in_forwarded_for_is_skipped() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            ClientIp::resolve(proxy, &headers("198.51.100.7, not-an-ip"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }
}

//! Who is asking: a client known by its API key (checked and charged by the rate-limit layer,
//! see [`crate::keys`]), by its NIP-98 signature or by its address, the extractors that find it,
//! and the gateway's error answer.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use axum::{
    Json,
    body::Bytes,
    extract::ConnectInfo,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use infernet_identity::PublicKey;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    db::DbError,
    keys::{KeyError, KeyId, Keyed},
    server::RouterState,
};

/// Who submits: a key holder, a signer, or an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Sent an API key the router's operator issued.
    ApiKey(KeyId),
    /// Signed with NIP-98.
    Key(PublicKey),
    /// Unsigned, from this address.
    Addr(IpAddr),
}

impl Client {
    /// How jobs are filed: `key:<API key id>`, `npub:<hex>` or `addr:<first 16 bytes of SHA-256
    /// of the address, hex>`.
    pub fn id(&self) -> String {
        match self {
            Self::ApiKey(id) => format!("key:{id}"),
            Self::Key(k) => format!("npub:{}", k.to_hex()),
            Self::Addr(ip) => format!("addr:{}", hex::encode(&Sha256::digest(ip.to_string().as_bytes())[..16])),
        }
    }

    /// The address nodes are told for this client: `fd` followed by 15 bytes of the SHA-256 of
    /// [`Client::id`], a unique-local IPv6 address no real client has.
    pub fn stated(&self) -> IpAddr {
        stated(&self.id())
    }
}

/// [`Client::stated`] of a client id.
pub fn stated(id: &str) -> IpAddr {
    let hash = Sha256::digest(id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes[0] = infernet_service::client_ip::STATED_PREFIX;
    bytes[1..].copy_from_slice(&hash[..15]);
    IpAddr::V6(Ipv6Addr::from(bytes))
}

/// An error answer: `{"error": …}` with its status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        tracing::warn!(error = %e, "database");
        Self(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the router's database failed: {e}"),
        )
    }
}

impl IntoResponse for KeyError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            Self::Unknown => ApiError(StatusCode::UNAUTHORIZED, message).into_response(),
            Self::OverQuota { retry_after, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after.to_string())],
                Json(json!({"error": message, "retry_after": retry_after})),
            )
                .into_response(),
            Self::Database(e) => ApiError::from(e).into_response(),
        }
    }
}

pub(super) fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// Who is asking: the API key's holder when the rate-limit layer checked one (`keyed`), the
/// NIP-98 signer when the request is signed (401 when the signature does not check out), the
/// address otherwise.
pub(super) fn client(
    state: &RouterState,
    peer: SocketAddr,
    (headers, keyed): (&HeaderMap, Option<&Keyed>),
    method: &str,
    uri: &Uri,
    body: &[u8],
) -> Result<Client, ApiError> {
    if let Some(keyed) = keyed {
        return Ok(Client::ApiKey(keyed.id));
    }
    if crate::keys::bearer(headers).is_some() {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "API keys are not taken on this route; sign the request with NIP-98 instead".into(),
        ));
    }
    let Some(authorization) = headers.get(header::AUTHORIZATION) else {
        return Ok(Client::Addr(infernet_service::client_ip::ClientIp::resolve(
            peer.ip(),
            headers,
            &state.trusted_proxies,
        )));
    };
    let gw = &state.gateway;
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let urls: Vec<String> = gw.bases.iter().map(|b| format!("{b}{path}")).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let received = infernet_identity::nip98::Received {
        method,
        urls: &urls,
        body,
    };
    gw.verifier
        .verify(
            authorization.to_str().ok(),
            &received,
            infernet_identity::unix_now(),
            |_| true,
        )
        .map(Client::Key)
        .map_err(|e| {
            ApiError(
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED),
                e.to_string(),
            )
        })
}

impl super::Gateway {
    /// Checks that `METHOD url` with `body` is signed (NIP-98) by one of `operators`: an
    /// operator's request for a linked node, before it is relayed.
    pub(crate) fn verify_relayed(
        &self,
        authorization: Option<&str>,
        method: &str,
        url: &str,
        body: &[u8],
        operators: &[infernet_identity::PublicKey],
    ) -> Result<(), infernet_identity::nip98::AuthError> {
        let received = infernet_identity::nip98::Received {
            method,
            urls: &[url],
            body,
        };
        self.relay_verifier
            .verify(authorization, &received, infernet_identity::unix_now(), |k| {
                operators.contains(k)
            })
            .map(|_| ())
    }

    /// Checks that `METHOD path_and_query` with `body` is signed by the router's own key for
    /// this replica: a call from a peer replica (they share the key).
    pub(crate) fn verify_replica(
        &self,
        authorization: Option<&str>,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<(), infernet_identity::nip98::AuthError> {
        let urls: Vec<String> = std::iter::once(self.holders.url())
            .chain(self.bases.iter().map(String::as_str))
            .map(|b| format!("{b}{path_and_query}"))
            .collect();
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let received = infernet_identity::nip98::Received {
            method,
            urls: &urls,
            body,
        };
        let own = self.identity.public_key();
        self.replica_verifier
            .verify(authorization, &received, infernet_identity::unix_now(), |k| *k == own)
            .map(|_| ())
    }
}

/// A `POST`: its client (as [`client`] finds it, the body's hash checked for a signed one), its
/// headers and its body (at most `max_body` bytes: 413 beyond).
pub struct Posted {
    /// Who sent it.
    pub client: Client,
    /// The address it came from (as the rate limiter counts it).
    pub ip: IpAddr,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// The API key it came with, as checked.
    pub keyed: Option<Keyed>,
}

impl axum::extract::FromRequest<Arc<RouterState>> for Posted {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &Arc<RouterState>) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| bad("the client's address is unknown"))?;
        let limit = state.gateway.settings.max_body;
        let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
            ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {limit} bytes, or was cut"),
            )
        })?;
        let keyed = parts.extensions.get::<Keyed>().copied();
        let client = client(
            state,
            peer,
            (&parts.headers, keyed.as_ref()),
            parts.method.as_str(),
            &parts.uri,
            &body,
        )?;
        let ip = infernet_service::client_ip::ClientIp::resolve(peer.ip(), &parts.headers, &state.trusted_proxies);
        Ok(Self {
            client,
            ip,
            headers: parts.headers,
            body,
            keyed,
        })
    }
}

/// The client of a request without a body (`GET`, `DELETE`), as [`client`] finds it.
pub struct Caller(pub Client);

impl axum::extract::FromRequestParts<Arc<RouterState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<RouterState>,
    ) -> Result<Self, Self::Rejection> {
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| bad("the client's address is unknown"))?;
        let keyed = parts.extensions.get::<Keyed>();
        client(
            state,
            peer,
            (&parts.headers, keyed),
            parts.method.as_str(),
            &parts.uri,
            b"",
        )
        .map(Self)
    }
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= 255 => Ok(Some(k.to_string())),
            _ => Err(bad("Idempotency-Key: must be 1 to 255 visible ASCII characters")),
        },
    }
}

pub(super) fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))
}

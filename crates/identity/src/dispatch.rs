//! A router's dispatches to a node, authenticated by a MAC instead of a signature per request.
//!
//! A router that lists a node's key and a node that lists the router's key in `network.routers`
//! derive one secret from their Nostr keys, each from its own secret key and the other's public
//! key (ECDH on secp256k1, the x-coordinate of the shared point, as NIP-04 and NIP-44 do), then a
//! key of this use only: `HMAC-SHA256(key = "infernet-dispatch-v1", shared x)`. Nobody else can
//! compute it. Each dispatch carries
//!
//! ```text
//! Authorization: InfernetMAC router=<hex key> at=<unix s> nonce=<32 hex> u=<url> mac=<64 hex>
//! ```
//!
//! where `mac` is HMAC-SHA256 under that key of the method, the URL, the client the router
//! states (`X-Infernet-Client`), `at`, the nonce and the SHA-256 of the body, one per line. The
//! node checks what a NIP-98 event would give it — URL, method, body, time window, one use — at
//! the cost of two hashes instead of a Schnorr verification (and the router's cost of two hashes
//! instead of a Schnorr signature): a streamed job through the gateway cost the node 99 µs of CPU
//! with a signature, about a third of it the verification.
//!
//! What it does not give: a third party cannot tell which of the two made a MAC. The statement
//! is only ever between the router and the node, so nothing needs that. The router falls back to
//! NIP-98 for nodes whose key it does not know.

use hmac::{Hmac, Mac};
use nostr::prelude::PublicKey;
use sha2::{Digest, Sha256};

use crate::{
    Identity,
    nip98::{AuthError, Received, Verifier},
};

/// The `Authorization` scheme.
pub const SCHEME: &str = "InfernetMAC";
/// Domain of the derived key and of every MAC.
const LABEL: &[u8] = b"infernet-dispatch-v1";
/// Longest header accepted (the URL is the only part of variable length).
const MAX_HEADER: usize = 4096;

/// The key a router and a node share.
#[derive(Clone)]
pub struct DispatchKey([u8; 32]);

impl std::fmt::Debug for DispatchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DispatchKey(…)")
    }
}

impl DispatchKey {
    /// The key `own` shares with `peer`: the same from either side.
    pub fn derive(own: &Identity, peer: &PublicKey) -> Result<Self, crate::KeyError> {
        let xonly = peer.xonly().map_err(|_| crate::KeyError::PublicKey("the peer's key"))?;
        // A Nostr key is x-only: take the even point, as NIP-44 does. The x-coordinate of the
        // shared point is the same whichever parity either side had.
        let point = secp256k1::PublicKey::from_x_only_public_key(xonly, secp256k1::Parity::Even);
        let shared = secp256k1::ecdh::shared_secret_point(&point, own.keys().secret_key());
        let mut kdf = <Hmac<Sha256>>::new_from_slice(LABEL).expect("HMAC takes any key length");
        kdf.update(&shared[..32]);
        Ok(Self(kdf.finalize().into_bytes().into()))
    }

    /// The MAC of one dispatch.
    fn mac(&self, fields: &Fields<'_>, body: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.0).expect("HMAC takes any key length");
        for part in [
            LABEL,
            fields.method.to_ascii_uppercase().as_bytes(),
            fields.url.as_bytes(),
            fields.client.as_bytes(),
            fields.at.to_string().as_bytes(),
            fields.nonce.as_bytes(),
            hex::encode(Sha256::digest(body)).as_bytes(),
        ] {
            mac.update(part);
            mac.update(b"\n");
        }
        mac.finalize().into_bytes().into()
    }
}

/// What a MAC covers besides the body.
struct Fields<'a> {
    method: &'a str,
    url: &'a str,
    client: &'a str,
    at: u64,
    nonce: &'a str,
}

/// The `Authorization` header of a dispatch `method url` with `body`, for `client`, from the
/// router `router` (the key's owner on the router's side), now.
pub fn authorization(
    key: &DispatchKey,
    router: &PublicKey,
    method: &str,
    url: &str,
    client: &str,
    body: &[u8],
) -> String {
    authorization_at(key, router, method, url, client, body, crate::unix_now())
}

/// [`authorization`] at a given time.
pub fn authorization_at(
    key: &DispatchKey,
    router: &PublicKey,
    method: &str,
    url: &str,
    client: &str,
    body: &[u8],
    at: u64,
) -> String {
    let nonce = crate::nip98::nonce();
    let fields = Fields {
        method,
        url,
        client,
        at,
        nonce: &nonce,
    };
    let mac = hex::encode(key.mac(&fields, body));
    format!(
        "{SCHEME} router={} at={at} nonce={nonce} u={url} mac={mac}",
        router.to_hex()
    )
}

/// Whether `header` is a dispatch MAC (rather than a NIP-98 event).
pub fn is_mac(header: &str) -> bool {
    header
        .trim_start()
        .get(..SCHEME.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(SCHEME))
}

/// The parts of a header.
struct Parsed<'a> {
    router: PublicKey,
    at: u64,
    nonce: &'a str,
    url: &'a str,
    mac: [u8; 32],
}

fn parse(header: &str) -> Result<Parsed<'_>, AuthError> {
    if header.len() > MAX_HEADER {
        return Err(AuthError::TooLarge);
    }
    let malformed = AuthError::Malformed("expected `InfernetMAC router=… at=… nonce=… u=… mac=…`");
    let rest = header.trim().get(SCHEME.len()..).ok_or(malformed.clone())?;
    let (mut router, mut at, mut nonce, mut url, mut mac) = (None, None, None, None, None);
    for part in rest.split_ascii_whitespace() {
        let (name, value) = part.split_once('=').ok_or(malformed.clone())?;
        let slot = match name {
            "router" => &mut router,
            "at" => &mut at,
            "nonce" => &mut nonce,
            "u" => &mut url,
            "mac" => &mut mac,
            _ => return Err(malformed),
        };
        if slot.replace(value).is_some() {
            return Err(malformed);
        }
    }
    let (Some(router), Some(at), Some(nonce), Some(url), Some(mac)) = (router, at, nonce, url, mac) else {
        return Err(malformed);
    };
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(mac, &mut bytes).map_err(|_| AuthError::Malformed("`mac` is not 64 hex digits"))?;
    if nonce.is_empty() || nonce.len() > 64 {
        return Err(AuthError::Malformed("`nonce` must be 1 to 64 characters"));
    }
    Ok(Parsed {
        router: PublicKey::from_hex(router).map_err(|_| AuthError::Malformed("`router` is not a hex key"))?,
        at: at
            .parse()
            .map_err(|_| AuthError::Malformed("`at` is not a Unix time"))?,
        nonce,
        url,
        mac: bytes,
    })
}

impl Verifier {
    /// The router and the client it states, when `header` is a valid dispatch MAC for
    /// `received` from a router `key_of` has a key for, at `now`, not seen before.
    pub fn verify_mac<'k>(
        &self,
        header: &str,
        received: &Received<'_>,
        client: &str,
        now: u64,
        key_of: impl FnOnce(&PublicKey) -> Option<&'k DispatchKey>,
    ) -> Result<PublicKey, AuthError> {
        let parsed = parse(header)?;
        let key = key_of(&parsed.router).ok_or_else(|| AuthError::NotAllowed(crate::npub(&parsed.router)))?;
        let fields = Fields {
            method: received.method,
            url: parsed.url,
            client,
            at: parsed.at,
            nonce: parsed.nonce,
        };
        // Constant time: the comparison must not tell a forger how much of a guess was right.
        if !constant_eq(&key.mac(&fields, received.body), &parsed.mac) {
            return Err(AuthError::Signature);
        }
        let skew = now.abs_diff(parsed.at);
        if skew > self.window() {
            return Err(AuthError::Stale {
                skew,
                window: self.window(),
            });
        }
        crate::nip98::check_url(parsed.url, received)?;
        // The MAC is unique per dispatch (its nonce): it stands for the event id.
        self.remember(parsed.mac, parsed.at, now)?;
        Ok(parsed.router)
    }
}

fn constant_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:4000/api/jobs/stream";
    const NOW: u64 = 1_800_000_000;

    fn received<'a>(method: &'a str, urls: &'a [&'a str], body: &'a [u8]) -> Received<'a> {
        Received { method, urls, body }
    }

    #[test]
    fn both_sides_derive_the_same_key_and_no_one_else_does() {
        for _ in 0..20 {
            let (router, node, other) = (Identity::generate(), Identity::generate(), Identity::generate());
            let a = DispatchKey::derive(&router, &node.public_key()).expect("key");
            let b = DispatchKey::derive(&node, &router.public_key()).expect("key");
            let c = DispatchKey::derive(&other, &node.public_key()).expect("key");
            assert_eq!(a.0, b.0);
            assert_ne!(a.0, c.0);
        }
    }

    #[test]
    fn a_dispatch_passes_once_and_every_change_is_refused() {
        let (router, node) = (Identity::generate(), Identity::generate());
        let theirs = DispatchKey::derive(&router, &node.public_key()).expect("key");
        let ours = DispatchKey::derive(&node, &router.public_key()).expect("key");
        let verifier = Verifier::new(60, 100);
        let urls = [URL];
        let key_of = |k: &PublicKey| (*k == router.public_key()).then_some(&ours);
        let header = authorization_at(&theirs, &router.public_key(), "POST", URL, "10.0.0.7", b"{}", NOW - 30);
        assert!(is_mac(&header) && !is_mac("Nostr abc"));
        let ok = |h: &str, method, body: &[u8], client, now| {
            verifier.verify_mac(h, &received(method, &urls, body), client, now, key_of)
        };
        // Every change of what the MAC covers is refused before the one right request passes.
        assert_eq!(
            ok(&header, "POST", b"{\"x\":1}", "10.0.0.7", NOW),
            Err(AuthError::Signature)
        );
        assert_eq!(ok(&header, "GET", b"{}", "10.0.0.7", NOW), Err(AuthError::Signature));
        assert_eq!(ok(&header, "POST", b"{}", "10.0.0.8", NOW), Err(AuthError::Signature));
        let moved = header.replace("at=", "at=1");
        assert_eq!(ok(&moved, "POST", b"{}", "10.0.0.7", NOW), Err(AuthError::Signature));
        let elsewhere = header.replace("4000/api", "4001/api");
        assert_eq!(
            ok(&elsewhere, "POST", b"{}", "10.0.0.7", NOW),
            Err(AuthError::Signature)
        );
        assert_eq!(
            ok(&header, "POST", b"{}", "10.0.0.7", NOW + 40),
            Err(AuthError::Stale { skew: 70, window: 60 })
        );
        assert_eq!(ok(&header, "post", b"{}", "10.0.0.7", NOW), Ok(router.public_key()));
        assert_eq!(ok(&header, "POST", b"{}", "10.0.0.7", NOW), Err(AuthError::Replayed));
        // A URL this node is not reached at, MAC'd correctly, is still refused.
        let other_node = "http://10.1.1.1:4000/api/jobs/stream";
        let header = authorization_at(&theirs, &router.public_key(), "POST", other_node, "c", b"", NOW);
        assert!(matches!(ok(&header, "POST", b"", "c", NOW), Err(AuthError::Url { .. })));
    }

    #[test]
    fn strangers_and_garbage_are_refused() {
        let (router, node, stranger) = (Identity::generate(), Identity::generate(), Identity::generate());
        let ours = DispatchKey::derive(&node, &router.public_key()).expect("key");
        let forged = DispatchKey::derive(&stranger, &node.public_key()).expect("key");
        let verifier = Verifier::new(60, 100);
        let urls = [URL];
        let key_of = |k: &PublicKey| (*k == router.public_key()).then_some(&ours);
        let check = |h: &str| verifier.verify_mac(h, &received("POST", &urls, b""), "c", NOW, key_of);
        // A stranger's key, claiming to be the router: the MAC does not check out.
        let claimed = authorization_at(&forged, &router.public_key(), "POST", URL, "c", b"", NOW);
        assert_eq!(check(&claimed), Err(AuthError::Signature));
        // A stranger under its own name: not a router this node lists.
        let own = authorization_at(&forged, &stranger.public_key(), "POST", URL, "c", b"", NOW);
        assert!(matches!(check(&own), Err(AuthError::NotAllowed(_))));
        for garbage in [
            "InfernetMAC",
            "InfernetMAC router=zz at=1 nonce=n u=x mac=00",
            "InfernetMAC at=1 at=2",
            "InfernetMAC whatever",
        ] {
            assert!(matches!(check(garbage), Err(AuthError::Malformed(_))), "{garbage}");
        }
        assert_eq!(check(&"x".repeat(5000)), Err(AuthError::TooLarge));
    }
}

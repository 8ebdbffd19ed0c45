//! Signed HTTP requests (NIP-98): `Authorization: Nostr <base64 of a kind-27235 event>` whose tags
//! name the URL (`u`), the method and the SHA-256 of the body (`payload`).
//!
//! [`authorization`] makes the header a client sends. A server checks it with a [`Verifier`], in
//! this order: the header's form and size, the event's kind, its age (within the window either
//! way), the URL (one of the forms the server is reached at, compared as parsed URLs so `HOST:80`
//! and `host` match), the method, the body's hash (required whenever there is a body), whether
//! the signer may make the request, its id and signature (the costly check, last but one), and
//! last that the event was not used before.
//! Only events from allowed signers enter the replay cache, so strangers cannot fill it.
//!
//! The check is written here rather than taken from `nostr::nips::nip98`, whose method type has no
//! `DELETE` and whose errors do not say which check failed.

use std::{collections::HashMap, sync::Mutex};

use base64::{Engine, engine::general_purpose::STANDARD};
use nostr::prelude::{Event, EventBuilder, Kind, PublicKey, Tag, Timestamp};
use sha2::{Digest, Sha256};

use crate::Identity;

/// The event kind of NIP-98 HTTP auth.
pub const KIND: u16 = 27235;
/// Largest event accepted, in bytes of JSON (a NIP-98 event is a few hundred).
pub const MAX_EVENT: usize = 16 * 1024;
/// The header's scheme.
const SCHEME: &str = "Nostr ";

/// Why a signed request was refused. Every variant is a 401 but [`AuthError::Busy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("this endpoint needs a NIP-98 `Authorization: Nostr …` header signed by an allowed key")]
    Missing,
    /// The header is not `Nostr <base64 event>`.
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    /// The event is larger than [`MAX_EVENT`].
    #[error("the signed event is larger than {MAX_EVENT} bytes")]
    TooLarge,
    /// The event is not of kind 27235.
    #[error("the signed event is of kind {0}, not 27235 (NIP-98)")]
    Kind(u16),
    /// The id or the signature does not check out.
    #[error("the event's id or signature is invalid")]
    Signature,
    /// `created_at` is outside the window.
    #[error(
        "the event was signed {skew} s away from the server's clock; at most {window} s is accepted (check the clock)"
    )]
    Stale {
        /// Seconds between `created_at` and now.
        skew: u64,
        /// The window.
        window: u64,
    },
    /// The `u` tag is missing or names another URL.
    #[error("the event's `u` tag is {signed:?}, not the URL requested ({expected})")]
    Url {
        /// What was signed.
        signed: String,
        /// What the server is reached at.
        expected: String,
    },
    /// The `method` tag is missing or names another method.
    #[error("the event's `method` tag is {signed:?}, not {expected}")]
    Method {
        /// What was signed.
        signed: String,
        /// The request's method.
        expected: String,
    },
    /// A request with a body has no `payload` tag.
    #[error("the request has a body but the event has no `payload` tag (hex SHA-256 of the body)")]
    PayloadMissing,
    /// The body's hash is not the signed one.
    #[error("the body does not match the event's `payload` hash")]
    PayloadMismatch,
    /// The signer may not make this request.
    #[error("key {0} is not allowed here")]
    NotAllowed(String),
    /// The event was used before.
    #[error("this signed event was used before; sign each request anew")]
    Replayed,
    /// The replay cache is full of live events.
    #[error("too many signed requests in the last window; retry shortly")]
    Busy,
    /// A dispatch arrived further behind the newest of its sequence than is kept.
    #[error("this dispatch arrived more than {window} dispatches behind the newest of its sequence; send it anew")]
    Behind {
        /// How far behind is kept.
        window: u64,
    },
}

impl AuthError {
    /// The HTTP status to answer with: 503 for [`AuthError::Busy`], 401 for the rest.
    pub fn status(&self) -> u16 {
        if matches!(self, Self::Busy) { 503 } else { 401 }
    }
}

/// The `Authorization` header value for `method url` with `body`, signed by `identity` now.
pub fn authorization(identity: &Identity, method: &str, url: &str, body: Option<&[u8]>) -> String {
    authorization_at(identity, method, url, body, crate::unix_now())
}

/// [`authorization`] with a given `created_at`.
pub fn authorization_at(identity: &Identity, method: &str, url: &str, body: Option<&[u8]>, created_at: u64) -> String {
    tagged_authorization_at(identity, method, url, body, &[], created_at)
}

/// [`authorization`] with extra tags (`[name, value]`), covered by the signature: a router states
/// the client it dispatches for this way.
pub fn tagged_authorization(
    identity: &Identity,
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    extra: &[[&str; 2]],
) -> String {
    tagged_authorization_at(identity, method, url, body, extra, crate::unix_now())
}

/// [`tagged_authorization`] with a given `created_at`.
pub fn tagged_authorization_at(
    identity: &Identity,
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    extra: &[[&str; 2]],
    created_at: u64,
) -> String {
    let mut tags = vec![
        tag(&["u", url]),
        tag(&["method", &method.to_ascii_uppercase()]),
        tag(&["nonce", &nonce()]),
    ];
    if let Some(body) = body {
        tags.push(tag(&["payload", &hex::encode(Sha256::digest(body))]));
    }
    tags.extend(extra.iter().map(|t| tag(t)));
    let event = EventBuilder::new(Kind::Custom(KIND), "")
        .tags(tags)
        .custom_created_at(Timestamp::from_secs(created_at))
        .sign_with(identity);
    format!("{SCHEME}{}", STANDARD.encode(event.as_json()))
}

/// A value no other request carries, so two identical requests in one second are two events (the
/// server accepts each event once). Unique, not secret: the time in nanoseconds and a per-process
/// random number that changes with every call.
pub(crate) fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}{:016x}", unique())
}

/// A number unique to each call, not secret: std's per-process random hash keys, which change
/// with every call, over the time in nanoseconds.
pub(crate) fn unique() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn tag(parts: &[&str]) -> Tag {
    Tag::parse(parts.iter().copied()).expect("a tag with a name always parses")
}

/// A signing context (its tables are static), blinded once with a random seed against side
/// channels, as `nostr`'s own is.
static SIGNING: std::sync::LazyLock<secp256k1::Secp256k1<secp256k1::SignOnly>> = std::sync::LazyLock::new(|| {
    use rand::RngCore;
    let mut context = secp256k1::Secp256k1::signing_only();
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    context.seeded_randomize(&seed);
    context
});

/// Signing by an [`Identity`], for the event builders of this crate.
pub(crate) trait SignWith {
    /// The event, signed.
    fn sign_with(self, identity: &Identity) -> Event;
}

impl SignWith for EventBuilder {
    /// Signs without checking the signature just made: `nostr`'s signer verifies each event it
    /// signs, which doubled the cost of every signed dispatch of a router. BIP-340's auxiliary
    /// randomness comes from the thread's CSPRNG (seeded from the system's, reseeded as it goes)
    /// rather than a `getrandom` call per signature.
    fn sign_with(self, identity: &Identity) -> Event {
        use nostr::event::FinalizeUnsignedEvent;
        use rand::RngCore;
        let keys = identity.keys();
        let unsigned = self.finalize_unsigned(keys.public_key());
        let id = unsigned.id.unwrap_or_else(|| unsigned.compute_id());
        let mut aux = [0u8; 32];
        rand::rng().fill_bytes(&mut aux);
        let sig = keys.sign_schnorr_with_aux_rand(&SIGNING, id.as_bytes(), &aux);
        Event::new(
            id,
            unsigned.pubkey,
            unsigned.created_at,
            unsigned.kind,
            unsigned.tags,
            unsigned.content,
            sig,
        )
    }
}

/// What the server received, to check a signed request against.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// The request's method.
    pub method: &'a str,
    /// The URLs the request may have been signed for: the public URL of what was requested and,
    /// for requests relayed over a worker link, `infernet://<node npub><path>`.
    pub urls: &'a [&'a str],
    /// The body (empty for none).
    pub body: &'a [u8],
}

/// Checks signed requests; holds the ids of recent events to refuse replays.
#[derive(Debug)]
pub struct Verifier {
    window: u64,
    capacity: usize,
    /// Event id → `created_at`, for the events accepted within the window.
    seen: Mutex<HashMap<[u8; 32], u64>>,
    /// Routers' dispatch sequences (see [`crate::dispatch`]).
    sequences: Mutex<crate::dispatch::Sequences>,
}

impl Verifier {
    /// Accepts events signed at most `window` seconds from now, remembering up to `capacity` of them.
    pub fn new(window: u64, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            seen: Mutex::new(HashMap::new()),
            sequences: Mutex::default(),
        }
    }

    /// The signer of `header` when it signs `received` at `now` and `allowed` says yes.
    pub fn verify(
        &self,
        header: Option<&str>,
        received: &Received<'_>,
        now: u64,
        allowed: impl FnOnce(&PublicKey) -> bool,
    ) -> Result<PublicKey, AuthError> {
        self.verify_event(header, received, now, allowed).map(|e| e.pubkey)
    }

    /// [`Verifier::verify`], answering the signer and the value of its tag `name` (the first one).
    pub fn verify_tagged(
        &self,
        header: Option<&str>,
        received: &Received<'_>,
        now: u64,
        allowed: impl FnOnce(&PublicKey) -> bool,
        name: &str,
    ) -> Result<(PublicKey, Option<String>), AuthError> {
        let event = self.verify_event(header, received, now, allowed)?;
        Ok((event.pubkey, tag_value(&event, name).map(str::to_owned)))
    }

    fn verify_event(
        &self,
        header: Option<&str>,
        received: &Received<'_>,
        now: u64,
        allowed: impl FnOnce(&PublicKey) -> bool,
    ) -> Result<Event, AuthError> {
        let event = decode(header.ok_or(AuthError::Missing)?)?;
        let kind = event.kind.as_u16();
        if kind != KIND {
            return Err(AuthError::Kind(kind));
        }
        // The cheap checks first: a stranger's or a stale event costs no signature check (a
        // Schnorr verification is most of the cost of a refused request).
        let created = event.created_at.as_secs();
        let skew = now.abs_diff(created);
        if skew > self.window {
            return Err(AuthError::Stale {
                skew,
                window: self.window,
            });
        }
        check_tags(&event, received)?;
        if !allowed(&event.pubkey) {
            return Err(AuthError::NotAllowed(crate::npub(&event.pubkey)));
        }
        event.verify().map_err(|_| AuthError::Signature)?;
        self.remember(event.id.to_bytes(), created, now)?;
        Ok(event)
    }

    /// Seconds either side of now a request may have been made.
    pub(crate) fn window(&self) -> u64 {
        self.window
    }

    /// The routers' dispatch sequences seen.
    pub(crate) fn sequences(&self) -> &Mutex<crate::dispatch::Sequences> {
        &self.sequences
    }

    /// Records a fresh event id; refuses one seen before.
    pub(crate) fn remember(&self, id: [u8; 32], created: u64, now: u64) -> Result<(), AuthError> {
        let mut seen = self.seen.lock().expect("replay cache poisoned");
        if seen.contains_key(&id) {
            return Err(AuthError::Replayed);
        }
        if seen.len() >= self.capacity {
            // Events older than the window are refused as stale anyway.
            let oldest = now.saturating_sub(self.window);
            seen.retain(|_, created| *created >= oldest);
            if seen.len() >= self.capacity {
                return Err(AuthError::Busy);
            }
        }
        seen.insert(id, created);
        Ok(())
    }
}

/// The event of a `Nostr <base64>` header.
fn decode(header: &str) -> Result<Event, AuthError> {
    let header = header.trim();
    let encoded = header
        .get(..SCHEME.len())
        .filter(|scheme| scheme.eq_ignore_ascii_case(SCHEME))
        .map(|_| header[SCHEME.len()..].trim())
        .ok_or(AuthError::Malformed("expected `Nostr <base64 event>`"))?;
    if encoded.len() > MAX_EVENT.div_ceil(3) * 4 {
        return Err(AuthError::TooLarge);
    }
    let json = STANDARD
        .decode(encoded)
        .map_err(|_| AuthError::Malformed("the event is not base64"))?;
    Event::from_json(json).map_err(|_| AuthError::Malformed("the base64 text is not a Nostr event"))
}

/// The first value of the tag named `name`.
fn tag_value<'e>(event: &'e Event, name: &str) -> Option<&'e str> {
    event
        .tags
        .iter()
        .map(Tag::as_slice)
        .find(|t| t.first().map(String::as_str) == Some(name))
        .and_then(|t| t.get(1))
        .map(String::as_str)
}

/// Whether `signed` is one of the URLs the request may have been signed for.
pub(crate) fn check_url(signed: &str, received: &Received<'_>) -> Result<(), AuthError> {
    // The same text first: a signer builds the URL as the server lists it, and parsing two URLs
    // per candidate was most of a router dispatch's check on the node.
    if !received.urls.contains(&signed) && !received.urls.iter().any(|url| same_url(signed, url)) {
        return Err(AuthError::Url {
            signed: signed.chars().take(200).collect(),
            expected: received.urls.first().copied().unwrap_or_default().to_string(),
        });
    }
    Ok(())
}

fn check_tags(event: &Event, received: &Received<'_>) -> Result<(), AuthError> {
    check_url(tag_value(event, "u").unwrap_or_default(), received)?;
    let method = tag_value(event, "method").unwrap_or_default();
    if !method.eq_ignore_ascii_case(received.method) {
        return Err(AuthError::Method {
            signed: method.chars().take(20).collect(),
            expected: received.method.to_string(),
        });
    }
    match tag_value(event, "payload") {
        None if received.body.is_empty() => Ok(()),
        None => Err(AuthError::PayloadMissing),
        Some(hash) if hash.eq_ignore_ascii_case(&hex::encode(Sha256::digest(received.body))) => Ok(()),
        Some(_) => Err(AuthError::PayloadMismatch),
    }
}

/// Whether two URLs are the same once parsed (scheme and host in any case, default ports implied).
fn same_url(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://node.example:4000/admin/pause";
    const NOW: u64 = 1_800_000_000;

    fn check(verifier: &Verifier, header: &str, method: &str, body: &[u8]) -> Result<PublicKey, AuthError> {
        let received = Received {
            method,
            urls: &[URL, "infernet://npub1node/admin/pause"],
            body,
        };
        verifier.verify(Some(header), &received, NOW, |_| true)
    }

    #[test]
    fn extra_tags_are_signed_and_read_back() {
        let router = Identity::generate();
        let verifier = Verifier::new(60, 16);
        let header = tagged_authorization_at(&router, "POST", URL, Some(b"{}"), &[["client", "10.0.0.7"]], NOW);
        let received = Received {
            method: "POST",
            urls: &[URL],
            body: b"{}",
        };
        assert_eq!(
            verifier.verify_tagged(Some(&header), &received, NOW, |_| true, "client"),
            Ok((router.public_key(), Some("10.0.0.7".into())))
        );
        let plain = authorization_at(&router, "POST", URL, Some(b"{}"), NOW);
        assert_eq!(
            verifier.verify_tagged(Some(&plain), &received, NOW, |_| true, "client"),
            Ok((router.public_key(), None))
        );
    }

    #[test]
    fn a_well_signed_request_passes_once() {
        let operator = Identity::generate();
        let verifier = Verifier::new(60, 16);
        let header = authorization_at(&operator, "POST", URL, Some(b"{}"), NOW - 30);
        assert_eq!(check(&verifier, &header, "POST", b"{}"), Ok(operator.public_key()));
        assert_eq!(check(&verifier, &header, "POST", b"{}"), Err(AuthError::Replayed));
        // The relayed form of the URL, the default port spelt out, any case of the host.
        let relayed = authorization_at(&operator, "post", "infernet://npub1node/admin/pause", None, NOW);
        assert_eq!(check(&verifier, &relayed, "POST", b""), Ok(operator.public_key()));
        let spelt = authorization_at(&operator, "GET", "HTTPS://Node.Example:4000/admin/pause", None, NOW);
        assert_eq!(check(&verifier, &spelt, "GET", b""), Ok(operator.public_key()));
    }

    #[test]
    fn the_same_request_twice_in_one_second_is_two_requests() {
        let operator = Identity::generate();
        let verifier = Verifier::new(60, 16);
        let first = authorization_at(&operator, "GET", URL, None, NOW);
        let second = authorization_at(&operator, "GET", URL, None, NOW);
        assert_eq!(check(&verifier, &first, "GET", b""), Ok(operator.public_key()));
        assert_eq!(check(&verifier, &second, "GET", b""), Ok(operator.public_key()));
    }

    #[test]
    fn each_mismatch_is_refused_with_its_reason() {
        let operator = Identity::generate();
        let verifier = Verifier::new(60, 16);
        let sign = |method, url, body: Option<&[u8]>, at| authorization_at(&operator, method, url, body, at);
        let cases: Vec<(String, &str, &[u8], AuthError)> = vec![
            (
                sign("POST", URL, Some(b"{}"), NOW - 61),
                "POST",
                b"{}",
                AuthError::Stale { skew: 61, window: 60 },
            ),
            (
                sign("POST", URL, Some(b"{}"), NOW + 61),
                "POST",
                b"{}",
                AuthError::Stale { skew: 61, window: 60 },
            ),
            (
                sign("POST", "https://node.example:4000/admin/resume", Some(b"{}"), NOW),
                "POST",
                b"{}",
                AuthError::Url {
                    signed: "https://node.example:4000/admin/resume".into(),
                    expected: URL.into(),
                },
            ),
            (
                sign("GET", URL, Some(b"{}"), NOW),
                "POST",
                b"{}",
                AuthError::Method {
                    signed: "GET".into(),
                    expected: "POST".into(),
                },
            ),
            (sign("POST", URL, None, NOW), "POST", b"{}", AuthError::PayloadMissing),
            (
                sign("POST", URL, Some(b"{}"), NOW),
                "POST",
                b"{\"x\":1}",
                AuthError::PayloadMismatch,
            ),
        ];
        for (header, method, body, want) in cases {
            assert_eq!(check(&verifier, &header, method, body), Err(want));
        }
        assert_eq!(
            verifier.verify(
                None,
                &Received {
                    method: "GET",
                    urls: &[URL],
                    body: b""
                },
                NOW,
                |_| true
            ),
            Err(AuthError::Missing)
        );
        for bad in ["Bearer x", "Nostr !!!", "Nostr e30="] {
            assert!(
                matches!(check(&verifier, bad, "GET", b""), Err(AuthError::Malformed(_))),
                "{bad}"
            );
        }
        let huge = format!("Nostr {}", "A".repeat(MAX_EVENT * 2));
        assert_eq!(check(&verifier, &huge, "GET", b""), Err(AuthError::TooLarge));
    }

    #[test]
    fn a_forged_signature_or_another_kind_is_refused() {
        let operator = Identity::generate();
        let verifier = Verifier::new(60, 16);
        let header = authorization_at(&operator, "GET", URL, None, NOW);
        let mut event: serde_json::Value =
            serde_json::from_slice(&STANDARD.decode(&header[SCHEME.len()..]).unwrap()).unwrap();
        // Claim another key's signature: same event, someone else's pubkey.
        let claimed = Identity::generate().public_key();
        event["pubkey"] = claimed.to_hex().into();
        let forged = format!("{SCHEME}{}", STANDARD.encode(event.to_string()));
        assert_eq!(check(&verifier, &forged, "GET", b""), Err(AuthError::Signature));
        // When the claimed key may not sign here, the signature is not even checked.
        let only_operator = |k: &PublicKey| *k == operator.public_key();
        let received = Received {
            method: "GET",
            urls: &[URL],
            body: b"",
        };
        assert_eq!(
            verifier.verify(Some(&forged), &received, NOW, only_operator),
            Err(AuthError::NotAllowed(crate::npub(&claimed)))
        );

        let note = EventBuilder::new(Kind::TextNote, "")
            .tags([tag(&["u", URL]), tag(&["method", "GET"])])
            .custom_created_at(Timestamp::from_secs(NOW))
            .sign_with(&operator);
        let note = format!("{SCHEME}{}", STANDARD.encode(note.as_json()));
        assert_eq!(check(&verifier, &note, "GET", b""), Err(AuthError::Kind(1)));
    }

    #[test]
    fn only_allowed_signers_are_remembered_and_the_cache_is_bounded() {
        let operator = Identity::generate();
        let stranger = Identity::generate();
        let verifier = Verifier::new(60, 2);
        let received = Received {
            method: "GET",
            urls: &[URL],
            body: b"",
        };
        let allowed = |key: &PublicKey| *key == operator.public_key();
        for at in [NOW - 3, NOW - 2, NOW - 1] {
            let header = authorization_at(&stranger, "GET", URL, None, at);
            let refused = verifier.verify(Some(&header), &received, NOW, allowed);
            assert_eq!(refused, Err(AuthError::NotAllowed(stranger.npub())));
        }
        for at in [NOW - 2, NOW - 1] {
            let header = authorization_at(&operator, "GET", URL, None, at);
            assert!(verifier.verify(Some(&header), &received, NOW, allowed).is_ok());
        }
        let third = authorization_at(&operator, "GET", URL, None, NOW);
        assert_eq!(
            verifier.verify(Some(&third), &received, NOW, allowed),
            Err(AuthError::Busy)
        );
        // Once the first two are out of the window, there is room again.
        let later = authorization_at(&operator, "GET", URL, None, NOW + 61);
        assert!(verifier.verify(Some(&later), &received, NOW + 61, allowed).is_ok());
        assert_eq!(AuthError::Busy.status(), 503);
        assert_eq!(AuthError::Replayed.status(), 401);
    }
}

//! A router's dispatches to a node, authenticated by a MAC instead of a signature per request.
//!
//! A router that lists a node's key and a node that lists the router's key in `network.routers`
//! derive one secret from their Nostr keys, each from its own secret key and the other's public
//! key (ECDH on secp256k1, the x-coordinate of the shared point, as NIP-04 and NIP-44 do), then a
//! key of this use only: `HMAC-SHA256(key = "infernet-dispatch-v1", shared x)`. Nobody else can
//! compute it. Each dispatch carries
//!
//! ```text
//! Authorization: InfernetMAC router=<hex key> at=<unix s> seq=<16 hex>.<n> u=<url> mac=<64 hex>
//! ```
//!
//! where `mac` is HMAC-SHA256 under that key of the method, the URL, the client the router
//! states (`X-Infernet-Client`), `at`, `seq` and the SHA-256 of the body, one per line. The
//! node checks what a NIP-98 event would give it — URL, method, body, time window, one use — at
//! the cost of two hashes instead of a Schnorr verification (and the router's cost of two hashes
//! instead of a Schnorr signature): a streamed job through the gateway cost the node 99 µs of CPU
//! with a signature, about a third of it the verification.
//!
//! One use is checked without remembering every dispatch. `seq` is a sequence: a random stream
//! number the router draws when it derives the key (so per router process and node), then a
//! counter. The node keeps, per router and stream, the highest number seen and which of the
//! [`SEQ_WINDOW`] before it were used (as IPsec and WireGuard do against replays): a few hundred
//! bytes per router process, whatever its rate. A list of every MAC of the last minute would cap
//! the rate a node takes dispatches at (it held 100,000: 1,667 a second). A dispatch that arrives
//! more than [`SEQ_WINDOW`] behind the newest of its stream is refused; the router then tries
//! another node.
//!
//! What it does not give: a third party cannot tell which of the two made a MAC. The statement
//! is only ever between the router and the node, so nothing needs that. The router falls back to
//! NIP-98 for nodes whose key it does not know.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
};

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
/// How far behind the newest dispatch of its stream a dispatch may arrive (dispatches to one node
/// overtake each other on their way: they are sent concurrently).
pub const SEQ_WINDOW: u64 = 4096;
/// Router streams a node keeps (each a router process, [`SEQ_WINDOW`] bits plus a few words); a
/// stream unused for longer than the time window is forgotten, since all its dispatches are
/// refused as stale from then on.
pub const MAX_STREAMS: usize = 1024;

/// The key a router and a node share and, on the router's side, the sequence of its dispatches.
pub struct DispatchKey {
    key: [u8; 32],
    /// The other side's key.
    peer: PublicKey,
    /// This key's stream (see the module's documentation).
    stream: u64,
    /// The next dispatch's number in the stream.
    next: AtomicU64,
}

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
        Ok(Self {
            key: kdf.finalize().into_bytes().into(),
            peer: *peer,
            // Different for every key derived, within and across processes.
            stream: crate::nip98::unique(),
            next: AtomicU64::new(0),
        })
    }

    /// The MAC of one dispatch.
    fn mac(&self, fields: &Fields<'_>, body: &[u8]) -> [u8; 32] {
        self.hmac(&[
            LABEL,
            fields.method.to_ascii_uppercase().as_bytes(),
            fields.url.as_bytes(),
            fields.client.as_bytes(),
            fields.at.to_string().as_bytes(),
            fields.seq.as_bytes(),
            hex::encode(Sha256::digest(body)).as_bytes(),
        ])
    }

    /// HMAC-SHA256 under this key of `parts`, each followed by a newline.
    fn hmac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.key).expect("HMAC takes any key length");
        for part in parts {
            mac.update(part);
            mac.update(b"\n");
        }
        mac.finalize().into_bytes().into()
    }
}

/// Domain of a receipt's MAC.
const RECEIPT_LABEL: &[u8] = b"infernet-receipt-mac-v1";

impl DispatchKey {
    /// The key of the other side (the node's, on the router's side).
    pub fn peer(&self) -> &PublicKey {
        &self.peer
    }

    /// The MAC (hex) of a receipt the node sends back in the answer to a dispatch: it tells the
    /// router the receipt comes from the node (the only other holder of the key), so that the
    /// router can take it without a signature check (see
    /// [`crate::statement::read_vouched`]).
    pub fn receipt_mac(&self, receipt: &[u8]) -> String {
        hex::encode(self.receipt_mac_bytes(receipt))
    }

    /// Whether `mac` (hex) is [`DispatchKey::receipt_mac`] of `receipt`.
    pub fn check_receipt_mac(&self, receipt: &[u8], mac: &str) -> bool {
        let mut given = [0u8; 32];
        hex::decode_to_slice(mac, &mut given).is_ok() && constant_eq(&self.receipt_mac_bytes(receipt), &given)
    }

    fn receipt_mac_bytes(&self, receipt: &[u8]) -> [u8; 32] {
        self.hmac(&[RECEIPT_LABEL, receipt])
    }
}

/// What a MAC covers besides the body.
struct Fields<'a> {
    method: &'a str,
    url: &'a str,
    client: &'a str,
    at: u64,
    seq: &'a str,
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
    let seq = format!("{:016x}.{}", key.stream, key.next.fetch_add(1, Ordering::Relaxed));
    let fields = Fields {
        method,
        url,
        client,
        at,
        seq: &seq,
    };
    let mac = hex::encode(key.mac(&fields, body));
    format!(
        "{SCHEME} router={} at={at} seq={seq} u={url} mac={mac}",
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
    /// As sent (the MAC covers it so), and as read: stream and number.
    seq: (&'a str, u64, u64),
    url: &'a str,
    mac: [u8; 32],
}

fn parse(header: &str) -> Result<Parsed<'_>, AuthError> {
    if header.len() > MAX_HEADER {
        return Err(AuthError::TooLarge);
    }
    let malformed = AuthError::Malformed("expected `InfernetMAC router=… at=… seq=… u=… mac=…`");
    let rest = header.trim().get(SCHEME.len()..).ok_or(malformed.clone())?;
    let (mut router, mut at, mut seq, mut url, mut mac) = (None, None, None, None, None);
    for part in rest.split_ascii_whitespace() {
        let (name, value) = part.split_once('=').ok_or(malformed.clone())?;
        let slot = match name {
            "router" => &mut router,
            "at" => &mut at,
            "seq" => &mut seq,
            "u" => &mut url,
            "mac" => &mut mac,
            _ => return Err(malformed),
        };
        if slot.replace(value).is_some() {
            return Err(malformed);
        }
    }
    let (Some(router), Some(at), Some(seq), Some(url), Some(mac)) = (router, at, seq, url, mac) else {
        return Err(malformed);
    };
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(mac, &mut bytes).map_err(|_| AuthError::Malformed("`mac` is not 64 hex digits"))?;
    let bad_seq = AuthError::Malformed("`seq` is not `<16 hex digits>.<number>`");
    let (stream, n) = seq.split_once('.').ok_or(bad_seq.clone())?;
    let stream = match stream.len() {
        16 => u64::from_str_radix(stream, 16).map_err(|_| bad_seq.clone())?,
        _ => return Err(bad_seq),
    };
    let n = n.parse().map_err(|_| bad_seq)?;
    Ok(Parsed {
        router: PublicKey::from_hex(router).map_err(|_| AuthError::Malformed("`router` is not a hex key"))?,
        at: at
            .parse()
            .map_err(|_| AuthError::Malformed("`at` is not a Unix time"))?,
        seq: (seq, stream, n),
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
            seq: parsed.seq.0,
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
        let (_, stream, n) = parsed.seq;
        self.sequences().lock().expect("sequences poisoned").accept(
            (parsed.router.to_bytes(), stream),
            n,
            parsed.at,
            now,
            self.window(),
        )?;
        Ok(parsed.router)
    }
}

/// The dispatches used, per router and stream (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct Sequences {
    streams: HashMap<([u8; 32], u64), Stream>,
}

/// One stream's newest number, which of the [`SEQ_WINDOW`] numbers up to it were used (bit
/// `n % SEQ_WINDOW`), and the latest `at` it was used with.
#[derive(Debug)]
struct Stream {
    newest: u64,
    used: Box<[u64; (SEQ_WINDOW / 64) as usize]>,
    latest_at: u64,
}

impl Stream {
    fn bit(n: u64) -> (usize, u64) {
        let i = n % SEQ_WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// Marks `n` used; refuses it when used before or too far behind.
    fn mark(&mut self, n: u64) -> Result<(), AuthError> {
        if n > self.newest {
            // The numbers up to `n` are unused yet; their bits held those now out of reach.
            if n - self.newest >= SEQ_WINDOW {
                self.used.fill(0);
            } else {
                for skipped in self.newest + 1..=n {
                    let (word, bit) = Self::bit(skipped);
                    self.used[word] &= !bit;
                }
            }
            self.newest = n;
        } else if self.newest - n >= SEQ_WINDOW {
            return Err(AuthError::Behind { window: SEQ_WINDOW });
        }
        let (word, bit) = Self::bit(n);
        if self.used[word] & bit != 0 {
            return Err(AuthError::Replayed);
        }
        self.used[word] |= bit;
        Ok(())
    }
}

impl Sequences {
    /// Marks number `n` of `stream` used by a dispatch made `at`; refuses a number used before,
    /// one too far behind, and a new stream when [`MAX_STREAMS`] are live.
    fn accept(&mut self, stream: ([u8; 32], u64), n: u64, at: u64, now: u64, window: u64) -> Result<(), AuthError> {
        if !self.streams.contains_key(&stream) && self.streams.len() >= MAX_STREAMS {
            // A stream whose every dispatch is stale by now can be replayed no more.
            self.streams.retain(|_, s| s.latest_at.saturating_add(window) >= now);
            if self.streams.len() >= MAX_STREAMS {
                return Err(AuthError::Busy);
            }
        }
        let s = self.streams.entry(stream).or_insert_with(|| Stream {
            newest: n,
            used: Box::new([0; (SEQ_WINDOW / 64) as usize]),
            latest_at: at,
        });
        s.mark(n)?;
        s.latest_at = s.latest_at.max(at);
        Ok(())
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

    /// A router and a node: the router, its side of the key, and the node's.
    fn pair() -> (Identity, DispatchKey, DispatchKey) {
        let (router, node) = (Identity::generate(), Identity::generate());
        let theirs = DispatchKey::derive(&router, &node.public_key()).expect("key");
        let ours = DispatchKey::derive(&node, &router.public_key()).expect("key");
        (router, theirs, ours)
    }

    #[test]
    fn both_sides_derive_the_same_key_and_no_one_else_does() {
        for _ in 0..20 {
            let (router, node, other) = (Identity::generate(), Identity::generate(), Identity::generate());
            let a = DispatchKey::derive(&router, &node.public_key()).expect("key");
            let b = DispatchKey::derive(&node, &router.public_key()).expect("key");
            let c = DispatchKey::derive(&other, &node.public_key()).expect("key");
            assert_eq!(a.key, b.key);
            assert_ne!(a.key, c.key);
            assert_ne!(a.stream, b.stream, "each key has its own stream");
            assert_eq!((a.peer(), b.peer()), (&node.public_key(), &router.public_key()));
        }
    }

    #[test]
    fn a_dispatch_passes_once_and_every_change_is_refused() {
        let (router, theirs, ours) = pair();
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
    fn a_receipt_mac_checks_only_with_the_shared_key_and_the_same_receipt() {
        let (router, node, stranger) = (Identity::generate(), Identity::generate(), Identity::generate());
        let ours = DispatchKey::derive(&node, &router.public_key()).expect("key");
        let theirs = DispatchKey::derive(&router, &node.public_key()).expect("key");
        let forged = DispatchKey::derive(&stranger, &router.public_key()).expect("key");
        let mac = ours.receipt_mac(b"{\"job\":\"a\"}");
        assert!(theirs.check_receipt_mac(b"{\"job\":\"a\"}", &mac));
        assert!(!theirs.check_receipt_mac(b"{\"job\":\"b\"}", &mac));
        assert!(!theirs.check_receipt_mac(b"{\"job\":\"a\"}", &forged.receipt_mac(b"{\"job\":\"a\"}")));
        assert!(!theirs.check_receipt_mac(b"{\"job\":\"a\"}", "not hex"));
        assert!(!theirs.check_receipt_mac(b"{\"job\":\"a\"}", &mac[..62]));
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
            "InfernetMAC router=zz at=1 seq=n u=x mac=00",
            "InfernetMAC at=1 at=2",
            "InfernetMAC whatever",
        ] {
            assert!(matches!(check(garbage), Err(AuthError::Malformed(_))), "{garbage}");
        }
        assert_eq!(check(&"x".repeat(5000)), Err(AuthError::TooLarge));
    }

    #[test]
    fn a_busy_router_is_never_refused_for_its_rate_and_each_dispatch_passes_once() {
        let (router, theirs, ours) = pair();
        // The old list of MACs held 100,000 and refused the rest within the minute.
        let verifier = Verifier::new(60, 100);
        let urls = [URL];
        let key_of = |k: &PublicKey| (*k == router.public_key()).then_some(&ours);
        let check = |h: &str| verifier.verify_mac(h, &received("POST", &urls, b""), "c", NOW, key_of);
        let mut made: Vec<String> = (0..150_000)
            .map(|_| authorization_at(&theirs, &router.public_key(), "POST", URL, "c", b"", NOW))
            .collect();
        // Dispatches overtake each other on the way: swap neighbours in blocks of 1,000.
        for block in made.chunks_mut(1000) {
            block.reverse();
        }
        for (i, header) in made.iter().enumerate() {
            assert_eq!(check(header), Ok(router.public_key()), "dispatch {i}");
        }
        // Each once: an old one, the newest, one just behind.
        for i in [0, 149_999, 149_500] {
            let expected = match i {
                0 => Err(AuthError::Behind { window: SEQ_WINDOW }),
                _ => Err(AuthError::Replayed),
            };
            assert_eq!(check(&made[i]), expected, "replay of {i}");
        }
        // Numbers skipped over (sent to another node, or lost) stay usable while within reach.
        let skipped = authorization_at(&theirs, &router.public_key(), "POST", URL, "c", b"", NOW);
        theirs.next.fetch_add(10, Ordering::Relaxed);
        let later = authorization_at(&theirs, &router.public_key(), "POST", URL, "c", b"", NOW);
        assert_eq!(check(&later), Ok(router.public_key()));
        assert_eq!(check(&skipped), Ok(router.public_key()));
        assert_eq!(check(&skipped), Err(AuthError::Replayed));
        // A forged `seq` does not check out: the MAC covers it.
        let moved = later.replace(".150011 ", ".150012 ");
        assert_ne!(moved, later);
        assert_eq!(check(&moved), Err(AuthError::Signature));
    }

    #[test]
    fn router_streams_are_bounded_and_forgotten_once_stale() {
        let (router, node) = (Identity::generate(), Identity::generate());
        let ours = DispatchKey::derive(&node, &router.public_key()).expect("key");
        let verifier = Verifier::new(60, 100);
        let urls = [URL];
        let key_of = |k: &PublicKey| (*k == router.public_key()).then_some(&ours);
        let check = |h: &str, now| verifier.verify_mac(h, &received("POST", &urls, b""), "c", now, key_of);
        // Every router process (every derived key) is a stream.
        let streams: Vec<DispatchKey> = (0..=MAX_STREAMS)
            .map(|_| DispatchKey::derive(&router, &node.public_key()).expect("key"))
            .collect();
        let header = |k: &DispatchKey, at| authorization_at(k, &router.public_key(), "POST", URL, "c", b"", at);
        for k in &streams[..MAX_STREAMS] {
            assert_eq!(check(&header(k, NOW), NOW), Ok(router.public_key()));
        }
        let last = &streams[MAX_STREAMS];
        assert_eq!(check(&header(last, NOW), NOW), Err(AuthError::Busy));
        assert_eq!(AuthError::Busy.status(), 503);
        // Once the others' dispatches are all stale, their streams make room.
        assert_eq!(check(&header(last, NOW + 61), NOW + 61), Ok(router.public_key()));
        // A known stream is never refused for room.
        assert_eq!(check(&header(last, NOW + 61), NOW + 61), Ok(router.public_key()));
    }
}

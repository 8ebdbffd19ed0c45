//! Identity for the Infernet network: who an operator, a node or a router is, and how they prove it.
//!
//! Every identity is a Nostr key (secp256k1, BIP-340 Schnorr; `npub`/`nsec` as NIP-19 writes them),
//! handled by the `nostr` crate (the dispatch MAC by `secp256k1`'s ECDH and `hmac`): no cryptographic
//! primitive is written here.
//! - [`dm`] — private direct messages (NIP-17: sealed, gift-wrapped, NIP-44 encrypted);
//! - [`keys`] — an [`Identity`] (a secret key, kept in a 0600 file) and public keys in either text form;
//! - [`nip98`] — signed HTTP requests (NIP-98): the header a client sends, and the [`nip98::Verifier`]
//!   a server runs (time window, URL, method, body hash, signature, replay cache);
//! - [`dispatch`] — a router's dispatches to a node it shares a key with (ECDH): a MAC per
//!   request instead of a signature;
//! - [`statement`] — signed statements: a JSON document a key vouches for (a node's identity, its
//!   heartbeat), checked by anyone who holds the statement.

pub mod dispatch;
pub mod dm;
pub mod keys;
pub mod nip98;
pub mod statement;

pub use keys::{Identity, KeyError, PublicKey, npub, parse_public_key};

/// Seconds since the Unix epoch, as Nostr events count time.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

//! The link protocol: a node that nobody can connect to dials its router over one WebSocket and
//! serves the network through it.
//!
//! Every WebSocket message is one binary frame: a 4-byte big-endian length, that many bytes of a
//! JSON [`Message`] (the header), then the payload (a request's body, a chunk of an answer; empty
//! for the rest). Bodies travel as raw bytes, never inside JSON.
//!
//! A link's life:
//! 1. the router sends [`Message::Challenge`] (the versions it speaks, a fresh nonce, its key);
//! 2. the node answers [`Message::Hello`]: its version and a statement signed by its own key
//!    (a Nostr event, see `infernet_identity::statement`) holding the nonce, the router's key
//!    and the node's [`Announce`] (containers, hardware, prices, availability). No shared secret
//!    crosses the wire; the router learns the node's key from the signature;
//! 3. the router answers [`Message::Welcome`] or [`Message::Refused`] (a version it does not
//!    speak, a bad signature, too many links) and closes: the node logs the reason;
//! 4. then, both ways at once: the node's [`Message::Heartbeat`]s; the router's
//!    [`Message::Request`]s, each an HTTP request to the node's own API (a job, a stream, a
//!    result read, a cancel, an operator's signed command), answered by [`Message::Head`], the
//!    body as [`Message::Chunk`]s and [`Message::End`] (with the answer's trailers, when it has
//!    any). Many calls run at once, told apart by their `call` number.
//!
//! Back-pressure: a node sends at most [`WINDOW`] chunks of a call ahead of the
//! [`Message::Credit`]s the router returns as its client takes them, so a slow client holds up
//! only its own call and the router buffers at most `WINDOW` × [`MAX_CHUNK`] bytes per call.
//!
//! Compatibility: the frame layout and the `type` and `version` fields of the hello never change,
//! so a router always reads the version of a node it cannot otherwise understand, and refuses it
//! by name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Hardware, settings::Price};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// The `d` tag of a node's signed hello statement.
pub const HELLO_SUBJECT: &str = "infernet-link-hello";
/// Largest header (the JSON part of a frame).
pub const MAX_HEADER: usize = 256 * 1024;
/// Largest chunk of an answer a node sends in one frame.
pub const MAX_CHUNK: usize = 64 * 1024;
/// Chunks of one call a node may send ahead of the router's credit.
pub const WINDOW: u32 = 16;
/// Largest frame a router accepts from a node: a header or a chunk with its header.
pub const MAX_NODE_FRAME: usize = MAX_HEADER + MAX_CHUNK + 4;
/// Calls a router runs at once on one link.
pub const MAX_CALLS: usize = 1024;
/// Longest path of a request.
pub const MAX_PATH: usize = 4096;

/// What a node states about itself: what the router's probe of `/info` reads from a reachable
/// node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announce {
    /// Containers it serves.
    pub containers: Vec<AnnouncedContainer>,
    /// Jobs pending (off-chain and on-chain): its load.
    #[serde(default)]
    pub pending: u64,
    /// Price per container id.
    #[serde(default)]
    pub pricing: BTreeMap<String, Price>,
    /// Taking new jobs (its schedule, pause or drain allow).
    #[serde(default = "yes")]
    pub open: bool,
    /// When closed: when it opens again.
    #[serde(default)]
    pub available_at: Option<String>,
    /// Its host's resources.
    #[serde(default)]
    pub hardware: Option<Hardware>,
    /// It checks dispatches authenticated by a MAC under the key it shares with the router (as
    /// `dispatch_mac: 1` in `/info` says), in place of NIP-98 signatures; its receipts then come
    /// with that MAC too. A node of an earlier version says nothing: signatures, as before.
    #[serde(default)]
    pub dispatch_mac: bool,
}

impl Default for Announce {
    /// Nothing served, open.
    fn default() -> Self {
        Self {
            containers: Vec::new(),
            pending: 0,
            pricing: BTreeMap::new(),
            open: true,
            available_at: None,
            hardware: None,
            dispatch_mac: false,
        }
    }
}

/// A container a node serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncedContainer {
    /// Container id.
    pub id: String,
    /// Shown to users.
    #[serde(default)]
    pub description: String,
    /// Accepts jobs from outside.
    #[serde(default = "yes")]
    pub external: bool,
}

fn yes() -> bool {
    true
}

/// The content of a node's signed hello statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloContent {
    /// The router's challenge, as sent.
    pub nonce: String,
    /// The router's key (`npub1…`) the hello is meant for: a hello cannot be replayed to another
    /// router.
    pub router: String,
    /// The protocol version.
    pub version: u32,
    /// Operators (`npub1…`) the node says it belongs to.
    #[serde(default)]
    pub operators: Vec<String>,
    /// What it serves.
    pub announce: Announce,
}

/// One frame's header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Router → node, first: prove your key.
    Challenge {
        /// Versions the router speaks.
        versions: Vec<u32>,
        /// Sign this.
        nonce: String,
        /// The router's key, `npub1…`.
        router: String,
    },
    /// Node → router, first.
    Hello {
        /// The protocol version the node speaks.
        version: u32,
        /// The JSON of a Nostr event by the node's key, subject [`HELLO_SUBJECT`], content
        /// [`HelloContent`].
        statement: String,
    },
    /// Router → node: the link is up.
    Welcome {
        /// The node's key as the router knows it, `npub1…`.
        node: String,
        /// Seconds between heartbeats the router expects; past three times that the link is
        /// closed.
        heartbeat_s: u64,
    },
    /// Router → node: the link is refused or closed, and why; the router closes it next.
    Refused {
        /// For the node's log.
        reason: String,
    },
    /// Node → router: what it serves now.
    Heartbeat {
        /// Its state.
        announce: Announce,
    },
    /// Router → node: an HTTP request to the node's API; the payload is its body.
    Request {
        /// Call number, unique on the link while the call runs.
        call: u64,
        /// `GET`, `POST`, `DELETE`…
        method: String,
        /// Path and query (`/api/jobs?id=…`).
        path: String,
        /// The router's NIP-98 `Authorization`, signed for `infernet://{node npub}{path}`.
        #[serde(default)]
        authorization: Option<String>,
        /// The client the router states (`X-Infernet-Client`).
        #[serde(default)]
        client: Option<String>,
    },
    /// Node → router: an answer's status.
    Head {
        /// Call number.
        call: u64,
        /// HTTP status.
        status: u16,
        /// Its `Content-Type`.
        #[serde(default)]
        content_type: Option<String>,
    },
    /// Node → router: a piece of an answer's body (the payload), at most [`MAX_CHUNK`] bytes.
    Chunk {
        /// Call number.
        call: u64,
    },
    /// Node → router: the answer is whole (`error: None`) or broke off.
    End {
        /// Call number.
        call: u64,
        /// Why it broke off.
        #[serde(default)]
        error: Option<String>,
        /// The answer's HTTP trailers, by name (a stream's receipt, [`crate::RECEIPT_TRAILER`]);
        /// a router that knows none ignores them.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        trailers: BTreeMap<String, String>,
    },
    /// Router → node: the client took `chunks` more chunks of the call.
    Credit {
        /// Call number.
        call: u64,
        /// Chunks.
        chunks: u32,
    },
    /// Router → node: the call's client is gone; stop it.
    Cancel {
        /// Call number.
        call: u64,
    },
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than its length prefix says.
    #[error("a frame shorter than its header length")]
    Short,
    /// A header larger than [`MAX_HEADER`].
    #[error("a frame header larger than {MAX_HEADER} bytes")]
    HeaderTooLarge,
    /// The header is not a message of this version.
    #[error("not a link message: {0}")]
    NotMessage(String),
}

/// `message` and `payload` as one frame.
pub fn encode(message: &Message, payload: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(message).expect("a message serialises");
    let mut frame = Vec::with_capacity(4 + header.len() + payload.len());
    frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
    frame.extend_from_slice(&header);
    frame.extend_from_slice(payload);
    frame
}

/// The header bytes and the payload of `frame`.
pub fn split(frame: &[u8]) -> Result<(&[u8], &[u8]), FrameError> {
    let (len, rest) = frame.split_first_chunk::<4>().ok_or(FrameError::Short)?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > MAX_HEADER {
        return Err(FrameError::HeaderTooLarge);
    }
    if rest.len() < len {
        return Err(FrameError::Short);
    }
    Ok(rest.split_at(len))
}

/// The message and payload of `frame`.
pub fn decode(frame: &[u8]) -> Result<(Message, &[u8]), FrameError> {
    let (header, payload) = split(frame)?;
    let message = serde_json::from_slice(header).map_err(|e| FrameError::NotMessage(e.to_string()))?;
    Ok((message, payload))
}

/// The version a hello frame states, whatever else it holds (`None`: not a hello).
pub fn hello_version(frame: &[u8]) -> Option<u32> {
    #[derive(Deserialize)]
    struct Probe {
        r#type: String,
        version: u32,
    }
    let (header, _) = split(frame).ok()?;
    let probe: Probe = serde_json::from_slice(header).ok()?;
    (probe.r#type == "hello").then_some(probe.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_a_header_and_raw_bytes() {
        let m = Message::Chunk { call: 7 };
        let frame = encode(&m, b"\x00\xffdata");
        let (back, payload) = decode(&frame).unwrap();
        assert_eq!(back, m);
        assert_eq!(payload, b"\x00\xffdata");
    }

    #[test]
    fn an_end_carries_trailers_and_reads_without_them() {
        let old = br#"{"type":"end","call":3,"error":null}"#;
        let Message::End { call, trailers, .. } = serde_json::from_slice(old).unwrap() else {
            panic!("not an end")
        };
        assert_eq!((call, trailers.len()), (3, 0));
        let plain = Message::End {
            call: 3,
            error: None,
            trailers: BTreeMap::new(),
        };
        assert!(!serde_json::to_string(&plain).unwrap().contains("trailers"));
        let m = Message::End {
            call: 4,
            error: None,
            trailers: BTreeMap::from([(crate::RECEIPT_TRAILER.to_string(), "{}".to_string())]),
        };
        assert_eq!(decode(&encode(&m, b"")).unwrap().0, m);
    }

    #[test]
    fn a_frame_that_lies_about_its_length_is_refused() {
        let mut frame = encode(&Message::Cancel { call: 1 }, b"");
        frame.truncate(frame.len() - 1);
        assert_eq!(decode(&frame).unwrap_err(), FrameError::Short);
        let mut huge = (MAX_HEADER as u32 + 1).to_be_bytes().to_vec();
        huge.extend_from_slice(&[b' '; 16]);
        assert_eq!(decode(&huge).unwrap_err(), FrameError::HeaderTooLarge);
        assert_eq!(decode(b"\x00\x00").unwrap_err(), FrameError::Short);
    }

    #[test]
    fn the_version_of_a_future_hello_is_read_though_the_rest_is_not() {
        let future = br#"{"type":"hello","version":9,"proof":{"new":"layout"}}"#;
        let mut frame = (future.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(future);
        assert_eq!(hello_version(&frame), Some(9));
        assert!(decode(&frame).is_err());
        let now = encode(
            &Message::Hello {
                version: VERSION,
                statement: "{}".into(),
            },
            b"",
        );
        assert_eq!(hello_version(&now), Some(VERSION));
        assert_eq!(hello_version(&encode(&Message::Cancel { call: 1 }, b"")), None);
    }
}

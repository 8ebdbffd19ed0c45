//! Private direct messages (NIP-17): a kind-14 message ("rumor", unsigned) sealed for one
//! receiver (kind 13, signed by the sender, NIP-44 v2 encrypted) and gift-wrapped (kind 1059,
//! signed by a one-time key, encrypted again, tagged `p` with the receiver). A relay sees only
//! the receiver's key; the receiver alone learns who wrote what. The `nostr` crate does the
//! cryptography; this module only names the two ends.

use nostr::{
    event::FinalizeEvent,
    nips::{nip17::PrivateDirectMessageBuilder, nip59},
    prelude::{Event, Kind, PublicKey},
};

use crate::Identity;

/// Largest gift wrap [`unwrap`] reads, in bytes of JSON.
pub const MAX_GIFT_WRAP: usize = 256 * 1024;

/// Why a message could not be wrapped or unwrapped.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    /// Encryption or signing failed (the `nostr` crate said why).
    #[error("cannot wrap the message: {0}")]
    Wrap(String),
    /// Not a gift wrap to this key, or one whose seal does not check out.
    #[error("not a gift wrap this key can open: {0}")]
    Unwrap(String),
    /// Larger than [`MAX_GIFT_WRAP`].
    #[error("the gift wrap is larger than {MAX_GIFT_WRAP} bytes")]
    TooLarge,
}

/// A gift wrap ready for relays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiftWrap {
    /// The event's id (hex): relays answer `["OK", id, …]`.
    pub id: String,
    /// The event's JSON.
    pub json: String,
}

/// A message taken out of its gift wrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Who sealed it (checked: the seal's signature).
    pub sender: PublicKey,
    /// The rumor's author (the same key as the seal's, checked).
    pub author: PublicKey,
    /// The rumor's kind (14 for a direct message).
    pub kind: u16,
    /// The message.
    pub content: String,
}

/// `message` from `from` to `to`, gift-wrapped (NIP-17; no copy for the sender).
pub fn wrap(from: &Identity, to: &PublicKey, message: &str) -> Result<GiftWrap, DmError> {
    let event: Event = PrivateDirectMessageBuilder::new(*to, message)
        .finalize(from.keys())
        .map_err(|e| DmError::Wrap(e.to_string()))?;
    Ok(GiftWrap {
        id: event.id.to_hex(),
        json: event.as_json(),
    })
}

/// Opens a gift wrap (its JSON) sent to `to`.
pub fn unwrap(to: &Identity, gift_wrap: &str) -> Result<Opened, DmError> {
    if gift_wrap.len() > MAX_GIFT_WRAP {
        return Err(DmError::TooLarge);
    }
    let fail = |e: &dyn std::fmt::Display| DmError::Unwrap(e.to_string());
    let event = Event::from_json(gift_wrap).map_err(|e| fail(&e))?;
    if event.kind != Kind::GiftWrap {
        return Err(DmError::Unwrap(format!("kind {}, not 1059", event.kind.as_u16())));
    }
    event.verify().map_err(|e| fail(&e))?;
    let gift = nip59::extract_rumor(to.keys(), &event).map_err(|e| fail(&e))?;
    Ok(Opened {
        sender: gift.sender,
        author: gift.rumor.pubkey,
        kind: gift.rumor.kind.as_u16(),
        content: gift.rumor.content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_receiver_opens_it_and_learns_the_sender() {
        let (router, operator, stranger) = (Identity::generate(), Identity::generate(), Identity::generate());
        let wrapped = wrap(&router, &operator.public_key(), "[FIRING] offline on n1").unwrap();
        let event: serde_json::Value = serde_json::from_str(&wrapped.json).unwrap();
        assert_eq!(event["kind"], 1059);
        assert_eq!(event["id"], wrapped.id.as_str());
        assert_eq!(
            event["tags"],
            serde_json::json!([["p", operator.public_key().to_hex()]])
        );
        // Neither the sender nor the message shows outside.
        assert_ne!(event["pubkey"], router.public_key().to_hex());
        assert!(!wrapped.json.contains("offline"));

        let opened = unwrap(&operator, &wrapped.json).unwrap();
        assert_eq!(opened.sender, router.public_key());
        assert_eq!(opened.author, router.public_key());
        assert_eq!(opened.kind, 14);
        assert_eq!(opened.content, "[FIRING] offline on n1");
        assert!(matches!(unwrap(&stranger, &wrapped.json), Err(DmError::Unwrap(_))));
        assert!(matches!(unwrap(&operator, "{}"), Err(DmError::Unwrap(_))));
        let tampered = wrapped.json.replacen("\"content\":\"", "\"content\":\"A", 1);
        assert!(matches!(unwrap(&operator, &tampered), Err(DmError::Unwrap(_))));
    }
}

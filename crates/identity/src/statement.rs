//! Signed statements: a JSON document that a key vouches for, such as a node's identity (its key,
//! its operators, its URL and containers) or a heartbeat. A statement is a Nostr event of kind
//! 30078 (NIP-78, application data) whose `d` tag names what it states and whose content is the
//! document; anyone holding it can check who signed it and when, without asking the signer.

use nostr::prelude::{Event, EventBuilder, Kind, PublicKey, Tag, Timestamp};
use serde::Serialize;

use crate::{Identity, nip98::SignWith};

/// The event kind of a statement (NIP-78: arbitrary application data).
pub const KIND: u16 = 30078;
/// Largest statement accepted, in bytes of JSON.
pub const MAX_STATEMENT: usize = 256 * 1024;

/// Why a statement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// Larger than [`MAX_STATEMENT`].
    #[error("the statement is larger than {MAX_STATEMENT} bytes")]
    TooLarge,
    /// Not a Nostr event.
    #[error("not a signed Nostr event")]
    Malformed,
    /// Not a statement of the expected subject.
    #[error("not a statement of kind {KIND} about {expected:?}")]
    Subject {
        /// The `d` tag expected.
        expected: String,
    },
    /// The id or signature does not check out.
    #[error("the statement's id or signature is invalid")]
    Signature,
    /// Signed too long ago, or in the future.
    #[error("the statement was signed {skew} s away from this clock; at most {max_age} s is accepted")]
    Stale {
        /// Seconds between `created_at` and now.
        skew: u64,
        /// Largest accepted.
        max_age: u64,
    },
    /// The content is not JSON.
    #[error("the statement's content is not JSON")]
    Content,
}

/// A checked statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// Who signed it.
    pub signer: PublicKey,
    /// When (Unix seconds).
    pub created_at: u64,
    /// The document.
    pub content: serde_json::Value,
}

/// `content` about `subject`, signed by `identity` now, as the JSON of its event.
pub fn sign<T: Serialize>(identity: &Identity, subject: &str, content: &T) -> serde_json::Result<String> {
    sign_at(identity, subject, content, crate::unix_now())
}

/// [`sign`] with a given `created_at`.
pub fn sign_at<T: Serialize>(
    identity: &Identity,
    subject: &str,
    content: &T,
    created_at: u64,
) -> serde_json::Result<String> {
    let event = EventBuilder::new(Kind::Custom(KIND), serde_json::to_string(content)?)
        .tag(Tag::parse(["d", subject]).expect("a tag with a name always parses"))
        .custom_created_at(Timestamp::from_secs(created_at))
        .sign_with(identity);
    Ok(event.as_json())
}

/// Checks a statement about `subject` signed at most `max_age` seconds from `now`.
pub fn verify(json: &str, subject: &str, now: u64, max_age: u64) -> Result<Statement, StatementError> {
    read(json, subject, now, max_age, true)
}

/// A statement whose origin something else vouches for (a MAC under a key only its signer and the
/// reader hold, [`crate::dispatch::DispatchKey::check_receipt_mac`]): every check of [`verify`]
/// but the signature's (a Schnorr verification, the most of a statement's cost), which whoever
/// later holds the statement can still make.
pub fn read_vouched(json: &str, subject: &str, now: u64, max_age: u64) -> Result<Statement, StatementError> {
    read(json, subject, now, max_age, false)
}

fn read(json: &str, subject: &str, now: u64, max_age: u64, check_signature: bool) -> Result<Statement, StatementError> {
    if json.len() > MAX_STATEMENT {
        return Err(StatementError::TooLarge);
    }
    let event = Event::from_json(json).map_err(|_| StatementError::Malformed)?;
    let about = event
        .tags
        .iter()
        .map(Tag::as_slice)
        .find(|t| t.first().map(String::as_str) == Some("d"))
        .and_then(|t| t.get(1));
    if event.kind.as_u16() != KIND || about.map(String::as_str) != Some(subject) {
        return Err(StatementError::Subject {
            expected: subject.to_string(),
        });
    }
    if check_signature {
        event.verify().map_err(|_| StatementError::Signature)?;
    }
    let created_at = event.created_at.as_secs();
    let skew = now.abs_diff(created_at);
    if skew > max_age {
        return Err(StatementError::Stale { skew, max_age });
    }
    let content = serde_json::from_str(&event.content).map_err(|_| StatementError::Content)?;
    Ok(Statement {
        signer: event.pubkey,
        created_at,
        content,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_statement_names_its_signer_and_resists_tampering() {
        let node = Identity::generate();
        let doc = json!({"operators": ["npub1a"], "url": "https://node.example:4000"});
        let signed = sign_at(&node, "infernet-node", &doc, 1_000).unwrap();
        let checked = verify(&signed, "infernet-node", 1_030, 60).unwrap();
        assert_eq!(checked.signer, node.public_key());
        assert_eq!(checked.content, doc);
        assert_eq!(checked.created_at, 1_000);

        let tampered = signed.replace("npub1a", "npub1b");
        assert_eq!(
            verify(&tampered, "infernet-node", 1_030, 60),
            Err(StatementError::Signature)
        );
        assert_eq!(
            verify(&signed, "infernet-heartbeat", 1_030, 60),
            Err(StatementError::Subject {
                expected: "infernet-heartbeat".into()
            })
        );
        assert_eq!(
            verify(&signed, "infernet-node", 1_061, 60),
            Err(StatementError::Stale { skew: 61, max_age: 60 })
        );
        assert_eq!(verify("{}", "infernet-node", 1_000, 60), Err(StatementError::Malformed));
        let huge = " ".repeat(MAX_STATEMENT + 1);
        assert_eq!(verify(&huge, "infernet-node", 1_000, 60), Err(StatementError::TooLarge));
        // Vouched for otherwise: everything but the signature is still checked.
        assert_eq!(read_vouched(&signed, "infernet-node", 1_030, 60), Ok(checked));
        assert!(read_vouched(&tampered, "infernet-node", 1_030, 60).is_ok());
        assert!(read_vouched(&signed, "infernet-heartbeat", 1_030, 60).is_err());
        assert!(read_vouched(&signed, "infernet-node", 1_061, 60).is_err());
        assert!(read_vouched(&huge, "infernet-node", 1_000, 60).is_err());
    }
}

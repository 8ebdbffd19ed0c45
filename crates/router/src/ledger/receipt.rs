//! Receipts as the router takes and checks them. A node signs a [`Receipt`] when a job ends; the
//! router takes it into the job's ledger row when the signature, the signer and what it states
//! (the job's id on the node, its containers) match the job, and then accounts the duration and
//! price the node stated. Later anyone holding the row and the node's key can check it again
//! ([`check`]): a row or a receipt changed after the fact (a price raised, a receipt made up)
//! no longer checks out.

use infernet_identity::{PublicKey, statement};
use infernet_types::{RECEIPT_SUBJECT, Receipt};
use serde::Serialize;

use crate::db::ledger::LedgerRow;

/// A receipt whose signature checks out, and who signed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Signed {
    /// The node key that signed it.
    pub signer: PublicKey,
    /// What it states.
    pub receipt: Receipt,
}

/// Why a receipt does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Not a signed statement, or its signature is wrong.
    #[error("not signed by a node key: {0}")]
    Signature(String),
    /// Signed by another key than the node's.
    #[error("signed by {signer}, not by the node's key {node}")]
    Signer {
        /// Who signed it (`npub1…`).
        signer: String,
        /// The node's key (`npub1…`).
        node: String,
    },
    /// What it states differs from the job or the row.
    #[error("it states {field} {stated}, the record says {recorded}")]
    Differs {
        /// Which field.
        field: &'static str,
        /// What the receipt states.
        stated: String,
        /// What the record holds.
        recorded: String,
    },
}

/// Checks the signature of `json` and reads the receipt in it.
pub fn read(json: &str) -> Result<Signed, ReceiptError> {
    read_as(json, false)
}

/// [`read`], without the signature check when `vouched` (see [`Received::vouched`]).
fn read_as(json: &str, vouched: bool) -> Result<Signed, ReceiptError> {
    // Receipts are kept for as long as the ledger is: their age is no reason to refuse them.
    let checked = match vouched {
        true => statement::read_vouched(json, RECEIPT_SUBJECT, 0, u64::MAX),
        false => statement::verify(json, RECEIPT_SUBJECT, 0, u64::MAX),
    }
    .map_err(|e| ReceiptError::Signature(e.to_string()))?;
    let receipt =
        serde_json::from_value(checked.content).map_err(|e| ReceiptError::Signature(format!("not a receipt: {e}")))?;
    Ok(Signed {
        signer: checked.signer,
        receipt,
    })
}

fn differs(field: &'static str, stated: impl std::fmt::Debug, recorded: impl std::fmt::Debug) -> ReceiptError {
    ReceiptError::Differs {
        field,
        stated: format!("{stated:?}"),
        recorded: format!("{recorded:?}"),
    }
}

/// A receipt as the router received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The signed statement, as sent.
    pub json: String,
    /// The node key whose MAC vouched for it: it came in a stream's trailer with a MAC under the
    /// key the router shares with that node. Its signature is not checked on the way in, as only
    /// that node could have sent it, but it must name that key as its signer; every later
    /// [`check`] of the row checks the signature.
    pub vouched_by: Option<PublicKey>,
}

impl Received {
    /// A receipt nothing vouched for: its signature is checked.
    pub fn plain(json: String) -> Self {
        Self { json, vouched_by: None }
    }
}

/// Checks `json` as the receipt of the job `node_job` that ran `containers` on the node with key
/// `node_key` (when the router knows it).
pub fn take(
    json: &str,
    node_key: Option<&PublicKey>,
    node_job: &str,
    containers: &[String],
) -> Result<Signed, ReceiptError> {
    take_as(json, None, node_key, node_job, containers)
}

/// [`take`] of a receipt as received: without its signature check when vouched for.
pub fn take_received(
    received: &Received,
    node_key: Option<&PublicKey>,
    node_job: &str,
    containers: &[String],
) -> Result<Signed, ReceiptError> {
    take_as(
        &received.json,
        received.vouched_by.as_ref(),
        node_key,
        node_job,
        containers,
    )
}

fn take_as(
    json: &str,
    vouched_by: Option<&PublicKey>,
    node_key: Option<&PublicKey>,
    node_job: &str,
    containers: &[String],
) -> Result<Signed, ReceiptError> {
    let signed = read_as(json, vouched_by.is_some())?;
    for node in vouched_by.into_iter().chain(node_key) {
        if *node != signed.signer {
            return Err(ReceiptError::Signer {
                signer: infernet_identity::npub(&signed.signer),
                node: infernet_identity::npub(node),
            });
        }
    }
    if signed.receipt.job != node_job {
        return Err(differs("job", &signed.receipt.job, node_job));
    }
    if signed.receipt.containers != containers {
        return Err(differs("containers", &signed.receipt.containers, containers));
    }
    Ok(signed)
}

/// How a ledger row's receipt stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "receipt", rename_all = "snake_case")]
pub enum Check {
    /// Signed by the node's key, and the row says what it states.
    Valid {
        /// The signer, `npub1…`.
        signer: String,
    },
    /// The node sent none (a stream, a node without `network.routers`, an older node).
    Missing,
    /// Does not check out.
    Forged {
        /// Why.
        why: String,
    },
}

/// Checks `row`'s receipt against `node_key` (the node's key, as the operator knows it) and
/// against the row: its job id on the node (`node_job`, when the job's record is still kept),
/// containers, duration and price.
pub fn check(row: &LedgerRow, node_job: Option<&str>, node_key: Option<&PublicKey>) -> Check {
    let Some(json) = &row.receipt else {
        return Check::Missing;
    };
    let outcome = (|| {
        let signed =
            take(json, node_key, node_job.unwrap_or_default(), &row.containers).or_else(|e| match (node_job, &e) {
                // The job's record was pruned: the job id cannot be compared.
                (None, ReceiptError::Differs { field: "job", .. }) => read(json),
                _ => Err(e),
            })?;
        let r = &signed.receipt;
        if i64::try_from(r.duration_ms).ok() != Some(row.duration_ms) {
            return Err(differs("duration_ms", r.duration_ms, row.duration_ms));
        }
        if r.unit.is_some() && r.unit == row.unit && r.price != row.price {
            return Err(differs("price", r.price, row.price));
        }
        let ended = match r.status.as_str() {
            "success" => "succeeded",
            other => other,
        };
        if ended != row.outcome {
            return Err(differs("status", ended, &row.outcome));
        }
        Ok(signed.signer)
    })();
    match outcome {
        Ok(signer) => Check::Valid {
            signer: infernet_identity::npub(&signer),
        },
        Err(e) => Check::Forged { why: e.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use infernet_identity::Identity;

    use super::*;

    fn receipt(node: &Identity, price: f64) -> String {
        let r = Receipt {
            job: "n1".into(),
            containers: vec!["x".into()],
            status: "success".into(),
            duration_ms: 1500,
            price: Some(price),
            unit: Some("USD".into()),
        };
        statement::sign(node, RECEIPT_SUBJECT, &r).unwrap()
    }

    fn row(receipt: Option<String>, price: f64) -> LedgerRow {
        LedgerRow {
            job_id: "j1".into(),
            client: "addr:00".into(),
            api_key_id: None,
            node: "127.0.0.1:4000".into(),
            operator: None,
            containers: vec!["x".into()],
            started_at: 0,
            finished_at: 2000,
            outcome: "succeeded".into(),
            duration_ms: 1500,
            price: Some(price),
            unit: Some("USD".into()),
            receipt,
        }
    }

    #[test]
    fn a_vouched_receipt_skips_only_the_signature_check_on_the_way_in() {
        let node = Identity::generate();
        let key = node.public_key();
        let good = receipt(&node, 0.75);
        // A signature broken in the last hex digit of `sig` (the last field the node writes).
        let at = good.rfind('"').unwrap() - 1;
        let flipped = if &good[at..=at] == "0" { "1" } else { "0" };
        let broken = format!("{}{flipped}{}", &good[..at], &good[at + 1..]);
        let x = ["x".to_string()];
        let vouched = |json: &str| Received {
            json: json.to_string(),
            vouched_by: Some(key),
        };
        assert!(take_received(&vouched(&good), Some(&key), "n1", &x).is_ok());
        assert!(take_received(&vouched(&broken), Some(&key), "n1", &x).is_ok());
        assert!(take_received(&Received::plain(broken.clone()), Some(&key), "n1", &x).is_err());
        // Everything else is still checked: the job, the containers, the signer.
        assert!(matches!(
            take_received(&vouched(&good), Some(&key), "n2", &x),
            Err(ReceiptError::Differs { field: "job", .. })
        ));
        assert!(take_received(&vouched(&good), Some(&key), "n1", &["y".to_string()]).is_err());
        let other = Identity::generate().public_key();
        assert!(matches!(
            take_received(&vouched(&good), Some(&other), "n1", &x),
            Err(ReceiptError::Signer { .. })
        ));
        // A node that MACs a receipt naming another signer is refused, even when the router
        // does not know the node's key from its heartbeats.
        let theirs = receipt(&Identity::generate(), 0.75);
        assert!(matches!(
            take_received(&vouched(&theirs), None, "n1", &x),
            Err(ReceiptError::Signer { .. })
        ));
        // A row holding the broken one shows it forged when checked.
        assert!(matches!(
            check(&row(Some(broken), 0.75), Some("n1"), Some(&key)),
            Check::Forged { .. }
        ));
    }

    #[test]
    fn a_true_receipt_checks_out_and_every_forgery_is_named() {
        let node = Identity::generate();
        let key = node.public_key();
        let good = receipt(&node, 0.75);
        assert_eq!(
            check(&row(Some(good.clone()), 0.75), Some("n1"), Some(&key)),
            Check::Valid { signer: node.npub() }
        );
        // The row's price raised after the fact.
        assert!(matches!(check(&row(Some(good.clone()), 0.9), Some("n1"), Some(&key)),
            Check::Forged { why } if why.contains("price")));
        // The receipt's price edited: the signature breaks.
        let edited = good.replace("0.75", "0.95");
        assert!(matches!(check(&row(Some(edited), 0.95), Some("n1"), Some(&key)),
            Check::Forged { why } if why.contains("signed")));
        // A receipt made up by another key.
        let other = receipt(&Identity::generate(), 0.75);
        assert!(matches!(check(&row(Some(other), 0.75), Some("n1"), Some(&key)),
            Check::Forged { why } if why.contains("not by the node's key")));
        // Another job's receipt.
        assert!(matches!(check(&row(Some(good), 0.75), Some("n2"), Some(&key)),
            Check::Forged { why } if why.contains("job")));
        assert_eq!(check(&row(None, 0.75), Some("n1"), Some(&key)), Check::Missing);
    }
}

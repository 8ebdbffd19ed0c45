//! A node's receipt for a job it ran: what it ran, for how long, at what price by its own
//! pricing. The node signs it with its key (a statement about [`RECEIPT_SUBJECT`], see
//! `infernet_identity::statement`), so whoever holds it — the router's ledger, the provider — can
//! check it against the node's key without asking the node.

use serde::{Deserialize, Serialize};

/// The `d` tag of a receipt statement.
pub const RECEIPT_SUBJECT: &str = "infernet-receipt";

/// The HTTP trailer a stream's receipt comes in, after its output, for a router that asked
/// (`TE: trailers`): the signed statement as it is (compact JSON, ASCII). It saves the router a
/// second request per stream to read the receipt from the stored result, where it is too.
pub const RECEIPT_TRAILER: &str = "x-infernet-receipt";

/// The trailer beside [`RECEIPT_TRAILER`] with the receipt's MAC under the key the node shares
/// with the router (`infernet_identity::dispatch::DispatchKey::receipt_mac`): it tells the router
/// the receipt is the node's without a signature check.
pub const RECEIPT_MAC_TRAILER: &str = "x-infernet-receipt-mac";

/// The `Trailer` header of an answer that may end with a receipt: HTTP/1.1 servers send only the
/// trailers an answer announces.
pub const RECEIPT_TRAILERS: &str = "x-infernet-receipt, x-infernet-receipt-mac";

/// What a receipt states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The job's id on the node.
    pub job: String,
    /// The containers it ran, in order.
    pub containers: Vec<String>,
    /// How it ended: `success` or `failed`.
    pub status: String,
    /// Compute time, in ms.
    pub duration_ms: u64,
    /// The price by the node's pricing when the job ended; `None` when it prices none of the
    /// containers, or prices them in different units.
    #[serde(default)]
    pub price: Option<f64>,
    /// The unit of `price`.
    #[serde(default)]
    pub unit: Option<String>,
}

//! Errors of the RPC endpoint, classified where they arise: the kind of a failed call (what the
//! retry layer and the metrics go by) and the refusal of a sent transaction (what the Wallet
//! decides on). Error texts are read here and nowhere else.

use alloy::{
    primitives::Bytes,
    rpc::json_rpc::ErrorPayload,
    transports::{TransportError, TransportErrorKind},
};

/// What kind of failure an RPC error is; metrics count errors by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcErrorKind {
    /// HTTP 429 or a provider's rate-limit error.
    RateLimited,
    /// HTTP 5xx: the endpoint is overloaded or broken right now.
    Unavailable,
    /// No answer within the attempt timeout.
    Timeout,
    /// The connection failed (refused, reset, DNS).
    Connection,
    /// The call executed and reverted.
    Revert,
    /// Any other JSON-RPC error answer.
    Rpc,
    /// The answer could not be decoded.
    Decode,
}

/// Every [`RpcErrorKind`], in metric order.
pub const ERROR_KINDS: [RpcErrorKind; 7] = [
    RpcErrorKind::RateLimited,
    RpcErrorKind::Unavailable,
    RpcErrorKind::Timeout,
    RpcErrorKind::Connection,
    RpcErrorKind::Revert,
    RpcErrorKind::Rpc,
    RpcErrorKind::Decode,
];

impl RpcErrorKind {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Revert => "revert",
            Self::Rpc => "rpc",
            Self::Decode => "decode",
        }
    }

    /// Whether sending the same request again may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::RateLimited | Self::Unavailable | Self::Timeout | Self::Connection
        )
    }
}

/// Classifies an error answer.
pub fn classify_payload(payload: &ErrorPayload) -> RpcErrorKind {
    let message = payload.message.to_ascii_lowercase();
    if payload.is_retry_err() || message.contains("rate limit") || message.contains("too many requests") {
        RpcErrorKind::RateLimited
    } else if payload.code == 3 || message.contains("revert") {
        RpcErrorKind::Revert
    } else {
        RpcErrorKind::Rpc
    }
}

/// Classifies a transport-level error.
pub fn classify(error: &TransportError) -> RpcErrorKind {
    match error {
        TransportError::ErrorResp(payload) => classify_payload(payload),
        TransportError::Transport(kind) => match kind {
            TransportErrorKind::HttpError(e) if e.status == 429 => RpcErrorKind::RateLimited,
            TransportErrorKind::HttpError(e) if e.status >= 500 => RpcErrorKind::Unavailable,
            TransportErrorKind::HttpErrorWithRetryAfter { error, .. } if error.status == 429 => {
                RpcErrorKind::RateLimited
            }
            TransportErrorKind::HttpErrorWithRetryAfter { error, .. } if error.status >= 500 => {
                RpcErrorKind::Unavailable
            }
            TransportErrorKind::HttpError(_) | TransportErrorKind::HttpErrorWithRetryAfter { .. } => RpcErrorKind::Rpc,
            TransportErrorKind::MissingBatchResponse(_) | TransportErrorKind::BackendGone => RpcErrorKind::Connection,
            TransportErrorKind::Custom(e) => {
                let text = e.to_string().to_ascii_lowercase();
                if text.contains("timed out") || text.contains("timeout") {
                    RpcErrorKind::Timeout
                } else if text.contains("429") {
                    RpcErrorKind::RateLimited
                } else {
                    RpcErrorKind::Connection
                }
            }
            _ => RpcErrorKind::Connection,
        },
        TransportError::NullResp => RpcErrorKind::Unavailable,
        TransportError::DeserError { .. } | TransportError::SerError(_) => RpcErrorKind::Decode,
        _ => RpcErrorKind::Rpc,
    }
}

/// Why a chain read or write failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The request failed (after the retries the policy allows).
    #[error("{method}: {message}")]
    Call {
        /// JSON-RPC method or contract call.
        method: String,
        /// What went wrong (the RPC URL is never part of it).
        message: String,
        /// Classification.
        kind: RpcErrorKind,
        /// Revert data, when the call reverted with some.
        revert: Option<Bytes>,
    },
    /// The answer did not decode as the call's return type.
    #[error("{method}: undecodable answer: {message}")]
    Decode {
        /// Contract call.
        method: String,
        /// Decoder message.
        message: String,
    },
}

impl RpcError {
    /// Classification of this error.
    pub fn kind(&self) -> RpcErrorKind {
        match self {
            Self::Call { kind, .. } => *kind,
            Self::Decode { .. } => RpcErrorKind::Decode,
        }
    }

    /// Revert data of a reverted call.
    pub fn revert_data(&self) -> Option<&Bytes> {
        match self {
            Self::Call { revert, .. } => revert.as_ref(),
            Self::Decode { .. } => None,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

/// Why an endpoint refused a raw transaction, decoded once from its answer here at the RPC
/// edge; the Wallet decides on the variant, never on the text. Each carries the endpoint's
/// message for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The nonce is below the account's: it was used already.
    #[error("{0}")]
    NonceTooLow(String),
    /// The nonce leaves a gap the endpoint does not queue.
    #[error("{0}")]
    NonceTooHigh(String),
    /// The same transaction is in the pool already: it was taken.
    #[error("{0}")]
    AlreadyKnown(String),
    /// Its fees are too low (for a replacement: not raised enough).
    #[error("{0}")]
    Underpriced(String),
    /// The account cannot pay for the gas.
    #[error("{0}")]
    InsufficientFunds(String),
    /// Its execution reverts; `selector` is the custom error's, when the endpoint gave data.
    #[error("{message}")]
    Reverted {
        /// First four bytes of the revert data.
        selector: Option<[u8; 4]>,
        /// The endpoint's message.
        message: String,
    },
    /// Any other refusal.
    #[error("{0}")]
    Other(String),
}

impl Refusal {
    /// Decodes an endpoint's error answer (geth, anvil, reth, erigon and nethermind texts).
    pub fn decode(message: String, revert: Option<&Bytes>) -> Self {
        let lower = message.to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
        if has(&["nonce too low", "nonce is too low", "oldnonce", "already been used"]) {
            Self::NonceTooLow(message)
        } else if has(&["nonce too high", "nonce is too high", "nonce gap"]) {
            Self::NonceTooHigh(message)
        } else if has(&["already known", "already imported", "known transaction", "alreadyknown"]) {
            Self::AlreadyKnown(message)
        } else if has(&["underpriced", "fee too low", "feetoolow", "max fee per gas less than"]) {
            Self::Underpriced(message)
        } else if has(&["insufficient funds", "insufficient balance"]) {
            Self::InsufficientFunds(message)
        } else if revert.is_some() || lower.contains("revert") {
            let selector = revert.and_then(|d| d.get(..4)).and_then(|s| s.try_into().ok());
            Self::Reverted { selector, message }
        } else {
            Self::Other(message)
        }
    }

    /// Whether the nonce is out of step with the chain (signing again from its nonce may help).
    pub fn is_nonce_error(&self) -> bool {
        matches!(self, Self::NonceTooLow(_) | Self::NonceTooHigh(_))
    }
}

/// Why a raw transaction was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The endpoint answered with an error: it did not take the transaction.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// No answer: the transaction may or may not have been taken.
    #[error("no answer: {0}")]
    NoAnswer(RpcError),
}

impl SendError {
    /// The refusal, when the endpoint answered.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Refused(r) => Some(r),
            Self::NoAnswer(_) => None,
        }
    }
}

impl From<RpcError> for SendError {
    fn from(e: RpcError) -> Self {
        match (&e, e.kind()) {
            (RpcError::Call { message, revert, .. }, RpcErrorKind::Revert | RpcErrorKind::Rpc) => {
                Self::Refused(Refusal::decode(message.clone(), revert.as_ref()))
            }
            _ => Self::NoAnswer(e),
        }
    }
}

/// Why an RPC endpoint cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EndpointError {
    /// `chain.rpc_url` does not parse.
    #[error("not a URL: {0}")]
    NotUrl(String),
    /// Not an HTTP(S) endpoint.
    #[error("scheme {0}:// is not supported; use an http:// or https:// endpoint")]
    Scheme(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_for_retry() {
        let http = |status| TransportErrorKind::http_error(status, String::new());
        assert_eq!(classify(&http(429)), RpcErrorKind::RateLimited);
        assert_eq!(classify(&http(502)), RpcErrorKind::Unavailable);
        assert_eq!(classify(&http(400)), RpcErrorKind::Rpc);
        let revert: ErrorPayload =
            serde_json::from_str(r#"{"code": 3, "message": "execution reverted", "data": "0x4db310c3"}"#).unwrap();
        assert_eq!(classify(&TransportError::ErrorResp(revert)), RpcErrorKind::Revert);
        let limited: ErrorPayload = serde_json::from_str(r#"{"code": -32005, "message": "limit exceeded"}"#).unwrap();
        assert_eq!(classify(&TransportError::ErrorResp(limited)), RpcErrorKind::RateLimited);
        assert!(RpcErrorKind::Timeout.is_retryable());
        assert!(!RpcErrorKind::Revert.is_retryable());
    }

    #[test]
    fn send_refusals_are_decoded_once() {
        let refused = |text: &str, kind: RpcErrorKind, revert: Option<Bytes>| {
            SendError::from(RpcError::Call {
                method: "eth_sendRawTransaction".into(),
                message: text.into(),
                kind,
                revert,
            })
        };
        let rpc = RpcErrorKind::Rpc;
        let decoded = |text: &str| refused(text, rpc, None).refusal().cloned();
        assert!(matches!(
            decoded("error code -32000: nonce too low"),
            Some(Refusal::NonceTooLow(_))
        ));
        assert!(matches!(
            decoded("Nonce too high. Expected 3"),
            Some(Refusal::NonceTooHigh(_))
        ));
        assert!(matches!(decoded("already known"), Some(Refusal::AlreadyKnown(_))));
        assert!(matches!(
            decoded("replacement transaction underpriced"),
            Some(Refusal::Underpriced(_))
        ));
        assert!(matches!(
            decoded("insufficient funds for gas * price + value"),
            Some(Refusal::InsufficientFunds(_))
        ));
        assert!(matches!(decoded("invalid sender"), Some(Refusal::Other(_))));
        let reverted = refused(
            "execution reverted",
            RpcErrorKind::Revert,
            Some(Bytes::from_static(&[0x88, 0xa2, 0x1e, 0x4f, 0])),
        );
        assert_eq!(
            reverted.refusal(),
            Some(&Refusal::Reverted {
                selector: Some([0x88, 0xa2, 0x1e, 0x4f]),
                message: "execution reverted".into()
            })
        );
        assert!(decoded("nonce too low").unwrap().is_nonce_error());
        assert!(!decoded("already known").unwrap().is_nonce_error());
        let timeout = refused("timed out", RpcErrorKind::Timeout, None);
        assert!(matches!(timeout, SendError::NoAnswer(_)), "no answer is not a refusal");
        assert_eq!(decoded("nonce too low").unwrap().to_string(), "nonce too low");
    }
}

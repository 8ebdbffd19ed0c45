//! Delegated subscriptions as `POST /api/jobs` receives them: the signed [`Subscription`] with
//! Ritual's field names and the `{nonce, expiry, v, r, s}` signature.
//!
//! Numbers are read from the JSON text itself, never through `f64`: Ritual's clients send `r`, `s`
//! and `payment_amount` as plain JSON integers far beyond 2^64, which a float would round.

use std::{collections::BTreeMap, str::FromStr};

use alloy_primitives::{Address, B256, U256};
use serde_json::{Map, Value, value::RawValue};

use crate::{Subscription, container_set_hash};

/// The EIP-712 signature of a delegated subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelegateSignature {
    /// Per-owner subscriber nonce.
    pub nonce: u32,
    /// Unix time after which the signature is void.
    pub expiry: u32,
    /// Recovery id, normalised to 27 or 28.
    pub v: u8,
    /// `r` component.
    pub r: U256,
    /// `s` component.
    pub s: U256,
}

/// A parsed delegated-subscription request.
#[derive(Debug, Clone, PartialEq)]
pub struct DelegatedRequest {
    /// The signed subscription.
    pub subscription: Subscription,
    /// Its signature.
    pub signature: DelegateSignature,
    /// Input for the first container.
    pub data: Map<String, Value>,
    /// The `subscription` object as sent (echoed in rejections, as Ritual's node does).
    pub raw_subscription: Value,
}

/// Why a delegated subscription request was refused; every message names the field
/// (`signature.v: expected 27 or 28, found 29`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelegatedError {
    /// The request body is not a JSON object.
    #[error("expected a JSON object")]
    BodyNotAnObject,
    /// The `subscription` text given alone is not JSON.
    #[error("subscription: not valid JSON: {0}")]
    NotJson(String),
    /// `subscription` or `signature` is not an object.
    #[error("{path}: expected an object")]
    NotAnObject {
        /// The field, e.g. `signature`.
        path: String,
    },
    /// A required field is absent.
    #[error("{path}: missing field")]
    Missing {
        /// The field, e.g. `signature.r`.
        path: String,
    },
    /// The request has no `data`.
    #[error("request: missing field `data`")]
    MissingData,
    /// A field has the wrong type or is out of range.
    #[error("{path}: expected {expected}, found {found}")]
    Invalid {
        /// The field, e.g. `subscription.period`.
        path: String,
        /// What it must be.
        expected: &'static str,
        /// The JSON text found.
        found: String,
    },
    /// An address field holds a string that is not an address.
    #[error("{path}: \"{text}\" is not an address (0x + 40 hex digits)")]
    NotAnAddress {
        /// The field, e.g. `subscription.owner`.
        path: String,
        /// The string found.
        text: String,
    },
    /// `containers` is an empty list or a list with a non-string.
    #[error("{path}: expected a non-empty list of container ids")]
    NoContainerIds {
        /// The field (`subscription.containers`).
        path: String,
    },
    /// `containers` looks like a hash but does not parse as one.
    #[error("{path}: {message}")]
    BadHash {
        /// The field (`subscription.containers`).
        path: String,
        /// The hex parser's message.
        message: String,
    },
}

type Fields<'a> = BTreeMap<String, &'a RawValue>;

fn fields<'a>(raw: &'a RawValue, path: &str) -> Result<Fields<'a>, DelegatedError> {
    serde_json::from_str(raw.get()).map_err(|_| DelegatedError::NotAnObject { path: path.into() })
}

fn missing(path: &str, name: &str) -> DelegatedError {
    DelegatedError::Missing {
        path: format!("{path}.{name}"),
    }
}

fn invalid(path: &str, name: &str, expected: &'static str, found: &RawValue) -> DelegatedError {
    DelegatedError::Invalid {
        path: format!("{path}.{name}"),
        expected,
        found: found.get().to_string(),
    }
}

fn required<'a>(f: &Fields<'a>, path: &str, name: &str) -> Result<&'a RawValue, DelegatedError> {
    f.get(name).copied().ok_or_else(|| missing(path, name))
}

/// A whole number written as a JSON integer, a decimal string or a `0x` hex string.
fn big_number(raw: &RawValue) -> Option<U256> {
    let text = raw.get().trim();
    let text = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => inner.trim(),
        None => text,
    };
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() => U256::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => U256::from_str_radix(text, 10).ok(),
        None => None,
    }
}

fn number<T: TryFrom<U256>>(f: &Fields<'_>, path: &str, name: &str, what: &'static str) -> Result<T, DelegatedError> {
    let raw = required(f, path, name)?;
    big_number(raw)
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| invalid(path, name, what, raw))
}

fn amount(f: &Fields<'_>, path: &str, name: &str) -> Result<U256, DelegatedError> {
    match f.get(name) {
        None => Ok(U256::ZERO),
        Some(raw) if raw.get() == "null" => Ok(U256::ZERO),
        Some(raw) => big_number(raw).ok_or_else(|| invalid(path, name, "a whole number", raw)),
    }
}

fn string(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(raw.get()).ok()
}

fn address(f: &Fields<'_>, path: &str, name: &str, optional: bool) -> Result<Address, DelegatedError> {
    let raw = match f.get(name) {
        None if optional => return Ok(Address::ZERO),
        Some(raw) if optional && raw.get() == "null" => return Ok(Address::ZERO),
        other => other.copied().ok_or_else(|| missing(path, name))?,
    };
    let text = string(raw).ok_or_else(|| invalid(path, name, "an address string", raw))?;
    Address::from_str(text.trim()).map_err(|_| DelegatedError::NotAnAddress {
        path: format!("{path}.{name}"),
        text,
    })
}

/// The container id: 32 bytes of hex (with or without `0x`, as Ritual's clients send the hash), or
/// container ids (`"a,b"` or `["a", "b"]`), hashed the way the SDK does.
fn container_id(f: &Fields<'_>, path: &str) -> Result<B256, DelegatedError> {
    const EXPECTED: &str = "the container-set hash or container ids";
    let raw = required(f, path, "containers")?;
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::String(s)) => {
            let hex = s.strip_prefix("0x").unwrap_or(&s);
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                B256::from_str(hex).map_err(|e| DelegatedError::BadHash {
                    path: format!("{path}.containers"),
                    message: e.to_string(),
                })
            } else if s.is_empty() {
                Err(invalid(path, "containers", EXPECTED, raw))
            } else {
                Ok(container_set_hash(&s.split(',').collect::<Vec<_>>()))
            }
        }
        Ok(Value::Array(ids)) => {
            let ids: Option<Vec<&str>> = ids.iter().map(Value::as_str).collect();
            match ids {
                Some(ids) if !ids.is_empty() => Ok(container_set_hash(&ids)),
                _ => Err(DelegatedError::NoContainerIds {
                    path: format!("{path}.containers"),
                }),
            }
        }
        _ => Err(invalid(path, "containers", EXPECTED, raw)),
    }
}

fn boolean(f: &Fields<'_>, path: &str, name: &str) -> Result<bool, DelegatedError> {
    match f.get(name) {
        None => Ok(false),
        Some(raw) => match raw.get() {
            "null" | "false" => Ok(false),
            "true" => Ok(true),
            _ => Err(invalid(path, name, "true or false", raw)),
        },
    }
}

impl Subscription {
    /// Parses the REST `subscription` object (Ritual's field names), naming the failing field.
    pub fn from_raw(raw: &RawValue) -> Result<Self, DelegatedError> {
        let path = "subscription";
        let f = fields(raw, path)?;
        Ok(Self {
            owner: address(&f, path, "owner", false)?,
            active_at: number(&f, path, "active_at", "a whole number below 2^32")?,
            period: number(&f, path, "period", "a whole number below 2^32")?,
            frequency: number(&f, path, "frequency", "a whole number below 2^32")?,
            redundancy: number(&f, path, "redundancy", "a whole number below 65536")?,
            container_id: container_id(&f, path)?,
            lazy: boolean(&f, path, "lazy")?,
            verifier: address(&f, path, "verifier", true)?,
            payment_amount: amount(&f, path, "payment_amount")?,
            payment_token: address(&f, path, "payment_token", true)?,
            wallet: address(&f, path, "wallet", true)?,
        })
    }

    /// Parses the subscription from JSON text.
    pub fn from_json(text: &str) -> Result<Self, DelegatedError> {
        let raw: &RawValue = serde_json::from_str(text).map_err(|e| DelegatedError::NotJson(e.to_string()))?;
        Self::from_raw(raw)
    }
}

impl DelegateSignature {
    /// Parses `{nonce, expiry, v, r, s}` (`r` and `s` as JSON integers, decimal or `0x` strings).
    pub fn from_raw(raw: &RawValue) -> Result<Self, DelegatedError> {
        let path = "signature";
        let f = fields(raw, path)?;
        let v: u8 = number(&f, path, "v", "27 or 28")?;
        let v = match v {
            0 | 1 => v + 27,
            27 | 28 => v,
            other => {
                return Err(DelegatedError::Invalid {
                    path: format!("{path}.v"),
                    expected: "27 or 28",
                    found: other.to_string(),
                });
            }
        };
        Ok(Self {
            nonce: number(&f, path, "nonce", "a whole number below 2^32")?,
            expiry: number(&f, path, "expiry", "a Unix time below 2^32")?,
            v,
            r: number(&f, path, "r", "a 256-bit whole number")?,
            s: number(&f, path, "s", "a 256-bit whole number")?,
        })
    }
}

impl DelegatedRequest {
    /// Parses a `{subscription, signature, data}` body from its JSON text.
    pub fn from_json(text: &str) -> Result<Self, DelegatedError> {
        let f: Fields<'_> = serde_json::from_str(text).map_err(|_| DelegatedError::BodyNotAnObject)?;
        let top = |name: &str| {
            f.get(name)
                .copied()
                .ok_or_else(|| DelegatedError::Missing { path: name.into() })
        };
        let sub_raw = top("subscription")?;
        let sig_raw = top("signature")?;
        let data = match f.get("data") {
            Some(raw) => {
                serde_json::from_str::<Map<String, Value>>(raw.get()).map_err(|_| DelegatedError::Invalid {
                    path: "data".into(),
                    expected: "a JSON object",
                    found: raw.get().to_string(),
                })?
            }
            None => return Err(DelegatedError::MissingData),
        };
        Ok(Self {
            subscription: Subscription::from_raw(sub_raw)?,
            signature: DelegateSignature::from_raw(sig_raw)?,
            data,
            raw_subscription: serde_json::from_str(sub_raw.get()).unwrap_or(Value::Null),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "98765432109876543210987654321098765432109876543210987654321098765432";

    fn body(sig: &str, amount: &str) -> String {
        format!(
            r#"{{"subscription": {{"owner": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "active_at": 5,
                "period": 0, "frequency": 1, "redundancy": 1,
                "containers": "5768661526084c7b4d30f7224ed6c74ade98db3c6c395c55400a17f34a547e22",
                "lazy": false, "verifier": "0x0000000000000000000000000000000000000000",
                "payment_amount": {amount}, "payment_token": "0x0000000000000000000000000000000000000000",
                "wallet": "0x0000000000000000000000000000000000000000"}},
             "signature": {sig}, "data": {{"x": 1}}}}"#
        )
    }

    #[test]
    fn big_integers_keep_every_digit() {
        let text = body(
            &format!(r#"{{"nonce": 3, "expiry": 4000000000, "v": 28, "r": {R}, "s": "0x1f"}}"#),
            "123456789012345678901234567890",
        );
        let req = DelegatedRequest::from_json(&text).unwrap();
        assert_eq!(req.signature.r, U256::from_str_radix(R, 10).unwrap());
        assert_eq!(req.signature.s, U256::from(31));
        assert_eq!(req.signature.nonce, 3);
        assert_eq!(req.signature.expiry, 4_000_000_000);
        assert_eq!(
            req.subscription.payment_amount,
            U256::from_str_radix("123456789012345678901234567890", 10).unwrap()
        );
        assert_eq!(req.subscription.container_id, container_set_hash(&["hello-world"]));
        assert_eq!(req.data["x"], 1);
    }

    #[test]
    fn v_is_normalised_and_bad_fields_are_named() {
        let text = body(r#"{"nonce": 1, "expiry": 2, "v": 0, "r": 1, "s": 2}"#, "0");
        assert_eq!(DelegatedRequest::from_json(&text).unwrap().signature.v, 27);
        let text = body(r#"{"nonce": 1, "expiry": 2, "v": 29, "r": 1, "s": 2}"#, "0");
        assert_eq!(
            DelegatedRequest::from_json(&text).unwrap_err().to_string(),
            "signature.v: expected 27 or 28, found 29"
        );
        let text = body(r#"{"nonce": -1, "expiry": 2, "v": 27, "r": 1, "s": 2}"#, "0");
        assert!(
            DelegatedRequest::from_json(&text)
                .unwrap_err()
                .to_string()
                .starts_with("signature.nonce")
        );
        let text = body(r#"{"nonce": 1, "expiry": 2, "v": 27, "r": 1.5, "s": 2}"#, "0");
        assert!(
            DelegatedRequest::from_json(&text)
                .unwrap_err()
                .to_string()
                .starts_with("signature.r")
        );
        let text = body(r#"{"nonce": 1, "expiry": 2, "v": 27, "r": 1, "s": 2}"#, "\"x\"");
        assert!(
            DelegatedRequest::from_json(&text)
                .unwrap_err()
                .to_string()
                .starts_with("subscription.payment_amount")
        );
        let text = body(r#"{"nonce": 1, "expiry": 2, "v": 27, "s": 2}"#, "0");
        assert_eq!(
            DelegatedRequest::from_json(&text).unwrap_err().to_string(),
            "signature.r: missing field"
        );
    }

    #[test]
    fn containers_may_be_ids_or_their_hash() {
        let sub = Subscription::from_json(
            r#"{"owner": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "active_at": 0, "period": 10,
                "frequency": 3, "redundancy": 2, "containers": ["a", "b"]}"#,
        )
        .unwrap();
        assert_eq!(sub.container_id, container_set_hash(&["a", "b"]));
        assert_eq!(sub.wallet, Address::ZERO);
        let by_hash = format!(
            r#"{{"owner": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "active_at": 0, "period": 10,
                "frequency": 3, "redundancy": 2, "containers": "{:x}"}}"#,
            sub.container_id
        );
        assert_eq!(Subscription::from_json(&by_hash).unwrap(), sub);
        let err = Subscription::from_json(r#"{"owner": "0x12"}"#).unwrap_err().to_string();
        assert!(
            err.starts_with("subscription.owner: \"0x12\" is not an address"),
            "{err}"
        );
    }
}

//! Signing delegated subscriptions: the REST `subscription` JSON (Ritual's field names) signed with
//! EIP-712 for a coordinator, giving the `signature` object `POST /api/jobs` takes.

use std::str::FromStr;

use alloy::{
    primitives::{Address, B256, U256},
    signers::local::PrivateKeySigner,
};
use infernet_contracts::eip712::{self, DelegateSubscription, Subscription};
use serde_json::{Map, Value};

/// Why a subscription could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    /// A field is missing or has the wrong type.
    #[error("subscription.{field}: {message}")]
    Field {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The private key does not parse.
    #[error("the private key is not 32 bytes of hex")]
    Key,
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] eip712::Eip712Error),
}

fn field<'a>(sub: &'a Map<String, Value>, name: &'static str) -> Result<&'a Value, DelegateError> {
    sub.get(name).ok_or(DelegateError::Field {
        field: name,
        message: "missing".into(),
    })
}

fn number<T: TryFrom<u64>>(sub: &Map<String, Value>, name: &'static str) -> Result<T, DelegateError> {
    field(sub, name)?
        .as_u64()
        .and_then(|v| T::try_from(v).ok())
        .ok_or(DelegateError::Field {
            field: name,
            message: "expected a whole number in range".into(),
        })
}

fn address(sub: &Map<String, Value>, name: &'static str, default_zero: bool) -> Result<Address, DelegateError> {
    match sub.get(name) {
        None | Some(Value::Null) if default_zero => Ok(Address::ZERO),
        Some(Value::String(s)) => Address::from_str(s).map_err(|_| DelegateError::Field {
            field: name,
            message: format!("\"{s}\" is not an address"),
        }),
        _ => Err(DelegateError::Field {
            field: name,
            message: "expected an address string".into(),
        }),
    }
}

/// The container id: 32 bytes of hex (with or without `0x`), or container ids (`"a,b"` or
/// `["a", "b"]`), which are hashed the way the SDK does.
fn container_id(sub: &Map<String, Value>) -> Result<B256, DelegateError> {
    let bad = |message: String| DelegateError::Field {
        field: "containers",
        message,
    };
    match field(sub, "containers")? {
        Value::String(s) => {
            let hex = s.strip_prefix("0x").unwrap_or(s);
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                B256::from_str(hex).map_err(|e| bad(e.to_string()))
            } else {
                Ok(B256::from(
                    infernet_types::container_set_hash(&s.split(',').collect::<Vec<_>>()).0,
                ))
            }
        }
        Value::Array(ids) => {
            let ids: Vec<&str> = ids.iter().filter_map(Value::as_str).collect();
            if ids.is_empty() {
                return Err(bad("expected container ids".into()));
            }
            Ok(B256::from(infernet_types::container_set_hash(&ids).0))
        }
        _ => Err(bad("expected the container-set hash or container ids".into())),
    }
}

fn amount(sub: &Map<String, Value>) -> Result<U256, DelegateError> {
    let bad = || DelegateError::Field {
        field: "payment_amount",
        message: "expected a whole number".into(),
    };
    match sub.get("payment_amount") {
        None | Some(Value::Null) => Ok(U256::ZERO),
        Some(Value::Number(n)) => n.as_u64().map(U256::from).ok_or_else(bad),
        Some(Value::String(s)) => U256::from_str(s).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// Reads the REST subscription JSON into the signed struct; normalises `containers` to the hash
/// (what nodes expect on the wire).
pub fn parse_subscription(sub: &mut Map<String, Value>) -> Result<Subscription, DelegateError> {
    let container = container_id(sub)?;
    sub.insert("containers".into(), Value::String(format!("{container:x}")));
    Ok(Subscription {
        owner: address(sub, "owner", false)?,
        activeAt: number(sub, "active_at")?,
        period: number(sub, "period")?,
        frequency: number(sub, "frequency")?,
        redundancy: number(sub, "redundancy")?,
        containerId: container,
        lazy: sub.get("lazy").and_then(Value::as_bool).unwrap_or(false),
        verifier: address(sub, "verifier", true)?,
        paymentAmount: amount(sub)?,
        paymentToken: address(sub, "payment_token", true)?,
        wallet: address(sub, "wallet", true)?,
    })
}

/// Signs the subscription for `coordinator` on `chain_id`; returns the `signature` object as JSON
/// text (`r` and `s` as decimal uint256, as Ritual's nodes expect).
pub fn sign(
    subscription: &mut Map<String, Value>,
    private_key: &str,
    coordinator: Address,
    chain_id: u64,
    nonce: u32,
    expiry: u32,
) -> Result<String, DelegateError> {
    let sub = parse_subscription(subscription)?;
    let signer = PrivateKeySigner::from_str(private_key.trim()).map_err(|_| DelegateError::Key)?;
    let message = DelegateSubscription { nonce, expiry, sub };
    let signature = eip712::sign(&signer, &message, chain_id, coordinator)?;
    let (r, s) = (U256::from_be_bytes(signature.r.0), U256::from_be_bytes(signature.s.0));
    Ok(format!(
        r#"{{"nonce":{nonce},"expiry":{expiry},"v":{},"r":{r},"s":{s}}}"#,
        signature.v
    ))
}

#[cfg(test)]
mod tests {
    use alloy::primitives::Signature;
    use serde_json::json;

    use super::*;

    const KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

    #[test]
    fn signature_recovers_to_the_signer_and_numbers_are_decimal() {
        let mut sub = json!({"owner": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "active_at": 0, "period": 0,
            "frequency": 1, "redundancy": 1, "containers": "hello-world", "lazy": false})
        .as_object()
        .cloned()
        .unwrap();
        let coordinator: Address = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512".parse().unwrap();
        let text = sign(&mut sub, KEY, coordinator, 31337, 1, 4_000_000_000).unwrap();
        assert_eq!(
            sub["containers"],
            "5768661526084c7b4d30f7224ed6c74ade98db3c6c395c55400a17f34a547e22"
        );
        // r and s are plain decimal integers, as Ritual's nodes parse them.
        let r_text = text.split("\"r\":").nth(1).unwrap().split(',').next().unwrap();
        assert!(r_text.bytes().all(|b| b.is_ascii_digit()), "{text}");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        let v = parsed["v"].as_u64().unwrap();
        assert!(v == 27 || v == 28);
        let r = U256::from_str(r_text).unwrap();
        let s_text = text.split("\"s\":").nth(1).unwrap().trim_end_matches('}');
        let s = U256::from_str(s_text).unwrap();
        let message = DelegateSubscription {
            nonce: 1,
            expiry: 4_000_000_000,
            sub: parse_subscription(&mut sub).unwrap(),
        };
        let digest = eip712::signing_hash(&message, 31337, coordinator);
        let recovered = Signature::new(r, s, v == 28)
            .recover_address_from_prehash(&digest)
            .unwrap();
        assert_eq!(recovered, PrivateKeySigner::from_str(KEY).unwrap().address());
    }

    #[test]
    fn bad_fields_are_named() {
        let mut sub = json!({"owner": "nope", "containers": "x"})
            .as_object()
            .cloned()
            .unwrap();
        let err = sign(&mut sub, KEY, Address::ZERO, 1, 0, 0).unwrap_err().to_string();
        assert!(err.starts_with("subscription.owner"), "{err}");
        let mut sub = json!({"owner": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "containers": "x"})
            .as_object()
            .cloned()
            .unwrap();
        assert!(
            sign(&mut sub, KEY, Address::ZERO, 1, 0, 0)
                .unwrap_err()
                .to_string()
                .contains("active_at")
        );
        let mut ok = json!({"owner": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "active_at": 0, "period": 0,
            "frequency": 1, "redundancy": 1, "containers": ["a", "b"]})
        .as_object()
        .cloned()
        .unwrap();
        assert!(matches!(
            sign(&mut ok, "0x12", Address::ZERO, 1, 0, 0),
            Err(DelegateError::Key)
        ));
    }
}

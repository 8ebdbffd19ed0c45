//! Signing delegated subscriptions: the REST `subscription` JSON (Ritual's field names) signed with
//! EIP-712 for a coordinator, giving the `signature` object `POST /api/jobs` takes.

use std::str::FromStr;

use alloy::{
    primitives::{Address, U256},
    signers::local::PrivateKeySigner,
};
use infernet_contracts::eip712::{self, DelegateSubscription, Subscription};

use serde_json::{Map, Value};

/// Why a subscription could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    /// A field is missing or has the wrong type (the message names it).
    #[error("{0}")]
    Field(#[from] infernet_types::DelegatedError),
    /// The private key does not parse.
    #[error("the private key is not 32 bytes of hex")]
    Key,
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] eip712::Eip712Error),
}

/// Reads the REST subscription JSON into the signed struct; normalises `containers` to the hash
/// (what nodes expect on the wire).
pub fn parse_subscription(sub: &mut Map<String, Value>) -> Result<Subscription, DelegateError> {
    let parsed = infernet_types::Subscription::from_json(&Value::Object(sub.clone()).to_string())?;
    sub.insert("containers".into(), Value::String(format!("{:x}", parsed.container_id)));
    Ok(Subscription::from(&parsed))
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

//! EIP-712 delegated subscriptions: the `Subscription` / `DelegateSubscription` types, the
//! `InfernetCoordinator` domain and signing in the form `createSubscriptionDelegatee` accepts.

use alloy::primitives::{Address, B256, U256};
use alloy::signers::SignerSync;
use alloy::sol_types::{Eip712Domain, SolStruct, eip712_domain};

use crate::bindings::EIP712Coordinator;

/// EIP-712 domain name of the coordinator.
pub const DOMAIN_NAME: &str = "InfernetCoordinator";
/// EIP-712 domain version of the coordinator.
pub const DOMAIN_VERSION: &str = "1";

alloy::sol! {
    /// A subscription as signed off-chain (same fields and order as the on-chain struct).
    #[derive(Debug, PartialEq, Eq)]
    struct Subscription {
        address owner;
        uint32 activeAt;
        uint32 period;
        uint32 frequency;
        uint16 redundancy;
        bytes32 containerId;
        bool lazy;
        address verifier;
        uint256 paymentAmount;
        address paymentToken;
        address wallet;
    }

    /// What the owner's signer signs: the subscription plus a per-owner nonce and an expiry timestamp.
    #[derive(Debug, PartialEq, Eq)]
    struct DelegateSubscription {
        uint32 nonce;
        uint32 expiry;
        Subscription sub;
    }
}

/// Errors of delegated-subscription signing.
#[derive(Debug, thiserror::Error)]
pub enum Eip712Error {
    /// The signer could not sign the digest.
    #[error("signing the delegated subscription failed: {0}")]
    Sign(#[from] alloy::signers::Error),
}

/// A signature split the way `createSubscriptionDelegatee(…, uint8 v, bytes32 r, bytes32 s)` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelegateSignature {
    /// Recovery id as `ecrecover` wants it: 27 or 28.
    pub v: u8,
    /// `r` component.
    pub r: B256,
    /// `s` component.
    pub s: B256,
}

/// The coordinator's EIP-712 domain on `chain_id` (verifying contract = `coordinator`, no salt).
pub fn domain(chain_id: u64, coordinator: Address) -> Eip712Domain {
    eip712_domain! {
        name: DOMAIN_NAME,
        version: DOMAIN_VERSION,
        chain_id: chain_id,
        verifying_contract: coordinator,
    }
}

/// The digest the coordinator recovers the signer from (`eth_signTypedData_v4` of `DelegateSubscription`).
pub fn signing_hash(message: &DelegateSubscription, chain_id: u64, coordinator: Address) -> B256 {
    message.eip712_signing_hash(&domain(chain_id, coordinator))
}

/// Signs `message` for the coordinator at `coordinator` on `chain_id`.
pub fn sign(
    signer: &impl SignerSync,
    message: &DelegateSubscription,
    chain_id: u64,
    coordinator: Address,
) -> Result<DelegateSignature, Eip712Error> {
    let signature = signer.sign_hash_sync(&signing_hash(message, chain_id, coordinator))?;
    Ok(DelegateSignature {
        v: 27 + u8::from(signature.v()),
        r: B256::from(signature.r()),
        s: B256::from(signature.s()),
    })
}

impl From<Subscription> for EIP712Coordinator::Subscription {
    fn from(s: Subscription) -> Self {
        (&infernet_types::Subscription::from(s)).into()
    }
}

impl From<EIP712Coordinator::Subscription> for Subscription {
    fn from(s: EIP712Coordinator::Subscription) -> Self {
        (&infernet_types::Subscription::from(s)).into()
    }
}

impl Subscription {
    /// An unpaid, unverified subscription owned by `owner` (payment fields zero).
    pub fn unpaid(
        owner: Address,
        active_at: u32,
        period: u32,
        frequency: u32,
        redundancy: u16,
        container_id: B256,
        lazy: bool,
    ) -> Self {
        Self {
            owner,
            activeAt: active_at,
            period,
            frequency,
            redundancy,
            containerId: container_id,
            lazy,
            verifier: Address::ZERO,
            paymentAmount: U256::ZERO,
            paymentToken: Address::ZERO,
            wallet: Address::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{address, b256, keccak256};
    use alloy::signers::local::PrivateKeySigner;

    use super::*;

    #[test]
    fn type_strings_and_hashes_match_the_reference() {
        let sub_type = "Subscription(address owner,uint32 activeAt,uint32 period,uint32 frequency,uint16 redundancy,bytes32 containerId,bool lazy,address verifier,uint256 paymentAmount,address paymentToken,address wallet)";
        assert_eq!(Subscription::eip712_root_type(), sub_type);
        assert_eq!(
            keccak256(Subscription::eip712_encode_type().as_bytes()),
            b256!("3da81ed66ee47395e568c52867826ec137777eef9c1bdfb6bf972dd4385bc5a9")
        );
        assert_eq!(
            DelegateSubscription::eip712_encode_type(),
            format!("DelegateSubscription(uint32 nonce,uint32 expiry,Subscription sub){sub_type}")
        );
        assert_eq!(
            keccak256(DelegateSubscription::eip712_encode_type().as_bytes()),
            b256!("ba9ff1aef2b048b42767aade2b901745a3acf14f698a9ec13952098cfd03d0b6")
        );
    }

    #[test]
    fn domain_separator_matches_the_reference_anvil_deployment() {
        let d = domain(31337, address!("e7f1725E7734CE288F8367e1Bb143E90bb3F0512"));
        assert_eq!(
            d.separator(),
            b256!("0da40050d747332d4028233d5e6cc011e618dc2dd0e9d30b9886f503a7a8d8cc")
        );
    }

    #[test]
    fn signature_recovers_to_the_signer_with_v_27_or_28() {
        let signer = PrivateKeySigner::random();
        let coordinator = address!("e7f1725E7734CE288F8367e1Bb143E90bb3F0512");
        let message = DelegateSubscription {
            nonce: 7,
            expiry: 1_000,
            sub: Subscription::unpaid(Address::repeat_byte(1), 0, 60, 3, 2, B256::repeat_byte(2), false),
        };
        let sig = sign(&signer, &message, 31337, coordinator).expect("local signing cannot fail");
        assert!(sig.v == 27 || sig.v == 28);
        let parsed = alloy::primitives::Signature::new(sig.r.into(), sig.s.into(), sig.v == 28);
        let recovered = parsed
            .recover_address_from_prehash(&signing_hash(&message, 31337, coordinator))
            .expect("valid signature");
        assert_eq!(recovered, signer.address());
    }
}

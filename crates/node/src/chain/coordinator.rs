//! Calldata for the Infernet `EIP712Coordinator`: the deliveries the node sends and the state it
//! reads (node reference §7, "chain calls"). Pure: bytes in, bytes out.

use alloy::{
    primitives::{Address, B256, Bytes, keccak256},
    sol_types::{SolCall, SolValue},
};
use infernet_contracts::bindings::EIP712Coordinator;
use infernet_types::Subscription;

use super::{encoding::ChainOutput, schedule::Delivery};

/// `keccak256(abi.encode(uint32 id, uint32 interval, address node))`: the `nodeResponded` key.
pub fn responded_key(id: u32, interval: u32, node: Address) -> B256 {
    keccak256((id, interval, node).abi_encode())
}

/// `keccak256(abi.encode(address owner, uint32 nonce))`: the `delegateCreatedIds` key.
pub fn delegate_key(owner: Address, nonce: u32) -> B256 {
    keccak256((owner, nonce).abi_encode())
}

/// `nodeResponded(key)`: whether `node` delivered interval `interval` of `id`.
pub fn node_responded(id: u32, interval: u32, node: Address) -> Bytes {
    EIP712Coordinator::nodeRespondedCall(responded_key(id, interval, node))
        .abi_encode()
        .into()
}

/// `delegateCreatedIds(key)`: the on-chain id of `owner`'s delegated subscription `nonce` (0: none).
pub fn delegate_created_id(owner: Address, nonce: u32) -> Bytes {
    EIP712Coordinator::delegateCreatedIdsCall(delegate_key(owner, nonce))
        .abi_encode()
        .into()
}

/// The delivery of interval `interval` of `sub`, and a label for logs.
pub fn deliver(
    delivery: &Delivery,
    sub: &Subscription,
    interval: u32,
    encoded: ChainOutput,
    node_wallet: Address,
) -> (Bytes, String) {
    match delivery {
        Delivery::Delegatee(parts) => {
            let sig = parts.signature;
            let call = EIP712Coordinator::deliverComputeDelegateeCall {
                nonce: sig.nonce,
                expiry: sig.expiry,
                sub: sub.into(),
                v: sig.v,
                r: B256::from(sig.r),
                s: B256::from(sig.s),
                deliveryInterval: interval,
                input: encoded.input,
                output: encoded.output,
                proof: encoded.proof,
                nodeWallet: node_wallet,
            };
            let label = format!(
                "deliverComputeDelegatee {}/{} interval {interval}",
                sub.owner, sig.nonce
            );
            (call.abi_encode().into(), label)
        }
        Delivery::Compute(id) => {
            let call = EIP712Coordinator::deliverComputeCall {
                subscriptionId: *id,
                deliveryInterval: interval,
                input: encoded.input,
                output: encoded.output,
                proof: encoded.proof,
                nodeWallet: node_wallet,
            };
            (
                call.abi_encode().into(),
                format!("deliverCompute subscription {id} interval {interval}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use alloy::primitives::{U256, address};
    use infernet_types::DelegateSignature;

    use super::*;
    use crate::chain::schedule::DelegatedParts;

    const NODE: Address = address!("70997970C51812dc3A010C7d01b50e0d17dc79C8");

    #[test]
    fn the_responded_key_is_abi_encoded() {
        // keccak256(abi.encode(uint32 2, uint32 3, address node)), as the Coordinator computes it.
        let mut encoded = vec![0u8; 96];
        encoded[31] = 2;
        encoded[63] = 3;
        encoded[76..96].copy_from_slice(NODE.as_slice());
        assert_eq!(responded_key(2, 3, NODE), keccak256(&encoded));
    }

    #[test]
    fn the_delegate_key_is_abi_encoded() {
        // keccak256(abi.encode(address owner, uint32 9)), as the Coordinator computes it.
        let mut encoded = vec![0u8; 64];
        encoded[12..32].copy_from_slice(NODE.as_slice());
        encoded[63] = 9;
        assert_eq!(delegate_key(NODE, 9), keccak256(&encoded));
    }

    #[test]
    fn reads_and_deliveries_use_the_coordinators_selectors() {
        // Selectors from the node reference (§7, verified against the SDK).
        assert_eq!(delegate_created_id(NODE, 1)[..4], [0x60, 0xed, 0x0f, 0x61]);
        assert_eq!(node_responded(1, 1, NODE).len(), 36);
        let sub = Subscription {
            owner: NODE,
            active_at: 0,
            period: 0,
            frequency: 1,
            redundancy: 1,
            container_id: B256::ZERO,
            lazy: false,
            verifier: Address::ZERO,
            payment_amount: U256::ZERO,
            payment_token: Address::ZERO,
            wallet: Address::ZERO,
        };
        let out = ChainOutput::default();
        let (data, label) = deliver(&Delivery::Compute(4), &sub, 2, out.clone(), Address::ZERO);
        assert_eq!(data[..4], [0xc5, 0x09, 0x54, 0x3d]);
        assert_eq!(label, "deliverCompute subscription 4 interval 2");
        let parts = Arc::new(DelegatedParts {
            signature: DelegateSignature {
                nonce: 3,
                expiry: 9,
                v: 27,
                r: U256::from(1),
                s: U256::from(2),
            },
            data: Default::default(),
        });
        let (data, _) = deliver(&Delivery::Delegatee(parts), &sub, 1, out, Address::ZERO);
        assert_eq!(data[..4], [0x9f, 0xff, 0x31, 0x4a]);
        let call = EIP712Coordinator::deliverComputeDelegateeCall::abi_decode(&data).unwrap();
        assert_eq!((call.nonce, call.expiry, call.deliveryInterval), (3, 9, 1));
        assert_eq!(call.r, B256::from(U256::from(1)));
    }
}

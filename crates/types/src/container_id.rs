//! The on-chain container id: `keccak256(abi.encode(string "id1,id2,…"))`.

use alloy_primitives::{B256, keccak256};

/// The comma-joined pipeline string that is hashed on chain (no spaces, order significant).
pub fn container_set_string<S: AsRef<str>>(ids: &[S]) -> String {
    let mut joined = String::new();
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            joined.push(',');
        }
        joined.push_str(id.as_ref());
    }
    joined
}

/// `keccak256(abi.encode(string))` of the pipeline `ids`, as the Infernet SDK derives `containerId`.
///
/// `abi.encode` of one string is a 32-byte offset (`0x20`), a 32-byte big-endian length, and the
/// bytes right-padded with zeros to a multiple of 32.
pub fn container_set_hash<S: AsRef<str>>(ids: &[S]) -> B256 {
    let joined = container_set_string(ids);
    let bytes = joined.as_bytes();
    let padded = bytes.len().div_ceil(32) * 32;
    let mut encoded = vec![0u8; 64 + padded];
    encoded[31] = 0x20;
    encoded[32 + 24..64].copy_from_slice(&(bytes.len() as u64).to_be_bytes());
    encoded[64..64 + bytes.len()].copy_from_slice(bytes);
    keccak256(&encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test vectors from the SDK reference (§5), verified against the deployed contracts.
    #[test]
    fn hello_world_vector() {
        assert_eq!(
            container_set_hash(&["hello-world"]).to_string(),
            "0x5768661526084c7b4d30f7224ed6c74ade98db3c6c395c55400a17f34a547e22"
        );
    }

    #[test]
    fn pipeline_vector_is_order_sensitive() {
        assert_eq!(
            container_set_hash(&["A", "B"]).to_string(),
            "0xed76aa63268e9d816365e0b3c94f7ea57c80b3b404d41ca7a65a492ff9d0526e"
        );
        assert_ne!(container_set_hash(&["A", "B"]), container_set_hash(&["B", "A"]));
        assert_eq!(container_set_string(&["A", "B", "C"]), "A,B,C");
    }

    #[test]
    fn padding_boundary_lengths_hash_differently() {
        let id32 = "x".repeat(32);
        let id33 = "x".repeat(33);
        assert_ne!(container_set_hash(&[&id32]), container_set_hash(&[&id33]));
    }
}

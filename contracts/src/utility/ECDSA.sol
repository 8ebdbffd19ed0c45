// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

/// @title ECDSA
/// @notice Signature recovery from `(v, r, s)`.
/// @dev Plain `ecrecover`: `v` must be 27 or 28 and there is no low-`s` restriction (matching the reference SDK).
library ECDSA {
    /// @notice Recovery produced no address. Selector `0x8baa579f`.
    error InvalidSignature();

    function recover(bytes32 digest, uint8 v, bytes32 r, bytes32 s) internal pure returns (address signer) {
        signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert InvalidSignature();
    }
}

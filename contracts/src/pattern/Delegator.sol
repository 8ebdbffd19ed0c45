// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

/// @title Delegator
/// @notice Names the off-chain key allowed to sign EIP-712 `DelegateSubscription`s for this consumer.
abstract contract Delegator {
    address private signer;

    constructor(address initialSigner) {
        signer = initialSigner;
    }

    /// @notice The delegated signer.
    function getSigner() external view returns (address) {
        return signer;
    }

    function _updateSigner(address newSigner) internal {
        signer = newSigner;
    }
}

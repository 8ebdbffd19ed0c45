// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

/// @title ReentrancyGuard
/// @notice Minimal non-reentrancy lock.
/// @dev The lock lives in a fixed out-of-layout slot (the same slot the reference SDK's guard uses), so it does not
///      shift the sequential storage layout of inheriting contracts.
abstract contract ReentrancyGuard {
    /// @notice Re-entered a `nonReentrant` function. Selector `0xab143c06`.
    error Reentrancy();

    uint256 private constant _LOCK_SLOT = 0x929eee149b4bd21268;

    modifier nonReentrant() {
        uint256 locked;
        assembly {
            locked := sload(_LOCK_SLOT)
        }
        if (locked != 0) revert Reentrancy();
        assembly {
            sstore(_LOCK_SLOT, 1)
        }
        _;
        assembly {
            sstore(_LOCK_SLOT, 0)
        }
    }
}

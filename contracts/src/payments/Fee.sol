// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

import {Ownable} from "../utility/Ownable.sol";

/// @title Fee
/// @notice Protocol fee (basis points out of 10,000) and its recipient (the owner).
contract Fee is Ownable {
    /// @notice Protocol fee in basis points. Paid deliveries send `2 * FEE` of the payment to the recipient.
    uint16 public FEE;

    constructor(address feeRecipient, uint16 fee) {
        _initializeOwner(feeRecipient);
        FEE = fee;
    }

    /// @notice Fee recipient (= owner).
    function FEE_RECIPIENT() external view returns (address) {
        return owner();
    }

    /// @notice Updates the protocol fee. Owner only.
    function updateFee(uint16 newFee) external onlyOwner {
        FEE = newFee;
    }
}

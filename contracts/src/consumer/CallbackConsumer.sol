// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

import {BaseConsumer} from "./BaseConsumer.sol";

/// @title CallbackConsumer
/// @notice One-shot requests: each `_requestCompute` creates a subscription with frequency 1, period 0, eager
///         delivery, and remembers the inputs that nodes read back through `getContainerInputs`.
abstract contract CallbackConsumer is BaseConsumer {
    /// @dev subscription id => inputs given to `_requestCompute`
    mapping(uint32 => bytes) internal subscriptionInputs;

    constructor(address registry) BaseConsumer(registry) {}

    function _requestCompute(
        string memory containerId,
        bytes memory inputs,
        uint16 redundancy,
        address paymentToken,
        uint256 paymentAmount,
        address wallet,
        address verifier
    ) internal returns (uint32) {
        uint32 subscriptionId = COORDINATOR.createSubscription(
            containerId, 1, 0, redundancy, false, paymentToken, paymentAmount, wallet, verifier
        );
        subscriptionInputs[subscriptionId] = inputs;
        return subscriptionId;
    }

    /// @notice Returns the inputs stored for `subscriptionId` (other arguments are ignored).
    function getContainerInputs(uint32 subscriptionId, uint32, uint32, address)
        external
        view
        virtual
        override
        returns (bytes memory)
    {
        return subscriptionInputs[subscriptionId];
    }
}

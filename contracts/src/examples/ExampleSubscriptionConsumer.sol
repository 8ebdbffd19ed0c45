// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

import {SubscriptionConsumer} from "../consumer/SubscriptionConsumer.sol";
import {DeliveryRecorder} from "./DeliveryRecorder.sol";

/// @title ExampleSubscriptionConsumer
/// @notice Creates/cancels fully configurable subscriptions and records deliveries.
/// @dev `getContainerInputs(id, interval, _, _)` returns `abi.encode(uint32 id, uint32 interval, bytes inputData)`,
///      deterministic for every node (timestamp and caller are ignored). Not access-controlled: test use only.
contract ExampleSubscriptionConsumer is SubscriptionConsumer, DeliveryRecorder {
    /// @notice Bytes appended to every interval's inputs.
    bytes public inputData;

    constructor(address registry) SubscriptionConsumer(registry) {}

    function setInputData(bytes calldata data) external {
        inputData = data;
    }

    function createSubscription(
        string calldata containerId,
        uint32 frequency,
        uint32 period,
        uint16 redundancy,
        bool lazy,
        address paymentToken,
        uint256 paymentAmount,
        address wallet,
        address verifier
    ) external returns (uint32) {
        return _createComputeSubscription(
            containerId, frequency, period, redundancy, lazy, paymentToken, paymentAmount, wallet, verifier
        );
    }

    function cancelSubscription(uint32 subscriptionId) external {
        _cancelComputeSubscription(subscriptionId);
    }

    function getContainerInputs(uint32 subscriptionId, uint32 interval, uint32, address)
        external
        view
        override
        returns (bytes memory)
    {
        return abi.encode(subscriptionId, interval, inputData);
    }

    function _receiveCompute(
        uint32 subscriptionId,
        uint32 interval,
        uint16 redundancy,
        address node,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof,
        bytes32 containerId,
        uint256 index
    ) internal override {
        _record(subscriptionId, interval, redundancy, node, input, output, proof, containerId, index);
    }
}

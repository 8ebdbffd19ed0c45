// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

import {CallbackConsumer} from "../consumer/CallbackConsumer.sol";
import {DeliveryRecorder} from "./DeliveryRecorder.sol";

/// @title ExampleCallbackConsumer
/// @notice Requests one-shot compute for a container id with given inputs and records what is delivered.
contract ExampleCallbackConsumer is CallbackConsumer, DeliveryRecorder {
    /// @notice Latest non-lazy output received per subscription.
    mapping(uint32 => bytes) public latestOutput;

    constructor(address registry) CallbackConsumer(registry) {}

    /// @notice Creates a callback subscription (frequency 1, period 0, eager) and returns its id.
    function requestCompute(
        string calldata containerId,
        bytes calldata inputs,
        uint16 redundancy,
        address paymentToken,
        uint256 paymentAmount,
        address wallet,
        address verifier
    ) external returns (uint32) {
        return _requestCompute(containerId, inputs, redundancy, paymentToken, paymentAmount, wallet, verifier);
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
        latestOutput[subscriptionId] = output;
        _record(subscriptionId, interval, redundancy, node, input, output, proof, containerId, index);
    }
}

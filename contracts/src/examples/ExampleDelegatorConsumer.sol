// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

import {SubscriptionConsumer} from "../consumer/SubscriptionConsumer.sol";
import {Delegator} from "../pattern/Delegator.sol";
import {DeliveryRecorder} from "./DeliveryRecorder.sol";

/// @title ExampleDelegatorConsumer
/// @notice Consumer whose subscriptions are created off-chain: `signer` signs EIP-712 `DelegateSubscription`s with
///         `owner = address(this)` and nodes submit them via `createSubscriptionDelegatee` / `deliverComputeDelegatee`.
/// @dev `getContainerInputs` as in `ExampleSubscriptionConsumer`. Not access-controlled: test use only.
contract ExampleDelegatorConsumer is SubscriptionConsumer, Delegator, DeliveryRecorder {
    bytes public inputData;

    constructor(address registry, address signer) SubscriptionConsumer(registry) Delegator(signer) {}

    function setSigner(address newSigner) external {
        _updateSigner(newSigner);
    }

    function setInputData(bytes calldata data) external {
        inputData = data;
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

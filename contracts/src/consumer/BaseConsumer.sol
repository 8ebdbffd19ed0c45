// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

import {Registry} from "../Registry.sol";
import {Coordinator} from "../Coordinator.sol";
import {Inbox} from "../Inbox.sol";

/// @title BaseConsumer
/// @notice Common base of Infernet consumers: receives deliveries from the coordinator and exposes inputs to nodes.
abstract contract BaseConsumer {
    /// @notice Caller is not the coordinator. Selector `0x9ec853e6`.
    error NotCoordinator();

    Coordinator internal immutable COORDINATOR;
    Inbox internal immutable INBOX;

    constructor(address registry) {
        COORDINATOR = Coordinator(Registry(registry).COORDINATOR());
        INBOX = Inbox(Registry(registry).INBOX());
    }

    /// @notice Coordinator entry point for a delivery. For lazy subscriptions `input`/`output`/`proof` are empty and
    ///         `(containerId, index)` point at the `Inbox` item (stored under the delivering node); otherwise
    ///         `containerId` is zero and `index` is 0.
    function rawReceiveCompute(
        uint32 subscriptionId,
        uint32 interval,
        uint16 redundancy,
        address node,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof,
        bytes32 containerId,
        uint256 index
    ) external {
        if (msg.sender != address(COORDINATOR)) revert NotCoordinator();
        _receiveCompute(subscriptionId, interval, redundancy, node, input, output, proof, containerId, index);
    }

    /// @notice Inputs for the container run of `subscriptionId`/`interval`, queried by nodes (off-chain call).
    function getContainerInputs(uint32 subscriptionId, uint32 interval, uint32 timestamp, address caller)
        external
        view
        virtual
        returns (bytes memory)
    {}

    /// @dev Override to consume deliveries. Empty by default.
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
    ) internal virtual {}
}

// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

import {Registry} from "./Registry.sol";
import {Coordinated} from "./utility/Coordinated.sol";

/// @notice One stored compute result. `subscriptionId`/`interval` are 0 for direct `write`s.
struct InboxItem {
    uint32 timestamp;
    uint32 subscriptionId;
    uint32 interval;
    bytes input;
    bytes output;
    bytes proof;
}

/// @title Inbox
/// @notice Append-only store of compute outputs, keyed by container id and node. Used for lazy subscriptions
///         (written by the coordinator) and for outputs that nodes push on their own (`write`).
contract Inbox is Coordinated {
    /// @notice containerId => node => items (append-only)
    mapping(bytes32 => mapping(address => InboxItem[])) public items;

    event NewInboxItem(bytes32 indexed containerId, address indexed node, uint256 index);

    constructor(Registry registry) Coordinated(registry) {}

    /// @notice Stores an item under `(containerId, msg.sender)`.
    function write(bytes32 containerId, bytes calldata input, bytes calldata output, bytes calldata proof)
        external
        returns (uint256)
    {
        return _append(containerId, msg.sender, 0, 0, input, output, proof);
    }

    /// @notice Coordinator-only: stores a lazy subscription's output under `(containerId, node)`.
    function writeViaCoordinator(
        bytes32 containerId,
        address node,
        uint32 subscriptionId,
        uint32 interval,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof
    ) external onlyCoordinator returns (uint256) {
        return _append(containerId, node, subscriptionId, interval, input, output, proof);
    }

    /// @notice Reads one item (reverts with panic 0x32 if out of range).
    function read(bytes32 containerId, address node, uint256 index) external view returns (InboxItem memory) {
        return items[containerId][node][index];
    }

    function _append(
        bytes32 containerId,
        address node,
        uint32 subscriptionId,
        uint32 interval,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof
    ) private returns (uint256 index) {
        InboxItem[] storage list = items[containerId][node];
        index = list.length;
        InboxItem storage item = list.push();
        item.timestamp = uint32(block.timestamp);
        item.subscriptionId = subscriptionId;
        item.interval = interval;
        item.input = input;
        item.output = output;
        item.proof = proof;
        emit NewInboxItem(containerId, node, index);
    }
}

// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

/// @notice One delivery as received through `rawReceiveCompute`.
struct Delivery {
    uint32 subscriptionId;
    uint32 interval;
    uint16 redundancy;
    address node;
    bytes input;
    bytes output;
    bytes proof;
    bytes32 containerId;
    uint256 index;
}

/// @title DeliveryRecorder
/// @notice Test helper: keeps every delivery a consumer receives so tests can inspect them.
abstract contract DeliveryRecorder {
    Delivery[] private deliveries;

    event DeliveryReceived(
        uint32 indexed subscriptionId,
        uint32 indexed interval,
        address indexed node,
        uint16 redundancy,
        bytes32 containerId,
        uint256 index
    );

    /// @notice Number of deliveries received.
    function deliveryCount() external view returns (uint256) {
        return deliveries.length;
    }

    /// @notice The `i`-th delivery received (0-based).
    function getDelivery(uint256 i) external view returns (Delivery memory) {
        return deliveries[i];
    }

    /// @notice The most recent delivery (reverts if none).
    function lastDelivery() external view returns (Delivery memory) {
        return deliveries[deliveries.length - 1];
    }

    function _record(
        uint32 subscriptionId,
        uint32 interval,
        uint16 redundancy,
        address node,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof,
        bytes32 containerId,
        uint256 index
    ) internal {
        Delivery storage d = deliveries.push();
        d.subscriptionId = subscriptionId;
        d.interval = interval;
        d.redundancy = redundancy;
        d.node = node;
        d.input = input;
        d.output = output;
        d.proof = proof;
        d.containerId = containerId;
        d.index = index;
        emit DeliveryReceived(subscriptionId, interval, node, redundancy, containerId, index);
    }
}

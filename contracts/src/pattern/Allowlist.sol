// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

/// @title Allowlist
/// @notice Restricts which nodes may deliver to a consumer.
abstract contract Allowlist {
    /// @notice Delivering node is not allowed. Selector `0x42764946`.
    error NodeNotAllowed();

    mapping(address => bool) private allowedNodes;

    constructor(address[] memory initialAllowed) {
        for (uint256 i = 0; i < initialAllowed.length; i++) {
            allowedNodes[initialAllowed[i]] = true;
        }
    }

    modifier onlyAllowedNode(address node) {
        if (!allowedNodes[node]) revert NodeNotAllowed();
        _;
    }

    function isAllowedNode(address node) external view returns (bool) {
        return allowedNodes[node];
    }

    /// @dev Sets `allowedNodes[nodes[i]] = statuses[i]`.
    function _updateAllowlist(address[] memory nodes, bool[] memory statuses) internal {
        for (uint256 i = 0; i < nodes.length; i++) {
            allowedNodes[nodes[i]] = statuses[i];
        }
    }
}

// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

import {Registry} from "../Registry.sol";

/// @title Coordinated
/// @notice Restricts functions to the coordinator registered in the `Registry`.
abstract contract Coordinated {
    /// @notice Caller is not the coordinator. Selector `0x9ec853e6`.
    error NotCoordinator();

    /// @dev Coordinator address, read from the registry at construction.
    address private immutable _coordinator;

    constructor(Registry registry) {
        _coordinator = registry.COORDINATOR();
    }

    modifier onlyCoordinator() {
        if (msg.sender != _coordinator) revert NotCoordinator();
        _;
    }
}

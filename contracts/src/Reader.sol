// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

import {Registry} from "./Registry.sol";
import {Coordinator, Subscription} from "./Coordinator.sol";

/// @title Reader
/// @notice Batch views over the coordinator, used by nodes to sync subscriptions cheaply.
contract Reader {
    Coordinator private immutable COORDINATOR;

    constructor(Registry registry) {
        COORDINATOR = Coordinator(registry.COORDINATOR());
    }

    /// @notice Subscriptions with ids in `[startId, endId)`; unknown ids come back zeroed. Reverts if `endId < startId`.
    function readSubscriptionBatch(uint32 startId, uint32 endId) external view returns (Subscription[] memory) {
        uint32 count = endId - startId;
        Subscription[] memory subs = new Subscription[](count);
        for (uint32 i = 0; i < count; i++) {
            subs[i] = COORDINATOR.getSubscription(startId + i);
        }
        return subs;
    }

    /// @notice `redundancyCount` of each `(ids[i], intervals[i])` pair. Reverts if `intervals` is shorter than `ids`.
    function readRedundancyCountBatch(uint32[] calldata ids, uint32[] calldata intervals)
        external
        view
        returns (uint16[] memory)
    {
        uint16[] memory counts = new uint16[](ids.length);
        for (uint256 i = 0; i < ids.length; i++) {
            counts[i] = COORDINATOR.redundancyCount(keccak256(abi.encode(ids[i], intervals[i])));
        }
        return counts;
    }
}

// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

import {Registry} from "../Registry.sol";
import {Coordinator} from "../Coordinator.sol";
import {IVerifier} from "../payments/IVerifier.sol";

/// @title OptimisticVerifier
/// @notice Test verifier that records proof requests and settles them later via `mockDeliverProof`.
/// @dev Not access-controlled: test use only.
contract OptimisticVerifier is IVerifier {
    Coordinator private immutable COORDINATOR;

    mapping(address => uint256) public fee;
    mapping(address => bool) public isSupportedToken;

    event ProofRequested(uint32 indexed subscriptionId, uint32 indexed interval, address indexed node, bytes proof);

    constructor(Registry registry) {
        COORDINATOR = Coordinator(registry.COORDINATOR());
    }

    receive() external payable {}

    function getWallet() external view returns (address) {
        return address(this);
    }

    function updateFee(address token, uint256 newFee) external {
        fee[token] = newFee;
    }

    function updateSupportedToken(address token, bool supported) external {
        isSupportedToken[token] = supported;
    }

    function requestProofVerification(uint32 subscriptionId, uint32 interval, address node, bytes calldata proof)
        external
    {
        emit ProofRequested(subscriptionId, interval, node, proof);
    }

    /// @notice Settles a pending request with verdict `valid`.
    function mockDeliverProof(uint32 subscriptionId, uint32 interval, address node, bool valid) external {
        COORDINATOR.finalizeProofVerification(subscriptionId, interval, node, valid);
    }
}

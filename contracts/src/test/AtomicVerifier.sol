// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

import {Registry} from "../Registry.sol";
import {Coordinator} from "../Coordinator.sol";
import {IVerifier} from "../payments/IVerifier.sol";

/// @title AtomicVerifier
/// @notice Test verifier that settles every proof inside `requestProofVerification` with a preset verdict.
/// @dev Not access-controlled: test use only. Receives its fee itself (`getWallet() == address(this)`).
contract AtomicVerifier is IVerifier {
    Coordinator private immutable COORDINATOR;

    /// @notice Fee per token.
    mapping(address => uint256) public fee;
    /// @notice Supported tokens.
    mapping(address => bool) public isSupportedToken;
    /// @notice Verdict used for the next verifications (default: valid).
    bool public nextValidity = true;

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

    function setNextValidityTrue() external {
        nextValidity = true;
    }

    function setNextValidityFalse() external {
        nextValidity = false;
    }

    function requestProofVerification(uint32 subscriptionId, uint32 interval, address node, bytes calldata)
        external
    {
        COORDINATOR.finalizeProofVerification(subscriptionId, interval, node, nextValidity);
    }
}

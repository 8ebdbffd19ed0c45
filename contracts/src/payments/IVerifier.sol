// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

/// @title IVerifier
/// @notice Proof verifier consulted by the coordinator for subscriptions with a non-zero `verifier`.
/// @dev A verifier eventually calls `Coordinator.finalizeProofVerification(subscriptionId, interval, node, valid)`,
///      either inside `requestProofVerification` (atomic) or later (optimistic / off-chain).
interface IVerifier {
    /// @notice Address that receives the verifier's fee.
    function getWallet() external view returns (address);

    /// @notice Whether payments in `token` (`address(0)` = ETH) are accepted.
    function isSupportedToken(address token) external view returns (bool);

    /// @notice Fee charged per verification, in `token`.
    function fee(address token) external view returns (uint256);

    /// @notice Called by the coordinator during a paid delivery.
    function requestProofVerification(uint32 subscriptionId, uint32 interval, address node, bytes calldata proof)
        external;
}

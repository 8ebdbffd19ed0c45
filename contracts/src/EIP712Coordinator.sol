// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

import {Registry} from "./Registry.sol";
import {Coordinator, Subscription} from "./Coordinator.sol";
import {Delegator} from "./pattern/Delegator.sol";
import {EIP712} from "./utility/EIP712.sol";
import {ECDSA} from "./utility/ECDSA.sol";

/// @title EIP712Coordinator
/// @notice Coordinator that also accepts subscriptions signed off-chain (EIP-712) by a consumer's delegated signer.
contract EIP712Coordinator is EIP712, Coordinator {
    /// @notice EIP-712 domain name.
    string public constant EIP712_NAME = "InfernetCoordinator";
    /// @notice EIP-712 domain version.
    string public constant EIP712_VERSION = "1";

    /// @dev keccak256("Subscription(address owner,uint32 activeAt,uint32 period,uint32 frequency,uint16 redundancy,
    ///      bytes32 containerId,bool lazy,address verifier,uint256 paymentAmount,address paymentToken,address wallet)")
    bytes32 private constant SUBSCRIPTION_TYPEHASH = 0x3da81ed66ee47395e568c52867826ec137777eef9c1bdfb6bf972dd4385bc5a9;
    /// @dev keccak256("DelegateSubscription(uint32 nonce,uint32 expiry,Subscription sub)" ‖ Subscription type string)
    bytes32 private constant DELEGATE_SUBSCRIPTION_TYPEHASH =
        0xba9ff1aef2b048b42767aade2b901745a3acf14f698a9ec13952098cfd03d0b6;

    /// @notice Highest nonce used so far by each subscription owner (informational; nonces need not be ordered).
    mapping(address => uint32) public maxSubscriberNonce;

    /// @notice keccak256(abi.encode(address owner, uint32 nonce)) => subscription id created with that nonce
    mapping(bytes32 => uint32) public delegateCreatedIds;

    /// @notice Signature expiry has passed. Selector `0x0819bdcd`.
    error SignatureExpired();
    /// @notice Recovered signer is not the owner's delegated signer. Selector `0x10c74b03`.
    error SignerMismatch();

    constructor(Registry registry) Coordinator(registry) {}

    function _domainNameAndVersion() internal pure override returns (string memory, string memory) {
        return (EIP712_NAME, EIP712_VERSION);
    }

    /// @notice Creates a subscription on behalf of `sub.owner` from a signature by `Delegator(sub.owner).getSigner()`.
    ///         Idempotent per `(sub.owner, nonce)`: a repeat returns the existing id without checking the signature.
    function createSubscriptionDelegatee(
        uint32 nonce,
        uint32 expiry,
        Subscription calldata sub,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external returns (uint32) {
        return _createSubscriptionDelegatee(nonce, expiry, sub, v, r, s);
    }

    /// @notice `createSubscriptionDelegatee` followed by `deliverCompute` in one transaction.
    function deliverComputeDelegatee(
        uint32 nonce,
        uint32 expiry,
        Subscription calldata sub,
        uint8 v,
        bytes32 r,
        bytes32 s,
        uint32 deliveryInterval,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof,
        address nodeWallet
    ) external {
        uint32 subscriptionId = _createSubscriptionDelegatee(nonce, expiry, sub, v, r, s);
        deliverCompute(subscriptionId, deliveryInterval, input, output, proof, nodeWallet);
    }

    function _createSubscriptionDelegatee(
        uint32 nonce,
        uint32 expiry,
        Subscription calldata sub,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) private returns (uint32) {
        bytes32 key = keccak256(abi.encode(sub.owner, nonce));
        uint32 existing = delegateCreatedIds[key];
        if (existing != 0) return existing;

        if (uint32(block.timestamp) >= expiry) revert SignatureExpired();

        bytes32 digest = _hashTypedData(
            keccak256(
                abi.encode(DELEGATE_SUBSCRIPTION_TYPEHASH, nonce, expiry, keccak256(abi.encode(SUBSCRIPTION_TYPEHASH, sub)))
            )
        );
        address recovered = ECDSA.recover(digest, v, r, s);
        if (recovered != Delegator(sub.owner).getSigner()) revert SignerMismatch();

        uint32 subscriptionId = _storeSubscription(sub);
        delegateCreatedIds[key] = subscriptionId;
        if (nonce > maxSubscriberNonce[sub.owner]) {
            maxSubscriberNonce[sub.owner] = nonce;
        }
        return subscriptionId;
    }
}

// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

import {Registry} from "./Registry.sol";
import {Inbox} from "./Inbox.sol";
import {Fee} from "./payments/Fee.sol";
import {Wallet} from "./payments/Wallet.sol";
import {WalletFactory} from "./payments/WalletFactory.sol";
import {IVerifier} from "./payments/IVerifier.sol";
import {BaseConsumer} from "./consumer/BaseConsumer.sol";
import {ReentrancyGuard} from "./utility/ReentrancyGuard.sol";

/// @notice A compute subscription. Field order is the ABI tuple order and the EIP-712 `Subscription` member order.
/// @dev Storage: slot+0 owner|activeAt|period|frequency, +1 redundancy, +2 containerId, +3 lazy|verifier,
///      +4 paymentAmount, +5 paymentToken, +6 wallet.
struct Subscription {
    /// consumer contract that receives the output (`address(0)` = no such subscription)
    address owner;
    /// first timestamp at which delivery is allowed (`type(uint32).max` once cancelled)
    uint32 activeAt;
    /// seconds per interval (0 = one interval forever)
    uint32 period;
    /// number of intervals that can be served
    uint32 frequency;
    /// number of distinct nodes that may deliver per interval
    uint16 redundancy;
    /// keccak256(abi.encode(string containerIds))
    bytes32 containerId;
    /// store output in the Inbox and pass only a pointer to the consumer
    bool lazy;
    /// proof verifier (`address(0)` = pay immediately)
    address verifier;
    /// payment per node per interval (0 = unpaid)
    uint256 paymentAmount;
    /// payment token (`address(0)` = ETH)
    address paymentToken;
    /// consumer `Wallet` that pays
    address wallet;
}

/// @notice Escrow record of a delivery awaiting proof verification.
struct ProofRequest {
    /// after this timestamp anyone may finalize and the node is paid regardless of validity
    uint32 expiry;
    /// the delivering node's wallet (holds the node's slashable stake)
    Wallet nodeWallet;
    /// amount escrowed in the consumer's wallet for the node
    uint256 consumerEscrowed;
}

/// @title Coordinator
/// @notice Manages subscriptions and routes node deliveries (with payments and proof verification) to consumers.
contract Coordinator is ReentrancyGuard {
    /*//////////////////////////////////////////////////////////////
                                 STATE
    //////////////////////////////////////////////////////////////*/

    /// @notice Next subscription id to assign (ids start at 1).
    uint32 public id = 1;

    /// @notice keccak256(abi.encode(uint32 subscriptionId, uint32 interval, address node)) => delivered?
    mapping(bytes32 => bool) public nodeResponded;

    /// @notice keccak256(abi.encode(uint32 subscriptionId, uint32 interval)) => number of deliveries so far
    mapping(bytes32 => uint16) public redundancyCount;

    /// @notice keccak256(abi.encode(uint32 subscriptionId, uint32 interval, address node)) => pending proof request
    mapping(bytes32 => ProofRequest) public proofRequests;

    /// @dev subscription id => subscription
    mapping(uint32 => Subscription) internal subscriptions;

    Fee private immutable FEE;
    Inbox private immutable INBOX;
    WalletFactory private immutable WALLET_FACTORY;

    /// @dev Escrow period for verifier-gated payments.
    uint32 private constant PROOF_REQUEST_TTL = 1 weeks;

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    event SubscriptionCreated(uint32 indexed id);
    event SubscriptionCancelled(uint32 indexed id);
    event SubscriptionFulfilled(uint32 indexed id, address indexed node);
    event ProofVerified(
        uint32 indexed id, uint32 indexed interval, address indexed node, bool active, address verifier, bool valid
    );

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @dev `0x23455ba1`
    error InvalidWallet();
    /// @dev `0x4db310c3`
    error IntervalMismatch();
    /// @dev `0x2f4ca85b`
    error IntervalCompleted();
    /// @dev `0xb9857aa1`
    error UnauthorizedVerifier();
    /// @dev `0x88a21e4f`
    error NodeRespondedAlready();
    /// @dev `0x1a00354f`
    error SubscriptionNotFound();
    /// @dev `0x1d68b37c`
    error ProofRequestNotFound();
    /// @dev `0xa7fba711`
    error NotSubscriptionOwner();
    /// @dev `0xae6704a7`
    error SubscriptionCompleted();
    /// @dev `0xefb74efe`
    error SubscriptionNotActive();
    /// @dev `0xe2372799`
    error UnsupportedVerifierToken();

    constructor(Registry registry) {
        FEE = Fee(registry.FEE());
        INBOX = Inbox(registry.INBOX());
        WALLET_FACTORY = WalletFactory(registry.WALLET_FACTORY());
    }

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice Returns the subscription (zeroed for unknown ids).
    function getSubscription(uint32 subscriptionId) external view returns (Subscription memory) {
        return subscriptions[subscriptionId];
    }

    /// @notice Current 1-based interval of a subscription. Only meaningful once `block.timestamp >= activeAt`.
    function getSubscriptionInterval(uint32 activeAt, uint32 period) public view returns (uint32) {
        if (period == 0) return 1;
        unchecked {
            return ((uint32(block.timestamp) - activeAt) / period) + 1;
        }
    }

    /*//////////////////////////////////////////////////////////////
                             SUBSCRIPTIONS
    //////////////////////////////////////////////////////////////*/

    /// @notice Creates a subscription owned by `msg.sender`. Arguments are not validated.
    function createSubscription(
        string memory containerId,
        uint32 frequency,
        uint32 period,
        uint16 redundancy,
        bool lazy,
        address paymentToken,
        uint256 paymentAmount,
        address wallet,
        address verifier
    ) external returns (uint32) {
        return _storeSubscription(
            Subscription({
                owner: msg.sender,
                activeAt: uint32(block.timestamp) + period,
                period: period,
                frequency: frequency,
                redundancy: redundancy,
                containerId: keccak256(abi.encode(containerId)),
                lazy: lazy,
                verifier: verifier,
                paymentAmount: paymentAmount,
                paymentToken: paymentToken,
                wallet: wallet
            })
        );
    }

    /// @notice Cancels a subscription (owner only) by pushing `activeAt` to `type(uint32).max`.
    function cancelSubscription(uint32 subscriptionId) external {
        Subscription storage sub = subscriptions[subscriptionId];
        if (sub.owner != msg.sender) revert NotSubscriptionOwner();
        sub.activeAt = type(uint32).max;
        emit SubscriptionCancelled(subscriptionId);
    }

    /// @dev Assigns the next id, stores `sub`, emits `SubscriptionCreated`.
    function _storeSubscription(Subscription memory sub) internal returns (uint32 subscriptionId) {
        subscriptionId = id;
        id = subscriptionId + 1;
        subscriptions[subscriptionId] = sub;
        emit SubscriptionCreated(subscriptionId);
    }

    /*//////////////////////////////////////////////////////////////
                                DELIVERY
    //////////////////////////////////////////////////////////////*/

    /// @notice Delivers the output of interval `deliveryInterval` of a subscription. `msg.sender` is the node.
    /// @param nodeWallet the node's `Wallet` (payee; escrow source for verifier-gated payments). Ignored if unpaid.
    function deliverCompute(
        uint32 subscriptionId,
        uint32 deliveryInterval,
        bytes calldata input,
        bytes calldata output,
        bytes calldata proof,
        address nodeWallet
    ) public nonReentrant {
        Subscription memory sub = subscriptions[subscriptionId];

        if (sub.owner == address(0)) revert SubscriptionNotFound();
        if (uint32(block.timestamp) < sub.activeAt) revert SubscriptionNotActive();

        uint32 interval = getSubscriptionInterval(sub.activeAt, sub.period);
        if (interval != deliveryInterval) revert IntervalMismatch();
        if (interval > sub.frequency) revert SubscriptionCompleted();

        uint16 numResponded = _countResponse(subscriptionId, interval, sub.redundancy);

        if (sub.paymentAmount > 0) {
            _processPayment(subscriptionId, interval, sub, nodeWallet, proof);
        }

        if (sub.lazy) {
            uint256 index = INBOX.writeViaCoordinator(
                sub.containerId, msg.sender, subscriptionId, interval, input, output, proof
            );
            BaseConsumer(sub.owner).rawReceiveCompute(
                subscriptionId, interval, numResponded, msg.sender, "", "", "", sub.containerId, index
            );
        } else {
            BaseConsumer(sub.owner).rawReceiveCompute(
                subscriptionId, interval, numResponded, msg.sender, input, output, proof, bytes32(0), 0
            );
        }

        emit SubscriptionFulfilled(subscriptionId, msg.sender);
    }

    /// @dev Bumps the interval's redundancy count and marks `msg.sender` as responded. Returns the new count.
    function _countResponse(uint32 subscriptionId, uint32 interval, uint16 redundancy) private returns (uint16) {
        bytes32 intervalKey = keccak256(abi.encode(subscriptionId, interval));
        uint16 count = redundancyCount[intervalKey];
        if (count >= redundancy) revert IntervalCompleted();
        count += 1;
        redundancyCount[intervalKey] = count;

        bytes32 nodeKey = keccak256(abi.encode(subscriptionId, interval, msg.sender));
        if (nodeResponded[nodeKey]) revert NodeRespondedAlready();
        nodeResponded[nodeKey] = true;
        return count;
    }

    /*//////////////////////////////////////////////////////////////
                                PAYMENTS
    //////////////////////////////////////////////////////////////*/

    /// @dev Splits `sub.paymentAmount` between protocol, verifier and node (see README for the math).
    function _processPayment(
        uint32 subscriptionId,
        uint32 interval,
        Subscription memory sub,
        address nodeWallet,
        bytes calldata proof
    ) private {
        if (!WALLET_FACTORY.isValidWallet(nodeWallet)) revert InvalidWallet();
        if (!WALLET_FACTORY.isValidWallet(sub.wallet)) revert InvalidWallet();

        Wallet consumerWallet = Wallet(payable(sub.wallet));
        uint16 feeBps = FEE.FEE();
        address feeRecipient = FEE.FEE_RECIPIENT();

        // Protocol cut: 2 * fee (uint16 arithmetic, checked).
        uint16 doubleFee = feeBps * 2;
        uint256 protocolCut = (sub.paymentAmount * doubleFee) / 10_000;
        consumerWallet.cTransfer(sub.owner, sub.paymentToken, feeRecipient, protocolCut);
        uint256 remaining = sub.paymentAmount - protocolCut;

        if (sub.verifier == address(0)) {
            consumerWallet.cTransfer(sub.owner, sub.paymentToken, nodeWallet, remaining);
            return;
        }

        IVerifier verifier = IVerifier(sub.verifier);
        if (!verifier.isSupportedToken(sub.paymentToken)) revert UnsupportedVerifierToken();

        uint256 verifierFee = verifier.fee(sub.paymentToken);
        remaining -= verifierFee;
        uint256 verifierProtocolCut = (verifierFee * feeBps) / 10_000;
        consumerWallet.cTransfer(sub.owner, sub.paymentToken, feeRecipient, verifierProtocolCut);
        consumerWallet.cTransfer(sub.owner, sub.paymentToken, verifier.getWallet(), verifierFee - verifierProtocolCut);

        // Node stakes the full payment amount; consumer escrows what the node will be paid.
        Wallet(payable(nodeWallet)).cLock(msg.sender, sub.paymentToken, sub.paymentAmount);
        consumerWallet.cLock(sub.owner, sub.paymentToken, remaining);

        proofRequests[keccak256(abi.encode(subscriptionId, interval, msg.sender))] = ProofRequest({
            expiry: uint32(block.timestamp) + PROOF_REQUEST_TTL,
            nodeWallet: Wallet(payable(nodeWallet)),
            consumerEscrowed: remaining
        });

        verifier.requestProofVerification(subscriptionId, interval, msg.sender, proof);
    }

    /// @notice Settles a verifier-gated payment. Before expiry only the subscription's verifier may call it
    ///         (`valid` pays the node, `!valid` slashes the node's stake to the consumer); after expiry anyone may
    ///         call it and the node is paid.
    function finalizeProofVerification(uint32 subscriptionId, uint32 interval, address node, bool valid) external {
        bytes32 key = keccak256(abi.encode(subscriptionId, interval, node));
        ProofRequest memory request = proofRequests[key];
        if (request.expiry == 0) revert ProofRequestNotFound();
        delete proofRequests[key];

        Subscription storage sub = subscriptions[subscriptionId];
        address token = sub.paymentToken;
        uint256 stake = sub.paymentAmount;
        address owner = sub.owner;
        Wallet consumerWallet = Wallet(payable(sub.wallet));

        request.nodeWallet.cUnlock(node, token, stake);
        consumerWallet.cUnlock(owner, token, request.consumerEscrowed);

        bool active = uint32(block.timestamp) < request.expiry;
        if (active) {
            if (msg.sender != sub.verifier) revert UnauthorizedVerifier();
            if (valid) {
                consumerWallet.cTransfer(owner, token, address(request.nodeWallet), request.consumerEscrowed);
            } else {
                request.nodeWallet.cTransfer(node, token, address(consumerWallet), stake);
            }
        } else {
            consumerWallet.cTransfer(owner, token, address(request.nodeWallet), request.consumerEscrowed);
        }

        emit ProofVerified(subscriptionId, interval, node, active, msg.sender, valid);
    }
}

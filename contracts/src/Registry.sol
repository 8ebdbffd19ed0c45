// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

/// @title Registry
/// @notice Immutable address book of the core Infernet contracts.
/// @dev Deployed first, with the pre-computed CREATE addresses of the five contracts that read it in their
///      constructors (see README: deployment order).
contract Registry {
    address public immutable COORDINATOR;
    address public immutable INBOX;
    address public immutable READER;
    address public immutable FEE;
    address public immutable WALLET_FACTORY;

    constructor(address coordinator, address inbox, address reader, address fee, address walletFactory) {
        COORDINATOR = coordinator;
        INBOX = inbox;
        READER = reader;
        FEE = fee;
        WALLET_FACTORY = walletFactory;
    }
}

// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

import {Registry} from "../Registry.sol";
import {Wallet} from "./Wallet.sol";

/// @title WalletFactory
/// @notice Creates `Wallet`s and remembers which addresses are genuine wallets (checked by the coordinator).
contract WalletFactory {
    Registry private immutable REGISTRY;

    /// @notice True for every wallet created by this factory.
    mapping(address => bool) public isValidWallet;

    event WalletCreated(address indexed caller, address indexed owner, address wallet);

    constructor(Registry registry) {
        REGISTRY = registry;
    }

    /// @notice Deploys a new `Wallet` owned by `initialOwner`.
    function createWallet(address initialOwner) external returns (address) {
        address wallet = address(new Wallet(REGISTRY, initialOwner));
        isValidWallet[wallet] = true;
        emit WalletCreated(msg.sender, initialOwner, wallet);
        return wallet;
    }
}

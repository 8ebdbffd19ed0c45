// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

import {Registry} from "../Registry.sol";
import {Ownable} from "../utility/Ownable.sol";
import {Coordinated} from "../utility/Coordinated.sol";
import {SafeTransfer} from "../utility/SafeTransfer.sol";

interface IERC20Balance {
    function balanceOf(address account) external view returns (uint256);
}

/// @title Wallet
/// @notice Escrow wallet for Infernet payments. The owner funds it and grants per-spender, per-token allowances;
///         the coordinator moves (`cTransfer`) or escrows (`cLock` / `cUnlock`) funds against those allowances.
/// @dev Token `address(0)` is native ETH. Known, accepted limitation: the owner can withdraw right before a
///      delivery and leave the node unpaid (the delivery then reverts).
contract Wallet is Ownable, Coordinated {
    /// @dev Escrowed amount per token (slot 0).
    mapping(address token => uint256) private lockedBalance;

    /// @notice Remaining amount `spender` may have the coordinator spend or lock, per token.
    mapping(address spender => mapping(address token => uint256)) public allowance;

    event Withdrawl(address token, uint256 amount);
    event Approval(address indexed spender, address token, uint256 amount);
    event Escrow(address indexed spender, address token, uint256 amount, bool locked);
    event Transfer(address indexed spender, address token, address indexed to, uint256 amount);

    /// @notice Amount exceeds the unlocked (withdraw, cLock) or locked (cUnlock) balance. Selector `0x356680b7`.
    error InsufficientFunds();
    /// @notice Amount exceeds the spender's allowance. Selector `0x13be252b`.
    error InsufficientAllowance();

    constructor(Registry registry, address initialOwner) Coordinated(registry) {
        _initializeOwner(initialOwner);
    }

    receive() external payable {}

    /// @notice Withdraws unlocked funds to the owner.
    function withdraw(address token, uint256 amount) external onlyOwner {
        if (amount > _unlockedBalance(token)) revert InsufficientFunds();
        _send(token, msg.sender, amount);
        emit Withdrawl(token, amount);
    }

    /// @notice Sets (overwrites) `spender`'s allowance for `token`.
    function approve(address spender, address token, uint256 amount) external onlyOwner {
        allowance[spender][token] = amount;
        emit Approval(spender, token, amount);
    }

    /// @notice Coordinator: pays `amount` of `token` to `to`, charged to `spender`'s allowance.
    function cTransfer(address spender, address token, address to, uint256 amount) external onlyCoordinator {
        uint256 allowed = allowance[spender][token];
        if (allowed < amount) revert InsufficientAllowance();
        allowance[spender][token] = allowed - amount;
        _send(token, to, amount);
        emit Transfer(spender, token, to, amount);
    }

    /// @notice Coordinator: escrows `amount` of `token`, charged to `spender`'s allowance.
    function cLock(address spender, address token, uint256 amount) external onlyCoordinator {
        if (amount > _unlockedBalance(token)) revert InsufficientFunds();
        uint256 allowed = allowance[spender][token];
        if (allowed < amount) revert InsufficientAllowance();
        allowance[spender][token] = allowed - amount;
        lockedBalance[token] += amount;
        emit Escrow(spender, token, amount, true);
    }

    /// @notice Coordinator: releases `amount` of escrowed `token` back to `spender`'s allowance.
    function cUnlock(address spender, address token, uint256 amount) external onlyCoordinator {
        uint256 locked = lockedBalance[token];
        if (amount > locked) revert InsufficientFunds();
        lockedBalance[token] = locked - amount;
        allowance[spender][token] += amount;
        emit Escrow(spender, token, amount, false);
    }

    function _unlockedBalance(address token) internal view returns (uint256) {
        uint256 balance = token == address(0) ? address(this).balance : IERC20Balance(token).balanceOf(address(this));
        return balance - lockedBalance[token];
    }

    function _send(address token, address to, uint256 amount) internal {
        if (token == address(0)) {
            SafeTransfer.forceSafeTransferETH(to, amount);
        } else {
            SafeTransfer.safeTransfer(token, to, amount);
        }
    }
}

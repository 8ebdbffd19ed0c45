// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

/// @title SafeTransfer
/// @notice ETH and ERC-20 transfer helpers.
library SafeTransfer {
    /// @notice ERC-20 transfer failed (reverted, returned false, or token has no code). Selector `0x90b8ec18`.
    error TransferFailed();
    /// @notice Not enough ETH to send. Selector `0xb12d13eb`.
    error ETHTransferFailed();

    /// @dev Gas forwarded to the recipient before falling back to a forced transfer.
    uint256 private constant _ETH_GAS_STIPEND = 100_000;

    /// @notice Sends `amount` wei to `to` without letting the recipient block it: if the plain call fails, the ETH is
    ///         pushed with a throwaway contract that self-destructs to `to`.
    function forceSafeTransferETH(address to, uint256 amount) internal {
        if (address(this).balance < amount) revert ETHTransferFailed();
        (bool ok,) = to.call{value: amount, gas: _ETH_GAS_STIPEND}("");
        if (ok) return;
        // initcode: PUSH20 <to> SELFDESTRUCT
        bytes memory initCode = abi.encodePacked(hex"73", to, hex"ff");
        address forwarder;
        assembly {
            forwarder := create(amount, add(initCode, 0x20), mload(initCode))
        }
        if (forwarder == address(0)) revert ETHTransferFailed();
    }

    /// @notice `token.transfer(to, amount)`, accepting tokens that return nothing.
    function safeTransfer(address token, address to, uint256 amount) internal {
        if (token.code.length == 0) revert TransferFailed();
        (bool ok, bytes memory ret) = token.call(abi.encodeWithSelector(0xa9059cbb, to, amount));
        if (!ok || (ret.length != 0 && (ret.length < 32 || abi.decode(ret, (uint256)) != 1))) {
            revert TransferFailed();
        }
    }
}

// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

/// @title Ownable
/// @notice Single-owner access control with a two-step handover option. The external interface (functions, events,
///         errors) mirrors the one exposed by the Infernet SDK's wallets and fee contract.
/// @dev Owner and handover records live in dedicated storage slots (not in the sequential layout), so inheriting
///      contracts keep their own state variables starting at slot 0.
abstract contract Ownable {
    /// @notice Caller is not the owner.
    error Unauthorized();
    /// @notice `transferOwnership` was called with the zero address.
    error NewOwnerIsZeroAddress();
    /// @notice `completeOwnershipHandover` was called for an address with no live handover request.
    error NoHandoverRequest();
    /// @notice The owner was initialized twice.
    error AlreadyInitialized();

    event OwnershipTransferred(address indexed oldOwner, address indexed newOwner);
    event OwnershipHandoverRequested(address indexed pendingOwner);
    event OwnershipHandoverCanceled(address indexed pendingOwner);

    /// @dev keccak256("infernet.contracts.Ownable.owner") - 1
    uint256 private constant _OWNER_SLOT = 0x16264c39da12edbb6e3b7545493b4e3c1e9c3d65bd42d07550a78cd63cb66a86;
    /// @dev keccak256("infernet.contracts.Ownable.handover"); handover slot = keccak256(abi.encode(pendingOwner, seed))
    uint256 private constant _HANDOVER_SEED = 0x70a50b289c11e2e34d252daca28f1d5bf02a369ad5177b8afc3902fe7d6b85d7;

    /// @notice How long a handover request stays valid.
    uint64 private constant _HANDOVER_VALIDITY = 48 hours;

    modifier onlyOwner() {
        if (msg.sender != owner()) revert Unauthorized();
        _;
    }

    /// @notice Current owner.
    function owner() public view returns (address result) {
        assembly {
            result := sload(_OWNER_SLOT)
        }
    }

    /// @notice Expiry timestamp of `pendingOwner`'s handover request (0 if none).
    function ownershipHandoverExpiresAt(address pendingOwner) public view returns (uint256 result) {
        uint256 slot = _handoverSlot(pendingOwner);
        assembly {
            result := sload(slot)
        }
    }

    function transferOwnership(address newOwner) public payable virtual onlyOwner {
        if (newOwner == address(0)) revert NewOwnerIsZeroAddress();
        _setOwner(newOwner);
    }

    function renounceOwnership() public payable virtual onlyOwner {
        _setOwner(address(0));
    }

    function requestOwnershipHandover() public payable virtual {
        _writeHandover(msg.sender, block.timestamp + _HANDOVER_VALIDITY);
        emit OwnershipHandoverRequested(msg.sender);
    }

    function cancelOwnershipHandover() public payable virtual {
        _writeHandover(msg.sender, 0);
        emit OwnershipHandoverCanceled(msg.sender);
    }

    function completeOwnershipHandover(address pendingOwner) public payable virtual onlyOwner {
        uint256 expiresAt = ownershipHandoverExpiresAt(pendingOwner);
        if (expiresAt == 0 || block.timestamp > expiresAt) revert NoHandoverRequest();
        _writeHandover(pendingOwner, 0);
        _setOwner(pendingOwner);
    }

    /// @dev Sets the first owner; meant to be called once from a constructor.
    function _initializeOwner(address newOwner) internal {
        if (owner() != address(0)) revert AlreadyInitialized();
        _setOwner(newOwner);
    }

    function _setOwner(address newOwner) private {
        address oldOwner = owner();
        assembly {
            sstore(_OWNER_SLOT, newOwner)
        }
        emit OwnershipTransferred(oldOwner, newOwner);
    }

    function _handoverSlot(address pendingOwner) private pure returns (uint256) {
        return uint256(keccak256(abi.encode(pendingOwner, _HANDOVER_SEED)));
    }

    function _writeHandover(address pendingOwner, uint256 expiresAt) private {
        uint256 slot = _handoverSlot(pendingOwner);
        assembly {
            sstore(slot, expiresAt)
        }
    }
}

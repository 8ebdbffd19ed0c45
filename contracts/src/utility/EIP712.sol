// SPDX-License-Identifier: BSD-3-Clause-Clear
pragma solidity ^0.8.28;

/// @title EIP712
/// @notice EIP-712 domain separator (name, version, chainId, verifyingContract; no salt) and ERC-5267 `eip712Domain()`.
/// @dev The separator is cached at construction and recomputed when the chain id or contract address differ
///      (forks, proxies).
abstract contract EIP712 {
    /// @dev keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    bytes32 internal constant _DOMAIN_TYPEHASH = 0x8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f;

    bytes32 private immutable _hashedName;
    bytes32 private immutable _hashedVersion;
    uint256 private immutable _cachedChainId;
    address private immutable _cachedThis;
    bytes32 private immutable _cachedDomainSeparator;

    constructor() {
        (string memory name, string memory version) = _domainNameAndVersion();
        _hashedName = keccak256(bytes(name));
        _hashedVersion = keccak256(bytes(version));
        _cachedChainId = block.chainid;
        _cachedThis = address(this);
        _cachedDomainSeparator = _buildDomainSeparator(keccak256(bytes(name)), keccak256(bytes(version)));
    }

    /// @dev Domain name and version; must be constant for the lifetime of the contract.
    function _domainNameAndVersion() internal view virtual returns (string memory name, string memory version);

    function _buildDomainSeparator(bytes32 hashedName, bytes32 hashedVersion) private view returns (bytes32) {
        return keccak256(abi.encode(_DOMAIN_TYPEHASH, hashedName, hashedVersion, block.chainid, address(this)));
    }

    /// @notice Current domain separator.
    function _domainSeparator() internal view returns (bytes32) {
        if (block.chainid == _cachedChainId && address(this) == _cachedThis) {
            return _cachedDomainSeparator;
        }
        return _buildDomainSeparator(_hashedName, _hashedVersion);
    }

    /// @notice `keccak256(0x1901 ‖ domainSeparator ‖ structHash)`.
    function _hashTypedData(bytes32 structHash) internal view returns (bytes32) {
        return keccak256(abi.encodePacked(hex"1901", _domainSeparator(), structHash));
    }

    /// @notice ERC-5267 domain description.
    function eip712Domain()
        public
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        fields = hex"0f";
        (name, version) = _domainNameAndVersion();
        chainId = block.chainid;
        verifyingContract = address(this);
        salt = bytes32(0);
        extensions = new uint256[](0);
    }
}

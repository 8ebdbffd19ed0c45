//! Addresses and amounts as the wallet commands take them on the command line.

use alloy::primitives::{Address, U256};

/// Why an address or an amount was refused (clap prints it after the flag and value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ArgError {
    /// Not 20 bytes of hex.
    #[error("expected a 0x-prefixed address of 40 hex digits")]
    Address,
    /// Not a whole number of wei nor a decimal with a known unit.
    #[error("expected a whole number of wei like 1000000000000000000, or 1.5ether / 20gwei, found {0:?}")]
    Amount(String),
    /// More than a `uint256` holds.
    #[error("{0} does not fit in 256 bits")]
    TooBig(String),
}

/// `--wallet`, `--token` and other addresses.
pub(super) fn parse_address(s: &str) -> Result<Address, ArgError> {
    s.trim().parse().map_err(|_| ArgError::Address)
}

/// `--amount`: a whole number in the smallest unit (wei), or a decimal with an `ether` (10^18) or
/// `gwei` (10^9) suffix; digits beyond the unit's precision are refused rather than rounded.
pub(super) fn parse_amount(s: &str) -> Result<U256, ArgError> {
    let s = s.trim();
    let (number, decimals) = [("ether", 18), ("gwei", 9), ("wei", 0)]
        .into_iter()
        .find_map(|(unit, decimals)| s.strip_suffix(unit).map(|n| (n.trim(), decimals)))
        .unwrap_or((s, 0));
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > decimals {
        return Err(ArgError::Amount(s.to_string()));
    }
    let scaled = format!("{whole}{fraction:0<decimals$}");
    U256::from_str_radix(&scaled, 10).map_err(|_| ArgError::TooBig(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_decimal_wei_or_ether_and_gwei() {
        assert_eq!(parse_amount("1000"), Ok(U256::from(1000)));
        assert_eq!(parse_amount("0"), Ok(U256::ZERO));
        assert_eq!(parse_amount("1.5ether"), Ok(U256::from(1_500_000_000_000_000_000u128)));
        assert_eq!(parse_amount("20gwei"), Ok(U256::from(20_000_000_000u64)));
        assert_eq!(parse_amount("7wei"), Ok(U256::from(7)));
        assert_eq!(parse_amount("2 ether"), Ok(U256::from(2_000_000_000_000_000_000u128)));
        assert_eq!(parse_amount("0.000000001ether"), Ok(U256::from(1_000_000_000u64)));
        for bad in [
            "",
            "-1",
            "0x10",
            "1.5",
            "1e18",
            "-1ether",
            "+1ether",
            "ether",
            ".5ether",
            "1.2.3ether",
            "1.5wei",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad:?} accepted");
        }
        let too_big = format!("1{}", "0".repeat(78));
        assert!(parse_amount(&too_big).unwrap_err().to_string().contains("256 bits"));
    }

    #[test]
    fn addresses_must_be_20_bytes_of_hex() {
        assert!(parse_address("0x70997970C51812dc3A010C7d01b50e0d17dc79C8").is_ok());
        assert!(parse_address("0x1234").is_err());
        assert!(parse_address("nope").is_err());
    }

    #[test]
    fn messages_say_what_is_expected() {
        assert_eq!(
            parse_amount("1.5").unwrap_err().to_string(),
            "expected a whole number of wei like 1000000000000000000, or 1.5ether / 20gwei, found \"1.5\""
        );
        assert_eq!(
            parse_address("0x1234").unwrap_err().to_string(),
            "expected a 0x-prefixed address of 40 hex digits"
        );
    }
}

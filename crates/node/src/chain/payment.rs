//! Whether a subscription's wallet can pay one delivery (the Coordinator's checks, read before
//! a delivery is attempted). Pure.

use alloy::primitives::{Address, U256};
use infernet_types::Subscription;

/// Why a subscription's wallet cannot pay one delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unpayable {
    /// The wallet is not one of the `WalletFactory`'s, so it can never pay.
    #[error("subscription wallet {0} was not created by the WalletFactory")]
    InvalidWallet(Address),
    /// The owner may spend less than one payment from the wallet.
    #[error("the owner's allowance in wallet {wallet} is {allowance}, below the payment {amount}")]
    Allowance {
        /// The wallet.
        wallet: Address,
        /// What the owner may spend.
        allowance: U256,
        /// One payment.
        amount: U256,
    },
    /// The wallet holds less than one payment.
    #[error("wallet {wallet} holds {balance}, below the payment {amount}")]
    Balance {
        /// The wallet.
        wallet: Address,
        /// What it holds.
        balance: U256,
        /// One payment.
        amount: U256,
    },
}

/// Why `sub`'s wallet cannot pay one delivery, if it cannot.
pub fn unpayable(sub: &Subscription, valid_wallet: bool, allowance: U256, balance: U256) -> Option<Unpayable> {
    let (wallet, amount) = (sub.wallet, sub.payment_amount);
    if !valid_wallet {
        Some(Unpayable::InvalidWallet(wallet))
    } else if allowance < amount {
        Some(Unpayable::Allowance {
            wallet,
            allowance,
            amount,
        })
    } else if balance < amount {
        Some(Unpayable::Balance {
            wallet,
            balance,
            amount,
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{B256, address};

    use super::*;

    const OWNER: Address = address!("00000000000000000000000000000000000000aa");

    #[test]
    fn unpayable_names_the_first_reason() {
        let mut paid = Subscription {
            owner: OWNER,
            active_at: 0,
            period: 0,
            frequency: 1,
            redundancy: 1,
            container_id: B256::ZERO,
            lazy: false,
            verifier: Address::ZERO,
            payment_amount: U256::ZERO,
            payment_token: Address::ZERO,
            wallet: Address::ZERO,
        };
        paid.payment_amount = U256::from(10);
        paid.wallet = OWNER;
        let ten = U256::from(10);
        assert_eq!(unpayable(&paid, false, ten, ten), Some(Unpayable::InvalidWallet(OWNER)));
        assert!(matches!(
            unpayable(&paid, true, U256::from(9), ten),
            Some(Unpayable::Allowance { .. })
        ));
        assert!(matches!(
            unpayable(&paid, true, ten, U256::from(9)),
            Some(Unpayable::Balance { .. })
        ));
        assert_eq!(unpayable(&paid, true, ten, ten), None);
        let shown = unpayable(&paid, true, ten, U256::ZERO).unwrap().to_string();
        assert!(shown.contains("holds 0, below the payment 10"), "{shown}");
    }
}

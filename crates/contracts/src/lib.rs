//! The Infernet SDK contracts from Rust: typed bindings generated from the committed artifacts in
//! `contracts/out/`, deployment in the reference order, EIP-712 delegated-subscription signing, and a local
//! anvil devnet.
//!
//! ```no_run
//! # async fn demo() -> Result<(), infernet_contracts::devnet::DevnetError> {
//! use infernet_contracts::devnet::{Devnet, DevnetOptions};
//! let devnet = Devnet::start(DevnetOptions::default()).await?;
//! println!("registry at {}", devnet.deployment.registry);
//! # Ok(())
//! # }
//! ```

pub mod anvil;
pub mod bindings;
pub mod deploy;
pub mod devnet;
pub mod eip712;

use alloy::primitives::{B256, keccak256};
use alloy::sol_types::SolValue;

pub use deploy::{DeployParams, Deployment, Examples, deploy, deploy_examples};
pub use devnet::{Devnet, DevnetOptions};

/// On-chain id of a container pipeline: `keccak256(abi.encode(string))` of the comma-joined container ids
/// (e.g. `"A,B"`), as `createSubscription` stores it.
pub fn container_id(containers: &str) -> B256 {
    keccak256(containers.abi_encode())
}

/// Conversions between [`infernet_types::Subscription`] and the `Subscription` struct of each
/// binding (every ABI file gets its own Rust type for the same Solidity struct).
macro_rules! subscription_conversions {
    ($($sol:ty),* $(,)?) => {$(
        impl From<$sol> for infernet_types::Subscription {
            fn from(s: $sol) -> Self {
                Self {
                    owner: s.owner,
                    active_at: s.activeAt,
                    period: s.period,
                    frequency: s.frequency,
                    redundancy: s.redundancy,
                    container_id: s.containerId,
                    lazy: s.lazy,
                    verifier: s.verifier,
                    payment_amount: s.paymentAmount,
                    payment_token: s.paymentToken,
                    wallet: s.wallet,
                }
            }
        }

        impl From<&infernet_types::Subscription> for $sol {
            fn from(s: &infernet_types::Subscription) -> Self {
                Self {
                    owner: s.owner,
                    activeAt: s.active_at,
                    period: s.period,
                    frequency: s.frequency,
                    redundancy: s.redundancy,
                    containerId: s.container_id,
                    lazy: s.lazy,
                    verifier: s.verifier,
                    paymentAmount: s.payment_amount,
                    paymentToken: s.payment_token,
                    wallet: s.wallet,
                }
            }
        }
    )*};
}

subscription_conversions!(
    bindings::EIP712Coordinator::Subscription,
    bindings::Reader::Subscription,
    eip712::Subscription,
);

/// A provider that signs with `signer`, connected to `url`; it estimates gas, fetches the chain
/// id and reads the nonce from the chain for every transaction.
///
/// alloy's default (cached) nonce manager keeps a nonce it handed out even when gas estimation then
/// fails, so after one expected revert every later transaction of the account would wait forever
/// behind the gap.
pub fn signing_provider(
    url: alloy::transports::http::reqwest::Url,
    signer: alloy::signers::local::PrivateKeySigner,
) -> alloy::providers::DynProvider {
    use alloy::providers::{Provider, ProviderBuilder};
    install_tls_provider();
    ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(alloy::network::EthereumWallet::from(signer))
        .connect_http(url)
        .erased()
}

/// Installs ring as the process-wide TLS provider: the workspace builds reqwest with rustls but no
/// default provider, and alloy's HTTP transport panics without one. Idempotent.
pub fn install_tls_provider() {
    // An error means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

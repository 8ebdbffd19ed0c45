//! Chain side of the node. What runs today is the boot sequence: the node's key, the RPC endpoint
//! and its chain id, and the protocol addresses read from the `Registry`. The Listener, the
//! Processor and the Wallet (issue #5) build on [`Chain`].

use std::{future::IntoFuture, str::FromStr, time::Duration};

use alloy::{
    primitives::Address,
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::client::ClientBuilder,
    signers::local::PrivateKeySigner,
    transports::layers::RetryBackoffLayer,
};
use infernet_contracts::bindings::Registry;

use crate::config::ChainConfig;

/// How long one boot-time RPC call may take, retries included.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of a rate-limited or overloaded RPC call.
const RPC_RETRIES: u32 = 8;
/// First backoff of such a retry, in milliseconds (it grows with each attempt).
const RPC_BACKOFF_MS: u64 = 200;
/// Compute-unit budget per second assumed for the endpoint (alloy's backoff uses it).
const RPC_COMPUTE_UNITS: u64 = 10_000;

/// Why the chain side could not start.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The private key does not parse (it is never printed).
    #[error("chain.wallet.private_key: not a valid secp256k1 key")]
    Key,
    /// The RPC endpoint failed.
    #[error("RPC {url}: {message} (check chain.rpc_url and that the endpoint is up)")]
    Rpc {
        /// The endpoint, without credentials or path.
        url: String,
        /// What failed.
        message: String,
    },
    /// The Registry could not be read.
    #[error("no Infernet Registry at {address} on chain {chain_id}: {message} (check chain.registry_address)")]
    Registry {
        /// Address tried.
        address: Address,
        /// Chain id of the endpoint.
        chain_id: u64,
        /// What failed.
        message: String,
    },
}

/// The chain as the node sees it after boot.
#[derive(Debug, Clone)]
pub struct Chain {
    /// Provider for reads.
    pub provider: DynProvider,
    /// Chain id of the RPC endpoint.
    pub chain_id: u64,
    /// The node's account (from its key).
    pub node_address: Address,
    /// Infernet `Registry`.
    pub registry: Address,
    /// `EIP712Coordinator`.
    pub coordinator: Address,
    /// `Reader`.
    pub reader: Address,
    /// `Inbox`.
    pub inbox: Address,
    /// `WalletFactory`.
    pub wallet_factory: Address,
}

/// `scheme://host[:port]` of an RPC URL: paths and user info often carry API keys.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let host = authority.rsplit('@').next().unwrap_or_default();
            let hidden = if rest.len() > authority.len() || authority.contains('@') {
                "/…"
            } else {
                ""
            };
            format!("{scheme}://{host}{hidden}")
        }
        None => "<invalid URL>".into(),
    }
}

async fn timed<T, E: std::fmt::Display>(what: &str, call: impl IntoFuture<Output = Result<T, E>>) -> Result<T, String> {
    match tokio::time::timeout(RPC_TIMEOUT, call.into_future()).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what} failed: {e}")),
        Err(_) => Err(format!("{what} did not answer within {RPC_TIMEOUT:?}")),
    }
}

/// Connects to the chain of a validated config: key, chain id, Registry lookup.
pub async fn connect(config: &ChainConfig) -> Result<Chain, ChainError> {
    crate::install_tls_provider();
    let key = config
        .wallet
        .as_ref()
        .and_then(|w| w.private_key.as_ref())
        .ok_or(ChainError::Key)?;
    let signer = PrivateKeySigner::from_str(key.expose().trim()).map_err(|_| ChainError::Key)?;
    let raw_url = config.rpc_url.as_deref().unwrap_or_default();
    let url = redact_url(raw_url);
    let endpoint: reqwest::Url = raw_url.parse().map_err(|e| ChainError::Rpc {
        url: url.clone(),
        message: format!("not a URL: {e}"),
    })?;
    // Transport errors quote the full URL, API key included: show the redacted form instead.
    let full = [raw_url.to_string(), endpoint.to_string()];
    let scrub = |message: String| full.iter().fold(message, |m, u| m.replace(u.as_str(), &url));
    let rpc_error = |message: String| ChainError::Rpc {
        url: url.clone(),
        message: scrub(message),
    };
    // Rate limits (429) and overloaded endpoints (503 and the like) are retried with backoff; other
    // errors surface at once.
    let client = ClientBuilder::default()
        .layer(RetryBackoffLayer::new(RPC_RETRIES, RPC_BACKOFF_MS, RPC_COMPUTE_UNITS))
        .http(endpoint);
    let provider = ProviderBuilder::new().connect_client(client).erased();
    let chain_id = timed("eth_chainId", provider.get_chain_id()).await.map_err(rpc_error)?;
    let registry_address =
        Address::from_str(config.registry_address.as_deref().unwrap_or_default().trim()).map_err(|e| {
            ChainError::Registry {
                address: Address::ZERO,
                chain_id,
                message: e.to_string(),
            }
        })?;
    let registry_error = |message: String| ChainError::Registry {
        address: registry_address,
        chain_id,
        message: scrub(message),
    };
    let code = timed("eth_getCode", provider.get_code_at(registry_address))
        .await
        .map_err(rpc_error)?;
    if code.is_empty() {
        return Err(registry_error("no contract code there".into()));
    }
    let registry = Registry::new(registry_address, provider.clone());
    let coordinator = timed("Registry.COORDINATOR()", registry.COORDINATOR().call())
        .await
        .map_err(registry_error)?;
    let reader = timed("Registry.READER()", registry.READER().call())
        .await
        .map_err(registry_error)?;
    let inbox = timed("Registry.INBOX()", registry.INBOX().call())
        .await
        .map_err(registry_error)?;
    let wallet_factory = timed("Registry.WALLET_FACTORY()", registry.WALLET_FACTORY().call())
        .await
        .map_err(registry_error)?;
    tracing::info!(chain_id, node = %signer.address(), %coordinator, %reader, "chain connected");
    Ok(Chain {
        provider,
        chain_id,
        node_address: signer.address(),
        registry: registry_address,
        coordinator,
        reader,
        inbox,
        wallet_factory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_urls_are_shown_without_keys() {
        assert_eq!(
            redact_url("https://mainnet.example/v2/SECRETKEY"),
            "https://mainnet.example/…"
        );
        assert_eq!(redact_url("http://user:pass@127.0.0.1:8545"), "http://127.0.0.1:8545/…");
        assert_eq!(redact_url("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
    }
}

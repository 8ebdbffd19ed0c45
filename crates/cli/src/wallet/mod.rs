//! `infernet wallet`: the SDK's payment `Wallet` (an escrow created by the `WalletFactory`) from the
//! command line: create one, fund it, approve spenders, withdraw, and read balances, allowances and
//! the owner.
//!
//! Writes wait for their receipt. A revert is decoded to the contract's custom error
//! (`InsufficientFunds()`, `Unauthorized()`, …) so the user sees why the chain refused.

mod amounts;
mod chain;
mod error;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use infernet_contracts::bindings::{Wallet, WalletFactory};
use serde_json::{Value, json};

use self::amounts::{parse_address, parse_amount};
use self::chain::{Chain, IERC20};
use self::error::WalletCmdError;
use crate::commands::Failure;

/// Options of `infernet wallet`.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "The SDK's payment Wallet: an escrow created by the WalletFactory that pays nodes for \
                  subscriptions. Create one, fund it, approve spenders (e.g. a subscription consumer), \
                  withdraw, and read balances, allowances and the owner.\n\n\
                  Amounts are integers in the token's smallest unit (wei for ETH); `1.5ether` and `20gwei` \
                  multiply by 10^18 and 10^9. --token defaults to 0x0000000000000000000000000000000000000000, \
                  native ETH."
)]
pub(crate) struct WalletArgs {
    #[command(flatten)]
    chain: ChainArgs,
    #[command(subcommand)]
    command: WalletCommand,
}

/// Where the chain is and who signs; valid after any `wallet` subcommand.
#[derive(Debug, clap::Args)]
struct ChainArgs {
    /// JSON-RPC endpoint of the chain (`host:port` gets http://).
    #[arg(
        long,
        global = true,
        help_heading = "Chain options",
        env = "INFERNET_RPC_URL",
        default_value = "http://127.0.0.1:8545"
    )]
    rpc_url: String,
    /// Registry of the Infernet deployment. `create` needs it to find the WalletFactory; the other
    /// commands then refuse a --wallet the factory did not create.
    #[arg(long, global = true, help_heading = "Chain options", env = "INFERNET_REGISTRY", value_name = "ADDR", value_parser = parse_address)]
    registry: Option<Address>,
    /// Key that signs create, fund, approve and withdraw (hex); never printed.
    #[arg(
        long,
        global = true,
        help_heading = "Chain options",
        env = "INFERNET_PRIVATE_KEY",
        hide_env_values = true,
        value_name = "HEX"
    )]
    private_key: Option<SecretKey>,
}

#[derive(Debug, clap::Subcommand)]
enum WalletCommand {
    /// Create a Wallet with the Registry's WalletFactory; prints its address.
    Create {
        /// Owner of the new wallet (default: the address of --private-key).
        #[arg(long, value_name = "ADDR", value_parser = parse_address)]
        owner: Option<Address>,
    },
    /// Send ETH (a plain transfer) or ERC-20 tokens (`transfer`) from the key's account to a wallet.
    Fund {
        /// The wallet to fund.
        #[arg(long, value_name = "ADDR", value_parser = parse_address)]
        wallet: Address,
        /// How much, in the token's smallest unit (wei for ETH).
        #[arg(long, value_name = "WEI", value_parser = parse_amount)]
        amount: U256,
        /// ERC-20 token to send (default: ETH).
        #[arg(long, value_name = "ADDR", value_parser = parse_address, default_value = ZERO)]
        token: Address,
    },
    /// Set how much of a token a spender (e.g. a subscription consumer) may have the coordinator
    /// charge to the wallet; overwrites the previous allowance. Owner only.
    Approve {
        /// The wallet.
        #[arg(long, value_name = "ADDR", value_parser = parse_address)]
        wallet: Address,
        /// Who may spend.
        #[arg(long, value_name = "ADDR", value_parser = parse_address)]
        spender: Address,
        /// The new allowance, in the token's smallest unit (0 revokes).
        #[arg(long, value_name = "WEI", value_parser = parse_amount)]
        amount: U256,
        /// The token of the allowance (default: ETH).
        #[arg(long, value_name = "ADDR", value_parser = parse_address, default_value = ZERO)]
        token: Address,
    },
    /// Move unlocked funds from the wallet to its owner. Owner only; funds escrowed for running
    /// subscriptions stay.
    Withdraw {
        /// The wallet.
        #[arg(long, value_name = "ADDR", value_parser = parse_address)]
        wallet: Address,
        /// How much, in the token's smallest unit (wei for ETH).
        #[arg(long, value_name = "WEI", value_parser = parse_amount)]
        amount: U256,
        /// The token to withdraw (default: ETH).
        #[arg(long, value_name = "ADDR", value_parser = parse_address, default_value = ZERO)]
        token: Address,
    },
    /// The wallet's balance of ETH or of a token (escrowed funds included), and a spender's
    /// allowance.
    Balance {
        /// The wallet.
        #[arg(long, value_name = "ADDR", value_parser = parse_address)]
        wallet: Address,
        /// The token (default: ETH).
        #[arg(long, value_name = "ADDR", value_parser = parse_address, default_value = ZERO)]
        token: Address,
        /// Also print this spender's allowance for the token.
        #[arg(long, value_name = "ADDR", value_parser = parse_address)]
        spender: Option<Address>,
    },
    /// The wallet's owner.
    Owner {
        /// The wallet.
        #[arg(long, value_name = "ADDR", value_parser = parse_address)]
        wallet: Address,
    },
}

const ZERO: &str = "0x0000000000000000000000000000000000000000";

/// A private key from the command line or the environment; `Debug` never shows it, and clap never
/// echoes it in an error because parsing happens here, not in clap.
#[derive(Clone)]
struct SecretKey(String);

impl From<String> for SecretKey {
    fn from(key: String) -> Self {
        Self(key)
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// The signer of a write, or why there is none.
fn signer(args: &ChainArgs, command: &'static str) -> Result<PrivateKeySigner, WalletCmdError> {
    let key = args
        .private_key
        .as_ref()
        .ok_or(WalletCmdError::MissingKey { command })?;
    key.0.trim().parse().map_err(|_| WalletCmdError::BadKey)
}

fn token_name(token: Address) -> String {
    if token.is_zero() {
        "ETH".into()
    } else {
        format!("token {token}")
    }
}

fn print(json: bool, value: Value, text: impl FnOnce() -> String) {
    if json {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

/// Runs `infernet wallet <command>`.
pub(crate) async fn run(args: WalletArgs, json: bool) -> Result<(), Failure> {
    execute(args, json).await.map_err(Failure::from)
}

async fn execute(args: WalletArgs, json: bool) -> Result<(), WalletCmdError> {
    let writes = match args.command {
        WalletCommand::Create { .. } => Some("create"),
        WalletCommand::Fund { .. } => Some("fund"),
        WalletCommand::Approve { .. } => Some("approve"),
        WalletCommand::Withdraw { .. } => Some("withdraw"),
        WalletCommand::Balance { .. } | WalletCommand::Owner { .. } => None,
    };
    let signer = writes.map(|command| signer(&args.chain, command)).transpose()?;
    let from = signer.as_ref().map(PrivateKeySigner::address).unwrap_or_default();
    if matches!(args.command, WalletCommand::Create { .. }) && args.chain.registry.is_none() {
        return Err(WalletCmdError::MissingRegistry);
    }
    let chain = Chain::connect(&args.chain, signer)?;
    match args.command {
        WalletCommand::Create { owner } => create(&chain, owner.unwrap_or(from), json).await,
        WalletCommand::Fund { wallet, amount, token } => fund(&chain, wallet, token, amount, json).await,
        WalletCommand::Approve {
            wallet,
            spender,
            amount,
            token,
        } => approve(&chain, wallet, spender, token, amount, json).await,
        WalletCommand::Withdraw { wallet, amount, token } => withdraw(&chain, wallet, token, amount, from, json).await,
        WalletCommand::Balance { wallet, token, spender } => balance(&chain, wallet, token, spender, json).await,
        WalletCommand::Owner { wallet } => owner(&chain, wallet, json).await,
    }
}

/// `infernet wallet create`: prints the new wallet's address.
async fn create(chain: &Chain, owner: Address, json: bool) -> Result<(), WalletCmdError> {
    let registry = chain.registry.ok_or(WalletCmdError::MissingRegistry)?;
    let factory = chain.factory(registry).await?;
    const CALL: &str = "WalletFactory.createWallet";
    let receipt = chain
        .transact(
            CALL,
            factory,
            WalletFactory::new(factory, &chain.provider).createWallet(owner),
        )
        .await?;
    let tx = receipt.transaction_hash;
    let created = receipt
        .decoded_log::<WalletFactory::WalletCreated>()
        .ok_or(WalletCmdError::NoWalletCreated { tx })?;
    let wallet = created.data.wallet;
    print(
        json,
        json!({"wallet": wallet.to_string(), "owner": owner.to_string(), "factory": factory.to_string(), "tx": tx}),
        || wallet.to_string(),
    );
    Ok(())
}

/// `infernet wallet fund`: ETH as a plain transfer, a token with `transfer`.
async fn fund(chain: &Chain, wallet: Address, token: Address, amount: U256, json: bool) -> Result<(), WalletCmdError> {
    chain.ensure_wallet(wallet).await?;
    let receipt = if token.is_zero() {
        const CALL: &str = "ETH transfer";
        let tx = TransactionRequest::default().to(wallet).value(amount);
        let pending = chain
            .provider
            .send_transaction(tx)
            .await
            .map_err(|e| chain.error(CALL, wallet, e.into()))?;
        chain.confirm(CALL, pending).await?
    } else {
        const CALL: &str = "ERC20.transfer";
        let erc20 = IERC20::new(token, &chain.provider);
        let transfer = erc20.transfer(wallet, amount);
        if !transfer.call().await.map_err(|e| chain.error(CALL, token, e))? {
            return Err(WalletCmdError::TransferFalse { token });
        }
        chain.transact(CALL, token, transfer).await?
    };
    let tx = receipt.transaction_hash;
    print(
        json,
        json!({"wallet": wallet.to_string(), "token": token.to_string(), "amount": amount.to_string(), "tx": tx}),
        || format!("sent {amount} of {} to {wallet} (tx {tx})", token_name(token)),
    );
    Ok(())
}

/// `infernet wallet approve`.
async fn approve(
    chain: &Chain,
    wallet: Address,
    spender: Address,
    token: Address,
    amount: U256,
    json: bool,
) -> Result<(), WalletCmdError> {
    chain.ensure_wallet(wallet).await?;
    const CALL: &str = "Wallet.approve";
    let contract = Wallet::new(wallet, &chain.provider);
    let tx = chain
        .transact(CALL, wallet, contract.approve(spender, token, amount))
        .await?
        .transaction_hash;
    print(
        json,
        json!({"wallet": wallet.to_string(), "spender": spender.to_string(), "token": token.to_string(), "allowance": amount.to_string(), "tx": tx}),
        || {
            format!(
                "{spender} may now spend {amount} of {} from {wallet} (tx {tx})",
                token_name(token)
            )
        },
    );
    Ok(())
}

/// `infernet wallet withdraw`: the owner (the key) receives the funds.
async fn withdraw(
    chain: &Chain,
    wallet: Address,
    token: Address,
    amount: U256,
    to: Address,
    json: bool,
) -> Result<(), WalletCmdError> {
    chain.ensure_wallet(wallet).await?;
    const CALL: &str = "Wallet.withdraw";
    let contract = Wallet::new(wallet, &chain.provider);
    let tx = chain
        .transact(CALL, wallet, contract.withdraw(token, amount))
        .await?
        .transaction_hash;
    print(
        json,
        json!({"wallet": wallet.to_string(), "token": token.to_string(), "amount": amount.to_string(), "to": to.to_string(), "tx": tx}),
        || {
            format!(
                "withdrew {amount} of {} from {wallet} to {to} (tx {tx})",
                token_name(token)
            )
        },
    );
    Ok(())
}

/// `infernet wallet balance`: `balance N`, and `allowance N` with `--spender`.
async fn balance(
    chain: &Chain,
    wallet: Address,
    token: Address,
    spender: Option<Address>,
    json: bool,
) -> Result<(), WalletCmdError> {
    chain.ensure_wallet(wallet).await?;
    let balance = chain.balance(wallet, token).await?;
    let allowance = match spender {
        Some(spender) => Some(
            Wallet::new(wallet, &chain.provider)
                .allowance(spender, token)
                .call()
                .await
                .map_err(|e| chain.error("Wallet.allowance", wallet, e))?,
        ),
        None => None,
    };
    let mut value = json!({"wallet": wallet.to_string(), "token": token.to_string(), "balance": balance.to_string()});
    if let (Some(spender), Some(allowance)) = (spender, allowance) {
        value["spender"] = json!(spender.to_string());
        value["allowance"] = json!(allowance.to_string());
    }
    print(json, value, || {
        let mut text = format!("balance    {balance}");
        if let Some(allowance) = allowance {
            text.push_str(&format!("\nallowance  {allowance}"));
        }
        text
    });
    Ok(())
}

/// `infernet wallet owner`.
async fn owner(chain: &Chain, wallet: Address, json: bool) -> Result<(), WalletCmdError> {
    chain.ensure_wallet(wallet).await?;
    let owner = Wallet::new(wallet, &chain.provider)
        .owner()
        .call()
        .await
        .map_err(|e| chain.error("Wallet.owner", wallet, e))?;
    print(
        json,
        json!({"wallet": wallet.to_string(), "owner": owner.to_string()}),
        || owner.to_string(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use infernet_service::secret::SensitiveUrl;

    use super::*;

    #[test]
    fn keys_and_url_secrets_are_never_shown() {
        let key = SecretKey("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80".into());
        assert_eq!(format!("{key:?}"), "SecretKey(<redacted>)");
        let url = SensitiveUrl::parse("https://user:pw@rpc.example:8443/v2/SECRET?k=1").unwrap();
        assert_eq!(url.to_string(), "https://rpc.example:8443/…");
        for shown in [url.expose().as_str(), "https://rpc.example:8443/v2/SECRET?k=1"] {
            let message = format!("error sending request for url ({shown})");
            assert_eq!(
                url.scrub(&message),
                "error sending request for url (https://rpc.example:8443/…)"
            );
        }
        let plain = SensitiveUrl::parse("http://127.0.0.1:8545").unwrap();
        assert_eq!(plain.to_string(), "http://127.0.0.1:8545");
    }
}

//! `infernet wallet`: the SDK's payment `Wallet` (an escrow created by the `WalletFactory`) from the
//! command line: create one, fund it, approve spenders, withdraw, and read balances, allowances and
//! the owner.
//!
//! Writes wait for their receipt. A revert is decoded to the contract's custom error
//! (`InsufficientFunds()`, `Unauthorized()`, …) so the user sees why the chain refused.

use std::time::Duration;

use alloy::contract::Error as ContractError;
use alloy::primitives::{Address, TxHash, U256};
use alloy::providers::{DynProvider, PendingTransactionBuilder, Provider, ProviderBuilder};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{GenericContractError, SolInterface};
use alloy::transports::RpcError;
use infernet_contracts::bindings::TestToken::TestTokenErrors;
use infernet_contracts::bindings::Wallet::{self, WalletErrors};
use infernet_contracts::bindings::{Registry, WalletFactory};
use infernet_service::secret::SensitiveUrl;
use serde_json::{Value, json};

use crate::commands::Failure;

/// How long a write waits to be mined before giving up (the transaction may still be mined later).
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(120);

alloy::sol! {
    /// The part of ERC-20 the wallet commands use.
    #[sol(rpc)]
    interface IERC20 {
        function balanceOf(address account) external view returns (uint256);
        function transfer(address to, uint256 amount) external returns (bool);
    }
}

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

/// `--token` default: native ETH.
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

/// Errors of `infernet wallet`.
#[derive(Debug, thiserror::Error)]
enum WalletCmdError {
    /// A write was asked for without a key.
    #[error("wallet {command} sends a transaction: give --private-key or set INFERNET_PRIVATE_KEY")]
    MissingKey {
        /// The subcommand.
        command: &'static str,
    },
    /// The key does not parse (its text is not repeated).
    #[error("--private-key: not a private key; expected 32 bytes of hex, e.g. 0xac09…ff80")]
    BadKey,
    /// `create` without a Registry.
    #[error("wallet create finds the WalletFactory through the Registry: give --registry or set INFERNET_REGISTRY")]
    MissingRegistry,
    /// `--rpc-url` is not a URL.
    #[error("--rpc-url: {0:?} is not a URL; expected e.g. http://127.0.0.1:8545")]
    BadRpcUrl(String),
    /// The chain could not be reached.
    #[error("could not reach the chain at {url}: {message}; check --rpc-url (or INFERNET_RPC_URL)")]
    Unreachable {
        /// The endpoint, credentials hidden.
        url: String,
        /// What the transport said.
        message: String,
    },
    /// A contract reverted with an error we could decode.
    #[error("{call} reverted with {error}{}", hint.as_deref().map(|h| format!(": {h}")).unwrap_or_default())]
    Reverted {
        /// Contract and function, e.g. `Wallet.withdraw`.
        call: &'static str,
        /// The custom error's signature or the revert reason.
        error: String,
        /// What to do about it.
        hint: Option<String>,
    },
    /// The address called has no code.
    #[error("{call}: {address} has no contract code on this chain; check the address and --rpc-url")]
    NoCode {
        /// Contract and function.
        call: &'static str,
        /// The address called.
        address: Address,
    },
    /// The chain refused a call or transaction for another reason (funds for gas, bad nonce, …).
    #[error("{call} failed: {message}")]
    Refused {
        /// Contract and function.
        call: &'static str,
        /// What the chain said.
        message: String,
    },
    /// `--wallet` was not created by the Registry's WalletFactory.
    #[error(
        "{wallet} is not a Wallet of the WalletFactory {factory}; create one with `infernet wallet create`, or \
         check --registry"
    )]
    NotAWallet {
        /// The address given.
        wallet: Address,
        /// The Registry's factory.
        factory: Address,
    },
    /// A transaction was sent but not confirmed.
    #[error("{call}: no receipt for transaction {tx}: {message}; check it before sending again")]
    Receipt {
        /// Contract and function.
        call: &'static str,
        /// The transaction.
        tx: TxHash,
        /// Why.
        message: String,
    },
    /// A transaction was mined but reverted.
    #[error("{call}: transaction {tx} was mined but reverted")]
    MinedButReverted {
        /// Contract and function.
        call: &'static str,
        /// The transaction.
        tx: TxHash,
    },
    /// A token's `transfer` returned false.
    #[error("token {token} refused the transfer (transfer returned false); check the key's token balance")]
    TransferFalse {
        /// The token.
        token: Address,
    },
    /// `createWallet` did not report the new wallet.
    #[error("WalletFactory.createWallet: transaction {tx} emitted no WalletCreated event")]
    NoWalletCreated {
        /// The transaction.
        tx: TxHash,
    },
}

impl WalletCmdError {
    /// The command line is at fault (exit 2), not the chain (exit 1).
    fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::MissingKey { .. } | Self::BadKey | Self::MissingRegistry | Self::BadRpcUrl(_)
        )
    }
}

impl From<WalletCmdError> for Failure {
    fn from(e: WalletCmdError) -> Self {
        if e.is_usage() {
            Self::Usage(e.to_string())
        } else {
            Self::Runtime(e.to_string())
        }
    }
}

/// `--wallet`, `--token` and other addresses.
fn parse_address(s: &str) -> Result<Address, String> {
    s.trim()
        .parse()
        .map_err(|_| "expected a 0x-prefixed address of 40 hex digits".to_string())
}

/// `--amount`: a whole number in the smallest unit (wei), or a decimal with an `ether` (10^18) or
/// `gwei` (10^9) suffix; digits beyond the unit's precision are refused rather than rounded.
fn parse_amount(s: &str) -> Result<U256, String> {
    let s = s.trim();
    let usage =
        || format!("expected a whole number of wei like 1000000000000000000, or 1.5ether / 20gwei, found {s:?}");
    let (number, decimals) = [("ether", 18), ("gwei", 9), ("wei", 0)]
        .into_iter()
        .find_map(|(unit, decimals)| s.strip_suffix(unit).map(|n| (n.trim(), decimals)))
        .unwrap_or((s, 0));
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > decimals {
        return Err(usage());
    }
    let scaled = format!("{whole}{fraction:0<decimals$}");
    U256::from_str_radix(&scaled, 10).map_err(|_| format!("{s} does not fit in 256 bits"))
}

/// A connection to the chain, signing with the key if there is one.
struct Chain {
    provider: DynProvider,
    /// Shown as `scheme://host[:port]`: paths, user info and queries often carry API keys.
    url: SensitiveUrl,
    registry: Option<Address>,
    /// The key's address, for writes.
    from: Option<Address>,
}

impl Chain {
    fn connect(args: &ChainArgs, signer: Option<PrivateKeySigner>) -> Result<Self, WalletCmdError> {
        let text = args.rpc_url.trim();
        let with_scheme = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let url = SensitiveUrl::parse(&with_scheme).map_err(|_| WalletCmdError::BadRpcUrl(args.rpc_url.clone()))?;
        infernet_contracts::install_tls_provider();
        let from = signer.as_ref().map(PrivateKeySigner::address);
        let provider = match signer {
            Some(signer) => infernet_contracts::signing_provider(url.expose().clone(), signer),
            None => ProviderBuilder::new().connect_http(url.expose().clone()).erased(),
        };
        Ok(Self {
            provider,
            url,
            registry: args.registry,
            from,
        })
    }

    /// Classifies an error of `call` at `address`: unreachable chain, decoded revert, no code, refusal.
    fn error(&self, call: &'static str, address: Address, e: ContractError) -> WalletCmdError {
        if let ContractError::ZeroData(..) = e {
            return WalletCmdError::NoCode { call, address };
        }
        if let ContractError::TransportError(RpcError::Transport(kind)) = &e {
            return WalletCmdError::Unreachable {
                url: self.url.to_string(),
                message: self.url.scrub(&kind.to_string()),
            };
        }
        if let Some(error) = e.as_decoded_interface_error::<WalletErrors>() {
            let signature = WalletErrors::signature_by_selector(error.selector()).unwrap_or("an unknown error");
            return WalletCmdError::Reverted {
                call,
                error: signature.to_string(),
                hint: self.hint(&error),
            };
        }
        if let Some(error) = e.as_decoded_interface_error::<TestTokenErrors>() {
            let signature = TestTokenErrors::signature_by_selector(error.selector()).unwrap_or("an unknown error");
            return WalletCmdError::Reverted {
                call,
                error: signature.to_string(),
                hint: None,
            };
        }
        if e.as_revert_data().is_some_and(|data| data.is_empty()) {
            let contract = call.split('.').next().unwrap_or(call);
            return WalletCmdError::Reverted {
                call,
                error: "no reason".into(),
                hint: Some(format!("is {address} the right {contract} address?")),
            };
        }
        if let Some(error) = e.as_decoded_interface_error::<GenericContractError>() {
            return WalletCmdError::Reverted {
                call,
                error: error.to_string(),
                hint: None,
            };
        }
        WalletCmdError::Refused {
            call,
            message: self.url.scrub(&e.to_string()),
        }
    }

    /// What to do about a Wallet error.
    fn hint(&self, error: &WalletErrors) -> Option<String> {
        let key = self.from.map(|a| format!(" (this key is {a})")).unwrap_or_default();
        match error {
            WalletErrors::Unauthorized(_) => Some(format!(
                "only the wallet's owner may do this; sign with the owner's key{key}, see `infernet wallet owner`"
            )),
            WalletErrors::InsufficientFunds(_) => Some(
                "the amount is more than the wallet's unlocked balance (see `infernet wallet balance`; funds \
                 escrowed for subscriptions stay locked)"
                    .into(),
            ),
            _ => None,
        }
    }

    /// Waits for `pending` to be mined and checks it succeeded.
    /// Sends `call` (a contract call on `to`) and waits for its successful receipt.
    async fn transact<P: Provider, D: alloy::contract::CallDecoder>(
        &self,
        name: &'static str,
        to: Address,
        call: alloy::contract::CallBuilder<P, D>,
    ) -> Result<TransactionReceipt, WalletCmdError> {
        let pending = call.send().await.map_err(|e| self.error(name, to, e))?;
        self.confirm(name, pending).await
    }

    async fn confirm(
        &self,
        call: &'static str,
        pending: PendingTransactionBuilder<alloy::network::Ethereum>,
    ) -> Result<TransactionReceipt, WalletCmdError> {
        let tx = *pending.tx_hash();
        let receipt = pending
            .with_timeout(Some(RECEIPT_TIMEOUT))
            .get_receipt()
            .await
            .map_err(|e| WalletCmdError::Receipt {
                call,
                tx,
                message: self.url.scrub(&e.to_string()),
            })?;
        if !receipt.status() {
            return Err(WalletCmdError::MinedButReverted { call, tx });
        }
        Ok(receipt)
    }

    /// The Registry's WalletFactory.
    async fn factory(&self, registry: Address) -> Result<Address, WalletCmdError> {
        Registry::new(registry, &self.provider)
            .WALLET_FACTORY()
            .call()
            .await
            .map_err(|e| self.error("Registry.WALLET_FACTORY", registry, e))
    }

    /// Refuses an address that is not a wallet: with --registry, one the factory did not create;
    /// without, one without code (ETH sent there would be gone).
    async fn ensure_wallet(&self, wallet: Address) -> Result<(), WalletCmdError> {
        let Some(registry) = self.registry else {
            let code = self
                .provider
                .get_code_at(wallet)
                .await
                .map_err(|e| self.error("eth_getCode", wallet, e.into()))?;
            return if code.is_empty() {
                Err(WalletCmdError::NoCode {
                    call: "--wallet",
                    address: wallet,
                })
            } else {
                Ok(())
            };
        };
        let factory = self.factory(registry).await?;
        let valid = WalletFactory::new(factory, &self.provider)
            .isValidWallet(wallet)
            .call()
            .await
            .map_err(|e| self.error("WalletFactory.isValidWallet", factory, e))?;
        if valid {
            Ok(())
        } else {
            Err(WalletCmdError::NotAWallet { wallet, factory })
        }
    }

    async fn balance(&self, wallet: Address, token: Address) -> Result<U256, WalletCmdError> {
        if token.is_zero() {
            return self
                .provider
                .get_balance(wallet)
                .await
                .map_err(|e| self.error("eth_getBalance", wallet, e.into()));
        }
        IERC20::new(token, &self.provider)
            .balanceOf(wallet)
            .call()
            .await
            .map_err(|e| self.error("ERC20.balanceOf", token, e))
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
        assert!(parse_amount(&too_big).unwrap_err().contains("256 bits"));
    }

    #[test]
    fn addresses_must_be_20_bytes_of_hex() {
        assert!(parse_address("0x70997970C51812dc3A010C7d01b50e0d17dc79C8").is_ok());
        assert!(parse_address("0x1234").is_err());
        assert!(parse_address("nope").is_err());
    }

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

    #[test]
    fn configuration_errors_exit_2_and_chain_errors_exit_1() {
        assert!(WalletCmdError::BadKey.is_usage());
        assert!(WalletCmdError::MissingKey { command: "fund" }.is_usage());
        assert!(WalletCmdError::MissingRegistry.is_usage());
        let reverted = WalletCmdError::Reverted {
            call: "Wallet.withdraw",
            error: "InsufficientFunds()".into(),
            hint: None,
        };
        assert!(!reverted.is_usage());
        assert_eq!(
            reverted.to_string(),
            "Wallet.withdraw reverted with InsufficientFunds()"
        );
        assert!(matches!(Failure::from(WalletCmdError::BadKey), Failure::Usage(_)));
        assert!(matches!(Failure::from(reverted), Failure::Runtime(_)));
    }
}

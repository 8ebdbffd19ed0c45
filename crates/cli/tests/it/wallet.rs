//! `infernet wallet` against an in-process devnet: create, owner, fund, approve, withdraw, balance,
//! and the refusals a user meets (over-withdrawing, a key that is not the owner's, bad input).

use std::process::{Command, Output};

use alloy::hex;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use infernet_contracts::anvil::dev_signer;
use infernet_contracts::bindings::{Wallet, WalletFactory};
use infernet_contracts::{Devnet, DevnetOptions};
use infernet_testkit::free_port;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_infernet");
const ETHER: u128 = 1_000_000_000_000_000_000;

/// Hex private key of anvil account `index`.
fn key(index: usize) -> String {
    hex::encode_prefixed(dev_signer(index).expect("dev account").to_bytes())
}

fn address(index: usize) -> Address {
    dev_signer(index).expect("dev account").address()
}

/// Runs `infernet wallet <args>` against `rpc_url` and `registry`, signing with `key` (by env).
fn wallet(rpc_url: &str, registry: Option<Address>, key: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("wallet")
        .args(args)
        .env("INFERNET_RPC_URL", rpc_url)
        .env_remove("INFERNET_REGISTRY")
        .env_remove("INFERNET_PRIVATE_KEY");
    if let Some(registry) = registry {
        command.env("INFERNET_REGISTRY", registry.to_string());
    }
    if let Some(key) = key {
        command.env("INFERNET_PRIVATE_KEY", key);
    }
    command.output().expect("run infernet")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts exit 0 and that the key is nowhere in the output; returns stdout.
fn ok(out: &Output, key: Option<&str>) -> String {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "expected success, got {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status.code()
    );
    if let Some(key) = key {
        let bare = key.trim_start_matches("0x");
        assert!(!stdout.contains(bare) && !stderr.contains(bare), "the key was printed");
    }
    stdout
}

/// Asserts exit `code` and returns stderr.
fn fails(out: &Output, code: i32) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {stderr}",
        text(&out.stdout)
    );
    stderr
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn amount(value: &Value) -> U256 {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a decimal string: {value}"))
}

#[tokio::test]
async fn a_wallet_is_created_funded_approved_and_withdrawn_from() {
    let devnet = Devnet::start(DevnetOptions::default()).await.expect("devnet");
    let rpc = devnet.endpoint();
    let registry = Some(devnet.deployment.registry);
    let chain = devnet.provider(dev_signer(0).expect("deployer"));
    let (owner_key, owner) = (key(3), address(3));
    let run = |key: Option<&str>, args: &[&str]| wallet(&rpc, registry, key, args);

    // create: the factory knows the wallet, the key owns it.
    let out = run(Some(&owner_key), &["create"]);
    let w: Address = ok(&out, Some(&owner_key))
        .trim()
        .parse()
        .expect("create prints an address");
    let factory = WalletFactory::new(devnet.deployment.wallet_factory, &chain);
    assert!(factory.isValidWallet(w).call().await.expect("isValidWallet"));
    assert_eq!(Wallet::new(w, &chain).owner().call().await.expect("owner"), owner);
    let ws = w.to_string();
    assert_eq!(
        ok(&run(None, &["owner", "--wallet", &ws]), None).trim(),
        owner.to_string()
    );

    // create --owner: someone else owns it.
    let out = run(
        Some(&owner_key),
        &["create", "--owner", &address(1).to_string(), "--json"],
    );
    let created = json(&ok(&out, Some(&owner_key)));
    assert_eq!(created["owner"], address(1).to_string());
    let other: Address = created["wallet"].as_str().expect("wallet").parse().expect("address");
    assert_eq!(
        Wallet::new(other, &chain).owner().call().await.expect("owner"),
        address(1)
    );

    // fund with ETH: the balance shows it.
    ok(
        &run(Some(&owner_key), &["fund", "--wallet", &ws, "--amount", "1ether"]),
        Some(&owner_key),
    );
    assert_eq!(chain.get_balance(w).await.expect("balance"), U256::from(ETHER));
    let shown = ok(&run(None, &["balance", "--wallet", &ws]), None);
    assert_eq!(shown.trim(), format!("balance    {ETHER}"));

    // approve, then balance --spender shows the allowance.
    let spender = address(2).to_string();
    ok(
        &run(
            Some(&owner_key),
            &["approve", "--wallet", &ws, "--spender", &spender, "--amount", "500"],
        ),
        Some(&owner_key),
    );
    let shown = json(&ok(
        &run(None, &["balance", "--wallet", &ws, "--spender", &spender, "--json"]),
        None,
    ));
    assert_eq!(amount(&shown["balance"]), U256::from(ETHER));
    assert_eq!(amount(&shown["allowance"]), U256::from(500));
    assert_eq!(shown["spender"], spender);
    let shown = ok(&run(None, &["balance", "--wallet", &ws, "--spender", &spender]), None);
    assert!(shown.contains("allowance  500"), "{shown}");

    // withdraw part: the wallet drops by it, the owner gains it less the gas.
    let before = chain.get_balance(owner).await.expect("balance");
    let part = U256::from(ETHER / 4);
    let out = run(
        Some(&owner_key),
        &["withdraw", "--wallet", &ws, "--amount", &part.to_string(), "--json"],
    );
    let withdrawn = json(&ok(&out, Some(&owner_key)));
    assert_eq!(withdrawn["to"], owner.to_string());
    let tx: B256 = withdrawn["tx"].as_str().expect("tx").parse().expect("hash");
    let receipt = chain
        .get_transaction_receipt(tx)
        .await
        .expect("receipt")
        .expect("mined");
    let gas = U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price);
    assert_eq!(chain.get_balance(owner).await.expect("balance"), before + part - gas);
    let left = U256::from(ETHER) - part;
    let shown = ok(&run(None, &["balance", "--wallet", &ws]), None);
    assert_eq!(shown.trim(), format!("balance    {left}"));

    // Withdrawing more than is there: exit 1, the custom error named; nothing moves.
    let stderr = fails(
        &run(Some(&owner_key), &["withdraw", "--wallet", &ws, "--amount", "2ether"]),
        1,
    );
    assert!(
        stderr.contains("Wallet.withdraw reverted with InsufficientFunds()"),
        "{stderr}"
    );
    assert_eq!(chain.get_balance(w).await.expect("balance"), left);

    // A key that is not the owner's cannot approve.
    let stranger = key(2);
    let out = run(
        Some(&stranger),
        &["approve", "--wallet", &ws, "--spender", &spender, "--amount", "1"],
    );
    let stderr = fails(&out, 1);
    assert!(
        stderr.contains("Wallet.approve reverted with Unauthorized()"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&address(2).to_string()),
        "names the key's address: {stderr}"
    );
    assert!(
        !stderr.contains(stranger.trim_start_matches("0x")),
        "the key was printed"
    );
    let allowance = Wallet::new(w, &chain).allowance(address(2), Address::ZERO).call().await;
    assert_eq!(allowance.expect("allowance"), U256::from(500));

    // ERC-20: the node's TEST tokens go in with `transfer`, balance --token reads them.
    let token = devnet.examples.token.to_string();
    let node_key = key(1);
    let out = run(
        Some(&node_key),
        &["fund", "--wallet", &ws, "--token", &token, "--amount", "42"],
    );
    ok(&out, Some(&node_key));
    let shown = ok(&run(None, &["balance", "--wallet", &ws, "--token", &token]), None);
    assert_eq!(shown.trim(), "balance    42");

    // An address the factory did not create is refused before anything is sent.
    let not_a_wallet = devnet.examples.callback_consumer.to_string();
    let stderr = fails(
        &run(Some(&owner_key), &["fund", "--wallet", &not_a_wallet, "--amount", "1"]),
        1,
    );
    assert!(stderr.contains("is not a Wallet of the WalletFactory"), "{stderr}");
    // Without --registry, an account without code is refused (ETH sent there would be gone).
    let eoa = address(3).to_string();
    let out = wallet(&rpc, None, None, &["balance", "--wallet", &eoa]);
    assert!(fails(&out, 1).contains("has no contract code"));
}

#[test]
fn bad_input_exits_with_2_and_never_echoes_the_key() {
    // No chain listens here: every one of these must fail before connecting.
    let rpc = format!("http://127.0.0.1:{}", free_port());
    let registry = Some(Address::repeat_byte(0x11));
    let w = Address::repeat_byte(0x22).to_string();
    let run = |key: Option<&str>, args: &[&str]| wallet(&rpc, registry, key, args);

    let stderr = fails(&run(None, &["balance", "--wallet", "0x1234"]), 2);
    assert!(
        stderr.contains("--wallet") && stderr.contains("40 hex digits"),
        "{stderr}"
    );
    let stderr = fails(&run(Some(&key(3)), &["fund", "--wallet", &w, "--amount", "1.5"]), 2);
    assert!(stderr.contains("--amount"), "{stderr}");
    let stderr = fails(&run(None, &["withdraw", "--wallet", &w, "--amount", "1"]), 2);
    assert!(stderr.contains("--private-key"), "{stderr}");
    let stderr = fails(&wallet(&rpc, None, Some(&key(3)), &["create"]), 2);
    assert!(stderr.contains("--registry"), "{stderr}");
    let almost_a_key = "0xdeadbeefdeadbeefdeadbeef";
    let stderr = fails(&run(Some(almost_a_key), &["create"]), 2);
    assert!(stderr.contains("--private-key: not a private key"), "{stderr}");
    assert!(!stderr.contains("deadbeef"), "the key was echoed: {stderr}");
}

#[test]
fn an_unreachable_chain_exits_with_1() {
    let rpc = format!("http://127.0.0.1:{}", free_port());
    let w = Address::repeat_byte(0x22).to_string();
    let stderr = fails(&wallet(&rpc, None, None, &["owner", "--wallet", &w]), 1);
    assert!(
        stderr.contains("could not reach the chain at http://127.0.0.1:"),
        "{stderr}"
    );
}

#[test]
fn every_wallet_command_has_help() {
    let out = Command::new(BIN).args(["wallet", "--help"]).output().expect("run");
    let help = ok(&out, None);
    for command in ["create", "fund", "approve", "withdraw", "balance", "owner"] {
        assert!(help.contains(command), "wallet --help lists {command}:\n{help}");
        let out = Command::new(BIN)
            .args(["wallet", command, "--help"])
            .output()
            .expect("run");
        let help = ok(&out, None);
        assert!(
            help.contains("--rpc-url") && help.contains("--private-key"),
            "{command}:\n{help}"
        );
    }
    let out = Command::new(BIN)
        .args(["wallet", "withdraw", "--help"])
        .output()
        .expect("run");
    assert!(ok(&out, None).contains("Move unlocked funds from the wallet to its owner"));
}

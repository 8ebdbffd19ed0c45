//! `infernet devnet`: anvil on 127.0.0.1 with the protocol deployed, a funded node account and a ready
//! `config.json`; runs until Ctrl-C / SIGTERM, then stops anvil.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::hex;
use anyhow::Context;
use infernet_contracts::devnet::{self, DELEGATE_SIGNER, DEPLOYER, Devnet, DevnetOptions, NODE};
use serde_json::{Value, json};

/// Options of `infernet devnet`.
#[derive(Debug, clap::Args)]
pub(crate) struct DevnetArgs {
    /// Port of the chain's JSON-RPC on 127.0.0.1.
    #[arg(long, default_value_t = 8545)]
    port: u16,
    /// Mine a block every SECS seconds (default: a block per transaction).
    #[arg(long, value_name = "SECS")]
    block_time: Option<u64>,
    /// Where to write the node configuration.
    #[arg(long, default_value = "config.json")]
    config_out: PathBuf,
    /// REST port of the node in the written configuration.
    #[arg(long, default_value_t = 4000)]
    node_port: u16,
    /// Containers of the written configuration (comma-separated); each runs the program of the same name.
    #[arg(long, value_delimiter = ',', default_value = "hello-world")]
    containers: Vec<String>,
    /// anvil binary (default: env ANVIL, contracts/node_modules, then PATH).
    #[arg(long, env = "ANVIL")]
    anvil: Option<PathBuf>,
}

/// Errors of `infernet devnet`.
#[derive(Debug, thiserror::Error)]
enum DevnetCmdError {
    /// Writing the node configuration failed.
    #[error("could not write the node configuration to {path}: {source}")]
    WriteConfig {
        /// Target path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// anvil stopped on its own.
    #[error("anvil exited unexpectedly ({0})")]
    AnvilExited(String),
}

pub(crate) async fn run(args: DevnetArgs) -> anyhow::Result<()> {
    let options = DevnetOptions {
        port: args.port,
        block_time: args.block_time,
        anvil: args.anvil.clone(),
    };
    let mut devnet = Devnet::start(options).await.context("starting the devnet")?;
    let config = node_config(&devnet, &args);
    write_config(&args.config_out, &config)?;
    print_summary(&devnet, &args.config_out);

    let outcome = wait_for_shutdown(&mut devnet).await;
    devnet.stop();
    if outcome.is_ok() {
        println!("stopped");
    }
    outcome
}

/// Waits for Ctrl-C or SIGTERM; fails if anvil dies first.
async fn wait_for_shutdown(devnet: &mut Devnet) -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => return r.context("waiting for Ctrl-C"),
            _ = terminate.recv() => return Ok(()),
            _ = tick.tick() => {
                let status = devnet.anvil_mut().try_wait();
                match status {
                    Ok(None) => {}
                    Ok(Some(status)) => return Err(DevnetCmdError::AnvilExited(status.to_string()).into()),
                    Err(e) => return Err(DevnetCmdError::AnvilExited(e.to_string()).into()),
                }
            }
        }
    }
}

/// A Ritual 1.4 node configuration for the devnet: chain enabled with the node account, the requested
/// containers run as local programs.
fn node_config(devnet: &Devnet, args: &DevnetArgs) -> Value {
    let node = devnet::signer(NODE);
    let containers: Vec<Value> = (0u16..)
        .zip(&args.containers)
        .map(|(i, id)| {
            json!({
                "id": id,
                "description": format!("{id} (local program, from `infernet devnet`)"),
                "port": 3000 + i,
                "process": {"program": id},
            })
        })
        .collect();
    json!({
        "manage_containers": true,
        "forward_stats": false,
        "startup_wait": 5.0,
        "server": {"port": args.node_port},
        "chain": {
            "enabled": true,
            "rpc_url": devnet.endpoint(),
            // anvil mines only when there is a transaction: trailing the head would hide the newest block.
            "trail_head_blocks": 0,
            "registry_address": devnet.deployment.registry.to_checksum(None),
            "wallet": {
                "max_gas_limit": 5_000_000,
                "private_key": hex::encode_prefixed(node.to_bytes()),
                "payment_address": devnet.node_payment_wallet.to_checksum(None),
                "allowed_sim_errors": [],
            },
            "snapshot_sync": {"sleep": 1.0, "batch_size": 500, "starting_sub_id": 0, "sync_period": 0.5},
        },
        "containers": containers,
    })
}

fn write_config(path: &Path, config: &Value) -> Result<(), DevnetCmdError> {
    let mut text = serde_json::to_string_pretty(config).unwrap_or_default();
    text.push('\n');
    std::fs::write(path, text).map_err(|source| DevnetCmdError::WriteConfig {
        path: path.to_owned(),
        source,
    })
}

fn print_summary(devnet: &Devnet, config_out: &Path) {
    let d = devnet.deployment;
    let e = devnet.examples;
    let rows = [
        ("Registry", d.registry),
        ("EIP712Coordinator", d.coordinator),
        ("Inbox", d.inbox),
        ("Reader", d.reader),
        ("Fee", d.fee),
        ("WalletFactory", d.wallet_factory),
        ("TestToken (TEST)", e.token),
        ("ExampleCallbackConsumer", e.callback_consumer),
        ("ExampleSubscriptionConsumer", e.subscription_consumer),
        ("ExampleDelegatorConsumer", e.delegator_consumer),
        ("node payment Wallet", devnet.node_payment_wallet),
    ];
    println!("Infernet devnet");
    println!("  rpc        {}", devnet.endpoint());
    println!("  chain id   {}", devnet.anvil().chain_id());
    println!("  anvil pid  {}", devnet.anvil().pid());
    println!("contracts");
    for (name, address) in rows {
        println!("  {name:<28} {}", address.to_checksum(None));
    }
    println!("accounts");
    for (role, index) in [
        ("deployer / fee recipient", DEPLOYER),
        ("node", NODE),
        ("delegate signer", DELEGATE_SIGNER),
    ] {
        let signer = devnet::signer(index);
        println!(
            "  #{index} {role:<25} {} key {}",
            signer.address().to_checksum(None),
            hex::encode_prefixed(signer.to_bytes())
        );
    }
    println!("node config  {}", config_out.display());
    println!("ready: {} (Ctrl-C to stop)", devnet.endpoint());
}

//! `infernet`: the Infernet command line.
//!
//! Exit codes: 0 success; 1 the server or the chain answered an error, could not be reached, or the
//! job failed; 2 bad usage. Errors go to stderr as `error: ...`, data to stdout.

mod commands;
mod devnet;
mod operator;
mod wallet;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use commands::{Failure, JobOptions};
use infernet_cli::client::{GatewayAuth, GatewayClient, NodeClient, RouterClient};

/// The Infernet command line: a client of nodes and routers, and a local devnet.
#[derive(Debug, Parser)]
#[command(name = "infernet", version, about)]
struct Cli {
    /// Node REST API (`host:port` gets http://).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "INFERNET_NODE",
        default_value = "http://127.0.0.1:4000"
    )]
    node: String,
    /// Router REST API (`host:port` gets http://). Given on the command line, `job`, `stream` and
    /// `results` go through the router's gateway instead of --node.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "INFERNET_ROUTER",
        default_value = "http://127.0.0.1:4100"
    )]
    router: String,
    /// Print the server's answer as raw JSON instead of text.
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
    /// API key the router's operator issued (`ik_…`): `job`, `stream` and `results` go through
    /// the router's gateway, held to the key's quotas.
    #[arg(
        long,
        global = true,
        help_heading = "Gateway",
        env = "INFERNET_API_KEY",
        hide_env_values = true,
        conflicts_with = "nsec"
    )]
    api_key: Option<String>,
    /// Nostr key (`nsec1…` or 64 hex, or @file) that signs requests to the router's gateway
    /// (NIP-98): the router knows you by its npub.
    #[arg(
        long,
        global = true,
        help_heading = "Gateway",
        env = "INFERNET_NSEC",
        hide_env_values = true,
        value_name = "NSEC|@FILE"
    )]
    nsec: Option<String>,
    /// Whether --router was given on the command line (set after parsing).
    #[arg(skip)]
    router_given: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Is the node up? Prints `healthy`.
    Health,
    /// The node's version, store, chain status, pending jobs and containers.
    Info,
    /// What the node's containers can run (their /service-resources), as JSON.
    Resources {
        /// Ask the containers about this model.
        #[arg(long)]
        model_id: Option<String>,
    },
    /// Submit an off-chain job; prints its id (with --sync, waits and prints the result).
    Job(JobArgs),
    /// Results of jobs by id, as JSON.
    Results {
        /// Job ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Include the result of every container of a pipeline, not only the last.
        #[arg(long)]
        intermediate: bool,
    },
    /// Ids of the jobs this machine submitted to the node, one per line.
    Ids {
        /// Only jobs still running.
        #[arg(long, conflicts_with = "completed")]
        pending: bool,
        /// Only finished jobs.
        #[arg(long)]
        completed: bool,
    },
    /// Run a streaming job: the id goes to stderr, the output to stdout as it arrives.
    Stream {
        /// Container to stream from.
        #[arg(short = 'c', long = "container", required = true)]
        containers: Vec<String>,
        /// Job data: a JSON object, or @file.
        #[arg(long, value_name = "JSON|@FILE")]
        data: String,
    },
    /// Send a delegated subscription to the node: signed here with `--private-key` (EIP-712, for
    /// `--coordinator` on `--chain-id`), or with a ready `--signature`.
    ///
    /// `containers` in the subscription may be the container-set hash or container ids
    /// (`"a,b"` or `["a", "b"]`), which are hashed as the SDK does.
    Sub {
        /// The subscription as JSON (`owner`, `active_at`, `period`, `frequency`, `redundancy`,
        /// `containers`, `lazy`, `verifier`, `payment_amount`, `payment_token`, `wallet`), or @file.
        #[arg(long, value_name = "JSON|@FILE")]
        subscription: String,
        /// A ready `{nonce, expiry, v, r, s}` object, or @file (instead of signing here).
        #[arg(long, value_name = "JSON|@FILE", conflicts_with = "private_key")]
        signature: Option<String>,
        /// Key of the owner contract's signer (`getSigner()`), hex.
        #[arg(long, env = "INFERNET_PRIVATE_KEY", hide_env_values = true, requires_all = ["coordinator", "chain_id"])]
        private_key: Option<String>,
        /// Address of the EIP712Coordinator (the signature's verifying contract).
        #[arg(long)]
        coordinator: Option<String>,
        /// Chain id of the coordinator's chain.
        #[arg(long)]
        chain_id: Option<u64>,
        /// Subscriber nonce (unique per owner).
        #[arg(long, default_value_t = 1)]
        nonce: u32,
        /// Unix time after which the signature is void (default: one hour from now).
        #[arg(long)]
        expiry: Option<u32>,
        /// Input data for the subscription: a JSON object, or @file.
        #[arg(long, value_name = "JSON|@FILE", default_value = "{}")]
        data: String,
    },
    /// Ask the router for nodes that run every given container, least loaded first.
    Find {
        /// Container the node must run (repeat for a pipeline).
        #[arg(short = 'c', long = "container", required = true)]
        containers: Vec<String>,
        /// How many nodes (1-100).
        #[arg(short = 'n', default_value_t = 3)]
        n: usize,
        /// Skip this many nodes (to page through them).
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// Containers the router's available nodes run, with how many nodes run each.
    Containers,
    /// Start a local chain with the Infernet contracts deployed and write a node config.json for it.
    Devnet(devnet::DevnetArgs),
    /// The SDK's payment Wallet: create one, fund it, approve spenders, withdraw, read balances.
    Wallet(wallet::WalletArgs),
    /// The operator's Nostr key, which signs the changes they make to their nodes.
    Operator(operator::OperatorArgs),
    /// A node's admin API (pause, resume, drain, status, settings, logs, containers), signed with
    /// the operator's key.
    Admin(operator::AdminArgs),
}

#[derive(Debug, Args)]
struct JobArgs {
    /// Container of the pipeline, in order (repeatable).
    #[arg(short = 'c', long = "container", required = true)]
    containers: Vec<String>,
    /// Job data: a JSON object, or @file.
    #[arg(long, value_name = "JSON|@FILE")]
    data: String,
    /// Ask the containers for a proof.
    #[arg(long)]
    requires_proof: bool,
    /// Wait for the job to finish and print its result; exit 1 if it failed.
    #[arg(long)]
    sync: bool,
    /// With --sync: give up after SECS seconds (exit 1; the job keeps running).
    #[arg(long, value_name = "SECS", requires = "sync", default_value = "60", value_parser = commands::parse_secs)]
    timeout: Duration,
}

/// The gateway client when the command goes through the router: `--router` on the command line,
/// `--api-key` or `--nsec`.
fn gateway(cli: &Cli) -> Result<Option<GatewayClient>, Failure> {
    let auth = match (&cli.api_key, &cli.nsec) {
        (Some(key), _) => GatewayAuth::ApiKey(infernet_service::secret::Secret::new(key.trim())),
        (None, Some(nsec)) => {
            let text = match nsec.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| Failure::Usage(format!("--nsec @{path}: cannot read the file: {e}")))?,
                None => nsec.clone(),
            };
            let identity = infernet_identity::Identity::parse(text.trim())
                .map_err(|e| Failure::Usage(format!("--nsec: {e}; pass nsec1… or 64 hex digits, or @file")))?;
            GatewayAuth::Nostr(identity)
        }
        (None, None) if cli.router_given => GatewayAuth::Anonymous,
        (None, None) => return Ok(None),
    };
    GatewayClient::new(&cli.router, auth)
        .map(Some)
        .map_err(|e| Failure::Usage(format!("--router: {e}")))
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let json = cli.json;
    let gateway = gateway(&cli)?;
    let node = || NodeClient::new(&cli.node).map_err(|e| Failure::Usage(format!("--node: {e}")));
    let router = || RouterClient::new(&cli.router).map_err(|e| Failure::Usage(format!("--router: {e}")));
    match cli.command {
        Command::Health => commands::health(&node()?, json).await,
        Command::Info => commands::info(&node()?, json).await,
        Command::Resources { ref model_id } => commands::resources(&node()?, model_id.as_deref(), json).await,
        Command::Job(ref args) => {
            let options = JobOptions {
                containers: &args.containers,
                data: &args.data,
                requires_proof: args.requires_proof,
                sync: args.sync,
                timeout: args.timeout,
            };
            match &gateway {
                Some(gw) => commands::gateway_job(gw, options, json).await,
                None => commands::job(&node()?, options, json).await,
            }
        }
        Command::Results { ref ids, intermediate } => match &gateway {
            Some(gw) => commands::gateway_results(gw, ids, json).await,
            None => commands::results(&node()?, ids, intermediate, json).await,
        },
        Command::Ids { pending, completed } => {
            let filter = match (pending, completed) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            commands::ids(&node()?, filter, json).await
        }
        Command::Stream {
            ref containers,
            ref data,
        } => match &gateway {
            Some(gw) => commands::gateway_stream(gw, containers, data).await,
            None => commands::stream(&node()?, containers, data).await,
        },
        Command::Sub {
            ref subscription,
            ref signature,
            ref private_key,
            ref coordinator,
            chain_id,
            nonce,
            expiry,
            ref data,
        } => {
            let signing = match (signature, private_key, coordinator, chain_id) {
                (Some(signature), _, _, _) => commands::Signing::Ready(signature.clone()),
                (None, Some(key), Some(coordinator), Some(chain_id)) => commands::Signing::Sign {
                    key: key.clone(),
                    coordinator: coordinator.clone(),
                    chain_id,
                    nonce,
                    expiry,
                },
                _ => {
                    return Err(commands::Failure::Usage(
                        "sub: give --signature, or --private-key with --coordinator and --chain-id".into(),
                    ));
                }
            };
            commands::sub(&node()?, subscription, signing, data).await
        }
        Command::Find {
            ref containers,
            n,
            offset,
        } => commands::find(&router()?, containers, n, offset, json).await,
        Command::Containers => commands::containers(&router()?, json).await,
        Command::Devnet(args) => devnet::run(args).await.map_err(|e| Failure::Runtime(format!("{e:#}"))),
        Command::Wallet(args) => wallet::run(args, json).await,
        Command::Operator(ref args) => operator::run(args, json),
        Command::Admin(ref args) => operator::admin(&node()?, args).await,
    }
}

fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let cli = match parsed {
        Ok((mut cli, matches)) => {
            cli.router_given = matches.value_source("router") == Some(clap::parser::ValueSource::CommandLine);
            cli
        }
        Err(e) => {
            let usage_error = e.use_stderr();
            let _ = e.print();
            return if usage_error {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("INFERNET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

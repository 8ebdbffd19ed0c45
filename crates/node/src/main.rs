//! `infernet-node`: run the node, check a config, or print the OpenAPI document.
//!
//! Exit codes: 0 success, 1 the node failed while running, 2 the config is invalid or unreadable.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use infernet_node::{
    Node,
    config::{self, ValidConfig},
    server::ApiDoc,
};
use utoipa::OpenApi;

// A node allocates per request (bodies, headers, JSON); mimalloc is markedly cheaper than glibc's
// malloc for that pattern across threads. `.cargo/config.toml` builds it without eager arena
// commit, which would double the idle RSS; `infernet_service::allocator::tune` has it give freed memory back soon.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "infernet-node",
    version,
    about = "The Infernet node: containerised compute for web2 clients and smart contracts"
)]
struct Cli {
    /// Config file (Ritual 1.4 format).
    #[arg(
        long,
        short,
        env = "INFERNET_CONFIG_PATH",
        default_value = "config.json",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node (the default).
    Run,
    /// Validate the config and print the effective config, secrets redacted.
    Check,
    /// Print the OpenAPI document of the REST API.
    Openapi,
}

/// Loads and validates the config; prints every problem and returns `None` when invalid.
fn load(path: &std::path::Path) -> Option<ValidConfig> {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    match config::validate(loaded.config, &loaded.unknown_keys) {
        Ok(valid) => Some(valid),
        Err(problems) => {
            eprintln!("error: {} has {} problem(s):", path.display(), problems.len());
            for p in problems {
                eprintln!("  - {p}");
            }
            None
        }
    }
}

fn main() -> ExitCode {
    infernet_service::allocator::tune();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Openapi => {
            println!("{}", ApiDoc::openapi().to_pretty_json().unwrap_or_default());
            ExitCode::SUCCESS
        }
        Command::Check => {
            infernet_node::logging::init(None);
            let Some(valid) = load(&cli.config) else {
                return ExitCode::from(2);
            };
            for w in &valid.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}", serde_json::to_string_pretty(&valid.config).unwrap_or_default());
            eprintln!("{}: OK", cli.config.display());
            ExitCode::SUCCESS
        }
        Command::Run => {
            let Some(valid) = load(&cli.config) else {
                return ExitCode::from(2);
            };
            if let Some(warning) = infernet_node::logging::init(Some(&valid.config.log)) {
                eprintln!("warning: {warning}");
            }
            for w in &valid.warnings {
                tracing::warn!(path = %w.path, "config: {}", w.message);
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(run(valid))
        }
    }
}

async fn run(valid: ValidConfig) -> ExitCode {
    // Installed before anything starts, so a signal during startup is not fatal but handled.
    let signals = match infernet_service::signals::Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let node = match Node::new(valid).start().await {
        Ok(node) => node,
        Err(e) => {
            tracing::error!(error = %e, "node failed to start");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(signals.cancel_on_signal(node.shutdown_token()));
    match node.wait().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "node stopped");
            ExitCode::FAILURE
        }
    }
}

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
// commit, which would double the idle RSS; `allocator::tune` has it give freed memory back soon.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long the allocator keeps memory the node freed before giving it back to the system.
mod allocator {
    use std::ffi::{c_int, c_long};

    /// `mi_option_purge_delay` in mimalloc's `mi_option_t` (the same index in v2 and v3; the test
    /// below checks it against mimalloc's own reading of `MIMALLOC_PURGE_DELAY`).
    const PURGE_DELAY: c_int = 15;
    /// Milliseconds before freed memory goes back to the system. mimalloc v3 waits 1 s: a node
    /// under hostile load frees 16 MiB bodies and 32 MiB container answers several times a
    /// second, and a second of them stayed resident (`make soak`: node peak 178 MB against 116 MB
    /// at 10 ms with bodies and flood, 216 MB against 144 MB with every case; docs/benchmarks.md).
    /// 10 ms is mimalloc v2's default.
    pub(super) const PURGE_DELAY_MS: c_long = 10;

    unsafe extern "C" {
        fn mi_option_set(option: c_int, value: c_long);
        #[cfg(test)]
        fn mi_option_get(option: c_int) -> c_long;
    }

    /// Sets the purge delay, unless `MIMALLOC_PURGE_DELAY` sets it: an operator's choice stands.
    pub(super) fn tune() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: mimalloc's documented option setter, called before any other thread runs.
            unsafe { mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
        }
    }

    /// The purge delay mimalloc uses now.
    #[cfg(test)]
    pub(super) fn purge_delay() -> c_long {
        // SAFETY: mimalloc's documented option getter.
        unsafe { mi_option_get(PURGE_DELAY) }
    }
}

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
    allocator::tune();
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

#[cfg(test)]
mod tests {
    use super::allocator;

    /// Set by the test to run itself again as a child with `MIMALLOC_PURGE_DELAY` set.
    const CHILD: &str = "INFERNET_TEST_PURGE_DELAY_CHILD";

    #[test]
    fn the_purge_delay_is_mimallocs_and_an_operator_setting_stands() {
        if std::env::var_os(CHILD).is_some() {
            allocator::tune();
            println!("purge_delay={}", allocator::purge_delay());
            return;
        }
        allocator::tune();
        assert_eq!(allocator::purge_delay(), allocator::PURGE_DELAY_MS);
        // mimalloc reads MIMALLOC_PURGE_DELAY into the option this index names, and tune() leaves
        // it alone.
        let out = std::process::Command::new(std::env::current_exe().expect("own path"))
            .args([
                "--exact",
                "tests::the_purge_delay_is_mimallocs_and_an_operator_setting_stands",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("MIMALLOC_PURGE_DELAY", "4321")
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("purge_delay=4321"), "{stdout}");
    }
}

//! `infernet operator`: the operator's Nostr key, which signs every change they make to their
//! nodes. The key lives in a file readable by its owner only; nothing else here holds it.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use infernet_identity::Identity;
use serde_json::json;

use infernet_cli::client::NodeClient;
use reqwest::Method;

use crate::commands::{Failure, json_object_arg};

/// Where the operator's key is.
#[derive(Debug, Args)]
struct KeyFile {
    /// The operator's secret key file (`nsec1…`, mode 0600).
    #[arg(
        long,
        global = true,
        env = "INFERNET_OPERATOR_KEY",
        value_name = "PATH",
        default_value_os_t = default_key_file()
    )]
    key_file: PathBuf,
}

/// `infernet operator …`.
#[derive(Debug, Args)]
pub(crate) struct OperatorArgs {
    #[command(flatten)]
    key: KeyFile,
    #[command(subcommand)]
    command: OperatorCommand,
}

#[derive(Debug, Subcommand)]
enum OperatorCommand {
    /// Make a new operator key: writes its nsec to the key file (0600, never overwritten) and
    /// prints its npub, which nodes list in `operator.pubkeys`.
    New,
    /// Print the npub (and hex form) of the key in the key file.
    Show,
}

/// `infernet admin …`: a node's admin API, every request signed with the operator's key.
#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    #[command(flatten)]
    key: KeyFile,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Whether the node takes jobs now, and why not.
    Status,
    /// Take no new off-chain jobs until `resume` (running jobs go on).
    Pause,
    /// Take jobs again.
    Resume,
    /// Finish running jobs and take no new ones (before maintenance).
    Drain,
    /// The node's recent log lines (info and above), as JSON.
    Logs {
        /// Only lines after this time (RFC 3339 or Unix seconds).
        #[arg(long)]
        since: Option<String>,
        /// Only lines at this level or more severe: error, warn, info.
        #[arg(long, default_value = "info")]
        level: String,
    },
    /// Print the provider's settings, or replace them with `--set`.
    Settings {
        /// The whole settings document (availability, pricing, limits): JSON or @file.
        #[arg(long, value_name = "JSON|@FILE")]
        set: Option<String>,
    },
    /// The containers the node runs; deploy, replace or remove one.
    Containers {
        #[command(subcommand)]
        command: ContainersCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ContainersCommand {
    /// Each container's entry (secrets redacted) and state.
    List,
    /// Deploy a container: pulled, started, checked, then served.
    Add {
        /// One container entry, as in config.json's `containers`.
        #[arg(long)]
        file: PathBuf,
    },
    /// Replace the container with the entry's id by the entry.
    Replace {
        /// One container entry, as in config.json's `containers`.
        #[arg(long)]
        file: PathBuf,
    },
    /// Stop serving a container, then stop and remove it.
    Remove {
        /// The container's id.
        id: String,
    },
}

/// The admin path of container `id`.
fn container_path(id: &str) -> String {
    format!(
        "/admin/containers/{}",
        form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    )
}

/// A container entry read from `file`.
fn entry_file(file: &Path) -> Result<serde_json::Value, Failure> {
    json_object_arg("file", &format!("@{}", file.display()))
}

pub(crate) async fn admin(node: &NodeClient, args: &AdminArgs) -> Result<(), Failure> {
    let operator = Identity::load(&args.key.key_file).map_err(|e| Failure::Runtime(e.to_string()))?;
    // A path made for this request (logs' query, a container's id).
    let made_path;
    let (method, path, body) = match &args.command {
        AdminCommand::Status => (Method::GET, "/admin/status", None),
        AdminCommand::Pause => (Method::POST, "/admin/pause", Some(json!({}))),
        AdminCommand::Resume => (Method::POST, "/admin/resume", Some(json!({}))),
        AdminCommand::Drain => (Method::POST, "/admin/drain", Some(json!({}))),
        AdminCommand::Logs { since, level } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("level", level);
            if let Some(since) = since {
                query.append_pair("since", since);
            }
            made_path = format!("/admin/logs?{}", query.finish());
            (Method::GET, made_path.as_str(), None)
        }
        AdminCommand::Settings { set: None } => (Method::GET, "/admin/settings", None),
        AdminCommand::Settings { set: Some(doc) } => {
            (Method::PUT, "/admin/settings", Some(json_object_arg("set", doc)?))
        }
        AdminCommand::Containers { command } => match command {
            ContainersCommand::List => (Method::GET, "/admin/containers", None),
            ContainersCommand::Add { file } => (Method::POST, "/admin/containers", Some(entry_file(file)?)),
            ContainersCommand::Replace { file } => {
                let entry = entry_file(file)?;
                let id = entry["id"]
                    .as_str()
                    .ok_or_else(|| Failure::Usage(format!("--file {}: the entry has no \"id\"", file.display())))?;
                made_path = container_path(id);
                (Method::PUT, made_path.as_str(), Some(entry))
            }
            ContainersCommand::Remove { id } => {
                made_path = container_path(id);
                (Method::DELETE, made_path.as_str(), None)
            }
        },
    };
    let answer = node
        .admin(&operator, method, path, body.as_ref())
        .await
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
    Ok(())
}

/// `~/.infernet/operator.nsec`, or `operator.nsec` here when there is no home directory.
fn default_key_file() -> PathBuf {
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".infernet"))
        .unwrap_or_default()
        .join("operator.nsec")
}

pub(crate) fn run(args: &OperatorArgs, json: bool) -> Result<(), Failure> {
    let identity = match args.command {
        OperatorCommand::New => create(&args.key.key_file)?,
        OperatorCommand::Show => Identity::load(&args.key.key_file).map_err(|e| Failure::Runtime(e.to_string()))?,
    };
    if json {
        let shown = json!({
            "npub": identity.npub(),
            "hex": identity.public_key().to_hex(),
            "key_file": args.key.key_file,
        });
        println!("{shown}");
    } else {
        println!("{}", identity.npub());
        eprintln!("key file: {}", args.key.key_file.display());
    }
    Ok(())
}

/// A new key in `path`, its folder made private when this makes it.
fn create(path: &Path) -> Result<Identity, Failure> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Failure::Runtime(format!("{}: {e}", dir.display())))?;
    }
    Identity::create(path).map_err(|e| Failure::Runtime(e.to_string()))
}

//! `infernet-router`: exit codes 0 on a signal, 1 when a task fails, 2 on bad settings.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use infernet_router::{
    Settings, address,
    gateway::GatewaySettings,
    monitor::ProbeSettings,
    registry::{Hysteresis, Limits},
    resources::FanOut,
};
use infernet_service::signals::Signals;

#[derive(Parser, Debug)]
#[command(
    name = "infernet-router",
    version,
    about = "Tells Infernet clients which nodes can serve their job"
)]
struct Args {
    /// Port to listen on (4100: a node next to it keeps its 4000).
    #[arg(long, env = "PORT", default_value_t = 4100)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "BIND", default_value = "0.0.0.0")]
    bind: String,
    /// Seconds between probe rounds.
    #[arg(long, env = "REFRESH_INTERVAL", default_value_t = 30.0)]
    refresh_interval: f64,
    /// Requests per minute per client and route.
    #[arg(long, env = "RATELIMIT_REQS_PER_MIN", default_value_t = 10)]
    ratelimit_reqs_per_min: u64,
    /// Static node list: `host:port`, bare hosts and `http(s)://` URLs, one per line, `#` comments.
    #[arg(long, env = "IPS_FILE", default_value = "ips.txt")]
    ips_file: PathBuf,
    /// Seconds before a probe of a node's `/info` gives up.
    #[arg(long, env = "PROBE_TIMEOUT", default_value_t = 3.0)]
    probe_timeout: f64,
    /// Probes in flight at once.
    #[arg(long, env = "PROBE_CONCURRENCY", default_value_t = 64)]
    probe_concurrency: usize,
    /// Largest body read from a node's `/info` or `/resources`, in bytes.
    #[arg(long, env = "PROBE_MAX_BYTES", default_value_t = 256 * 1024)]
    probe_max_bytes: usize,
    /// Seconds `/api/v1/resources` waits for nodes; later ones are reported late (under the 3 s
    /// Ritual's client waits for the whole answer).
    #[arg(long, env = "RESOURCES_DEADLINE", default_value_t = 2.0)]
    resources_deadline: f64,
    /// `/resources` calls in flight at once for one `/api/v1/resources`.
    #[arg(long, env = "RESOURCES_CONCURRENCY", default_value_t = 64)]
    resources_concurrency: usize,
    /// Failed probes in a row before a node is no longer handed out.
    #[arg(long, env = "LEAVE_AFTER", default_value_t = 2)]
    leave_after: u32,
    /// Good probes in a row before a node that left is handed out again.
    #[arg(long, env = "RETURN_AFTER", default_value_t = 2)]
    return_after: u32,
    /// Bearer token nodes must send to register; registration is off without one.
    #[arg(long, env = "REGISTRATION_TOKEN", hide_env_values = true)]
    registration_token: Option<String>,
    /// Seconds a registration lasts without a new heartbeat.
    #[arg(long, env = "REGISTRATION_TTL", default_value_t = 180)]
    registration_ttl: u64,
    /// Registered nodes tracked at once (listed nodes do not count).
    #[arg(long, env = "MAX_REGISTRATIONS", default_value_t = 1000)]
    max_registrations: usize,
    /// Registered nodes tracked at once per source address.
    #[arg(long, env = "MAX_REGISTRATIONS_PER_SOURCE", default_value_t = 32)]
    max_registrations_per_source: usize,
    /// Proxies (IPs/CIDRs, comma-separated) whose `X-Forwarded-For` is believed.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<String>,
    /// The database: `sqlite://PATH` (created if missing) or `postgres://USER:PASS@HOST/DB` for
    /// several replicas sharing one state.
    #[arg(long, env = "DATABASE_URL", default_value = infernet_router::db::DEFAULT_URL, hide_env_values = true)]
    database_url: String,
    /// Seconds from the first byte of a request head to its end before the client is disconnected.
    #[arg(long, env = "HEADER_TIMEOUT", default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds from a request head to the end of its body before the client is disconnected.
    #[arg(long, env = "BODY_TIMEOUT", default_value_t = 30.0)]
    body_timeout: f64,
    /// Seconds a keep-alive connection may stay open without a request.
    #[arg(long, env = "IDLE_TIMEOUT", default_value_t = 60.0)]
    idle_timeout: f64,
    /// Connections open at once; at the limit the longest-idle one is closed for a new client.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// The router's key file (Nostr nsec, made at first start, mode 0600); it signs dispatches to
    /// nodes, which trust the router by its npub (`network.routers`).
    #[arg(long, env = "KEY_FILE", default_value = "infernet-router.nsec")]
    key_file: std::path::PathBuf,
    /// The URL clients reach the router at, as they sign NIP-98 requests (behind a proxy).
    #[arg(long, env = "PUBLIC_URL")]
    public_url: Option<String>,
    /// The unit job prices are compared in; nodes pricing in another unit are not chosen.
    #[arg(long, env = "PRICE_UNIT", default_value = "USD")]
    price_unit: String,
    /// Nodes tried per job before the gateway gives up.
    #[arg(long, env = "DISPATCH_ATTEMPTS", default_value_t = 3)]
    dispatch_attempts: usize,
    /// Seconds a node has to accept a job.
    #[arg(long, env = "DISPATCH_TIMEOUT", default_value_t = 10.0)]
    dispatch_timeout: f64,
    /// Seconds a node may stay silent in the middle of a stream before the router ends it.
    #[arg(long, env = "STREAM_IDLE", default_value_t = 120.0)]
    stream_idle: f64,
    /// Jobs in one gateway batch at most.
    #[arg(long, env = "MAX_BATCH", default_value_t = 1000)]
    max_batch: usize,
    /// Let jobs' `callback_url` name loopback, private and link-local addresses (off: a client
    /// could otherwise make the router call its own network).
    #[arg(long, env = "CALLBACKS_TO_PRIVATE")]
    callbacks_to_private: bool,
}

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    if v > 0.0 && v <= 86_400.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("{name} must be between 0 and 86400 seconds, got {v}"))
    }
}

/// The server's connection limits from the flags.
fn limits(args: &Args) -> Result<infernet_service::http::Limits, String> {
    let limits = infernet_service::http::Limits {
        header_read: seconds("--header-timeout", args.header_timeout)?,
        body_read: seconds("--body-timeout", args.body_timeout)?,
        idle: seconds("--idle-timeout", args.idle_timeout)?,
        write_stall: infernet_service::http::Limits::default().write_stall,
        max_connections: args.max_connections,
    };
    limits.validate().map_err(|e| format!("--max-connections: {e}"))?;
    Ok(limits)
}

/// The static node list (`--ips-file`); a missing file means only registered nodes are served.
fn listed_nodes(file: &std::path::Path, errors: &mut Vec<String>) -> Vec<address::NodeAddr> {
    match std::fs::read_to_string(file) {
        Ok(text) => {
            let (addrs, bad) = address::parse_list(&text);
            errors.extend(bad.into_iter().map(|e| format!("{}: {e}", file.display())));
            addrs
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(file = %file.display(), "no static node list; only registered nodes will be served");
            Vec::new()
        }
        Err(e) => {
            errors.push(format!("{}: {e}", file.display()));
            Vec::new()
        }
    }
}

/// `--trusted-proxies`: each an IP or a CIDR.
fn trusted_proxies(list: &[String], errors: &mut Vec<String>) -> Vec<ipnet::IpNet> {
    let mut trusted_proxies = Vec::new();
    for p in list {
        match p
            .trim()
            .parse::<ipnet::IpNet>()
            .or_else(|_| p.trim().parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        {
            Ok(n) => trusted_proxies.push(n),
            Err(_) => errors.push(format!("--trusted-proxies: \"{p}\" is not an IP or CIDR")),
        }
    }
    trusted_proxies
}

fn settings(args: &Args) -> Result<Settings, Vec<String>> {
    let mut errors = Vec::new();
    let listed = listed_nodes(&args.ips_file, &mut errors);
    let interval = seconds("--refresh-interval", args.refresh_interval)
        .map_err(|e| errors.push(e))
        .ok();
    let timeout = seconds("--probe-timeout", args.probe_timeout)
        .map_err(|e| errors.push(e))
        .ok();
    let deadline = seconds("--resources-deadline", args.resources_deadline)
        .map_err(|e| errors.push(e))
        .ok();
    if args.probe_max_bytes < 1024 {
        errors.push("--probe-max-bytes must be at least 1024".into());
    }
    let limits = limits(args).map_err(|e| errors.push(e)).ok();
    if args.ratelimit_reqs_per_min == 0 {
        errors.push("--ratelimit-reqs-per-min must be at least 1".into());
    }
    if args.leave_after == 0 || args.return_after == 0 {
        errors.push("--leave-after and --return-after must be at least 1".into());
    }
    let database = infernet_router::db::DbSettings::new(&args.database_url);
    if let Err(e) = database.dialect() {
        errors.push(e.to_string());
    }
    let trusted_proxies = trusted_proxies(&args.trusted_proxies, &mut errors);
    let dispatch = seconds("--dispatch-timeout", args.dispatch_timeout)
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    let stream_idle = seconds("--stream-idle", args.stream_idle)
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    if args.price_unit.trim().is_empty() || args.price_unit.len() > 16 {
        errors.push(format!(
            "--price-unit must be a short name such as USD, got {:?}",
            args.price_unit
        ));
    }
    match (interval, timeout, deadline, limits, errors.is_empty()) {
        (Some(interval), Some(timeout), Some(deadline), Some(limits), true) => Ok(Settings {
            listed,
            probe: ProbeSettings {
                interval,
                timeout,
                concurrency: args.probe_concurrency.max(1),
                max_body_bytes: args.probe_max_bytes,
            },
            hysteresis: Hysteresis {
                leave_after: args.leave_after,
                return_after: args.return_after,
            },
            requests_per_minute: args.ratelimit_reqs_per_min,
            trusted_proxies,
            registration_token: args
                .registration_token
                .clone()
                .filter(|t| !t.is_empty())
                .map(infernet_service::secret::Secret::new),
            registration_ttl: Duration::from_secs(args.registration_ttl.max(1)),
            registrations: Limits {
                max_registrations: args.max_registrations,
                max_per_source: args.max_registrations_per_source,
            },
            resources: FanOut {
                concurrency: args.resources_concurrency.max(1),
                deadline,
                max_body_bytes: args.probe_max_bytes,
                max_total_bytes: infernet_router::resources::DEFAULT_MAX_TOTAL_BYTES,
            },
            database,
            limits,
            gateway: GatewaySettings {
                key_file: args.key_file.clone(),
                public_url: args.public_url.clone(),
                price_unit: args.price_unit.clone(),
                attempts: args.dispatch_attempts.max(1),
                dispatch_timeout: dispatch,
                stream_idle,
                max_batch: args.max_batch.max(1),
                callbacks_to_private: args.callbacks_to_private,
                ..GatewaySettings::default()
            },
        }),
        _ => Err(errors),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init()
    } else {
        builder.json().flatten_event(true).init()
    }
    let settings = match settings(&args) {
        Ok(s) => s,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let signals = match Signals::install() {
            Ok(signals) => signals,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = format!("{}:{}", args.bind, args.port);
        let listener = match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                return ExitCode::from(2);
            }
        };
        let router = match infernet_router::start(settings, listener).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(signals.cancel_on_signal(router.shutdown_token()));
        match router.wait().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "router stopped");
                ExitCode::FAILURE
            }
        }
    })
}

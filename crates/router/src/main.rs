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
    /// Without a command: run the router.
    #[command(subcommand)]
    command: Option<Command>,
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
    #[arg(long, env = "DATABASE_URL", default_value = infernet_router::db::DEFAULT_URL, hide_env_values = true, global = true)]
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
    /// PEM certificate chain of the listener: with `--tls-key`, the router serves HTTPS and
    /// `wss://` links itself.
    #[arg(long, env = "TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// PEM file of certificate authorities to trust for nodes listed as `https://` (their
    /// `server.tls`), besides the system's.
    #[arg(long, env = "NODE_CA_FILE")]
    node_ca_file: Option<PathBuf>,
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
    /// Nodes' links (`/api/v1/link`, for nodes behind NAT) held at once; one per node key.
    #[arg(long, env = "MAX_LINKS", default_value_t = 10_000)]
    max_links: usize,
    /// Links held, or starting, at once from one address (a fleet behind one NAT shares one).
    #[arg(long, env = "MAX_LINKS_PER_SOURCE", default_value_t = 256)]
    max_links_per_source: usize,
    /// Seconds between linked nodes' heartbeats; a link silent for three is closed.
    #[arg(long, env = "LINK_HEARTBEAT", default_value_t = 15.0)]
    link_heartbeat: f64,
    /// Seconds a job a linked node accepted waits for the node's link to come back before it
    /// runs on another node.
    #[arg(long, env = "LINK_LEASE", default_value_t = 60.0)]
    link_lease: f64,
    /// The URL the other replicas on the same PostgreSQL database reach this one at
    /// (`http(s)://host:port`, no path): a job submitted to any replica reaches a linked node
    /// through the replica that holds its link. Default: the listening address; required with
    /// PostgreSQL when listening on every address (`--bind 0.0.0.0`).
    #[arg(long, env = "REPLICA_URL")]
    replica_url: Option<String>,
    /// Seconds between renewals of this replica's links in the database (and reads of its
    /// peers'); a replica silent for three is taken as gone.
    #[arg(long, env = "REPLICA_REFRESH", default_value_t = 5.0)]
    replica_refresh: f64,
    /// Jobs in one gateway batch at most.
    #[arg(long, env = "MAX_BATCH", default_value_t = 1000)]
    max_batch: usize,
    /// Let jobs' `callback_url` name loopback, private and link-local addresses (off: a client
    /// could otherwise make the router call its own network).
    #[arg(long, env = "CALLBACKS_TO_PRIVATE")]
    callbacks_to_private: bool,
    /// Receives every alert of every node: a URL (generic JSON), `slack:URL` or `discord:URL`;
    /// repeat it, or separate with commas in the environment.
    #[arg(
        long = "alert-webhook",
        env = "ALERT_WEBHOOKS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    alert_webhooks: Vec<String>,
    /// A Nostr relay (`wss://…`, or `ws://…`) through which every alert of a node goes to its
    /// operators as a NIP-17 direct message from the router's key; repeat it, or separate with
    /// commas in the environment.
    #[arg(long = "alert-relay", env = "ALERT_RELAYS", value_delimiter = ',')]
    alert_relays: Vec<String>,
    /// Seconds between two evaluations of the alert rules.
    #[arg(long, env = "ALERT_INTERVAL", default_value_t = 5.0)]
    alert_interval: f64,
    /// Seconds before the first retry of a failed alert delivery (doubling, with jitter, at most
    /// 60 s; 8 attempts).
    #[arg(long, env = "ALERT_RETRY_DELAY", default_value_t = 1.0)]
    alert_retry_delay: f64,
    /// A JSON file of alert rules for nodes whose operators set none (the `rules` of `PUT
    /// /api/v1/alerts/settings`); the built-in defaults without it.
    #[arg(long, env = "ALERT_RULES")]
    alert_rules: Option<PathBuf>,
    /// Days resolved alerts are kept.
    #[arg(long, env = "ALERT_RETENTION_DAYS", default_value_t = 90)]
    alert_retention_days: u64,
    /// Days ledger rows are kept; older ones are deleted every hour.
    #[arg(long, env = "LEDGER_RETENTION_DAYS", default_value_t = 400)]
    ledger_retention_days: u64,
    /// Seconds between writes of nodes' public-record counters (probes, jobs, exclusions).
    #[arg(long, env = "SAMPLES_FLUSH", default_value_t = 60.0)]
    samples_flush: f64,
    /// Let "add a node" in the control interface fetch from loopback, private, link-local and
    /// unspecified addresses (off: any signed-in key could make the router call its own network).
    #[arg(long, env = "FLEET_PRIVATE_ADDRESSES")]
    fleet_private_addresses: bool,
    /// Dashboard sessions open at once; at the limit the oldest ends for a new sign-in.
    #[arg(long, env = "MAX_SESSIONS", default_value_t = 1000)]
    max_sessions: usize,
    /// Seconds a dashboard session lasts from sign-in.
    #[arg(long, env = "SESSION_LIFETIME", default_value_t = 43_200)]
    session_lifetime: u64,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// API keys for clients (run beside the router's database: same --database-url).
    #[command(subcommand)]
    Keys(Keys),
}

#[derive(clap::Subcommand, Debug)]
enum Keys {
    /// Issues a key and prints it once (only its hash is stored).
    Add {
        /// Jobs per minute at most (calendar minute, UTC); no limit without.
        #[arg(long)]
        per_minute: Option<i64>,
        /// Jobs per day at most (calendar day, UTC); no limit without.
        #[arg(long)]
        per_day: Option<i64>,
        /// A note for the operator (who the key is for).
        #[arg(long)]
        label: Option<String>,
    },
    /// Lists the keys (ids, quotas, use in the current windows; never the keys).
    List,
    /// Revokes a key: its next request is refused (401).
    Revoke {
        /// The key's id, as `keys list` shows it.
        id: String,
    },
}

/// `infernet-router keys …`: prints JSON on stdout.
fn keys(database_url: &str, command: Keys) -> ExitCode {
    let command = match command {
        Keys::Add {
            per_minute,
            per_day,
            label,
        } => infernet_router::keys::Command::Add {
            per_minute,
            per_day,
            label,
        },
        Keys::List => infernet_router::keys::Command::List,
        Keys::Revoke { id } => infernet_router::keys::Command::Revoke { id },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let db = match infernet_router::db::Db::open(&infernet_router::db::DbSettings::new(database_url)).await {
            Ok(db) => db,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let out = infernet_router::keys::run(&db, command, infernet_router::db::now_ms()).await;
        db.close().await;
        match out {
            Ok(v) => {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        }
    })
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

/// `--replica-url`, checked; without it, whether the listening address will do (see
/// `infernet_router::link::holders`).
fn replica_url(args: &Args, database: &infernet_router::db::DbSettings, errors: &mut Vec<String>) -> Option<String> {
    let Some(text) = &args.replica_url else {
        let everywhere = args
            .bind
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
        if everywhere && matches!(database.dialect(), Ok(infernet_router::db::Dialect::Postgres)) {
            errors.push(format!(
                "--replica-url: with PostgreSQL, the other replicas call this one for the nodes linked                  to it, and --bind {} does not say where; give the URL they reach it at                  (e.g. http://10.0.0.5:{}), or --bind that address",
                args.bind, args.port
            ));
        }
        return None;
    };
    match url::Url::parse(text) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && u.query().is_none()
                && u.path() == "/" =>
        {
            Some(text.trim_end_matches('/').to_string())
        }
        _ => {
            errors.push(format!(
                "--replica-url: expected http(s)://host:port with no path, query or credentials, got {text:?}"
            ));
            None
        }
    }
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
    if !(1..=36_500).contains(&args.ledger_retention_days) {
        errors.push(format!(
            "--ledger-retention-days must be from 1 to 36500, got {}",
            args.ledger_retention_days
        ));
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
    let samples_flush = seconds("--samples-flush", args.samples_flush)
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    let stream_idle = seconds("--stream-idle", args.stream_idle)
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        _ => {
            errors.push("--tls-cert and --tls-key go together: give both, or neither for plain HTTP".into());
            None
        }
    };
    let node_roots = match &args.node_ca_file {
        None => Vec::new(),
        Some(path) => match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|pem| reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string()))
        {
            Ok(certs) if !certs.is_empty() => certs,
            Ok(_) => {
                errors.push(format!("--node-ca-file {}: no certificate in it", path.display()));
                Vec::new()
            }
            Err(e) => {
                errors.push(format!("--node-ca-file {}: {e}", path.display()));
                Vec::new()
            }
        },
    };
    let replica_url = replica_url(args, &database, &mut errors);
    let link = infernet_router::link::LinkSettings {
        max_links: args.max_links.max(1),
        max_per_source: args.max_links_per_source.max(1),
        heartbeat: seconds("--link-heartbeat", args.link_heartbeat)
            .map_err(|e| errors.push(e))
            .unwrap_or_default()
            .max(Duration::from_secs(1)),
        lease: seconds("--link-lease", args.link_lease)
            .map_err(|e| errors.push(e))
            .unwrap_or_default(),
        replica_url,
        replica_refresh: seconds("--replica-refresh", args.replica_refresh)
            .map_err(|e| errors.push(e))
            .unwrap_or_default(),
        ..Default::default()
    };
    if args.price_unit.trim().is_empty() || args.price_unit.len() > 16 {
        errors.push(format!(
            "--price-unit must be a short name such as USD, got {:?}",
            args.price_unit
        ));
    }
    let alerts = alert_settings(args, &mut errors);
    if args.max_sessions == 0 {
        errors.push("--max-sessions must be at least 1".into());
    }
    if !(60..=30 * 86_400).contains(&args.session_lifetime) {
        errors.push(format!(
            "--session-lifetime must be from 60 to 2592000 seconds, got {}",
            args.session_lifetime
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
                ledger_retention: Duration::from_secs(args.ledger_retention_days * 86_400),
                link,
                node_roots,
                samples_flush,
                ..GatewaySettings::default()
            },
            alerts,
            tls,
            ui: infernet_router::ui::UiSettings {
                sessions: infernet_service::web::SessionLimits {
                    max: args.max_sessions,
                    lifetime: Duration::from_secs(args.session_lifetime),
                    ..Default::default()
                },
                private_addresses: args.fleet_private_addresses,
            },
        }),
        _ => Err(errors),
    }
}

/// `--alert-*`: the router's own webhooks may name any address (the operator of the router set
/// them).
fn alert_settings(args: &Args, errors: &mut Vec<String>) -> infernet_router::alerts::AlertSettings {
    use infernet_router::alerts::{AlertSettings, deliver::Webhook};
    let defaults = AlertSettings::default();
    let mut webhooks = Vec::new();
    for (i, text) in args.alert_webhooks.iter().filter(|t| !t.trim().is_empty()).enumerate() {
        match Webhook::parse(text, true) {
            Ok(w) => webhooks.push(w),
            Err(e) => errors.push(format!("--alert-webhook #{}: {e}", i + 1)),
        }
    }
    let mut relays = Vec::new();
    for (i, text) in args.alert_relays.iter().filter(|t| !t.trim().is_empty()).enumerate() {
        match infernet_service::websocket::WsUrl::parse(text) {
            Ok(r) => relays.push(r),
            Err(e) => errors.push(format!("--alert-relay #{}: {e}", i + 1)),
        }
    }
    if relays.len() > infernet_router::alerts::nostr::MAX_RELAYS {
        errors.push(format!(
            "--alert-relay: at most {} relays",
            infernet_router::alerts::nostr::MAX_RELAYS
        ));
    }
    let interval = seconds("--alert-interval", args.alert_interval)
        .map_err(|e| errors.push(e))
        .unwrap_or(defaults.interval);
    let first_retry = seconds("--alert-retry-delay", args.alert_retry_delay)
        .map_err(|e| errors.push(e))
        .unwrap_or(defaults.retry.base_delay);
    let rules = match &args.alert_rules {
        None => defaults.rules.clone(),
        Some(path) => {
            let body = std::fs::read(path).unwrap_or_else(|e| {
                errors.push(format!("--alert-rules {}: {e}", path.display()));
                b"{}".to_vec()
            });
            let wrapped = format!("{{\"rules\": {}}}", String::from_utf8_lossy(&body));
            match infernet_router::alerts::OperatorSettings::parse(wrapped.as_bytes(), true) {
                Ok(s) => s.rules,
                Err(problems) => {
                    for p in problems {
                        errors.push(format!("--alert-rules {}: {p}", path.display()));
                    }
                    defaults.rules.clone()
                }
            }
        }
    };
    if args.alert_retention_days == 0 {
        errors.push("--alert-retention-days must be at least 1".into());
    }
    AlertSettings {
        interval,
        webhooks,
        retry: infernet_service::retry::RetryPolicy {
            base_delay: first_retry,
            ..defaults.retry
        },
        allow_private: args.callbacks_to_private,
        retention: Duration::from_secs(args.alert_retention_days.max(1) * 86_400),
        rules,
        relays,
    }
}

// The same allocator as the node's (see `infernet_service::allocator`): glibc's malloc was 15 %
// of the router's CPU per streamed job.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    infernet_service::allocator::tune();
    let mut args = Args::parse();
    if let Some(Command::Keys(command)) = args.command.take() {
        return keys(&args.database_url, command);
    }
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

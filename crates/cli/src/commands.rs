//! The client subcommands: one node or router request each, answers on stdout.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use infernet_cli::client::{ClientError, GatewayClient, NodeClient, RouterClient};
use infernet_types::{ContainerResult, JobResult, JobStatus};
use serde_json::Value;

/// How a command failed; decides the exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command line is wrong (exit 2).
    Usage(String),
    /// The server answered an error, could not be reached, or the job failed (exit 1).
    Runtime(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Self::Runtime(e.to_string())
    }
}

/// Why a number of seconds was refused (clap prints it after the flag and value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SecsError {
    /// Not a number.
    #[error("expected seconds, e.g. 30 or 0.5, found {0:?}")]
    NotANumber(String),
    /// Negative, not finite, or beyond what a `Duration` holds.
    #[error("expected a non-negative number of seconds, found {0}")]
    OutOfRange(String),
}

/// `--timeout` in seconds (fractions allowed).
pub(crate) fn parse_secs(s: &str) -> Result<Duration, SecsError> {
    let secs: f64 = s.parse().map_err(|_| SecsError::NotANumber(s.to_string()))?;
    Duration::try_from_secs_f64(secs).map_err(|_| SecsError::OutOfRange(s.to_string()))
}

/// Reads `JSON` or `@file` given to `--<arg>`; it must be a JSON object.
pub(crate) fn json_object_arg(arg: &str, value: &str) -> Result<Value, Failure> {
    let (text, source) = match value.strip_prefix('@') {
        Some(path) => {
            let text = std::fs::read_to_string(Path::new(path))
                .map_err(|e| Failure::Usage(format!("--{arg} @{path}: cannot read the file: {e}")))?;
            (text, format!(" (from {path})"))
        }
        None => (value.to_string(), String::new()),
    };
    let parsed: Value = serde_json::from_str(&text).map_err(|e| {
        Failure::Usage(format!(
            "--{arg}{source}: not valid JSON: {e}; pass an object like '{{\"name\": \"ada\"}}' or @file.json"
        ))
    })?;
    if !parsed.is_object() {
        return Err(Failure::Usage(format!(
            "--{arg}{source}: expected a JSON object, found {}",
            infernet_types::kind_of(&parsed)
        )));
    }
    Ok(parsed)
}

fn pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn compact(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `infernet health`.
pub(crate) async fn health(node: &NodeClient, json: bool) -> Result<(), Failure> {
    let answer = node.health().await?;
    if json {
        println!("{}", compact(&answer));
    } else {
        println!("{}", answer.get("status").and_then(Value::as_str).unwrap_or("unknown"));
    }
    Ok(())
}

/// `infernet info`: a summary, or the node's whole answer with `--json`.
pub(crate) async fn info(node: &NodeClient, json: bool) -> Result<(), Failure> {
    let info = node.info().await?;
    if json {
        println!("{}", compact(&info));
        return Ok(());
    }
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "-".into(),
    };
    println!("version     {}", text(info.get("version")));
    println!("store       {}", text(info.get("store")));
    let chain = info.get("chain");
    if chain.and_then(|c| c.get("enabled")).and_then(Value::as_bool) == Some(true) {
        println!(
            "chain       enabled, address {}",
            text(chain.and_then(|c| c.get("address")))
        );
    } else {
        println!("chain       disabled");
    }
    let pending = info.get("pending");
    println!(
        "pending     offchain {}, onchain {}",
        text(pending.and_then(|p| p.get("offchain"))),
        text(pending.and_then(|p| p.get("onchain")))
    );
    println!("containers");
    let states = info.get("container_states");
    for c in info.get("containers").and_then(Value::as_array).into_iter().flatten() {
        let id = text(c.get("id"));
        let state = text(states.and_then(|s| s.get(&id)).and_then(|s| s.get("state")));
        println!("  {id}  {state}  {}", text(c.get("description")));
    }
    Ok(())
}

/// `infernet resources`: always JSON (the containers decide its shape).
pub(crate) async fn resources(node: &NodeClient, model_id: Option<&str>, json: bool) -> Result<(), Failure> {
    let answer = node.resources(model_id).await?;
    println!("{}", if json { compact(&answer) } else { pretty(&answer) });
    Ok(())
}

/// Options of `infernet job`.
pub(crate) struct JobOptions<'a> {
    pub(crate) containers: &'a [String],
    pub(crate) data: &'a str,
    pub(crate) requires_proof: bool,
    pub(crate) sync: bool,
    pub(crate) timeout: Duration,
}

/// `infernet job`: prints the id, or with `--sync` the result.
pub(crate) async fn job(node: &NodeClient, o: JobOptions<'_>, json: bool) -> Result<(), Failure> {
    let data = json_object_arg("data", o.data)?;
    let id = node.submit(o.containers, &data, o.requires_proof).await?;
    if !o.sync {
        println!("{id}");
        return Ok(());
    }
    let job = node.wait(&id, o.timeout).await?;
    if json {
        println!("{}", compact(&job));
    } else {
        match &job.result {
            Some(ContainerResult::Output { output, .. }) => println!("{}", pretty(output)),
            Some(ContainerResult::Error { .. }) | None => println!("{}", pretty(&job)),
        }
    }
    failed(&job)
}

/// `infernet job` through the router's gateway: prints the router's job id (and the node on
/// stderr), or with `--sync` the result.
pub(crate) async fn gateway_job(gw: &GatewayClient, o: JobOptions<'_>, json: bool) -> Result<(), Failure> {
    let data = json_object_arg("data", o.data)?;
    let placed = gw.submit(o.containers, &data, o.requires_proof).await?;
    let id = placed["id"]
        .as_str()
        .ok_or_else(|| Failure::Runtime(format!("the router answered without a job id: {placed}")))?
        .to_string();
    if !o.sync {
        if json {
            println!("{}", compact(&placed));
        } else {
            println!("{id}");
        }
        return Ok(());
    }
    let job = gw.wait(&id, o.timeout).await?;
    if json {
        println!("{}", compact(&job));
    } else {
        match job.pointer("/result/output") {
            Some(output) => println!("{}", pretty(output)),
            None => println!("{}", pretty(&job)),
        }
    }
    gateway_failed(&job)
}

/// Exit 1 for a job the router reports failed, with why.
fn gateway_failed(job: &Value) -> Result<(), Failure> {
    if job["status"] != "failed" {
        return Ok(());
    }
    let why = job["error"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            job.pointer("/result/error").and_then(Value::as_str).map(|e| {
                format!(
                    "{} in container {}",
                    e,
                    job["result"]["container"].as_str().unwrap_or("?")
                )
            })
        })
        .unwrap_or_else(|| "no reason given".into());
    Err(Failure::Runtime(format!(
        "job {} failed: {why}",
        job["id"].as_str().unwrap_or("?")
    )))
}

/// `infernet results` through the gateway: each job as the router answers it.
pub(crate) async fn gateway_results(gw: &GatewayClient, ids: &[String], json: bool) -> Result<(), Failure> {
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        jobs.push(gw.job(id).await?);
    }
    println!("{}", if json { compact(&jobs) } else { pretty(&jobs) });
    Ok(())
}

/// `infernet stream` through the gateway: the router's job id on stderr, the output on stdout.
pub(crate) async fn gateway_stream(gw: &GatewayClient, containers: &[String], data: &str) -> Result<(), Failure> {
    let data = json_object_arg("data", data)?;
    let (id, body) = gw.stream(containers, &data).await?;
    eprintln!("{id}");
    copy_out(body).await
}

/// Writes the output bytes to stdout as they arrive.
async fn copy_out(
    mut body: futures::stream::BoxStream<'static, Result<bytes::Bytes, ClientError>>,
) -> Result<(), Failure> {
    let mut stdout = std::io::stdout();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        stdout
            .write_all(&chunk)
            .and_then(|()| stdout.flush())
            .map_err(|e| Failure::Runtime(format!("could not write the output to stdout: {e}")))?;
    }
    Ok(())
}

/// Exit 1 for a failed job, naming the container and its error.
fn failed(job: &JobResult) -> Result<(), Failure> {
    if job.status != JobStatus::Failed {
        return Ok(());
    }
    Err(Failure::Runtime(match &job.result {
        Some(ContainerResult::Error { container, error }) => {
            format!("job {} failed in container {container}: {error}", job.id)
        }
        _ => format!("job {} failed", job.id),
    }))
}

/// `infernet results`: the jobs as the node answers them (pretty unless `--json`).
pub(crate) async fn results(node: &NodeClient, ids: &[String], intermediate: bool, json: bool) -> Result<(), Failure> {
    let jobs = node.results(ids, intermediate).await?;
    println!("{}", if json { compact(&jobs) } else { pretty(&jobs) });
    let missing: Vec<&str> = ids
        .iter()
        .filter(|id| !jobs.iter().any(|j| &j.id == *id))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Failure::Runtime(format!(
            "the node does not know job(s) {}; ids are per node, ask the node that ran them",
            missing.join(", ")
        )))
    }
}

/// `infernet ids`: one id per line, or a JSON array with `--json`.
pub(crate) async fn ids(node: &NodeClient, pending: Option<bool>, json: bool) -> Result<(), Failure> {
    let ids = node.ids(pending).await?;
    print_list(&ids, json);
    Ok(())
}

fn print_list(items: &[String], json: bool) {
    if json {
        println!("{}", compact(&items));
    } else {
        for item in items {
            println!("{item}");
        }
    }
}

/// `infernet stream`: the id on stderr, the output bytes on stdout as they arrive.
pub(crate) async fn stream(node: &NodeClient, containers: &[String], data: &str) -> Result<(), Failure> {
    let data = json_object_arg("data", data)?;
    let (id, body) = node.stream(containers, &data).await?;
    eprintln!("{id}");
    copy_out(body).await
}

/// How `infernet sub` gets its signature.
pub(crate) enum Signing {
    /// A ready signature object (JSON text or @file), sent as written.
    Ready(String),
    /// Sign here.
    Sign {
        /// The signer's key.
        key: String,
        /// EIP712Coordinator address.
        coordinator: String,
        /// Chain id.
        chain_id: u64,
        /// Subscriber nonce.
        nonce: u32,
        /// Signature expiry (unix seconds); default one hour from now.
        expiry: Option<u32>,
    },
}

/// Reads a JSON-or-@file argument as text, checking that it is a JSON object.
fn json_object_text(arg: &str, value: &str) -> Result<String, Failure> {
    json_object_arg(arg, value)?;
    match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(Path::new(path))
            .map_err(|e| Failure::Usage(format!("--{arg} @{path}: cannot read the file: {e}"))),
        None => Ok(value.to_string()),
    }
}

/// `infernet sub`: a delegated subscription, signed here or with a ready signature.
pub(crate) async fn sub(node: &NodeClient, subscription: &str, signing: Signing, data: &str) -> Result<(), Failure> {
    let mut subscription = json_object_arg("subscription", subscription)?;
    let data = json_object_arg("data", data)?;
    let signature = match signing {
        Signing::Ready(text) => json_object_text("signature", &text)?,
        Signing::Sign {
            key,
            coordinator,
            chain_id,
            nonce,
            expiry,
        } => {
            let coordinator = coordinator
                .parse()
                .map_err(|_| Failure::Usage(format!("--coordinator: \"{coordinator}\" is not an address")))?;
            let expiry = expiry.unwrap_or_else(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                u32::try_from(now + 3600).unwrap_or(u32::MAX)
            });
            let fields = subscription
                .as_object_mut()
                .ok_or_else(|| Failure::Usage("--subscription: expected an object".into()))?;
            infernet_cli::delegate::sign(fields, &key, coordinator, chain_id, nonce, expiry)
                .map_err(|e| Failure::Usage(format!("--subscription: {e}")))?
        }
    };
    node.submit_delegated(&subscription, &signature, &data).await?;
    println!("accepted: the node delivers the result on chain");
    Ok(())
}

/// `infernet find`: nodes that run every container, one `host:port` per line.
pub(crate) async fn find(
    router: &RouterClient,
    containers: &[String],
    n: usize,
    offset: usize,
    json: bool,
) -> Result<(), Failure> {
    let ips = router.ips(containers, n, offset).await?;
    print_list(&ips, json);
    if ips.is_empty() && !json {
        eprintln!("no available node runs {}", containers.join(" + "));
    }
    Ok(())
}

/// `infernet containers`: what the router's nodes run, with how many nodes run each.
pub(crate) async fn containers(router: &RouterClient, json: bool) -> Result<(), Failure> {
    let containers = router.containers().await?;
    if json {
        println!("{}", compact(&containers));
        return Ok(());
    }
    for c in &containers {
        println!("{}  {}  {}", c.id, c.count, c.description);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_must_be_a_json_object_and_errors_name_the_argument() {
        assert!(json_object_arg("data", r#"{"a": 1}"#).is_ok());
        let Err(Failure::Usage(m)) = json_object_arg("data", "{nope") else {
            panic!("expected a usage error")
        };
        assert!(m.starts_with("--data: not valid JSON"), "{m}");
        let Err(Failure::Usage(m)) = json_object_arg("signature", "[1]") else {
            panic!("expected a usage error")
        };
        assert_eq!(m, "--signature: expected a JSON object, found an array");
        let Err(Failure::Usage(m)) = json_object_arg("data", "@/nonexistent/x.json") else {
            panic!("expected a usage error")
        };
        assert!(m.contains("cannot read the file"), "{m}");
    }

    #[test]
    fn timeouts_are_seconds() {
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
    }
}

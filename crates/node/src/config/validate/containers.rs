//! `containers[]`: each entry checked in config order, with the ports they share.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use alloy_primitives::{Address, U256};
use ipnet::IpNet;

use infernet_service::secret::SensitiveUrl;

use super::{
    super::{Config, ContainerConfig},
    ContainerSpec, Problems, Runtime, check_url, parse_address, parse_amount, parse_net, positive,
};

/// `containers[i].field`.
fn at(i: usize, field: &str) -> String {
    format!("containers[{i}].{field}")
}

/// Checks every container; those whose URL does not parse are left out (their error is reported).
pub(super) fn check_containers(config: &Config, p: &mut Problems) -> Vec<ContainerSpec> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut used_ports: HashMap<u16, usize> = HashMap::new();
    let mut specs = Vec::new();
    for (i, c) in config.containers.iter().enumerate() {
        check_id(i, c, &mut seen, p);
        if !c.url.is_empty()
            && let Err(e) = check_url(&c.url, &["http", "https"])
        {
            p.error(at(i, "url"), e.to_string());
        }
        let runtime = runtime(config, i, c, p);
        check_limits(i, c, p);
        let allowed_ips = allowed_networks(i, c, p);
        let allowed_addresses = addresses(i, "allowed_addresses", &c.allowed_addresses, p);
        let allowed_delegate_addresses = addresses(i, "allowed_delegate_addresses", &c.allowed_delegate_addresses, p);
        let accepted_payments = accepted_payments(i, c, p);
        let port = port(config.server.port, i, c, &runtime, &mut used_ports, p);
        let base_url = match runtime {
            Runtime::Remote => SensitiveUrl::parse(&c.url),
            _ => SensitiveUrl::parse(&format!("http://127.0.0.1:{port}")),
        };
        // A URL that does not parse was reported above.
        let Ok(base_url) = base_url else { continue };
        specs.push(ContainerSpec {
            id: c.id.clone(),
            base_url,
            port,
            bearer: c.bearer.clone(),
            external: c.external,
            generates_proofs: c.generates_proofs,
            allowed_ips,
            allowed_addresses,
            allowed_delegate_addresses,
            accepted_payments,
            timeout: Duration::from_secs_f64(if positive(c.timeout) { c.timeout } else { 180.0 }),
            runtime,
            raw: c.clone(),
            limits: Default::default(),
        });
    }
    specs
}

/// `id`: present, joinable with ',' on chain, unique.
fn check_id<'a>(i: usize, c: &'a ContainerConfig, seen: &mut HashMap<&'a str, usize>, p: &mut Problems) {
    if c.id.trim().is_empty() {
        p.error(at(i, "id"), "must not be empty");
    } else if c.id.contains(',') || c.id.chars().any(char::is_whitespace) {
        p.error(
            at(i, "id"),
            format!(
                "\"{}\" must not contain commas or spaces (ids are joined with ',' on chain)",
                c.id
            ),
        );
    } else if let Some(first) = seen.insert(&c.id, i) {
        p.error(
            at(i, "id"),
            format!(
                "duplicate id \"{}\" (also containers[{first}].id); ids must be unique",
                c.id
            ),
        );
    }
}

/// How the service is run, and what that runtime needs.
fn runtime(config: &Config, i: usize, c: &ContainerConfig, p: &mut Problems) -> Runtime {
    if !c.url.is_empty() {
        if config.manage_containers && !c.image.is_empty() {
            p.warn(
                at(i, "image"),
                "ignored: a container with a `url` is a remote service and is not started by the node",
            );
        }
        Runtime::Remote
    } else if !config.manage_containers {
        Runtime::Unmanaged
    } else if let Some(process) = &c.process {
        if process.program.trim().is_empty() {
            p.error(at(i, "process.program"), "must name the program to run");
        }
        Runtime::Process(process.clone())
    } else {
        if c.image.trim().is_empty() {
            p.error(
                at(i, "image"),
                "must be defined when manage_containers is true (or set `url` for a remote service, `process` for a local program, or manage_containers: false)",
            );
        }
        Runtime::Docker
    }
}

/// `max_output_size`, `timeout` and a port of 0.
fn check_limits(i: usize, c: &ContainerConfig, p: &mut Problems) {
    if c.max_output_size == 0 {
        p.error(at(i, "max_output_size"), "must be at least 1 byte");
    }
    if !positive(c.timeout) {
        p.error(
            at(i, "timeout"),
            "must be a positive number of seconds (at most one year)",
        );
    }
    if c.port == Some(0) {
        p.error(at(i, "port"), "port 0 is not allowed");
    }
}

/// `allowed_ips`, parsed.
fn allowed_networks(i: usize, c: &ContainerConfig, p: &mut Problems) -> Vec<IpNet> {
    let mut allowed_ips = Vec::new();
    for (j, s) in c.allowed_ips.iter().enumerate() {
        match parse_net(s) {
            Some(n) => allowed_ips.push(n),
            None => p.error(
                format!("containers[{i}].allowed_ips[{j}]"),
                format!("\"{s}\" is not an IP address or CIDR (e.g. 10.0.0.0/8 or 192.168.1.7)"),
            ),
        }
    }
    allowed_ips
}

/// A list of addresses (`allowed_addresses`, `allowed_delegate_addresses`), parsed.
fn addresses(i: usize, field: &str, list: &[String], p: &mut Problems) -> Vec<Address> {
    let mut out = Vec::new();
    for (j, s) in list.iter().enumerate() {
        match parse_address(s) {
            Some(a) => out.push(a),
            None => p.error(
                format!("containers[{i}].{field}[{j}]"),
                format!("\"{s}\" is not an address (0x followed by 40 hex digits)"),
            ),
        }
    }
    out
}

/// `accepted_payments`: token address → whole minimum amount.
fn accepted_payments(i: usize, c: &ContainerConfig, p: &mut Problems) -> BTreeMap<Address, U256> {
    let mut accepted_payments = BTreeMap::new();
    for (token, amount) in &c.accepted_payments {
        let path = format!("containers[{i}].accepted_payments.{token}");
        match (parse_address(token), parse_amount(amount)) {
            (None, _) => p.error(path, format!("\"{token}\" is not a token address (0x followed by 40 hex digits; 0x0000000000000000000000000000000000000000 is ETH)")),
            (_, None) => p.error(path, format!("{amount} is not a whole non-negative amount (write large amounts as a string)")),
            (Some(t), Some(a)) => {
                accepted_payments.insert(t, a);
            }
        }
    }
    accepted_payments
}

/// The service's port: only local services listen on them, each on its own.
fn port(
    server_port: u16,
    i: usize,
    c: &ContainerConfig,
    runtime: &Runtime,
    used_ports: &mut HashMap<u16, usize>,
    p: &mut Problems,
) -> u16 {
    match (runtime, c.port) {
        (Runtime::Remote | Runtime::Unmanaged, port) => port.unwrap_or(3000),
        (_, Some(port)) => {
            if let Some(other) = used_ports.insert(port, i) {
                p.error(
                    at(i, "port"),
                    format!(
                        "port {port} is already used by containers[{other}]; give each managed container its own port"
                    ),
                );
            }
            if port == server_port {
                p.error(
                    at(i, "port"),
                    format!("port {port} is the node's own server.port; pick another"),
                );
            }
            port
        }
        (_, None) => port_after_default(used_ports, server_port, i, p, &at(i, "port")),
    }
}

/// Ritual's rule for managed containers without a port: 3000 if free, else the highest free port
/// counting down from 3999.
fn port_after_default(used: &mut HashMap<u16, usize>, server_port: u16, i: usize, p: &mut Problems, path: &str) -> u16 {
    let mut port = 3000;
    if used.contains_key(&port) || port == server_port {
        port = (1024..=3999)
            .rev()
            .find(|q| !used.contains_key(q) && *q != server_port)
            .unwrap_or(3999);
        p.warn(path, format!("no port given and 3000 is taken; assigned port {port}"));
    }
    used.insert(port, i);
    port
}

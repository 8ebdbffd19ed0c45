//! `containers[]`: one service the node serves, and how it is run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Secret, lax, redact, yes};

/// One container (`containers[]`).
#[derive(Clone, Deserialize, Serialize)]
pub struct ContainerConfig {
    /// Container id: routing key, Docker container name and on-chain id component.
    pub id: String,
    /// Docker image (required when managed by Docker).
    #[serde(default)]
    pub image: String,
    /// Base URL of a remote service; a container with a `url` is called there and never managed.
    /// It may carry credentials or a token in its query (shown redacted).
    #[serde(default, serialize_with = "redact::url")]
    pub url: String,
    /// Bearer token sent to the service (`Authorization: Bearer …`).
    #[serde(default)]
    pub bearer: Secret,
    /// Host port of the service (managed: published port; unmanaged: where it listens).
    #[serde(default, deserialize_with = "lax::opt_u16")]
    pub port: Option<u16>,
    /// May be the first container of a pipeline (reachable by clients).
    #[serde(default = "yes", deserialize_with = "lax::bool")]
    pub external: bool,
    /// Give the container all GPUs.
    #[serde(default, deserialize_with = "lax::bool")]
    pub gpu: bool,
    /// Token address → minimum payment (on-chain and delegated jobs).
    #[serde(default)]
    pub accepted_payments: BTreeMap<String, Value>,
    /// Client IPs/CIDRs allowed to send off-chain jobs (empty: everyone).
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// Subscription owners allowed on chain (empty: everyone).
    #[serde(default)]
    pub allowed_addresses: Vec<String>,
    /// Subscription owners allowed for delegated subscriptions (empty: everyone).
    #[serde(default)]
    pub allowed_delegate_addresses: Vec<String>,
    /// Shown in `/info`.
    #[serde(default)]
    pub description: String,
    /// Container command (shell-split, as Docker does).
    #[serde(default)]
    pub command: String,
    /// Container environment (values shown redacted: they often are tokens).
    #[serde(default, serialize_with = "redact::env")]
    pub env: Map<String, Value>,
    /// The last container of a pipeline can produce proofs.
    #[serde(default, deserialize_with = "lax::bool")]
    pub generates_proofs: bool,
    /// Docker-style bind mounts (`host:container[:mode]`).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Run the service as a local process instead of a Docker container (extension).
    #[serde(default)]
    pub process: Option<ProcessConfig>,
    /// Timeout of one call to this container, in seconds (extension; Ritual: 180).
    #[serde(default = "default_call_timeout", deserialize_with = "lax::f64")]
    pub timeout: f64,
    /// Most bytes one call to this container may answer, streamed or not (extension); past it the
    /// job fails and the connection is dropped.
    #[serde(default = "default_max_output", deserialize_with = "lax::u64")]
    pub max_output_size: u64,
}

impl ContainerConfig {
    /// The entry as `config.json` holds it, secrets included (the admin state keeps entries the
    /// operator set; `Serialize` redacts them).
    pub fn to_entry(&self) -> Value {
        let mut entry = serde_json::to_value(self).expect("a container entry always serialises");
        entry["url"] = Value::String(self.url.clone());
        entry["bearer"] = Value::String(self.bearer.expose().to_string());
        entry["env"] = Value::Object(self.env.clone());
        // Left out rather than null: the file's parser takes no null port.
        if let Value::Object(fields) = &mut entry {
            fields.retain(|_, v| !v.is_null());
        }
        entry
    }
}

fn default_call_timeout() -> f64 {
    180.0
}
fn default_max_output() -> u64 {
    32 << 20
}

/// A service run as a local process by the node (the `process` container runtime).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ProcessConfig {
    /// Program to run: a path, or a name looked up next to `infernet-node` and then in `PATH`.
    pub program: String,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
}

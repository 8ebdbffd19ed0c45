//! One snapshot of the node: what `/info`, `/metrics` and the heartbeat say of it is read here,
//! once, so they never disagree (a router that reads heartbeats sees the chain jobs `/info`
//! shows).

use std::{collections::BTreeMap, sync::Arc};

use serde_json::{Map, Value, json};

use super::{metrics::Gauges, system::SystemSample};
use crate::{
    chain::status::ChainStatus,
    containers::ContainerState,
    server::{AppState, ChainInfo, ContainerInfo},
    store::StoreError,
};

/// The node at one moment.
pub struct Snapshot {
    /// Configured containers, in config order, and whether each is serving.
    pub containers: Vec<(ContainerInfo, bool)>,
    /// What the node knows of each container's service.
    pub states: Vec<(String, ContainerState)>,
    /// Running off-chain jobs, or why the store could not count them.
    pub pending_offchain: Result<u64, StoreError>,
    /// Running chain jobs.
    pub pending_onchain: u64,
    /// Job records the store has accepted but not written yet.
    pub store_unwritten: usize,
    /// The store's backend.
    pub store: &'static str,
    /// Finished jobs by source: `(success, failure)`.
    pub jobs: BTreeMap<&'static str, (u64, u64)>,
    /// Calls per container with their latency histogram (`/info` only).
    pub calls: Map<String, Value>,
    /// Job latency: bucket bounds (s) and counts per bucket (the last above every bound).
    pub job_latency: (&'static [f64], Vec<u64>),
    /// The chain side's identity.
    pub chain: ChainInfo,
    /// What the chain side is doing (chain enabled only).
    pub chain_status: Option<Arc<ChainStatus>>,
    /// Times each container went down since the node started.
    pub restarts: Vec<(String, u64)>,
    /// The host (`None` when the sample could not be taken).
    pub system: Option<SystemSample>,
    /// The node's key (npub), its operators (npubs), and what the provider advertises (not
    /// read for `/metrics`: it copies the operator's settings).
    pub provider: Value,
    /// The host's fixed resources.
    pub hardware: infernet_types::Hardware,
}

/// Who runs the node and what its provider advertises: its key, its operators, its prices, and
/// whether it takes jobs now (`open`, and `available_at` when it does not).
fn provider(state: &AppState) -> Value {
    let admin = &state.admin;
    let persisted = admin.state();
    let (open, reason, available_at) = match crate::admin::state::gate(&persisted, jiff::Timestamp::now()) {
        Ok(()) => (true, None, None),
        Err(closed) => (false, Some(closed.reason), closed.available_at.map(|t| t.to_string())),
    };
    json!({
        "node": admin.identity().npub(),
        "operators": admin.operators(),
        "pricing": persisted.settings.pricing,
        "availability": {"open": open, "reason": reason, "available_at": available_at, "mode": persisted.mode},
    })
}

/// What a snapshot is for: each view reads only what it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// `GET /info`.
    Info,
    /// The heartbeat to the routers.
    Heartbeat,
    /// `GET /metrics`.
    Metrics,
}

impl Snapshot {
    /// Reads the node for `view`; every view samples the host (CPU use is over the time since
    /// the previous sample, whichever view took it).
    pub async fn take(state: &AppState, view: View) -> Self {
        let pending_offchain = state.store.pending_count().await;
        let (containers, states) = {
            let states = state.states.read().expect("container states poisoned");
            let containers = state
                .containers
                .load()
                .iter()
                .map(|c| (c.clone(), states.get(&c.id) == Some(&ContainerState::Running)))
                .collect();
            (
                containers,
                states.iter().map(|(id, s)| (id.clone(), s.clone())).collect(),
            )
        };
        let sampler = state.system.clone();
        let system = tokio::task::spawn_blocking(move || sampler.sample()).await.ok();
        Self {
            containers,
            states,
            pending_offchain,
            pending_onchain: state.chain_status.as_ref().map_or(0, |s| s.running()),
            store_unwritten: state.store.unwritten(),
            store: state.store.backend(),
            jobs: state.orchestrator.metrics().job_counts(),
            calls: match view {
                View::Info => state.orchestrator.metrics().container_calls(),
                View::Heartbeat | View::Metrics => Map::new(),
            },
            job_latency: state.orchestrator.metrics().job_latency(),
            chain: state.chain.clone(),
            chain_status: state.chain_status.clone(),
            restarts: state.manager.restarts(),
            system,
            provider: if view == View::Metrics {
                Value::Null
            } else {
                provider(state)
            },
            hardware: state.system.hardware().clone(),
        }
    }

    fn serving(&self) -> impl Iterator<Item = &ContainerInfo> {
        self.containers.iter().filter(|(_, up)| *up).map(|(c, _)| c)
    }

    /// The `/info` body; fails when the store cannot count its running jobs.
    pub fn info(self) -> Result<Value, StoreError> {
        let running: Vec<Value> = self.serving().map(|c| json!(c)).collect();
        let restarts = self.restart_counts();
        let jobs = self.job_counts();
        let pending = self.pending_offchain?;
        let states: Map<String, Value> = self.states.iter().map(|(id, s)| (id.clone(), json!(s))).collect();
        let mut chain = json!({"address": self.chain.address, "enabled": self.chain.enabled});
        if let Some(id) = self.chain.chain_id {
            chain["chain_id"] = json!(id);
        }
        if let Some(coordinator) = &self.chain.coordinator {
            chain["coordinator"] = json!(coordinator);
        }
        if let Some(status) = &self.chain_status {
            chain["state"] = status.to_json();
        }
        Ok(json!({
            "chain": chain,
            "containers": running,
            "container_states": states,
            "container_restarts": restarts,
            "container_calls": self.calls,
            "jobs": jobs,
            "pending": {"offchain": pending, "onchain": self.pending_onchain},
            "store": self.store,
            "system": self.system,
            "version": env!("CARGO_PKG_VERSION"),
            "node": self.provider["node"],
            // Routers may authenticate dispatches with a MAC (infernet_identity::dispatch, v1).
            "dispatch_mac": 1,
            "operators": self.provider["operators"],
            "pricing": self.provider["pricing"],
            "availability": self.provider["availability"],
            "hardware": self.hardware,
        }))
    }

    /// The heartbeat's body, before the sender adds its own keys; a store that cannot count its
    /// running jobs counts as none.
    pub fn heartbeat(&self) -> Value {
        let containers: Vec<Value> = self
            .serving()
            .map(|c| json!({"id": c.id, "description": c.description, "external": c.external}))
            .collect();
        let jobs = self.job_counts();
        let mut chain = json!({"enabled": self.chain.enabled, "address": self.chain.address});
        if let Some(status) = &self.chain_status {
            chain["state"] = status.summary();
        }
        json!({
            "containers": containers,
            "pending": {
                "offchain": self.pending_offchain.as_ref().copied().unwrap_or(0),
                "onchain": self.pending_onchain,
            },
            "jobs": jobs,
            "job_latency": {"le": self.job_latency.0, "counts": self.job_latency.1},
            "container_states": self.states.iter().map(|(id, s)| (id.clone(), json!(s))).collect::<Map<String, Value>>(),
            "chain": chain,
            "container_restarts": self.restart_counts(),
            "version": env!("CARGO_PKG_VERSION"),
            "system": self.system,
            "node": self.provider["node"],
            "operators": self.provider["operators"],
            "pricing": self.provider["pricing"],
            "availability": self.provider["availability"],
        })
    }

    /// `{source: {"success", "failure"}}`: finished jobs since the node started.
    fn job_counts(&self) -> Map<String, Value> {
        self.jobs
            .iter()
            .map(|(source, (success, failure))| (source.to_string(), json!({"success": success, "failure": failure})))
            .collect()
    }

    fn restart_counts(&self) -> Map<String, Value> {
        self.restarts.iter().map(|(id, n)| (id.clone(), json!(n))).collect()
    }

    /// The gauges `/metrics` shows.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            pending_offchain: self.pending_offchain.as_ref().ok().copied(),
            pending_onchain: self.pending_onchain,
            store_unwritten: self.store_unwritten as u64,
            containers_up: self.containers.iter().map(|(c, up)| (c.id.clone(), *up)).collect(),
            restarts: self.restarts.clone(),
            system: self.system.clone(),
        }
    }
}

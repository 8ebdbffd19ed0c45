//! The Infernet node: serves containerised compute to web2 clients over REST and to smart
//! contracts through the Infernet SDK `Coordinator`.
//!
//! The architecture follows Ritual's node, with one module per component:
//! - [`admin`] — the operator's signed admin API and the node's own key;
//! - [`dashboard`] — the operator's web app for this node at `/dashboard`;
//! - [`config`] — `config.json`, defaults and validation;
//! - [`chain`] — the chain side (today: RPC, node key and Registry lookup at boot);
//! - [`guardian`] — which jobs the node accepts;
//! - [`orchestrator`] — runs pipelines of containers;
//! - [`containers`] — the Container Manager (runs and watches services);
//! - [`store`] — off-chain job results (embedded or Redis);
//! - [`server`] — the REST API;
//! - [`stats`] — metrics;
//! - [`logging`] — console and rotating file logs;
//! - [`tasks`] — supervised tasks and shutdown (from `infernet-service`);
//! - [`node`] — wires them together.

pub mod admin;
pub mod chain;
pub mod config;
pub mod containers;
pub mod dashboard;
pub mod guardian;
pub(crate) mod json;
pub mod link;
pub mod logging;
pub mod node;
pub mod orchestrator;
pub mod receipt;
pub mod server;
pub mod stats;
pub mod store;

pub use infernet_service::{install_tls_provider, tasks};

pub use node::{Node, NodeError, RunningNode};

/// A hash map with a seeded fast hasher, for keys the node makes (random ids, row numbers) or takes
/// from its config (container ids): SipHash showed up in profiles of the streaming path. The rate
/// limiter, keyed by client addresses, uses foldhash's quality variant with a per-map seed.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

//! Alerts: the router watches every node it knows and tells the operator before their users
//! notice.
//!
//! ```text
//!   prober (/info) ──┐                        ┌─ webhooks (--alert-webhook: every alert)
//!   heartbeats ──────┼─▶ History per node ──▶ tick: rules::evaluate ─▶ alerts table ─┼─ the operator's webhooks
//!   links (/info) ───┘      (bounded)          (every --alert-interval)              └─ Nostr DMs to the operator
//! ```
//!
//! - [`rules`]: the conditions, pure; thresholds per operator ([`settings`], set with a signed
//!   `PUT /api/v1/alerts/settings`), defaults that work out of the box.
//! - Each tick compares the conditions that hold with the alerts firing in the database. A new
//!   condition is inserted as a firing alert (one firing row per node, rule and subject: of several
//!   replicas the one whose insert lands sends it); one that no longer holds is resolved (the
//!   replica whose update lands sends that). So an alert fires once and resolves once, however
//!   long it stays true, and a restart does not fire it again.
//! - While a node is offline its other rules are held back: one outage is one alert.
//! - Deliveries ([`deliver`]) are queued (bounded) and retried with backoff; a silence
//!   ([`Silence`]) records the alert but sends nothing. With relays (`--alert-relay`), each
//!   change also goes to the node's operators as a NIP-17 direct message from the router's key
//!   ([`nostr`]), unless they turned `direct_messages` off.
//! - Linked nodes are not probed: [`linked`] reads their `/info` over their link at the
//!   prober's interval, so every rule judges them as it judges reachable nodes.
//! - A node the router has not heard from for [`FORGET_AFTER_MS`] is forgotten: its alerts
//!   resolve.

pub mod api;
pub mod deliver;
pub mod linked;
pub mod nostr;
pub mod rules;
pub mod settings;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use infernet_identity::Identity;
use infernet_service::websocket::WsUrl;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use self::settings::{OperatorSettings, SettingsError, Silence};
use self::{
    deliver::{Event, Outbox, Target, Webhook},
    rules::{Calls, History, Rules, Sample},
};
use crate::{
    db::{Db, DbError, alerts::Alert, now_ms},
    registry::Registry,
};

/// A node silent this long is forgotten (its history dropped, its alerts resolved).
pub const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;
/// Nodes watched at most.
pub const MAX_NODES: usize = 100_000;
/// Webhooks per operator at most.
pub const MAX_WEBHOOKS: usize = 8;
/// Silences per operator at most.
pub const MAX_SILENCES: usize = 64;
/// Operators' settings by hex key.
type OperatorMap = Arc<HashMap<String, OperatorSettings>>;

/// How long operators' settings read from the database are used before they are read again.
const SETTINGS_TTL: Duration = Duration::from_secs(30);
/// Firing alerts and operators' settings read per tick at most.
const READ_LIMIT: i64 = 100_000;

/// The router's alert settings.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Time between evaluations (`--alert-interval`).
    pub interval: Duration,
    /// Webhooks that receive every alert of every node (`--alert-webhook`).
    pub webhooks: Vec<Webhook>,
    /// Retries of a delivery.
    pub retry: infernet_service::retry::RetryPolicy,
    /// Operators' webhooks may name loopback and private addresses (`--callbacks-to-private`).
    pub allow_private: bool,
    /// Resolved alerts are kept this long.
    pub retention: Duration,
    /// The rules of nodes whose operators set none (`--alert-rules`).
    pub rules: Rules,
    /// Nostr relays that carry alerts to operators as direct messages (`--alert-relay`).
    pub relays: Vec<WsUrl>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            webhooks: Vec::new(),
            retry: infernet_service::retry::RetryPolicy {
                base_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(60),
                max_attempts: 8,
            },
            allow_private: false,
            retention: Duration::from_secs(90 * 86_400),
            rules: Rules::default(),
            relays: Vec::new(),
        }
    }
}

/// The figures of a node's `/info` the rules read.
pub fn sample_of(info: &Value, at: i64) -> Sample {
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let mut jobs = (0, 0);
    if let Some(sources) = info["jobs"].as_object() {
        for counts in sources.values() {
            jobs.0 += u(&counts["success"]);
            jobs.1 += u(&counts["failure"]);
        }
    }
    let calls = info["container_calls"]
        .as_object()
        .map(|m| {
            m.iter()
                .take(1024)
                .map(|(id, c)| {
                    let latency = &c["latency"];
                    let le = latency["le"]
                        .as_array()
                        .map(|a| a.iter().take(64).map(Value::as_f64).collect())
                        .unwrap_or_default();
                    let counts = latency["counts"]
                        .as_array()
                        .map(|a| a.iter().take(64).map(u).collect())
                        .unwrap_or_default();
                    (id.clone(), Calls { le, counts })
                })
                .collect()
        })
        .unwrap_or_default();
    let down = info["container_states"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, s)| s["state"].as_str().is_some_and(|s| s != "running"))
                .take(1024)
                .map(|(id, _)| id.clone())
                .collect()
        })
        .unwrap_or_default();
    let restarts = info["container_restarts"]
        .as_object()
        .map(|m| m.iter().take(1024).map(|(id, n)| (id.clone(), u(n))).collect())
        .unwrap_or_default();
    let state = &info["chain"]["state"];
    let chain = state["head_block"].as_u64().map(|head| {
        let tx = &state["transactions"];
        (
            head,
            u(&state["synced_block"]),
            u(&tx["failed"]).saturating_add(u(&tx["reverted"])),
        )
    });
    let balances = state["balances"]["node"]["eth"]
        .as_f64()
        .map(|node| (node, state["balances"]["payment"]["eth"].as_f64()));
    let system = &info["system"];
    let share = |used: Option<u64>, total: Option<u64>| match (used, total) {
        (Some(used), Some(total)) if total > 0 => Some(100.0 * used as f64 / total as f64),
        _ => None,
    };
    let disk_percent = share(
        system["disk_total_bytes"]
            .as_u64()
            .zip(system["disk_available_bytes"].as_u64())
            .map(|(t, a)| t.saturating_sub(a)),
        system["disk_total_bytes"].as_u64(),
    );
    let memory_percent = share(
        system["memory_used_bytes"].as_u64(),
        system["memory_total_bytes"].as_u64(),
    );
    let gpus = system["gpus"]
        .as_array()
        .map(|a| {
            a.iter()
                .take(64)
                .enumerate()
                .filter_map(|(i, g)| {
                    let celsius = g["temperature_celsius"].as_f64()?;
                    Some((
                        i,
                        g["name"].as_str().unwrap_or("GPU").chars().take(64).collect(),
                        celsius,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Sample {
        at,
        jobs,
        calls,
        down,
        restarts,
        chain,
        balances,
        disk_percent,
        memory_percent,
        gpus,
    }
}

/// The alert engine: what it has seen of each node, and where alerts go.
pub struct Alerts {
    db: Db,
    registry: Arc<Registry>,
    settings: AlertSettings,
    nodes: Mutex<HashMap<String, History>>,
    outbox: Outbox,
    /// Operators' settings as last read (hex key → settings), and when (`None`: read them again).
    operators: Mutex<(OperatorMap, Option<Instant>)>,
}

/// An alert as deliveries and the API show it.
fn event(alert: &Alert) -> Event {
    Event {
        id: alert.id.clone(),
        status: alert.status.clone(),
        rule: alert.rule.clone(),
        node: alert.node.clone(),
        subject: alert.subject.clone(),
        summary: alert.summary.clone(),
        started_at: rfc3339(alert.started_at),
        resolved_at: alert.resolved_at.map(rfc3339),
    }
}

/// Unix ms as RFC 3339.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

impl Alerts {
    /// The engine, and the delivery queue's worker (run it with [`deliver::Worker::run`]);
    /// direct messages are sent as `identity`, the router's key.
    pub fn new(
        db: Db,
        registry: Arc<Registry>,
        settings: AlertSettings,
        identity: Identity,
    ) -> (Arc<Self>, deliver::Worker) {
        let relays = (!settings.relays.is_empty()).then(|| nostr::Relays::new(identity, settings.relays.clone()));
        let (outbox, worker) = deliver::queue(settings.retry, relays, settings.allow_private);
        let alerts = Arc::new(Self {
            db,
            registry,
            settings,
            nodes: Mutex::default(),
            outbox,
            operators: Mutex::default(),
        });
        (alerts, worker)
    }

    /// The settings the engine runs with.
    pub fn settings(&self) -> &AlertSettings {
        &self.settings
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, HashMap<String, History>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A node answered its probe with `info`.
    pub fn observe(&self, node: &str, info: &Value) {
        let now = now_ms();
        let sample = sample_of(info, now);
        let keep = self.longest_window_ms();
        let mut nodes = self.nodes();
        if !nodes.contains_key(node) && nodes.len() >= MAX_NODES {
            return;
        }
        nodes.entry(node.to_string()).or_default().push(sample, keep);
    }

    /// A sign of life from a node (a heartbeat, a link message).
    pub fn seen(&self, node: &str) {
        let now = now_ms();
        let mut nodes = self.nodes();
        if !nodes.contains_key(node) && nodes.len() >= MAX_NODES {
            return;
        }
        nodes.entry(node.to_string()).or_default().seen(now);
    }

    /// The longest window any operator's rules look back over.
    fn longest_window_ms(&self) -> i64 {
        let operators = self.operators.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
        operators
            .values()
            .map(|s| s.rules.longest_window_ms())
            .chain([self.settings.rules.longest_window_ms()])
            .max()
            .unwrap_or(0)
    }

    /// Evaluates every `interval` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_retention = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.settings.interval) => {}
            }
            if let Err(e) = self.tick(now_ms()).await {
                tracing::warn!(error = %e, "alerts: evaluation failed; retrying next interval");
            }
            if last_retention.elapsed() > Duration::from_secs(3600) {
                last_retention = Instant::now();
                let before = now_ms() - self.settings.retention.as_millis() as i64;
                if let Err(e) = self.db.forget_alerts(before).await {
                    tracing::warn!(error = %e, "alerts: cannot delete old alerts");
                }
            }
        }
    }

    /// Has the next evaluation read the operators' settings again (one was just changed here).
    pub fn settings_changed(&self) {
        self.operators.lock().unwrap_or_else(|p| p.into_inner()).1 = None;
    }

    /// The operators' settings: read from the database at most every [`SETTINGS_TTL`] (another
    /// replica's change shows within it), or at once after a change here.
    async fn load_operators(&self) -> Result<OperatorMap, DbError> {
        {
            let cached = self.operators.lock().unwrap_or_else(|p| p.into_inner());
            if cached.1.is_some_and(|at| at.elapsed() < SETTINGS_TTL) {
                return Ok(cached.0.clone());
            }
        }
        let rows = self.db.all_alert_settings(READ_LIMIT).await?;
        let parsed: HashMap<String, OperatorSettings> = rows
            .into_iter()
            .filter_map(|(operator, text)| match serde_json::from_str(&text) {
                Ok(s) => Some((operator, s)),
                Err(e) => {
                    tracing::warn!(%operator, error = %e, "alerts: stored settings unreadable; using defaults");
                    None
                }
            })
            .collect();
        let parsed = Arc::new(parsed);
        *self.operators.lock().unwrap_or_else(|p| p.into_inner()) = (parsed.clone(), Some(Instant::now()));
        Ok(parsed)
    }

    /// One evaluation at `now`: fires what newly holds, resolves what no longer does.
    pub async fn tick(&self, now: i64) -> Result<(), DbError> {
        let operators = self.load_operators().await?;
        let view = self.registry.view(Instant::now());
        // A node linked now is alive: its link closes after three silent heartbeats.
        for linked in view.iter().filter(|v| v.address.starts_with("npub1")) {
            self.seen(&linked.address);
        }
        // Whom each node names as its operators (hex keys), from its signed statements.
        let owners: HashMap<String, Vec<String>> = view
            .into_iter()
            .filter_map(|v| {
                let hex = v
                    .identity?
                    .operators
                    .iter()
                    .filter_map(|o| infernet_identity::parse_public_key(o).ok())
                    .map(|k| k.to_hex())
                    .collect();
                Some((v.address, hex))
            })
            .collect();
        let defaults = &self.settings.rules;
        let mut want: BTreeMap<(String, String, String), (String, Vec<String>)> = BTreeMap::new();
        // Nodes judged, with how long their history reaches back and their rules.
        let mut watched: BTreeMap<String, (i64, Rules)> = BTreeMap::new();
        let mut forgotten = BTreeSet::new();
        {
            let mut nodes = self.nodes();
            nodes.retain(|node, h| {
                let keep = h.last_seen.is_some_and(|t| now - t < FORGET_AFTER_MS);
                if !keep {
                    forgotten.insert(node.clone());
                }
                keep
            });
            for (node, history) in nodes.iter() {
                let mine = owners.get(node).cloned().unwrap_or_default();
                let rules = mine
                    .iter()
                    .find_map(|o| operators.get(o))
                    .map_or(defaults, |s| &s.rules);
                watched.insert(node.clone(), (history.first_at.unwrap_or(now), rules.clone()));
                for c in rules::evaluate(rules, history, now) {
                    want.insert((node.clone(), c.rule.to_string(), c.subject), (c.summary, mine.clone()));
                }
            }
        }
        let firing = self.db.firing_alerts(READ_LIMIT).await?;
        let mut fired: BTreeSet<(String, String, String)> = BTreeSet::new();
        for alert in firing {
            let key = (alert.node.clone(), alert.rule.clone(), alert.subject.clone());
            if want.contains_key(&key) {
                fired.insert(key);
                continue;
            }
            // A node this replica has not seen since it started (it restarted, or another
            // replica raised the alert) is not judged until it is seen, or forgotten; nor a rule
            // whose window its history does not cover yet.
            let judged = match watched.get(&alert.node) {
                Some((first, rules)) => now - first >= rules.window_ms(&alert.rule),
                None => forgotten.contains(&alert.node) || now - alert.started_at >= FORGET_AFTER_MS,
            };
            if !judged {
                continue;
            }
            if self.db.resolve_alert(&alert.id, now).await? {
                let resolved = Alert {
                    status: "resolved".into(),
                    resolved_at: Some(now),
                    ..alert
                };
                tracing::info!(node = %resolved.node, rule = %resolved.rule, "alert resolved");
                self.send(&resolved, &operators);
            }
        }
        for ((node, rule, subject), (summary, mine)) in want {
            if fired.contains(&(node.clone(), rule.clone(), subject.clone())) {
                continue;
            }
            let silenced = mine
                .iter()
                .filter_map(|o| operators.get(o))
                .any(|s| s.silences(&rule, &node, now));
            let alert = Alert {
                id: uuid::Uuid::new_v4().to_string(),
                node,
                rule,
                subject,
                operators: mine.join(" "),
                summary,
                status: "firing".into(),
                silenced,
                started_at: now,
                resolved_at: None,
                acked_at: None,
                acked_by: None,
            };
            if self.db.fire_alert(&alert).await? {
                tracing::warn!(node = %alert.node, rule = %alert.rule, summary = %alert.summary, silenced, "alert firing");
                self.send(&alert, &operators);
            }
        }
        Ok(())
    }

    /// Queues `alert` to every webhook it goes to: the router's, and its node's operators'; and
    /// as a direct message to those operators who did not turn them off (nothing when
    /// silenced).
    fn send(&self, alert: &Alert, operators: &HashMap<String, OperatorSettings>) {
        if alert.silenced {
            return;
        }
        let event = Arc::new(event(alert));
        if !self.settings.relays.is_empty() {
            let to: Vec<_> = alert
                .operators
                .split_whitespace()
                .filter(|o| operators.get(*o).is_none_or(|s| s.direct_messages != Some(false)))
                .filter_map(|o| infernet_identity::parse_public_key(o).ok())
                .take(nostr::MAX_RECIPIENTS)
                .collect();
            if !to.is_empty() {
                self.outbox.push(Target::Nostr(to), event.clone());
            }
        }
        let mut targets: Vec<Webhook> = self.settings.webhooks.clone();
        for operator in alert.operators.split_whitespace() {
            if let Some(settings) = operators.get(operator) {
                targets.extend(
                    settings
                        .webhooks
                        .iter()
                        .filter_map(|w| Webhook::parse(w, self.settings.allow_private).ok()),
                );
            }
        }
        for target in targets {
            self.outbox.push(Target::Webhook(target), event.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_nodes_info_gives_the_figures_the_rules_read() {
        let info = json!({
            "jobs": {"offchain": {"success": 5, "failure": 1}, "onchain": {"success": 2, "failure": 0}},
            "container_states": {"a": {"state": "running"}, "b": {"state": "failed", "detail": "exit 1"}},
            "container_restarts": {"b": 4},
            "container_calls": {"a": {"success": 1, "failure": 0, "latency": {"le": [0.5, null], "counts": [1, 1]}}},
            "chain": {"state": {"head_block": 120, "synced_block": 100,
                "transactions": {"failed": 1, "reverted": 2},
                "balances": {"node": {"eth": 0.5}, "payment": null}}},
            "system": {"memory_total_bytes": 200, "memory_used_bytes": 150,
                "disk_total_bytes": 1000, "disk_available_bytes": 100,
                "gpus": [{"name": "A100", "temperature_celsius": 70}]},
        });
        let s = sample_of(&info, 7);
        assert_eq!(s.jobs, (7, 1));
        assert_eq!(s.down, ["b"]);
        assert_eq!(s.restarts["b"], 4);
        assert_eq!(s.calls["a"].le, [Some(0.5), None]);
        assert_eq!(s.chain, Some((120, 100, 3)));
        assert_eq!(s.balances, Some((0.5, None)));
        assert_eq!(s.memory_percent, Some(75.0));
        assert_eq!(s.disk_percent, Some(90.0));
        assert_eq!(s.gpus, [(0, "A100".to_string(), 70.0)]);
        // Ritual's node says none of this: nothing to judge, nothing wrong.
        let bare = sample_of(&json!({"containers": [], "pending": {}}), 1);
        assert_eq!(
            bare,
            Sample {
                at: 1,
                ..Sample::default()
            }
        );
    }
}

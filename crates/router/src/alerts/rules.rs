//! The alert rules: what a node's recent samples must show for each rule to fire. Pure: a node's
//! [`History`] and the time in, the conditions that hold out ([`evaluate`]); the engine
//! ([`super::Alerts`]) turns their changes into alerts.
//!
//! Counters (jobs, container calls, restarts, failed transactions) are compared across the
//! rule's window: the newest sample against the oldest one still inside it. A counter that went
//! down (the node restarted) counts from zero, as Prometheus' `increase` does.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Rule names, as alerts, settings and silences name them.
pub const RULES: [&str; 11] = [
    "offline",
    "success_rate",
    "latency",
    "container_down",
    "container_restarting",
    "chain_behind",
    "transactions_failing",
    "balance_low",
    "disk",
    "memory",
    "gpu_temperature",
];

/// Samples kept per node at most (a sample per probe: an hour at the default 30 s rounds).
pub const MAX_SAMPLES: usize = 128;

/// The thresholds of every rule. Each rule can be turned off (`enabled: false`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// No successful probe, heartbeat or link message for `after_s` (three missed 30 s beats).
    pub offline: Offline,
    /// Jobs succeeding below `threshold` over `window_s`, once at least `min_jobs` ran.
    pub success_rate: SuccessRate,
    /// A container's p99 call latency above `p99_s` over `window_s` (at least `min_calls`).
    pub latency: Latency,
    /// A container not serving for `after_s`.
    pub container_down: ContainerDown,
    /// A container restarted more than `restarts` times in `window_s`.
    pub container_restarting: Restarting,
    /// The chain side more than `blocks` behind the head.
    pub chain_behind: ChainBehind,
    /// At least `failures` transactions failed or reverted in `window_s`.
    pub transactions_failing: TxFailing,
    /// The node's account under `node_eth`, or its payment wallet under `payment_eth` (off
    /// unless set).
    pub balance_low: BalanceLow,
    /// Disk fuller than `percent`.
    pub disk: Disk,
    /// Memory fuller than `percent`.
    pub memory: Memory,
    /// A GPU hotter than `celsius`.
    pub gpu_temperature: GpuTemperature,
}

/// A rule's settings: `enabled` and its thresholds, each defaulting to the value given (a
/// document may set only the fields it changes).
macro_rules! rule_struct {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident: $ty:ty = $default:expr),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            /// The rule is evaluated.
            pub enabled: bool,
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { enabled: true, $($field: $default,)* }
            }
        }
    };
}

rule_struct!(
    /// `offline`.
    Offline {
        /// Seconds without a sign of life.
        after_s: f64 = 90.0,
    }
);
rule_struct!(
    /// `success_rate`.
    SuccessRate {
        /// Share of jobs that must succeed (0 to 1).
        threshold: f64 = 0.9,
        /// Window in seconds.
        window_s: f64 = 900.0,
        /// Jobs in the window before the rule judges.
        min_jobs: u64 = 20,
    }
);
rule_struct!(
    /// `latency`.
    Latency {
        /// Seconds.
        p99_s: f64 = 30.0,
        /// Window in seconds.
        window_s: f64 = 900.0,
        /// Calls in the window before the rule judges.
        min_calls: u64 = 20,
    }
);
rule_struct!(
    /// `container_down`.
    ContainerDown {
        /// Seconds not serving.
        after_s: f64 = 120.0,
    }
);
rule_struct!(
    /// `container_restarting`.
    Restarting {
        /// Restarts allowed in the window.
        restarts: u64 = 3,
        /// Window in seconds.
        window_s: f64 = 900.0,
    }
);
rule_struct!(
    /// `chain_behind`.
    ChainBehind {
        /// Blocks behind the head allowed.
        blocks: u64 = 20,
    }
);
rule_struct!(
    /// `transactions_failing`.
    TxFailing {
        /// Failed or reverted transactions that fire.
        failures: u64 = 3,
        /// Window in seconds.
        window_s: f64 = 900.0,
    }
);
rule_struct!(
    /// `balance_low`.
    BalanceLow {
        /// Ether under which the node's account fires.
        node_eth: f64 = 0.01,
        /// Ether under which the payment wallet fires (`null`: never).
        payment_eth: Option<f64> = None,
    }
);
rule_struct!(
    /// `disk`.
    Disk {
        /// Percent used that fires.
        percent: f64 = 90.0,
    }
);
rule_struct!(
    /// `memory`.
    Memory {
        /// Percent used that fires.
        percent: f64 = 95.0,
    }
);
rule_struct!(
    /// `gpu_temperature`.
    GpuTemperature {
        /// Degrees Celsius that fire.
        celsius: f64 = 85.0,
    }
);

/// A setting that is out of range: its path and what it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `success_rate.threshold`.
    pub path: String,
    /// What it must be.
    pub message: String,
}

impl Rules {
    /// Every out-of-range setting, named.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut check = |path: &str, ok: bool, message: &str| {
            if !ok {
                out.push(Problem {
                    path: path.into(),
                    message: message.into(),
                });
            }
        };
        let seconds = |s: f64| s.is_finite() && s > 0.0 && s <= 30.0 * 86_400.0;
        const SECONDS: &str = "must be a number of seconds above 0, at most 30 days";
        check("offline.after_s", seconds(self.offline.after_s), SECONDS);
        check(
            "success_rate.threshold",
            (0.0..=1.0).contains(&self.success_rate.threshold),
            "must be a share from 0 to 1",
        );
        check("success_rate.window_s", seconds(self.success_rate.window_s), SECONDS);
        check("latency.p99_s", seconds(self.latency.p99_s), SECONDS);
        check("latency.window_s", seconds(self.latency.window_s), SECONDS);
        check("container_down.after_s", seconds(self.container_down.after_s), SECONDS);
        check(
            "container_restarting.window_s",
            seconds(self.container_restarting.window_s),
            SECONDS,
        );
        check(
            "transactions_failing.failures",
            self.transactions_failing.failures >= 1,
            "must be at least 1",
        );
        check(
            "transactions_failing.window_s",
            seconds(self.transactions_failing.window_s),
            SECONDS,
        );
        let eth = |e: f64| e.is_finite() && e >= 0.0;
        check(
            "balance_low.node_eth",
            eth(self.balance_low.node_eth),
            "must be 0 or more ether",
        );
        check(
            "balance_low.payment_eth",
            self.balance_low.payment_eth.is_none_or(eth),
            "must be 0 or more ether, or null",
        );
        let percent = |p: f64| p > 0.0 && p <= 100.0;
        check(
            "disk.percent",
            percent(self.disk.percent),
            "must be above 0, at most 100",
        );
        check(
            "memory.percent",
            percent(self.memory.percent),
            "must be above 0, at most 100",
        );
        check(
            "gpu_temperature.celsius",
            self.gpu_temperature.celsius.is_finite() && self.gpu_temperature.celsius > 0.0,
            "must be above 0 °C",
        );
        out
    }

    /// How far back `rule` looks, in ms (0 for rules that read the latest figures).
    pub fn window_ms(&self, rule: &str) -> i64 {
        let s = match rule {
            "success_rate" => self.success_rate.window_s,
            "latency" => self.latency.window_s,
            "container_restarting" => self.container_restarting.window_s,
            "transactions_failing" => self.transactions_failing.window_s,
            "container_down" => self.container_down.after_s,
            _ => 0.0,
        };
        (s * 1e3) as i64
    }

    /// The longest window a rule looks back over, in ms (what a node's history must cover).
    pub fn longest_window_ms(&self) -> i64 {
        let longest = [
            self.success_rate.window_s,
            self.latency.window_s,
            self.container_restarting.window_s,
            self.transactions_failing.window_s,
        ]
        .into_iter()
        .fold(0.0, f64::max);
        (longest * 1e3) as i64
    }
}

/// A container's calls: successes, failures and the latency histogram (cumulative counts per
/// upper bound, `None` for `+Inf`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Calls {
    /// Upper bounds in seconds; the last one `None` (`+Inf`).
    pub le: Vec<Option<f64>>,
    /// Cumulative counts, one per bound.
    pub counts: Vec<u64>,
}

/// What one look at a node showed (its `/info`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// When (Unix ms).
    pub at: i64,
    /// Jobs finished (all sources): succeeded, failed.
    pub jobs: (u64, u64),
    /// Calls per container.
    pub calls: BTreeMap<String, Calls>,
    /// Containers not serving.
    pub down: Vec<String>,
    /// Restarts per container.
    pub restarts: BTreeMap<String, u64>,
    /// Chain side: head, synced block, transactions failed or reverted.
    pub chain: Option<(u64, u64, u64)>,
    /// Balances in ether: the node's account, the payment wallet.
    pub balances: Option<(f64, Option<f64>)>,
    /// Disk and memory used, percent.
    pub disk_percent: Option<f64>,
    /// Memory used, percent.
    pub memory_percent: Option<f64>,
    /// GPUs: index, model, °C.
    pub gpus: Vec<(usize, String, f64)>,
}

/// What the router knows of one node lately.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Last sign of life (successful probe, heartbeat, link message), Unix ms.
    pub last_seen: Option<i64>,
    /// Samples, oldest first, at most [`MAX_SAMPLES`].
    pub samples: VecDeque<Sample>,
    /// Since when each container has been down (Unix ms).
    pub down_since: BTreeMap<String, i64>,
    /// The first sample's time: a rule is judged resolved only once the history covers its
    /// window (a restarted router does not resolve, then fire again, what it has not seen yet).
    pub first_at: Option<i64>,
}

impl History {
    /// A sign of life at `now`.
    pub fn seen(&mut self, now: i64) {
        self.last_seen = Some(self.last_seen.map_or(now, |t| t.max(now)));
    }

    /// A sample; samples older than `keep_ms` before it (beyond the one that starts the window)
    /// are dropped.
    pub fn push(&mut self, sample: Sample, keep_ms: i64) {
        self.seen(sample.at);
        self.first_at.get_or_insert(sample.at);
        self.down_since.retain(|c, _| sample.down.contains(c));
        for c in &sample.down {
            self.down_since.entry(c.clone()).or_insert(sample.at);
        }
        let cutoff = sample.at - keep_ms;
        self.samples.push_back(sample);
        while self.samples.len() > MAX_SAMPLES || (self.samples.len() > 1 && self.samples[1].at <= cutoff) {
            self.samples.pop_front();
        }
    }

    /// The newest sample, and the oldest one at most `window_ms` older (itself, when it is the
    /// only one).
    fn window(&self, now: i64, window_ms: i64) -> Option<(&Sample, &Sample)> {
        let newest = self.samples.back()?;
        let start = now - window_ms;
        let oldest = self.samples.iter().find(|s| s.at >= start).unwrap_or(newest);
        Some((oldest, newest))
    }
}

/// A condition that holds: the rule, what it is about on the node (a container, a wallet, a
/// GPU; empty for the node itself) and a sentence for people.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// One of [`RULES`].
    pub rule: &'static str,
    /// What on the node: `""`, a container id, `node` / `payment`, a GPU index.
    pub subject: String,
    /// What is wrong, with the figures.
    pub summary: String,
}

fn increase(then: u64, now: u64) -> u64 {
    if now >= then { now - then } else { now }
}

/// The p99 of the calls between two histograms: the upper bound of the bucket holding the 99th
/// percentile (`None`: beyond the largest bound), and the calls counted.
fn p99(then: Option<&Calls>, now: &Calls) -> (Option<f64>, u64) {
    let reset = then.is_some_and(|t| t.counts.len() != now.counts.len() || t.counts.last() > now.counts.last());
    let delta: Vec<u64> = now
        .counts
        .iter()
        .enumerate()
        .map(|(i, n)| match then {
            Some(t) if !reset => n.saturating_sub(t.counts.get(i).copied().unwrap_or(0)),
            _ => *n,
        })
        .collect();
    let total = delta.last().copied().unwrap_or(0);
    let rank = (total as f64 * 0.99).ceil() as u64;
    let bound = delta
        .iter()
        .position(|c| *c >= rank.max(1))
        .and_then(|i| now.le.get(i).copied().flatten());
    (bound, total)
}

/// The conditions that hold for a node at `now`. An offline node has only `offline`: its other
/// figures are stale, and one outage is one alert.
pub fn evaluate(rules: &Rules, history: &History, now: i64) -> Vec<Condition> {
    let mut out = Vec::new();
    let ms = |s: f64| (s * 1e3) as i64;
    if rules.offline.enabled
        && let Some(seen) = history.last_seen
        && now - seen > ms(rules.offline.after_s)
    {
        out.push(Condition {
            rule: "offline",
            subject: String::new(),
            summary: format!(
                "no probe answered, heartbeat or link message for {} s",
                (now - seen) / 1000
            ),
        });
        return out;
    }
    let Some(latest) = history.samples.back() else {
        return out;
    };
    if rules.success_rate.enabled
        && let Some((then, now_s)) = history.window(now, ms(rules.success_rate.window_s))
    {
        let ok = increase(then.jobs.0, now_s.jobs.0);
        let failed = increase(then.jobs.1, now_s.jobs.1);
        let total = ok + failed;
        if total >= rules.success_rate.min_jobs.max(1) && (ok as f64) < rules.success_rate.threshold * total as f64 {
            out.push(Condition {
                rule: "success_rate",
                subject: String::new(),
                summary: format!(
                    "{ok} of {total} jobs succeeded ({:.0} %) over {} min, below {:.0} %",
                    100.0 * ok as f64 / total as f64,
                    (now_s.at - then.at).max(0) / 60_000,
                    rules.success_rate.threshold * 100.0
                ),
            });
        }
    }
    if rules.latency.enabled
        && let Some((then, now_s)) = history.window(now, ms(rules.latency.window_s))
    {
        for (container, calls) in &now_s.calls {
            let before = (then.at != now_s.at).then(|| then.calls.get(container)).flatten();
            let (bound, total) = p99(before, calls);
            if total < rules.latency.min_calls.max(1) {
                continue;
            }
            let above = bound.is_none_or(|b| b > rules.latency.p99_s);
            if above {
                let shown = bound.map_or_else(
                    || format!("above {} s", calls.le.iter().flatten().fold(0.0, |a: f64, b| a.max(*b))),
                    |b| format!("up to {b} s"),
                );
                out.push(Condition {
                    rule: "latency",
                    subject: container.clone(),
                    summary: format!(
                        "p99 of {total} calls to {container} is {shown}, above {} s",
                        rules.latency.p99_s
                    ),
                });
            }
        }
    }
    if rules.container_down.enabled {
        for (container, since) in &history.down_since {
            if now - since >= ms(rules.container_down.after_s) {
                out.push(Condition {
                    rule: "container_down",
                    subject: container.clone(),
                    summary: format!("container {container} has not served for {} s", (now - since) / 1000),
                });
            }
        }
    }
    if rules.container_restarting.enabled
        && let Some((then, now_s)) = history.window(now, ms(rules.container_restarting.window_s))
    {
        for (container, n) in &now_s.restarts {
            let before = if then.at == now_s.at {
                0
            } else {
                then.restarts.get(container).copied().unwrap_or(0)
            };
            let restarts = increase(before, *n);
            if restarts > rules.container_restarting.restarts {
                out.push(Condition {
                    rule: "container_restarting",
                    subject: container.clone(),
                    summary: format!(
                        "container {container} restarted {restarts} times in {} min",
                        (rules.container_restarting.window_s / 60.0).round()
                    ),
                });
            }
        }
    }
    if let Some((head, synced, _)) = latest.chain
        && rules.chain_behind.enabled
        && head.saturating_sub(synced) > rules.chain_behind.blocks
    {
        out.push(Condition {
            rule: "chain_behind",
            subject: String::new(),
            summary: format!("synced to block {synced}, {} behind the head {head}", head - synced),
        });
    }
    if rules.transactions_failing.enabled
        && let Some((then, now_s)) = history.window(now, ms(rules.transactions_failing.window_s))
        && let Some((_, _, bad)) = now_s.chain
    {
        let before = match then.chain {
            Some((_, _, b)) if then.at != now_s.at => b,
            _ => 0,
        };
        let failed = increase(before, bad);
        if failed >= rules.transactions_failing.failures {
            out.push(Condition {
                rule: "transactions_failing",
                subject: String::new(),
                summary: format!(
                    "{failed} transactions failed or reverted in {} min",
                    (rules.transactions_failing.window_s / 60.0).round()
                ),
            });
        }
    }
    if rules.balance_low.enabled
        && let Some((node, payment)) = latest.balances
    {
        let wallets = [
            ("node", Some(node), Some(rules.balance_low.node_eth)),
            ("payment", payment, rules.balance_low.payment_eth),
        ];
        for (wallet, balance, threshold) in wallets {
            if let (Some(balance), Some(threshold)) = (balance, threshold)
                && balance < threshold
            {
                out.push(Condition {
                    rule: "balance_low",
                    subject: wallet.into(),
                    summary: format!("the {wallet} wallet holds {balance} ETH, below {threshold} ETH"),
                });
            }
        }
    }
    for (rule, figure, enabled, percent) in [
        ("disk", latest.disk_percent, rules.disk.enabled, rules.disk.percent),
        (
            "memory",
            latest.memory_percent,
            rules.memory.enabled,
            rules.memory.percent,
        ),
    ] {
        if enabled
            && let Some(used) = figure
            && used > percent
        {
            out.push(Condition {
                rule,
                subject: String::new(),
                summary: format!("{rule} {used:.1} % used, above {percent} %"),
            });
        }
    }
    if rules.gpu_temperature.enabled {
        for (index, model, celsius) in &latest.gpus {
            if *celsius > rules.gpu_temperature.celsius {
                out.push(Condition {
                    rule: "gpu_temperature",
                    subject: index.to_string(),
                    summary: format!(
                        "GPU {index} ({model}) at {celsius} °C, above {} °C",
                        rules.gpu_temperature.celsius
                    ),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn sample(at: i64) -> Sample {
        Sample {
            at,
            ..Sample::default()
        }
    }

    fn rules_named(conditions: &[Condition]) -> Vec<(&'static str, &str)> {
        conditions.iter().map(|c| (c.rule, c.subject.as_str())).collect()
    }

    #[test]
    fn an_offline_node_has_one_condition_and_its_stale_figures_are_held_back() {
        let rules = Rules::default();
        let mut h = History::default();
        let mut s = sample(0);
        s.disk_percent = Some(99.0);
        h.push(s, rules.longest_window_ms());
        assert_eq!(rules_named(&evaluate(&rules, &h, 1_000)), [("disk", "")]);
        assert_eq!(
            rules_named(&evaluate(&rules, &h, 90_000)),
            [("disk", "")],
            "90 s is not yet offline"
        );
        assert_eq!(rules_named(&evaluate(&rules, &h, 90_001)), [("offline", "")]);
        h.seen(100_000);
        assert_eq!(rules_named(&evaluate(&rules, &h, 100_000)), [("disk", "")]);
    }

    #[test]
    fn success_rate_needs_enough_jobs_and_counts_only_the_window() {
        let rules = Rules::default();
        let mut h = History::default();
        let keep = rules.longest_window_ms();
        // 100 failures long ago, then 30 jobs of which 6 failed in the last 15 min.
        let mut old = sample(0);
        old.jobs = (0, 100);
        h.push(old, keep);
        let mut start = sample(20 * MIN);
        start.jobs = (0, 100);
        h.push(start, keep);
        let mut now = sample(34 * MIN);
        now.jobs = (24, 106);
        h.push(now, keep);
        let fired = evaluate(&rules, &h, 34 * MIN);
        assert_eq!(rules_named(&fired), [("success_rate", "")]);
        assert!(
            fired[0].summary.starts_with("24 of 30 jobs succeeded (80 %)"),
            "{}",
            fired[0].summary
        );
        // 10 failures only: too few to judge.
        let mut h = History::default();
        h.push(sample(0), keep);
        let mut s = sample(MIN);
        s.jobs = (0, 10);
        h.push(s, keep);
        assert!(evaluate(&rules, &h, MIN).is_empty());
    }

    #[test]
    fn a_restarted_node_counts_its_counters_from_zero() {
        let rules = Rules::default();
        let mut h = History::default();
        let mut before = sample(0);
        before.jobs = (1000, 0);
        h.push(before, rules.longest_window_ms());
        let mut after = sample(MIN);
        after.jobs = (5, 20);
        h.push(after, rules.longest_window_ms());
        assert_eq!(rules_named(&evaluate(&rules, &h, MIN)), [("success_rate", "")]);
    }

    #[test]
    fn latency_is_the_p99_of_the_calls_in_the_window() {
        let rules = Rules::default();
        let le = vec![Some(1.0), Some(30.0), Some(180.0), None];
        let mut h = History::default();
        let mut s = sample(0);
        s.calls.insert(
            "llm".into(),
            Calls {
                le: le.clone(),
                counts: vec![1000, 1000, 1000, 1000],
            },
        );
        h.push(s, rules.longest_window_ms());
        // 100 calls since: 97 fast, 3 slow (60 s): p99 in the 180 s bucket.
        let mut s = sample(5 * MIN);
        s.calls.insert(
            "llm".into(),
            Calls {
                le,
                counts: vec![1097, 1097, 1100, 1100],
            },
        );
        h.push(s, rules.longest_window_ms());
        let fired = evaluate(&rules, &h, 5 * MIN);
        assert_eq!(rules_named(&fired), [("latency", "llm")]);
        assert!(fired[0].summary.contains("up to 180 s"), "{}", fired[0].summary);
        // With the 1000 old fast calls counted it would not fire: the window matters.
        let mut relaxed = rules.clone();
        relaxed.latency.p99_s = 200.0;
        assert!(evaluate(&relaxed, &h, 5 * MIN).is_empty());
    }

    #[test]
    fn a_container_down_fires_after_its_grace_and_restarts_over_the_window() {
        let rules = Rules::default();
        let keep = rules.longest_window_ms();
        let mut h = History::default();
        let mut s = sample(0);
        s.down = vec!["llm".into()];
        s.restarts.insert("llm".into(), 1);
        h.push(s.clone(), keep);
        s.at = 2 * MIN;
        s.restarts.insert("llm".into(), 5);
        h.push(s.clone(), keep);
        assert_eq!(
            rules_named(&evaluate(&rules, &h, 2 * MIN)),
            [("container_down", "llm"), ("container_restarting", "llm")]
        );
        s.at = 3 * MIN;
        s.down.clear();
        h.push(s, keep);
        assert_eq!(
            rules_named(&evaluate(&rules, &h, 3 * MIN)),
            [("container_restarting", "llm")]
        );
    }

    #[test]
    fn chain_balances_host_and_gpus_compare_the_latest_figures() {
        let mut rules = Rules::default();
        rules.balance_low.payment_eth = Some(1.0);
        let mut s = sample(0);
        s.chain = Some((130, 100, 0));
        s.balances = Some((0.005, Some(2.0)));
        s.memory_percent = Some(96.0);
        s.gpus = vec![(0, "A100".into(), 91.0), (1, "A100".into(), 60.0)];
        let mut h = History::default();
        h.push(s, rules.longest_window_ms());
        assert_eq!(
            rules_named(&evaluate(&rules, &h, 0)),
            [
                ("chain_behind", ""),
                ("balance_low", "node"),
                ("memory", ""),
                ("gpu_temperature", "0")
            ]
        );
        rules.chain_behind.enabled = false;
        rules.balance_low.node_eth = 0.001;
        rules.memory.percent = 97.0;
        rules.gpu_temperature.celsius = 95.0;
        assert!(evaluate(&rules, &h, 0).is_empty());
    }

    #[test]
    fn out_of_range_settings_are_named() {
        let mut rules = Rules::default();
        assert!(rules.problems().is_empty());
        rules.success_rate.threshold = 1.5;
        rules.offline.after_s = 0.0;
        rules.balance_low.payment_eth = Some(-1.0);
        let paths: Vec<String> = rules.problems().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            ["offline.after_s", "success_rate.threshold", "balance_low.payment_eth"]
        );
    }

    #[test]
    fn history_keeps_the_window_and_a_bounded_count() {
        let mut h = History::default();
        for i in 0..1000 {
            h.push(sample(i * 1000), 60_000);
        }
        assert!(h.samples.len() <= 62, "{}", h.samples.len());
        assert!(h.samples.front().unwrap().at <= 999_000 - 60_000);
        let mut h = History::default();
        for i in 0..1000 {
            h.push(sample(i), 10_000_000);
        }
        assert_eq!(h.samples.len(), MAX_SAMPLES);
    }
}

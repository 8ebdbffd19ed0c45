//! The chooser: which node runs a job. Pure: it sees the nodes as the registry and the records
//! describe them and answers an order to try them in, with the reason every other node was left
//! out; the gateway does the I/O.
//!
//! 1. **Filters**, in this order, each excluding with a reason:
//!    - `containers`: the node serves every container of the job for outside clients (`external`);
//!    - `health`: the prober reaches it (the registry's hysteresis);
//!    - `hardware`: its host has what `requirements` ask (GPU count, memory and model, CPUs,
//!      memory); a node that does not advertise its hardware fails any requirement;
//!    - `price`: its price for the job, the sum over the job's containers of the per-job price
//!      plus the per-second price × `max_seconds`, is at most `max_price`; a container without a
//!      price is free; a price in another unit than the router's, or not a finite number ≥ 0,
//!      excludes the node;
//!    - `hours`: its provider's schedule (or a pause or drain) lets it take jobs now.
//! 2. **Score** of each node left, from the record the router measured itself:
//!    `score = success² × uptime × speed × load` where
//!    - `success = (ok + PRIOR_SUCCESS × PRIOR_JOBS) / (ok + failed + PRIOR_JOBS)`: a new node
//!      counts as [`PRIOR_JOBS`] jobs at [`PRIOR_SUCCESS`], so it is neither favoured nor shut
//!      out, and its own jobs soon outweigh the prior;
//!    - `uptime`: the share of its recent probes it answered (a moving average over about the last
//!      20, [`crate::registry::UPTIME_WEIGHT`]); 1 for a node just listed;
//!    - `speed = clamp(sqrt(median peer latency / own mean latency), 1/2, 3/2)`, among the nodes
//!      that qualify for this job; 1 for a node without a measured latency;
//!    - `load = 1 / (1 + pending / LOAD_HALF)`: at [`LOAD_HALF`] pending jobs a node's score halves.
//! 3. **Pick**: one of the best [`TOP_FEW`] at random, in proportion to their scores, then the
//!    rest best first, so clients are not herded onto one node while poor nodes stay last.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::registry::NodeReport;

/// The success rate a node without jobs is assumed to have.
pub const PRIOR_SUCCESS: f64 = 0.9;
/// How many jobs the prior counts as.
pub const PRIOR_JOBS: f64 = 4.0;
/// Pending jobs at which a node's score halves.
pub const LOAD_HALF: f64 = 4.0;
/// How many of the best nodes the pick chooses among.
pub const TOP_FEW: usize = 3;

/// What a job needs of a node's host (`requirements` of a job).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    /// GPUs at least.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// Memory of each of those GPUs at least, GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_gb: Option<f64>,
    /// A GPU model, matched as a case-insensitive substring (`A100`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<String>,
    /// Logical CPUs at least.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory at least, GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gb: Option<f64>,
}

impl Requirements {
    /// Whether it asks for anything.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Why `hardware` falls short, if it does.
    fn unmet(&self, hardware: Option<&infernet_types::Hardware>) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let Some(hw) = hardware else {
            return Some("does not advertise its hardware".into());
        };
        const MB_PER_GB: f64 = 1024.0;
        if let Some(cpus) = self.cpus
            && hw.cpus < cpus
        {
            return Some(format!("has {} CPUs, {cpus} asked", hw.cpus));
        }
        if let Some(gb) = self.memory_gb
            && (hw.memory_mb as f64) < gb * MB_PER_GB
        {
            return Some(format!(
                "has {:.1} GB of memory, {gb} asked",
                hw.memory_mb as f64 / MB_PER_GB
            ));
        }
        let fitting = hw
            .gpus
            .iter()
            .filter(|g| {
                self.gpu_memory_gb.is_none_or(|gb| g.memory_mb as f64 >= gb * MB_PER_GB)
                    && self
                        .gpu_model
                        .as_ref()
                        .is_none_or(|m| g.model.to_lowercase().contains(&m.to_lowercase()))
            })
            .count();
        let wanted = self
            .gpus
            .unwrap_or(u32::from(self.gpu_memory_gb.is_some() || self.gpu_model.is_some()));
        if (fitting as u64) < u64::from(wanted) {
            return Some(format!(
                "has {fitting} GPU(s) fitting {}, {wanted} asked",
                self.describe_gpu()
            ));
        }
        None
    }

    fn describe_gpu(&self) -> String {
        match (&self.gpu_model, self.gpu_memory_gb) {
            (Some(m), Some(gb)) => format!("model {m} with {gb} GB"),
            (Some(m), None) => format!("model {m}"),
            (None, Some(gb)) => format!("{gb} GB of GPU memory"),
            (None, None) => "the job".into(),
        }
    }
}

/// What a job asks, as the chooser needs it.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// Its containers, in order.
    pub containers: &'a [String],
    /// What it needs of the host.
    pub requirements: &'a Requirements,
    /// Most it may cost, in `unit`.
    pub max_price: Option<f64>,
    /// Compute seconds priced (`max_seconds`, default 60).
    pub max_seconds: f64,
    /// The router's price unit.
    pub unit: &'a str,
}

/// A node's record, as the router measured it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Record {
    /// Jobs it ran to a result.
    pub jobs_ok: u64,
    /// Jobs it failed (refusals do not count).
    pub jobs_failed: u64,
    /// Mean latency of its results, ms.
    pub latency_ms: Option<f64>,
}

impl Record {
    /// The success rate with the prior.
    pub fn success(&self) -> f64 {
        (self.jobs_ok as f64 + PRIOR_SUCCESS * PRIOR_JOBS) / ((self.jobs_ok + self.jobs_failed) as f64 + PRIOR_JOBS)
    }
}

/// A node the chooser may pick.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Its name (`host:port`).
    pub node: &'a str,
    /// The prober reaches it.
    pub healthy: bool,
    /// Why not, when it is not.
    pub last_error: Option<&'a str>,
    /// Share of its recent probes it answered.
    pub uptime: f64,
    /// What it last reported.
    pub report: &'a NodeReport,
    /// Its record.
    pub record: Record,
    /// Its terms for the job's containers when the caller read them already ([`Terms::of`]
    /// the job's containers, unit and this report); `None`: read from `report`.
    pub terms: Option<Terms>,
}

/// What a node offers for one container set, as the filters read it: whether it serves every
/// container (for outside clients), and its price's parts in the router's unit, summed over the
/// containers (`None`: it cannot be priced). Reading them from a report is most of a decision
/// among thousands of nodes (its containers and prices lie scattered on the heap), so the
/// gateway keeps them per snapshot and container set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Terms {
    /// It serves every container.
    pub serves: bool,
    /// Per job and per second.
    pub price: Option<(f64, f64)>,
}

impl Terms {
    /// `report`'s terms for `containers`, priced in `unit`.
    pub fn of(containers: &[String], unit: &str, report: &NodeReport) -> Self {
        let serves = containers
            .iter()
            .all(|id| report.containers.iter().any(|c| c.external && &c.id == id));
        let mut price = Some((0.0, 0.0));
        for p in containers.iter().filter_map(|c| report.offer.pricing.get(c)) {
            let valid = |x: Option<f64>| x.is_none_or(|x| x.is_finite() && x >= 0.0);
            price = match price {
                Some((job, second)) if p.unit == unit && valid(p.per_job) && valid(p.per_second) => {
                    Some((job + p.per_job.unwrap_or(0.0), second + p.per_second.unwrap_or(0.0)))
                }
                _ => None,
            };
        }
        Self { serves, price }
    }

    /// The job's price: per job plus per second × `max_seconds`.
    fn of_job(&self, max_seconds: f64) -> Option<f64> {
        self.price.map(|(job, second)| job + second * max_seconds)
    }
}

/// The filter that left a node out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// It does not serve every container.
    Containers,
    /// The prober does not reach it.
    Health,
    /// Its host falls short of the requirements.
    Hardware,
    /// Too dear, or priced in another unit.
    Price,
    /// Outside its provider's hours, paused or draining.
    Hours,
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Containers => "containers",
            Self::Health => "health",
            Self::Hardware => "hardware",
            Self::Price => "price",
            Self::Hours => "hours",
        })
    }
}

/// A node left out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Excluded {
    /// Its name.
    pub node: String,
    /// By which filter.
    pub filter: Filter,
    /// Why, in words.
    pub reason: String,
}

/// A node that qualifies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    /// Its name.
    pub node: String,
    /// Its score (higher is better).
    pub score: f64,
    /// Its price for the job, in the router's unit.
    pub price: f64,
    /// Its success rate with the prior.
    pub success: f64,
    /// Share of its recent probes it answered.
    pub uptime: f64,
    /// Its pending jobs.
    pub pending: u64,
}

/// The chooser's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Choice {
    /// The qualifying nodes, best first.
    pub candidates: Vec<Ranked>,
    /// The others, with why (only when asked to explain; counted otherwise).
    pub excluded: Vec<Excluded>,
    /// How many each filter left out.
    #[serde(skip)]
    pub counts: [usize; 5],
    /// Nodes that serve the containers but a filter left out, and which (explained or not), by
    /// their position in the order the nodes were given: the node's public record counts them
    /// ("why am I not getting jobs").
    #[serde(skip)]
    pub left_out: Vec<(usize, Filter)>,
}

impl Choice {
    /// Nodes that serve the job's containers (qualifying or not).
    pub fn serving(&self) -> usize {
        self.candidates.len() + self.counts[1..].iter().sum::<usize>()
    }

    /// Why no node qualifies, for a 503: how many serve the containers, and what excluded them.
    pub fn why_none(&self, ask: &Ask<'_>) -> String {
        let containers = ask.containers.join(", ");
        let serving = self.serving();
        if serving == 0 {
            return format!("no available node serves {containers}");
        }
        let mut parts = Vec::new();
        for filter in [Filter::Health, Filter::Hardware, Filter::Price, Filter::Hours] {
            let n = self.counts[filter as usize];
            if n == 0 {
                continue;
            }
            let example = self
                .excluded
                .iter()
                .find(|e| e.filter == filter)
                .map(|e| format!(" ({}: {})", e.node, e.reason))
                .unwrap_or_default();
            parts.push(format!("{n} by {filter}{example}"));
        }
        let nodes = if serving == 1 { "node serves" } else { "nodes serve" };
        format!("{serving} {nodes} {containers}; none qualifies: {}", parts.join("; "))
    }
}

/// Why a node's price cannot be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum PriceError {
    /// Priced in another unit than the router's.
    #[error("prices {container} in {unit}; this router counts in {ours}")]
    OtherUnit {
        /// The container.
        container: String,
        /// The node's unit.
        unit: String,
        /// The router's.
        ours: String,
    },
    /// Not a finite number at least 0.
    #[error("advertises an invalid price for {0}")]
    Invalid(String),
}

/// Why the node cannot be priced for the job, if it cannot (its price otherwise: [`Terms`]).
fn price(ask: &Ask<'_>, report: &NodeReport) -> Result<(), PriceError> {
    for c in ask.containers {
        let Some(p) = report.offer.pricing.get(c) else { continue };
        if p.unit != ask.unit {
            return Err(PriceError::OtherUnit {
                container: c.clone(),
                unit: p.unit.clone(),
                ours: ask.unit.to_string(),
            });
        }
        let valid = |x: Option<f64>| x.is_none_or(|x| x.is_finite() && x >= 0.0);
        if !valid(p.per_job) || !valid(p.per_second) {
            return Err(PriceError::Invalid(c.clone()));
        }
    }
    Ok(())
}

/// A price as people read it: at most 9 decimals, no trailing zeros.
pub fn amount(x: f64) -> String {
    let text = format!("{x:.9}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() || text == "-" {
        "0".into()
    } else {
        text.to_string()
    }
}

/// Filters and scores `nodes` for `ask`; with `explain`, every excluded node is listed with its
/// reason (otherwise only counted: the gateway's path stays cheap with many nodes). Nodes of
/// equal score stay in the order given (the registry's is by name).
pub fn choose<'a>(ask: &Ask<'_>, nodes: impl IntoIterator<Item = Candidate<'a>>, explain: bool) -> Choice {
    let nodes = nodes.into_iter();
    // Sized once: growing them copied thousands of entries per decision.
    let expected = nodes.size_hint().0;
    // Left-out nodes are few: the gateway hands over the nodes that serve the containers.
    let mut choice = Choice::default();
    let mut latencies = Vec::with_capacity(expected);
    let mut passed: Vec<Passed<'a>> = Vec::with_capacity(expected);
    for (at, n) in nodes.enumerate() {
        match verdict(ask, &n) {
            Ok(price) => {
                if let Some(l) = n.record.latency_ms {
                    latencies.push(l);
                }
                passed.push(Passed {
                    node: n.node,
                    price,
                    record: n.record,
                    uptime: n.uptime,
                    pending: n.report.pending,
                });
            }
            Err(filter) => {
                choice.counts[filter as usize] += 1;
                if filter != Filter::Containers {
                    choice.left_out.push((at, filter));
                }
                if explain {
                    choice.excluded.push(Excluded {
                        node: n.node.to_string(),
                        filter,
                        reason: reason(ask, &n, filter),
                    });
                }
            }
        }
    }
    let median = if latencies.is_empty() {
        None
    } else {
        let mid = latencies.len() / 2;
        Some(*latencies.select_nth_unstable_by(mid, f64::total_cmp).1)
    };
    // Sorted by score and position before the names are copied: with thousands of nodes, the
    // copies and the name comparisons were most of a decision.
    // One integer per node, best score and then first position lowest: cheaper to compare than
    // a float and an index.
    let scores: Vec<f64> = passed.iter().map(|n| score(n, median)).collect();
    let mut order: Vec<u128> = scores
        .iter()
        .enumerate()
        .map(|(i, &s)| (u128::from(!ordered(s)) << 64) | i as u128)
        .collect();
    order.sort_unstable();
    choice.candidates = order
        .into_iter()
        .map(|key| {
            let i = key as u64 as usize;
            rank(&passed[i], scores[i])
        })
        .collect();
    choice
}

/// `x` as an integer in the order of [`f64::total_cmp`].
fn ordered(x: f64) -> u64 {
    let bits = x.to_bits();
    match bits >> 63 {
        1 => !bits,
        _ => bits | 1 << 63,
    }
}

/// What the score and the answer need of a node that qualifies (a [`Candidate`] is twice the
/// size: thousands of them are copied per decision).
struct Passed<'a> {
    node: &'a str,
    price: f64,
    record: Record,
    uptime: f64,
    pending: u64,
}

/// `n`'s terms for `ask`.
fn terms(ask: &Ask<'_>, n: &Candidate<'_>) -> Terms {
    n.terms.unwrap_or_else(|| Terms::of(ask.containers, ask.unit, n.report))
}

/// The job's price on `n`, or the first filter that excludes `n`.
fn verdict(ask: &Ask<'_>, n: &Candidate<'_>) -> Result<f64, Filter> {
    let terms = terms(ask, n);
    if !terms.serves {
        return Err(Filter::Containers);
    }
    if !n.healthy {
        return Err(Filter::Health);
    }
    if ask.requirements.unmet(n.report.offer.hardware.as_ref()).is_some() {
        return Err(Filter::Hardware);
    }
    let price = terms.of_job(ask.max_seconds).ok_or(Filter::Price)?;
    if ask.max_price.is_some_and(|max| price > max) {
        return Err(Filter::Price);
    }
    if !n.report.offer.open {
        return Err(Filter::Hours);
    }
    Ok(price)
}

/// Why `filter` excludes `n`, in words.
fn reason(ask: &Ask<'_>, n: &Candidate<'_>, filter: Filter) -> String {
    match filter {
        Filter::Containers => format!("does not serve all of {}", ask.containers.join(", ")),
        Filter::Health => format!("unreachable: {}", n.last_error.unwrap_or("not probed yet")),
        Filter::Hardware => ask
            .requirements
            .unmet(n.report.offer.hardware.as_ref())
            .unwrap_or_default(),
        Filter::Price => match price(ask, n.report).map(|_| terms(ask, n).of_job(ask.max_seconds)) {
            Err(why) => why.to_string(),
            Ok(price) => format!(
                "costs {} {}, more than max_price {}",
                amount(price.unwrap_or_default()),
                ask.unit,
                ask.max_price.unwrap_or_default()
            ),
        },
        Filter::Hours => match &n.report.offer.available_at {
            Some(at) => format!("takes no jobs now; available at {at}"),
            None => "takes no jobs now (paused, draining or outside its hours)".into(),
        },
    }
}

/// `n`'s score (see the module's formula), the peers' median latency being `median`.
fn score(n: &Passed<'_>, median: Option<f64>) -> f64 {
    let success = n.record.success();
    let speed = match (median, n.record.latency_ms) {
        (Some(m), Some(own)) if own > 0.0 => (m / own).sqrt().clamp(0.5, 1.5),
        _ => 1.0,
    };
    let load = 1.0 / (1.0 + n.pending as f64 / LOAD_HALF);
    success * success * n.uptime.clamp(0.0, 1.0) * speed * load
}

/// `n` ranked with its `score`.
fn rank(n: &Passed<'_>, score: f64) -> Ranked {
    Ranked {
        node: n.node.to_string(),
        score,
        price: n.price,
        success: n.record.success(),
        uptime: n.uptime,
        pending: n.pending,
    }
}

/// The order to try `ranked` (best first) in: one of the first [`TOP_FEW`] drawn in proportion
/// to its score, then the rest in order.
pub fn pick(ranked: &[Ranked], rng: &mut impl Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ranked.len()).collect();
    let few = ranked.len().min(TOP_FEW);
    let total: f64 = ranked[..few].iter().map(|r| r.score.max(0.0)).sum();
    if few > 1 && total > 0.0 {
        let mut x = rng.random_range(0.0..total);
        let mut first = few - 1;
        for (i, r) in ranked[..few].iter().enumerate() {
            if x < r.score.max(0.0) {
                first = i;
                break;
            }
            x -= r.score.max(0.0);
        }
        order[..=first].rotate_right(1);
    }
    order
}

/// Spreads `n` jobs over `ranked` in proportion to their scores (smooth weighted round robin):
/// the node of each job, as an index into `ranked`.
pub fn spread(ranked: &[Ranked], n: usize) -> Vec<usize> {
    if ranked.is_empty() {
        return Vec::new();
    }
    let weights: Vec<f64> = ranked.iter().map(|r| r.score.max(1e-9)).collect();
    let total: f64 = weights.iter().sum();
    let mut current = vec![0.0; ranked.len()];
    (0..n)
        .map(|_| {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let best = (0..current.len())
                .max_by(|&a, &b| current[a].total_cmp(&current[b]).then(b.cmp(&a)))
                .unwrap_or(0);
            current[best] -= total;
            best
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use infernet_types::{GpuModel, Hardware, settings::Price};
    use rand::SeedableRng;

    use super::*;
    use crate::registry::{ContainerSummary, Offer};

    fn report(containers: &[&str], pending: u64) -> NodeReport {
        NodeReport {
            containers: containers
                .iter()
                .map(|id| ContainerSummary {
                    id: id.to_string(),
                    description: String::new(),
                    external: true,
                })
                .collect(),
            pending,
            offer: Offer::default(),
        }
    }

    fn node<'a>(name: &'a str, report: &'a NodeReport) -> Candidate<'a> {
        Candidate {
            node: name,
            healthy: true,
            last_error: None,
            uptime: 1.0,
            report,
            record: Record::default(),
            terms: None,
        }
    }

    fn ask<'a>(containers: &'a [String], requirements: &'a Requirements, max_price: Option<f64>) -> Ask<'a> {
        Ask {
            containers,
            requirements,
            max_price,
            max_seconds: 60.0,
            unit: "USD",
        }
    }

    fn priced(per_job: f64, per_second: f64, unit: &str) -> BTreeMap<String, Price> {
        BTreeMap::from([(
            "hello".to_string(),
            Price {
                per_job: Some(per_job),
                per_second: Some(per_second),
                unit: unit.into(),
            },
        )])
    }

    #[test]
    fn every_filter_excludes_with_its_reason() {
        let containers = vec!["hello".to_string()];
        let none = Requirements::default();
        let other = report(&["other"], 0);
        let sick = report(&["hello"], 0);
        let mut dear = report(&["hello"], 0);
        dear.offer.pricing = priced(0.01, 0.001, "USD"); // 0.01 + 0.06 = 0.07
        let mut euro = report(&["hello"], 0);
        euro.offer.pricing = priced(0.0, 0.0, "EUR");
        let mut closed = report(&["hello"], 0);
        closed.offer.open = false;
        closed.offer.available_at = Some("2026-12-03T18:00:00Z".into());
        let mut cheap = report(&["hello"], 0);
        cheap.offer.pricing = priced(0.01, 0.0, "USD");
        let free = report(&["hello"], 0);
        let mut nodes = vec![
            node("a:1", &other),
            node("b:1", &sick),
            node("c:1", &dear),
            node("d:1", &euro),
            node("e:1", &closed),
            node("f:1", &cheap),
            node("g:1", &free),
        ];
        nodes[1].healthy = false;
        nodes[1].last_error = Some("connection refused");
        let choice = choose(&ask(&containers, &none, Some(0.05)), nodes.clone(), true);
        let names: Vec<&str> = choice.candidates.iter().map(|r| r.node.as_str()).collect();
        assert_eq!(names, ["f:1", "g:1"]);
        assert_eq!(choice.candidates[0].price, 0.01);
        let by: Vec<(&str, Filter)> = choice.excluded.iter().map(|e| (e.node.as_str(), e.filter)).collect();
        assert_eq!(
            by,
            [
                ("a:1", Filter::Containers),
                ("b:1", Filter::Health),
                ("c:1", Filter::Price),
                ("d:1", Filter::Price),
                ("e:1", Filter::Hours)
            ]
        );
        assert!(choice.excluded[1].reason.contains("connection refused"));
        assert!(
            choice.excluded[2].reason.contains("0.07"),
            "{}",
            choice.excluded[2].reason
        );
        assert!(choice.excluded[3].reason.contains("EUR"));
        assert!(choice.excluded[4].reason.contains("2026-12-03T18:00:00Z"));
        // Without explaining, the same decision, only counted.
        let quiet = choose(&ask(&containers, &none, Some(0.05)), nodes.clone(), false);
        assert_eq!(quiet.candidates, choice.candidates);
        assert!(quiet.excluded.is_empty());
        assert_eq!(quiet.counts, [1, 1, 0, 2, 1]);
        // Left out, by position, for the nodes' records (not serving is not counted).
        let left_out = [
            (1, Filter::Health),
            (2, Filter::Price),
            (3, Filter::Price),
            (4, Filter::Hours),
        ];
        assert_eq!(quiet.left_out, left_out);
        // The same decision from terms read beforehand (the gateway keeps them per snapshot).
        let a = ask(&containers, &none, Some(0.05));
        let read: Vec<Candidate<'_>> = nodes
            .iter()
            .map(|n| Candidate {
                terms: Some(Terms::of(a.containers, a.unit, n.report)),
                ..*n
            })
            .collect();
        let cached = choose(&a, read, true);
        assert_eq!(
            (&cached.candidates, &cached.excluded),
            (&choice.candidates, &choice.excluded)
        );
        assert_eq!(Terms::of(a.containers, a.unit, &euro).price, None);
        assert!(!Terms::of(a.containers, a.unit, &other).serves);
        // Nothing qualifies: the 503 says how many serve and what excluded them.
        let tight = choose(&ask(&containers, &none, Some(0.001)), nodes[..6].to_vec(), true);
        assert!(tight.candidates.is_empty());
        let why = tight.why_none(&ask(&containers, &none, Some(0.001)));
        assert_eq!(
            why,
            "5 nodes serve hello; none qualifies: 1 by health (b:1: unreachable: connection refused); \
             3 by price (c:1: costs 0.07 USD, more than max_price 0.001); \
             1 by hours (e:1: takes no jobs now; available at 2026-12-03T18:00:00Z)"
        );
        let nobody = choose(&ask(&["nope".to_string()], &none, None), [node("a:1", &other)], false);
        assert_eq!(
            nobody.why_none(&ask(&["nope".to_string()], &none, None)),
            "no available node serves nope"
        );
    }

    #[test]
    fn scores_sort_as_floats_do() {
        let xs = [
            f64::NEG_INFINITY,
            -2.5,
            -0.0,
            0.0,
            1e-300,
            0.5,
            0.5000001,
            3.0,
            f64::INFINITY,
            f64::NAN,
        ];
        for a in xs {
            for b in xs {
                assert_eq!(ordered(a).cmp(&ordered(b)), a.total_cmp(&b), "{a} against {b}");
            }
        }
    }

    #[test]
    fn hardware_requirements_match_the_advertised_host() {
        let containers = vec!["hello".to_string()];
        let mut gpu = report(&["hello"], 0);
        gpu.offer.hardware = Some(Hardware {
            cpus: 16.0,
            memory_mb: 64 * 1024,
            gpus: vec![GpuModel {
                model: "NVIDIA A100-SXM4-80GB".into(),
                memory_mb: 80 * 1024,
            }],
        });
        let mut cpu = report(&["hello"], 0);
        cpu.offer.hardware = Some(Hardware {
            cpus: 2.0,
            memory_mb: 4096,
            gpus: vec![],
        });
        let silent = report(&["hello"], 0);
        let nodes = [node("gpu:1", &gpu), node("cpu:1", &cpu), node("silent:1", &silent)];
        let qualifying = |r: Requirements| -> Vec<String> {
            choose(&ask(&containers, &r, None), nodes, true)
                .candidates
                .into_iter()
                .map(|c| c.node)
                .collect()
        };
        assert_eq!(qualifying(Requirements::default()).len(), 3);
        let a100 = Requirements {
            gpus: Some(1),
            gpu_model: Some("a100".into()),
            gpu_memory_gb: Some(40.0),
            ..Default::default()
        };
        assert_eq!(qualifying(a100), ["gpu:1"]);
        let two = Requirements {
            gpus: Some(2),
            ..Default::default()
        };
        assert!(qualifying(two).is_empty());
        let small = Requirements {
            cpus: Some(2.0),
            memory_gb: Some(4.0),
            ..Default::default()
        };
        assert_eq!(qualifying(small.clone()).len(), 2);
        let why = choose(&ask(&containers, &small, None), nodes, true).excluded;
        assert_eq!(why[0].reason, "does not advertise its hardware");
    }

    #[test]
    fn the_score_rewards_success_speed_and_idleness_and_new_nodes_sit_in_between() {
        let containers = vec!["hello".to_string()];
        let none = Requirements::default();
        let idle = report(&["hello"], 0);
        let busy = report(&["hello"], 8);
        let mut good = node("good:1", &idle);
        good.record = Record {
            jobs_ok: 100,
            jobs_failed: 0,
            latency_ms: Some(100.0),
        };
        let mut flaky = node("flaky:1", &idle);
        flaky.record = Record {
            jobs_ok: 50,
            jobs_failed: 50,
            latency_ms: Some(100.0),
        };
        let new = node("new:1", &idle);
        let mut slow = node("slow:1", &idle);
        slow.record = Record {
            jobs_ok: 100,
            jobs_failed: 0,
            latency_ms: Some(900.0),
        };
        let mut loaded = node("loaded:1", &busy);
        loaded.record = good.record;
        let mut flapping = node("flapping:1", &idle);
        flapping.record = good.record;
        flapping.uptime = 0.6;
        let choice = choose(
            &ask(&containers, &none, None),
            [flaky, new, slow, loaded, good, flapping],
            false,
        );
        let order: Vec<&str> = choice.candidates.iter().map(|r| r.node.as_str()).collect();
        assert_eq!(
            order,
            ["good:1", "new:1", "flapping:1", "slow:1", "loaded:1", "flaky:1"]
        );
        let new_score = choice.candidates[1].score;
        assert!(new_score > 0.5 && new_score < choice.candidates[0].score);
    }

    #[test]
    fn the_pick_spreads_over_the_best_few_and_keeps_the_rest_in_order() {
        let ranked: Vec<Ranked> = [1.0, 1.0, 1.0, 0.5, 0.1]
            .iter()
            .enumerate()
            .map(|(i, &score)| Ranked {
                node: format!("n{i}"),
                score,
                price: 0.0,
                success: 1.0,
                uptime: 1.0,
                pending: 0,
            })
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut firsts = [0usize; 5];
        for _ in 0..3000 {
            let order = pick(&ranked, &mut rng);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3, 4], "every node is tried once");
            assert_eq!(&order[3..], [3, 4]);
            firsts[order[0]] += 1;
        }
        for (i, &n) in firsts[..3].iter().enumerate() {
            assert!((800..1200).contains(&n), "node {i} first {n} times of 3000");
        }
        // Spreading a batch follows the scores: 1 : 1 : 1 : 0.5 : 0.1 over 36 jobs.
        let spread = spread(&ranked, 36);
        let count = |i| spread.iter().filter(|&&x| x == i).count();
        assert_eq!([count(0), count(1), count(2), count(3), count(4)], [10, 10, 10, 5, 1]);
    }
}

//! Which nodes a client gets: only nodes running every requested container, each accepting jobs
//! from outside (`external`); least loaded first, loads about 25% apart counting as equal.
//!
//! Among equal loads the order is drawn from the snapshot's seed, so it is one order per
//! snapshot: a client paging with `offset` gets pages that neither overlap nor miss a node
//! (drawn per request, 16 of 30 nodes came back twice over three pages). The registry keeps the
//! seed across probe rounds until [`fingerprint`] changes (a node joins, leaves, changes its
//! containers or its load class), so paging does not straddle a reshuffle every round, and a new
//! draw still spreads clients over equals as the fleet changes.

use std::{
    collections::BTreeSet,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use crate::registry::{Available, Snapshot};

/// Load class: loads in the same class count as equal (about 25% apart).
fn load_class(pending: u64) -> u64 {
    ((pending as f64).ln_1p() * 4.0) as u64
}

/// What the order depends on: each available node's key, containers and load class.
pub fn fingerprint(available: &[Available]) -> u64 {
    let mut h = DefaultHasher::new();
    for node in available {
        node.key.hash(&mut h);
        load_class(node.report.pending).hash(&mut h);
        for c in &node.report.containers {
            (&c.id, c.external).hash(&mut h);
        }
    }
    h.finish()
}

/// Position of `key` among its equals under `seed`.
fn tie_break(seed: u64, key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    seed.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

/// Indices of the nodes that serve every container of `containers`, in order (cached in the
/// snapshot: filtering and sorting 1,000 nodes per request is the cost).
fn order(snapshot: &Snapshot, containers: &[String]) -> Arc<Vec<usize>> {
    let key: Vec<String> = containers
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut cache = snapshot.orders.lock().expect("ranking cache poisoned");
    if let Some(order) = cache.get(&key) {
        return order.clone();
    }
    let mut ranked: Vec<(u64, u64, usize)> = snapshot
        .available
        .iter()
        .enumerate()
        // Linked nodes have no address to hand out.
        .filter(|(_, node)| !node.linked)
        .filter(|(_, node)| {
            key.iter()
                .all(|wanted| node.report.containers.iter().any(|c| &c.id == wanted && c.external))
        })
        .map(|(i, node)| (load_class(node.report.pending), tie_break(snapshot.seed, &node.key), i))
        .collect();
    ranked.sort_unstable();
    let order = Arc::new(ranked.into_iter().map(|(_, _, i)| i).collect::<Vec<_>>());
    if cache.len() < 1024 {
        cache.insert(key, order.clone());
    }
    order
}

/// Node keys for `containers`, best first, `offset` and `n` applied.
pub fn select(snapshot: &Snapshot, containers: &[String], n: usize, offset: usize) -> Vec<String> {
    order(snapshot, containers)
        .iter()
        .skip(offset)
        .take(n)
        .map(|&i| snapshot.available[i].key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::registry::{ContainerSummary, NodeReport};

    fn node(key: &str, containers: &[(&str, bool)], pending: u64) -> Available {
        Available {
            key: key.into(),
            url: format!("http://{key}"),
            report: NodeReport {
                containers: containers
                    .iter()
                    .map(|(id, external)| ContainerSummary {
                        id: id.to_string(),
                        description: String::new(),
                        external: *external,
                    })
                    .collect(),
                pending,
                offer: Default::default(),
            },
            uptime: 1.0,
            linked: false,
            passed_over: Default::default(),
        }
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn snapshot(available: Vec<Available>, seed: u64) -> Snapshot {
        Snapshot {
            known: available.len(),
            available,
            seed,
            orders: Default::default(),
            terms: Default::default(),
        }
    }

    /// 30 nodes with near-equal loads.
    fn equals(seed: u64) -> Snapshot {
        snapshot(
            (0..30)
                .map(|i| node(&format!("n{i}:1"), &[("x", true)], 100 + i % 3))
                .collect(),
            seed,
        )
    }

    #[test]
    fn filters_on_every_container_and_external_then_orders_by_load() {
        let snapshot = snapshot(
            vec![
                node("busy:1", &[("x", true), ("y", true)], 50),
                node("idle:1", &[("x", true), ("y", true)], 0),
                node("only-x:1", &[("x", true)], 0),
                node("internal-y:1", &[("x", true), ("y", false)], 0),
            ],
            7,
        );
        assert_eq!(select(&snapshot, &ids(&["x", "y"]), 3, 0), ids(&["idle:1", "busy:1"]));
        assert_eq!(select(&snapshot, &ids(&["y", "x", "y"]), 3, 1), ids(&["busy:1"]));
        assert_eq!(select(&snapshot, &ids(&["x", "y"]), 1, 0), ids(&["idle:1"]));
        assert!(select(&snapshot, &ids(&["z"]), 3, 0).is_empty());
    }

    #[test]
    fn pages_of_one_snapshot_never_overlap_and_cover_every_node() {
        let snapshot = equals(42);
        let x = ids(&["x"]);
        for n in [1, 7, 10] {
            let mut seen = Vec::new();
            for page in 0..30usize.div_ceil(n) {
                seen.extend(select(&snapshot, &x, n, page * n));
            }
            let distinct: HashSet<&String> = seen.iter().collect();
            assert_eq!((seen.len(), distinct.len()), (30, 30), "n = {n}: {seen:?}");
        }
        assert_eq!(select(&snapshot, &x, 10, 0), select(&snapshot, &x, 10, 0));
    }

    #[test]
    fn near_equal_loads_are_spread_across_seeds() {
        let firsts: HashSet<String> = (0..200u64)
            .map(|seed| select(&equals(seed), &ids(&["x"]), 1, 0)[0].clone())
            .collect();
        assert!(firsts.len() > 3, "the first node should vary among equals: {firsts:?}");
    }

    #[test]
    fn the_fingerprint_follows_membership_containers_and_load_class_only() {
        let base = vec![node("a:1", &[("x", true)], 100), node("b:1", &[("x", true)], 0)];
        let f = fingerprint(&base);
        let mut same_class = base.clone();
        same_class[0].report.pending = 103;
        same_class[0].report.containers[0].description = "new text".into();
        assert_eq!(fingerprint(&same_class), f);
        let mut other_class = base.clone();
        other_class[0].report.pending = 300;
        assert_ne!(fingerprint(&other_class), f);
        let mut internal = base.clone();
        internal[1].report.containers[0].external = false;
        assert_ne!(fingerprint(&internal), f);
        assert_ne!(fingerprint(&base[..1]), f);
    }
}

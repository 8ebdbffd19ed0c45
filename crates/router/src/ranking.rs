//! Which nodes a client gets: only nodes running every requested container, each accepting jobs
//! from outside (`external`); least loaded first, with ties among near-equal loads broken at
//! random so clients polling between refreshes are not all sent to the same node.

use std::{collections::BTreeMap, sync::Arc};

use rand::Rng;

use crate::registry::{Groups, Snapshot};

/// Load class: loads in the same class count as equal (about 25% apart).
fn load_class(pending: u64) -> u64 {
    ((pending as f64).ln_1p() * 4.0) as u64
}

/// Indices of the nodes that serve every container of `containers`, grouped by load class,
/// lowest class first (cached in the snapshot: filtering 1,000 nodes per request is the cost).
fn groups(snapshot: &Snapshot, containers: &[String]) -> Arc<Groups> {
    let mut key = containers.to_vec();
    key.sort();
    key.dedup();
    let mut cache = snapshot.groups.lock().expect("ranking cache poisoned");
    if let Some(groups) = cache.get(&key) {
        return groups.clone();
    }
    let mut by_class: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, node) in snapshot.available.iter().enumerate() {
        if key
            .iter()
            .all(|wanted| node.report.containers.iter().any(|c| &c.id == wanted && c.external))
        {
            by_class.entry(load_class(node.report.pending)).or_default().push(i);
        }
    }
    let groups = Arc::new(by_class.into_values().collect::<Vec<_>>());
    if cache.len() < 1024 {
        cache.insert(key, groups.clone());
    }
    groups
}

/// Node keys for `containers`, best first, `offset` and `n` applied. Within a load class the
/// order is random; only the nodes handed out are drawn (no per-request pass over every node).
pub fn select(snapshot: &Snapshot, containers: &[String], n: usize, offset: usize, rng: &mut impl Rng) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    let mut skip = offset;
    for group in groups(snapshot, containers).iter() {
        if out.len() == n {
            break;
        }
        if skip >= group.len() {
            skip -= group.len();
            continue;
        }
        let take = (skip + n - out.len()).min(group.len());
        for pick in rand::seq::index::sample(rng, group.len(), take).into_iter().skip(skip) {
            out.push(snapshot.available[group[pick]].key.clone());
        }
        skip = 0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Available, ContainerSummary, NodeReport};

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
            },
        }
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn filters_on_every_container_and_external_then_orders_by_load() {
        let snapshot = Snapshot {
            available: vec![
                node("busy:1", &[("x", true), ("y", true)], 50),
                node("idle:1", &[("x", true), ("y", true)], 0),
                node("only-x:1", &[("x", true)], 0),
                node("internal-y:1", &[("x", true), ("y", false)], 0),
            ],
            known: 4,
            groups: Default::default(),
        };
        let mut rng = rand::rng();
        assert_eq!(
            select(&snapshot, &ids(&["x", "y"]), 3, 0, &mut rng),
            ids(&["idle:1", "busy:1"])
        );
        assert_eq!(select(&snapshot, &ids(&["x", "y"]), 3, 1, &mut rng), ids(&["busy:1"]));
        assert_eq!(select(&snapshot, &ids(&["x", "y"]), 1, 0, &mut rng), ids(&["idle:1"]));
        assert!(select(&snapshot, &ids(&["z"]), 3, 0, &mut rng).is_empty());
    }

    #[test]
    fn near_equal_loads_are_shuffled() {
        let snapshot = Snapshot {
            available: (0..8)
                .map(|i| node(&format!("n{i}:1"), &[("x", true)], 100 + i))
                .collect(),
            known: 8,
            groups: Default::default(),
        };
        let mut rng = rand::rng();
        let firsts: std::collections::HashSet<String> = (0..200)
            .map(|_| select(&snapshot, &ids(&["x"]), 1, 0, &mut rng)[0].clone())
            .collect();
        assert!(firsts.len() > 3, "the first node should vary among equals: {firsts:?}");
    }
}

//! Which nodes a client gets: only nodes running every requested container, each accepting jobs
//! from outside (`external`); least loaded first, with ties among near-equal loads broken at
//! random so clients polling between refreshes are not all sent to the same node.

use rand::Rng;

use crate::registry::Snapshot;

/// Load class: loads in the same class count as equal (about 25% apart).
fn load_class(pending: u64) -> u64 {
    ((pending as f64).ln_1p() * 4.0) as u64
}

/// Node keys for `containers`, best first, `offset` and `n` applied.
pub fn select(snapshot: &Snapshot, containers: &[String], n: usize, offset: usize, rng: &mut impl Rng) -> Vec<String> {
    let mut candidates: Vec<(u64, u64, &str)> = snapshot
        .available
        .iter()
        .filter(|node| {
            containers
                .iter()
                .all(|wanted| node.report.containers.iter().any(|c| &c.id == wanted && c.external))
        })
        .map(|node| (load_class(node.report.pending), rng.random::<u64>(), node.key.as_str()))
        .collect();
    // Only the first offset + n matter: partition, then sort that prefix.
    let wanted = offset.saturating_add(n).min(candidates.len());
    if wanted == 0 {
        return Vec::new();
    }
    if wanted < candidates.len() {
        candidates.select_nth_unstable(wanted - 1);
        candidates.truncate(wanted);
    }
    candidates.sort_unstable();
    candidates
        .into_iter()
        .skip(offset)
        .map(|(_, _, key)| key.to_string())
        .collect()
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
        };
        let mut rng = rand::rng();
        let firsts: std::collections::HashSet<String> = (0..200)
            .map(|_| select(&snapshot, &ids(&["x"]), 1, 0, &mut rng)[0].clone())
            .collect();
        assert!(firsts.len() > 3, "the first node should vary among equals: {firsts:?}");
    }
}

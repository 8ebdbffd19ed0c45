//! ContainerLookup: which pipeline of configured containers an on-chain `containerId` names.
//!
//! The hash cannot be inverted, so the table holds the hash of every pipeline the node could
//! serve. Ritual's node enumerates every permutation of every size, which is factorial in the
//! number of containers and cannot name a pipeline that repeats a container. Here pipelines start
//! with an `external` container (no other can start one), may repeat containers, and are at most
//! [`MAX_PIPELINE_LEN`] long; the table is built once and shared, never copied.

use std::collections::HashMap;

use alloy::primitives::B256;
use infernet_types::container_set_hash;

/// Longest pipeline the lookup enumerates.
pub const MAX_PIPELINE_LEN: usize = 3;
/// Upper bound of the table size; shorter pipelines are enumerated first, so only the longest
/// length is cut when a node configures very many containers.
pub const MAX_ENTRIES: usize = 200_000;

/// Hash → pipeline table.
#[derive(Debug, Default)]
pub struct ContainerLookup {
    table: HashMap<B256, Vec<String>>,
}

impl ContainerLookup {
    /// The table for `containers` (`(id, external)` in config order).
    pub fn new<'a>(containers: impl IntoIterator<Item = (&'a str, bool)>) -> Self {
        let containers: Vec<(&str, bool)> = containers.into_iter().collect();
        let ids: Vec<&str> = containers.iter().map(|(id, _)| *id).collect();
        let mut table = HashMap::new();
        let mut frontier: Vec<Vec<&str>> = containers
            .iter()
            .filter(|(_, external)| *external)
            .map(|(id, _)| vec![*id])
            .collect();
        'grow: for len in 1..=MAX_PIPELINE_LEN {
            for pipeline in &frontier {
                if table.len() >= MAX_ENTRIES {
                    tracing::warn!(
                        entries = MAX_ENTRIES,
                        length = len,
                        "container lookup table is full: longer pipelines of these containers are not recognised"
                    );
                    break 'grow;
                }
                table.insert(
                    container_set_hash(pipeline),
                    pipeline.iter().map(|s| s.to_string()).collect(),
                );
            }
            if len == MAX_PIPELINE_LEN {
                break;
            }
            frontier = frontier
                .iter()
                .flat_map(|p| {
                    ids.iter().map(move |id| {
                        let mut next = p.clone();
                        next.push(id);
                        next
                    })
                })
                .collect();
        }
        Self { table }
    }

    /// The pipeline `hash` names, or `None` when this node cannot serve it.
    pub fn get(&self, hash: &B256) -> Option<&[String]> {
        self.table.get(hash).map(Vec::as_slice)
    }

    /// Number of pipelines known.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no pipeline is known (no external container).
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::b256;

    use super::*;

    #[test]
    fn reference_vectors_resolve() {
        let lookup = ContainerLookup::new([("hello-world", true), ("a", true), ("b", true)]);
        assert_eq!(
            lookup.get(&b256!(
                "5768661526084c7b4d30f7224ed6c74ade98db3c6c395c55400a17f34a547e22"
            )),
            Some(&["hello-world".to_string()][..])
        );
        assert_eq!(
            lookup.get(&b256!(
                "0deeac3a841600829c99f8116bb997da266d4c47a720b00e6ace9594de82dd54"
            )),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        assert_eq!(
            lookup.get(&b256!(
                "73ede0fe4b30aa8027db6b64635734b367776b05dc0bcf986c744c6bcbf6892e"
            )),
            Some(&["b".to_string(), "a".to_string()][..])
        );
        assert_eq!(lookup.get(&B256::repeat_byte(7)), None);
    }

    #[test]
    fn pipelines_start_external_may_repeat_and_are_bounded() {
        let lookup = ContainerLookup::new([("ext", true), ("int", false)]);
        let ids = |v: &[&str]| container_set_hash(v);
        assert!(lookup.get(&ids(&["ext", "int"])).is_some());
        assert!(lookup.get(&ids(&["ext", "ext", "int"])).is_some());
        assert!(
            lookup.get(&ids(&["int"])).is_none(),
            "internal containers cannot start a pipeline"
        );
        assert!(lookup.get(&ids(&["int", "ext"])).is_none());
        assert!(
            lookup.get(&ids(&["ext", "ext", "ext", "ext"])).is_none(),
            "longer than the bound"
        );
        // 1 + 2 + 4 pipelines of length 1, 2, 3 starting with "ext".
        assert_eq!(lookup.len(), 7);
    }

    #[test]
    fn many_containers_stay_bounded() {
        let names: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
        let lookup = ContainerLookup::new(names.iter().map(|n| (n.as_str(), true)));
        assert!(lookup.len() <= MAX_ENTRIES);
        // Every pair is still known (100 + 10,000 entries fit before the cut).
        assert!(lookup.get(&container_set_hash(&["c99", "c0"])).is_some());
    }
}

//! Entries by key in least-recently-used order, in little memory: the store's index holds one
//! per job, up to `max_jobs` of them.
//!
//! Entries live in a slab of slots linked into a recency list; the hash table holds only slot
//! numbers (4 bytes per bucket) and finds a key by comparing it with its slot's. A key is stored
//! once, and recency costs two slot numbers per entry, where an ordered map beside a hash map
//! held every key twice and a tree node per few entries (about half the memory per job, and a
//! hash map of full entries doubled in size by the churn of a full store).
//!
//! Why it stays, against `hashlink`'s `LinkedHashMap` (a hash table of pointers to nodes allocated
//! one by one, 2026-12-03, store_memory bench at 100,000 jobs, 2–3 runs each): resident memory per
//! held job 99–101 bytes just filled and 123–139 evicting here, 120–128 and 153–175 with
//! `hashlink`, 17–20 % less. Heap counted by the allocator is lower with `hashlink` (101 and 117
//! bytes against 113 and 124: the slab's spare capacity), but one allocation per job costs more
//! pages than it saves. Instructions per streamed job are the same either way (`make count`
//! 63.9k with `hashlink`, 63.7k with the slab, counted in the same session).

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

/// No slot: the end of the recency list.
const NIL: u32 = u32::MAX;

struct Node<K, V> {
    key: K,
    value: V,
    /// Neighbours in recency order (`prev` used less recently).
    prev: u32,
    next: u32,
}

/// A map from `K` to `V` that knows which entry was used least recently.
pub(super) struct Lru<K, V> {
    /// Slot of each entry, found through its key's hash.
    table: HashTable<u32>,
    slots: Vec<Option<Node<K, V>>>,
    /// Empty slots, filled before `slots` grows.
    free: Vec<u32>,
    /// Least and most recently used slots (`NIL` when empty).
    head: u32,
    tail: u32,
    hasher: foldhash::fast::RandomState,
}

impl<K: Hash + Eq, V> Default for Lru<K, V> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl<K: Hash + Eq, V> Lru<K, V> {
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    fn slot_of(&self, key: &K) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(self.hasher.hash_one(key), |&i| {
                slots[i as usize].as_ref().is_some_and(|n| n.key == *key)
            })
            .copied()
    }

    fn node(&self, i: u32) -> &Node<K, V> {
        self.slots[i as usize].as_ref().expect("a listed slot holds an entry")
    }

    fn node_mut(&mut self, i: u32) -> &mut Node<K, V> {
        self.slots[i as usize].as_mut().expect("a listed slot holds an entry")
    }

    pub(super) fn get(&self, key: &K) -> Option<&V> {
        self.slot_of(key).map(|i| &self.node(i).value)
    }

    /// The entry, its recency unchanged.
    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.slot_of(key).map(|i| &mut self.node_mut(i).value)
    }

    /// The entry, made the most recently used.
    pub(super) fn touch(&mut self, key: &K) -> Option<&mut V> {
        let i = self.slot_of(key)?;
        if i != self.tail {
            self.unlink(i);
            self.push_back(i);
        }
        Some(&mut self.node_mut(i).value)
    }

    /// Adds an entry for a key not held (the caller has just looked), as the most recently
    /// used. Not looked up again here: every new job comes this way.
    pub(super) fn insert_new(&mut self, key: K, value: V) {
        debug_assert!(self.slot_of(&key).is_none(), "insert_new of a key already held");
        let node = Some(Node {
            key,
            value,
            prev: NIL,
            next: NIL,
        });
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = node;
                i
            }
            None => {
                // `NIL` is never a slot; the store's configuration keeps far below it.
                let i = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&i| i != NIL)
                    .expect("fewer than 2^32 - 1 entries");
                self.slots.push(node);
                i
            }
        };
        let Self {
            table, slots, hasher, ..
        } = self;
        let hash = hasher.hash_one(&slots[i as usize].as_ref().expect("just filled").key);
        table.insert_unique(hash, i, |&j| {
            hasher.hash_one(&slots[j as usize].as_ref().expect("a hashed slot holds an entry").key)
        });
        self.push_back(i);
    }

    /// Takes out the entry of `key`.
    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.slot_of(key)?;
        Some(self.take_slot(i).1)
    }

    /// Takes out the least recently used entry.
    pub(super) fn pop_lru(&mut self) -> Option<(K, V)> {
        (self.head != NIL).then(|| self.take_slot(self.head))
    }

    /// Takes out the entry in slot `i`.
    fn take_slot(&mut self, i: u32) -> (K, V) {
        let hash = self.hasher.hash_one(&self.node(i).key);
        if let Ok(entry) = self.table.find_entry(hash, |&j| j == i) {
            entry.remove();
        }
        self.release(i)
    }

    /// Takes out every entry whose value matches, in no particular order.
    pub(super) fn extract_if(&mut self, mut matches: impl FnMut(&V) -> bool) -> Vec<(K, V)> {
        let found: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| self.slots[i as usize].as_ref().is_some_and(|n| matches(&n.value)))
            .collect();
        found.into_iter().map(|i| self.take_slot(i)).collect()
    }

    /// Entries from the least to the most recently used.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let mut at = self.head;
        std::iter::from_fn(move || {
            (at != NIL).then(|| {
                let node = self.node(at);
                at = node.next;
                (&node.key, &node.value)
            })
        })
    }

    /// Values in no particular order.
    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.slots.iter().flatten().map(|n| &n.value)
    }

    /// Values in no particular order.
    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slots.iter_mut().flatten().map(|n| &mut n.value)
    }

    /// Empties slot `i` (already out of the table) and unlinks it.
    fn release(&mut self, i: u32) -> (K, V) {
        self.unlink(i);
        let node = self.slots[i as usize].take().expect("a listed slot holds an entry");
        self.free.push(i);
        (node.key, node.value)
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let node = self.node(i);
            (node.prev, node.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.node_mut(p).next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.node_mut(n).prev = prev,
        }
    }

    fn push_back(&mut self, i: u32) {
        let tail = self.tail;
        let node = self.node_mut(i);
        (node.prev, node.next) = (tail, NIL);
        match tail {
            NIL => self.head = i,
            t => self.node_mut(t).next = i,
        }
        self.tail = i;
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    /// The same operations on a plain list kept in recency order (least recent first).
    #[derive(Default)]
    struct Model(Vec<(u32, u64)>);

    impl Model {
        fn at(&self, key: u32) -> Option<usize> {
            self.0.iter().position(|(k, _)| *k == key)
        }
        fn touch(&mut self, key: u32) -> Option<u64> {
            let entry = self.0.remove(self.at(key)?);
            self.0.push(entry);
            Some(entry.1)
        }
        fn insert(&mut self, key: u32, value: u64) -> Option<u64> {
            let old = self.at(key).map(|i| self.0.remove(i).1);
            self.0.push((key, value));
            old
        }
    }

    #[test]
    fn behaves_as_a_list_kept_in_recency_order() {
        let mut lru: Lru<u32, u64> = Lru::default();
        let mut model = Model::default();
        // xorshift: the same sequence on every run.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for step in 0..20_000u64 {
            // Few keys, so that operations often meet existing entries.
            let key = (next() % 64) as u32;
            match next() % 8 {
                0 | 1 => {
                    // As the index upserts: update in place if held, else add.
                    let old = match lru.touch(&key) {
                        Some(v) => Some(std::mem::replace(v, step)),
                        None => {
                            lru.insert_new(key, step);
                            None
                        }
                    };
                    assert_eq!(old, model.insert(key, step));
                }
                2 => assert_eq!(lru.touch(&key).copied(), model.touch(key)),
                3 => assert_eq!(lru.get(&key), model.at(key).map(|i| &model.0[i].1)),
                4 | 5 => {
                    let expected = (!model.0.is_empty()).then(|| model.0.remove(0));
                    assert_eq!(lru.pop_lru(), expected);
                }
                6 => {
                    if let Some(v) = lru.get_mut(&key) {
                        *v += 1;
                        let i = model.at(key).expect("in the model too");
                        model.0[i].1 += 1;
                    }
                }
                _ if step % 50 == 0 => {
                    let odd = |v: &u64| v % 2 == 1;
                    let mut taken = lru.extract_if(odd);
                    taken.sort_unstable();
                    let mut expected: Vec<_> = model.0.iter().copied().filter(|(_, v)| odd(v)).collect();
                    expected.sort_unstable();
                    model.0.retain(|(_, v)| !odd(v));
                    assert_eq!(taken, expected);
                }
                _ => {}
            }
            assert_eq!(lru.len(), model.0.len());
            let listed: Vec<(u32, u64)> = lru.iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(listed, model.0, "recency order after step {step}");
        }
        let mut values: Vec<u64> = lru.values().copied().collect();
        values.sort_unstable();
        let mut expected: Vec<u64> = model.0.iter().map(|(_, v)| *v).collect();
        expected.sort_unstable();
        assert_eq!(values, expected);
    }

    #[test]
    fn emptied_slots_are_reused_before_the_slab_grows() {
        let mut lru: Lru<u32, ()> = Lru::default();
        for round in 0..10 {
            for key in 0..1000 {
                lru.insert_new(round * 1000 + key, ());
            }
            while lru.len() > 500 {
                lru.pop_lru();
            }
        }
        // 500 kept and 1 000 added per round: never more than 1 500 held at once.
        assert_eq!(lru.slots.len(), 1500);
        assert_eq!(lru.iter().next().map(|(k, _)| *k), Some(9500));
    }
}

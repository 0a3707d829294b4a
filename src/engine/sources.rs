//! The tables of per-source state behind the datagram rules (the loop guard's exchanges, the
//! rate limit's buckets): a keyed hash table with a small front cache, so that the sources
//! heard from right now cost no keyed hash per datagram.
//!
//! The table proper keeps std's keyed SipHash, since sources are the attacker's to choose (a
//! UDP source is forged at will): keys that collide there would make every lookup walk a long
//! chain. SipHash was the largest cost of these rules, at one to three hashes per datagram
//! (about 140 instructions each; 8-socket ping-pong under callgrind). In front of the table,
//! a direct-mapped cache of [`CACHE_SLOTS`] entries, indexed by a cheap unkeyed hash
//! ([`SourceKey::quick_hash`]), remembers which slot holds a source. Forged sources can be
//! made to collide in the cache, but a collision costs only a miss, that is the keyed lookup
//! every datagram paid before: the cache is bounded and each lookup stays O(1) whatever the
//! sources, so the cheap hash buys no attacker anything.

use std::collections::HashMap;
use std::hash::Hash;

/// Entries of the front cache: a power of two, a little over the clients a busy listener
/// answers in turn (8 to a few dozen in the benchmarks), so that they rarely evict each other.
const CACHE_SLOTS: usize = 256;

/// A key of a [`Sources`] table.
pub(crate) trait SourceKey: Eq + Hash + Clone {
    /// A cheap hash for the front cache, unkeyed: an attacker may make it collide (see the
    /// module docs). Only its top bits are used.
    fn quick_hash(&self) -> u64;
}

/// Per-source state, each source in a slot of its own; a map from key to slot and a cache of
/// that map in front.
#[derive(Debug)]
pub(crate) struct Sources<K, V> {
    slot_of: HashMap<K, usize>,
    slots: Vec<Option<(K, V)>>,
    free: Vec<usize>,
    /// Slot + 1 of a recently looked-up key, by its quick hash; 0 for none. A hit is checked
    /// against the slot's key, so a slot freed or reused since is only a miss.
    cache: Box<[usize; CACHE_SLOTS]>,
    /// Bumped whenever keys are removed: a [`Place`] of an earlier epoch may hold another key.
    epoch: u64,
}

/// Where a key's state is held in a [`Sources`] table, valid until the table next removes
/// keys: coming back to it costs no lookup and no comparison of keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    slot: usize,
    epoch: u64,
}

impl<K, V> Default for Sources<K, V> {
    fn default() -> Self {
        Sources {
            slot_of: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            cache: Box::new([0; CACHE_SLOTS]),
            epoch: 0,
        }
    }
}

impl<K: SourceKey, V> Sources<K, V> {
    /// The number of sources held.
    pub(crate) fn len(&self) -> usize {
        self.slot_of.len()
    }

    /// Whether `key` is held.
    #[cfg(test)]
    pub(crate) fn contains(&mut self, key: &K) -> bool {
        self.slot(key).is_some()
    }

    /// The state of `key`, if held.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let slot = self.slot(key)?;
        self.slots[slot].as_mut().map(|(_, v)| v)
    }

    /// The state of `key` and where it is held, to come back to it with [`Sources::at_if`]
    /// without looking it up again.
    #[cfg(test)]
    pub(crate) fn find(&mut self, key: &K) -> Option<(usize, &mut V)> {
        self.find_as(key.quick_hash(), |k| k == key, || key.clone())
    }

    /// [`Sources::find`] without the key made first (a clone of an address, and its drop): the
    /// key's [`SourceKey::quick_hash`], whether a key held is it, and the key itself, made only
    /// when the cache misses.
    #[inline]
    pub(crate) fn find_as(
        &mut self,
        quick_hash: u64,
        is_key: impl Fn(&K) -> bool,
        key: impl FnOnce() -> K,
    ) -> Option<(usize, &mut V)> {
        let at = cache_slot(quick_hash);
        let slot = match self.cache[at].checked_sub(1) {
            Some(slot) if self.slots[slot].as_ref().is_some_and(|(k, _)| is_key(k)) => slot,
            _ => self.slot_missed(&key(), at)?,
        };
        self.slots[slot].as_mut().map(|(_, v)| (slot, v))
    }

    /// The state in `slot` (from [`Sources::find`]) if that slot still holds the key for
    /// which `is_key` is true (a slot freed or reused since holds none or another).
    pub(crate) fn at_if(&mut self, slot: usize, is_key: impl FnOnce(&K) -> bool) -> Option<&mut V> {
        match self.slots.get_mut(slot) {
            Some(Some((k, v))) if is_key(k) => Some(v),
            _ => None,
        }
    }

    /// Whether `place` still holds its key: no keys have been removed since it was given.
    pub(crate) fn is_current(&self, place: Place) -> bool {
        place.epoch == self.epoch
    }

    /// The state at `place` (from [`Sources::place_or_insert_with`]), unless keys have been
    /// removed since.
    pub(crate) fn at_place(&mut self, place: Place) -> Option<&mut V> {
        if !self.is_current(place) {
            return None;
        }
        self.slots[place.slot].as_mut().map(|(_, v)| v)
    }

    /// The state of `key`, made with `make` if it is not held.
    pub(crate) fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        self.place_or_insert_with(key, make).1
    }

    /// [`Sources::get_or_insert_with`], and where the state is held.
    pub(crate) fn place_or_insert_with(
        &mut self,
        key: &K,
        make: impl FnOnce() -> V,
    ) -> (Place, &mut V) {
        let slot = match self.slot(key) {
            Some(slot) => slot,
            None => {
                let entry = Some((key.clone(), make()));
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.slots[slot] = entry;
                        slot
                    }
                    None => {
                        self.slots.push(entry);
                        self.slots.len() - 1
                    }
                };
                self.slot_of.insert(key.clone(), slot);
                self.cache[cache_index(key)] = slot + 1;
                slot
            }
        };
        let place = Place {
            slot,
            epoch: self.epoch,
        };
        (
            place,
            &mut self.slots[slot].as_mut().expect("a held slot").1,
        )
    }

    /// Keeps only the sources for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.epoch += 1;
        let (slots, free) = (&mut self.slots, &mut self.free);
        self.slot_of.retain(|_, &mut slot| {
            let kept = slots[slot].as_ref().is_some_and(|(_, v)| keep(v));
            if !kept {
                slots[slot] = None;
                free.push(slot);
            }
            kept
        });
    }

    /// The states held, in no order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.slots.iter().flatten().map(|(_, v)| v)
    }

    /// The slot of `key`: from the cache when it has it, else from the keyed map (and then
    /// cached). The hit inline, the miss out of line: with the keyed lookup inlined, every
    /// call saved and restored the registers that lookup needs (about 20 instructions a
    /// lookup, two lookups a datagram).
    #[inline]
    fn slot(&mut self, key: &K) -> Option<usize> {
        let at = cache_index(key);
        if let Some(slot) = self.cache[at].checked_sub(1)
            && self.slots[slot].as_ref().is_some_and(|(k, _)| k == key)
        {
            return Some(slot);
        }
        self.slot_missed(key, at)
    }

    /// [`Sources::slot`] when the cache's entry `at` does not hold `key`.
    #[cold]
    #[inline(never)]
    fn slot_missed(&mut self, key: &K, at: usize) -> Option<usize> {
        let slot = *self.slot_of.get(key)?;
        self.cache[at] = slot + 1;
        Some(slot)
    }
}

fn cache_index<K: SourceKey>(key: &K) -> usize {
    cache_slot(key.quick_hash())
}

fn cache_slot(quick_hash: u64) -> usize {
    (quick_hash >> (64 - CACHE_SLOTS.trailing_zeros())) as usize
}

/// Mixes `word` into `h` the way FxHash does; the top bits of the result are the best mixed.
pub(crate) fn quick_mix(h: u64, word: u64) -> u64 {
    (h.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
}

/// [`quick_mix`] over `bytes`, a word at a time, and their length.
pub(crate) fn quick_bytes(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    let mut h = quick_mix(0, bytes.len() as u64);
    for chunk in &mut chunks {
        h = quick_mix(h, u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
    }
    let mut tail = [0u8; 8];
    let rest = chunks.remainder();
    // An empty rest (a request of whole words) copies nothing, but the copy of a length only
    // known at run time is a `memcpy` call: about 15 instructions a fingerprint, two a datagram.
    if !rest.is_empty() {
        tail[..rest.len()].copy_from_slice(rest);
    }
    quick_mix(h, u64::from_le_bytes(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key whose quick hash is whatever the test says, to force cache collisions.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct Key(u32, u64);

    impl SourceKey for Key {
        fn quick_hash(&self) -> u64 {
            self.1
        }
    }

    #[test]
    fn keys_that_collide_in_the_cache_keep_their_own_state() {
        let mut table = Sources::default();
        let (a, b) = (Key(1, 7), Key(2, 7)); // the same cache entry
        *table.get_or_insert_with(&a, || 0) += 1;
        *table.get_or_insert_with(&b, || 10) += 1;
        for _ in 0..3 {
            *table.get_mut(&a).unwrap() += 1;
            *table.get_mut(&b).unwrap() += 1;
        }
        assert_eq!(table.get_mut(&a), Some(&mut 4));
        assert_eq!(table.get_mut(&b), Some(&mut 14));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_removed_source_is_gone_even_if_its_slot_is_reused_or_still_cached() {
        let mut table = Sources::default();
        let (a, b) = (Key(1, 1 << 60), Key(2, 2 << 60));
        table.get_or_insert_with(&a, || "a");
        table.retain(|_| false);
        assert_eq!(table.len(), 0);
        assert!(!table.contains(&a), "cached, but its slot is empty");
        table.get_or_insert_with(&b, || "b"); // takes a's slot
        assert!(
            !table.contains(&a),
            "cached, but its slot holds another key"
        );
        assert_eq!(table.get_mut(&b), Some(&mut "b"));
        assert_eq!(table.values().count(), 1);
    }

    #[test]
    fn a_slot_found_earlier_answers_only_for_its_key() {
        let mut table = Sources::default();
        let (a, b) = (Key(1, 1 << 60), Key(2, 2 << 60));
        table.get_or_insert_with(&a, || "a");
        let (slot, _) = table.find(&a).unwrap();
        assert_eq!(table.at_if(slot, |k| *k == a), Some(&mut "a"));
        assert_eq!(table.at_if(slot, |k| *k == b), None, "another key");
        table.retain(|_| false);
        assert_eq!(table.at_if(slot, |k| *k == a), None, "removed");
        table.get_or_insert_with(&b, || "b"); // takes a's slot
        assert_eq!(
            table.at_if(slot, |k| *k == a),
            None,
            "reused by another key"
        );
        assert_eq!(table.at_if(slot, |k| *k == b), Some(&mut "b"));
        assert_eq!(table.at_if(slot + 1, |k| *k == b), None, "past the end");
    }

    #[test]
    fn a_place_holds_until_keys_are_removed() {
        let mut table = Sources::default();
        let (a, b) = (Key(1, 1 << 60), Key(2, 2 << 60));
        let (place, _) = table.place_or_insert_with(&a, || "a");
        assert_eq!(table.place_or_insert_with(&a, || "new").0, place);
        table.get_or_insert_with(&b, || "b");
        assert_eq!(
            table.at_place(place),
            Some(&mut "a"),
            "an insert moves nothing"
        );
        table.retain(|v| *v == "a");
        assert_eq!(table.at_place(place), None, "keys were removed");
        let (again, _) = table.place_or_insert_with(&a, || "new");
        assert_eq!(table.at_place(again), Some(&mut "a"));
        table.retain(|_| false);
        table.get_or_insert_with(&b, || "b"); // takes a's slot
        assert_eq!(table.at_place(again), None, "a's slot holds b now");
        assert_eq!(table.at_if(again.slot, |k| *k == b), Some(&mut "b"));
        assert_eq!(table.at_if(again.slot, |k| *k == a), None);
    }

    #[test]
    fn many_sources_are_all_found_through_a_small_cache() {
        let mut table = Sources::default();
        let keys: Vec<Key> = (0..10 * CACHE_SLOTS as u32)
            .map(|i| Key(i, quick_mix(0, u64::from(i))))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            table.get_or_insert_with(k, || i);
        }
        table.retain(|v| v % 2 == 0);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(
                table.get_mut(k).copied(),
                (i % 2 == 0).then_some(i),
                "{k:?}"
            );
        }
        assert_eq!(table.len(), keys.len() / 2);
    }
}

//! The core's transaction tables: entries in a dense slab, found by key through a small index.
//!
//! A table is sized for the most transactions the switch takes (`max_transactions`, 200,000):
//! grown on demand, each doubling rehashed every entry at once and held up every message behind
//! it. But a hash table of whole entries that size (130-160 bytes a bucket, 53 MB for both
//! tables) is touched at random: at 500 calls/s each new transaction faulted in a page of its
//! own (the inserts alone were 7% of the process's samples in `perf`), and each timer that came
//! due missed the cache two or three times (the key's bucket, the key's text, the boxed
//! transaction). Here the index holds only key and slot (24 bytes a bucket); the entries lie
//! together in a slab (grown a chunk at a time, never moved) whose freed places are used again
//! first, so the pages touched are those of the most transactions live at once; and a timer
//! names its transaction by [`Slot`], reached without hashing, its generation telling whether it
//! is still the transaction the timer was set for.

use sip::transaction::TransactionKey;

use super::HashMap;

/// Where an entry lies, and which of the entries that lay there it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    index: u32,
    generation: u32,
}

pub(crate) struct TransactionTable<E> {
    index: HashMap<TransactionKey, u32>,
    /// Places in chunks of [`CHUNK`], each full but the last: the slab grows a chunk at a time
    /// and never moves what it holds (one `Vec` of 100,000 client transactions, about 45 MB,
    /// would be copied whole when it outgrew its reservation, the whole switch waiting).
    slab: Vec<Vec<Place<E>>>,
    /// Free places, the last freed on top: taken again first, while still in the cache.
    free: Vec<u32>,
}

/// Places a chunk (a power of two: a place's chunk and offset are a shift and a mask).
const CHUNK: usize = 1024;

struct Place<E> {
    /// Counts the entries this place has held: a [`Slot`] of an earlier one finds nothing.
    generation: u32,
    occupant: Option<(TransactionKey, E)>,
}

impl<E> TransactionTable<E> {
    /// A table whose index holds `capacity` keys without growing. The slab takes memory a
    /// chunk at a time, as far as entries are live at once.
    pub(crate) fn with_capacity(capacity: usize) -> TransactionTable<E> {
        TransactionTable {
            index: HashMap::with_capacity_and_hasher(capacity, Default::default()),
            slab: Vec::with_capacity(capacity.div_ceil(CHUNK)),
            free: Vec::new(),
        }
    }

    fn place(&self, index: u32) -> Option<&Place<E>> {
        let i = index as usize;
        self.slab.get(i / CHUNK)?.get(i % CHUNK)
    }

    fn place_mut(&mut self, index: u32) -> Option<&mut Place<E>> {
        let i = index as usize;
        self.slab.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }

    /// A place never used yet, at the end of the slab.
    fn new_place(&mut self) -> u32 {
        if self.slab.last().is_none_or(|chunk| chunk.len() == CHUNK) {
            self.slab.push(Vec::with_capacity(CHUNK));
        }
        let full = self.slab.len() - 1;
        let Some(chunk) = self.slab.last_mut() else { unreachable!("a chunk was just made") };
        let index = u32::try_from(full * CHUNK + chunk.len()).expect("fewer than 2^32 transactions");
        chunk.push(Place { generation: 0, occupant: None });
        index
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Adds `value` under `key` (replacing any entry it had: the old one's slots go stale).
    pub(crate) fn insert(&mut self, key: TransactionKey, value: E) -> Slot {
        self.remove(&key);
        let index = match self.free.pop() {
            Some(i) => i,
            None => self.new_place(),
        };
        let Some(place) = self.place_mut(index) else { unreachable!("a free or new place is in the slab") };
        place.occupant = Some((key.clone(), value));
        let generation = place.generation;
        self.index.insert(key, index);
        Slot { index, generation }
    }

    pub(crate) fn slot_of(&self, key: &TransactionKey) -> Option<Slot> {
        let &index = self.index.get(key)?;
        Some(Slot { index, generation: self.place(index)?.generation })
    }

    pub(crate) fn get(&self, key: &TransactionKey) -> Option<&E> {
        let &index = self.index.get(key)?;
        self.place(index)?.occupant.as_ref().map(|(_, e)| e)
    }

    pub(crate) fn get_mut(&mut self, key: &TransactionKey) -> Option<&mut E> {
        self.get_slot_mut(key).map(|(_, e)| e)
    }

    /// The entry of `key` and its slot.
    pub(crate) fn get_slot_mut(&mut self, key: &TransactionKey) -> Option<(Slot, &mut E)> {
        let &index = self.index.get(key)?;
        let place = self.place_mut(index)?;
        let slot = Slot { index, generation: place.generation };
        place.occupant.as_mut().map(|(_, e)| (slot, e))
    }

    /// The entry at `slot`, with its key, if it is still the one the slot was taken for.
    pub(crate) fn at_mut(&mut self, slot: Slot) -> Option<(&TransactionKey, &mut E)> {
        let place = self.place_mut(slot.index)?;
        if place.generation != slot.generation {
            return None;
        }
        place.occupant.as_mut().map(|(k, e)| (&*k, e))
    }

    pub(crate) fn remove(&mut self, key: &TransactionKey) -> Option<E> {
        let index = self.index.remove(key)?;
        self.vacate(index).map(|(_, e)| e)
    }

    /// Removes the entry at `slot` (if still the one it was taken for), with its key.
    pub(crate) fn remove_at(&mut self, slot: Slot) -> Option<(TransactionKey, E)> {
        let place = self.place(slot.index)?;
        if place.generation != slot.generation || place.occupant.is_none() {
            return None;
        }
        let (key, value) = self.vacate(slot.index)?;
        self.index.remove(&key);
        Some((key, value))
    }

    fn vacate(&mut self, index: u32) -> Option<(TransactionKey, E)> {
        let place = self.place_mut(index)?;
        let taken = place.occupant.take()?;
        place.generation = place.generation.wrapping_add(1);
        self.free.push(index);
        Some(taken)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &E> {
        self.slab.iter().flatten().filter_map(|p| p.occupant.as_ref().map(|(_, e)| e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(n: u8) -> TransactionKey {
        let text = format!(
            "OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{n}\r\n\
             From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        let msg = sip::Message::parse(text.into(), sip::Framing::Datagram).expect("parses");
        TransactionKey::for_server(&msg).expect("a key")
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
        /// Removes through the slot the key had when it was last inserted.
        RemoveAt(u8),
        /// Writes through the slot the key had when it was last inserted.
        WriteAt(u8, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..24, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => (0u8..24).prop_map(Op::Remove),
            1 => (0u8..24).prop_map(Op::RemoveAt),
            2 => (0u8..24, any::<u32>()).prop_map(|(k, v)| Op::WriteAt(k, v)),
        ]
    }

    proptest! {
        /// Against a plain map: the same entries by key, and a slot reaches its entry while
        /// that entry lives and nothing once it was removed or replaced, whoever took its place.
        #[test]
        fn behaves_as_a_map_whose_slots_go_stale(ops in proptest::collection::vec(op(), 0..300)) {
            let mut table = TransactionTable::with_capacity(4);
            let mut model: std::collections::HashMap<u8, u32> = Default::default();
            // The slot of each key's latest insert, and whether that entry still lives.
            let mut slots: std::collections::HashMap<u8, (Slot, bool)> = Default::default();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let slot = table.insert(key(k), v);
                        model.insert(k, v);
                        slots.insert(k, (slot, true));
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(table.remove(&key(k)), model.remove(&k));
                        if let Some(s) = slots.get_mut(&k) { s.1 = false; }
                    }
                    Op::RemoveAt(k) => {
                        let Some(&(slot, live)) = slots.get(&k) else { continue };
                        let removed = table.remove_at(slot);
                        prop_assert_eq!(removed.is_some(), live);
                        if let Some((rk, rv)) = removed {
                            prop_assert_eq!(rk, key(k));
                            prop_assert_eq!(Some(rv), model.remove(&k));
                        }
                        slots.insert(k, (slot, false));
                    }
                    Op::WriteAt(k, v) => {
                        let Some(&(slot, live)) = slots.get(&k) else { continue };
                        match table.at_mut(slot) {
                            Some((rk, e)) => {
                                prop_assert!(live);
                                prop_assert_eq!(rk, &key(k));
                                *e = v;
                                model.insert(k, v);
                            }
                            None => prop_assert!(!live),
                        }
                    }
                }
                prop_assert_eq!(table.len(), model.len());
                for k in 0u8..24 {
                    prop_assert_eq!(table.get(&key(k)).copied(), model.get(&k).copied());
                    prop_assert_eq!(table.slot_of(&key(k)).is_some(), model.contains_key(&k));
                }
                let mut values: Vec<u32> = table.values().copied().collect();
                let mut expected: Vec<u32> = model.values().copied().collect();
                values.sort_unstable();
                expected.sort_unstable();
                prop_assert_eq!(values, expected);
            }
        }
    }

    fn numbered_key(n: usize) -> TransactionKey {
        let text = format!(
            "OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-{n}\r\n\
             From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        let msg = sip::Message::parse(text.into(), sip::Framing::Datagram).expect("parses");
        TransactionKey::for_server(&msg).expect("a key")
    }

    /// Growing past its first chunks moves no entry (a copy of a whole slab was the stall this
    /// table is made to avoid), and every entry stays reachable by key and by slot.
    #[test]
    fn entries_stay_in_place_as_the_slab_grows() {
        let mut table = TransactionTable::with_capacity(16);
        let first = table.insert(numbered_key(0), 0usize);
        let before: *const usize = table.at_mut(first).map(|(_, v)| &*v as *const usize).expect("live");
        let slots: Vec<Slot> = (1..3 * CHUNK + 5).map(|n| table.insert(numbered_key(n), n)).collect();
        let after: *const usize = table.at_mut(first).map(|(_, v)| &*v as *const usize).expect("live");
        assert_eq!(before, after, "the first entry did not move");
        assert_eq!(table.slab.len(), 4);
        for (n, slot) in (1..).zip(&slots) {
            assert_eq!(table.at_mut(*slot).map(|(_, v)| *v), Some(n));
            assert_eq!(table.get(&numbered_key(n)), Some(&n));
        }
        assert_eq!(table.remove(&numbered_key(CHUNK + 7)), Some(CHUNK + 7));
        let reused = table.insert(numbered_key(9_999), 9_999);
        assert_eq!(reused.index as usize, CHUNK + 7, "the freed place in the second chunk");
        assert_eq!(table.len(), 3 * CHUNK + 5);
        assert_eq!(table.values().count(), 3 * CHUNK + 5);
    }

    #[test]
    fn a_freed_place_is_taken_again_first() {
        let mut table = TransactionTable::with_capacity(4);
        let a = table.insert(key(1), 1);
        let b = table.insert(key(2), 2);
        table.remove(&key(1));
        let c = table.insert(key(3), 3);
        assert_eq!(c.index, a.index, "the freed place, not a new one");
        assert_ne!(c, a, "a new generation");
        assert_eq!(table.slab.iter().map(Vec::len).sum::<usize>(), 2);
        assert!(table.at_mut(a).is_none());
        assert_eq!(table.at_mut(b).map(|(_, v)| *v), Some(2));
    }
}

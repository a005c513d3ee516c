//! The switch core's deadlines: a hashed timing wheel of millisecond ticks.
//!
//! A core holds a deadline for every live transaction and call, tens of thousands at a few
//! thousand calls a second, nearly all of them 64*T1 (32 s) or T1-based. A binary heap of them
//! paid a sift through a multi-megabyte array, a cache miss a level, on every deadline popped:
//! about 4% of the process's user time at 500 calls/s. Here a deadline goes into the slot of
//! its millisecond and the slots are emptied in order as time passes: O(1) to add and to take,
//! and the entries taken together lie together. Deadlines beyond the wheel's reach (a call's
//! time limit) wait in a heap and move onto the wheel as it turns.
//!
//! Time is passed in (sans-I/O). A deadline is due once the clock has reached the end of its
//! millisecond, never before it: at most 1 ms late, the resolution of the runtime's own timer.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Slots on the wheel, a tick (1 ms) each: 32.8 s ahead, past the 64*T1 = 32 s that most of a
/// transaction's deadlines are.
const SLOTS: usize = 1 << 15;
const WORDS: usize = SLOTS / 64;
const TICK: Duration = Duration::from_millis(1);

pub(crate) struct TimerWheel<T> {
    /// Ticks count milliseconds from the first instant the wheel saw (either way of it).
    origin: Option<Instant>,
    /// Every deadline of a tick up to this one has been moved to `firing`. `None` until the
    /// first `pop_due`.
    current: Option<i64>,
    /// Ticks `current + 1 ..= current + SLOTS`, each in the slot `tick mod SLOTS`.
    slots: Vec<Vec<(Instant, T)>>,
    /// A bit per slot holding entries, to skip empty ones a word at a time; and a bit per word
    /// of those with any set, so a sparse wheel is searched in a few words, not hundreds.
    occupied: Vec<u64>,
    summary: [u64; WORDS / 64],
    /// Due, not yet taken.
    firing: Vec<(Instant, T)>,
    /// Beyond the wheel's reach (or before the first `pop_due`), by tick.
    later: BinaryHeap<Reverse<Later<T>>>,
}

/// Ordered by tick alone: those of one tick go onto the wheel together, in any order.
struct Later<T> {
    tick: i64,
    at: Instant,
    value: T,
}

impl<T> PartialEq for Later<T> {
    fn eq(&self, other: &Self) -> bool {
        self.tick == other.tick
    }
}
impl<T> Eq for Later<T> {}
impl<T> PartialOrd for Later<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Later<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.tick.cmp(&other.tick)
    }
}

impl<T> Default for TimerWheel<T> {
    fn default() -> Self {
        TimerWheel {
            origin: None,
            current: None,
            slots: std::iter::repeat_with(Vec::new).take(SLOTS).collect(),
            occupied: vec![0; WORDS],
            summary: [0; WORDS / 64],
            firing: Vec::new(),
            later: BinaryHeap::new(),
        }
    }
}

impl<T> TimerWheel<T> {
    /// How many deadlines it holds (counted: only the tests ask).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().map(Vec::len).sum::<usize>() + self.firing.len() + self.later.len()
    }

    /// Adds a deadline.
    pub(crate) fn push(&mut self, at: Instant, value: T) {
        let tick = self.tick_of(at, true);
        self.place(tick, at, value);
    }

    fn place(&mut self, tick: i64, at: Instant, value: T) {
        match self.current {
            Some(c) if tick <= c => self.firing.push((at, value)),
            Some(c) if tick - c <= SLOTS as i64 => {
                let slot = tick.rem_euclid(SLOTS as i64) as usize;
                self.slots[slot].push((at, value));
                self.mark(slot);
            }
            _ => self.later.push(Reverse(Later { tick, at, value })),
        }
    }

    /// A deadline due at `now`, if any (in no particular order among those due).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, T)> {
        if self.firing.is_empty() {
            let target = self.tick_of(now, false);
            self.advance(target);
        }
        self.firing.pop()
    }

    /// The earliest deadline, rounded up to its tick: an instant already past when some are
    /// due and not yet taken.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let tick = match self.current {
            Some(c) if !self.firing.is_empty() => c,
            Some(c) => match (self.next_occupied(c), self.later.peek()) {
                (Some(t), _) => t,
                (None, Some(Reverse(l))) => l.tick,
                (None, None) => return None,
            },
            None => self.later.peek()?.0.tick,
        };
        Some(self.instant_of(tick))
    }

    /// Turns the wheel to `target`, moving what is due onto `firing`; stops early at the first
    /// slot that holds any.
    fn advance(&mut self, target: i64) {
        let Some(c) = self.current else {
            self.current = Some(target);
            self.take_later(target);
            return;
        };
        if target <= c {
            return;
        }
        match self.next_occupied(c).filter(|&t| t <= target) {
            Some(tick) => {
                self.current = Some(tick);
                let slot = tick.rem_euclid(SLOTS as i64) as usize;
                self.unmark(slot);
                // `firing` is empty here: the slot's list becomes it, and its spare
                // capacity goes back to the slot.
                std::mem::swap(&mut self.slots[slot], &mut self.firing);
                self.take_later(tick);
            }
            None => {
                self.current = Some(target);
                self.take_later(target);
            }
        }
    }

    /// Moves the deadlines now within the wheel's reach (or due) from `later` onto it.
    fn take_later(&mut self, current: i64) {
        while self.later.peek().is_some_and(|Reverse(l)| l.tick - current <= SLOTS as i64) {
            let Some(Reverse(l)) = self.later.pop() else { break };
            self.place(l.tick, l.at, l.value);
        }
    }

    /// The first tick after `current` whose slot holds entries.
    fn next_occupied(&self, current: i64) -> Option<i64> {
        let start = (current + 1).rem_euclid(SLOTS as i64) as usize;
        let (word, bit) = (start / 64, start % 64);
        let tick = |slot: usize| current + 1 + ((slot + SLOTS - start) % SLOTS) as i64;
        let here = self.occupied[word] & (!0u64 << bit);
        if here != 0 {
            return Some(tick(word * 64 + here.trailing_zeros() as usize));
        }
        // The words after this one; else, from the first, the word holding entries (nothing
        // lies after this one, so it is at most this one, whose slots before `start` are the
        // wheel's last ticks).
        let w = self.first_word(word + 1).or_else(|| self.first_word(0))?;
        Some(tick(w * 64 + self.occupied[w].trailing_zeros() as usize))
    }

    /// The first word of `occupied` from `from` on with a bit set, found through `summary`.
    fn first_word(&self, from: usize) -> Option<usize> {
        let mut i = from;
        while i < WORDS {
            let bits = self.summary[i / 64] & (!0u64 << (i % 64));
            if bits != 0 {
                return Some((i / 64) * 64 + bits.trailing_zeros() as usize);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }

    fn mark(&mut self, slot: usize) {
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.summary[slot / 64 / 64] |= 1 << ((slot / 64) % 64);
    }

    fn unmark(&mut self, slot: usize) {
        self.occupied[slot / 64] &= !(1 << (slot % 64));
        if self.occupied[slot / 64] == 0 {
            self.summary[slot / 64 / 64] &= !(1 << ((slot / 64) % 64));
        }
    }

    /// The tick of `t` (counted from the origin, which the first instant seen becomes), rounded
    /// up for a deadline (due once the clock reaches the end of its millisecond) or down for the
    /// clock (the tick it is in).
    fn tick_of(&mut self, t: Instant, up: bool) -> i64 {
        let origin = *self.origin.get_or_insert(t);
        match t.checked_duration_since(origin) {
            Some(d) => ticks(d.as_nanos(), up),
            None => -ticks(origin.duration_since(t).as_nanos(), !up),
        }
    }

    fn instant_of(&self, tick: i64) -> Instant {
        let Some(origin) = self.origin else { unreachable!("a tick implies an origin") };
        let d = TICK * u32::try_from(tick.unsigned_abs()).unwrap_or(u32::MAX);
        if tick >= 0 { origin.checked_add(d) } else { origin.checked_sub(d) }.unwrap_or(origin)
    }
}

/// Nanoseconds in whole ticks, rounded up or down.
fn ticks(nanos: u128, up: bool) -> i64 {
    let tick = TICK.as_nanos();
    let n = if up { nanos.div_ceil(tick) } else { nanos / tick };
    i64::try_from(n).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// A deadline this many microseconds from the clock (before it when negative).
        Push(i64),
        /// The clock moves on this many microseconds, then everything due is taken.
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (-5_000_000i64..40_000_000).prop_map(Op::Push),
            1 => (-2_000i64..2_000).prop_map(Op::Push),
            1 => (200_000_000i64..400_000_000).prop_map(Op::Push),
            // About the wheel's reach, where a slot just behind the current one is used.
            1 => (SLOTS as i64 * 1000 - 70_000..SLOTS as i64 * 1000 + 2_000).prop_map(Op::Push),
            3 => (0u64..3_000).prop_map(Op::Advance),
            2 => (0u64..50_000_000).prop_map(Op::Advance),
        ]
    }

    fn offset(base: Instant, us: i64) -> Instant {
        let d = Duration::from_micros(us.unsigned_abs());
        if us >= 0 { base + d } else { base - d }
    }

    proptest! {
        /// Against a plain list: what `pop_due` gives at each moment is exactly the deadlines
        /// whose millisecond (counted from the first instant seen, rounded up) the clock has
        /// reached, none twice; nothing is early; `next_deadline` is the earliest left.
        #[test]
        fn takes_exactly_what_is_due(ops in proptest::collection::vec(op(), 1..120)) {
            let start = Instant::now() + Duration::from_secs(10);
            let mut wheel = TimerWheel::default();
            let mut model: Vec<(Instant, u32)> = Vec::new();
            let mut now = start;
            let mut origin: Option<Instant> = None;
            let mut id = 0;
            let ms = |origin: Instant, t: Instant, up: bool| -> i128 {
                let ns = if t >= origin { (t - origin).as_nanos() as i128 } else { -((origin - t).as_nanos() as i128) };
                if up { ns.div_euclid(1_000_000) + i128::from(ns.rem_euclid(1_000_000) != 0) } else { ns.div_euclid(1_000_000) }
            };
            for op in ops {
                match op {
                    Op::Push(us) => {
                        let at = offset(now, us);
                        origin.get_or_insert(at);
                        wheel.push(at, id);
                        model.push((at, id));
                        id += 1;
                    }
                    Op::Advance(us) => {
                        now += Duration::from_micros(us);
                        let o = *origin.get_or_insert(now);
                        let mut got: Vec<u32> = std::iter::from_fn(|| wheel.pop_due(now))
                            .map(|(at, v)| { assert!(at <= now, "early: {at:?} > {now:?}"); v })
                            .collect();
                        let mut want: Vec<u32> = model.iter().filter(|(at, _)| ms(o, *at, true) <= ms(o, now, false)).map(|e| e.1).collect();
                        model.retain(|(at, _)| ms(o, *at, true) > ms(o, now, false));
                        got.sort_unstable();
                        want.sort_unstable();
                        prop_assert_eq!(got, want);
                        prop_assert_eq!(wheel.len(), model.len());
                        let earliest = model.iter().map(|(at, _)| ms(o, *at, true)).min();
                        let next = wheel.next_deadline().map(|t| ms(o, t, false));
                        prop_assert_eq!(next, earliest);
                    }
                }
            }
        }
    }

    /// A deadline a whole wheel ahead lands in the slot just emptied, behind the search's start
    /// in the same word of the bitmap.
    #[test]
    fn the_slot_just_behind_the_current_one_is_found() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::default();
        assert_eq!(wheel.pop_due(t0), None);
        assert_eq!(wheel.pop_due(t0 + Duration::from_millis(10)), None);
        let far = t0 + Duration::from_millis(10 + SLOTS as u64);
        wheel.push(far, ());
        assert_eq!(wheel.next_deadline(), Some(far));
        assert_eq!(wheel.pop_due(far - Duration::from_millis(1)), None);
        assert_eq!(wheel.pop_due(far), Some((far, ())));
    }

    #[test]
    fn a_deadline_beyond_the_wheel_waits_for_it_to_turn() {
        let t0 = Instant::now();
        let mut wheel = TimerWheel::default();
        wheel.push(t0 + Duration::from_secs(3600), "limit");
        wheel.push(t0 + Duration::from_millis(500), "retransmit");
        assert_eq!(wheel.pop_due(t0), None);
        assert_eq!(wheel.next_deadline(), Some(t0 + Duration::from_millis(500)));
        assert_eq!(wheel.pop_due(t0 + Duration::from_millis(500)).map(|d| d.1), Some("retransmit"));
        assert_eq!(wheel.next_deadline(), Some(t0 + Duration::from_secs(3600)));
        assert_eq!(wheel.pop_due(t0 + Duration::from_secs(3599)), None);
        assert_eq!(wheel.pop_due(t0 + Duration::from_secs(3600)).map(|d| d.1), Some("limit"));
        assert_eq!(wheel.len(), 0);
        assert_eq!(wheel.next_deadline(), None);
    }
}

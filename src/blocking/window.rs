//! Exact sliding windows at the evaluation granularity, for many keys.
//!
//! A [`Table`] tracks keys (clients, name suffixes, answered names). Each
//! evaluation is a tick: the counts every key gathered since the last one
//! are appended as the tick's records and added to the key's running sums
//! (one sum per `(counter, window)` pair the rules need). When a tick
//! falls out of a window, its records are subtracted from that window's
//! sums. Memory is therefore per key (the sums) plus per key and active
//! tick (a record), never per key and *possible* tick: no ring buffer per
//! key, so no ceiling on rate × window, and a quiet key costs nothing
//! once its last tick has left the longest window (it is dropped then).
//!
//! Keys past `max` are evicted lightest first (the caller says what
//! "light" means). A slot freed and reused keeps no old records: each
//! slot remembers the tick it was taken at, and records older than that
//! are skipped.

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::clock::UnixMillis;

const FREE: u32 = u32::MAX;

/// One evaluation's records: `(slot, counts…)` with `1 + counters` u32 each.
#[derive(Debug)]
struct Tick {
    seq: u32,
    time: UnixMillis,
    records: Vec<u32>,
}

/// A window's position in the tick ring.
#[derive(Debug, Clone)]
struct Window {
    len_ms: u64,
    /// The oldest tick still inside this window.
    first_seq: u32,
}

#[derive(Debug)]
pub struct Table<K> {
    keys: Vec<K>,
    index: HashTable<u32>,
    /// Tick seq the slot was taken at (`FREE` when free).
    born: Vec<u32>,
    /// Last tick seq with a record.
    last: Vec<u32>,
    /// `pairs.len()` sums per slot.
    sums: Vec<u32>,
    /// `(counter, window index)` of each sum.
    pairs: Vec<(usize, usize)>,
    windows: Vec<Window>,
    counters: usize,
    free: Vec<u32>,
    ring: VecDeque<Tick>,
    spare: Vec<Vec<u32>>,
    seq: u32,
    len: usize,
    /// Slots whose sums went down in the last `advance` (for ratio rules).
    pub decreased: Vec<u32>,
}

fn hash<Q: Hash + ?Sized>(q: &Q) -> u64 {
    FxBuildHasher.hash_one(q)
}

impl<K> Table<K> {
    /// `pairs` are `(counter, window length)`; the window lengths must be
    /// positive.
    pub fn new(counters: usize, pairs: &[(usize, u64)]) -> Table<K> {
        let mut windows: Vec<Window> = Vec::new();
        let mut idx = Vec::new();
        for &(c, len) in pairs {
            let w = match windows.iter().position(|w| w.len_ms == len) {
                Some(w) => w,
                None => {
                    windows.push(Window { len_ms: len.max(1), first_seq: 1 });
                    windows.len() - 1
                }
            };
            idx.push((c, w));
        }
        Table {
            keys: Vec::new(),
            index: HashTable::new(),
            born: Vec::new(),
            last: Vec::new(),
            sums: Vec::new(),
            pairs: idx,
            windows,
            counters,
            free: Vec::new(),
            ring: VecDeque::new(),
            spare: Vec::new(),
            seq: 0,
            len: 0,
            decreased: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The index of the sum of `(counter, window)`.
    pub fn pair(&self, counter: usize, window_ms: u64) -> Option<usize> {
        self.pairs.iter().position(|&(c, w)| c == counter && self.windows[w].len_ms == window_ms)
    }

    #[inline]
    pub fn sum(&self, slot: u32, pair: usize) -> u32 {
        self.sums[slot as usize * self.pairs.len() + pair]
    }

    pub fn key(&self, slot: u32) -> &K {
        &self.keys[slot as usize]
    }

    pub fn is_live(&self, slot: u32) -> bool {
        self.born.get(slot as usize).is_some_and(|b| *b != FREE)
    }

    /// Every live slot.
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.born.len() as u32).filter(|s| self.born[*s as usize] != FREE)
    }

    /// Slots with a record in the current tick.
    pub fn current(&self) -> impl Iterator<Item = u32> + '_ {
        let stride = 1 + self.counters;
        self.ring.back().into_iter().flat_map(move |t| t.records.chunks_exact(stride).map(|r| r[0]))
    }

    /// Starts the tick at `time` (after the previous one).
    pub fn begin(&mut self, time: UnixMillis) {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == FREE {
            self.seq = 1;
        }
        let records = self.spare.pop().unwrap_or_default();
        self.ring.push_back(Tick { seq: self.seq, time, records });
    }

    /// Bytes held per live key (sums, bookkeeping, index), for the memory
    /// figures.
    pub fn bytes_per_key(&self) -> usize {
        std::mem::size_of::<K>() + 8 + 4 * self.pairs.len() + 5
    }

    /// Bytes held by the tick ring's records.
    pub fn record_bytes(&self) -> usize {
        self.ring.iter().map(|t| t.records.capacity() * 4).sum()
    }
}

impl<K: Hash + Eq> Table<K> {
    fn find<Q>(&self, q: &Q, h: u64) -> Option<u32>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.index.find(h, |&s| self.keys[s as usize].borrow() == q).copied()
    }

    pub fn get<Q>(&self, q: &Q) -> Option<u32>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.find(q, hash(q))
    }

    /// Adds `counts` (one per counter) for the key in the current tick;
    /// `make` builds the owned key when it is new. Returns the slot.
    pub fn add<Q>(&mut self, q: &Q, counts: &[u32], make: impl FnOnce(&Q) -> K) -> u32
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let h = hash(q);
        let slot = match self.find(q, h) {
            Some(s) => s,
            None => {
                let key = make(q);
                let np = self.pairs.len();
                let s = match self.free.pop() {
                    Some(s) => {
                        self.keys[s as usize] = key;
                        self.sums[s as usize * np..(s as usize + 1) * np].fill(0);
                        s
                    }
                    None => {
                        self.keys.push(key);
                        self.born.push(FREE);
                        self.last.push(0);
                        self.sums.extend(std::iter::repeat_n(0, np));
                        (self.keys.len() - 1) as u32
                    }
                };
                self.born[s as usize] = self.seq;
                let keys = &self.keys;
                self.index.insert_unique(h, s, |&x| hash(keys[x as usize].borrow()));
                self.len += 1;
                s
            }
        };
        self.last[slot as usize] = self.seq;
        let np = self.pairs.len();
        let base = slot as usize * np;
        for (p, &(c, _)) in self.pairs.iter().enumerate() {
            let v = counts.get(c).copied().unwrap_or(0);
            self.sums[base + p] = self.sums[base + p].saturating_add(v);
        }
        if let Some(t) = self.ring.back_mut() {
            t.records.push(slot);
            t.records.extend((0..self.counters).map(|c| counts.get(c).copied().unwrap_or(0)));
        }
        slot
    }

    fn release(&mut self, slot: u32) {
        let h = hash(self.keys[slot as usize].borrow());
        if let Ok(e) = self.index.find_entry(h, |&s| s == slot) {
            e.remove();
        }
        self.born[slot as usize] = FREE;
        self.free.push(slot);
        self.len -= 1;
    }

    /// Ends the tick at `now`: every tick that left a window is subtracted
    /// from that window's sums, ticks that left every window are dropped,
    /// and so are keys with no record left.
    pub fn advance(&mut self, now: UnixMillis) {
        self.decreased.clear();
        let stride = 1 + self.counters;
        let np = self.pairs.len();
        let Some(front) = self.ring.front().map(|t| t.seq) else { return };
        for w in 0..self.windows.len() {
            let len = self.windows[w].len_ms;
            loop {
                let seq = self.windows[w].first_seq.max(front);
                let Some(tick) = self.ring.get(seq.wrapping_sub(front) as usize) else { break };
                if tick.time + len > now {
                    break;
                }
                for r in tick.records.chunks_exact(stride) {
                    let slot = r[0] as usize;
                    let born = self.born[slot];
                    if born == FREE || born > tick.seq {
                        continue;
                    }
                    for (p, &(c, pw)) in self.pairs.iter().enumerate() {
                        if pw == w {
                            let s = &mut self.sums[slot * np + p];
                            *s = s.saturating_sub(r[1 + c]);
                        }
                    }
                    self.decreased.push(slot as u32);
                }
                self.windows[w].first_seq = seq + 1;
            }
        }
        // Ticks that every window has passed.
        let oldest = self.windows.iter().map(|w| w.first_seq).min().unwrap_or(self.seq + 1);
        while let Some(t) = self.ring.front() {
            if t.seq >= oldest {
                break;
            }
            let Some(mut t) = self.ring.pop_front() else { break };
            for r in t.records.chunks_exact(stride) {
                let slot = r[0];
                let born = self.born[slot as usize];
                if born != FREE && born <= t.seq && self.last[slot as usize] == t.seq {
                    self.release(slot);
                }
            }
            t.records.clear();
            if self.spare.len() < 64 {
                self.spare.push(t.records);
            }
        }
    }

    /// Evicts the lightest keys until at most `max × 15/16` remain, when
    /// more than `max` are tracked. Returns how many went.
    pub fn evict(&mut self, max: usize, weight: impl Fn(&Self, u32) -> f64) -> usize {
        if self.len <= max {
            return 0;
        }
        let target = max - max / 16;
        let mut w: Vec<(f64, u32)> = self.slots().map(|s| (weight(self, s), s)).collect();
        let n = w.len() - target;
        w.select_nth_unstable_by(n - 1, |a, b| a.0.total_cmp(&b.0));
        for &(_, s) in &w[..n] {
            self.release(s);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counter 0 over a 1 s window, counter 1 over 3 s, ticks of 100 ms.
    fn table() -> Table<u128> {
        Table::new(2, &[(0, 1000), (1, 3000)])
    }

    fn tick(t: &mut Table<u128>, now: u64, adds: &[(u128, u32, u32)]) {
        t.begin(now);
        for &(k, a, b) in adds {
            t.add(&k, &[a, b], |k| *k);
        }
        t.advance(now);
    }

    #[test]
    fn sums_slide_exactly_per_window() {
        let mut t = table();
        let p0 = t.pair(0, 1000).unwrap();
        let p1 = t.pair(1, 3000).unwrap();
        tick(&mut t, 100, &[(7, 5, 5)]);
        for now in (200..=1000).step_by(100) {
            tick(&mut t, now, &[(7, 1, 1)]);
        }
        let s = t.get(&7).unwrap();
        // Ticks 100..=1000 are all inside the 1 s window at 1000.
        assert_eq!(t.sum(s, p0), 14);
        tick(&mut t, 1100, &[]);
        // Tick 100 (5) left the 1 s window, not the 3 s one.
        assert_eq!(t.sum(s, p0), 9);
        assert_eq!(t.sum(s, p1), 14);
        tick(&mut t, 3000, &[]);
        // Ticks ≤ 2000 left the 1 s window.
        assert_eq!(t.sum(s, p0), 0);
        assert_eq!(t.sum(s, p1), 14);
        tick(&mut t, 3100, &[]);
        assert_eq!(t.sum(s, p1), 9);
        tick(&mut t, 4000, &[]);
        assert!(t.get(&7).is_none(), "a key with nothing left in any window is dropped");
        assert!(t.is_empty());
    }

    #[test]
    fn gaps_between_ticks_and_large_counts() {
        let mut t = table();
        let p0 = t.pair(0, 1000).unwrap();
        // 200 k/s for a 1 s window from one key: no ceiling.
        for i in 1..=10 {
            tick(&mut t, i * 100, &[(1, 20_000, 0)]);
        }
        assert_eq!(t.sum(t.get(&1).unwrap(), p0), 200_000);
        // An hour without ticks: everything is gone at the next one.
        tick(&mut t, 3_600_000, &[(2, 1, 0)]);
        assert!(t.get(&1).is_none());
        assert_eq!(t.sum(t.get(&2).unwrap(), p0), 1);
    }

    #[test]
    fn eviction_keeps_the_heaviest_and_reused_slots_start_clean() {
        let mut t = table();
        let p0 = t.pair(0, 1000).unwrap();
        t.begin(100);
        for k in 0..100u128 {
            t.add(&k, &[k as u32 + 1, 0], |k| *k);
        }
        t.advance(100);
        let gone = t.evict(64, |t, s| f64::from(t.sum(s, p0)));
        assert_eq!(gone, 40);
        assert_eq!(t.len(), 60);
        for k in 0..40u128 {
            assert!(t.get(&k).is_none(), "light key {k} evicted");
        }
        for k in 40..100u128 {
            assert_eq!(t.sum(t.get(&k).unwrap(), p0), k as u32 + 1);
        }
        // A new key takes a freed slot; the old records of that slot are
        // not subtracted from it when they leave the window.
        tick(&mut t, 200, &[(1000, 3, 0)]);
        let s = t.get(&1000).unwrap();
        tick(&mut t, 1100, &[]);
        assert_eq!(t.sum(s, p0), 3);
        tick(&mut t, 1200, &[]);
        assert_eq!(t.sum(s, p0), 0);
    }
}

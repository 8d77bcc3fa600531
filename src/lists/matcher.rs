//! The suffix matcher: which lists claim a name.
//!
//! Equivalent to a suffix trie keyed by labels, laid out for speed and
//! memory: every listed domain is stored once in a byte arena, and a hash
//! map goes from the hash of a label-wise suffix (computed right to left,
//! one label at a time) to the entries of that domain. A lookup hashes the
//! name's suffixes in one pass and probes one map slot per label, so its
//! cost depends on the number of labels, never on the size of the lists.
//! A probe hit is confirmed by comparing bytes, so hash collisions cannot
//! produce false matches.
//!
//! Semantics per list: the most specific entry wins, so `!sub.example.com`
//! carves a subtree out of `example.com`, and `example.com` under an
//! excluded `!com` is listed again. Lists are independent of each other.

use crate::names::NameBuf;

/// A bit per list (at most 64 lists, see `config::MAX_LISTS`).
pub type ListMask = u64;

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Entry {
    next: u32,
    text_start: u32,
    text_len: u16,
    list: u8,
    exclude: bool,
}

/// Listed text → the first entry of that text (the others follow `next`):
/// 4 bytes a bucket plus hashbrown's control byte. The hash is not stored;
/// growing the table recomputes it from the entry's text.
type Index = hashbrown::HashTable<u32>;

/// Hash of one more label to the left of a suffix whose hash is `h`.
#[inline]
fn extend(h: u64, label: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (h ^ label.len() as u64).wrapping_mul(K);
    let mut chunks = label.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(23) ^ w).wrapping_mul(K);
    }
    // The last 1-7 bytes in at most two loads (overlapping when the tail
    // is 5-7 bytes long; the length is already in the hash).
    let r = chunks.remainder();
    let n = r.len();
    let tail = if n >= 4 {
        u64::from(u32::from_le_bytes([r[0], r[1], r[2], r[3]]))
            | u64::from(u32::from_le_bytes([r[n - 4], r[n - 3], r[n - 2], r[n - 1]])) << 32
    } else if n > 0 {
        u64::from(r[0]) | u64::from(r[n / 2]) << 8 | u64::from(r[n - 1]) << 16
    } else {
        0
    };
    h = (h.rotate_left(23) ^ tail).wrapping_mul(K);
    // Finalizer (murmur3 fmix64): the map uses both high and low bits.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// Hash of the whole of `name` (the key it is inserted under).
#[inline]
fn name_hash(name: &NameBuf) -> u64 {
    (0..name.label_count()).rev().fold(0u64, |h, i| extend(h, name.label(i)))
}

/// [`name_hash`] of a name's text as stored (labels joined by dots).
fn text_hash(text: &[u8]) -> u64 {
    text.rsplit(|b| *b == b'.').fold(0u64, extend)
}

fn text_of<'a>(arena: &'a [u8], e: &Entry) -> &'a [u8] {
    &arena[e.text_start as usize..e.text_start as usize + e.text_len as usize]
}

/// Words of a filter with `FILTER_BITS_PER_KEY` bits for each of
/// `domains` (a power of two, at least 64 words).
fn filter_words(domains: usize) -> usize {
    (domains * FILTER_BITS_PER_KEY / 64).next_power_of_two().max(64)
}

/// An immutable set of listed domains for up to 64 lists.
pub struct DomainMatcher {
    index: Index,
    entries: Vec<Entry>,
    arena: Vec<u8>,
    /// One bit per hash slot, set for every key of `index`: most suffixes
    /// of a name are not listed, and this answers "no" for ~94 % of them
    /// from 16 bits per domain (32 KiB for 10 k domains, cache-resident)
    /// instead of a probe into the much larger hash map.
    filter: Vec<u64>,
}

/// Filter bits per domain (a power of two).
const FILTER_BITS_PER_KEY: usize = 16;

impl Default for DomainMatcher {
    fn default() -> Self {
        DomainMatcher::with_capacity(0)
    }
}

impl std::fmt::Debug for DomainMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainMatcher").field("entries", &self.entries.len()).finish()
    }
}

/// What `insert` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// The same domain with the same sense was already in that list.
    Duplicate,
    /// The same domain with the opposite sense is already in that list;
    /// the first one stays.
    Conflict,
}

impl DomainMatcher {
    pub fn with_capacity(domains: usize) -> DomainMatcher {
        DomainMatcher {
            index: Index::with_capacity(domains),
            entries: Vec::with_capacity(domains),
            arena: Vec::with_capacity(domains * 16),
            filter: vec![0; filter_words(domains)],
        }
    }

    /// The filter's word and bit of `key`: bits the hash map does not use
    /// for its own slot (low bits) and tag (top 7 bits).
    #[inline]
    fn filter_slot(&self, key: u64) -> (usize, u64) {
        let slot = (key >> 20) as usize & (self.filter.len() * 64 - 1);
        (slot / 64, 1 << (slot % 64))
    }

    /// Rebuilds the filter from the keys, for at least `domains`.
    fn rebuild_filter(&mut self, domains: usize) {
        self.filter = vec![0; filter_words(domains)];
        let keys: Vec<u64> =
            self.index.iter().map(|&id| text_hash(text_of(&self.arena, &self.entries[id as usize]))).collect();
        for key in keys {
            let (w, b) = self.filter_slot(key);
            self.filter[w] |= b;
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `name` (the whole name and its subtree) to list `list` (< 64).
    pub fn insert(&mut self, name: &NameBuf, list: u8, exclude: bool) -> Inserted {
        debug_assert!(list < 64);
        if name.is_root() {
            return Inserted::Duplicate;
        }
        let key = name_hash(name);
        let text = name.as_bytes();
        // One probe of the map for both the duplicate check and the insert.
        let (entries, arena) = (&self.entries, &self.arena);
        let slot = self.index.entry(
            key,
            |&id| text_of(arena, &entries[id as usize]) == text,
            |&id| text_hash(text_of(arena, &entries[id as usize])),
        );
        let head = match &slot {
            hashbrown::hash_table::Entry::Occupied(o) => *o.get(),
            hashbrown::hash_table::Entry::Vacant(_) => NONE,
        };
        let mut at = head;
        while at != NONE {
            let e = entries[at as usize];
            if e.list == list {
                return if e.exclude == exclude { Inserted::Duplicate } else { Inserted::Conflict };
            }
            at = e.next;
        }
        let new = entries.len() as u32;
        match slot {
            hashbrown::hash_table::Entry::Occupied(mut o) => *o.get_mut() = new,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(new);
            }
        }
        let text_start = self.arena.len() as u32;
        self.arena.extend_from_slice(text);
        self.entries.push(Entry { next: head, text_start, text_len: text.len() as u16, list, exclude });
        if self.index.len() * FILTER_BITS_PER_KEY > self.filter.len() * 64 {
            self.rebuild_filter(self.index.len() * 2);
        } else {
            let (w, b) = self.filter_slot(key);
            self.filter[w] |= b;
        }
        Inserted::New
    }

    /// The lists that claim `name`.
    ///
    /// One pass from the rightmost label: each suffix's hash extends the
    /// previous one and is probed at once (no array of hashes to fill), and
    /// a more specific suffix overrides what a less specific one decided
    /// for the lists it has entries in. A list has at most one entry per
    /// domain, so "most specific entry wins" is exactly this override.
    #[inline]
    pub fn lookup(&self, name: &NameBuf) -> ListMask {
        if self.entries.is_empty() {
            return 0;
        }
        let mut included: ListMask = 0;
        let mut h = 0u64;
        for i in (0..name.label_count()).rev() {
            h = extend(h, name.label(i));
            let (w, b) = self.filter_slot(h);
            if self.filter[w] & b == 0 {
                continue;
            }
            let suffix = name.suffix(i);
            let Some(&head) = self.index.find(h, |&id| text_of(&self.arena, &self.entries[id as usize]) == suffix)
            else {
                continue;
            };
            // Every entry of the chain has this text, one per list.
            let mut decided: ListMask = 0;
            let mut listed: ListMask = 0;
            let mut at = head;
            while at != NONE {
                let e = self.entries[at as usize];
                let bit = 1u64 << e.list;
                decided |= bit;
                if !e.exclude {
                    listed |= bit;
                }
                at = e.next;
            }
            included = (included & !decided) | listed;
        }
        included
    }

    /// Gives back the room reserved beyond what the entries use.
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
        self.arena.shrink_to_fit();
        let (entries, arena) = (&self.entries, &self.arena);
        self.index.shrink_to_fit(|&id| text_hash(text_of(arena, &entries[id as usize])));
        if self.filter.len() > filter_words(self.index.len()) {
            self.rebuild_filter(self.index.len());
        }
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.index.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.arena.capacity()
            + self.filter.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NameBuf {
        NameBuf::from_text(s).unwrap()
    }

    fn matcher(lines: &[(&str, u8, bool)]) -> DomainMatcher {
        let mut m = DomainMatcher::default();
        for (d, l, x) in lines {
            m.insert(&n(d), *l, *x);
        }
        m
    }

    #[test]
    fn label_aware_suffix_matching() {
        let m = matcher(&[("face.com", 0, false), ("example.com", 1, false)]);
        assert_eq!(m.lookup(&n("face.com")), 1);
        assert_eq!(m.lookup(&n("www.face.com")), 1);
        assert_eq!(m.lookup(&n("a.b.c.face.com")), 1);
        assert_eq!(m.lookup(&n("facebook.com")), 0);
        assert_eq!(m.lookup(&n("www.facebook.com")), 0);
        assert_eq!(m.lookup(&n("notface.com")), 0);
        assert_eq!(m.lookup(&n("com")), 0);
        assert_eq!(m.lookup(&n("WWW.Example.COM")), 2);
        assert_eq!(m.lookup(&n(".")), 0);
    }

    #[test]
    fn most_specific_entry_wins_per_list() {
        let m = matcher(&[
            ("example.com", 0, false),
            ("sub.example.com", 0, true),
            ("keep.sub.example.com", 0, false),
            ("example.com", 1, false),
        ]);
        assert_eq!(m.lookup(&n("www.example.com")), 0b11);
        assert_eq!(m.lookup(&n("sub.example.com")), 0b10);
        assert_eq!(m.lookup(&n("x.sub.example.com")), 0b10);
        assert_eq!(m.lookup(&n("keep.sub.example.com")), 0b11);
        assert_eq!(m.lookup(&n("a.keep.sub.example.com")), 0b11);
    }

    #[test]
    fn duplicates_and_conflicts() {
        let mut m = DomainMatcher::default();
        assert_eq!(m.insert(&n("a.com"), 0, false), Inserted::New);
        assert_eq!(m.insert(&n("A.com."), 0, false), Inserted::Duplicate);
        assert_eq!(m.insert(&n("a.com"), 0, true), Inserted::Conflict);
        assert_eq!(m.insert(&n("a.com"), 1, true), Inserted::New);
        assert_eq!(m.len(), 2);
        assert_eq!(m.lookup(&n("x.a.com")), 1);
    }

    #[test]
    fn filter_grows_with_inserts() {
        let mut m = DomainMatcher::default();
        for i in 0..5_000 {
            m.insert(&n(&format!("x{i}.grow.test")), 0, false);
        }
        assert!(m.filter.len() * 64 >= 5_000 * FILTER_BITS_PER_KEY);
        for i in 0..5_000 {
            assert_eq!(m.lookup(&n(&format!("a.x{i}.grow.test"))), 1);
        }
        assert_eq!(m.lookup(&n("x5000.grow.test")), 0);
        assert_eq!(DomainMatcher::default().lookup(&n("a.test")), 0);
    }

    #[test]
    fn shrunk_matcher_still_matches() {
        let mut m = DomainMatcher::with_capacity(100_000);
        for i in 0..1_000 {
            m.insert(&n(&format!("d{i}.shrink.test")), (i % 2) as u8, i % 5 == 0);
        }
        let before = m.heap_bytes();
        m.shrink_to_fit();
        assert!(m.heap_bytes() < before / 4, "{} -> {}", before, m.heap_bytes());
        for i in 0..1_000 {
            let want = if i % 5 == 0 { 0 } else { 1 << (i % 2) };
            assert_eq!(m.lookup(&n(&format!("www.d{i}.shrink.test"))), want);
        }
        assert_eq!(m.lookup(&n("d1000.shrink.test")), 0);
        assert_eq!(m.insert(&n("d1.shrink.test"), 1, false), Inserted::Duplicate);
        assert_eq!(m.insert(&n("new.shrink.test"), 0, false), Inserted::New);
        assert_eq!(m.lookup(&n("a.new.shrink.test")), 1);
    }

    #[test]
    fn many_domains() {
        let mut m = DomainMatcher::with_capacity(10_000);
        for i in 0..10_000 {
            m.insert(&n(&format!("d{i}.example{}.test", i % 7)), (i % 3) as u8, false);
        }
        for i in 0..10_000 {
            let name = n(&format!("www.d{i}.example{}.test", i % 7));
            assert_eq!(m.lookup(&name), 1 << (i % 3), "{name}");
            let other = n(&format!("www.d{i}.example{}.test", (i + 1) % 7));
            assert_eq!(m.lookup(&other), 0, "{other}");
        }
    }
}

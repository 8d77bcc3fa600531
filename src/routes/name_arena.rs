//! The route table's domain names: interned, reference-counted, and stored
//! in one arena of 64 KiB pages instead of one heap allocation per name.
//!
//! A name is a 4-byte id. Its text lives in a page as a 2-byte length and
//! the bytes, in a record rounded up to `GRANULE` bytes; the id's entry
//! holds the record's location and the number of attributions that use
//! it. When the last one goes the name is freed: its id and its record are
//! reused by later names (records by size class, so a freed record is
//! reused by a name of the same rounded size). The arena never grows
//! beyond the peak of live names in each size class, so a flood of random
//! subdomains that keeps replacing names reuses the same records.
//!
//! Look-up is a hash table of ids hashed with a per-process random seed
//! (names are chosen by whoever sends queries to the resolver).

use std::hash::BuildHasher;

/// Bytes of an arena page (a record's position is a 16-bit offset).
const PAGE: usize = 1 << 16;
/// Records are rounded up to a multiple of this.
const GRANULE: usize = 4;
/// The longest name the table keeps, in bytes (DNS names are at most 253
/// characters; escaped presentation forms stay well below this).
pub const MAX_NAME: usize = 4096;

#[derive(Clone, Copy)]
struct Meta {
    /// Page number << 16 | offset in the page.
    loc: u32,
    /// Attributions using the name; 0: a free id.
    refs: u32,
}

pub struct NameArena {
    pages: Vec<Vec<u8>>,
    meta: Vec<Meta>,
    free_ids: Vec<u32>,
    /// Free records by size class (record bytes / GRANULE).
    free_records: Vec<Vec<u32>>,
    index: hashbrown::HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    live: usize,
}

impl Default for NameArena {
    fn default() -> Self {
        NameArena {
            pages: Vec::new(),
            meta: Vec::new(),
            free_ids: Vec::new(),
            free_records: Vec::new(),
            index: hashbrown::HashTable::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            live: 0,
        }
    }
}

fn class_of(len: usize) -> usize {
    (2 + len).div_ceil(GRANULE)
}

impl NameArena {
    fn bytes_at(pages: &[Vec<u8>], loc: u32) -> &[u8] {
        let page = &pages[(loc >> 16) as usize];
        let pos = (loc & 0xffff) as usize;
        let len = u16::from_le_bytes([page[pos], page[pos + 1]]) as usize;
        &page[pos + 2..pos + 2 + len]
    }

    fn bytes(&self, id: u32) -> &[u8] {
        Self::bytes_at(&self.pages, self.meta[id as usize].loc)
    }

    /// The text of a live name.
    pub fn text(&self, id: u32) -> &str {
        // Only ever stored from a &str.
        std::str::from_utf8(self.bytes(id)).unwrap_or_default()
    }

    /// The hash a name is looked up by (computed once for a
    /// [`NameArena::find_hashed`] and an [`NameArena::intern_hashed`]).
    pub fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name.as_bytes())
    }

    /// The id of `name` if it is interned.
    pub fn find(&self, name: &str) -> Option<u32> {
        self.find_hashed(name, self.hash(name))
    }

    /// [`NameArena::find`] with the name's [`NameArena::hash`].
    pub fn find_hashed(&self, name: &str, hash: u64) -> Option<u32> {
        let (pages, meta) = (&self.pages, &self.meta);
        self.index.find(hash, |&id| Self::bytes_at(pages, meta[id as usize].loc) == name.as_bytes()).copied()
    }

    /// Takes one more reference on `name`, interning it if it is new; `None`
    /// for a name longer than [`MAX_NAME`].
    pub fn intern(&mut self, name: &str) -> Option<u32> {
        self.intern_hashed(name, self.hash(name))
    }

    /// [`NameArena::intern`] with the name's [`NameArena::hash`].
    pub fn intern_hashed(&mut self, name: &str, hash: u64) -> Option<u32> {
        if name.len() > MAX_NAME {
            return None;
        }
        let (pages, meta) = (&self.pages, &self.meta);
        if let Some(&id) = self.index.find(hash, |&id| Self::bytes_at(pages, meta[id as usize].loc) == name.as_bytes())
        {
            self.meta[id as usize].refs += 1;
            return Some(id);
        }
        let loc = self.store(name.as_bytes());
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.meta[id as usize] = Meta { loc, refs: 1 };
                id
            }
            None => {
                self.meta.push(Meta { loc, refs: 1 });
                (self.meta.len() - 1) as u32
            }
        };
        let (pages, meta, hasher) = (&self.pages, &self.meta, &self.hasher);
        self.index.insert_unique(hash, id, |&i| hasher.hash_one(Self::bytes_at(pages, meta[i as usize].loc)));
        self.live += 1;
        Some(id)
    }

    /// One more reference on a live name.
    pub fn retain(&mut self, id: u32) {
        self.meta[id as usize].refs += 1;
    }

    /// Drops one reference; the last one frees the name.
    pub fn release(&mut self, id: u32) {
        let m = &mut self.meta[id as usize];
        debug_assert!(m.refs > 0, "release of a free name");
        if m.refs == 0 {
            return;
        }
        m.refs -= 1;
        if m.refs > 0 {
            return;
        }
        let loc = m.loc;
        let bytes = Self::bytes_at(&self.pages, loc);
        let (hash, class) = (self.hasher.hash_one(bytes), class_of(bytes.len()));
        if let Ok(e) = self.index.find_entry(hash, |&i| i == id) {
            e.remove();
        }
        if self.free_records.len() <= class {
            self.free_records.resize_with(class + 1, Vec::new);
        }
        self.free_records[class].push(loc);
        self.free_ids.push(id);
        self.live -= 1;
    }

    /// A record for `bytes`: a freed one of the same size class, or new
    /// room at the end of the last page.
    fn store(&mut self, bytes: &[u8]) -> u32 {
        let class = class_of(bytes.len());
        let size = class * GRANULE;
        let loc = match self.free_records.get_mut(class).and_then(|f| f.pop()) {
            Some(loc) => loc,
            None => {
                if self.pages.last().is_none_or(|p| PAGE - p.len() < size) {
                    self.pages.push(Vec::with_capacity(PAGE));
                }
                let n = self.pages.len() - 1;
                let page = &mut self.pages[n];
                let pos = page.len();
                page.resize(pos + size, 0);
                ((n as u32) << 16) | pos as u32
            }
        };
        let page = &mut self.pages[(loc >> 16) as usize];
        let pos = (loc & 0xffff) as usize;
        page[pos..pos + 2].copy_from_slice(&(bytes.len() as u16).to_le_bytes());
        page[pos + 2..pos + 2 + bytes.len()].copy_from_slice(bytes);
        loc
    }

    /// Live names.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Bytes held (pages, ids, free lists, index).
    pub fn heap_bytes(&self) -> usize {
        self.pages.len() * PAGE
            + self.meta.capacity() * std::mem::size_of::<Meta>()
            + self.free_ids.capacity() * 4
            + self.free_records.iter().map(|f| f.capacity() * 4).sum::<usize>()
            + self.index.capacity() * 5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_counts_and_frees() {
        let mut a = NameArena::default();
        let x = a.intern("www.example.test").unwrap();
        let y = a.intern("cdn.example.test").unwrap();
        assert_ne!(x, y);
        assert_eq!(a.intern("www.example.test"), Some(x));
        assert_eq!(a.text(x), "www.example.test");
        assert_eq!(a.find("cdn.example.test"), Some(y));
        assert_eq!(a.len(), 2);
        a.release(x);
        assert_eq!(a.find("www.example.test"), Some(x));
        a.release(x);
        assert_eq!(a.find("www.example.test"), None);
        assert_eq!(a.len(), 1);
        // The freed id and record are reused by a name of the same size.
        let z = a.intern("api.example.test").unwrap();
        assert_eq!(z, x);
        assert_eq!(a.text(z), "api.example.test");
        assert_eq!(a.text(y), "cdn.example.test");
        assert!(a.intern(&"a".repeat(MAX_NAME + 1)).is_none());
        let e = a.intern("").unwrap();
        assert_eq!(a.text(e), "");
    }

    #[test]
    fn churn_reuses_records() {
        let mut a = NameArena::default();
        let mut live = std::collections::VecDeque::new();
        for i in 0..200_000u32 {
            live.push_back(a.intern(&format!("r{i}.wild.test")).unwrap());
            if live.len() > 16 {
                a.release(live.pop_front().unwrap());
            }
        }
        assert_eq!(a.len(), 16);
        // 16 live names (a few size classes) fit in the first page.
        assert_eq!(a.pages.len(), 1);
        for &id in &live {
            assert!(a.text(id).ends_with(".wild.test"));
        }
    }
}

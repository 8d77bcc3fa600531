//! CNAME targets of listed names, remembered for their TTL.
//!
//! A resolver may answer `www.listed.test CNAME edge.cdn.test` in one
//! response and `edge.cdn.test A ...` in another (a client that follows the
//! chain itself, or a cache that holds the parts separately). The target is
//! remembered with the listed name it stands for, so the addresses of the
//! later response are attributed to `www.listed.test`.
//!
//! The hot path asks [`CnameMemory::contains`] for every name of every
//! response; it is lock-free while the memory is empty and one read lock
//! plus one hash probe otherwise.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use rustc_hash::FxHashMap;

use crate::clock::UnixMillis;
use crate::lists::Lists;
use crate::names::NameBuf;

/// What a remembered target stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub domain: Arc<str>,
    pub list: Arc<str>,
    pub expires: UnixMillis,
}

/// Bounded, so a flood of distinct CNAMEs cannot grow it without limit.
pub const MAX_TARGETS: usize = 1 << 20;
/// Links kept per target: many listed names pointing at one CDN target
/// (random subdomains of a listed name, all `CNAME edge.cdn.test`) cost a
/// bounded scan per answer. When full, a new link replaces the one that
/// expires first if it lives longer.
pub const MAX_LINKS_PER_TARGET: usize = 16;

#[derive(Default)]
pub struct CnameMemory {
    map: RwLock<FxHashMap<Box<[u8]>, Vec<Link>>>,
    len: AtomicUsize,
}

impl CnameMemory {
    pub fn new() -> CnameMemory {
        CnameMemory::default()
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `name` is a remembered target (expired ones included until
    /// the next sweep; the caller re-checks with [`CnameMemory::links`]).
    #[inline]
    pub fn contains(&self, name: &NameBuf) -> bool {
        if self.is_empty() {
            return false;
        }
        self.map.read().map(|m| m.contains_key(name.as_bytes())).unwrap_or(false)
    }

    /// The live links of `target`.
    pub fn links(&self, target: &str, now: UnixMillis) -> Vec<Link> {
        if self.is_empty() {
            return Vec::new();
        }
        let Ok(map) = self.map.read() else { return Vec::new() };
        map.get(target.as_bytes()).map(|v| v.iter().filter(|l| l.expires > now).cloned().collect()).unwrap_or_default()
    }

    /// Remembers that `target` stands for `link.domain` in `link.list`.
    pub fn remember(&self, target: &str, link: Link) {
        let Ok(mut map) = self.map.write() else { return };
        if let Some(links) = map.get_mut(target.as_bytes()) {
            let full = links.len() >= MAX_LINKS_PER_TARGET;
            match links.iter_mut().find(|l| l.domain == link.domain && l.list == link.list) {
                Some(l) => l.expires = l.expires.max(link.expires),
                None if !full => links.push(link),
                None => {
                    if let Some(first) = links.iter_mut().min_by_key(|l| l.expires)
                        && first.expires < link.expires
                    {
                        *first = link;
                    }
                }
            }
            return;
        }
        if map.len() >= MAX_TARGETS {
            return;
        }
        map.insert(target.as_bytes().into(), vec![link]);
        self.len.store(map.len(), Ordering::Relaxed);
    }

    /// Forgets expired links.
    pub fn sweep(&self, now: UnixMillis) {
        self.retain(|l| l.expires > now);
    }

    /// After a reload: forgets links whose name the list no longer claims.
    pub fn revalidate(&self, lists: &Lists) {
        self.retain(|l| lists.index_of(&l.list).is_some_and(|i| lists.lookup_text(&l.domain) & (1 << i) != 0));
    }

    fn retain(&self, mut keep: impl FnMut(&Link) -> bool) {
        if self.is_empty() {
            return;
        }
        let Ok(mut map) = self.map.write() else { return };
        map.retain(|_, links| {
            links.retain(&mut keep);
            !links.is_empty()
        });
        self.len.store(map.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remember_contains_and_expire() {
        let m = CnameMemory::new();
        let n = NameBuf::from_text("Edge.CDN.test").unwrap();
        assert!(!m.contains(&n));
        let link = Link { domain: Arc::from("www.listed.test"), list: Arc::from("vpn"), expires: 100 };
        m.remember("edge.cdn.test", link.clone());
        m.remember("edge.cdn.test", Link { expires: 200, ..link.clone() });
        assert!(m.contains(&n));
        assert_eq!(m.links("edge.cdn.test", 150), vec![Link { expires: 200, ..link.clone() }]);
        // Links per target are bounded; the longest-living ones stay.
        for i in 0..100 {
            let l = Link {
                domain: Arc::from(format!("r{i}.listed.test").as_str()),
                list: Arc::from("vpn"),
                expires: 300 + i,
            };
            m.remember("edge.cdn.test", l);
        }
        let links = m.links("edge.cdn.test", 150);
        assert_eq!(links.len(), MAX_LINKS_PER_TARGET);
        assert!(links.iter().all(|l| l.expires >= 300 + 100 - MAX_LINKS_PER_TARGET as u64), "{links:?}");
        m.sweep(1000);
        assert!(m.is_empty());
        m.remember("edge.cdn.test", Link { expires: 200, ..link.clone() });
        m.sweep(150);
        assert_eq!(m.len(), 1);
        m.sweep(200);
        assert!(m.is_empty());
        assert!(!m.contains(&n));
    }
}

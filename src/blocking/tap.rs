//! The hot-path side of the engine: what each dnstap connection adds up
//! between two evaluations.
//!
//! The pipeline hands every client query and response of a connection to
//! that connection's [`Tap`] as a [`Sighting`]. The tap adds it to the
//! connection's own [`TickAccum`] (a mutex only the connection and, once
//! per `evaluate_interval`, the engine ever take, so it is uncontended):
//! per aggregated client a fixed array of counters, per name suffix the
//! NXDOMAIN answers below it, per answered name its count. Nothing is
//! allocated once the accumulator has grown to its working size (it is
//! swapped with a cleared one that keeps its capacity), and every table
//! has a cap: past it a sighting of a new key is counted as dropped.
//!
//! The [`Plan`] says what to count; it is compiled once from the settings.

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap};

use super::config::{BlockingSettings, RuleKind};
use crate::names::NameBuf;
use crate::observation::{MessageType, Sighting};

/// Counter slots of a client per tick.
pub const COUNTERS: usize = 8;
pub const C_QUERIES: usize = 0;
pub const C_RESPONSES: usize = 1;
pub const C_BYTES: usize = 2;
/// First qtype/rcode selector counter.
pub const C_SELECTORS: usize = 3;

/// Distinct clients one connection's accumulator holds per tick.
pub const MAX_CLIENTS_PER_TICK: usize = 1 << 18;
/// Distinct suffixes (and, separately, answered names) per tick.
pub const MAX_NAMES_PER_TICK: usize = 1 << 16;
/// NXDOMAIN names count at most this many suffix levels (the ones nearest
/// the registrable domain).
pub const MAX_SUFFIX_LEVELS: usize = 16;

/// A client after aggregation: the masked address as 128 bits, IPv4 in
/// its IPv4-mapped form (`::ffff:a.b.c.d`), so the two families never
/// collide.
pub type ClientKey = u128;

pub fn address_bits(ip: IpAddr) -> u128 {
    match crate::observation::canonical(ip) {
        IpAddr::V4(a) => 0xffff_0000_0000u128 | u128::from(a.to_bits()),
        IpAddr::V6(a) => a.to_bits(),
    }
}

pub fn is_v4_bits(bits: u128) -> bool {
    bits >> 32 == 0xffff
}

fn mask(len128: u32) -> u128 {
    if len128 == 0 { 0 } else { u128::MAX << (128 - len128) }
}

/// The key of a client's address under the aggregation prefixes.
pub fn client_key(bits: u128, v4_prefix: u8, v6_prefix: u8) -> ClientKey {
    let len = if is_v4_bits(bits) { 96 + u32::from(v4_prefix) } else { u32::from(v6_prefix) };
    bits & mask(len)
}

/// The range a client key stands for.
pub fn key_net(key: ClientKey, v4_prefix: u8, v6_prefix: u8) -> ipnet::IpNet {
    if is_v4_bits(key) {
        let a = std::net::Ipv4Addr::from_bits(key as u32);
        ipnet::IpNet::V4(ipnet::Ipv4Net::new(a, v4_prefix).unwrap_or_default())
    } else {
        let a = std::net::Ipv6Addr::from_bits(key);
        ipnet::IpNet::V6(ipnet::Ipv6Net::new(a, v6_prefix).unwrap_or_default())
    }
}

/// `exclude` and `include`: for each prefix length in use (longest first),
/// the ranges of that length; the first that contains an address decides.
#[derive(Debug, Default)]
pub struct RangeSet {
    by_len: Vec<(u32, FxHashMap<u128, bool>)>,
}

impl RangeSet {
    pub fn new(ranges: &[(ipnet::IpNet, bool)]) -> RangeSet {
        let mut by_len: Vec<(u32, FxHashMap<u128, bool>)> = Vec::new();
        for (net, included) in ranges {
            let (bits, len) = match net {
                ipnet::IpNet::V4(n) => (address_bits(IpAddr::V4(n.network())), 96 + u32::from(n.prefix_len())),
                ipnet::IpNet::V6(n) => (n.network().to_bits(), u32::from(n.prefix_len())),
            };
            match by_len.iter_mut().find(|(l, _)| *l == len) {
                Some((_, m)) => {
                    m.insert(bits & mask(len), *included);
                }
                None => by_len.push((len, [(bits & mask(len), *included)].into_iter().collect())),
            }
        }
        by_len.sort_by_key(|e| std::cmp::Reverse(e.0));
        RangeSet { by_len }
    }

    /// Whether the address is excluded (not counted, never blocked).
    #[inline]
    pub fn excluded(&self, bits: u128) -> bool {
        for (len, m) in &self.by_len {
            if let Some(included) = m.get(&(bits & mask(*len))) {
                return !included;
            }
        }
        false
    }

    pub fn is_empty(&self) -> bool {
        self.by_len.is_empty()
    }
}

/// What the taps count, compiled from the settings.
#[derive(Debug)]
pub struct Plan {
    pub v4_prefix: u8,
    pub v6_prefix: u8,
    pub ranges: RangeSet,
    /// `(qtype, counter)` of the qtype_rate rules.
    pub qtypes: Vec<(u16, usize)>,
    /// Counter of each rcode that rcode rules count (`usize::MAX`: none).
    pub rcodes: [usize; 16],
    /// Distinct counters in use.
    pub counters: usize,
    /// An nxdomain_suffix rule exists: NXDOMAIN and answered names count.
    pub names: bool,
    /// Hashes of `exclude_domains` (verified against `excluded_names`).
    excluded_names: FxHashMap<u64, Vec<Box<str>>>,
    pub max_clients_per_tick: usize,
}

impl Plan {
    pub fn new(s: &BlockingSettings) -> Plan {
        let mut qtypes = Vec::new();
        let mut rcodes = [usize::MAX; 16];
        let mut next = C_SELECTORS;
        for r in &s.rules {
            match r.kind {
                RuleKind::QtypeRate if !qtypes.iter().any(|(q, _)| *q == r.qtype) => {
                    qtypes.push((r.qtype, next));
                    next += 1;
                }
                RuleKind::RcodeRate | RuleKind::RcodeRatio if rcodes[usize::from(r.rcode & 15)] == usize::MAX => {
                    rcodes[usize::from(r.rcode & 15)] = next;
                    next += 1;
                }
                _ => {}
            }
        }
        let mut excluded_names: FxHashMap<u64, Vec<Box<str>>> = FxHashMap::default();
        for d in &s.exclude_domains {
            excluded_names.entry(name_hash(d.as_bytes())).or_default().push(d.clone());
        }
        Plan {
            v4_prefix: s.v4_prefix,
            v6_prefix: s.v6_prefix,
            ranges: RangeSet::new(&s.ranges),
            qtypes,
            rcodes,
            counters: next.min(COUNTERS),
            names: s.rules.iter().any(|r| r.kind == RuleKind::NxdomainSuffix),
            excluded_names,
            max_clients_per_tick: MAX_CLIENTS_PER_TICK.min(s.max_tracked.max(4096)),
        }
    }

    pub fn counter_of_qtype(&self, qtype: u16) -> Option<usize> {
        self.qtypes.iter().find(|(q, _)| *q == qtype).map(|(_, c)| *c)
    }

    pub fn counter_of_rcode(&self, rcode: u8) -> Option<usize> {
        let c = self.rcodes[usize::from(rcode & 15)];
        (c != usize::MAX).then_some(c)
    }

    fn excluded_name(&self, suffix: &[u8]) -> bool {
        self.excluded_names.get(&name_hash(suffix)).is_some_and(|v| v.iter().any(|d| d.as_bytes() == suffix))
    }

    /// Whether `name` is an excluded domain or below one.
    pub fn name_excluded(&self, name: &NameBuf) -> bool {
        !self.excluded_names.is_empty() && (0..name.label_count()).any(|i| self.excluded_name(name.suffix(i)))
    }
}

pub fn name_hash(bytes: &[u8]) -> u64 {
    FxBuildHasher.hash_one(bytes)
}

fn key_hash<K: Hash + ?Sized>(k: &K) -> u64 {
    FxBuildHasher.hash_one(k)
}

/// One client's counts during one tick.
#[derive(Debug, Clone, Copy)]
pub struct ClientTick {
    pub key: ClientKey,
    pub counts: [u32; COUNTERS],
    /// The latest dnstap time among its sightings (0: none carried one).
    pub last_seen: u64,
}

/// Names with a count during one tick; the text lives in one arena.
#[derive(Debug, Default)]
pub struct NameCounts {
    index: HashTable<u32>,
    /// `(hash, start, len, count)`.
    entries: Vec<(u64, u32, u32, u32)>,
    arena: Vec<u8>,
}

impl NameCounts {
    fn add(&mut self, name: &[u8], hash: u64) -> bool {
        let (entries, arena) = (&mut self.entries, &self.arena);
        let found = self.index.find(hash, |&i| {
            let (h, s, l, _) = entries[i as usize];
            h == hash && &arena[s as usize..(s + l) as usize] == name
        });
        if let Some(&i) = found {
            entries[i as usize].3 = entries[i as usize].3.saturating_add(1);
            return true;
        }
        if self.entries.len() >= MAX_NAMES_PER_TICK {
            return false;
        }
        let i = self.entries.len() as u32;
        self.entries.push((hash, self.arena.len() as u32, name.len() as u32, 1));
        self.arena.extend_from_slice(name);
        let entries = &self.entries;
        self.index.insert_unique(hash, i, |&j| entries[j as usize].0);
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.entries.iter().filter_map(|&(_, s, l, c)| {
            std::str::from_utf8(&self.arena[s as usize..(s + l) as usize]).ok().map(|n| (n, c))
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn clear(&mut self) {
        self.index.clear();
        self.entries.clear();
        self.arena.clear();
    }
}

/// What one connection saw between two evaluations.
#[derive(Debug, Default)]
pub struct TickAccum {
    index: HashTable<u32>,
    pub clients: Vec<ClientTick>,
    /// NXDOMAIN answers per suffix level.
    pub suffixes: NameCounts,
    /// NOERROR answers with data per question name.
    pub answered: NameCounts,
    pub sightings: u64,
    /// Sightings not counted because a per-tick table was full.
    pub dropped: u64,
    /// Sightings of excluded clients.
    pub excluded: u64,
}

impl TickAccum {
    pub fn clear(&mut self) {
        self.index.clear();
        self.clients.clear();
        self.suffixes.clear();
        self.answered.clear();
        self.sightings = 0;
        self.dropped = 0;
        self.excluded = 0;
    }

    fn client(&mut self, key: ClientKey, cap: usize) -> Option<&mut ClientTick> {
        let hash = key_hash(&key);
        let clients = &self.clients;
        let i = match self.index.find(hash, |&i| clients[i as usize].key == key) {
            Some(&i) => i as usize,
            None => {
                if self.clients.len() >= cap {
                    return None;
                }
                let i = self.clients.len();
                self.clients.push(ClientTick { key, counts: [0; COUNTERS], last_seen: 0 });
                let clients = &self.clients;
                self.index.insert_unique(hash, i as u32, |&j| key_hash(&clients[j as usize].key));
                i
            }
        };
        self.clients.get_mut(i)
    }

    /// Adds one sighting.
    pub fn add(&mut self, plan: &Plan, s: &Sighting<'_>, counts_as_query: bool) {
        self.sightings += 1;
        let bits = address_bits(s.client);
        if !plan.ranges.is_empty() && plan.ranges.excluded(bits) {
            self.excluded += 1;
            return;
        }
        let key = client_key(bits, plan.v4_prefix, plan.v6_prefix);
        let cap = plan.max_clients_per_tick;
        let Some(c) = self.client(key, cap) else {
            self.dropped += 1;
            return;
        };
        c.last_seen = c.last_seen.max(s.time);
        if counts_as_query {
            c.counts[C_QUERIES] = c.counts[C_QUERIES].saturating_add(1);
            for &(q, i) in &plan.qtypes {
                if q == s.qtype {
                    c.counts[i] = c.counts[i].saturating_add(1);
                }
            }
        }
        let Some(rcode) = s.rcode else { return };
        c.counts[C_RESPONSES] = c.counts[C_RESPONSES].saturating_add(1);
        c.counts[C_BYTES] = c.counts[C_BYTES].saturating_add(s.size);
        let rc = plan.rcodes[usize::from(rcode & 15)];
        if rc != usize::MAX {
            c.counts[rc] = c.counts[rc].saturating_add(1);
        }
        if !plan.names {
            return;
        }
        let Some(qname) = s.qname else { return };
        if rcode == 3 {
            self.nxdomain(plan, qname);
        } else if rcode == 0 && s.answered && qname.label_count() >= 3 && !plan.name_excluded(qname) {
            let name = qname.as_bytes();
            if !self.answered.add(name, name_hash(name)) {
                self.dropped += 1;
            }
        }
    }

    /// Counts an NXDOMAIN for every suffix level from the parent of the
    /// name up to (not including) its public suffix.
    fn nxdomain(&mut self, plan: &Plan, qname: &NameBuf) {
        let n = qname.label_count();
        let Some(levels) = suffix_levels(qname) else { return };
        if plan.name_excluded(qname) {
            return;
        }
        // `levels` is the index of the registrable domain; count from the
        // parent (1) to it, at most MAX_SUFFIX_LEVELS of the nearest.
        let first = 1.max(levels.saturating_sub(MAX_SUFFIX_LEVELS - 1));
        debug_assert!(levels < n);
        for i in first..=levels {
            let s = qname.suffix(i);
            if !self.suffixes.add(s, name_hash(s)) {
                self.dropped += 1;
                return;
            }
        }
    }
}

/// The label index of the registrable domain of `name` (the public suffix
/// plus one label), when the name is strictly below it: `Some(i)` with
/// `1 ≤ i < label_count`. `None` for a public suffix or registrable
/// domain itself, or a name psl cannot judge.
pub fn suffix_levels(name: &NameBuf) -> Option<usize> {
    let n = name.label_count();
    if n < 2 {
        return None;
    }
    let public = psl::suffix(name.as_bytes())?;
    let plabels = public.as_bytes().split(|&b| b == b'.').count();
    // Registrable domain: plabels + 1 labels, starting at index n - plabels - 1.
    let reg = n.checked_sub(plabels + 1)?;
    (reg >= 1).then_some(reg)
}

/// The accumulators of every connection, for the engine to drain.
#[derive(Debug, Default)]
pub struct TapRegistry {
    taps: Mutex<Vec<Arc<Mutex<TickAccum>>>>,
}

impl TapRegistry {
    /// A tap for a new connection.
    pub fn tap(self: &Arc<Self>, plan: Arc<Plan>) -> Tap {
        let shared = Arc::new(Mutex::new(TickAccum::default()));
        self.taps.lock().unwrap_or_else(|p| p.into_inner()).push(shared.clone());
        Tap { plan, shared, queries_seen: false }
    }

    /// Swaps every connection's accumulator with one from `spares` (or a
    /// new one) and returns the full ones; accumulators of connections
    /// that have ended are returned once more and then forgotten.
    pub fn drain(&self, spares: &mut Vec<TickAccum>) -> Vec<TickAccum> {
        let mut taps = self.taps.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(taps.len());
        taps.retain(|t| {
            let mut spare = spares.pop().unwrap_or_default();
            spare.clear();
            {
                let mut acc = t.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::swap(&mut *acc, &mut spare);
            }
            out.push(spare);
            Arc::strong_count(t) > 1
        });
        out
    }

    pub fn connections(&self) -> usize {
        self.taps.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// One connection's handle on the engine.
#[derive(Debug)]
pub struct Tap {
    plan: Arc<Plan>,
    shared: Arc<Mutex<TickAccum>>,
    /// This resolver logs CLIENT_QUERY: responses do not count as queries.
    queries_seen: bool,
}

impl Tap {
    /// Whether sightings of responses need their question name.
    #[inline]
    pub fn wants_names(&self) -> bool {
        self.plan.names
    }

    #[inline]
    pub fn sight(&mut self, s: &Sighting<'_>) {
        let counts_as_query = match s.message_type {
            MessageType::ClientQuery => {
                self.queries_seen = true;
                true
            }
            _ => !self.queries_seen,
        };
        let mut acc = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        acc.add(&self.plan, s, counts_as_query);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_ranges_and_levels() {
        let b = address_bits("198.51.100.77".parse().unwrap());
        assert!(is_v4_bits(b));
        assert_eq!(address_bits("::ffff:198.51.100.77".parse().unwrap()), b);
        let k = client_key(b, 24, 64);
        assert_eq!(key_net(k, 24, 64).to_string(), "198.51.100.0/24");
        let v6 = address_bits("2001:db8:1:2:3::9".parse().unwrap());
        assert_eq!(key_net(client_key(v6, 24, 48), 24, 48).to_string(), "2001:db8:1::/48");
        let r = RangeSet::new(&[
            ("198.51.100.0/24".parse().unwrap(), false),
            ("198.51.100.128/25".parse().unwrap(), true),
            ("198.51.100.200/32".parse().unwrap(), false),
            ("2001:db8::/32".parse().unwrap(), false),
        ]);
        let ex = |a: &str| r.excluded(address_bits(a.parse().unwrap()));
        assert!(ex("198.51.100.1"));
        assert!(!ex("198.51.100.129"));
        assert!(ex("198.51.100.200"));
        assert!(!ex("198.51.101.1"));
        assert!(ex("2001:db8::1"));
        assert!(!ex("2001:db9::1"));
        let lv = |n: &str| suffix_levels(&NameBuf::from_text(n).unwrap());
        assert_eq!(lv("x1.listed.test"), Some(1));
        assert_eq!(lv("listed.test"), None);
        assert_eq!(lv("a.b.example.co.uk"), Some(2));
        assert_eq!(lv("example.co.uk"), None);
        assert_eq!(lv("co.uk"), None);
        assert_eq!(lv("test"), None);
    }
}

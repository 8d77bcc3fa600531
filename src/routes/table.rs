//! The route table: address → attributions, with expiry.
//!
//! Writers are the dnstap pipeline (answers for listed names), the store
//! loader at start-up and peer sync; readers are the API and the
//! subscribers (store writer, BGP sessions, sync recorder). State sits
//! behind one mutex whose critical sections are bounded: an update touches
//! one route, and every operation that walks the table (list revalidation,
//! peer sweeps, snapshots, the API's pages, a new subscriber's initial
//! dump, expiry of many routes at once) works in chunks of at most
//! [`CHUNK`] routes, releasing the lock between chunks, so the hot path
//! never waits for O(table) work.
//!
//! Layout: routes live in a dense slot vector (48-byte slots in pages of
//! exact size; freed slots are reused, an entry never moves), with a hash
//! index from address to slot. An attribution is 12 bytes: its domain is
//! an id in one reference-counted name arena ([`NameArena`]: every name
//! stored once, freed with its last attribution), its list and source are
//! small interned numbers, and its expiry is in whole seconds (rounded
//! up). Walking the
//! slots by position is what makes chunked scans correct while the table
//! changes: a route that exists during the whole walk is visited exactly
//! once.
//!
//! Bounded work per answer: a route keeps at most `max_names_per_route`
//! attributions. When it is full, a new name replaces the attribution that
//! expires first if the new one expires later, and is dropped otherwise;
//! so the route's lifetime (its longest attribution) is exactly what it
//! would be unbounded, and a flood of random subdomains of a listed name
//! costs one bounded scan per answer. `names_total` counts every name seen.
//! List membership is a bitmask per route (list names are interned to bit
//! numbers), so per-list counts change in O(1) per update.
//!
//! Bounded routes: past `max_routes` (and a list's own `max_routes`) new
//! addresses are refused while existing routes keep refreshing; addresses
//! that cannot be a destination (unspecified, loopback, multicast,
//! link-local, broadcast, 0/8, 240/4), the BGP neighbors' own addresses
//! and next hops, and the operator's `[routes] deny` never become routes.
//! Refusals are counted by reason and logged at most once a minute.
//!
//! Expiry: an attribution lives until `last answer + clamp(TTL, min_ttl,
//! max_ttl)`, and a new answer only ever extends it, because a client that
//! cached the earlier, longer answer may still use the address; the route
//! lives as long as its longest attribution. Each route has one entry in a
//! min-heap at the time of its earliest attribution expiry; a refresh does
//! not touch the heap (the entry is re-pushed with the new time when it
//! comes due), so the heap stays at one entry per route however often
//! names are refreshed.
//!
//! Attributions are keyed by (domain, list, source): the instance's own
//! answers and each sync peer keep separate expiries, so when a peer says
//! its attribution is gone ([`RouteTable::replace_source`]) only that one
//! goes, and the route stays while anyone else still vouches for it.
//!
//! Subscribers: every subscriber has a set of addresses that changed since
//! it last drained, and a `Notify`. Draining turns the set into events with
//! the routes' *current* state, so a slow subscriber never makes the table
//! wait or grow a backlog beyond one entry per route, and nothing is lost.
//! A subscriber that asks for an initial dump gets a cursor over the slots
//! instead of a set of every address.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipnet::IpNet;
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;
use tokio::sync::{Notify, mpsc};
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::name_arena::NameArena;
use super::{Attribution, Route, RouteEvent, Source, canonical};
use crate::clock::{Clock, UnixMillis, millis};
use crate::lists::Lists;

/// Routes handled per lock hold by the operations that walk the table.
pub const CHUNK: usize = 1024;

/// The `[routes]` defaults live with the config values (a leaf), so that
/// the config parser needs nothing from the table.
pub use crate::values::{DEFAULT_MAX_NAMES_PER_ROUTE, DEFAULT_MAX_ROUTES};
/// Most distinct list names the table tracks (list membership is a 64-bit mask).
const MAX_LIST_IDS: usize = 64;
/// A drained subscriber set with more room than this is given back.
const SHRINK_ABOVE: usize = 1 << 14;
/// Refusals are logged at most this often.
const REFUSAL_LOG_EVERY: UnixMillis = 60_000;

/// What an update did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// A new route.
    Added,
    /// An existing route gained an attribution.
    Changed,
    /// An attribution's expiry moved later.
    Refreshed,
    /// Nothing changed (an older or equal expiry, or a name that lost to
    /// the route's longer-living attributions when the route was full).
    Unchanged,
    /// The address or the new attribution was refused.
    Refused(Refusal),
}

/// What [`RouteTable::replace_source`] did to the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// The route is new.
    Added,
    /// Its attributions changed (gained, lost or extended).
    Changed,
    /// It lost its last attribution and is gone.
    Removed,
    /// Nothing changed (refusals included; they are counted by the table).
    Unchanged,
}

/// Why an address or attribution got no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a possible destination (unspecified, loopback, multicast,
    /// link-local, broadcast, 0/8, 240/4).
    Unroutable,
    /// The address of a BGP neighbor or a next hop of this daemon.
    Neighbor,
    /// In `[routes] deny`.
    Deny,
    /// The table holds `[routes] max_routes` routes.
    MaxRoutes,
    /// The list holds its `max_routes` routes.
    ListMaxRoutes,
}

impl Refusal {
    pub const ALL: [Refusal; 5] =
        [Refusal::Unroutable, Refusal::Neighbor, Refusal::Deny, Refusal::MaxRoutes, Refusal::ListMaxRoutes];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unroutable => "unroutable",
            Refusal::Neighbor => "neighbor",
            Refusal::Deny => "deny",
            Refusal::MaxRoutes => "max_routes",
            Refusal::ListMaxRoutes => "list_max_routes",
        }
    }
}

/// Whether a route to this host address can make sense: not unspecified,
/// loopback, multicast, broadcast, link-local, `0.0.0.0/8` or
/// `240.0.0.0/4`; an IPv4-mapped IPv6 address is judged as IPv4. Private
/// and documentation ranges are routable (policy routing needs them).
pub fn routable_unicast(addr: IpAddr) -> bool {
    match canonical(addr) {
        IpAddr::V4(a) => v4_ok(a),
        IpAddr::V6(a) => v6_ok(a),
    }
}

fn v4_ok(a: Ipv4Addr) -> bool {
    let first = a.octets()[0];
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || a.is_broadcast()
        || a.is_link_local()
        || first == 0
        || first >= 240)
}

fn v6_ok(a: Ipv6Addr) -> bool {
    let first = a.segments()[0];
    !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || (first & 0xffc0) == 0xfe80)
}

/// The bounds of the table (`[routes]` and `[[list]]` settings).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_routes: usize,
    pub max_names_per_route: usize,
    /// Per list name: its own cap on routes.
    pub list_max_routes: Vec<(Arc<str>, usize)>,
    /// Addresses and prefixes that never become routes, with the reason
    /// counted (`Neighbor` for the BGP neighbors and next hops, `Deny` for
    /// the operator's list).
    pub deny: Vec<(IpNet, Refusal)>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_routes: DEFAULT_MAX_ROUTES,
            max_names_per_route: DEFAULT_MAX_NAMES_PER_ROUTE,
            list_max_routes: Vec::new(),
            deny: Vec::new(),
        }
    }
}

/// Counters of refused addresses and dropped names.
#[derive(Default)]
struct Refusals {
    by_reason: [AtomicU64; 5],
    /// Names dropped because their route was full of longer-living ones.
    names_dropped: AtomicU64,
    /// When each reason was last logged.
    logged: [AtomicU64; 5],
}

/// An expiry as the table holds it: whole seconds since the Unix epoch
/// (an expiry in milliseconds is rounded up, so an attribution never ends
/// earlier than it was given; u32 seconds last until 2106).
type Secs = u32;

fn to_secs(ms: UnixMillis) -> Secs {
    ms.div_ceil(1000).min(u64::from(Secs::MAX)) as Secs
}

fn to_millis(s: Secs) -> UnixMillis {
    UnixMillis::from(s) * 1000
}

/// Seconds of `now` such that an expiry `e` is live exactly when `e > now_secs(now)`.
fn now_secs(ms: UnixMillis) -> Secs {
    (ms / 1000).min(u64::from(Secs::MAX)) as Secs
}

/// No name: the marker of an empty inline attribution.
const NO_NAME: u32 = u32::MAX;

/// An attribution as the table holds it (12 bytes): the domain is an id in
/// the table's [`NameArena`] (one reference each), the list and the source
/// are small interned numbers, the expiry is in seconds.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Held {
    name: u32,
    expires: Secs,
    /// The interned source number (`State::sources`; 0 is `Source::Dns`).
    source: u16,
    /// The interned list number.
    list: u8,
}

const EMPTY: Held = Held { name: NO_NAME, expires: 0, source: 0, list: 0 };

/// Attributions of a route while it is being changed.
type HeldVec = SmallVec<[Held; 4]>;

/// One slot (48 bytes; a route with one name lives in it without a heap
/// allocation of its own). A route with several names keeps them all in
/// `more` (and `one` is unused).
struct Entry {
    /// The only attribution of a one-name route; `EMPTY` otherwise.
    one: Held,
    /// Two or more attributions. A box of a vector, not a boxed slice or a
    /// vector: the thin pointer keeps the slot at 48 bytes, and only routes
    /// with several names pay the second allocation.
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<Held>>>,
    /// The time of this route's live heap entry.
    scheduled: Secs,
    /// Names seen for this route (kept or not).
    names_total: u32,
    addr: IpAddr,
}

impl Entry {
    fn held(&self) -> &[Held] {
        match &self.more {
            Some(v) => v,
            None if self.one.name == NO_NAME => &[],
            None => std::slice::from_ref(&self.one),
        }
    }

    fn held_mut(&mut self) -> &mut [Held] {
        match &mut self.more {
            Some(v) => v,
            None if self.one.name == NO_NAME => &mut [],
            None => std::slice::from_mut(&mut self.one),
        }
    }

    fn set_held(&mut self, held: &[Held]) {
        match held {
            [] => (self.one, self.more) = (EMPTY, None),
            [h] => (self.one, self.more) = (*h, None),
            _ => match &mut self.more {
                Some(v) => {
                    v.clear();
                    v.extend_from_slice(held);
                    v.shrink_to_fit();
                }
                None => (self.one, self.more) = (EMPTY, Some(Box::new(held.to_vec()))),
            },
        }
    }

    fn push_held(&mut self, h: Held) {
        let mut v: HeldVec = self.held().iter().copied().collect();
        v.push(h);
        self.set_held(&v);
    }

    /// Keeps the attributions `keep` accepts, releasing the others' names.
    fn retain_held(&mut self, names: &mut NameArena, mut keep: impl FnMut(&Held) -> bool) {
        let mut v: HeldVec = SmallVec::new();
        for h in self.held() {
            if keep(h) {
                v.push(*h);
            } else {
                names.release(h.name);
            }
        }
        if v.len() != self.held().len() {
            self.set_held(&v);
        }
    }

    fn is_free(&self) -> bool {
        self.held().is_empty()
    }

    fn mask(&self) -> u64 {
        self.held().iter().fold(0, |m, h| m | 1 << h.list)
    }

    fn earliest(&self) -> Option<Secs> {
        self.held().iter().map(|h| h.expires).min()
    }
}

/// Slots per page of [`Slots`].
const SLOT_PAGE: usize = 4096;

/// The dense slot vector, in pages of [`SLOT_PAGE`] entries allocated at
/// their exact size (a growing vector would hold up to twice the slots it
/// uses, and copy them all on every growth).
#[derive(Default)]
struct Slots {
    pages: Vec<Vec<Entry>>,
    len: usize,
}

impl Slots {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, e: Entry) {
        if self.len.is_multiple_of(SLOT_PAGE) {
            self.pages.push(Vec::with_capacity(SLOT_PAGE));
        }
        self.pages[self.len / SLOT_PAGE].push(e);
        self.len += 1;
    }

    /// Room for `additional` more entries in the page list (pages
    /// themselves are allocated whole, one at a time, as they fill).
    fn reserve(&mut self, additional: usize) {
        self.pages.reserve((self.len + additional).div_ceil(SLOT_PAGE).saturating_sub(self.pages.len()));
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Entry> {
        if i < self.len { Some(&mut self.pages[i / SLOT_PAGE][i % SLOT_PAGE]) } else { None }
    }
}

impl std::ops::Index<usize> for Slots {
    type Output = Entry;
    fn index(&self, i: usize) -> &Entry {
        &self.pages[i / SLOT_PAGE][i % SLOT_PAGE]
    }
}

impl std::ops::IndexMut<usize> for Slots {
    fn index_mut(&mut self, i: usize) -> &mut Entry {
        &mut self.pages[i / SLOT_PAGE][i % SLOT_PAGE]
    }
}

fn hash_addr(addr: &IpAddr) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(addr)
}

/// Address → slot, as a hash table of slot numbers (4 bytes a bucket; the
/// address is read from the slot).
#[derive(Default)]
struct Index(hashbrown::HashTable<u32>);

impl Index {
    fn get(&self, slots: &Slots, addr: &IpAddr) -> Option<usize> {
        self.0.find(hash_addr(addr), |&s| slots[s as usize].addr == *addr).map(|&s| s as usize)
    }

    /// Indexes `slot` under the address it holds (which must not be indexed yet).
    fn insert(&mut self, slots: &Slots, slot: u32) {
        let addr = slots[slot as usize].addr;
        self.0.insert_unique(hash_addr(&addr), slot, |&s| hash_addr(&slots[s as usize].addr));
    }

    fn remove(&mut self, slots: &Slots, addr: &IpAddr) -> Option<usize> {
        match self.0.find_entry(hash_addr(addr), |&s| slots[s as usize].addr == *addr) {
            Ok(e) => Some(e.remove().0 as usize),
            Err(_) => None,
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

struct Subscriber {
    id: u64,
    dirty: FxHashSet<IpAddr>,
    notify: Arc<Notify>,
    /// Whether expiry-only changes matter to this subscriber, and at which
    /// granularity (a refresh counts when it crosses a multiple of it).
    refresh_granularity: Option<UnixMillis>,
    /// The initial dump still to send: slots `dump..dump_end`.
    dump: usize,
    dump_end: usize,
}

struct State {
    index: Index,
    slots: Slots,
    free: Vec<u32>,
    /// The domain names of every attribution.
    names: NameArena,
    /// (due time, slot): 8 bytes a route.
    heap: BinaryHeap<Reverse<(Secs, u32)>>,
    subscribers: Vec<Subscriber>,
    next_subscriber: u64,
    /// Interned list names: bit number → name, route count, cap.
    list_names: Vec<Arc<str>>,
    list_ids: FxHashMap<Arc<str>, u8>,
    list_counts: Vec<usize>,
    list_caps: Vec<usize>,
    /// Interned sources: number → source (0 is `Source::Dns`). Peers are
    /// few and their numbers are never reused.
    sources: Vec<Source>,
    source_ids: FxHashMap<Source, u16>,
}

impl State {
    fn new() -> State {
        State {
            index: Index::default(),
            slots: Slots::default(),
            free: Vec::new(),
            names: NameArena::default(),
            heap: BinaryHeap::new(),
            subscribers: Vec::new(),
            next_subscriber: 0,
            list_names: Vec::new(),
            list_ids: FxHashMap::default(),
            list_counts: Vec::new(),
            list_caps: Vec::new(),
            sources: vec![Source::Dns],
            source_ids: FxHashMap::default(),
        }
    }

    fn find_source(&self, source: &Source) -> Option<u16> {
        match source {
            Source::Dns => Some(0),
            Source::Peer(_) => self.source_ids.get(source).copied(),
        }
    }

    /// The number of a source, interning it; `None` once 65 535 sources
    /// have been seen (sync origins are instance ids: a handful).
    fn source_id(&mut self, source: &Source) -> Option<u16> {
        if let Some(id) = self.find_source(source) {
            return Some(id);
        }
        let id = u16::try_from(self.sources.len()).ok().filter(|i| *i < u16::MAX)?;
        self.sources.push(source.clone());
        self.source_ids.insert(source.clone(), id);
        Some(id)
    }

    fn attribution(&self, h: &Held) -> Attribution {
        Attribution {
            domain: Arc::from(self.names.text(h.name)),
            list: self.list_names[h.list as usize].clone(),
            expires: to_millis(h.expires),
            source: self.sources[h.source as usize].clone(),
        }
    }

    /// The route in an occupied slot.
    fn route(&self, slot: usize) -> Route {
        let e = &self.slots[slot];
        Route {
            addr: e.addr,
            attributions: e.held().iter().map(|h| self.attribution(h)).collect(),
            names_total: e.names_total,
        }
    }

    fn slot_of(&self, addr: &IpAddr) -> Option<usize> {
        self.index.get(&self.slots, addr)
    }

    fn mark(&mut self, addr: IpAddr) {
        for s in &mut self.subscribers {
            if s.dirty.insert(addr) {
                s.notify.notify_one();
            }
        }
    }

    fn mark_refresh(&mut self, addr: IpAddr, old: Secs, new: Secs) {
        let (old, new) = (to_millis(old), to_millis(new));
        for s in &mut self.subscribers {
            if let Some(g) = s.refresh_granularity
                && old / g != new / g
                && s.dirty.insert(addr)
            {
                s.notify.notify_one();
            }
        }
    }

    fn schedule(&mut self, slot: usize, at: Secs) {
        self.heap.push(Reverse((at, slot as u32)));
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    /// The bit number of a list name, interning it (reusing the number of
    /// a name no route uses any more when all are taken).
    fn list_id(&mut self, list: &Arc<str>, caps: &[(Arc<str>, usize)]) -> Option<u8> {
        if let Some(&id) = self.list_ids.get(list) {
            return Some(id);
        }
        let cap = caps.iter().find(|(n, _)| n == list).map_or(usize::MAX, |(_, c)| *c);
        let id = if self.list_names.len() < MAX_LIST_IDS {
            self.list_names.push(list.clone());
            self.list_counts.push(0);
            self.list_caps.push(cap);
            self.list_names.len() - 1
        } else {
            let id = self.list_counts.iter().position(|c| *c == 0)?;
            self.list_ids.remove(&self.list_names[id]);
            self.list_names[id] = list.clone();
            self.list_caps[id] = cap;
            id
        };
        self.list_ids.insert(list.clone(), id as u8);
        Some(id as u8)
    }

    /// Per-list counts follow a route's membership mask from `old` to `new`.
    fn count_lists(&mut self, old: u64, new: u64) {
        let (mut gained, mut lost) = (new & !old, old & !new);
        while gained != 0 {
            let i = gained.trailing_zeros() as usize;
            self.list_counts[i] += 1;
            gained &= gained - 1;
        }
        while lost != 0 {
            let i = lost.trailing_zeros() as usize;
            self.list_counts[i] = self.list_counts[i].saturating_sub(1);
            lost &= lost - 1;
        }
    }

    /// Whether list `id` may gain one more route.
    fn list_has_room(&self, id: u8) -> bool {
        self.list_counts[id as usize] < self.list_caps[id as usize]
    }

    /// A new route; `held` brings its own name references.
    fn insert(&mut self, addr: IpAddr, held: &[Held], scheduled: Secs, names_total: u32) {
        let mut e = Entry { one: EMPTY, more: None, addr, scheduled, names_total };
        e.set_held(held);
        let mask = e.mask();
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = e;
                i
            }
            None => {
                self.slots.push(e);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(&self.slots, slot);
        self.count_lists(0, mask);
        self.schedule(slot as usize, scheduled);
    }

    fn remove(&mut self, addr: IpAddr) {
        if let Some(slot) = self.index.remove(&self.slots, &addr) {
            let e = &mut self.slots[slot];
            let mask = e.mask();
            e.retain_held(&mut self.names, |_| false);
            self.free.push(slot as u32);
            self.count_lists(mask, 0);
        }
    }

    /// After a change of `slot`'s attributions (its membership mask was
    /// `old` before): the per-list counts, and its removal when nothing is
    /// left.
    fn settle(&mut self, slot: usize, old: u64) -> bool {
        let e = &self.slots[slot];
        let new = e.mask();
        let (addr, gone) = (e.addr, e.is_free());
        self.count_lists(old, new);
        if gone {
            self.index.remove(&self.slots, &addr);
            self.free.push(slot as u32);
        }
        gone
    }
}

/// The table. Cheap to share as `Arc<RouteTable>`.
pub struct RouteTable {
    state: Mutex<State>,
    clock: Clock,
    min_ttl: UnixMillis,
    max_ttl: UnixMillis,
    limits: Limits,
    refusals: Refusals,
}

impl RouteTable {
    pub fn new(clock: Clock, min_ttl: Duration, max_ttl: Duration) -> RouteTable {
        RouteTable {
            state: Mutex::new(State::new()),
            clock,
            min_ttl: millis(min_ttl),
            max_ttl: millis(max_ttl),
            limits: Limits::default(),
            refusals: Refusals::default(),
        }
    }

    /// The same table with other bounds.
    pub fn with_limits(mut self, limits: Limits) -> RouteTable {
        self.limits = Limits { max_names_per_route: limits.max_names_per_route.max(1), ..limits };
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way later code depends on; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The expiry an answer with `ttl` seconds seen now gives.
    pub fn expiry_for_ttl(&self, ttl: u32) -> UnixMillis {
        self.expiry_for_ttl_at(ttl, self.clock.now())
    }

    /// The expiry an answer with `ttl` seconds seen at `now` gives.
    pub fn expiry_for_ttl_at(&self, ttl: u32, now: UnixMillis) -> UnixMillis {
        let ttl = (u64::from(ttl) * 1000).clamp(self.min_ttl, self.max_ttl);
        now + ttl
    }

    /// The latest expiry accepted from elsewhere (store, peers): now + max_ttl.
    pub fn expiry_limit(&self) -> UnixMillis {
        self.clock.now() + self.max_ttl
    }

    /// Why `addr` (canonical) may not be a route, if it may not.
    pub fn refusal_of(&self, addr: IpAddr) -> Option<Refusal> {
        if !routable_unicast(addr) {
            return Some(Refusal::Unroutable);
        }
        self.limits.deny.iter().find(|(net, _)| net.contains(&addr)).map(|(_, r)| *r)
    }

    fn refuse(&self, reason: Refusal, addr: IpAddr) -> Update {
        let i = reason as usize;
        self.refusals.by_reason[i].fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now();
        let last = self.refusals.logged[i].load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= REFUSAL_LOG_EVERY)
            && self.refusals.logged[i].compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let total = self.refusals.by_reason[i].load(Ordering::Relaxed);
            match reason {
                Refusal::MaxRoutes => warn!(
                    %addr, max_routes = self.limits.max_routes, refused_total = total,
                    "route table full ([routes] max_routes): new addresses are refused, existing routes keep refreshing"
                ),
                Refusal::ListMaxRoutes => warn!(
                    %addr, refused_total = total,
                    "a list holds its [[list]] max_routes routes: its new addresses are refused"
                ),
                _ => warn!(%addr, reason = reason.as_str(), refused_total = total, "address gets no route"),
            }
        }
        Update::Refused(reason)
    }

    /// Refusals so far, by reason.
    pub fn refused(&self) -> Vec<(Refusal, u64)> {
        Refusal::ALL.iter().map(|r| (*r, self.refusals.by_reason[*r as usize].load(Ordering::Relaxed))).collect()
    }

    /// Names dropped because their route was full of longer-living ones.
    pub fn names_dropped(&self) -> u64 {
        self.refusals.names_dropped.load(Ordering::Relaxed)
    }

    /// Adds or refreshes the attribution of `addr` to `domain` in `list`
    /// from `source`.
    pub fn upsert(
        &self,
        addr: IpAddr,
        domain: &Arc<str>,
        list: &Arc<str>,
        expires: UnixMillis,
        source: Source,
    ) -> Update {
        let addr = canonical(addr);
        if let Some(r) = self.refusal_of(addr) {
            return self.refuse(r, addr);
        }
        let expires = to_secs(expires);
        let max_names = self.limits.max_names_per_route;
        let mut st = self.lock();
        let st = &mut *st;
        let Some(list_id) = st.list_id(list, &self.limits.list_max_routes) else {
            return self.refuse(Refusal::ListMaxRoutes, addr);
        };
        let Some(source) = st.source_id(&source) else {
            self.refusals.names_dropped.fetch_add(1, Ordering::Relaxed);
            return Update::Unchanged;
        };
        let Some(slot) = st.slot_of(&addr) else {
            if st.len() >= self.limits.max_routes {
                return self.refuse(Refusal::MaxRoutes, addr);
            }
            if !st.list_has_room(list_id) {
                return self.refuse(Refusal::ListMaxRoutes, addr);
            }
            let Some(name) = st.names.intern(domain) else {
                self.refusals.names_dropped.fetch_add(1, Ordering::Relaxed);
                return Update::Unchanged;
            };
            st.insert(addr, &[Held { name, expires, source, list: list_id }], expires, 1);
            st.mark(addr);
            return Update::Added;
        };
        let hash = st.names.hash(domain);
        let known = st.names.find_hashed(domain, hash);
        let entry = &mut st.slots[slot];
        if let Some(name) = known
            && let Some(h) =
                entry.held_mut().iter_mut().find(|h| h.name == name && h.list == list_id && h.source == source)
        {
            if expires <= h.expires {
                return Update::Unchanged;
            }
            // Granularity is judged per attribution: a refresh of
            // one source must reach subscribers even while another
            // source's longer attribution dominates the route.
            let old = h.expires;
            h.expires = expires;
            st.mark_refresh(addr, old, expires);
            return Update::Refreshed;
        }
        entry.names_total = entry.names_total.saturating_add(1);
        let old_mask = entry.mask();
        if old_mask & (1 << list_id) == 0 && !st.list_has_room(list_id) {
            return self.refuse(Refusal::ListMaxRoutes, addr);
        }
        let entry = &st.slots[slot];
        let victim = if entry.held().len() >= max_names {
            // Full: the new name takes the place of the one expiring first
            // if it outlives it; the route's lifetime stays the same as
            // if every name were kept.
            let (first, at) = entry
                .held()
                .iter()
                .enumerate()
                .map(|(i, h)| (i, h.expires))
                .min_by_key(|(_, e)| *e)
                .unwrap_or((0, Secs::MAX));
            self.refusals.names_dropped.fetch_add(1, Ordering::Relaxed);
            if expires <= at {
                return Update::Unchanged;
            }
            Some(first)
        } else {
            None
        };
        let Some(name) = st.names.intern_hashed(domain, hash) else {
            self.refusals.names_dropped.fetch_add(1, Ordering::Relaxed);
            return Update::Unchanged;
        };
        let held = Held { name, expires, source, list: list_id };
        let entry = &mut st.slots[slot];
        match victim {
            Some(i) => {
                let old = std::mem::replace(&mut entry.held_mut()[i], held);
                st.names.release(old.name);
            }
            None => entry.push_held(held),
        }
        let entry = &mut st.slots[slot];
        let reschedule = expires < entry.scheduled;
        if reschedule {
            entry.scheduled = expires;
        }
        st.settle(slot, old_mask);
        if reschedule {
            st.schedule(slot, expires);
        }
        st.mark(addr);
        Update::Changed
    }

    /// Sets the attributions `source` gives `addr` to exactly `names`
    /// (domain, list, expiry) — what a sync peer reports as its current
    /// state for the address. For a (domain, list) the source already had,
    /// the later expiry wins; its attributions missing from `names` are
    /// removed; other sources' attributions are untouched. Expiries are
    /// capped at now + max_ttl and names already expired are ignored; past
    /// `max_names_per_route`, the longest-living names are kept. Returns
    /// what happened to the route.
    pub fn replace_source(
        &self,
        addr: IpAddr,
        source: &Source,
        names: &[(Arc<str>, Arc<str>, UnixMillis)],
    ) -> Replaced {
        let addr = canonical(addr);
        if let Some(r) = self.refusal_of(addr) {
            if !names.is_empty() {
                self.refuse(r, addr);
            }
            return Replaced::Unchanged;
        }
        let now = self.clock.now();
        let limit = now + self.max_ttl;
        let max_names = self.limits.max_names_per_route;
        // What the source asks for: live names, one per (domain, list) with
        // its latest expiry, the longest-living first, at most the cap.
        let mut wanted: Vec<(&Arc<str>, &Arc<str>, UnixMillis)> =
            names.iter().map(|(d, l, e)| (d, l, (*e).min(limit))).filter(|(_, _, e)| *e > now).collect();
        wanted.sort_by(|a, b| (a.0, a.1, Reverse(a.2)).cmp(&(b.0, b.1, Reverse(b.2))));
        wanted.dedup_by(|b, a| a.0 == b.0 && a.1 == b.1);
        wanted.sort_by_key(|(_, _, e)| Reverse(*e));
        wanted.truncate(max_names);
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(src) = st.source_id(source) else {
            self.refusals.names_dropped.fetch_add(1, Ordering::Relaxed);
            return Replaced::Unchanged;
        };
        let slot = st.slot_of(&addr);
        let before: HeldVec = slot.map(|s| st.slots[s].held().iter().copied().collect()).unwrap_or_default();
        let old_mask = slot.map_or(0, |s| st.slots[s].mask());
        // The new attributions, each with whether it holds a name reference
        // of its own already (a new name) or shares one of `before`'s.
        let mut after: SmallVec<[(Held, bool); 4]> =
            before.iter().filter(|h| h.source != src).map(|h| (*h, false)).collect();
        let mut refreshed: SmallVec<[(Secs, Secs); 1]> = SmallVec::new();
        let mut membership_changed = false;
        let mut new_names = 0u32;
        let mut full_list = None;
        for (domain, list, expires) in wanted {
            let expires = to_secs(expires);
            let lid = st.list_ids.get(list).copied();
            let name = st.names.find(domain);
            let old = lid.zip(name).and_then(|(id, name)| {
                before.iter().find(|h| h.source == src && h.list == id && h.name == name).copied()
            });
            match old {
                Some(o) if o.expires >= expires => after.push((o, false)),
                Some(o) => {
                    refreshed.push((o.expires, expires));
                    after.push((Held { expires, ..o }, false));
                }
                None => {
                    let Some(id) = st.list_id(list, &self.limits.list_max_routes) else {
                        full_list = Some(list.clone());
                        break;
                    };
                    let in_route = old_mask & (1 << id) != 0 || after.iter().any(|(h, _)| h.list == id);
                    if !in_route && !st.list_has_room(id) {
                        full_list = Some(list.clone());
                        break;
                    }
                    let Some(name) = st.names.intern(domain) else {
                        self.refusals.names_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    membership_changed = true;
                    new_names += 1;
                    after.push((Held { name, expires, source: src, list: id }, true));
                }
            }
        }
        // Gives back the references of new names not kept.
        let release_new = |st: &mut State, held: &[(Held, bool)]| {
            for (h, new) in held {
                if *new {
                    st.names.release(h.name);
                }
            }
        };
        if let Some(full) = full_list {
            release_new(st, &after);
            drop(guard);
            self.refuse(Refusal::ListMaxRoutes, addr);
            let rest: Vec<_> = names.iter().filter(|(_, l, _)| *l != full).cloned().collect();
            return self.replace_source(addr, source, &rest);
        }
        if after.len() > max_names {
            // Other sources hold most of the room: keep the longest-living overall.
            after.sort_by_key(|(h, _)| Reverse(h.expires));
            release_new(st, &after[max_names..]);
            after.truncate(max_names);
            self.refusals.names_dropped.fetch_add(1, Ordering::Relaxed);
        }
        let kept = after.iter().filter(|(h, _)| h.source == src).count();
        let had = before.iter().filter(|h| h.source == src).count();
        // Without a new key, the key set changed exactly when some were dropped.
        membership_changed |= kept != had || after.len() != before.len();
        if !membership_changed && refreshed.is_empty() {
            release_new(st, &after);
            return Replaced::Unchanged;
        }
        let result = match (before.is_empty(), after.is_empty()) {
            (true, true) => return Replaced::Unchanged,
            (true, false) => Replaced::Added,
            (false, true) => Replaced::Removed,
            (false, false) => Replaced::Changed,
        };
        if result == Replaced::Added && st.len() >= self.limits.max_routes {
            release_new(st, &after);
            drop(guard);
            self.refuse(Refusal::MaxRoutes, addr);
            return Replaced::Unchanged;
        }
        // Every kept attribution owns a reference; then `before`'s go.
        for (h, new) in &after {
            if !*new {
                st.names.retain(h.name);
            }
        }
        for h in &before {
            st.names.release(h.name);
        }
        let held: HeldVec = after.iter().map(|(h, _)| *h).collect();
        let earliest = held.iter().map(|h| h.expires).min().unwrap_or(now_secs(now));
        let reschedule = match slot {
            Some(s) => {
                let e = &mut st.slots[s];
                e.set_held(&held);
                e.names_total = e.names_total.saturating_add(new_names);
                let r = earliest < e.scheduled;
                if r {
                    e.scheduled = earliest;
                }
                st.settle(s, old_mask);
                r && result != Replaced::Removed
            }
            None => {
                st.insert(addr, &held, earliest, new_names.max(1));
                false
            }
        };
        if reschedule && let Some(s) = slot {
            st.schedule(s, earliest);
        }
        if membership_changed {
            st.mark(addr);
        } else {
            for (old, new) in refreshed {
                st.mark_refresh(addr, old, new);
            }
        }
        result
    }

    /// Runs `f` on every occupied slot, [`CHUNK`] slots per lock hold.
    /// A route that exists during the whole walk is visited exactly once.
    fn walk(&self, mut f: impl FnMut(&mut State, usize)) {
        let mut start = 0;
        loop {
            let mut st = self.lock();
            let end = (start + CHUNK).min(st.slots.len());
            if start >= end {
                return;
            }
            for i in start..end {
                if !st.slots[i].is_free() {
                    f(&mut st, i);
                }
            }
            drop(st);
            start = end;
        }
    }

    /// Removes every attribution of `source` on addresses not in `keep`
    /// (a sync peer's full snapshot did not mention them, or the peer's
    /// store was replaced). Returns the addresses of routes left without
    /// any attribution, which are removed.
    pub fn sweep_source(&self, source: &Source, keep: &FxHashSet<IpAddr>) -> Vec<IpAddr> {
        let mut removed = Vec::new();
        // Source numbers are never reused: one look-up serves the walk.
        let Some(src) = self.lock().find_source(source) else { return removed };
        self.walk(|st, i| {
            let State { slots, names, .. } = &mut *st;
            let e = &mut slots[i];
            if keep.contains(&e.addr) || !e.held().iter().any(|h| h.source == src) {
                return;
            }
            let old = e.mask();
            e.retain_held(names, |h| h.source != src);
            let addr = e.addr;
            if st.settle(i, old) {
                removed.push(addr);
            }
            st.mark(addr);
        });
        removed
    }

    /// Inserts routes read from the store at start-up: attributions already
    /// expired are dropped and expiries are capped at now + max_ttl.
    /// Subscribers are not told (they start with a full dump if they ask).
    /// Returns the addresses dropped (expired, or refused by the bounds).
    /// Makes room for `additional` more routes at once (the start-up load
    /// knows how many the store holds), instead of growing the index, the
    /// slots and the heap step by step while holding the lock.
    pub fn reserve(&self, additional: usize) {
        let additional = additional.min(self.limits.max_routes);
        let mut st = self.lock();
        let State { index, slots, heap, .. } = &mut *st;
        index.0.reserve(additional, |&s| hash_addr(&slots[s as usize].addr));
        slots.reserve(additional);
        heap.reserve(additional);
    }

    pub fn load(&self, routes: impl IntoIterator<Item = Route>) -> Vec<IpAddr> {
        self.load_at(routes, None)
    }

    /// [`RouteTable::load`] with the store's own record of when it was
    /// last written: an attribution expired by the clock but not by that
    /// time is kept for the life it had left then (a clock set wrong at
    /// boot must not empty the store).
    pub fn load_at(&self, routes: impl IntoIterator<Item = Route>, store_time: Option<UnixMillis>) -> Vec<IpAddr> {
        let now = self.clock.now();
        let limit = to_secs(now + self.max_ttl);
        let mut dropped = Vec::new();
        let mut routes = routes.into_iter().peekable();
        while routes.peek().is_some() {
            let mut st = self.lock();
            for mut route in routes.by_ref().take(CHUNK) {
                for a in &mut route.attributions {
                    if a.expires <= now
                        && let Some(t) = store_time
                        && a.expires > t
                    {
                        a.expires = now + (a.expires - t);
                    }
                }
                route.attributions.retain(|a| a.expires > now);
                let addr = canonical(route.addr);
                if route.attributions.is_empty() || self.refusal_of(addr).is_some() {
                    dropped.push(route.addr);
                    continue;
                }
                // One index lookup per route (the store has each address
                // once; a second load of the same address replaces it).
                let existing = st.slot_of(&addr).is_some();
                if !existing && st.len() >= self.limits.max_routes {
                    self.refuse(Refusal::MaxRoutes, addr);
                    dropped.push(route.addr);
                    continue;
                }
                let mut held: HeldVec = SmallVec::new();
                route.attributions.sort_by_key(|a| Reverse(a.expires));
                for a in route.attributions.into_iter().take(self.limits.max_names_per_route) {
                    let Some(id) = st.list_id(&a.list, &self.limits.list_max_routes) else { continue };
                    let Some(source) = st.source_id(&a.source) else { continue };
                    // Records of one answer name the same domain: one copy.
                    let Some(name) = st.names.intern(&a.domain) else { continue };
                    held.push(Held { name, expires: to_secs(a.expires).min(limit), source, list: id });
                }
                if held.is_empty() {
                    dropped.push(route.addr);
                    continue;
                }
                let scheduled = held.iter().map(|h| h.expires).min().unwrap_or(limit);
                if existing {
                    st.remove(addr);
                }
                st.insert(addr, &held, scheduled, route.names_total.max(1));
            }
        }
        dropped
    }

    /// Removes attributions that have expired, and routes left without any.
    /// Returns the removed routes' addresses.
    pub fn expire(&self) -> Vec<IpAddr> {
        let now = now_secs(self.clock.now());
        let mut removed = Vec::new();
        loop {
            let mut st = self.lock();
            let st = &mut *st;
            let mut handled = 0;
            while let Some(&Reverse((at, slot))) = st.heap.peek() {
                if at > now || handled == CHUNK {
                    break;
                }
                handled += 1;
                st.heap.pop();
                let slot = slot as usize;
                // A stale entry: the slot was freed (and maybe reused) or
                // rescheduled since.
                let Some(entry) = st.slots.get_mut(slot) else { continue };
                if entry.is_free() || entry.scheduled != at {
                    continue;
                }
                let addr = entry.addr;
                if entry.held().iter().all(|h| h.expires > now) {
                    // Refreshed since it was scheduled.
                    entry.scheduled = entry.earliest().unwrap_or(now);
                    let next = entry.scheduled;
                    st.schedule(slot, next);
                    continue;
                }
                let old = entry.mask();
                entry.retain_held(&mut st.names, |h| h.expires > now);
                let next = entry.earliest();
                if let Some(next) = next {
                    entry.scheduled = next;
                }
                if st.settle(slot, old) {
                    removed.push(addr);
                } else if let Some(next) = next {
                    st.schedule(slot, next);
                }
                st.mark(addr);
            }
            if handled < CHUNK {
                return removed;
            }
        }
    }

    /// After a list reload: drops attributions whose name no list claims
    /// any more (or whose list no longer claims it). Returns the removed
    /// routes' addresses.
    pub fn revalidate(&self, lists: &Lists) -> Vec<IpAddr> {
        let mut removed = Vec::new();
        self.walk(|st, i| {
            let State { slots, list_names, names, .. } = &mut *st;
            let keep = |names: &NameArena, h: &Held| {
                let list = &list_names[h.list as usize];
                lists.index_of(list).is_some_and(|i| lists.lookup_text(names.text(h.name)) & (1 << i) != 0)
            };
            let e = &mut slots[i];
            if e.held().iter().all(|h| keep(names, h)) {
                return;
            }
            let old = e.mask();
            let drop: HeldVec = e.held().iter().filter(|h| !keep(names, h)).copied().collect();
            e.retain_held(names, |h| !drop.contains(h));
            let addr = e.addr;
            // A shrunk route keeps its heap entry; expiry re-checks it.
            if st.settle(i, old) {
                removed.push(addr);
            }
            st.mark(addr);
        });
        removed
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Distinct domain names the attributions use (each stored once).
    pub fn names_len(&self) -> usize {
        self.lock().names.len()
    }

    /// Heap bytes of the table's parts, as (part, bytes): the slots (and
    /// the attribution lists of routes with several names), the address
    /// index, the expiry heap, the names. Walks the slots in chunks.
    pub fn heap_bytes(&self) -> Vec<(&'static str, usize)> {
        let mut more = 0;
        self.walk(|st, i| {
            if let Some(v) = &st.slots[i].more {
                more += 24 + v.capacity() * std::mem::size_of::<Held>();
            }
        });
        let st = self.lock();
        vec![
            ("slots", st.slots.pages.len() * SLOT_PAGE * std::mem::size_of::<Entry>() + st.free.capacity() * 4),
            ("extra attributions", more),
            ("address index", st.index.0.capacity() * 5),
            ("expiry heap", st.heap.capacity() * std::mem::size_of::<Reverse<(Secs, u32)>>()),
            ("names", st.names.heap_bytes()),
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Routes per list name.
    pub fn per_list(&self) -> Vec<(Arc<str>, usize)> {
        let st = self.lock();
        let mut v: Vec<_> =
            st.list_names.iter().zip(&st.list_counts).filter(|(_, c)| **c > 0).map(|(k, v)| (k.clone(), *v)).collect();
        v.sort();
        v
    }

    pub fn get(&self, addr: IpAddr) -> Option<Route> {
        let addr = canonical(addr);
        let st = self.lock();
        st.slot_of(&addr).map(|s| st.route(s))
    }

    /// A copy of every route, sorted by address (copied in chunks).
    pub fn snapshot(&self) -> Vec<Route> {
        let mut v = Vec::new();
        self.walk(|st, i| v.push(st.route(i)));
        v.sort_by_key(|r| r.addr);
        v
    }

    /// Up to `limit` routes with addresses after `after` (all, without it),
    /// in address order: a page of the table. The walk is chunked like
    /// every other; only `limit` routes are copied.
    pub fn page(&self, after: Option<IpAddr>, limit: usize, mut keep: impl FnMut(&Route) -> bool) -> Vec<Route> {
        if limit == 0 {
            return Vec::new();
        }
        let after = after.map(canonical);
        // The `limit` smallest addresses seen so far (a max-heap).
        let mut best: BinaryHeap<IpAddr> = BinaryHeap::with_capacity(limit + 1);
        self.walk(|st, i| {
            let addr = st.slots[i].addr;
            if after.is_some_and(|a| addr <= a) || best.len() == limit && best.peek().is_some_and(|m| addr >= *m) {
                return;
            }
            if keep(&st.route(i)) {
                best.push(addr);
                if best.len() > limit {
                    best.pop();
                }
            }
        });
        let addrs = best.into_sorted_vec();
        let mut out = Vec::with_capacity(addrs.len());
        for chunk in addrs.chunks(CHUNK) {
            let st = self.lock();
            out.extend(chunk.iter().filter_map(|a| st.slot_of(a).map(|s| st.route(s))));
        }
        out
    }

    /// Registers a subscriber. With `initial_dump` every current route is
    /// sent to it (from a cursor over the slots, not a set of every
    /// address); with `refresh_granularity`, expiry-only changes are
    /// reported when they cross a multiple of it.
    pub fn subscribe(self: &Arc<Self>, initial_dump: bool, refresh_granularity: Option<Duration>) -> Subscription {
        let notify = Arc::new(Notify::new());
        let mut st = self.lock();
        let id = st.next_subscriber;
        st.next_subscriber += 1;
        let dump_end = if initial_dump { st.slots.len() } else { 0 };
        if initial_dump && st.len() > 0 {
            notify.notify_one();
        }
        st.subscribers.push(Subscriber {
            id,
            dirty: FxHashSet::default(),
            notify: notify.clone(),
            refresh_granularity: refresh_granularity.map(|g| millis(g).max(1)),
            dump: 0,
            dump_end,
        });
        Subscription { table: self.clone(), id, notify }
    }

    fn drain(&self, id: u64, max: usize) -> Vec<RouteEvent> {
        let mut out = Vec::new();
        while out.len() < max {
            let before = out.len();
            let more = self.drain_some(id, (max - out.len()).min(CHUNK), &mut out);
            if !more || out.len() == before {
                break;
            }
        }
        out
    }

    /// One lock hold of a drain; returns whether more may be waiting.
    fn drain_some(&self, id: u64, max: usize, out: &mut Vec<RouteEvent>) -> bool {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(sub) = st.subscribers.iter_mut().find(|s| s.id == id) else { return false };
        let addrs: Vec<IpAddr> = if sub.dirty.len() <= max {
            sub.dirty.drain().collect()
        } else {
            let some: Vec<IpAddr> = sub.dirty.iter().take(max).copied().collect();
            for a in &some {
                sub.dirty.remove(a);
            }
            some
        };
        let mut room = max - addrs.len();
        let (mut dump, dump_end) = (sub.dump, sub.dump_end.min(st.slots.len()));
        for addr in addrs {
            out.push(match st.slot_of(&addr) {
                Some(s) => RouteEvent::Added(st.route(s)),
                None => RouteEvent::Removed(addr),
            });
        }
        while room > 0 && dump < dump_end {
            if !st.slots[dump].is_free() {
                out.push(RouteEvent::Added(st.route(dump)));
                room -= 1;
            }
            dump += 1;
        }
        let Some(sub) = st.subscribers.iter_mut().find(|s| s.id == id) else { return false };
        sub.dump = dump;
        if sub.dirty.is_empty() && sub.dirty.capacity() > SHRINK_ABOVE {
            // A burst (a 1 M-route fill) grew the set; draining keeps its
            // buckets (~18 bytes each) until shrunk.
            sub.dirty = FxHashSet::default();
        }
        let more = !sub.dirty.is_empty() || sub.dump < dump_end;
        if more {
            // More remain: make sure the subscriber comes back.
            sub.notify.notify_one();
        }
        more
    }

    /// Takes the subscriber's whole set of changed addresses, swapping in
    /// an empty one: O(1) under the lock, however large a burst made it
    /// (the initial dump is not touched).
    fn take_changed(&self, id: u64) -> FxHashSet<IpAddr> {
        let mut st = self.lock();
        let Some(sub) = st.subscribers.iter_mut().find(|s| s.id == id) else { return FxHashSet::default() };
        std::mem::take(&mut sub.dirty)
    }

    /// The current state of each address (`Removed` when it has no route),
    /// appended to `out` in the given order, [`CHUNK`] per lock hold.
    fn current(&self, addrs: &[IpAddr], out: &mut Vec<RouteEvent>) {
        for chunk in addrs.chunks(CHUNK) {
            let st = self.lock();
            out.extend(chunk.iter().map(|a| match st.slot_of(a) {
                Some(s) => RouteEvent::Added(st.route(s)),
                None => RouteEvent::Removed(*a),
            }));
        }
    }

    fn pending(&self, id: u64) -> usize {
        self.lock()
            .subscribers
            .iter()
            .find(|s| s.id == id)
            .map_or(0, |s| s.dirty.len() + s.dump_end.saturating_sub(s.dump))
    }

    fn requeue(&self, id: u64, addrs: impl Iterator<Item = IpAddr>) {
        let mut addrs = addrs.peekable();
        while addrs.peek().is_some() {
            let mut st = self.lock();
            let Some(sub) = st.subscribers.iter_mut().find(|s| s.id == id) else { return };
            sub.dirty.extend(addrs.by_ref().take(CHUNK));
            sub.notify.notify_one();
        }
    }

    fn unsubscribe(&self, id: u64) {
        self.lock().subscribers.retain(|s| s.id != id);
    }
}

/// A subscriber's handle; dropping it unsubscribes.
pub struct Subscription {
    table: Arc<RouteTable>,
    id: u64,
    notify: Arc<Notify>,
}

impl Subscription {
    /// Waits until something changed since the last drain.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    /// The current state of up to `max` changed routes.
    pub fn drain(&self, max: usize) -> Vec<RouteEvent> {
        self.table.drain(self.id, max)
    }

    /// Takes every changed address at once (not the initial dump), for a
    /// consumer that orders them before asking for their state with
    /// [`Subscription::current`] (the store writer writes in key order).
    /// What the consumer cannot keep goes back with
    /// [`Subscription::requeue`].
    pub fn take_changed(&self) -> FxHashSet<IpAddr> {
        self.table.take_changed(self.id)
    }

    /// The current state of these addresses, in their order (`Removed`
    /// for one without a route), appended to `out`.
    pub fn current(&self, addrs: &[IpAddr], out: &mut Vec<RouteEvent>) {
        self.table.current(addrs, out)
    }

    /// How many changed routes wait to be drained (an initial dump counts
    /// the slots it has left, freed ones included).
    pub fn pending(&self) -> usize {
        self.table.pending(self.id)
    }

    /// Marks addresses as changed again (a consumer that could not keep
    /// what it drained, e.g. a failed store write): the next drain gives
    /// their current state.
    pub fn requeue(&self, addrs: impl Iterator<Item = IpAddr>) {
        self.table.requeue(self.id, addrs)
    }

    /// Turns the subscription into a bounded channel of event batches (at
    /// most `batch` events each), fed by a task on `tracker` (its owner
    /// waits for it) that ends when the receiver is dropped. A full channel
    /// holds the pump, not the table: changes keep coalescing in the
    /// subscriber's set meanwhile.
    pub fn into_channel(self, tracker: &TaskTracker, capacity: usize, batch: usize) -> mpsc::Receiver<Vec<RouteEvent>> {
        let (tx, rx) = mpsc::channel(capacity);
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = self.changed() => {}
                    _ = tx.closed() => return,
                }
                let events = self.drain(batch);
                if !events.is_empty() && tx.send(events).await.is_err() {
                    return;
                }
            }
        });
        rx
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.table.unsubscribe(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const H: Duration = Duration::from_secs(3600);

    fn table(min: Duration, max: Duration) -> Arc<RouteTable> {
        Arc::new(RouteTable::new(Clock::starting_at(1_000_000), min, max))
    }

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn s(x: &str) -> Arc<str> {
        Arc::from(x)
    }

    #[test]
    fn layout_stays_compact() {
        // BENCHMARKS.md counts on these sizes (issue 8: memory at 1 M routes).
        assert_eq!(std::mem::size_of::<Held>(), 12);
        assert_eq!(std::mem::size_of::<Entry>(), 48);
        assert_eq!(std::mem::size_of::<Reverse<(Secs, u32)>>(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_is_clamped_and_routes_expire_on_time() {
        let t = table(Duration::from_secs(60), H);
        let (d, l) = (s("www.listed.test"), s("vpn"));
        // TTL 5 s is raised to the 60 s floor.
        let e = t.expiry_for_ttl(5);
        assert_eq!(e, 1_000_000 + 60_000);
        assert_eq!(t.upsert(a("198.51.100.7"), &d, &l, e, Source::Dns), Update::Added);
        // TTL of a week is cut to max_ttl.
        assert_eq!(t.expiry_for_ttl(604_800), 1_000_000 + 3_600_000);
        tokio::time::advance(Duration::from_millis(59_999)).await;
        assert!(t.expire().is_empty());
        assert_eq!(t.len(), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(t.expire(), vec![a("198.51.100.7")]);
        assert!(t.is_empty());
        assert!(t.per_list().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_extends_and_never_shortens() {
        let t = table(Duration::from_secs(10), H);
        let (d, l) = (s("x.test"), s("vpn"));
        let addr = a("198.51.100.1");
        t.upsert(addr, &d, &l, t.expiry_for_ttl(100), Source::Dns);
        for _ in 0..20 {
            tokio::time::advance(Duration::from_secs(50)).await;
            assert!(t.expire().is_empty());
            // A shorter answer does not shorten the route.
            assert_eq!(t.upsert(addr, &d, &l, t.expiry_for_ttl(10), Source::Dns), Update::Unchanged);
            assert_eq!(t.upsert(addr, &d, &l, t.expiry_for_ttl(100), Source::Dns), Update::Refreshed);
        }
        // The heap did not grow with the refreshes.
        assert!(t.lock().heap.len() <= 2, "heap {}", t.lock().heap.len());
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(t.expire().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn several_names_keep_the_route_as_long_as_the_longest() {
        let t = table(Duration::from_secs(1), H);
        let addr = a("2001:db8::7");
        t.upsert(addr, &s("a.test"), &s("vpn"), t.expiry_for_ttl(600), Source::Dns);
        assert_eq!(t.upsert(addr, &s("b.test"), &s("cdn"), t.expiry_for_ttl(60), Source::Dns), Update::Changed);
        assert_eq!(t.per_list(), vec![(s("cdn"), 1), (s("vpn"), 1)]);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(t.expire().is_empty());
        let r = t.get(addr).unwrap();
        assert_eq!(r.attributions.len(), 1);
        assert_eq!(&*r.attributions[0].domain, "a.test");
        assert_eq!(t.per_list(), vec![(s("vpn"), 1)]);
        tokio::time::advance(Duration::from_secs(540)).await;
        assert_eq!(t.expire(), vec![addr]);
    }

    #[tokio::test(start_paused = true)]
    async fn subscribers_see_current_state_and_coalesce() {
        let t = table(Duration::from_secs(1), H);
        let sub = t.subscribe(false, None);
        let (d, l) = (s("x.test"), s("vpn"));
        t.upsert(a("198.51.100.1"), &d, &l, t.expiry_for_ttl(5), Source::Dns);
        t.upsert(a("198.51.100.2"), &d, &l, t.expiry_for_ttl(5), Source::Dns);
        // A refresh is not an event for a subscriber without granularity.
        t.upsert(a("198.51.100.2"), &d, &l, t.expiry_for_ttl(50), Source::Dns);
        sub.changed().await;
        let mut ev = sub.drain(100);
        ev.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(ev.len(), 2);
        assert!(matches!(&ev[0], RouteEvent::Added(r) if r.addr == a("198.51.100.1")));
        // Added then expired before the next drain: only Removed.
        t.upsert(a("198.51.100.3"), &d, &l, t.expiry_for_ttl(1), Source::Dns);
        tokio::time::advance(Duration::from_secs(6)).await;
        t.expire();
        let mut ev = sub.drain(100);
        ev.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(ev, vec![RouteEvent::Removed(a("198.51.100.1")), RouteEvent::Removed(a("198.51.100.3"))]);
        // A late subscriber with an initial dump sees the table.
        let late = t.subscribe(true, None);
        assert_eq!(late.drain(100), vec![RouteEvent::Added(t.get(a("198.51.100.2")).unwrap())]);
        drop(late);
        assert_eq!(t.lock().subscribers.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_granularity() {
        let t = table(Duration::from_secs(1), H);
        let sub = t.subscribe(false, Some(Duration::from_secs(60)));
        let (d, l) = (s("x.test"), s("vpn"));
        let addr = a("198.51.100.1");
        t.upsert(addr, &d, &l, 60_000, Source::Dns);
        assert_eq!(sub.drain(10).len(), 1);
        t.upsert(addr, &d, &l, 60_500, Source::Dns);
        assert_eq!(sub.drain(10).len(), 0);
        t.upsert(addr, &d, &l, 120_000, Source::Dns);
        assert_eq!(sub.drain(10).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn channel_is_bounded_and_loses_nothing() {
        let t = table(Duration::from_secs(1), H);
        let tracker = TaskTracker::new();
        let mut rx = t.subscribe(false, None).into_channel(&tracker, 1, 10);
        let (d, l) = (s("x.test"), s("vpn"));
        for i in 0..100u8 {
            t.upsert(IpAddr::from([198, 51, 100, i]), &d, &l, t.expiry_for_ttl(5), Source::Dns);
        }
        let mut seen = FxHashSet::default();
        while seen.len() < 100 {
            let batch = rx.recv().await.unwrap();
            assert!(batch.len() <= 10);
            for e in batch {
                if let RouteEvent::Added(r) = e {
                    seen.insert(r.addr);
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sources_keep_separate_attributions() {
        let t = table(Duration::from_secs(1), H);
        let sub = t.subscribe(false, None);
        let (d, l) = (s("www.listed.test"), s("vpn"));
        let addr = a("198.51.100.7");
        let peer = Source::Peer(s("peer-a"));
        let far = 1_000_000 + 600_000;
        assert_eq!(t.upsert(addr, &d, &l, t.expiry_for_ttl(60), Source::Dns), Update::Added);
        assert_eq!(t.replace_source(addr, &peer, &[(d.clone(), l.clone(), far)]), Replaced::Changed);
        assert_eq!(t.get(addr).unwrap().attributions.len(), 2);
        assert_eq!(t.per_list(), vec![(s("vpn"), 1)]);
        // The same report again, or an older one, changes nothing.
        assert_eq!(t.replace_source(addr, &peer, &[(d.clone(), l.clone(), far)]), Replaced::Unchanged);
        assert_eq!(t.replace_source(addr, &peer, &[(d.clone(), l.clone(), far - 1)]), Replaced::Unchanged);
        // A local refresh does not touch the peer's attribution.
        assert_eq!(t.upsert(addr, &d, &l, t.expiry_for_ttl(120), Source::Dns), Update::Refreshed);
        let r = t.get(addr).unwrap();
        assert_eq!(r.attributions.iter().find(|x| x.source == peer).unwrap().expires, far);
        sub.drain(10);
        // The peer withdraws: only its attribution goes.
        assert_eq!(t.replace_source(addr, &peer, &[]), Replaced::Changed);
        let r = t.get(addr).unwrap();
        assert_eq!(r.attributions.len(), 1);
        assert_eq!(r.attributions[0].source, Source::Dns);
        assert_eq!(sub.drain(10).len(), 1);
        // Peer-only route: withdrawn means removed, and subscribers hear it.
        let other = a("2001:db8::9");
        assert_eq!(t.replace_source(other, &peer, &[(d.clone(), l.clone(), far)]), Replaced::Added);
        assert_eq!(t.replace_source(other, &peer, &[]), Replaced::Removed);
        assert!(t.get(other).is_none());
        assert_eq!(sub.drain(10), vec![RouteEvent::Removed(other)]);
        assert_eq!(t.per_list(), vec![(s("vpn"), 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn peer_attributions_expire_cap_and_refresh() {
        let t = table(Duration::from_secs(1), H);
        let sub = t.subscribe(false, Some(Duration::from_secs(10)));
        let (d, l) = (s("x.test"), s("vpn"));
        let peer = Source::Peer(s("peer-a"));
        let addr = a("198.51.100.1");
        // Expired names are ignored; expiries beyond max_ttl are capped.
        assert_eq!(t.replace_source(addr, &peer, &[(d.clone(), l.clone(), 999_999)]), Replaced::Unchanged);
        assert_eq!(t.replace_source(addr, &peer, &[(d.clone(), l.clone(), u64::MAX / 2)]), Replaced::Added);
        assert_eq!(t.get(addr).unwrap().expires(), 1_000_000 + 3_600_000);
        t.replace_source(addr, &peer, &[]);
        sub.drain(10);
        // Short-lived peer route: refreshes within the granularity are
        // quiet, crossing it is an event; the route expires on time.
        t.replace_source(addr, &peer, &[(d.clone(), l.clone(), 1_005_000)]);
        assert_eq!(sub.drain(10).len(), 1);
        assert_eq!(t.replace_source(addr, &peer, &[(d.clone(), l.clone(), 1_006_000)]), Replaced::Changed);
        assert!(sub.drain(10).is_empty());
        t.replace_source(addr, &peer, &[(d.clone(), l.clone(), 1_012_000)]);
        assert_eq!(sub.drain(10).len(), 1);
        tokio::time::advance(Duration::from_millis(11_999)).await;
        assert!(t.expire().is_empty());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(t.expire(), vec![addr]);
        // A second name replaces the first.
        t.replace_source(addr, &peer, &[(d.clone(), l.clone(), 1_100_000)]);
        t.replace_source(addr, &peer, &[(s("y.test"), l.clone(), 1_100_000)]);
        let r = t.get(addr).unwrap();
        assert_eq!(r.attributions.len(), 1);
        assert_eq!(&*r.attributions[0].domain, "y.test");
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_removes_one_source_except_kept() {
        let t = table(Duration::from_secs(1), H);
        let (d, l) = (s("x.test"), s("vpn"));
        let (p, q) = (Source::Peer(s("p")), Source::Peer(s("q")));
        let far = 2_000_000;
        for i in 1..=3u8 {
            t.replace_source(IpAddr::from([198, 51, 100, i]), &p, &[(d.clone(), l.clone(), far)]);
        }
        t.replace_source(a("198.51.100.3"), &q, &[(d.clone(), l.clone(), far)]);
        let keep: FxHashSet<IpAddr> = [a("198.51.100.1")].into_iter().collect();
        let mut removed = t.sweep_source(&p, &keep);
        removed.sort();
        assert_eq!(removed, vec![a("198.51.100.2")]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(a("198.51.100.3")).unwrap().attributions[0].source, q);
        assert_eq!(t.per_list(), vec![(s("vpn"), 2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn load_drops_expired_and_caps_expiry() {
        let t = table(Duration::from_secs(1), H);
        let mk = |addr: &str, expires| Route {
            addr: a(addr),
            attributions: SmallVec::from_elem(
                Attribution { domain: s("x.test"), list: s("vpn"), expires, source: Source::Dns },
                1,
            ),
            names_total: 1,
        };
        let dropped = t.load(vec![mk("198.51.100.1", 999_999), mk("::ffff:198.51.100.2", 1_000_000 + 100 * 3_600_000)]);
        assert_eq!(dropped, vec![a("198.51.100.1")]);
        assert_eq!(t.len(), 1);
        let r = t.get(a("198.51.100.2")).unwrap();
        assert_eq!(r.expires(), 1_000_000 + 3_600_000);
    }

    #[tokio::test(start_paused = true)]
    async fn random_subdomain_flood_keeps_the_cap_and_the_expiry() {
        let t = Arc::new(
            RouteTable::new(Clock::starting_at(1_000_000), Duration::from_secs(1), H)
                .with_limits(Limits { max_names_per_route: 4, ..Limits::default() }),
        );
        let sub = t.subscribe(false, None);
        let (l, addr) = (s("vpn"), a("198.51.100.7"));
        let mut all = Vec::new();
        for i in 0..10_000u64 {
            // Expiries go up and down: the route must live as long as the
            // longest of them, exactly as if every name were kept (in
            // whole seconds: the table's resolution).
            let e = 1_000_000 + (10 + (i * 7919) % 50_000) * 1000;
            all.push(e);
            t.upsert(addr, &s(&format!("r{i}.wild.test")), &l, e, Source::Dns);
        }
        all.sort();
        let longest = *all.last().unwrap();
        let r = t.get(addr).unwrap();
        assert_eq!(r.attributions.len(), 4);
        assert_eq!(r.names_total, 10_000);
        assert_eq!(r.expires(), longest);
        // The kept names are the four that live longest.
        let mut kept: Vec<u64> = r.attributions.iter().map(|a| a.expires).collect();
        kept.sort();
        assert_eq!(kept, all[all.len() - 4..].to_vec());
        assert!(t.names_dropped() > 9_000);
        assert_eq!(t.per_list(), vec![(s("vpn"), 1)]);
        assert_eq!(sub.pending(), 1);
        tokio::time::advance(Duration::from_millis(longest - 1_000_000 - 1)).await;
        t.expire();
        assert_eq!(t.len(), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(t.expire(), vec![addr]);
    }

    #[tokio::test(start_paused = true)]
    async fn names_are_shared_and_freed_with_their_last_attribution() {
        let t = table(Duration::from_secs(1), H);
        let (l, m) = (s("vpn"), s("other"));
        let peer = Source::Peer(s("b"));
        let now = t.clock().now();
        // One name on three addresses, in two lists, from two sources.
        for i in 1..=3 {
            t.upsert(a(&format!("198.51.100.{i}")), &s("cdn.listed.test"), &l, now + 10_000, Source::Dns);
        }
        t.upsert(a("198.51.100.1"), &s("cdn.listed.test"), &m, now + 20_000, Source::Dns);
        t.replace_source(a("198.51.100.1"), &peer, &[(s("cdn.listed.test"), s("vpn"), now + 30_000)]);
        assert_eq!(t.names_len(), 1);
        t.upsert(a("198.51.100.2"), &s("www.listed.test"), &l, now + 40_000, Source::Dns);
        assert_eq!(t.names_len(), 2);
        let r = t.get(a("198.51.100.1")).unwrap();
        assert_eq!(r.attributions.len(), 3);
        assert!(r.attributions.iter().all(|x| &*x.domain == "cdn.listed.test"));
        // The peer's names go with a replace and a sweep.
        t.replace_source(a("198.51.100.3"), &peer, &[(s("peer.listed.test"), s("vpn"), now + 30_000)]);
        assert_eq!(t.names_len(), 3);
        t.replace_source(a("198.51.100.3"), &peer, &[]);
        assert_eq!(t.names_len(), 2);
        t.replace_source(a("198.51.100.3"), &peer, &[(s("peer.listed.test"), s("vpn"), now + 30_000)]);
        t.sweep_source(&peer, &FxHashSet::default());
        assert_eq!(t.names_len(), 2);
        // A flood over a full route keeps the names at the cap.
        let t2 = Arc::new(
            RouteTable::new(Clock::starting_at(1_000_000), Duration::from_secs(1), H)
                .with_limits(Limits { max_names_per_route: 4, ..Limits::default() }),
        );
        for i in 0..5_000u64 {
            t2.upsert(a("198.51.100.9"), &s(&format!("r{i}.wild.test")), &l, 1_000_000 + (i + 1) * 1000, Source::Dns);
        }
        assert_eq!(t2.names_len(), 4);
        // Expiry frees what it removes.
        tokio::time::advance(Duration::from_secs(15)).await;
        t.expire();
        assert_eq!(t.names_len(), 2, "cdn (peer, 30 s gone by the sweep; other list 20 s) and www");
        tokio::time::advance(Duration::from_secs(30)).await;
        t.expire();
        assert_eq!((t.len(), t.names_len()), (0, 0));
        // Routes loaded from the store share names too.
        let route = |ip: &str| {
            Route::new(
                a(ip),
                smallvec::smallvec![Attribution {
                    domain: s("loaded.listed.test"),
                    list: s("vpn"),
                    expires: t.clock().now() + 60_000,
                    source: Source::Dns
                }],
            )
        };
        t.load(vec![route("198.51.100.1"), route("198.51.100.2")]);
        assert_eq!((t.len(), t.names_len()), (2, 1));
        t.load(vec![route("198.51.100.1")]);
        assert_eq!((t.len(), t.names_len()), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn name_references_follow_every_operation() {
        // Random upserts, peer replaces, sweeps, loads and expiry over a
        // few addresses and names: after each step the arena holds exactly
        // the distinct names the routes use.
        let t = Arc::new(
            RouteTable::new(Clock::starting_at(1_000_000), Duration::from_secs(1), H)
                .with_limits(Limits { max_names_per_route: 3, ..Limits::default() }),
        );
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let lists = [s("vpn"), s("other")];
        let peers = [Source::Peer(s("b")), Source::Peer(s("c"))];
        for step in 0..5_000 {
            let addr = a(&format!("198.51.100.{}", 1 + next(6)));
            let name = |i: u64| s(&format!("n{i}.listed.test"));
            let now = t.clock().now();
            match next(10) {
                0..=4 => {
                    let e = now + 1_000 * (1 + next(60));
                    t.upsert(addr, &name(next(12)), &lists[next(2) as usize], e, Source::Dns);
                }
                5 | 6 => {
                    let names: Vec<_> = (0..next(5))
                        .map(|_| (name(next(12)), lists[next(2) as usize].clone(), now + 1_000 * (1 + next(60))))
                        .collect();
                    t.replace_source(addr, &peers[next(2) as usize], &names);
                }
                7 => {
                    let keep: FxHashSet<IpAddr> = [addr].into_iter().collect();
                    t.sweep_source(&peers[next(2) as usize], &keep);
                }
                8 => {
                    let route = Route::new(
                        addr,
                        smallvec::smallvec![Attribution {
                            domain: name(next(12)),
                            list: lists[0].clone(),
                            expires: now + 1_000 * (1 + next(60)),
                            source: Source::Dns,
                        }],
                    );
                    t.load(vec![route]);
                }
                _ => {
                    tokio::time::advance(Duration::from_secs(next(5))).await;
                    t.expire();
                }
            }
            let used: FxHashSet<Arc<str>> =
                t.snapshot().iter().flat_map(|r| r.attributions.iter().map(|a| a.domain.clone())).collect();
            assert_eq!(t.names_len(), used.len(), "step {step}");
        }
        tokio::time::advance(Duration::from_secs(3600)).await;
        t.expire();
        assert_eq!((t.len(), t.names_len()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn route_caps_refuse_new_addresses_and_keep_refreshing() {
        let limits = Limits { max_routes: 3, list_max_routes: vec![(s("small"), 1)], ..Limits::default() };
        let t = Arc::new(RouteTable::new(Clock::starting_at(1_000_000), Duration::from_secs(1), H).with_limits(limits));
        let (d, vpn, small) = (s("x.test"), s("vpn"), s("small"));
        let e = 2_000_000;
        assert_eq!(t.upsert(a("198.51.100.1"), &d, &small, e, Source::Dns), Update::Added);
        assert_eq!(t.upsert(a("198.51.100.2"), &d, &small, e, Source::Dns), Update::Refused(Refusal::ListMaxRoutes));
        // An existing route of another list may not join the full list either.
        assert_eq!(t.upsert(a("198.51.100.3"), &d, &vpn, e, Source::Dns), Update::Added);
        assert_eq!(t.upsert(a("198.51.100.3"), &d, &small, e, Source::Dns), Update::Refused(Refusal::ListMaxRoutes));
        assert_eq!(t.upsert(a("198.51.100.4"), &d, &vpn, e, Source::Dns), Update::Added);
        assert_eq!(t.upsert(a("198.51.100.5"), &d, &vpn, e, Source::Dns), Update::Refused(Refusal::MaxRoutes));
        let peer = Source::Peer(s("p"));
        assert_eq!(t.replace_source(a("198.51.100.6"), &peer, &[(d.clone(), vpn.clone(), e)]), Replaced::Unchanged);
        assert!(t.get(a("198.51.100.6")).is_none());
        // Existing routes keep refreshing and gaining names.
        assert_eq!(t.upsert(a("198.51.100.4"), &d, &vpn, e + 1, Source::Dns), Update::Refreshed);
        assert_eq!(t.upsert(a("198.51.100.4"), &s("y.test"), &vpn, e, Source::Dns), Update::Changed);
        assert_eq!(t.len(), 3);
        let refused: Vec<(Refusal, u64)> = t.refused().into_iter().filter(|(_, n)| *n > 0).collect();
        assert_eq!(refused, vec![(Refusal::MaxRoutes, 2), (Refusal::ListMaxRoutes, 2)]);
        // Room again once one goes.
        t.replace_source(a("198.51.100.1"), &peer, &[]);
        tokio::time::advance(Duration::from_secs(1001)).await;
        t.expire();
        assert!(t.is_empty());
        assert_eq!(t.upsert(a("198.51.100.2"), &d, &small, 3_000_000, Source::Dns), Update::Added);
    }

    #[tokio::test(start_paused = true)]
    async fn unroutable_denied_and_neighbor_addresses_get_no_route() {
        let limits = Limits {
            deny: vec![
                ("203.0.113.0/24".parse().unwrap(), Refusal::Deny),
                ("198.51.100.1/32".parse().unwrap(), Refusal::Neighbor),
            ],
            ..Limits::default()
        };
        let t = Arc::new(RouteTable::new(Clock::starting_at(1_000_000), Duration::from_secs(1), H).with_limits(limits));
        let sub = t.subscribe(false, None);
        let (d, l) = (s("x.test"), s("vpn"));
        for bad in [
            "0.0.0.0",
            "::",
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "240.0.0.1",
            "0.1.2.3",
            "169.254.1.1",
            "fe80::1",
        ] {
            assert_eq!(t.upsert(a(bad), &d, &l, 2_000_000, Source::Dns), Update::Refused(Refusal::Unroutable), "{bad}");
        }
        assert_eq!(t.upsert(a("203.0.113.9"), &d, &l, 2_000_000, Source::Dns), Update::Refused(Refusal::Deny));
        assert_eq!(
            t.upsert(a("::ffff:198.51.100.1"), &d, &l, 2_000_000, Source::Dns),
            Update::Refused(Refusal::Neighbor)
        );
        // Private and documentation ranges stay routable; a v4-mapped address is its /32.
        for good in ["10.1.2.3", "192.168.1.1", "198.51.100.2", "2001:db8::1", "fd00::1"] {
            assert_eq!(t.upsert(a(good), &d, &l, 2_000_000, Source::Dns), Update::Added, "{good}");
        }
        assert_eq!(t.upsert(a("::ffff:198.51.100.3"), &d, &l, 2_000_000, Source::Dns), Update::Added);
        assert!(t.get(a("198.51.100.3")).is_some());
        assert_eq!(sub.pending(), 6);
        let counts: Vec<u64> = t.refused().iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, vec![12, 1, 1, 0, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn walks_pages_and_dumps_see_every_route_once() {
        let t = table(Duration::from_secs(1), H);
        let (d, l) = (s("x.test"), s("vpn"));
        let n = 3 * CHUNK as u32 + 17;
        for i in 0..n {
            t.upsert(IpAddr::from(Ipv4Addr::from(0x0A00_0000 + i)), &d, &l, 2_000_000, Source::Dns);
        }
        let dump = t.subscribe(true, None);
        // Changes during the dump: a removal and an addition.
        t.replace_source(a("10.0.0.5"), &Source::Dns, &[]);
        t.upsert(a("2001:db8::1"), &d, &l, 2_000_000, Source::Dns);
        let mut added = FxHashSet::default();
        let mut removed = Vec::new();
        loop {
            let ev = dump.drain(500);
            if ev.is_empty() {
                break;
            }
            assert!(ev.len() <= 500);
            for e in ev {
                match e {
                    RouteEvent::Added(r) => {
                        added.insert(r.addr);
                    }
                    RouteEvent::Removed(a) => removed.push(a),
                }
            }
        }
        assert_eq!(removed, vec![a("10.0.0.5")]);
        assert_eq!(added.len(), n as usize, "every live route once (the new one included)");
        assert!(!added.contains(&a("10.0.0.5")));
        // Pages in address order, each after the last.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = t.page(after, 1000, |_| true);
            if page.is_empty() {
                break;
            }
            after = page.last().map(|r| r.addr);
            seen.extend(page.into_iter().map(|r| r.addr));
        }
        assert_eq!(seen.len(), n as usize);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(seen.last(), Some(&a("2001:db8::1")));
        assert_eq!(t.snapshot().len(), n as usize);
        let v6 = t.page(None, 10, |r| r.addr.is_ipv6());
        assert_eq!(v6.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn load_keeps_routes_a_wrong_clock_calls_expired() {
        // The clock says 1_000_000; the store was last written at 500_000,
        // when this route had 100 s to live.
        let t = table(Duration::from_secs(1), H);
        let r = Route::new(
            a("198.51.100.1"),
            SmallVec::from_elem(
                Attribution { domain: s("x.test"), list: s("vpn"), expires: 600_000, source: Source::Dns },
                1,
            ),
        );
        let gone = Route::new(
            a("198.51.100.2"),
            SmallVec::from_elem(
                Attribution { domain: s("x.test"), list: s("vpn"), expires: 400_000, source: Source::Dns },
                1,
            ),
        );
        let dropped = t.load_at(vec![r, gone], Some(500_000));
        assert_eq!(dropped, vec![a("198.51.100.2")]);
        assert_eq!(t.get(a("198.51.100.1")).unwrap().expires(), 1_000_000 + 100_000);
    }
}

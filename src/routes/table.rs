//! The route table: address → attributions, with expiry.
//!
//! Writers are the dnstap pipeline (answers for listed names), the store
//! loader at start-up and later peer sync; readers are the API and the
//! subscribers. State sits behind one mutex with short critical sections
//! (a hash-map update per matched answer).
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

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;
use tokio::sync::{Notify, mpsc};

use super::{Attribution, Route, RouteEvent, Source, canonical};
use crate::clock::{Clock, UnixMillis, millis};
use crate::lists::Lists;

/// What an update did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// A new route.
    Added,
    /// An existing route gained an attribution.
    Changed,
    /// An attribution's expiry moved later.
    Refreshed,
    /// Nothing changed (an older or equal expiry).
    Unchanged,
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
    /// Nothing changed.
    Unchanged,
}

struct Entry {
    attributions: SmallVec<[Attribution; 1]>,
    /// The time of this route's live heap entry.
    scheduled: UnixMillis,
}

struct Subscriber {
    id: u64,
    dirty: FxHashSet<IpAddr>,
    notify: Arc<Notify>,
    /// Whether expiry-only changes matter to this subscriber, and at which
    /// granularity (a refresh counts when it crosses a multiple of it).
    refresh_granularity: Option<UnixMillis>,
}

#[derive(Default)]
struct State {
    routes: FxHashMap<IpAddr, Entry>,
    heap: BinaryHeap<Reverse<(UnixMillis, IpAddr)>>,
    subscribers: Vec<Subscriber>,
    next_subscriber: u64,
    /// Routes per list (a route counts once per list it has attributions in).
    per_list: FxHashMap<Arc<str>, usize>,
}

impl State {
    fn mark(&mut self, addr: IpAddr) {
        for s in &mut self.subscribers {
            if s.dirty.insert(addr) {
                s.notify.notify_one();
            }
        }
    }

    fn mark_refresh(&mut self, addr: IpAddr, old: UnixMillis, new: UnixMillis) {
        for s in &mut self.subscribers {
            if let Some(g) = s.refresh_granularity
                && old / g != new / g
                && s.dirty.insert(addr)
            {
                s.notify.notify_one();
            }
        }
    }

    fn count_lists(&mut self, attributions: &[Attribution], delta: isize) {
        for (i, a) in attributions.iter().enumerate() {
            if attributions[..i].iter().any(|b| b.list == a.list) {
                continue;
            }
            let n = self.per_list.entry(a.list.clone()).or_default();
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                self.per_list.remove(&a.list);
            }
        }
    }

    fn schedule(&mut self, addr: IpAddr, at: UnixMillis) {
        self.heap.push(Reverse((at, addr)));
    }
}

/// The table. Cheap to share as `Arc<RouteTable>`.
pub struct RouteTable {
    state: Mutex<State>,
    clock: Clock,
    min_ttl: UnixMillis,
    max_ttl: UnixMillis,
}

impl RouteTable {
    pub fn new(clock: Clock, min_ttl: Duration, max_ttl: Duration) -> RouteTable {
        RouteTable { state: Mutex::new(State::default()), clock, min_ttl: millis(min_ttl), max_ttl: millis(max_ttl) }
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
        let mut st = self.lock();
        let st = &mut *st;
        match st.routes.get_mut(&addr) {
            None => {
                let attribution = Attribution { domain: domain.clone(), list: list.clone(), expires, source };
                st.count_lists(std::slice::from_ref(&attribution), 1);
                st.routes.insert(addr, Entry { attributions: SmallVec::from_elem(attribution, 1), scheduled: expires });
                st.schedule(addr, expires);
                st.mark(addr);
                Update::Added
            }
            Some(entry) => {
                let same = |a: &Attribution| a.domain == *domain && a.list == *list && a.source == source;
                if let Some(a) = entry.attributions.iter_mut().find(|a| same(a)) {
                    if expires <= a.expires {
                        return Update::Unchanged;
                    }
                    // Granularity is judged per attribution: a refresh of
                    // one source must reach subscribers even while another
                    // source's longer attribution dominates the route.
                    let old = a.expires;
                    a.expires = expires;
                    st.mark_refresh(addr, old, expires);
                    return Update::Refreshed;
                }
                let before = entry.attributions.clone();
                entry.attributions.push(Attribution { domain: domain.clone(), list: list.clone(), expires, source });
                let reschedule = expires < entry.scheduled;
                if reschedule {
                    entry.scheduled = expires;
                }
                let after = entry.attributions.clone();
                st.count_lists(&before, -1);
                st.count_lists(&after, 1);
                if reschedule {
                    st.schedule(addr, expires);
                }
                st.mark(addr);
                Update::Changed
            }
        }
    }

    /// Sets the attributions `source` gives `addr` to exactly `names`
    /// (domain, list, expiry) — what a sync peer reports as its current
    /// state for the address. For a (domain, list) the source already had,
    /// the later expiry wins; its attributions missing from `names` are
    /// removed; other sources' attributions are untouched. Expiries are
    /// capped at now + max_ttl and names already expired are ignored.
    /// Returns what happened to the route.
    pub fn replace_source(
        &self,
        addr: IpAddr,
        source: &Source,
        names: &[(Arc<str>, Arc<str>, UnixMillis)],
    ) -> Replaced {
        let addr = canonical(addr);
        let now = self.clock.now();
        let limit = now + self.max_ttl;
        let mut st = self.lock();
        let st = &mut *st;
        let before: SmallVec<[Attribution; 1]> =
            st.routes.get(&addr).map(|e| e.attributions.clone()).unwrap_or_default();
        let mut after: SmallVec<[Attribution; 1]> = before.iter().filter(|a| a.source != *source).cloned().collect();
        let mut refreshed: SmallVec<[(UnixMillis, UnixMillis); 1]> = SmallVec::new();
        let mut membership_changed = false;
        for (domain, list, expires) in names {
            let expires = (*expires).min(limit);
            if expires <= now || after.iter().any(|a| a.source == *source && a.domain == *domain && a.list == *list) {
                continue;
            }
            let old = before.iter().find(|a| a.source == *source && a.domain == *domain && a.list == *list);
            match old {
                Some(o) if o.expires >= expires => after.push(o.clone()),
                Some(o) => {
                    refreshed.push((o.expires, expires));
                    after.push(Attribution { expires, ..o.clone() });
                }
                None => {
                    membership_changed = true;
                    after.push(Attribution {
                        domain: domain.clone(),
                        list: list.clone(),
                        expires,
                        source: source.clone(),
                    });
                }
            }
        }
        let kept = after.iter().filter(|a| a.source == *source).count();
        let had = before.iter().filter(|a| a.source == *source).count();
        // Without a new key, the key set changed exactly when some were dropped.
        membership_changed |= kept != had;
        if !membership_changed && refreshed.is_empty() {
            return Replaced::Unchanged;
        }
        let result = match (before.is_empty(), after.is_empty()) {
            (true, true) => return Replaced::Unchanged,
            (true, false) => Replaced::Added,
            (false, true) => Replaced::Removed,
            (false, false) => Replaced::Changed,
        };
        st.count_lists(&before, -1);
        st.count_lists(&after, 1);
        if after.is_empty() {
            st.routes.remove(&addr);
            st.mark(addr);
            return result;
        }
        let earliest = after.iter().map(|a| a.expires).min().unwrap_or(now);
        let reschedule = match st.routes.get_mut(&addr) {
            Some(e) => {
                e.attributions = after;
                let r = earliest < e.scheduled;
                if r {
                    e.scheduled = earliest;
                }
                r
            }
            None => {
                st.routes.insert(addr, Entry { attributions: after, scheduled: earliest });
                true
            }
        };
        if reschedule {
            st.schedule(addr, earliest);
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

    /// Removes every attribution of `source` on addresses not in `keep`
    /// (a sync peer's full snapshot did not mention them, or the peer's
    /// store was replaced). Returns the addresses of routes left without
    /// any attribution, which are removed.
    pub fn sweep_source(&self, source: &Source, keep: &FxHashSet<IpAddr>) -> Vec<IpAddr> {
        let mut st = self.lock();
        let st = &mut *st;
        let mut changed = Vec::new();
        for (addr, entry) in st.routes.iter_mut() {
            if keep.contains(addr) || !entry.attributions.iter().any(|a| a.source == *source) {
                continue;
            }
            let before = entry.attributions.clone();
            entry.attributions.retain(|a| a.source != *source);
            changed.push((*addr, before, entry.attributions.clone()));
        }
        let mut removed = Vec::new();
        for (addr, before, after) in changed {
            st.count_lists(&before, -1);
            st.count_lists(&after, 1);
            if after.is_empty() {
                st.routes.remove(&addr);
                removed.push(addr);
            }
            st.mark(addr);
        }
        removed
    }

    /// Inserts routes read from the store at start-up: attributions already
    /// expired are dropped and expiries are capped at now + max_ttl.
    /// Subscribers are not told (they start with a full dump if they ask).
    /// Returns the addresses dropped because they had expired.
    pub fn load(&self, routes: impl IntoIterator<Item = Route>) -> Vec<IpAddr> {
        let now = self.clock.now();
        let limit = now + self.max_ttl;
        let mut st = self.lock();
        let mut dropped = Vec::new();
        for mut route in routes {
            route.attributions.retain(|a| a.expires > now);
            if route.attributions.is_empty() {
                dropped.push(route.addr);
                continue;
            }
            for a in &mut route.attributions {
                a.expires = a.expires.min(limit);
            }
            let addr = canonical(route.addr);
            let scheduled = route.attributions.iter().map(|a| a.expires).min().unwrap_or(now);
            if let Some(old) = st.routes.remove(&addr) {
                st.count_lists(&old.attributions, -1);
            }
            st.count_lists(&route.attributions, 1);
            st.routes.insert(addr, Entry { attributions: route.attributions, scheduled });
            st.schedule(addr, scheduled);
        }
        dropped
    }

    /// Removes attributions that have expired, and routes left without any.
    /// Returns the removed routes' addresses.
    pub fn expire(&self) -> Vec<IpAddr> {
        let now = self.clock.now();
        let mut removed = Vec::new();
        let mut st = self.lock();
        let st = &mut *st;
        while let Some(&Reverse((at, addr))) = st.heap.peek() {
            if at > now {
                break;
            }
            st.heap.pop();
            let Some(entry) = st.routes.get_mut(&addr) else { continue };
            if entry.scheduled != at {
                continue;
            }
            if entry.attributions.iter().all(|a| a.expires > now) {
                // Refreshed since it was scheduled.
                entry.scheduled = entry.attributions.iter().map(|a| a.expires).min().unwrap_or(now);
                let next = entry.scheduled;
                st.schedule(addr, next);
                continue;
            }
            let before = entry.attributions.clone();
            entry.attributions.retain(|a| a.expires > now);
            let after = entry.attributions.clone();
            st.count_lists(&before, -1);
            st.count_lists(&after, 1);
            if after.is_empty() {
                st.routes.remove(&addr);
                removed.push(addr);
            } else {
                let next = after.iter().map(|a| a.expires).min().unwrap_or(now);
                if let Some(e) = st.routes.get_mut(&addr) {
                    e.scheduled = next;
                }
                st.schedule(addr, next);
            }
            st.mark(addr);
        }
        removed
    }

    /// After a list reload: drops attributions whose name no list claims
    /// any more (or whose list no longer claims it). Returns the removed
    /// routes' addresses.
    pub fn revalidate(&self, lists: &Lists) -> Vec<IpAddr> {
        let mut removed = Vec::new();
        let mut st = self.lock();
        let st = &mut *st;
        let mut changed = Vec::new();
        for (addr, entry) in st.routes.iter_mut() {
            let keep =
                |a: &Attribution| lists.index_of(&a.list).is_some_and(|i| lists.lookup_text(&a.domain) & (1 << i) != 0);
            if entry.attributions.iter().all(keep) {
                continue;
            }
            let before = entry.attributions.clone();
            entry.attributions.retain(|a| keep(a));
            changed.push((*addr, before, entry.attributions.clone()));
        }
        for (addr, before, after) in changed {
            st.count_lists(&before, -1);
            st.count_lists(&after, 1);
            if after.is_empty() {
                st.routes.remove(&addr);
                removed.push(addr);
            }
            // A shrunk route keeps its heap entry; expiry re-checks it.
            st.mark(addr);
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.lock().routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Routes per list name.
    pub fn per_list(&self) -> Vec<(Arc<str>, usize)> {
        let st = self.lock();
        let mut v: Vec<_> = st.per_list.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort();
        v
    }

    pub fn get(&self, addr: IpAddr) -> Option<Route> {
        let addr = canonical(addr);
        self.lock().routes.get(&addr).map(|e| Route { addr, attributions: e.attributions.clone() })
    }

    /// A copy of every route, sorted by address.
    pub fn snapshot(&self) -> Vec<Route> {
        let mut v: Vec<Route> = {
            let st = self.lock();
            st.routes.iter().map(|(addr, e)| Route { addr: *addr, attributions: e.attributions.clone() }).collect()
        };
        v.sort_by_key(|r| r.addr);
        v
    }

    /// Registers a subscriber. With `initial_dump` every current route is
    /// marked as changed for it; with `refresh_granularity`, expiry-only
    /// changes are reported when they cross a multiple of it.
    pub fn subscribe(self: &Arc<Self>, initial_dump: bool, refresh_granularity: Option<Duration>) -> Subscription {
        let notify = Arc::new(Notify::new());
        let mut st = self.lock();
        let id = st.next_subscriber;
        st.next_subscriber += 1;
        let dirty: FxHashSet<IpAddr> =
            if initial_dump { st.routes.keys().copied().collect() } else { FxHashSet::default() };
        if !dirty.is_empty() {
            notify.notify_one();
        }
        st.subscribers.push(Subscriber {
            id,
            dirty,
            notify: notify.clone(),
            refresh_granularity: refresh_granularity.map(|g| millis(g).max(1)),
        });
        Subscription { table: self.clone(), id, notify }
    }

    fn drain(&self, id: u64, max: usize) -> Vec<RouteEvent> {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(sub) = st.subscribers.iter_mut().find(|s| s.id == id) else { return Vec::new() };
        let addrs: Vec<IpAddr> = if sub.dirty.len() <= max {
            sub.dirty.drain().collect()
        } else {
            let some: Vec<IpAddr> = sub.dirty.iter().take(max).copied().collect();
            for a in &some {
                sub.dirty.remove(a);
            }
            // More remain: make sure the subscriber comes back.
            sub.notify.notify_one();
            some
        };
        addrs
            .into_iter()
            .map(|addr| match st.routes.get(&addr) {
                Some(e) => RouteEvent::Added(Route { addr, attributions: e.attributions.clone() }),
                None => RouteEvent::Removed(addr),
            })
            .collect()
    }

    fn pending(&self, id: u64) -> usize {
        self.lock().subscribers.iter().find(|s| s.id == id).map_or(0, |s| s.dirty.len())
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

    /// How many changed routes wait to be drained.
    pub fn pending(&self) -> usize {
        self.table.pending(self.id)
    }

    /// Turns the subscription into a bounded channel of event batches (at
    /// most `batch` events each), fed by a task that ends when the receiver
    /// is dropped. A full channel holds the pump, not the table: changes
    /// keep coalescing in the subscriber's set meanwhile.
    pub fn into_channel(self, capacity: usize, batch: usize) -> mpsc::Receiver<Vec<RouteEvent>> {
        let (tx, rx) = mpsc::channel(capacity);
        tokio::spawn(async move {
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
        let mut rx = t.subscribe(false, None).into_channel(1, 10);
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
        };
        let dropped = t.load(vec![mk("198.51.100.1", 999_999), mk("::ffff:198.51.100.2", 1_000_000 + 100 * 3_600_000)]);
        assert_eq!(dropped, vec![a("198.51.100.1")]);
        assert_eq!(t.len(), 1);
        let r = t.get(a("198.51.100.2")).unwrap();
        assert_eq!(r.expires(), 1_000_000 + 3_600_000);
    }
}

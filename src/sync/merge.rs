//! Applying pages from peers to the route table, in each origin's order.
//!
//! Per origin instance there is one cursor: the sequence number up to which
//! its changes have been applied. Pulls and pushes of the same origin are
//! applied one at a time under that origin's lock and only in sequence
//! order: a page that does not continue from the cursor (a push after a
//! gap) is refused and the origin is pulled instead; changes at or below
//! the cursor are duplicates and skipped. So re-delivery is harmless and a
//! newer state is never overwritten by an older one.
//!
//! A change replaces what the origin vouches for at one address
//! ([`RouteTable::replace_source`]): its names, each with the later of the
//! known and the new expiry. A snapshot additionally drops, at its end,
//! whatever the origin had here that the snapshot did not mention.
//!
//! Cursors reach the disk only after the route store has written the
//! routes they cover (two completed store flush cycles later, see
//! [`Merger::save_cursors`]); after a crash a few changes are re-applied,
//! none is skipped.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use rustc_hash::{FxHashMap, FxHashSet};
use tracing::{debug, info, warn};

use super::config::MAX_PAGE;
use super::log::ChangeLog;
use super::metrics::SyncMetrics;
use super::protocol::{Page, Rejection};
use super::validate::{self, Checker, MAX_NAMES, Reason};
use crate::lists::Lists;
use crate::metrics::Metrics;
use crate::routes::{Replaced, RouteTable, Source, UnixMillis};

/// Rejections reported back in one push reply.
const MAX_REPORTED: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Pull,
    Push,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Pull => "pull",
            Via::Push => "push",
        }
    }
}

#[derive(Default)]
struct OriginState {
    cursor: u64,
    /// Addresses seen since a snapshot began (until its last page).
    snapshot: Option<FxHashSet<IpAddr>>,
    /// (cursor, store cycles completed when it was reached), oldest first.
    pending: VecDeque<(u64, u64)>,
    saved: u64,
}

/// What applying a page did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The page did not continue from the cursor; nothing was applied.
    pub gap: bool,
    pub cursor: u64,
    pub accepted: usize,
    pub rejected: usize,
    pub duplicates: usize,
    pub errors: Vec<Rejection>,
    /// Routes added, and removed, in the table.
    pub added: usize,
    pub removed: usize,
}

pub struct Merger {
    table: Arc<RouteTable>,
    lists: Arc<ArcSwap<Lists>>,
    log: Arc<ChangeLog>,
    metrics: Arc<SyncMetrics>,
    route_metrics: Arc<Metrics>,
    max_ttl: UnixMillis,
    origins: Mutex<FxHashMap<Arc<str>, Arc<Mutex<OriginState>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Merger {
    pub fn new(
        table: Arc<RouteTable>,
        lists: Arc<ArcSwap<Lists>>,
        log: Arc<ChangeLog>,
        metrics: Arc<SyncMetrics>,
        route_metrics: Arc<Metrics>,
        max_ttl: UnixMillis,
    ) -> Merger {
        Merger { table, lists, log, metrics, route_metrics, max_ttl, origins: Mutex::new(FxHashMap::default()) }
    }

    fn origin(&self, id: &str) -> Arc<Mutex<OriginState>> {
        let mut map = lock(&self.origins);
        if let Some(o) = map.get(id) {
            return o.clone();
        }
        let cursor = self.log.cursor(id).unwrap_or_else(|e| {
            warn!(origin = id, error = %e, "cannot read the sync cursor; starting from a snapshot");
            0
        });
        let o = Arc::new(Mutex::new(OriginState { cursor, saved: cursor, ..OriginState::default() }));
        map.insert(Arc::from(id), o.clone());
        o
    }

    /// How many origins have state here (cursors in memory).
    pub fn origins(&self) -> usize {
        lock(&self.origins).len()
    }

    /// The cursor for an origin (0: nothing applied yet).
    pub fn cursor(&self, origin: &str) -> u64 {
        lock(&self.origin(origin)).cursor
    }

    /// Applies a page whose structure was checked
    /// ([`super::protocol::check_page`]). `peer` labels the metrics.
    pub fn apply(&self, page: &Page, via: Via, peer: &str, own_id: &str) -> Applied {
        let origin = self.origin(&page.instance);
        let mut st = lock(&origin);
        let mut out = Applied { cursor: st.cursor, ..Applied::default() };
        let label = SyncMetrics::peer_via(peer, via.as_str());
        self.metrics.received.get_or_create(&label).inc_by(page.changes.len() as u64);
        if page.instance == own_id {
            // A peer url that points back at this instance, or an echo.
            for c in &page.changes {
                self.reject(&mut out, c.seq, Reason::Origin, "the origin is this instance".into());
            }
            return out;
        }
        // Only a pull starts a snapshot: a push claiming one is applied as
        // an ordinary page.
        if via == Via::Pull && page.snapshot && page.since == 0 {
            self.metrics.snapshots.get_or_create(&SyncMetrics::peer(peer)).inc();
            st.cursor = 0;
            st.snapshot = Some(FxHashSet::default());
        } else if page.since > st.cursor {
            out.gap = true;
            return out;
        }
        let lists = self.lists.load();
        let now = self.table.clock().now();
        let checker = Checker::new(&lists, now, self.max_ttl);
        let source = Source::Peer(Arc::from(page.instance.as_str()));
        let mut names = Vec::new();
        for c in &page.changes {
            if c.seq <= st.cursor {
                out.duplicates += 1;
                continue;
            }
            if c.origin != page.instance {
                self.reject(&mut out, c.seq, Reason::Origin, format!("origin {:?} is not the sender", c.origin));
                continue;
            }
            let addr = match validate::address(&c.address) {
                Ok(a) => a,
                Err((reason, detail)) => {
                    self.reject(&mut out, c.seq, reason, detail);
                    continue;
                }
            };
            if c.names.len() > MAX_NAMES {
                self.reject(&mut out, c.seq, Reason::TooManyNames, format!("{} names for {addr}", c.names.len()));
                continue;
            }
            names.clear();
            for n in &c.names {
                match checker.name(n) {
                    Ok(v) => names.push(v),
                    Err((reason, detail)) => self.reject(&mut out, c.seq, reason, detail),
                }
            }
            if let Some(seen) = &mut st.snapshot {
                seen.insert(addr);
            }
            match self.table.replace_source(addr, &source, &names) {
                Replaced::Added => out.added += 1,
                Replaced::Removed => out.removed += 1,
                Replaced::Changed | Replaced::Unchanged => {}
            }
            out.accepted += 1;
        }
        st.cursor = st.cursor.max(page.next);
        out.cursor = st.cursor;
        if via == Via::Pull
            && !page.more
            && let Some(seen) = st.snapshot.take()
        {
            let swept = self.table.sweep_source(&source, &seen);
            if !swept.is_empty() {
                info!(origin = %page.instance, routes = swept.len(), "routes the origin's snapshot no longer has removed");
            }
            out.removed += swept.len();
        }
        self.metrics.duplicates.get_or_create(&SyncMetrics::peer(peer)).inc_by(out.duplicates as u64);
        self.route_metrics.routes_added.inc_by(out.added as u64);
        self.route_metrics.removed("peer", out.removed);
        out
    }

    fn reject(&self, out: &mut Applied, seq: u64, reason: Reason, detail: String) {
        self.metrics.reject(reason);
        out.rejected += 1;
        debug!(seq, reason = reason.as_str(), %detail, "sync entry rejected");
        if out.errors.len() < MAX_REPORTED {
            out.errors.push(Rejection { seq, reason: reason.as_str().into(), detail });
        }
    }

    /// Forgets an origin whose store was replaced (its url now answers with
    /// another instance id): its routes here and its cursor go.
    pub fn forget(&self, origin: &str) -> usize {
        lock(&self.origins).remove(origin);
        if let Err(e) = self.log.remove_cursor(origin) {
            warn!(origin, error = %e, "cannot remove the sync cursor");
        }
        let removed = self.table.sweep_source(&Source::Peer(Arc::from(origin)), &FxHashSet::default());
        self.route_metrics.removed("peer", removed.len());
        removed.len()
    }

    /// Writes cursors whose routes the store has made durable.
    /// `cycles` counts completed store write cycles; a cursor reached when
    /// it read `k` is covered once it reads `k + 2` (the cycle running at
    /// that moment may have begun before the routes changed; the next one
    /// began after). With `all`, every current cursor is written (at
    /// shutdown, after the store's last write).
    pub fn save_cursors(&self, cycles: u64, all: bool) {
        let origins: Vec<(Arc<str>, Arc<Mutex<OriginState>>)> =
            lock(&self.origins).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (id, o) in origins {
            let to_save = {
                let mut st = lock(&o);
                let cursor = st.cursor;
                let ready = if all {
                    st.pending.clear();
                    Some(cursor)
                } else {
                    if st.pending.back().is_none_or(|(c, _)| *c != cursor) {
                        st.pending.push_back((cursor, cycles));
                    }
                    let mut ready = None;
                    while let Some(&(c, k)) = st.pending.front() {
                        if cycles < k + 2 {
                            break;
                        }
                        ready = Some(c);
                        st.pending.pop_front();
                    }
                    // A bounded history: coarser is fine, it only delays.
                    while st.pending.len() > 64 {
                        st.pending.remove(1);
                    }
                    ready
                };
                ready.filter(|c| *c != st.saved)
            };
            if let Some(c) = to_save {
                match self.log.set_cursor(&id, c) {
                    Ok(()) => lock(&o).saved = c,
                    Err(e) => warn!(origin = %id, error = %e, "cannot save the sync cursor"),
                }
            }
        }
    }
}

/// Checks a page's structure with the protocol's limits.
pub fn check(page: &Page) -> Result<(), String> {
    super::protocol::check_page(page, MAX_PAGE)
}

/// What a push must also satisfy: `next` is its last change's sequence
/// (`since` when it has none), so the cursor never moves past changes the
/// push did not carry.
pub fn check_push(page: &Page) -> Result<(), String> {
    let last = page.changes.last().map_or(page.since, |c| c.seq);
    if page.next != last {
        return Err(format!(
            "next ({}) must be the sequence of the page's last change ({last}); a push cannot move the cursor past \
             changes it does not carry",
            page.next
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::config::ListSettings;
    use crate::routes::Clock;
    use crate::sync::protocol::{Change, Name};

    struct Fixture {
        _dir: tempfile::TempDir,
        table: Arc<RouteTable>,
        merger: Merger,
        metrics: Arc<SyncMetrics>,
        log: Arc<ChangeLog>,
    }

    const NOW: UnixMillis = 1_700_000_000_000;

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).flush_every_ms(None).open().unwrap();
        let log = Arc::new(ChangeLog::open(db).unwrap());
        let table =
            Arc::new(RouteTable::new(Clock::starting_at(NOW), Duration::from_secs(1), Duration::from_secs(3600)));
        let settings = vec![ListSettings {
            name: Arc::from("vpn"),
            file: PathBuf::from("vpn.txt"),
            communities: vec![],
            large_communities: vec![],
            ..Default::default()
        }];
        let lists = Arc::new(ArcSwap::from_pointee(Lists::compile(&settings, &["listed.test\n".to_string()]).0));
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(SyncMetrics::register(&mut registry));
        let merger =
            Merger::new(table.clone(), lists, log.clone(), metrics.clone(), Arc::new(Metrics::new()), 3_600_000);
        Fixture { _dir: dir, table, merger, metrics, log }
    }

    fn change(seq: u64, addr: &str, names: &[(&str, u64)]) -> Change {
        Change {
            seq,
            address: addr.into(),
            origin: "peer-a".into(),
            names: names
                .iter()
                .map(|(d, e)| Name { domain: d.to_string(), list: "vpn".into(), expires: NOW + e })
                .collect(),
        }
    }

    fn page(since: u64, next: u64, snapshot: bool, more: bool, changes: Vec<Change>) -> Page {
        Page { instance: "peer-a".into(), since, next, head: next, more, snapshot, changes }
    }

    fn rejected(m: &SyncMetrics, reason: Reason) -> u64 {
        m.rejected.get_or_create(&crate::metrics::ReasonLabel { reason: reason.as_str().into() }).get()
    }

    #[test]
    fn a_push_cannot_inflate_next() {
        let a = change(3, "198.51.100.1", &[("www.listed.test", 60_000)]);
        assert!(check_push(&page(2, 3, false, false, vec![a.clone()])).is_ok());
        assert!(check_push(&page(2, 2, false, false, vec![])).is_ok());
        let err = check_push(&page(2, 900, false, false, vec![a])).unwrap_err();
        assert!(err.contains("next (900)"), "{err}");
        assert!(check_push(&page(2, 9, false, false, vec![])).is_err(), "an empty push moving the cursor");
    }

    #[tokio::test(start_paused = true)]
    async fn applies_in_order_and_refuses_gaps() {
        let f = fixture();
        let a = change(1, "198.51.100.1", &[("www.listed.test", 60_000)]);
        let r = f.merger.apply(&page(0, 1, true, false, vec![a.clone()]), Via::Pull, "a", "me");
        assert_eq!((r.accepted, r.added, r.cursor), (1, 1, 1));
        let route = f.table.get("198.51.100.1".parse().unwrap()).unwrap();
        assert_eq!(route.attributions[0].source, Source::Peer(Arc::from("peer-a")));
        // Re-delivery is a duplicate, also in a push that claims a snapshot.
        let r = f.merger.apply(&page(0, 1, false, false, vec![a.clone()]), Via::Push, "a", "me");
        assert_eq!((r.duplicates, r.accepted), (1, 0));
        let r = f.merger.apply(&page(0, 1, true, false, vec![a]), Via::Push, "a", "me");
        assert_eq!((r.duplicates, r.cursor), (1, 1));
        // A push that does not continue from the cursor is a gap.
        let b = change(5, "198.51.100.2", &[("www.listed.test", 60_000)]);
        let r = f.merger.apply(&page(4, 5, false, false, vec![b.clone()]), Via::Push, "a", "me");
        assert!(r.gap);
        assert!(f.table.get("198.51.100.2".parse().unwrap()).is_none());
        // One that overlaps the cursor is applied past it.
        let r = f.merger.apply(&page(1, 5, false, false, vec![b]), Via::Push, "a", "me");
        assert_eq!((r.gap, r.accepted, r.cursor), (false, 1, 5));
        // Withdrawal by the origin removes its route.
        let w = change(6, "198.51.100.1", &[]);
        let r = f.merger.apply(&page(5, 6, false, false, vec![w]), Via::Push, "a", "me");
        assert_eq!(r.removed, 1);
        assert!(f.table.get("198.51.100.1".parse().unwrap()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn bad_entries_are_rejected_and_good_ones_kept() {
        let f = fixture();
        let mut wrong_origin = change(7, "198.51.100.7", &[("www.listed.test", 60_000)]);
        wrong_origin.origin = "someone-else".into();
        let changes = vec![
            change(1, "198.51.100.1", &[("www.listed.test", 60_000), ("evil.test", 60_000)]),
            change(2, "0.0.0.0", &[("www.listed.test", 60_000)]),
            change(3, "127.0.0.1", &[("www.listed.test", 60_000)]),
            change(4, "ff02::1", &[("www.listed.test", 60_000)]),
            change(5, "not-an-address", &[("www.listed.test", 60_000)]),
            change(6, "198.51.100.6", &[("www.listed.test", 400 * 86_400_000)]),
            wrong_origin,
            change(8, "198.51.100.8", &[("www.listed.test", 60_000)]),
        ];
        let r = f.merger.apply(&page(0, 8, true, false, changes), Via::Push, "a", "me");
        assert_eq!(r.accepted, 3, "{r:?}");
        assert_eq!(r.rejected, 7, "{r:?}");
        assert_eq!(f.table.len(), 2);
        let route = f.table.get("198.51.100.1".parse().unwrap()).unwrap();
        assert_eq!(route.attributions.len(), 1, "the unlisted name is not applied");
        assert!(f.table.get("198.51.100.6".parse().unwrap()).is_none(), "absurd expiry");
        assert_eq!(rejected(&f.metrics, Reason::Address), 4);
        assert_eq!(rejected(&f.metrics, Reason::Unlisted), 1);
        assert_eq!(rejected(&f.metrics, Reason::Expiry), 1);
        assert_eq!(rejected(&f.metrics, Reason::Origin), 1);
        // Our own changes coming back are refused whole.
        let mut echo = page(8, 9, false, false, vec![change(9, "198.51.100.9", &[("www.listed.test", 60_000)])]);
        echo.instance = "me".into();
        echo.changes[0].origin = "me".into();
        let r = f.merger.apply(&echo, Via::Push, "x", "me");
        assert_eq!((r.accepted, r.rejected), (0, 1));
        assert_eq!(f.table.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_sweeps_what_it_does_not_mention() {
        let f = fixture();
        let two = vec![
            change(1, "198.51.100.1", &[("www.listed.test", 60_000)]),
            change(2, "198.51.100.2", &[("www.listed.test", 60_000)]),
        ];
        f.merger.apply(&page(0, 2, true, false, two), Via::Pull, "a", "me");
        f.table.upsert(
            "198.51.100.2".parse().unwrap(),
            &Arc::from("www.listed.test"),
            &Arc::from("vpn"),
            NOW + 5_000,
            Source::Dns,
        );
        // A later snapshot over two pages mentions only .1.
        let r = f.merger.apply(
            &page(0, 10, true, true, vec![change(10, "198.51.100.1", &[("www.listed.test", 70_000)])]),
            Via::Pull,
            "a",
            "me",
        );
        assert_eq!(r.cursor, 10);
        assert_eq!(f.table.len(), 2, "nothing is swept before the last page");
        let r = f.merger.apply(&page(10, 12, false, false, vec![]), Via::Pull, "a", "me");
        assert_eq!(r.cursor, 12);
        let two = f.table.get("198.51.100.2".parse().unwrap()).unwrap();
        assert_eq!(two.attributions.len(), 1);
        assert_eq!(two.attributions[0].source, Source::Dns, "local attribution stays");
        // Forgetting the origin removes its routes.
        assert_eq!(f.merger.forget("peer-a"), 1);
        assert_eq!(f.table.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn cursors_are_saved_after_the_store_caught_up() {
        let f = fixture();
        f.merger.apply(&page(0, 3, true, false, vec![]), Via::Pull, "a", "me");
        f.merger.save_cursors(10, false);
        assert_eq!(f.log.cursor("peer-a").unwrap(), 0);
        f.merger.save_cursors(11, false);
        assert_eq!(f.log.cursor("peer-a").unwrap(), 0);
        f.merger.save_cursors(12, false);
        assert_eq!(f.log.cursor("peer-a").unwrap(), 3);
        f.merger.apply(&page(3, 9, false, false, vec![]), Via::Pull, "a", "me");
        f.merger.save_cursors(12, true);
        assert_eq!(f.log.cursor("peer-a").unwrap(), 9);
    }
}

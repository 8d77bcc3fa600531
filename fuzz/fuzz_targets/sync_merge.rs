//! Sequences of sync pages from peers through `Merger::apply`, built from
//! the fuzzer's bytes (instance ids, cursors, sequence numbers, addresses
//! and names drawn from small sets so that pages collide), each checked by
//! `check` first as the sync server and client do. After every page:
//!
//! * a page that was refused (a gap, or this instance's own id) changed
//!   neither the route table nor the cursor;
//! * a page made of duplicates only (every seq at or below the cursor)
//!   changed nothing;
//! * the cursor only moves forward, except when a pulled snapshot restarts
//!   it from 0, and `Applied::cursor` is what `Merger::cursor` says;
//! * counts add up (accepted + duplicates <= changes);
//! * every route is routable, has attributions, names listed here, expiries
//!   within now + max_ttl (rounded up to the second, as the table keeps
//!   them), and comes from the origin that sent it.
#![no_main]

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use dnsbgpd::config::ListSettings;
use dnsbgpd::lists::Lists;
use dnsbgpd::metrics::Metrics;
use dnsbgpd::routes::{Clock, Route, RouteTable, Source, routable_unicast};
use dnsbgpd::sync::log::ChangeLog;
use dnsbgpd::sync::merge::{self, Merger, Via};
use dnsbgpd::sync::metrics::SyncMetrics;
use dnsbgpd::sync::protocol::{Change, Name, Page};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000_000;
const MAX_TTL: u64 = 3_600_000;
const OWN: &str = "me";

struct Shared {
    lists: Arc<ArcSwap<Lists>>,
    log: Arc<ChangeLog>,
    metrics: Arc<SyncMetrics>,
    route_metrics: Arc<Metrics>,
    clock: Clock,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let settings = vec![
            ListSettings { name: Arc::from("vpn"), file: PathBuf::from("vpn.txt"), ..Default::default() },
            ListSettings { name: Arc::from("cdn"), file: PathBuf::from("cdn.txt"), ..Default::default() },
        ];
        let texts = ["listed.test\n".to_string(), "cdn.test\nlisted.test\n".to_string()];
        let lists = Lists::compile(&settings, &texts).0;
        // Cursors are never saved here, so every run starts from 0.
        let db = sled::Config::new().temporary(true).flush_every_ms(None).open().expect("temporary sled");
        let mut registry = prometheus_client::registry::Registry::default();
        Shared {
            lists: Arc::new(ArcSwap::from_pointee(lists)),
            log: Arc::new(ChangeLog::open(db).expect("change log")),
            metrics: Arc::new(SyncMetrics::register(&mut registry)),
            route_metrics: Arc::new(Metrics::new()),
            clock: Clock::starting_at(NOW),
        }
    })
}

const INSTANCES: &[&str] = &["peer-a", "peer-b", OWN, "dns", "", "bad id!", "peer-a."];
const ADDRESSES: &[&str] = &[
    "198.51.100.1",
    "198.51.100.2",
    "2001:db8::1",
    "::ffff:198.51.100.1",
    "203.0.113.9",
    "127.0.0.1",
    "0.0.0.0",
    "ff02::1",
    "fe80::1",
    "198.51.100",
    "",
];
const DOMAINS: &[&str] = &[
    "www.listed.test",
    "listed.test",
    "WWW.Listed.Test.",
    "edge.cdn.test",
    "evil.test",
    "a..listed.test",
    "",
    "x y.listed.test",
];
const LISTS: &[&str] = &["vpn", "cdn", "nope"];

fn pick<'a>(u: &mut Unstructured, set: &[&'a str]) -> Result<String> {
    if u.ratio(1, 16)? {
        return Ok(u.arbitrary::<String>()?);
    }
    Ok(u.choose(set)?.to_string())
}

fn page(u: &mut Unstructured, cursor_hint: u64) -> Result<(Page, Via)> {
    let via = if u.arbitrary()? { Via::Pull } else { Via::Push };
    let instance = pick(u, INSTANCES)?;
    let since = match u.int_in_range(0..=3)? {
        0 => 0,
        1 => cursor_hint,
        2 => cursor_hint.saturating_add(u.int_in_range(0..=3)?),
        _ => u.int_in_range(0..=40)?,
    };
    let mut seq = since;
    let mut changes = Vec::new();
    for _ in 0..u.int_in_range(0..=6)? {
        seq = if u.ratio(1, 10)? { seq } else { seq.saturating_add(u.int_in_range(1..=3)?) };
        let origin = if u.ratio(1, 8)? { pick(u, INSTANCES)? } else { instance.clone() };
        let mut names = Vec::new();
        for _ in 0..u.int_in_range(0..=3)? {
            let expires = match u.int_in_range(0..=4)? {
                0 => NOW,
                1 => NOW + MAX_TTL + u.int_in_range(0..=120_000)?,
                2 => u.arbitrary()?,
                _ => NOW + u.int_in_range(1..=MAX_TTL)?,
            };
            names.push(Name { domain: pick(u, DOMAINS)?, list: pick(u, LISTS)?, expires });
        }
        changes.push(Change { seq, address: pick(u, ADDRESSES)?, origin, names });
    }
    let next = match u.int_in_range(0..=3)? {
        0 => seq.saturating_add(u.int_in_range(0..=5)?),
        1 => since,
        _ => seq,
    };
    let page = Page { instance, since, next, head: next, more: u.ratio(1, 4)?, snapshot: u.ratio(1, 3)?, changes };
    Ok((page, via))
}

fn sorted(mut routes: Vec<Route>) -> Vec<Route> {
    routes.sort_by_key(|r| r.addr);
    routes
}

fn run(u: &mut Unstructured) -> Result<()> {
    let s = shared();
    let table = Arc::new(RouteTable::new(s.clock, Duration::from_secs(1), Duration::from_millis(MAX_TTL)));
    let merger =
        Merger::new(table.clone(), s.lists.clone(), s.log.clone(), s.metrics.clone(), s.route_metrics.clone(), MAX_TTL);
    // Origins whose pages were applied; a route may only come from them.
    let mut senders: Vec<String> = Vec::new();
    // Origins with a snapshot in progress (begun by a pull from since 0,
    // not yet ended by a pull page without `more`).
    let mut in_snapshot: Vec<String> = Vec::new();
    for _ in 0..u.int_in_range(1..=12)? {
        let hint = merger.cursor("peer-a");
        let (page, via) = page(u, hint)?;
        if merge::check(&page).is_err() {
            continue;
        }
        let before_cursor = merger.cursor(&page.instance);
        let before = sorted(table.snapshot());
        let applied = merger.apply(&page, via, "fuzz", OWN);
        let after = sorted(table.snapshot());
        let cursor = merger.cursor(&page.instance);
        assert_eq!(applied.cursor, cursor, "{page:?} {applied:?}");
        assert!(applied.accepted + applied.duplicates <= page.changes.len(), "{page:?} {applied:?}");
        let restarts = via == Via::Pull && page.snapshot && page.since == 0;
        if applied.gap || page.instance == OWN {
            assert_eq!(before, after, "refused page changed the table: {page:?} {applied:?}");
            assert_eq!(cursor, before_cursor, "refused page moved the cursor: {page:?}");
            continue;
        }
        // The last page of a snapshot removes the origin's routes the
        // snapshot did not carry, whatever the page's own changes are.
        let ends_snapshot = via == Via::Pull && !page.more && (restarts || in_snapshot.contains(&page.instance));
        if !restarts {
            assert!(cursor >= before_cursor, "cursor went back {before_cursor} -> {cursor}: {page:?}");
            if !page.changes.is_empty() && page.changes.iter().all(|c| c.seq <= before_cursor) {
                assert_eq!(applied.duplicates, page.changes.len(), "{page:?} {applied:?}");
                if !ends_snapshot {
                    assert_eq!(before, after, "duplicates changed the table: {page:?}");
                }
            }
        }
        if ends_snapshot {
            in_snapshot.retain(|i| i != &page.instance);
        } else if restarts && !in_snapshot.contains(&page.instance) {
            in_snapshot.push(page.instance.clone());
        }
        if !senders.contains(&page.instance) {
            senders.push(page.instance.clone());
        }
        // The table keeps expiries in whole seconds, rounded up (a route
        // never ends early), so the cap of now + max_ttl holds to the second.
        let limit = (s.clock.now() + MAX_TTL).div_ceil(1000) * 1000;
        for route in &after {
            assert!(routable_unicast(route.addr), "{}", route.addr);
            assert!(!route.attributions.is_empty(), "{route:?}");
            assert!(!matches!(route.addr, IpAddr::V6(a) if a.to_ipv4_mapped().is_some()), "not canonical: {route:?}");
            for a in &route.attributions {
                let listed = s.lists.load().lookup_text(&a.domain);
                let index = s.lists.load().index_of(&a.list).expect("a local list");
                assert!(listed & (1 << index) != 0, "{} is not on {}", a.domain, a.list);
                assert!(a.expires <= limit, "{route:?}");
                match &a.source {
                    Source::Peer(p) => assert!(senders.iter().any(|s| **s == **p), "{route:?}"),
                    Source::Dns => panic!("a peer page made a local route: {route:?}"),
                }
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

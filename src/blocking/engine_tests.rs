//! Engine unit tests on synthetic time: every rule kind at its edge
//! (exactly rate × window does not trigger, one more does), window decay,
//! aggregation, exclusions, eviction, keep-alive from kernel hits.

use std::time::Duration;

use super::*;
use crate::blocking::blocks::Target;
use crate::blocking::config::{Action, BlockingSettings, RuleKind, RuleSettings};
use crate::blocking::kernel::{Enforcer, MemoryEnforcer, Verdict};
use crate::blocking::tap::Tap;
use crate::names::NameBuf;
use crate::observation::{MessageType, Sighting};

const T0: u64 = 1_700_000_000_000;

fn rule(kind: RuleKind, threshold: f64, window_ms: u64) -> RuleSettings {
    RuleSettings {
        name: "r".into(),
        kind,
        threshold,
        warning: None,
        window: Duration::from_millis(window_ms),
        duration: Duration::from_secs(5),
        action: Action::Drop,
        reason: "reason".into(),
        qtype: 255,
        rcode: 3,
        min_responses: 1,
        max_allow: 10,
    }
}

fn settings(rules: Vec<RuleSettings>) -> BlockingSettings {
    BlockingSettings { rules, ..Default::default() }
}

fn no_hits(_: &KernelKey) -> Option<u64> {
    None
}

struct Feed {
    tap: Tap,
    name: NameBuf,
}

impl Feed {
    fn new(e: &Engine) -> Feed {
        Feed { tap: e.tap_factory().tap(), name: NameBuf::new() }
    }

    fn query(&mut self, client: &str, qtype: u16, n: usize) {
        let client = client.parse().unwrap();
        for _ in 0..n {
            self.tap.sight(&Sighting {
                time: 0,
                message_type: MessageType::ClientQuery,
                client,
                qtype,
                rcode: None,
                answered: false,
                size: 40,
                qname: None,
            });
        }
    }

    fn response(&mut self, client: &str, qname: &str, rcode: u8, answered: bool, size: u32, n: usize) {
        let client = client.parse().unwrap();
        self.name.set_text(qname).unwrap();
        for _ in 0..n {
            self.tap.sight(&Sighting {
                time: 0,
                message_type: MessageType::ClientResponse,
                client,
                qtype: 1,
                rcode: Some(rcode),
                answered,
                size,
                qname: Some(&self.name),
            });
        }
    }
}

fn source(e: &Engine, net: &str) -> Option<Block> {
    let t = Target::parse(net).unwrap();
    e.blocks().get(&BlockKey { target: t, qtype: QTYPE_ANY }).cloned()
}

/// Feeds `per_tick` queries from `client` for `ticks` ticks of 100 ms,
/// evaluating after each; returns the time of the last evaluation.
fn steady(e: &mut Engine, f: &mut Feed, client: &str, per_tick: usize, ticks: u64, from: u64) -> u64 {
    let mut now = from;
    for _ in 0..ticks {
        f.query(client, 1, per_tick);
        now += 100;
        e.evaluate(now, &no_hits);
    }
    now
}

#[test]
fn query_rate_edge_exactly_rate_times_window_does_not_trigger() {
    // 10/s over 1 s: 10 queries do not trigger, 11 do.
    let mut e = Engine::new(settings(vec![rule(RuleKind::QueryRate, 10.0, 1000)]));
    let mut f = Feed::new(&e);
    f.query("198.51.100.7", 1, 5);
    e.evaluate(T0 + 100, &no_hits);
    f.query("198.51.100.7", 1, 5);
    e.evaluate(T0 + 200, &no_hits);
    assert!(source(&e, "198.51.100.7").is_none(), "exactly 10 in the window");
    f.query("198.51.100.7", 1, 1);
    let out = e.evaluate(T0 + 300, &no_hits);
    let b = source(&e, "198.51.100.7").expect("11 > 10 triggers");
    assert_eq!((b.created, b.expires, b.action, b.warning), (T0 + 300, T0 + 5300, Action::Drop, false));
    assert_eq!(b.rule.as_deref(), Some("r"));
    assert_eq!(out.created.len(), 1);
    assert!(matches!(&out.ops[..], [KernelOp::Upsert(KernelKey::Source(n), Verdict::Drop, x)]
        if n.to_string() == "198.51.100.7/32" && *x == T0 + 5300));
}

#[test]
fn window_decay() {
    // 10 per 1 s window: 6 now and 6 a second later never add up.
    let mut e = Engine::new(settings(vec![rule(RuleKind::QueryRate, 10.0, 1000)]));
    let mut f = Feed::new(&e);
    f.query("198.51.100.7", 1, 6);
    e.evaluate(T0 + 100, &no_hits);
    let mut now = T0 + 100;
    for _ in 0..9 {
        now += 100;
        e.evaluate(now, &no_hits);
    }
    // At T0+1000 the first tick (T0+100) is still inside (time > now - 1000).
    f.query("198.51.100.7", 1, 6);
    e.evaluate(T0 + 1100, &no_hits);
    assert!(source(&e, "198.51.100.7").is_none(), "the first 6 left the window at T0+1100");
    assert_eq!(e.tracked_clients(), 1);
    // Quiet for a whole window: the client is no longer tracked.
    e.evaluate(T0 + 2200, &no_hits);
    assert_eq!(e.tracked_clients(), 0);
}

#[test]
fn sustained_200k_qps_over_10s_triggers() {
    // No ring-buffer ceiling: 10 s at 200 k/s from one client is 2 M
    // queries in the window, over a limit of 1.5 M.
    let mut e = Engine::new(settings(vec![rule(RuleKind::QueryRate, 150_000.0, 10_000)]));
    let mut f = Feed::new(&e);
    let end = steady(&mut e, &mut f, "198.51.100.9", 20_000, 75, T0);
    assert!(source(&e, "198.51.100.9").is_none(), "1.5 M is not more than 1.5 M");
    steady(&mut e, &mut f, "198.51.100.9", 20_000, 1, end);
    assert!(source(&e, "198.51.100.9").is_some());
}

#[test]
fn qtype_rate_counts_only_its_qtype() {
    let mut r = rule(RuleKind::QtypeRate, 5.0, 1000);
    r.qtype = 255;
    let mut e = Engine::new(settings(vec![r]));
    let mut f = Feed::new(&e);
    f.query("198.51.100.7", 1, 100);
    f.query("198.51.100.7", 255, 5);
    e.evaluate(T0 + 100, &no_hits);
    assert!(source(&e, "198.51.100.7").is_none());
    f.query("198.51.100.7", 255, 1);
    e.evaluate(T0 + 200, &no_hits);
    assert!(source(&e, "198.51.100.7").is_some());
}

#[test]
fn rcode_rate_and_responses_as_queries() {
    let mut r = rule(RuleKind::RcodeRate, 3.0, 1000);
    r.rcode = 2;
    let q = RuleSettings { name: "q".into(), ..rule(RuleKind::QueryRate, 4.0, 1000) };
    let mut e = Engine::new(settings(vec![r, q]));
    // Only responses arrive: each counts as a query too.
    let mut f = Feed::new(&e);
    f.response("198.51.100.7", "a.example.com", 2, false, 40, 3);
    f.response("198.51.100.7", "a.example.com", 0, true, 40, 1);
    e.evaluate(T0 + 100, &no_hits);
    assert!(source(&e, "198.51.100.7").is_none(), "3 SERVFAIL, 4 queries: neither over");
    f.response("198.51.100.7", "a.example.com", 2, false, 40, 1);
    e.evaluate(T0 + 200, &no_hits);
    let b = source(&e, "198.51.100.7").unwrap();
    assert_eq!(b.reason.as_ref(), "reason");
    // With queries logged, responses no longer count as queries.
    let q = RuleSettings { name: "q".into(), ..rule(RuleKind::QueryRate, 4.0, 1000) };
    let mut e = Engine::new(settings(vec![q]));
    let mut f = Feed::new(&e);
    f.query("198.51.100.8", 1, 4);
    f.response("198.51.100.8", "a.example.com", 0, true, 40, 4);
    e.evaluate(T0 + 100, &no_hits);
    assert!(source(&e, "198.51.100.8").is_none());
}

#[test]
fn rcode_ratio_with_min_responses() {
    let mut r = rule(RuleKind::RcodeRatio, 0.5, 1000);
    r.rcode = 3;
    r.min_responses = 10;
    let mut e = Engine::new(settings(vec![r]));
    let mut f = Feed::new(&e);
    // 9 responses, all NXDOMAIN: under min_responses.
    f.response("198.51.100.7", "x.example.com", 3, false, 40, 9);
    e.evaluate(T0 + 100, &no_hits);
    assert!(source(&e, "198.51.100.7").is_none());
    // 10 responses, 5 NXDOMAIN... ratio exactly 0.5: not over.
    let mut e2 = Engine::new(settings(vec![RuleSettings { min_responses: 10, ..e.settings().rules[0].clone() }]));
    let mut f2 = Feed::new(&e2);
    f2.response("198.51.100.7", "x.example.com", 3, false, 40, 5);
    f2.response("198.51.100.7", "x.example.com", 0, true, 40, 5);
    e2.evaluate(T0 + 100, &no_hits);
    assert!(source(&e2, "198.51.100.7").is_none(), "0.5 is not over 0.5");
    f2.response("198.51.100.7", "x.example.com", 3, false, 40, 1);
    e2.evaluate(T0 + 200, &no_hits);
    assert!(source(&e2, "198.51.100.7").is_some(), "6/11 > 0.5");
    // The first engine: one more NXDOMAIN reaches min_responses at ratio 1.
    f.response("198.51.100.7", "x.example.com", 3, false, 40, 1);
    e.evaluate(T0 + 200, &no_hits);
    assert!(source(&e, "198.51.100.7").is_some());
}

#[test]
fn response_byte_rate() {
    let mut e = Engine::new(settings(vec![rule(RuleKind::ResponseByteRate, 1000.0, 1000)]));
    let mut f = Feed::new(&e);
    f.response("2001:db8::7", "a.example.com", 0, true, 500, 2);
    e.evaluate(T0 + 100, &no_hits);
    assert!(source(&e, "2001:db8::/64").is_none(), "1000 bytes is not over 1000");
    f.response("2001:db8::8", "a.example.com", 0, true, 1, 1);
    e.evaluate(T0 + 200, &no_hits);
    assert!(source(&e, "2001:db8::/64").is_some(), "IPv6 clients aggregate to /64 by default");
}

#[test]
fn aggregation_v4_prefix_24() {
    let mut s = settings(vec![rule(RuleKind::QueryRate, 10.0, 1000)]);
    s.v4_prefix = 24;
    let mut e = Engine::new(s);
    let mut f = Feed::new(&e);
    f.query("198.51.100.7", 1, 6);
    f.query("198.51.100.8", 1, 5);
    f.query("198.51.101.9", 1, 10);
    e.evaluate(T0 + 100, &no_hits);
    assert!(source(&e, "198.51.100.0/24").is_some());
    assert!(source(&e, "198.51.101.0/24").is_none());
}

#[test]
fn exclusions_most_specific_wins_and_excluded_clients_are_not_counted() {
    let mut s = settings(vec![rule(RuleKind::QueryRate, 10.0, 1000)]);
    s.ranges = vec![("198.51.100.0/24".parse().unwrap(), false), ("198.51.100.128/25".parse().unwrap(), true)];
    let mut e = Engine::new(s);
    let mut f = Feed::new(&e);
    f.query("198.51.100.7", 1, 100);
    f.query("198.51.100.200", 1, 100);
    e.evaluate(T0 + 100, &no_hits);
    assert!(source(&e, "198.51.100.7").is_none());
    assert!(source(&e, "198.51.100.200").is_some());
    assert_eq!(e.tracked_clients(), 1, "the excluded client is not even tracked");
}

#[test]
fn eviction_keeps_the_heaviest() {
    let mut s = settings(vec![rule(RuleKind::QueryRate, 1000.0, 1000)]);
    s.max_tracked = 64;
    let mut e = Engine::new(s);
    let mut f = Feed::new(&e);
    f.query("198.51.100.1", 1, 900);
    for i in 0..500u32 {
        f.query(&std::net::Ipv4Addr::from(0xCB00_7100 + i).to_string(), 1, 1);
    }
    let out = e.evaluate(T0 + 100, &no_hits);
    assert!(e.tracked_clients() <= 64);
    assert!(out.evicted >= 437);
    // The heavy client kept its count and crosses with the next 101.
    f.query("198.51.100.1", 1, 101);
    e.evaluate(T0 + 200, &no_hits);
    assert!(source(&e, "198.51.100.1").is_some());
}

#[test]
fn warning_entry_then_block() {
    let mut r = rule(RuleKind::QueryRate, 10.0, 1000);
    r.warning = Some(5.0);
    let mut e = Engine::new(settings(vec![r]));
    let mut f = Feed::new(&e);
    f.query("198.51.100.7", 1, 6);
    let out = e.evaluate(T0 + 100, &no_hits);
    let b = source(&e, "198.51.100.7").unwrap();
    assert!(b.warning && !b.enforced());
    assert!(out.ops.is_empty(), "a warning is not pushed to the kernel");
    f.query("198.51.100.7", 1, 5);
    let out = e.evaluate(T0 + 200, &no_hits);
    let b = source(&e, "198.51.100.7").unwrap();
    assert!(!b.warning && b.enforced());
    assert_eq!(out.ops.len(), 1);
    // A warn action lists only.
    let mut r = rule(RuleKind::QueryRate, 10.0, 1000);
    r.action = Action::Warn;
    let mut e = Engine::new(settings(vec![r]));
    let mut f = Feed::new(&e);
    f.query("198.51.100.7", 1, 11);
    let out = e.evaluate(T0 + 100, &no_hits);
    assert!(!source(&e, "198.51.100.7").unwrap().enforced());
    assert!(out.ops.is_empty());
}

#[test]
fn nxdomain_suffix_most_specific_with_allow_entries() {
    let mut r = rule(RuleKind::NxdomainSuffix, 10.0, 1000);
    r.max_allow = 2;
    let mut e = Engine::new(settings(vec![r]));
    let mut f = Feed::new(&e);
    // Answered names below the zone, before the flood.
    f.response("198.51.100.1", "www.listed.test", 0, true, 60, 5);
    f.response("198.51.100.1", "mail.listed.test", 0, true, 60, 3);
    f.response("198.51.100.1", "ftp.listed.test", 0, true, 60, 1);
    f.response("198.51.100.1", "www.other.test", 0, true, 60, 9);
    e.evaluate(T0 + 100, &no_hits);
    // Exactly 10 NXDOMAIN below listed.test: no block.
    for i in 0..10 {
        f.response("198.51.100.2", &format!("r{i}.listed.test"), 3, false, 40, 1);
    }
    e.evaluate(T0 + 200, &no_hits);
    assert!(e.blocks().is_empty());
    f.response("198.51.100.2", "r10.listed.test", 3, false, 40, 1);
    let out = e.evaluate(T0 + 300, &no_hits);
    let key = BlockKey { target: Target::Suffix("listed.test".into()), qtype: QTYPE_ANY };
    let b = e.blocks().get(&key).expect("suffix block");
    assert_eq!(b.matching, NameMatch::Below);
    let allow: Vec<&str> = b.allow.iter().map(|a| &**a).collect();
    assert_eq!(allow, ["www.listed.test", "mail.listed.test"], "most answered first, at most max_allow");
    assert_eq!(out.ops.len(), 3);
    // A deeper flood blocks the most specific suffix, not its parent.
    for i in 0..11 {
        f.response("198.51.100.2", &format!("r{i}.cdn.deep.test"), 3, false, 40, 1);
    }
    e.evaluate(T0 + 400, &no_hits);
    assert!(e.blocks().get(&BlockKey { target: Target::Suffix("cdn.deep.test".into()), qtype: QTYPE_ANY }).is_some());
    assert!(e.blocks().get(&BlockKey { target: Target::Suffix("deep.test".into()), qtype: QTYPE_ANY }).is_none());
    // The registrable domain's own NXDOMAIN and public suffixes never count.
    for i in 0..50 {
        f.response("198.51.100.2", &format!("x{i}.test"), 3, false, 40, 1);
    }
    e.evaluate(T0 + 500, &no_hits);
    assert!(e.blocks().get(&BlockKey { target: Target::Suffix("test".into()), qtype: QTYPE_ANY }).is_none());
}

#[test]
fn exclude_domains_are_never_counted() {
    let mut s = settings(vec![rule(RuleKind::NxdomainSuffix, 2.0, 1000)]);
    s.exclude_domains = vec!["listed.test".into()];
    let mut e = Engine::new(s);
    let mut f = Feed::new(&e);
    for i in 0..10 {
        f.response("198.51.100.2", &format!("r{i}.sub.listed.test"), 3, false, 40, 1);
    }
    e.evaluate(T0 + 100, &no_hits);
    assert!(e.blocks().is_empty());
    assert_eq!(e.tracked_suffixes(), 0);
}

#[test]
fn keepalive_from_kernel_hits_and_expiry_on_time() {
    let mut r = rule(RuleKind::QueryRate, 10.0, 1000);
    r.duration = Duration::from_secs(2);
    let mut e = Engine::new(settings(vec![r]));
    let k = MemoryEnforcer::new();
    let apply = |k: &MemoryEnforcer, out: &Outcome| {
        for op in &out.ops {
            match op {
                KernelOp::Upsert(key, v, x) => k.upsert(key, *v, *x).unwrap(),
                KernelOp::Remove(key) => {
                    k.remove(key).unwrap();
                }
            }
        }
    };
    fn hits(k: &MemoryEnforcer) -> impl Fn(&KernelKey) -> Option<u64> + '_ {
        move |key: &KernelKey| k.hits(key).ok().flatten()
    }
    let mut f = Feed::new(&e);
    f.query("198.51.100.7", 1, 20);
    let out = e.evaluate(T0 + 100, &hits(&k));
    apply(&k, &out);
    let key = KernelKey::Source("198.51.100.7/32".parse().unwrap());
    assert!(k.hits(&key).unwrap().is_some());
    // The kernel drops 30/s (3 per tick): the block is extended before it ends.
    let mut now = T0 + 100;
    let mut extended_at = None;
    while now < T0 + 6000 {
        now += 100;
        k.add_hits(&key, 3);
        let out = e.evaluate(now, &hits(&k));
        apply(&k, &out);
        if out.extended > 0 && extended_at.is_none() {
            extended_at = Some(now);
        }
        let b = source(&e, "198.51.100.7").expect("a sustained attack stays blocked");
        assert!(b.expires > now, "never lapses while dropping above the rate");
    }
    assert!(extended_at.is_some_and(|t| t < T0 + 2100));
    // The attacker stops: the block ends on time and the entry is removed.
    let b = source(&e, "198.51.100.7").unwrap();
    let expires = b.expires;
    while now < expires {
        now += 100;
        let out = e.evaluate(now, &hits(&k));
        apply(&k, &out);
    }
    assert!(source(&e, "198.51.100.7").is_none());
    assert_eq!(k.hits(&key).unwrap(), None, "kernel entry gone at expiry");
    // A slow dribble below the rate does not keep it.
    let _ = steady;
}

#[test]
fn late_frames_from_before_the_block_do_not_extend_it() {
    let mut e = Engine::new(settings(vec![rule(RuleKind::QueryRate, 10.0, 1000)]));
    let mut tap = e.tap_factory().tap();
    let s = |time| Sighting {
        time,
        message_type: MessageType::ClientQuery,
        client: "198.51.100.7".parse().unwrap(),
        qtype: 1,
        rcode: None,
        answered: false,
        size: 40,
        qname: None,
    };
    for _ in 0..11 {
        tap.sight(&s(T0 + 50));
    }
    e.evaluate(T0 + 100, &no_hits);
    let expires = source(&e, "198.51.100.7").unwrap().expires;
    // Frames stamped before the block arrive late.
    for _ in 0..20 {
        tap.sight(&s(T0 + 90));
    }
    e.evaluate(T0 + 200, &no_hits);
    assert_eq!(source(&e, "198.51.100.7").unwrap().expires, expires);
    // Frames from after the block (it did not hold): renewed.
    tap.sight(&s(T0 + 250));
    e.evaluate(T0 + 300, &no_hits);
    assert_eq!(source(&e, "198.51.100.7").unwrap().expires, T0 + 5300);
}

#[test]
fn manual_blocks_and_adoption() {
    let mut e = Engine::new(settings(vec![]));
    let req: ManualRequest = serde_json::from_str(r#"{"key":"198.51.100.0/24","blackhole":true}"#).unwrap();
    let (b, out) = e.add_manual(&req, T0).unwrap();
    assert_eq!(b.action, Action::Blackhole);
    assert!(out.blackholes_changed);
    assert_eq!(e.blackholes().len(), 1);
    let (gone, out) = e.remove(&Target::parse("198.51.100.0/24").unwrap(), None);
    assert_eq!(gone.len(), 1);
    assert!(matches!(&out.ops[..], [KernelOp::Remove(_)]));
    // Adoption at start: a persisted block and a live unknown kernel entry
    // stay; an expired one does not come back.
    let persisted: ManualRequest = serde_json::from_str(r#"{"key":"qname:a.test","duration":"1m"}"#).unwrap();
    let p = persisted.to_block(T0).unwrap();
    let stale = ManualRequest { key: "qname:b.test".into(), ..persisted.clone() }.to_block(T0 - 120_000).unwrap();
    let live = KernelEntry {
        key: KernelKey::Source("203.0.113.5/32".parse().unwrap()),
        verdict: Verdict::Drop,
        expires: T0 + 30_000,
        hits: 7,
    };
    let mut e = Engine::new(settings(vec![]));
    let ops = e.adopt(vec![p, stale], std::slice::from_ref(&live), T0 + 1000);
    assert_eq!(e.blocks().len(), 2);
    assert_eq!(ops.len(), 1, "only the persisted qname block is restored: {ops:?}");
    assert_eq!(source(&e, "203.0.113.5").unwrap().hits, 7);
}

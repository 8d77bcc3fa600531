//! Load figures of the blocking engine (BENCHMARKS.md, "Blocking engine").
//!
//! `cargo run --release --example blocking_bench -- ingest [--frames N] [--clients N]`
//!   dnstap ingest on one thread with blocking on: CLIENT_QUERY and
//!   CLIENT_RESPONSE frames of `--clients` clients (85 % NOERROR with an
//!   answer, 10 % NXDOMAIN for random labels under 100 zones, 5 %
//!   SERVFAIL), a query_rate, an rcode_rate and an nxdomain_suffix rule,
//!   an evaluation every 150 000 frames (100 ms at 1.5 M frames/s) on
//!   synthetic time, counted in. The same frames with blocking off for
//!   comparison. Thread CPU time.
//! `... -- memory [--clients N]`: RSS growth per tracked client after N
//!   distinct clients sent one query each, and the engine's own count.
//! `... -- latency [--runs N]`: a client crosses a query_rate rule while
//!   an evaluation thread runs every 100 ms; time from the crossing query
//!   to the block being in the set.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use dnsbgpd::blocking::config::{Action, BlockingSettings, RuleKind, RuleSettings};
use dnsbgpd::blocking::engine::Engine;
use dnsbgpd::dnstap::proto;
use dnsbgpd::dnstap::writer::{self, Response};
use dnsbgpd::dnstap::{MessageType, Pipeline};
use dnsbgpd::lists::Lists;
use dnsbgpd::metrics::Metrics;
use dnsbgpd::observation::Sighting;
use dnsbgpd::routes::ingest::Ingest;
use dnsbgpd::routes::{Clock, RouteTable};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn rss_bytes() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib * 1024.0
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A query, or a response with `rcode` and (if `answered`) one A record.
fn message(id: u16, name: &str, response: Option<(u8, bool)>) -> Vec<u8> {
    match response {
        None => writer::query(id, name, writer::TYPE_A),
        Some((rcode, answered)) => {
            let r = Response::new(id, name, writer::TYPE_A).rcode(rcode);
            let r = if answered { r.address(IpAddr::from([192, 0, 2, (id & 0xff) as u8]), 300) } else { r };
            r.build()
        }
    }
}

fn frame(mtype: MessageType, client: Ipv4Addr, dns: Vec<u8>, sec: u64) -> Vec<u8> {
    let response = mtype.is_response();
    let msg = proto::Message {
        query_time_sec: Some(sec),
        query_time_nsec: Some(0),
        response_time_sec: response.then_some(sec),
        response_time_nsec: response.then_some(0),
        ..writer::message(mtype, IpAddr::V4(client), dns)
    };
    writer::payload(Some(b"bench"), None, msg)
}

fn rule(name: &str, kind: RuleKind, rate: f64) -> RuleSettings {
    RuleSettings {
        name: name.into(),
        kind,
        threshold: rate,
        warning: None,
        window: Duration::from_secs(10),
        duration: Duration::from_secs(60),
        action: Action::Drop,
        reason: name.into(),
        qtype: 255,
        rcode: 2,
        min_responses: 20,
        max_allow: 10,
    }
}

fn settings() -> BlockingSettings {
    BlockingSettings {
        rules: vec![
            rule("qps", RuleKind::QueryRate, 100.0),
            rule("servfail", RuleKind::RcodeRate, 20.0),
            rule("random", RuleKind::NxdomainSuffix, 200.0),
        ],
        ..Default::default()
    }
}

fn pipeline(blocking: Option<&Engine>) -> Pipeline {
    let list = dnsbgpd::config::ListSettings { name: Arc::from("vpn"), ..Default::default() };
    let text: String = (0..100).map(|i| format!("listed{i}.example\n")).collect();
    let lists = Lists::compile(&[list], &[text]).0;
    let table = Arc::new(RouteTable::new(Clock::new(), Duration::from_secs(3600), Duration::from_secs(86400)));
    let p = Pipeline::new(
        Arc::new(ArcSwap::from_pointee(lists)),
        Arc::new(Ingest::new(table)),
        Arc::new(Metrics::new()),
        &[MessageType::ClientResponse],
    );
    match blocking {
        Some(e) => p.with_blocking(e.tap_factory()),
        None => p,
    }
}

fn frames(n: usize, clients: u64) -> Vec<Bytes> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut buf = BytesMut::new();
    let mut ends = Vec::with_capacity(n);
    let sec = 1_700_000_000;
    while ends.len() < n {
        let client = Ipv4Addr::from(0x0A00_0000 + rng.below(clients) as u32);
        let roll = rng.below(100);
        let id = rng.next() as u16;
        let (name, rcode, answered) = if roll < 85 {
            (format!("www{}.site{}.example", rng.below(10), rng.below(1000)), 0, true)
        } else if roll < 95 {
            (format!("r{:x}.zone{}.example", rng.next() & 0xFFFF_FFFF, rng.below(100)), 3, false)
        } else {
            (format!("broken{}.example", rng.below(50)), 2, false)
        };
        buf.extend_from_slice(&frame(MessageType::ClientQuery, client, message(id, &name, None), sec));
        ends.push(buf.len());
        buf.extend_from_slice(&frame(
            MessageType::ClientResponse,
            client,
            message(id, &name, Some((rcode, answered))),
            sec,
        ));
        ends.push(buf.len());
    }
    let buf = buf.freeze();
    let mut start = 0;
    ends.into_iter()
        .map(|e| {
            let f = buf.slice(start..e);
            start = e;
            f
        })
        .collect()
}

fn ingest(args: &[String]) {
    let n: usize = arg(args, "--frames", 3_000_000);
    let clients: u64 = arg(args, "--clients", 50_000);
    let runs: usize = arg(args, "--runs", 3);
    println!("building {n} frames of {clients} clients");
    let frames = frames(n, clients);
    for run in 0..runs {
        // Blocking off.
        let p = pipeline(None);
        let mut scratch = p.scratch();
        let t = thread_cpu();
        for f in &frames {
            p.handle_in(f.clone(), &mut scratch);
        }
        let off = thread_cpu() - t;
        // Blocking on, evaluations counted in.
        let mut engine = Engine::new(settings());
        let p = pipeline(Some(&engine));
        let mut scratch = p.scratch();
        let mut now = 1_700_000_000_000u64;
        let mut evals = Duration::ZERO;
        let t = thread_cpu();
        for (i, f) in frames.iter().enumerate() {
            p.handle_in(f.clone(), &mut scratch);
            if i % 150_000 == 149_999 {
                now += 100;
                let e = thread_cpu();
                engine.evaluate(now, &|_| None);
                evals += thread_cpu() - e;
            }
        }
        now += 100;
        engine.evaluate(now, &|_| None);
        let on = thread_cpu() - t;
        let mf = |d: Duration| n as f64 / d.as_secs_f64() / 1e6;
        println!(
            "run {run}: blocking off {:.2} M frames/s ({:.0} ns/frame); on {:.2} M frames/s ({:.0} ns/frame), \
             evaluations {:.1} ms in total; tracked clients {}, suffixes {}, answered names {}, blocks {}",
            mf(off),
            off.as_nanos() as f64 / n as f64,
            mf(on),
            on.as_nanos() as f64 / n as f64,
            evals.as_secs_f64() * 1e3,
            engine.tracked_clients(),
            engine.tracked_suffixes(),
            engine.tracked_names(),
            engine.blocks().len(),
        );
    }
}

fn memory(args: &[String]) {
    let clients: u32 = arg(args, "--clients", 1_000_000);
    let ticks: u64 = arg(args, "--ticks", 1);
    let mut engine = Engine::new(settings());
    let mut tap = engine.tap_factory().tap();
    // Warm the allocator and the tap's accumulator first.
    let base = rss_bytes();
    let mut now = 1_700_000_000_000u64;
    for t in 0..ticks {
        for i in 0..clients / ticks as u32 {
            let c = Ipv4Addr::from(0x0A00_0000 + i + (t as u32) * (clients / ticks as u32));
            tap.sight(&Sighting {
                time: 0,
                message_type: MessageType::ClientQuery,
                client: IpAddr::V4(c),
                qtype: 1,
                rcode: None,
                answered: false,
                size: 40,
                qname: None,
            });
        }
        now += 100;
        engine.evaluate(now, &|_| None);
    }
    // The accumulator buffers (two per connection, reused) are counted too.
    let grown = rss_bytes() - base;
    let tracked = engine.tracked_clients();
    println!(
        "{tracked} tracked clients: RSS +{:.1} MiB, {:.0} bytes per client (engine's own count: {} bytes/key + {:.1} MiB tick records)",
        grown / 1048576.0,
        grown / tracked.max(1) as f64,
        engine.client_bytes_per_key(),
        engine.client_record_bytes() as f64 / 1048576.0,
    );
}

fn latency(args: &[String]) {
    let runs: usize = arg(args, "--runs", 20);
    let mut s = settings();
    s.rules = vec![RuleSettings { window: Duration::from_secs(1), ..rule("qps", RuleKind::QueryRate, 500.0) }];
    let engine = Arc::new(Mutex::new(Engine::new(s)));
    let factory = engine.lock().unwrap_or_else(|p| p.into_inner()).tap_factory();
    let clock = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let ev = {
        let (engine, stop, seen) = (engine.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut next = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                next += Duration::from_millis(100);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                let now = 1_700_000_000_000 + clock.elapsed().as_millis() as u64;
                let out = engine.lock().unwrap_or_else(|p| p.into_inner()).evaluate(now, &|_| None);
                let at = Instant::now();
                for b in out.created {
                    if let dnsbgpd::blocking::blocks::Target::Source(n) = b.key.target
                        && let IpAddr::V4(a) = n.addr()
                    {
                        seen.lock().unwrap_or_else(|p| p.into_inner()).push((a.to_bits(), at));
                    }
                }
            }
        })
    };
    let mut tap = factory.tap();
    let mut lat = Vec::new();
    for r in 0..runs {
        let client = Ipv4Addr::from(0x0A01_0000 + r as u32);
        // 2000 queries/s: the 501st query crosses 500/s over 1 s.
        let start = Instant::now();
        let mut crossed = None;
        for i in 0..600u32 {
            let due = start + Duration::from_micros(500 * u64::from(i));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            tap.sight(&Sighting {
                time: 0,
                message_type: MessageType::ClientQuery,
                client: IpAddr::V4(client),
                qtype: 1,
                rcode: None,
                answered: false,
                size: 40,
                qname: None,
            });
            if i == 500 {
                crossed = Some(Instant::now());
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let at =
            seen.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(a, _)| *a == client.to_bits()).map(|x| x.1);
        if let (Some(c), Some(a)) = (crossed, at) {
            lat.push(a.saturating_duration_since(c));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = ev.join();
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if lat.is_empty() {
        println!("no block seen");
        return;
    }
    println!(
        "crossing → block decision over {} runs: median {:.1} ms, p90 {:.1} ms, max {:.1} ms (evaluate_interval 100 ms)",
        lat.len(),
        ms(lat[lat.len() / 2]),
        ms(lat[lat.len() * 9 / 10]),
        ms(lat[lat.len() - 1])
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("ingest") => ingest(&args),
        Some("memory") => memory(&args),
        Some("latency") => latency(&args),
        _ => eprintln!("usage: blocking_bench ingest|memory|latency [options]"),
    }
}

//! Fault injection against the real daemon (issue 10, "Fault injection";
//! RELIABILITY.md has the method and the figures these tests print).
//!
//! * `kill_9_under_load`: 20 times, dnsbgpd is killed with SIGKILL at a
//!   random moment while a dnstap writer feeds it new routes. Every time
//!   the store opens again, every route that was in the table for longer
//!   than two flush intervals before the kill is back, and the sync change
//!   log never hands out a sequence number a peer has already seen for
//!   another change.
//! * `silent_bgp_neighbor_and_sync_peer`: a BGP neighbor and a sync peer
//!   that accept TCP and never answer; the daemon keeps running, the API
//!   answers promptly, a real bird neighbor gets its routes, and SIGTERM
//!   still stops it cleanly.
//! * `clock_stepped_forward_and_back`: under libfaketime (Debian package
//!   faketime; only this process's wall clock moves, the monotonic clock
//!   and the machine's clock do not), the wall clock steps an hour ahead
//!   and back while dnsbgpd runs. Expiries are absolute wall times that
//!   follow the clock (src/clock.rs): ahead, a route whose expiry passed
//!   goes and a longer one stays; new answers get expiries from the new
//!   time; back, nothing is lost; the API, the store and shutdown work
//!   throughout.
//!
//! * `damaged_store_check_repair_export`: `dnsbgpd store check|repair|export`
//!   on a store with an undecodable record and on one sled cannot open;
//!   the daemon starts again after the repair.
//!
//! bird and unbound restarted under load: tests/peer_restarts.rs.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::bgp_peers::{BIRD_BINS, Bird, BirdConfig, BirdNeighbor, require_bgp};
use common::frames::DnstapWriter;
use common::{Dnsbgpd, Options, http, send_signal, wait_for};
use serde_json::Value;

const TOKEN: &str = "faults-test-token-0123456789";
/// `flush_interval` of the test config (tests/common/mod.rs).
const FLUSH: Duration = Duration::from_millis(200);

/// A small xorshift generator: the test prints its seed, so a failing
/// round can be replayed with `FAULTS_SEED=...`.
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

/// The n-th address the feeder sends: 10.x.y.z, distinct for n < 2^24.
fn address(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0A00_0000u32 + n as u32 + 1))
}

/// One HTTP request with the sync token; returns status and body.
fn sync_get(api: SocketAddr, path: &str) -> Result<(u16, String)> {
    common::request(api, "GET", path, &[&format!("Authorization: Bearer {TOKEN}")], "")
}

/// Every change of the instance's log from `since` on, following `next`.
fn changes_since(api: SocketAddr, mut since: u64) -> Result<(Vec<(u64, String)>, u64)> {
    let mut out = Vec::new();
    loop {
        let (code, body) = sync_get(api, &format!("/api/v1/sync/changes?since={since}&limit=10000"))?;
        if code != 200 {
            bail!("sync changes: {code} {body}");
        }
        let page: Value = serde_json::from_str(&body)?;
        for c in page["changes"].as_array().context("changes")? {
            out.push((c["seq"].as_u64().context("seq")?, c["address"].as_str().context("address")?.to_string()));
        }
        let next = page["next"].as_u64().context("next")?;
        let head = page["head"].as_u64().unwrap_or(next);
        if !page["more"].as_bool().unwrap_or(false) || next <= since {
            return Ok((out, head));
        }
        since = next;
    }
}

/// The prefixes of the routes the API shows after address `after` (all
/// of them for `None`). Asks with `limit` and `after`, for an API that
/// pages; stops when a page brings nothing new (an API that ignores both
/// answers the whole table each time).
fn all_prefixes(d: &Dnsbgpd, after: Option<IpAddr>) -> Result<HashSet<String>> {
    let mut seen = HashSet::new();
    let mut after = after.map(|a| a.to_string()).unwrap_or_default();
    loop {
        let path = if after.is_empty() {
            "/api/v1/routes?limit=100000".to_string()
        } else {
            format!("/api/v1/routes?limit=100000&after={after}")
        };
        let v = d.get_json(&path)?;
        let items = match &v {
            Value::Array(a) => a.clone(),
            Value::Object(o) => o.get("routes").and_then(Value::as_array).cloned().unwrap_or_default(),
            _ => bail!("routes: {v}"),
        };
        let before = seen.len();
        for r in &items {
            if let Some(p) = r["prefix"].as_str() {
                seen.insert(p.to_string());
                after = p.split('/').next().unwrap_or(p).to_string();
            }
        }
        if seen.len() == before || items.is_empty() {
            return Ok(seen);
        }
    }
}

/// The route count the API shows.
fn route_count(api: SocketAddr) -> Option<usize> {
    let (code, body) = http(api, "GET", "/api/v1/status").ok()?;
    if code != 200 {
        return None;
    }
    serde_json::from_str::<Value>(&body).ok()?["routes"].as_u64().map(|n| n as usize)
}

/// What one round learned before its kill.
struct Round {
    /// How many of this round's addresses had been in the table for over
    /// 2 and over 1 flush intervals when the kill came (the first ones
    /// sent: one connection, applied in order).
    older_2: usize,
    older_1: usize,
    /// Addresses sent in this round.
    sent: usize,
}

/// Feeds new addresses (from `first`), `per_10ms` every 10 ms, samples the
/// route count every 20 ms, and kills dnsbgpd with SIGKILL after `run_for`.
fn feed_and_kill(d: &mut Dnsbgpd, first: usize, run_for: Duration, per_10ms: usize) -> Result<Round> {
    let base = route_count(d.api).context("status before feeding")?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut writer = DnstapWriter::connect(&d.socket)?;
    let feeder = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut n = first;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..per_10ms {
                    writer.queue(&format!("h{n}.listed.test"), &[(address(n), 3600)]);
                    n += 1;
                }
                if writer.flush().is_err() {
                    break; // the daemon is gone
                }
                sent.store(n - first, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let api = d.api;
    let start = Instant::now();
    let mut samples: Vec<(Instant, usize)> = Vec::new();
    while start.elapsed() < run_for {
        let t = Instant::now();
        if let Some(n) = route_count(api) {
            samples.push((t, n.saturating_sub(base)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    send_signal(d.pid(), common::peers::SIGKILL)?;
    let killed = Instant::now();
    stop.store(true, Ordering::Relaxed);
    if let Some(mut p) = d.process.take() {
        p.wait_exit(Duration::from_secs(5));
        p.kill();
    }
    let _ = feeder.join();
    // A count read by a request sent at t was in the table from t on.
    let older = |age: Duration| {
        samples.iter().rev().find(|(t, _)| killed.duration_since(*t) >= age).map(|(_, n)| *n).unwrap_or(0)
    };
    Ok(Round { older_2: older(2 * FLUSH), older_1: older(FLUSH), sent: sent.load(Ordering::Relaxed) })
}

#[test]
fn kill_9_under_load() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let seed = std::env::var("FAULTS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
    });
    // FAULTS_LOAD=k multiplies the feed rate (RELIABILITY.md). The default,
    // 8 (4 000 to 16 000 new routes a second), lost 15 % of the routes older
    // than two flush intervals before the store writer wrote in key order.
    let load: usize = std::env::var("FAULTS_LOAD").ok().and_then(|s| s.parse().ok()).unwrap_or(8).max(1);
    eprintln!("kill_9_under_load: FAULTS_SEED={seed} FAULTS_LOAD={load}");
    let mut rng = Rng(seed);
    let opts = Options {
        lists: vec![("vpn".into(), "listed.test\n".into())],
        min_ttl: "1h".into(),
        max_ttl: "24h".into(),
        extra_config: format!("[sync]\ntoken = \"{TOKEN}\"\n"),
        ..Options::default()
    };
    let mut d = Dnsbgpd::start(tmp.path(), &opts)?;
    let rounds = 20;
    // Every sequence number a peer has seen, with the address it stood for.
    let mut seen: BTreeMap<u64, String> = BTreeMap::new();
    let mut head_seen = 0u64;
    let mut next_address = 0usize;
    let (mut sent_total, mut older_2_total, mut older_1_total) = (0usize, 0usize, 0usize);
    let (mut lost_2_total, mut lost_1_total, mut lost_total) = (0usize, 0usize, 0usize);
    for round in 0..rounds {
        // 500 to 2 000 new routes a second times FAULTS_LOAD, for 0.2 to 0.7 s.
        let per_10ms = (5 + rng.below(16) as usize) * load;
        let run_for = Duration::from_millis(200 + rng.below(500));
        // A peer pulls now and then, as a sync peer would.
        if round % 2 == 0 {
            let (changes, head) = changes_since(d.api, head_seen)?;
            for (seq, addr) in changes {
                seen.insert(seq, addr);
            }
            head_seen = head_seen.max(head);
        }
        let first = next_address;
        let r = feed_and_kill(&mut d, first, run_for, per_10ms)?;
        next_address += r.sent;

        let t0 = Instant::now();
        d.relaunch().with_context(|| format!("round {round}: the store did not open after kill -9"))?;
        let restart = t0.elapsed();
        // This round's addresses only (they follow every earlier round's).
        let have = all_prefixes(&d, Some(IpAddr::V4(Ipv4Addr::from(0x0A00_0000u32 + first as u32))))?;
        let missing =
            |upto: usize| (first..first + upto).filter(|n| !have.contains(&format!("{}/32", address(*n)))).count();
        let (lost_2, lost_1, lost) = (missing(r.older_2), missing(r.older_1), missing(r.sent));
        eprintln!(
            "round {round:2}: {per_10ms:3}/10ms for {run_for:?}: sent {}, in the table >2 flush intervals {}, >1 {}; \
             restart {restart:.0?}; lost {lost_2} / {lost_1} / {lost} (>2 intervals / >1 interval / all sent)",
            r.sent, r.older_2, r.older_1
        );
        sent_total += r.sent;
        older_2_total += r.older_2;
        older_1_total += r.older_1;
        lost_2_total += lost_2;
        lost_1_total += lost_1;
        lost_total += lost;

        // Sequence numbers: the head never goes back, and a number a peer
        // saw still stands for the same address (or was compacted away).
        let (changes, head) = changes_since(d.api, 0)?;
        if head < head_seen {
            bail!("round {round}: the change log's head went back from {head_seen} to {head} after kill -9");
        }
        for (seq, addr) in &changes {
            if let Some(before) = seen.get(seq)
                && before != addr
            {
                bail!("round {round}: sequence number {seq} was {before} before the kill and is {addr} now");
            }
        }
    }
    eprintln!(
        "kill_9_under_load: {rounds} kills, {sent_total} routes sent; lost {lost_2_total} of {older_2_total} older \
         than 2 flush intervals, {lost_1_total} of {older_1_total} older than 1 interval, {lost_total} of all sent"
    );
    assert_eq!(lost_2_total, 0, "routes in the table for more than two flush intervals were lost");
    assert!(d.stop()?, "dnsbgpd did not stop cleanly after the last restart");
    Ok(())
}

/// Accepts TCP connections and holds them open without reading or
/// writing a byte, until dropped.
struct Silent {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    fn start() -> Result<Silent> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                let held: Mutex<Vec<TcpStream>> = Mutex::new(Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            held.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        Ok(Silent { addr, accepted, stop, thread: Some(thread) })
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A status request's round trip.
fn timed_status(api: SocketAddr) -> Result<Duration> {
    let t = Instant::now();
    let (code, body) = http(api, "GET", "/api/v1/status")?;
    if code != 200 {
        bail!("status: {code} {body}");
    }
    Ok(t.elapsed())
}

#[test]
fn silent_bgp_neighbor_and_sync_peer() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !require_bgp(BIRD_BINS) {
        return Ok(());
    }
    let bgp_silent = Silent::start()?;
    let sync_silent = Silent::start()?;
    let lo: IpAddr = "127.0.0.1".parse()?;
    let mut cfg = BirdConfig::new("192.0.2.1".parse()?, 65000, lo);
    let mut n = BirdNeighbor::new("dnsbgpd", lo, 0, 65010);
    n.passive = true;
    cfg.neighbors.push(n);
    let bird = Bird::start(tmp.path(), &cfg)?;
    let neighbor = |name: &str, port: u16| {
        format!(
            "\n[[bgp.neighbor]]\nname = \"{name}\"\naddress = \"127.0.0.1\"\nport = {port}\nremote_as = 65000\n\
             connect_retry = \"200ms\"\n"
        )
    };
    let extra = format!(
        "[bgp]\nlocal_as = 65010\nrouter_id = \"192.0.2.10\"\nbatch_interval = \"20ms\"\n{}{}\n\
         [sync]\ntoken = \"{TOKEN}\"\ninterval = \"1s\"\ntimeout = \"2s\"\n[[sync.peer]]\nname = \"silent\"\n\
         url = \"http://{}\"\ntoken = \"{TOKEN}\"\n",
        neighbor("silent", bgp_silent.addr.port()),
        neighbor("bird", bird.port()),
        sync_silent.addr,
    );
    let mut d = Dnsbgpd::start(tmp.path(), &Options { extra_config: extra, ..Options::default() })?;
    wait_for(Duration::from_secs(10), "dnsbgpd to connect to both silent peers", || {
        Ok((bgp_silent.accepted.load(Ordering::Relaxed) > 0 && sync_silent.accepted.load(Ordering::Relaxed) > 0)
            .then_some(()))
    })?;
    bird.wait_established("dnsbgpd", Duration::from_secs(15))?;

    let mut feed = DnstapWriter::connect(&d.socket)?;
    let mut worst = Duration::ZERO;
    for i in 0..20u8 {
        let addr: IpAddr = format!("198.51.100.{}", i + 1).parse()?;
        feed.answer(&format!("n{i}.listed.test"), &[(addr, 600)])?;
        worst = worst.max(timed_status(d.api)?);
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(Duration::from_secs(10), "bird to have all 20 routes", || {
        let got = (1..=20).filter(|i| bird.route(&format!("198.51.100.{i}/32")).is_ok_and(|r| !r.is_empty())).count();
        Ok((got == 20).then_some(()))
    })?;
    let neighbors = d.get_json("/api/v1/neighbors")?;
    let text = neighbors.to_string();
    let state_of = |name: &str| {
        neighbors.as_array().and_then(|a| a.iter().find(|n| n["name"] == name)).map(|n| n["state"].to_string())
    };
    let silent_state = state_of("silent").with_context(|| format!("no neighbor silent in {text}"))?;
    assert!(!silent_state.contains("Established"), "the silent neighbor cannot be established: {text}");
    assert!(state_of("bird").is_some_and(|s| s.contains("Established")), "{text}");
    let (code, peers) = sync_get(d.api, "/api/v1/sync/peers")?;
    assert_eq!(code, 200, "{peers}");
    worst = worst.max(timed_status(d.api)?);
    eprintln!(
        "silent peers: {} BGP and {} sync connections held; slowest status answer {worst:?}; silent neighbor \
         {silent_state}",
        bgp_silent.accepted.load(Ordering::Relaxed),
        sync_silent.accepted.load(Ordering::Relaxed)
    );
    assert!(worst < Duration::from_secs(1), "a status request took {worst:?}");
    assert!(d.process.as_mut().context("running")?.is_running(), "dnsbgpd exited");
    let t = Instant::now();
    assert!(d.stop()?, "dnsbgpd did not stop cleanly with silent peers");
    assert!(t.elapsed() < Duration::from_secs(10), "stopping took {:?}", t.elapsed());
    // Keep them alive until dnsbgpd is gone.
    drop((bgp_silent, sync_silent));
    Ok(())
}

/// Where Debian's libfaketime lives (package libfaketime, pulled in by
/// faketime).
fn libfaketime() -> Option<std::path::PathBuf> {
    ["/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

/// Seconds from now until a route's RFC 3339 `expires`, by the real clock.
fn expires_in(route: &Value) -> Result<i64> {
    let text = route["expires"].as_str().context("expires")?;
    let t = humantime::parse_rfc3339(text).with_context(|| format!("expires {text:?}"))?;
    let now = std::time::SystemTime::now();
    Ok(match t.duration_since(now) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    })
}

#[test]
fn clock_stepped_forward_and_back() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !common::peers::require(&["faketime"]) {
        return Ok(());
    }
    let Some(lib) = libfaketime() else {
        common::skip("libfaketimeMT.so.1 not found (Debian package libfaketime)");
        return Ok(());
    };
    let offset = tmp.path().join("faketime");
    std::fs::write(&offset, "+0\n")?;
    let opts = Options { min_ttl: "1s".into(), max_ttl: "24h".into(), ..Options::default() };
    let mut d = Dnsbgpd::configure(tmp.path(), &opts)?;
    let mut cmd = std::process::Command::new(common::binary());
    cmd.args(["--log-level", "debug", "run", "--config"]).arg(&d.config);
    // Only CLOCK_REALTIME moves; the offset file is read on every call.
    cmd.env("LD_PRELOAD", &lib)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_DONT_RESET", "1");
    d.process = Some(common::Process::spawn("dnsbgpd", cmd, &d.dir.join("dnsbgpd.faketime.log"))?);
    let api = d.api;
    wait_for(Duration::from_secs(20), "dnsbgpd ready", || Ok(route_count(api).map(|_| ()))).with_context(|| d.log())?;
    let moved = |d: &Dnsbgpd| d.log().matches("the wall clock moved").count();

    let mut feed = DnstapWriter::connect(&d.socket)?;
    feed.answer("short.listed.test", &[("198.51.100.1".parse()?, 600)])?;
    feed.answer("long.listed.test", &[("198.51.100.2".parse()?, 7200)])?;
    d.wait_route("198.51.100.1/32", Duration::from_secs(5))?;
    let long = d.wait_route("198.51.100.2/32", Duration::from_secs(5))?;
    let long_expires = long["expires"].clone();

    // An hour ahead: the daemon notices at its next resync (every 10 s).
    std::fs::write(&offset, "+1h\n")?;
    let t = Instant::now();
    wait_for(Duration::from_secs(25), "dnsbgpd to notice the clock an hour ahead", || {
        Ok((moved(&d) >= 1).then_some(()))
    })?;
    d.wait_no_route("198.51.100.1/32", Duration::from_secs(5))
        .context("a route whose expiry passed when the clock stepped ahead stays")?;
    let noticed = t.elapsed();
    let long = d.route("198.51.100.2/32")?.context("the two-hour route went when the clock stepped an hour ahead")?;
    assert_eq!(long["expires"], long_expires, "an expiry changed without a new answer");
    feed.answer("after.listed.test", &[("198.51.100.3".parse()?, 600)])?;
    let after = d.wait_route("198.51.100.3/32", Duration::from_secs(5))?;
    let ahead = expires_in(&after)?;
    assert!((3600 + 600 - 30..=3600 + 600 + 30).contains(&ahead), "expiry {ahead} s ahead of the real clock: {after}");

    // Back to the real time: nothing is lost.
    std::fs::write(&offset, "+0\n")?;
    wait_for(Duration::from_secs(25), "dnsbgpd to notice the clock an hour back", || {
        Ok((moved(&d) >= 2).then_some(()))
    })?;
    std::thread::sleep(Duration::from_millis(600));
    for p in ["198.51.100.2/32", "198.51.100.3/32"] {
        assert!(d.route(p)?.is_some(), "{p} went when the clock stepped back");
    }
    feed.answer("back.listed.test", &[("198.51.100.4".parse()?, 600)])?;
    let back = d.wait_route("198.51.100.4/32", Duration::from_secs(5))?;
    let ahead = expires_in(&back)?;
    assert!((600 - 30..=600 + 30).contains(&ahead), "expiry {ahead} s ahead after the step back: {back}");
    let status = d.get_json("/api/v1/status")?;
    assert_eq!(status["store"]["state"], "ok", "{status}");
    eprintln!("clock steps: the step ahead was followed after {noticed:?}; routes and store intact");
    assert!(d.stop()?, "dnsbgpd did not stop cleanly after the clock steps");
    Ok(())
}

/// `dnsbgpd ARGS...`: exit code, stdout, stderr; killed (and an error)
/// after 20 s, so that a daemon that should have refused to start cannot
/// hang the test.
fn dnsbgpd_cli(args: &[&str]) -> Result<(i32, String, String)> {
    let dir = tempfile::tempdir()?;
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = std::process::Command::new(common::binary())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("dnsbgpd {args:?} still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((status.code().unwrap_or(-1), std::fs::read_to_string(out_path)?, std::fs::read_to_string(err_path)?))
}

#[test]
fn damaged_store_check_repair_export() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let opts = Options { min_ttl: "1h".into(), ..Options::default() };
    let mut d = Dnsbgpd::start(tmp.path(), &opts)?;
    let config = d.config.to_string_lossy().into_owned();
    let store = d.store.to_string_lossy().into_owned();
    let mut feed = DnstapWriter::connect(&d.socket)?;
    for i in 1..=3 {
        feed.answer(&format!("n{i}.listed.test"), &[(format!("198.51.100.{i}").parse()?, 3600)])?;
    }
    d.wait_route("198.51.100.3/32", Duration::from_secs(5))?;
    // A running daemon's store is left alone.
    let (code, _, err) = dnsbgpd_cli(&["store", "check", "--config", &config])?;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use by another process"), "{err}");
    assert!(d.stop()?);

    let (code, out, err) = dnsbgpd_cli(&["store", "check", "--config", &config])?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": 3 routes"), "{out}");
    let (code, out, err) = dnsbgpd_cli(&["store", "export", "--store", &store])?;
    assert_eq!(code, 0, "{err}");
    let exported: Vec<Value> = out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let mut prefixes: Vec<&str> = exported.iter().filter_map(|v| v["prefix"].as_str()).collect();
    prefixes.sort();
    assert_eq!(prefixes, ["198.51.100.1/32", "198.51.100.2/32", "198.51.100.3/32"], "{out}");
    assert_eq!(exported[0]["list"], "vpn", "{out}");

    // An undecodable record (as a damaged or foreign write would leave).
    {
        let db = redb::Database::create(d.store.join("routes.redb"))?;
        let txn = db.begin_write()?;
        {
            let mut t = txn.open_table(redb::TableDefinition::<&[u8], &[u8]>::new("routes"))?;
            t.insert(&[198u8, 51, 100, 99][..], &b"not a route record"[..])?;
        }
        txn.commit()?;
    }
    let (code, out, err) = dnsbgpd_cli(&["store", "check", "--store", &store])?;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("1 undecodable routes") && out.contains("c6336463"), "{out}");
    assert!(err.contains("dnsbgpd store repair"), "{err}");
    let (code, out, err) = dnsbgpd_cli(&["store", "repair", "--store", &store])?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed 1 undecodable route records"), "{out}");
    let (code, out, _) = dnsbgpd_cli(&["store", "check", "--store", &store])?;
    assert_eq!(code, 0, "{out}");
    d.relaunch()?;
    assert_eq!(route_count(d.api), Some(3));
    assert!(d.stop()?);

    // A database sled cannot open at all: the daemon says so and exits;
    // repair moves it aside and the daemon starts again, empty.
    let file = d.store.join("db").join("db");
    std::fs::remove_file(&file)?;
    std::fs::create_dir(&file)?;
    let (code, _, err) = dnsbgpd_cli(&["store", "check", "--store", &store])?;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&store), "the error names the store: {err}");
    let (code, out, err) = dnsbgpd_cli(&["run", "--config", &config])?;
    assert_ne!(code, 0, "dnsbgpd ran on a store it cannot open: {out}");
    assert!(err.contains(&store), "the error names the store: {err}");
    let (code, out, err) = dnsbgpd_cli(&["store", "repair", "--store", &store])?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("moved it to") && out.contains(".damaged-"), "{out}");
    let aside = std::fs::read_dir(d.store.parent().context("parent")?)?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("store.damaged-"));
    assert!(aside, "the damaged store was not kept");
    d.relaunch()?;
    assert_eq!(route_count(d.api), Some(0));
    assert!(d.stop()?);
    Ok(())
}

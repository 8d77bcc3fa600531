//! `bgp-bench`: benchmark tools for dnsbgpd's BGP speaker.
//!
//! * `fill` writes a list that claims `r{i}.bench.test` and streams one
//!   CLIENT_RESPONSE per name into the daemon's dnstap socket, each with
//!   its own address (IPv4 from 10.0.0.0/8, IPv6 from 2001:db8::/32) and a
//!   long TTL, so the table ends up with exactly `--routes` routes. The
//!   Frame Streams session is bidirectional (READY → ACCEPT → START … STOP →
//!   FINISH) and the daemon answers FINISH only after it handled every
//!   frame before STOP, so when `fill` returns the routes are in the table.
//! * `latency` plays the daemon's BGP neighbor: it listens, completes the
//!   OPEN exchange, waits for End-of-RIB, then sends answers for new names
//!   (`l{i}.bench.test`, IPv4 from 198.18.0.0/15) at a fixed rate and
//!   measures, per route, the time from writing its frame into the dnstap
//!   socket to reading the UPDATE that announces it.
//!
//! The addresses are route contents only; no traffic is sent to them.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use clap::{Parser, Subcommand};
use dnsbgpd::bgp::message::{
    Afi, Capability, KeepaliveMessage, Message, MpNlri, OpenMessage, PathAttribute, Safi, UpdateMessage, decode,
};
use dnsbgpd::dnstap::MessageType;
use dnsbgpd::dnstap::writer::{self, Writer};

/// The list suffix that claims every generated name.
const SUFFIX: &str = "bench.test";
/// Write buffer: many frames per `write` system call.
const CHUNK: usize = 256 * 1024;
const FILL_V4_BASE: u32 = 0x0A00_0000; // 10.0.0.0/8
const FILL_V6_BASE: u128 = 0x2001_0db8 << 96; // 2001:db8::/32
const LATENCY_V4_BASE: u32 = 0xC612_0000; // 198.18.0.0/15
const LATENCY_V4_SIZE: u64 = 1 << 17;

#[derive(Parser)]
#[command(name = "bgp-bench", about = "Benchmark tools for dnsbgpd's BGP speaker")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fill the daemon's table with N generated routes through its dnstap socket.
    Fill {
        /// The daemon's dnstap unix socket (omit to only write the list).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Routes (= names, one address each).
        #[arg(long)]
        routes: u64,
        /// Share of IPv6 routes, 0..=100.
        #[arg(long, default_value_t = 0)]
        v6_percent: u8,
        /// Write the list file claiming the names here.
        #[arg(long)]
        list_out: Option<PathBuf>,
        /// DNS TTL of the answers (seconds).
        #[arg(long, default_value_t = 86_400)]
        ttl: u32,
        /// Random-subdomain flood: list N names `s{j}.bench.test` and answer
        /// `r{i}.s{i % N}.bench.test` with the address of `s{i % N}`, so
        /// `--routes` answers make N routes with ever new names (0: off).
        #[arg(long, default_value_t = 0)]
        flood_suffixes: u64,
    },
    /// Act as the daemon's BGP neighbor and measure dnstap → UPDATE latency.
    Latency {
        /// The daemon's dnstap unix socket.
        #[arg(long)]
        socket: PathBuf,
        /// Where to listen for the daemon's BGP connection (the neighbor's address and port in its config).
        #[arg(long)]
        bgp_listen: SocketAddr,
        /// Answers per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Our AS (the `remote_as` of the neighbor in the daemon's config).
        #[arg(long, default_value_t = 65001)]
        asn: u32,
        /// The daemon's AS (checked in its OPEN).
        #[arg(long, default_value_t = 65010)]
        daemon_as: u32,
        /// How long to wait for the daemon to connect and for End-of-RIB.
        #[arg(long, default_value_t = 60)]
        connect_timeout: u64,
        /// After the last answer, how long to wait for the outstanding UPDATEs.
        #[arg(long, default_value_t = 5)]
        drain_timeout: u64,
        /// Write every latency (microseconds, one a line, send order) here.
        #[arg(long)]
        samples_out: Option<PathBuf>,
        /// First name index (to run several times against one daemon).
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// DNS TTL of the answers (seconds).
        #[arg(long, default_value_t = 3600)]
        ttl: u32,
    },
    /// Print a TCP port that is free on 127.0.0.1 (for scripts).
    Port,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let r = match args.command {
        Command::Fill { socket, routes, v6_percent, list_out, ttl, flood_suffixes } => {
            fill(socket.as_deref(), routes, v6_percent, list_out.as_deref(), ttl, flood_suffixes)
        }
        Command::Latency {
            socket,
            bgp_listen,
            rate,
            seconds,
            asn,
            daemon_as,
            connect_timeout,
            drain_timeout,
            samples_out,
            first,
            ttl,
        } => latency(&LatencyArgs {
            socket,
            bgp_listen,
            rate,
            seconds,
            asn,
            daemon_as,
            connect_timeout: Duration::from_secs(connect_timeout),
            drain_timeout: Duration::from_secs(drain_timeout),
            samples_out,
            first,
            ttl,
        }),
        Command::Port => TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(Into::into).map(|a| {
            println!("{}", a.port());
        }),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bgp-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------- dnstap

/// Appends one length-prefixed dnstap CLIENT_RESPONSE data frame carrying
/// `qname` answered with `addr`/`ttl` (the crate's one dnstap writer).
fn push_frame(out: &mut Vec<u8>, qname: &str, addr: IpAddr, ttl: u32) {
    let dns = writer::response(qname, &[(addr, ttl)]);
    let msg = writer::message(MessageType::ClientResponse, IpAddr::from([127, 0, 0, 1]), dns);
    writer::push_frame(out, &writer::payload(None, None, msg));
}

// ---------------------------------------------------------------- fill

fn fill_addr(i: u64, v6_percent: u8) -> IpAddr {
    // Spread the IPv6 share evenly: route i is IPv6 when the running count
    // of IPv6 routes should step up at i.
    let p = u64::from(v6_percent);
    let v6_before = i * p / 100;
    let v6_after = (i + 1) * p / 100;
    if v6_after > v6_before {
        IpAddr::V6(Ipv6Addr::from(FILL_V6_BASE + u128::from(v6_before) + 1))
    } else {
        IpAddr::V4(Ipv4Addr::from(FILL_V4_BASE + (i - v6_before) as u32 + 1))
    }
}

fn fill(
    socket: Option<&Path>,
    routes: u64,
    v6_percent: u8,
    list_out: Option<&Path>,
    ttl: u32,
    flood: u64,
) -> anyhow::Result<()> {
    if v6_percent > 100 {
        bail!("--v6-percent must be 0..=100");
    }
    if routes >= (1 << 24) - 2 {
        bail!("--routes must be below 16 M (the IPv4 addresses come from 10.0.0.0/8)");
    }
    if let Some(path) = list_out {
        let text = if flood > 0 {
            (0..flood).map(|j| format!("s{j}.{SUFFIX}\n")).collect()
        } else {
            format!("# bgp-bench: claims r{{i}}.{SUFFIX} and l{{i}}.{SUFFIX}\n{SUFFIX}\n")
        };
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("list written to {}", path.display());
    }
    let Some(socket) = socket else {
        if list_out.is_none() {
            bail!("nothing to do: give --socket and/or --list-out");
        }
        return Ok(());
    };
    let mut d = Writer::connect_bidirectional(socket)?;
    let started = Instant::now();
    let mut buf = Vec::with_capacity(CHUNK + 1024);
    let mut bytes = 0u64;
    let (mut v4, mut v6) = (0u64, 0u64);
    for i in 0..routes {
        let (addr, name) = if flood > 0 {
            (fill_addr(i % flood, v6_percent), format!("r{i}.s{}.{SUFFIX}", i % flood))
        } else {
            (fill_addr(i, v6_percent), format!("r{i}.{SUFFIX}"))
        };
        if addr.is_ipv4() {
            v4 += 1
        } else {
            v6 += 1
        }
        push_frame(&mut buf, &name, addr, ttl);
        if buf.len() >= CHUNK {
            d.stream_mut().write_all(&buf).context("sending frames")?;
            bytes += buf.len() as u64;
            buf.clear();
        }
    }
    d.stream_mut().write_all(&buf).context("sending frames")?;
    bytes += buf.len() as u64;
    d.finish()?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "answers: {routes} (ipv4 {v4}, ipv6 {v6}); routes: {}",
        if flood > 0 { flood.min(routes) } else { routes }
    );
    println!("bytes sent: {bytes}");
    println!("seconds: {secs:.3}");
    println!("answers/s: {:.0}", routes as f64 / secs);
    Ok(())
}

// ---------------------------------------------------------------- latency

struct LatencyArgs {
    socket: PathBuf,
    bgp_listen: SocketAddr,
    rate: u64,
    seconds: u64,
    asn: u32,
    daemon_as: u32,
    connect_timeout: Duration,
    drain_timeout: Duration,
    samples_out: Option<PathBuf>,
    first: u64,
    ttl: u32,
}

/// Reads BGP messages from a stream.
struct BgpReader {
    s: TcpStream,
    buf: Vec<u8>,
    start: usize,
    chunk: Box<[u8]>,
}

impl BgpReader {
    fn read(&mut self) -> anyhow::Result<Message> {
        loop {
            if let Some((m, n)) =
                decode(&self.buf[self.start..], 65535).map_err(|e| anyhow::anyhow!("undecodable message: {e}"))?
            {
                self.start += n;
                if self.start > 1 << 20 || self.start == self.buf.len() {
                    self.buf.drain(..self.start);
                    self.start = 0;
                }
                return Ok(m);
            }
            let n = self.s.read(&mut self.chunk)?;
            self.buf.extend_from_slice(&self.chunk[..n]);
            if n == 0 {
                bail!("the daemon closed the BGP connection");
            }
        }
    }
}

fn send_message(s: &mut TcpStream, m: &Message) -> anyhow::Result<()> {
    let mut b = BytesMut::new();
    m.encode(65535, &mut b)?;
    s.write_all(&b)?;
    Ok(())
}

/// Accepts the daemon's connection and completes the OPEN exchange.
fn establish(a: &LatencyArgs) -> anyhow::Result<BgpReader> {
    let listener = TcpListener::bind(a.bgp_listen).with_context(|| format!("listening on {}", a.bgp_listen))?;
    listener.set_nonblocking(true)?;
    eprintln!("waiting for the daemon on {}", listener.local_addr()?);
    let deadline = Instant::now() + a.connect_timeout;
    let s = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(e).context("the daemon did not connect"),
        }
    };
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(a.connect_timeout))?;
    let mut w = s.try_clone()?;
    let mut r = BgpReader { s, buf: Vec::new(), start: 0, chunk: vec![0; 256 * 1024].into_boxed_slice() };
    match r.read()? {
        Message::Open(o) if o.asn() == a.daemon_as => {}
        Message::Open(o) => bail!("the daemon's OPEN has AS {}, expected {}", o.asn(), a.daemon_as),
        other => bail!("expected OPEN, got {other:?}"),
    }
    let ours = OpenMessage::new(a.asn, 90, Ipv4Addr::new(192, 0, 2, 1))
        .with_capability(Capability::Multiprotocol { afi: Afi::IPV4, safi: Safi::UNICAST })
        .with_capability(Capability::Multiprotocol { afi: Afi::IPV6, safi: Safi::UNICAST })
        .with_capability(Capability::ExtendedMessage);
    send_message(&mut w, &Message::Open(ours))?;
    send_message(&mut w, &Message::Keepalive(KeepaliveMessage))?;
    match r.read()? {
        Message::Keepalive(_) => {}
        other => bail!("expected KEEPALIVE, got {other:?}"),
    }
    Ok(r)
}

fn latency_addr(i: u64) -> Ipv4Addr {
    Ipv4Addr::from(LATENCY_V4_BASE + (i % LATENCY_V4_SIZE) as u32)
}

/// Nanoseconds since `epoch`, never 0 (0 means "not yet").
fn stamp(epoch: Instant) -> u64 {
    (epoch.elapsed().as_nanos() as u64).max(1)
}

fn latency(a: &LatencyArgs) -> anyhow::Result<()> {
    let total = a.rate.checked_mul(a.seconds).context("--rate × --seconds overflows")?;
    if total == 0 || a.rate > 1_000_000 {
        bail!("--rate must be 1..=1000000 and --seconds at least 1");
    }
    if a.first + total > LATENCY_V4_SIZE {
        bail!("--first + rate × seconds must be at most {LATENCY_V4_SIZE} (198.18.0.0/15)");
    }
    let mut reader = establish(a)?;
    let writer = reader.s.try_clone()?;

    // End-of-RIB (after whatever table the daemon already had).
    let eor_deadline = Instant::now() + a.connect_timeout;
    let mut table = 0usize;
    loop {
        if Instant::now() > eor_deadline {
            bail!("no End-of-RIB within {:?}", a.connect_timeout);
        }
        match reader.read()? {
            Message::Update(u) if u.end_of_rib_family() == Some((Afi::IPV4, Safi::UNICAST)) => break,
            Message::Update(u) => table += prefixes_announced(&u).count(),
            Message::Keepalive(_) => {}
            Message::Notification(n) => bail!("NOTIFICATION from the daemon: {n}"),
            other => bail!("unexpected {other:?}"),
        }
    }
    eprintln!("Established; End-of-RIB after {table} routes");

    let epoch = Instant::now();
    // For lining samples up with `perf record -k CLOCK_MONOTONIC` traces.
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    eprintln!("epoch CLOCK_MONOTONIC: {}.{:09}", ts.tv_sec, ts.tv_nsec);
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let received: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let got = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let messages = Arc::new(AtomicU64::new(0));

    // Keepalives: hold time is 90 s, send every 10 s.
    let keepalive = {
        let stop = stop.clone();
        let mut w = writer.try_clone()?;
        std::thread::spawn(move || {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() >= Duration::from_secs(10) {
                    if send_message(&mut w, &Message::Keepalive(KeepaliveMessage)).is_err() {
                        return;
                    }
                    last = Instant::now();
                }
            }
        })
    };

    // Reader: stamps each of our addresses when its UPDATE arrives.
    reader.s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let reader_thread = {
        let (received, got, stop, messages) = (received.clone(), got.clone(), stop.clone(), messages.clone());
        let (first, total) = (a.first, total);
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let mut others = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let m = match reader.read() {
                    Ok(m) => m,
                    Err(e)
                        if e.downcast_ref::<std::io::Error>().is_some_and(|e| {
                            matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
                        }) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let now = stamp(epoch);
                match m {
                    Message::Update(u) => {
                        messages.fetch_add(1, Ordering::Relaxed);
                        for p in prefixes_announced(&u) {
                            let IpAddr::V4(v4) = p else {
                                others += 1;
                                continue;
                            };
                            let off = u64::from(v4.to_bits().wrapping_sub(LATENCY_V4_BASE));
                            if off >= first && off < first + total {
                                let slot = &received[(off - first) as usize];
                                if slot.load(Ordering::Relaxed) == 0 {
                                    slot.store(now, Ordering::Relaxed);
                                    got.fetch_add(1, Ordering::Relaxed);
                                }
                            } else {
                                others += 1;
                            }
                        }
                    }
                    Message::Keepalive(_) => {}
                    Message::Notification(n) => bail!("NOTIFICATION from the daemon: {n}"),
                    other => bail!("unexpected {other:?}"),
                }
            }
            Ok(others)
        })
    };

    // Sender: answer k is due at k / rate; whatever is due goes out in one
    // write, stamped just before it.
    let mut dnstap = Writer::connect_bidirectional(&a.socket)?;
    let started = Instant::now();
    let mut next = 0u64;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut writes = 0u64;
    while next < total {
        let due = ((started.elapsed().as_nanos() * u128::from(a.rate)) / 1_000_000_000) as u64 + 1;
        let due = due.min(total);
        if due > next {
            buf.clear();
            for k in next..due {
                let i = a.first + k;
                push_frame(&mut buf, &format!("l{i}.{SUFFIX}"), IpAddr::V4(latency_addr(i)), a.ttl);
            }
            let t = stamp(epoch);
            for k in next..due {
                sent[k as usize].store(t, Ordering::Relaxed);
            }
            dnstap.stream_mut().write_all(&buf).context("sending frames")?;
            writes += 1;
            next = due;
        }
        let next_due = started + Duration::from_nanos(next * 1_000_000_000 / a.rate);
        if let Some(wait) = next_due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let send_secs = started.elapsed().as_secs_f64();
    let drain_deadline = Instant::now() + a.drain_timeout;
    while got.load(Ordering::Relaxed) < total && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let others = reader_thread.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let _ = keepalive.join();
    let _ = dnstap.finish();
    let _ = writer.shutdown(std::net::Shutdown::Both);

    let mut lat: Vec<u64> = Vec::with_capacity(total as usize);
    let mut in_order: Vec<Option<u64>> = Vec::with_capacity(total as usize);
    for k in 0..total as usize {
        let (s, r) = (sent[k].load(Ordering::Relaxed), received[k].load(Ordering::Relaxed));
        if r != 0 && s != 0 {
            let l = r.saturating_sub(s);
            lat.push(l);
            in_order.push(Some(l));
        } else {
            in_order.push(None);
        }
    }
    if let Some(path) = &a.samples_out {
        let mut text = String::with_capacity(in_order.len() * 8);
        for l in &in_order {
            match l {
                Some(l) => text.push_str(&format!("{}\n", l / 1000)),
                None => text.push_str("missing\n"),
            }
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let idx = ((p / 100.0) * lat.len() as f64).ceil() as usize;
        lat[idx.clamp(1, lat.len()) - 1] as f64 / 1e6
    };
    let mean = if lat.is_empty() { f64::NAN } else { lat.iter().sum::<u64>() as f64 / lat.len() as f64 / 1e6 };
    println!("answers sent: {total} in {send_secs:.3} s ({:.0}/s, {writes} writes)", total as f64 / send_secs);
    println!("routes received: {} (missing {})", lat.len(), total - lat.len() as u64);
    println!("UPDATE messages: {}", messages.load(Ordering::Relaxed));
    if others > 0 {
        println!("other prefixes seen: {others}");
    }
    println!(
        "latency ms: p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} mean {:.2}",
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(100.0),
        mean
    );
    if lat.len() as u64 != total {
        bail!("{} of {total} routes did not arrive within {:?}", total - lat.len() as u64, a.drain_timeout);
    }
    Ok(())
}

/// Every prefix an UPDATE announces (NLRI and MP_REACH_NLRI), as addresses.
fn prefixes_announced(u: &UpdateMessage) -> impl Iterator<Item = IpAddr> + '_ {
    let v4 = u.nlri.iter().map(|p| IpAddr::V4(p.addr()));
    let mp = u.path_attributes.iter().flat_map(|a| -> Box<dyn Iterator<Item = IpAddr> + '_> {
        match a {
            PathAttribute::MpReachNlri(m) => match &m.nlri {
                MpNlri::Ipv4(p) => Box::new(p.iter().map(|p| IpAddr::V4(p.addr()))),
                MpNlri::Ipv6(p) => Box::new(p.iter().map(|p| IpAddr::V6(p.addr()))),
                MpNlri::Other(_) => Box::new(std::iter::empty()),
            },
            _ => Box::new(std::iter::empty()),
        }
    });
    v4.chain(mp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_addresses_are_unique_and_split_by_share() {
        let mut seen = std::collections::HashSet::new();
        let mut v6 = 0;
        for i in 0..1000 {
            let a = fill_addr(i, 30);
            v6 += usize::from(a.is_ipv6());
            assert!(seen.insert(a), "{a} twice");
        }
        assert_eq!(v6, 300);
        assert!(fill_addr(0, 0).is_ipv4());
        assert!(fill_addr(5, 100).is_ipv6());
    }

    #[test]
    fn responses_parse() {
        let m = writer::response("r1.bench.test", &[("10.0.0.1".parse().unwrap(), 60)]);
        let parsed = hickory_proto::op::Message::from_vec(&m).unwrap();
        assert_eq!(parsed.answers.len(), 1);
    }
}

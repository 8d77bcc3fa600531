//! Peer sync benchmark (BENCHMARKS.md, "Peer sync"): two dnsbgpd processes
//! on loopback.
//!
//! 1. A is filled with N routes (default 1,000,000) by dnstap frames written
//!    to its socket (100 A records per response);
//! 2. B starts with an empty store and takes its initial sync from A:
//!    time, bytes on the wire (counted by a TCP relay between them, HTTP
//!    headers included) and peak RSS of both (VmHWM, A's reset first);
//! 3. steady state: K new routes at A, bytes on the wire per change;
//! 4. idle: both run with nothing to do; every request and byte counted.
//!
//! ```sh
//! cargo build --release --bin dnsbgpd --example sync_bench
//! target/release/examples/sync_bench [ROUTES] [--bin target/release/dnsbgpd]
//! ```

#[allow(dead_code)]
#[path = "../tests/common/frames.rs"]
mod frames;

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use frames::DnstapWriter;

const TOKEN: &str = "bench-token-0123456789abcdef";
const PER_RESPONSE: u32 = 100;
const STEADY_CHANGES: u32 = 1_000;
const IDLE: Duration = Duration::from_secs(30);
const PULL_INTERVAL: &str = "5s";

fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A TCP relay that counts the bytes going each way.
struct Relay {
    addr: SocketAddr,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
}

impl Relay {
    fn start(target: SocketAddr) -> Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (up, down, connections) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (u, d, c) = (up.clone(), down.clone(), connections.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(target) else { continue };
                c.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                for (mut from, mut to, counter) in [
                    (client.try_clone().ok(), server.try_clone().ok(), u.clone()),
                    (server.try_clone().ok(), client.try_clone().ok(), d.clone()),
                ]
                .into_iter()
                .filter_map(|(a, b, n)| Some((a?, b?, n)))
                {
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    counter.fetch_add(n as u64, Ordering::Relaxed);
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Ok(Relay { addr, up, down, connections })
    }

    fn bytes(&self) -> (u64, u64) {
        (self.up.load(Ordering::Relaxed), self.down.load(Ordering::Relaxed))
    }
}

struct Instance {
    name: &'static str,
    dir: PathBuf,
    api: SocketAddr,
    child: Option<Child>,
}

impl Instance {
    fn configure(base: &Path, name: &'static str, api: SocketAddr, peer: (&str, SocketAddr)) -> Result<Instance> {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("vpn.txt"), "bench.test\n")?;
        let conf = format!(
            "[dnstap]\nsocket = \"dnstap.sock\"\nmax_frame_size = \"1MiB\"\n\
             [routes]\nstore = \"store\"\nmin_ttl = \"1h\"\nmax_ttl = \"24h\"\n\
             [[list]]\nname = \"vpn\"\nfile = \"vpn.txt\"\n\
             [api]\nlisten = \"{api}\"\n\
             # Peers come through the counting relays: their Host is a relay's address.\n\
             allowed_hosts = [\"127.0.0.1\"]\n\
             [sync]\ntoken = \"{TOKEN}\"\ninterval = \"{PULL_INTERVAL}\"\n\
             [[sync.peer]]\nname = \"{}\"\nurl = \"http://{}\"\ntoken = \"{TOKEN}\"\n",
            peer.0, peer.1
        );
        std::fs::write(dir.join("dnsbgpd.toml"), conf)?;
        Ok(Instance { name, dir, api, child: None })
    }

    fn start(&mut self, bin: &Path) -> Result<()> {
        let log = std::fs::File::create(self.dir.join("dnsbgpd.log"))?;
        let child = Command::new(bin)
            .args(["--log-level", "info", "run", "--config"])
            .arg(self.dir.join("dnsbgpd.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        self.child = Some(child);
        wait(Duration::from_secs(60), &format!("{} ready", self.name), || {
            Ok(http(self.api, "/api/v1/status").map(|(c, _)| c == 200).unwrap_or(false))
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn routes(&self) -> Result<u64> {
        let (_, body) = http(self.api, "/api/v1/status")?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        v["routes"].as_u64().context("routes")
    }

    fn metric(&self, series: &str) -> Result<f64> {
        let (_, text) = http(self.api, "/metrics")?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0))
    }

    fn peak_rss_mib(&self) -> f64 {
        proc_status_kib(self.pid(), "VmHWM:") as f64 / 1024.0
    }

    fn rss_mib(&self) -> f64 {
        proc_status_kib(self.pid(), "VmRSS:") as f64 / 1024.0
    }

    fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().trim_end_matches(" kB").to_string())))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One GET through `dnsbgpd ctl`'s client (the project's one HTTP client).
fn http(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use dnsbgpd::ctl::{Client, ClientOptions, Endpoint};
    let options = ClientOptions { timeout: Duration::from_secs(30), max_body: 1 << 30, ..ClientOptions::default() };
    let client = Client::new(Endpoint::from_listen(addr, false), options)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let answer = runtime.block_on(client.send(axum::http::Method::GET, path, None))?;
    Ok((answer.status.as_u16(), String::from_utf8_lossy(&answer.body).into_owned()))
}

fn wait(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if f().unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn addr(i: u32) -> IpAddr {
    // 10.0.0.0/8 from 10.0.1.0 on: 16 M unicast addresses.
    let i = i + 256;
    IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8])
}

fn fill(socket: &Path, from: u32, count: u32) -> Result<()> {
    let mut w = DnstapWriter::connect(socket)?;
    let mut i = from;
    while i < from + count {
        let n = PER_RESPONSE.min(from + count - i);
        let answers: Vec<(IpAddr, u32)> = (i..i + n).map(|j| (addr(j), 3600)).collect();
        w.queue(&format!("n{}.bench.test", i / PER_RESPONSE), &answers);
        i += n;
        if (i - from).is_multiple_of(PER_RESPONSE * 100) {
            w.flush()?;
        }
    }
    w.flush()
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut routes: u32 = 1_000_000;
    let mut bin = PathBuf::from("target/release/dnsbgpd");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bin" => bin = PathBuf::from(args.next().context("--bin PATH")?),
            n => routes = n.replace('_', "").parse().context("ROUTES must be a number")?,
        }
    }
    let tmp = tempfile::tempdir()?;
    // KEEP=1 keeps the instances' directories (logs, stores) for a look.
    let (_cleanup, base) = if std::env::var_os("KEEP").is_some() {
        let path = tmp.keep();
        println!("keeping {}", path.display());
        (None, path)
    } else {
        let path = tmp.path().to_path_buf();
        (Some(tmp), path)
    };
    let (a_api, b_api) = (free_addr()?, free_addr()?);
    // B reaches A, and A reaches B, through counting relays.
    let to_a = Relay::start(a_api)?;
    let to_b = Relay::start(b_api)?;
    let mut a = Instance::configure(&base, "a", a_api, ("b", to_b.addr))?;
    let mut b = Instance::configure(&base, "b", b_api, ("a", to_a.addr))?;

    println!("# Peer sync benchmark: {routes} routes, dnsbgpd {}", bin.display());
    a.start(&bin)?;
    let started = Instant::now();
    fill(&a.dir.join("dnstap.sock"), 0, routes)?;
    wait(Duration::from_secs(600), "A filled", || Ok(a.routes()? == u64::from(routes)))?;
    let table = started.elapsed();
    let rss_table = a.rss_mib();
    wait(Duration::from_secs(600), "A's change log", || Ok(a.metric("dnsbgpd_sync_log_head")? >= f64::from(routes)))?;
    println!(
        "fill A: {routes} routes in the table after {:.1} s (RSS {rss_table:.0} MiB), in the change log after {:.1} s; \
         A RSS {:.0} MiB (peak {:.0} MiB)",
        table.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        a.rss_mib(),
        a.peak_rss_mib()
    );

    // Initial sync into an empty B.
    a.reset_peak();
    let (up0, down0) = to_a.bytes();
    let (bup0, bdown0) = to_b.bytes();
    let started = Instant::now();
    b.start(&bin)?;
    let ready = started.elapsed();
    wait(Duration::from_secs(900), "B synced", || Ok(b.routes()? == u64::from(routes)))?;
    let synced = started.elapsed();
    let (up1, down1) = to_a.bytes();
    let (bup1, bdown1) = to_b.bytes();
    let wire = (up1 - up0) + (down1 - down0) + (bup1 - bup0) + (bdown1 - bdown0);
    let body = a.metric("dnsbgpd_sync_server_bytes_total{endpoint=\"changes\"}")?;
    println!(
        "initial sync: {routes} routes at B {:.1} s after B started ({:.1} s after it was ready); \
         {:.1} MiB on the wire ({:.1} MiB of /changes bodies, {:.0} bytes per route); \
         pages served {}; snapshots {}",
        synced.as_secs_f64(),
        (synced - ready).as_secs_f64(),
        mib(wire),
        body / f64::from(1 << 20),
        wire as f64 / f64::from(routes),
        a.metric("dnsbgpd_sync_requests_total{endpoint=\"changes\"}")?,
        b.metric("dnsbgpd_sync_snapshots_total{peer=\"a\"}")?,
    );
    println!("peak RSS during the sync: A {:.0} MiB, B {:.0} MiB", a.peak_rss_mib(), b.peak_rss_mib());

    // Steady state: new routes at A, pushed to B.
    std::thread::sleep(Duration::from_secs(2));
    let before = to_a.bytes().0 + to_a.bytes().1 + to_b.bytes().0 + to_b.bytes().1;
    let pushes0 = b.metric("dnsbgpd_sync_requests_total{endpoint=\"push\"}")?;
    let started = Instant::now();
    fill(&a.dir.join("dnstap.sock"), routes, STEADY_CHANGES)?;
    wait(Duration::from_secs(60), "B has the new routes", || Ok(b.routes()? == u64::from(routes + STEADY_CHANGES)))?;
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let after = to_a.bytes().0 + to_a.bytes().1 + to_b.bytes().0 + to_b.bytes().1;
    println!(
        "steady state: {STEADY_CHANGES} new routes at B after {:.2} s in {} pushes; {:.0} bytes on the wire per change",
        took.as_secs_f64(),
        b.metric("dnsbgpd_sync_requests_total{endpoint=\"push\"}")? - pushes0,
        (after - before) as f64 / f64::from(STEADY_CHANGES)
    );

    // Idle.
    let snap = |i: &Instance| -> Result<(f64, f64)> {
        Ok((
            i.metric("dnsbgpd_sync_requests_total{endpoint=\"changes\"}")?,
            i.metric("dnsbgpd_sync_requests_total{endpoint=\"push\"}")?,
        ))
    };
    let (a0, b0) = (snap(&a)?, snap(&b)?);
    let bytes0 = to_a.bytes().0 + to_a.bytes().1 + to_b.bytes().0 + to_b.bytes().1;
    std::thread::sleep(IDLE);
    let (a1, b1) = (snap(&a)?, snap(&b)?);
    let bytes1 = to_a.bytes().0 + to_a.bytes().1 + to_b.bytes().0 + to_b.bytes().1;
    let pulls = (a1.0 - a0.0) + (b1.0 - b0.0);
    let pushes = (a1.1 - a0.1) + (b1.1 - b0.1);
    println!(
        "idle {} s (pull interval {PULL_INTERVAL}): {pulls} pulls, {pushes} pushes, {} bytes on the wire \
         ({:.0} bytes per pull, request and answer); relay connections {}",
        IDLE.as_secs(),
        bytes1 - bytes0,
        (bytes1 - bytes0) as f64 / pulls.max(1.0),
        to_a.connections.load(Ordering::Relaxed) + to_b.connections.load(Ordering::Relaxed)
    );
    Ok(())
}

//! Test peers for integration tests: real DNS servers on loopback.
//!
//! * [`Nsd`]     — authoritative server (NSD 4.x) serving the fixed test zones below.
//! * [`Unbound`] — recursive resolver (Unbound 1.17) with stub-zones to [`Nsd`] and dnstap
//!   (client query + client response) to a unix socket or TCP.
//! * [`Named`]   — BIND 9.18 resolver with forward zones to [`Nsd`] and dnstap to a unix socket.
//! * [`FstrmCapture`] — `fstrm_capture` listener, a reference dnstap receiver.
//! * [`dig`], [`free_port`], [`require`], [`Process`].
//!
//! Dependencies: std, `anyhow`, `tempfile` (only the caller needs `tempfile` for the dir).
//! Everything listens on 127.0.0.1 only, on ports found with [`free_port`].
//!
//! Typical use (declare the temp dir FIRST so it is dropped LAST, after the peers):
//!
//! ```ignore
//! let tmp = tempfile::tempdir()?;
//! if !peers::require(peers::UNBOUND_BINS) { return Ok(()); }
//! let nsd = peers::Nsd::start(tmp.path())?;
//! let cap = peers::FstrmCapture::unix(tmp.path())?;           // listener before the resolver
//! let ub = peers::Unbound::start(tmp.path(), nsd.port(), cap.target())?;
//! assert_eq!(peers::dig(ub.port(), "www.listed.test", "A")?, [peers::WWW_LISTED_V4]);
//! ```
//!
//! # Zone data served by [`Nsd`]
//!
//! Default TTL 300 (`DEFAULT_TTL`) unless noted.
//!
//! | name                     | type  | data                | const                |
//! |--------------------------|-------|---------------------|----------------------|
//! | `www.listed.test`        | A     | 198.51.100.10       | `WWW_LISTED_V4`      |
//! | `www.listed.test`        | AAAA  | 2001:db8::10        | `WWW_LISTED_V6`      |
//! | `edge.listed.test`       | A     | 198.51.100.11       | `EDGE_LISTED_V4`     |
//! | `edge.listed.test`       | AAAA  | 2001:db8::11        | `EDGE_LISTED_V6`     |
//! | `multi.listed.test`      | A     | 198.51.100.12, .13  | `MULTI_LISTED_V4`    |
//! | `deep.sub.listed.test`   | A     | 198.51.100.14       | `DEEP_LISTED_V4`     |
//! | `*.wild.listed.test`     | A     | 198.51.100.20       | `WILD_LISTED_V4`     |
//! | `chain.listed.test`      | CNAME | www.other.test.     | (→ `WWW_OTHER_V4`)   |
//! | `short.listed.test`      | A     | 198.51.100.70 TTL 2 | `SHORT_LISTED_V4`    |
//! | `www.other.test`         | A     | 198.51.100.30       | `WWW_OTHER_V4`       |
//! | `alias.other.test`       | CNAME | www.listed.test.    | (→ `WWW_LISTED_V4`)  |
//! | `cdn.other.test`         | CNAME | edge.other.test.    | (→ `EDGE_OTHER_V4`)  |
//! | `edge.other.test`        | A     | 198.51.100.40       | `EDGE_OTHER_V4`      |
//! | `plain.other.test`       | A     | 198.51.100.50       | `PLAIN_OTHER_V4`     |
//! | `www.facebook.test`      | A     | 198.51.100.60       | `WWW_FACEBOOK_V4`    |
//! | `www.face.test`          | A     | 198.51.100.61       | `WWW_FACE_V4`        |
//!
//! Each zone also has SOA/NS with `ns.<zone>. A 127.0.0.1`.
//! Readiness probes of the resolvers query [`READINESS_NAME`] (`plain.other.test`, unlisted);
//! those queries may show up in the dnstap stream if the listener is already connected.
//!
//! # Timing notes (measured on Debian 12, 2 cores, tests running in parallel)
//! * nsd ≈ 0.14 s, unbound ≈ 0.06–0.07 s, named ≈ 0.10 s from spawn to first good answer.
//! * `fstrm_capture` stdio-buffers its output file: it only reaches the disk on SIGHUP
//!   ([`FstrmCapture::flush`]) or on exit. [`FstrmCapture::wait_until`] / [`FstrmCapture::bytes`]
//!   send the SIGHUP for you.
//! * Unbound hands dnstap frames to its io thread on a 1 s timer (or after 32 messages): frames
//!   are on the socket ≈0.8–1 s after the query. BIND (libfstrm) flushes after
//!   `fstrm-set-flush-timeout` (1 s here, the minimum): ≈1.7 s. Allow ≥ 3 s when waiting.
//! * The listener must exist before the resolver logs anything you care about. Unbound does not
//!   need the socket at startup (logs "dnstap io: failed to connect", retries with backoff ≤ 1 s)
//!   and keeps queued frames while disconnected, delivering them after reconnecting (≈0.4 s
//!   after the listener restarts). BIND retries every `fstrm-set-reopen-interval` (1 s, the
//!   minimum): new frames show up ≈1.7–2.7 s after a listener restart, and frames produced
//!   while the listener was down may be lost.
//! * Readiness probes add one query+response pair (for [`READINESS_NAME`]) to the stream.

#![allow(dead_code)]

use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Zone data constants
// ---------------------------------------------------------------------------------------------

pub const DEFAULT_TTL: u32 = 300;
pub const SHORT_TTL: u32 = 2;

pub const ZONE_LISTED: &str = "listed.test";
pub const ZONE_OTHER: &str = "other.test";
pub const ZONE_FACEBOOK: &str = "facebook.test";
pub const ZONE_FACE: &str = "face.test";
/// All zones served by [`Nsd`] (and stubbed/forwarded by the resolvers).
pub const TEST_ZONES: &[&str] = &[ZONE_LISTED, ZONE_OTHER, ZONE_FACEBOOK, ZONE_FACE];

pub const WWW_LISTED: &str = "www.listed.test";
pub const WWW_LISTED_V4: &str = "198.51.100.10";
pub const WWW_LISTED_V6: &str = "2001:db8::10";
pub const EDGE_LISTED: &str = "edge.listed.test";
pub const EDGE_LISTED_V4: &str = "198.51.100.11";
pub const EDGE_LISTED_V6: &str = "2001:db8::11";
pub const MULTI_LISTED: &str = "multi.listed.test";
pub const MULTI_LISTED_V4: &[&str] = &["198.51.100.12", "198.51.100.13"];
pub const DEEP_LISTED: &str = "deep.sub.listed.test";
pub const DEEP_LISTED_V4: &str = "198.51.100.14";
/// Wildcard owner; any `<label>.wild.listed.test` resolves to [`WILD_LISTED_V4`].
pub const WILD_LISTED: &str = "*.wild.listed.test";
pub const WILD_LISTED_V4: &str = "198.51.100.20";
/// `chain.listed.test CNAME www.other.test.` (CNAME out of the listed zone).
pub const CHAIN_LISTED: &str = "chain.listed.test";
pub const CHAIN_LISTED_TARGET: &str = "www.other.test.";
/// `short.listed.test A 198.51.100.70` with TTL [`SHORT_TTL`].
pub const SHORT_LISTED: &str = "short.listed.test";
pub const SHORT_LISTED_V4: &str = "198.51.100.70";

pub const WWW_OTHER: &str = "www.other.test";
pub const WWW_OTHER_V4: &str = "198.51.100.30";
/// `alias.other.test CNAME www.listed.test.` (CNAME from unlisted into listed).
pub const ALIAS_OTHER: &str = "alias.other.test";
pub const ALIAS_OTHER_TARGET: &str = "www.listed.test.";
/// `cdn.other.test CNAME edge.other.test.` (CNAME within the unlisted zone).
pub const CDN_OTHER: &str = "cdn.other.test";
pub const CDN_OTHER_TARGET: &str = "edge.other.test.";
pub const EDGE_OTHER: &str = "edge.other.test";
pub const EDGE_OTHER_V4: &str = "198.51.100.40";
pub const PLAIN_OTHER: &str = "plain.other.test";
pub const PLAIN_OTHER_V4: &str = "198.51.100.50";

pub const WWW_FACEBOOK: &str = "www.facebook.test";
pub const WWW_FACEBOOK_V4: &str = "198.51.100.60";
pub const WWW_FACE: &str = "www.face.test";
pub const WWW_FACE_V4: &str = "198.51.100.61";

/// Name the resolvers' readiness probe queries (unlisted).
pub const READINESS_NAME: &str = PLAIN_OTHER;

/// Binaries each peer needs; pass to [`require`].
pub const NSD_BINS: &[&str] = &["nsd", "nsd-checkconf", "dig"];
pub const UNBOUND_BINS: &[&str] = &["unbound", "unbound-checkconf", "nsd", "nsd-checkconf", "dig"];
pub const NAMED_BINS: &[&str] = &["named", "named-checkconf", "nsd", "nsd-checkconf", "dig"];
pub const FSTRM_BINS: &[&str] = &["fstrm_capture"];

const STARTUP_DEADLINE: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 3;

fn zone_files() -> Vec<(&'static str, String)> {
    let soa = |z: &str| {
        format!(
            "$ORIGIN {z}.\n$TTL {DEFAULT_TTL}\n\
             @ IN SOA ns.{z}. hostmaster.{z}. 1 3600 600 86400 60\n\
             @ IN NS ns.{z}.\n\
             ns IN A 127.0.0.1\n"
        )
    };
    let listed = format!(
        "{}www IN A {WWW_LISTED_V4}\n\
         www IN AAAA {WWW_LISTED_V6}\n\
         edge IN A {EDGE_LISTED_V4}\n\
         edge IN AAAA {EDGE_LISTED_V6}\n\
         multi IN A {}\n\
         multi IN A {}\n\
         deep.sub IN A {DEEP_LISTED_V4}\n\
         *.wild IN A {WILD_LISTED_V4}\n\
         chain IN CNAME {CHAIN_LISTED_TARGET}\n\
         short {SHORT_TTL} IN A {SHORT_LISTED_V4}\n",
        soa(ZONE_LISTED),
        MULTI_LISTED_V4[0],
        MULTI_LISTED_V4[1],
    );
    let other = format!(
        "{}www IN A {WWW_OTHER_V4}\n\
         alias IN CNAME {ALIAS_OTHER_TARGET}\n\
         cdn IN CNAME {CDN_OTHER_TARGET}\n\
         edge IN A {EDGE_OTHER_V4}\n\
         plain IN A {PLAIN_OTHER_V4}\n",
        soa(ZONE_OTHER)
    );
    let facebook = format!("{}www IN A {WWW_FACEBOOK_V4}\n", soa(ZONE_FACEBOOK));
    let face = format!("{}www IN A {WWW_FACE_V4}\n", soa(ZONE_FACE));
    vec![(ZONE_LISTED, listed), (ZONE_OTHER, other), (ZONE_FACEBOOK, facebook), (ZONE_FACE, face)]
}

// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

const EXTRA_BIN_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"];

/// Full path of `bin` from PATH or the usual sbin/bin dirs.
pub fn find_bin(bin: &str) -> Option<PathBuf> {
    if bin.contains('/') {
        let p = PathBuf::from(bin);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_BIN_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(bin))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

fn bin(name: &str) -> Result<PathBuf> {
    find_bin(name).ok_or_else(|| anyhow!("binary `{name}` not found (Debian package `{}`)", debian_package(name)))
}

// The skip rule and the package names live in `prereq`; these paths stay for the tests.
#[allow(unused_imports)]
pub use super::prereq::{debian_package, require, require_ci};

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port on 127.0.0.1 that is currently free for both TCP and UDP. Never returns the same port
/// twice within one test process (so parallel tests don't collide with each other).
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let Ok(tcp) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = tcp.local_addr() else { continue };
        let port = addr.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut g = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if g.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("free_port: could not find a free TCP+UDP port on 127.0.0.1");
}

// ---------------------------------------------------------------------------------------------
// Signals (std links libc already; no libc crate needed)
// ---------------------------------------------------------------------------------------------

pub const SIGHUP: i32 = 1;
pub const SIGKILL: i32 = 9;
pub const SIGUSR1: i32 = 10;
pub const SIGTERM: i32 = 15;

unsafe extern "C" {
    #[link_name = "kill"]
    fn c_kill(pid: i32, sig: i32) -> i32;
}

/// Send `sig` to `pid` (negative pid = process group). Only use on processes you spawned.
pub fn send_signal(pid: i32, sig: i32) -> std::io::Result<()> {
    // SAFETY: plain syscall wrapper, no memory involved.
    if unsafe { c_kill(pid, sig) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

// ---------------------------------------------------------------------------------------------
// Process guard
// ---------------------------------------------------------------------------------------------

/// A spawned child (in its own process group) with stdout+stderr appended to a log file.
/// Dropping it stops it (SIGTERM, SIGKILL to the group after 3 s).
pub struct Process {
    name: String,
    child: Option<Child>,
    log_path: PathBuf,
    pid: u32,
}

impl Process {
    /// Spawn `cmd` with stdin null and stdout/stderr appended to `log_path`.
    pub fn spawn(name: &str, mut cmd: Command, log_path: &Path) -> Result<Process> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("open log {}", log_path.display()))?;
        let log2 = log.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2).process_group(0);
        let child = cmd.spawn().with_context(|| format!("spawn {name}: {cmd:?}"))?;
        let pid = child.id();
        Ok(Process { name: name.to_string(), child: Some(child), log_path: log_path.to_path_buf(), pid })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Contents of the log file (stdout+stderr), lossy UTF-8.
    pub fn log(&self) -> String {
        fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Last `n` lines of the log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Send a signal to the main process (e.g. [`SIGHUP`]).
    pub fn signal(&self, sig: i32) -> Result<()> {
        if self.child.is_none() {
            bail!("{} already stopped", self.name);
        }
        send_signal(self.pid as i32, sig).with_context(|| format!("kill -{sig} {}", self.pid))
    }

    /// SIGTERM, wait up to 3 s, then SIGKILL the whole process group; reaps the child.
    /// Idempotent.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = send_signal(self.pid as i32, SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                sleep(Duration::from_millis(20));
            }
            // Not reaped yet, so the pgid (== pid) cannot have been reused.
            let _ = send_signal(-(self.pid as i32), SIGKILL);
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Wait (up to `timeout`) for the child to exit on its own; returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.child.as_mut()?.try_wait().ok().flatten();
            if st.is_some() || Instant::now() >= deadline {
                return st;
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Process({} pid {} log {})", self.name, self.pid, self.log_path.display())
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Create a fresh sub-directory `base/prefix`, `base/prefix.1`, ...
fn unique_subdir(base: &Path, prefix: &str) -> Result<PathBuf> {
    for i in 0..1000 {
        let p = if i == 0 { base.join(prefix) } else { base.join(format!("{prefix}.{i}")) };
        match fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("mkdir {}", p.display())),
        }
    }
    bail!("no free subdir {prefix} in {}", base.display())
}

fn abs(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() { Ok(p.to_path_buf()) } else { Ok(std::env::current_dir()?.join(p)) }
}

fn write_file(p: &Path, content: &str) -> Result<()> {
    let mut f = File::create(p).with_context(|| format!("create {}", p.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

fn check_unix_path(p: &Path) -> Result<()> {
    // sun_path is 108 bytes including the NUL.
    if p.as_os_str().len() > 100 {
        bail!("unix socket path too long ({} bytes): {}", p.as_os_str().len(), p.display());
    }
    Ok(())
}

fn run_check(what: &str, mut cmd: Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} rejected the config ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Run `dig @127.0.0.1 -p PORT NAME QTYPE +short +time=2 +tries=2`, return the answer lines
/// (e.g. `["www.listed.test.", "198.51.100.10"]` for a CNAME chain). Empty vec for
/// NXDOMAIN/NODATA. Errors if dig fails or prints `;;` error lines (timeouts, refused).
pub fn dig(server_port: u16, name: &str, qtype: &str) -> Result<Vec<String>> {
    dig_opts(server_port, name, qtype, &["+time=2", "+tries=2"])
}

/// Like [`dig`] with custom dig options (replacing `+time=2 +tries=2`; `+short` is always added).
pub fn dig_opts(server_port: u16, name: &str, qtype: &str, opts: &[&str]) -> Result<Vec<String>> {
    let out = Command::new(bin("dig")?)
        .arg("@127.0.0.1")
        .arg("-p")
        .arg(server_port.to_string())
        .arg(name)
        .arg(qtype)
        .arg("+short")
        .args(opts)
        .stdin(Stdio::null())
        .output()
        .context("run dig")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (errs, lines): (Vec<&str>, Vec<&str>) =
        stdout.lines().map(str::trim).filter(|l| !l.is_empty()).partition(|l| l.starts_with(';'));
    if !out.status.success() || !errs.is_empty() {
        bail!(
            "dig @127.0.0.1 -p {server_port} {name} {qtype} failed ({}): {}{}",
            out.status,
            errs.join(" | "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(lines.into_iter().map(String::from).collect())
}

/// Poll `dig` (+time=1 +tries=1) until the answer contains `expect`, while `proc` is alive.
fn wait_answer(proc: &mut Process, port: u16, name: &str, expect: &str) -> Result<Duration> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < STARTUP_DEADLINE {
        if !proc.is_running() {
            bail!("{} exited during startup; log:\n{}", proc.name(), proc.log_tail(30));
        }
        match dig_opts(port, name, "A", &["+time=1", "+tries=1"]) {
            Ok(lines) if lines.iter().any(|l| l == expect) => return Ok(start.elapsed()),
            Ok(lines) => last = format!("{lines:?}"),
            Err(e) => last = e.to_string(),
        }
        sleep(Duration::from_millis(30));
    }
    bail!(
        "{} on port {port} did not answer {name} with {expect} within {:?} (last: {last}); log:\n{}",
        proc.name(),
        STARTUP_DEADLINE,
        proc.log_tail(30)
    )
}

/// Whether a failed start looks like a lost port race (worth retrying with another port).
fn port_race(log: &str) -> bool {
    let l = log.to_ascii_lowercase();
    l.contains("address already in use") || l.contains("could not bind") || l.contains("can't bind")
}

// ---------------------------------------------------------------------------------------------
// NSD
// ---------------------------------------------------------------------------------------------

/// Authoritative NSD on 127.0.0.1:`port()` serving [`TEST_ZONES`] (see the module doc table).
pub struct Nsd {
    proc: Process,
    port: u16,
    dir: PathBuf,
    startup: Duration,
}

impl Nsd {
    pub fn start(dir: &Path) -> Result<Nsd> {
        let dir = unique_subdir(&abs(dir)?, "nsd")?;
        for (zone, text) in zone_files() {
            write_file(&dir.join(format!("{zone}.zone")), &text)?;
        }
        let mut last_err = None;
        for attempt in 0..START_ATTEMPTS {
            let port = free_port();
            let conf = dir.join("nsd.conf");
            write_file(&conf, &nsd_conf(&dir, port))?;
            let mut check = Command::new(bin("nsd-checkconf")?);
            check.arg(&conf);
            run_check("nsd-checkconf", check)?;
            let t0 = Instant::now();
            let mut cmd = Command::new(bin("nsd")?);
            cmd.arg("-d").arg("-c").arg(&conf);
            let mut proc = Process::spawn("nsd", cmd, &dir.join(format!("nsd.{attempt}.log")))?;
            match wait_answer(&mut proc, port, WWW_LISTED, WWW_LISTED_V4) {
                Ok(_) => {
                    return Ok(Nsd { proc, port, dir, startup: t0.elapsed() });
                }
                Err(e) => {
                    let retry = port_race(&proc.log());
                    drop(proc);
                    if !retry {
                        return Err(e);
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap())
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn log(&self) -> String {
        self.proc.log()
    }
    /// Time from spawn until it answered.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }
    pub fn process(&mut self) -> &mut Process {
        &mut self.proc
    }
    pub fn stop(&mut self) {
        self.proc.kill();
    }
}

fn nsd_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    let mut s = format!(
        r#"server:
    ip-address: 127.0.0.1
    port: {port}
    do-ip4: yes
    do-ip6: no
    server-count: 1
    reuseport: no
    username: ""
    chroot: ""
    zonesdir: "{d}"
    database: ""
    zonelistfile: "{d}/zone.list"
    pidfile: "{d}/nsd.pid"
    xfrdfile: "{d}/xfrd.state"
    xfrdir: "{d}"
    cookie-secret-file: "{d}/cookiesecrets.txt"
    zonefiles-write: 0
    verbosity: 1
    hide-version: yes
    rrl-ratelimit: 0
remote-control:
    control-enable: no
"#
    );
    for zone in TEST_ZONES {
        s += &format!("zone:\n    name: \"{zone}\"\n    zonefile: \"{zone}.zone\"\n");
    }
    s
}

// ---------------------------------------------------------------------------------------------
// dnstap target + fstrm_capture
// ---------------------------------------------------------------------------------------------

/// Where a resolver sends dnstap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnstapTarget {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// `fstrm_capture -t protobuf:dnstap.Dnstap` listening on a unix socket or 127.0.0.1 TCP port,
/// writing to `output()`. Its output is stdio-buffered: use [`flush`](Self::flush) /
/// [`wait_until`](Self::wait_until) / [`bytes`](Self::bytes) to read it.
pub struct FstrmCapture {
    proc: Process,
    target: DnstapTarget,
    output: PathBuf,
    dir: PathBuf,
    restarts: usize,
}

pub const DNSTAP_CONTENT_TYPE: &str = "protobuf:dnstap.Dnstap";

impl FstrmCapture {
    /// Listen on `<dir>/fstrm*/dnstap.sock`.
    pub fn unix(dir: &Path) -> Result<FstrmCapture> {
        let sub = unique_subdir(&abs(dir)?, "fstrm")?;
        let sock = sub.join("dnstap.sock");
        check_unix_path(&sock)?;
        Self::start_at(sub, DnstapTarget::Unix(sock))
    }

    /// Listen on 127.0.0.1:<free port>.
    pub fn tcp(dir: &Path) -> Result<FstrmCapture> {
        let sub = unique_subdir(&abs(dir)?, "fstrm")?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        Self::start_at(sub, DnstapTarget::Tcp(addr))
    }

    /// Listen on an explicit target (e.g. the socket path of a previous capture).
    pub fn at(dir: &Path, target: DnstapTarget) -> Result<FstrmCapture> {
        let sub = unique_subdir(&abs(dir)?, "fstrm")?;
        Self::start_at(sub, target)
    }

    fn start_at(dir: PathBuf, target: DnstapTarget) -> Result<FstrmCapture> {
        let output = dir.join("capture.0.fstrm");
        let proc = spawn_capture(&dir, &target, &output, 0)?;
        Ok(FstrmCapture { proc, target, output, dir, restarts: 0 })
    }

    pub fn target(&self) -> DnstapTarget {
        self.target.clone()
    }
    /// Current output file (changes on [`restart`](Self::restart)).
    pub fn output(&self) -> &Path {
        &self.output
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// SIGHUP: fstrm_capture flushes its buffered output file.
    pub fn flush(&self) -> Result<()> {
        self.proc.signal(SIGHUP)?;
        sleep(Duration::from_millis(50));
        Ok(())
    }

    /// Flush, then return the output file's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>> {
        if self.proc.child.is_some() {
            self.flush()?;
        }
        fs::read(&self.output).with_context(|| format!("read {}", self.output.display()))
    }

    /// Flush every 100 ms until `pred(bytes)` holds or `timeout` passes; returns the bytes
    /// (Err with size info on timeout).
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let b = self.bytes()?;
            if pred(&b) {
                return Ok(b);
            }
            if Instant::now() >= deadline {
                bail!(
                    "dnstap capture {} did not reach the expected state within {timeout:?} \
                     ({} bytes, {} data frames)",
                    self.output.display(),
                    b.len(),
                    fstrm_data_frames(&b).map(|f| f.len()).unwrap_or(0)
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Stop (flushes and closes the output file).
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Stop and start a new listener on the same target, writing to a new output file.
    pub fn restart(&mut self) -> Result<()> {
        self.proc.kill();
        self.restarts += 1;
        self.output = self.dir.join(format!("capture.{}.fstrm", self.restarts));
        self.proc = spawn_capture(&self.dir, &self.target, &self.output, self.restarts)?;
        Ok(())
    }
}

fn spawn_capture(dir: &Path, target: &DnstapTarget, output: &Path, n: usize) -> Result<Process> {
    let mut cmd = Command::new(bin("fstrm_capture")?);
    cmd.arg("-t").arg(DNSTAP_CONTENT_TYPE);
    match target {
        DnstapTarget::Unix(p) => {
            // fstrm_capture unlinks a stale socket itself, but then we could not tell when the
            // new one is ready.
            let _ = fs::remove_file(p);
            cmd.arg("-u").arg(p);
        }
        DnstapTarget::Tcp(a) => {
            cmd.arg("-a").arg(a.ip().to_string()).arg("-p").arg(a.port().to_string());
        }
    }
    cmd.arg("-w").arg(output);
    let mut proc = Process::spawn("fstrm_capture", cmd, &dir.join(format!("fstrm_capture.{n}.log")))?;
    let start = Instant::now();
    loop {
        if !proc.is_running() {
            bail!("fstrm_capture exited at startup; log:\n{}", proc.log());
        }
        // "opened output file" is printed after the socket is bound and listening.
        let listening = proc.log().contains("opened output file")
            && match target {
                DnstapTarget::Unix(p) => p.exists(),
                DnstapTarget::Tcp(a) => tcp_listening(a.port()),
            };
        if listening {
            return Ok(proc);
        }
        if start.elapsed() > Duration::from_secs(5) {
            bail!("fstrm_capture did not start listening on {target:?}; log:\n{}", proc.log());
        }
        sleep(Duration::from_millis(10));
    }
}

/// True if something listens on TCP 127.0.0.1:`port` (from /proc/net/tcp, no connection made).
pub fn tcp_listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    fs::read_to_string("/proc/net/tcp")
        .map(|t| {
            t.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1] == want && f[3] == "0A"
            })
        })
        .unwrap_or(false)
}

/// Split a Frame Streams file into its data frames (control frames are skipped).
pub fn fstrm_data_frames(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut frames = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes.len() - i < 4 {
            bail!("truncated frame length at {i}");
        }
        let len = u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        i += 4;
        if len == 0 {
            // control frame: u32 length, then payload
            if bytes.len() - i < 4 {
                bail!("truncated control frame at {i}");
            }
            let clen = u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
            i += 4 + clen;
        } else {
            if bytes.len() - i < len {
                bail!("truncated data frame at {i}");
            }
            frames.push(bytes[i..i + len].to_vec());
            i += len;
        }
    }
    Ok(frames)
}

/// DNS wire encoding of `name` (no compression), for searching raw dnstap payloads.
/// Case is preserved, so `wire_name("WwW.LiStEd.TeSt")` finds the mixed-case query.
pub fn wire_name(name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        v.push(label.len() as u8);
        v.extend_from_slice(label.as_bytes());
    }
    v.push(0);
    v
}

/// Number of (possibly overlapping) occurrences of `needle` in `hay`.
pub fn count_bytes(hay: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || hay.len() < needle.len() {
        return 0;
    }
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

// ---------------------------------------------------------------------------------------------
// Unbound
// ---------------------------------------------------------------------------------------------

/// Unbound recursive resolver on 127.0.0.1:`port()` with stub-zones for [`TEST_ZONES`] to NSD
/// and dnstap CLIENT_QUERY + CLIENT_RESPONSE to `dnstap`.
pub struct Unbound {
    proc: Process,
    port: u16,
    dir: PathBuf,
    conf: PathBuf,
    startup: Duration,
}

impl Unbound {
    pub fn start(dir: &Path, nsd_port: u16, dnstap: DnstapTarget) -> Result<Unbound> {
        Self::start_with(dir, nsd_port, dnstap, "")
    }

    /// Like [`start`](Self::start) with extra lines appended to the `server:` clause
    /// (indent them with 4 spaces), e.g. `"    prefetch: yes\n"`.
    pub fn start_with(dir: &Path, nsd_port: u16, dnstap: DnstapTarget, extra_server: &str) -> Result<Unbound> {
        let dir = unique_subdir(&abs(dir)?, "unbound")?;
        if let DnstapTarget::Unix(p) = &dnstap {
            check_unix_path(p)?;
        }
        let mut last_err = None;
        for attempt in 0..START_ATTEMPTS {
            let port = free_port();
            let conf = dir.join("unbound.conf");
            write_file(&conf, &unbound_conf(&dir, port, nsd_port, &dnstap, extra_server))?;
            let mut check = Command::new(bin("unbound-checkconf")?);
            check.arg(&conf);
            run_check("unbound-checkconf", check)?;
            let t0 = Instant::now();
            let mut cmd = Command::new(bin("unbound")?);
            cmd.arg("-d").arg("-c").arg(&conf);
            let mut proc = Process::spawn("unbound", cmd, &dir.join(format!("unbound.{attempt}.log")))?;
            match wait_answer(&mut proc, port, READINESS_NAME, PLAIN_OTHER_V4) {
                Ok(_) => {
                    return Ok(Unbound { proc, port, dir, conf, startup: t0.elapsed() });
                }
                Err(e) => {
                    let retry = port_race(&proc.log());
                    drop(proc);
                    if !retry {
                        return Err(e);
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap())
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }
    pub fn log(&self) -> String {
        self.proc.log()
    }
    pub fn startup_time(&self) -> Duration {
        self.startup
    }
    pub fn process(&mut self) -> &mut Process {
        &mut self.proc
    }
    /// SIGTERM and wait (unbound flushes pending dnstap frames on a clean exit).
    pub fn stop(&mut self) {
        self.proc.kill();
    }
}

fn unbound_conf(dir: &Path, port: u16, nsd_port: u16, dnstap: &DnstapTarget, extra: &str) -> String {
    let d = dir.display();
    let target = match dnstap {
        DnstapTarget::Unix(p) => format!("    dnstap-socket-path: \"{}\"\n", p.display()),
        DnstapTarget::Tcp(a) => format!("    dnstap-ip: \"{}@{}\"\n    dnstap-tls: no\n", a.ip(), a.port()),
    };
    let mut s = format!(
        r#"server:
    interface: 127.0.0.1
    port: {port}
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    num-threads: 1
    so-reuseport: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    logfile: ""
    use-syslog: no
    verbosity: 1
    log-time-ascii: yes
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "iterator"
    auto-trust-anchor-file: ""
    trust-anchor-file: ""
    qname-minimisation: no
    harden-referral-path: no
    local-zone: "test." nodefault
    domain-insecure: "test."
{extra}remote-control:
    control-enable: no
dnstap:
    dnstap-enable: yes
{target}    dnstap-send-identity: yes
    dnstap-send-version: yes
    dnstap-identity: "unbound-test"
    dnstap-log-client-query-messages: yes
    dnstap-log-client-response-messages: yes
"#
    );
    for zone in TEST_ZONES {
        s += &format!("stub-zone:\n    name: \"{zone}.\"\n    stub-addr: 127.0.0.1@{nsd_port}\n");
    }
    s
}

// ---------------------------------------------------------------------------------------------
// BIND named
// ---------------------------------------------------------------------------------------------

/// BIND 9.18 resolver on 127.0.0.1:`port()` with forward-only zones for [`TEST_ZONES`] to NSD
/// and dnstap `client query` + `client response` to the unix socket `dnstap_socket`.
/// (BIND's `dnstap-output` supports only `unix` and `file`, no TCP.)
pub struct Named {
    proc: Process,
    port: u16,
    dir: PathBuf,
    conf: PathBuf,
    startup: Duration,
}

impl Named {
    pub fn start(dir: &Path, nsd_port: u16, dnstap_socket: &Path) -> Result<Named> {
        let dir = unique_subdir(&abs(dir)?, "named")?;
        let sock = abs(dnstap_socket)?;
        check_unix_path(&sock)?;
        let mut last_err = None;
        for attempt in 0..START_ATTEMPTS {
            let port = free_port();
            let conf = dir.join("named.conf");
            write_file(&conf, &named_conf(&dir, port, nsd_port, &sock))?;
            if let Some(checkconf) = find_bin("named-checkconf") {
                let mut check = Command::new(checkconf);
                check.arg(&conf);
                run_check("named-checkconf", check)?;
            }
            let t0 = Instant::now();
            let mut cmd = Command::new(bin("named")?);
            // -g: foreground, log to stderr. No -u: stays root (no setuid; fine in tests).
            // -4: IPv4 only. -n 1: one worker thread (small machine).
            cmd.arg("-g").arg("-4").arg("-n").arg("1").arg("-c").arg(&conf);
            let mut proc = Process::spawn("named", cmd, &dir.join(format!("named.{attempt}.log")))?;
            match wait_answer(&mut proc, port, READINESS_NAME, PLAIN_OTHER_V4) {
                Ok(_) => {
                    return Ok(Named { proc, port, dir, conf, startup: t0.elapsed() });
                }
                Err(e) => {
                    let retry = port_race(&proc.log());
                    drop(proc);
                    if !retry {
                        return Err(e);
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap())
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }
    pub fn log(&self) -> String {
        self.proc.log()
    }
    pub fn startup_time(&self) -> Duration {
        self.startup
    }
    pub fn process(&mut self) -> &mut Process {
        &mut self.proc
    }
    pub fn stop(&mut self) {
        self.proc.kill();
    }
}

fn named_conf(dir: &Path, port: u16, nsd_port: u16, sock: &Path) -> String {
    let d = dir.display();
    let sock = sock.display();
    let mut s = format!(
        r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    dump-file "{d}/named_dump.db";
    statistics-file "{d}/named.stats";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-query {{ 127.0.0.1; }};
    allow-recursion {{ 127.0.0.1; }};
    dnssec-validation no;
    qname-minimization off;
    notify no;
    dnstap {{ client query; client response; }};
    dnstap-output unix "{sock}";
    dnstap-identity "named-test";
    dnstap-version "named-test";
    fstrm-set-reopen-interval 1;
    fstrm-set-flush-timeout 1;
}};
controls {{ }};
"#
    );
    for zone in TEST_ZONES {
        s += &format!(
            "zone \"{zone}\" {{\n    type forward;\n    forward only;\n    forwarders {{ 127.0.0.1 port {nsd_port}; }};\n}};\n"
        );
    }
    s
}

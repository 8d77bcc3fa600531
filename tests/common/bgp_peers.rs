//! Test peers for integration tests: real BGP speakers (Debian packages) that receive what
//! dnsbgpd announces, plus network namespaces for tests that need real (non-loopback) links.
//!
//! * [`Bird`]    — BIRD 2.0.12 (`bird2`), `birdc` helpers that parse `show route all`.
//! * [`Gobgpd`]  — GoBGP 3.x (`gobgpd` + `gobgp` CLI, JSON output).
//! * [`Frr`]     — FRR 8.4 `bgpd` alone (no zebra) + `vtysh` JSON helpers.
//! * [`Netns`]   — network namespaces with veth links (198.51.100.0/24, 2001:db8::/64).
//! * [`wait_for`], [`require_bgp`], [`require_netns`], [`tcp_listening_in`].
//!
//! Uses `super::peers::{Process, free_port, find_bin, send_signal, ...}`; dependencies: std,
//! `anyhow`, `serde_json`. Each daemon gets its own sub-directory of the `dir` passed in
//! (config, control socket, pid file, log) and its own free ports; everything is stopped on
//! Drop (the [`Process`] guard kills the process group). Declare the temp dir FIRST (dropped
//! last) and a [`Netns`] BEFORE the daemons running in it (so the daemons are stopped first).
//!
//! ```ignore
//! let tmp = tempfile::tempdir()?;
//! if !bgp_peers::require_bgp(bgp_peers::BIRD_BINS) { return Ok(()); }
//! let mut cfg = BirdConfig::new("10.0.0.1".parse()?, 65001, "127.0.0.1".parse()?);
//! cfg.neighbors.push(BirdNeighbor::new("dnsbgpd", "127.0.0.1".parse()?, dnsbgpd_port, 65010));
//! let bird = Bird::start(tmp.path(), &cfg)?;        // dnsbgpd connects to 127.0.0.1:bird.port()
//! bird.wait_established("dnsbgpd", Duration::from_secs(5))?;
//! let routes = bird.wait_routes(Duration::from_secs(5), |r| r.len() == 3)?;
//! ```
//!
//! # Facts measured on this machine (Debian 12, 2 cores)
//!
//! * Startup (spawn → control socket/API answers and BGP port listening): bird ≈ 20–35 ms
//!   (also with 3000 static routes), gobgpd ≈ 25 ms, FRR bgpd ≈ 140–200 ms (`startup_time()`).
//!   Session Established + routes in the receiver ≈ 0.85–1.1 s after the *active* bird
//!   starts (its connect delay); 3000 routes (2000 /32 + 1000 /128) ≈ 1.05 s.
//!   `count_routes()` ≈ 2 ms, `show_route_all()` of 3000 routes ≈ 95 ms; `vtysh -c` ≈ 40–140 ms.
//! * A passive bird waiting for its neighbor shows `BGP state: Passive`
//!   ([`Bird::protocol_state`]); dnsbgpd connecting to it is accepted at once.
//! * bird's first *active* connect happens after `connect delay time` (default 5 s, minimum
//!   1 s, randomised to ~0.75–1 s): set to 1 here. Incoming connections are accepted at once.
//!   After a failed connect it waits `connect retry time` (default 120 s): set to 1 here.
//! * bird 2.0.12's main loop sleeps up to **3 s** in poll() when it has no timer due, and
//!   work it scheduled while handling a socket (the initial route export after Established,
//!   pruning stale routes after End-of-RIB) can wait for that. Any `birdc` command or timer
//!   wakes it. The generated config therefore has `protocol device { scan time 1; }`, which
//!   bounds the delay to ≤ 1 s (bird → gobgp: 3.2 s → 0.8 s from gobgpd start to routes).
//! * Routes received by bird over a loopback (multihop) session show as `unreachable` (the
//!   recursive next hop is not resolvable without an IGP), are still primary (`*`) and show
//!   the BGP next hop as `BGP.next_hop:`. No kernel protocol is configured, so nothing ever
//!   reaches the kernel FIB.
//! * **GoBGP and FRR reject an IPv4 NEXT_HOP in 127.0.0.0/8**: GoBGP logs `the received Update
//!   message was treated as withdraw ... invalid nexthop address`; FRR logs `Martian nexthop
//!   127.0.0.2` and fails the UPDATE. bird accepts it. Announce with a non-loopback next hop
//!   (e.g. 198.51.100.1 / 2001:db8::1) when GoBGP/FRR are the receivers.
//! * An IPv6 route sent over an IPv4 session needs an IPv6 next hop: bird without one logs
//!   `Missing next hop address` and the receiver treats the route as withdrawn. For bird as
//!   sender use [`BirdNeighbor::next_hop_v6`].
//! * bird does not send a MED it did not set in its export filter; [`BirdStaticRoute::med`]
//!   is therefore applied in a generated export filter.
//! * gobgpd waits `idle-hold-time-after-reset` (default 30 s) after a session drop before it
//!   accepts/opens a new one; the generated config sets it and `connect-retry` to 1 s.
//!
//! # Graceful restart as seen by bird 2.0.12 (receiver A with `graceful restart on`)
//!
//! * The routes are kept only if the *sender* advertised the GR capability listing the
//!   families (bird: `graceful restart on` on the sender). With a sender that is only GR-aware
//!   (no AF list) they are flushed at once when the TCP session drops.
//! * After `kill -9` of the sender (no NOTIFICATION): `show protocols` shows the protocol in
//!   `start` / `Active  Socket: Connection closed`; `show protocols all` shows
//!   `Neighbor graceful restart active` and `Restart timer: 119.661/-` (the timer is the
//!   **sender's** advertised restart time). The routes stay in `show route all`
//!   **unchanged**: bird 2.0.12 marks them stale internally (REF_STALE) but prints no marker
//!   and keeps their timestamps. [`Bird::graceful_restart_active`] reads the protocol flag.
//! * If the sender comes back *without* the forwarding-state bit in its new OPEN (bird
//!   started without `-R`), A flushes all stale routes as the session comes up and re-learns
//!   them (new timestamps, brief gap). With `-R` ([`Bird::restart`]`(true)`) A keeps them:
//!   identical re-announcements are "ignored" (timestamps unchanged), routes not re-announced
//!   are removed after the sender's End-of-RIB (measured: Established 0.9 s after the
//!   restart, the stale route gone ≈1.1 s later; bird's stale prune is one of the
//!   poll-delayed jobs above). `Neighbor graceful restart active` disappears at End-of-RIB.
//! * bird as *sender* refuses a next hop equal to the neighbor's address (`Invalid NEXT_HOP
//!   attribute - neighbor address ::1`, route withdrawn): on `::1` both ends share the address,
//!   so set [`BirdNeighbor::next_hop_v6`]. As *receiver* on a multihop session bird accepts
//!   any non-zero next hop, including its own address.
//! * Visible per-route staleness only exists for *long-lived* GR (RFC 9494): if the sender
//!   advertised LLGR (`long lived graceful restart on; long lived stale time N`) and its
//!   restart time runs out (e.g. `graceful restart time 1`), bird re-imports the routes with
//!   community `(65535,6)` (LLGR_STALE) and the preference column shows `(100s)`;
//!   `show protocols all` shows `LL stale timer: 3599.059/-`. [`BirdRoute::stale`] is true
//!   for those. Sample:
//!
//! ```text
//! 198.51.100.7/32      unreachable [peer_b 14:57:51.583 from 127.0.0.2] * (100s) [AS65010i]
//!     Type: BGP univ
//!     BGP.origin: IGP
//!     BGP.as_path: 65010
//!     BGP.next_hop: 127.0.0.2
//!     BGP.med: 5
//!     BGP.local_pref: 100
//!     BGP.community: (65010,100) (65535,6)
//!     BGP.large_community: (65010, 0, 100)
//! ```

#![allow(dead_code)]

use super::peers::{Process, SIGKILL, find_bin, free_port, send_signal};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Binaries and skip logic
// ---------------------------------------------------------------------------------------------

/// FRR's bgpd is not on PATH.
pub const FRR_BGPD: &str = "/usr/lib/frr/bgpd";
pub const BIRD_BINS: &[&str] = &["bird", "birdc"];
pub const GOBGP_BINS: &[&str] = &["gobgpd", "gobgp"];
pub const FRR_BINS: &[&str] = &[FRR_BGPD, "vtysh"];
pub const NETNS_BINS: &[&str] = &["ip"];

const STARTUP_DEADLINE: Duration = Duration::from_secs(10);
const START_ATTEMPTS: usize = 3;

/// The Debian package of a binary (one table for all peers, in `prereq`).
pub use super::prereq::debian_package as bgp_debian_package;
use super::prereq::skip;

/// `peers::require` under its old name here: true if all `bins` exist; else
/// the `prereq` rule (SKIP outside CI, panic with `CI=true`).
pub use super::prereq::require as require_bgp;

/// `ip` exists and we may create network namespaces (root / CAP_SYS_ADMIN). Same SKIP/CI
/// behaviour as [`require_bgp`].
pub fn require_netns() -> bool {
    if !require_bgp(NETNS_BINS) {
        return false;
    }
    // Unique per call: tests of one process may probe at the same time.
    let name = format!("{NETNS_PREFIX}{}-probe{}", std::process::id(), NETNS_COUNTER.fetch_add(1, Ordering::SeqCst));
    let ok = Command::new(ip_bin())
        .args(["netns", "add", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        let _ = Command::new(ip_bin()).args(["netns", "del", &name]).status();
        return true;
    }
    skip("cannot create network namespaces (`ip netns add` failed: not root?)")
}

fn bin(name: &str) -> Result<PathBuf> {
    find_bin(name).ok_or_else(|| anyhow!("binary `{name}` not found (Debian package `{}`)", bgp_debian_package(name)))
}

fn ip_bin() -> PathBuf {
    find_bin("ip").unwrap_or_else(|| PathBuf::from("ip"))
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

pub use super::wait_for;

fn abs(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() { Ok(p.to_path_buf()) } else { Ok(std::env::current_dir()?.join(p)) }
}

/// Fresh `base/prefix`, `base/prefix.1`, ...
fn unique_subdir(base: &Path, prefix: &str) -> Result<PathBuf> {
    let base = abs(base)?;
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

fn check_unix_path(p: &Path) -> Result<()> {
    if p.as_os_str().len() > 100 {
        bail!("unix socket path too long ({} bytes): {}", p.as_os_str().len(), p.display());
    }
    Ok(())
}

/// `cmd` wrapped in `ip netns exec NS` when `netns` is set.
fn in_netns(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new(ip_bin());
            c.arg("netns").arg("exec").arg(ns).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Run to completion; Err with stdout+stderr if it fails. Returns stdout.
fn run(what: &str, mut cmd: Command) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("run {what}: {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{what} failed ({}): {}{}", out.status, stdout.trim(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(stdout)
}

/// True if process `pid`'s network namespace has a TCP socket listening on `port`
/// (reads `/proc/PID/net/tcp{,6}`, so it works for daemons inside a [`Netns`]).
pub fn tcp_listening_in(pid: u32, port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["tcp", "tcp6"].iter().any(|f| {
        fs::read_to_string(format!("/proc/{pid}/net/{f}"))
            .map(|t| {
                t.lines().skip(1).any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
                })
            })
            .unwrap_or(false)
    })
}

fn port_race(log: &str) -> bool {
    let l = log.to_ascii_lowercase();
    l.contains("address already in use") || l.contains("cannot bind") || l.contains("could not bind")
}

// ---------------------------------------------------------------------------------------------
// BIRD
// ---------------------------------------------------------------------------------------------

/// One `protocol bgp` in the bird config.
#[derive(Clone, Debug)]
pub struct BirdNeighbor {
    /// Protocol name (used with `birdc show protocols NAME`, `restart NAME`).
    pub name: String,
    pub address: IpAddr,
    /// The neighbor's port (`neighbor ADDR port P`); 0 = omit (179). Unused while only the
    /// neighbor connects (e.g. `passive`), but bird matches incoming sessions by address.
    pub port: u16,
    pub remote_as: u32,
    /// `multihop;` — needed on loopback (default: true iff `address` is loopback).
    pub multihop: bool,
    /// `passive on;` — bird never connects, waits for the neighbor.
    pub passive: bool,
    /// `graceful restart on; graceful restart time {graceful_restart_time};`
    pub graceful_restart: bool,
    /// Restart time we advertise (the *neighbor* runs its restart timer with it). Default 120.
    pub graceful_restart_time: u32,
    /// `long lived graceful restart on; long lived stale time N;` (advertise LLGR).
    pub long_lived_stale_time: Option<u32>,
    /// Open an `ipv4 { import all; export ...; }` channel.
    pub ipv4: bool,
    /// Open an `ipv6 { import all; export ...; }` channel.
    pub ipv6: bool,
    /// Export the [`BirdConfig::static_routes`] to this neighbor (default false = `export none`).
    pub export: bool,
    /// `next hop address X;` on the ipv4 channel (what bird announces as next hop).
    pub next_hop_v4: Option<Ipv4Addr>,
    /// `next hop address X;` on the ipv6 channel (needed for IPv6 routes over an IPv4 session).
    pub next_hop_v6: Option<Ipv6Addr>,
    /// `hold time N;` (bird default 240; the session uses min(ours, theirs)).
    pub hold_time: Option<u32>,
    /// `connect delay time` (first active connect; min 1, default here 1).
    pub connect_delay: u32,
    /// `connect retry time` (after a failed connect; default here 1).
    pub connect_retry: u32,
    /// Extra raw lines inside the `ipv4 { ... }` channel (e.g. `extended next hop on;`).
    pub ipv4_extra: String,
    /// Extra raw lines inside the `ipv6 { ... }` channel.
    pub ipv6_extra: String,
    /// Extra raw lines inside `protocol bgp NAME { ... }` (e.g. `debug all;`).
    pub extra: String,
}

impl BirdNeighbor {
    /// Defaults: multihop iff loopback, active, no GR, both channels, export none.
    pub fn new(name: &str, address: IpAddr, port: u16, remote_as: u32) -> BirdNeighbor {
        BirdNeighbor {
            name: name.to_string(),
            address,
            port,
            remote_as,
            multihop: address.is_loopback(),
            passive: false,
            graceful_restart: false,
            graceful_restart_time: 120,
            long_lived_stale_time: None,
            ipv4: true,
            ipv6: true,
            export: false,
            next_hop_v4: None,
            next_hop_v6: None,
            hold_time: None,
            connect_delay: 1,
            connect_retry: 1,
            ipv4_extra: String::new(),
            ipv6_extra: String::new(),
            extra: String::new(),
        }
    }
}

/// A route bird originates (`protocol static`, `unreachable`), announced to neighbors with
/// `export: true`.
#[derive(Clone, Debug, Default)]
pub struct BirdStaticRoute {
    /// `198.51.100.7/32` or `2001:db8::7/128`.
    pub prefix: String,
    pub communities: Vec<(u16, u16)>,
    pub large_communities: Vec<(u32, u32, u32)>,
    /// Applied in the export filter (bird drops a MED it did not set while exporting).
    pub med: Option<u32>,
}

impl BirdStaticRoute {
    pub fn new(prefix: &str) -> BirdStaticRoute {
        BirdStaticRoute { prefix: prefix.to_string(), ..Default::default() }
    }
    pub fn community(mut self, a: u16, b: u16) -> Self {
        self.communities.push((a, b));
        self
    }
    pub fn large_community(mut self, a: u32, b: u32, c: u32) -> Self {
        self.large_communities.push((a, b, c));
        self
    }
    pub fn med(mut self, m: u32) -> Self {
        self.med = Some(m);
        self
    }
    fn is_v6(&self) -> bool {
        self.prefix.contains(':')
    }
}

#[derive(Clone, Debug)]
pub struct BirdConfig {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    /// Local address of every session and the address bird listens on (`strict bind`).
    pub listen: IpAddr,
    /// bird's BGP listen port; 0 = pick a free one ([`Bird::port`]).
    pub port: u16,
    pub neighbors: Vec<BirdNeighbor>,
    /// Run inside `ip netns exec NS` (the control socket stays in the dir, so `birdc` works
    /// from the root namespace).
    pub netns: Option<String>,
    pub static_routes: Vec<BirdStaticRoute>,
    /// Extra raw top-level config.
    pub extra: String,
}

impl BirdConfig {
    pub fn new(router_id: Ipv4Addr, local_as: u32, listen: IpAddr) -> BirdConfig {
        BirdConfig {
            router_id,
            local_as,
            listen,
            port: 0,
            neighbors: Vec::new(),
            netns: None,
            static_routes: Vec::new(),
            extra: String::new(),
        }
    }

    /// The bird.conf text for listen port `port`.
    pub fn render(&self, port: u16) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "log stderr all;");
        let _ = writeln!(s, "router id {};", self.router_id);
        // Keeps bird's poll() timeout ≤ 1 s (see module docs); also lists interfaces for
        // direct sessions in a netns. No `protocol kernel`: nothing reaches the kernel FIB.
        let _ = writeln!(s, "protocol device {{ scan time 1; }}");
        let v4: Vec<&BirdStaticRoute> = self.static_routes.iter().filter(|r| !r.is_v6()).collect();
        let v6: Vec<&BirdStaticRoute> = self.static_routes.iter().filter(|r| r.is_v6()).collect();
        for (name, chan, routes) in [("static4", "ipv4", &v4), ("static6", "ipv6", &v6)] {
            if routes.is_empty() {
                continue;
            }
            let _ = writeln!(s, "protocol static {name} {{\n  {chan};");
            for r in routes.iter() {
                let mut attrs = String::new();
                for (a, b) in &r.communities {
                    let _ = write!(attrs, " bgp_community.add(({a},{b}));");
                }
                for (a, b, c) in &r.large_communities {
                    let _ = write!(attrs, " bgp_large_community.add(({a},{b},{c}));");
                }
                if attrs.is_empty() {
                    let _ = writeln!(s, "  route {} unreachable;", r.prefix);
                } else {
                    let _ = writeln!(s, "  route {} unreachable {{{attrs} }};", r.prefix);
                }
            }
            let _ = writeln!(s, "}}");
        }
        let meds: Vec<&BirdStaticRoute> = self.static_routes.iter().filter(|r| r.med.is_some()).collect();
        let _ = writeln!(s, "filter export_static {{");
        let _ = writeln!(s, "  if source != RTS_STATIC then reject;");
        for r in meds {
            let _ = writeln!(s, "  if net = {} then bgp_med = {};", r.prefix, r.med.unwrap());
        }
        let _ = writeln!(s, "  accept;\n}}");
        for n in &self.neighbors {
            let _ = writeln!(s, "protocol bgp {} {{", n.name);
            let _ = writeln!(s, "  local {} port {port} as {};", self.listen, self.local_as);
            if n.port != 0 {
                let _ = writeln!(s, "  neighbor {} port {} as {};", n.address, n.port, n.remote_as);
            } else {
                let _ = writeln!(s, "  neighbor {} as {};", n.address, n.remote_as);
            }
            let _ = writeln!(s, "  strict bind on;");
            if n.multihop {
                let _ = writeln!(s, "  multihop;");
            }
            if n.passive {
                let _ = writeln!(s, "  passive on;");
            }
            let _ = writeln!(s, "  connect delay time {};", n.connect_delay.max(1));
            let _ = writeln!(s, "  connect retry time {};", n.connect_retry.max(1));
            if let Some(h) = n.hold_time {
                let _ = writeln!(s, "  hold time {h};");
            }
            if n.graceful_restart {
                let _ = writeln!(s, "  graceful restart on;\n  graceful restart time {};", n.graceful_restart_time);
            }
            if let Some(t) = n.long_lived_stale_time {
                let _ = writeln!(s, "  long lived graceful restart on;\n  long lived stale time {t};");
            }
            let export = if n.export { "export filter export_static;" } else { "export none;" };
            if n.ipv4 {
                let nh = n.next_hop_v4.map(|a| format!(" next hop address {a};")).unwrap_or_default();
                let _ = writeln!(s, "  ipv4 {{ import all; {export}{nh} {} }};", n.ipv4_extra);
            }
            if n.ipv6 {
                let nh = n.next_hop_v6.map(|a| format!(" next hop address {a};")).unwrap_or_default();
                let _ = writeln!(s, "  ipv6 {{ import all; {export}{nh} {} }};", n.ipv6_extra);
            }
            if !n.extra.is_empty() {
                let _ = writeln!(s, "  {}", n.extra);
            }
            let _ = writeln!(s, "}}");
        }
        s.push_str(&self.extra);
        s
    }
}

/// One route from `birdc show route all`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BirdRoute {
    /// `master4` / `master6`.
    pub table: String,
    /// `198.51.100.7/32`, `2001:db8::7/128`.
    pub prefix: String,
    /// `unreachable` (loopback multihop), `unicast` (resolvable next hop), ...
    pub dest: String,
    /// Protocol that imported it (the `BirdNeighbor::name`).
    pub protocol: String,
    /// Last change, as printed (`14:57:01.693`; a date when older than ~a day). bird keeps it
    /// when an identical route is re-announced (e.g. after a graceful restart).
    pub since: String,
    /// `from 127.0.0.2` (the BGP neighbor), if shown.
    pub from: Option<String>,
    /// `*` = selected best route.
    pub primary: bool,
    /// The preference in `(100)`.
    pub preference: Option<u32>,
    /// `s` after the preference (`(100s)`) or community (65535,6): LLGR stale. bird 2.0.12
    /// shows nothing for routes that are stale in the normal GR phase (see module docs).
    pub stale: bool,
    /// `BGP.next_hop` (first address; a link-local second one is in `attrs`).
    pub next_hop: Option<String>,
    /// `via GW on IFACE` lines for resolvable routes.
    pub gateways: Vec<String>,
    pub origin: Option<String>,
    /// `BGP.as_path` numbers in order (AS_SET braces dropped).
    pub as_path: Vec<u32>,
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    pub communities: Vec<(u16, u16)>,
    pub large_communities: Vec<(u32, u32, u32)>,
    /// All attribute lines (`Type`, `BGP.*`, ...) as (key, value), continuation lines joined.
    pub attrs: Vec<(String, String)>,
}

impl BirdRoute {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub fn is_v6(&self) -> bool {
        self.prefix.contains(':')
    }
}

/// Parse `birdc show route all` output (any number of `Table X:` sections).
pub fn parse_bird_routes(text: &str) -> Result<Vec<BirdRoute>> {
    let mut out: Vec<BirdRoute> = Vec::new();
    let mut table = String::new();
    let mut last_prefix = String::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with("BIRD ") && line.ends_with("ready.") {
            continue;
        }
        if let Some(t) = line.strip_prefix("Table ") {
            table = t.trim_end_matches(':').trim().to_string();
            continue;
        }
        if let Some(rest) = line.strip_prefix("\t\t") {
            // continuation of the previous attribute (long community lists)
            let r = out.last_mut().ok_or_else(|| anyhow!("continuation before any route: {line:?}"))?;
            let (_, v) = r.attrs.last_mut().ok_or_else(|| anyhow!("continuation before any attribute: {line:?}"))?;
            v.push(' ');
            v.push_str(rest.trim());
            continue;
        }
        if let Some(rest) = line.strip_prefix('\t') {
            let r = out.last_mut().ok_or_else(|| anyhow!("attribute before any route: {line:?}"))?;
            let rest = rest.trim();
            if rest.starts_with("via ") || rest.starts_with("dev ") {
                r.gateways.push(rest.to_string());
            } else if let Some((k, v)) = rest.split_once(':') {
                r.attrs.push((k.trim().to_string(), v.trim().to_string()));
            } else {
                r.attrs.push((rest.to_string(), String::new()));
            }
            continue;
        }
        // Route header: `PREFIX  DEST [PROTO TIME from X] * (PREF) [ASi]`, or with leading
        // spaces (another route for the previous prefix).
        let Some(open) = line.find('[') else {
            // e.g. "Network not found", "syntax error" — caller checks for errors.
            continue;
        };
        let head: Vec<&str> = line[..open].split_whitespace().collect();
        let (prefix, dest) = match (line.starts_with(' '), head.as_slice()) {
            (true, [d]) => (last_prefix.clone(), d.to_string()),
            (false, [p, d]) => (p.to_string(), d.to_string()),
            (false, [p, d, ..]) => (p.to_string(), d.to_string()),
            _ => bail!("unexpected route line: {line:?}"),
        };
        let close = line[open..].find(']').map(|i| i + open).ok_or_else(|| anyhow!("no ] in {line:?}"))?;
        let inside: Vec<&str> = line[open + 1..close].split_whitespace().collect();
        let protocol = inside.first().map(|s| s.to_string()).unwrap_or_default();
        let since = inside.get(1).filter(|t| **t != "from").map(|s| s.to_string()).unwrap_or_default();
        let from = inside.iter().position(|t| *t == "from").and_then(|i| inside.get(i + 1)).map(|s| s.to_string());
        let tail = &line[close + 1..];
        let primary = tail.trim_start().starts_with('*') || tail.trim_start().starts_with('!');
        let (preference, stale) = match (tail.find('('), tail.find(')')) {
            (Some(a), Some(b)) if b > a => {
                let inner = &tail[a + 1..b];
                let num: String = inner.chars().take_while(|c| c.is_ascii_digit()).collect();
                let flags = &inner[num.len()..];
                let flags = flags.split('/').next().unwrap_or("");
                (num.parse().ok(), flags.contains('s'))
            }
            _ => (None, false),
        };
        last_prefix = prefix.clone();
        out.push(BirdRoute {
            table: table.clone(),
            prefix,
            dest,
            protocol,
            since,
            from,
            primary,
            preference,
            stale,
            ..Default::default()
        });
    }
    for r in &mut out {
        fill_bgp_attrs(r)?;
    }
    Ok(out)
}

fn fill_bgp_attrs(r: &mut BirdRoute) -> Result<()> {
    for (k, v) in r.attrs.clone() {
        match k.as_str() {
            "BGP.next_hop" => r.next_hop = v.split_whitespace().next().map(String::from),
            "BGP.origin" => r.origin = Some(v),
            "BGP.as_path" => {
                r.as_path = v
                    .split(|c: char| c.is_whitespace() || c == '{' || c == '}' || c == ',')
                    .filter(|t| !t.is_empty())
                    .map(|t| t.parse::<u32>().with_context(|| format!("as_path {v:?}")))
                    .collect::<Result<_>>()?
            }
            "BGP.local_pref" => r.local_pref = Some(v.parse().with_context(|| format!("local_pref {v:?}"))?),
            "BGP.med" => r.med = Some(v.parse().with_context(|| format!("med {v:?}"))?),
            "BGP.community" => {
                for t in paren_groups(&v) {
                    let n: Vec<&str> = t.split(',').map(str::trim).collect();
                    if n.len() != 2 {
                        bail!("community {t:?} in {v:?}");
                    }
                    r.communities.push((n[0].parse()?, n[1].parse()?));
                }
            }
            "BGP.large_community" => {
                for t in paren_groups(&v) {
                    let n: Vec<&str> = t.split(',').map(str::trim).collect();
                    if n.len() != 3 {
                        bail!("large community {t:?} in {v:?}");
                    }
                    r.large_communities.push((n[0].parse()?, n[1].parse()?, n[2].parse()?));
                }
            }
            _ => {}
        }
    }
    if r.communities.contains(&(65535, 6)) {
        r.stale = true;
    }
    Ok(())
}

/// Contents of each `( ... )` group.
fn paren_groups(s: &str) -> Vec<&str> {
    let mut v = Vec::new();
    let mut rest = s;
    while let Some(a) = rest.find('(') {
        let Some(b) = rest[a..].find(')') else { break };
        v.push(&rest[a + 1..a + b]);
        rest = &rest[a + b + 1..];
    }
    v
}

/// Parse `birdc show route count` → (routes in master4, routes in master6).
/// Lines look like `2 of 2 routes for 2 networks in table master4`.
pub fn parse_bird_count(text: &str) -> Result<(usize, usize)> {
    let (mut v4, mut v6) = (None, None);
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 10 && f[1] == "of" && f[3] == "routes" && f[7] == "in" && f[8] == "table" {
            let n: usize = f[0].parse()?;
            match f[9] {
                "master4" => v4 = Some(n),
                "master6" => v6 = Some(n),
                _ => {}
            }
        }
    }
    match (v4, v6) {
        (None, None) => bail!("no route counts in {text:?}"),
        (a, b) => Ok((a.unwrap_or(0), b.unwrap_or(0))),
    }
}

/// BIRD 2 running in the foreground (`bird -f -c CONF -s SOCK -P PIDFILE`) with its own control
/// socket in its dir. Stopped on Drop.
pub struct Bird {
    proc: Option<Process>,
    cfg: BirdConfig,
    port: u16,
    dir: PathBuf,
    conf: PathBuf,
    ctl: PathBuf,
    startup: Duration,
    starts: usize,
}

impl Bird {
    /// Write `<dir>/bird*/bird.conf`, check it (`bird -p`), start bird and wait until its
    /// control socket answers and (if it has BGP protocols) its BGP port listens.
    pub fn start(dir: &Path, cfg: &BirdConfig) -> Result<Bird> {
        let dir = unique_subdir(dir, "bird")?;
        let ctl = dir.join("bird.ctl");
        check_unix_path(&ctl)?;
        let conf = dir.join("bird.conf");
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let port = if cfg.port == 0 { free_port() } else { cfg.port };
            fs::write(&conf, cfg.render(port))?;
            let mut check = Command::new(bin("bird")?);
            check.arg("-p").arg("-c").arg(&conf);
            run("bird -p (config check)", check).with_context(|| format!("config:\n{}", cfg.render(port)))?;
            let mut b = Bird {
                proc: None,
                cfg: cfg.clone(),
                port,
                dir: dir.clone(),
                conf: conf.clone(),
                ctl: ctl.clone(),
                startup: Duration::ZERO,
                starts: 0,
            };
            match b.spawn(false) {
                Ok(()) => return Ok(b),
                Err(e) => {
                    let retry = cfg.port == 0 && b.proc.as_ref().map(|p| port_race(&p.log())).unwrap_or(false);
                    drop(b);
                    if !retry {
                        return Err(e);
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap())
    }

    fn spawn(&mut self, recovery: bool) -> Result<()> {
        let _ = fs::remove_file(&self.ctl);
        let t0 = Instant::now();
        let mut cmd = in_netns(self.cfg.netns.as_deref(), &bin("bird")?);
        cmd.arg("-f");
        if recovery {
            cmd.arg("-R");
        }
        cmd.arg("-c").arg(&self.conf).arg("-s").arg(&self.ctl).arg("-P").arg(self.dir.join("bird.pid"));
        let log = self.dir.join(format!("bird.{}.log", self.starts));
        self.starts += 1;
        self.proc = Some(Process::spawn("bird", cmd, &log)?);
        let want_listen = !self.cfg.neighbors.is_empty();
        loop {
            let p = self.proc.as_mut().unwrap();
            if !p.is_running() {
                bail!("bird exited at startup; log:\n{}", p.log_tail(30));
            }
            let pid = p.pid();
            let up = self.ctl.exists()
                && self.birdc(&["show", "status"]).map(|s| s.contains("Daemon is up and running")).unwrap_or(false);
            if up && (!want_listen || tcp_listening_in(pid, self.port)) {
                self.startup = t0.elapsed();
                return Ok(());
            }
            if t0.elapsed() > STARTUP_DEADLINE || (up && t0.elapsed() > Duration::from_secs(3)) {
                bail!(
                    "bird did not come up (control socket {}, BGP port {} listening: {}); log:\n{}",
                    self.ctl.display(),
                    self.port,
                    tcp_listening_in(pid, self.port),
                    self.proc.as_ref().unwrap().log_tail(30)
                );
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// bird's BGP listen port (on [`BirdConfig::listen`]).
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map(|p| p.pid()).unwrap_or(0)
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }
    pub fn ctl_path(&self) -> &Path {
        &self.ctl
    }
    pub fn config(&self) -> &BirdConfig {
        &self.cfg
    }
    /// Log of the current run (stderr, `log stderr all`).
    pub fn log(&self) -> String {
        self.proc.as_ref().map(|p| p.log()).unwrap_or_default()
    }
    /// Spawn → control socket answers and BGP port listens.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }
    pub fn process(&mut self) -> Option<&mut Process> {
        self.proc.as_mut()
    }

    /// `birdc -s CTL ARGS...` → stdout. Errors if birdc fails or bird answers with a
    /// syntax/"not found" error line.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(bin("birdc")?)
            .arg("-s")
            .arg(&self.ctl)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("run birdc")?;
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("birdc {} failed ({}): {s}{}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr));
        }
        for l in s.lines() {
            let l = l.trim();
            // (birdc itself exits 1 on most error replies, e.g. "Network not found".)
            if l.starts_with("syntax error")
                || l.starts_with("Unable to connect")
                || l.starts_with("No protocols match")
            {
                bail!("birdc {}: {l}", args.join(" "));
            }
        }
        Ok(s)
    }

    /// All routes of all tables (`birdc show route all`; in 2.0.12 this lists master4 and
    /// master6). See [`parse_bird_routes`] and the samples in the tests.
    pub fn show_route_all(&self) -> Result<Vec<BirdRoute>> {
        parse_bird_routes(&self.birdc(&["show", "route", "all"])?)
    }

    /// Routes of one table (`show route all table master6`).
    pub fn show_route_all_table(&self, table: &str) -> Result<Vec<BirdRoute>> {
        parse_bird_routes(&self.birdc(&["show", "route", "all", "table", table])?)
    }

    /// The route(s) for exactly `prefix` (`show route all PREFIX`; empty if none).
    pub fn route(&self, prefix: &str) -> Result<Vec<BirdRoute>> {
        let table = if prefix.contains(':') { "master6" } else { "master4" };
        match self.birdc(&["show", "route", "all", prefix, "table", table]) {
            Ok(s) => parse_bird_routes(&s),
            // birdc exits 1 with "Network not found"
            Err(e) if format!("{e:#}").contains("Network not found") => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// (routes in master4, routes in master6) via `show route count` — cheap for big tables.
    pub fn count_routes(&self) -> Result<(usize, usize)> {
        parse_bird_count(&self.birdc(&["show", "route", "count"])?)
    }

    /// Like [`count_routes`](Self::count_routes) for routes imported by protocol `name` only.
    pub fn count_routes_of(&self, name: &str) -> Result<(usize, usize)> {
        parse_bird_count(&self.birdc(&["show", "route", "protocol", name, "count"])?)
    }

    /// BGP state of protocol `name` from `show protocols all NAME` (`BGP state:` line):
    /// `Established`, `Active`, `Connect`, `OpenSent`, `OpenConfirm`, `Idle`, `Down`, ...
    pub fn protocol_state(&self, name: &str) -> Result<String> {
        let s = self.birdc(&["show", "protocols", "all", name])?;
        for l in s.lines() {
            if let Some(v) = l.trim().strip_prefix("BGP state:") {
                return Ok(v.trim().to_string());
            }
        }
        // Non-BGP protocol or no detail: the State column of the summary line.
        for l in s.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.first() == Some(&name) && f.len() >= 4 {
                return Ok(f[3].to_string());
            }
        }
        bail!("no state for protocol {name} in:\n{s}")
    }

    /// `show protocols all NAME` text (capabilities, timers, GR state, route stats).
    pub fn protocol_info(&self, name: &str) -> Result<String> {
        self.birdc(&["show", "protocols", "all", name])
    }

    /// True while bird keeps the neighbor's routes for a graceful restart
    /// (`Neighbor graceful restart active` in `show protocols all NAME`).
    pub fn graceful_restart_active(&self, name: &str) -> Result<bool> {
        Ok(self.protocol_info(name)?.contains("Neighbor graceful restart active"))
    }

    /// `birdc restart NAME` (drops the session with a Cease NOTIFICATION and reconnects).
    pub fn restart_protocol(&self, name: &str) -> Result<()> {
        self.birdc(&["restart", name]).map(|_| ())
    }
    pub fn disable_protocol(&self, name: &str) -> Result<()> {
        self.birdc(&["disable", name]).map(|_| ())
    }
    pub fn enable_protocol(&self, name: &str) -> Result<()> {
        self.birdc(&["enable", name]).map(|_| ())
    }

    /// Rewrite bird.conf from `cfg` (same port, same netns) without telling bird — e.g. while it
    /// is dead, before [`restart`](Self::restart).
    pub fn write_config(&mut self, cfg: &BirdConfig) -> Result<()> {
        let mut cfg = cfg.clone();
        cfg.netns = self.cfg.netns.clone();
        fs::write(&self.conf, cfg.render(self.port))?;
        self.cfg = cfg;
        Ok(())
    }

    /// Rewrite bird.conf from `cfg` (same port) and `birdc configure`.
    pub fn reconfigure(&mut self, cfg: &BirdConfig) -> Result<()> {
        let mut cfg = cfg.clone();
        cfg.netns = self.cfg.netns.clone();
        fs::write(&self.conf, cfg.render(self.port))?;
        let out = self.birdc(&["configure"])?;
        if !out.contains("Reconfigured") && !out.contains("Reconfiguration in progress") {
            bail!("birdc configure: {out}");
        }
        self.cfg = cfg;
        Ok(())
    }

    /// Wait until `protocol_state(name) == "Established"`.
    pub fn wait_established(&self, name: &str, timeout: Duration) -> Result<()> {
        wait_for(timeout, &format!("bird protocol {name} Established"), || {
            let s = self.protocol_state(name)?;
            if s == "Established" { Ok(Some(())) } else { Err(anyhow!("state {s}")) }
        })
        .with_context(|| format!("bird log:\n{}", self.proc.as_ref().map(|p| p.log_tail(20)).unwrap_or_default()))
    }

    /// Poll `show_route_all()` until `pred` holds; returns those routes.
    pub fn wait_routes(&self, timeout: Duration, pred: impl Fn(&[BirdRoute]) -> bool) -> Result<Vec<BirdRoute>> {
        let mut last = Vec::new();
        wait_for(timeout, "bird routes", || {
            let r = self.show_route_all()?;
            if pred(&r) {
                return Ok(Some(r));
            }
            last = r;
            Ok(None)
        })
        .with_context(|| format!("last routes: {:?}", last.iter().map(|r| &r.prefix).collect::<Vec<_>>()))
    }

    /// SIGKILL bird (no NOTIFICATION, no cleanup: the peer sees the TCP session die) and reap it.
    pub fn kill9(&mut self) -> Result<()> {
        let p = self.proc.as_mut().ok_or_else(|| anyhow!("bird not running"))?;
        p.signal(SIGKILL)?;
        p.wait_exit(Duration::from_secs(5)).ok_or_else(|| anyhow!("bird did not die on SIGKILL"))?;
        Ok(())
    }

    /// Start bird again with the same config and port (stopping a running one first).
    /// `recovery = true` adds `-R`: the new OPEN carries the GR restart + forwarding-state bits,
    /// so a GR-capable peer keeps our routes instead of flushing them.
    pub fn restart(&mut self, recovery: bool) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        self.spawn(recovery)
    }

    /// SIGTERM bird (it sends Cease NOTIFICATIONs) and wait.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GoBGP
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct GobgpNeighbor {
    pub address: IpAddr,
    pub remote_as: u32,
    /// The neighbor's BGP port (`[neighbors.transport.config] remote-port`); 0 = 179.
    pub remote_port: u16,
    /// `passive-mode = true`: gobgpd never connects.
    pub passive: bool,
    /// `ebgp-multihop` (needed on loopback; default true iff loopback).
    pub multihop: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    /// Advertise graceful restart (restart-time 120) for the families.
    pub graceful_restart: bool,
}

impl GobgpNeighbor {
    pub fn new(address: IpAddr, remote_port: u16, remote_as: u32) -> GobgpNeighbor {
        GobgpNeighbor {
            address,
            remote_as,
            remote_port,
            passive: false,
            multihop: address.is_loopback(),
            ipv4: true,
            ipv6: true,
            graceful_restart: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct GobgpConfig {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    /// `local-address-list` (listen address) and each neighbor's transport local-address.
    pub listen: IpAddr,
    /// BGP listen port; 0 = pick a free one.
    pub port: u16,
    pub neighbors: Vec<GobgpNeighbor>,
    /// Run inside `ip netns exec NS` (the `gobgp` CLI is then run there too).
    pub netns: Option<String>,
}

impl GobgpConfig {
    pub fn new(router_id: Ipv4Addr, local_as: u32, listen: IpAddr) -> GobgpConfig {
        GobgpConfig { router_id, local_as, listen, port: 0, neighbors: Vec::new(), netns: None }
    }

    pub fn render(&self, port: u16) -> String {
        let mut s = format!(
            "[global.config]\n  as = {}\n  router-id = \"{}\"\n  port = {port}\n  local-address-list = [\"{}\"]\n",
            self.local_as, self.router_id, self.listen
        );
        for n in &self.neighbors {
            let _ = write!(
                s,
                "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}\n\
                 \x20 [neighbors.timers.config]\n    connect-retry = 1\n    idle-hold-time-after-reset = 1\n\
                 \x20 [neighbors.transport.config]\n    local-address = \"{}\"\n    passive-mode = {}\n",
                n.address, n.remote_as, self.listen, n.passive
            );
            if n.remote_port != 0 {
                let _ = writeln!(s, "    remote-port = {}", n.remote_port);
            }
            if n.multihop {
                let _ = write!(s, "  [neighbors.ebgp-multihop.config]\n    enabled = true\n    multihop-ttl = 64\n");
            }
            if n.graceful_restart {
                let _ =
                    write!(s, "  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 120\n");
            }
            for (on, fam) in [(n.ipv4, "ipv4-unicast"), (n.ipv6, "ipv6-unicast")] {
                if !on {
                    continue;
                }
                let _ = write!(
                    s,
                    "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{fam}\"\n"
                );
                if n.graceful_restart {
                    let _ = write!(s, "    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n");
                }
            }
        }
        s
    }
}

/// A path from `gobgp ... adj-in -j` / `global rib -j`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GobgpRoute {
    pub prefix: String,
    /// NEXT_HOP (type 3) or MP_REACH_NLRI next hop (type 14).
    pub next_hop: Option<String>,
    /// `"65010:100"`.
    pub communities: Vec<String>,
    /// `"65010:0:100"`.
    pub large_communities: Vec<String>,
    pub as_path: Vec<u32>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub stale: bool,
    pub best: bool,
}

/// Parse gobgp's JSON RIB map (`{"PREFIX": [path, ...], ...}`); one entry per path.
pub fn parse_gobgp_rib(json: &str) -> Result<Vec<GobgpRoute>> {
    let v: Value = serde_json::from_str(json.trim()).with_context(|| format!("gobgp JSON: {json:?}"))?;
    let map = v.as_object().ok_or_else(|| anyhow!("gobgp JSON is not an object: {json}"))?;
    if let Some(e) = map.get("error") {
        bail!("gobgp: {e}");
    }
    let mut out = Vec::new();
    for (prefix, paths) in map {
        for p in paths.as_array().ok_or_else(|| anyhow!("paths of {prefix} not an array"))? {
            let mut r = GobgpRoute {
                prefix: p.pointer("/nlri/prefix").and_then(Value::as_str).unwrap_or(prefix).to_string(),
                stale: p.get("stale").and_then(Value::as_bool).unwrap_or(false),
                best: p.get("best").and_then(Value::as_bool).unwrap_or(false),
                ..Default::default()
            };
            for a in p.get("attrs").and_then(Value::as_array).into_iter().flatten() {
                match a.get("type").and_then(Value::as_u64) {
                    Some(2) => {
                        for seg in a.get("as_paths").and_then(Value::as_array).into_iter().flatten() {
                            for asn in seg.get("asns").and_then(Value::as_array).into_iter().flatten() {
                                r.as_path.extend(asn.as_u64().map(|x| x as u32));
                            }
                        }
                    }
                    Some(3) | Some(14) if r.next_hop.is_none() => {
                        r.next_hop = a.get("nexthop").and_then(Value::as_str).map(String::from);
                    }
                    Some(4) => r.med = a.get("metric").and_then(Value::as_u64).map(|x| x as u32),
                    Some(5) => r.local_pref = a.get("value").and_then(Value::as_u64).map(|x| x as u32),
                    Some(8) => {
                        for c in a.get("communities").and_then(Value::as_array).into_iter().flatten() {
                            let c = c.as_u64().unwrap_or(0) as u32;
                            r.communities.push(format!("{}:{}", c >> 16, c & 0xffff));
                        }
                    }
                    Some(32) => {
                        for c in a.get("value").and_then(Value::as_array).into_iter().flatten() {
                            let g = |k: &str| c.get(k).and_then(Value::as_u64).unwrap_or(0);
                            r.large_communities.push(format!("{}:{}:{}", g("ASN"), g("LocalData1"), g("LocalData2")));
                        }
                    }
                    _ => {}
                }
            }
            out.push(r);
        }
    }
    out.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    Ok(out)
}

/// gobgpd with a TOML config in its dir, gRPC API on 127.0.0.1:`api_port()` (inside the
/// namespace if `netns`). Stopped on Drop.
pub struct Gobgpd {
    proc: Process,
    cfg: GobgpConfig,
    port: u16,
    api_port: u16,
    dir: PathBuf,
    conf: PathBuf,
    startup: Duration,
}

impl Gobgpd {
    pub fn start(dir: &Path, cfg: &GobgpConfig) -> Result<Gobgpd> {
        let dir = unique_subdir(dir, "gobgpd")?;
        let conf = dir.join("gobgpd.toml");
        let mut last_err = None;
        for attempt in 0..START_ATTEMPTS {
            let port = if cfg.port == 0 { free_port() } else { cfg.port };
            let api_port = free_port();
            fs::write(&conf, cfg.render(port))?;
            let t0 = Instant::now();
            let mut cmd = in_netns(cfg.netns.as_deref(), &bin("gobgpd")?);
            cmd.arg("-f")
                .arg(&conf)
                .arg("--api-hosts")
                .arg(format!("127.0.0.1:{api_port}"))
                .arg("-p")
                .arg("--pprof-disable");
            let proc = Process::spawn("gobgpd", cmd, &dir.join(format!("gobgpd.{attempt}.log")))?;
            let mut g = Gobgpd {
                proc,
                cfg: cfg.clone(),
                port,
                api_port,
                dir: dir.clone(),
                conf: conf.clone(),
                startup: Duration::ZERO,
            };
            let r = loop {
                if !g.proc.is_running() {
                    break Err(anyhow!("gobgpd exited at startup; log:\n{}", g.proc.log_tail(30)));
                }
                if g.gobgp(&["global", "-j"]).is_ok() && tcp_listening_in(g.proc.pid(), port) {
                    break Ok(());
                }
                if t0.elapsed() > STARTUP_DEADLINE {
                    break Err(anyhow!(
                        "gobgpd did not come up (api {api_port}, bgp {port}); log:\n{}",
                        g.proc.log_tail(30)
                    ));
                }
                sleep(Duration::from_millis(20));
            };
            match r {
                Ok(()) => {
                    g.startup = t0.elapsed();
                    return Ok(g);
                }
                Err(e) => {
                    let retry = port_race(&g.proc.log());
                    drop(g);
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
    pub fn api_port(&self) -> u16 {
        self.api_port
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

    /// `gobgp -u 127.0.0.1 -p API ARGS...` → stdout (Err if it fails or prints `{"error":..}`).
    pub fn gobgp(&self, args: &[&str]) -> Result<String> {
        let mut cmd = in_netns(self.cfg.netns.as_deref(), &bin("gobgp")?);
        cmd.arg("-u").arg("127.0.0.1").arg("-p").arg(self.api_port.to_string()).args(args);
        let out = run(&format!("gobgp {}", args.join(" ")), cmd)?;
        if out.trim_start().starts_with("{\"error\"") {
            bail!("gobgp {}: {}", args.join(" "), out.trim());
        }
        Ok(out)
    }

    /// Adj-RIB-In of `neighbor` for `family` ("ipv4" | "ipv6"):
    /// `gobgp neighbor ADDR adj-in -a FAMILY -j`.
    pub fn adj_in(&self, neighbor: &str, family: &str) -> Result<Vec<GobgpRoute>> {
        parse_gobgp_rib(&self.gobgp(&["neighbor", neighbor, "adj-in", "-a", family, "-j"])?)
    }

    /// Loc-RIB: `gobgp global rib -a FAMILY -j`.
    pub fn global_rib(&self, family: &str) -> Result<Vec<GobgpRoute>> {
        parse_gobgp_rib(&self.gobgp(&["global", "rib", "-a", family, "-j"])?)
    }

    /// Session state of neighbor `addr`: `Established`, `Idle`, `Connect`, `Active`,
    /// `OpenSent`, `OpenConfirm` (from `gobgp neighbor ADDR -j`, `state.session_state`).
    pub fn neighbor_state(&self, addr: &str) -> Result<String> {
        let v: Value = serde_json::from_str(&self.gobgp(&["neighbor", addr, "-j"])?)?;
        let st = v.pointer("/state/session_state").cloned().unwrap_or(Value::Null);
        Ok(match st {
            Value::Number(n) => match n.as_u64() {
                Some(1) => "Idle",
                Some(2) => "Connect",
                Some(3) => "Active",
                Some(4) => "OpenSent",
                Some(5) => "OpenConfirm",
                Some(6) => "Established",
                _ => "Unknown",
            }
            .to_string(),
            Value::String(s) => s,
            _ => "Unknown".to_string(), // session_state omitted (0) before the first attempt
        })
    }

    pub fn wait_established(&self, addr: &str, timeout: Duration) -> Result<()> {
        wait_for(timeout, &format!("gobgpd neighbor {addr} Established"), || {
            let s = self.neighbor_state(addr)?;
            if s == "Established" { Ok(Some(())) } else { Err(anyhow!("state {s}")) }
        })
        .with_context(|| format!("gobgpd log:\n{}", self.proc.log_tail(20)))
    }

    /// Originate a route: `gobgp global rib add PREFIX nexthop NH [community a:b,..]
    /// [large-community a:b:c,..] -a ipv4|ipv6` (≈9 ms per call). IPv4 next hops in 127/8 are
    /// rejected by GoBGP/FRR receivers; bird accepts them.
    pub fn add_route(&self, prefix: &str, next_hop: &str, communities: &[&str], large: &[&str]) -> Result<()> {
        let fam = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let mut args = vec!["global", "rib", "add", prefix, "nexthop", next_hop];
        let c = communities.join(",");
        let l = large.join(",");
        if !c.is_empty() {
            args.extend(["community", c.as_str()]);
        }
        if !l.is_empty() {
            args.extend(["large-community", l.as_str()]);
        }
        args.extend(["-a", fam]);
        self.gobgp(&args).map(|_| ())
    }

    pub fn del_route(&self, prefix: &str) -> Result<()> {
        let fam = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        self.gobgp(&["global", "rib", "del", prefix, "-a", fam]).map(|_| ())
    }
}

// ---------------------------------------------------------------------------------------------
// FRR bgpd
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct FrrNeighbor {
    pub address: IpAddr,
    pub remote_as: u32,
    /// `neighbor X port P` (the neighbor's port); 0 = 179.
    pub port: u16,
    /// `ebgp-multihop 64` (default true iff loopback).
    pub multihop: bool,
    /// `neighbor X passive`.
    pub passive: bool,
    pub ipv4: bool,
    pub ipv6: bool,
}

impl FrrNeighbor {
    pub fn new(address: IpAddr, port: u16, remote_as: u32) -> FrrNeighbor {
        FrrNeighbor {
            address,
            remote_as,
            port,
            multihop: address.is_loopback(),
            passive: false,
            ipv4: true,
            ipv6: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct FrrConfig {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    /// `bgpd -l ADDR` and `update-source` of every neighbor.
    pub listen: IpAddr,
    /// `bgpd -p PORT`; 0 = pick a free one.
    pub port: u16,
    pub neighbors: Vec<FrrNeighbor>,
    pub netns: Option<String>,
    /// Extra raw lines inside `router bgp` (before the address families).
    pub extra: String,
}

impl FrrConfig {
    pub fn new(router_id: Ipv4Addr, local_as: u32, listen: IpAddr) -> FrrConfig {
        FrrConfig { router_id, local_as, listen, port: 0, neighbors: Vec::new(), netns: None, extra: String::new() }
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "frr defaults traditional\nhostname dnsbgpd-test\n!\nrouter bgp {}\n bgp router-id {}\n\
             \x20no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n no bgp network import-check\n",
            self.local_as, self.router_id
        );
        for n in &self.neighbors {
            let a = n.address;
            let _ = writeln!(s, " neighbor {a} remote-as {}", n.remote_as);
            if n.port != 0 {
                let _ = writeln!(s, " neighbor {a} port {}", n.port);
            }
            if n.multihop {
                let _ = writeln!(s, " neighbor {a} ebgp-multihop 64");
            }
            if n.passive {
                let _ = writeln!(s, " neighbor {a} passive");
            }
            let _ = writeln!(s, " neighbor {a} update-source {}", self.listen);
            let _ = writeln!(s, " neighbor {a} timers connect 1");
        }
        s.push_str(&self.extra);
        for fam in ["ipv4", "ipv6"] {
            let _ = writeln!(s, " !\n address-family {fam} unicast");
            for n in self.neighbors.iter().filter(|n| if fam == "ipv4" { n.ipv4 } else { n.ipv6 }) {
                let _ = writeln!(s, "  neighbor {} activate", n.address);
            }
            let _ = writeln!(s, " exit-address-family");
        }
        s.push_str("exit\n!\n");
        s
    }
}

/// FRR's bgpd alone: `bgpd -Z -S -n -l ADDR -p PORT -P 0 --vty_socket DIR -i DIR/bgpd.pid
/// -f DIR/bgpd.conf --log file:DIR/bgpd.file.log` as root (no zebra, no vty TCP port, no
/// user switch). Query with [`Frr::vtysh`] (`vtysh --vty_socket DIR -c CMD`).
pub struct Frr {
    proc: Process,
    cfg: FrrConfig,
    port: u16,
    dir: PathBuf,
    conf: PathBuf,
    startup: Duration,
}

impl Frr {
    pub fn start(dir: &Path, cfg: &FrrConfig) -> Result<Frr> {
        let dir = unique_subdir(dir, "frr")?;
        check_unix_path(&dir.join("bgpd.vty"))?;
        let conf = dir.join("bgpd.conf");
        fs::write(&conf, cfg.render())?;
        let mut last_err = None;
        for attempt in 0..START_ATTEMPTS {
            let port = if cfg.port == 0 { free_port() } else { cfg.port };
            let _ = fs::remove_file(dir.join("bgpd.vty"));
            let t0 = Instant::now();
            let mut cmd = in_netns(cfg.netns.as_deref(), &bin(FRR_BGPD)?);
            cmd.args(["-Z", "-S", "-n", "-P", "0"])
                .arg("-l")
                .arg(cfg.listen.to_string())
                .arg("-p")
                .arg(port.to_string())
                .arg("--vty_socket")
                .arg(&dir)
                .arg("-i")
                .arg(dir.join("bgpd.pid"))
                .arg("-f")
                .arg(&conf)
                .arg("--log")
                .arg(format!("file:{}", dir.join(format!("bgpd.file.{attempt}.log")).display()));
            let proc = Process::spawn("bgpd", cmd, &dir.join(format!("bgpd.{attempt}.log")))?;
            let mut f =
                Frr { proc, cfg: cfg.clone(), port, dir: dir.clone(), conf: conf.clone(), startup: Duration::ZERO };
            let r = loop {
                if !f.proc.is_running() {
                    break Err(anyhow!("bgpd exited at startup; log:\n{}", f.log()));
                }
                if f.dir.join("bgpd.vty").exists()
                    && f.vtysh("show bgp summary json").is_ok()
                    && tcp_listening_in(f.proc.pid(), port)
                {
                    break Ok(());
                }
                if t0.elapsed() > STARTUP_DEADLINE {
                    break Err(anyhow!("bgpd did not come up (port {port}); log:\n{}", f.log()));
                }
                sleep(Duration::from_millis(20));
            };
            match r {
                Ok(()) => {
                    f.startup = t0.elapsed();
                    return Ok(f);
                }
                Err(e) => {
                    let retry = port_race(&f.log());
                    drop(f);
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
    /// stdout/stderr plus bgpd's own log files (where "Martian nexthop" etc. go).
    pub fn log(&self) -> String {
        let mut s = self.proc.log();
        if let Ok(rd) = fs::read_dir(&self.dir) {
            let mut files: Vec<PathBuf> =
                rd.flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().contains("bgpd.file.")).collect();
            files.sort();
            for p in files {
                s += &fs::read_to_string(&p).unwrap_or_default();
            }
        }
        s
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

    /// `vtysh --vty_socket DIR -c CMD` → stdout.
    pub fn vtysh(&self, cmd: &str) -> Result<String> {
        let mut c = Command::new(bin("vtysh")?);
        c.arg("--vty_socket").arg(&self.dir).arg("-c").arg(cmd);
        run(&format!("vtysh -c {cmd:?}"), c)
    }

    /// `vtysh -c CMD` parsed as JSON.
    pub fn vtysh_json(&self, cmd: &str) -> Result<Value> {
        let s = self.vtysh(cmd)?;
        serde_json::from_str(&s).with_context(|| format!("vtysh {cmd:?} JSON: {s}"))
    }

    /// Prefixes in the BGP table: `show bgp ipv4|ipv6 unicast json`, keys of `routes`.
    pub fn routes(&self, family: &str) -> Result<Vec<String>> {
        let v = self.vtysh_json(&format!("show bgp {family} unicast json"))?;
        let mut r: Vec<String> =
            v.get("routes").and_then(Value::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default();
        r.sort();
        Ok(r)
    }

    /// Detail of one prefix: `show bgp ipv4|ipv6 unicast PREFIX json` (communities under
    /// `paths[i].community.string` / `largeCommunity.string`, next hop `paths[i].nexthops[0].ip`).
    pub fn route_detail(&self, prefix: &str) -> Result<Value> {
        let fam = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        self.vtysh_json(&format!("show bgp {fam} unicast {prefix} json"))
    }

    /// `bgpState` of `show bgp neighbors ADDR json`: `Established`, `Active`, `Connect`, ...
    pub fn neighbor_state(&self, addr: &str) -> Result<String> {
        let v = self.vtysh_json(&format!("show bgp neighbors {addr} json"))?;
        v.get(addr)
            .and_then(|n| n.get("bgpState"))
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| anyhow!("no bgpState for {addr} in {v}"))
    }

    pub fn wait_established(&self, addr: &str, timeout: Duration) -> Result<()> {
        wait_for(timeout, &format!("FRR neighbor {addr} Established"), || {
            let s = self.neighbor_state(addr)?;
            if s == "Established" { Ok(Some(())) } else { Err(anyhow!("state {s}")) }
        })
        .with_context(|| format!("bgpd log:\n{}", self.log()))
    }
}

// ---------------------------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------------------------

/// Every namespace this harness creates is named `dnsbgpd-test-<pid>-<n>`.
pub const NETNS_PREFIX: &str = "dnsbgpd-test-";
/// Root-side veth names for [`Netns::to_root`]: `dbgpr<slot>`.
const ROOT_VETH_PREFIX: &str = "dbgpr";

static NETNS_COUNTER: AtomicUsize = AtomicUsize::new(0);
static CLEANED: std::sync::Once = std::sync::Once::new();

/// A network namespace (`ip netns add`), with `lo` up. Drop kills what still runs inside
/// (our own children only: the namespace is unique to this object), deletes the namespace
/// (which destroys its veth ends, and so the pairs) and the root-side veth if any.
pub struct Netns {
    name: String,
    /// Address of this namespace on its veth, and of the other end.
    v4: Option<(Ipv4Addr, Ipv4Addr)>,
    v6: Option<(Ipv6Addr, Ipv6Addr)>,
    root_veth: Option<String>,
}

fn ip_cmd(args: &[&str]) -> Result<String> {
    let mut c = Command::new(ip_bin());
    c.args(args);
    run(&format!("ip {}", args.join(" ")), c)
}

impl Netns {
    /// A fresh isolated namespace (only `lo`, up: 127.0.0.1 and ::1 work inside).
    pub fn new() -> Result<Netns> {
        CLEANED.call_once(|| {
            let _ = Netns::clean_stale();
        });
        let n = NETNS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{NETNS_PREFIX}{}-{n}", std::process::id());
        ip_cmd(&["netns", "add", &name])?;
        let ns = Netns { name, v4: None, v6: None, root_veth: None };
        ip_cmd(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Two namespaces joined by a veth pair (`veth0` in each): A = 198.51.100.1/24 +
    /// 2001:db8::1/64, B = 198.51.100.2/24 + 2001:db8::2/64. Nothing in the root namespace,
    /// so parallel tests can all use these addresses.
    pub fn pair() -> Result<(Netns, Netns)> {
        Netns::pair_with(
            (Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(198, 51, 100, 2), 24),
            ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap(), 64),
        )
    }

    /// [`pair`](Self::pair) with explicit `(a, b, prefix_len)` addresses.
    pub fn pair_with(v4: (Ipv4Addr, Ipv4Addr, u8), v6: (Ipv6Addr, Ipv6Addr, u8)) -> Result<(Netns, Netns)> {
        let mut a = Netns::new()?;
        let mut b = Netns::new()?;
        ip_cmd(&["link", "add", "veth0", "netns", &a.name, "type", "veth", "peer", "name", "veth0", "netns", &b.name])?;
        a.setup_if("veth0", &format!("{}/{}", v4.0, v4.2), &format!("{}/{}", v6.0, v6.2))?;
        b.setup_if("veth0", &format!("{}/{}", v4.1, v4.2), &format!("{}/{}", v6.1, v6.2))?;
        a.v4 = Some((v4.0, v4.1));
        b.v4 = Some((v4.1, v4.0));
        a.v6 = Some((v6.0, v6.1));
        b.v6 = Some((v6.1, v6.0));
        Ok((a, b))
    }

    /// One namespace with a veth to the root namespace. To keep parallel tests (also in other
    /// processes) apart each gets a slot s (0..63, taken atomically by creating the root-side
    /// link `dbgpr<s>`): root side 198.51.100.(4s+1)/30 + 2001:db8::<s>:1/112, namespace side
    /// 198.51.100.(4s+2)/30 + 2001:db8::<s>:2/112. Slot 0 = 198.51.100.1 / .2, 2001:db8::1 / ::2.
    /// `v4()` is the namespace side, `peer_v4()` the root side.
    pub fn to_root() -> Result<Netns> {
        let mut ns = Netns::new()?;
        for slot in 0u32..64 {
            let root_if = format!("{ROOT_VETH_PREFIX}{slot}");
            let ok = Command::new(ip_bin())
                .args(["link", "add", &root_if, "type", "veth", "peer", "name", "veth0", "netns", &ns.name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                continue;
            }
            ns.root_veth = Some(root_if.clone());
            let root4 = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 51, 100, 0)) + 4 * slot + 1);
            let ns4 = Ipv4Addr::from(u32::from(root4) + 1);
            let root6: Ipv6Addr = format!("2001:db8::{slot:x}:1").parse()?; // slot 0: 2001:db8::1
            let ns6: Ipv6Addr = format!("2001:db8::{slot:x}:2").parse()?;
            let root4s = format!("{root4}/30");
            let root6s = format!("{root6}/112");
            let ns6s = format!("{ns6}/112");
            ip_cmd(&["addr", "add", &root4s, "dev", &root_if])?;
            ip_cmd(&["-6", "addr", "add", &root6s, "dev", &root_if, "nodad"])?;
            ip_cmd(&["link", "set", &root_if, "up"])?;
            ns.setup_if("veth0", &format!("{ns4}/30"), &ns6s)?;
            ns.v4 = Some((ns4, root4));
            ns.v6 = Some((ns6, root6));
            return Ok(ns);
        }
        bail!("no free root veth slot (links {ROOT_VETH_PREFIX}0..63 all exist)")
    }

    fn setup_if(&self, ifname: &str, v4: &str, v6: &str) -> Result<()> {
        let n = self.name.as_str();
        // DAD off so the IPv6 addresses are usable at once (plus `nodad` per address).
        let _ = ip_cmd(&["netns", "exec", n, "sysctl", "-qw", &format!("net.ipv6.conf.{ifname}.accept_dad=0")]);
        ip_cmd(&["-n", n, "addr", "add", v4, "dev", ifname])?;
        ip_cmd(&["-n", n, "-6", "addr", "add", v6, "dev", ifname, "nodad"])?;
        ip_cmd(&["-n", n, "link", "set", ifname, "up"])?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    /// This namespace's veth IPv4 address (None for [`new`](Self::new)).
    pub fn v4(&self) -> Option<Ipv4Addr> {
        self.v4.map(|a| a.0)
    }
    /// The other end's IPv4 address (the peer namespace or the root namespace).
    pub fn peer_v4(&self) -> Option<Ipv4Addr> {
        self.v4.map(|a| a.1)
    }
    pub fn v6(&self) -> Option<Ipv6Addr> {
        self.v6.map(|a| a.0)
    }
    pub fn peer_v6(&self) -> Option<Ipv6Addr> {
        self.v6.map(|a| a.1)
    }
    /// Root-side veth name for [`to_root`](Self::to_root).
    pub fn root_veth(&self) -> Option<&str> {
        self.root_veth.as_deref()
    }

    /// `cmd` rewritten as `ip netns exec NAME <program> <args...>` (env/cwd kept).
    pub fn exec(&self, cmd: Command) -> Command {
        let mut c = Command::new(ip_bin());
        c.arg("netns").arg("exec").arg(&self.name).arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            c.current_dir(d);
        }
        c
    }

    /// `ip netns exec NAME program`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.exec(Command::new(program))
    }

    /// Run `f` on a thread that has entered this namespace (setns). Sockets created in `f`
    /// stay in the namespace after it returns, so a test can e.g. connect a `TcpStream` to a
    /// daemon inside and use it from anywhere.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        let file = fs::File::open(&path).with_context(|| format!("open {path}"))?;
        std::thread::spawn(move || -> Result<T> {
            use std::os::fd::AsRawFd;
            // SAFETY: plain syscall on a valid fd; affects only this thread.
            if unsafe { c_setns(file.as_raw_fd(), CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error()).context("setns");
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow!("thread in netns panicked"))?
    }

    /// PIDs of processes still inside (`ip netns pids`).
    pub fn pids(&self) -> Vec<u32> {
        ip_cmd(&["netns", "pids", &self.name])
            .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Delete namespaces `dnsbgpd-test-<pid>-*` whose creating process is gone (crashed
    /// runs), after killing what still runs inside them (leftover daemons of those runs).
    /// Returns the names deleted. Called once per process by [`new`](Self::new).
    pub fn clean_stale() -> Result<Vec<String>> {
        let list = ip_cmd(&["netns", "list"])?;
        let mut deleted = Vec::new();
        for line in list.lines() {
            let Some(name) = line.split_whitespace().next() else { continue };
            let Some(rest) = name.strip_prefix(NETNS_PREFIX) else { continue };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
            if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            for p in ip_cmd(&["netns", "pids", name]).unwrap_or_default().split_whitespace() {
                if let Ok(p) = p.parse::<i32>() {
                    let _ = send_signal(p, SIGKILL);
                }
            }
            if ip_cmd(&["netns", "del", name]).is_ok() {
                deleted.push(name.to_string());
            }
        }
        Ok(deleted)
    }
}

const CLONE_NEWNET: i32 = 0x4000_0000;

unsafe extern "C" {
    #[link_name = "setns"]
    fn c_setns(fd: i32, nstype: i32) -> i32;
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Daemons should have been dropped first; anything left is ours (unique namespace).
        for p in self.pids() {
            let _ = send_signal(p as i32, SIGKILL);
        }
        if !self.pids().is_empty() {
            sleep(Duration::from_millis(50));
        }
        if let Some(v) = &self.root_veth {
            let _ = ip_cmd(&["link", "del", v]);
        }
        let _ = ip_cmd(&["netns", "del", &self.name]);
    }
}

impl std::fmt::Debug for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Netns({} v4 {:?} v6 {:?})", self.name, self.v4, self.v6)
    }
}

//! BIRD 2.0.12 (`bird2`) as a BGP peer on loopback or in a [`Netns`](super::netns::Netns),
//! with `birdc` helpers that parse `show route all`. Measured facts and bird's graceful
//! restart behaviour: see [`bgp_peers`](super::bgp_peers).

#![allow(dead_code)]

use super::process::*;
use super::wait_for;
use anyhow::{Context, Result, anyhow, bail};
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const BIRD_BINS: &[&str] = &["bird", "birdc"];

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

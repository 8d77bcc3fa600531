//! GoBGP 3.x (`gobgpd` + the `gobgp` CLI with JSON output) as a BGP peer.

#![allow(dead_code)]

use super::process::*;
use super::wait_for;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const GOBGP_BINS: &[&str] = &["gobgpd", "gobgp"];

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

//! FRR 8.4 `bgpd` alone (no zebra) as a BGP peer, with `vtysh` JSON helpers.

#![allow(dead_code)]

use super::process::*;
use super::wait_for;
use anyhow::{Context, Result, anyhow};
use serde_json::Value;
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// FRR's bgpd is not on PATH.
pub const FRR_BGPD: &str = "/usr/lib/frr/bgpd";
pub const FRR_BINS: &[&str] = &[FRR_BGPD, "vtysh"];

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

//! Network namespaces with veth links (198.51.100.0/24, 2001:db8::/64) for
//! tests that need real, non-loopback links; deleted on drop.

#![allow(dead_code)]

use super::prereq::{require, skip};
use super::process::*;
use anyhow::{Context, Result, anyhow, bail};
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::Duration;

pub const NETNS_BINS: &[&str] = &["ip"];

/// `ip` exists and we may create network namespaces (root / CAP_SYS_ADMIN). Same SKIP/CI
/// behaviour as [`require_bgp`].
pub fn require_netns() -> bool {
    if !require(NETNS_BINS) {
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

//! Puts the filter on the resolver, and keeps it there.
//!
//! Socket mode: the resolver (by `pid_file`, re-read on every scan, or by
//! executable name in `/proc/PID/comm`) is scanned every
//! `rescan_interval`: its UDP sockets and listening TCP sockets bound to
//! `port` are read from `/proc/PID/net/{udp,udp6,tcp,tcp6}` (its own
//! network namespace), matched to its descriptors by inode through
//! `/proc/PID/fd`, duplicated with `pidfd_open` + `pidfd_getfd`, and given
//! the socket filter with `SO_ATTACH_BPF`. The duplicate is closed at once
//! (holding it would keep a restarted resolver's old sockets alive in its
//! SO_REUSEPORT group). A socket that already carries a filter that is not
//! ours is refused unless `replace = true`. On shutdown every socket is
//! found again and detached (`SO_DETACH_BPF`), unless `keep_on_exit`.
//!
//! Cgroup mode: the cgroup_skb/ingress program goes on the resolver's
//! cgroup (or `cgroup`) once; it covers every socket, also after restarts,
//! and checks the destination port itself. With `keep_on_exit` its link is
//! pinned under `pin_path` and replaced by the next run.
//!
//! Problems go into [`FilterStatus::errors`] as sentences and are logged
//! once per change; the scan goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::attach_config::{AttachMode, AttachSettings, Resolver};
use super::filter::Filter;
use super::kernel::{AttachedSocket, FilterStatus};

/// One socket of the resolver bound to the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundSocket {
    pub pid: u32,
    pub fd: RawFd,
    pub inode: u64,
    pub protocol: &'static str,
    pub local: SocketAddr,
}

/// The pids of the resolver; an error sentence when there is none.
pub fn resolver_pids(resolver: &Resolver) -> Result<Vec<u32>, String> {
    match resolver {
        Resolver::PidFile(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the resolver's pid file {}: {e}", path.display()))?;
            let pid: u32 = text
                .trim()
                .parse()
                .map_err(|_| format!("pid file {} does not hold a pid: {:?}", path.display(), text.trim()))?;
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(format!("pid {pid} from {} is not running", path.display()));
            }
            Ok(vec![pid])
        }
        Resolver::Process(name) => {
            let mut pids = Vec::new();
            for e in std::fs::read_dir("/proc").map_err(|e| format!("cannot read /proc: {e}"))?.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
                if std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == name) {
                    pids.push(pid);
                }
            }
            if pids.is_empty() {
                return Err(format!("no process named {name:?} is running"));
            }
            pids.sort_unstable();
            Ok(pids)
        }
    }
}

fn parse_hex_addr(s: &str) -> Option<IpAddr> {
    match s.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(s, 16).ok()?.to_ne_bytes()))),
        32 => {
            let mut b = [0u8; 16];
            for (i, chunk) in b.chunks_mut(4).enumerate() {
                let w = u32::from_str_radix(s.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&w.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// Sockets bound to `port` in one `/proc/PID/net/*` table: inode → local
/// address. TCP: listeners only (state 0A).
pub fn parse_net_table(text: &str, port: u16, tcp: bool) -> Vec<(u64, SocketAddr)> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let Some((addr, p)) = f[1].split_once(':') else { continue };
        let (Some(ip), Ok(p)) = (parse_hex_addr(addr), u16::from_str_radix(p, 16)) else { continue };
        if p != port || (tcp && f[3] != "0A") {
            continue;
        }
        let Ok(inode) = f[9].parse::<u64>() else { continue };
        if inode != 0 {
            out.push((inode, SocketAddr::new(ip, p)));
        }
    }
    out
}

/// Every UDP socket and TCP listener of `pid` bound to `port`.
pub fn find_sockets(pid: u32, port: u16) -> Result<Vec<FoundSocket>, String> {
    let mut by_inode = BTreeMap::new();
    for (table, proto, tcp) in
        [("udp", "udp", false), ("udp6", "udp", false), ("tcp", "tcp", true), ("tcp6", "tcp", true)]
    {
        let path = format!("/proc/{pid}/net/{table}");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (inode, local) in parse_net_table(&text, port, tcp) {
                    by_inode.insert(inode, (proto, local));
                }
            }
            // No IPv6 in that namespace: nothing to find there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {path}: {e}")),
        }
    }
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list {dir}: {e} (reading another process's descriptors needs CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE, or root)"))?;
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else { continue };
        let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok())
        else {
            continue;
        };
        let Some((protocol, local)) = by_inode.get(&inode) else { continue };
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok()) else { continue };
        out.push(FoundSocket { pid, fd, inode, protocol, local: *local });
    }
    out.sort_by_key(|s| (s.inode, s.fd));
    // Inherited duplicates of one socket: attach once.
    out.dedup_by_key(|s| s.inode);
    Ok(out)
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a hybrid system).
pub fn cgroup2_mount() -> PathBuf {
    std::fs::read_to_string("/proc/mounts")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
            })
        })
        .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"))
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A duplicate of descriptor `fd` of `pid`.
pub fn steal_fd(pid: u32, fd: RawFd) -> Result<OwnedFd, String> {
    let pidfd = pidfd_open(pid).map_err(|e| format!("pidfd_open({pid}): {e}"))?;
    // SAFETY: plain syscall; a non-negative result is a new descriptor we own.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if dup < 0 {
        let e = std::io::Error::last_os_error();
        let hint = if e.raw_os_error() == Some(libc::EPERM) { " (needs CAP_SYS_PTRACE, or root)" } else { "" };
        return Err(format!("pidfd_getfd(pid {pid}, fd {fd}): {e}{hint}"));
    }
    Ok(unsafe { OwnedFd::from_raw_fd(dup as RawFd) })
}

/// Whether the socket carries a filter: classic (a length) or eBPF
/// (`SO_GET_FILTER` answers EACCES for those).
fn has_filter(sock: &OwnedFd) -> bool {
    let mut len: libc::socklen_t = 0;
    // SAFETY: a zero-length query; the kernel writes only `len`.
    let rc = unsafe {
        libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, std::ptr::null_mut(), &mut len)
    };
    if rc == 0 {
        return len > 0;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EACCES)
}

fn set_int(sock: &OwnedFd, opt: libc::c_int, value: libc::c_int) -> std::io::Result<()> {
    // SAFETY: an int option value.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Keeps the filter on the resolver.
pub struct Attacher {
    filter: Arc<Filter>,
    settings: AttachSettings,
    status: Arc<Mutex<FilterStatus>>,
    /// Socket inodes carrying our filter, with what we know of them.
    attached: BTreeMap<u64, AttachedSocket>,
    /// The cgroup link (cgroup mode), when attached.
    cgroup: Option<CgroupAttachment>,
    last_errors: Vec<String>,
}

struct CgroupAttachment {
    dir: PathBuf,
    link: Option<aya::programs::links::FdLink>,
}

impl Attacher {
    pub fn new(filter: Arc<Filter>, settings: AttachSettings) -> Attacher {
        let status = filter.status_handle();
        Attacher { filter, settings, status, attached: BTreeMap::new(), cgroup: None, last_errors: Vec::new() }
    }

    /// One pass: find the resolver's sockets, attach where missing, update
    /// the status.
    pub fn scan(&mut self) {
        let mut errors = Vec::new();
        match self.settings.mode {
            AttachMode::Socket => self.scan_sockets(&mut errors),
            AttachMode::Cgroup => self.scan_cgroup(&mut errors),
        }
        let up = match self.settings.mode {
            AttachMode::Socket => !self.attached.is_empty(),
            AttachMode::Cgroup => self.cgroup.is_some(),
        };
        if errors != self.last_errors {
            for e in errors.iter().filter(|e| !self.last_errors.contains(e)) {
                warn!(error = %e, "kernel filter");
            }
            self.last_errors = errors.clone();
        }
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        *st = FilterStatus {
            up,
            mode: match self.settings.mode {
                AttachMode::Socket => "socket".into(),
                AttachMode::Cgroup => "cgroup".into(),
            },
            sockets: self.attached.values().cloned().collect(),
            cgroup: self.cgroup.as_ref().map(|c| c.dir.display().to_string()),
            errors,
        };
    }

    fn scan_sockets(&mut self, errors: &mut Vec<String>) {
        let pids = match resolver_pids(&self.settings.resolver) {
            Ok(p) => p,
            Err(e) => {
                errors.push(e);
                self.attached.clear();
                return;
            }
        };
        let mut seen = BTreeSet::new();
        // Named by `process`, other programs of that name (another resolver
        // on another port) are no error: the resolver is whichever of them
        // is bound to the port, and only when none is does it count.
        let by_name = match &self.settings.resolver {
            Resolver::Process(name) => Some(name.clone()),
            Resolver::PidFile(_) => None,
        };
        let mut pid_errors = Vec::new();
        let mut without = Vec::new();
        for pid in pids {
            let found = match find_sockets(pid, self.settings.port) {
                Ok(f) => f,
                Err(e) => {
                    pid_errors.push(e);
                    continue;
                }
            };
            if found.is_empty() {
                without.push(pid);
                continue;
            }
            for s in found {
                seen.insert(s.inode);
                if self.attached.contains_key(&s.inode) {
                    continue;
                }
                match self.attach_socket(&s) {
                    Ok(()) => {
                        info!(pid = s.pid, inode = s.inode, protocol = s.protocol, local = %s.local, "kernel filter attached");
                        self.filter.mark_attached(s.inode, true);
                        self.attached.insert(
                            s.inode,
                            AttachedSocket { pid: s.pid, inode: s.inode, protocol: s.protocol, local: s.local },
                        );
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        let port = self.settings.port;
        match by_name {
            Some(_) if !seen.is_empty() => {}
            Some(name) => {
                let list: Vec<String> = without.iter().map(u32::to_string).collect();
                if !list.is_empty() {
                    errors.push(format!(
                        "no process named {name:?} has a socket on port {port} (pids {})",
                        list.join(", ")
                    ));
                }
                errors.extend(pid_errors);
            }
            None => {
                errors.extend(pid_errors);
                errors
                    .extend(without.iter().map(|pid| format!("the resolver (pid {pid}) has no socket on port {port}")));
            }
        }
        // Sockets that are gone (resolver restarted or closed them).
        let gone: Vec<u64> = self.attached.keys().filter(|i| !seen.contains(i)).copied().collect();
        for inode in gone {
            self.attached.remove(&inode);
            self.filter.mark_attached(inode, false);
        }
    }

    fn attach_socket(&self, s: &FoundSocket) -> Result<(), String> {
        let dup = steal_fd(s.pid, s.fd)?;
        if has_filter(&dup) && !self.settings.replace && !self.filter.was_attached(s.inode) {
            return Err(format!(
                "{} socket {} (pid {}, inode {}) already carries a filter that is not dnsbgpd's; \
                 set replace = true in [blocking.attach] to replace it",
                s.protocol, s.local, s.pid, s.inode
            ));
        }
        let attached = self.filter.with_socket_program(|prog| set_int(&dup, libc::SO_ATTACH_BPF, prog.as_raw_fd()));
        match attached {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!(
                "SO_ATTACH_BPF on {} socket {} (pid {}, inode {}): {e}{}",
                s.protocol,
                s.local,
                s.pid,
                s.inode,
                if e.raw_os_error() == Some(libc::EPERM) {
                    " (the owner locked its filter: SO_LOCK_FILTER)"
                } else {
                    ""
                }
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    fn cgroup_dir(&self) -> Result<PathBuf, String> {
        if let Some(c) = &self.settings.cgroup {
            return Ok(c.clone());
        }
        let pids = resolver_pids(&self.settings.resolver)?;
        // Several processes of the name: the resolver's cgroup is that of the
        // one bound to the port.
        let pid = match pids.as_slice() {
            [one] => *one,
            _ => pids
                .iter()
                .copied()
                .find(|&p| find_sockets(p, self.settings.port).is_ok_and(|f| !f.is_empty()))
                .ok_or_else(|| {
                    format!(
                        "none of the processes of that name (pids {pids:?}) has a socket on port {}",
                        self.settings.port
                    )
                })?,
        };
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map_err(|e| format!("cannot read /proc/{pid}/cgroup: {e}"))?;
        let rel = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or_else(|| format!("pid {pid} is in no cgroup v2 hierarchy (cgroup mode needs cgroup v2)"))?;
        Ok(cgroup2_mount().join(rel.trim_start_matches('/')))
    }

    fn scan_cgroup(&mut self, errors: &mut Vec<String>) {
        if self.cgroup.is_some() {
            return;
        }
        let dir = match self.cgroup_dir() {
            Ok(d) => d,
            Err(e) => {
                errors.push(e);
                return;
            }
        };
        match self.attach_cgroup(&dir) {
            Ok(link) => {
                info!(cgroup = %dir.display(), "kernel filter attached to the cgroup");
                self.cgroup = Some(CgroupAttachment { dir, link });
            }
            Err(e) => errors.push(e),
        }
    }

    fn link_pin(&self) -> Option<PathBuf> {
        self.filter.pin_path().map(|p| p.join("cgroup_link"))
    }

    fn attach_cgroup(&self, dir: &Path) -> Result<Option<aya::programs::links::FdLink>, String> {
        use aya::programs::cgroup_skb::CgroupSkbAttachType;
        use aya::programs::links::{CgroupAttachMode, FdLink, PinnedLink};
        let f = File::open(dir).map_err(|e| format!("cannot open cgroup {}: {e}", dir.display()))?;
        let link = self
            .filter
            .with_cgroup_program(|prog| -> Result<FdLink, String> {
                let id =
                    // A bpf_link is always one of many on its cgroup; the
                    // link API takes no ALLOW_MULTI flag ("Single" = none).
                    prog.attach(&f, CgroupSkbAttachType::Ingress, CgroupAttachMode::Single).map_err(|e| {
                        let mut text = e.to_string();
                        let mut cur = std::error::Error::source(&e);
                        while let Some(c) = cur {
                            text = format!("{text}: {c}");
                            cur = c.source();
                        }
                        let hint = if text.contains("os error 1)") {
                            " (needs CAP_NET_ADMIN and CAP_BPF, or root)"
                        } else {
                            ""
                        };
                        format!("cannot attach to cgroup {}: {text}{hint}", dir.display())
                    })?;
                let link = prog.take_link(id).map_err(|e| e.to_string())?;
                FdLink::try_from(link).map_err(|e| e.to_string())
            })
            .map_err(|e| e.to_string())??;
        // A previous run's pinned link goes once the new one is on.
        if let Some(pin) = self.link_pin() {
            if pin.exists() {
                if let Ok(old) = PinnedLink::from_pin(&pin) {
                    let _ = old.unpin();
                }
                let _ = std::fs::remove_file(&pin);
            }
            if self.settings.keep_on_exit {
                link.pin(&pin).map_err(|e| format!("cannot pin the cgroup link at {}: {e}", pin.display()))?;
                return Ok(None);
            }
        }
        Ok(Some(link))
    }

    /// On shutdown: detach, unless `keep_on_exit`.
    pub fn finish(&mut self) {
        if self.settings.keep_on_exit {
            info!(sockets = self.attached.len(), "kernel filter left attached (keep_on_exit)");
            return;
        }
        if let Some(c) = self.cgroup.take() {
            drop(c.link);
            if let Some(pin) = self.link_pin()
                && let Ok(l) = aya::programs::links::PinnedLink::from_pin(&pin)
            {
                let _ = l.unpin();
            }
            info!(cgroup = %c.dir.display(), "kernel filter detached from the cgroup");
        }
        let attached = std::mem::take(&mut self.attached);
        let pids: BTreeSet<u32> = attached.values().map(|s| s.pid).collect();
        let mut done = 0;
        for pid in pids {
            for s in find_sockets(pid, self.settings.port).unwrap_or_default() {
                if !attached.contains_key(&s.inode) {
                    continue;
                }
                match steal_fd(s.pid, s.fd).and_then(|d| set_int(&d, libc::SO_DETACH_BPF, 0).map_err(|e| e.to_string()))
                {
                    Ok(()) => done += 1,
                    Err(e) => warn!(inode = s.inode, error = %e, "cannot detach the kernel filter"),
                }
                self.filter.mark_attached(s.inode, false);
            }
        }
        info!(sockets = done, "kernel filter detached");
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.up = false;
        st.sockets.clear();
    }

    /// Scans every `rescan_interval` until `shutdown`, then finishes.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.rescan_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.scan(),
            }
        }
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_tables_parse() {
        let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                   1: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 4242 2 0000000000000000 0\n\
                   2: 0100007F:14EA 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 4243 2 0000000000000000 0\n";
        assert_eq!(parse_net_table(udp, 5353, false), vec![(4242, "127.0.0.1:5353".parse().unwrap())]);
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                   0: 0100007F:14E9 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 77 1 0 100 0 0 10 0\n\
                   1: 0100007F:14E9 0100007F:C350 01 00000000:00000000 00:00000000 00000000   101        0 78 1 0 100 0 0 10 0\n";
        assert_eq!(parse_net_table(tcp, 5353, true), vec![(77, "127.0.0.1:5353".parse().unwrap())]);
        let udp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                    0: 00000000000000000000000001000000:14E9 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 99 2 0 0\n";
        assert_eq!(parse_net_table(udp6, 5353, false), vec![(99, "[::1]:5353".parse().unwrap())]);
        assert!(parse_net_table("garbage\nmore garbage here", 53, false).is_empty());
    }

    #[test]
    fn finds_own_sockets() {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        let t = std::net::TcpListener::bind(("127.0.0.1", port));
        let found = find_sockets(std::process::id(), port).unwrap();
        assert!(found.iter().any(|s| s.protocol == "udp" && s.fd == u.as_raw_fd()), "{found:?}");
        if let Ok(t) = &t {
            assert!(found.iter().any(|s| s.protocol == "tcp" && s.fd == t.as_raw_fd()), "{found:?}");
        }
        assert!(
            matches!(resolver_pids(&Resolver::Process("no-such-proc-x".into())), Err(e) if e.contains("no process"))
        );
        let missing = Resolver::PidFile("/nonexistent/x.pid".into());
        assert!(resolver_pids(&missing).unwrap_err().contains("/nonexistent/x.pid"));
    }
}

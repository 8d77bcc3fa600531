//! The shared process helper of the peer harnesses: find a binary, pick a
//! free loopback port, spawn a daemon in its own process group with its
//! output in a log file ([`Process`]), wait until it is ready
//! ([`Process::wait_ready`]), stop it by PID (SIGTERM, then SIGKILL to its
//! group; also on drop) and show its log when something fails.

#![allow(dead_code)]

use super::prereq::debian_package;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a daemon may take from spawn to ready.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(10);
pub const START_ATTEMPTS: usize = 3;
// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

pub const EXTRA_BIN_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"];

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

pub fn is_executable(p: &Path) -> bool {
    fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

pub fn bin(name: &str) -> Result<PathBuf> {
    find_bin(name).ok_or_else(|| anyhow!("binary `{name}` not found (Debian package `{}`)", debian_package(name)))
}

pub fn ip_bin() -> PathBuf {
    find_bin("ip").unwrap_or_else(|| PathBuf::from("ip"))
}
// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

pub static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

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

    /// Whether the child was started and not yet stopped by [`Process::kill`].
    pub fn started(&self) -> bool {
        self.child.is_some()
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

    /// Polls `ready` every 20 ms until it says yes; fails with the tail of
    /// the log when the process exits first or `timeout` passes. Returns how
    /// long it took. `ready` errors are remembered and shown on failure.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        what: &str,
        mut ready: impl FnMut() -> Result<bool>,
    ) -> Result<Duration> {
        let start = Instant::now();
        let mut last = String::new();
        loop {
            if !self.is_running() {
                bail!("{} exited before {what}; log:\n{}", self.name, self.log_tail(30));
            }
            match ready() {
                Ok(true) => return Ok(start.elapsed()),
                Ok(false) => {}
                Err(e) => last = format!(" (last: {e:#})"),
            }
            if start.elapsed() > timeout {
                bail!("{} not {what} within {timeout:?}{last}; log:\n{}", self.name, self.log_tail(30));
            }
            sleep(Duration::from_millis(20));
        }
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

/// Fresh `base/prefix`, `base/prefix.1`, ...
pub fn unique_subdir(base: &Path, prefix: &str) -> Result<PathBuf> {
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

pub fn abs(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() { Ok(p.to_path_buf()) } else { Ok(std::env::current_dir()?.join(p)) }
}

pub fn write_file(p: &Path, content: &str) -> Result<()> {
    let mut f = File::create(p).with_context(|| format!("create {}", p.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

pub fn check_unix_path(p: &Path) -> Result<()> {
    // sun_path is 108 bytes including the NUL.
    if p.as_os_str().len() > 100 {
        bail!("unix socket path too long ({} bytes): {}", p.as_os_str().len(), p.display());
    }
    Ok(())
}

pub fn run_check(what: &str, mut cmd: Command) -> Result<()> {
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

/// `cmd` wrapped in `ip netns exec NS` when `netns` is set.
pub fn in_netns(netns: Option<&str>, program: &Path) -> Command {
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
pub fn run(what: &str, mut cmd: Command) -> Result<String> {
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

/// Whether a failed start looks like a lost port race (worth retrying with another port).
pub fn port_race(log: &str) -> bool {
    let l = log.to_ascii_lowercase();
    ["address already in use", "could not bind", "can't bind", "cannot bind"].iter().any(|s| l.contains(s))
}

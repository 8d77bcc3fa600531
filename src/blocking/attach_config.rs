//! `[blocking.attach]`: which resolver the kernel filter goes on, and how.
//!
//! Part of the two-step config parse (serde with `deny_unknown_fields`,
//! then [`validate`] into typed [`AttachSettings`]), called from the
//! `[blocking]` section's parser.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::values::{ConfigDuration, resolve};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttach {
    pub pid_file: Option<Spanned<PathBuf>>,
    pub process: Option<Spanned<String>>,
    pub port: Option<Spanned<u16>>,
    pub mode: Option<Spanned<String>>,
    pub cgroup: Option<Spanned<PathBuf>>,
    pub replace: Option<bool>,
    pub keep_on_exit: Option<Spanned<bool>>,
    pub pin_path: Option<Spanned<PathBuf>>,
    pub rescan_interval: Option<Spanned<ConfigDuration>>,
}

/// How the resolver is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolver {
    /// The pid in this file (re-read on every rescan: a restarted resolver
    /// writes a new one).
    PidFile(PathBuf),
    /// Every process whose executable has this name (`/proc/PID/comm`).
    Process(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// SO_ATTACH_BPF on every socket of the resolver bound to `port`.
    Socket,
    /// A cgroup-skb ingress program on the resolver's cgroup.
    Cgroup,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachSettings {
    pub resolver: Resolver,
    pub port: u16,
    pub mode: AttachMode,
    /// The cgroup directory (cgroup mode); `None`: the resolver's own, from
    /// `/proc/PID/cgroup`.
    pub cgroup: Option<PathBuf>,
    /// Replace a filter another program put on a socket (refused otherwise).
    pub replace: bool,
    /// Leave the filter attached when dnsbgpd exits (needs `pin_path`).
    pub keep_on_exit: bool,
    /// bpffs directory the maps are pinned in; `None`: not pinned.
    pub pin_path: Option<PathBuf>,
    /// How often the resolver's sockets are looked for again.
    pub rescan_interval: Duration,
}

pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_millis(250);

/// Checks `raw`; `whole` is the section's span for problems of the section.
pub fn validate(
    raw: RawAttach,
    whole: Range<usize>,
    base: &Path,
    problem: &mut dyn FnMut(Range<usize>, String),
) -> Option<AttachSettings> {
    let resolver = match (raw.pid_file, raw.process) {
        (Some(f), None) => Some(Resolver::PidFile(resolve(base, f.get_ref()))),
        (None, Some(p)) => {
            let name = p.get_ref();
            // /proc/PID/comm holds at most 15 bytes.
            if name.is_empty() || name.len() > 15 || name.contains('/') {
                problem(p.span(), format!("process {name:?} must be an executable name of 1 to 15 characters"));
                None
            } else {
                Some(Resolver::Process(name.clone()))
            }
        }
        (Some(f), Some(_)) => {
            problem(f.span(), "[blocking.attach]: give `pid_file` or `process`, not both".into());
            None
        }
        (None, None) => {
            problem(whole.clone(), "[blocking.attach] needs `pid_file` or `process` to find the resolver".into());
            None
        }
    };
    let port = match raw.port {
        Some(p) if *p.get_ref() == 0 => {
            problem(p.span(), "port must be between 1 and 65535".into());
            None
        }
        Some(p) => Some(p.into_inner()),
        None => {
            problem(whole.clone(), "[blocking.attach] needs `port`, the resolver's DNS port".into());
            None
        }
    };
    let mode = match raw.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
        None | Some(("socket", _)) => AttachMode::Socket,
        Some(("cgroup", _)) => AttachMode::Cgroup,
        Some((other, span)) => {
            problem(span, format!("unknown attach mode {other:?}: expected \"socket\" or \"cgroup\""));
            AttachMode::Socket
        }
    };
    if let (Some(c), AttachMode::Socket) = (&raw.cgroup, mode) {
        problem(c.span(), "`cgroup` only applies with mode = \"cgroup\"".into());
    }
    let pin_path = raw.pin_path.map(|p| resolve(base, p.get_ref()));
    let keep_on_exit = match raw.keep_on_exit {
        Some(k) if *k.get_ref() && pin_path.is_none() => {
            problem(
                k.span(),
                "keep_on_exit = true needs `pin_path`, so that a restart finds the blocks in force".into(),
            );
            false
        }
        Some(k) => k.into_inner(),
        None => false,
    };
    let rescan_interval = match raw.rescan_interval {
        Some(r) if r.get_ref().0 < Duration::from_millis(10) || r.get_ref().0 > Duration::from_secs(1) => {
            problem(r.span(), "rescan_interval must be between 10ms and 1s (re-attaching within 1s)".into());
            DEFAULT_RESCAN_INTERVAL
        }
        Some(r) => r.into_inner().0,
        None => DEFAULT_RESCAN_INTERVAL,
    };
    Some(AttachSettings {
        resolver: resolver?,
        port: port?,
        mode,
        cgroup: raw.cgroup.map(|c| resolve(base, c.get_ref())),
        replace: raw.replace.unwrap_or(false),
        keep_on_exit,
        pin_path,
        rescan_interval,
    })
}

//! The one rule for a missing prerequisite (a Debian package, root, a kernel
//! feature): outside CI the test prints `SKIP: <reason>` on stderr and returns
//! without checking anything; with `CI=true` (or `CI=1`) it fails, naming what
//! is missing. Every test and peer harness decides through [`skip`], so a CI
//! run can never count a skipped test as passed.

use std::fmt::Display;

use super::process::find_bin;

/// Whether this run is CI (`CI=true`, any case, or `CI=1`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A prerequisite is missing: panics under CI, else prints `SKIP: reason`
/// and returns false (so `return skip(..)` fits a `-> bool` check).
pub fn skip(reason: impl Display) -> bool {
    skip_ci(reason, ci())
}

/// [`skip`] with the CI decision made by the caller.
pub fn skip_ci(reason: impl Display, ci: bool) -> bool {
    if ci {
        panic!("CI=true and {reason}");
    }
    eprintln!("SKIP: {reason}");
    false
}

/// True when running as root; else [`skip`] naming `why` root is needed.
pub fn require_root(why: &str) -> bool {
    // SAFETY: a plain syscall without arguments.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip(format_args!("not root ({why})"))
}

/// True if all `bins` exist (on PATH or in the sbin dirs); else [`skip`]
/// naming each missing binary and its Debian package.
pub fn require(bins: &[&str]) -> bool {
    require_ci(bins, ci())
}

/// [`require`] with the CI decision made by the caller.
pub fn require_ci(bins: &[&str], ci: bool) -> bool {
    let missing: Vec<String> = bins
        .iter()
        .filter(|b| find_bin(b).is_none())
        .map(|b| format!("`{b}` (Debian package `{}`)", debian_package(b)))
        .collect();
    if missing.is_empty() {
        return true;
    }
    skip_ci(format_args!("missing binaries: {}; install them (apt-get install ...)", missing.join(", ")), ci)
}

/// Debian package providing `bin`.
pub fn debian_package(bin: &str) -> &'static str {
    match bin.rsplit('/').next().unwrap_or(bin) {
        "unbound" | "unbound-checkconf" | "unbound-control" => "unbound",
        "nsd" | "nsd-checkconf" | "nsd-control" => "nsd",
        "named" => "bind9",
        "named-checkconf" | "named-checkzone" | "rndc" => "bind9-utils",
        "dig" | "delv" | "nslookup" => "bind9-dnsutils",
        "fstrm_capture" | "fstrm_replay" | "fstrm_dump" => "fstrm-bin",
        "dnstap-ldns" => "dnstap-ldns",
        "faketime" => "faketime",
        "bird" | "birdc" | "birdcl" => "bird2",
        "gobgpd" | "gobgp" => "gobgpd",
        "bgpd" | "vtysh" | "zebra" => "frr",
        "ip" => "iproute2",
        "openssl" => "openssl",
        "systemd-analyze" => "systemd",
        "setpriv" => "util-linux",
        "clang" => "clang",
        "llvm-strip" => "llvm",
        "gcc" => "gcc",
        _ => "?",
    }
}

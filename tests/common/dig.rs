//! `dig` as the DNS client of the tests: one query, or polling until a
//! server answers.

#![allow(dead_code)]

use super::process::*;
use anyhow::{Context, Result, bail};
use std::process::{Command, Stdio};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// dig
// ---------------------------------------------------------------------------------------------

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
pub fn wait_answer(proc: &mut Process, port: u16, name: &str, expect: &str) -> Result<Duration> {
    proc.wait_ready(STARTUP_DEADLINE, &format!("answering {name} with {expect} on port {port}"), || {
        let lines = dig_opts(port, name, "A", &["+time=1", "+tries=1"])?;
        if lines.iter().any(|l| l == expect) { Ok(true) } else { bail!("answer {lines:?}") }
    })
}

//! The systemd side: every shipped unit (and the blocking drop-in) passes
//! `systemd-analyze verify`, the exposure level of `dnsbgpd.service` is
//! "OK" or better and is the one docs/operations.md records, and the
//! daemon speaks the `Type=notify` protocol (READY=1 once it serves,
//! STOPPING=1 at shutdown) to a socket the test listens on.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::peers::{self, find_bin};
use common::{Dnsbgpd, Options, Process, http};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `systemd-analyze` is there; else SKIP (or fail with CI=true).
fn require_systemd_analyze() -> bool {
    if find_bin("systemd-analyze").is_some() {
        return true;
    }
    common::skip("systemd-analyze is missing (Debian package systemd)")
}

/// The units with their binaries pointed at this build and the repository's
/// netns script (nothing is installed yet), in `dir`.
fn stage_units(dir: &Path) -> Result<()> {
    let src = root().join("deploy/systemd");
    let script = root().join("deploy/netns/dnsbgpd-netns");
    std::fs::create_dir_all(dir.join("dnsbgpd.service.d"))?;
    for unit in ["dnsbgpd.service", "dnsbgpd-netns@.service", "dnsbgpd.service.d/blocking.conf"] {
        let text = std::fs::read_to_string(src.join(unit))?
            .replace("/usr/bin/dnsbgpd ", &format!("{} ", common::binary()))
            .replace("/usr/sbin/dnsbgpd-netns ", &format!("{} ", script.display()));
        std::fs::write(dir.join(unit), text)?;
    }
    Ok(())
}

/// Runs `systemd-analyze ARGS`; fails on a non-zero exit or any message.
fn analyze(args: &[&str]) -> Result<String> {
    let out = Command::new("systemd-analyze").args(args).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stderr.trim().is_empty() {
        bail!("systemd-analyze {args:?} ({}):\n{stderr}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn every_unit_passes_systemd_analyze_verify() -> Result<()> {
    if !require_systemd_analyze() {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    stage_units(tmp.path())?;
    let unit = |u: &str| tmp.path().join(u).display().to_string();
    // dnsbgpd.service is verified with the drop-in beside it (systemd reads
    // <unit>.d/ next to the unit file); the template as an instance.
    analyze(&["verify", "--man=no", &unit("dnsbgpd.service")])?;
    analyze(&["verify", "--man=no", &unit("dnsbgpd-netns@otest.service")])?;
    // A broken unit does fail this check (it is not blind).
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken)?;
    std::fs::write(broken.join("b.service"), "[Service]\nExecStart=/nonexistent/x\nNoSuchKey=1\n")?;
    assert!(analyze(&["verify", "--man=no", &broken.join("b.service").display().to_string()]).is_err());
    Ok(())
}

/// The exposure level and its word ("OK", "SAFE", ...).
fn exposure(unit: &Path) -> Result<(f64, String)> {
    let out = analyze(&["security", "--offline=yes", &unit.display().to_string()])?;
    let line = out.lines().find(|l| l.contains("Overall exposure level")).context("no exposure line")?;
    let rest = line.rsplit_once(": ").context("exposure line")?.1;
    let mut words = rest.split_whitespace();
    let level: f64 = words.next().context("level")?.parse()?;
    Ok((level, words.next().unwrap_or_default().to_string()))
}

#[test]
fn the_unit_exposure_is_ok_and_recorded_in_the_docs() -> Result<()> {
    if !require_systemd_analyze() {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    stage_units(tmp.path())?;
    let with_dropin = exposure(&tmp.path().join("dnsbgpd.service"))?;
    std::fs::remove_file(tmp.path().join("dnsbgpd.service.d/blocking.conf"))?;
    let plain = exposure(&tmp.path().join("dnsbgpd.service"))?;
    for (what, (level, word)) in [("plain", &plain), ("with the blocking drop-in", &with_dropin)] {
        assert!(word == "OK" || word == "SAFE", "{what}: exposure {level} {word}");
    }
    let docs = std::fs::read_to_string(root().join("docs/operations.md"))?;
    for (level, word) in [&plain, &with_dropin] {
        let text = format!("{level:.1} {word}");
        assert!(docs.contains(&text), "docs/operations.md does not record the exposure level {text:?}");
    }
    Ok(())
}

/// Receives one notification within `timeout`.
fn recv(socket: &UnixDatagram, timeout: Duration) -> Result<String> {
    socket.set_read_timeout(Some(timeout))?;
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).context("no notification")?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn sd_notify_ready_once_serving_and_stopping_at_shutdown() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = Dnsbgpd::configure(tmp.path(), &Options::default())?;
    let notify: PathBuf = tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify)?;
    let mut cmd = Command::new(common::binary());
    cmd.args(["run", "--config"]).arg(&d.config).env("NOTIFY_SOCKET", &notify);
    let mut p = Process::spawn("dnsbgpd", cmd, &d.dir.join("dnsbgpd.log"))?;
    let started = Instant::now();
    let ready = recv(&socket, Duration::from_secs(20)).with_context(|| p.log())?;
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // When READY=1 arrives the daemon serves: API ready, dnstap socket bound.
    let (code, _) = http(d.api, "GET", "/api/v1/status")?;
    assert_eq!(code, 200, "READY=1 before the API said ready");
    assert!(d.socket.exists(), "READY=1 before the dnstap socket");
    assert!(started.elapsed() < Duration::from_secs(20));
    p.signal(peers::SIGTERM)?;
    let stopping = recv(&socket, Duration::from_secs(10)).with_context(|| p.log())?;
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let exit = p.wait_exit(Duration::from_secs(15));
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}: {}", p.log());
    Ok(())
}

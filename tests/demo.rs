//! `deploy/demo.sh` runs to the end, prints the route as bird and as
//! `dnsbgpd ctl routes` see it, and leaves nothing behind, also when it is
//! stopped with Ctrl-C (SIGINT) while it keeps everything running.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use common::peers;

fn demo() -> Command {
    let mut c = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/demo.sh"));
    c.env("DNSBGPD", common::binary());
    c
}

/// The temp dir the demo announced (`dnstap on DIR/dnstap.sock`).
fn demo_dir(output: &str) -> Option<PathBuf> {
    let line = output.lines().find(|l| l.contains("dnstap on "))?;
    let path = line.split("dnstap on ").nth(1)?.split(',').next()?;
    Path::new(path.trim()).parent().map(Path::to_path_buf)
}

/// Processes whose command line mentions `dir` (what the demo started).
fn processes_in(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&needle) {
                found.push(cmd);
            }
        }
    }
    found
}

#[test]
fn the_demo_prints_the_route_and_cleans_up() -> Result<()> {
    if !peers::require(&["nsd", "unbound", "dig"]) || !common::bgp_peers::require_bgp(common::bgp_peers::BIRD_BINS) {
        return Ok(());
    }
    let out = demo().output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let bird = stdout.split("== bird: birdc show route all").nth(1).context("no bird section")?;
    let (bird, ctl) = bird.split_once("== dnsbgpd: dnsbgpd ctl routes").context("no ctl section")?;
    assert!(bird.contains("198.51.100.80/32") && bird.contains("BGP.as_path: 65010"), "{stdout}");
    assert!(bird.contains("2001:db8::80/128"), "{stdout}");
    assert!(ctl.lines().any(|l| l.starts_with("198.51.100.80/32 ") && l.contains("www.demo.test")), "{stdout}");
    let dir = demo_dir(&stdout).context("no temp dir in the output")?;
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(processes_in(&dir).is_empty(), "left running: {:?}", processes_in(&dir));
    Ok(())
}

#[test]
fn ctrl_c_stops_everything_the_demo_started() -> Result<()> {
    if !peers::require(&["nsd", "unbound", "dig"]) || !common::bgp_peers::require_bgp(common::bgp_peers::BIRD_BINS) {
        return Ok(());
    }
    let mut child = demo().env("KEEP", "1").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("Ctrl-C stops everything") {
                let _ = tx.send(seen.clone());
            }
        }
    });
    let seen = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(s) => s,
        Err(_) => {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            anyhow::bail!("the demo never got to running: {}", String::from_utf8_lossy(&out.stderr));
        }
    };
    let dir = demo_dir(&seen).context("no temp dir in the output")?;
    assert!(dir.exists() && !processes_in(&dir).is_empty(), "{seen}");
    peers::send_signal(child.id() as i32, 2)?; // SIGINT, as Ctrl-C sends it
    let status = common::wait_for(Duration::from_secs(20), "the demo to exit", || Ok(child.try_wait()?))?;
    assert_eq!(status.code(), Some(130), "exit status after Ctrl-C");
    common::wait_for(Duration::from_secs(10), "the demo's processes to go", || {
        Ok(processes_in(&dir).is_empty().then_some(()))
    })?;
    assert!(!dir.exists(), "{} left behind", dir.display());
    Ok(())
}

//! BIND 9.18 `named` as a recursive resolver on loopback: forward zones to
//! [`Nsd`](super::nsd::Nsd), dnstap to a unix socket.

#![allow(dead_code)]

use super::process::*;
use super::{dig::*, nsd::*};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const NAMED_BINS: &[&str] = &["named", "named-checkconf", "nsd", "nsd-checkconf", "dig"];

// ---------------------------------------------------------------------------------------------
// BIND named
// ---------------------------------------------------------------------------------------------

/// BIND 9.18 resolver on 127.0.0.1:`port()` with forward-only zones for [`TEST_ZONES`] to NSD
/// and dnstap `client query` + `client response` to the unix socket `dnstap_socket`.
/// (BIND's `dnstap-output` supports only `unix` and `file`, no TCP.)
pub struct Named {
    proc: Process,
    port: u16,
    dir: PathBuf,
    conf: PathBuf,
    startup: Duration,
}

impl Named {
    pub fn start(dir: &Path, nsd_port: u16, dnstap_socket: &Path) -> Result<Named> {
        let dir = unique_subdir(&abs(dir)?, "named")?;
        let sock = abs(dnstap_socket)?;
        check_unix_path(&sock)?;
        let mut last_err = None;
        for attempt in 0..START_ATTEMPTS {
            let port = free_port();
            let conf = dir.join("named.conf");
            write_file(&conf, &named_conf(&dir, port, nsd_port, &sock))?;
            if let Some(checkconf) = find_bin("named-checkconf") {
                let mut check = Command::new(checkconf);
                check.arg(&conf);
                run_check("named-checkconf", check)?;
            }
            let t0 = Instant::now();
            let mut cmd = Command::new(bin("named")?);
            // -g: foreground, log to stderr. No -u: stays root (no setuid; fine in tests).
            // -4: IPv4 only. -n 1: one worker thread (small machine).
            cmd.arg("-g").arg("-4").arg("-n").arg("1").arg("-c").arg(&conf);
            let mut proc = Process::spawn("named", cmd, &dir.join(format!("named.{attempt}.log")))?;
            match wait_answer(&mut proc, port, READINESS_NAME, PLAIN_OTHER_V4) {
                Ok(_) => {
                    return Ok(Named { proc, port, dir, conf, startup: t0.elapsed() });
                }
                Err(e) => {
                    let retry = port_race(&proc.log());
                    drop(proc);
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
}

fn named_conf(dir: &Path, port: u16, nsd_port: u16, sock: &Path) -> String {
    let d = dir.display();
    let sock = sock.display();
    let mut s = format!(
        r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    dump-file "{d}/named_dump.db";
    statistics-file "{d}/named.stats";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-query {{ 127.0.0.1; }};
    allow-recursion {{ 127.0.0.1; }};
    dnssec-validation no;
    qname-minimization off;
    notify no;
    dnstap {{ client query; client response; }};
    dnstap-output unix "{sock}";
    dnstap-identity "named-test";
    dnstap-version "named-test";
    fstrm-set-reopen-interval 1;
    fstrm-set-flush-timeout 1;
}};
controls {{ }};
"#
    );
    for zone in TEST_ZONES {
        s += &format!(
            "zone \"{zone}\" {{\n    type forward;\n    forward only;\n    forwarders {{ 127.0.0.1 port {nsd_port}; }};\n}};\n"
        );
    }
    s
}

//! Unbound 1.17 as a recursive resolver on loopback: stub zones to [`Nsd`](super::nsd::Nsd),
//! dnstap CLIENT_QUERY + CLIENT_RESPONSE to a unix socket or TCP.

#![allow(dead_code)]

use super::process::*;
use super::{dig::*, fstrm::*, nsd::*};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const UNBOUND_BINS: &[&str] = &["unbound", "unbound-checkconf", "nsd", "nsd-checkconf", "dig"];

// ---------------------------------------------------------------------------------------------
// Unbound
// ---------------------------------------------------------------------------------------------

/// Unbound recursive resolver on 127.0.0.1:`port()` with stub-zones for [`TEST_ZONES`] to NSD
/// and dnstap CLIENT_QUERY + CLIENT_RESPONSE to `dnstap`.
pub struct Unbound {
    proc: Process,
    port: u16,
    dir: PathBuf,
    conf: PathBuf,
    startup: Duration,
}

impl Unbound {
    pub fn start(dir: &Path, nsd_port: u16, dnstap: DnstapTarget) -> Result<Unbound> {
        Self::start_with(dir, nsd_port, dnstap, "")
    }

    /// Like [`start`](Self::start) with extra lines appended to the `server:` clause
    /// (indent them with 4 spaces), e.g. `"    prefetch: yes\n"`.
    pub fn start_with(dir: &Path, nsd_port: u16, dnstap: DnstapTarget, extra_server: &str) -> Result<Unbound> {
        let dir = unique_subdir(&abs(dir)?, "unbound")?;
        if let DnstapTarget::Unix(p) = &dnstap {
            check_unix_path(p)?;
        }
        let mut last_err = None;
        for attempt in 0..START_ATTEMPTS {
            let port = free_port();
            let conf = dir.join("unbound.conf");
            write_file(&conf, &unbound_conf(&dir, port, nsd_port, &dnstap, extra_server))?;
            let mut check = Command::new(bin("unbound-checkconf")?);
            check.arg(&conf);
            run_check("unbound-checkconf", check)?;
            let t0 = Instant::now();
            let mut cmd = Command::new(bin("unbound")?);
            cmd.arg("-d").arg("-c").arg(&conf);
            let mut proc = Process::spawn("unbound", cmd, &dir.join(format!("unbound.{attempt}.log")))?;
            match wait_answer(&mut proc, port, READINESS_NAME, PLAIN_OTHER_V4) {
                Ok(_) => {
                    return Ok(Unbound { proc, port, dir, conf, startup: t0.elapsed() });
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
    /// SIGTERM and wait (unbound flushes pending dnstap frames on a clean exit).
    pub fn stop(&mut self) {
        self.proc.kill();
    }
}

fn unbound_conf(dir: &Path, port: u16, nsd_port: u16, dnstap: &DnstapTarget, extra: &str) -> String {
    let d = dir.display();
    let target = match dnstap {
        DnstapTarget::Unix(p) => format!("    dnstap-socket-path: \"{}\"\n", p.display()),
        DnstapTarget::Tcp(a) => format!("    dnstap-ip: \"{}@{}\"\n    dnstap-tls: no\n", a.ip(), a.port()),
    };
    let mut s = format!(
        r#"server:
    interface: 127.0.0.1
    port: {port}
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    num-threads: 1
    so-reuseport: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    logfile: ""
    use-syslog: no
    verbosity: 1
    log-time-ascii: yes
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "iterator"
    auto-trust-anchor-file: ""
    trust-anchor-file: ""
    qname-minimisation: no
    harden-referral-path: no
    local-zone: "test." nodefault
    domain-insecure: "test."
{extra}remote-control:
    control-enable: no
dnstap:
    dnstap-enable: yes
{target}    dnstap-send-identity: yes
    dnstap-send-version: yes
    dnstap-identity: "unbound-test"
    dnstap-log-client-query-messages: yes
    dnstap-log-client-response-messages: yes
"#
    );
    for zone in TEST_ZONES {
        s += &format!("stub-zone:\n    name: \"{zone}.\"\n    stub-addr: 127.0.0.1@{nsd_port}\n");
    }
    s
}

//! NSD 4.x as the authoritative server of the test zones on loopback; the
//! zone data below is what every resolver test resolves.
//!
//!
//! Default TTL 300 (`DEFAULT_TTL`) unless noted.
//!
//! | name                     | type  | data                | const                |
//! |--------------------------|-------|---------------------|----------------------|
//! | `www.listed.test`        | A     | 198.51.100.10       | `WWW_LISTED_V4`      |
//! | `www.listed.test`        | AAAA  | 2001:db8::10        | `WWW_LISTED_V6`      |
//! | `edge.listed.test`       | A     | 198.51.100.11       | `EDGE_LISTED_V4`     |
//! | `edge.listed.test`       | AAAA  | 2001:db8::11        | `EDGE_LISTED_V6`     |
//! | `multi.listed.test`      | A     | 198.51.100.12, .13  | `MULTI_LISTED_V4`    |
//! | `deep.sub.listed.test`   | A     | 198.51.100.14       | `DEEP_LISTED_V4`     |
//! | `*.wild.listed.test`     | A     | 198.51.100.20       | `WILD_LISTED_V4`     |
//! | `chain.listed.test`      | CNAME | www.other.test.     | (→ `WWW_OTHER_V4`)   |
//! | `short.listed.test`      | A     | 198.51.100.70 TTL 2 | `SHORT_LISTED_V4`    |
//! | `www.other.test`         | A     | 198.51.100.30       | `WWW_OTHER_V4`       |
//! | `alias.other.test`       | CNAME | www.listed.test.    | (→ `WWW_LISTED_V4`)  |
//! | `cdn.other.test`         | CNAME | edge.other.test.    | (→ `EDGE_OTHER_V4`)  |
//! | `edge.other.test`        | A     | 198.51.100.40       | `EDGE_OTHER_V4`      |
//! | `plain.other.test`       | A     | 198.51.100.50       | `PLAIN_OTHER_V4`     |
//! | `www.facebook.test`      | A     | 198.51.100.60       | `WWW_FACEBOOK_V4`    |
//! | `www.face.test`          | A     | 198.51.100.61       | `WWW_FACE_V4`        |
//!
//! Each zone also has SOA/NS with `ns.<zone>. A 127.0.0.1`.
//! Readiness probes of the resolvers query [`READINESS_NAME`] (`plain.other.test`, unlisted);
//! those queries may show up in the dnstap stream if the listener is already connected.
//!

#![allow(dead_code)]

use super::dig::*;
use super::process::*;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Binaries each peer needs; pass to [`require`].
pub const NSD_BINS: &[&str] = &["nsd", "nsd-checkconf", "dig"];

// ---------------------------------------------------------------------------------------------
// Zone data constants
// ---------------------------------------------------------------------------------------------

pub const DEFAULT_TTL: u32 = 300;
pub const SHORT_TTL: u32 = 2;

pub const ZONE_LISTED: &str = "listed.test";
pub const ZONE_OTHER: &str = "other.test";
pub const ZONE_FACEBOOK: &str = "facebook.test";
pub const ZONE_FACE: &str = "face.test";
/// All zones served by [`Nsd`] (and stubbed/forwarded by the resolvers).
pub const TEST_ZONES: &[&str] = &[ZONE_LISTED, ZONE_OTHER, ZONE_FACEBOOK, ZONE_FACE];

pub const WWW_LISTED: &str = "www.listed.test";
pub const WWW_LISTED_V4: &str = "198.51.100.10";
pub const WWW_LISTED_V6: &str = "2001:db8::10";
pub const EDGE_LISTED: &str = "edge.listed.test";
pub const EDGE_LISTED_V4: &str = "198.51.100.11";
pub const EDGE_LISTED_V6: &str = "2001:db8::11";
pub const MULTI_LISTED: &str = "multi.listed.test";
pub const MULTI_LISTED_V4: &[&str] = &["198.51.100.12", "198.51.100.13"];
pub const DEEP_LISTED: &str = "deep.sub.listed.test";
pub const DEEP_LISTED_V4: &str = "198.51.100.14";
/// Wildcard owner; any `<label>.wild.listed.test` resolves to [`WILD_LISTED_V4`].
pub const WILD_LISTED: &str = "*.wild.listed.test";
pub const WILD_LISTED_V4: &str = "198.51.100.20";
/// `chain.listed.test CNAME www.other.test.` (CNAME out of the listed zone).
pub const CHAIN_LISTED: &str = "chain.listed.test";
pub const CHAIN_LISTED_TARGET: &str = "www.other.test.";
/// `short.listed.test A 198.51.100.70` with TTL [`SHORT_TTL`].
pub const SHORT_LISTED: &str = "short.listed.test";
pub const SHORT_LISTED_V4: &str = "198.51.100.70";

pub const WWW_OTHER: &str = "www.other.test";
pub const WWW_OTHER_V4: &str = "198.51.100.30";
/// `alias.other.test CNAME www.listed.test.` (CNAME from unlisted into listed).
pub const ALIAS_OTHER: &str = "alias.other.test";
pub const ALIAS_OTHER_TARGET: &str = "www.listed.test.";
/// `cdn.other.test CNAME edge.other.test.` (CNAME within the unlisted zone).
pub const CDN_OTHER: &str = "cdn.other.test";
pub const CDN_OTHER_TARGET: &str = "edge.other.test.";
pub const EDGE_OTHER: &str = "edge.other.test";
pub const EDGE_OTHER_V4: &str = "198.51.100.40";
pub const PLAIN_OTHER: &str = "plain.other.test";
pub const PLAIN_OTHER_V4: &str = "198.51.100.50";

pub const WWW_FACEBOOK: &str = "www.facebook.test";
pub const WWW_FACEBOOK_V4: &str = "198.51.100.60";
pub const WWW_FACE: &str = "www.face.test";
pub const WWW_FACE_V4: &str = "198.51.100.61";

/// Name the resolvers' readiness probe queries (unlisted).
pub const READINESS_NAME: &str = PLAIN_OTHER;

fn zone_files() -> Vec<(&'static str, String)> {
    let soa = |z: &str| {
        format!(
            "$ORIGIN {z}.\n$TTL {DEFAULT_TTL}\n\
             @ IN SOA ns.{z}. hostmaster.{z}. 1 3600 600 86400 60\n\
             @ IN NS ns.{z}.\n\
             ns IN A 127.0.0.1\n"
        )
    };
    let listed = format!(
        "{}www IN A {WWW_LISTED_V4}\n\
         www IN AAAA {WWW_LISTED_V6}\n\
         edge IN A {EDGE_LISTED_V4}\n\
         edge IN AAAA {EDGE_LISTED_V6}\n\
         multi IN A {}\n\
         multi IN A {}\n\
         deep.sub IN A {DEEP_LISTED_V4}\n\
         *.wild IN A {WILD_LISTED_V4}\n\
         chain IN CNAME {CHAIN_LISTED_TARGET}\n\
         short {SHORT_TTL} IN A {SHORT_LISTED_V4}\n",
        soa(ZONE_LISTED),
        MULTI_LISTED_V4[0],
        MULTI_LISTED_V4[1],
    );
    let other = format!(
        "{}www IN A {WWW_OTHER_V4}\n\
         alias IN CNAME {ALIAS_OTHER_TARGET}\n\
         cdn IN CNAME {CDN_OTHER_TARGET}\n\
         edge IN A {EDGE_OTHER_V4}\n\
         plain IN A {PLAIN_OTHER_V4}\n",
        soa(ZONE_OTHER)
    );
    let facebook = format!("{}www IN A {WWW_FACEBOOK_V4}\n", soa(ZONE_FACEBOOK));
    let face = format!("{}www IN A {WWW_FACE_V4}\n", soa(ZONE_FACE));
    vec![(ZONE_LISTED, listed), (ZONE_OTHER, other), (ZONE_FACEBOOK, facebook), (ZONE_FACE, face)]
}

// ---------------------------------------------------------------------------------------------
// NSD
// ---------------------------------------------------------------------------------------------

/// Authoritative NSD on 127.0.0.1:`port()` serving [`TEST_ZONES`] (see the module doc table).
pub struct Nsd {
    proc: Process,
    port: u16,
    dir: PathBuf,
    startup: Duration,
}

impl Nsd {
    pub fn start(dir: &Path) -> Result<Nsd> {
        let dir = unique_subdir(&abs(dir)?, "nsd")?;
        for (zone, text) in zone_files() {
            write_file(&dir.join(format!("{zone}.zone")), &text)?;
        }
        let mut last_err = None;
        for attempt in 0..START_ATTEMPTS {
            let port = free_port();
            let conf = dir.join("nsd.conf");
            write_file(&conf, &nsd_conf(&dir, port))?;
            let mut check = Command::new(bin("nsd-checkconf")?);
            check.arg(&conf);
            run_check("nsd-checkconf", check)?;
            let t0 = Instant::now();
            let mut cmd = Command::new(bin("nsd")?);
            cmd.arg("-d").arg("-c").arg(&conf);
            let mut proc = Process::spawn("nsd", cmd, &dir.join(format!("nsd.{attempt}.log")))?;
            match wait_answer(&mut proc, port, WWW_LISTED, WWW_LISTED_V4) {
                Ok(_) => {
                    return Ok(Nsd { proc, port, dir, startup: t0.elapsed() });
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
    pub fn log(&self) -> String {
        self.proc.log()
    }
    /// Time from spawn until it answered.
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

fn nsd_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    let mut s = format!(
        r#"server:
    ip-address: 127.0.0.1
    port: {port}
    do-ip4: yes
    do-ip6: no
    server-count: 1
    reuseport: no
    username: ""
    chroot: ""
    zonesdir: "{d}"
    database: ""
    zonelistfile: "{d}/zone.list"
    pidfile: "{d}/nsd.pid"
    xfrdfile: "{d}/xfrd.state"
    xfrdir: "{d}"
    cookie-secret-file: "{d}/cookiesecrets.txt"
    zonefiles-write: 0
    verbosity: 1
    hide-version: yes
    rrl-ratelimit: 0
remote-control:
    control-enable: no
"#
    );
    for zone in TEST_ZONES {
        s += &format!("zone:\n    name: \"{zone}\"\n    zonefile: \"{zone}.zone\"\n");
    }
    s
}

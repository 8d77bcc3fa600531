//! End-to-end tests with real resolvers: nsd serves the test zones, unbound
//! and BIND resolve them and stream dnstap to a real dnsbgpd process, and
//! the routes are read back from its HTTP API.
//!
//! Needs nsd, unbound, bind9 and dig (Debian packages). Outside CI a
//! missing package skips the test with a printed reason; with CI=true it
//! fails.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::Result;
use common::peers::{self, DnstapTarget, Named, Nsd, Unbound, dig};
use common::{Dnsbgpd, Options, assert_route, wait_for};

/// unbound flushes dnstap up to ~1 s late, BIND ~2 s; leave headroom for a
/// loaded CI machine.
const ARRIVE: Duration = Duration::from_secs(15);

fn v4(a: &str) -> String {
    format!("{a}/32")
}

fn v6(a: &str) -> String {
    format!("{a}/128")
}

/// The checks shared by the unbound and BIND tests: run queries through
/// `port` and verify what dnsbgpd made of them.
fn resolve_and_check(d: &Dnsbgpd, port: u16) -> Result<()> {
    // Unlisted first: they travel the same stream before the listed ones,
    // so once a later listed name has arrived, these have been processed.
    assert_eq!(dig(port, peers::PLAIN_OTHER, "A")?, [peers::PLAIN_OTHER_V4]);
    assert_eq!(dig(port, peers::WWW_FACEBOOK, "A")?, [peers::WWW_FACEBOOK_V4]);
    assert_eq!(dig(port, peers::CDN_OTHER, "A")?, [peers::CDN_OTHER_TARGET, peers::EDGE_OTHER_V4]);
    // A CNAME from an unlisted name into a listed one, before anything
    // else resolves www.listed.test directly.
    assert_eq!(dig(port, peers::ALIAS_OTHER, "A")?, [peers::ALIAS_OTHER_TARGET, peers::WWW_LISTED_V4]);
    let r = d.wait_route(&v4(peers::WWW_LISTED_V4), ARRIVE)?;
    assert_route(&r, "www.listed.test", "vpn");

    // Mixed case (0x20 style) matches and is reported in lowercase.
    assert_eq!(dig(port, "EdGe.LiStEd.TeSt", "A")?, [peers::EDGE_LISTED_V4]);
    // AAAA gives a /128.
    assert_eq!(dig(port, peers::WWW_LISTED, "AAAA")?, [peers::WWW_LISTED_V6]);
    // A chain from a listed name into another zone.
    assert_eq!(dig(port, peers::CHAIN_LISTED, "A")?, [peers::CHAIN_LISTED_TARGET, peers::WWW_OTHER_V4]);
    // Wildcard and deep names below a listed domain.
    assert_eq!(dig(port, "foo.wild.listed.test", "A")?, [peers::WILD_LISTED_V4]);
    // face.test is listed: www.face.test routes, www.facebook.test did not.
    assert_eq!(dig(port, peers::WWW_FACE, "A")?, [peers::WWW_FACE_V4]);

    let r = d.wait_route(&v4(peers::WWW_FACE_V4), ARRIVE)?;
    assert_route(&r, "www.face.test", "vpn");
    let r = d.wait_route(&v4(peers::EDGE_LISTED_V4), ARRIVE)?;
    assert_route(&r, "edge.listed.test", "vpn");
    let r = d.wait_route(&v6(peers::WWW_LISTED_V6), ARRIVE)?;
    assert_route(&r, "www.listed.test", "vpn");
    let r = d.wait_route(&v4(peers::WWW_OTHER_V4), ARRIVE)?;
    assert_route(&r, "chain.listed.test", "vpn");
    let r = d.wait_route(&v4(peers::WILD_LISTED_V4), ARRIVE)?;
    assert_route(&r, "foo.wild.listed.test", "vpn");

    for unlisted in [peers::PLAIN_OTHER_V4, peers::WWW_FACEBOOK_V4, peers::EDGE_OTHER_V4] {
        assert!(d.route(&v4(unlisted))?.is_none(), "{unlisted} must not be routed");
    }
    assert!(d.metric("dnsbgpd_dnstap_frames_total{type=\"CLIENT_RESPONSE\"}")? >= 9.0);
    assert!(d.metric("dnsbgpd_matches_total{list=\"vpn\"}")? >= 6.0);
    assert!(d.metric("dnsbgpd_routes{list=\"vpn\"}")? >= 6.0);
    assert_eq!(d.metric("dnsbgpd_dns_parse_errors_total")?, 0.0);
    Ok(())
}

#[test]
fn unbound_over_unix_socket() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !peers::require(peers::UNBOUND_BINS) {
        return Ok(());
    }
    let nsd = Nsd::start(tmp.path())?;
    let mut d = Dnsbgpd::start(tmp.path(), &Options::default())?;
    let ub = Unbound::start(tmp.path(), nsd.port(), DnstapTarget::Unix(d.socket.clone()))?;
    resolve_and_check(&d, ub.port())?;
    // A 2 s TTL (min_ttl is 1 s here) expires promptly: gone within 1 s
    // of its expiry. The table keeps expiries in whole seconds, rounded up
    // (a route never ends early), so the expiry is at most 3 s away.
    dig(ub.port(), peers::SHORT_LISTED, "A")?;
    let r = d.wait_route(&v4(peers::SHORT_LISTED_V4), ARRIVE)?;
    let expires = humantime::parse_rfc3339(r["expires"].as_str().unwrap_or_default())?;
    let left = expires.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    assert!(left <= Duration::from_secs(3), "TTL 2 s gives an expiry within 2 s (3 s rounded up), got {left:?}");
    d.wait_no_route(&v4(peers::SHORT_LISTED_V4), left + Duration::from_secs(1))?;
    // The status endpoint reports the lists and the routes.
    let status = d.get_json("/api/v1/status")?;
    assert_eq!(status["ready"], true);
    assert_eq!(status["lists"][0]["name"], "vpn");
    assert_eq!(status["lists"][0]["entries"], 2);
    assert!(status["routes"].as_u64().unwrap_or(0) >= 6, "{status}");
    assert!(d.stop()?, "dnsbgpd must exit 0 on SIGTERM");
    assert!(!d.socket.exists(), "the dnstap socket must be removed at exit");
    Ok(())
}

#[test]
fn unbound_over_tcp() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !peers::require(peers::UNBOUND_BINS) {
        return Ok(());
    }
    let nsd = Nsd::start(tmp.path())?;
    let d = Dnsbgpd::start(tmp.path(), &Options { tcp: true, ..Options::default() })?;
    let tcp = d.tcp.expect("tcp listener configured");
    let ub = Unbound::start(tmp.path(), nsd.port(), DnstapTarget::Tcp(tcp))?;
    assert_eq!(dig(ub.port(), peers::WWW_LISTED, "A")?, [peers::WWW_LISTED_V4]);
    assert_eq!(dig(ub.port(), peers::WWW_LISTED, "AAAA")?, [peers::WWW_LISTED_V6]);
    assert_route(&d.wait_route(&v4(peers::WWW_LISTED_V4), ARRIVE)?, "www.listed.test", "vpn");
    assert_route(&d.wait_route(&v6(peers::WWW_LISTED_V6), ARRIVE)?, "www.listed.test", "vpn");
    assert!(d.metric("dnsbgpd_dnstap_connections_total{listener=\"tcp\"}")? >= 1.0);
    Ok(())
}

/// BIND as the dnstap source, and unbound on the same socket at the same
/// time: any number of resolvers may be connected.
#[test]
fn bind_and_unbound_together() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !peers::require(peers::NAMED_BINS) || !peers::require(peers::UNBOUND_BINS) {
        return Ok(());
    }
    let nsd = Nsd::start(tmp.path())?;
    let d = Dnsbgpd::start(tmp.path(), &Options::default())?;
    let named = Named::start(tmp.path(), nsd.port(), &d.socket)?;
    let ub = Unbound::start(tmp.path(), nsd.port(), DnstapTarget::Unix(d.socket.clone()))?;
    resolve_and_check(&d, named.port())?;
    // The unbound connection delivers too, while BIND stays connected.
    assert_eq!(dig(ub.port(), peers::MULTI_LISTED, "A")?.len(), 2);
    for a in peers::MULTI_LISTED_V4 {
        assert_route(&d.wait_route(&v4(a), ARRIVE)?, "multi.listed.test", "vpn");
    }
    let open = d.metric("dnsbgpd_dnstap_connections_open")?;
    assert!(open >= 2.0, "both resolvers connected, got {open}");
    Ok(())
}

/// SIGHUP and file changes reload the lists; routes of names that left
/// every list go within a second, new names route on their next answer.
#[test]
fn reload_lists() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !peers::require(peers::UNBOUND_BINS) {
        return Ok(());
    }
    let nsd = Nsd::start(tmp.path())?;
    let opts = Options {
        lists: vec![("vpn".into(), "listed.test\n".into()), ("cdn".into(), "face.test\n".into())],
        ..Options::default()
    };
    let d = Dnsbgpd::start(tmp.path(), &opts)?;
    let ub = Unbound::start(tmp.path(), nsd.port(), DnstapTarget::Unix(d.socket.clone()))?;
    dig(ub.port(), peers::WWW_LISTED, "A")?;
    dig(ub.port(), peers::WWW_FACE, "A")?;
    dig(ub.port(), peers::WWW_OTHER, "A")?;
    d.wait_route(&v4(peers::WWW_LISTED_V4), ARRIVE)?;
    d.wait_route(&v4(peers::WWW_FACE_V4), ARRIVE)?;
    assert!(d.route(&v4(peers::WWW_OTHER_V4))?.is_none());

    // SIGHUP after an in-place edit: listed.test leaves, other.test joins.
    std::fs::write(d.list_file("vpn"), "other.test\n")?;
    let reloads_before = d.metric("dnsbgpd_list_reloads_total{result=\"ok\"}")?;
    common::send_signal(d.pid(), peers::SIGHUP)?;
    // Within 1 s of the reload (the signal is delivered at once).
    d.wait_no_route(&v4(peers::WWW_LISTED_V4), Duration::from_secs(1))?;
    assert!(d.metric("dnsbgpd_list_reloads_total{result=\"ok\"}")? > reloads_before);
    assert!(d.route(&v4(peers::WWW_FACE_V4))?.is_some(), "other lists keep their routes");
    // other.test routes on its next answer.
    dig(ub.port(), peers::WWW_OTHER, "A")?;
    assert_route(&d.wait_route(&v4(peers::WWW_OTHER_V4), ARRIVE)?, "www.other.test", "vpn");

    // A file replaced by rename is picked up without a signal, and an
    // exclusion removes a subtree.
    let tmpfile = d.dir.join("lists").join(".cdn.new");
    std::fs::write(&tmpfile, "face.test\n!www.face.test\n")?;
    std::fs::rename(&tmpfile, d.list_file("cdn"))?;
    d.wait_no_route(&v4(peers::WWW_FACE_V4), Duration::from_secs(5))?;
    Ok(())
}

/// Routes come back from the store after a restart, before any new
/// answer; expired ones do not; a second process on the store fails fast.
#[test]
fn restart_keeps_routes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !peers::require(peers::UNBOUND_BINS) {
        return Ok(());
    }
    let nsd = Nsd::start(tmp.path())?;
    let mut d = Dnsbgpd::start(tmp.path(), &Options::default())?;
    let mut ub = Unbound::start(tmp.path(), nsd.port(), DnstapTarget::Unix(d.socket.clone()))?;
    dig(ub.port(), peers::SHORT_LISTED, "A")?; // TTL 2 s
    dig(ub.port(), peers::WWW_LISTED, "A")?; // TTL 300 s
    dig(ub.port(), peers::WWW_LISTED, "AAAA")?;
    d.wait_route(&v4(peers::SHORT_LISTED_V4), ARRIVE)?;
    d.wait_route(&v4(peers::WWW_LISTED_V4), ARRIVE)?;
    d.wait_route(&v6(peers::WWW_LISTED_V6), ARRIVE)?;
    ub.stop();

    // A second daemon on the same store refuses to start, quickly.
    let second = Dnsbgpd::configure(&tmp.path().join("second"), &Options::default())?;
    let cfg = std::fs::read_to_string(&second.config)?
        .replace(&second.store.display().to_string(), &d.store.display().to_string());
    std::fs::write(&second.config, cfg)?;
    let started = std::time::Instant::now();
    let out = std::process::Command::new(common::binary()).args(["run", "--config"]).arg(&second.config).output()?;
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");

    assert!(d.stop()?, "clean stop");
    // Let the 2 s route expire while dnsbgpd is down.
    std::thread::sleep(Duration::from_secs(3));
    d.relaunch()?;
    // Ready means the store is loaded: the routes are there at once.
    assert_route(&d.route(&v4(peers::WWW_LISTED_V4))?.expect("restored v4 route"), "www.listed.test", "vpn");
    assert!(d.route(&v6(peers::WWW_LISTED_V6))?.is_some(), "restored v6 route");
    assert_eq!(d.metric("dnsbgpd_dnstap_frames_total{type=\"CLIENT_RESPONSE\"}")?, 0.0, "no new answer yet");
    // The 2 s route expired by the clock while dnsbgpd was down, but not by
    // the store's own record of time (its last write, at the stop): a route
    // is dropped at start only when both say so (a clock set wrong at boot
    // must not empty the store), so it lives out the life it had left then
    // (under 2 s) and goes.
    d.wait_no_route(&v4(peers::SHORT_LISTED_V4), Duration::from_secs(4))?;
    assert!(d.route(&v4(peers::WWW_LISTED_V4))?.is_some());
    Ok(())
}

fn expect_closed(socket: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    // The server may close before all is written; that is the point.
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => anyhow::bail!("connection not closed by dnsbgpd: {e}"),
        }
    }
}

/// Hostile bytes on the dnstap socket close only their own connection; a
/// well-behaved unbound connection keeps delivering throughout.
#[test]
fn bad_input_closes_only_its_connection() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !peers::require(peers::UNBOUND_BINS) {
        return Ok(());
    }
    let nsd = Nsd::start(tmp.path())?;
    let d = Dnsbgpd::start(tmp.path(), &Options::default())?;
    let ub = Unbound::start(tmp.path(), nsd.port(), DnstapTarget::Unix(d.socket.clone()))?;
    dig(ub.port(), peers::WWW_LISTED, "A")?;
    d.wait_route(&v4(peers::WWW_LISTED_V4), ARRIVE)?;

    let ready_wrong = {
        let ct = b"protobuf:not.Dnstap";
        let mut v = vec![0, 0, 0, 0];
        v.extend_from_slice(&((4 + 8 + ct.len()) as u32).to_be_bytes());
        v.extend_from_slice(&4u32.to_be_bytes());
        v.extend_from_slice(&1u32.to_be_bytes());
        v.extend_from_slice(&(ct.len() as u32).to_be_bytes());
        v.extend_from_slice(ct);
        v
    };
    let start = {
        let ct = b"protobuf:dnstap.Dnstap";
        let mut v = vec![0, 0, 0, 0];
        v.extend_from_slice(&((4 + 8 + ct.len()) as u32).to_be_bytes());
        v.extend_from_slice(&2u32.to_be_bytes());
        v.extend_from_slice(&1u32.to_be_bytes());
        v.extend_from_slice(&(ct.len() as u32).to_be_bytes());
        v.extend_from_slice(ct);
        v
    };
    expect_closed(&d.socket, b"GET / HTTP/1.1\r\nHost: garbage\r\n\r\n")?;
    expect_closed(&d.socket, &ready_wrong)?;
    let mut huge = start.clone();
    huge.extend_from_slice(&(10u32 * 1024 * 1024).to_be_bytes());
    expect_closed(&d.socket, &huge)?;
    // A truncated frame: the length promises 100 bytes, 10 arrive, then EOF.
    {
        let mut s = UnixStream::connect(&d.socket)?;
        let mut t = start.clone();
        t.extend_from_slice(&100u32.to_be_bytes());
        t.extend_from_slice(&[0xAB; 10]);
        s.write_all(&t)?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut rest = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.read_to_end(&mut rest)?;
    }
    wait_for(Duration::from_secs(5), "rejection metrics", || {
        let m = |r: &str| d.metric(&format!("dnsbgpd_dnstap_frames_rejected_total{{reason=\"{r}\"}}"));
        Ok((m("too_large")? >= 2.0 && m("content_type")? >= 1.0 && m("truncated")? >= 1.0).then_some(()))
    })?;

    // unbound's connection was never disturbed: new answers keep coming.
    dig(ub.port(), peers::EDGE_LISTED, "A")?;
    dig(ub.port(), peers::WWW_FACE, "A")?;
    d.wait_route(&v4(peers::EDGE_LISTED_V4), ARRIVE)?;
    d.wait_route(&v4(peers::WWW_FACE_V4), ARRIVE)?;
    assert!(d.route(&v4(peers::WWW_LISTED_V4))?.is_some(), "good routes are kept");
    assert_eq!(d.metric("dnsbgpd_dnstap_connections_open")?, 1.0, "only unbound remains connected");
    Ok(())
}

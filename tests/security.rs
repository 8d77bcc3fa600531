//! The network surfaces (issue 10): API tokens, the Host check, HTTP
//! limits, the dnstap listener's timeouts and allow list, and what a sync
//! peer may claim. Each test fails on the code before these fixes.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::{Dnsbgpd, Options, free_port, request, wait_for};

const TOKEN: &str = "security-test-token-0123456789";

/// A daemon whose `[api]` section gets `api` (after `listen`).
fn daemon(dir: &std::path::Path, opts: &Options, api: &str) -> Result<Dnsbgpd> {
    let mut d = Dnsbgpd::configure(dir, opts)?;
    let conf = std::fs::read_to_string(&d.config)?.replacen("[api]\n", &format!("[api]\n{api}\n"), 1);
    std::fs::write(&d.config, conf)?;
    d.relaunch()?;
    Ok(d)
}

fn check(config: &str) -> Result<(bool, String)> {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("d.toml");
    std::fs::write(&path, config)?;
    let out = Command::new(common::binary()).args(["check", "--config"]).arg(&path).output()?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[test]
fn check_requires_a_token_beyond_loopback() -> Result<()> {
    let base = "[dnstap]\nsocket = \"d.sock\"\n[api]\n";
    let (ok, err) = check(&format!("{base}listen = \"0.0.0.0:9153\"\n"))?;
    assert!(!ok, "an API on every address without a token passed check");
    assert!(err.contains(":4: ") && err.contains("not a loopback address") && err.contains("token"), "{err}");
    let (ok, _) = check(&format!("{base}listen = \"[2001:db8::1]:9153\"\n"))?;
    assert!(!ok);
    let (ok, err) = check(&format!("{base}listen = \"0.0.0.0:9153\"\ntoken = \"{TOKEN}\"\n"))?;
    assert!(ok, "{err}");
    for loopback in ["127.0.0.1:9153", "127.3.4.5:9153", "[::1]:9153"] {
        let (ok, err) = check(&format!("{base}listen = \"{loopback}\"\n"))?;
        assert!(ok, "{loopback}: {err}");
    }
    Ok(())
}

#[test]
fn with_a_token_only_status_and_metrics_are_open() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let opts = Options {
        extra_config: format!(
            "[sync]\ntoken = \"sync-{TOKEN}\"\n[[sync.peer]]\nurl = \"http://127.0.0.1:{}\"\ntoken = \"{TOKEN}\"\n",
            free_port()
        ),
        ..Options::default()
    };
    let d = daemon(tmp.path(), &opts, &format!("token = \"{TOKEN}\""))?;
    let auth = format!("Authorization: Bearer {TOKEN}");
    let wrong = format!("Authorization: Bearer sync-{TOKEN}");
    for path in ["/api/v1/routes", "/api/v1/neighbors", "/api/v1/sync/peers", "/api/v1/blocks"] {
        for headers in [&[][..], &[wrong.as_str()][..]] {
            let (code, body) = request(d.api, "GET", path, headers, "")?;
            assert_eq!(code, 401, "GET {path} {headers:?}: {body}");
        }
        let (code, body) = request(d.api, "GET", path, &[&auth], "")?;
        assert_eq!(code, 200, "GET {path} with the token: {body}");
    }
    let reloads = || d.metric("dnsbgpd_list_reloads_total{result=\"ok\"}");
    let before = reloads()?;
    let (code, _) = request(d.api, "POST", "/api/v1/reload", &[], "")?;
    assert_eq!(code, 401);
    for path in ["/metrics", "/api/v1/status"] {
        assert_eq!(request(d.api, "GET", path, &[], "")?.0, 200, "{path}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(reloads()?, before, "a refused reload ran");
    assert_eq!(request(d.api, "POST", "/api/v1/reload", &[&auth], "")?.0, 202);
    Ok(())
}

#[test]
fn without_an_api_token_sync_peers_needs_the_sync_token() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let opts = Options { extra_config: format!("[sync]\ntoken = \"{TOKEN}\"\n"), ..Options::default() };
    let d = Dnsbgpd::start(tmp.path(), &opts)?;
    assert_eq!(request(d.api, "GET", "/api/v1/sync/peers", &[], "")?.0, 401);
    let auth = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(request(d.api, "GET", "/api/v1/sync/peers", &[&auth], "")?.0, 200);
    // The rest of the API stays open without an API token (loopback).
    assert_eq!(request(d.api, "GET", "/api/v1/routes", &[], "")?.0, 200);
    Ok(())
}

/// One request with exactly these header lines (no Host unless given).
fn raw(addr: SocketAddr, head: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{head}\r\n\r\n").as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP answer")?;
    Ok((head.split_whitespace().nth(1).context("status")?.parse()?, body.to_string()))
}

#[test]
fn rebinding_host_is_misdirected() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = daemon(tmp.path(), &Options::default(), "allowed_hosts = [\"dnsbgpd.example\"]")?;
    let get = |host: &str| raw(d.api, &format!("GET /api/v1/routes HTTP/1.1\r\nHost: {host}\r\nConnection: close"));
    let (code, body) = get("attacker.example")?;
    assert_eq!(code, 421, "{body}");
    assert!(body.contains("allowed_hosts"), "{body}");
    assert_eq!(get(&format!("attacker.example:{}", d.api.port()))?.0, 421);
    assert_eq!(get(&format!("127.0.0.1:{}", d.api.port() ^ 1))?.0, 421);
    // Also for the open endpoints and for sync.
    let (code, _) = raw(d.api, "GET /metrics HTTP/1.1\r\nHost: rebind.example\r\nConnection: close")?;
    assert_eq!(code, 421);
    for good in [d.api.to_string(), format!("localhost:{}", d.api.port()), "dnsbgpd.example:8080".into()] {
        let (code, body) = get(&good)?;
        assert_eq!(code, 200, "{good}: {body}");
    }
    // No Host at all (HTTP/1.0 tools) is not a browser.
    assert_eq!(raw(d.api, "GET /api/v1/status HTTP/1.0")?.0, 200);
    Ok(())
}

#[test]
fn metrics_listen_serves_metrics_alone() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let d = daemon(tmp.path(), &Options::default(), &format!("metrics_listen = \"{metrics}\""))?;
    let (code, body) = request(metrics, "GET", "/metrics", &[], "")?;
    assert_eq!(code, 200);
    assert!(body.contains("dnsbgpd_routes"), "{body}");
    for path in ["/api/v1/status", "/api/v1/routes"] {
        assert_eq!(request(metrics, "GET", path, &[], "")?.0, 404, "{path} on the metrics listener");
    }
    assert_eq!(request(d.api, "GET", "/metrics", &[], "")?.0, 200, "the API keeps /metrics");
    Ok(())
}

/// Raises this process's open-file limit (children inherit it).
fn raise_nofile(want: u64) {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < want {
            // Root may raise the hard limit too; otherwise up to it.
            let raised = libc::rlimit { rlim_cur: want, rlim_max: l.rlim_max.max(want) };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                l.rlim_cur = want.min(l.rlim_max);
                libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            }
        }
    }
}

/// 2 000 connections that never send a byte do not keep a status request
/// out: at `max_connections` the longest-idle connection makes room.
#[test]
fn idle_api_connections_do_not_lock_out_a_status_request() -> Result<()> {
    raise_nofile(8192);
    let tmp = tempfile::tempdir()?;
    let d = daemon(tmp.path(), &Options::default(), "max_connections = 64\nheader_timeout = \"60s\"")?;
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect_timeout(&d.api, Duration::from_secs(5))?);
    }
    let started = Instant::now();
    let (code, body) = request(d.api, "GET", "/api/v1/status", &[], "")?;
    assert_eq!(code, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "status took {:?}", started.elapsed());
    // The idle connections beyond the cap were closed by the server.
    let closed = idle
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(20))).ok();
            let mut r: &TcpStream = s;
            match r.read(&mut [0u8; 1]) {
                Ok(0) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                Ok(_) => false,
            }
        })
        .count();
    assert!(closed >= 2000 - 64, "only {closed} idle connections were closed");
    Ok(())
}

/// A connection that sends half a request is closed after `header_timeout`.
#[test]
fn a_slow_header_is_cut_off() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = daemon(tmp.path(), &Options::default(), "header_timeout = \"500ms\"")?;
    let mut s = TcpStream::connect(d.api)?;
    s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: ")?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "the half request was kept {waited:?}");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"), "answered a request it never got whole");
    Ok(())
}

#[test]
fn routes_are_paginated() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = Dnsbgpd::start(tmp.path(), &Options::default())?;
    let mut feed = common::feed::Feed::connect(&d.socket)?;
    let addrs: Vec<String> = (1..=25).map(|i| format!("198.51.100.{i}")).collect();
    for a in &addrs {
        feed.answer("www.listed.test", &[a], 3600)?;
    }
    drop(feed);
    wait_for(Duration::from_secs(10), "25 routes", || Ok((d.routes()?.len() == 25).then_some(())))?;
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let path = if after.is_empty() {
            "/api/v1/routes?limit=10".to_string()
        } else {
            format!("/api/v1/routes?limit=10&after={after}")
        };
        let (code, body) = request(d.api, "GET", &path, &[], "")?;
        assert_eq!(code, 200, "{body}");
        let page: Vec<serde_json::Value> = serde_json::from_str(&body)?;
        assert!(page.len() <= 10);
        pages += 1;
        if page.is_empty() {
            break;
        }
        after = page.last().and_then(|r| r["prefix"].as_str()).context("prefix")?.trim_end_matches("/32").to_string();
        seen.extend(page.iter().filter_map(|r| r["prefix"].as_str().map(String::from)));
        assert!(pages < 10, "pagination does not end");
    }
    let mut want: Vec<String> = addrs.iter().map(|a| format!("{a}/32")).collect();
    want.sort_by_key(|p| p.trim_end_matches("/32").parse::<std::net::Ipv4Addr>().ok());
    assert_eq!(seen, want, "every route once, in address order");
    let (code, body) = request(d.api, "GET", "/api/v1/routes?after=nope", &[], "")?;
    assert_eq!(code, 400, "{body}");
    Ok(())
}

/// 65 connections that never send a byte (one more than `max_connections`)
/// do not keep real unbound out: the longest-idle one makes room.
#[test]
fn idle_dnstap_connections_do_not_lock_out_unbound() -> Result<()> {
    use common::peers::{self, DnstapTarget, Nsd, Unbound, dig};
    use std::os::unix::net::UnixStream;
    let tmp = tempfile::tempdir()?;
    if !peers::require(peers::UNBOUND_BINS) {
        return Ok(());
    }
    let nsd = Nsd::start(tmp.path())?;
    let d = Dnsbgpd::start(tmp.path(), &Options::default())?;
    let idle: Vec<UnixStream> = (0..65).map(|_| UnixStream::connect(&d.socket)).collect::<Result<_, _>>()?;
    wait_for(Duration::from_secs(5), "64 dnstap connections open", || {
        Ok((d.metric("dnsbgpd_dnstap_connections_open")? >= 64.0).then_some(()))
    })?;
    let ub = Unbound::start(tmp.path(), nsd.port(), DnstapTarget::Unix(d.socket.clone()))?;
    assert_eq!(dig(ub.port(), peers::WWW_LISTED, "A")?, [peers::WWW_LISTED_V4]);
    d.wait_route(&format!("{}/32", peers::WWW_LISTED_V4), Duration::from_secs(15))?;
    assert!(d.metric("dnsbgpd_dnstap_frames_rejected_total{reason=\"connection_limit\"}")? >= 2.0);
    assert!(d.metric("dnsbgpd_dnstap_connections_open")? <= 64.0);
    drop(idle);
    Ok(())
}

/// A dnstap TCP client outside `tcp_allow` is closed before it can send a
/// frame; one inside gets its answers routed.
#[test]
fn dnstap_tcp_client_outside_the_allow_list_is_closed() -> Result<()> {
    use dnsbgpd::dnstap::framestream::{ControlFrame, ControlType, DNSTAP_CONTENT_TYPE, control_bytes};
    let tmp = tempfile::tempdir()?;
    let opts = Options { tcp: true, extra_dnstap: "tcp_allow = [\"127.0.0.2/32\"]\n".into(), ..Options::default() };
    let d = Dnsbgpd::start(tmp.path(), &opts)?;
    let tcp = d.tcp.context("tcp listener")?;
    let start = control_bytes(&ControlFrame::with_content_type(ControlType::Start, DNSTAP_CONTENT_TYPE));
    let frame = |addr: &str| -> Vec<u8> {
        let dns = common::feed::response("www.listed.test", None, &[addr.parse().unwrap()], 3600);
        let mut v = Vec::new();
        let msg = common::frames::dnstap_payload(dns);
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(&msg);
        v
    };
    // From 127.0.0.1: closed at once.
    let mut outside = TcpStream::connect(tcp)?;
    outside.set_read_timeout(Some(Duration::from_secs(5)))?;
    let started = Instant::now();
    let n = outside.read(&mut [0u8; 16]).unwrap_or(0);
    assert_eq!(n, 0, "the server wrote to a client outside tcp_allow");
    assert!(started.elapsed() < Duration::from_secs(4), "not closed at once");
    let _ = outside.write_all(&start);
    let _ = outside.write_all(&frame("198.51.100.66"));
    wait_for(Duration::from_secs(5), "the refusal counted", || {
        Ok((d.metric("dnsbgpd_dnstap_frames_rejected_total{reason=\"tcp_allow\"}")? >= 1.0).then_some(()))
    })?;
    // From 127.0.0.2: served.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let inside = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4()?;
        s.bind("127.0.0.2:0".parse()?)?;
        anyhow::Ok(s.connect(tcp).await?.into_std()?)
    })?;
    inside.set_nonblocking(false)?;
    let mut inside = inside;
    inside.write_all(&start)?;
    inside.write_all(&frame("198.51.100.67"))?;
    d.wait_route("198.51.100.67/32", Duration::from_secs(10))?;
    assert!(d.route("198.51.100.66/32")?.is_none(), "a frame from outside tcp_allow became a route");
    Ok(())
}

/// `http://` to a remote peer is refused by `check` unless
/// `allow_insecure = true`; loopback stays allowed.
#[test]
fn check_refuses_plain_http_to_a_remote_peer() -> Result<()> {
    let conf = |url: &str, extra: &str| {
        format!(
            "[dnstap]\nsocket = \"d.sock\"\n[sync]\ntoken = \"{TOKEN}\"\n\
             [[sync.peer]]\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\n{extra}"
        )
    };
    let (ok, err) = check(&conf("http://192.0.2.7:9153", ""))?;
    assert!(!ok, "plain http to a remote peer passed check");
    assert!(err.contains(":6: ") && err.contains("allow_insecure"), "{err}");
    let (ok, err) = check(&conf("http://192.0.2.7:9153", "allow_insecure = true\n"))?;
    assert!(ok, "{err}");
    let (ok, err) = check(&conf("http://127.0.0.1:9153", ""))?;
    assert!(ok, "{err}");
    Ok(())
}

/// One HTTP/1.1 sync push with the sync token.
fn push(addr: SocketAddr, body: &serde_json::Value) -> Result<(u16, serde_json::Value)> {
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (code, text) =
        request(addr, "POST", "/api/v1/sync/push", &[&auth, "Content-Type: application/json"], &body.to_string())?;
    Ok((code, serde_json::from_str(&text).with_context(|| format!("{code}: {text}"))?))
}

/// A push may speak only for a configured peer's instance: another origin
/// and invented ids get 403 and change nothing; a page whose `next` runs
/// past its last change gets 400 with the cursor where it was.
#[test]
fn sync_pushes_are_bound_to_the_peers_instances() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let opts = Options {
        extra_config: format!(
            "[sync]\ntoken = \"{TOKEN}\"\n[[sync.peer]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\n\
             token = \"{TOKEN}\"\ninstance = \"peer-a\"\n",
            free_port()
        ),
        ..Options::default()
    };
    let mut d = Dnsbgpd::configure(tmp.path(), &opts)?;
    d.token = Some(TOKEN.into());
    let d = d.launch()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let change = |seq: u64, addr: &str, origin: &str| {
        serde_json::json!({"seq": seq, "address": addr, "origin": origin,
            "names": [{"domain": "www.listed.test", "list": "vpn", "expires": now + 600_000}]})
    };
    let page = |instance: &str, since: u64, next: u64, changes: Vec<serde_json::Value>| serde_json::json!({"instance": instance, "since": since, "next": next, "head": next, "changes": changes});
    let cursor = || -> Result<u64> {
        let v = d.get_json("/api/v1/sync/peers")?;
        v["peers"][0]["cursor"].as_u64().context("cursor")
    };

    let (code, r) = push(d.api, &page("peer-a", 0, 1, vec![change(1, "198.51.100.1", "peer-a")]))?;
    assert_eq!(code, 200, "{r}");
    d.wait_route("198.51.100.1/32", Duration::from_secs(5))?;
    assert_eq!(cursor()?, 1);

    // Another origin: the credential does not speak for it.
    let (code, r) = push(d.api, &page("peer-z", 0, 1, vec![change(1, "198.51.100.2", "peer-z")]))?;
    assert_eq!(code, 403, "{r}");
    assert!(r["error"].as_str().unwrap_or("").contains("not a peer"), "{r}");
    // Entries claiming another origin inside a peer's page are refused one by one.
    let (code, r) = push(d.api, &page("peer-a", 1, 2, vec![change(2, "198.51.100.3", "peer-z")]))?;
    assert_eq!((code, r["rejected"].as_u64()), (200, Some(1)), "{r}");

    // An inflated next: 400, and the cursor does not move.
    let (code, r) = push(d.api, &page("peer-a", 2, 1_000_000, vec![change(3, "198.51.100.4", "peer-a")]))?;
    assert_eq!(code, 400, "{r}");
    assert_eq!(cursor()?, 2, "the cursor moved on a refused page");
    let (code, r) = push(d.api, &page("peer-a", 2, 2_000, vec![]))?;
    assert_eq!(code, 400, "an empty page moving the cursor: {r}");
    // What the inflated page would have skipped still applies.
    let (code, r) = push(d.api, &page("peer-a", 2, 3, vec![change(3, "198.51.100.4", "peer-a")]))?;
    assert_eq!((code, r["accepted"].as_u64()), (200, Some(1)), "{r}");
    d.wait_route("198.51.100.4/32", Duration::from_secs(5))?;

    // Invented ids never become origins.
    for i in 0..50 {
        let id = format!("invented-{i}");
        let (code, _) = push(d.api, &page(&id, 0, 1, vec![change(1, "198.51.100.9", &id)]))?;
        assert_eq!(code, 403);
    }
    assert_eq!(d.metric("dnsbgpd_sync_requests_rejected_total{reason=\"instance\"}")?, 51.0);
    let routes = d.routes()?;
    for bad in ["198.51.100.2/32", "198.51.100.3/32", "198.51.100.9/32"] {
        assert!(!routes.iter().any(|r| r["prefix"] == bad), "{bad} became a route");
    }
    Ok(())
}

/// A peer with its own `inbound_token` speaks for one instance only: the
/// id of its first push (or pull) is pinned, across a restart too, and the
/// shared token no longer speaks for it.
#[test]
fn a_peer_token_speaks_for_its_own_instance_only() -> Result<()> {
    const TA: &str = "inbound-token-of-peer-a-0123";
    let tmp = tempfile::tempdir()?;
    let opts = Options {
        extra_config: format!(
            "[sync]\ntoken = \"{TOKEN}\"\n\
             [[sync.peer]]\nname = \"a\"\nurl = \"http://127.0.0.1:{}\"\ntoken = \"{TOKEN}\"\ninbound_token = \"{TA}\"\n\
             [[sync.peer]]\nname = \"b\"\nurl = \"http://127.0.0.1:{}\"\ntoken = \"{TOKEN}\"\ninstance = \"peer-b\"\n",
            free_port(),
            free_port()
        ),
        ..Options::default()
    };
    let mut d = Dnsbgpd::configure(tmp.path(), &opts)?;
    d.token = Some(TOKEN.into());
    d.relaunch()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let body = |instance: &str, seq: u64, addr: &str| {
        serde_json::json!({"instance": instance, "since": seq - 1, "next": seq, "head": seq, "changes": [
            {"seq": seq, "address": addr, "origin": instance,
             "names": [{"domain": "www.listed.test", "list": "vpn", "expires": now + 600_000}]}]})
        .to_string()
    };
    let api = d.api;
    let push_as = |token: &str, b: &str| -> Result<u16> {
        let auth = format!("Authorization: Bearer {token}");
        Ok(request(api, "POST", "/api/v1/sync/push", &[&auth], b)?.0)
    };
    // A's token cannot speak for B, even before A is known.
    assert_eq!(push_as(TA, &body("peer-b", 1, "198.51.100.31"))?, 403);
    // A's first push names it.
    assert_eq!(push_as(TA, &body("peer-a", 1, "198.51.100.32"))?, 200);
    d.wait_route("198.51.100.32/32", Duration::from_secs(5))?;
    let view = d.get_json("/api/v1/sync/peers")?;
    assert_eq!(view["peers"][0]["instance"], "peer-a", "{view}");
    // Now bound: another id with A's token is refused.
    assert_eq!(push_as(TA, &body("peer-x", 1, "198.51.100.33"))?, 403);
    // The shared token speaks for B, not for A (A has its own token).
    assert_eq!(push_as(TOKEN, &body("peer-b", 1, "198.51.100.34"))?, 200);
    assert_eq!(push_as(TOKEN, &body("peer-a", 2, "198.51.100.35"))?, 403);
    // Pinned in the store: still bound after a restart.
    assert!(d.stop()?);
    d.relaunch()?;
    assert_eq!(push_as(TA, &body("peer-x", 1, "198.51.100.36"))?, 403);
    assert_eq!(push_as(TA, &body("peer-a", 2, "198.51.100.37"))?, 200);
    let routes = d.routes()?;
    for bad in ["198.51.100.31/32", "198.51.100.33/32", "198.51.100.35/32", "198.51.100.36/32"] {
        assert!(!routes.iter().any(|r| r["prefix"] == bad), "{bad} became a route");
    }
    Ok(())
}

/// Over HTTPS too: 1 000 connections that never start TLS do not keep
/// `dnsbgpd ctl status` out (the oldest pending handshake is given up).
#[test]
fn idle_tls_connections_do_not_lock_out_ctl() -> Result<()> {
    raise_nofile(8192);
    let tmp = tempfile::tempdir()?;
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs)?;
    if !common::make_certs(&certs)? {
        return Ok(());
    }
    let mut d = Dnsbgpd::configure(tmp.path(), &Options::default())?;
    let api = format!(
        "[api]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        certs.join("api.pem").display(),
        certs.join("api.key").display()
    );
    let conf = std::fs::read_to_string(&d.config)?.replacen("[api]\n", &api, 1);
    std::fs::write(&d.config, conf)?;
    let mut cmd = Command::new(common::binary());
    cmd.args(["run", "--config"]).arg(&d.config);
    d.process = Some(common::Process::spawn("dnsbgpd", cmd, &d.dir.join("dnsbgpd.log"))?);
    let url = format!("https://{}", d.api);
    let ca = certs.join("ca.pem");
    let status = || {
        Command::new(common::binary())
            .args(["ctl", "--api", &url, "--ca-file"])
            .arg(&ca)
            .args(["--timeout", "5s", "status"])
            .output()
    };
    wait_for(Duration::from_secs(20), "dnsbgpd over HTTPS", || Ok(status()?.status.success().then_some(())))?;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect_timeout(&d.api, Duration::from_secs(5))?);
    }
    let started = Instant::now();
    let out = status()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(5), "status took {:?}", started.elapsed());
    drop(idle);
    Ok(())
}

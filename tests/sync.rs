//! Peer sync between real dnsbgpd processes on loopback: a full mesh of
//! instances, each with its own store and the same lists. Instance A is
//! fed by a real unbound (first test) or by dnstap frames written straight
//! to its socket (the others: exact TTLs and timing).

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use common::frames::DnstapWriter;
use common::peers::{self, DnstapTarget, Nsd, Unbound, dig};
use common::{Dnsbgpd, Options, wait_for};
use serde_json::{Value, json};

const TOKEN: &str = "sync-test-token-0123456789";
const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

/// Push latency budget from the issue: a change at A is at its peers
/// within 1 s.
const PUSH: Duration = Duration::from_secs(1);

fn v4(a: &str) -> String {
    format!("{a}/32")
}

/// Configures one instance per name under `tmp/<name>`, every one listing
/// every other as a peer, and starts them. `sync` is added to each
/// `[sync]` section, `opts` shapes the rest.
fn mesh(tmp: &Path, names: &[&str], opts: &Options, sync: &str) -> Result<Vec<Dnsbgpd>> {
    let nodes: Vec<Dnsbgpd> = names.iter().map(|n| Dnsbgpd::configure(&tmp.join(n), opts)).collect::<Result<_>>()?;
    for (i, node) in nodes.iter().enumerate() {
        let mut text = format!("\n[sync]\ntoken = \"{TOKEN}\"\n{sync}\n");
        for (j, other) in nodes.iter().enumerate() {
            if i != j {
                text.push_str(&format!(
                    "\n[[sync.peer]]\nname = \"{}\"\nurl = \"http://{}\"\ntoken = \"{TOKEN}\"\n",
                    names[j], other.api
                ));
            }
        }
        let mut conf = std::fs::read_to_string(&node.config)?;
        conf.push_str(&text);
        std::fs::write(&node.config, conf)?;
    }
    nodes
        .into_iter()
        .map(|mut n| {
            n.token = Some(TOKEN.to_string());
            n.launch()
        })
        .collect()
}

fn instance_id(d: &Dnsbgpd) -> Result<String> {
    let v = d.get_json("/api/v1/sync/peers")?;
    Ok(v["instance"].as_str().context("instance id")?.to_string())
}

fn peer_view(d: &Dnsbgpd, name: &str) -> Result<Value> {
    let v = d.get_json("/api/v1/sync/peers")?;
    v["peers"].as_array().and_then(|p| p.iter().find(|p| p["name"] == name).cloned()).context("peer in view")
}

fn prefixes(d: &Dnsbgpd) -> Result<BTreeSet<String>> {
    Ok(d.routes()?.iter().filter_map(|r| r["prefix"].as_str().map(String::from)).collect())
}

fn route_count(d: &Dnsbgpd) -> Result<u64> {
    d.get_json("/api/v1/status")?["routes"].as_u64().context("routes in status")
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// One request with an optional bearer token and a JSON body (the shared
/// client in tests/common).
fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Result<(u16, String)> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut headers = vec!["Content-Type: application/json"];
    headers.extend(auth.as_deref());
    common::request(addr, method, path, &headers, std::str::from_utf8(body)?)
}

/// POSTs a body of `len` spaces and returns the answer's status. The
/// server answers a too-large body before reading it and closes the
/// connection, so the body is written from a second thread that stops at
/// the first write error, while this one reads the answer (a client that
/// only reads after writing the whole body sees a broken pipe instead).
fn post_huge(addr: SocketAddr, path: &str, token: &str, len: usize) -> Result<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = s.try_clone()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let writer = std::thread::spawn(move || {
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        let chunk = vec![b' '; 64 << 10];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            if w.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).context("reading the answer to a huge POST")?;
        if n == 0 {
            bail!("connection closed before an answer: {:?}", String::from_utf8_lossy(&answer));
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&answer);
    Ok(text.split_whitespace().nth(1).context("no status")?.parse()?)
}

fn addr(i: u32) -> IpAddr {
    // 198.18.0.0/15 (benchmarking range): plenty of unicast addresses.
    IpAddr::from([198, 18 + (i >> 16) as u8, (i >> 8) as u8, i as u8])
}

/// A name resolved at A (real unbound) is at B and C within 1 s of being
/// at A, attributed to A's instance id.
#[test]
fn resolved_at_a_is_pushed_to_b_and_c() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !peers::require(peers::UNBOUND_BINS) {
        return Ok(());
    }
    let nsd = Nsd::start(tmp.path())?;
    let nodes = mesh(tmp.path(), &["a", "b", "c"], &Options::default(), "")?;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let ub = Unbound::start(tmp.path(), nsd.port(), DnstapTarget::Unix(a.socket.clone()))?;
    let a_id = instance_id(a)?;
    assert_eq!(dig(ub.port(), peers::WWW_LISTED, "A")?, [peers::WWW_LISTED_V4]);
    let prefix = v4(peers::WWW_LISTED_V4);
    // unbound delivers dnstap up to ~1 s late; the clock starts at A.
    wait_for(Duration::from_secs(15), "route at A", || a.route(&prefix))?;
    let at_a = Instant::now();
    for d in [b, c] {
        let r = wait_for(PUSH, "route pushed from A", || d.route(&prefix))
            .with_context(|| format!("A's log:\n{}", common::tail(&a.log(), 20)))?;
        assert_eq!(r["source"], a_id.as_str(), "{r}");
        assert_eq!(r["domain"], "www.listed.test", "{r}");
        assert_eq!(r["list"], "vpn", "{r}");
    }
    let elapsed = at_a.elapsed();
    assert_eq!(a.route(&prefix)?.context("A keeps it")?["source"], "dns");
    // It came by push (pulls run every 30 s by default).
    assert!(b.metric("dnsbgpd_sync_changes_received_total{peer=\"a\",via=\"push\"}")? >= 1.0);
    eprintln!("pushed to B and C {elapsed:?} after A had it");
    // Nothing echoes back: A holds only its own attribution.
    std::thread::sleep(Duration::from_millis(500));
    let r = a.route(&prefix)?.context("route at A")?;
    assert_eq!(r["names"].as_array().map(Vec::len), Some(1), "{r}");
    Ok(())
}

/// C stopped, changes at A, C restarted with its store: it catches up from
/// its cursor (a few changes, no snapshot). C restarted with an empty
/// store: a full snapshot.
#[test]
fn restart_resumes_from_cursor_and_empty_store_gets_snapshot() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut nodes = mesh(tmp.path(), &["a", "c"], &Options::default(), "interval = \"1s\"")?;
    let mut w = DnstapWriter::connect(&nodes[0].socket)?;
    let bulk: Vec<(IpAddr, u32)> = (0..200).map(|i| (addr(i), 300)).collect();
    w.answer("bulk.listed.test", &bulk)?;
    let c = &nodes[1];
    wait_for(Duration::from_secs(10), "200 routes at C", || Ok((route_count(c)? == 200).then_some(())))?;
    assert!(c.metric("dnsbgpd_sync_snapshots_total{peer=\"a\"}")? >= 1.0, "first contact is a snapshot");

    let c = &mut nodes[1];
    assert!(c.stop()?);
    let more: Vec<(IpAddr, u32)> = (1000..1005).map(|i| (addr(i), 300)).collect();
    w.answer("more.listed.test", &more)?;
    wait_for(PUSH, "205 routes at A", || Ok((route_count(&nodes[0])? == 205).then_some(())))?;
    let c = &mut nodes[1];
    c.relaunch()?;
    let c = &nodes[1];
    wait_for(Duration::from_secs(10), "C catches up", || Ok((route_count(c)? == 205).then_some(())))?;
    let received = c.metric("dnsbgpd_sync_changes_received_total{peer=\"a\",via=\"pull\"}")?
        + c.metric("dnsbgpd_sync_changes_received_total{peer=\"a\",via=\"push\"}")?;
    assert_eq!(c.metric("dnsbgpd_sync_snapshots_total{peer=\"a\"}")?, 0.0, "resumed, no snapshot");
    assert!((5.0..=20.0).contains(&received), "only the delta is transferred, got {received} changes");
    let bytes = c.metric("dnsbgpd_sync_client_bytes_total{peer=\"a\",via=\"pull\"}")?;
    assert!(bytes < 10_000.0, "pulled {bytes} bytes for 5 changes");

    // Empty store: a new instance for A, which sends everything.
    let c = &mut nodes[1];
    assert!(c.stop()?);
    std::fs::remove_dir_all(&c.store)?;
    c.relaunch()?;
    let c = &nodes[1];
    wait_for(Duration::from_secs(10), "C rebuilt", || Ok((route_count(c)? == 205).then_some(())))?;
    assert!(c.metric("dnsbgpd_sync_snapshots_total{peer=\"a\"}")? >= 1.0);
    assert!(c.metric("dnsbgpd_sync_changes_received_total{peer=\"a\",via=\"pull\"}")? >= 205.0);
    // A notices C's new identity at its next pull.
    let c_id = instance_id(c)?;
    wait_for(Duration::from_secs(5), "A to learn C's new instance id", || {
        Ok((peer_view(&nodes[0], "c")?["instance"] == c_id.as_str()).then_some(()))
    })?;
    Ok(())
}

/// A keeps answering a name with a 2 s TTL for 6 s (three TTLs): B never
/// loses the route. Then A stops answering: the route expires at A and
/// leaves B and C.
#[test]
fn refreshed_route_never_flaps_and_expiry_propagates() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let nodes = mesh(tmp.path(), &["a", "b", "c"], &Options::default(), "")?;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let prefix = v4("198.51.100.70");
    let answer = [("198.51.100.70".parse()?, 2)];
    let mut w = DnstapWriter::connect(&a.socket)?;
    w.answer("short.listed.test", &answer)?;
    b.wait_route(&prefix, PUSH)?;
    let until = Instant::now() + Duration::from_secs(6);
    let mut next_answer = Instant::now() + Duration::from_millis(500);
    let mut checks = 0;
    while Instant::now() < until {
        if Instant::now() >= next_answer {
            w.answer("short.listed.test", &answer)?;
            next_answer += Duration::from_millis(500);
        }
        assert!(b.route(&prefix)?.is_some(), "route flapped at B after {checks} checks");
        checks += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(checks > 50);
    assert!(c.route(&prefix)?.is_some());
    // Silence: gone at A within its TTL (+ expiry tick), then at B and C.
    let stopped = Instant::now();
    a.wait_no_route(&prefix, Duration::from_secs(4))?;
    for d in [b, c] {
        d.wait_no_route(&prefix, Duration::from_secs(2))?;
    }
    assert!(stopped.elapsed() < Duration::from_secs(5));
    Ok(())
}

/// A name leaving A's list withdraws A's route everywhere, except where
/// another instance still vouches for it.
#[test]
fn withdrawal_by_origin_propagates_unless_another_refreshes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let nodes = mesh(tmp.path(), &["a", "b", "c"], &Options::default(), "")?;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let (only_a, shared) = ("198.51.100.10", "198.51.100.11");
    DnstapWriter::connect(&a.socket)?.answer("www.listed.test", &[(only_a.parse()?, 300), (shared.parse()?, 300)])?;
    DnstapWriter::connect(&b.socket)?.answer("edge.listed.test", &[(shared.parse()?, 300)])?;
    let b_id = instance_id(b)?;
    for d in [b, c] {
        d.wait_route(&v4(only_a), PUSH)?;
    }
    wait_for(PUSH, "C has A's and B's attribution of the shared address", || {
        Ok(c.route(&v4(shared))?.filter(|r| r["names"].as_array().map(Vec::len) == Some(2)))
    })?;
    // listed.test leaves A's list but www.listed.test stays listed at B and C
    // (each instance has its own lists; here they differ on purpose).
    std::fs::write(a.list_file("vpn"), "face.test\n")?;
    common::send_signal(a.pid(), peers::SIGHUP)?;
    a.wait_no_route(&v4(only_a), Duration::from_secs(2))?;
    let withdrawn = Instant::now();
    for d in [b, c] {
        d.wait_no_route(&v4(only_a), PUSH)?;
    }
    eprintln!("withdrawal reached B and C in {:?}", withdrawn.elapsed());
    // The shared address stays: B saw it itself, and C keeps B's attribution.
    let r = b.route(&v4(shared))?.context("B keeps its own route")?;
    assert_eq!(r["source"], "dns");
    let r = wait_for(PUSH, "C down to B's attribution", || {
        Ok(c.route(&v4(shared))?.filter(|r| r["names"].as_array().map(Vec::len) == Some(1)))
    })?;
    assert_eq!(r["source"], b_id.as_str(), "{r}");
    Ok(())
}

/// Wrong tokens, bad bodies and bad entries: refused and counted; good
/// entries of the same batch are kept and A's routes keep flowing.
#[test]
fn hostile_pushes_are_rejected_and_counted() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // Pushes speak only for configured peers: the intruder is one (its url
    // answers nothing), so its entries are judged one by one.
    let intruder = format!(
        "[[sync.peer]]\nname = \"intruder\"\nurl = \"http://127.0.0.1:{}\"\ntoken = \"{TOKEN}\"\ninstance = \"intruder-1\"\n",
        common::free_port()
    );
    let nodes = mesh(tmp.path(), &["a", "b"], &Options::default(), &intruder)?;
    let (a, b) = (&nodes[0], &nodes[1]);
    let push = "/api/v1/sync/push";
    let now = now_ms();
    let entry = |seq: u64, address: &str, domain: &str, expires: u64| {
        json!({"seq": seq, "address": address, "origin": "intruder-1",
               "names": [{"domain": domain, "list": "vpn", "expires": expires}]})
    };
    let page = |changes: Vec<Value>| {
        let next = changes.len() as u64;
        json!({"instance": "intruder-1", "since": 0, "next": next, "head": next, "changes": changes}).to_string()
    };
    let good = page(vec![entry(1, "198.51.100.20", "good.listed.test", now + 60_000)]);
    let before = prefixes(b)?;

    // Authentication first.
    assert_eq!(request(b.api, "POST", push, None, good.as_bytes())?.0, 401);
    let (code, body) = request(b.api, "POST", push, Some("wrong-token-0123456789"), good.as_bytes())?;
    assert_eq!(code, 401, "{body}");
    assert_eq!(request(b.api, "GET", "/api/v1/sync/changes?since=0", None, b"")?.0, 401);
    assert_eq!(prefixes(b)?, before, "nothing changes without the token");
    assert_eq!(b.metric("dnsbgpd_sync_requests_rejected_total{reason=\"auth\"}")?, 3.0);

    // Broken JSON and bodies that are not pages: 400 with a message.
    let (code, body) = request(b.api, "POST", push, Some(TOKEN), b"{\"instance\": \"x\", \"chan")?;
    assert_eq!(code, 400);
    assert!(serde_json::from_str::<Value>(&body)?["error"].as_str().unwrap_or("").contains("invalid JSON"), "{body}");
    let (code, body) =
        request(b.api, "POST", push, Some(TOKEN), br#"{"instance":"x","since":5,"next":1,"changes":[]}"#)?;
    assert_eq!(code, 400, "{body}");
    // 50 MB: refused before it is read.
    assert_eq!(post_huge(b.api, push, TOKEN, 50 << 20)?, 413);
    assert_eq!(b.metric("dnsbgpd_sync_requests_rejected_total{reason=\"too_large\"}")?, 1.0);
    assert_eq!(b.metric("dnsbgpd_sync_requests_rejected_total{reason=\"json\"}")?, 1.0);

    // A batch mixing good and bad entries.
    let mixed = page(vec![
        entry(1, "198.51.100.20", "good.listed.test", now + 60_000),
        entry(2, "198.51.100.21", "evil.test", now + 60_000),
        entry(3, "0.0.0.0", "www.listed.test", now + 60_000),
        entry(4, "127.0.0.1", "www.listed.test", now + 60_000),
        entry(5, "224.0.0.1", "www.listed.test", now + 60_000),
        entry(6, "198.51.100.300", "www.listed.test", now + 60_000),
        entry(7, "198.51.100.22", "www.listed.test", now + 10 * 365 * 86_400_000),
        entry(8, "2001:db8::20", "good.listed.test", now + 60_000),
    ]);
    let (code, body) = request(b.api, "POST", push, Some(TOKEN), mixed.as_bytes())?;
    assert_eq!(code, 200, "{body}");
    let reply: Value = serde_json::from_str(&body)?;
    assert_eq!(reply["rejected"], 6, "{reply}");
    let routes = prefixes(b)?;
    assert!(routes.contains("198.51.100.20/32") && routes.contains("2001:db8::20/128"), "{routes:?}");
    for bad in ["198.51.100.21/32", "0.0.0.0/32", "127.0.0.1/32", "224.0.0.1/32", "198.51.100.22/32"] {
        assert!(!routes.contains(bad), "{bad} must not be announced");
    }
    let r = b.route("198.51.100.20/32")?.context("good route")?;
    assert_eq!(r["source"], "intruder-1");
    let rejected = |reason: &str| b.metric(&format!("dnsbgpd_sync_changes_rejected_total{{reason=\"{reason}\"}}"));
    assert_eq!(rejected("address")?, 4.0);
    assert_eq!(rejected("unlisted")?, 1.0);
    assert_eq!(rejected("expiry")?, 1.0);

    // Sync from A goes on.
    DnstapWriter::connect(&a.socket)?.answer("after.listed.test", &[("198.51.100.23".parse()?, 300)])?;
    b.wait_route("198.51.100.23/32", PUSH)?;
    Ok(())
}

/// B frozen (SIGSTOP: connections hang), many changes at A: A's push
/// backlog stays within push_queue, overflows to a pull; after B resumes,
/// B converges.
#[test]
fn partition_keeps_queues_bounded_and_heals() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let sync = "interval = \"1s\"\ntimeout = \"500ms\"\npush_queue = 50";
    let nodes = mesh(tmp.path(), &["a", "b"], &Options::default(), sync)?;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut w = DnstapWriter::connect(&a.socket)?;
    w.answer("first.listed.test", &[(addr(0), 300)])?;
    b.wait_route(&v4(&addr(0).to_string()), PUSH)?;

    struct Resume(i32);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = common::send_signal(self.0, SIGCONT);
        }
    }
    common::send_signal(b.pid(), SIGSTOP)?;
    let resume = Resume(b.pid());
    let mut max_queue = 0.0f64;
    for batch in 0..6u32 {
        let answers: Vec<(IpAddr, u32)> = (0..50).map(|i| (addr(1 + batch * 50 + i), 300)).collect();
        w.answer(&format!("batch{batch}.listed.test"), &answers)?;
        for _ in 0..5 {
            max_queue = max_queue.max(a.metric("dnsbgpd_sync_push_queue{peer=\"b\"}")?);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    wait_for(Duration::from_secs(5), "a push overflow at A", || {
        Ok((a.metric("dnsbgpd_sync_push_overflows_total{peer=\"b\"}")? >= 1.0).then_some(()))
    })?;
    assert!(max_queue <= 50.0, "push backlog {max_queue} exceeded push_queue");
    let view = peer_view(a, "b")?;
    assert_eq!(view["state"], "down", "{view}");
    assert!(view["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{view}");
    assert_eq!(route_count(a)?, 301);

    drop(resume);
    let healed = Instant::now();
    wait_for(Duration::from_secs(10), "B converges", || Ok((route_count(b)? == 301).then_some(())))?;
    eprintln!("converged {:?} after the partition healed", healed.elapsed());
    wait_for(Duration::from_secs(5), "A sees B up", || Ok((peer_view(a, "b")?["state"] == "up").then_some(())))?;
    let view = peer_view(b, "a")?;
    assert_eq!(view["lag"], 0, "{view}");
    assert_eq!(prefixes(a)?, prefixes(b)?);
    Ok(())
}

/// A serves its API (and so sync) over HTTPS; B trusts the CA file and
/// syncs with it both ways.
#[test]
fn https_between_peers() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs)?;
    if !common::make_certs(&certs)? {
        return Ok(());
    }
    let opts = Options::default();
    let a = Dnsbgpd::configure(&tmp.path().join("a"), &opts)?;
    let mut b = Dnsbgpd::configure(&tmp.path().join("b"), &opts)?;
    b.token = Some(TOKEN.to_string());
    let a_conf = std::fs::read_to_string(&a.config)?.replace(
        "[api]\n",
        &format!(
            "[api]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            certs.join("api.pem").display(),
            certs.join("api.key").display()
        ),
    );
    std::fs::write(
        &a.config,
        format!(
            "{a_conf}\n[sync]\ntoken = \"{TOKEN}\"\n[[sync.peer]]\nname = \"b\"\nurl = \"http://{}\"\ntoken = \"{TOKEN}\"\n",
            b.api
        ),
    )?;
    let b_conf = std::fs::read_to_string(&b.config)?;
    std::fs::write(
        &b.config,
        format!(
            "{b_conf}\n[sync]\ntoken = \"{TOKEN}\"\nca_file = \"{}\"\n[[sync.peer]]\nname = \"a\"\nurl = \"https://{}\"\ntoken = \"{TOKEN}\"\n",
            certs.join("ca.pem").display(),
            a.api
        ),
    )?;
    // A's readiness cannot be probed over plain HTTP: start it by hand.
    let mut cmd = std::process::Command::new(common::binary());
    cmd.args(["--log-level", "debug", "run", "--config"]).arg(&a.config);
    let mut a_proc = common::Process::spawn("dnsbgpd-a", cmd, &a.dir.join("dnsbgpd.log"))?;
    let b = b.launch()?;
    wait_for(Duration::from_secs(15), "B pulls from A over HTTPS", || {
        if !a_proc.is_running() {
            bail!("A exited:\n{}", a_proc.log());
        }
        Ok((peer_view(&b, "a")?["state"] == "up").then_some(()))
    })
    .with_context(|| {
        format!("A's log:\n{}\nB's log:\n{}", common::tail(&a_proc.log(), 20), common::tail(&b.log(), 20))
    })?;
    wait_for(Duration::from_secs(10), "A's dnstap socket", || Ok(a.socket.exists().then_some(())))?;
    // Plain HTTP to A's listener gets no HTTP answer.
    assert!(request(a.api, "GET", "/api/v1/status", None, b"").is_err());
    DnstapWriter::connect(&a.socket)?.answer("tls.listed.test", &[("198.51.100.30".parse()?, 300)])?;
    b.wait_route("198.51.100.30/32", PUSH)?;
    assert!(b.metric("dnsbgpd_sync_changes_received_total{peer=\"a\",via=\"push\"}")? >= 1.0);
    a_proc.kill();
    Ok(())
}

//! The blocking engine end to end with a real resolver: nsd serves the
//! test zones, unbound resolves them with dnstap CLIENT_QUERY and
//! CLIENT_RESPONSE to a real dnsbgpd, clients on distinct loopback
//! addresses send paced queries, and the blocks are read back from the
//! API. No kernel filter here ([blocking.attach] absent): these tests
//! cover what the engine decides; blocks are listed, not enforced.
//!
//! Needs nsd, unbound and dig (Debian packages): skipped with a printed
//! reason outside CI when missing, a failure with CI=true.

mod common;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};
use common::dns_load;
use common::peers::{self, DnstapTarget, Nsd, Unbound};
use common::{Dnsbgpd, Options, request, wait_for};
use serde_json::Value;

/// unbound hands frames over in batches (≤ 1 s); leave room for CI.
const ARRIVE: Duration = Duration::from_secs(10);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn start(tmp: &std::path::Path, blocking: &str, api_extra: &str) -> Result<Option<(Nsd, Dnsbgpd, Unbound)>> {
    if !peers::require(peers::UNBOUND_BINS) {
        return Ok(None);
    }
    let nsd = Nsd::start(tmp)?;
    let mut d = Dnsbgpd::configure(tmp, &Options { extra_config: blocking.to_string(), ..Options::default() })?;
    // With a token, the GETs of the helper need it too.
    d.token = api_extra.strip_prefix("token = \"").and_then(|t| t.strip_suffix('"')).map(String::from);
    if !api_extra.is_empty() {
        let conf = std::fs::read_to_string(&d.config)?;
        let conf = conf.replacen("[api]\n", &format!("[api]\n{api_extra}\n"), 1);
        std::fs::write(&d.config, conf)?;
    }
    let d = d.launch()?;
    let ub = Unbound::start(tmp, nsd.port(), DnstapTarget::Unix(d.socket.clone()))?;
    Ok(Some((nsd, d, ub)))
}

fn blocks(d: &Dnsbgpd) -> Result<Vec<Value>> {
    match d.get_json("/api/v1/blocks")? {
        Value::Array(v) => Ok(v),
        other => bail!("blocks is not an array: {other}"),
    }
}

fn block(d: &Dnsbgpd, key: &str) -> Result<Option<Value>> {
    Ok(blocks(d)?.into_iter().find(|b| b["key"] == key))
}

fn wait_block(d: &Dnsbgpd, key: &str) -> Result<Value> {
    wait_for(ARRIVE, &format!("block {key}"), || block(d, key))
        .map_err(|e| anyhow::anyhow!("{e:#}\nblocks: {:?}\nlog:\n{}", blocks(d).ok(), common::tail(&d.log(), 30)))
}

fn time(v: &Value) -> Result<SystemTime> {
    Ok(humantime::parse_rfc3339(v.as_str().unwrap_or_default())?)
}

/// A query_rate rule: the client above it gets a block with every field
/// the API promises, a client below it does not, and the block ends on
/// time once the client stops.
#[test]
fn query_rate_block_fields_and_expiry() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let rules = "[blocking]\n[[blocking.rule]]\nname = \"qps\"\nkind = \"query_rate\"\nrate = 40\nwindow = \"1s\"\n\
                 duration = \"3s\"\nreason = \"too many queries\"\n";
    let Some((_nsd, d, ub)) = start(tmp.path(), rules, "")? else { return Ok(()) };
    let port = ub.port();
    let quiet = std::thread::spawn(move || {
        dns_load::run(ip("127.0.0.3"), port, 10, Duration::from_secs(2), |_| peers::WWW_LISTED.into())
    });
    let loud = dns_load::run(ip("127.0.0.2"), port, 300, Duration::from_millis(1500), |_| peers::WWW_LISTED.into())?;
    assert!(loud.answered > 0, "{loud:?}");
    let b = wait_block(&d, "127.0.0.2")?;
    assert_eq!(b["kind"], "source", "{b}");
    assert_eq!(b["qtype"], "ANY", "{b}");
    assert_eq!(b["rule"], "qps", "{b}");
    assert_eq!(b["reason"], "too many queries", "{b}");
    assert_eq!(b["action"], "drop", "{b}");
    assert_eq!(b["warning"], false, "{b}");
    assert!(b["hits"].is_u64(), "{b}");
    // Without a kernel filter the client is still answered, so its later
    // queries renew the block: at least `duration` from its creation.
    let (created, expires) = (time(&b["created"])?, time(&b["expires"])?);
    let lasts = expires.duration_since(created)?;
    assert!(lasts >= Duration::from_secs(3) && lasts <= Duration::from_millis(4600), "{b}");
    let quiet = quiet.join().map_err(|_| anyhow::anyhow!("quiet client panicked"))??;
    assert!(quiet.answered >= quiet.sent * 9 / 10, "{quiet:?}");
    assert!(block(&d, "127.0.0.3")?.is_none(), "a client under the rate is not blocked");
    // Ends on time: once the last frames are in (unbound's ≤ 1 s batching),
    // the expiry stays put and the block is gone within an evaluation or
    // two after it.
    std::thread::sleep(Duration::from_millis(1200));
    let b = block(&d, "127.0.0.2")?.expect("still in force");
    let expires = time(&b["expires"])?;
    let left = expires.duration_since(SystemTime::now()).unwrap_or_default();
    wait_for(left + Duration::from_secs(1), "the block to end", || {
        Ok(block(&d, "127.0.0.2")?.is_none().then_some(()))
    })?;
    assert!(d.metric("dnsbgpd_blocking_blocks_created_total{rule=\"qps\"}")? >= 1.0);
    assert!(d.metric("dnsbgpd_blocking_sightings_total")? > 400.0);
    let status = d.get_json("/api/v1/status")?;
    assert_eq!(status["blocking"]["rules"][0]["name"], "qps", "{status}");
    assert_eq!(status["blocking"]["up"], false, "no [blocking.attach]: {status}");
    Ok(())
}

/// `v4_prefix = 24` blocks the attacker's /24; an excluded range is never
/// blocked (not even counted), however hard it sends.
#[test]
fn aggregation_and_exclusion() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let rules = "[blocking]\nv4_prefix = 24\nexclude = [\"127.0.1.0/24\"]\n\
                 [[blocking.rule]]\nname = \"qps\"\nkind = \"query_rate\"\nrate = 40\nwindow = \"1s\"\nduration = \"30s\"\n";
    let Some((_nsd, d, ub)) = start(tmp.path(), rules, "")? else { return Ok(()) };
    let port = ub.port();
    let excluded = std::thread::spawn(move || {
        dns_load::run(ip("127.0.1.5"), port, 300, Duration::from_millis(1500), |_| peers::WWW_LISTED.into())
    });
    // Two addresses of one /24, each under the rate, together over it.
    let a = std::thread::spawn(move || {
        dns_load::run(ip("127.0.2.7"), port, 150, Duration::from_millis(1500), |_| peers::WWW_LISTED.into())
    });
    dns_load::run(ip("127.0.2.8"), port, 150, Duration::from_millis(1500), |_| peers::WWW_OTHER.into())?;
    a.join().map_err(|_| anyhow::anyhow!("panicked"))??;
    let ex = excluded.join().map_err(|_| anyhow::anyhow!("panicked"))??;
    assert!(ex.answered > 0);
    let b = wait_block(&d, "127.0.2.0/24")?;
    assert_eq!(b["kind"], "source");
    // Everything sent has arrived once the /24 was judged; the excluded
    // range had as long.
    std::thread::sleep(Duration::from_millis(1500));
    let all = blocks(&d)?;
    assert_eq!(all.len(), 1, "only the /24: {all:?}");
    assert!(block(&d, "127.0.1.0/24")?.is_none());
    Ok(())
}

/// A warning_rate gives a warning entry; nothing is dropped and the
/// client keeps being answered.
#[test]
fn warning_rate_gives_a_warning_entry() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let rules = "[blocking]\n[[blocking.rule]]\nname = \"qps\"\nkind = \"query_rate\"\nrate = 10000\nwarning_rate = 40\n\
                 window = \"1s\"\nduration = \"20s\"\n";
    let Some((_nsd, d, ub)) = start(tmp.path(), rules, "")? else { return Ok(()) };
    let r = dns_load::run(ip("127.0.0.4"), ub.port(), 250, Duration::from_millis(1500), |_| peers::WWW_LISTED.into())?;
    let b = wait_block(&d, "127.0.0.4")?;
    assert_eq!(b["warning"], true, "{b}");
    assert_eq!(b["rule"], "qps", "{b}");
    assert!(r.answered >= r.sent * 9 / 10, "answered throughout: {r:?}");
    assert_eq!(d.metric("dnsbgpd_blocking_warnings")?, 1.0);
    assert_eq!(d.get_json("/api/v1/status")?["blocking"]["warnings"], 1);
    Ok(())
}

/// rcode_ratio with min_responses: a client whose answers are all
/// NXDOMAIN but who sent fewer than min_responses is not blocked; one
/// over both is.
#[test]
fn rcode_ratio_with_min_responses() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let rules = "[blocking]\n[[blocking.rule]]\nname = \"nx\"\nkind = \"rcode_ratio\"\nrcode = \"NXDOMAIN\"\nratio = 0.5\n\
                 min_responses = 60\nwindow = \"3s\"\nduration = \"20s\"\n";
    let Some((_nsd, d, ub)) = start(tmp.path(), rules, "")? else { return Ok(()) };
    let port = ub.port();
    let few = dns_load::run(ip("127.0.0.5"), port, 40, Duration::from_secs(1), |i| format!("few{i}.listed.test"))?;
    assert!(few.nxdomain >= 30, "{few:?}");
    // Mostly NXDOMAIN, some answered: ratio ~0.8, 100 responses.
    let many = dns_load::run(ip("127.0.0.6"), port, 100, Duration::from_secs(1), |i| {
        if i % 5 == 0 { peers::WWW_LISTED.to_string() } else { format!("many{i}.listed.test") }
    })?;
    assert!(many.nxdomain >= 60, "{many:?}");
    let b = wait_block(&d, "127.0.0.6")?;
    assert_eq!(b["rule"], "nx", "{b}");
    assert!(block(&d, "127.0.0.5")?.is_none(), "under min_responses: {:?}", blocks(&d)?);
    Ok(())
}

/// nxdomain_suffix: random labels under one zone get that zone's suffix
/// blocked (names below it), with the names answered during the window
/// as allow entries; the other zone is untouched.
#[test]
fn nxdomain_suffix_with_allow_entries() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let rules = "[blocking]\n[[blocking.rule]]\nname = \"random\"\nkind = \"nxdomain_suffix\"\nrate = 30\nwindow = \"2s\"\n\
                 duration = \"20s\"\nmax_allow = 2\n";
    let Some((_nsd, d, ub)) = start(tmp.path(), rules, "")? else { return Ok(()) };
    let port = ub.port();
    // Popular names first: answered with data.
    let names = [peers::WWW_LISTED, peers::WWW_LISTED, peers::WWW_LISTED, peers::EDGE_LISTED, peers::WWW_OTHER];
    dns_load::run(ip("127.0.0.7"), port, 50, Duration::from_millis(600), |i| names[i as usize % names.len()].into())?;
    // A few NXDOMAIN under other.test from the same clients: not a flood.
    dns_load::run(ip("127.0.0.8"), port, 10, Duration::from_millis(500), |i| format!("miss{i}.other.test"))?;
    // The flood, spread over many clients (no per-client rule).
    for c in 0..4 {
        let from = ip(&format!("127.0.3.{}", 10 + c));
        dns_load::run(from, port, 100, Duration::from_millis(500), |i| format!("r{c}x{i}.listed.test"))?;
    }
    let b = wait_block(&d, "suffix:listed.test")?;
    assert_eq!(b["kind"], "suffix", "{b}");
    assert_eq!(b["matching"], "below", "{b}");
    assert_eq!(b["rule"], "random", "{b}");
    let allow: Vec<&str> =
        b["allow"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    assert_eq!(allow, [peers::WWW_LISTED, peers::EDGE_LISTED], "{b}");
    assert!(block(&d, "suffix:other.test")?.is_none());
    assert!(blocks(&d)?.iter().all(|b| b["kind"] == "suffix"), "no client block: {:?}", blocks(&d)?);
    Ok(())
}

/// Manual blocks through the API: a token guards POST and DELETE; bad
/// input is a 400 naming the problem; DELETE takes percent-encoded keys.
#[test]
fn manual_blocks_with_and_without_token() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let token = "0123456789abcdef0123";
    let Some((_nsd, d, _ub)) = start(tmp.path(), "[blocking]\n", &format!("token = \"{token}\""))? else {
        return Ok(());
    };
    let auth = format!("Authorization: Bearer {token}");
    let body = r#"{"key": "198.51.100.0/24", "duration": "10m", "reason": "scan", "blackhole": false}"#;
    let (code, _) = request(d.api, "POST", "/api/v1/blocks", &["Content-Type: application/json"], body)?;
    assert_eq!(code, 401, "POST without the token");
    let (code, text) = request(d.api, "POST", "/api/v1/blocks", &[&auth], body)?;
    assert_eq!(code, 201, "{text}");
    let b: Value = serde_json::from_str(&text)?;
    assert_eq!(
        (b["key"].as_str(), b["kind"].as_str(), b["reason"].as_str()),
        (Some("198.51.100.0/24"), Some("source"), Some("scan"))
    );
    assert!(b.get("rule").is_none(), "a manual block has no rule: {b}");
    let left = time(&b["expires"])?.duration_since(time(&b["created"])?)?;
    assert_eq!(left, Duration::from_secs(600));
    let q = r#"{"key": "suffix:Example.TEST", "qtype": "AAAA", "duration": "1m"}"#;
    let (code, text) = request(d.api, "POST", "/api/v1/blocks", &[&auth], q)?;
    assert_eq!(code, 201, "{text}");
    let v6 = r#"{"key": "::1", "duration": "1m"}"#;
    assert_eq!(request(d.api, "POST", "/api/v1/blocks", &[&auth], v6)?.0, 201);
    let b = block(&d, "suffix:example.test")?.expect("listed");
    assert_eq!((b["qtype"].as_str(), b["kind"].as_str()), (Some("AAAA"), Some("suffix")));
    assert!(block(&d, "::1")?.is_some());
    for (bad, what) in [
        (r#"{"key": "198.51.100.1/24"}"#, "host bits"),
        (r#"{"key": "nonsense"}"#, "not an address"),
        (r#"{"key": "qname:a.test", "qtype": "BOGUS"}"#, "BOGUS"),
        (r#"{"key": "qname:a.test", "duration": "soon"}"#, "duration"),
        (r#"{"key": "198.51.100.7", "qtype": "A"}"#, "qtype"),
        (r#"{"kee": "198.51.100.7"}"#, "unknown field"),
        ("not json", "invalid block request"),
    ] {
        let (code, text) = request(d.api, "POST", "/api/v1/blocks", &[&auth], bad)?;
        assert_eq!(code, 400, "{bad}: {text}");
        assert!(text.contains(what), "{bad}: {text}");
    }
    // DELETE: token needed; percent-encoded key; gone at once.
    let path = "/api/v1/blocks/198.51.100.0%2F24";
    assert_eq!(request(d.api, "DELETE", path, &[], "")?.0, 401);
    assert!(block(&d, "198.51.100.0/24")?.is_some());
    assert_eq!(request(d.api, "DELETE", path, &[&auth], "")?.0, 204);
    assert!(block(&d, "198.51.100.0/24")?.is_none());
    assert_eq!(request(d.api, "DELETE", path, &[&auth], "")?.0, 404);
    assert_eq!(request(d.api, "DELETE", "/api/v1/blocks/suffix%3Aexample.test?qtype=AAAA", &[&auth], "")?.0, 204);
    assert_eq!(request(d.api, "DELETE", "/api/v1/blocks/%3A%3A1", &[&auth], "")?.0, 204);
    assert!(blocks(&d)?.is_empty());
    assert_eq!(d.metric("dnsbgpd_blocking_blocks_created_total{rule=\"manual\"}")?, 3.0);
    Ok(())
}

/// Blocks survive a restart of dnsbgpd (the persisted record); an
/// expired one does not come back.
#[test]
fn manual_blocks_survive_a_restart() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let Some((_nsd, mut d, _ub)) = start(tmp.path(), "[blocking]\n", "")? else { return Ok(()) };
    for body in [r#"{"key": "203.0.113.0/24", "duration": "10m"}"#, r#"{"key": "qname:short.test", "duration": "1s"}"#]
    {
        assert_eq!(request(d.api, "POST", "/api/v1/blocks", &[], body)?.0, 201);
    }
    assert!(d.stop()?);
    std::thread::sleep(Duration::from_millis(1200));
    d.relaunch()?;
    let b = block(&d, "203.0.113.0/24")?.expect("restored after the restart");
    assert_eq!(b["kind"], "source");
    assert!(block(&d, "qname:short.test")?.is_none(), "expired while down");
    Ok(())
}

/// `dnsbgpd replay` over a capture made here (real unbound writing to
/// fstrm_capture) gives the routes and blocks the daemon would have made,
/// on the capture's own clock, without a daemon.
#[test]
fn replay_of_a_real_capture() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !peers::require(peers::UNBOUND_BINS) || !peers::require(peers::FSTRM_BINS) {
        return Ok(());
    }
    let nsd = Nsd::start(tmp.path())?;
    let mut cap = peers::FstrmCapture::unix(tmp.path())?;
    let mut ub = Unbound::start(tmp.path(), nsd.port(), cap.target())?;
    let port = ub.port();
    let quiet = std::thread::spawn(move || {
        dns_load::run(ip("127.0.0.3"), port, 10, Duration::from_millis(1500), |_| peers::WWW_OTHER.into())
    });
    let loud = dns_load::run(ip("127.0.0.2"), port, 300, Duration::from_millis(1500), |_| peers::WWW_LISTED.into())?;
    quiet.join().map_err(|_| anyhow::anyhow!("panicked"))??;
    let want = 2 * (loud.answered as usize);
    cap.wait_until(ARRIVE, |b| peers::fstrm_data_frames(b).map(|f| f.len() >= want).unwrap_or(false))?;
    ub.stop();
    cap.stop();
    let rules = "[blocking]\n[[blocking.rule]]\nname = \"qps\"\nkind = \"query_rate\"\nrate = 40\nwindow = \"1s\"\n\
                 duration = \"3s\"\n";
    let d = Dnsbgpd::configure(tmp.path(), &Options { extra_config: rules.into(), ..Options::default() })?;
    let out = std::process::Command::new(common::binary())
        .args(["replay", "--json", "--config"])
        .arg(&d.config)
        .arg(cap.output())
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let blocks = report["blocks"].as_array().cloned().unwrap_or_default();
    assert_eq!(blocks.len(), 1, "{report}");
    assert_eq!(blocks[0]["key"], "127.0.0.2");
    assert_eq!(blocks[0]["rule"], "qps");
    // The capture's clock: the block starts within the capture.
    let (start, created) = (time(&report["start"])?, time(&blocks[0]["created"])?);
    assert!(created >= start && created.duration_since(start)? < Duration::from_secs(2), "{report}");
    let routes = report["routes"].as_array().cloned().unwrap_or_default();
    assert!(routes.iter().any(|r| r["prefix"] == "198.51.100.10/32" && r["domain"] == "www.listed.test"), "{report}");
    assert!(report["frames"].as_u64().unwrap_or(0) >= want as u64, "{report}");
    // The text form says the same.
    let out = std::process::Command::new(common::binary())
        .args(["replay", "--config"])
        .arg(&d.config)
        .arg(cap.output())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("blocks: 1") && text.contains("127.0.0.2  source"), "{text}");
    Ok(())
}

fn bird(dir: &std::path::Path) -> Result<common::bgp_peers::Bird> {
    use common::bgp_peers::{Bird, BirdConfig, BirdNeighbor};
    let mut cfg = BirdConfig::new("192.0.2.1".parse()?, 65000, ip("127.0.0.1"));
    let mut n = BirdNeighbor::new("dnsbgpd", ip("127.0.0.1"), 0, 65010);
    n.passive = true;
    cfg.neighbors.push(n);
    Bird::start(dir, &cfg)
}

fn bird_route(b: &common::bgp_peers::Bird, prefix: &str) -> Result<Option<common::bgp_peers::BirdRoute>> {
    Ok(b.route(prefix)?.into_iter().next())
}

/// `n` CLIENT_QUERY frames from `client` on a unidirectional dnstap
/// connection (bird ignores routes for loopback prefixes, so the
/// blackholed client must not be a loopback address: no resolver here).
fn dnstap_queries(socket: &std::path::Path, client: std::net::Ipv4Addr, n: usize) -> Result<()> {
    use dnsbgpd::dnstap::MessageType;
    use dnsbgpd::dnstap::writer::{self, Writer};
    let mut w = Writer::connect(socket)?;
    let now = SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    for i in 0..n {
        let msg = dnsbgpd::dnstap::proto::Message {
            query_time_sec: Some(now.as_secs()),
            query_time_nsec: Some(now.subsec_nanos()),
            ..writer::message(MessageType::ClientQuery, client.into(), writer::query(i as u16, "www.other.test", 1))
        };
        w.queue(&writer::payload(None, None, msg));
    }
    w.finish()?;
    Ok(())
}

/// Blackhole export: a rule with `action = "blackhole"` and a manual
/// `"blackhole": true` block reach a bird neighbor that opted in, with
/// BLACKHOLE (65535:666) and NO_EXPORT, and are withdrawn when the block
/// ends; a neighbor with the default `export` never sees them.
#[test]
fn blackhole_export_to_bird() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !common::bgp_peers::require_bgp(common::bgp_peers::BIRD_BINS) {
        return Ok(());
    }
    let opted = bird(tmp.path())?;
    let plain = bird(tmp.path())?;
    let neighbor = |name: &str, port: u16, extra: &str| {
        format!(
            "\n[[bgp.neighbor]]\nname = \"{name}\"\naddress = \"127.0.0.1\"\nport = {port}\nremote_as = 65000\n\
             connect_retry = \"200ms\"\n{extra}\n"
        )
    };
    let config = format!(
        "[bgp]\nlocal_as = 65010\nrouter_id = \"192.0.2.10\"\nbatch_interval = \"20ms\"\n{}{}\n\
         [blocking]\n[[blocking.rule]]\nname = \"flood\"\nkind = \"query_rate\"\nrate = 40\nwindow = \"1s\"\n\
         duration = \"2s\"\naction = \"blackhole\"\n",
        neighbor("opted", opted.port(), "export = [\"routes\", \"blackhole\"]"),
        neighbor("plain", plain.port(), ""),
    );
    let d = Dnsbgpd::start(tmp.path(), &Options { extra_config: config, ..Options::default() })?;
    opted.wait_established("dnsbgpd", Duration::from_secs(15))?;
    plain.wait_established("dnsbgpd", Duration::from_secs(15))?;

    dnstap_queries(&d.socket, "198.51.100.77".parse()?, 200)?;
    let b = wait_block(&d, "198.51.100.77")?;
    assert_eq!(b["action"], "blackhole", "{b}");
    let r = wait_for(Duration::from_secs(10), "blackhole in bird", || bird_route(&opted, "198.51.100.77/32"))?;
    assert!(r.communities.contains(&(65535, 666)), "{r:?}");
    assert!(r.communities.contains(&(65535, 65281)), "NO_EXPORT: {r:?}");
    assert_eq!(r.as_path, vec![65010], "{r:?}");
    // A manual blackhole of a /24, and one outside the default bounds (/16).
    for body in [r#"{"key": "203.0.113.0/24", "blackhole": true}"#, r#"{"key": "203.0.0.0/16", "blackhole": true}"#] {
        assert_eq!(request(d.api, "POST", "/api/v1/blocks", &[], body)?.0, 201);
    }
    wait_for(Duration::from_secs(10), "manual blackhole in bird", || bird_route(&opted, "203.0.113.0/24"))?;
    assert!(bird_route(&opted, "203.0.0.0/16")?.is_none(), "shorter than blackhole_min_v4");
    assert!(bird_route(&plain, "198.51.100.77/32")?.is_none(), "the default export is routes only");
    assert!(bird_route(&plain, "203.0.113.0/24")?.is_none());
    // A ROUTE-REFRESH re-sends the blackholes (the table is empty here, so
    // every UPDATE that answers it carries blackholes).
    let updates = "dnsbgpd_bgp_messages_total{neighbor=\"opted\",direction=\"out\",type=\"update\"}";
    let before = d.metric(updates)?;
    opted.birdc(&["reload", "in", "dnsbgpd"])?;
    wait_for(Duration::from_secs(5), "blackholes re-sent", || Ok((d.metric(updates)? > before).then_some(())))?;
    // Withdrawn at expiry and at DELETE.
    wait_for(Duration::from_secs(10), "blackhole withdrawn at expiry", || {
        Ok(bird_route(&opted, "198.51.100.77/32")?.is_none().then_some(()))
    })?;
    assert!(block(&d, "198.51.100.77")?.is_none());
    assert_eq!(request(d.api, "DELETE", "/api/v1/blocks/203.0.113.0%2F24", &[], "")?.0, 204);
    wait_for(Duration::from_secs(5), "manual blackhole withdrawn", || {
        Ok(bird_route(&opted, "203.0.113.0/24")?.is_none().then_some(()))
    })?;
    Ok(())
}

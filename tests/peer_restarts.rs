//! Real peers restarted while dnsbgpd is under load (issue 10, "Fault
//! injection"; RELIABILITY.md has the method and what these tests print).
//!
//! * `bird_restarted_under_load`: a dnstap writer keeps feeding new routes
//!   while the bird neighbor is killed (SIGKILL: no NOTIFICATION, the TCP
//!   session just dies) and started again. dnsbgpd keeps taking frames,
//!   the session comes back, and once the feed ends every route in
//!   dnsbgpd's table is in bird — none lost, nothing extra.
//! * `unbound_restarted_under_load`: queries keep going through unbound
//!   while it is stopped and started again; dnsbgpd sees the dnstap
//!   connection close and the new one open, and routes keep flowing over
//!   it (names only queried after the restart become routes).
//!
//! Needs bird2, or unbound, nsd and dig (Debian packages): skipped with a
//! printed reason outside CI, a failure with CI=true. Each runs in well
//! under 30 s on loopback.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::bgp_peers::{BIRD_BINS, Bird, BirdConfig, BirdNeighbor, require_bgp};
use common::dns_load;
use common::frames::DnstapWriter;
use common::peers::{self, DnstapTarget, Nsd, Unbound, dig};
use common::{Dnsbgpd, Options, wait_for};

const WAIT: Duration = Duration::from_secs(15);

/// The i-th fed route: 198.51.100.1–254, then 203.0.113.1–254 (the
/// documentation ranges; only route data, no traffic goes there).
fn fed_address(i: u32) -> IpAddr {
    let (net, host) = if i < 254 { ([198, 51, 100], i + 1) } else { ([203, 0, 113], i - 254 + 1) };
    IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], host as u8))
}

/// The sum of every series of the metric `name` (all label values).
fn metric_sum(d: &Dnsbgpd, name: &str) -> Result<f64> {
    let mut sum = 0.0;
    for line in d.metrics()?.lines() {
        if let Some(rest) = line.strip_prefix(name)
            && (rest.starts_with('{') || rest.starts_with(' '))
        {
            let v = rest.rsplit(' ').next().context("no value")?;
            sum += v.trim().parse::<f64>().with_context(|| format!("metric line {line:?}"))?;
        }
    }
    Ok(sum)
}

/// Routes in dnsbgpd's table, as prefixes.
fn table(d: &Dnsbgpd) -> Result<BTreeSet<String>> {
    Ok(d.routes()?.iter().filter_map(|r| r["prefix"].as_str().map(String::from)).collect())
}

/// Routes bird got from the neighbor `dnsbgpd`, as prefixes.
fn in_bird(bird: &Bird) -> Result<BTreeSet<String>> {
    Ok(bird.show_route_all()?.into_iter().map(|r| r.prefix).collect())
}

#[test]
fn bird_restarted_under_load() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !require_bgp(BIRD_BINS) {
        return Ok(());
    }
    let lo: IpAddr = "127.0.0.1".parse()?;
    let mut cfg = BirdConfig::new("192.0.2.1".parse()?, 65000, lo);
    let mut n = BirdNeighbor::new("dnsbgpd", lo, 0, 65010);
    n.passive = true;
    cfg.neighbors.push(n);
    let mut bird = Bird::start(tmp.path(), &cfg)?;
    let extra = format!(
        "[bgp]\nlocal_as = 65010\nrouter_id = \"192.0.2.10\"\nbatch_interval = \"20ms\"\n\
         [[bgp.neighbor]]\nname = \"bird\"\naddress = \"127.0.0.1\"\nport = {}\nremote_as = 65000\n\
         connect_retry = \"200ms\"\n",
        bird.port()
    );
    let d = Dnsbgpd::start(tmp.path(), &Options { extra_config: extra, ..Options::default() })?;
    bird.wait_established("dnsbgpd", WAIT)?;

    // The feed: 508 new routes over ~5 s (a new name every 10 ms), each
    // batch also refreshing earlier names, on one dnstap connection.
    const ROUTES: u32 = 508;
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (socket, sent, stop) = (d.socket.clone(), sent.clone(), stop.clone());
        std::thread::spawn(move || -> Result<u64> {
            let mut w = DnstapWriter::connect(&socket)?;
            let mut frames = 0u64;
            for i in 0..ROUTES {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                w.queue(&format!("r{i}.listed.test"), &[(fed_address(i), 600)]);
                for j in (0..i).rev().step_by(37).take(8) {
                    w.queue(&format!("r{j}.listed.test"), &[(fed_address(j), 600)]);
                    frames += 1;
                }
                w.flush()?;
                frames += 1;
                sent.store(u64::from(i) + 1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(frames)
        })
    };
    // On a failure the feed is cut short; otherwise it runs to its end.
    let join_feeder = |feeder: std::thread::JoinHandle<Result<u64>>, cut: bool| -> Result<u64> {
        stop.store(cut, Ordering::Relaxed);
        feeder.join().map_err(|_| anyhow::anyhow!("feeder panicked"))?
    };

    let r = (|| -> Result<()> {
        wait_for(WAIT, "bird to have 50 fed routes", || Ok((in_bird(&bird)?.len() >= 50).then_some(())))?;
        bird.kill9()?;
        let killed_at = sent.load(Ordering::Relaxed);
        // Down for a second while the feed goes on.
        std::thread::sleep(Duration::from_secs(1));
        let down_to = sent.load(Ordering::Relaxed);
        bird.restart(false)?;
        let t = Instant::now();
        bird.wait_established("dnsbgpd", WAIT)?;
        eprintln!(
            "bird killed after {killed_at} routes fed, back at {down_to}; session re-established {:?} after the \
             restart",
            t.elapsed()
        );
        if down_to <= killed_at {
            bail!("the feed did not go on while bird was down ({killed_at} → {down_to})");
        }
        Ok(())
    })();
    let frames = join_feeder(feeder, r.is_err());
    r.with_context(|| format!("dnsbgpd log:\n{}", common::tail(&d.log(), 30)))?;
    let frames = frames?;
    let fed = sent.load(Ordering::Relaxed) as usize;
    if fed < ROUTES as usize {
        bail!("the feed stopped early at {fed} routes");
    }

    // Every fed route reaches dnsbgpd's table, and every route in the
    // table reaches bird.
    let want: BTreeSet<String> = (0..ROUTES).map(|i| format!("{}/32", fed_address(i))).collect();
    wait_for(WAIT, "dnsbgpd to hold every fed route", || Ok((table(&d)? == want).then_some(())))
        .with_context(|| format!("table has {} of {}", table(&d).map(|t| t.len()).unwrap_or(0), want.len()))?;
    let mut last = BTreeSet::new();
    wait_for(WAIT, "bird to hold exactly dnsbgpd's table", || {
        last = in_bird(&bird)?;
        Ok((last == want).then_some(()))
    })
    .with_context(|| {
        let missing: Vec<_> = want.difference(&last).take(10).collect();
        let extra: Vec<_> = last.difference(&want).take(10).collect();
        format!("bird has {} of {}; missing e.g. {missing:?}, extra {extra:?}", last.len(), want.len())
    })?;
    let flaps = d.metric("dnsbgpd_bgp_flaps_total{neighbor=\"bird\"}")?;
    let established = d.metric("dnsbgpd_bgp_session_established{neighbor=\"bird\"}")?;
    eprintln!("bird restart: {frames} frames, {fed} routes, all {} in bird; flaps {flaps}", want.len());
    assert!(flaps >= 1.0, "the session drop was not counted as a flap");
    assert_eq!(established, 1.0);
    // The feed never had to reconnect: bird's restart did not touch the dnstap side.
    assert_eq!(metric_sum(&d, "dnsbgpd_dnstap_connections_total")?, 1.0);
    Ok(())
}

/// Sends `qps` queries a second for `secs` through 127.0.0.1:`port`, names
/// `q{tag}-{i}.wild.listed.test` (all distinct, so each one reaches the
/// dnstap stream as a fresh resolution).
fn wild_load(
    port: u16,
    tag: &'static str,
    qps: u32,
    secs: u64,
) -> std::thread::JoinHandle<Result<dns_load::LoadResult>> {
    std::thread::spawn(move || {
        dns_load::run("127.0.0.1".parse()?, port, qps, Duration::from_secs(secs), move |i| {
            format!("q{tag}-{i}.wild.listed.test")
        })
    })
}

#[test]
fn unbound_restarted_under_load() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !peers::require(peers::UNBOUND_BINS) {
        return Ok(());
    }
    let nsd = Nsd::start(tmp.path())?;
    let d = Dnsbgpd::start(tmp.path(), &Options::default())?;
    let accepted = "dnsbgpd_dnstap_connections_total";
    let clients = "dnsbgpd_dnstap_frames_total{type=\"CLIENT_RESPONSE\"}";
    let mut ub = Unbound::start(tmp.path(), nsd.port(), DnstapTarget::Unix(d.socket.clone()))?;
    let wild = format!("{}/32", peers::WILD_LISTED_V4);

    // Load through the first unbound; it is stopped halfway through.
    let before = wild_load(ub.port(), "a", 200, 3);
    d.wait_route(&wild, WAIT)?;
    wait_for(WAIT, "a dnstap connection", || Ok((metric_sum(&d, accepted)? >= 1.0).then_some(())))?;
    std::thread::sleep(Duration::from_millis(1500));
    let frames_before = d.metric(clients)?;
    ub.stop();
    wait_for(WAIT, "dnsbgpd to see the connection close", || {
        Ok((d.metric("dnsbgpd_dnstap_connections_open")? == 0.0).then_some(()))
    })?;
    let old = before.join().map_err(|_| anyhow::anyhow!("load thread panicked"))??;

    // A new unbound (its own port); load through it.
    let t = Instant::now();
    let mut ub = Unbound::start(tmp.path(), nsd.port(), DnstapTarget::Unix(d.socket.clone()))?;
    let after = wild_load(ub.port(), "b", 200, 3);
    wait_for(WAIT, "the dnstap connection to come back", || {
        Ok((metric_sum(&d, accepted)? >= 2.0 && d.metric("dnsbgpd_dnstap_connections_open")? == 1.0).then_some(()))
    })?;
    let back = t.elapsed();
    // Names asked only now become routes over the new connection.
    assert_eq!(dig(ub.port(), peers::EDGE_LISTED, "A")?, [peers::EDGE_LISTED_V4]);
    assert_eq!(dig(ub.port(), peers::DEEP_LISTED, "A")?, [peers::DEEP_LISTED_V4]);
    d.wait_route(&format!("{}/32", peers::EDGE_LISTED_V4), WAIT)?;
    d.wait_route(&format!("{}/32", peers::DEEP_LISTED_V4), WAIT)?;
    let new = after.join().map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    let mut frames_after = 0.0;
    wait_for(WAIT, "frames of the second load", || {
        frames_after = d.metric(clients)?;
        Ok((frames_after >= frames_before + new.answered as f64 / 2.0).then_some(()))
    })?;
    eprintln!(
        "unbound restart: {} of {} queries answered before, {} of {} after; connection back {back:?} after the \
         restart; CLIENT_RESPONSE frames {frames_before} before the stop, {frames_after} at the end",
        old.answered, old.sent, new.answered, new.sent
    );
    assert!(new.answered > 0, "the new unbound answered nothing");
    assert!(d.route(&wild)?.is_some(), "the route from before the restart is gone");
    assert_eq!(d.metric("dnsbgpd_dns_parse_errors_total")?, 0.0);
    ub.stop();
    Ok(())
}

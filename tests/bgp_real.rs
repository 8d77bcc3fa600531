//! The BGP speaker against real routers: bird2 (loopback and across a veth
//! pair into a network namespace, eBGP and iBGP), GoBGP and FRR. Routes are
//! fed through dnsbgpd's dnstap socket (tests/common/feed.rs) so names,
//! addresses and TTLs are exact.
//!
//! Needs bird2, gobgpd, frr and iproute2 (Debian packages): skipped with a
//! printed reason outside CI when missing, a failure with CI=true.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::bgp_peers::{
    BIRD_BINS, Bird, BirdConfig, BirdNeighbor, BirdRoute, FRR_BINS, Frr, FrrConfig, FrrNeighbor, GOBGP_BINS,
    GobgpConfig, GobgpNeighbor, Gobgpd, Netns, require_bgp, require_netns,
};
use common::feed::Feed;
use common::{Dnsbgpd, Options, wait_for};

const DNSBGPD_AS: u32 = 65010;
const ROUTER_AS: u32 = 65000;
const WAIT: Duration = Duration::from_secs(15);

fn lo() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

/// Lists: `vpn` with communities, `cdn` with a next-hop override and MED.
fn lists() -> Vec<(String, String)> {
    vec![("vpn".into(), "listed.test\n".into()), ("cdn".into(), "cdn.test\n".into())]
}

fn list_config() -> String {
    // Appended to every [[list]]; the cdn list is patched below.
    "communities = [\"65010:100\"]\nlarge_communities = [\"65010:0:100\"]".into()
}

/// A `[bgp]` section with the given neighbor blocks.
fn bgp_section(neighbors: &str) -> String {
    format!(
        "[bgp]\nlocal_as = {DNSBGPD_AS}\nrouter_id = \"192.0.2.10\"\nbatch_interval = \"20ms\"\nlocal_pref = 150\n\
         graceful_restart_time = \"60s\"\n{neighbors}"
    )
}

fn neighbor(name: &str, address: &str, port: u16, remote_as: u32, extra: &str) -> String {
    format!(
        "\n[[bgp.neighbor]]\nname = \"{name}\"\naddress = \"{address}\"\nport = {port}\nremote_as = {remote_as}\n\
         connect_retry = \"200ms\"\n{extra}\n"
    )
}

/// Starts dnsbgpd with the lists, a cdn override, and `bgp`.
fn dnsbgpd(dir: &std::path::Path, bgp: String) -> Result<Dnsbgpd> {
    let d = Dnsbgpd::configure(
        dir,
        &Options { lists: lists(), list_extra: list_config(), extra_config: bgp, ..Options::default() },
    )?;
    // The cdn list: its own next hop and a MED instead of the communities.
    let conf = std::fs::read_to_string(&d.config)?.replacen(
        "file = \"lists/cdn.txt\"\ncommunities = [\"65010:100\"]\nlarge_communities = [\"65010:0:100\"]",
        "file = \"lists/cdn.txt\"\nnext_hop_v4 = \"192.0.2.99\"\nmed = 42",
        1,
    );
    std::fs::write(&d.config, conf)?;
    d.launch()
}

fn bird_route(bird: &Bird, prefix: &str) -> Result<Option<BirdRoute>> {
    Ok(bird.route(prefix)?.into_iter().next())
}

fn wait_bird_route(bird: &Bird, prefix: &str) -> Result<BirdRoute> {
    wait_for(WAIT, &format!("{prefix} in bird"), || bird_route(bird, prefix))
}

fn wait_bird_gone(bird: &Bird, prefix: &str) -> Result<()> {
    wait_for(WAIT, &format!("{prefix} withdrawn from bird"), || Ok(bird_route(bird, prefix)?.is_none().then_some(())))
}

fn passive_bird(
    dir: &std::path::Path,
    asn: u32,
    name: &str,
    peer: IpAddr,
    listen: IpAddr,
    ns: Option<&Netns>,
) -> Result<Bird> {
    passive_bird_with(dir, asn, name, peer, listen, ns, "")
}

fn passive_bird_with(
    dir: &std::path::Path,
    asn: u32,
    name: &str,
    peer: IpAddr,
    listen: IpAddr,
    ns: Option<&Netns>,
    extra: &str,
) -> Result<Bird> {
    let mut cfg = BirdConfig::new("192.0.2.1".parse()?, asn, listen);
    let mut n = BirdNeighbor::new(name, peer, 0, DNSBGPD_AS);
    n.passive = true;
    n.graceful_restart = true;
    n.extra = extra.to_string();
    cfg.neighbors.push(n);
    cfg.netns = ns.map(|n| n.name().to_string());
    Bird::start(dir, &cfg)
}

/// eBGP and iBGP over loopback: attributes, /128 over MP-BGP, expiry and
/// list removal withdraw, `birdc restart` makes dnsbgpd resend, and a
/// graceful restart of dnsbgpd keeps the routes in bird throughout.
#[test]
fn bird_over_loopback() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !require_bgp(BIRD_BINS) {
        return Ok(());
    }
    let ebgp = passive_bird(tmp.path(), ROUTER_AS, "dnsbgpd", lo(), lo(), None)?;
    // The iBGP session is signed with TCP MD5 (RFC 2385) on both sides.
    let ibgp = passive_bird_with(tmp.path(), DNSBGPD_AS, "dnsbgpd", lo(), lo(), None, "password \"s3cret\";")?;
    let six = "next_hop_v6 = \"2001:db8::10\"";
    let mut d = dnsbgpd(
        tmp.path(),
        bgp_section(&format!(
            "{}{}",
            neighbor("ebgp", "127.0.0.1", ebgp.port(), ROUTER_AS, six),
            neighbor("ibgp", "127.0.0.1", ibgp.port(), DNSBGPD_AS, &format!("{six}\npassword = \"s3cret\""))
        )),
    )?;
    ebgp.wait_established("dnsbgpd", WAIT)?;
    ibgp.wait_established("dnsbgpd", WAIT)?;

    let mut feed = Feed::connect(&d.socket)?;
    feed.answer("www.listed.test", &["198.51.100.10"], 300)?;
    feed.answer("www.listed.test", &["2001:db8::10:1"], 300)?;
    feed.answer("img.cdn.test", &["198.51.100.20"], 300)?;
    feed.answer("short.listed.test", &["198.51.100.70"], 2)?;
    feed.answer("plain.other.test", &["198.51.100.50"], 300)?;

    let r = wait_bird_route(&ebgp, "198.51.100.10/32")?;
    assert_eq!(r.next_hop.as_deref(), Some("127.0.0.1"), "{r:?}");
    assert_eq!(r.as_path, vec![DNSBGPD_AS]);
    assert_eq!(r.communities, vec![(65010, 100)]);
    assert_eq!(r.large_communities, vec![(65010, 0, 100)]);
    assert_eq!(r.origin.as_deref(), Some("IGP"));
    let r = wait_bird_route(&ebgp, "2001:db8::10:1/128")?;
    assert_eq!(r.next_hop.as_deref(), Some("2001:db8::10"), "{r:?}");
    assert_eq!(r.communities, vec![(65010, 100)]);
    let r = wait_bird_route(&ebgp, "198.51.100.20/32")?;
    assert_eq!(r.next_hop.as_deref(), Some("192.0.2.99"), "per-list next hop: {r:?}");
    assert_eq!(r.med, Some(42));
    assert!(r.communities.is_empty());
    // iBGP: empty AS_PATH and our LOCAL_PREF.
    let r = wait_bird_route(&ibgp, "198.51.100.10/32")?;
    assert!(r.as_path.is_empty(), "{r:?}");
    assert_eq!(r.local_pref, Some(150));
    wait_bird_route(&ibgp, "2001:db8::10:1/128")?;
    assert!(bird_route(&ebgp, "198.51.100.50/32")?.is_none(), "unlisted never announced");

    // Expiry (TTL 2, min_ttl 1 s) and list removal withdraw.
    wait_bird_gone(&ebgp, "198.51.100.70/32")?;
    std::fs::write(d.list_file("cdn"), "other-cdn.test\n")?;
    common::send_signal(d.pid(), common::peers::SIGHUP)?;
    wait_bird_gone(&ebgp, "198.51.100.20/32")?;
    wait_bird_gone(&ibgp, "198.51.100.20/32")?;

    // ROUTE-REFRESH (birdc reload in): dnsbgpd answers by re-sending.
    let refreshes = "dnsbgpd_bgp_messages_total{neighbor=\"ebgp\",direction=\"in\",type=\"route_refresh\"}";
    let updates_out = "dnsbgpd_bgp_messages_total{neighbor=\"ebgp\",direction=\"out\",type=\"update\"}";
    let before = d.metric(updates_out)?;
    ebgp.birdc(&["reload", "in", "dnsbgpd"])?;
    wait_for(WAIT, "ROUTE-REFRESH answered", || {
        Ok((d.metric(refreshes)? >= 1.0 && d.metric(updates_out)? > before).then_some(()))
    })?;

    // birdc restart: the session is reset by bird, dnsbgpd re-sends.
    let flaps = |d: &Dnsbgpd| -> Result<u64> {
        let n = d.get_json("/api/v1/neighbors")?;
        Ok(n.as_array()
            .and_then(|a| a.iter().find(|n| n["name"] == "ebgp"))
            .map_or(0, |n| n["flaps"].as_u64().unwrap_or(0)))
    };
    ebgp.restart_protocol("dnsbgpd")?;
    wait_for(WAIT, "dnsbgpd to see the reset", || Ok((flaps(&d)? >= 1).then_some(())))?;
    ebgp.wait_established("dnsbgpd", WAIT)?;
    wait_bird_route(&ebgp, "198.51.100.10/32")?;
    wait_bird_route(&ebgp, "2001:db8::10:1/128")?;

    // Graceful restart: stop dnsbgpd; bird keeps the routes (stale), the
    // new process re-sends them from its store, never absent meanwhile.
    let (v4, v6) = ebgp.count_routes()?;
    assert_eq!((v4, v6), (1, 1));
    drop(feed);
    assert!(d.stop()?, "clean stop");
    assert!(ebgp.graceful_restart_active("dnsbgpd")?, "bird must hold the routes for a graceful restart");
    assert_eq!(ebgp.count_routes()?, (v4, v6), "routes kept while dnsbgpd is down");
    // A watcher polls bird's route count all through the restart. The
    // restart can be quick (a few birdc polls long), so what is checked is
    // that the watcher looked before the relaunch and again after graceful
    // restart completed, not a number of polls.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let watcher_stop = std::sync::Arc::new(AtomicBool::new(false));
    let polls = std::sync::Arc::new(AtomicUsize::new(0));
    let ctl = ebgp.ctl_path().to_path_buf();
    let (stop, counted) = (watcher_stop.clone(), polls.clone());
    let watcher = std::thread::spawn(move || -> Result<()> {
        while !stop.load(Ordering::Relaxed) {
            let out =
                std::process::Command::new("birdc").arg("-s").arg(&ctl).args(["show", "route", "count"]).output()?;
            let (a, b) = common::bgp_peers::parse_bird_count(&String::from_utf8_lossy(&out.stdout))?;
            if (a, b) != (1, 1) {
                bail!("routes went missing during the restart: {a} v4, {b} v6");
            }
            counted.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(())
    });
    let looked = |after: usize| {
        wait_for(WAIT, "the watcher to poll bird", || {
            Ok((polls.load(Ordering::Relaxed) > after || watcher.is_finished()).then_some(()))
        })
    };
    looked(0)?;
    d.relaunch()?;
    ebgp.wait_established("dnsbgpd", WAIT)?;
    wait_for(WAIT, "graceful restart to complete", || Ok((!ebgp.graceful_restart_active("dnsbgpd")?).then_some(())))?;
    looked(polls.load(Ordering::Relaxed))?;
    watcher_stop.store(true, Ordering::Relaxed);
    watcher.join().map_err(|_| anyhow::anyhow!("watcher panicked"))??;
    assert_eq!(ebgp.count_routes()?, (1, 1), "fresh again after End-of-RIB");
    Ok(())
}

/// A neighbor that is configured active on both sides and may connect in
/// while dnsbgpd connects out: the collision is resolved and one session
/// stays up without flapping. A second neighbor is passive on dnsbgpd's
/// side: it is reached through the listener only.
#[test]
fn collisions_and_passive_neighbors() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !require_bgp(BIRD_BINS) {
        return Ok(());
    }
    let listen_port = common::free_port();
    let mut cfg = BirdConfig::new("192.0.2.200".parse()?, ROUTER_AS, lo());
    let mut active = BirdNeighbor::new("both", lo(), listen_port, DNSBGPD_AS);
    active.connect_delay = 1;
    cfg.neighbors.push(active);
    let mut bird = Bird::start(tmp.path(), &cfg)?;
    let mut cfg2 = BirdConfig::new("192.0.2.201".parse()?, ROUTER_AS, "127.0.0.4".parse()?);
    cfg2.neighbors.push(BirdNeighbor::new("toward", lo(), listen_port, DNSBGPD_AS));
    let bird2 = Bird::start(tmp.path(), &cfg2)?;
    let d = dnsbgpd(
        tmp.path(),
        bgp_section(&format!(
            "listen = \"127.0.0.1:{listen_port}\"\n{}{}",
            neighbor("both", "127.0.0.1", bird.port(), ROUTER_AS, "next_hop_v6 = \"2001:db8::10\""),
            neighbor("passive", "127.0.0.4", 179, ROUTER_AS, "passive = true\nnext_hop_v6 = \"2001:db8::10\""),
        )),
    )?;
    bird.wait_established("both", WAIT)?;
    bird2.wait_established("toward", WAIT)?;
    let mut feed = Feed::connect(&d.socket)?;
    feed.answer("www.listed.test", &["198.51.100.10"], 300)?;
    wait_bird_route(&bird, "198.51.100.10/32")?;
    wait_bird_route(&bird2, "198.51.100.10/32")?;
    // Stable: still Established a while later, no flap on dnsbgpd's side.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(bird.protocol_state("both")?, "Established");
    let n = d.get_json("/api/v1/neighbors")?;
    for name in ["both", "passive"] {
        let x = n.as_array().and_then(|a| a.iter().find(|x| x["name"] == name)).cloned().unwrap_or_default();
        assert_eq!(x["state"], "Established", "{x}");
        assert_eq!(x["flaps"], 0, "{x}");
    }
    // The neighbor dies without a word (kill -9: TCP reset) and comes
    // back: dnsbgpd notices, reconnects on its own and re-sends.
    bird.kill9()?;
    wait_for(WAIT, "dnsbgpd to notice", || {
        let n = d.get_json("/api/v1/neighbors")?;
        let both = n.as_array().and_then(|a| a.iter().find(|x| x["name"] == "both")).cloned().unwrap_or_default();
        Ok((both["state"] != "Established").then_some(()))
    })?;
    bird.restart(false)?;
    bird.wait_established("both", WAIT)?;
    wait_bird_route(&bird, "198.51.100.10/32")?;
    assert!(bird_route(&bird2, "198.51.100.10/32")?.is_some(), "the other neighbor was not disturbed");
    Ok(())
}

/// Across a veth pair into a network namespace made by the test: bird in
/// the namespace, eBGP over IPv4 and iBGP over IPv6 transport.
#[test]
fn bird_across_namespaces() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !require_bgp(BIRD_BINS) || !require_netns() {
        return Ok(());
    }
    let ns = Netns::to_root()?;
    let (ns_v4, root_v4) = (ns.v4().expect("v4"), ns.peer_v4().expect("v4 peer"));
    let (ns_v6, root_v6) = (ns.v6().expect("v6"), ns.peer_v6().expect("v6 peer"));
    let ebgp = passive_bird(tmp.path(), ROUTER_AS, "dnsbgpd", root_v4.into(), ns_v4.into(), Some(&ns))?;
    let ibgp = passive_bird(tmp.path(), DNSBGPD_AS, "dnsbgpd", root_v6.into(), ns_v6.into(), Some(&ns))?;
    let d = dnsbgpd(
        tmp.path(),
        bgp_section(&format!(
            "{}{}",
            neighbor(
                "ebgp4",
                &ns_v4.to_string(),
                ebgp.port(),
                ROUTER_AS,
                &format!("local_address = \"{root_v4}\"\nnext_hop_v6 = \"{root_v6}\"")
            ),
            neighbor(
                "ibgp6",
                &ns_v6.to_string(),
                ibgp.port(),
                DNSBGPD_AS,
                &format!("local_address = \"{root_v6}\"\nnext_hop_v4 = \"{root_v4}\"")
            ),
        )),
    )?;
    ebgp.wait_established("dnsbgpd", WAIT)?;
    ibgp.wait_established("dnsbgpd", WAIT)?;
    let mut feed = Feed::connect(&d.socket)?;
    feed.answer("www.listed.test", &["203.0.113.10"], 300)?;
    feed.answer("www.listed.test", &["2001:db8:1::10"], 300)?;
    for (bird, what) in [(&ebgp, "eBGP over IPv4"), (&ibgp, "iBGP over IPv6")] {
        let r = wait_bird_route(bird, "203.0.113.10/32")?;
        assert_eq!(r.next_hop.as_deref(), Some(root_v4.to_string().as_str()), "{what}: {r:?}");
        assert_eq!(r.communities, vec![(65010, 100)], "{what}");
        let r = wait_bird_route(bird, "2001:db8:1::10/128")?;
        assert_eq!(r.next_hop.as_deref(), Some(root_v6.to_string().as_str()), "{what}: {r:?}");
        assert_eq!(r.large_communities, vec![(65010, 0, 100)], "{what}");
    }
    // Over a real link the next hop resolves: bird installs a unicast route.
    let r = wait_bird_route(&ebgp, "203.0.113.10/32")?;
    assert!(r.dest.contains("unicast") || !r.gateways.is_empty(), "{r:?}");
    assert!(wait_bird_route(&ibgp, "203.0.113.10/32")?.as_path.is_empty());
    Ok(())
}

/// GoBGP and FRR as neighbors, with a non-loopback next hop (both refuse
/// 127.0.0.0/8 next hops as martians).
#[test]
fn gobgp_and_frr() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !require_bgp(GOBGP_BINS) || !require_bgp(FRR_BINS) {
        return Ok(());
    }
    let mut gcfg = GobgpConfig::new("192.0.2.2".parse()?, ROUTER_AS, lo());
    let mut gn = GobgpNeighbor::new(lo(), 0, DNSBGPD_AS);
    gn.passive = true;
    gcfg.neighbors.push(gn);
    let gobgp = Gobgpd::start(tmp.path(), &gcfg)?;
    let frr_ip: IpAddr = "127.0.0.3".parse()?;
    let mut fcfg = FrrConfig::new("192.0.2.3".parse()?, ROUTER_AS, frr_ip);
    let mut fnb = FrrNeighbor::new(lo(), 0, DNSBGPD_AS);
    fnb.passive = true;
    fcfg.neighbors.push(fnb);
    let frr = Frr::start(tmp.path(), &fcfg)?;
    let hops = "next_hop_v4 = \"198.51.100.1\"\nnext_hop_v6 = \"2001:db8::1\"";
    let d = dnsbgpd(
        tmp.path(),
        bgp_section(&format!(
            "{}{}",
            neighbor("gobgp", "127.0.0.1", gobgp.port(), ROUTER_AS, hops),
            neighbor(
                "frr",
                &frr_ip.to_string(),
                frr.port(),
                ROUTER_AS,
                &format!("{hops}\nlocal_address = \"127.0.0.1\"")
            ),
        )),
    )?;
    gobgp.wait_established("127.0.0.1", WAIT)?;
    frr.wait_established("127.0.0.1", WAIT)?;
    let mut feed = Feed::connect(&d.socket)?;
    feed.answer("www.listed.test", &["198.51.100.10", "198.51.100.11"], 300)?;
    feed.answer("www.listed.test", &["2001:db8::10:1"], 300)?;

    let v4 = wait_for(WAIT, "GoBGP adj-in ipv4", || {
        let r = gobgp.adj_in("127.0.0.1", "ipv4")?;
        Ok((r.len() == 2).then_some(r))
    })?;
    let r = v4.iter().find(|r| r.prefix == "198.51.100.10/32").expect("route");
    assert_eq!(r.next_hop.as_deref(), Some("198.51.100.1"), "{r:?}");
    assert_eq!(r.communities, vec!["65010:100".to_string()]);
    assert_eq!(r.large_communities, vec!["65010:0:100".to_string()]);
    assert_eq!(r.as_path, vec![DNSBGPD_AS]);
    let v6 = wait_for(WAIT, "GoBGP adj-in ipv6", || {
        let r = gobgp.adj_in("127.0.0.1", "ipv6")?;
        Ok((!r.is_empty()).then_some(r))
    })?;
    assert_eq!(v6[0].prefix, "2001:db8::10:1/128");
    assert_eq!(v6[0].next_hop.as_deref(), Some("2001:db8::1"));

    let frr4 = wait_for(WAIT, "FRR ipv4 routes", || {
        let r = frr.routes("ipv4")?;
        Ok((r.len() == 2).then_some(r))
    })?;
    assert_eq!(frr4, vec!["198.51.100.10/32".to_string(), "198.51.100.11/32".to_string()]);
    let frr6 = wait_for(WAIT, "FRR ipv6 routes", || {
        let r = frr.routes("ipv6")?;
        Ok((!r.is_empty()).then_some(r))
    })?;
    assert_eq!(frr6, vec!["2001:db8::10:1/128".to_string()]);
    let detail = frr.route_detail("198.51.100.10/32")?;
    let text = detail.to_string();
    assert!(text.contains("65010:100"), "{text}");

    let neighbors = d.get_json("/api/v1/neighbors")?;
    for n in neighbors.as_array().into_iter().flatten() {
        assert_eq!(n["state"], "Established", "{n}");
        assert_eq!(n["prefixes_advertised"]["ipv4"], 2, "{n}");
        assert_eq!(n["prefixes_advertised"]["ipv6"], 1, "{n}");
        assert_eq!(n["negotiated"]["ipv6"], true, "{n}");
    }
    let started = Instant::now();
    drop(feed);
    let _ = started;
    Ok(())
}

//! The route path under hostile input (issue 8): a real dnsbgpd process
//! fed dnstap frames straight on its socket (exact names, addresses and
//! TTLs), read back through its API and its store.
//!
//! * a flood of random subdomains of one listed name keeps the route's
//!   attributions at the cap, its expiry right and the API responsive;
//! * the route cap refuses new addresses and keeps existing ones;
//! * unroutable addresses, a BGP next hop and `[routes] deny` get no route;
//! * list paths that are not regular files (FIFO, `/dev/zero` symlink,
//!   directory, 1 GiB sparse file) fail the reload and keep the routes;
//! * SIGTERM right after frames were handled: every route is in the store;
//! * the store on a tiny tmpfs that fills up: routing goes on, the status
//!   says degraded, and once space returns the store catches up with the
//!   table (root: mounts a tmpfs);
//! * a clock a day ahead at start (libfaketime) keeps the stored routes;
//! * unroutable, denied, next-hop and neighbor addresses never reach a
//!   real bird.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::bgp_peers::{BIRD_BINS, Bird, BirdConfig, BirdNeighbor, require_bgp};
use common::feed::Feed;
use common::{Dnsbgpd, Options, wait_for};

fn opts(list: &str, routes_extra: &str) -> Options {
    Options {
        lists: vec![("vpn".into(), list.into())],
        min_ttl: "1h".into(),
        max_ttl: "2h".into(),
        routes_extra: routes_extra.into(),
        ..Options::default()
    }
}

fn frames(d: &Dnsbgpd) -> Result<f64> {
    d.metric("dnsbgpd_dnstap_frames_total{type=\"CLIENT_RESPONSE\"}")
}

#[test]
fn random_subdomain_flood_is_bounded() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // max_ttl above every TTL sent: each new name lives strictly longer.
    let o = Options { max_ttl: "24h".into(), ..opts("wild.test\n", "max_names_per_route = 8\n") };
    let d = Dnsbgpd::start(tmp.path(), &o)?;
    let mut feed = Feed::connect(&d.socket)?;
    const N: usize = 20_000;
    let started = Instant::now();
    for i in 0..N {
        // Every answer a fresh name, one address; TTLs rise, so the last
        // names are the ones that live longest.
        feed.answer(&format!("r{i}.wild.test"), &["198.51.100.7"], 3600 + i as u32)?;
        if i % 5_000 == 0 {
            // The API answers during the flood.
            let (code, _) = common::http(d.api, "GET", "/api/v1/status")?;
            assert_eq!(code, 200);
        }
    }
    wait_for(Duration::from_secs(60), "every frame handled", || Ok((frames(&d)? as usize >= N).then_some(())))?;
    eprintln!("{N} random-subdomain answers handled in {:?} (debug build)", started.elapsed());
    let r = d.route("198.51.100.7/32")?.context("the route")?;
    let names = r["names"].as_array().context("names")?;
    assert_eq!(names.len(), 8, "{r}");
    assert_eq!(r["names_total"], N as u64, "{r}");
    // The route lives as long as its longest name: the last one.
    assert_eq!(r["domain"], format!("r{}.wild.test", N - 1), "{r}");
    let body = common::http(d.api, "GET", "/api/v1/routes")?.1;
    assert!(body.len() < 4096, "the route's JSON stays small: {} bytes", body.len());
    let status = d.get_json("/api/v1/status")?;
    assert!(status["route_limits"]["names_dropped"].as_u64().unwrap_or(0) >= (N - 8) as u64, "{status}");
    Ok(())
}

#[test]
fn caps_and_unroutable_addresses() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut o = opts("listed.test\n", "max_routes = 5\ndeny = [\"203.0.113.0/24\"]\n");
    // A passive neighbor (no connection is made) whose next hop must never be routed.
    o.extra_config =
        "[bgp]\nlocal_as = 65010\nrouter_id = \"192.0.2.10\"\n\n[[bgp.neighbor]]\naddress = \"127.0.0.1\"\n\
                      remote_as = 65000\nport = 1\npassive = true\nnext_hop_v4 = \"198.51.100.200\"\n"
            .into();
    let d = Dnsbgpd::start(tmp.path(), &o)?;
    let mut feed = Feed::connect(&d.socket)?;
    for bad in ["0.0.0.0", "127.0.0.1", "224.0.0.1", "169.254.1.1", "240.0.0.1", "255.255.255.255"] {
        feed.answer("ads.listed.test", &[bad], 300)?;
    }
    feed.answer("ads.listed.test", &["::", "::1", "fe80::1", "ff02::1"], 300)?;
    feed.answer("hop.listed.test", &["198.51.100.200"], 300)?;
    feed.answer("denied.listed.test", &["203.0.113.7"], 300)?;
    // Ten routable addresses, five fit.
    for i in 1..=10 {
        feed.answer(&format!("h{i}.listed.test"), &[&format!("198.51.100.{i}")], 300)?;
    }
    wait_for(Duration::from_secs(20), "frames handled", || Ok((frames(&d)? >= 19.0).then_some(())))?;
    let routes = d.routes()?;
    let prefixes: Vec<&str> = routes.iter().filter_map(|r| r["prefix"].as_str()).collect();
    assert_eq!(
        prefixes,
        ["198.51.100.1/32", "198.51.100.2/32", "198.51.100.3/32", "198.51.100.4/32", "198.51.100.5/32"]
    );
    let status = d.get_json("/api/v1/status")?;
    let refused = &status["route_limits"]["refused"];
    assert_eq!(refused["unroutable"], 10, "{status}");
    assert_eq!(refused["neighbor"], 1, "{status}");
    assert_eq!(refused["deny"], 1, "{status}");
    assert_eq!(refused["max_routes"], 5, "{status}");
    assert_eq!(status["route_limits"]["full"], true, "{status}");
    assert_eq!(d.metric("dnsbgpd_routes_refused_total{reason=\"unroutable\"}")?, 10.0);
    // Existing routes keep refreshing: a longer TTL moves the expiry.
    let before = d.route("198.51.100.1/32")?.context("route")?["expires"].clone();
    feed.answer("h1.listed.test", &["198.51.100.1"], 7000)?;
    wait_for(Duration::from_secs(10), "refresh", || {
        Ok(d.route("198.51.100.1/32")?.filter(|r| r["expires"] != before).map(|_| ()))
    })?;
    assert_eq!(d.routes()?.len(), 5);
    Ok(())
}

#[test]
fn list_paths_that_are_not_files_keep_the_lists() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut d = Dnsbgpd::start(tmp.path(), &opts("listed.test\n", ""))?;
    let mut feed = Feed::connect(&d.socket)?;
    feed.answer("www.listed.test", &["198.51.100.1"], 300)?;
    d.wait_route("198.51.100.1/32", Duration::from_secs(10))?;
    let file = d.list_file("vpn");
    let reloads = |d: &Dnsbgpd| d.metric("dnsbgpd_list_reloads_total{result=\"error\"}");
    let fifo = std::ffi::CString::new(file.to_str().context("path")?)?;
    type Make<'a> = Box<dyn Fn() -> Result<()> + 'a>;
    let cases: Vec<(&str, Make)> = vec![
        (
            "a FIFO",
            Box::new(|| {
                std::fs::remove_file(&file)?;
                // SAFETY: mkfifo on a path string we own.
                if unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) } != 0 {
                    bail!("mkfifo: {}", std::io::Error::last_os_error());
                }
                Ok(())
            }),
        ),
        (
            "/dev/zero",
            Box::new(|| {
                std::fs::remove_file(&file)?;
                std::os::unix::fs::symlink("/dev/zero", &file)?;
                Ok(())
            }),
        ),
        (
            "a directory",
            Box::new(|| {
                std::fs::remove_file(&file)?;
                std::fs::create_dir(&file)?;
                Ok(())
            }),
        ),
        (
            "a 1 GiB sparse file",
            Box::new(|| {
                std::fs::remove_dir(&file)?;
                std::fs::File::create(&file)?.set_len(1 << 30)?;
                Ok(())
            }),
        ),
    ];
    for (i, (what, make)) in cases.iter().enumerate() {
        make()?;
        common::send_signal(d.pid(), common::peers::SIGHUP)?;
        wait_for(Duration::from_secs(15), &format!("reload of {what} to fail"), || {
            Ok((reloads(&d)? >= (i + 1) as f64).then_some(()))
        })?;
        assert!(d.route("198.51.100.1/32")?.is_some(), "{what}: the route must stay");
        // The previous lists still match new answers.
        feed.answer("new.listed.test", &[&format!("198.51.100.{}", 10 + i)], 300)?;
        d.wait_route(&format!("198.51.100.{}/32", 10 + i), Duration::from_secs(10))?;
    }
    let started = Instant::now();
    assert!(d.stop()?, "SIGTERM exits cleanly");
    assert!(started.elapsed() < Duration::from_secs(12), "SIGTERM took {:?}", started.elapsed());
    Ok(())
}

#[test]
fn sigterm_right_after_answers_keeps_every_route() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // A long flush interval: only the ordered shutdown can have written them.
    let mut d = Dnsbgpd::configure(tmp.path(), &opts("listed.test\n", ""))?;
    let cfg = std::fs::read_to_string(&d.config)?.replace("flush_interval = \"200ms\"", "flush_interval = \"60s\"");
    std::fs::write(&d.config, cfg)?;
    d.relaunch()?;
    let mut feed = Feed::connect(&d.socket)?;
    const N: u32 = 3_000;
    for i in 0..N {
        let a = std::net::Ipv4Addr::from(0x0A00_0000 + i);
        feed.answer(&format!("n{i}.listed.test"), &[&a.to_string()], 3600)?;
    }
    wait_for(Duration::from_secs(30), "frames handled", || Ok((frames(&d)? >= f64::from(N)).then_some(())))?;
    assert_eq!(d.get_json("/api/v1/status")?["store"]["state"], "ok");
    assert!(d.stop()?, "clean stop");
    d.relaunch()?;
    assert_eq!(d.get_json("/api/v1/status")?["routes"], N, "every handled answer is in the store");
    Ok(())
}

/// A tmpfs mounted for one test, unmounted when dropped (also on failure).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Option<Tmpfs>> {
        std::fs::create_dir_all(at)?;
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).output();
        match out {
            Ok(o) if o.status.success() => Ok(Some(Tmpfs(at.to_path_buf()))),
            Ok(o) => {
                common::skip(format!(
                    "cannot mount a tmpfs (not root?): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                Ok(None)
            }
            Err(e) => {
                common::skip(format!("cannot run mount: {e}"));
                Ok(None)
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` until a write fails with ENOSPC.
fn fill(path: &Path) -> Result<u64> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let block = vec![0xa5u8; 64 << 10];
    let mut written = 0u64;
    // Bounded: the tmpfs is a few MiB.
    for _ in 0..100_000 {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let _ = f.sync_all();
    Ok(written)
}

#[test]
fn full_store_disk_degrades_keeps_routing_and_catches_up() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut d = Dnsbgpd::configure(tmp.path(), &opts("listed.test\n", ""))?;
    let Some(_mount) = Tmpfs::mount(&d.store, "8m")? else { return Ok(()) };
    d.relaunch()?;
    let mut feed = Feed::connect(&d.socket)?;
    feed.answer("first.listed.test", &["198.51.100.1"], 3600)?;
    wait_for(Duration::from_secs(10), "the first route stored", || {
        Ok((d.metric("dnsbgpd_store_writes_total")? >= 1.0).then_some(()))
    })?;
    // The disk fills up (a filler file beside sled's files).
    let filler = d.store.join("filler");
    fill(&filler)?;
    const N: u32 = 2_000;
    for i in 0..N {
        let a = std::net::Ipv4Addr::from(0x0A00_0000 + i);
        feed.answer(&format!("n{i}.listed.test"), &[&a.to_string()], 3600)?;
    }
    // Routing goes on; the store says degraded, with the error, and counts it.
    wait_for(Duration::from_secs(30), "every route in the table", || {
        Ok((d.get_json("/api/v1/status")?["routes"].as_u64() == Some(u64::from(N) + 1)).then_some(()))
    })?;
    let status = wait_for(Duration::from_secs(30), "store degraded", || {
        let s = d.get_json("/api/v1/status")?;
        Ok((s["store"]["state"] == "degraded").then_some(s))
    })?;
    let error = status["store"]["error"].as_str().unwrap_or("").to_string();
    assert!(error.to_lowercase().contains("space"), "{status}");
    assert!(status["store"]["pending"].as_u64().unwrap_or(0) > 0, "{status}");
    assert!(d.metric("dnsbgpd_store_errors_total")? >= 1.0);
    let (code, _) = common::http(d.api, "GET", "/api/v1/routes")?;
    assert_eq!(code, 200, "the API keeps answering");
    // Space returns: the writer retries on its own and catches up.
    std::fs::remove_file(&filler)?;
    wait_for(Duration::from_secs(60), "store ok again, nothing pending", || {
        let s = d.get_json("/api/v1/status")?;
        Ok((s["store"]["state"] == "ok" && s["store"]["pending"] == 0).then_some(()))
    })?;
    // The store matches the table: a restart on it has every route.
    let before: Vec<String> = d.routes()?.iter().filter_map(|r| r["prefix"].as_str().map(String::from)).collect();
    assert!(d.stop()?, "clean stop");
    d.relaunch()?;
    let after: Vec<String> = d.routes()?.iter().filter_map(|r| r["prefix"].as_str().map(String::from)).collect();
    assert_eq!(after.len(), N as usize + 1);
    assert_eq!(after, before);
    assert!(d.stop()?);
    Ok(())
}

/// libfaketime's preload library, if installed (Debian package faketime).
fn faketime_lib() -> Option<PathBuf> {
    let dir = std::fs::read_dir("/usr/lib").ok()?;
    dir.flatten().map(|e| e.path().join("faketime/libfaketime.so.1")).find(|p| p.exists())
}

#[test]
fn clock_a_day_ahead_at_start_keeps_the_store() -> Result<()> {
    let Some(lib) = faketime_lib() else {
        common::skip("libfaketime is missing (Debian package faketime)");
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    // min_ttl 1h, max_ttl 2h: a day later every route is expired by the clock.
    let mut d = Dnsbgpd::start(tmp.path(), &opts("listed.test\n", ""))?;
    let mut feed = Feed::connect(&d.socket)?;
    const N: u32 = 50;
    for i in 0..N {
        feed.answer(&format!("n{i}.listed.test"), &[&format!("198.51.100.{}", i + 1)], 300)?;
    }
    wait_for(Duration::from_secs(20), "frames handled", || Ok((frames(&d)? >= f64::from(N)).then_some(())))?;
    assert!(d.stop()?, "clean stop");
    // The same store, started with the wall clock a day ahead (monotonic
    // time untouched, as after a wrong RTC at boot).
    let mut cmd = Command::new(common::binary());
    cmd.args(["--log-level", "info", "run", "--config"]).arg(&d.config);
    cmd.env("LD_PRELOAD", &lib).env("FAKETIME", "+1d").env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let log = d.dir.join("dnsbgpd.faketime.log");
    d.process = Some(common::peers::Process::spawn("dnsbgpd", cmd, &log)?);
    let status = wait_for(Duration::from_secs(20), "dnsbgpd ready a day ahead", || {
        match common::http(d.api, "GET", "/api/v1/status") {
            Ok((200, body)) => Ok(Some(serde_json::from_str::<serde_json::Value>(&body)?)),
            _ => Ok(None),
        }
    })?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("far ahead"), "the clock jump is reported:\n{text}");
    assert_eq!(status["routes"], N, "every stored route kept: {status}\n{text}");
    // Each keeps the life it had left, counted from the new clock.
    let r = d.route("198.51.100.1/32")?.context("route")?;
    let expires = humantime::parse_rfc3339(r["expires"].as_str().context("expires")?)?;
    let ahead = std::time::SystemTime::now() + Duration::from_secs(86_400);
    assert!(expires > ahead, "{r}");
    assert!(expires < ahead + Duration::from_secs(3 * 3600), "{r}");
    assert!(d.stop()?);
    Ok(())
}

#[test]
fn unroutable_and_neighbor_addresses_never_reach_bird() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !require_bgp(BIRD_BINS) {
        return Ok(());
    }
    let lo: IpAddr = "127.0.0.1".parse()?;
    let mut cfg = BirdConfig::new("192.0.2.1".parse()?, 65000, lo);
    let mut n = BirdNeighbor::new("dnsbgpd", lo, 0, 65010);
    n.passive = true;
    cfg.neighbors.push(n);
    let bird = Bird::start(tmp.path(), &cfg)?;
    let mut o = opts("listed.test\n", "deny = [\"203.0.113.0/24\"]\n");
    o.extra_config = format!(
        "[bgp]\nlocal_as = 65010\nrouter_id = \"192.0.2.10\"\nbatch_interval = \"20ms\"\n\n\
         [[bgp.neighbor]]\nname = \"bird\"\naddress = \"127.0.0.1\"\nport = {}\nremote_as = 65000\n\
         connect_retry = \"200ms\"\nnext_hop_v4 = \"198.51.100.200\"\nnext_hop_v6 = \"2001:db8::10\"\n\n\
         [[bgp.neighbor]]\nname = \"quiet\"\naddress = \"198.51.100.201\"\nremote_as = 65001\npassive = true\n",
        bird.port()
    );
    let d = Dnsbgpd::start(tmp.path(), &o)?;
    bird.wait_established("dnsbgpd", Duration::from_secs(15))?;
    let mut feed = Feed::connect(&d.socket)?;
    // What an RPZ or ad-blocking resolver answers, the routers' own
    // addresses and next hops, and the operator's deny list.
    let bad = [
        "0.0.0.0",
        "127.0.0.1",
        "224.0.0.1",
        "169.254.1.1",
        "240.0.0.1",
        "255.255.255.255",
        "0.1.2.3",
        "198.51.100.200",
        "198.51.100.201",
        "203.0.113.7",
    ];
    feed.answer("ads.listed.test", &bad, 300)?;
    feed.answer("ads.listed.test", &["::", "::1", "fe80::1", "ff02::1", "2001:db8::10", "::ffff:127.0.0.1"], 300)?;
    feed.answer("www.listed.test", &["198.51.100.1"], 300)?;
    feed.answer("www.listed.test", &["2001:db8::1"], 300)?;
    let good = ["198.51.100.1/32", "2001:db8::1/128"];
    wait_for(Duration::from_secs(15), "the routable addresses in bird", || {
        let all = bird.show_route_all()?;
        Ok(good.iter().all(|g| all.iter().any(|r| r.prefix == *g)).then_some(()))
    })?;
    // One more flush interval for anything that would follow.
    std::thread::sleep(Duration::from_millis(300));
    let mut in_bird: Vec<String> = bird.show_route_all()?.into_iter().map(|r| r.prefix).collect();
    in_bird.sort();
    assert_eq!(in_bird, good, "only routable addresses reach the router");
    let status = d.get_json("/api/v1/status")?;
    let refused = &status["route_limits"]["refused"];
    assert_eq!(refused["unroutable"], 12, "{status}");
    assert_eq!(refused["neighbor"], 3, "{status}");
    assert_eq!(refused["deny"], 1, "{status}");
    Ok(())
}

//! The netns deployment (`deploy/netns/dnsbgpd-netns`): `up` makes the
//! namespace and veth pair from an env file (and is harmless twice),
//! dnsbgpd inside the namespace peers over the veth with bird on the host,
//! a real unbound on the host writes dnstap to the socket through the
//! filesystem, the route reaches bird, and `down` removes everything, also
//! when the test fails (drop guard).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::bgp_peers::{BIRD_BINS, Bird, BirdConfig, BirdNeighbor, require_bgp, require_netns};
use common::peers::{self, DnstapTarget, Nsd, Unbound};
use common::{Process, free_port, http, wait_for};

const HOST_V4: &str = "203.0.113.245";
const NS_V4: &str = "203.0.113.246";
const HOST_V6: &str = "2001:db8:0:f0::1";
const NS_V6: &str = "2001:db8:0:f0::2";
const WAIT: Duration = Duration::from_secs(20);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/netns/dnsbgpd-netns")
}

fn netns(args: &[&str], env: &Path) -> Result<Output> {
    Ok(Command::new(script()).args(args).arg("--env").arg(env).output()?)
}

fn netns_ok(args: &[&str], env: &Path) -> Result<String> {
    let o = netns(args, env)?;
    if !o.status.success() {
        bail!("dnsbgpd-netns {args:?}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    let o = Command::new("ip").args(args).output()?;
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Removes the namespace and links by name, whatever happened.
struct Down {
    name: String,
    env: PathBuf,
}

impl Drop for Down {
    fn drop(&mut self) {
        let _ = netns(&["down", &self.name], &self.env);
        let _ = Command::new("ip").args(["link", "del", &format!("{}-h", self.name)]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

#[test]
fn dnsbgpd_in_a_namespace_peers_with_bird_on_the_host() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !require_netns() || !require_bgp(BIRD_BINS) || !peers::require(peers::UNBOUND_BINS) {
        return Ok(());
    }
    // `o` for the ops branch; the pid keeps parallel runs apart.
    let name = format!("ons{}", std::process::id());
    let env = tmp.path().join(format!("{name}.env"));
    std::fs::write(
        &env,
        format!(
            "# test addresses\nHOST_V4={HOST_V4}/30\nNS_V4=\"{NS_V4}/30\"\nHOST_V6={HOST_V6}/64\nNS_V6={NS_V6}/64\n"
        ),
    )?;
    let _down = Down { name: name.clone(), env: env.clone() };

    // Before `up`: status says absent (exit 3).
    let o = netns(&["status", &name], &env)?;
    assert_eq!(o.status.code(), Some(3), "{o:?}");

    netns_ok(&["up", &name], &env)?;
    let first = netns_ok(&["status", &name], &env)?;
    netns_ok(&["up", &name], &env).context("up twice")?;
    let second = netns_ok(&["status", &name], &env)?;
    assert_eq!(first, second, "a second up changed something");
    assert!(second.contains(&format!("namespace {name}: present")), "{second}");
    assert!(second.contains(&format!("{HOST_V4}/30")) && second.contains(&format!("{NS_V4}/30")), "{second}");
    assert!(second.contains(&format!("{HOST_V6}/64")) && second.contains(&format!("{NS_V6}/64")), "{second}");
    let inside = ip(&["-n", &name, "-o", "addr", "show", "dev", &format!("{name}-n")])?;
    assert_eq!(inside.matches(&format!("{NS_V4}/30")).count(), 1, "{inside}");

    // The resolver side on the host, the daemon inside.
    let nsd = Nsd::start(tmp.path())?;
    let dir = tmp.path().join("dnsbgpd");
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("dnstap.sock");
    let bird_cfg = {
        let mut cfg = BirdConfig::new("203.0.113.245".parse()?, 65000, HOST_V4.parse()?);
        let mut n = BirdNeighbor::new("dnsbgpd", NS_V4.parse()?, 0, 65010);
        n.passive = true;
        cfg.neighbors.push(n);
        cfg
    };
    let bird = Bird::start(tmp.path(), &bird_cfg)?;
    let api: SocketAddr = SocketAddr::new(NS_V4.parse()?, free_port());
    std::fs::write(dir.join("vpn.txt"), "listed.test\n")?;
    let config = dir.join("dnsbgpd.toml");
    std::fs::write(
        &config,
        format!(
            "[dnstap]\nsocket = \"{}\"\nsocket_mode = \"0666\"\n\n\
             [routes]\nstore = \"store\"\nmin_ttl = \"1h\"\n\n\
             [[list]]\nname = \"vpn\"\nfile = \"vpn.txt\"\n\n\
             [bgp]\nlocal_as = 65010\nrouter_id = \"{NS_V4}\"\n\n\
             [[bgp.neighbor]]\nname = \"bird\"\naddress = \"{HOST_V4}\"\nport = {}\nremote_as = 65000\n\
             connect_retry = \"200ms\"\nnext_hop_v6 = \"{NS_V6}\"\n\n\
             [api]\nlisten = \"{api}\"\ntoken = \"netns-test-token-0123456789\"\n",
            socket.display(),
            bird.port()
        ),
    )?;
    // What dnsbgpd-netns@.service runs, minus the privilege drop.
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &name, common::binary(), "run", "--config"]).arg(&config);
    let mut daemon = Process::spawn("dnsbgpd", cmd, &dir.join("dnsbgpd.log"))?;
    // The API inside answers over the veth from the host.
    wait_for(WAIT, "dnsbgpd in the namespace ready", || {
        if !daemon.is_running() {
            bail!("dnsbgpd exited: {}", daemon.log());
        }
        Ok(matches!(http(api, "GET", "/api/v1/status"), Ok((200, _))).then_some(()))
    })?;
    bird.wait_established("dnsbgpd", WAIT).with_context(|| daemon.log())?;

    let unbound = Unbound::start(tmp.path(), nsd.port(), DnstapTarget::Unix(socket.clone()))?;
    for qtype in ["A", "AAAA"] {
        let answer = peers::dig(unbound.port(), peers::WWW_LISTED, qtype)?;
        assert!(!answer.is_empty(), "no {qtype} answer");
    }
    for (prefix, addr) in [
        (format!("{}/32", peers::WWW_LISTED_V4), IpAddr::from(peers::WWW_LISTED_V4.parse::<std::net::Ipv4Addr>()?)),
        (format!("{}/128", peers::WWW_LISTED_V6), IpAddr::from(peers::WWW_LISTED_V6.parse::<std::net::Ipv6Addr>()?)),
    ] {
        let routes = wait_for(WAIT, &format!("{prefix} in bird"), || {
            let r = bird.route(&prefix)?;
            Ok((!r.is_empty()).then_some(r))
        })
        .with_context(|| format!("dnsbgpd log:\n{}", common::tail(&daemon.log(), 30)))?;
        let r = &routes[0];
        assert_eq!(r.as_path, vec![65010], "{r:?}");
        // Learned over the veth: the next hop is the namespace side.
        let hop = if addr.is_ipv4() { NS_V4 } else { NS_V6 };
        assert_eq!(r.next_hop.as_deref(), Some(hop), "{r:?}");
    }

    // Stop the daemon, then `down`: nothing is left; `down` twice is fine.
    daemon.signal(peers::SIGTERM)?;
    let exit = daemon.wait_exit(Duration::from_secs(15));
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}: {}", daemon.log());
    netns_ok(&["down", &name], &env)?;
    netns_ok(&["down", &name], &env).context("down twice")?;
    assert!(!ip(&["netns", "list"])?.lines().any(|l| l.split_whitespace().next() == Some(name.as_str())));
    assert!(!ip(&["-o", "link"])?.contains(&format!("{name}-h")), "host link left");
    let o = netns(&["status", &name], &env)?;
    assert_eq!(o.status.code(), Some(3));
    Ok(())
}

/// A bad env file is refused with its file and line, and changes nothing.
#[test]
fn a_bad_env_file_names_its_line() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    if !require_netns() {
        return Ok(());
    }
    let name = format!("onb{}", std::process::id());
    let env = tmp.path().join("bad.env");
    let _down = Down { name: name.clone(), env: env.clone() };
    for (content, line, what) in [
        ("HOST_V4=203.0.113.241/30\nNS_V4=203.0.113.242\n", 2, "prefix length"),
        ("\n# c\nHOST_V4=203.0.113.241/30\nNS_V4=203.0.113.242/30\nGATEWAY=x\n", 5, "unknown key GATEWAY"),
        ("HOST_V4=203.0.113.241/30\nNS_V4=203.0.113.242/30\nHOST_V6=zz/64\n", 3, "IPv6"),
    ] {
        std::fs::write(&env, content)?;
        let o = netns(&["up", &name], &env)?;
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(&format!("{}:{line}: ", env.display())) && err.contains(what), "{err}");
    }
    std::fs::write(&env, "HOST_V4=203.0.113.241/30\n")?;
    let o = netns(&["up", &name], &env)?;
    assert!(String::from_utf8_lossy(&o.stderr).contains("HOST_V4 and NS_V4 are required"));
    assert!(!ip(&["netns", "list"])?.contains(&name), "a refused up made the namespace");
    let o = Command::new(script()).args(["up", "name-that-is-far-too-long"]).output()?;
    assert_eq!(o.status.code(), Some(1));
    let o = Command::new(script()).args(["sideways", &name]).output()?;
    assert_eq!(o.status.code(), Some(2));
    Ok(())
}

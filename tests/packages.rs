//! The packages, installed for real: `packaging/build` writes the .deb and
//! the .rpm; the .deb installs (files, user, conffile, man page,
//! completions), its config passes `dnsbgpd check`, the installed binary
//! runs as user `dnsbgpd` with the unit's one capability and answers on its
//! API, an upgrade to a higher version keeps a changed conffile and the
//! store, remove keeps them and purge deletes user, config and store. The
//! .rpm is inspected: file list (the same as the .deb's), scriptlets,
//! dependencies.
//!
//! It changes the machine (dpkg), so it runs with CI=true (or
//! DNSBGPD_PACKAGE_TEST=1) as root and skips otherwise; a drop guard
//! purges the package whatever happens.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::feed::Feed;
use common::peers::{self, find_bin};
use common::{Process, free_port, http, wait_for};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(program: &str, args: &[&str]) -> Result<Output> {
    let path = find_bin(program).unwrap_or_else(|| PathBuf::from(program));
    Command::new(&path).args(args).output().with_context(|| format!("{program} {args:?}"))
}

fn ok(program: &str, args: &[&str]) -> Result<String> {
    let o = run(program, args)?;
    ensure!(
        o.status.success(),
        "{program} {args:?} ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn wanted() -> bool {
    let ci = common::ci();
    let asked = std::env::var("DNSBGPD_PACKAGE_TEST").is_ok_and(|v| v == "1");
    if !ci && !asked {
        eprintln!("SKIP: installs packages on this machine; runs with CI=true or DNSBGPD_PACKAGE_TEST=1");
        return false;
    }
    if !common::require_root("dpkg -i needs root") {
        return false;
    }
    common::prereq::require_ci(&["dpkg", "dpkg-deb", "rpm", "rpmbuild", "setpriv", "systemd-analyze", "man"], ci)
}

/// Purges the package (and stops the daemon the test started) at the end,
/// also when the test fails half-way.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "dnsbgpd"]);
    }
}

fn installed_version() -> Option<String> {
    let o = run("dpkg-query", &["-W", "-f=${Status} ${Version}", "dnsbgpd"]).ok()?;
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.strip_prefix("install ok installed ").map(str::to_string)
}

fn packages(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    Ok(v)
}

fn build(args: &[&str]) -> Result<()> {
    let o = Command::new(root().join("packaging/build")).args(args).output()?;
    ensure!(
        o.status.success(),
        "packaging/build {args:?} failed:\n{}",
        common::tail(&String::from_utf8_lossy(&o.stderr), 40)
    );
    Ok(())
}

/// The installed daemon, started as `dnsbgpd.service` would: user and
/// group dnsbgpd, supplementary groups, CAP_NET_BIND_SERVICE only, no new
/// privileges, /run/dnsbgpd made as RuntimeDirectory would.
fn start_as_the_unit(dir: &Path, api: SocketAddr, n: u32) -> Result<Process> {
    ok("install", &["-d", "-o", "dnsbgpd", "-g", "dnsbgpd", "-m", "0750", "/run/dnsbgpd"])?;
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=dnsbgpd",
        "--regid=dnsbgpd",
        "--init-groups",
        "--no-new-privs",
        "--inh-caps=-all,+net_bind_service",
        "--ambient-caps=-all,+net_bind_service",
        "--bounding-set=-all,+net_bind_service",
        "--",
        "/usr/bin/dnsbgpd",
        "run",
        "--config",
        "/etc/dnsbgpd/dnsbgpd.toml",
    ]);
    cmd.env_remove("NOTIFY_SOCKET");
    let mut p = Process::spawn("dnsbgpd", cmd, &dir.join(format!("installed.{n}.log")))?;
    wait_for(Duration::from_secs(20), "the installed dnsbgpd on its API", || {
        if !p.is_running() {
            bail!("exited: {}", p.log());
        }
        Ok(matches!(http(api, "GET", "/api/v1/status"), Ok((200, _))).then_some(()))
    })?;
    Ok(p)
}

fn stop(mut p: Process) -> Result<()> {
    p.signal(peers::SIGTERM)?;
    let exit = p.wait_exit(Duration::from_secs(15));
    ensure!(exit.is_some_and(|s| s.success()), "installed dnsbgpd did not stop cleanly: {exit:?}\n{}", p.log());
    Ok(())
}

fn routes(api: SocketAddr) -> Result<String> {
    let (code, body) = http(api, "GET", "/api/v1/routes")?;
    ensure!(code == 200, "routes: {code} {body}");
    Ok(body)
}

#[test]
fn deb_install_upgrade_remove_purge_and_rpm_inspection() -> Result<()> {
    if !wanted() {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    // A package left by an earlier, interrupted run.
    if installed_version().is_some() {
        ok("dpkg", &["--purge", "dnsbgpd"])?;
    }
    let _purge = Purge;

    let out = root().join("target/packages");
    build(&[])?;
    let version = env!("CARGO_PKG_VERSION");
    let deb = packages(&out, "deb")?;
    let rpm = packages(&out, "rpm")?;
    ensure!(deb.len() == 1 && rpm.len() == 1, "expected one .deb and one .rpm in {}: {deb:?} {rpm:?}", out.display());
    let first = tmp.path().join("first.deb");
    std::fs::copy(&deb[0], &first)?;
    let rpm = tmp.path().join("dnsbgpd.rpm");
    std::fs::copy(&packages(&out, "rpm")?[0], &rpm)?;
    ensure!(deb[0].file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("dnsbgpd_{version}-1_"))));

    // Install.
    ok("dpkg", &["-i", first.to_str().context("path")?])?;
    assert_eq!(installed_version().as_deref(), Some(format!("{version}-1").as_str()));
    let files = ok("dpkg", &["-L", "dnsbgpd"])?;
    let bins: Vec<&str> = files.lines().filter(|l| l.starts_with("/usr/bin/") && l.len() > 9).collect();
    assert_eq!(bins, ["/usr/bin/dnsbgpd"], "only the daemon is installed in /usr/bin");
    for f in [
        "/usr/bin/dnsbgpd",
        "/usr/sbin/dnsbgpd-netns",
        "/etc/dnsbgpd/dnsbgpd.toml",
        "/etc/dnsbgpd/lists/vpn.txt",
        "/usr/lib/systemd/system/dnsbgpd.service",
        "/usr/lib/systemd/system/dnsbgpd-netns@.service",
        "/usr/share/dnsbgpd/systemd/blocking.conf",
        "/usr/share/man/man1/dnsbgpd.1.gz",
        "/usr/share/man/man1/dnsbgpd-ctl.1.gz",
        "/usr/share/bash-completion/completions/dnsbgpd",
        "/usr/share/zsh/vendor-completions/_dnsbgpd",
        "/usr/share/fish/vendor_completions.d/dnsbgpd.fish",
        "/usr/share/doc/dnsbgpd/README.md",
        "/usr/share/doc/dnsbgpd/docs/configuration.md",
        "/usr/share/doc/dnsbgpd/docs/operations.md",
    ] {
        assert!(Path::new(f).exists(), "{f} not installed");
        assert!(files.lines().any(|l| l == f), "{f} not owned by the package");
    }
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", "dnsbgpd"])?;
    assert!(conffiles.contains("/etc/dnsbgpd/dnsbgpd.toml "), "not a conffile: {conffiles}");
    let man = ok("man", &["-w", "dnsbgpd"])?;
    assert!(man.contains("/usr/share/man/man1/dnsbgpd.1.gz"), "{man}");
    let bash = std::fs::read_to_string("/usr/share/bash-completion/completions/dnsbgpd")?;
    assert!(bash.contains("sync-peers") && bash.contains("--token-file"), "bash completion lacks ctl");
    let passwd = ok("getent", &["passwd", "dnsbgpd"])?;
    assert!(passwd.contains(":/var/lib/dnsbgpd:") && passwd.trim_end().ends_with("nologin"), "{passwd}");
    ok("getent", &["group", "dnsbgpd"])?;
    let owner = ok("stat", &["-c", "%U:%G %a", "/var/lib/dnsbgpd", "/etc/dnsbgpd/dnsbgpd.toml"])?;
    assert_eq!(owner, "dnsbgpd:dnsbgpd 750\nroot:dnsbgpd 640\n");

    // The installed units verify (man pages and binaries are there now).
    ok("systemd-analyze", &["verify", "/usr/lib/systemd/system/dnsbgpd.service"])?;
    ok("systemd-analyze", &["verify", "/usr/lib/systemd/system/dnsbgpd-netns@otest.service"])?;

    // The installed config passes check, run as the service user.
    let check = ok(
        "setpriv",
        &[
            "--reuid=dnsbgpd",
            "--regid=dnsbgpd",
            "--init-groups",
            "/usr/bin/dnsbgpd",
            "check",
            "--config",
            "/etc/dnsbgpd/dnsbgpd.toml",
        ],
    )?;
    assert!(check.contains("OK (2 lists"), "{check}");

    // The operator changes the conffile: the API on a port of this test.
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let conf = std::fs::read_to_string("/etc/dnsbgpd/dnsbgpd.toml")?;
    ensure!(conf.contains("listen = \"127.0.0.1:9153\""), "unexpected shipped config");
    let changed =
        conf.replace("listen = \"127.0.0.1:9153\"", &format!("listen = \"{api}\"   # changed by the operator"));
    std::fs::write("/etc/dnsbgpd/dnsbgpd.toml", &changed)?;

    // Runs as the unit would, serves, keeps a route in its store.
    let p = start_as_the_unit(tmp.path(), api, 1)?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid()))?;
    let uid = ok("id", &["-u", "dnsbgpd"])?;
    let field = |name: &str| status.lines().find(|l| l.starts_with(name)).map(|l| l.to_string()).unwrap_or_default();
    assert!(field("Uid:").split_whitespace().nth(1) == Some(uid.trim()), "{}", field("Uid:"));
    // CAP_NET_BIND_SERVICE is bit 10: effective, bounding, ambient hold only it.
    for f in ["CapEff:", "CapBnd:", "CapAmb:"] {
        assert!(field(f).ends_with("0000000000000400"), "{f} {}", field(f));
    }
    let mut feed = Feed::connect(Path::new("/run/dnsbgpd/dnstap.sock"))?;
    feed.answer("www.example.com", &["198.51.100.90"], 3600)?;
    drop(feed);
    wait_for(Duration::from_secs(10), "the route", || Ok(routes(api)?.contains("198.51.100.90/32").then_some(())))?;
    // The store flushes within [routes] flush_interval (1s) and at exit.
    stop(p)?;

    // Upgrade to a higher version (the same binary, repackaged).
    build(&["--version", &format!("{version}+test1"), "--no-rpm"])?;
    let second = packages(&out, "deb")?;
    ensure!(second.len() == 1, "{second:?}");
    ok("dpkg", &["-i", second[0].to_str().context("path")?])?;
    assert_eq!(installed_version().as_deref(), Some(format!("{version}+test1-1").as_str()));
    assert_eq!(std::fs::read_to_string("/etc/dnsbgpd/dnsbgpd.toml")?, changed, "the upgrade replaced the conffile");
    let p = start_as_the_unit(tmp.path(), api, 2)?;
    assert!(routes(api)?.contains("198.51.100.90/32"), "the upgrade lost the store");
    stop(p)?;

    // Remove keeps config and store; purge deletes them and the user.
    ok("dpkg", &["-r", "dnsbgpd"])?;
    assert!(!Path::new("/usr/bin/dnsbgpd").exists());
    assert!(Path::new("/etc/dnsbgpd/dnsbgpd.toml").exists(), "remove deleted the config");
    assert!(std::fs::read_dir("/var/lib/dnsbgpd")?.next().is_some(), "remove deleted the store");
    ok("dpkg", &["--purge", "dnsbgpd"])?;
    for gone in ["/etc/dnsbgpd", "/var/lib/dnsbgpd"] {
        assert!(!Path::new(gone).exists(), "purge left {gone}");
    }
    assert!(!run("getent", &["passwd", "dnsbgpd"])?.status.success(), "purge left the user");
    assert!(!run("getent", &["group", "dnsbgpd"])?.status.success(), "purge left the group");

    // The rpm: files, scriptlets, dependencies.
    let rpm = rpm.to_str().context("path")?;
    let list = ok("rpm", &["-qpl", rpm])?;
    let scripts = ok("rpm", &["-qp", "--scripts", rpm])?;
    for s in ["preinstall", "postinstall", "preuninstall", "postuninstall"] {
        assert!(scripts.contains(&format!("{s} scriptlet")), "no {s} scriptlet:\n{scripts}");
    }
    for s in ["groupadd -r dnsbgpd", "useradd -r -g dnsbgpd", "systemctl daemon-reload", "disable --now dnsbgpd"] {
        assert!(scripts.contains(s), "scriptlets lack {s:?}:\n{scripts}");
    }
    let requires = ok("rpm", &["-qpR", rpm])?;
    for r in ["iproute", "util-linux", "libc.so.6"] {
        assert!(requires.lines().any(|l| l.starts_with(r)), "rpm does not require {r}:\n{requires}");
    }
    let config = ok("rpm", &["-qp", "--configfiles", rpm])?;
    assert!(config.lines().any(|l| l == "/etc/dnsbgpd/dnsbgpd.toml"), "{config}");
    // Both packages ship the same files (modulo each distribution's paths).
    let deb_files: BTreeSet<String> = ok("dpkg-deb", &["-c", first.to_str().context("path")?])?
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last().map(|p| p.trim_start_matches('.').to_string()))
        .map(|p| p.replace("zsh/vendor-completions", "zsh/site-functions"))
        .filter(|p| p != "/usr/share/doc/dnsbgpd/copyright")
        .collect();
    let rpm_files: BTreeSet<String> = list.lines().filter(|p| !rpm_dirs().contains(p)).map(str::to_string).collect();
    let only_deb: Vec<_> = deb_files.difference(&rpm_files).collect();
    let only_rpm: Vec<_> = rpm_files.difference(&deb_files).collect();
    assert!(only_deb.is_empty() && only_rpm.is_empty(), "only in the deb: {only_deb:?}\nonly in the rpm: {only_rpm:?}");
    Ok(())
}

/// Directories the rpm lists as entries of their own.
fn rpm_dirs() -> BTreeSet<&'static str> {
    [
        "/etc/dnsbgpd",
        "/etc/dnsbgpd/netns",
        "/etc/dnsbgpd/lists",
        "/var/lib/dnsbgpd",
        "/usr/share/dnsbgpd",
        "/usr/share/dnsbgpd/systemd",
        "/usr/share/doc/dnsbgpd",
        "/usr/share/doc/dnsbgpd/docs",
        "/usr/share/doc/dnsbgpd/examples",
        "/usr/share/doc/dnsbgpd/examples/resolver",
        "/usr/share/doc/dnsbgpd/examples/router",
        "/usr/share/doc/dnsbgpd/examples/netns",
    ]
    .into_iter()
    .collect()
}

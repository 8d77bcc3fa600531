//! The command line: `check`, `--version`, `run` with the embedded default
//! config, JSON logs, clean exit on signals.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use common::{Process, http, peers, wait_for};

fn dnsbgpd() -> Command {
    Command::new(common::binary())
}

#[test]
fn version() -> Result<()> {
    let out = dnsbgpd().arg("--version").output()?;
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout)?.trim(), format!("dnsbgpd {}", env!("CARGO_PKG_VERSION")));
    Ok(())
}

#[test]
fn check_accepts_the_shipped_example() -> Result<()> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/dnsbgpd.toml");
    let out = dnsbgpd().args(["check", "--config"]).arg(&example).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (2 lists"), "{stderr}");
    Ok(())
}

#[test]
fn check_reports_every_problem_with_file_and_line() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    std::fs::write(dir.join("a.txt"), "good.test\nbad domain\n\n*.fine.test\nfoo..test\n!good.test\n")?;
    std::fs::write(dir.join("b.txt"), "also-good.test\n-bad.test\n")?;
    let conf = dir.join("d.toml");
    std::fs::write(
        &conf,
        "[dnstap]\nsocket = \"d.sock\"\n\n[[list]]\nname = \"a\"\nfile = \"a.txt\"\n\n\
         [[list]]\nname = \"b\"\nfile = \"b.txt\"\n\n[[list]]\nname = \"c\"\nfile = \"missing.txt\"\n",
    )?;
    let out = dnsbgpd().args(["check", "--config"]).arg(&conf).output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr)?;
    let a = dir.join("a.txt").display().to_string();
    let b = dir.join("b.txt").display().to_string();
    for expected in [format!("{a}:2: "), format!("{a}:5: "), format!("{a}:6: "), format!("{b}:2: ")] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
    assert!(stderr.contains("missing.txt: cannot read list \"c\""), "{stderr}");
    assert!(stderr.contains("5 problem(s)"), "{stderr}");

    // Config errors name the file and line too, and durations are strict.
    std::fs::write(&conf, "[dnstap]\nsocket = \"d.sock\"\n\n[routes]\nmin_ttl = \"1h\"\nmax_ttl = \"24\"\n")?;
    let out = dnsbgpd().args(["check", "--config"]).arg(&conf).output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.starts_with(&format!("{}:6: ", conf.display())), "{stderr}");
    assert!(stderr.contains("invalid duration"), "{stderr}");

    std::fs::write(&conf, "[dnstap]\nsocket = \"d.sock\"\nsokcet_mode = \"0660\"\n")?;
    let out = dnsbgpd().args(["check", "--config"]).arg(&conf).output()?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.starts_with(&format!("{}:3: ", conf.display())) && stderr.contains("sokcet_mode"), "{stderr}");
    assert!(!out.status.success());
    Ok(())
}

/// The README quick start: `dnsbgpd run` with no config in an empty
/// directory comes up with the embedded default, and SIGTERM/SIGINT stop
/// it with status 0, removing the socket.
#[test]
fn run_with_embedded_default_config() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let api: std::net::SocketAddr = "127.0.0.1:9153".parse()?;
    if std::net::TcpListener::bind(api).is_err() {
        panic!("127.0.0.1:9153 (the embedded default API address) is in use by another process");
    }
    for signal in [peers::SIGTERM, 2 /* SIGINT */] {
        let mut cmd = dnsbgpd();
        cmd.current_dir(tmp.path()).args(["--log-format", "json", "run"]);
        let mut p = Process::spawn("dnsbgpd", cmd, &tmp.path().join(format!("log.{signal}")))?;
        let status = wait_for(Duration::from_secs(20), "default daemon ready", || {
            if !p.is_running() {
                anyhow::bail!("exited: {}", p.log());
            }
            Ok(match http(api, "GET", "/api/v1/status") {
                Ok((200, body)) => Some(body),
                _ => None,
            })
        })?;
        let status: serde_json::Value = serde_json::from_str(&status)?;
        assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(status["routes"], 0);
        let socket = tmp.path().join("dnsbgpd-data/dnstap.sock");
        assert!(socket.exists(), "default dnstap socket");
        assert!(tmp.path().join("dnsbgpd-data/store/LOCK").exists(), "default store");
        p.signal(signal)?;
        let exit = p.wait_exit(Duration::from_secs(15));
        assert!(exit.is_some_and(|s| s.success()), "exit {exit:?}: {}", p.log());
        assert!(!socket.exists(), "socket removed at exit");
        // Every log line is a JSON object.
        let log = p.log();
        assert!(log.lines().count() >= 3, "{log}");
        for line in log.lines() {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{e}: {line}"))?;
            assert!(v["level"].is_string(), "{line}");
        }
        assert!(log.contains("dnsbgpd ready"), "{log}");
    }
    Ok(())
}

#[test]
fn run_with_a_broken_config_fails_with_its_location() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let conf = tmp.path().join("d.toml");
    std::fs::write(&conf, "[dnstap]\nsocket = \"d.sock\"\n[api]\nlisten = \"not an address\"\n")?;
    let out = dnsbgpd().args(["run", "--config"]).arg(&conf).output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.starts_with(&format!("{}:4: ", conf.display())), "{stderr}");
    Ok(())
}

#[test]
fn ctl_talks_to_a_running_daemon() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = common::Dnsbgpd::start(tmp.path(), &common::Options::default())?;
    let out = dnsbgpd().args(["ctl", "--config"]).arg(&d.config).args(["--json", "status"]).output()?;
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["ready"], true);
    let before = d.metric("dnsbgpd_list_reloads_total{result=\"ok\"}")?;
    let out = dnsbgpd().args(["ctl", "--api"]).arg(d.api.to_string()).arg("reload").output()?;
    assert!(out.status.success());
    wait_for(Duration::from_secs(5), "reload counted", || {
        Ok((d.metric("dnsbgpd_list_reloads_total{result=\"ok\"}")? > before).then_some(()))
    })?;
    let out = dnsbgpd().args(["ctl", "--api"]).arg(d.api.to_string()).args(["--json", "routes"]).output()?;
    assert!(out.status.success());
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout)?, serde_json::json!([]));
    Ok(())
}

/// `[api] token`: a POST without the token (or with a wrong one) is 401
/// and does nothing; with it, it goes through; GETs stay open.
#[test]
fn api_token_guards_writes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let token = "0123456789abcdef0123";
    std::fs::create_dir_all(tmp.path().join("dnsbgpd"))?;
    std::fs::write(tmp.path().join("dnsbgpd/api.token"), format!("{token}\n"))?;
    let mut d = common::Dnsbgpd::configure(tmp.path(), &common::Options::default())?;
    let conf = std::fs::read_to_string(&d.config)?.replace("[api]\n", "[api]\ntoken_file = \"api.token\"\n");
    std::fs::write(&d.config, conf)?;
    d.relaunch()?;
    let reloads = |d: &common::Dnsbgpd| d.metric("dnsbgpd_list_reloads_total{result=\"ok\"}");
    let before = reloads(&d)?;
    for auth in
        [&[][..], &["Authorization: Bearer wrong-token-0123456789"][..], &["Authorization: 0123456789abcdef0123"][..]]
    {
        let (code, body) = common::request(d.api, "POST", "/api/v1/reload", auth, "")?;
        assert_eq!(code, 401, "{auth:?}: {body}");
    }
    let (code, _) = common::http(d.api, "GET", "/api/v1/status")?;
    assert_eq!(code, 200);
    let header = format!("Authorization: Bearer {token}");
    let (code, body) = common::request(d.api, "POST", "/api/v1/reload", &[&header], "")?;
    assert_eq!(code, 202, "{body}");
    wait_for(Duration::from_secs(5), "reload counted", || Ok((reloads(&d)? > before).then_some(())))?;
    assert_eq!(reloads(&d)?, before + 1.0, "only the authorized reload ran");
    Ok(())
}

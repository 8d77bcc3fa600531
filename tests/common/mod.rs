//! Shared helpers of the integration tests: the dnsbgpd process under test
//! ([`Dnsbgpd`]), requests to its API (through the ctl client), and waiting with
//! deadlines. Real peers have a module each (re-exported by [`peers`] and
//! [`bgp_peers`]); the skip rule is in [`prereq`].
#![allow(dead_code)]

// The peers, one module per daemon, on the shared process helper.
pub mod bind;
pub mod bird;
pub mod dig;
pub mod frr;
pub mod fstrm;
pub mod gobgp;
pub mod netns;
pub mod nsd;
pub mod process;
pub mod unbound;
// `common::peers::*` (DNS) and `common::bgp_peers::*` (BGP) re-export them.
pub mod bgp_peers;
pub mod peers;

pub mod dns_load;
pub mod feed;
pub mod frames;
pub mod prereq;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

#[allow(unused_imports)]
pub use prereq::{ci, require, require_root, skip};
#[allow(unused_imports)]
pub use process::{Process, free_port, send_signal};

/// Polls `f` every 50 ms until it returns `Some`; errors from `f` are
/// remembered and retried. Fails after `timeout` naming `what` and the last
/// error seen.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what} {last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP request to the API; returns status and body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String)> {
    request(addr, method, path, &[], "")
}

/// One HTTP request with extra header lines (`"Authorization: Bearer x"`,
/// each replacing the client's own field of that name) and a body; returns
/// status and body. It goes through `dnsbgpd ctl`'s client
/// (`dnsbgpd::ctl::Client`), the one HTTP client of the project; tests
/// that must send malformed HTTP write to a socket themselves.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &str) -> Result<(u16, String)> {
    use dnsbgpd::ctl::{Client, ClientOptions, Endpoint};
    let fields: Vec<(&str, &str)> = headers
        .iter()
        .map(|h| h.split_once(':').map(|(k, v)| (k.trim(), v.trim())).with_context(|| format!("header {h:?}")))
        .collect::<Result<_>>()?;
    let options = ClientOptions { timeout: Duration::from_secs(10), max_body: 1 << 30, ..ClientOptions::default() };
    let client = Client::new(Endpoint::from_listen(addr, false), options)?;
    let method = axum::http::Method::from_bytes(method.as_bytes())?;
    let body = (!body.is_empty()).then(|| body.as_bytes().to_vec());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let answer = runtime.block_on(client.send_with(method, path, &fields, body))?;
    Ok((answer.status.as_u16(), String::from_utf8_lossy(&answer.body).into_owned()))
}

/// What a test wants in the config besides the fixed parts.
#[derive(Clone)]
pub struct Options {
    /// (list name, list file content)
    pub lists: Vec<(String, String)>,
    pub min_ttl: String,
    pub max_ttl: String,
    pub tcp: bool,
    pub extra_dnstap: String,
    /// Appended to every `[[list]]` block (e.g. communities).
    pub list_extra: String,
    /// Appended to the config verbatim (e.g. `[bgp]`).
    pub extra_config: String,
    /// Extra lines of the `[routes]` section.
    pub routes_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lists: vec![("vpn".into(), "listed.test\nface.test\n".into())],
            min_ttl: "1s".into(),
            max_ttl: "1h".into(),
            tcp: false,
            extra_dnstap: String::new(),
            list_extra: String::new(),
            extra_config: String::new(),
            routes_extra: String::new(),
        }
    }
}

/// A dnsbgpd process with its own config, socket, store and API port.
pub struct Dnsbgpd {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub store: PathBuf,
    pub api: SocketAddr,
    pub tcp: Option<SocketAddr>,
    pub process: Option<Process>,
    /// Sent as `Authorization: Bearer` by [`Dnsbgpd::get_json`] (the API
    /// token, or the sync token for `/api/v1/sync/peers`).
    pub token: Option<String>,
    starts: u32,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_dnsbgpd")
}

impl Dnsbgpd {
    /// Writes the config and lists into `dir/dnsbgpd` and starts the daemon.
    pub fn start(dir: &Path, opts: &Options) -> Result<Dnsbgpd> {
        let d = Dnsbgpd::configure(dir, opts)?;
        d.launch()
    }

    pub fn configure(dir: &Path, opts: &Options) -> Result<Dnsbgpd> {
        let dir = dir.join("dnsbgpd");
        std::fs::create_dir_all(dir.join("lists"))?;
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let tcp: Option<SocketAddr> = if opts.tcp { Some(format!("127.0.0.1:{}", free_port()).parse()?) } else { None };
        let socket = dir.join("dnstap.sock");
        let store = dir.join("store");
        let mut conf = format!(
            "[dnstap]\nsocket = \"{}\"\nsocket_mode = \"0666\"\n{}{}\n\
             [routes]\nstore = \"{}\"\nmin_ttl = \"{}\"\nmax_ttl = \"{}\"\nflush_interval = \"200ms\"\n{}\n\
             [api]\nlisten = \"{api}\"\n",
            socket.display(),
            tcp.map(|t| format!("tcp = \"{t}\"\n")).unwrap_or_default(),
            opts.extra_dnstap,
            store.display(),
            opts.min_ttl,
            opts.max_ttl,
            opts.routes_extra,
        );
        for (name, content) in &opts.lists {
            let file = dir.join("lists").join(format!("{name}.txt"));
            std::fs::write(&file, content)?;
            conf.push_str(&format!(
                "\n[[list]]\nname = \"{name}\"\nfile = \"lists/{name}.txt\"\n{}\n",
                opts.list_extra
            ));
        }
        conf.push('\n');
        conf.push_str(&opts.extra_config);
        let config = dir.join("dnsbgpd.toml");
        std::fs::write(&config, conf)?;
        Ok(Dnsbgpd { dir, config, socket, store, api, tcp, process: None, token: None, starts: 0 })
    }

    /// Starts the process and waits until the API says ready.
    pub fn launch(mut self) -> Result<Dnsbgpd> {
        self.relaunch()?;
        Ok(self)
    }

    pub fn relaunch(&mut self) -> Result<()> {
        self.starts += 1;
        let mut cmd = Command::new(binary());
        cmd.args(["--log-level", "debug", "run", "--config"]).arg(&self.config);
        let log = self.dir.join(format!("dnsbgpd.{}.log", self.starts));
        let p = Process::spawn("dnsbgpd", cmd, &log)?;
        self.process = Some(p);
        let api = self.api;
        let r = wait_for(Duration::from_secs(20), "dnsbgpd ready", || {
            if let Some(p) = self.process.as_mut()
                && !p.is_running()
            {
                bail!("dnsbgpd exited:\n{}", p.log());
            }
            Ok(match http(api, "GET", "/api/v1/status") {
                Ok((200, _)) => Some(()),
                _ => None,
            })
        });
        if let Err(e) = r {
            bail!("{e:#}\nlog:\n{}", self.log());
        }
        Ok(())
    }

    pub fn log(&self) -> String {
        self.process.as_ref().map(|p| p.log()).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.process.as_ref().map(|p| p.pid() as i32).unwrap_or(0)
    }

    /// SIGTERM and wait; returns whether it exited with status 0.
    pub fn stop(&mut self) -> Result<bool> {
        let Some(mut p) = self.process.take() else { return Ok(true) };
        p.signal(process::SIGTERM)?;
        let status = p.wait_exit(Duration::from_secs(15));
        let ok = status.is_some_and(|s| s.success());
        if !ok {
            eprintln!("dnsbgpd did not stop cleanly ({status:?}); log:\n{}", p.log());
        }
        p.kill();
        Ok(ok)
    }

    pub fn get_json(&self, path: &str) -> Result<Value> {
        let auth = self.token.as_ref().map(|t| format!("Authorization: Bearer {t}"));
        let (code, body) = request(
            self.api,
            "GET",
            path,
            auth.as_slice().iter().map(String::as_str).collect::<Vec<_>>().as_slice(),
            "",
        )?;
        if code != 200 {
            bail!("GET {path}: {code} {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    pub fn routes(&self) -> Result<Vec<Value>> {
        match self.get_json("/api/v1/routes")? {
            Value::Array(v) => Ok(v),
            other => bail!("routes is not an array: {other}"),
        }
    }

    /// The route for `prefix`, if present.
    pub fn route(&self, prefix: &str) -> Result<Option<Value>> {
        Ok(self.routes()?.into_iter().find(|r| r["prefix"] == prefix))
    }

    /// Waits until `prefix` is a route and returns it.
    pub fn wait_route(&self, prefix: &str, timeout: Duration) -> Result<Value> {
        wait_for(timeout, &format!("route {prefix}"), || self.route(prefix))
            .with_context(|| format!("routes now: {:?}\nlog tail:\n{}", self.routes().ok(), tail(&self.log(), 30)))
    }

    /// Waits until `prefix` is no longer a route.
    pub fn wait_no_route(&self, prefix: &str, timeout: Duration) -> Result<()> {
        wait_for(timeout, &format!("route {prefix} to go"), || Ok(self.route(prefix)?.is_none().then_some(())))
    }

    pub fn metrics(&self) -> Result<String> {
        let (code, body) = http(self.api, "GET", "/metrics")?;
        if code != 200 {
            bail!("metrics: {code}");
        }
        Ok(body)
    }

    /// The value of one metric series (exact series text before the value).
    pub fn metric(&self, series: &str) -> Result<f64> {
        let text = self.metrics()?;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(series)
                && let Some(v) = rest.strip_prefix(' ')
            {
                return Ok(v.trim().parse()?);
            }
        }
        Ok(0.0)
    }

    pub fn list_file(&self, name: &str) -> PathBuf {
        self.dir.join("lists").join(format!("{name}.txt"))
    }
}

impl Drop for Dnsbgpd {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Asserts a route's fields.
pub fn assert_route(r: &Value, domain: &str, list: &str) {
    assert_eq!(r["domain"], domain, "{r}");
    assert_eq!(r["list"], list, "{r}");
    assert_eq!(r["source"], "dns", "{r}");
    let expires = r["expires"].as_str().unwrap_or("");
    assert!(expires.ends_with('Z') && expires.contains('T'), "expires not RFC 3339: {r}");
}

/// Creates a CA (`ca.pem`) and a certificate for 127.0.0.1 signed by it
/// (`api.pem`, `api.key`) with openssl; false (after printing SKIP) when
/// openssl is missing outside CI.
pub fn make_certs(dir: &Path) -> Result<bool> {
    if !require(&["openssl"]) {
        return Ok(false);
    }
    let openssl = process::find_bin("openssl").context("openssl")?;
    let run = |args: &[&str]| -> Result<()> {
        let out = std::process::Command::new(&openssl).args(args).current_dir(dir).output()?;
        if !out.status.success() {
            bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    std::fs::write(dir.join("leaf.ext"), "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n")?;
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=dnsbgpd test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ])?;
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "api.key",
        "-out",
        "api.csr",
        "-subj",
        "/CN=127.0.0.1",
    ])?;
    run(&[
        "x509",
        "-req",
        "-in",
        "api.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "api.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ])?;
    Ok(true)
}

//! `[sync]` in the config file: raw TOML in, [`SyncSettings`] out.
//!
//! Part of the two-step config parse of `crate::config`: serde with
//! `deny_unknown_fields` fills [`RawSync`], then [`validate`] checks values,
//! reads token files and the CA file, and reports every problem with the
//! line of the offending value.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::values::{ByteSize, ConfigDuration, read_token, resolve};
pub use crate::values::{MIN_TOKEN_LEN, Secret};

/// The largest page a `/changes` request or a push may carry.
pub const MAX_PAGE: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
    ca_file: Option<Spanned<PathBuf>>,
    interval: Option<Spanned<ConfigDuration>>,
    push_interval: Option<Spanned<ConfigDuration>>,
    push_queue: Option<Spanned<usize>>,
    page_size: Option<Spanned<usize>>,
    max_body: Option<Spanned<ByteSize>>,
    timeout: Option<Spanned<ConfigDuration>>,
    #[serde(default, rename = "peer")]
    peers: Vec<Spanned<RawPeer>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    url: Spanned<String>,
    name: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
    instance: Option<Spanned<String>>,
    allow_insecure: Option<bool>,
    inbound_token: Option<Spanned<String>>,
    inbound_token_file: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// What inbound peers must present as `Authorization: Bearer <token>`.
    pub token: Secret,
    pub peers: Vec<PeerSettings>,
    /// CA certificates trusted for `https` peers.
    pub ca_file: Option<PathBuf>,
    /// Pull period per peer.
    pub interval: Duration,
    /// How long changes gather before a push.
    pub push_interval: Duration,
    /// How far (in changes) pushes to a peer may fall behind before they
    /// give up and leave the catch-up to that peer's pull.
    pub push_queue: usize,
    /// Changes per pull request and per push.
    pub page_size: usize,
    /// Largest request body accepted and response body read.
    pub max_body: usize,
    /// Per request (connect, send, read the whole answer).
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// For logs, metrics and `/api/v1/sync/peers`.
    pub name: Arc<str>,
    /// As configured, without a trailing slash.
    pub url: String,
    pub https: bool,
    /// Host to connect to (IPv6 without brackets) and to check the
    /// certificate against.
    pub host: String,
    pub port: u16,
    /// `Host` header value.
    pub authority: String,
    /// Path prefix before `/api/v1/sync/...` (empty, or `/something`).
    pub base_path: String,
    /// What this instance presents to the peer.
    pub token: Secret,
    /// The peer's instance id, when configured: its pages must carry it,
    /// and only it may push as it. Without it the id is learned on first
    /// contact (a pull) and pinned in the store.
    pub instance: Option<Arc<str>>,
    /// What this peer presents to us, if it has its own token: a request
    /// with it speaks for this peer's instance only, and the shared
    /// `[sync] token` no longer speaks for it.
    pub inbound_token: Option<Secret>,
}

/// Whether `http://` to this host stays on the machine.
fn loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

type Report<'a> = &'a mut dyn FnMut(Range<usize>, String);

fn valid_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

fn parse_url(text: &str) -> Result<(bool, String, u16, String, String), String> {
    let uri: axum::http::Uri = text.parse().map_err(|e| format!("invalid peer url {text:?}: {e}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("peer url {text:?} must start with http:// or https://")),
    };
    let authority = uri.authority().ok_or_else(|| format!("peer url {text:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("peer url {text:?}: credentials belong in `token`, not in the url"));
    }
    if uri.query().is_some() {
        return Err(format!("peer url {text:?} must not have a query"));
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
    if host.is_empty() {
        return Err(format!("peer url {text:?} has no host"));
    }
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let base_path = uri.path().trim_end_matches('/').to_string();
    Ok((https, host, port, authority.as_str().to_string(), base_path))
}

/// Checks `[sync]`; `None` when it is absent or has problems (reported).
pub fn validate(raw: Option<Spanned<RawSync>>, base: &Path, problem: Report<'_>) -> Option<SyncSettings> {
    let raw = raw?;
    let whole = raw.span();
    let raw = raw.into_inner();
    let mut ok = true;
    let token = read_token(raw.token, raw.token_file, whole.clone(), "[sync]", base, problem);
    let shared = token.as_ref().map(|t| t.expose().to_string());
    ok &= token.is_some();

    let mut duration =
        |v: Option<Spanned<ConfigDuration>>, default: Duration, min: Duration, max: Duration, key| match v {
            Some(s) if s.get_ref().0 < min || s.get_ref().0 > max => {
                problem(s.span(), format!("{key} must be between {min:?} and {max:?}"));
                ok = false;
                default
            }
            Some(s) => s.into_inner().0,
            None => default,
        };
    let interval = duration(
        raw.interval,
        Duration::from_secs(30),
        Duration::from_millis(100),
        Duration::from_secs(86_400),
        "interval",
    );
    let push_interval = duration(
        raw.push_interval,
        Duration::from_millis(200),
        Duration::from_millis(1),
        Duration::from_secs(60),
        "push_interval",
    );
    let timeout =
        duration(raw.timeout, Duration::from_secs(10), Duration::from_millis(100), Duration::from_secs(300), "timeout");

    let push_queue = match raw.push_queue {
        Some(s) if *s.get_ref() == 0 => {
            problem(s.span(), "push_queue must be at least 1".into());
            ok = false;
            1
        }
        Some(s) => s.into_inner(),
        None => 100_000,
    };
    let page_size = match raw.page_size {
        Some(s) if *s.get_ref() == 0 || *s.get_ref() > MAX_PAGE => {
            problem(s.span(), format!("page_size must be between 1 and {MAX_PAGE}"));
            ok = false;
            5_000
        }
        Some(s) => s.into_inner(),
        None => 5_000,
    };
    let max_body = match raw.max_body {
        Some(s) if s.get_ref().0 < 64 << 10 || s.get_ref().0 > 256 << 20 => {
            problem(s.span(), "max_body must be between 64KiB and 256MiB".into());
            ok = false;
            16 << 20
        }
        Some(s) => s.into_inner().0,
        None => 16 << 20,
    };
    let ca_file = raw.ca_file.as_ref().map(|f| resolve(base, f.get_ref()));
    if let (Some(path), Some(spanned)) = (&ca_file, &raw.ca_file)
        && let Err(e) = crate::tls::client_config(path)
    {
        problem(spanned.span(), e);
        ok = false;
    }

    let mut peers: Vec<PeerSettings> = Vec::new();
    for p in raw.peers {
        let whole = p.span();
        let p = p.into_inner();
        let what = format!("[[sync.peer]] {}", p.url.get_ref());
        let token = read_token(p.token, p.token_file, whole, &what, base, problem);
        let parsed = match parse_url(p.url.get_ref()) {
            Ok(x) => Some(x),
            Err(e) => {
                problem(p.url.span(), e);
                None
            }
        };
        let (Some(token), Some((https, host, port, authority, base_path))) = (token, parsed) else {
            ok = false;
            continue;
        };
        if !https && !loopback_host(&host) && p.allow_insecure != Some(true) {
            problem(
                p.url.span(),
                format!(
                    "peer url {:?} is plain http:// to another host: routes and the token would cross the \
                     network in clear; use https:// (with ca_file) or set allow_insecure = true",
                    p.url.get_ref()
                ),
            );
            ok = false;
        }
        let instance = match &p.instance {
            Some(i) if !super::protocol::valid_instance(i.get_ref()) => {
                problem(i.span(), format!("instance {:?} must be 1-64 letters, digits, '.', '_' or '-'", i.get_ref()));
                ok = false;
                None
            }
            Some(i) => Some(Arc::<str>::from(i.get_ref().as_str())),
            None => None,
        };
        if let (Some(i), Some(span)) = (&instance, p.instance.as_ref().map(Spanned::span))
            && peers.iter().any(|q| q.instance.as_deref() == Some(&**i))
        {
            problem(span, format!("duplicate peer instance {i:?}"));
            ok = false;
        }
        let inbound_token = if p.inbound_token.is_some() || p.inbound_token_file.is_some() {
            let span = p.inbound_token.as_ref().map(Spanned::span).or(p.inbound_token_file.as_ref().map(Spanned::span));
            let t = read_token(
                p.inbound_token,
                p.inbound_token_file,
                span.clone().unwrap_or_default(),
                &format!("{what} inbound_token"),
                base,
                problem,
            );
            ok &= t.is_some();
            if let Some(t) = &t {
                let clash = shared.as_deref() == Some(t.expose())
                    || peers.iter().any(|q| q.inbound_token.as_ref().is_some_and(|o| o.expose() == t.expose()));
                if clash {
                    problem(
                        span.unwrap_or_default(),
                        format!(
                            "{what}: inbound_token must differ from [sync] token and from other peers' inbound tokens"
                        ),
                    );
                    ok = false;
                }
            }
            t
        } else {
            None
        };
        if https && ca_file.is_none() {
            problem(
                p.url.span(),
                "an https peer needs `ca_file` in [sync] (the CA that signed its certificate)".into(),
            );
            ok = false;
        }
        let url = p.url.get_ref().trim_end_matches('/').to_string();
        let name = match &p.name {
            Some(n) if !valid_label(n.get_ref()) => {
                problem(
                    n.span(),
                    format!("peer name {:?} must be 1-64 letters, digits, '.', '_', ':' or '-'", n.get_ref()),
                );
                ok = false;
                continue;
            }
            Some(n) => n.get_ref().clone(),
            None => authority.clone(),
        };
        if peers.iter().any(|q| q.url == url) {
            problem(p.url.span(), format!("duplicate peer url {url:?}"));
            ok = false;
        }
        if peers.iter().any(|q| *q.name == *name) {
            problem(p.name.as_ref().map_or(p.url.span(), Spanned::span), format!("duplicate peer name {name:?}"));
            ok = false;
        }
        peers.push(PeerSettings {
            name: Arc::from(name),
            url,
            https,
            host,
            port,
            authority,
            base_path,
            token,
            instance,
            inbound_token,
        });
    }
    let token = token?;
    ok.then_some(SyncSettings {
        token,
        peers,
        ca_file,
        interval,
        push_interval,
        push_queue,
        page_size,
        max_body,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, Settings};

    const TOKEN: &str = "0123456789abcdef0123";

    fn parse(dir: &Path, text: &str) -> Result<Settings, ConfigError> {
        Settings::parse(&format!("[dnstap]\nsocket = \"/x.sock\"\n{text}"), Path::new("t.toml"), dir, None)
    }

    #[test]
    fn full_section_parses_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.token"), format!("{TOKEN}b\n")).unwrap();
        let s = parse(
            dir.path(),
            &format!(
                "[sync]\ntoken = \"{TOKEN}\"\ninterval = \"5s\"\n\
                 [[sync.peer]]\nurl = \"http://127.0.0.1:9154/\"\ntoken = \"{TOKEN}a\"\n\
                 [[sync.peer]]\nurl = \"http://[::1]:9155\"\nname = \"b\"\ntoken_file = \"b.token\"\n"
            ),
        )
        .unwrap();
        let sync = s.sync.unwrap();
        assert_eq!(sync.token.expose(), TOKEN);
        assert_eq!(sync.interval, Duration::from_secs(5));
        assert_eq!(sync.push_interval, Duration::from_millis(200));
        assert_eq!((sync.page_size, sync.push_queue, sync.max_body), (5_000, 100_000, 16 << 20));
        assert_eq!(&*sync.peers[0].name, "127.0.0.1:9154");
        assert_eq!(sync.peers[0].url, "http://127.0.0.1:9154");
        assert_eq!(sync.peers[0].token.expose(), format!("{TOKEN}a"));
        assert_eq!(&*sync.peers[1].name, "b");
        assert_eq!(sync.peers[1].host, "::1");
        assert_eq!(sync.peers[1].token.expose(), format!("{TOKEN}b"));
        assert!(!format!("{sync:?}").contains(TOKEN), "tokens are never printed");
        assert!(parse(dir.path(), "").unwrap().sync.is_none());
    }

    #[test]
    fn problems_have_lines() {
        let dir = tempfile::tempdir().unwrap();
        let err = parse(
            dir.path(),
            &format!(
                "[sync]\ntoken = \"short\"\n\
                 [[sync.peer]]\nurl = \"ftp://x\"\ntoken = \"{TOKEN}\"\n\
                 [[sync.peer]]\nurl = \"https://peer.example\"\ntoken = \"{TOKEN}\"\n\
                 [[sync.peer]]\nurl = \"http://y\"\ntoken = \"{TOKEN}\"\ntoken_file = \"nope\"\n"
            ),
        )
        .unwrap_err();
        let lines: Vec<usize> = err.0.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![4, 6, 9, 14], "{err}");
        assert!(err.0[0].message.contains("at least 16"), "{err}");
        assert!(err.0[2].message.contains("ca_file"), "{err}");
        let err = parse(
            dir.path(),
            "[sync]\ntoken = \"0123456789abcdef\"\n[[sync.peer]]\nurl = \"http://x\"\ntokn = \"y\"\n",
        )
        .unwrap_err();
        assert_eq!(err.0[0].line, 7, "{err}");
        let err = parse(dir.path(), "[sync]\ninterval = \"1s\"\n").unwrap_err();
        assert!(err.0[0].message.contains("needs `token` or `token_file`"), "{err}");
        let err = parse(dir.path(), "[api]\ntls_cert = \"c.pem\"\n").unwrap_err();
        assert!(err.0[0].message.contains("both tls_cert and tls_key"), "{err}");
        let err = parse(dir.path(), "[api]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").unwrap_err();
        assert!(err.0[0].message.contains("c.pem"), "{err}");
    }

    #[test]
    fn plain_http_beyond_loopback_and_instances() {
        let dir = tempfile::tempdir().unwrap();
        let peer = |url: &str, extra: &str| {
            parse(
                dir.path(),
                &format!("[sync]\ntoken = \"{TOKEN}\"\n[[sync.peer]]\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\n{extra}"),
            )
        };
        let err = peer("http://192.0.2.7:9153", "").unwrap_err();
        assert_eq!(err.0[0].line, 6, "{err}");
        assert!(err.0[0].message.contains("allow_insecure"), "{err}");
        assert!(peer("http://peer.example:9153", "").is_err());
        assert!(peer("http://192.0.2.7:9153", "allow_insecure = true\n").is_ok());
        for ok in ["http://127.0.0.1:9153", "http://[::1]:9153", "http://localhost:9153"] {
            assert!(peer(ok, "").is_ok(), "{ok}");
        }
        let s = peer("http://127.0.0.1:9153", "instance = \"b-1\"\n").unwrap();
        assert_eq!(s.sync.unwrap().peers[0].instance.as_deref(), Some("b-1"));
        let err = peer("http://127.0.0.1:9153", "instance = \"b 1\"\n").unwrap_err();
        assert_eq!(err.0[0].line, 8, "{err}");
    }

    #[test]
    fn urls() {
        let (https, host, port, authority, base) = parse_url("https://[2001:db8::1]:8443/dnsbgpd/").unwrap();
        assert!(https);
        assert_eq!(
            (host.as_str(), port, authority.as_str(), base.as_str()),
            ("2001:db8::1", 8443, "[2001:db8::1]:8443", "/dnsbgpd")
        );
        let (https, host, port, _, base) = parse_url("http://peer.example").unwrap();
        assert!(!https);
        assert_eq!((host.as_str(), port, base.as_str()), ("peer.example", 80, ""));
        for bad in ["ftp://x", "peer:80", "http://u:p@x", "http://x/?a=b", "not a url"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}

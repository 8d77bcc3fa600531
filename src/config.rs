//! Configuration: TOML in, typed [`Settings`] out.
//!
//! Parsing happens in two steps, as operators expect from a mature daemon:
//! serde with `deny_unknown_fields` turns the file into raw structs (unknown
//! keys, bad types, bad durations and bad addresses become errors with the
//! file and line of the offending value), then [`validate`] checks the
//! relations between values and resolves relative paths against the config
//! file's directory. Every problem found is reported as a [`Problem`]
//! (`FILE:LINE: message`); nothing is silently defaulted to zero.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use crate::values::{ByteSize, ConfigDuration, ConfigError, FileMode, Problem, line_of, parse_duration, resolve};

use crate::observation::MessageType;

/// The embedded default configuration used by `dnsbgpd run` without
/// `--config`: it starts on a fresh machine as an unprivileged user.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// The most lists a configuration may hold (list membership is a 64-bit mask
/// on the hot path).
pub const MAX_LISTS: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    dnstap: RawDnstap,
    #[serde(default)]
    routes: Option<RawRoutes>,
    #[serde(default, rename = "list")]
    lists: Vec<RawList>,
    #[serde(default)]
    api: Option<RawApi>,
    #[serde(default)]
    bgp: Option<crate::bgp::config::RawBgp>,
    sync: Option<Spanned<crate::sync::config::RawSync>>,
    blocking: Option<Spanned<crate::blocking::config::RawBlocking>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnstap {
    socket: Option<Spanned<PathBuf>>,
    socket_mode: Option<FileMode>,
    tcp: Option<SocketAddr>,
    max_frame_size: Option<Spanned<ByteSize>>,
    max_connections: Option<Spanned<usize>>,
    message_types: Option<Spanned<Vec<Spanned<String>>>>,
    handshake_timeout: Option<Spanned<ConfigDuration>>,
    idle_timeout: Option<Spanned<ConfigDuration>>,
    tcp_allow: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoutes {
    store: Option<PathBuf>,
    min_ttl: Option<Spanned<ConfigDuration>>,
    max_ttl: Option<Spanned<ConfigDuration>>,
    flush_interval: Option<Spanned<ConfigDuration>>,
    store_cache: Option<ByteSize>,
    max_routes: Option<Spanned<usize>>,
    max_names_per_route: Option<Spanned<usize>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    shutdown_timeout: Option<Spanned<ConfigDuration>>,
    max_list_size: Option<Spanned<ByteSize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawList {
    name: Spanned<String>,
    file: Spanned<PathBuf>,
    #[serde(default)]
    communities: Vec<Spanned<String>>,
    #[serde(default)]
    large_communities: Vec<Spanned<String>>,
    next_hop_v4: Option<std::net::Ipv4Addr>,
    next_hop_v6: Option<std::net::Ipv6Addr>,
    med: Option<u32>,
    max_routes: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<Spanned<SocketAddr>>,
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
    tls_cert: Option<Spanned<PathBuf>>,
    tls_key: Option<Spanned<PathBuf>>,
    allowed_hosts: Option<Vec<Spanned<String>>>,
    metrics_listen: Option<SocketAddr>,
    max_connections: Option<Spanned<usize>>,
    max_requests: Option<Spanned<usize>>,
    header_timeout: Option<Spanned<ConfigDuration>>,
    request_timeout: Option<Spanned<ConfigDuration>>,
}

/// Typed, validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file the settings came from (`None` for the embedded default).
    pub source: Option<PathBuf>,
    pub dnstap: DnstapSettings,
    pub routes: RouteSettings,
    pub lists: Vec<ListSettings>,
    pub api: ApiSettings,
    /// The BGP speaker; `None` when `[bgp]` is absent.
    pub bgp: Option<crate::bgp::config::BgpSettings>,
    /// Peer sync; `None` without a `[sync]` section.
    pub sync: Option<crate::sync::config::SyncSettings>,
    /// Dynamic blocks; `None` without a `[blocking]` section.
    pub blocking: Option<crate::blocking::config::BlockingSettings>,
}

#[derive(Debug, Clone)]
pub struct DnstapSettings {
    pub socket: Option<PathBuf>,
    pub socket_mode: Option<u32>,
    pub tcp: Option<SocketAddr>,
    pub max_frame_size: usize,
    pub max_connections: usize,
    /// Which dnstap message types feed the route table.
    pub message_types: Vec<MessageType>,
    /// How long a new connection may take to reach START.
    pub handshake_timeout: Duration,
    /// A started connection that sends nothing this long is closed.
    pub idle_timeout: Duration,
    /// Peers the TCP listener serves; others are closed at once.
    pub tcp_allow: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
    pub store: PathBuf,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub flush_interval: Duration,
    pub store_cache: usize,
    /// Most routes in the table; new addresses beyond are refused.
    pub max_routes: usize,
    /// Most attributions (names) one route keeps.
    pub max_names_per_route: usize,
    /// Prefixes that never become routes (besides the built-in unroutable
    /// ranges and the BGP neighbors' addresses).
    pub deny: Vec<ipnet::IpNet>,
    /// How long an ordered shutdown may take before the daemon exits anyway.
    pub shutdown_timeout: Duration,
    /// Largest list file read; a bigger one fails the (re)load.
    pub max_list_size: u64,
}

/// The longest `max_ttl` (and `min_ttl`) accepted.
pub const MAX_TTL_LIMIT: Duration = Duration::from_secs(7 * 86_400);
/// Default of `[routes] shutdown_timeout`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `[routes] max_list_size`.
pub const DEFAULT_MAX_LIST_SIZE: u64 = 256 << 20;

#[derive(Debug, Clone, Default)]
pub struct ListSettings {
    pub name: Arc<str>,
    pub file: PathBuf,
    pub communities: Vec<(u16, u16)>,
    pub large_communities: Vec<(u32, u32, u32)>,
    /// Next hops for this list's routes instead of the neighbor's.
    pub next_hop_v4: Option<std::net::Ipv4Addr>,
    pub next_hop_v6: Option<std::net::Ipv6Addr>,
    /// MULTI_EXIT_DISC for this list's routes.
    pub med: Option<u32>,
    /// This list's own cap on routes.
    pub max_routes: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    /// Certificate chain and private key (PEM) to serve HTTPS instead of HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// What every request but `GET /metrics` and `GET /api/v1/status` must
    /// present as `Authorization: Bearer`.
    pub token: Option<crate::values::Secret>,
    /// Host header values accepted besides the listen address (lower case;
    /// an entry without a port matches any port).
    pub allowed_hosts: Vec<String>,
    /// A second listener serving `/metrics` alone.
    pub metrics_listen: Option<SocketAddr>,
    /// Connections served at once; at the cap the longest-idle one goes.
    pub max_connections: usize,
    /// Requests in progress at once per endpoint; more wait briefly, then 503.
    pub max_requests: usize,
    /// Time a client has to send a request's headers (also between
    /// requests of a kept-alive connection).
    pub header_timeout: Duration,
    /// Time a request may take, the answer's body included.
    pub request_timeout: Duration,
}

/// Defaults of the `[api]` limits.
pub const DEFAULT_API_MAX_CONNECTIONS: usize = 512;
pub const DEFAULT_API_MAX_REQUESTS: usize = 8;
pub const DEFAULT_API_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_API_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Defaults of the `[dnstap]` timeouts.
pub const DEFAULT_DNSTAP_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_DNSTAP_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

impl ApiSettings {
    /// Settings with every limit at its default (tests, tools).
    pub fn new(listen: SocketAddr) -> ApiSettings {
        ApiSettings {
            listen,
            tls: None,
            token: None,
            allowed_hosts: Vec::new(),
            metrics_listen: None,
            max_connections: DEFAULT_API_MAX_CONNECTIONS,
            max_requests: DEFAULT_API_MAX_REQUESTS,
            header_timeout: DEFAULT_API_HEADER_TIMEOUT,
            request_timeout: DEFAULT_API_REQUEST_TIMEOUT,
        }
    }
}

pub const DEFAULT_MAX_FRAME_SIZE: usize = 64 * 1024;

/// Every key a config file may contain, from the serde definitions above
/// (docs/configuration.md is checked against it).
pub fn keys() -> Vec<crate::schema::Key> {
    crate::schema::keys::<RawConfig>()
}

impl Settings {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(vec![Problem {
                file: path.to_path_buf(),
                line: 0,
                message: format!("cannot read config: {e}"),
            }])
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Settings::parse(&text, path, &base, Some(path.to_path_buf()))
    }

    /// The embedded default configuration; its relative paths resolve
    /// against the current directory.
    pub fn embedded_default() -> Settings {
        Settings::parse(DEFAULT_CONFIG, Path::new("<embedded default>"), Path::new(""), None)
            .unwrap_or_else(|e| unreachable!("embedded default config is invalid: {e}"))
    }

    /// Parses configuration text. `file` names it in problems, `base` is the
    /// directory relative paths are resolved against.
    pub fn parse(text: &str, file: &Path, base: &Path, source: Option<PathBuf>) -> Result<Settings, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            ConfigError(vec![Problem { file: file.to_path_buf(), line, message: e.message().trim().to_string() }])
        })?;
        validate(raw, text, file, base, source)
    }
}

fn validate(
    raw: RawConfig,
    text: &str,
    file: &Path,
    base: &Path,
    source: Option<PathBuf>,
) -> Result<Settings, ConfigError> {
    let mut problems = Vec::new();
    let mut problem = |span: std::ops::Range<usize>, message: String| {
        problems.push(Problem { file: file.to_path_buf(), line: line_of(text, span.start), message })
    };

    // [dnstap]
    let d = raw.dnstap;
    if d.socket.is_none() && d.tcp.is_none() {
        problem(0..0, "[dnstap] needs `socket`, `tcp` or both".into());
    }
    let max_frame_size = match d.max_frame_size {
        Some(s) if s.get_ref().0 < 512 || s.get_ref().0 > 16 << 20 => {
            problem(s.span(), "max_frame_size must be between 512 bytes and 16MiB".into());
            DEFAULT_MAX_FRAME_SIZE
        }
        Some(s) => s.into_inner().0,
        None => DEFAULT_MAX_FRAME_SIZE,
    };
    let max_connections = match d.max_connections {
        Some(s) if *s.get_ref() == 0 => {
            problem(s.span(), "max_connections must be at least 1".into());
            1
        }
        Some(s) => s.into_inner(),
        None => 64,
    };
    let mut message_types = Vec::new();
    match d.message_types {
        None => message_types.push(MessageType::ClientResponse),
        Some(list) => {
            if list.get_ref().is_empty() {
                problem(list.span(), "message_types must name at least one type".into());
            }
            for name in list.into_inner() {
                match MessageType::from_name(name.get_ref()) {
                    Some(t) => message_types.push(t),
                    None => problem(
                        name.span(),
                        format!(
                            "unknown dnstap message type {:?}: expected one of {}",
                            name.get_ref(),
                            MessageType::ALL.map(MessageType::name).join(", ")
                        ),
                    ),
                }
            }
        }
    }

    let mut dnstap_duration = |v: &Option<Spanned<ConfigDuration>>, default: Duration, key: &str| match v {
        Some(s) if s.get_ref().0 < Duration::from_millis(10) || s.get_ref().0 > Duration::from_secs(86_400) => {
            problem(s.span(), format!("{key} must be between 10ms and 1d"));
            default
        }
        Some(s) => s.get_ref().0,
        None => default,
    };
    let handshake_timeout =
        dnstap_duration(&d.handshake_timeout, DEFAULT_DNSTAP_HANDSHAKE_TIMEOUT, "handshake_timeout");
    let idle_timeout = dnstap_duration(&d.idle_timeout, DEFAULT_DNSTAP_IDLE_TIMEOUT, "idle_timeout");
    let tcp_allow = match &d.tcp_allow {
        None => vec!["127.0.0.0/8".parse().unwrap_or_default(), "::1/128".parse().unwrap_or_default()],
        Some(list) => {
            let mut out = Vec::new();
            for a in list {
                match parse_net(a.get_ref()) {
                    Some(n) => out.push(n),
                    None => problem(
                        a.span(),
                        format!("tcp_allow: {:?} is not an address or a prefix (\"192.0.2.0/24\")", a.get_ref()),
                    ),
                }
            }
            out
        }
    };

    // [routes]
    let r = raw.routes.unwrap_or(RawRoutes {
        store: None,
        min_ttl: None,
        max_ttl: None,
        flush_interval: None,
        store_cache: None,
        max_routes: None,
        max_names_per_route: None,
        deny: Vec::new(),
        shutdown_timeout: None,
        max_list_size: None,
    });
    let min_ttl = r.min_ttl.as_ref().map(|s| s.get_ref().0).unwrap_or(Duration::from_secs(3600));
    let max_ttl = r.max_ttl.as_ref().map(|s| s.get_ref().0).unwrap_or(Duration::from_secs(86_400));
    if min_ttl > max_ttl {
        let span = r.max_ttl.as_ref().or(r.min_ttl.as_ref()).map(Spanned::span).unwrap_or(0..0);
        problem(span, format!("min_ttl ({min_ttl:?}) is longer than max_ttl ({max_ttl:?})"));
    }
    if max_ttl.is_zero() || max_ttl > MAX_TTL_LIMIT {
        let span = r.max_ttl.as_ref().map(Spanned::span).unwrap_or(0..0);
        problem(span, "max_ttl must be longer than zero and at most 7d".into());
    }
    let max_routes = match &r.max_routes {
        Some(s) if *s.get_ref() == 0 || *s.get_ref() > 50_000_000 => {
            problem(s.span(), "max_routes must be between 1 and 50000000".into());
            crate::values::DEFAULT_MAX_ROUTES
        }
        Some(s) => *s.get_ref(),
        None => crate::values::DEFAULT_MAX_ROUTES,
    };
    let max_names_per_route = match &r.max_names_per_route {
        Some(s) if *s.get_ref() == 0 || *s.get_ref() > 1024 => {
            problem(s.span(), "max_names_per_route must be between 1 and 1024".into());
            crate::values::DEFAULT_MAX_NAMES_PER_ROUTE
        }
        Some(s) => *s.get_ref(),
        None => crate::values::DEFAULT_MAX_NAMES_PER_ROUTE,
    };
    let mut deny = Vec::new();
    for d in &r.deny {
        let text = d.get_ref();
        match parse_net(text) {
            Some(n) => deny.push(n),
            None => problem(d.span(), format!("deny: {text:?} is not an address or a prefix (\"203.0.113.0/24\")")),
        }
    }
    let shutdown_timeout = match &r.shutdown_timeout {
        Some(s) if s.get_ref().0 < Duration::from_secs(1) || s.get_ref().0 > Duration::from_secs(600) => {
            problem(s.span(), "shutdown_timeout must be between 1s and 10m".into());
            DEFAULT_SHUTDOWN_TIMEOUT
        }
        Some(s) => s.get_ref().0,
        None => DEFAULT_SHUTDOWN_TIMEOUT,
    };
    let max_list_size = match &r.max_list_size {
        Some(s) if s.get_ref().0 < 1024 || s.get_ref().0 as u64 > 4 << 30 => {
            problem(s.span(), "max_list_size must be between 1KiB and 4GiB".into());
            DEFAULT_MAX_LIST_SIZE
        }
        Some(s) => s.get_ref().0 as u64,
        None => DEFAULT_MAX_LIST_SIZE,
    };
    let flush_interval = match r.flush_interval {
        Some(s) if s.get_ref().0.is_zero() || s.get_ref().0 > Duration::from_secs(60) => {
            problem(s.span(), "flush_interval must be between 1ms and 60s".into());
            Duration::from_secs(1)
        }
        Some(s) => s.into_inner().0,
        None => Duration::from_secs(1),
    };
    let store = resolve(base, &r.store.unwrap_or_else(|| PathBuf::from("dnsbgpd-data/store")));

    // [[list]]
    if raw.lists.len() > MAX_LISTS {
        problem(raw.lists[MAX_LISTS].name.span(), format!("at most {MAX_LISTS} lists are supported"));
    }
    let mut lists: Vec<ListSettings> = Vec::new();
    for l in raw.lists {
        let name = l.name.get_ref();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
            problem(
                l.name.span(),
                format!("list name {name:?} must be non-empty and use only letters, digits, '-', '_' and '.'"),
            );
        }
        if lists.iter().any(|other| &*other.name == name.as_str()) {
            problem(l.name.span(), format!("duplicate list name {name:?}"));
        }
        let mut communities = Vec::new();
        for c in &l.communities {
            match parse_community(c.get_ref()) {
                Some(v) => communities.push(v),
                None => problem(
                    c.span(),
                    format!("invalid community {:?}: expected \"ASN:VALUE\" with two 16-bit numbers", c.get_ref()),
                ),
            }
        }
        let mut large_communities = Vec::new();
        for c in &l.large_communities {
            match parse_large_community(c.get_ref()) {
                Some(v) => large_communities.push(v),
                None => problem(
                    c.span(),
                    format!(
                        "invalid large community {:?}: expected \"ASN:DATA1:DATA2\" with three 32-bit numbers",
                        c.get_ref()
                    ),
                ),
            }
        }
        let list_max_routes = match &l.max_routes {
            Some(m) if *m.get_ref() == 0 || *m.get_ref() > max_routes => {
                problem(
                    m.span(),
                    format!("max_routes of list {name:?} must be between 1 and [routes] max_routes ({max_routes})"),
                );
                None
            }
            Some(m) => Some(*m.get_ref()),
            None => None,
        };
        lists.push(ListSettings {
            max_routes: list_max_routes,
            name: Arc::from(name.as_str()),
            file: resolve(base, l.file.get_ref()),
            communities,
            large_communities,
            next_hop_v4: l.next_hop_v4,
            next_hop_v6: l.next_hop_v6,
            med: l.med,
        });
    }

    let a = raw.api.unwrap_or_default();
    let token = if a.token.is_some() || a.token_file.is_some() {
        crate::values::read_token(a.token, a.token_file, 0..0, "[api]", base, &mut problem)
    } else {
        None
    };
    let tls = match (a.tls_cert, a.tls_key) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            let (cert, key) = (resolve(base, c.get_ref()), resolve(base, k.get_ref()));
            if let Err(e) = crate::tls::server_config(&cert, &key) {
                problem(c.span(), e);
            }
            Some((cert, key))
        }
        (Some(s), None) | (None, Some(s)) => {
            problem(s.span(), "[api] needs both tls_cert and tls_key for HTTPS".into());
            None
        }
    };
    let listen = a.listen.as_ref().map_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9153)), |l| *l.get_ref());
    if !listen.ip().is_loopback() && token.is_none() {
        problem(
            a.listen.as_ref().map_or(0..0, Spanned::span),
            format!(
                "[api] listen = \"{listen}\" is not a loopback address: set `token` or `token_file` \
                 (every request but GET /metrics and GET /api/v1/status then needs it)"
            ),
        );
    }
    let mut allowed_hosts = Vec::new();
    for h in a.allowed_hosts.iter().flatten() {
        let v = h.get_ref().trim().to_ascii_lowercase();
        let valid =
            !v.is_empty() && v.len() <= 255 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b));
        if valid {
            allowed_hosts.push(v);
        } else {
            problem(h.span(), format!("allowed_hosts: {:?} is not a host name or HOST:PORT", h.get_ref()));
        }
    }
    let mut api_count = |v: &Option<Spanned<usize>>, default: usize, max: usize, key: &str| match v {
        Some(s) if *s.get_ref() == 0 || *s.get_ref() > max => {
            problem(s.span(), format!("{key} must be between 1 and {max}"));
            default
        }
        Some(s) => *s.get_ref(),
        None => default,
    };
    let api_max_connections =
        api_count(&a.max_connections, DEFAULT_API_MAX_CONNECTIONS, 65_536, "[api] max_connections");
    let max_requests = api_count(&a.max_requests, DEFAULT_API_MAX_REQUESTS, 4096, "[api] max_requests");
    let mut api_duration = |v: &Option<Spanned<ConfigDuration>>, default: Duration, key: &str| match v {
        Some(s) if s.get_ref().0 < Duration::from_millis(100) || s.get_ref().0 > Duration::from_secs(3600) => {
            problem(s.span(), format!("{key} must be between 100ms and 1h"));
            default
        }
        Some(s) => s.get_ref().0,
        None => default,
    };
    let header_timeout = api_duration(&a.header_timeout, DEFAULT_API_HEADER_TIMEOUT, "[api] header_timeout");
    let request_timeout = api_duration(&a.request_timeout, DEFAULT_API_REQUEST_TIMEOUT, "[api] request_timeout");
    let api = ApiSettings {
        listen,
        tls,
        token,
        allowed_hosts,
        metrics_listen: a.metrics_listen,
        max_connections: api_max_connections,
        max_requests,
        header_timeout,
        request_timeout,
    };
    let sync = crate::sync::config::validate(raw.sync, base, &mut problem);

    let bgp = raw.bgp.map(|b| crate::bgp::config::validate(b, &mut problem));
    let blocking = raw.blocking.map(|b| crate::blocking::config::validate(b, base, &mut problem));

    if !problems.is_empty() {
        return Err(ConfigError(problems));
    }
    Ok(Settings {
        source,
        dnstap: DnstapSettings {
            socket: d.socket.map(|s| resolve(base, s.get_ref())),
            socket_mode: d.socket_mode.map(|m| m.0),
            tcp: d.tcp,
            max_frame_size,
            max_connections,
            message_types,
            handshake_timeout,
            idle_timeout,
            tcp_allow,
        },
        routes: RouteSettings {
            store,
            min_ttl,
            max_ttl,
            flush_interval,
            store_cache: r.store_cache.map(|b| b.0).unwrap_or(16 << 20),
            max_routes,
            max_names_per_route,
            deny,
            shutdown_timeout,
            max_list_size,
        },
        lists,
        api,
        bgp,
        sync,
        blocking,
    })
}

/// `"203.0.113.0/24"` or a single address, host bits cleared.
fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    let net = text.parse::<ipnet::IpNet>().or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
    net.ok().map(|n| n.trunc())
}

fn parse_community(text: &str) -> Option<(u16, u16)> {
    let (a, b) = text.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn parse_large_community(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.split(':');
    let v = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    parts.next().is_none().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::parse(text, Path::new("t.toml"), Path::new("/etc/dnsbgpd"), None)
    }

    #[test]
    fn durations_are_strict() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        for bad in ["", "90", "1x", "1 h", "h", "-1s", "1.5h", "1hh", "s1"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn embedded_default_parses() {
        let s = Settings::embedded_default();
        assert_eq!(s.api.listen, "127.0.0.1:9153".parse().unwrap());
        assert!(s.dnstap.socket.is_some());
        assert!(s.lists.is_empty());
    }

    #[test]
    fn unknown_key_is_rejected_with_its_line() {
        let err = parse("[dnstap]\nsocket = \"/x.sock\"\n\n[routes]\nmin_tll = \"1h\"\n").unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].line, 5, "{err}");
        assert!(err.0[0].message.contains("min_tll"), "{err}");
        assert!(err.to_string().starts_with("t.toml:5: "), "{err}");
    }

    #[test]
    fn bad_duration_is_an_error_with_its_line() {
        let err = parse("[dnstap]\nsocket = \"/x.sock\"\n[routes]\nmax_ttl = \"24\"\n").unwrap_err();
        assert_eq!(err.0[0].line, 4, "{err}");
        assert!(err.0[0].message.contains("invalid duration"), "{err}");
    }

    #[test]
    fn relations_are_checked_and_all_problems_reported() {
        let err = parse(
            "[dnstap]\nsocket = \"/x.sock\"\nmessage_types = [\"CLIENT_RESPONSE\", \"NOPE\"]\n\
             [routes]\nmin_ttl = \"2h\"\nmax_ttl = \"1h\"\n\
             [[list]]\nname = \"a\"\nfile = \"a.txt\"\ncommunities = [\"1:70000\"]\n\
             [[list]]\nname = \"a\"\nfile = \"b.txt\"\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = err.0.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![3, 6, 10, 12], "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let s = parse(
            "[dnstap]\nsocket = \"run/d.sock\"\n[routes]\nstore = \"/var/lib/x\"\n\
             [[list]]\nname = \"vpn\"\nfile = \"lists/vpn.txt\"\ncommunities = [\"65010:100\"]\n\
             large_communities = [\"65010:0:100\"]\n",
        )
        .unwrap();
        assert_eq!(s.dnstap.socket.unwrap(), Path::new("/etc/dnsbgpd/run/d.sock"));
        assert_eq!(s.routes.store, Path::new("/var/lib/x"));
        assert_eq!(s.lists[0].file, Path::new("/etc/dnsbgpd/lists/vpn.txt"));
        assert_eq!(s.lists[0].communities, vec![(65010, 100)]);
        assert_eq!(s.lists[0].large_communities, vec![(65010, 0, 100)]);
        assert_eq!(s.dnstap.message_types, vec![MessageType::ClientResponse]);
    }

    #[test]
    fn route_bounds_and_their_limits() {
        let s = parse(
            "[dnstap]\nsocket = \"/x\"\n[routes]\nmax_routes = 1000\nmax_names_per_route = 4\n\
             deny = [\"203.0.113.0/24\", \"2001:db8::1\", \"198.51.100.9/24\"]\nshutdown_timeout = \"3s\"\n\
             max_list_size = \"1MiB\"\n[[list]]\nname = \"a\"\nfile = \"a.txt\"\nmax_routes = 10\n",
        )
        .unwrap();
        let r = &s.routes;
        assert_eq!((r.max_routes, r.max_names_per_route, r.max_list_size), (1000, 4, 1 << 20));
        assert_eq!(r.shutdown_timeout, Duration::from_secs(3));
        let deny: Vec<String> = r.deny.iter().map(|n| n.to_string()).collect();
        assert_eq!(deny, ["203.0.113.0/24", "2001:db8::1/128", "198.51.100.0/24"]);
        assert_eq!(s.lists[0].max_routes, Some(10));
        let d = parse("[dnstap]\nsocket = \"/x\"\n").unwrap();
        assert_eq!((d.routes.max_routes, d.routes.max_names_per_route), (2_000_000, 16));
        assert_eq!((d.routes.shutdown_timeout, d.routes.max_list_size), (Duration::from_secs(10), 256 << 20));
        // Every bound is checked, each problem on its own line.
        let err = parse(
            "[dnstap]\nsocket = \"/x\"\n[routes]\nmax_ttl = \"30d\"\nmax_routes = 0\nmax_names_per_route = 5000\n\
             deny = [\"nope\"]\nshutdown_timeout = \"1h\"\nmax_list_size = \"8GiB\"\n\
             [[list]]\nname = \"a\"\nfile = \"a.txt\"\nmax_routes = 3000000\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = err.0.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![4, 5, 6, 7, 8, 9, 13], "{err}");
    }

    #[test]
    fn socket_mode_and_sizes() {
        let s = parse("[dnstap]\nsocket = \"/x\"\nsocket_mode = \"0660\"\nmax_frame_size = \"128KiB\"\n").unwrap();
        assert_eq!(s.dnstap.socket_mode, Some(0o660));
        assert_eq!(s.dnstap.max_frame_size, 128 * 1024);
        assert!(parse("[dnstap]\nsocket = \"/x\"\nsocket_mode = \"rw\"\n").is_err());
        assert!(parse("[dnstap]\nsocket = \"/x\"\nmax_frame_size = \"12XB\"\n").is_err());
    }
}

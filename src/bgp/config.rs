//! `[bgp]` and `[[bgp.neighbor]]`: raw TOML structs and their validation
//! into [`BgpSettings`]. Called from `crate::config`, which owns the file
//! and turns each problem into `FILE:LINE: message`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::blackhole::BlackholeBounds;
use crate::values::ConfigDuration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBgp {
    local_as: Spanned<u32>,
    router_id: Ipv4Addr,
    listen: Option<SocketAddr>,
    hold_time: Option<Spanned<ConfigDuration>>,
    local_pref: Option<u32>,
    batch_interval: Option<Spanned<ConfigDuration>>,
    graceful_restart_time: Option<Spanned<ConfigDuration>>,
    extended_messages: Option<bool>,
    blackhole_min_v4: Option<Spanned<u8>>,
    blackhole_max_v4: Option<Spanned<u8>>,
    blackhole_min_v6: Option<Spanned<u8>>,
    blackhole_max_v6: Option<Spanned<u8>>,
    max_blackholes: Option<Spanned<usize>>,
    #[serde(default, rename = "neighbor")]
    neighbors: Vec<RawNeighbor>,
}

/// Blackhole export bounds: in `[bgp]` for every neighbor, in a
/// `[[bgp.neighbor]]` for that one.
#[derive(Debug, Default)]
struct RawBlackholeBounds {
    blackhole_min_v4: Option<Spanned<u8>>,
    blackhole_max_v4: Option<Spanned<u8>>,
    blackhole_min_v6: Option<Spanned<u8>>,
    blackhole_max_v6: Option<Spanned<u8>>,
    max_blackholes: Option<Spanned<usize>>,
}

impl RawBlackholeBounds {
    fn apply(&self, base: BlackholeBounds, problem: &mut dyn FnMut(Range<usize>, String)) -> BlackholeBounds {
        let mut b = base;
        let mut len = |v: &Option<Spanned<u8>>, max: u8, target: &mut u8| {
            if let Some(v) = v {
                if *v.get_ref() == 0 || *v.get_ref() > max {
                    problem(v.span(), format!("must be between 1 and {max}"));
                } else {
                    *target = *v.get_ref();
                }
            }
        };
        len(&self.blackhole_min_v4, 32, &mut b.min_v4);
        len(&self.blackhole_max_v4, 32, &mut b.max_v4);
        len(&self.blackhole_min_v6, 128, &mut b.min_v6);
        len(&self.blackhole_max_v6, 128, &mut b.max_v6);
        if let Some(m) = &self.max_blackholes {
            b.max = *m.get_ref();
        }
        for (min, max, span) in [
            (b.min_v4, b.max_v4, self.blackhole_min_v4.as_ref().or(self.blackhole_max_v4.as_ref())),
            (b.min_v6, b.max_v6, self.blackhole_min_v6.as_ref().or(self.blackhole_max_v6.as_ref())),
        ] {
            if min > max
                && let Some(s) = span
            {
                problem(
                    s.span(),
                    format!("blackhole prefix bounds: the minimum length {min} is above the maximum {max}"),
                );
            }
        }
        b
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNeighbor {
    name: Option<String>,
    address: Spanned<IpAddr>,
    port: Option<u16>,
    remote_as: Spanned<u32>,
    local_address: Option<Spanned<IpAddr>>,
    #[serde(default)]
    passive: bool,
    hold_time: Option<Spanned<ConfigDuration>>,
    connect_retry: Option<Spanned<ConfigDuration>>,
    next_hop_v4: Option<Ipv4Addr>,
    next_hop_v6: Option<Ipv6Addr>,
    families: Option<Spanned<Vec<String>>>,
    password: Option<Spanned<String>>,
    /// `"routes"` (the route table) and/or `"blackhole"` (RFC 7999).
    export: Option<Spanned<Vec<Spanned<String>>>>,
    blackhole_min_v4: Option<Spanned<u8>>,
    blackhole_max_v4: Option<Spanned<u8>>,
    blackhole_min_v6: Option<Spanned<u8>>,
    blackhole_max_v6: Option<Spanned<u8>>,
    max_blackholes: Option<Spanned<usize>>,
}

/// Validated `[bgp]`.
#[derive(Debug, Clone)]
pub struct BgpSettings {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    /// Passive accept of configured neighbors (off unless set).
    pub listen: Option<SocketAddr>,
    pub local_pref: u32,
    /// Changes are coalesced this long before UPDATEs go out.
    pub batch_interval: Duration,
    /// Advertised Graceful Restart time (seconds, at most 4095).
    pub graceful_restart_time: u16,
    /// Offer RFC 8654 extended messages.
    pub extended_messages: bool,
    pub neighbors: Vec<NeighborSettings>,
}

/// Validated `[[bgp.neighbor]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborSettings {
    /// For logs, metrics and the API; defaults to the address.
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub remote_as: u32,
    pub local_address: Option<IpAddr>,
    pub passive: bool,
    /// Proposed hold time in seconds (0 or 3..=65535).
    pub hold_time: u16,
    /// First retry delay; doubles (with jitter) up to 32 times this.
    pub connect_retry: Duration,
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    pub ipv4: bool,
    pub ipv6: bool,
    /// TCP MD5 signature key (RFC 2385).
    pub password: Option<String>,
    /// Send the route table (`export` has `"routes"`; the default).
    pub export_routes: bool,
    /// Send blocking's blackhole routes (`export` has `"blackhole"`).
    pub export_blackhole: bool,
    pub blackhole: BlackholeBounds,
}

impl NeighborSettings {
    pub fn is_ibgp(&self, local_as: u32) -> bool {
        self.remote_as == local_as
    }

    pub fn remote(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

fn hold_seconds(d: Duration) -> Option<u16> {
    if d.subsec_millis() != 0 {
        return None;
    }
    let s = u16::try_from(d.as_secs()).ok()?;
    (s == 0 || s >= 3).then_some(s)
}

/// Default of `[bgp] batch_interval`: a change after a quiet interval is
/// sent at once; while changes keep coming, at most one send per interval.
/// 2 ms keeps the answer → UPDATE p99 under 10 ms at 10 k answers/s
/// (BENCHMARKS.md) at a few hundred wake-ups a second.
pub const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_millis(2);

/// Validates `raw`; `problem` receives the span and text of each problem.
pub fn validate(raw: RawBgp, problem: &mut dyn FnMut(Range<usize>, String)) -> BgpSettings {
    if *raw.local_as.get_ref() == 0 {
        problem(raw.local_as.span(), "local_as must not be 0".into());
    }
    if raw.router_id.is_unspecified() {
        problem(0..0, "[bgp] router_id must not be 0.0.0.0".into());
    }
    let default_hold = match raw.hold_time {
        Some(h) => hold_seconds(h.get_ref().0).unwrap_or_else(|| {
            problem(h.span(), "hold_time must be 0 or between 3s and 65535s, in whole seconds".into());
            90
        }),
        None => 90,
    };
    let batch_interval = match raw.batch_interval {
        Some(b) if b.get_ref().0 > Duration::from_secs(10) => {
            problem(b.span(), "batch_interval must be at most 10s".into());
            DEFAULT_BATCH_INTERVAL
        }
        Some(b) => b.into_inner().0,
        None => DEFAULT_BATCH_INTERVAL,
    };
    let graceful_restart_time = match raw.graceful_restart_time {
        Some(g) => match u16::try_from(g.get_ref().0.as_secs()) {
            Ok(s) if s <= 4095 => s,
            _ => {
                problem(g.span(), "graceful_restart_time must be at most 4095s".into());
                120
            }
        },
        None => 120,
    };
    let bounds = RawBlackholeBounds {
        blackhole_min_v4: raw.blackhole_min_v4,
        blackhole_max_v4: raw.blackhole_max_v4,
        blackhole_min_v6: raw.blackhole_min_v6,
        blackhole_max_v6: raw.blackhole_max_v6,
        max_blackholes: raw.max_blackholes,
    }
    .apply(BlackholeBounds::default(), problem);
    let mut neighbors: Vec<NeighborSettings> = Vec::new();
    for n in raw.neighbors {
        let (mut export_routes, mut export_blackhole) = (true, false);
        if let Some(e) = &n.export {
            export_routes = false;
            for x in e.get_ref() {
                match x.get_ref().as_str() {
                    "routes" => export_routes = true,
                    "blackhole" => export_blackhole = true,
                    other => {
                        problem(x.span(), format!("unknown export {other:?}: expected \"routes\" or \"blackhole\""))
                    }
                }
            }
            if e.get_ref().is_empty() {
                problem(e.span(), "export must name \"routes\", \"blackhole\" or both".into());
            }
        }
        let blackhole = RawBlackholeBounds {
            blackhole_min_v4: n.blackhole_min_v4,
            blackhole_max_v4: n.blackhole_max_v4,
            blackhole_min_v6: n.blackhole_min_v6,
            blackhole_max_v6: n.blackhole_max_v6,
            max_blackholes: n.max_blackholes,
        }
        .apply(bounds, problem);
        let address = *n.address.get_ref();
        if *n.remote_as.get_ref() == 0 {
            problem(n.remote_as.span(), "remote_as must not be 0".into());
        }
        if neighbors.iter().any(|o| o.address == address && o.port == n.port.unwrap_or(179)) {
            problem(n.address.span(), format!("neighbor {address} is configured twice"));
        }
        let hold_time = match n.hold_time {
            Some(h) => hold_seconds(h.get_ref().0).unwrap_or_else(|| {
                problem(h.span(), "hold_time must be 0 or between 3s and 65535s, in whole seconds".into());
                default_hold
            }),
            None => default_hold,
        };
        let connect_retry = match n.connect_retry {
            Some(c) if c.get_ref().0 < Duration::from_millis(100) || c.get_ref().0 > Duration::from_secs(3600) => {
                problem(c.span(), "connect_retry must be between 100ms and 1h".into());
                Duration::from_secs(5)
            }
            Some(c) => c.into_inner().0,
            None => Duration::from_secs(5),
        };
        let (mut ipv4, mut ipv6) = (true, true);
        let explicit = n.families.is_some();
        if let Some(f) = &n.families {
            ipv4 = false;
            ipv6 = false;
            for fam in f.get_ref() {
                match fam.as_str() {
                    "ipv4" => ipv4 = true,
                    "ipv6" => ipv6 = true,
                    other => problem(f.span(), format!("unknown family {other:?}: expected \"ipv4\" or \"ipv6\"")),
                }
            }
            if !ipv4 && !ipv6 {
                problem(f.span(), "families must name at least one of \"ipv4\", \"ipv6\"".into());
            }
        }
        // A next hop of each family must be configured or derivable from the
        // session's local address (which has the neighbor's family).
        let local_family_v6 = n.local_address.as_ref().map(|a| a.get_ref().is_ipv6()).unwrap_or(address.is_ipv6());
        if ipv6 && n.next_hop_v6.is_none() && !local_family_v6 {
            if explicit {
                problem(
                    n.address.span(),
                    format!("neighbor {address}: ipv6 routes need next_hop_v6 (the session is IPv4)"),
                );
            }
            ipv6 = false;
        }
        if ipv4 && n.next_hop_v4.is_none() && local_family_v6 {
            if explicit {
                problem(
                    n.address.span(),
                    format!("neighbor {address}: ipv4 routes need next_hop_v4 (the session is IPv6)"),
                );
            }
            ipv4 = false;
        }
        if let Some(p) = &n.password
            && (p.get_ref().is_empty() || p.get_ref().len() > 80)
        {
            problem(p.span(), "password must be 1 to 80 bytes (TCP MD5 key)".into());
        }
        if let Some(l) = &n.local_address
            && l.get_ref().is_ipv4() != address.is_ipv4()
        {
            problem(l.span(), "local_address must have the neighbor address's family".into());
        }
        neighbors.push(NeighborSettings {
            name: n.name.unwrap_or_else(|| address.to_string()),
            address,
            port: n.port.unwrap_or(179),
            remote_as: n.remote_as.into_inner(),
            local_address: n.local_address.map(Spanned::into_inner),
            passive: n.passive,
            hold_time,
            connect_retry,
            next_hop_v4: n.next_hop_v4,
            next_hop_v6: n.next_hop_v6,
            ipv4,
            ipv6,
            password: n.password.map(Spanned::into_inner),
            export_routes,
            export_blackhole,
            blackhole,
        });
    }
    BgpSettings {
        local_as: raw.local_as.into_inner(),
        router_id: raw.router_id,
        listen: raw.listen,
        local_pref: raw.local_pref.unwrap_or(100),
        batch_interval,
        graceful_restart_time,
        extended_messages: raw.extended_messages.unwrap_or(true),
        neighbors,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Settings;

    fn parse(bgp: &str) -> Result<Settings, crate::config::ConfigError> {
        Settings::parse(&format!("[dnstap]\nsocket = \"/x\"\n{bgp}"), Path::new("t.toml"), Path::new("/"), None)
    }

    #[test]
    fn defaults_and_families() {
        let s = parse(
            "[bgp]\nlocal_as = 4200000000\nrouter_id = \"192.0.2.10\"\n\
             [[bgp.neighbor]]\naddress = \"192.0.2.1\"\nremote_as = 65000\n\
             [[bgp.neighbor]]\naddress = \"2001:db8::1\"\nremote_as = 4200000000\nhold_time = \"0s\"\n\
             [[bgp.neighbor]]\naddress = \"192.0.2.3\"\nremote_as = 65000\nnext_hop_v6 = \"2001:db8::10\"\n",
        )
        .unwrap();
        let b = s.bgp.unwrap();
        assert_eq!(b.local_as, 4_200_000_000);
        assert_eq!(b.batch_interval, std::time::Duration::from_millis(2));
        let n = &b.neighbors;
        assert_eq!((n[0].port, n[0].hold_time, n[0].passive), (179, 90, false));
        // IPv4 session without an IPv6 next hop: IPv6 is off by default.
        assert!(n[0].ipv4 && !n[0].ipv6);
        assert!(!n[0].is_ibgp(b.local_as));
        // IPv6 session without an IPv4 next hop: IPv4 is off.
        assert!(!n[1].ipv4 && n[1].ipv6);
        assert!(n[1].is_ibgp(b.local_as));
        assert_eq!(n[1].hold_time, 0);
        assert!(n[2].ipv4 && n[2].ipv6);
        assert_eq!(n[0].name, "192.0.2.1");
    }

    #[test]
    fn problems_have_lines() {
        let err = parse(
            "[bgp]\nlocal_as = 65010\nrouter_id = \"192.0.2.10\"\n\
             [[bgp.neighbor]]\naddress = \"192.0.2.1\"\nremote_as = 65000\nhold_time = \"1s\"\n\
             [[bgp.neighbor]]\naddress = \"192.0.2.2\"\nremote_as = 65000\nfamilies = [\"ipv6\"]\n\
             [[bgp.neighbor]]\naddress = \"192.0.2.3\"\nremote_as = 0\npassword = \"\"\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = err.0.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![9, 11, 16, 17], "{err}");
        assert!(err.0[0].message.contains("hold_time"), "{err}");
        assert!(err.0[1].message.contains("next_hop_v6"), "{err}");
        let err = parse("[bgp]\nlocal_as = 65010\nrouter_id = \"192.0.2.10\"\nbogus = 1\n").unwrap_err();
        assert_eq!(err.0[0].line, 6, "{err}");
    }
}

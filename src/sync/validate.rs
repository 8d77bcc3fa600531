//! What a peer may tell us: every entry is checked before it can become a
//! route, and nothing is announced from an entry that fails.
//!
//! * the address must be a unicast address of its family that can be
//!   routed: not unspecified, loopback, multicast, broadcast, link-local,
//!   `0.0.0.0/8` or `240.0.0.0/4`; IPv4-mapped IPv6 is judged as IPv4;
//! * the name must be a plain host name (letters, digits, `-`, `_`) that a
//!   local list of the same name as the peer's list claims;
//! * the expiry must lie in the future and at most `max_ttl` (plus a
//!   minute of clock skew) ahead; it is then capped at now + `max_ttl`;
//! * the origin must be the sending instance and not this one.

use std::net::IpAddr;
use std::sync::Arc;

use super::log::NameState;
use super::protocol::{Name, truncate};
use crate::lists::Lists;
use crate::names::NameBuf;
use crate::routes::{UnixMillis, canonical};

/// Clock difference between instances tolerated on expiries.
pub const CLOCK_SKEW_MS: UnixMillis = 60_000;
/// Names one change may carry for one address: the largest
/// `max_names_per_route` a sender can have (the route table keeps at most
/// its own cap of them, the longest-living). Senders keep at most 255 in
/// their log record, far above the default cap of 16, so a shared address
/// with many names always syncs.
pub const MAX_NAMES: usize = 1024;

/// Why an entry was rejected (the `reason` label of
/// `dnsbgpd_sync_changes_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Malformed or not a routable unicast address.
    Address,
    /// The origin is this instance, or not the sending instance.
    Origin,
    /// Not a valid host name.
    Name,
    /// No local list of that name claims the name.
    Unlisted,
    /// Further ahead than `max_ttl` allows.
    Expiry,
    /// Already expired.
    Expired,
    /// More than [`MAX_NAMES`] names for one address.
    TooManyNames,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::Address,
        Reason::Origin,
        Reason::Name,
        Reason::Unlisted,
        Reason::Expiry,
        Reason::Expired,
        Reason::TooManyNames,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Address => "address",
            Reason::Origin => "origin",
            Reason::Name => "name",
            Reason::Unlisted => "unlisted",
            Reason::Expiry => "expiry",
            Reason::Expired => "expired",
            Reason::TooManyNames => "too_many_names",
        }
    }
}

/// Parses and judges an address.
pub fn address(text: &str) -> Result<IpAddr, (Reason, String)> {
    let addr: IpAddr =
        text.parse().map_err(|_| (Reason::Address, format!("{:?} is not an IP address", truncate(text))))?;
    let addr = canonical(addr);
    if routable_unicast(addr) {
        Ok(addr)
    } else {
        Err((Reason::Address, format!("{addr} is not a routable unicast address")))
    }
}

/// Whether a route to this host address makes sense (the route table's rule).
pub use crate::routes::routable_unicast;

/// Judges names against the current lists at one moment.
pub struct Checker<'a> {
    lists: &'a Lists,
    now: UnixMillis,
    max_ttl: UnixMillis,
}

impl<'a> Checker<'a> {
    pub fn new(lists: &'a Lists, now: UnixMillis, max_ttl: UnixMillis) -> Checker<'a> {
        Checker { lists, now, max_ttl }
    }

    /// A valid name as (domain, local list, expiry), expiry capped at
    /// now + max_ttl.
    pub fn name(&self, n: &Name) -> Result<NameState, (Reason, String)> {
        let domain = n.domain.strip_suffix('.').unwrap_or(&n.domain).to_ascii_lowercase();
        let plain = domain.split('.').all(|label| {
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if domain.is_empty() || !plain || NameBuf::from_text(&domain).is_err() {
            return Err((Reason::Name, format!("{:?} is not a valid host name", truncate(&n.domain))));
        }
        let Some(index) = self.lists.index_of(&n.list) else {
            return Err((Reason::Unlisted, format!("no list {:?} here", truncate(&n.list))));
        };
        if self.lists.lookup_text(&domain) & (1 << index) == 0 {
            return Err((Reason::Unlisted, format!("{domain} is not on list {:?} here", n.list)));
        }
        if n.expires <= self.now {
            return Err((Reason::Expired, format!("{domain} expired at {}", n.expires)));
        }
        let limit = self.now + self.max_ttl;
        if n.expires > limit + CLOCK_SKEW_MS {
            return Err((
                Reason::Expiry,
                format!("{domain}: expiry {} is more than max_ttl ahead (at most {limit})", n.expires),
            ));
        }
        Ok((Arc::from(domain.as_str()), self.lists.name(index).clone(), n.expires.min(limit)))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::ListSettings;

    #[test]
    fn addresses() {
        for good in ["198.51.100.7", "10.1.2.3", "2001:db8::7", "::ffff:203.0.113.5", "fd00::1"] {
            assert!(address(good).is_ok(), "{good}");
        }
        assert_eq!(address("::ffff:203.0.113.5").unwrap(), "203.0.113.5".parse::<IpAddr>().unwrap());
        for bad in [
            "0.0.0.0",
            "::",
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "240.0.0.1",
            "0.1.2.3",
            "169.254.1.1",
            "fe80::1",
            "198.51.100",
            "198.51.100.7/32",
            "",
            "x",
        ] {
            let err = address(bad).unwrap_err();
            assert_eq!(err.0, Reason::Address, "{bad}");
        }
    }

    #[test]
    fn names() {
        let settings = vec![ListSettings {
            name: Arc::from("vpn"),
            file: PathBuf::from("vpn.txt"),
            communities: vec![],
            large_communities: vec![],
            ..Default::default()
        }];
        let lists = Lists::compile(&settings, &["listed.test\n".to_string()]).0;
        let now = 1_000_000;
        let c = Checker::new(&lists, now, 3_600_000);
        let n = |domain: &str, list: &str, expires| Name { domain: domain.into(), list: list.into(), expires };
        let (d, l, e) = c.name(&n("WWW.Listed.Test.", "vpn", now + 5_000)).unwrap();
        assert_eq!((&*d, &*l, e), ("www.listed.test", "vpn", now + 5_000));
        // Within the skew allowance: capped at max_ttl.
        assert_eq!(c.name(&n("listed.test", "vpn", now + 3_600_000 + 30_000)).unwrap().2, now + 3_600_000);
        let reason = |name: Name| c.name(&name).unwrap_err().0;
        assert_eq!(reason(n("evil.test", "vpn", now + 5_000)), Reason::Unlisted);
        assert_eq!(reason(n("www.listed.test", "other", now + 5_000)), Reason::Unlisted);
        assert_eq!(reason(n("www.listed.test", "vpn", now)), Reason::Expired);
        assert_eq!(reason(n("www.listed.test", "vpn", u64::MAX)), Reason::Expiry);
        assert_eq!(reason(n("a b.listed.test", "vpn", now + 5_000)), Reason::Name);
        assert_eq!(reason(n("", "vpn", now + 5_000)), Reason::Name);
        assert_eq!(reason(n("a..listed.test", "vpn", now + 5_000)), Reason::Name);
        assert_eq!(reason(n(&"a".repeat(64), "vpn", now + 5_000)), Reason::Name);
    }
}

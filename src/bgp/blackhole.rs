//! Blackhole export (RFC 7999): source blocks of the blocking engine
//! announced to the neighbors that opt in (`export = [..., "blackhole"]`).
//!
//! The engine publishes the prefixes to blackhole on a watch channel; each
//! session that exports them keeps what it sent ([`BlackholeRib`]) and,
//! on every change, announces the new ones with BLACKHOLE (65535:666) and
//! NO_EXPORT and withdraws the ones that ended. Only prefixes within the
//! neighbor's length bounds are sent, at most `max_blackholes` of them
//! (the most specific first).

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::BytesMut;
use ipnet::IpNet;
use tokio::sync::watch;

use super::message::{AsPath, Community, Ipv4Prefix, Ipv6Prefix, Message, Origin, RouteAttributes, UpdateBuilder};
use super::rib::{Encoded, RibError, SessionExport};

/// The prefixes to blackhole, as the engine publishes them.
pub type BlackholeFeed = watch::Receiver<Arc<Vec<IpNet>>>;

/// RFC 7999 BLACKHOLE.
pub const BLACKHOLE: Community = Community(0xFFFF_029A);

/// Which blackhole prefixes a neighbor takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlackholeBounds {
    pub min_v4: u8,
    pub max_v4: u8,
    pub min_v6: u8,
    pub max_v6: u8,
    /// At most this many announced at once.
    pub max: usize,
}

impl Default for BlackholeBounds {
    fn default() -> Self {
        BlackholeBounds { min_v4: 24, max_v4: 32, min_v6: 48, max_v6: 128, max: 1000 }
    }
}

impl BlackholeBounds {
    pub fn admits(&self, p: &IpNet) -> bool {
        match p {
            IpNet::V4(n) => (self.min_v4..=self.max_v4).contains(&n.prefix_len()),
            IpNet::V6(n) => (self.min_v6..=self.max_v6).contains(&n.prefix_len()),
        }
    }
}

/// What one session announced as blackholes.
#[derive(Debug, Default)]
pub struct BlackholeRib {
    sent: BTreeSet<IpNet>,
}

/// Announcements and withdrawals to send.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BlackholeChanges {
    pub announce: Vec<IpNet>,
    pub withdraw: Vec<IpNet>,
}

impl BlackholeChanges {
    pub fn is_empty(&self) -> bool {
        self.announce.is_empty() && self.withdraw.is_empty()
    }
}

impl BlackholeRib {
    /// Brings what was sent to `wanted` (filtered by the bounds, the
    /// session's families and the cap) and returns the difference.
    pub fn update(&mut self, wanted: &[IpNet], bounds: &BlackholeBounds, session: &SessionExport) -> BlackholeChanges {
        let mut admitted: Vec<IpNet> = wanted
            .iter()
            .copied()
            .filter(|p| bounds.admits(p))
            .filter(|p| if p.addr().is_ipv4() { session.ipv4 } else { session.ipv6 })
            .collect();
        // Most specific first when the cap bites.
        admitted.sort_by(|a, b| b.prefix_len().cmp(&a.prefix_len()).then(a.cmp(b)));
        admitted.truncate(bounds.max);
        let want: BTreeSet<IpNet> = admitted.into_iter().collect();
        let withdraw: Vec<IpNet> = self.sent.difference(&want).copied().collect();
        let announce: Vec<IpNet> = want.difference(&self.sent).copied().collect();
        self.sent = want;
        BlackholeChanges { announce, withdraw }
    }

    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// Everything sent (a ROUTE-REFRESH).
    pub fn everything(&self) -> BlackholeChanges {
        BlackholeChanges { announce: self.sent.iter().copied().collect(), withdraw: Vec::new() }
    }
}

/// The attributes of a blackhole route on this session.
fn attributes(session: &SessionExport) -> RouteAttributes {
    RouteAttributes {
        origin: Origin::Igp,
        as_path: if session.ibgp { AsPath::empty() } else { AsPath::sequence([session.local_as]) },
        multi_exit_disc: None,
        local_pref: session.ibgp.then_some(session.local_pref),
        communities: vec![BLACKHOLE, Community::NO_EXPORT],
        large_communities: Vec::new(),
    }
}

/// Appends the UPDATEs for `changes` to `out`.
pub fn encode(changes: &BlackholeChanges, session: &SessionExport, out: &mut BytesMut) -> Result<Encoded, RibError> {
    let builder = UpdateBuilder::new(session.max_len);
    let mut enc = Encoded::default();
    let v4 = |v: &[IpNet]| -> Vec<Ipv4Prefix> {
        v.iter()
            .filter_map(|p| match p {
                IpNet::V4(n) => Ipv4Prefix::new(n.network(), n.prefix_len()),
                IpNet::V6(_) => None,
            })
            .collect()
    };
    let v6 = |v: &[IpNet]| -> Vec<Ipv6Prefix> {
        v.iter()
            .filter_map(|p| match p {
                IpNet::V6(n) => Ipv6Prefix::new(n.network(), n.prefix_len()),
                IpNet::V4(_) => None,
            })
            .collect()
    };
    let mut push = |m: super::message::UpdateMessage, out: &mut BytesMut| -> Result<(), RibError> {
        enc.bytes += Message::Update(m).encode(session.max_len, out)?;
        enc.messages += 1;
        Ok(())
    };
    for m in builder.withdraw_ipv4(v4(&changes.withdraw)) {
        push(m, out)?;
    }
    for m in builder.withdraw_ipv6(v6(&changes.withdraw)) {
        push(m, out)?;
    }
    let attrs = attributes(session);
    let a4 = v4(&changes.announce);
    if !a4.is_empty() {
        let nh = session.next_hop_v4.ok_or(RibError::NoNextHop("IPv4"))?;
        for m in builder.announce_ipv4(&attrs, nh, a4)? {
            push(m, out)?;
        }
    }
    let a6 = v6(&changes.announce);
    if !a6.is_empty() {
        let nh = session.next_hop_v6.ok_or(RibError::NoNextHop("IPv6"))?;
        for m in builder.announce_ipv6(&attrs, nh, None, a6)? {
            push(m, out)?;
        }
    }
    enc.announced = changes.announce.len();
    enc.withdrawn = changes.withdraw.len();
    Ok(enc)
}

/// Waits for the next change of the feed; never returns without one.
pub async fn changed(feed: &mut Option<BlackholeFeed>) -> Option<Arc<Vec<IpNet>>> {
    match feed {
        Some(f) => match f.changed().await {
            Ok(()) => Some(f.borrow_and_update().clone()),
            Err(_) => {
                *feed = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::message::decode;

    fn session() -> SessionExport {
        SessionExport {
            ibgp: false,
            local_as: 65010,
            local_pref: 100,
            next_hop_v4: Some("192.0.2.10".parse().unwrap()),
            next_hop_v6: Some("2001:db8::10".parse().unwrap()),
            ipv4: true,
            ipv6: true,
            max_len: 4096,
        }
    }

    #[test]
    fn bounds_cap_and_communities() {
        let mut rib = BlackholeRib::default();
        let b = BlackholeBounds { max: 2, ..Default::default() };
        let wanted: Vec<IpNet> =
            ["198.51.100.7/32", "198.51.100.0/24", "10.0.0.0/8", "2001:db8::/48", "2001:db8:1::/32"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
        let c = rib.update(&wanted, &b, &session());
        // /8 and /32-v6 are outside the bounds; the cap keeps the 2 most specific.
        let got: Vec<String> = c.announce.iter().map(|p| p.to_string()).collect();
        assert_eq!(got, ["198.51.100.7/32", "2001:db8::/48"]);
        let mut out = BytesMut::new();
        let enc = encode(&c, &session(), &mut out).unwrap();
        assert_eq!(enc.messages, 2);
        let mut buf = &out[..];
        while let Some((m, n)) = decode(buf, 65535).unwrap() {
            let Message::Update(u) = m else { panic!() };
            assert_eq!(u.communities(), &[BLACKHOLE, Community::NO_EXPORT]);
            buf = &buf[n..];
        }
        // The block ends: withdrawn.
        let c = rib.update(&wanted[..1], &b, &session());
        assert_eq!(c.withdraw, vec!["2001:db8::/48".parse::<IpNet>().unwrap()]);
        assert!(c.announce.is_empty());
        assert!(rib.update(&wanted[..1], &b, &session()).is_empty());
        assert_eq!(BLACKHOLE, Community::new(65535, 666));
    }
}

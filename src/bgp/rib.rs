//! Adj-RIB-out of one neighbor: what was sent, and the UPDATEs that bring
//! the neighbor from that to the table's current state.
//!
//! Route events carry current state, so applying them here is idempotent:
//! an announcement identical to what was sent produces nothing, a
//! withdrawal of something never sent produces nothing. Prefixes that
//! share their attributes are grouped, so one UPDATE carries as many
//! prefixes as fit (about 800 /32 in 4096 bytes, 13 000 with extended
//! messages).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use bytes::BytesMut;
use rustc_hash::FxHashMap;

use super::message::{
    Afi, AsPath, BuildError, Community, EncodeError, Ipv4Prefix, Ipv6Prefix, LargeCommunity, Message, Origin,
    RouteAttributes, Safi, UpdateBuilder, UpdateMessage,
};
use super::policy::{ExportAttrs, ExportPolicy};
use crate::routes::RouteEvent;

/// What a session contributes to the attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionExport {
    pub ibgp: bool,
    pub local_as: u32,
    pub local_pref: u32,
    /// Default next hops (the session's local addresses or configured).
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Negotiated families.
    pub ipv4: bool,
    pub ipv6: bool,
    /// 4096, or 65535 with extended messages on both sides.
    pub max_len: usize,
}

impl SessionExport {
    fn accepts(&self, addr: &IpAddr) -> bool {
        match addr {
            IpAddr::V4(_) => self.ipv4,
            IpAddr::V6(_) => self.ipv6,
        }
    }

    fn route_attributes(&self, e: &ExportAttrs) -> RouteAttributes {
        RouteAttributes {
            origin: Origin::Igp,
            as_path: if self.ibgp { AsPath::empty() } else { AsPath::sequence([self.local_as]) },
            multi_exit_disc: e.med,
            local_pref: self.ibgp.then_some(self.local_pref),
            communities: e.communities.iter().map(|(a, v)| Community::new(*a, *v)).collect(),
            large_communities: e.large_communities.iter().map(|(a, b, c)| LargeCommunity::new(*a, *b, *c)).collect(),
        }
    }
}

/// Pending changes for one neighbor.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub announce: BTreeMap<Arc<ExportAttrs>, (Vec<Ipv4Addr>, Vec<Ipv6Addr>)>,
    pub withdraw_v4: Vec<Ipv4Addr>,
    pub withdraw_v6: Vec<Ipv6Addr>,
}

/// What encoding produced.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    pub messages: usize,
    pub bytes: usize,
    pub announced: usize,
    pub withdrawn: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RibError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("no {0} next hop for this session")]
    NoNextHop(&'static str),
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.announce.is_empty() && self.withdraw_v4.is_empty() && self.withdraw_v6.is_empty()
    }

    /// Appends the UPDATEs for these changes to `out`.
    pub fn encode(&self, session: &SessionExport, out: &mut BytesMut) -> Result<Encoded, RibError> {
        let builder = UpdateBuilder::new(session.max_len);
        let mut enc = Encoded::default();
        let mut push = |m: UpdateMessage, out: &mut BytesMut| -> Result<(), RibError> {
            enc.bytes += Message::Update(m).encode(session.max_len, out)?;
            enc.messages += 1;
            Ok(())
        };
        for m in builder.withdraw_ipv4(self.withdraw_v4.iter().map(|a| Ipv4Prefix::host(*a))) {
            push(m, out)?;
        }
        for m in builder.withdraw_ipv6(self.withdraw_v6.iter().map(|a| Ipv6Prefix::host(*a))) {
            push(m, out)?;
        }
        for (attrs, (v4, v6)) in &self.announce {
            let ra = session.route_attributes(attrs);
            if !v4.is_empty() {
                let nh = attrs.next_hop_v4.or(session.next_hop_v4).ok_or(RibError::NoNextHop("IPv4"))?;
                for m in builder.announce_ipv4(&ra, nh, v4.iter().map(|a| Ipv4Prefix::host(*a)))? {
                    push(m, out)?;
                }
            }
            if !v6.is_empty() {
                let nh = attrs.next_hop_v6.or(session.next_hop_v6).ok_or(RibError::NoNextHop("IPv6"))?;
                for m in builder.announce_ipv6(&ra, nh, None, v6.iter().map(|a| Ipv6Prefix::host(*a)))? {
                    push(m, out)?;
                }
            }
        }
        enc.withdrawn = self.withdraw_v4.len() + self.withdraw_v6.len();
        enc.announced = self.announce.values().map(|(a, b)| a.len() + b.len()).sum();
        Ok(enc)
    }
}

/// End-of-RIB markers for the session's families.
pub fn end_of_rib(session: &SessionExport, out: &mut BytesMut) -> Result<usize, EncodeError> {
    let mut bytes = 0;
    if session.ipv4 {
        bytes += Message::Update(UpdateMessage::end_of_rib(Afi::IPV4, Safi::UNICAST)).encode(session.max_len, out)?;
    }
    if session.ipv6 {
        bytes += Message::Update(UpdateMessage::end_of_rib(Afi::IPV6, Safi::UNICAST)).encode(session.max_len, out)?;
    }
    Ok(bytes)
}

#[derive(Debug, Default)]
pub struct AdjRibOut {
    sent: FxHashMap<IpAddr, Arc<ExportAttrs>>,
    interned: HashMap<ExportAttrs, Arc<ExportAttrs>>,
    v4: usize,
    v6: usize,
}

impl AdjRibOut {
    fn intern(&mut self, e: ExportAttrs) -> Arc<ExportAttrs> {
        if let Some(a) = self.interned.get(&e) {
            return a.clone();
        }
        let a = Arc::new(e.clone());
        self.interned.insert(e, a.clone());
        a
    }

    /// Records the events as sent and returns what to send.
    pub fn apply(&mut self, events: &[RouteEvent], policy: &ExportPolicy, session: &SessionExport) -> Changes {
        let mut changes = Changes::default();
        for event in events {
            match event {
                RouteEvent::Added(route) if session.accepts(&route.addr) => {
                    let attrs = self.intern(policy.export(route));
                    match self.sent.insert(route.addr, attrs.clone()) {
                        Some(old) if old == attrs => continue,
                        Some(_) => {}
                        None => match route.addr {
                            IpAddr::V4(_) => self.v4 += 1,
                            IpAddr::V6(_) => self.v6 += 1,
                        },
                    }
                    let group = changes.announce.entry(attrs).or_default();
                    match route.addr {
                        IpAddr::V4(a) => group.0.push(a),
                        IpAddr::V6(a) => group.1.push(a),
                    }
                }
                RouteEvent::Added(_) => {}
                RouteEvent::Removed(addr) => {
                    if self.sent.remove(addr).is_some() {
                        match addr {
                            IpAddr::V4(a) => {
                                self.v4 -= 1;
                                changes.withdraw_v4.push(*a);
                            }
                            IpAddr::V6(a) => {
                                self.v6 -= 1;
                                changes.withdraw_v6.push(*a);
                            }
                        }
                    }
                }
            }
        }
        changes
    }

    /// Everything sent so far, for a ROUTE-REFRESH.
    pub fn everything(&self) -> Changes {
        let mut changes = Changes::default();
        for (addr, attrs) in &self.sent {
            let group = changes.announce.entry(attrs.clone()).or_default();
            match addr {
                IpAddr::V4(a) => group.0.push(*a),
                IpAddr::V6(a) => group.1.push(*a),
            }
        }
        changes
    }

    /// Prefixes advertised (IPv4, IPv6).
    pub fn counts(&self) -> (usize, usize) {
        (self.v4, self.v6)
    }
}

#[cfg(test)]
mod tests {
    use smallvec::SmallVec;

    use super::*;
    use crate::bgp::message::decode;
    use crate::config::ListSettings;
    use crate::routes::{Attribution, Route, Source};

    fn session(ibgp: bool) -> SessionExport {
        SessionExport {
            ibgp,
            local_as: 65010,
            local_pref: 150,
            next_hop_v4: Some("192.0.2.10".parse().unwrap()),
            next_hop_v6: Some("2001:db8::10".parse().unwrap()),
            ipv4: true,
            ipv6: true,
            max_len: 4096,
        }
    }

    fn route(addr: &str, list: &str) -> Route {
        Route {
            addr: addr.parse().unwrap(),
            attributions: SmallVec::from_elem(
                Attribution { domain: Arc::from("x.test"), list: Arc::from(list), expires: 1, source: Source::Dns },
                1,
            ),
        }
    }

    fn policy() -> ExportPolicy {
        ExportPolicy::new(&[
            ListSettings { name: Arc::from("vpn"), communities: vec![(65010, 100)], ..Default::default() },
            ListSettings { name: Arc::from("cdn"), large_communities: vec![(65010, 0, 7)], ..Default::default() },
        ])
    }

    fn decode_all(mut buf: &[u8]) -> Vec<UpdateMessage> {
        let mut out = Vec::new();
        while let Some((m, n)) = decode(buf, 65535).unwrap() {
            match m {
                Message::Update(u) => out.push(u),
                other => panic!("{other:?}"),
            }
            buf = &buf[n..];
        }
        out
    }

    #[test]
    fn groups_by_attributes_and_skips_what_was_sent() {
        let mut rib = AdjRibOut::default();
        let s = session(false);
        let p = policy();
        let events = vec![
            RouteEvent::Added(route("198.51.100.1", "vpn")),
            RouteEvent::Added(route("198.51.100.2", "vpn")),
            RouteEvent::Added(route("2001:db8::1", "cdn")),
            RouteEvent::Removed("198.51.100.9".parse().unwrap()),
        ];
        let c = rib.apply(&events, &p, &s);
        assert_eq!(c.announce.len(), 2);
        assert!(c.withdraw_v4.is_empty(), "never sent, nothing to withdraw");
        let mut buf = BytesMut::new();
        let enc = c.encode(&s, &mut buf).unwrap();
        assert_eq!((enc.messages, enc.announced), (2, 3));
        let ups = decode_all(&buf);
        let v4 = ups.iter().find(|u| !u.nlri.is_empty()).unwrap();
        assert_eq!(v4.nlri.len(), 2);
        assert_eq!(v4.next_hop(), Some("192.0.2.10".parse().unwrap()));
        assert_eq!(v4.communities(), &[Community::new(65010, 100)]);
        assert_eq!(v4.as_path().unwrap().first_as(), Some(65010));
        let v6 = ups.iter().find(|u| u.mp_reach().is_some()).unwrap();
        assert_eq!(v6.large_communities(), &[LargeCommunity::new(65010, 0, 7)]);
        assert_eq!(rib.counts(), (2, 1));

        // The same state again sends nothing; a change of lists re-announces.
        assert!(rib.apply(&events, &p, &s).is_empty());
        let c = rib.apply(&[RouteEvent::Added(route("198.51.100.1", "cdn"))], &p, &s);
        assert_eq!(c.announce.values().map(|(a, _)| a.len()).sum::<usize>(), 1);
        let c = rib.apply(
            &[
                RouteEvent::Removed("198.51.100.1".parse().unwrap()),
                RouteEvent::Removed("2001:db8::1".parse().unwrap()),
            ],
            &p,
            &s,
        );
        assert_eq!(c.withdraw_v4.len(), 1);
        assert_eq!(c.withdraw_v6.len(), 1);
        assert_eq!(rib.counts(), (1, 0));
        assert_eq!(rib.everything().announce.values().map(|(a, _)| a.len()).sum::<usize>(), 1);
    }

    #[test]
    fn ibgp_has_empty_path_and_local_pref_and_families_filter() {
        let mut rib = AdjRibOut::default();
        let mut s = session(true);
        s.ipv6 = false;
        let c = rib.apply(
            &[RouteEvent::Added(route("198.51.100.1", "vpn")), RouteEvent::Added(route("2001:db8::1", "vpn"))],
            &policy(),
            &s,
        );
        let mut buf = BytesMut::new();
        c.encode(&s, &mut buf).unwrap();
        let ups = decode_all(&buf);
        assert_eq!(ups.len(), 1);
        assert_eq!(ups[0].as_path().unwrap().path_len(), 0);
        assert!(ups[0].attribute(5).is_some(), "LOCAL_PREF on iBGP");
        let mut eor = BytesMut::new();
        end_of_rib(&s, &mut eor).unwrap();
        assert_eq!(eor.len(), 23);
    }

    #[test]
    fn many_prefixes_pack_into_few_messages() {
        let mut rib = AdjRibOut::default();
        let s = session(false);
        let events: Vec<RouteEvent> = (0..100_000u32)
            .map(|i| RouteEvent::Added(route(&Ipv4Addr::from(0x0A00_0000 + i).to_string(), "vpn")))
            .collect();
        let c = rib.apply(&events, &policy(), &s);
        let mut buf = BytesMut::new();
        let enc = c.encode(&s, &mut buf).unwrap();
        assert!(enc.messages <= 130, "{} messages", enc.messages);
        assert!(enc.bytes < 100_000 * 6, "{} bytes", enc.bytes);
    }
}

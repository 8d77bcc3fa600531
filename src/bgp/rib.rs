//! Adj-RIB-out of one neighbor: what was sent, and the UPDATEs that bring
//! the neighbor from that to the table's current state.
//!
//! Route events carry current state, so applying them here is idempotent:
//! an announcement identical to what was sent produces nothing, a
//! withdrawal of something never sent produces nothing. Prefixes that
//! share their attributes are grouped, so one UPDATE carries as many
//! prefixes as fit (about 800 /32 in 4096 bytes, 13 000 with extended
//! messages).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use bytes::BytesMut;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use super::message::{
    Afi, AsPath, BuildError, Community, EncodeError, Ipv4Prefix, Ipv6Prefix, LargeCommunity, Message, Origin,
    RouteAttributes, Safi, UpdateBuilder, UpdateMessage,
};
use super::policy::{ExportAttrs, ExportPolicy};
use crate::routes::{Route, RouteEvent};

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

/// What was sent to one neighbor: per prefix, the id of its interned
/// attributes. Keys are the address bits, values a 4-byte id, so a million
/// IPv4 routes take ~18 MB here instead of ~70 MB with `IpAddr` keys and
/// `Arc` values (growing that table was a third of the CPU of sending a
/// full table, mostly the kernel zeroing fresh pages).
#[derive(Debug, Default)]
pub struct AdjRibOut {
    sent_v4: FxHashMap<u32, u32>,
    sent_v6: FxHashMap<u128, u32>,
    /// Interned attributes by id; ids are never reused within a session.
    attrs: Vec<Arc<ExportAttrs>>,
    interned: FxHashMap<Arc<ExportAttrs>, u32>,
}

/// The lists of a route, as far as the export policy is concerned.
type ListKey = SmallVec<[Arc<str>; 2]>;

fn same_lists(key: &ListKey, route: &Route) -> bool {
    key.len() == route.attributions.len()
        && key.iter().zip(&route.attributions).all(|(k, a)| Arc::ptr_eq(k, &a.list) || *k == a.list)
}

impl AdjRibOut {
    fn intern(&mut self, e: ExportAttrs) -> u32 {
        if let Some(id) = self.interned.get(&e) {
            return *id;
        }
        let id = u32::try_from(self.attrs.len()).expect("fewer than 2^32 attribute sets");
        let a = Arc::new(e);
        self.attrs.push(a.clone());
        self.interned.insert(a, id);
        id
    }

    /// Makes room for `total` prefixes, split between the families like
    /// `sample` (e.g. the first batch of a full table), so that sending a
    /// large table does not grow the maps step by step.
    pub fn reserve_like(&mut self, sample: &[RouteEvent], total: usize) {
        if sample.is_empty() {
            return;
        }
        let v4 = sample.iter().filter(|e| matches!(e, RouteEvent::Added(r) if r.addr.is_ipv4())).count();
        let v6 = sample.iter().filter(|e| matches!(e, RouteEvent::Added(r) if r.addr.is_ipv6())).count();
        let scale = |n: usize| (n as u128 * total as u128 / sample.len() as u128) as usize;
        self.sent_v4.reserve(scale(v4).saturating_sub(self.sent_v4.len()));
        self.sent_v6.reserve(scale(v6).saturating_sub(self.sent_v6.len()));
    }

    /// Records the events as sent and returns what to send.
    pub fn apply(&mut self, events: &[RouteEvent], policy: &ExportPolicy, session: &SessionExport) -> Changes {
        let mut changes = Changes::default();
        // The policy result depends only on a route's lists: remember it
        // for the few list combinations a batch has.
        let mut memo: Vec<(ListKey, u32)> = Vec::new();
        // Announcement groups by attribute id.
        let mut groups: Vec<(u32, Vec<Ipv4Addr>, Vec<Ipv6Addr>)> = Vec::new();
        let mut group_of: FxHashMap<u32, usize> = FxHashMap::default();
        for event in events {
            match event {
                RouteEvent::Added(route) if session.accepts(&route.addr) => {
                    let id = match memo.iter().find(|(k, _)| same_lists(k, route)) {
                        Some((_, id)) => *id,
                        None => {
                            let id = self.intern(policy.export(route));
                            if memo.len() >= 16 {
                                memo.clear();
                            }
                            memo.push((route.attributions.iter().map(|a| a.list.clone()).collect(), id));
                            id
                        }
                    };
                    let previous = match route.addr {
                        IpAddr::V4(a) => self.sent_v4.insert(a.to_bits(), id),
                        IpAddr::V6(a) => self.sent_v6.insert(a.to_bits(), id),
                    };
                    if previous == Some(id) {
                        continue;
                    }
                    let g = *group_of.entry(id).or_insert_with(|| {
                        groups.push((id, Vec::new(), Vec::new()));
                        groups.len() - 1
                    });
                    match route.addr {
                        IpAddr::V4(a) => groups[g].1.push(a),
                        IpAddr::V6(a) => groups[g].2.push(a),
                    }
                }
                RouteEvent::Added(_) => {}
                RouteEvent::Removed(IpAddr::V4(a)) => {
                    if self.sent_v4.remove(&a.to_bits()).is_some() {
                        changes.withdraw_v4.push(*a);
                    }
                }
                RouteEvent::Removed(IpAddr::V6(a)) => {
                    if self.sent_v6.remove(&a.to_bits()).is_some() {
                        changes.withdraw_v6.push(*a);
                    }
                }
            }
        }
        // Distinct ids are distinct attributes: no group merges here.
        for (id, v4, v6) in groups {
            changes.announce.insert(self.attrs[id as usize].clone(), (v4, v6));
        }
        changes
    }

    /// Everything sent so far, for a ROUTE-REFRESH.
    pub fn everything(&self) -> Changes {
        let mut by_id: Vec<(Vec<Ipv4Addr>, Vec<Ipv6Addr>)> = vec![Default::default(); self.attrs.len()];
        for (a, id) in &self.sent_v4 {
            by_id[*id as usize].0.push(Ipv4Addr::from_bits(*a));
        }
        for (a, id) in &self.sent_v6 {
            by_id[*id as usize].1.push(Ipv6Addr::from_bits(*a));
        }
        let mut changes = Changes::default();
        for (id, (v4, v6)) in by_id.into_iter().enumerate() {
            if !v4.is_empty() || !v6.is_empty() {
                changes.announce.insert(self.attrs[id].clone(), (v4, v6));
            }
        }
        changes
    }

    /// Prefixes advertised (IPv4, IPv6).
    pub fn counts(&self) -> (usize, usize) {
        (self.sent_v4.len(), self.sent_v6.len())
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
            names_total: 1,
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
    fn routes_with_the_same_lists_share_one_group_whatever_the_order() {
        let mut rib = AdjRibOut::default();
        let s = session(false);
        let p = policy();
        let mut both = route("198.51.100.1", "vpn");
        both.attributions.push(Attribution {
            domain: Arc::from("y.test"),
            list: Arc::from("cdn"),
            expires: 1,
            source: Source::Dns,
        });
        let mut reversed = route("198.51.100.2", "cdn");
        reversed.attributions.push(Attribution {
            domain: Arc::from("z.test"),
            list: Arc::from("vpn"),
            expires: 1,
            source: Source::Dns,
        });
        let events = vec![
            RouteEvent::Added(both),
            RouteEvent::Added(route("198.51.100.3", "vpn")),
            RouteEvent::Added(reversed),
            RouteEvent::Added(route("2001:db8::3", "vpn")),
        ];
        let c = rib.apply(&events, &p, &s);
        assert_eq!(c.announce.len(), 2, "{c:?}");
        let (attrs, (v4, _)) = c.announce.iter().find(|(a, _)| !a.large_communities.is_empty()).unwrap();
        assert_eq!(attrs.communities, vec![(65010, 100)]);
        assert_eq!(v4.len(), 2);
        let (_, (v4, v6)) = c.announce.iter().find(|(a, _)| a.large_communities.is_empty()).unwrap();
        assert_eq!((v4.len(), v6.len()), (1, 1));
        let mut all = rib.everything();
        for (v4, _) in all.announce.values_mut() {
            v4.sort();
        }
        let mut sorted = c;
        for (v4, _) in sorted.announce.values_mut() {
            v4.sort();
        }
        assert_eq!(all, sorted);
        assert_eq!(rib.counts(), (3, 1));
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

//! UPDATE message (RFC 4271 §4.3): withdrawn IPv4 routes, path attributes,
//! IPv4 NLRI; End-of-RIB markers (RFC 4724 §2); the UPDATE error taxonomy
//! of RFC 4271 §6.3 with the RFC 7606 action for each fault; and
//! [`UpdateBuilder`], which packs many prefixes sharing one attribute set
//! into as few UPDATEs as the maximum message size allows.

use std::iter::Peekable;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};

use super::attributes::{
    AsPath, AttributeFlags, Community, LargeCommunity, MpNlri, MpReachNlri, MpUnreachNlri, Origin, PathAttribute,
    type_code,
};
use super::header::{MIN_UPDATE_LEN, effective_max_len};
use super::notification::{error_code, update_error};
use super::prefix::{Afi, Ipv4Prefix, Ipv6Prefix, Safi, decode_ipv4_prefixes};
use super::reader::Reader;

/// An UPDATE message. IPv6 routes travel in the MP_REACH_NLRI and
/// MP_UNREACH_NLRI attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateMessage {
    pub withdrawn_routes: Vec<Ipv4Prefix>,
    pub path_attributes: Vec<PathAttribute>,
    pub nlri: Vec<Ipv4Prefix>,
}

impl UpdateMessage {
    /// The End-of-RIB marker for a family (RFC 4724 §2): an empty UPDATE for
    /// IPv4 unicast, otherwise an UPDATE whose only attribute is an empty
    /// MP_UNREACH_NLRI for the family.
    pub fn end_of_rib(afi: Afi, safi: Safi) -> Self {
        if (afi, safi) == (Afi::IPV4, Safi::UNICAST) {
            return Self::default();
        }
        let withdrawn = match afi {
            Afi::IPV4 => MpNlri::Ipv4(Vec::new()),
            Afi::IPV6 => MpNlri::Ipv6(Vec::new()),
            _ => MpNlri::Other(bytes::Bytes::new()),
        };
        Self {
            path_attributes: vec![PathAttribute::MpUnreachNlri(MpUnreachNlri { afi, safi, withdrawn })],
            ..Self::default()
        }
    }

    /// The family this message is the End-of-RIB marker of, if it is one.
    pub fn end_of_rib_family(&self) -> Option<(Afi, Safi)> {
        if !self.withdrawn_routes.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.path_attributes.as_slice() {
            [] => Some((Afi::IPV4, Safi::UNICAST)),
            [PathAttribute::MpUnreachNlri(m)] if m.withdrawn.is_empty() => Some((m.afi, m.safi)),
            _ => None,
        }
    }

    /// The first attribute of a type.
    pub fn attribute(&self, code: u8) -> Option<&PathAttribute> {
        self.path_attributes.iter().find(|a| a.type_code() == code)
    }

    pub fn origin(&self) -> Option<Origin> {
        match self.attribute(type_code::ORIGIN)? {
            PathAttribute::Origin(o) => Some(*o),
            _ => None,
        }
    }

    pub fn as_path(&self) -> Option<&AsPath> {
        match self.attribute(type_code::AS_PATH)? {
            PathAttribute::AsPath(p) => Some(p),
            _ => None,
        }
    }

    pub fn next_hop(&self) -> Option<Ipv4Addr> {
        match self.attribute(type_code::NEXT_HOP)? {
            PathAttribute::NextHop(a) => Some(*a),
            _ => None,
        }
    }

    pub fn communities(&self) -> &[Community] {
        match self.attribute(type_code::COMMUNITIES) {
            Some(PathAttribute::Communities(c)) => c,
            _ => &[],
        }
    }

    pub fn large_communities(&self) -> &[LargeCommunity] {
        match self.attribute(type_code::LARGE_COMMUNITIES) {
            Some(PathAttribute::LargeCommunities(c)) => c,
            _ => &[],
        }
    }

    pub fn mp_reach(&self) -> Option<&MpReachNlri> {
        match self.attribute(type_code::MP_REACH_NLRI)? {
            PathAttribute::MpReachNlri(m) => Some(m),
            _ => None,
        }
    }

    pub fn mp_unreach(&self) -> Option<&MpUnreachNlri> {
        match self.attribute(type_code::MP_UNREACH_NLRI)? {
            PathAttribute::MpUnreachNlri(m) => Some(m),
            _ => None,
        }
    }

    fn withdrawn_len(&self) -> usize {
        self.withdrawn_routes.iter().map(Ipv4Prefix::encoded_len).sum()
    }

    fn attributes_len(&self) -> usize {
        self.path_attributes.iter().map(PathAttribute::encoded_len).sum()
    }

    fn nlri_len(&self) -> usize {
        self.nlri.iter().map(Ipv4Prefix::encoded_len).sum()
    }

    /// Octets of the whole message, header included.
    pub fn encoded_len(&self) -> usize {
        MIN_UPDATE_LEN + self.withdrawn_len() + self.attributes_len() + self.nlri_len()
    }

    /// Writes the body. The caller has checked `encoded_len()` against the
    /// maximum message size, so both 2-octet lengths fit.
    pub(crate) fn encode_body(&self, dst: &mut BytesMut) -> Result<(), super::EncodeError> {
        dst.put_u16(self.withdrawn_len() as u16);
        self.withdrawn_routes.iter().for_each(|p| p.encode(dst));
        dst.put_u16(self.attributes_len() as u16);
        for a in &self.path_attributes {
            a.encode(dst)?;
        }
        self.nlri.iter().for_each(|p| p.encode(dst));
        Ok(())
    }

    /// Decodes an UPDATE body (the octets after the header), checking it as
    /// RFC 4271 §6.3 and RFC 7606 describe.
    pub fn decode(body: &[u8]) -> Result<Self, UpdateError> {
        use AttributeListFault::*;
        let list = UpdateError::MalformedAttributeList;
        let mut r = Reader::new(body);
        let withdrawn_field = r.u16().and_then(|n| r.take(usize::from(n))).ok_or(list(WithdrawnRoutesLength))?;
        let attributes_field = r.u16().and_then(|n| r.take(usize::from(n))).ok_or(list(TotalAttributeLength))?;
        let nlri_field = r.rest();

        let withdrawn_routes = decode_ipv4_prefixes(withdrawn_field)
            .map_err(|_| UpdateError::InvalidNetworkField { field: NetworkField::WithdrawnRoutes })?;

        let mut seen = [false; 256];
        let mut path_attributes = Vec::new();
        let mut a = Reader::new(attributes_field);
        while !a.is_empty() {
            let mut whole = a;
            let (Some(flags), Some(code)) = (a.u8(), a.u8()) else {
                return Err(list(AttributeHeaderTruncated));
            };
            let flags = AttributeFlags(flags);
            let (header_len, len) =
                if flags.is_extended_length() { (4, a.u16().map(usize::from)) } else { (3, a.u8().map(usize::from)) };
            let len = len.ok_or(list(AttributeHeaderTruncated))?;
            let value = a.take(len).ok_or(list(AttributeValueOverrun))?;
            let raw = whole.take(header_len + len).unwrap_or(value);
            let seen_before = seen.get_mut(usize::from(code)).map(|s| std::mem::replace(s, true));
            if seen_before == Some(true) {
                // RFC 7606 §3(g): a repeated MP_REACH/MP_UNREACH is fatal,
                // any other repeated attribute is discarded.
                if code == type_code::MP_REACH_NLRI || code == type_code::MP_UNREACH_NLRI {
                    return Err(list(DuplicateMpAttribute { type_code: code }));
                }
                continue;
            }
            path_attributes.push(PathAttribute::decode(flags, code, value, raw)?);
        }

        let nlri = decode_ipv4_prefixes(nlri_field)
            .map_err(|_| UpdateError::InvalidNetworkField { field: NetworkField::Nlri })?;

        let update = Self { withdrawn_routes, path_attributes, nlri };
        let has_nlri = !update.nlri.is_empty();
        if has_nlri || update.mp_reach().is_some() {
            let mut required = vec![type_code::ORIGIN, type_code::AS_PATH];
            if has_nlri {
                required.push(type_code::NEXT_HOP);
            }
            if let Some(&missing) = required.iter().find(|&&c| !seen.get(usize::from(c)).copied().unwrap_or(false)) {
                return Err(UpdateError::MissingWellKnownAttribute { type_code: missing });
            }
        }
        Ok(update)
    }
}

/// Which prefix field of an UPDATE failed to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkField {
    WithdrawnRoutes,
    Nlri,
}

/// Why an UPDATE's attribute list is malformed (RFC 4271 §6.3, RFC 7606 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttributeListFault {
    #[error("withdrawn routes length exceeds the message")]
    WithdrawnRoutesLength,
    #[error("total path attribute length exceeds the message")]
    TotalAttributeLength,
    #[error("fewer octets left than an attribute header")]
    AttributeHeaderTruncated,
    #[error("attribute length runs past the attribute list")]
    AttributeValueOverrun,
    #[error("attribute {type_code} appears more than once")]
    DuplicateMpAttribute { type_code: u8 },
}

/// What RFC 7606 says to do about a malformed UPDATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rfc7606Action {
    /// Send the NOTIFICATION and close the session (RFC 4271 behaviour).
    SessionReset,
    /// Stop using the AFI/SAFI of the MP attribute, or reset the session.
    AfiSafiDisable,
    /// Treat the UPDATE's routes as withdrawn; keep the session.
    TreatAsWithdraw,
    /// Drop the attribute and process the rest of the UPDATE.
    AttributeDiscard,
}

/// UPDATE Message Error (RFC 4271 §6.3), NOTIFICATION error code 3.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("malformed attribute list: {0}")]
    MalformedAttributeList(AttributeListFault),
    #[error("unrecognized well-known attribute type {type_code}")]
    UnrecognizedWellKnownAttribute { type_code: u8, attribute: Vec<u8> },
    #[error("missing well-known attribute type {type_code}")]
    MissingWellKnownAttribute { type_code: u8 },
    #[error("attribute flags error on type {type_code}")]
    AttributeFlagsError { type_code: u8, attribute: Vec<u8> },
    #[error("attribute length error on type {type_code}")]
    AttributeLengthError { type_code: u8, attribute: Vec<u8> },
    #[error("invalid ORIGIN attribute")]
    InvalidOriginAttribute { attribute: Vec<u8> },
    #[error("invalid NEXT_HOP attribute")]
    InvalidNextHopAttribute { attribute: Vec<u8> },
    #[error("optional attribute error on type {type_code}: {reason}")]
    OptionalAttributeError { type_code: u8, reason: &'static str, attribute: Vec<u8> },
    #[error("invalid network field ({field:?})")]
    InvalidNetworkField { field: NetworkField },
    #[error("malformed AS_PATH: {reason}")]
    MalformedAsPath { reason: &'static str },
}

impl UpdateError {
    pub const fn code(&self) -> u8 {
        error_code::UPDATE_MESSAGE_ERROR
    }

    pub const fn subcode(&self) -> u8 {
        match self {
            Self::MalformedAttributeList(_) => update_error::MALFORMED_ATTRIBUTE_LIST,
            Self::UnrecognizedWellKnownAttribute { .. } => update_error::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
            Self::MissingWellKnownAttribute { .. } => update_error::MISSING_WELL_KNOWN_ATTRIBUTE,
            Self::AttributeFlagsError { .. } => update_error::ATTRIBUTE_FLAGS_ERROR,
            Self::AttributeLengthError { .. } => update_error::ATTRIBUTE_LENGTH_ERROR,
            Self::InvalidOriginAttribute { .. } => update_error::INVALID_ORIGIN_ATTRIBUTE,
            Self::InvalidNextHopAttribute { .. } => update_error::INVALID_NEXT_HOP_ATTRIBUTE,
            Self::OptionalAttributeError { .. } => update_error::OPTIONAL_ATTRIBUTE_ERROR,
            Self::InvalidNetworkField { .. } => update_error::INVALID_NETWORK_FIELD,
            Self::MalformedAsPath { .. } => update_error::MALFORMED_AS_PATH,
        }
    }

    /// NOTIFICATION data (RFC 4271 §6.3): the erroneous attribute (flags,
    /// type, length, value) for attribute faults; the missing type code for
    /// a missing well-known attribute; otherwise empty.
    pub fn data(&self) -> Vec<u8> {
        match self {
            Self::UnrecognizedWellKnownAttribute { attribute, .. }
            | Self::AttributeFlagsError { attribute, .. }
            | Self::AttributeLengthError { attribute, .. }
            | Self::InvalidOriginAttribute { attribute }
            | Self::InvalidNextHopAttribute { attribute }
            | Self::OptionalAttributeError { attribute, .. } => attribute.clone(),
            Self::MissingWellKnownAttribute { type_code } => vec![*type_code],
            Self::MalformedAttributeList(_) | Self::InvalidNetworkField { .. } | Self::MalformedAsPath { .. } => {
                Vec::new()
            }
        }
    }

    /// The handling RFC 7606 prescribes for this fault (§3, §4, §5, §7).
    pub fn rfc7606_action(&self) -> Rfc7606Action {
        use Rfc7606Action::*;
        let is_mp = |c: u8| c == type_code::MP_REACH_NLRI || c == type_code::MP_UNREACH_NLRI;
        match self {
            Self::MalformedAttributeList(fault) => match fault {
                AttributeListFault::WithdrawnRoutesLength
                | AttributeListFault::TotalAttributeLength
                | AttributeListFault::DuplicateMpAttribute { .. } => SessionReset,
                // §4: the Total Attribute Length still locates the NLRI.
                AttributeListFault::AttributeHeaderTruncated | AttributeListFault::AttributeValueOverrun => {
                    TreatAsWithdraw
                }
            },
            Self::UnrecognizedWellKnownAttribute { .. } => SessionReset,
            Self::MissingWellKnownAttribute { .. } => TreatAsWithdraw,
            Self::AttributeFlagsError { type_code, .. }
            | Self::AttributeLengthError { type_code, .. }
            | Self::OptionalAttributeError { type_code, .. } => {
                if is_mp(*type_code) {
                    AfiSafiDisable
                } else if *type_code == type_code::ATOMIC_AGGREGATE {
                    AttributeDiscard
                } else {
                    TreatAsWithdraw
                }
            }
            Self::InvalidOriginAttribute { .. }
            | Self::InvalidNextHopAttribute { .. }
            | Self::MalformedAsPath { .. } => TreatAsWithdraw,
            Self::InvalidNetworkField { .. } => SessionReset,
        }
    }
}

/// The attribute set shared by the routes dnsbgpd announces. The next hop
/// is given per address family to the [`UpdateBuilder`] methods.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteAttributes {
    pub origin: Origin,
    pub as_path: AsPath,
    pub multi_exit_disc: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
}

impl RouteAttributes {
    /// The attributes in ascending type order (RFC 4271 §5), with NEXT_HOP
    /// and/or MP_REACH_NLRI, and empty community lists left out.
    pub fn to_path_attributes(&self, next_hop: Option<Ipv4Addr>, mp_reach: Option<MpReachNlri>) -> Vec<PathAttribute> {
        let mut v = vec![PathAttribute::Origin(self.origin), PathAttribute::AsPath(self.as_path.clone())];
        v.extend(next_hop.map(PathAttribute::NextHop));
        v.extend(self.multi_exit_disc.map(PathAttribute::MultiExitDisc));
        v.extend(self.local_pref.map(PathAttribute::LocalPref));
        if !self.communities.is_empty() {
            v.push(PathAttribute::Communities(self.communities.clone()));
        }
        v.extend(mp_reach.map(PathAttribute::MpReachNlri));
        if !self.large_communities.is_empty() {
            v.push(PathAttribute::LargeCommunities(self.large_communities.clone()));
        }
        v
    }
}

/// The shared attributes leave no room for even one prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error(
        "shared path attributes take {attributes_len} octets, leaving no room for a prefix in a {max_message_len}-octet UPDATE"
    )]
    AttributesTooLarge { attributes_len: usize, max_message_len: usize },
}

/// Packs prefixes into UPDATE messages of at most `max_message_len` octets
/// (4096, or 65535 with the Extended Message capability). Each method
/// returns an iterator that yields full messages lazily, in prefix order;
/// greedy in-order filling gives the fewest messages for that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateBuilder {
    max_message_len: usize,
}

/// Largest encoding of one prefix: /32 and /128 with their length octet.
const MAX_IPV4_PREFIX_LEN: usize = 5;
const MAX_IPV6_PREFIX_LEN: usize = 17;
/// MP_REACH_NLRI overhead: extended attribute header (4), AFI, SAFI, next
/// hop length, reserved (5); the next hop comes on top.
const MP_REACH_OVERHEAD: usize = 4 + 5;
/// MP_UNREACH_NLRI overhead: extended attribute header (4), AFI, SAFI (3).
const MP_UNREACH_OVERHEAD: usize = 4 + 3;

impl UpdateBuilder {
    /// `max_message_len` is clamped to 4096..=65535.
    pub fn new(max_message_len: usize) -> Self {
        Self { max_message_len: effective_max_len(max_message_len) }
    }

    pub fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    fn budget(&self, fixed: usize, largest_prefix: usize) -> Result<usize, BuildError> {
        let free = self.max_message_len.saturating_sub(MIN_UPDATE_LEN + fixed);
        if free < largest_prefix {
            return Err(BuildError::AttributesTooLarge {
                attributes_len: fixed,
                max_message_len: self.max_message_len,
            });
        }
        Ok(free)
    }

    /// IPv4 routes in the NLRI field with a NEXT_HOP attribute.
    pub fn announce_ipv4<I>(
        &self,
        attributes: &RouteAttributes,
        next_hop: Ipv4Addr,
        prefixes: I,
    ) -> Result<Ipv4Updates<I::IntoIter>, BuildError>
    where
        I: IntoIterator<Item = Ipv4Prefix>,
    {
        let attrs = attributes.to_path_attributes(Some(next_hop), None);
        let fixed = attrs.iter().map(PathAttribute::encoded_len).sum();
        Ok(Ipv4Updates {
            budget: self.budget(fixed, MAX_IPV4_PREFIX_LEN)?,
            attributes: Some(attrs),
            prefixes: prefixes.into_iter().peekable(),
        })
    }

    /// IPv4 routes in the Withdrawn Routes field.
    pub fn withdraw_ipv4<I>(&self, prefixes: I) -> Ipv4Updates<I::IntoIter>
    where
        I: IntoIterator<Item = Ipv4Prefix>,
    {
        Ipv4Updates {
            budget: self.max_message_len - MIN_UPDATE_LEN,
            attributes: None,
            prefixes: prefixes.into_iter().peekable(),
        }
    }

    /// IPv6 unicast routes in MP_REACH_NLRI with a 16-octet next hop, or 32
    /// octets when a link-local address is given too.
    pub fn announce_ipv6<I>(
        &self,
        attributes: &RouteAttributes,
        next_hop: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
        prefixes: I,
    ) -> Result<Ipv6Updates<I::IntoIter>, BuildError>
    where
        I: IntoIterator<Item = Ipv6Prefix>,
    {
        let template = MpReachNlri::ipv6_unicast(next_hop, link_local, Vec::new());
        let attrs = attributes.to_path_attributes(None, Some(template));
        let nh_len = if link_local.is_some() { 32 } else { 16 };
        let fixed = attrs
            .iter()
            .filter(|a| a.type_code() != type_code::MP_REACH_NLRI)
            .map(PathAttribute::encoded_len)
            .sum::<usize>()
            + MP_REACH_OVERHEAD
            + nh_len;
        Ok(Ipv6Updates {
            budget: self.budget(fixed, MAX_IPV6_PREFIX_LEN)?,
            attributes: Some(attrs),
            prefixes: prefixes.into_iter().peekable(),
        })
    }

    /// IPv6 unicast routes in MP_UNREACH_NLRI.
    pub fn withdraw_ipv6<I>(&self, prefixes: I) -> Ipv6Updates<I::IntoIter>
    where
        I: IntoIterator<Item = Ipv6Prefix>,
    {
        Ipv6Updates {
            budget: self.max_message_len - MIN_UPDATE_LEN - MP_UNREACH_OVERHEAD,
            attributes: None,
            prefixes: prefixes.into_iter().peekable(),
        }
    }
}

/// Takes prefixes while their encodings fit in `budget` octets.
fn take_batch<P, I: Iterator<Item = P>>(it: &mut Peekable<I>, budget: usize, size: impl Fn(&P) -> usize) -> Vec<P> {
    let mut used = 0;
    let mut batch = Vec::new();
    while let Some(p) = it.next_if(|p| used + size(p) <= budget) {
        used += size(&p);
        batch.push(p);
    }
    batch
}

/// UPDATEs for IPv4 announcements or withdrawals; see [`UpdateBuilder`].
#[derive(Debug)]
pub struct Ipv4Updates<I: Iterator<Item = Ipv4Prefix>> {
    prefixes: Peekable<I>,
    /// `None` for withdrawals.
    attributes: Option<Vec<PathAttribute>>,
    budget: usize,
}

impl<I: Iterator<Item = Ipv4Prefix>> Iterator for Ipv4Updates<I> {
    type Item = UpdateMessage;

    fn next(&mut self) -> Option<UpdateMessage> {
        let batch = take_batch(&mut self.prefixes, self.budget, Ipv4Prefix::encoded_len);
        if batch.is_empty() {
            return None;
        }
        Some(match &self.attributes {
            Some(attrs) => UpdateMessage { withdrawn_routes: Vec::new(), path_attributes: attrs.clone(), nlri: batch },
            None => UpdateMessage { withdrawn_routes: batch, ..UpdateMessage::default() },
        })
    }
}

/// UPDATEs for IPv6 announcements or withdrawals; see [`UpdateBuilder`].
#[derive(Debug)]
pub struct Ipv6Updates<I: Iterator<Item = Ipv6Prefix>> {
    prefixes: Peekable<I>,
    /// `None` for withdrawals; otherwise includes an MP_REACH_NLRI template
    /// whose NLRI each message fills.
    attributes: Option<Vec<PathAttribute>>,
    budget: usize,
}

impl<I: Iterator<Item = Ipv6Prefix>> Iterator for Ipv6Updates<I> {
    type Item = UpdateMessage;

    fn next(&mut self) -> Option<UpdateMessage> {
        let batch = take_batch(&mut self.prefixes, self.budget, Ipv6Prefix::encoded_len);
        if batch.is_empty() {
            return None;
        }
        let path_attributes = match &self.attributes {
            Some(attrs) => {
                let mut batch = Some(batch);
                attrs
                    .iter()
                    .map(|a| match a {
                        PathAttribute::MpReachNlri(m) => PathAttribute::MpReachNlri(MpReachNlri {
                            afi: m.afi,
                            safi: m.safi,
                            next_hop: m.next_hop.clone(),
                            nlri: MpNlri::Ipv6(batch.take().unwrap_or_default()),
                        }),
                        other => other.clone(),
                    })
                    .collect()
            }
            None => vec![PathAttribute::MpUnreachNlri(MpUnreachNlri::ipv6_unicast(batch))],
        };
        Some(UpdateMessage { path_attributes, ..UpdateMessage::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::super::attributes::LargeCommunity;
    use super::super::{DecodeError, Message, decode, encode};
    use super::*;
    use proptest::prelude::*;

    fn wire(body: &[u8]) -> Vec<u8> {
        let len = (19 + body.len()) as u16;
        [&[0xff; 16][..], &len.to_be_bytes(), &[2], body].concat()
    }

    fn enc(m: &UpdateMessage, max: usize) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode(&Message::Update(m.clone()), max, &mut b).unwrap();
        assert_eq!(b.len(), m.encoded_len());
        b.to_vec()
    }

    fn golden(m: UpdateMessage, expected: &[u8]) {
        assert_eq!(enc(&m, 4096), expected);
        assert_eq!(decode(expected, 4096).unwrap(), Some((Message::Update(m), expected.len())));
    }

    fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Prefix {
        Ipv4Prefix::new(Ipv4Addr::new(a, b, c, d), len).unwrap()
    }

    fn v6(s: &str) -> Ipv6Prefix {
        Ipv6Prefix::host(s.parse().unwrap())
    }

    #[test]
    fn golden_update_ipv4_announcement() {
        let expected = wire(&[
            0x00, 0x00, // withdrawn routes length 0
            0x00, 0x1b, // total path attribute length 27
            0x40, 0x01, 0x01, 0x00, // ORIGIN IGP
            0x40, 0x02, 0x06, 0x02, 0x01, 0x00, 0x00, 0xfd, 0xe9, // AS_PATH: SEQUENCE [65001]
            0x40, 0x03, 0x04, 0xc0, 0x00, 0x02, 0xfe, // NEXT_HOP 192.0.2.254
            0xc0, 0x08, 0x04, 0xfd, 0xe9, 0x00, 0x64, // COMMUNITIES 65001:100
            0x20, 0xc0, 0x00, 0x02, 0x01, // NLRI 192.0.2.1/32
            0x18, 0xc6, 0x33, 0x64, // NLRI 198.51.100.0/24
        ]);
        assert_eq!(&expected[16..19], &[0x00, 0x3b, 0x02]); // length 59, UPDATE
        let attrs = RouteAttributes {
            as_path: AsPath::sequence([65001]),
            communities: vec![Community::new(65001, 100)],
            ..Default::default()
        };
        let m = UpdateMessage {
            withdrawn_routes: vec![],
            path_attributes: attrs.to_path_attributes(Some(Ipv4Addr::new(192, 0, 2, 254)), None),
            nlri: vec![v4(192, 0, 2, 1, 32), v4(198, 51, 100, 0, 24)],
        };
        golden(m.clone(), &expected);
        let back = UpdateMessage::decode(&expected[19..]).unwrap();
        assert_eq!(back.origin(), Some(Origin::Igp));
        assert_eq!(back.as_path().map(|p| p.to_string()), Some("65001".into()));
        assert_eq!(back.next_hop(), Some(Ipv4Addr::new(192, 0, 2, 254)));
        assert_eq!(back.communities(), &[Community::new(65001, 100)]);
        assert_eq!(back.end_of_rib_family(), None);
    }

    #[test]
    fn golden_update_ipv4_withdrawal() {
        // Withdrawn routes length 2: 10.0.0.0/8 (0x08 0x0a); no attributes.
        let expected = wire(&[0x00, 0x02, 0x08, 0x0a, 0x00, 0x00]);
        assert_eq!(expected.len(), 25);
        golden(UpdateMessage { withdrawn_routes: vec![v4(10, 0, 0, 0, 8)], ..Default::default() }, &expected);
    }

    #[test]
    fn golden_end_of_rib_markers() {
        // IPv4 unicast: withdrawn length 0, attribute length 0: 23 octets.
        let v4_eor = wire(&[0x00, 0x00, 0x00, 0x00]);
        assert_eq!(&v4_eor[16..18], &[0x00, 0x17]);
        let m = UpdateMessage::end_of_rib(Afi::IPV4, Safi::UNICAST);
        golden(m.clone(), &v4_eor);
        assert_eq!(m.end_of_rib_family(), Some((Afi::IPV4, Safi::UNICAST)));
        // IPv6 unicast: attribute length 6: MP_UNREACH_NLRI (0x80, 15, len 3,
        // AFI 2, SAFI 1) and nothing withdrawn: 29 octets.
        let v6_eor = wire(&[0x00, 0x00, 0x00, 0x06, 0x80, 0x0f, 0x03, 0x00, 0x02, 0x01]);
        assert_eq!(&v6_eor[16..18], &[0x00, 0x1d]);
        let m = UpdateMessage::end_of_rib(Afi::IPV6, Safi::UNICAST);
        golden(m.clone(), &v6_eor);
        assert_eq!(m.end_of_rib_family(), Some((Afi::IPV6, Safi::UNICAST)));
    }

    #[test]
    fn golden_update_ipv6_announcement_and_withdrawal() {
        let nh = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]; // 2001:db8::1
        let pfx = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53]; // 2001:db8::53
        let expected = wire(
            &[
                &[0x00, 0x00][..],                           // no withdrawn IPv4 routes
                &[0x00, 0x37],                               // attribute length 55
                &[0x40, 0x01, 0x01, 0x00],                   // ORIGIN IGP
                &[0x40, 0x02, 0x00],                         // empty AS_PATH (iBGP)
                &[0x40, 0x05, 0x04, 0x00, 0x00, 0x00, 0x64], // LOCAL_PREF 100
                // MP_REACH_NLRI length 38: AFI 2, SAFI 1, next hop length 16,
                // 2001:db8::1, reserved, NLRI /128 (0x80) 2001:db8::53.
                &[0x80, 0x0e, 0x26, 0x00, 0x02, 0x01, 0x10],
                &nh,
                &[0x00, 0x80],
                &pfx,
            ]
            .concat(),
        );
        assert_eq!(expected.len(), 78);
        let attrs = RouteAttributes { local_pref: Some(100), ..Default::default() };
        let mut msgs: Vec<_> = UpdateBuilder::new(4096)
            .announce_ipv6(&attrs, "2001:db8::1".parse().unwrap(), None, [v6("2001:db8::53")])
            .unwrap()
            .collect();
        assert_eq!(msgs.len(), 1);
        let m = msgs.remove(0);
        golden(m.clone(), &expected);
        assert_eq!(m.mp_reach().map(|r| &r.nlri), Some(&MpNlri::Ipv6(vec![v6("2001:db8::53")])));

        // Withdrawal: MP_UNREACH_NLRI length 20: AFI 2, SAFI 1, /128 prefix.
        let expected = wire(&[&[0x00, 0x00, 0x00, 0x17, 0x80, 0x0f, 0x14, 0x00, 0x02, 0x01, 0x80][..], &pfx].concat());
        assert_eq!(expected.len(), 46);
        let msgs: Vec<_> = UpdateBuilder::new(4096).withdraw_ipv6([v6("2001:db8::53")]).collect();
        assert_eq!(msgs.len(), 1);
        golden(msgs[0].clone(), &expected);
    }

    fn update_err(body: &[u8]) -> DecodeError {
        let w = wire(body);
        let e = decode(&w, 4096).unwrap_err();
        assert!(e.is_update_error());
        assert_eq!(e.message_len(), Some(w.len()));
        e
    }

    // ORIGIN IGP, AS_PATH [65001], NEXT_HOP 192.0.2.254: 20 octets.
    const BASE_ATTRS: [u8; 20] = [
        0x40, 0x01, 0x01, 0x00, //
        0x40, 0x02, 0x06, 0x02, 0x01, 0x00, 0x00, 0xfd, 0xe9, //
        0x40, 0x03, 0x04, 0xc0, 0x00, 0x02, 0xfe,
    ];

    fn body(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
        [&(withdrawn.len() as u16).to_be_bytes()[..], withdrawn, &(attrs.len() as u16).to_be_bytes(), attrs, nlri]
            .concat()
    }

    #[test]
    fn update_faults_map_to_rfc4271_subcodes() {
        let host = [0x20, 192, 0, 2, 1];
        // Sanity: the base message decodes.
        assert!(decode(&wire(&body(&[], &BASE_ATTRS, &host)), 4096).unwrap().is_some());

        // Malformed Attribute List (1): withdrawn length past the end; total
        // attribute length past the end; truncated attribute header;
        // attribute value overrun; MP_UNREACH twice.
        let mp_unreach = [0x80, 0x0f, 0x03, 0x00, 0x02, 0x01];
        for (b, action) in [
            (vec![0x00, 0x05, 0x00, 0x00], Rfc7606Action::SessionReset),
            (vec![0x00, 0x00, 0x00, 0x10, 0x40], Rfc7606Action::SessionReset),
            (body(&[], &[0x40, 0x01], &[]), Rfc7606Action::TreatAsWithdraw),
            (body(&[], &[0x40, 0x01, 0x05, 0x00], &[]), Rfc7606Action::TreatAsWithdraw),
            (body(&[], &[mp_unreach, mp_unreach].concat(), &[]), Rfc7606Action::SessionReset),
        ] {
            let e = update_err(&b);
            assert_eq!((e.code(), e.subcode(), e.data()), (3, 1, vec![]), "{b:?}");
            let DecodeError::Update { error, .. } = e else { unreachable!() };
            assert_eq!(error.rfc7606_action(), action);
        }

        // Missing Well-known Attribute (3), data = the type code: NLRI
        // without NEXT_HOP; without ORIGIN; MP_REACH without AS_PATH.
        let e = update_err(&body(&[], &BASE_ATTRS[..13], &host));
        assert_eq!((e.code(), e.subcode(), e.data()), (3, 3, vec![3]));
        let e = update_err(&body(&[], &BASE_ATTRS[4..], &host));
        assert_eq!((e.subcode(), e.data()), (3, vec![1]));
        let mp_reach = [
            &[0x80, 0x0e, 0x15, 0x00, 0x02, 0x01, 0x10][..],
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01],
            &[0x00],
        ]
        .concat();
        let e = update_err(&body(&[], &[&BASE_ATTRS[..4], &mp_reach].concat(), &[]));
        assert_eq!((e.subcode(), e.data()), (3, vec![2]));
        // Only withdrawals and attributes, no NLRI: nothing is required.
        assert!(decode(&wire(&body(&[], &BASE_ATTRS[13..], &[])), 4096).unwrap().is_some());

        // Invalid Network Field (10): NLRI /33; NLRI overrun; withdrawn /40.
        for b in [
            body(&[], &BASE_ATTRS, &[33, 1, 2, 3, 4, 5]),
            body(&[], &BASE_ATTRS, &[32, 1, 2]),
            body(&[40, 1, 2, 3, 4, 5], &[], &[]),
        ] {
            let e = update_err(&b);
            assert_eq!((e.code(), e.subcode(), e.data()), (3, 10, vec![]));
        }

        // Attribute-level faults surface with the whole attribute as data.
        let bad_origin = [0x40, 0x01, 0x01, 0x07];
        let e = update_err(&body(&[], &[&bad_origin[..], &BASE_ATTRS[4..]].concat(), &host));
        assert_eq!((e.code(), e.subcode(), e.data()), (3, 6, bad_origin.to_vec()));
        let bad_nh = [0x40, 0x03, 0x04, 0, 0, 0, 0];
        let e = update_err(&body(&[], &[&BASE_ATTRS[..13], &bad_nh[..]].concat(), &host));
        assert_eq!((e.code(), e.subcode(), e.data()), (3, 8, bad_nh.to_vec()));
        let bad_path = [0x40, 0x02, 0x02, 0x02, 0x00];
        let e = update_err(&body(&[], &[&BASE_ATTRS[..4], &bad_path[..], &BASE_ATTRS[13..]].concat(), &host));
        assert_eq!((e.code(), e.subcode()), (3, 11));
    }

    #[test]
    fn repeated_attribute_keeps_the_first() {
        // ORIGIN IGP, then ORIGIN INCOMPLETE again: RFC 7606 §3(g) discards
        // the repeat.
        let attrs = [&BASE_ATTRS[..], &[0x40, 0x01, 0x01, 0x02]].concat();
        let Some((Message::Update(m), _)) = decode(&wire(&body(&[], &attrs, &[])), 4096).unwrap() else { panic!() };
        assert_eq!(m.origin(), Some(Origin::Igp));
        assert_eq!(m.path_attributes.len(), 3);
    }

    #[test]
    fn header_error_is_not_an_update_error() {
        let mut w = wire(&body(&[], &[], &[]));
        w[0] = 0;
        let e = decode(&w, 4096).unwrap_err();
        assert!(!e.is_update_error());
        assert_eq!(e.message_len(), None);
        assert_eq!((e.code(), e.subcode()), (1, 1));
    }

    fn two_communities() -> RouteAttributes {
        RouteAttributes {
            origin: Origin::Igp,
            as_path: AsPath::sequence([65001]),
            communities: vec![Community::new(65001, 53), Community::NO_EXPORT],
            ..Default::default()
        }
    }

    fn hosts_v4(n: u32) -> impl Iterator<Item = Ipv4Prefix> {
        (0..n).map(|i| Ipv4Prefix::host(Ipv4Addr::from(0x0a00_0000 + i)))
    }

    fn check_packing(max: usize, n: u32) -> Vec<Vec<u8>> {
        let attrs = two_communities();
        let builder = UpdateBuilder::new(max);
        let msgs: Vec<UpdateMessage> =
            builder.announce_ipv4(&attrs, Ipv4Addr::new(192, 0, 2, 254), hosts_v4(n)).unwrap().collect();
        // ORIGIN 4 + AS_PATH 9 + NEXT_HOP 7 + COMMUNITIES 11 = 31 octets.
        let attrs_len = 31;
        let per_message = (max - 23 - attrs_len) / 5;
        assert_eq!(msgs.len(), (n as usize).div_ceil(per_message));
        let mut wires = Vec::new();
        let mut back = Vec::new();
        for m in &msgs {
            let w = enc(m, max);
            assert!(w.len() <= max);
            let Some((Message::Update(d), used)) = decode(&w, max).unwrap() else { panic!() };
            assert_eq!(used, w.len());
            back.extend(d.nlri);
            wires.push(w);
        }
        assert!(back.iter().copied().eq(hosts_v4(n)));
        wires
    }

    #[test]
    fn packing_100k_host_routes_in_4096_octet_updates() {
        let wires = check_packing(4096, 100_000);
        // ceil(100000 * 5 / 4000) = 125 with ~4000 usable octets; the real
        // budget is 4096 - 23 - 31 = 4042 octets = 808 prefixes: 124 messages.
        assert!(wires.len() <= 125);
        assert_eq!(wires.len(), 124);
        let total: usize = wires.iter().map(Vec::len).sum();
        eprintln!("4096: {} messages, {} octets, {:.3} octets per /32", wires.len(), total, total as f64 / 100_000.0);
    }

    #[test]
    fn packing_100k_host_routes_in_extended_updates() {
        let wires = check_packing(65535, 100_000);
        // (65535 - 54) / 5 = 13096 prefixes per message: 8 messages.
        assert_eq!(wires.len(), 8);
        assert!(wires.iter().all(|w| w.len() <= 65535));
        let total: usize = wires.iter().map(Vec::len).sum();
        eprintln!("65535: {} messages, {} octets, {:.3} octets per /32", wires.len(), total, total as f64 / 100_000.0);
    }

    #[test]
    fn packing_ipv6_and_withdrawals() {
        let attrs = two_communities();
        let hosts: Vec<Ipv6Prefix> =
            (0..10_000u128).map(|i| Ipv6Prefix::host((0x2001_0db8_u128 << 96 | i).into())).collect();
        for (max, link_local) in [(4096, None), (4096, Some("fe80::1".parse().unwrap())), (65535, None)] {
            let msgs: Vec<_> = UpdateBuilder::new(max)
                .announce_ipv6(&attrs, "2001:db8::1".parse().unwrap(), link_local, hosts.iter().copied())
                .unwrap()
                .collect();
            // ORIGIN 4 + AS_PATH 9 + COMMUNITIES 11 + MP_REACH header 4 + 5 +
            // next hop: prefixes fill the rest, 17 octets each.
            let nh = if link_local.is_some() { 32 } else { 16 };
            let per = (max - 23 - 24 - 9 - nh) / 17;
            assert_eq!(msgs.len(), hosts.len().div_ceil(per), "max {max}");
            let mut back = Vec::new();
            for m in &msgs {
                let w = enc(m, max);
                assert!(w.len() <= max);
                let Some((Message::Update(d), _)) = decode(&w, max).unwrap() else { panic!() };
                let Some(MpNlri::Ipv6(p)) = d.mp_reach().map(|r| r.nlri.clone()) else { panic!() };
                back.extend(p);
            }
            assert_eq!(back, hosts);

            let msgs: Vec<_> = UpdateBuilder::new(max).withdraw_ipv6(hosts.iter().copied()).collect();
            assert_eq!(msgs.len(), hosts.len().div_ceil((max - 23 - 7) / 17));
            let back: Vec<Ipv6Prefix> = msgs
                .iter()
                .flat_map(|m| {
                    let w = enc(m, max);
                    assert!(w.len() <= max);
                    match decode(&w, max).unwrap() {
                        Some((Message::Update(d), _)) => match d.mp_unreach().map(|u| u.withdrawn.clone()) {
                            Some(MpNlri::Ipv6(p)) => p,
                            _ => panic!(),
                        },
                        _ => panic!(),
                    }
                })
                .collect();
            assert_eq!(back, hosts);
        }
        let msgs: Vec<_> = UpdateBuilder::new(4096).withdraw_ipv4(hosts_v4(100_000)).collect();
        assert_eq!(msgs.len(), 100_000usize.div_ceil((4096 - 23) / 5));
        assert!(msgs.iter().all(|m| m.encoded_len() <= 4096 && m.path_attributes.is_empty()));
        assert_eq!(UpdateBuilder::new(4096).withdraw_ipv4(std::iter::empty()).count(), 0);
    }

    #[test]
    fn oversized_attribute_set_is_a_build_error() {
        let attrs = RouteAttributes { communities: (0..1100).map(Community).collect(), ..Default::default() };
        let Err(e) = UpdateBuilder::new(4096).announce_ipv4(&attrs, Ipv4Addr::new(192, 0, 2, 1), hosts_v4(1)) else {
            panic!("1100 communities cannot fit in 4096 octets");
        };
        assert!(matches!(e, BuildError::AttributesTooLarge { max_message_len: 4096, .. }));
        // 1100 communities fit with extended messages, with the Extended
        // Length flag on COMMUNITIES.
        let msgs: Vec<_> = UpdateBuilder::new(65535)
            .announce_ipv4(&attrs, Ipv4Addr::new(192, 0, 2, 1), hosts_v4(10))
            .unwrap()
            .collect();
        let w = enc(&msgs[0], 65535);
        assert!(w.len() > 4096);
        assert_eq!(decode(&w, 65535).unwrap(), Some((Message::Update(msgs[0].clone()), w.len())));
        // Encoding that message under a 4096 limit fails and writes nothing.
        let mut b = BytesMut::from(&b"keep"[..]);
        assert!(matches!(
            encode(&Message::Update(msgs[0].clone()), 4096, &mut b),
            Err(super::super::EncodeError::MessageTooLong { .. })
        ));
        assert_eq!(&b[..], b"keep");
        // Decoding it with a 4096 limit is a Bad Message Length.
        let e = decode(&w, 4096).unwrap_err();
        assert_eq!((e.code(), e.subcode()), (1, 2));
    }

    fn attrs_strategy() -> impl Strategy<Value = RouteAttributes> {
        (
            prop_oneof![Just(Origin::Igp), Just(Origin::Egp), Just(Origin::Incomplete)],
            proptest::collection::vec(any::<u32>(), 0..6),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            proptest::collection::vec(any::<u32>().prop_map(Community), 0..12),
            proptest::collection::vec(
                (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(a, b, c)| LargeCommunity::new(a, b, c)),
                0..4,
            ),
        )
            .prop_map(|(origin, path, med, lp, communities, large_communities)| RouteAttributes {
                origin,
                as_path: AsPath::sequence(path),
                multi_exit_disc: med,
                local_pref: lp,
                communities,
                large_communities,
            })
    }

    fn v4_strategy() -> impl Strategy<Value = Ipv4Prefix> {
        prop_oneof![
            4 => any::<u32>().prop_map(|a| Ipv4Prefix::host(Ipv4Addr::from(a))),
            1 => (any::<u32>(), 0u8..=32).prop_map(|(a, l)| Ipv4Prefix::new(Ipv4Addr::from(a), l).unwrap()),
        ]
    }

    fn v6_strategy() -> impl Strategy<Value = Ipv6Prefix> {
        prop_oneof![
            4 => any::<u128>().prop_map(|a| Ipv6Prefix::host(a.into())),
            1 => (any::<u128>(), 0u8..=128).prop_map(|(a, l)| Ipv6Prefix::new(a.into(), l).unwrap()),
        ]
    }

    proptest! {
        #[test]
        fn update_round_trip(
            attrs in attrs_strategy(),
            nh in 1u32..0xe000_0000,
            v4_nlri in proptest::collection::vec(v4_strategy(), 0..60),
            v4_withdrawn in proptest::collection::vec(v4_strategy(), 0..20),
            v6_nlri in proptest::collection::vec(v6_strategy(), 0..60),
            v6_withdrawn in proptest::collection::vec(v6_strategy(), 0..20),
            link_local in proptest::option::of(any::<u128>()),
        ) {
            let mp_reach = (!v6_nlri.is_empty()).then(|| {
                MpReachNlri::ipv6_unicast("2001:db8::1".parse().unwrap(), link_local.map(Into::into), v6_nlri.clone())
            });
            let mut path_attributes = attrs.to_path_attributes(Some(Ipv4Addr::from(nh)), mp_reach);
            if !v6_withdrawn.is_empty() {
                path_attributes.push(PathAttribute::MpUnreachNlri(MpUnreachNlri::ipv6_unicast(v6_withdrawn)));
            }
            let m = UpdateMessage { withdrawn_routes: v4_withdrawn, path_attributes, nlri: v4_nlri };
            let w = enc(&m, 65535);
            prop_assert_eq!(decode(&w, 65535).unwrap(), Some((Message::Update(m), w.len())));
        }

        #[test]
        fn builder_packs_everything_within_the_limit(
            attrs in attrs_strategy(),
            v4 in proptest::collection::vec(v4_strategy(), 0..3000),
            v6 in proptest::collection::vec(v6_strategy(), 0..1000),
            extended: bool,
        ) {
            let max = if extended { 65535 } else { 4096 };
            let b = UpdateBuilder::new(max);
            let mut got4 = Vec::new();
            for m in b.announce_ipv4(&attrs, Ipv4Addr::new(192, 0, 2, 1), v4.iter().copied()).unwrap() {
                let w = enc(&m, max);
                prop_assert!(w.len() <= max);
                let Some((Message::Update(d), _)) = decode(&w, max).unwrap() else { panic!() };
                got4.extend(d.nlri);
            }
            prop_assert_eq!(&got4, &v4);
            let mut got6 = Vec::new();
            for m in b.announce_ipv6(&attrs, "2001:db8::1".parse().unwrap(), None, v6.iter().copied()).unwrap() {
                let w = enc(&m, max);
                prop_assert!(w.len() <= max);
                let Some((Message::Update(d), _)) = decode(&w, max).unwrap() else { panic!() };
                if let Some(MpNlri::Ipv6(p)) = d.mp_reach().map(|r| r.nlri.clone()) { got6.extend(p) }
            }
            prop_assert_eq!(&got6, &v6);
        }
    }
}

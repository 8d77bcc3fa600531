//! Path attributes of an UPDATE (RFC 4271 §4.3, §5): ORIGIN, AS_PATH with
//! 4-octet AS numbers (RFC 6793), NEXT_HOP, MULTI_EXIT_DISC, LOCAL_PREF,
//! ATOMIC_AGGREGATE, COMMUNITIES (RFC 1997), LARGE_COMMUNITIES (RFC 8092),
//! MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760); any other attribute is kept
//! raw as (flags, type, value).
//!
//! Encoding sets the Extended Length flag exactly when a value exceeds 255
//! octets. Decoding checks flags, lengths and values and reports the RFC
//! 4271 §6.3 fault for each (see [`UpdateError`]).
//!
//! AS numbers are always 4 octets: dnsbgpd advertises the 4-octet AS
//! capability and only talks to peers that do too (bird, GoBGP, FRR), so
//! the 2-octet AS_PATH / AS4_PATH reconstruction of RFC 6793 §4.2 is not
//! implemented; AS4_PATH and AGGREGATOR are kept raw.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, Bytes, BytesMut};

use super::error::EncodeError;
use super::prefix::{Afi, Ipv4Prefix, Ipv6Prefix, Safi, decode_ipv4_prefixes, decode_ipv6_prefixes};
use super::reader::Reader;
use super::update::UpdateError;

/// Attribute type codes (IANA "BGP Path Attributes").
pub mod type_code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITIES: u8 = 32;
}

/// The Attribute Flags octet (RFC 4271 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AttributeFlags(pub u8);

impl AttributeFlags {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;

    /// Flags of a well-known attribute.
    pub const WELL_KNOWN: AttributeFlags = AttributeFlags(Self::TRANSITIVE);
    /// Flags of an optional non-transitive attribute.
    pub const OPTIONAL_NON_TRANSITIVE: AttributeFlags = AttributeFlags(Self::OPTIONAL);
    /// Flags of an optional transitive attribute.
    pub const OPTIONAL_TRANSITIVE: AttributeFlags = AttributeFlags(Self::OPTIONAL | Self::TRANSITIVE);

    pub const fn is_optional(self) -> bool {
        self.0 & Self::OPTIONAL != 0
    }
    pub const fn is_transitive(self) -> bool {
        self.0 & Self::TRANSITIVE != 0
    }
    pub const fn is_partial(self) -> bool {
        self.0 & Self::PARTIAL != 0
    }
    pub const fn is_extended_length(self) -> bool {
        self.0 & Self::EXTENDED_LENGTH != 0
    }
}

/// ORIGIN values (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Origin {
    #[default]
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// AS_PATH segment types (RFC 4271 §4.3, RFC 5065 for confederations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AsSegmentType {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

impl AsSegmentType {
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Set,
            2 => Self::Sequence,
            3 => Self::ConfedSequence,
            4 => Self::ConfedSet,
            _ => return None,
        })
    }
}

/// One AS_PATH segment. On encoding, a segment of more than 255 AS numbers
/// is written as several segments of the same type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsPathSegment {
    pub segment_type: AsSegmentType,
    pub asns: Vec<u32>,
}

/// AS_PATH with 4-octet AS numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    pub segments: Vec<AsPathSegment>,
}

impl AsPath {
    /// The empty path (a route originated inside the AS, sent over iBGP).
    pub fn empty() -> Self {
        Self::default()
    }

    /// One AS_SEQUENCE; an empty iterator gives the empty path.
    pub fn sequence(asns: impl IntoIterator<Item = u32>) -> Self {
        let asns: Vec<u32> = asns.into_iter().collect();
        if asns.is_empty() {
            return Self::empty();
        }
        Self { segments: vec![AsPathSegment { segment_type: AsSegmentType::Sequence, asns }] }
    }

    /// Path length for route selection (RFC 4271 §9.1.2.2): each AS in a
    /// sequence counts 1, each set counts 1, confederation segments 0.
    pub fn path_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.segment_type {
                AsSegmentType::Sequence => s.asns.len(),
                AsSegmentType::Set => 1,
                AsSegmentType::ConfedSequence | AsSegmentType::ConfedSet => 0,
            })
            .sum()
    }

    /// The first AS of the path (the neighbouring AS), if it starts with a
    /// sequence.
    pub fn first_as(&self) -> Option<u32> {
        let first = self.segments.first()?;
        (first.segment_type == AsSegmentType::Sequence).then(|| first.asns.first().copied()).flatten()
    }

    fn value_len(&self) -> usize {
        self.segments.iter().map(|s| s.asns.len().div_ceil(255) * 2 + s.asns.len() * 4).sum()
    }

    fn encode_value(&self, dst: &mut BytesMut) {
        for s in &self.segments {
            for chunk in s.asns.chunks(255) {
                dst.put_u8(s.segment_type as u8);
                dst.put_u8(chunk.len() as u8);
                for asn in chunk {
                    dst.put_u32(*asn);
                }
            }
        }
    }

    /// RFC 7606 §7.2: unknown segment type, zero-length segment, overrun, or
    /// a lone trailing octet are all "Malformed AS_PATH".
    fn decode_value(value: &[u8]) -> Result<Self, UpdateError> {
        let malformed = |reason| UpdateError::MalformedAsPath { reason };
        let mut r = Reader::new(value);
        let mut segments = Vec::new();
        while !r.is_empty() {
            let (Some(t), Some(n)) = (r.u8(), r.u8()) else {
                return Err(malformed("segment header truncated"));
            };
            let segment_type = AsSegmentType::from_u8(t).ok_or(malformed("unknown segment type"))?;
            if n == 0 {
                return Err(malformed("zero-length segment"));
            }
            let bytes = r.take(usize::from(n) * 4).ok_or(malformed("segment overruns the attribute"))?;
            let mut a = Reader::new(bytes);
            let mut asns = Vec::with_capacity(usize::from(n));
            while let Some(asn) = a.u32() {
                asns.push(asn);
            }
            segments.push(AsPathSegment { segment_type, asns });
        }
        Ok(Self { segments })
    }
}

impl fmt::Display for AsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let (open, close) = match s.segment_type {
                AsSegmentType::Sequence => ("", ""),
                AsSegmentType::Set => ("{", "}"),
                AsSegmentType::ConfedSequence => ("(", ")"),
                AsSegmentType::ConfedSet => ("[", "]"),
            };
            f.write_str(open)?;
            for (j, asn) in s.asns.iter().enumerate() {
                if j > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{asn}")?;
            }
            f.write_str(close)?;
        }
        Ok(())
    }
}

/// A COMMUNITIES value (RFC 1997): AS number in the high 16 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    pub const NO_EXPORT: Community = Community(0xffff_ff01);
    pub const NO_ADVERTISE: Community = Community(0xffff_ff02);
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xffff_ff03);
    /// RFC 3765.
    pub const NOPEER: Community = Community(0xffff_ff04);
    /// RFC 8326.
    pub const GRACEFUL_SHUTDOWN: Community = Community(0xffff_0000);
    /// RFC 7999.
    pub const BLACKHOLE: Community = Community(0xffff_029a);

    pub const fn new(asn: u16, value: u16) -> Self {
        Self(((asn as u32) << 16) | value as u32)
    }
    pub const fn asn(self) -> u16 {
        (self.0 >> 16) as u16
    }
    pub const fn value(self) -> u16 {
        self.0 as u16
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.asn(), self.value())
    }
}

/// A LARGE_COMMUNITIES value (RFC 8092).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    pub global_administrator: u32,
    pub local_data_1: u32,
    pub local_data_2: u32,
}

impl LargeCommunity {
    pub const fn new(global_administrator: u32, local_data_1: u32, local_data_2: u32) -> Self {
        Self { global_administrator, local_data_1, local_data_2 }
    }
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.global_administrator, self.local_data_1, self.local_data_2)
    }
}

/// Next hop in MP_REACH_NLRI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MpNextHop {
    /// 4 octets, for AFI 1.
    Ipv4(Ipv4Addr),
    /// 16 octets (global), or 32 (global followed by link-local), RFC 2545.
    Ipv6 { global: Ipv6Addr, link_local: Option<Ipv6Addr> },
    /// Next hop of an address family this crate does not parse.
    Other(Bytes),
}

impl MpNextHop {
    fn len(&self) -> usize {
        match self {
            Self::Ipv4(_) => 4,
            Self::Ipv6 { link_local, .. } => {
                if link_local.is_some() {
                    32
                } else {
                    16
                }
            }
            Self::Other(b) => b.len(),
        }
    }

    fn encode(&self, dst: &mut BytesMut) {
        match self {
            Self::Ipv4(a) => dst.put_slice(&a.octets()),
            Self::Ipv6 { global, link_local } => {
                dst.put_slice(&global.octets());
                if let Some(ll) = link_local {
                    dst.put_slice(&ll.octets());
                }
            }
            Self::Other(b) => dst.put_slice(b),
        }
    }
}

/// The NLRI of MP_REACH_NLRI, or withdrawn routes of MP_UNREACH_NLRI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MpNlri {
    Ipv4(Vec<Ipv4Prefix>),
    Ipv6(Vec<Ipv6Prefix>),
    /// Prefixes of an address family this crate does not parse, raw.
    Other(Bytes),
}

impl MpNlri {
    fn len(&self) -> usize {
        match self {
            Self::Ipv4(p) => p.iter().map(Ipv4Prefix::encoded_len).sum(),
            Self::Ipv6(p) => p.iter().map(Ipv6Prefix::encoded_len).sum(),
            Self::Other(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Self::Ipv4(p) => p.is_empty(),
            Self::Ipv6(p) => p.is_empty(),
            Self::Other(b) => b.is_empty(),
        }
    }

    fn encode(&self, dst: &mut BytesMut) {
        match self {
            Self::Ipv4(p) => p.iter().for_each(|p| p.encode(dst)),
            Self::Ipv6(p) => p.iter().for_each(|p| p.encode(dst)),
            Self::Other(b) => dst.put_slice(b),
        }
    }

    /// Parses the prefixes of IPv4/IPv6 unicast and multicast; keeps any
    /// other family raw.
    fn decode(afi: Afi, safi: Safi, field: &[u8]) -> Result<Self, &'static str> {
        let parsed_safi = safi == Safi::UNICAST || safi == Safi::MULTICAST;
        Ok(match afi {
            Afi::IPV4 if parsed_safi => Self::Ipv4(decode_ipv4_prefixes(field).map_err(|_| "invalid IPv4 prefix")?),
            Afi::IPV6 if parsed_safi => Self::Ipv6(decode_ipv6_prefixes(field).map_err(|_| "invalid IPv6 prefix")?),
            _ => Self::Other(Bytes::copy_from_slice(field)),
        })
    }
}

fn parsed_family(afi: Afi, safi: Safi) -> bool {
    (afi == Afi::IPV4 || afi == Afi::IPV6) && (safi == Safi::UNICAST || safi == Safi::MULTICAST)
}

/// MP_REACH_NLRI (RFC 4760 §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpReachNlri {
    pub afi: Afi,
    pub safi: Safi,
    pub next_hop: MpNextHop,
    pub nlri: MpNlri,
}

impl MpReachNlri {
    /// IPv6 unicast routes via a global (and optional link-local) next hop.
    pub fn ipv6_unicast(global: Ipv6Addr, link_local: Option<Ipv6Addr>, prefixes: Vec<Ipv6Prefix>) -> Self {
        Self {
            afi: Afi::IPV6,
            safi: Safi::UNICAST,
            next_hop: MpNextHop::Ipv6 { global, link_local },
            nlri: MpNlri::Ipv6(prefixes),
        }
    }

    /// IPv4 unicast routes carried in MP_REACH_NLRI with a 4-octet next hop.
    pub fn ipv4_unicast(next_hop: Ipv4Addr, prefixes: Vec<Ipv4Prefix>) -> Self {
        Self { afi: Afi::IPV4, safi: Safi::UNICAST, next_hop: MpNextHop::Ipv4(next_hop), nlri: MpNlri::Ipv4(prefixes) }
    }

    fn value_len(&self) -> usize {
        // AFI, SAFI, next hop length, next hop, reserved, NLRI.
        2 + 1 + 1 + self.next_hop.len() + 1 + self.nlri.len()
    }

    fn decode_value(value: &[u8]) -> Result<Self, &'static str> {
        let mut r = Reader::new(value);
        let (Some(afi), Some(safi), Some(nh_len)) = (r.u16(), r.u8(), r.u8()) else {
            return Err("shorter than AFI, SAFI and next hop length");
        };
        let (afi, safi) = (Afi(afi), Safi(safi));
        let nh = r.take(usize::from(nh_len)).ok_or("next hop overruns the attribute")?;
        let _reserved = r.u8().ok_or("reserved octet missing")?;
        let next_hop = if parsed_family(afi, safi) {
            let mut n = Reader::new(nh);
            match (nh_len, afi) {
                (4, Afi::IPV4) => MpNextHop::Ipv4(Ipv4Addr::from(n.array::<4>().ok_or("next hop")?)),
                (16 | 32, _) => {
                    let global = Ipv6Addr::from(n.array::<16>().ok_or("next hop")?);
                    let link_local = n.array::<16>().map(Ipv6Addr::from);
                    MpNextHop::Ipv6 { global, link_local }
                }
                _ => return Err("next hop length invalid for the address family"),
            }
        } else {
            MpNextHop::Other(Bytes::copy_from_slice(nh))
        };
        let nlri = MpNlri::decode(afi, safi, r.rest())?;
        Ok(Self { afi, safi, next_hop, nlri })
    }
}

/// MP_UNREACH_NLRI (RFC 4760 §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpUnreachNlri {
    pub afi: Afi,
    pub safi: Safi,
    pub withdrawn: MpNlri,
}

impl MpUnreachNlri {
    pub fn ipv6_unicast(prefixes: Vec<Ipv6Prefix>) -> Self {
        Self { afi: Afi::IPV6, safi: Safi::UNICAST, withdrawn: MpNlri::Ipv6(prefixes) }
    }

    fn value_len(&self) -> usize {
        3 + self.withdrawn.len()
    }

    fn decode_value(value: &[u8]) -> Result<Self, &'static str> {
        let mut r = Reader::new(value);
        let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
            return Err("shorter than AFI and SAFI");
        };
        let (afi, safi) = (Afi(afi), Safi(safi));
        Ok(Self { afi, safi, withdrawn: MpNlri::decode(afi, safi, r.rest())? })
    }
}

/// An attribute kept as received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    /// Flags as received without the Extended Length bit, which belongs
    /// to the encoding (recomputed from the value's length when encoding),
    /// so that a decoded attribute re-encodes and decodes to itself.
    pub flags: AttributeFlags,
    pub type_code: u8,
    pub value: Bytes,
}

/// A path attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathAttribute {
    Origin(Origin),
    AsPath(AsPath),
    NextHop(Ipv4Addr),
    MultiExitDisc(u32),
    LocalPref(u32),
    AtomicAggregate,
    Communities(Vec<Community>),
    LargeCommunities(Vec<LargeCommunity>),
    MpReachNlri(MpReachNlri),
    MpUnreachNlri(MpUnreachNlri),
    Unknown(RawAttribute),
}

impl PathAttribute {
    pub fn type_code(&self) -> u8 {
        match self {
            Self::Origin(_) => type_code::ORIGIN,
            Self::AsPath(_) => type_code::AS_PATH,
            Self::NextHop(_) => type_code::NEXT_HOP,
            Self::MultiExitDisc(_) => type_code::MULTI_EXIT_DISC,
            Self::LocalPref(_) => type_code::LOCAL_PREF,
            Self::AtomicAggregate => type_code::ATOMIC_AGGREGATE,
            Self::Communities(_) => type_code::COMMUNITIES,
            Self::LargeCommunities(_) => type_code::LARGE_COMMUNITIES,
            Self::MpReachNlri(_) => type_code::MP_REACH_NLRI,
            Self::MpUnreachNlri(_) => type_code::MP_UNREACH_NLRI,
            Self::Unknown(raw) => raw.type_code,
        }
    }

    /// Flags to send, without the Extended Length bit.
    pub fn flags(&self) -> AttributeFlags {
        match self {
            Self::Unknown(raw) => AttributeFlags(raw.flags.0 & !AttributeFlags::EXTENDED_LENGTH),
            other => expected_flags(other.type_code()).unwrap_or_default(),
        }
    }

    /// Octets of the value.
    pub fn value_len(&self) -> usize {
        match self {
            Self::Origin(_) => 1,
            Self::AsPath(p) => p.value_len(),
            Self::NextHop(_) | Self::MultiExitDisc(_) | Self::LocalPref(_) => 4,
            Self::AtomicAggregate => 0,
            Self::Communities(c) => 4 * c.len(),
            Self::LargeCommunities(c) => 12 * c.len(),
            Self::MpReachNlri(m) => m.value_len(),
            Self::MpUnreachNlri(m) => m.value_len(),
            Self::Unknown(raw) => raw.value.len(),
        }
    }

    /// Octets of flags, type, length (1 or 2) and value.
    pub fn encoded_len(&self) -> usize {
        let len = self.value_len();
        if len > 255 { 4 + len } else { 3 + len }
    }

    /// Writes flags, type, length and value; the Extended Length flag is set
    /// when the value is longer than 255 octets.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let len = self.value_len();
        let type_code = self.type_code();
        let long = u16::try_from(len).map_err(|_| EncodeError::AttributeTooLong { type_code, length: len })?;
        if let Self::MpReachNlri(m) = self
            && m.next_hop.len() > 255
        {
            return Err(EncodeError::AttributeTooLong { type_code, length: len });
        }
        let mut flags = self.flags().0;
        if len > 255 {
            flags |= AttributeFlags::EXTENDED_LENGTH;
            dst.put_u8(flags);
            dst.put_u8(type_code);
            dst.put_u16(long);
        } else {
            dst.put_u8(flags);
            dst.put_u8(type_code);
            dst.put_u8(len as u8);
        }
        let start = dst.len();
        match self {
            Self::Origin(o) => dst.put_u8(*o as u8),
            Self::AsPath(p) => p.encode_value(dst),
            Self::NextHop(a) => dst.put_slice(&a.octets()),
            Self::MultiExitDisc(v) | Self::LocalPref(v) => dst.put_u32(*v),
            Self::AtomicAggregate => {}
            Self::Communities(c) => c.iter().for_each(|c| dst.put_u32(c.0)),
            Self::LargeCommunities(c) => c.iter().for_each(|c| {
                dst.put_u32(c.global_administrator);
                dst.put_u32(c.local_data_1);
                dst.put_u32(c.local_data_2);
            }),
            Self::MpReachNlri(m) => {
                dst.put_u16(m.afi.0);
                dst.put_u8(m.safi.0);
                dst.put_u8(m.next_hop.len() as u8);
                m.next_hop.encode(dst);
                dst.put_u8(0); // Reserved
                m.nlri.encode(dst);
            }
            Self::MpUnreachNlri(m) => {
                dst.put_u16(m.afi.0);
                dst.put_u8(m.safi.0);
                m.withdrawn.encode(dst);
            }
            Self::Unknown(raw) => dst.put_slice(&raw.value),
        }
        debug_assert_eq!(dst.len() - start, len, "value_len of type {type_code}");
        Ok(())
    }

    /// Decodes one attribute. `raw` is the whole attribute as received
    /// (flags, type, length, value): RFC 4271 §6.3 puts it in the
    /// NOTIFICATION data of most attribute errors.
    pub(crate) fn decode(flags: AttributeFlags, type_code: u8, value: &[u8], raw: &[u8]) -> Result<Self, UpdateError> {
        let attribute = || raw.to_vec();
        let unknown = |value: &[u8]| {
            let flags = AttributeFlags(flags.0 & !AttributeFlags::EXTENDED_LENGTH);
            Self::Unknown(RawAttribute { flags, type_code, value: Bytes::copy_from_slice(value) })
        };
        let Some(expected) = expected_flags(type_code) else {
            if !flags.is_optional() {
                return Err(UpdateError::UnrecognizedWellKnownAttribute { type_code, attribute: attribute() });
            }
            return Ok(unknown(value));
        };
        let category = AttributeFlags::OPTIONAL | AttributeFlags::TRANSITIVE;
        // Partial may only be set on optional transitive attributes.
        let partial_ok = expected == AttributeFlags::OPTIONAL_TRANSITIVE;
        if flags.0 & category != expected.0 || (flags.is_partial() && !partial_ok) {
            return Err(UpdateError::AttributeFlagsError { type_code, attribute: attribute() });
        }
        let length_error = || UpdateError::AttributeLengthError { type_code, attribute: attribute() };
        let optional_error = |reason| UpdateError::OptionalAttributeError { type_code, reason, attribute: attribute() };
        let mut r = Reader::new(value);
        let fixed_u32 = |r: &mut Reader<'_>| match (r.u32(), r.is_empty()) {
            (Some(v), true) => Ok(v),
            _ => Err(length_error()),
        };
        Ok(match type_code {
            type_code::ORIGIN => {
                let (Some(v), true) = (r.u8(), r.is_empty()) else {
                    return Err(length_error());
                };
                Self::Origin(match v {
                    0 => Origin::Igp,
                    1 => Origin::Egp,
                    2 => Origin::Incomplete,
                    _ => {
                        return Err(UpdateError::InvalidOriginAttribute { attribute: attribute() });
                    }
                })
            }
            type_code::AS_PATH => Self::AsPath(AsPath::decode_value(value)?),
            type_code::NEXT_HOP => {
                let addr = Ipv4Addr::from(fixed_u32(&mut r)?);
                if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
                    return Err(UpdateError::InvalidNextHopAttribute { attribute: attribute() });
                }
                Self::NextHop(addr)
            }
            type_code::MULTI_EXIT_DISC => Self::MultiExitDisc(fixed_u32(&mut r)?),
            type_code::LOCAL_PREF => Self::LocalPref(fixed_u32(&mut r)?),
            type_code::ATOMIC_AGGREGATE => {
                if !value.is_empty() {
                    return Err(length_error());
                }
                Self::AtomicAggregate
            }
            type_code::COMMUNITIES => {
                // RFC 7606 §7.8: a non-zero multiple of 4.
                if value.is_empty() || !value.len().is_multiple_of(4) {
                    return Err(length_error());
                }
                let mut c = Vec::with_capacity(value.len() / 4);
                while let Some(v) = r.u32() {
                    c.push(Community(v));
                }
                Self::Communities(c)
            }
            type_code::LARGE_COMMUNITIES => {
                // RFC 8092 §5: a non-zero multiple of 12.
                if value.is_empty() || !value.len().is_multiple_of(12) {
                    return Err(length_error());
                }
                let mut c = Vec::with_capacity(value.len() / 12);
                while let (Some(a), Some(b), Some(d)) = (r.u32(), r.u32(), r.u32()) {
                    c.push(LargeCommunity::new(a, b, d));
                }
                Self::LargeCommunities(c)
            }
            type_code::MP_REACH_NLRI => Self::MpReachNlri(MpReachNlri::decode_value(value).map_err(optional_error)?),
            type_code::MP_UNREACH_NLRI => {
                Self::MpUnreachNlri(MpUnreachNlri::decode_value(value).map_err(optional_error)?)
            }
            _ => {
                return Ok(unknown(value));
            }
        })
    }
}

/// Flags (Optional and Transitive bits) of the attributes this crate parses;
/// `None` for any other type, which is kept raw.
fn expected_flags(code: u8) -> Option<AttributeFlags> {
    Some(match code {
        type_code::ORIGIN
        | type_code::AS_PATH
        | type_code::NEXT_HOP
        | type_code::LOCAL_PREF
        | type_code::ATOMIC_AGGREGATE => AttributeFlags::WELL_KNOWN,
        type_code::MULTI_EXIT_DISC | type_code::MP_REACH_NLRI | type_code::MP_UNREACH_NLRI => {
            AttributeFlags::OPTIONAL_NON_TRANSITIVE
        }
        type_code::COMMUNITIES | type_code::LARGE_COMMUNITIES => AttributeFlags::OPTIONAL_TRANSITIVE,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(a: &PathAttribute) -> Vec<u8> {
        let mut b = BytesMut::new();
        a.encode(&mut b).unwrap();
        assert_eq!(b.len(), a.encoded_len());
        b.to_vec()
    }

    fn dec(wire: &[u8]) -> Result<PathAttribute, UpdateError> {
        let mut r = Reader::new(wire);
        let flags = AttributeFlags(r.u8().unwrap());
        let code = r.u8().unwrap();
        let len = if flags.is_extended_length() { usize::from(r.u16().unwrap()) } else { usize::from(r.u8().unwrap()) };
        let value = r.take(len).unwrap();
        assert!(r.is_empty());
        PathAttribute::decode(flags, code, value, wire)
    }

    fn golden(a: PathAttribute, wire: &[u8]) {
        assert_eq!(enc(&a), wire, "{a:?}");
        assert_eq!(dec(wire), Ok(a));
    }

    #[test]
    fn golden_well_known_attributes() {
        // ORIGIN: flags 0x40 (transitive), type 1, length 1, IGP (0).
        golden(PathAttribute::Origin(Origin::Igp), &[0x40, 0x01, 0x01, 0x00]);
        // ORIGIN INCOMPLETE (2).
        golden(PathAttribute::Origin(Origin::Incomplete), &[0x40, 0x01, 0x01, 0x02]);
        // AS_PATH: 0x40, type 2, length 16 (2+8 + 2+4): AS_SEQUENCE (2) of
        // 2 ASNs 65001 (0x0000fde9) and 4200000000 (0xfa56ea00), then AS_SET
        // (1) of 1 ASN 64512 (0x0000fc00).
        golden(
            PathAttribute::AsPath(AsPath {
                segments: vec![
                    AsPathSegment { segment_type: AsSegmentType::Sequence, asns: vec![65001, 4_200_000_000] },
                    AsPathSegment { segment_type: AsSegmentType::Set, asns: vec![64512] },
                ],
            }),
            &[
                0x40, 0x02, 0x10, //
                0x02, 0x02, 0x00, 0x00, 0xfd, 0xe9, 0xfa, 0x56, 0xea, 0x00, //
                0x01, 0x01, 0x00, 0x00, 0xfc, 0x00,
            ],
        );
        // Empty AS_PATH: 0x40, type 2, length 0.
        golden(PathAttribute::AsPath(AsPath::empty()), &[0x40, 0x02, 0x00]);
        // NEXT_HOP 192.0.2.1: 0x40, type 3, length 4, c0 00 02 01.
        golden(PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 1)), &[0x40, 0x03, 0x04, 0xc0, 0x00, 0x02, 0x01]);
        // MULTI_EXIT_DISC 100: 0x80 (optional non-transitive), type 4, length 4.
        golden(PathAttribute::MultiExitDisc(100), &[0x80, 0x04, 0x04, 0x00, 0x00, 0x00, 0x64]);
        // LOCAL_PREF 200: 0x40, type 5, length 4, 0x000000c8.
        golden(PathAttribute::LocalPref(200), &[0x40, 0x05, 0x04, 0x00, 0x00, 0x00, 0xc8]);
        // ATOMIC_AGGREGATE: 0x40, type 6, length 0.
        golden(PathAttribute::AtomicAggregate, &[0x40, 0x06, 0x00]);
    }

    #[test]
    fn golden_communities() {
        // COMMUNITIES: 0xc0 (optional transitive), type 8, length 8:
        // 65001:100 = fd e9 00 64, NO_EXPORT = ff ff ff 01.
        golden(
            PathAttribute::Communities(vec![Community::new(65001, 100), Community::NO_EXPORT]),
            &[0xc0, 0x08, 0x08, 0xfd, 0xe9, 0x00, 0x64, 0xff, 0xff, 0xff, 0x01],
        );
        // LARGE_COMMUNITIES: 0xc0, type 32 (0x20), length 12:
        // 4200000000:1:2 = fa 56 ea 00 | 00 00 00 01 | 00 00 00 02.
        golden(
            PathAttribute::LargeCommunities(vec![LargeCommunity::new(4_200_000_000, 1, 2)]),
            &[0xc0, 0x20, 0x0c, 0xfa, 0x56, 0xea, 0x00, 0, 0, 0, 1, 0, 0, 0, 2],
        );
        assert_eq!(Community::new(65001, 100).to_string(), "65001:100");
        assert_eq!(LargeCommunity::new(1, 2, 3).to_string(), "1:2:3");
    }

    #[test]
    fn golden_mp_reach_ipv6_with_link_local() {
        // MP_REACH_NLRI: 0x80 (optional non-transitive), type 14, length 54
        // (2+1+1 + 32 + 1 + 17):
        // AFI 2, SAFI 1, next hop length 32, global 2001:db8::1, link-local
        // fe80::1, reserved 0, NLRI 2001:db8::53/128 (0x80 + 16 octets).
        let global: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        let p = Ipv6Prefix::host("2001:db8::53".parse().unwrap());
        let wire: Vec<u8> = [
            &[0x80, 0x0e, 54][..],
            &[0x00, 0x02, 0x01, 0x20],
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01],
            &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01],
            &[0x00],
            &[0x80, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53],
        ]
        .concat();
        golden(PathAttribute::MpReachNlri(MpReachNlri::ipv6_unicast(global, Some(ll), vec![p])), &wire);
    }

    #[test]
    fn golden_mp_reach_ipv6_global_only_and_ipv4() {
        // AFI 2, SAFI 1, next hop length 16 (2001:db8::1), reserved, no NLRI.
        let wire: Vec<u8> = [
            &[0x80, 0x0e, 21, 0x00, 0x02, 0x01, 0x10][..],
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01],
            &[0x00],
        ]
        .concat();
        golden(
            PathAttribute::MpReachNlri(MpReachNlri::ipv6_unicast("2001:db8::1".parse().unwrap(), None, vec![])),
            &wire,
        );
        // IPv4 in MP_REACH: AFI 1, SAFI 1, next hop length 4 (192.0.2.1),
        // reserved, NLRI 198.51.100.7/32 (0x20 c6 33 64 07). Length 14.
        golden(
            PathAttribute::MpReachNlri(MpReachNlri::ipv4_unicast(
                Ipv4Addr::new(192, 0, 2, 1),
                vec![Ipv4Prefix::host(Ipv4Addr::new(198, 51, 100, 7))],
            )),
            &[0x80, 0x0e, 14, 0x00, 0x01, 0x01, 0x04, 0xc0, 0x00, 0x02, 0x01, 0x00, 0x20, 0xc6, 0x33, 0x64, 0x07],
        );
    }

    #[test]
    fn golden_mp_unreach_and_unknown() {
        // MP_UNREACH_NLRI: 0x80, type 15, length 3: AFI 2, SAFI 1, nothing
        // withdrawn (the IPv6 End-of-RIB marker's only attribute).
        golden(
            PathAttribute::MpUnreachNlri(MpUnreachNlri::ipv6_unicast(vec![])),
            &[0x80, 0x0f, 0x03, 0x00, 0x02, 0x01],
        );
        // Unknown optional transitive attribute type 99 with partial bit:
        // flags 0xe0, type 0x63, length 2, value aa bb.
        golden(
            PathAttribute::Unknown(RawAttribute {
                flags: AttributeFlags(0xe0),
                type_code: 99,
                value: Bytes::from_static(&[0xaa, 0xbb]),
            }),
            &[0xe0, 0x63, 0x02, 0xaa, 0xbb],
        );
    }

    #[test]
    fn extended_length_only_above_255() {
        // 63 communities = 252 octets: 1-octet length. 64 = 256: the
        // Extended Length flag (0x10) and a 2-octet length 0x0100.
        let c63 = PathAttribute::Communities(vec![Community(7); 63]);
        assert_eq!(&enc(&c63)[..3], &[0xc0, 0x08, 252]);
        let c64 = PathAttribute::Communities(vec![Community(7); 64]);
        let w = enc(&c64);
        assert_eq!(&w[..4], &[0xd0, 0x08, 0x01, 0x00]);
        assert_eq!(dec(&w), Ok(c64));
        // A received attribute with Extended Length set and a short value
        // is fine too.
        assert_eq!(dec(&[0x50, 0x01, 0x00, 0x01, 0x02]), Ok(PathAttribute::Origin(Origin::Incomplete)));
    }

    /// Found by the `bgp_decode` fuzz target: an unknown optional
    /// attribute received with the Extended Length flag and a short value
    /// (flags 0x90) kept the flag, the encoder (rightly) wrote a 1-octet
    /// length without it, and the message no longer decoded to itself.
    #[test]
    fn unknown_attribute_with_needless_extended_length_round_trips() {
        let received = [0x90, 0x40, 0x00, 0x03, 0xaa, 0xbb, 0xcc];
        let a = dec(&received).unwrap();
        assert_eq!(
            a,
            PathAttribute::Unknown(RawAttribute {
                flags: AttributeFlags(0x80),
                type_code: 0x40,
                value: Bytes::from_static(&[0xaa, 0xbb, 0xcc]),
            })
        );
        let w = enc(&a);
        assert_eq!(w, [0x80, 0x40, 0x03, 0xaa, 0xbb, 0xcc]);
        assert_eq!(dec(&w), Ok(a));
        // The whole UPDATE the fuzzer found, message by message.
        // (fuzz/corpus/bgp_decode/crash-ext-length-unknown-attribute)
        let crash: &[u8] = &[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x4e,
            0x02, 0x00, 0x00, 0x00, 0x37, 0x90, 0x40, 0x00, 0x26, 0x00, 0x02, 0x01, 0x01, 0x00, 0x40, 0x02, 0x06, 0x02,
            0x01, 0x00, 0x00, 0xfd, 0xe9, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x80, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x07, 0x40, 0x01, 0x01, 0x00, 0x40, 0x02, 0x06,
            0x02, 0x01, 0x00, 0x00, 0xfd, 0xe9,
        ];
        let max = crate::bgp::message::MAX_MESSAGE_LEN;
        let (m, n) = crate::bgp::message::decode(crash, max).unwrap().unwrap();
        let again = m.to_bytes(max).unwrap();
        assert_eq!(crate::bgp::message::decode(&again, max), Ok(Some((m, again.len()))));
        assert!(n <= crash.len());
    }

    #[test]
    fn long_as_sequence_is_split_into_255_as_segments() {
        let p = PathAttribute::AsPath(AsPath::sequence(1..=300));
        let w = enc(&p);
        // Extended length: 2+255*4 + 2+45*4 = 1204 = 0x04b4.
        assert_eq!(&w[..4], &[0x50, 0x02, 0x04, 0xb4]);
        assert_eq!(&w[4..6], &[0x02, 0xff]);
        let PathAttribute::AsPath(back) = dec(&w).unwrap() else { panic!() };
        assert_eq!(back.segments.len(), 2);
        assert_eq!(back.path_len(), 300);
        assert_eq!(back.first_as(), Some(1));
    }

    fn subcode(wire: &[u8]) -> u8 {
        dec(wire).unwrap_err().subcode()
    }

    #[test]
    fn attribute_faults_map_to_rfc4271_subcodes() {
        // Flags error: ORIGIN sent as optional (0xc0); MED as well-known
        // (0x40); NEXT_HOP with partial (0x60); COMMUNITIES non-transitive.
        for w in [
            &[0xc0, 0x01, 0x01, 0x00][..],
            &[0x40, 0x04, 0x04, 0, 0, 0, 1],
            &[0x60, 0x03, 0x04, 1, 2, 3, 4],
            &[0x80, 0x08, 0x04, 1, 2, 3, 4],
        ] {
            let e = dec(w).unwrap_err();
            assert_eq!((e.code(), e.subcode(), e.data()), (3, 4, w.to_vec()));
        }
        // Length error: ORIGIN of 2, NEXT_HOP of 5, LOCAL_PREF of 3,
        // ATOMIC_AGGREGATE of 1, COMMUNITIES of 6 and of 0, LARGE of 8.
        for w in [
            &[0x40, 0x01, 0x02, 0x00, 0x00][..],
            &[0x40, 0x03, 0x05, 1, 2, 3, 4, 5],
            &[0x40, 0x05, 0x03, 1, 2, 3],
            &[0x40, 0x06, 0x01, 0],
            &[0xc0, 0x08, 0x06, 1, 2, 3, 4, 5, 6],
            &[0xc0, 0x08, 0x00],
            &[0xc0, 0x20, 0x08, 1, 2, 3, 4, 5, 6, 7, 8],
        ] {
            let e = dec(w).unwrap_err();
            assert_eq!((e.code(), e.subcode(), e.data()), (3, 5, w.to_vec()));
        }
        // Invalid ORIGIN 3.
        let w = [0x40, 0x01, 0x01, 0x03];
        assert_eq!((subcode(&w), dec(&w).unwrap_err().data()), (6, w.to_vec()));
        // Invalid NEXT_HOP: 0.0.0.0, 255.255.255.255, 224.0.0.1.
        for w in
            [[0x40, 0x03, 0x04, 0, 0, 0, 0], [0x40, 0x03, 0x04, 255, 255, 255, 255], [0x40, 0x03, 0x04, 224, 0, 0, 1]]
        {
            assert_eq!(subcode(&w), 8);
        }
        // Unrecognized well-known: type 200 without the optional bit.
        let w = [0x40, 0xc8, 0x01, 0x00];
        let e = dec(&w).unwrap_err();
        assert_eq!((e.subcode(), e.data()), (2, w.to_vec()));
        // Optional attribute error: MP_REACH with next hop length 5 for IPv6;
        // with a prefix length of 129; MP_UNREACH of 2 octets.
        for w in [
            &[0x80, 0x0e, 0x0a, 0, 2, 1, 5, 1, 2, 3, 4, 5, 0][..],
            &[0x80, 0x0e, 0x16, 0, 2, 1, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 129],
            &[0x80, 0x0f, 0x02, 0, 2],
            &[0x80, 0x0e, 0x08, 0, 1, 1, 4, 1, 2, 3, 4],
        ] {
            let e = dec(w).unwrap_err();
            assert_eq!((e.code(), e.subcode(), e.data()), (3, 9, w.to_vec()), "{w:?}");
        }
        // Malformed AS_PATH: unknown segment type 5; zero-length segment;
        // segment overrun; lone trailing octet. Data is empty.
        for w in [
            &[0x40, 0x02, 0x06, 5, 1, 0, 0, 0, 1][..],
            &[0x40, 0x02, 0x02, 2, 0],
            &[0x40, 0x02, 0x06, 2, 2, 0, 0, 0, 1],
            &[0x40, 0x02, 0x07, 2, 1, 0, 0, 0, 1, 2],
        ] {
            let e = dec(w).unwrap_err();
            assert_eq!((e.code(), e.subcode(), e.data()), (3, 11, vec![]), "{w:?}");
        }
        // Unknown families in MP_REACH are kept raw, not rejected.
        let PathAttribute::MpReachNlri(m) = dec(&[0x80, 0x0e, 0x07, 0, 25, 70, 1, 9, 0, 0xaa]).unwrap() else {
            panic!()
        };
        assert_eq!(m.next_hop, MpNextHop::Other(Bytes::from_static(&[9])));
        assert_eq!(m.nlri, MpNlri::Other(Bytes::from_static(&[0xaa])));
    }
}

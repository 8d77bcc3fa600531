//! OPEN message (RFC 4271 §4.2) and the capabilities it carries as optional
//! parameter type 2 (RFC 5492): multiprotocol (RFC 4760), route refresh
//! (RFC 2918), extended message (RFC 8654), graceful restart (RFC 4724),
//! 4-octet AS (RFC 6793), enhanced route refresh (RFC 7313); anything else
//! is kept raw. Decoding accepts the extended optional parameters length of
//! RFC 9072; encoding uses it only when the parameters exceed 255 octets.

use std::net::Ipv4Addr;

use bytes::{BufMut, Bytes, BytesMut};

use super::error::EncodeError;
use super::header::{HEADER_LEN, MAX_MESSAGE_LEN};
use super::notification::{error_code, open_error};
use super::prefix::{Afi, Safi};
use super::reader::Reader;

/// The only BGP version spoken.
pub const BGP_VERSION: u8 = 4;
/// The 2-octet stand-in for a 4-octet AS number (RFC 6793).
pub const AS_TRANS: u16 = 23456;
/// Optional parameter type for capabilities (RFC 5492).
pub const OPTIONAL_PARAMETER_CAPABILITIES: u8 = 2;
/// Marker value of RFC 9072's extended optional parameters encoding.
const EXTENDED_OPTIONAL_PARAMETERS: u8 = 255;

/// Capability codes (IANA "Capability Codes").
pub mod capability_code {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const EXTENDED_NEXT_HOP: u8 = 5;
    pub const EXTENDED_MESSAGE: u8 = 6;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
    pub const ADD_PATH: u8 = 69;
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
    pub const LONG_LIVED_GRACEFUL_RESTART: u8 = 71;
    pub const FQDN: u8 = 73;
}

/// One address family in a Graceful Restart capability (RFC 4724 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GracefulRestartFamily {
    pub afi: Afi,
    pub safi: Safi,
    /// F bit: forwarding state for this family was preserved across restart.
    pub forwarding_state: bool,
}

/// Graceful Restart capability value (RFC 4724 §3, N bit from RFC 8538).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct GracefulRestartCapability {
    /// R bit: the sender has restarted.
    pub restart_state: bool,
    /// N bit (RFC 8538): the sender supports graceful NOTIFICATION handling.
    pub notification: bool,
    /// Restart Time in seconds; 12 bits on the wire (at most 4095).
    pub restart_time: u16,
    pub families: Vec<GracefulRestartFamily>,
}

const GR_RESTART_STATE: u16 = 0x8000;
const GR_NOTIFICATION: u16 = 0x4000;
const GR_TIME_MASK: u16 = 0x0fff;
const GR_FORWARDING_STATE: u8 = 0x80;

/// A capability advertised in OPEN (RFC 5492).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Code 1: the sender can exchange routes of this AFI/SAFI.
    Multiprotocol { afi: Afi, safi: Safi },
    /// Code 2.
    RouteRefresh,
    /// Code 6: messages up to 65535 octets.
    ExtendedMessage,
    /// Code 64.
    GracefulRestart(GracefulRestartCapability),
    /// Code 65: the sender's real AS number.
    FourOctetAs(u32),
    /// Code 70.
    EnhancedRouteRefresh,
    /// Any other capability, kept as received.
    Unknown { code: u8, value: Bytes },
}

impl Capability {
    pub fn code(&self) -> u8 {
        match self {
            Self::Multiprotocol { .. } => capability_code::MULTIPROTOCOL,
            Self::RouteRefresh => capability_code::ROUTE_REFRESH,
            Self::ExtendedMessage => capability_code::EXTENDED_MESSAGE,
            Self::GracefulRestart(_) => capability_code::GRACEFUL_RESTART,
            Self::FourOctetAs(_) => capability_code::FOUR_OCTET_AS,
            Self::EnhancedRouteRefresh => capability_code::ENHANCED_ROUTE_REFRESH,
            Self::Unknown { code, .. } => *code,
        }
    }

    fn value_len(&self) -> usize {
        match self {
            Self::Multiprotocol { .. } | Self::FourOctetAs(_) => 4,
            Self::RouteRefresh | Self::ExtendedMessage | Self::EnhancedRouteRefresh => 0,
            Self::GracefulRestart(gr) => 2 + 4 * gr.families.len(),
            Self::Unknown { value, .. } => value.len(),
        }
    }

    /// Octets of code, length and value.
    pub fn encoded_len(&self) -> usize {
        2 + self.value_len()
    }

    /// Writes code, length and value.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let len = self.value_len();
        let len_octet =
            u8::try_from(len).map_err(|_| EncodeError::CapabilityTooLong { code: self.code(), length: len })?;
        if let Self::GracefulRestart(gr) = self
            && gr.restart_time > GR_TIME_MASK
        {
            return Err(EncodeError::RestartTimeTooLarge(gr.restart_time));
        }
        dst.put_u8(self.code());
        dst.put_u8(len_octet);
        match self {
            Self::Multiprotocol { afi, safi } => {
                dst.put_u16(afi.0);
                dst.put_u8(0); // Reserved
                dst.put_u8(safi.0);
            }
            Self::RouteRefresh | Self::ExtendedMessage | Self::EnhancedRouteRefresh => {}
            Self::GracefulRestart(gr) => {
                let mut word = gr.restart_time & GR_TIME_MASK;
                if gr.restart_state {
                    word |= GR_RESTART_STATE;
                }
                if gr.notification {
                    word |= GR_NOTIFICATION;
                }
                dst.put_u16(word);
                for f in &gr.families {
                    dst.put_u16(f.afi.0);
                    dst.put_u8(f.safi.0);
                    dst.put_u8(if f.forwarding_state { GR_FORWARDING_STATE } else { 0 });
                }
            }
            Self::FourOctetAs(asn) => dst.put_u32(*asn),
            Self::Unknown { value, .. } => dst.put_slice(value),
        }
        Ok(())
    }

    /// Decodes one capability value of the given code.
    fn decode(code: u8, value: &[u8]) -> Result<Self, OpenError> {
        let mut r = Reader::new(value);
        let cap = match code {
            capability_code::MULTIPROTOCOL => {
                let (Some(afi), Some(_reserved), Some(safi)) = (r.u16(), r.u8(), r.u8()) else {
                    return Err(OpenError::malformed("multiprotocol capability shorter than 4 octets"));
                };
                Self::Multiprotocol { afi: Afi(afi), safi: Safi(safi) }
            }
            capability_code::ROUTE_REFRESH => Self::RouteRefresh,
            capability_code::EXTENDED_MESSAGE => Self::ExtendedMessage,
            capability_code::ENHANCED_ROUTE_REFRESH => Self::EnhancedRouteRefresh,
            capability_code::FOUR_OCTET_AS => {
                let asn = r.u32().ok_or(OpenError::malformed("4-octet AS capability shorter than 4 octets"))?;
                if asn == 0 {
                    // RFC 7607 §3: AS 0 in OPEN is a Bad Peer AS.
                    return Err(OpenError::BadPeerAs { asn });
                }
                Self::FourOctetAs(asn)
            }
            capability_code::GRACEFUL_RESTART => {
                let word = r.u16().ok_or(OpenError::malformed("graceful restart capability shorter than 2 octets"))?;
                if !r.remaining().is_multiple_of(4) {
                    return Err(OpenError::malformed("graceful restart capability has a partial address family"));
                }
                let mut families = Vec::with_capacity(r.remaining() / 4);
                while let (Some(afi), Some(safi), Some(flags)) = (r.u16(), r.u8(), r.u8()) {
                    families.push(GracefulRestartFamily {
                        afi: Afi(afi),
                        safi: Safi(safi),
                        forwarding_state: flags & GR_FORWARDING_STATE != 0,
                    });
                }
                Self::GracefulRestart(GracefulRestartCapability {
                    restart_state: word & GR_RESTART_STATE != 0,
                    notification: word & GR_NOTIFICATION != 0,
                    restart_time: word & GR_TIME_MASK,
                    families,
                })
            }
            _ => {
                return Ok(Self::Unknown { code, value: Bytes::copy_from_slice(value) });
            }
        };
        if !r.is_empty() {
            return Err(OpenError::malformed("capability value longer than its type allows"));
        }
        Ok(cap)
    }
}

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenMessage {
    /// My Autonomous System: the 2-octet AS, or [`AS_TRANS`] when the real AS
    /// (in [`Capability::FourOctetAs`]) does not fit in 16 bits.
    pub my_as: u16,
    /// Hold Time in seconds: 0 or at least 3.
    pub hold_time: u16,
    pub bgp_identifier: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl OpenMessage {
    /// An OPEN for `asn` that advertises the 4-octet AS capability and sets
    /// `my_as` to `asn`, or to [`AS_TRANS`] when `asn` exceeds 65535.
    pub fn new(asn: u32, hold_time: u16, bgp_identifier: Ipv4Addr) -> Self {
        Self {
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_identifier,
            capabilities: vec![Capability::FourOctetAs(asn)],
        }
    }

    /// Adds a capability.
    pub fn with_capability(mut self, capability: Capability) -> Self {
        self.capabilities.push(capability);
        self
    }

    /// The 4-octet AS capability's value, if advertised.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
    }

    /// The peer's AS: the 4-octet AS capability if present, else `my_as`.
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    /// Address families from the multiprotocol capabilities.
    pub fn multiprotocol(&self) -> impl Iterator<Item = (Afi, Safi)> + '_ {
        self.capabilities.iter().filter_map(|c| match c {
            Capability::Multiprotocol { afi, safi } => Some((*afi, *safi)),
            _ => None,
        })
    }

    pub fn has_capability(&self, code: u8) -> bool {
        self.capabilities.iter().any(|c| c.code() == code)
    }

    pub fn graceful_restart(&self) -> Option<&GracefulRestartCapability> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr),
            _ => None,
        })
    }

    /// Groups the encoded capabilities into optional parameters of at most
    /// 255 octets each; `None` when they need RFC 9072's extended encoding.
    fn plain_parameters(cap_lens: &[usize]) -> Option<Vec<usize>> {
        let mut params: Vec<usize> = Vec::new();
        for &len in cap_lens {
            match params.last_mut() {
                Some(last) if *last + len <= 255 => *last += len,
                _ if len <= 255 => params.push(len),
                _ => return None,
            }
        }
        let total: usize = params.iter().map(|p| 2 + p).sum();
        (total <= 255).then_some(params)
    }

    fn capability_lens(&self) -> Vec<usize> {
        self.capabilities.iter().map(Capability::encoded_len).collect()
    }

    /// Octets of the whole message, header included.
    pub fn encoded_len(&self) -> usize {
        let lens = self.capability_lens();
        let all: usize = lens.iter().sum();
        HEADER_LEN
            + 10
            + match Self::plain_parameters(&lens) {
                Some(params) => params.iter().map(|p| 2 + p).sum(),
                // Non-Ext OP Type, 2-octet length, one parameter header.
                None => 1 + 2 + 3 + all,
            }
    }

    /// Writes the body (the octets after the header).
    pub(crate) fn encode_body(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let mut caps = BytesMut::new();
        for c in &self.capabilities {
            c.encode(&mut caps)?;
        }
        let lens = self.capability_lens();
        dst.put_u8(BGP_VERSION);
        dst.put_u16(self.my_as);
        dst.put_u16(self.hold_time);
        dst.put_slice(&self.bgp_identifier.octets());
        if let Some(params) = Self::plain_parameters(&lens) {
            dst.put_u8(params.iter().map(|p| 2 + p).sum::<usize>() as u8);
            let mut rest = caps.freeze();
            for p in params {
                dst.put_u8(OPTIONAL_PARAMETER_CAPABILITIES);
                dst.put_u8(p as u8);
                dst.put_slice(&rest.split_to(p.min(rest.len())));
            }
            return Ok(());
        }
        // RFC 9072: Non-Ext OP Len 255, Non-Ext OP Type 255, 2-octet length,
        // then one capabilities parameter with a 2-octet length.
        let ext_len = 3 + caps.len();
        let (Ok(ext_len_u16), Ok(caps_len_u16)) = (u16::try_from(ext_len), u16::try_from(caps.len())) else {
            return Err(EncodeError::OptionalParametersTooLong { length: ext_len });
        };
        dst.put_u8(EXTENDED_OPTIONAL_PARAMETERS);
        dst.put_u8(EXTENDED_OPTIONAL_PARAMETERS);
        dst.put_u16(ext_len_u16);
        dst.put_u8(OPTIONAL_PARAMETER_CAPABILITIES);
        dst.put_u16(caps_len_u16);
        dst.put_slice(&caps);
        Ok(())
    }

    /// Decodes an OPEN body, checking it in the order of RFC 4271 §6.2.
    pub fn decode(body: &[u8]) -> Result<Self, OpenError> {
        let mut r = Reader::new(body);
        let (Some(version), Some(my_as), Some(hold_time), Some(id), Some(opt_len)) =
            (r.u8(), r.u16(), r.u16(), r.array::<4>(), r.u8())
        else {
            return Err(OpenError::malformed("OPEN shorter than its fixed fields"));
        };
        if version != BGP_VERSION {
            return Err(OpenError::UnsupportedVersionNumber { version });
        }
        if my_as == 0 {
            return Err(OpenError::BadPeerAs { asn: 0 });
        }
        if hold_time == 1 || hold_time == 2 {
            return Err(OpenError::UnacceptableHoldTime { hold_time });
        }
        let bgp_identifier = Ipv4Addr::from(id);
        if bgp_identifier.is_unspecified() {
            // RFC 6286 §2.1: any non-zero 4-octet value.
            return Err(OpenError::BadBgpIdentifier { bgp_identifier });
        }

        let mut peek = r;
        let extended = opt_len != 0 && peek.u8() == Some(EXTENDED_OPTIONAL_PARAMETERS);
        let params = if extended {
            let _non_ext_type = r.u8();
            let ext_len = r.u16().ok_or(OpenError::malformed("extended optional parameters length missing"))?;
            r.take(usize::from(ext_len)).ok_or(OpenError::malformed("optional parameters overrun the message"))?
        } else {
            r.take(usize::from(opt_len)).ok_or(OpenError::malformed("optional parameters overrun the message"))?
        };
        if !r.is_empty() {
            return Err(OpenError::malformed("octets after the optional parameters"));
        }

        let mut capabilities = Vec::new();
        let mut p = Reader::new(params);
        while !p.is_empty() {
            let param_type = p.u8().ok_or(OpenError::malformed("truncated optional parameter"))?;
            let param_len = if extended { p.u16() } else { p.u8().map(u16::from) }
                .ok_or(OpenError::malformed("truncated optional parameter"))?;
            let value =
                p.take(usize::from(param_len)).ok_or(OpenError::malformed("optional parameter overruns its field"))?;
            if param_type != OPTIONAL_PARAMETER_CAPABILITIES {
                return Err(OpenError::UnsupportedOptionalParameter { param_type });
            }
            let mut c = Reader::new(value);
            while !c.is_empty() {
                let (Some(code), Some(len)) = (c.u8(), c.u8()) else {
                    return Err(OpenError::malformed("truncated capability"));
                };
                let cap_value =
                    c.take(usize::from(len)).ok_or(OpenError::malformed("capability overruns its parameter"))?;
                capabilities.push(Capability::decode(code, cap_value)?);
            }
        }
        Ok(Self { my_as, hold_time, bgp_identifier, capabilities })
    }
}

/// OPEN Message Error (RFC 4271 §6.2), NOTIFICATION error code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported version number {version}")]
    UnsupportedVersionNumber { version: u8 },
    #[error("bad peer AS {asn}")]
    BadPeerAs { asn: u32 },
    #[error("bad BGP identifier {bgp_identifier}")]
    BadBgpIdentifier { bgp_identifier: Ipv4Addr },
    #[error("unsupported optional parameter type {param_type}")]
    UnsupportedOptionalParameter { param_type: u8 },
    #[error("unacceptable hold time {hold_time}")]
    UnacceptableHoldTime { hold_time: u16 },
    /// Not produced by decoding: for a session that requires a capability
    /// the peer did not advertise (RFC 5492 §5). `capabilities` holds the
    /// encoded capabilities (code, length, value) for the NOTIFICATION data.
    #[error("unsupported capability")]
    UnsupportedCapability { capabilities: Vec<u8> },
    /// A recognized optional parameter or capability is malformed: subcode 0
    /// (Unspecific), RFC 4271 §6.2.
    #[error("malformed OPEN: {reason}")]
    Malformed { reason: &'static str },
}

impl OpenError {
    fn malformed(reason: &'static str) -> Self {
        Self::Malformed { reason }
    }

    pub const fn code(&self) -> u8 {
        error_code::OPEN_MESSAGE_ERROR
    }

    pub const fn subcode(&self) -> u8 {
        match self {
            Self::UnsupportedVersionNumber { .. } => open_error::UNSUPPORTED_VERSION_NUMBER,
            Self::BadPeerAs { .. } => open_error::BAD_PEER_AS,
            Self::BadBgpIdentifier { .. } => open_error::BAD_BGP_IDENTIFIER,
            Self::UnsupportedOptionalParameter { .. } => open_error::UNSUPPORTED_OPTIONAL_PARAMETER,
            Self::UnacceptableHoldTime { .. } => open_error::UNACCEPTABLE_HOLD_TIME,
            Self::UnsupportedCapability { .. } => open_error::UNSUPPORTED_CAPABILITY,
            Self::Malformed { .. } => open_error::UNSPECIFIC,
        }
    }

    /// NOTIFICATION data: for Unsupported Version Number the largest
    /// supported version as 2 octets (RFC 4271 §6.2); for Unsupported
    /// Capability the capabilities (RFC 5492 §5); otherwise empty.
    pub fn data(&self) -> Vec<u8> {
        match self {
            Self::UnsupportedVersionNumber { .. } => u16::from(BGP_VERSION).to_be_bytes().to_vec(),
            Self::UnsupportedCapability { capabilities } => capabilities.clone(),
            _ => Vec::new(),
        }
    }
}

/// Largest OPEN: extended messages never apply to OPEN (RFC 8654 §3).
pub const MAX_OPEN_LEN: usize = MAX_MESSAGE_LEN;

#[cfg(test)]
mod tests {
    use super::super::{DecodeError, Message, decode, encode};
    use super::*;
    use proptest::prelude::*;

    fn wire(body: &[u8]) -> Vec<u8> {
        let len = (HEADER_LEN + body.len()) as u16;
        [&[0xff; 16][..], &len.to_be_bytes(), &[1], body].concat()
    }

    #[test]
    fn golden_open_with_all_capabilities() {
        let body: Vec<u8> = [
            &[0x04][..],                           // version 4
            &[0xfd, 0xe9],                         // my AS 65001
            &[0x00, 0x5a],                         // hold time 90
            &[0xc0, 0x00, 0x02, 0x01],             // BGP identifier 192.0.2.1
            &[0x26],                               // optional parameters length 38
            &[0x02, 0x24],                         // parameter type 2 (capabilities), length 36
            &[0x01, 0x04, 0x00, 0x01, 0x00, 0x01], // MP: AFI 1, reserved, SAFI 1
            &[0x01, 0x04, 0x00, 0x02, 0x00, 0x01], // MP: AFI 2, reserved, SAFI 1
            &[0x02, 0x00],                         // route refresh
            &[0x46, 0x00],                         // enhanced route refresh (70)
            &[0x06, 0x00],                         // extended message
            &[0x41, 0x04, 0x00, 0x00, 0xfd, 0xe9], // 4-octet AS (65) = 65001
            &[0x40, 0x0a],                         // graceful restart (64), length 10
            &[0x80, 0x78],                         // R bit set, restart time 120
            &[0x00, 0x01, 0x01, 0x80],             // IPv4 unicast, F bit set
            &[0x00, 0x02, 0x01, 0x00],             // IPv6 unicast, F bit clear
        ]
        .concat();
        let expected = wire(&body);
        assert_eq!(expected.len(), 67);
        assert_eq!(&expected[16..18], &[0x00, 0x43]);

        let open = OpenMessage {
            my_as: 65001,
            hold_time: 90,
            bgp_identifier: Ipv4Addr::new(192, 0, 2, 1),
            capabilities: vec![
                Capability::Multiprotocol { afi: Afi::IPV4, safi: Safi::UNICAST },
                Capability::Multiprotocol { afi: Afi::IPV6, safi: Safi::UNICAST },
                Capability::RouteRefresh,
                Capability::EnhancedRouteRefresh,
                Capability::ExtendedMessage,
                Capability::FourOctetAs(65001),
                Capability::GracefulRestart(GracefulRestartCapability {
                    restart_state: true,
                    notification: false,
                    restart_time: 120,
                    families: vec![
                        GracefulRestartFamily { afi: Afi::IPV4, safi: Safi::UNICAST, forwarding_state: true },
                        GracefulRestartFamily { afi: Afi::IPV6, safi: Safi::UNICAST, forwarding_state: false },
                    ],
                }),
            ],
        };
        let msg = Message::Open(open.clone());
        assert_eq!(msg.encoded_len(), 67);
        let mut b = BytesMut::new();
        encode(&msg, 4096, &mut b).unwrap();
        assert_eq!(&b[..], &expected[..]);
        assert_eq!(decode(&expected, 4096).unwrap(), Some((msg, 67)));
        assert_eq!(open.asn(), 65001);
        assert!(open.graceful_restart().unwrap().restart_state);
        assert_eq!(open.multiprotocol().count(), 2);
    }

    #[test]
    fn golden_open_uses_as_trans_for_4_octet_as() {
        // AS 4200000000 = 0xfa56ea00 does not fit in 16 bits: my AS is
        // AS_TRANS 23456 = 0x5ba0, hold time 0, identifier 10.0.0.1, one
        // parameter (type 2, length 6) with the 4-octet AS capability.
        let expected = wire(&[
            0x04, 0x5b, 0xa0, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01, //
            0x08, 0x02, 0x06, 0x41, 0x04, 0xfa, 0x56, 0xea, 0x00,
        ]);
        let open = OpenMessage::new(4_200_000_000, 0, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(open.my_as, AS_TRANS);
        let mut b = BytesMut::new();
        encode(&Message::Open(open.clone()), 4096, &mut b).unwrap();
        assert_eq!(&b[..], &expected[..]);
        let Some((Message::Open(back), 37)) = decode(&expected, 4096).unwrap() else {
            panic!("not an OPEN");
        };
        assert_eq!(back.asn(), 4_200_000_000);
        assert_eq!(back, open);
    }

    #[test]
    fn rfc9072_extended_optional_parameters_decode() {
        // Non-Ext OP Len 255, Non-Ext OP Type 255, Extended Opt. Parm. Length
        // 9, then parameter type 2 with a 2-octet length 6 holding the
        // 4-octet AS capability for 65001.
        let expected = wire(&[
            0x04, 0xfd, 0xe9, 0x00, 0x5a, 0xc0, 0x00, 0x02, 0x01, //
            0xff, 0xff, 0x00, 0x09, //
            0x02, 0x00, 0x06, 0x41, 0x04, 0x00, 0x00, 0xfd, 0xe9,
        ]);
        let Some((Message::Open(open), 41)) = decode(&expected, 4096).unwrap() else {
            panic!("not an OPEN");
        };
        assert_eq!(open.capabilities, vec![Capability::FourOctetAs(65001)]);
    }

    #[test]
    fn long_capabilities_use_rfc9072_and_round_trip() {
        let mut open = OpenMessage::new(65001, 90, Ipv4Addr::new(192, 0, 2, 1));
        for code in 200..210u8 {
            open = open.with_capability(Capability::Unknown { code, value: Bytes::from(vec![code; 40]) });
        }
        let mut b = BytesMut::new();
        encode(&Message::Open(open.clone()), 4096, &mut b).unwrap();
        assert_eq!(&b[28..30], &[0xff, 0xff]);
        assert_eq!(decode(&b, 4096).unwrap(), Some((Message::Open(open), b.len())));
    }

    #[test]
    fn capabilities_up_to_255_octets_use_one_plain_parameter() {
        // Two unknown capabilities of 120 octets (122 each with code and
        // length) = 244 octets fit in one plain parameter of length 244.
        let mut open = OpenMessage::new(65001, 90, Ipv4Addr::new(192, 0, 2, 1));
        open.capabilities.clear();
        for code in [200u8, 201] {
            open.capabilities.push(Capability::Unknown { code, value: Bytes::from(vec![0; 120]) });
        }
        let mut b = BytesMut::new();
        encode(&Message::Open(open.clone()), 4096, &mut b).unwrap();
        assert_eq!(b[28], 246); // one parameter: 2 + 244
        assert_eq!(decode(&b, 4096).unwrap(), Some((Message::Open(open), b.len())));
    }

    fn open_err(body: &[u8]) -> DecodeError {
        decode(&wire(body), 4096).unwrap_err()
    }

    const GOOD_FIXED: [u8; 9] = [0x04, 0xfd, 0xe9, 0x00, 0x5a, 0xc0, 0x00, 0x02, 0x01];

    #[test]
    fn open_faults_map_to_rfc4271_subcodes() {
        // Version 3: Unsupported Version Number, data = 0x0004.
        let mut v3 = GOOD_FIXED.to_vec();
        v3[0] = 3;
        v3.push(0);
        let e = open_err(&v3);
        assert_eq!((e.code(), e.subcode(), e.data()), (2, 1, vec![0, 4]));

        // My AS 0: Bad Peer AS (RFC 7607).
        let mut as0 = GOOD_FIXED.to_vec();
        as0[1] = 0;
        as0[2] = 0;
        as0.push(0);
        let e = open_err(&as0);
        assert_eq!((e.code(), e.subcode()), (2, 2));

        // 4-octet AS capability of 0: Bad Peer AS.
        let e = open_err(&[&GOOD_FIXED[..], &[8, 2, 6, 0x41, 4, 0, 0, 0, 0]].concat());
        assert_eq!((e.code(), e.subcode()), (2, 2));

        // Hold time 1 and 2: Unacceptable Hold Time; 0 and 3 are accepted.
        for (hold, ok) in [(0u16, true), (1, false), (2, false), (3, true)] {
            let mut b = GOOD_FIXED.to_vec();
            b[3..5].copy_from_slice(&hold.to_be_bytes());
            b.push(0);
            match decode(&wire(&b), 4096) {
                Ok(Some(_)) => assert!(ok, "hold time {hold}"),
                Err(e) => {
                    assert!(!ok, "hold time {hold}");
                    assert_eq!((e.code(), e.subcode()), (2, 6));
                }
                Ok(None) => unreachable!(),
            }
        }

        // BGP identifier 0.0.0.0: Bad BGP Identifier.
        let mut id0 = GOOD_FIXED.to_vec();
        id0[5..9].fill(0);
        id0.push(0);
        let e = open_err(&id0);
        assert_eq!((e.code(), e.subcode()), (2, 3));

        // Optional parameter type 1 (deprecated authentication): Unsupported
        // Optional Parameter.
        let e = open_err(&[&GOOD_FIXED[..], &[3, 1, 1, 0]].concat());
        assert_eq!((e.code(), e.subcode()), (2, 4));

        // Malformed: MP capability of 3 octets, parameter overrunning the
        // message, capability overrunning its parameter, trailing octets.
        for body in [
            [&GOOD_FIXED[..], &[5, 2, 3, 1, 3, 0]].concat(),
            [&GOOD_FIXED[..], &[9, 2, 2, 2, 0]].concat(),
            [&GOOD_FIXED[..], &[4, 2, 2, 2, 9]].concat(),
            [&GOOD_FIXED[..], &[0, 7]].concat(),
            [&GOOD_FIXED[..], &[4, 2, 2, 0x40, 1]].concat(),
            [&GOOD_FIXED[..], &[255, 255, 0]].concat(),
        ] {
            let e = open_err(&body);
            assert_eq!((e.code(), e.subcode()), (2, 0), "{body:?}");
        }
    }

    #[test]
    fn encode_rejects_unrepresentable_values() {
        let open = OpenMessage::new(1, 90, Ipv4Addr::new(1, 1, 1, 1)).with_capability(Capability::GracefulRestart(
            GracefulRestartCapability { restart_time: 4096, ..Default::default() },
        ));
        assert_eq!(
            encode(&Message::Open(open), 4096, &mut BytesMut::new()),
            Err(EncodeError::RestartTimeTooLarge(4096))
        );
        let open = OpenMessage::new(1, 90, Ipv4Addr::new(1, 1, 1, 1))
            .with_capability(Capability::Unknown { code: 99, value: Bytes::from(vec![0; 256]) });
        assert!(matches!(
            encode(&Message::Open(open), 4096, &mut BytesMut::new()),
            Err(EncodeError::CapabilityTooLong { code: 99, length: 256 })
        ));
    }

    pub(crate) fn capability_strategy() -> impl Strategy<Value = Capability> {
        prop_oneof![
            (any::<u16>(), any::<u8>()).prop_map(|(a, s)| Capability::Multiprotocol { afi: Afi(a), safi: Safi(s) }),
            Just(Capability::RouteRefresh),
            Just(Capability::ExtendedMessage),
            Just(Capability::EnhancedRouteRefresh),
            (1u32..).prop_map(Capability::FourOctetAs),
            (
                any::<bool>(),
                any::<bool>(),
                0u16..4096,
                proptest::collection::vec((any::<u16>(), any::<u8>(), any::<bool>()), 0..6)
            )
                .prop_map(|(r, n, t, f)| Capability::GracefulRestart(GracefulRestartCapability {
                    restart_state: r,
                    notification: n,
                    restart_time: t,
                    families: f
                        .into_iter()
                        .map(|(a, s, fs)| GracefulRestartFamily { afi: Afi(a), safi: Safi(s), forwarding_state: fs })
                        .collect(),
                })),
            (
                any::<u8>().prop_filter("known code", |c| ![1, 2, 6, 64, 65, 70].contains(c)),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(code, v)| Capability::Unknown { code, value: Bytes::from(v) }),
        ]
    }

    proptest! {
        #[test]
        fn open_round_trip(
            asn in 1u32..,
            hold in prop_oneof![Just(0u16), 3u16..],
            id in 1u32..,
            caps in proptest::collection::vec(capability_strategy(), 0..12),
        ) {
            let mut open = OpenMessage::new(asn, hold, Ipv4Addr::from(id));
            open.capabilities.extend(caps);
            let msg = Message::Open(open);
            let mut b = BytesMut::new();
            encode(&msg, 4096, &mut b).unwrap();
            prop_assert_eq!(decode(&b, 65535).unwrap(), Some((msg, b.len())));
        }
    }
}

//! ROUTE-REFRESH message (RFC 2918) with the Enhanced Route Refresh
//! subtypes of RFC 7313: AFI (2 octets), Message Subtype (1 octet, formerly
//! Reserved), SAFI (1 octet).

use bytes::{BufMut, BytesMut};

use super::header::HEADER_LEN;
use super::notification::{error_code, route_refresh_error};
use super::prefix::{Afi, Safi};
use super::reader::Reader;

/// Message Subtype (RFC 7313 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteRefreshSubtype {
    /// 0: a plain route refresh request (RFC 2918).
    Normal,
    /// 1: Beginning of Route Refresh (BoRR).
    BeginningOfRouteRefresh,
    /// 2: End of Route Refresh (EoRR).
    EndOfRouteRefresh,
    /// Any other value; RFC 7313 §5 says such a message MUST be ignored.
    Unknown(u8),
}

impl RouteRefreshSubtype {
    pub const fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Normal,
            1 => Self::BeginningOfRouteRefresh,
            2 => Self::EndOfRouteRefresh,
            other => Self::Unknown(other),
        }
    }

    pub const fn to_u8(self) -> u8 {
        match self {
            Self::Normal => 0,
            Self::BeginningOfRouteRefresh => 1,
            Self::EndOfRouteRefresh => 2,
            Self::Unknown(other) => other,
        }
    }
}

/// A ROUTE-REFRESH message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteRefreshMessage {
    pub afi: Afi,
    pub safi: Safi,
    pub subtype: RouteRefreshSubtype,
}

impl RouteRefreshMessage {
    /// A plain refresh request for one address family.
    pub const fn new(afi: Afi, safi: Safi) -> Self {
        Self { afi, safi, subtype: RouteRefreshSubtype::Normal }
    }

    /// Octets of the whole message.
    pub const fn encoded_len(&self) -> usize {
        HEADER_LEN + 4
    }

    pub(crate) fn encode_body(&self, dst: &mut BytesMut) {
        dst.put_u16(self.afi.0);
        dst.put_u8(self.subtype.to_u8());
        dst.put_u8(self.safi.0);
    }

    /// Decodes a ROUTE-REFRESH body. The body must be exactly 4 octets
    /// (RFC 7313 §5); a message with an unknown subtype is still returned so
    /// that the session can ignore it.
    pub fn decode(body: &[u8]) -> Result<Self, RouteRefreshError> {
        let mut r = Reader::new(body);
        let (Some(afi), Some(subtype), Some(safi), true) = (r.u16(), r.u8(), r.u8(), r.is_empty()) else {
            return Err(RouteRefreshError::InvalidMessageLength { length: HEADER_LEN + body.len() });
        };
        Ok(Self { afi: Afi(afi), safi: Safi(safi), subtype: RouteRefreshSubtype::from_u8(subtype) })
    }
}

/// ROUTE-REFRESH Message Error (RFC 7313 §5), NOTIFICATION error code 7.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteRefreshError {
    /// The NOTIFICATION data is the complete received message, which
    /// [`super::DecodeError`] carries.
    #[error("ROUTE-REFRESH message of {length} octets, expected 23")]
    InvalidMessageLength { length: usize },
}

impl RouteRefreshError {
    pub const fn code(&self) -> u8 {
        error_code::ROUTE_REFRESH_MESSAGE_ERROR
    }

    pub const fn subcode(&self) -> u8 {
        route_refresh_error::INVALID_MESSAGE_LENGTH
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Message, decode, encode};
    use super::*;

    #[test]
    fn golden_route_refresh() {
        // Marker; length 0x0017 = 23; type 5 (ROUTE-REFRESH); AFI 0x0002
        // (IPv6); subtype 0 (normal request); SAFI 1 (unicast).
        let wire: Vec<u8> = [&[0xff; 16][..], &[0x00, 0x17, 0x05], &[0x00, 0x02, 0x00, 0x01]].concat();
        let msg = Message::RouteRefresh(RouteRefreshMessage::new(Afi::IPV6, Safi::UNICAST));
        let mut b = BytesMut::new();
        encode(&msg, 4096, &mut b).unwrap();
        assert_eq!(&b[..], &wire[..]);
        assert_eq!(decode(&wire, 4096).unwrap(), Some((msg, 23)));
    }

    #[test]
    fn enhanced_route_refresh_subtypes_parse() {
        // AFI 1 (IPv4), subtype 1 (BoRR), SAFI 1; then AFI 1, subtype 2
        // (EoRR), SAFI 1; then reserved subtype 255.
        for (octet, subtype) in [
            (1u8, RouteRefreshSubtype::BeginningOfRouteRefresh),
            (2, RouteRefreshSubtype::EndOfRouteRefresh),
            (255, RouteRefreshSubtype::Unknown(255)),
        ] {
            let m = RouteRefreshMessage::decode(&[0x00, 0x01, octet, 0x01]).unwrap();
            assert_eq!(m.subtype, subtype);
            assert_eq!((m.afi, m.safi), (Afi::IPV4, Safi::UNICAST));
        }
    }

    #[test]
    fn wrong_length_is_route_refresh_error_with_whole_message_as_data() {
        // Length 0x0018 = 24: one octet too many.
        let wire: Vec<u8> = [&[0xff; 16][..], &[0x00, 0x18, 0x05], &[0x00, 0x01, 0x00, 0x01, 0x00]].concat();
        let e = decode(&wire, 4096).unwrap_err();
        assert_eq!((e.code(), e.subcode()), (7, 1));
        assert_eq!(e.data(), wire);
        // A bare header with type 5 is also an invalid length.
        let bare: Vec<u8> = [&[0xff; 16][..], &[0x00, 0x13, 0x05]].concat();
        let e = decode(&bare, 4096).unwrap_err();
        assert_eq!((e.code(), e.subcode(), e.data()), (7, 1, bare));
    }
}

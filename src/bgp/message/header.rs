//! BGP message header (RFC 4271 §4.1): 16-octet all-ones marker, 2-octet
//! total length, 1-octet type, and the header checks of RFC 4271 §6.1.
//!
//! The maximum length is 4096 octets, or 65535 once both sides have
//! advertised the Extended Message capability (RFC 8654); OPEN and KEEPALIVE
//! stay within 4096 either way.

use bytes::{BufMut, BytesMut};

use super::notification::{error_code, header_error};
use super::reader::Reader;

/// The marker: 16 octets of ones (RFC 4271 §4.1).
pub const MARKER: [u8; 16] = [0xff; 16];
/// Octets in the fixed header.
pub const HEADER_LEN: usize = 19;
/// Maximum message size without extended messages (RFC 4271 §4).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Maximum message size with extended messages (RFC 8654).
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;

/// Minimum total lengths per type (RFC 4271 §4.2–4.5, RFC 2918 §3).
pub const MIN_OPEN_LEN: usize = 29;
pub const MIN_UPDATE_LEN: usize = 23;
pub const MIN_NOTIFICATION_LEN: usize = 21;
pub const KEEPALIVE_LEN: usize = 19;
pub const ROUTE_REFRESH_LEN: usize = 23;

/// Clamps a caller's maximum to the range the RFCs allow.
pub(crate) fn effective_max_len(max_len: usize) -> usize {
    max_len.clamp(MAX_MESSAGE_LEN, MAX_EXTENDED_MESSAGE_LEN)
}

/// The message types of RFC 4271 §4.1 and RFC 2918.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    Open = 1,
    Update = 2,
    Notification = 3,
    Keepalive = 4,
    RouteRefresh = 5,
}

impl MessageType {
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Open,
            2 => Self::Update,
            3 => Self::Notification,
            4 => Self::Keepalive,
            5 => Self::RouteRefresh,
            _ => return None,
        })
    }

    /// Largest total length allowed for this type under `max_len`
    /// (OPEN and KEEPALIVE never use extended messages, RFC 8654 §3).
    pub fn max_len(self, max_len: usize) -> usize {
        match self {
            Self::Open => MAX_MESSAGE_LEN,
            Self::Keepalive => KEEPALIVE_LEN,
            _ => effective_max_len(max_len),
        }
    }

    /// Smallest total length allowed for this type (RFC 4271 §6.1). A
    /// ROUTE-REFRESH of the wrong length is reported by its own decoder
    /// (RFC 7313 §5), so only the bare header is required here.
    pub const fn min_len(self) -> usize {
        match self {
            Self::Open => MIN_OPEN_LEN,
            Self::Update => MIN_UPDATE_LEN,
            Self::Notification => MIN_NOTIFICATION_LEN,
            Self::Keepalive => KEEPALIVE_LEN,
            Self::RouteRefresh => HEADER_LEN,
        }
    }
}

/// A decoded, validated header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Total message length including the 19 header octets.
    pub length: u16,
    pub message_type: MessageType,
}

impl Header {
    /// Validates the first 19 octets of `buf`. `Ok(None)` means fewer than 19
    /// octets are available yet; the body need not be present.
    pub fn decode(buf: &[u8], max_len: usize) -> Result<Option<Header>, HeaderError> {
        let mut r = Reader::new(buf);
        let (Some(marker), Some(length), Some(type_octet)) = (r.array::<16>(), r.u16(), r.u8()) else {
            return Ok(None);
        };
        if marker != MARKER {
            return Err(HeaderError::ConnectionNotSynchronized);
        }
        let total = usize::from(length);
        if total < HEADER_LEN || total > effective_max_len(max_len) {
            return Err(HeaderError::BadMessageLength { length });
        }
        let message_type =
            MessageType::from_u8(type_octet).ok_or(HeaderError::BadMessageType { message_type: type_octet })?;
        if total < message_type.min_len() || total > message_type.max_len(max_len) {
            return Err(HeaderError::BadMessageLength { length });
        }
        Ok(Some(Header { length, message_type }))
    }

    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        dst.put_slice(&MARKER);
        dst.put_u16(self.length);
        dst.put_u8(self.message_type as u8);
    }
}

/// Message Header Error (RFC 4271 §6.1), NOTIFICATION error code 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("connection not synchronized: marker is not all ones")]
    ConnectionNotSynchronized,
    #[error("bad message length {length}")]
    BadMessageLength { length: u16 },
    #[error("bad message type {message_type}")]
    BadMessageType { message_type: u8 },
}

impl HeaderError {
    pub const fn code(&self) -> u8 {
        error_code::MESSAGE_HEADER_ERROR
    }

    pub const fn subcode(&self) -> u8 {
        match self {
            Self::ConnectionNotSynchronized => header_error::CONNECTION_NOT_SYNCHRONIZED,
            Self::BadMessageLength { .. } => header_error::BAD_MESSAGE_LENGTH,
            Self::BadMessageType { .. } => header_error::BAD_MESSAGE_TYPE,
        }
    }

    /// NOTIFICATION data: the erroneous Length field, or the erroneous Type
    /// field (RFC 4271 §6.1).
    pub fn data(&self) -> Vec<u8> {
        match self {
            Self::ConnectionNotSynchronized => Vec::new(),
            Self::BadMessageLength { length } => length.to_be_bytes().to_vec(),
            Self::BadMessageType { message_type } => vec![*message_type],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(length: u16, message_type: u8) -> Vec<u8> {
        let mut v = vec![0xff; 16];
        v.extend_from_slice(&length.to_be_bytes());
        v.push(message_type);
        v
    }

    #[test]
    fn golden_header() {
        // Marker (16 x 0xff), length 0x0013 = 19, type 4 (KEEPALIVE).
        let mut b = BytesMut::new();
        Header { length: 19, message_type: MessageType::Keepalive }.encode(&mut b);
        let expected: [u8; 19] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, //
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, //
            0x00, 0x13, 0x04,
        ];
        assert_eq!(&b[..], &expected);
        assert_eq!(
            Header::decode(&expected, MAX_MESSAGE_LEN),
            Ok(Some(Header { length: 19, message_type: MessageType::Keepalive }))
        );
    }

    #[test]
    fn short_header_needs_more_bytes() {
        let h = header(19, 4);
        for n in 0..HEADER_LEN {
            assert_eq!(Header::decode(&h[..n], MAX_MESSAGE_LEN), Ok(None));
        }
    }

    #[test]
    fn header_faults_map_to_rfc4271_subcodes() {
        let mut bad_marker = header(19, 4);
        bad_marker[3] = 0;
        let e = Header::decode(&bad_marker, MAX_MESSAGE_LEN).unwrap_err();
        assert_eq!((e.code(), e.subcode(), e.data()), (1, 1, vec![]));

        for (len, ty) in [
            (18u16, 4u8), // below the header size
            (4097, 2),    // above 4096 without extended messages
            (20, 4),      // KEEPALIVE must be exactly 19
            (28, 1),      // OPEN below 29
            (22, 2),      // UPDATE below 23
            (20, 3),      // NOTIFICATION below 21
        ] {
            let e = Header::decode(&header(len, ty), MAX_MESSAGE_LEN).unwrap_err();
            assert_eq!((e.code(), e.subcode(), e.data()), (1, 2, len.to_be_bytes().to_vec()), "length {len} type {ty}");
        }
        // With extended messages an UPDATE may be 65535 long, an OPEN may not.
        assert!(Header::decode(&header(65535, 2), MAX_EXTENDED_MESSAGE_LEN).unwrap().is_some());
        let e = Header::decode(&header(4097, 1), MAX_EXTENDED_MESSAGE_LEN).unwrap_err();
        assert_eq!(e, HeaderError::BadMessageLength { length: 4097 });

        for ty in [0u8, 6, 255] {
            let e = Header::decode(&header(19, ty), MAX_MESSAGE_LEN).unwrap_err();
            assert_eq!((e.code(), e.subcode(), e.data()), (1, 3, vec![ty]));
        }
    }
}

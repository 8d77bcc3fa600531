//! NOTIFICATION message (RFC 4271 §4.5) and the error code / subcode
//! registry: RFC 4271 §4.5 and §6, RFC 5492 (Unsupported Capability),
//! RFC 6608 (FSM errors), RFC 7313 (ROUTE-REFRESH errors), RFC 4486 and
//! RFC 8538 (Cease subcodes), and the RFC 8203 / RFC 9003 Shutdown
//! Communication carried by Administrative Shutdown and Reset.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::header::HeaderError;
use super::reader::Reader;

/// Error codes (RFC 4271 §4.5, RFC 7313 §5).
pub mod error_code {
    pub const MESSAGE_HEADER_ERROR: u8 = 1;
    pub const OPEN_MESSAGE_ERROR: u8 = 2;
    pub const UPDATE_MESSAGE_ERROR: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FINITE_STATE_MACHINE_ERROR: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH_MESSAGE_ERROR: u8 = 7;
}

/// Message Header Error subcodes (RFC 4271 §4.5).
pub mod header_error {
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;
}

/// OPEN Message Error subcodes (RFC 4271 §4.5, RFC 5492 §5).
pub mod open_error {
    /// Used for a recognized but malformed optional parameter (RFC 4271 §6.2).
    pub const UNSPECIFIC: u8 = 0;
    pub const UNSUPPORTED_VERSION_NUMBER: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    // 5 (Authentication Failure) is deprecated.
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
}

/// UPDATE Message Error subcodes (RFC 4271 §4.5).
pub mod update_error {
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
    pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
    pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    pub const INVALID_ORIGIN_ATTRIBUTE: u8 = 6;
    // 7 (AS Routing Loop) is deprecated.
    pub const INVALID_NEXT_HOP_ATTRIBUTE: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;
}

/// Finite State Machine Error subcodes (RFC 6608).
pub mod fsm_error {
    pub const UNSPECIFIED: u8 = 0;
    pub const UNEXPECTED_MESSAGE_IN_OPEN_SENT: u8 = 1;
    pub const UNEXPECTED_MESSAGE_IN_OPEN_CONFIRM: u8 = 2;
    pub const UNEXPECTED_MESSAGE_IN_ESTABLISHED: u8 = 3;
}

/// Cease subcodes (RFC 4486, RFC 8538).
pub mod cease {
    pub const MAXIMUM_NUMBER_OF_PREFIXES_REACHED: u8 = 1;
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const PEER_DE_CONFIGURED: u8 = 3;
    pub const ADMINISTRATIVE_RESET: u8 = 4;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
    pub const CONNECTION_COLLISION_RESOLUTION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;
    pub const HARD_RESET: u8 = 9;
}

/// ROUTE-REFRESH Message Error subcodes (RFC 7313 §5).
pub mod route_refresh_error {
    pub const INVALID_MESSAGE_LENGTH: u8 = 1;
}

/// Longest Shutdown Communication this crate sends. RFC 8203 allows 128
/// octets, RFC 9003 raises it to 255; 128 is understood by both.
pub const MAX_SHUTDOWN_COMMUNICATION_LEN: usize = 128;

/// A NOTIFICATION message: error code, subcode and free-form data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationMessage {
    pub code: u8,
    pub subcode: u8,
    pub data: Bytes,
}

impl NotificationMessage {
    pub fn new(code: u8, subcode: u8, data: impl Into<Bytes>) -> Self {
        Self { code, subcode, data: data.into() }
    }

    /// Hold Timer Expired (code 4, subcode 0).
    pub fn hold_timer_expired() -> Self {
        Self::new(error_code::HOLD_TIMER_EXPIRED, 0, Bytes::new())
    }

    /// Cease with the given subcode and no data.
    pub fn cease(subcode: u8) -> Self {
        Self::new(error_code::CEASE, subcode, Bytes::new())
    }

    /// Cease / Administrative Shutdown (or Reset) with a Shutdown
    /// Communication (RFC 8203): one length octet, then UTF-8 text cut at a
    /// character boundary to at most 128 octets. An empty text sends no data.
    pub fn cease_with_communication(subcode: u8, text: &str) -> Self {
        let mut end = text.len().min(MAX_SHUTDOWN_COMMUNICATION_LEN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let text = text.get(..end).unwrap_or_default();
        if text.is_empty() {
            return Self::cease(subcode);
        }
        let mut data = BytesMut::with_capacity(1 + text.len());
        data.put_u8(text.len() as u8);
        data.put_slice(text.as_bytes());
        Self::new(error_code::CEASE, subcode, data.freeze())
    }

    /// The Shutdown Communication of a Cease / Administrative Shutdown or
    /// Administrative Reset (RFC 8203, RFC 9003), when present and valid UTF-8.
    pub fn shutdown_communication(&self) -> Option<&str> {
        if self.code != error_code::CEASE
            || !matches!(self.subcode, cease::ADMINISTRATIVE_SHUTDOWN | cease::ADMINISTRATIVE_RESET)
        {
            return None;
        }
        let mut r = Reader::new(&self.data);
        let len = r.u8()?;
        let text = r.take(usize::from(len))?;
        std::str::from_utf8(text).ok()
    }

    /// Octets of the whole message, header included.
    pub fn encoded_len(&self) -> usize {
        super::header::HEADER_LEN + 2 + self.data.len()
    }

    pub(crate) fn encode_body(&self, dst: &mut BytesMut) {
        dst.put_u8(self.code);
        dst.put_u8(self.subcode);
        dst.put_slice(&self.data);
    }

    /// Decodes a NOTIFICATION body (the octets after the header). Unknown
    /// codes and subcodes are kept as they are.
    pub fn decode(body: &[u8]) -> Result<Self, HeaderError> {
        let mut r = Reader::new(body);
        let (Some(code), Some(subcode)) = (r.u8(), r.u8()) else {
            return Err(HeaderError::BadMessageLength { length: (super::header::HEADER_LEN + body.len()) as u16 });
        };
        Ok(Self::new(code, subcode, Bytes::copy_from_slice(r.rest())))
    }

    /// Human-readable names of the code and subcode, for logs.
    pub fn description(&self) -> (&'static str, &'static str) {
        describe(self.code, self.subcode)
    }
}

impl fmt::Display for NotificationMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, subcode) = self.description();
        write!(f, "{code} / {subcode} ({}/{})", self.code, self.subcode)?;
        if let Some(text) = self.shutdown_communication() {
            write!(f, ": {text:?}")?;
        } else if !self.data.is_empty() {
            write!(f, ", {} octets of data", self.data.len())?;
        }
        Ok(())
    }
}

/// Names of an error code and subcode.
pub fn describe(code: u8, subcode: u8) -> (&'static str, &'static str) {
    let unknown = "unknown subcode";
    match code {
        error_code::MESSAGE_HEADER_ERROR => (
            "Message Header Error",
            match subcode {
                header_error::CONNECTION_NOT_SYNCHRONIZED => "Connection Not Synchronized",
                header_error::BAD_MESSAGE_LENGTH => "Bad Message Length",
                header_error::BAD_MESSAGE_TYPE => "Bad Message Type",
                _ => unknown,
            },
        ),
        error_code::OPEN_MESSAGE_ERROR => (
            "OPEN Message Error",
            match subcode {
                open_error::UNSPECIFIC => "Unspecific",
                open_error::UNSUPPORTED_VERSION_NUMBER => "Unsupported Version Number",
                open_error::BAD_PEER_AS => "Bad Peer AS",
                open_error::BAD_BGP_IDENTIFIER => "Bad BGP Identifier",
                open_error::UNSUPPORTED_OPTIONAL_PARAMETER => "Unsupported Optional Parameter",
                open_error::UNACCEPTABLE_HOLD_TIME => "Unacceptable Hold Time",
                open_error::UNSUPPORTED_CAPABILITY => "Unsupported Capability",
                _ => unknown,
            },
        ),
        error_code::UPDATE_MESSAGE_ERROR => (
            "UPDATE Message Error",
            match subcode {
                update_error::MALFORMED_ATTRIBUTE_LIST => "Malformed Attribute List",
                update_error::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE => "Unrecognized Well-known Attribute",
                update_error::MISSING_WELL_KNOWN_ATTRIBUTE => "Missing Well-known Attribute",
                update_error::ATTRIBUTE_FLAGS_ERROR => "Attribute Flags Error",
                update_error::ATTRIBUTE_LENGTH_ERROR => "Attribute Length Error",
                update_error::INVALID_ORIGIN_ATTRIBUTE => "Invalid ORIGIN Attribute",
                update_error::INVALID_NEXT_HOP_ATTRIBUTE => "Invalid NEXT_HOP Attribute",
                update_error::OPTIONAL_ATTRIBUTE_ERROR => "Optional Attribute Error",
                update_error::INVALID_NETWORK_FIELD => "Invalid Network Field",
                update_error::MALFORMED_AS_PATH => "Malformed AS_PATH",
                _ => unknown,
            },
        ),
        error_code::HOLD_TIMER_EXPIRED => ("Hold Timer Expired", ""),
        error_code::FINITE_STATE_MACHINE_ERROR => (
            "Finite State Machine Error",
            match subcode {
                fsm_error::UNSPECIFIED => "Unspecified",
                fsm_error::UNEXPECTED_MESSAGE_IN_OPEN_SENT => "Unexpected Message in OpenSent",
                fsm_error::UNEXPECTED_MESSAGE_IN_OPEN_CONFIRM => "Unexpected Message in OpenConfirm",
                fsm_error::UNEXPECTED_MESSAGE_IN_ESTABLISHED => "Unexpected Message in Established",
                _ => unknown,
            },
        ),
        error_code::CEASE => (
            "Cease",
            match subcode {
                cease::MAXIMUM_NUMBER_OF_PREFIXES_REACHED => "Maximum Number of Prefixes Reached",
                cease::ADMINISTRATIVE_SHUTDOWN => "Administrative Shutdown",
                cease::PEER_DE_CONFIGURED => "Peer De-configured",
                cease::ADMINISTRATIVE_RESET => "Administrative Reset",
                cease::CONNECTION_REJECTED => "Connection Rejected",
                cease::OTHER_CONFIGURATION_CHANGE => "Other Configuration Change",
                cease::CONNECTION_COLLISION_RESOLUTION => "Connection Collision Resolution",
                cease::OUT_OF_RESOURCES => "Out of Resources",
                cease::HARD_RESET => "Hard Reset",
                _ => unknown,
            },
        ),
        error_code::ROUTE_REFRESH_MESSAGE_ERROR => (
            "ROUTE-REFRESH Message Error",
            match subcode {
                route_refresh_error::INVALID_MESSAGE_LENGTH => "Invalid Message Length",
                _ => unknown,
            },
        ),
        _ => ("unknown error code", unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Message, decode, encode};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_notification_hold_timer_expired() {
        // Marker; length 0x0015 = 21; type 3 (NOTIFICATION); code 4 (Hold
        // Timer Expired); subcode 0; no data.
        let wire: Vec<u8> = [
            &[0xff; 16][..],
            &[0x00, 0x15, 0x03], //
            &[0x04, 0x00],
        ]
        .concat();
        let msg = Message::Notification(NotificationMessage::hold_timer_expired());
        let mut b = BytesMut::new();
        encode(&msg, 4096, &mut b).unwrap();
        assert_eq!(&b[..], &wire[..]);
        assert_eq!(decode(&wire, 4096).unwrap(), Some((msg, 21)));
    }

    #[test]
    fn golden_notification_shutdown_communication() {
        // Marker; length 0x001a = 26; type 3; code 6 (Cease); subcode 2
        // (Administrative Shutdown); data = length 4, then "bye!" in UTF-8.
        let wire: Vec<u8> =
            [&[0xff; 16][..], &[0x00, 0x1a, 0x03], &[0x06, 0x02], &[0x04, b'b', b'y', b'e', b'!']].concat();
        let n = NotificationMessage::cease_with_communication(cease::ADMINISTRATIVE_SHUTDOWN, "bye!");
        let mut b = BytesMut::new();
        encode(&Message::Notification(n.clone()), 4096, &mut b).unwrap();
        assert_eq!(&b[..], &wire[..]);
        let Some((Message::Notification(back), 26)) = decode(&wire, 4096).unwrap() else {
            panic!("not a notification");
        };
        assert_eq!(back.shutdown_communication(), Some("bye!"));
        assert_eq!(back.to_string(), "Cease / Administrative Shutdown (6/2): \"bye!\"");
    }

    #[test]
    fn shutdown_communication_is_cut_at_a_char_boundary() {
        let text = "é".repeat(100); // 200 octets
        let n = NotificationMessage::cease_with_communication(cease::ADMINISTRATIVE_RESET, &text);
        assert_eq!(n.data.len(), 1 + 128);
        assert_eq!(n.shutdown_communication(), Some("é".repeat(64).as_str()));
        // Length octet pointing past the data: no communication, no panic.
        let bad = NotificationMessage::new(6, 2, vec![200, b'x']);
        assert_eq!(bad.shutdown_communication(), None);
        assert_eq!(NotificationMessage::cease_with_communication(2, ""), NotificationMessage::cease(2));
    }

    #[test]
    fn unknown_codes_are_kept() {
        let n = NotificationMessage::decode(&[99, 42, 1, 2, 3]).unwrap();
        assert_eq!(n, NotificationMessage::new(99, 42, vec![1, 2, 3]));
        assert_eq!(n.description().0, "unknown error code");
        assert!(NotificationMessage::decode(&[1]).is_err());
    }

    proptest! {
        #[test]
        fn notification_round_trip(code: u8, subcode: u8, data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let msg = Message::Notification(NotificationMessage::new(code, subcode, data));
            let mut b = BytesMut::new();
            encode(&msg, 4096, &mut b).unwrap();
            prop_assert_eq!(decode(&b, 4096).unwrap(), Some((msg, b.len())));
        }
    }
}

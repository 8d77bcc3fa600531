//! BGP-4 message codec (RFC 4271 and extensions) for dnsbgpd.
//!
//! [`decode`] frames and decodes one message from the front of a receive
//! buffer: `Ok(None)` means more octets are needed, `Ok(Some((message,
//! consumed)))` a complete message, and `Err` a fault that carries the
//! NOTIFICATION code, subcode and data RFC 4271 §6 prescribes. [`encode`]
//! appends one message to a buffer. [`UpdateBuilder`] packs many prefixes
//! into few UPDATEs.
//!
//! Decoding never panics on hostile input: every read is bounds-checked and
//! every length from the wire is checked against what contains it. Clippy
//! enforces it outside tests with the lints below.

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo
    )
)]

pub mod attributes;
pub mod error;
pub mod header;
pub mod keepalive;
pub mod notification;
pub mod open;
pub mod prefix;
mod reader;
pub mod route_refresh;
pub mod update;

use bytes::{Bytes, BytesMut};

pub use attributes::{
    AsPath, AsPathSegment, AsSegmentType, AttributeFlags, Community, LargeCommunity, MpNextHop, MpNlri, MpReachNlri,
    MpUnreachNlri, Origin, PathAttribute, RawAttribute,
};
pub use error::{DecodeError, EncodeError};
pub use header::{HEADER_LEN, Header, HeaderError, MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN, MessageType};
pub use keepalive::KeepaliveMessage;
pub use notification::NotificationMessage;
pub use open::{AS_TRANS, Capability, GracefulRestartCapability, GracefulRestartFamily, OpenError, OpenMessage};
pub use prefix::{Afi, Ipv4Prefix, Ipv6Prefix, Safi};
pub use route_refresh::{RouteRefreshError, RouteRefreshMessage, RouteRefreshSubtype};
pub use update::{
    BuildError, Ipv4Updates, Ipv6Updates, Rfc7606Action, RouteAttributes, UpdateBuilder, UpdateError, UpdateMessage,
};

/// Any BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(OpenMessage),
    Update(UpdateMessage),
    Notification(NotificationMessage),
    Keepalive(KeepaliveMessage),
    RouteRefresh(RouteRefreshMessage),
}

impl Message {
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Open(_) => MessageType::Open,
            Self::Update(_) => MessageType::Update,
            Self::Notification(_) => MessageType::Notification,
            Self::Keepalive(_) => MessageType::Keepalive,
            Self::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }

    /// Octets of the whole encoded message, header included.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Open(m) => m.encoded_len(),
            Self::Update(m) => m.encoded_len(),
            Self::Notification(m) => m.encoded_len(),
            Self::Keepalive(m) => m.encoded_len(),
            Self::RouteRefresh(m) => m.encoded_len(),
        }
    }

    /// Appends the message to `dst`; see [`encode`].
    pub fn encode(&self, max_len: usize, dst: &mut BytesMut) -> Result<usize, EncodeError> {
        encode(self, max_len, dst)
    }

    /// The message as one buffer; see [`encode`].
    pub fn to_bytes(&self, max_len: usize) -> Result<Bytes, EncodeError> {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        encode(self, max_len, &mut b)?;
        Ok(b.freeze())
    }
}

impl From<OpenMessage> for Message {
    fn from(m: OpenMessage) -> Self {
        Self::Open(m)
    }
}
impl From<UpdateMessage> for Message {
    fn from(m: UpdateMessage) -> Self {
        Self::Update(m)
    }
}
impl From<NotificationMessage> for Message {
    fn from(m: NotificationMessage) -> Self {
        Self::Notification(m)
    }
}
impl From<KeepaliveMessage> for Message {
    fn from(m: KeepaliveMessage) -> Self {
        Self::Keepalive(m)
    }
}
impl From<RouteRefreshMessage> for Message {
    fn from(m: RouteRefreshMessage) -> Self {
        Self::RouteRefresh(m)
    }
}

/// Decodes the message at the front of `buf`.
///
/// `max_len` is 4096, or 65535 once both sides advertised the Extended
/// Message capability (values outside 4096..=65535 are clamped). Returns
/// `Ok(None)` while fewer octets than the header announces are available
/// (a bad header is reported as soon as its 19 octets are there), and
/// `Ok(Some((message, consumed)))` otherwise.
pub fn decode(buf: &[u8], max_len: usize) -> Result<Option<(Message, usize)>, DecodeError> {
    let Some(header) = Header::decode(buf, max_len)? else {
        return Ok(None);
    };
    let len = usize::from(header.length);
    let Some(whole) = buf.get(..len) else {
        return Ok(None);
    };
    let body = whole.get(HEADER_LEN..).unwrap_or_default();
    let message = match header.message_type {
        MessageType::Open => Message::Open(OpenMessage::decode(body)?),
        MessageType::Update => Message::Update(
            UpdateMessage::decode(body).map_err(|error| DecodeError::Update { error, message_len: len })?,
        ),
        MessageType::Notification => Message::Notification(NotificationMessage::decode(body)?),
        MessageType::Keepalive => Message::Keepalive(KeepaliveMessage),
        MessageType::RouteRefresh => Message::RouteRefresh(
            RouteRefreshMessage::decode(body)
                .map_err(|error| DecodeError::RouteRefresh { error, message: Bytes::copy_from_slice(whole) })?,
        ),
    };
    Ok(Some((message, len)))
}

/// Appends `message` to `dst` and returns its length.
///
/// Fails, leaving `dst` unchanged, when the message would exceed `max_len`
/// (clamped to 4096..=65535; OPEN and KEEPALIVE are limited to 4096 whatever
/// `max_len` says, RFC 8654 §3) or holds a value the wire format cannot
/// carry.
pub fn encode(message: &Message, max_len: usize, dst: &mut BytesMut) -> Result<usize, EncodeError> {
    let message_type = message.message_type();
    let max = message_type.max_len(max_len).max(header::MAX_MESSAGE_LEN);
    let length = message.encoded_len();
    if length > max {
        return Err(EncodeError::MessageTooLong { message_type, length, max });
    }
    let start = dst.len();
    dst.reserve(length);
    Header { length: length as u16, message_type }.encode(dst);
    let body = match message {
        Message::Open(m) => m.encode_body(dst),
        Message::Update(m) => m.encode_body(dst),
        Message::Notification(m) => {
            m.encode_body(dst);
            Ok(())
        }
        Message::Keepalive(_) => Ok(()),
        Message::RouteRefresh(m) => {
            m.encode_body(dst);
            Ok(())
        }
    };
    if let Err(e) = body {
        dst.truncate(start);
        return Err(e);
    }
    debug_assert_eq!(dst.len() - start, length, "encoded_len of {message_type:?}");
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn sample_messages() -> Vec<Message> {
        let attrs = RouteAttributes {
            as_path: AsPath::sequence([65001, 4_200_000_000]),
            multi_exit_disc: Some(5),
            communities: vec![Community::new(65001, 1)],
            large_communities: vec![LargeCommunity::new(65001, 2, 3)],
            ..Default::default()
        };
        let b = UpdateBuilder::new(4096);
        let mut v = vec![
            Message::Open(
                OpenMessage::new(4_200_000_000, 90, Ipv4Addr::new(192, 0, 2, 1))
                    .with_capability(Capability::Multiprotocol { afi: Afi::IPV6, safi: Safi::UNICAST })
                    .with_capability(Capability::GracefulRestart(GracefulRestartCapability {
                        restart_time: 120,
                        ..Default::default()
                    })),
            ),
            Message::Keepalive(KeepaliveMessage),
            Message::Notification(NotificationMessage::cease_with_communication(2, "maintenance")),
            Message::RouteRefresh(RouteRefreshMessage::new(Afi::IPV4, Safi::UNICAST)),
            Message::Update(UpdateMessage::end_of_rib(Afi::IPV6, Safi::UNICAST)),
        ];
        let v4 = (1..20u32).map(|i| Ipv4Prefix::host(Ipv4Addr::from(0xc000_0200 + i)));
        v.extend(b.announce_ipv4(&attrs, Ipv4Addr::new(192, 0, 2, 254), v4).unwrap().map(Message::Update));
        let v6 = (1..20u128).map(|i| Ipv6Prefix::host((0x2001_0db8_u128 << 96 | i).into()));
        v.extend(
            b.announce_ipv6(&attrs, "2001:db8::1".parse().unwrap(), Some("fe80::1".parse().unwrap()), v6)
                .unwrap()
                .map(Message::Update),
        );
        v
    }

    fn stream() -> (Vec<Message>, Vec<u8>) {
        let msgs = sample_messages();
        let mut b = BytesMut::new();
        for m in &msgs {
            m.encode(4096, &mut b).unwrap();
        }
        (msgs, b.to_vec())
    }

    #[test]
    fn stream_decodes_message_by_message() {
        let (msgs, wire) = stream();
        let mut rest = &wire[..];
        let mut got = Vec::new();
        while let Some((m, n)) = decode(rest, 4096).unwrap() {
            got.push(m);
            rest = &rest[n..];
        }
        assert!(rest.is_empty());
        assert_eq!(got, msgs);
    }

    #[test]
    fn every_truncation_needs_more_bytes() {
        for m in sample_messages() {
            let w = m.to_bytes(4096).unwrap();
            assert_eq!(w.len(), m.encoded_len());
            for cut in 0..w.len() {
                assert_eq!(decode(&w[..cut], 4096), Ok(None), "{m:?} cut at {cut}");
            }
            assert_eq!(decode(&w, 4096), Ok(Some((m, w.len()))));
        }
    }

    #[test]
    fn max_len_is_clamped() {
        let w = Message::Keepalive(KeepaliveMessage).to_bytes(0).unwrap();
        assert_eq!(decode(&w, 0).unwrap().map(|(_, n)| n), Some(19));
        assert_eq!(decode(&w, usize::MAX).unwrap().map(|(_, n)| n), Some(19));
    }

    #[test]
    fn decode_error_builds_the_notification() {
        let mut w = Message::Keepalive(KeepaliveMessage).to_bytes(4096).unwrap().to_vec();
        w[18] = 9;
        let e = decode(&w, 4096).unwrap_err();
        let n = e.to_notification();
        assert_eq!(n, NotificationMessage::new(1, 3, vec![9]));
        assert_eq!(n.to_string(), "Message Header Error / Bad Message Type (1/3), 1 octets of data");
        assert_eq!(e.to_string(), "message header error: bad message type 9");
    }

    /// Decoding then re-encoding a message gives the same message back.
    fn check_canonical(buf: &[u8], max: usize) {
        let mut rest = buf;
        while let Ok(Some((m, n))) = decode(rest, max) {
            assert!(n >= HEADER_LEN && n <= rest.len());
            let again = m.to_bytes(max).expect("a decoded message re-encodes");
            assert_eq!(decode(&again, max), Ok(Some((m, again.len()))));
            rest = &rest[n..];
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), ext: bool) {
            check_canonical(&bytes, if ext { 65535 } else { 4096 });
        }

        #[test]
        fn valid_header_random_body_never_panics(
            message_type in 0u8..=6,
            body in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let len = (HEADER_LEN + body.len()) as u16;
            let w = [&header::MARKER[..], &len.to_be_bytes(), &[message_type], &body].concat();
            check_canonical(&w, 4096);
            if let Err(e) = decode(&w, 4096) {
                let n = e.to_notification();
                prop_assert!((1..=7).contains(&n.code));
            }
        }

        #[test]
        fn corrupted_messages_never_panic(
            pick in 0usize..64,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let (_, wire) = stream();
            let msgs = sample_messages();
            let m = &msgs[pick % msgs.len()];
            let mut w = m.to_bytes(4096).unwrap().to_vec();
            for (i, v) in flips {
                // Keep the marker so the corruption reaches the body.
                let at = HEADER_LEN.min(w.len() - 1) + i.index(w.len() - HEADER_LEN.min(w.len() - 1));
                if let Some(b) = w.get_mut(at) { *b = v; }
            }
            check_canonical(&w, 4096);
            let end = cut.index(w.len() + 1);
            check_canonical(&w[..end], 4096);
            check_canonical(&wire[..cut.index(wire.len() + 1)], 65535);
        }
    }
}

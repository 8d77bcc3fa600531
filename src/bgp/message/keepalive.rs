//! KEEPALIVE message (RFC 4271 §4.4): the 19-octet header and nothing else.

use super::header::HEADER_LEN;

/// A KEEPALIVE message. It has no body; the header check already insists on
/// a total length of exactly 19 octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeepaliveMessage;

impl KeepaliveMessage {
    /// Octets of the whole message.
    pub const fn encoded_len(&self) -> usize {
        HEADER_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Message, decode, encode};
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn golden_keepalive() {
        // Marker (16 x 0xff); length 0x0013 = 19; type 4 (KEEPALIVE).
        let wire: Vec<u8> = [&[0xff; 16][..], &[0x00, 0x13, 0x04]].concat();
        let mut b = BytesMut::new();
        encode(&Message::Keepalive(KeepaliveMessage), 4096, &mut b).unwrap();
        assert_eq!(&b[..], &wire[..]);
        assert_eq!(decode(&wire, 4096).unwrap(), Some((Message::Keepalive(KeepaliveMessage), 19)));
        // Two KEEPALIVEs back to back: the first is decoded, 19 consumed.
        let two = [wire.clone(), wire].concat();
        assert_eq!(decode(&two, 4096).unwrap().map(|(_, n)| n), Some(19));
    }

    #[test]
    fn keepalive_with_a_body_is_a_bad_length() {
        // Length 20 for a KEEPALIVE: Message Header Error / Bad Message Length,
        // data = the length field 0x0014.
        let wire: Vec<u8> = [&[0xff; 16][..], &[0x00, 0x14, 0x04, 0x00]].concat();
        let e = decode(&wire, 4096).unwrap_err();
        assert_eq!((e.code(), e.subcode(), e.data()), (1, 2, vec![0x00, 0x14]));
    }
}

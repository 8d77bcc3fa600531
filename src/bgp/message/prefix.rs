//! Address families (AFI/SAFI) and IP prefixes as carried in NLRI fields.
//!
//! RFC 4271 §4.3 encodes a prefix as a 1-octet length in bits followed by the
//! fewest octets that hold that many bits; RFC 4760 reuses the encoding for
//! MP_REACH_NLRI / MP_UNREACH_NLRI. A /32 takes 5 octets, a /128 takes 17.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};

use super::reader::Reader;

/// Address Family Identifier (IANA "Address Family Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Afi(pub u16);

impl Afi {
    pub const IPV4: Afi = Afi(1);
    pub const IPV6: Afi = Afi(2);
}

/// Subsequent Address Family Identifier (RFC 4760).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Safi(pub u8);

impl Safi {
    pub const UNICAST: Safi = Safi(1);
    pub const MULTICAST: Safi = Safi(2);
}

/// Fault found while reading one prefix from an NLRI field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("prefix length {length} exceeds {max} bits")]
    LengthTooLarge { length: u8, max: u8 },
    #[error("prefix runs past the end of its field")]
    Truncated,
}

/// An IPv4 prefix with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Prefix {
    addr: Ipv4Addr,
    len: u8,
}

impl Ipv4Prefix {
    /// `addr/len`, host bits cleared; `None` when `len > 32`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        (len <= 32).then(|| Self { addr: Ipv4Addr::from_bits(addr.to_bits() & mask_u32(len)), len })
    }

    /// A /32 host route.
    pub const fn host(addr: Ipv4Addr) -> Self {
        Self { addr, len: 32 }
    }

    pub const fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub const fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Octets this prefix takes in an NLRI field (1 length octet + address octets).
    pub const fn encoded_len(&self) -> usize {
        1 + (self.len as usize).div_ceil(8)
    }

    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        encode_prefix(&self.addr.octets(), self.len, dst);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, PrefixError> {
        let (octets, len) = decode_prefix::<4>(r)?;
        Ok(Self { addr: Ipv4Addr::from(octets), len })
    }
}

impl From<Ipv4Addr> for Ipv4Prefix {
    fn from(addr: Ipv4Addr) -> Self {
        Self::host(addr)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An IPv6 prefix with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Prefix {
    addr: Ipv6Addr,
    len: u8,
}

impl Ipv6Prefix {
    /// `addr/len`, host bits cleared; `None` when `len > 128`.
    pub fn new(addr: Ipv6Addr, len: u8) -> Option<Self> {
        (len <= 128).then(|| Self { addr: Ipv6Addr::from_bits(addr.to_bits() & mask_u128(len)), len })
    }

    /// A /128 host route.
    pub const fn host(addr: Ipv6Addr) -> Self {
        Self { addr, len: 128 }
    }

    pub const fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    pub const fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Octets this prefix takes in an NLRI field (1 length octet + address octets).
    pub const fn encoded_len(&self) -> usize {
        1 + (self.len as usize).div_ceil(8)
    }

    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        encode_prefix(&self.addr.octets(), self.len, dst);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, PrefixError> {
        let (octets, len) = decode_prefix::<16>(r)?;
        Ok(Self { addr: Ipv6Addr::from(octets), len })
    }
}

impl From<Ipv6Addr> for Ipv6Prefix {
    fn from(addr: Ipv6Addr) -> Self {
        Self::host(addr)
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn mask_u32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0)
}

fn mask_u128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0)
}

fn encode_prefix(octets: &[u8], len: u8, dst: &mut BytesMut) {
    let n = usize::from(len).div_ceil(8).min(octets.len());
    dst.put_u8(len);
    dst.put_slice(octets.get(..n).unwrap_or(octets));
}

/// Reads one `<length, prefix>` pair; trailing bits past `length` are
/// cleared (RFC 4271: "the value of trailing bits is irrelevant").
fn decode_prefix<const N: usize>(r: &mut Reader<'_>) -> Result<([u8; N], u8), PrefixError> {
    let max_bits = (N * 8) as u8;
    let len = r.u8().ok_or(PrefixError::Truncated)?;
    if len > max_bits {
        return Err(PrefixError::LengthTooLarge { length: len, max: max_bits });
    }
    let n = usize::from(len).div_ceil(8);
    let bytes = r.take(n).ok_or(PrefixError::Truncated)?;
    let mut octets = [0u8; N];
    if let Some(dst) = octets.get_mut(..n) {
        dst.copy_from_slice(bytes);
    }
    let spare_bits = n * 8 - usize::from(len);
    if spare_bits > 0
        && let Some(last) = n.checked_sub(1).and_then(|i| octets.get_mut(i))
    {
        *last &= 0xffu8 << spare_bits;
    }
    Ok((octets, len))
}

/// Reads a whole field of IPv4 prefixes.
pub(crate) fn decode_ipv4_prefixes(field: &[u8]) -> Result<Vec<Ipv4Prefix>, PrefixError> {
    let mut r = Reader::new(field);
    // Each prefix takes at least one octet: bound the allocation by the field.
    let mut out = Vec::with_capacity(field.len().min(1024));
    while !r.is_empty() {
        out.push(Ipv4Prefix::decode(&mut r)?);
    }
    Ok(out)
}

/// Reads a whole field of IPv6 prefixes.
pub(crate) fn decode_ipv6_prefixes(field: &[u8]) -> Result<Vec<Ipv6Prefix>, PrefixError> {
    let mut r = Reader::new(field);
    let mut out = Vec::with_capacity(field.len().min(1024));
    while !r.is_empty() {
        out.push(Ipv6Prefix::decode(&mut r)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_prefix_encodings() {
        let mut b = BytesMut::new();
        // 192.0.2.1/32: length 32 (0x20), then all four octets.
        Ipv4Prefix::host(Ipv4Addr::new(192, 0, 2, 1)).encode(&mut b);
        // 10.0.0.0/8: length 8, one octet.
        Ipv4Prefix::new(Ipv4Addr::new(10, 1, 2, 3), 8).unwrap().encode(&mut b);
        // 0.0.0.0/0: length 0, no octets.
        Ipv4Prefix::new(Ipv4Addr::UNSPECIFIED, 0).unwrap().encode(&mut b);
        // 2001:db8:8000::/33 (from 2001:db8:ffff::, host bits cleared): length
        // 33 (0x21), five octets 20 01 0d b8 80.
        Ipv6Prefix::new("2001:db8:ffff::".parse().unwrap(), 33).unwrap().encode(&mut b);
        assert_eq!(
            &b[..],
            &[
                0x20, 192, 0, 2, 1, //
                0x08, 10,   //
                0x00, //
                0x21, 0x20, 0x01, 0x0d, 0xb8, 0x80,
            ]
        );
    }

    #[test]
    fn decode_clears_trailing_bits_and_rejects_bad_lengths() {
        // 10.255.0.0/9 encoded with junk trailing bits in the second octet.
        let p = decode_ipv4_prefixes(&[9, 10, 0xff]).unwrap();
        assert_eq!(p, vec![Ipv4Prefix::new(Ipv4Addr::new(10, 128, 0, 0), 9).unwrap()]);
        assert_eq!(
            decode_ipv4_prefixes(&[33, 1, 2, 3, 4, 5]),
            Err(PrefixError::LengthTooLarge { length: 33, max: 32 })
        );
        assert_eq!(decode_ipv4_prefixes(&[32, 1, 2, 3]), Err(PrefixError::Truncated));
        assert_eq!(decode_ipv6_prefixes(&[129]), Err(PrefixError::LengthTooLarge { length: 129, max: 128 }));
        assert_eq!(decode_ipv6_prefixes(&[]), Ok(vec![]));
    }

    #[test]
    fn constructors_mask_and_bound() {
        assert_eq!(Ipv4Prefix::new(Ipv4Addr::LOCALHOST, 33), None);
        assert_eq!(Ipv6Prefix::new(Ipv6Addr::LOCALHOST, 129), None);
        let p = Ipv4Prefix::new(Ipv4Addr::new(192, 0, 2, 77), 24).unwrap();
        assert_eq!(p.to_string(), "192.0.2.0/24");
        assert_eq!(p.encoded_len(), 4);
        assert_eq!(Ipv6Prefix::host(Ipv6Addr::LOCALHOST).encoded_len(), 17);
    }
}

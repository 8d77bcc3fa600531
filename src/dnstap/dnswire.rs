//! A zero-allocation scan of a DNS message for the hot path.
//!
//! Every frame pays for this, so it only walks the question and the answer
//! section, decoding each owner name and CNAME target into a reusable
//! [`NameBuf`] and handing it to the caller, who matches it against the
//! lists. Full parsing (records, TTLs, addresses) is left to hickory-proto
//! and only happens for the few responses that matched: hickory builds
//! name strings and vectors and costs ~2 µs a message (NOTES.md), which is
//! over the whole per-frame budget of 1 µs.
//!
//! Compression pointers are followed only backwards and at most 64 times,
//! so hostile input cannot loop; every offset is bounds-checked.

use crate::names::NameBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message shorter than a DNS header")]
    ShortHeader,
    #[error("name runs past the end of the message")]
    NameTruncated,
    #[error("compression pointer loop or forward pointer")]
    BadPointer,
    #[error("bad label type")]
    BadLabel,
    #[error("name too long")]
    NameTooLong,
    #[error("record runs past the end of the message")]
    RecordTruncated,
    #[error("more than one question")]
    TooManyQuestions,
}

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;

/// What the scan learned besides the names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanSummary {
    pub id: u16,
    pub is_response: bool,
    pub rcode: u8,
    pub qtype: u16,
    pub answers: u16,
    /// Whether the answer section holds an A or AAAA record.
    pub has_addresses: bool,
}

fn be16(msg: &[u8], at: usize) -> Option<u16> {
    let b = msg.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Decodes the name at `pos` into `out`; returns the offset after the name
/// in the original position and the offset its first label really lives at
/// (after following a leading pointer), which identifies the name.
pub fn read_name(msg: &[u8], mut pos: usize, out: &mut NameBuf) -> Result<(usize, usize), WireError> {
    out.clear();
    let mut end = None;
    let mut identity = None;
    let mut hops = 0;
    loop {
        let len = *msg.get(pos).ok_or(WireError::NameTruncated)? as usize;
        match len & 0xC0 {
            0x00 => {
                if identity.is_none() {
                    identity = Some(pos);
                }
                if len == 0 {
                    let after = end.unwrap_or(pos + 1);
                    return Ok((after, identity.unwrap_or(pos)));
                }
                let label = msg.get(pos + 1..pos + 1 + len).ok_or(WireError::NameTruncated)?;
                out.push_label(label).map_err(|_| WireError::NameTooLong)?;
                pos += 1 + len;
            }
            0xC0 => {
                let target = (be16(msg, pos).ok_or(WireError::NameTruncated)? & 0x3FFF) as usize;
                hops += 1;
                if target >= pos || hops > 64 {
                    return Err(WireError::BadPointer);
                }
                if end.is_none() {
                    end = Some(pos + 2);
                }
                pos = target;
            }
            _ => return Err(WireError::BadLabel),
        }
    }
}

/// Walks the question and the answer section. `visit` is called with each
/// distinct name (question name, answer owner names, CNAME targets) and
/// returns `true` to stop early (a match was found; the caller parses
/// fully anyway). The same name written twice through compression is
/// visited once.
pub fn scan(msg: &[u8], name: &mut NameBuf, mut visit: impl FnMut(&NameBuf) -> bool) -> Result<ScanSummary, WireError> {
    if msg.len() < 12 {
        return Err(WireError::ShortHeader);
    }
    let mut summary = ScanSummary {
        id: be16(msg, 0).unwrap_or(0),
        is_response: msg[2] & 0x80 != 0,
        rcode: msg[3] & 0x0F,
        ..ScanSummary::default()
    };
    let qdcount = be16(msg, 4).unwrap_or(0);
    let ancount = be16(msg, 6).unwrap_or(0);
    summary.answers = ancount;
    if qdcount > 1 {
        return Err(WireError::TooManyQuestions);
    }
    // Names already visited, by the offset of their first label.
    let mut seen = [usize::MAX; 8];
    let mut seen_len = 0;
    let mut stopped = false;
    let mut check = |name: &NameBuf, identity: usize, stopped: &mut bool| {
        if *stopped || seen[..seen_len].contains(&identity) {
            return;
        }
        if seen_len < seen.len() {
            seen[seen_len] = identity;
            seen_len += 1;
        }
        *stopped = visit(name);
    };
    let mut pos = 12;
    if qdcount == 1 {
        let (after, identity) = read_name(msg, pos, name)?;
        summary.qtype = be16(msg, after).ok_or(WireError::RecordTruncated)?;
        if after + 4 > msg.len() {
            return Err(WireError::RecordTruncated);
        }
        pos = after + 4;
        check(name, identity, &mut stopped);
    }
    for _ in 0..ancount {
        let (after, identity) = read_name(msg, pos, name)?;
        let fixed = msg.get(after..after + 10).ok_or(WireError::RecordTruncated)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        let rdata = after + 10;
        if rdata + rdlen > msg.len() {
            return Err(WireError::RecordTruncated);
        }
        if rtype == TYPE_A || rtype == TYPE_AAAA {
            summary.has_addresses = true;
        }
        check(name, identity, &mut stopped);
        if rtype == TYPE_CNAME {
            let (_, target) = read_name(msg, rdata, name)?;
            check(name, target, &mut stopped);
        }
        pos = rdata + rdlen;
    }
    Ok(summary)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A response built by hand: id 0x1234, QR|RD|RA, NOERROR, 1 question,
    /// 2 answers: `WWW.Example.com. A` → `www.example.com. CNAME
    /// edge.cdn.test.` (owner by pointer to the qname at 12) and
    /// `edge.cdn.test. A 192.0.2.1` (owner by pointer to the CNAME rdata).
    pub(crate) fn sample() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03WWW\x07Example\x03com\x00\x00\x01\x00\x01");
        // answer 1: owner ptr 0xC00C, CNAME, IN, ttl 300, rdlen 15
        m.extend_from_slice(&[0xC0, 0x0C, 0, 5, 0, 1, 0, 0, 1, 44, 0, 15]);
        let cname_at = m.len();
        m.extend_from_slice(b"\x04edge\x03cdn\x04test\x00");
        // answer 2: owner ptr to the CNAME target, A, IN, ttl 60, rdlen 4
        m.extend_from_slice(&[0xC0, cname_at as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        m
    }

    #[test]
    fn scan_visits_each_distinct_name_once() {
        let msg = sample();
        let mut buf = NameBuf::new();
        let mut names = Vec::new();
        let s = scan(&msg, &mut buf, |n| {
            names.push(n.to_string());
            false
        })
        .unwrap();
        assert_eq!(names, vec!["www.example.com", "edge.cdn.test"]);
        assert_eq!(s.qtype, 1);
        assert_eq!(s.answers, 2);
        assert!(s.is_response && s.has_addresses);
        assert_eq!(s.rcode, 0);
    }

    #[test]
    fn early_stop() {
        let msg = sample();
        let mut buf = NameBuf::new();
        let mut calls = 0;
        scan(&msg, &mut buf, |_| {
            calls += 1;
            true
        })
        .unwrap();
        assert_eq!(calls, 1);
    }

    #[test]
    fn hostile_messages_are_errors() {
        let mut buf = NameBuf::new();
        assert_eq!(scan(&[0; 5], &mut buf, |_| false), Err(WireError::ShortHeader));
        let msg = sample();
        for cut in 12..msg.len() {
            assert!(scan(&msg[..cut], &mut buf, |_| false).is_err(), "cut at {cut}");
        }
        // A pointer to itself.
        let mut m = vec![0, 0, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1];
        assert_eq!(scan(&m, &mut buf, |_| false), Err(WireError::BadPointer));
        // A forward pointer.
        m[13] = 14;
        assert_eq!(scan(&m, &mut buf, |_| false), Err(WireError::BadPointer));
        // Label type 0x40.
        m[12] = 0x40;
        assert_eq!(scan(&m, &mut buf, |_| false), Err(WireError::BadLabel));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let mut buf = NameBuf::new();
            let _ = scan(&bytes, &mut buf, |_| false);
        }

        #[test]
        fn mutations_of_a_real_message_never_panic(at in 0usize..64, byte in proptest::prelude::any::<u8>()) {
            let mut msg = sample();
            let i = at % msg.len();
            msg[i] = byte;
            let mut buf = NameBuf::new();
            let _ = scan(&msg, &mut buf, |_| false);
        }
    }
}

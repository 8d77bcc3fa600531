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

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::names::{MAX_LABELS, MAX_NAME_TEXT, NameBuf};
use crate::observation::{Answer, AnswerData};

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

/// [`read_name`] without decoding: the same checks and errors, the same
/// `(after, identity)`, but nothing is copied. The scan uses it to find a
/// name's identity before deciding whether the name needs decoding at all
/// (answer owners are usually pointers to a name already visited).
pub fn skip_name(msg: &[u8], mut pos: usize) -> Result<(usize, usize), WireError> {
    let mut end = None;
    let mut identity = None;
    let mut hops = 0;
    // As `NameBuf::push_label` counts: text length and labels.
    let mut text = 0usize;
    let mut labels = 0usize;
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
                if pos + 1 + len > msg.len() {
                    return Err(WireError::NameTruncated);
                }
                let sep = usize::from(labels > 0);
                if text + sep + len > MAX_NAME_TEXT - 2 || labels == MAX_LABELS {
                    return Err(WireError::NameTooLong);
                }
                text += sep + len;
                labels += 1;
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
    // Names already visited, by the offset of their first label. A name is
    // decoded only to be visited: once the visitor has stopped, or when
    // its identity was visited already, `skip_name` checks it instead.
    let mut seen = [usize::MAX; 8];
    let mut seen_len = 0;
    let mut stopped = false;
    let mut check = |at: usize, identity: usize, name: &mut NameBuf| -> Result<(), WireError> {
        if stopped || seen[..seen_len].contains(&identity) {
            return Ok(());
        }
        if seen_len < seen.len() {
            seen[seen_len] = identity;
            seen_len += 1;
        }
        read_name(msg, at, name)?;
        stopped = visit(name);
        Ok(())
    };
    let mut pos = 12;
    if qdcount == 1 {
        let (after, identity) = skip_name(msg, pos)?;
        summary.qtype = be16(msg, after).ok_or(WireError::RecordTruncated)?;
        if after + 4 > msg.len() {
            return Err(WireError::RecordTruncated);
        }
        check(pos, identity, name)?;
        pos = after + 4;
    }
    for _ in 0..ancount {
        let (after, identity) = skip_name(msg, pos)?;
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
        check(pos, identity, name)?;
        if rtype == TYPE_CNAME {
            let (_, target) = skip_name(msg, rdata)?;
            check(rdata, target, name)?;
        }
        pos = rdata + rdlen;
    }
    Ok(summary)
}

/// The question and the address and CNAME answers of a response, as
/// [`Observation::parse`](super::Observation::parse) would report them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleResponse {
    pub qname: String,
    pub qtype: u16,
    pub rcode: u8,
    pub answers: Vec<Answer>,
}

/// Decodes the common shape of a resolver's answer without hickory-proto:
/// QUERY opcode, one question, an answer section of A, AAAA and CNAME
/// records, no authority records, at most an empty EDNS OPT record, nothing
/// after it, and names of letters, digits, `-` and `_`. For such a message
/// the result is what `Observation::parse` gives (hickory decodes the same
/// names with the same rules, see [`hickory_name`]); for anything else
/// (another record type, an unusual name, a pointer hickory would refuse,
/// an rdata length it would reject) it is `None` and the caller asks
/// hickory. It never accepts a message hickory rejects.
pub fn parse_simple(msg: &[u8]) -> Option<SimpleResponse> {
    if msg.len() < 12 || (msg[2] >> 3) & 0x0F != 0 {
        return None;
    }
    let count = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
    let (qdcount, ancount, nscount, arcount) = (count(4), count(6), count(8), count(10));
    if qdcount != 1 || nscount != 0 || arcount > 1 {
        return None;
    }
    let mut qname = String::new();
    let after = hickory_name(msg, 12, &mut qname)?;
    let qtype = be16(msg, after)?;
    be16(msg, after + 2)?;
    let mut pos = after + 4;
    let mut answers = Vec::with_capacity(usize::from(ancount));
    for _ in 0..ancount {
        let mut name = String::new();
        let after = hickory_name(msg, pos, &mut name)?;
        let fixed = msg.get(after..after + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let rdata = after + 10;
        let rd = msg.get(rdata..rdata + rdlen)?;
        let data = match (rtype, rdlen) {
            (TYPE_A, 4) => AnswerData::A(Ipv4Addr::new(rd[0], rd[1], rd[2], rd[3])),
            (TYPE_AAAA, 16) => AnswerData::Aaaa(Ipv6Addr::from(<[u8; 16]>::try_from(rd).ok()?)),
            (TYPE_CNAME, 1..) => {
                let mut target = String::new();
                if hickory_name(msg, rdata, &mut target)? != rdata + rdlen {
                    return None;
                }
                AnswerData::Cname(target)
            }
            _ => return None,
        };
        answers.push(Answer { name, ttl, data });
        pos = rdata + rdlen;
    }
    if arcount == 1 {
        // OPT: the root name, type 41, any class (payload size) and TTL
        // (extended rcode, version, flags), no options.
        let opt = msg.get(pos..pos + 11)?;
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[9..11] != [0, 0] {
            return None;
        }
        pos += 11;
    }
    if pos != msg.len() {
        return None;
    }
    Some(SimpleResponse { qname, qtype, rcode: msg[3] & 0x0F, answers })
}

/// Decodes the name at `pos` as hickory-proto's `Name::read` does, into
/// lowercase text without the trailing dot (as `decode::name_text`
/// prints it), and returns the offset after it; `None` when hickory would
/// reject the name or print it differently:
///
/// * a pointer must point before the start of the name (or of the part
///   reached through the previous pointer), and after a jump, reading must
///   stay before where that part started;
/// * at most 255 bytes encoded;
/// * only letters, digits, `_`, and `-` not first in a label (hickory
///   prints everything else escaped).
pub fn hickory_name(msg: &[u8], pos: usize, out: &mut String) -> Option<usize> {
    // The text is built in place and copied into `out` once.
    let mut text = [0u8; 256];
    let mut len = 0;
    let mut at = pos;
    let mut name_start = pos;
    let mut limit = usize::MAX;
    let mut after = None;
    loop {
        if at >= limit {
            return None;
        }
        let b = *msg.get(at)?;
        match b & 0xC0 {
            0x00 if b == 0 => {
                // Only ASCII letters, digits, '-', '_' and '.' were written.
                out.push_str(std::str::from_utf8(&text[..len]).ok()?);
                return Some(after.unwrap_or(at + 1));
            }
            0x00 => {
                let n = usize::from(b);
                let label = msg.get(at + 1..at + 1 + n)?;
                // hickory's limit: 255 bytes encoded, that is 253 of text.
                let sep = usize::from(len > 0);
                if len + sep + n > 253 || label[0] == b'-' {
                    return None;
                }
                if sep == 1 {
                    text[len] = b'.';
                    len += 1;
                }
                for (dst, &c) in text[len..len + n].iter_mut().zip(label) {
                    if !(c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
                        return None;
                    }
                    *dst = c.to_ascii_lowercase();
                }
                len += n;
                at += 1 + n;
            }
            0xC0 => {
                let target = usize::from(be16(msg, at)? & 0x3FFF);
                if target >= name_start {
                    return None;
                }
                after.get_or_insert(at + 2);
                limit = name_start;
                name_start = target;
                at = target;
            }
            _ => return None,
        }
    }
}

/// The header and question of a message, for the blocking engine: what
/// every client query and response costs when blocking is on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Question {
    pub rcode: u8,
    pub answers: u16,
    /// No question section (qtype 0, no name).
    pub empty: bool,
    pub qtype: u16,
}

/// Reads the header and the question; decodes the question name into
/// `name` only when `decode_name(rcode, answers)` says so (otherwise the
/// name is only checked and skipped).
pub fn question(
    msg: &[u8],
    name: &mut NameBuf,
    decode_name: impl FnOnce(u8, u16) -> bool,
) -> Result<(Question, bool), WireError> {
    if msg.len() < 12 {
        return Err(WireError::ShortHeader);
    }
    let qdcount = be16(msg, 4).unwrap_or(0);
    let mut q = Question { rcode: msg[3] & 0x0F, answers: be16(msg, 6).unwrap_or(0), ..Question::default() };
    if qdcount == 0 {
        q.empty = true;
        return Ok((q, false));
    }
    if qdcount > 1 {
        return Err(WireError::TooManyQuestions);
    }
    let decoded = decode_name(q.rcode, q.answers);
    let (after, _) = if decoded { read_name(msg, 12, name)? } else { skip_name(msg, 12)? };
    if after + 4 > msg.len() {
        return Err(WireError::RecordTruncated);
    }
    q.qtype = be16(msg, after).ok_or(WireError::RecordTruncated)?;
    Ok((q, decoded))
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

    /// The scan as it was before `skip_name` (decode every name, then
    /// check its identity), kept to check the faster one against.
    fn scan_reference(
        msg: &[u8],
        name: &mut NameBuf,
        mut visit: impl FnMut(&NameBuf) -> bool,
    ) -> Result<ScanSummary, WireError> {
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

    /// `sample` plus a CNAME from `edge.cdn.test` (through a pointer to a
    /// pointer) to `x.www.example.com` and an AAAA record of
    /// `example.com`, off the chain.
    fn longer_sample() -> Vec<u8> {
        let mut msg = sample();
        msg[7] = 4;
        let target = msg.len() - 16;
        msg.extend_from_slice(&[0xC0, target as u8, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4]);
        msg.extend_from_slice(b"\x01x\xC0\x0C");
        msg.extend_from_slice(&[0xC0, 0x10, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16]);
        msg.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        msg
    }

    #[test]
    fn longer_sample_scans() {
        let msg = longer_sample();
        let mut buf = NameBuf::new();
        let mut names = Vec::new();
        let s = scan(&msg, &mut buf, |n| {
            names.push(n.to_string());
            false
        })
        .unwrap();
        assert_eq!(names, ["www.example.com", "edge.cdn.test", "x.www.example.com", "example.com"]);
        assert_eq!(s.answers, 4);
        both_scans(&msg, 0);
        both_scans(&msg, 2);
    }

    /// Both scans' results and visits; `stop_at` stops the visitor at
    /// that visit.
    fn both_scans(msg: &[u8], stop_at: usize) {
        let mut buf = NameBuf::new();
        let mut fast = Vec::new();
        let a = scan(msg, &mut buf, |n| {
            fast.push(n.to_string());
            fast.len() == stop_at
        });
        let mut slow = Vec::new();
        let b = scan_reference(msg, &mut buf, |n| {
            slow.push(n.to_string());
            slow.len() == stop_at
        });
        assert_eq!(a, b, "{msg:02x?}");
        assert_eq!(fast, slow, "{msg:02x?}");
    }

    #[test]
    fn skip_name_agrees_with_read_name_on_long_names() {
        // 127 one-byte labels (too long as text), 126 (fits), pointer chains.
        for labels in [120usize, 126, 127, 128] {
            let mut m = vec![0u8; 12];
            for _ in 0..labels {
                m.extend_from_slice(b"\x01a");
            }
            m.push(0);
            let mut buf = NameBuf::new();
            assert_eq!(skip_name(&m, 12), read_name(&m, 12, &mut buf), "{labels} labels");
        }
        let mut m = sample();
        let at = m.len();
        m.extend_from_slice(&[0xC0, 12]);
        for i in 0..70 {
            let prev = at + 2 * i;
            m.extend_from_slice(&[0xC0 | (prev >> 8) as u8, prev as u8]);
        }
        let mut buf = NameBuf::new();
        for pos in at..m.len() {
            assert_eq!(skip_name(&m, pos), read_name(&m, pos, &mut buf), "at {pos}");
        }
    }

    /// hickory's view, through `Observation::parse`.
    fn by_hickory(msg: &[u8]) -> Option<SimpleResponse> {
        let m = crate::dnstap::proto::Message::default();
        let o = crate::dnstap::Observation::parse(&m, crate::dnstap::MessageType::ClientResponse, msg, 0).ok()?;
        Some(SimpleResponse { qname: o.qname, qtype: o.qtype, rcode: o.rcode, answers: o.answers })
    }

    /// The fast parse, where it answers, must agree with hickory.
    fn agrees(msg: &[u8]) -> bool {
        match parse_simple(msg) {
            Some(fast) => {
                assert_eq!(Some(&fast), by_hickory(msg).as_ref(), "{msg:02x?}");
                true
            }
            None => false,
        }
    }

    /// Random responses of every shape `parse_simple` must get right or
    /// decline: odd label bytes, upper case, compression (also pointers
    /// hickory refuses), record types and rdata lengths, OPT records with
    /// and without options, authority records, trailing bytes.
    pub(crate) fn random_response(seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut m = vec![(next() >> 8) as u8, next() as u8, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        if next().is_multiple_of(16) {
            m[2] |= ((next() % 16) as u8) << 3; // opcode
        }
        m[3] |= (next() % 6) as u8; // rcode
        let mut names: Vec<usize> = Vec::new();
        let mut name = |m: &mut Vec<u8>, next: &mut dyn FnMut() -> u64| {
            let start = m.len();
            for _ in 0..1 + next() % 4 {
                if !names.is_empty() && next().is_multiple_of(4) {
                    let to = names[(next() % names.len() as u64) as usize];
                    let to = if next().is_multiple_of(12) { to + 1 + (next() % 3) as usize } else { to };
                    m.extend_from_slice(&[0xC0 | (to >> 8) as u8, to as u8]);
                    names.push(start);
                    return;
                }
                let len = match next() % 20 {
                    0 => 63,
                    1 => 0,
                    _ => 1 + next() % 10,
                };
                if len == 0 {
                    break;
                }
                m.push(len as u8);
                for _ in 0..len {
                    let c = match next() % 30 {
                        0 => b'-',
                        1 => b'_',
                        2 if next().is_multiple_of(8) => {
                            [b' ', b'.', b'*', b'\\', 0xFF, 0x00, b'@'][(next() % 7) as usize]
                        }
                        3..=8 => b'A' + (next() % 26) as u8,
                        9..=12 => b'0' + (next() % 10) as u8,
                        _ => b'a' + (next() % 26) as u8,
                    };
                    m.push(c);
                }
            }
            m.push(0);
            names.push(start);
        };
        name(&mut m, &mut next);
        let qtype = [1u16, 28, 5, 15, 65, 0, 255][(next() % 7) as usize];
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        let mut record = |m: &mut Vec<u8>, next: &mut dyn FnMut() -> u64, opt: bool| {
            if opt {
                m.push(0);
            } else {
                name(m, next);
            }
            let rtype: u16 = if opt { 41 } else { [1, 1, 1, 28, 28, 5, 5, 16, 41, 46, 0][(next() % 11) as usize] };
            m.extend_from_slice(&rtype.to_be_bytes());
            m.extend_from_slice(&[0x04, 0xD0, 0, 0, (next() % 4) as u8, 0x2C]);
            let len_at = m.len();
            m.extend_from_slice(&[0, 0]);
            let start = m.len();
            match rtype {
                1 => m.extend_from_slice(&[198, 51, 100, (next() % 256) as u8]),
                28 => m.extend_from_slice(&[
                    0x20,
                    0x01,
                    0x0d,
                    0xb8,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    (next() % 256) as u8,
                ]),
                5 => name(m, next),
                41 if next().is_multiple_of(2) => m.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]),
                41 => {}
                _ => m.extend_from_slice(&[3, b'a', b'b', b'c']),
            }
            let mut len = m.len() - start;
            match next() % 16 {
                0 => len += 1,
                1 => len = len.saturating_sub(1),
                2 => len = 0,
                _ => {}
            }
            m[len_at..len_at + 2].copy_from_slice(&(len as u16).to_be_bytes());
        };
        let an = next() % 5;
        for _ in 0..an {
            record(&mut m, &mut next, false);
        }
        m[7] = an as u8;
        if next().is_multiple_of(8) {
            record(&mut m, &mut next, false);
            m[9] = 1;
        }
        let ar = [0u8, 1, 1, 1, 2][(next() % 5) as usize];
        for i in 0..ar {
            let opt = i == 0 && next() % 6 != 0;
            record(&mut m, &mut next, opt);
        }
        m[11] = ar;
        if next().is_multiple_of(10) {
            m.push(0);
        }
        if next().is_multiple_of(4) {
            let i = (next() % m.len() as u64) as usize;
            m[i] = next() as u8;
        }
        m
    }

    #[test]
    fn parse_simple_agrees_with_hickory_on_typical_answers() {
        // The sample (uppercase question, pointer to a pointer target).
        assert!(agrees(&sample()));
        assert!(agrees(&longer_sample()));
        // With an empty OPT record.
        let mut m = sample();
        m[11] = 1;
        m.extend_from_slice(&[0, 0, 41, 4, 0xD0, 0, 0, 0x80, 0, 0, 0]);
        assert!(agrees(&m));
        // Declined: OPT with an option, an authority record, trailing bytes.
        let mut opt = m.clone();
        opt.truncate(opt.len() - 2);
        opt.extend_from_slice(&[0, 4, 0, 8, 0, 0]);
        assert!(!agrees(&opt));
        let mut tail = m.clone();
        tail.push(0);
        assert!(!agrees(&tail));
    }

    #[test]
    fn parse_simple_agrees_with_hickory_on_random_responses() {
        let mut accepted = 0;
        for seed in 1..30_000u64 {
            let m = random_response(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            if agrees(&m) {
                accepted += 1;
            }
        }
        // Enough of them take the fast path for the comparison to mean something.
        assert!(accepted > 2_000, "only {accepted} accepted");
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

        #[test]
        fn skip_name_agrees_with_read_name(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut buf = NameBuf::new();
            for pos in 0..bytes.len() {
                proptest::prop_assert_eq!(skip_name(&bytes, pos), read_name(&bytes, pos, &mut buf));
            }
        }

        #[test]
        fn scan_agrees_with_the_reference_scan(
            edits in proptest::collection::vec((0usize..128, proptest::prelude::any::<u8>()), 0..4),
            stop_at in 0usize..4,
        ) {
            let mut msg = longer_sample();
            for (at, byte) in edits {
                let i = at % msg.len();
                msg[i] = byte;
            }
            both_scans(&msg, stop_at);
        }

        #[test]
        fn scan_agrees_with_the_reference_scan_on_arbitrary_bytes(
            mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 12..200),
        ) {
            // Plausible counts, so that the sections get walked.
            bytes[4] = 0;
            bytes[5] = 1;
            bytes[6] = 0;
            bytes[7] %= 6;
            both_scans(&bytes, 0);
        }
    }
}

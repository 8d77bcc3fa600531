//! The hot path: one dnstap frame → counters, and for the few frames that
//! matter, routes.
//!
//! Per frame: protobuf decode (zero-copy `Bytes` fields), a counter, an
//! allocation-free scan of the DNS names with a list lookup for each. Only a
//! response naming something a list claims (or a remembered CNAME target)
//! is parsed fully and applied to the route table.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use prost::Message as _;

use super::dnswire;
use super::proto;
use crate::blocking::engine::TapFactory;
use crate::blocking::tap::Tap;
use crate::clock::UnixMillis;
use crate::lists::Lists;
use crate::metrics::{ListLabel, Metrics};
use crate::names::NameBuf;
use crate::observation::MessageType;
use crate::observation::Observation;
use crate::observation::Sighting;
use crate::routes::ingest::Ingest;

/// What became of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOutcome {
    /// A message type not configured, or a frame without a message.
    Ignored,
    /// Parsed; nothing in it is listed.
    NoMatch,
    /// A listed name; applied to the route table.
    Matched,
    /// The payload is not a dnstap protobuf.
    BadDnstap,
    /// The DNS message is missing or malformed.
    BadDns,
}

pub struct Pipeline {
    lists: Arc<ArcSwap<Lists>>,
    ingest: Arc<Ingest>,
    metrics: Arc<Metrics>,
    /// Bit `t` set when message type `t` is used.
    types: u32,
    /// The blocking engine's taps, when `[blocking]` is configured.
    blocking: Option<TapFactory>,
}

/// What one connection keeps between frames: the scratch name buffers and,
/// with blocking on, its tap into the engine.
pub struct Scratch {
    pub name: NameBuf,
    qname: NameBuf,
    tap: Option<Tap>,
}

impl Pipeline {
    pub fn new(
        lists: Arc<ArcSwap<Lists>>,
        ingest: Arc<Ingest>,
        metrics: Arc<Metrics>,
        types: &[MessageType],
    ) -> Pipeline {
        let types = types.iter().fold(0u32, |m, t| m | 1 << (*t as u32));
        Pipeline { lists, ingest, metrics, types, blocking: None }
    }

    /// Hands every CLIENT_QUERY and CLIENT_RESPONSE to the blocking engine.
    pub fn with_blocking(mut self, taps: TapFactory) -> Pipeline {
        self.blocking = Some(taps);
        self
    }

    /// The per-connection state (registers a tap with the engine).
    pub fn scratch(&self) -> Scratch {
        Scratch { name: NameBuf::new(), qname: NameBuf::new(), tap: self.blocking.as_ref().map(TapFactory::tap) }
    }

    /// Handles one data frame of a connection.
    #[inline]
    pub fn handle_in(&self, frame: Bytes, scratch: &mut Scratch) -> FrameOutcome {
        match scratch.tap.as_mut() {
            None => self.handle(frame, &mut scratch.name),
            Some(tap) => self.handle_inner(frame, &mut scratch.name, Some((tap, &mut scratch.qname))),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Handles one data frame (routes only). `name` is the caller's
    /// scratch buffer.
    pub fn handle(&self, frame: Bytes, name: &mut NameBuf) -> FrameOutcome {
        self.handle_inner(frame, name, None)
    }

    #[inline(always)]
    fn handle_inner(
        &self,
        frame: Bytes,
        name: &mut NameBuf,
        blocking: Option<(&mut Tap, &mut NameBuf)>,
    ) -> FrameOutcome {
        // Most frames name nothing listed: for them the protobuf is only
        // walked in place (no `Bytes` handles, no atomics), and decoded
        // with prost only once the frame matched.
        let Ok(peek) = peek::peek(&frame) else {
            self.metrics.reject("protobuf");
            return FrameOutcome::BadDnstap;
        };
        if !peek.message {
            self.metrics.frame(None).inc();
            return FrameOutcome::Ignored;
        }
        let mtype = MessageType::from_i32(peek.mtype);
        self.metrics.frame(mtype).inc();
        let Some(mtype) = mtype else { return FrameOutcome::Ignored };
        let routed = self.types & (1 << (mtype as u32)) != 0;
        if let Some((tap, qname)) = blocking
            && matches!(mtype, MessageType::ClientQuery | MessageType::ClientResponse)
        {
            self.sight(&frame, &peek, mtype, tap, qname, routed);
        }
        if !routed {
            return FrameOutcome::Ignored;
        }
        let dns = if mtype.is_response() { peek.response } else { peek.query };
        let Some(dns) = dns else {
            self.metrics.dns_parse_errors.inc();
            return FrameOutcome::BadDns;
        };
        let dns = &frame[dns.0..dns.1];
        let lists = self.lists.load();
        let mut hit = false;
        let summary = dnswire::scan(dns, name, |n| {
            hit = self.ingest.interesting(&lists, n);
            hit
        });
        let summary = match summary {
            Ok(s) => s,
            Err(_) => {
                self.metrics.dns_parse_errors.inc();
                return FrameOutcome::BadDns;
            }
        };
        if !hit || summary.answers == 0 {
            return FrameOutcome::NoMatch;
        }
        let now = self.ingest.table().clock().now();
        let obs = match dnswire::parse_simple(dns) {
            // The common shape of an answer: no prost, no hickory.
            Some(simple) => fast_observation(&frame, &peek, mtype, simple, dns.len(), now),
            None => {
                // `peek` accepts exactly what prost accepts (see its
                // tests), so this decode does not fail; if it did, the
                // frame is bad dnstap.
                let Some(msg) = proto::Dnstap::decode(frame.clone()).ok().and_then(|d| d.message) else {
                    self.metrics.reject("protobuf");
                    return FrameOutcome::BadDnstap;
                };
                match Observation::parse(&msg, mtype, dns, now) {
                    Ok(o) => o,
                    Err(_) => {
                        self.metrics.dns_parse_errors.inc();
                        return FrameOutcome::BadDns;
                    }
                }
            }
        };
        let result = self.ingest.observe(&lists, &obs);
        for list in &result.lists {
            self.metrics.matches.get_or_create(&ListLabel { list: list.to_string() }).inc();
        }
        self.metrics.routes_added.inc_by(result.added as u64);
        FrameOutcome::Matched
    }
}

impl Pipeline {
    /// Hands one client query or response to the blocking engine.
    #[inline]
    fn sight(
        &self,
        frame: &[u8],
        p: &peek::Peek,
        mtype: MessageType,
        tap: &mut Tap,
        qname: &mut NameBuf,
        routed: bool,
    ) {
        let response = mtype.is_response();
        let (Some((a, b)), Some(dns)) = (p.query_address, if response { p.response } else { p.query }) else {
            return;
        };
        let ip = match &frame[a..b] {
            &[a, b, c, d] => IpAddr::from([a, b, c, d]),
            addr => match <[u8; 16]>::try_from(addr) {
                Ok(v6) => IpAddr::from(v6),
                Err(_) => return,
            },
        };
        let msg = &frame[dns.0..dns.1];
        let want = response && tap.wants_names();
        let parsed = dnswire::question(msg, qname, |rcode, answers| want && (rcode == 3 || rcode == 0 && answers > 0));
        let (q, named) = match parsed {
            Ok(q) => q,
            Err(_) => {
                // The route side counts it when it parses this type too.
                if !routed {
                    self.metrics.dns_parse_errors.inc();
                }
                return;
            }
        };
        let (sec, nsec) =
            if response { (p.response_time_sec, p.response_time_nsec) } else { (p.query_time_sec, p.query_time_nsec) };
        let time = match sec {
            Some(s) if s > 0 => s.saturating_mul(1000).saturating_add(u64::from(nsec.unwrap_or(0) / 1_000_000)),
            _ => 0,
        };
        tap.sight(&Sighting {
            time,
            message_type: mtype,
            client: crate::observation::canonical(ip),
            qtype: q.qtype,
            rcode: response.then_some(q.rcode),
            answered: q.answers > 0,
            size: msg.len() as u32,
            qname: named.then_some(&*qname),
        });
    }
}

/// The dnstap time of a frame in milliseconds (the response time of a
/// response, the query time of a query); `None` for a frame that is not
/// dnstap or carries no time. `replay` drives its clock with it.
pub fn frame_time(frame: &[u8]) -> Option<UnixMillis> {
    let p = peek::peek(frame).ok()?;
    let response = MessageType::from_i32(p.mtype).is_some_and(MessageType::is_response);
    let (sec, nsec) = if response {
        (p.response_time_sec.or(p.query_time_sec), p.response_time_nsec.or(p.query_time_nsec))
    } else {
        (p.query_time_sec.or(p.response_time_sec), p.query_time_nsec.or(p.response_time_nsec))
    };
    let s = sec.filter(|s| *s > 0)?;
    Some(s.saturating_mul(1000).saturating_add(u64::from(nsec.unwrap_or(0) / 1_000_000)))
}

/// The `Observation` that `Observation::parse` builds from the prost
/// message and hickory, from what `peek` and `dnswire::parse_simple` found
/// (the tests compare the two). Client and time as in `observation.rs`.
fn fast_observation(
    frame: &[u8],
    p: &peek::Peek,
    message_type: MessageType,
    dns: dnswire::SimpleResponse,
    size: usize,
    received: UnixMillis,
) -> Observation {
    let client = p.query_address.and_then(|(a, b)| {
        let ip = match &frame[a..b] {
            &[a, b, c, d] => IpAddr::from([a, b, c, d]),
            addr => IpAddr::from(<[u8; 16]>::try_from(addr).ok()?),
        };
        Some(SocketAddr::new(crate::observation::canonical(ip), p.query_port.unwrap_or(0) as u16))
    });
    let time = match (p.response_time_sec, p.query_time_sec) {
        (Some(s), _) | (None, Some(s)) if s > 0 => {
            let nsec = p.response_time_nsec.or(p.query_time_nsec).unwrap_or(0);
            s.saturating_mul(1000).saturating_add(u64::from(nsec / 1_000_000))
        }
        _ => received,
    };
    Observation {
        time,
        message_type,
        client,
        qname: dns.qname,
        qtype: dns.qtype,
        rcode: dns.rcode,
        answers: dns.answers,
        size,
    }
}

/// A validating walk over a dnstap protobuf that finds what the hot path
/// needs (is there a message, its type, where its DNS messages are)
/// without decoding it.
///
/// It accepts and rejects exactly what `proto::Dnstap::decode` (prost
/// 0.14) does, and reports the values prost would: varints of at most 10
/// bytes (the 10th < 2), keys within u32 with a wire type 0–5 and a tag
/// of at least 1, the wire type of every known field checked, unknown
/// fields skipped (groups included, with prost's recursion limit of 100),
/// a nested message ending exactly at its length, and for a field that
/// appears twice the last value (a second `message` merges into the
/// first). The property tests below compare the two on arbitrary input.
///
/// Public only for the fuzz target `dnstap_peek` (fuzz/), which compares
/// it with prost on arbitrary bytes; not an API.
#[doc(hidden)]
pub mod peek {
    /// What `handle` needs of a frame. Ranges are byte offsets into it.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Peek {
        /// `Dnstap.message` is present.
        pub message: bool,
        /// `Message.type`; when absent, prost's default (the first value
        /// of the enum, as proto2 says).
        pub mtype: i32,
        pub query: Option<(usize, usize)>,
        pub response: Option<(usize, usize)>,
        /// What `Observation` takes from the message besides the DNS
        /// message: the client and the times.
        pub query_address: Option<(usize, usize)>,
        pub query_port: Option<u32>,
        pub query_time_sec: Option<u64>,
        pub query_time_nsec: Option<u32>,
        pub response_time_sec: Option<u64>,
        pub response_time_nsec: Option<u32>,
    }

    /// prost's `RECURSION_LIMIT`.
    const RECURSION_LIMIT: u32 = 100;

    const VARINT: u8 = 0;
    const FIXED64: u8 = 1;
    const LEN: u8 = 2;
    const START_GROUP: u8 = 3;
    const END_GROUP: u8 = 4;
    const FIXED32: u8 = 5;

    /// Any decode error; the caller only needs to know that there was one.
    #[derive(Debug)]
    pub struct Invalid;

    type Result<T> = std::result::Result<T, Invalid>;

    struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    impl Reader<'_> {
        /// A varint; the one-byte case (keys, small lengths) inline.
        #[inline(always)]
        fn varint(&mut self) -> Result<u64> {
            match self.buf.get(self.pos) {
                Some(&b) if b < 0x80 => {
                    self.pos += 1;
                    Ok(u64::from(b))
                }
                _ => self.varint_long(),
            }
        }

        #[inline(never)]
        fn varint_long(&mut self) -> Result<u64> {
            let rest = &self.buf[self.pos..];
            if rest.len() >= 10 {
                // Enough bytes for any varint: no bounds check per byte.
                let b: &[u8; 10] = rest[..10].try_into().map_err(|_| Invalid)?;
                let mut value = 0u64;
                for (i, &b) in b.iter().enumerate() {
                    value |= u64::from(b & 0x7F) << (7 * i);
                    if b < 0x80 {
                        if i == 9 && b >= 0x02 {
                            return Err(Invalid);
                        }
                        self.pos += i + 1;
                        return Ok(value);
                    }
                }
                return Err(Invalid);
            }
            let mut value = 0u64;
            for (i, &b) in rest.iter().enumerate() {
                value |= u64::from(b & 0x7F) << (7 * i);
                if b < 0x80 {
                    if i == 9 && b >= 0x02 {
                        return Err(Invalid);
                    }
                    self.pos += i + 1;
                    return Ok(value);
                }
            }
            Err(Invalid)
        }

        #[inline(always)]
        fn key(&mut self) -> Result<(u32, u8)> {
            let key = self.varint()?;
            if key > u64::from(u32::MAX) {
                return Err(Invalid);
            }
            let wire_type = (key & 7) as u8;
            let tag = key as u32 >> 3;
            if wire_type > FIXED32 || tag == 0 {
                return Err(Invalid);
            }
            Ok((tag, wire_type))
        }

        #[inline]
        fn advance(&mut self, len: u64) -> Result<()> {
            if len > (self.buf.len() - self.pos) as u64 {
                return Err(Invalid);
            }
            self.pos += len as usize;
            Ok(())
        }

        #[inline]
        fn fixed32(&mut self) -> Result<u32> {
            let b = self.buf.get(self.pos..self.pos + 4).ok_or(Invalid)?;
            self.pos += 4;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }

        /// A length-delimited field's payload.
        #[inline]
        fn bytes(&mut self) -> Result<(usize, usize)> {
            let len = self.varint()?;
            let start = self.pos;
            self.advance(len)?;
            Ok((start, self.pos))
        }

        /// prost's `skip_field`; `depth` is what is left of the limit.
        fn skip(&mut self, wire_type: u8, tag: u32, depth: u32) -> Result<()> {
            if depth == 0 {
                return Err(Invalid);
            }
            match wire_type {
                VARINT => self.varint().map(drop),
                FIXED64 => self.advance(8),
                LEN => self.bytes().map(drop),
                START_GROUP => loop {
                    let (inner_tag, inner_type) = self.key()?;
                    if inner_type == END_GROUP {
                        return if inner_tag == tag { Ok(()) } else { Err(Invalid) };
                    }
                    self.skip(inner_type, inner_tag, depth - 1)?;
                },
                FIXED32 => self.advance(4),
                _ => Err(Invalid),
            }
        }
    }

    #[inline]
    fn expect(actual: u8, expected: u8) -> Result<()> {
        if actual == expected { Ok(()) } else { Err(Invalid) }
    }

    /// Walks `frame`, a whole `Dnstap` payload.
    pub fn peek(frame: &[u8]) -> Result<Peek> {
        let mut r = Reader { buf: frame, pos: 0 };
        let mut p = Peek::default();
        while r.pos < frame.len() {
            let (tag, wire_type) = r.key()?;
            match tag {
                // identity, version, extra
                1..=3 => {
                    expect(wire_type, LEN)?;
                    r.bytes()?;
                }
                // message
                14 => {
                    expect(wire_type, LEN)?;
                    let (start, end) = r.bytes()?;
                    if !p.message {
                        p.message = true;
                        p.mtype = super::proto::Message::default().r#type;
                    }
                    let mut inner = Reader { buf: &frame[..end], pos: start };
                    message(&mut inner, &mut p, RECURSION_LIMIT - 1)?;
                }
                // type
                15 => {
                    expect(wire_type, VARINT)?;
                    r.varint()?;
                }
                _ => r.skip(wire_type, tag, RECURSION_LIMIT)?,
            }
        }
        Ok(p)
    }

    /// The fields of `Message`, merged into `p`.
    /// The wire type of each known `Message` field, by tag (`UNKNOWN`
    /// for tags the message does not have).
    const UNKNOWN: u8 = 0xFF;
    const MESSAGE_FIELDS: [u8; 15] = [
        UNKNOWN, // 0
        VARINT,  // 1 type
        VARINT,  // 2 socket_family
        VARINT,  // 3 socket_protocol
        LEN,     // 4 query_address
        LEN,     // 5 response_address
        VARINT,  // 6 query_port
        VARINT,  // 7 response_port
        VARINT,  // 8 query_time_sec
        FIXED32, // 9 query_time_nsec
        LEN,     // 10 query_message
        LEN,     // 11 query_zone
        VARINT,  // 12 response_time_sec
        FIXED32, // 13 response_time_nsec
        LEN,     // 14 response_message
    ];

    /// The fields of `Message`, merged into `p`. Known fields are checked
    /// against a table and read by wire type (three well-predicted
    /// branches rather than a jump per tag); the values are then sorted
    /// out once.
    fn message(r: &mut Reader<'_>, p: &mut Peek, depth: u32) -> Result<()> {
        let mut value = [0u64; 15];
        let mut range = [(0usize, 0usize); 15];
        let mut seen = 0u32;
        while r.pos < r.buf.len() {
            let (tag, wire_type) = r.key()?;
            let expected = MESSAGE_FIELDS.get(tag as usize).copied().unwrap_or(UNKNOWN);
            if expected == UNKNOWN {
                r.skip(wire_type, tag, depth)?;
                continue;
            }
            expect(wire_type, expected)?;
            let t = tag as usize;
            if wire_type == VARINT {
                value[t] = r.varint()?;
            } else if wire_type == LEN {
                range[t] = r.bytes()?;
            } else {
                value[t] = u64::from(r.fixed32()?);
            }
            seen |= 1 << t;
        }
        let has = |t: usize| seen & (1 << t) != 0;
        if has(1) {
            p.mtype = value[1] as i32;
        }
        if has(4) {
            p.query_address = Some(range[4]);
        }
        if has(6) {
            p.query_port = Some(value[6] as u32);
        }
        if has(8) {
            p.query_time_sec = Some(value[8]);
        }
        if has(9) {
            p.query_time_nsec = Some(value[9] as u32);
        }
        if has(10) {
            p.query = Some(range[10]);
        }
        if has(12) {
            p.response_time_sec = Some(value[12]);
        }
        if has(13) {
            p.response_time_nsec = Some(value[13] as u32);
        }
        if has(14) {
            p.response = Some(range[14]);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::config::ListSettings;
    use crate::routes::{Clock, RouteTable};

    /// A dnstap frame carrying `dns` as a CLIENT_RESPONSE from 198.51.100.99.
    pub(crate) fn frame(mtype: MessageType, dns: Vec<u8>) -> Bytes {
        let client = std::net::IpAddr::from([198, 51, 100, 99]);
        let msg = proto::Message {
            response_time_sec: Some(1_700_000_000),
            // A response message whatever the type (the tests of ignored
            // types rely on the type alone).
            query_message: None,
            response_message: Some(Bytes::from(dns.clone())),
            ..crate::dnstap::writer::message(mtype, client, dns)
        };
        Bytes::from(crate::dnstap::writer::payload(Some(b"test"), None, msg))
    }

    fn pipeline(list: &str) -> Pipeline {
        let settings = vec![ListSettings {
            name: Arc::from("vpn"),
            file: PathBuf::from("vpn.txt"),
            communities: vec![],
            large_communities: vec![],
            ..Default::default()
        }];
        let lists = Lists::compile(&settings, &[list.to_string()]).0;
        let table = Arc::new(RouteTable::new(Clock::new(), Duration::from_secs(60), Duration::from_secs(3600)));
        Pipeline::new(
            Arc::new(ArcSwap::from_pointee(lists)),
            Arc::new(Ingest::new(table)),
            Arc::new(Metrics::new()),
            &[MessageType::ClientResponse],
        )
    }

    #[test]
    fn listed_cname_chain_becomes_a_route() {
        let p = pipeline("cdn.test\n");
        let mut name = NameBuf::new();
        let dns = crate::dnstap::dnswire::tests::sample();
        assert_eq!(p.handle(frame(MessageType::ClientResponse, dns.clone()), &mut name), FrameOutcome::Matched);
        let r = p.ingest.table().get("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(&*r.attributions[0].domain, "edge.cdn.test");
        // Other types are counted, not used.
        assert_eq!(p.handle(frame(MessageType::ClientQuery, dns), &mut name), FrameOutcome::Ignored);
        let text = p.metrics.encode();
        assert!(text.contains("dnsbgpd_dnstap_frames_total{type=\"CLIENT_QUERY\"} 1"), "{text}");
        assert!(text.contains("dnsbgpd_matches_total{list=\"vpn\"} 1"), "{text}");
    }

    #[test]
    fn unlisted_and_malformed() {
        let p = pipeline("other.test\n");
        let mut name = NameBuf::new();
        let dns = crate::dnstap::dnswire::tests::sample();
        assert_eq!(p.handle(frame(MessageType::ClientResponse, dns.clone()), &mut name), FrameOutcome::NoMatch);
        assert_eq!(p.handle(frame(MessageType::ClientResponse, dns[..20].to_vec()), &mut name), FrameOutcome::BadDns);
        assert_eq!(p.handle(Bytes::from_static(b"\xff\xff\xff"), &mut name), FrameOutcome::BadDnstap);
        assert!(p.ingest.table().is_empty());
        assert_eq!(p.metrics.dns_parse_errors.get(), 1);
    }

    /// The values `peek` reports, in prost's terms.
    #[derive(Debug, PartialEq, Eq)]
    struct View {
        message: bool,
        mtype: i32,
        query: Option<Vec<u8>>,
        response: Option<Vec<u8>>,
        query_address: Option<Vec<u8>>,
        query_port: Option<u32>,
        times: (Option<u64>, Option<u32>, Option<u64>, Option<u32>),
    }

    /// What prost makes of a frame, in the terms of `peek`.
    fn by_prost(frame: &[u8]) -> Option<View> {
        let d = proto::Dnstap::decode(frame).ok()?;
        let bytes = |b: &Option<Bytes>| b.as_ref().map(|b| b.to_vec());
        Some(match d.message {
            None => View {
                message: false,
                mtype: 0,
                query: None,
                response: None,
                query_address: None,
                query_port: None,
                times: (None, None, None, None),
            },
            Some(m) => View {
                message: true,
                mtype: m.r#type,
                query: bytes(&m.query_message),
                response: bytes(&m.response_message),
                query_address: bytes(&m.query_address),
                query_port: m.query_port,
                times: (m.query_time_sec, m.query_time_nsec, m.response_time_sec, m.response_time_nsec),
            },
        })
    }

    fn by_peek(frame: &[u8]) -> Option<View> {
        let p = peek::peek(frame).ok()?;
        let part = |r: Option<(usize, usize)>| r.map(|(a, b)| frame[a..b].to_vec());
        Some(View {
            message: p.message,
            mtype: p.mtype,
            query: part(p.query),
            response: part(p.response),
            query_address: part(p.query_address),
            query_port: p.query_port,
            times: (p.query_time_sec, p.query_time_nsec, p.response_time_sec, p.response_time_nsec),
        })
    }

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// Random protobuf-shaped bytes: mostly well-formed fields with the
    /// tags and wire types of `Dnstap`/`Message`, with every kind of
    /// defect mixed in (wrong wire types, bad varints and keys, lengths
    /// off by one, groups with wrong ends, nesting).
    fn fields(rng: &mut u64, depth: u32, in_message: bool, out: &mut Vec<u8>) {
        fn step(rng: &mut u64) -> u64 {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            *rng
        }
        for _ in 0..step(rng) % 6 {
            let mut next = || step(rng);
            let tag: u64 = match (in_message, next() % 16) {
                (_, 0) => 0,
                (_, 1) => next() % 40,
                (_, 2) => 1 << 28,
                (false, 3..=7) => 14,
                (false, 8) => 15,
                (true, 3..=5) => 14,
                (true, 6 | 7) => 10,
                (true, 8) => 1,
                (_, 9) => 9,
                _ => 1 + next() % 15,
            };
            let expected = match (in_message, tag) {
                (false, 1..=3) | (false, 14) => 2,
                (false, 15) => 0,
                (true, 4 | 5 | 10 | 11 | 14) => 2,
                (true, 9 | 13) => 5,
                _ => [0, 0, 1, 2, 2, 3, 5][(next() % 7) as usize],
            };
            let wt = if next().is_multiple_of(24) { next() % 8 } else { expected };
            match next() % 64 {
                0 => varint(out, (tag << 3 | wt) | 1 << 33), // key beyond u32
                1 => out.extend_from_slice(&[0x80 | (tag << 3 | wt) as u8, 0x80, 0x00]), // overlong
                _ => varint(out, tag << 3 | wt),
            }
            match wt {
                0 => match next() % 12 {
                    0 => out.extend_from_slice(&[0xFF; 9].iter().copied().chain([0x01]).collect::<Vec<_>>()),
                    1 => out.extend_from_slice(&[0xFF; 9].iter().copied().chain([0x02]).collect::<Vec<_>>()),
                    2 => out.extend_from_slice(&[0xFF; 11]),
                    3 => out.push(0x80), // truncated (unless more follows)
                    _ => varint(out, next() >> (next() % 64)),
                },
                1 => out.extend(std::iter::repeat_n(0xAB, if next().is_multiple_of(8) { 5 } else { 8 })),
                2 => {
                    let mut inner = Vec::new();
                    if depth < 4 && (tag == 14 && !in_message || step(rng).is_multiple_of(4)) {
                        fields(rng, depth + 1, tag == 14 && !in_message, &mut inner);
                    } else {
                        inner.extend(std::iter::repeat_n(step(rng) as u8, (step(rng) % 20) as usize));
                    }
                    let len = match step(rng) % 24 {
                        0 => inner.len() + 1,
                        1 => inner.len().saturating_sub(1),
                        _ => inner.len(),
                    };
                    varint(out, len as u64);
                    out.extend_from_slice(&inner);
                }
                3 => {
                    if depth < 4 {
                        fields(rng, depth + 1, false, out);
                    }
                    let end = if step(rng).is_multiple_of(6) { tag + 1 } else { tag };
                    varint(out, end << 3 | 4);
                }
                5 => out.extend(std::iter::repeat_n(0xCD, if step(rng).is_multiple_of(8) { 3 } else { 4 })),
                _ => {}
            }
        }
    }

    #[test]
    fn peek_agrees_with_prost_on_real_frames() {
        let f = frame(MessageType::ClientResponse, crate::dnstap::dnswire::tests::sample());
        let view = by_peek(&f).unwrap();
        assert_eq!(Some(&view), by_prost(&f).as_ref());
        assert_eq!(view.mtype, MessageType::ClientResponse as i32);
        assert_eq!(view.response.unwrap(), crate::dnstap::dnswire::tests::sample());
        assert_eq!(view.query_address.unwrap(), [198, 51, 100, 99]);
        // Every truncation.
        for cut in 0..f.len() {
            assert_eq!(by_peek(&f[..cut]), by_prost(&f[..cut]), "cut at {cut}");
        }
        // A second `message` merges into the first.
        let mut twice = f.to_vec();
        twice.extend_from_slice(&[0x72, 0x02, 0x08, 0x05]); // message { type: 5 }
        assert_eq!(by_peek(&twice), by_prost(&twice));
        assert_eq!(by_peek(&twice).unwrap().mtype, 5);
    }

    #[test]
    fn peek_agrees_with_prost_on_the_recursion_limit() {
        for depth in [97, 98, 99, 100, 101] {
            for in_message in [false, true] {
                // `depth` nested groups of tag 20.
                let mut groups = Vec::new();
                for _ in 0..depth {
                    groups.push(20 << 3 | 3);
                    groups.push(0x01);
                }
                for _ in 0..depth {
                    groups.push(20 << 3 | 4);
                    groups.push(0x01);
                }
                let f = if in_message {
                    let mut m = vec![0x08, 0x06];
                    m.extend_from_slice(&groups);
                    let mut f = vec![0x72];
                    varint(&mut f, m.len() as u64);
                    f.extend_from_slice(&m);
                    f
                } else {
                    groups
                };
                let prost = by_prost(&f);
                assert_eq!(by_peek(&f), prost, "depth {depth}, in message: {in_message}");
            }
        }
    }

    #[test]
    fn fast_observation_agrees_with_observation_parse() {
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut compared = 0;
        for seed in 1..20_000u64 {
            let dns = crate::dnstap::dnswire::tests::random_response(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let Some(simple) = dnswire::parse_simple(&dns) else { continue };
            let addresses: [&[u8]; 5] = [
                &[198, 51, 100, 7],
                &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 7],
                &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
                &[1, 2, 3, 4, 5],
                &[],
            ];
            let secs = [None, Some(0), Some(1_700_000_000), Some(u64::MAX / 100)];
            let nsecs = [None, Some(0), Some(999_999_999), Some(5_000_000)];
            let pick = |n: u64, len: usize| (n % len as u64) as usize;
            let msg = proto::Message {
                r#type: MessageType::ClientResponse as i32,
                query_address: (next() % 6 != 0)
                    .then(|| Bytes::copy_from_slice(addresses[pick(next(), addresses.len())])),
                query_port: (next() % 3 != 0).then(|| next() as u32),
                query_time_sec: secs[pick(next(), secs.len())],
                query_time_nsec: nsecs[pick(next(), nsecs.len())],
                response_time_sec: secs[pick(next(), secs.len())],
                response_time_nsec: nsecs[pick(next(), nsecs.len())],
                response_message: Some(Bytes::from(dns.clone())),
                ..Default::default()
            };
            let frame = proto::Dnstap { r#type: 1, message: Some(msg), ..Default::default() }.encode_to_vec();
            let p = peek::peek(&frame).unwrap();
            let fast = fast_observation(&frame, &p, MessageType::ClientResponse, simple, dns.len(), 12_345);
            let m = proto::Dnstap::decode(&frame[..]).unwrap().message.unwrap();
            let slow = Observation::parse(&m, MessageType::ClientResponse, &dns, 12_345).unwrap();
            assert_eq!(fast, slow);
            compared += 1;
        }
        assert!(compared > 1_000, "{compared}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        #[test]
        fn peek_agrees_with_prost_on_generated_fields(seed in 1u64..) {
            let mut rng = seed;
            let mut f = Vec::new();
            fields(&mut rng, 0, false, &mut f);
            proptest::prop_assert_eq!(by_peek(&f), by_prost(&f), "{:02x?}", f);
        }

        #[test]
        fn peek_agrees_with_prost_on_arbitrary_bytes(f in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            proptest::prop_assert_eq!(by_peek(&f), by_prost(&f));
        }

        #[test]
        fn peek_agrees_with_prost_on_mutated_frames(
            edits in proptest::collection::vec((0usize..512, proptest::prelude::any::<u8>()), 1..4),
        ) {
            let mut f = frame(MessageType::ClientResponse, crate::dnstap::dnswire::tests::sample()).to_vec();
            for (at, byte) in edits {
                let i = at % f.len();
                f[i] = byte;
            }
            proptest::prop_assert_eq!(by_peek(&f), by_prost(&f));
        }
    }
}

//! The hot path: one dnstap frame → counters, and for the few frames that
//! matter, routes.
//!
//! Per frame: protobuf decode (zero-copy `Bytes` fields), a counter, an
//! allocation-free scan of the DNS names with a list lookup for each. Only a
//! response naming something a list claims (or a remembered CNAME target)
//! is parsed fully and applied to the route table.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use prost::Message as _;

use super::dnswire;
use super::observation::Observation;
use super::{MessageType, proto};
use crate::api::metrics::{ListLabel, Metrics};
use crate::lists::Lists;
use crate::names::NameBuf;
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
}

impl Pipeline {
    pub fn new(
        lists: Arc<ArcSwap<Lists>>,
        ingest: Arc<Ingest>,
        metrics: Arc<Metrics>,
        types: &[MessageType],
    ) -> Pipeline {
        let types = types.iter().fold(0u32, |m, t| m | 1 << (*t as u32));
        Pipeline { lists, ingest, metrics, types }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Handles one data frame. `name` is the caller's scratch buffer.
    pub fn handle(&self, frame: Bytes, name: &mut NameBuf) -> FrameOutcome {
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
        if self.types & (1 << (mtype as u32)) == 0 {
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
        // `peek` accepts exactly what prost accepts (see its tests), so
        // this decode does not fail; if it did, the frame is bad dnstap.
        let Some(msg) = proto::Dnstap::decode(frame.clone()).ok().and_then(|d| d.message) else {
            self.metrics.reject("protobuf");
            return FrameOutcome::BadDnstap;
        };
        let now = self.ingest.table().clock().now();
        let obs = match Observation::parse(&msg, mtype, dns, now) {
            Ok(o) => o,
            Err(_) => {
                self.metrics.dns_parse_errors.inc();
                return FrameOutcome::BadDns;
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
mod peek {
    /// What `handle` needs of a frame. Ranges are byte offsets into it.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub(super) struct Peek {
        /// `Dnstap.message` is present.
        pub message: bool,
        /// `Message.type` (0 when absent, like prost's default).
        pub mtype: i32,
        pub query: Option<(usize, usize)>,
        pub response: Option<(usize, usize)>,
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
    pub(super) struct Invalid;

    type Result<T> = std::result::Result<T, Invalid>;

    struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    impl Reader<'_> {
        #[inline]
        fn varint(&mut self) -> Result<u64> {
            let mut value = 0u64;
            for i in 0..10 {
                let b = *self.buf.get(self.pos).ok_or(Invalid)?;
                self.pos += 1;
                value |= u64::from(b & 0x7F) << (7 * i);
                if b < 0x80 {
                    return if i == 9 && b >= 0x02 { Err(Invalid) } else { Ok(value) };
                }
            }
            Err(Invalid)
        }

        #[inline]
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
    pub(super) fn peek(frame: &[u8]) -> Result<Peek> {
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
                    let mut inner = Reader { buf: &frame[..end], pos: start };
                    message(&mut inner, &mut p, RECURSION_LIMIT - 1)?;
                    p.message = true;
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
    fn message(r: &mut Reader<'_>, p: &mut Peek, depth: u32) -> Result<()> {
        while r.pos < r.buf.len() {
            let (tag, wire_type) = r.key()?;
            match tag {
                1 => {
                    expect(wire_type, VARINT)?;
                    p.mtype = r.varint()? as i32;
                }
                // socket_family, socket_protocol, ports, seconds
                2 | 3 | 6 | 7 | 8 | 12 => {
                    expect(wire_type, VARINT)?;
                    r.varint()?;
                }
                // nanoseconds
                9 | 13 => {
                    expect(wire_type, FIXED32)?;
                    r.advance(4)?;
                }
                // addresses, query_zone
                4 | 5 | 11 => {
                    expect(wire_type, LEN)?;
                    r.bytes()?;
                }
                10 => {
                    expect(wire_type, LEN)?;
                    p.query = Some(r.bytes()?);
                }
                14 => {
                    expect(wire_type, LEN)?;
                    p.response = Some(r.bytes()?);
                }
                _ => r.skip(wire_type, tag, depth)?,
            }
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
        let msg = proto::Message {
            r#type: mtype as i32,
            socket_family: Some(1),
            socket_protocol: Some(1),
            query_address: Some(Bytes::from_static(&[198, 51, 100, 99])),
            query_port: Some(40000),
            response_time_sec: Some(1_700_000_000),
            response_message: Some(Bytes::from(dns)),
            ..Default::default()
        };
        let d = proto::Dnstap {
            identity: Some(Bytes::from_static(b"test")),
            version: None,
            extra: None,
            r#type: 1,
            message: Some(msg),
        };
        Bytes::from(d.encode_to_vec())
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
}

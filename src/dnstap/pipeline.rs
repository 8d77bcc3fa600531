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
        let Ok(dnstap) = proto::Dnstap::decode(frame) else {
            self.metrics.reject("protobuf");
            return FrameOutcome::BadDnstap;
        };
        let Some(msg) = dnstap.message else {
            self.metrics.frame(None).inc();
            return FrameOutcome::Ignored;
        };
        let mtype = MessageType::from_i32(msg.r#type);
        self.metrics.frame(mtype).inc();
        let Some(mtype) = mtype else { return FrameOutcome::Ignored };
        if self.types & (1 << (mtype as u32)) == 0 {
            return FrameOutcome::Ignored;
        }
        let dns = if mtype.is_response() { &msg.response_message } else { &msg.query_message };
        let Some(dns) = dns else {
            self.metrics.dns_parse_errors.inc();
            return FrameOutcome::BadDns;
        };
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

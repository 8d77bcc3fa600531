//! A dnstap frame (one Frame Streams data frame: a `Dnstap` protobuf).
//!
//! The hot path's validating walk (`pipeline::peek`) must accept exactly
//! what prost accepts and report the values prost decodes; then the whole
//! frame goes through `Pipeline::handle` (scan, list match, full parse,
//! route table), whose outcome must agree with both.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use dnsbgpd::config::ListSettings;
use dnsbgpd::dnstap::pipeline::peek;
use dnsbgpd::dnstap::{FrameOutcome, MessageType, Pipeline, proto};
use dnsbgpd::lists::Lists;
use dnsbgpd::metrics::Metrics;
use dnsbgpd::names::NameBuf;
use dnsbgpd::routes::ingest::Ingest;
use dnsbgpd::routes::{Clock, RouteTable};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

type Part = Option<Vec<u8>>;

/// What prost makes of the frame, in the terms `peek` reports.
#[derive(Debug, PartialEq, Eq)]
struct View {
    message: bool,
    mtype: i32,
    query: Part,
    response: Part,
    query_address: Part,
    query_port: Option<u32>,
    times: (Option<u64>, Option<u32>, Option<u64>, Option<u32>),
}

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

struct Shared {
    lists: Arc<ArcSwap<Lists>>,
    metrics: Arc<Metrics>,
    clock: Clock,
}

/// What every run shares: the lists (the names of the seed captures), the
/// metrics registry and one clock (each `Clock` leaks a few bytes by design).
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let settings =
            vec![ListSettings { name: Arc::from("vpn"), file: PathBuf::from("vpn.txt"), ..Default::default() }];
        let text = "test\nexample.com\nexample.net\n".to_string();
        let lists = Lists::compile(&settings, &[text]).0;
        Shared {
            lists: Arc::new(ArcSwap::from_pointee(lists)),
            metrics: Arc::new(Metrics::new()),
            clock: Clock::starting_at(1_700_000_000_000),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let prost_view = by_prost(data);
    assert_eq!(by_peek(data), prost_view, "{data:02x?}");

    let s = shared();
    let table = Arc::new(RouteTable::new(s.clock, Duration::from_secs(60), Duration::from_secs(3600)));
    let pipeline = Pipeline::new(
        s.lists.clone(),
        Arc::new(Ingest::new(table.clone())),
        s.metrics.clone(),
        &[MessageType::ClientResponse, MessageType::ResolverResponse, MessageType::ClientQuery],
    );
    let mut name = NameBuf::new();
    let outcome = pipeline.handle(Bytes::copy_from_slice(data), &mut name);
    match &prost_view {
        None => assert_eq!(outcome, FrameOutcome::BadDnstap),
        Some(v) if !v.message => assert_eq!(outcome, FrameOutcome::Ignored),
        Some(_) => assert_ne!(outcome, FrameOutcome::BadDnstap),
    }
    if outcome != FrameOutcome::Matched {
        assert!(table.is_empty(), "{outcome:?} but routes were added");
    }
    for route in table.snapshot() {
        assert!(!route.attributions.is_empty());
        assert!(dnsbgpd::routes::routable_unicast(route.addr), "{}", route.addr);
    }
});

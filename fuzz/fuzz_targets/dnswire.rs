//! The DNS message readers of the hot path on arbitrary bytes:
//! `dnswire::scan` and `question` must give a result or an error, never a
//! panic; `parse_simple`, where it answers, must answer exactly what
//! hickory-proto (through `Observation::parse`) does, and never accept a
//! message hickory rejects.
#![no_main]

use dnsbgpd::dnstap::dnswire;
use dnsbgpd::dnstap::{MessageType, Observation, proto};
use dnsbgpd::names::NameBuf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut name = NameBuf::new();
    let mut visits = 0usize;
    if let Ok(summary) = dnswire::scan(data, &mut name, |n| {
        visits += 1;
        assert!(n.label_count() <= dnsbgpd::names::MAX_LABELS);
        false
    }) {
        // At most the question, each owner and each CNAME target.
        assert!(visits <= 1 + 2 * usize::from(summary.answers));
    }
    let _ = dnswire::question(data, &mut name, |_, _| true);
    let _ = dnswire::question(data, &mut name, |_, _| false);

    if let Some(fast) = dnswire::parse_simple(data) {
        let m = proto::Message::default();
        let slow = Observation::parse(&m, MessageType::ClientResponse, data, 0)
            .unwrap_or_else(|e| panic!("parse_simple accepted what hickory rejects ({e}): {data:02x?}"));
        assert_eq!(fast.qname, slow.qname, "{data:02x?}");
        assert_eq!(fast.qtype, slow.qtype, "{data:02x?}");
        assert_eq!(fast.rcode, slow.rcode, "{data:02x?}");
        assert_eq!(fast.answers, slow.answers, "{data:02x?}");
    }
});

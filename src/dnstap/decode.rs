//! dnstap message → [`Observation`] with hickory-proto: the full parse, for
//! responses the hot-path scan found interesting (a name a list claims, or
//! a remembered CNAME target) whose shape `dnswire::parse_simple` does not
//! cover.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::Message as DnsMessage;
use hickory_proto::rr::{Name, RData};
use hickory_proto::serialize::binary::DecodeError;

use super::proto;
use crate::clock::UnixMillis;
use crate::observation::{Answer, AnswerData, MessageType, Observation, canonical};

/// Lowercase ASCII presentation form without the trailing dot.
pub fn name_text(name: &Name) -> String {
    let mut s = name.to_ascii();
    if s.ends_with('.') {
        s.pop();
    }
    s.make_ascii_lowercase();
    s
}

fn client_of(m: &proto::Message) -> Option<SocketAddr> {
    let addr = m.query_address.as_ref()?;
    let ip = match addr.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(&addr[..]).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(&addr[..]).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(canonical(ip), m.query_port.unwrap_or(0) as u16))
}

fn time_of(m: &proto::Message, received: UnixMillis) -> UnixMillis {
    match (m.response_time_sec, m.query_time_sec) {
        (Some(s), _) | (None, Some(s)) if s > 0 => {
            let nsec = m.response_time_nsec.or(m.query_time_nsec).unwrap_or(0);
            s.saturating_mul(1000).saturating_add(u64::from(nsec / 1_000_000))
        }
        _ => received,
    }
}

impl Observation {
    /// Parses the DNS message `dns` of dnstap message `m` fully.
    pub fn parse(
        m: &proto::Message,
        message_type: MessageType,
        dns: &[u8],
        received: UnixMillis,
    ) -> Result<Observation, DecodeError> {
        let msg = DnsMessage::from_vec(dns)?;
        let (qname, qtype) =
            msg.queries.first().map(|q| (name_text(&q.name), u16::from(q.query_type))).unwrap_or_default();
        let mut answers = Vec::with_capacity(msg.answers.len());
        for r in &msg.answers {
            let data = match &r.data {
                RData::A(a) => AnswerData::A(a.0),
                RData::AAAA(a) => AnswerData::Aaaa(a.0),
                RData::CNAME(c) => AnswerData::Cname(name_text(&c.0)),
                _ => continue,
            };
            answers.push(Answer { name: name_text(&r.name), ttl: r.ttl, data });
        }
        Ok(Observation {
            time: time_of(m, received),
            message_type,
            client: client_of(m),
            qname,
            qtype,
            rcode: msg.metadata.response_code.low(),
            answers,
            size: dns.len(),
        })
    }
}

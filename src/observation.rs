//! What the resolver said, as both consumers of the dnstap stream read it.
//!
//! The dnstap pipeline (`crate::dnstap`) produces these; the route table
//! (`crate::routes`) and the blocking engine (`crate::blocking`) consume
//! them. Living here, neither consumer depends on the dnstap decoder, and
//! the decoder depends on neither consumer.
//!
//! Two shapes: [`Observation`] is the full, owned picture of one response
//! with its answer records, built only for the few responses that name
//! something listed; [`Sighting`] is the small, borrowed, allocation-free
//! record every client query or response yields on the hot path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::clock::UnixMillis;
use crate::names::NameBuf;

/// One answer record that matters for routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Owner name, lowercase, no trailing dot.
    pub name: String,
    pub ttl: u32,
    pub data: AnswerData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// The CNAME target, lowercase, no trailing dot.
    Cname(String),
}

/// A resolver response as dnsbgpd sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// When the response was sent (from dnstap; the receive time when the
    /// frame carries none).
    pub time: UnixMillis,
    pub message_type: MessageType,
    /// The client the response went to.
    pub client: Option<SocketAddr>,
    /// Question name, lowercase, no trailing dot.
    pub qname: String,
    pub qtype: u16,
    pub rcode: u8,
    pub answers: Vec<Answer>,
    /// Size of the DNS message in bytes.
    pub size: usize,
}

/// dnstap `Message.Type`, with the names operators write in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    AuthQuery = 1,
    AuthResponse = 2,
    ResolverQuery = 3,
    ResolverResponse = 4,
    ClientQuery = 5,
    ClientResponse = 6,
    ForwarderQuery = 7,
    ForwarderResponse = 8,
    StubQuery = 9,
    StubResponse = 10,
    ToolQuery = 11,
    ToolResponse = 12,
    UpdateQuery = 13,
    UpdateResponse = 14,
}

impl MessageType {
    pub const ALL: [MessageType; 14] = [
        MessageType::AuthQuery,
        MessageType::AuthResponse,
        MessageType::ResolverQuery,
        MessageType::ResolverResponse,
        MessageType::ClientQuery,
        MessageType::ClientResponse,
        MessageType::ForwarderQuery,
        MessageType::ForwarderResponse,
        MessageType::StubQuery,
        MessageType::StubResponse,
        MessageType::ToolQuery,
        MessageType::ToolResponse,
        MessageType::UpdateQuery,
        MessageType::UpdateResponse,
    ];

    pub fn from_i32(v: i32) -> Option<MessageType> {
        usize::try_from(v).ok().and_then(|v| v.checked_sub(1)).and_then(|i| MessageType::ALL.get(i).copied())
    }

    pub fn name(self) -> &'static str {
        match self {
            MessageType::AuthQuery => "AUTH_QUERY",
            MessageType::AuthResponse => "AUTH_RESPONSE",
            MessageType::ResolverQuery => "RESOLVER_QUERY",
            MessageType::ResolverResponse => "RESOLVER_RESPONSE",
            MessageType::ClientQuery => "CLIENT_QUERY",
            MessageType::ClientResponse => "CLIENT_RESPONSE",
            MessageType::ForwarderQuery => "FORWARDER_QUERY",
            MessageType::ForwarderResponse => "FORWARDER_RESPONSE",
            MessageType::StubQuery => "STUB_QUERY",
            MessageType::StubResponse => "STUB_RESPONSE",
            MessageType::ToolQuery => "TOOL_QUERY",
            MessageType::ToolResponse => "TOOL_RESPONSE",
            MessageType::UpdateQuery => "UPDATE_QUERY",
            MessageType::UpdateResponse => "UPDATE_RESPONSE",
        }
    }

    pub fn from_name(name: &str) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Whether the interesting DNS message is the response (else the query).
    pub fn is_response(self) -> bool {
        (self as i32) % 2 == 0
    }
}

/// Normalises an address: IPv4-mapped IPv6 becomes IPv4, so an IPv4
/// address is always 4 bytes.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

/// One client query or response, as the hot path hands it to the blocking
/// engine: no allocation, nothing owned. Built for every frame of a
/// configured client message type (`CLIENT_QUERY`, `CLIENT_RESPONSE`).
#[derive(Debug, Clone, Copy)]
pub struct Sighting<'a> {
    /// When the resolver saw or sent it (dnstap time; 0 when the frame
    /// carries none: the live engine goes by its own clock anyway).
    pub time: UnixMillis,
    pub message_type: MessageType,
    /// The client, canonical (v4-mapped IPv6 is IPv4).
    pub client: IpAddr,
    pub qtype: u16,
    /// The response code; `None` for a query.
    pub rcode: Option<u8>,
    /// Whether a response carried records in its answer section.
    pub answered: bool,
    /// Size of the DNS message in bytes.
    pub size: u32,
    /// The question name (lowercase, labels indexable); `None` when the
    /// message has no question or it could not be decoded.
    pub qname: Option<&'a NameBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_names_and_numbers() {
        for (i, t) in MessageType::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i + 1);
            assert_eq!(MessageType::from_i32(*t as i32), Some(*t));
            assert_eq!(MessageType::from_name(t.name()), Some(*t));
        }
        assert_eq!(MessageType::from_i32(0), None);
        assert_eq!(MessageType::from_i32(15), None);
        assert!(MessageType::ClientResponse.is_response());
        assert!(!MessageType::ClientQuery.is_response());
        assert_eq!(MessageType::from_name("client_response"), Some(MessageType::ClientResponse));
    }
}

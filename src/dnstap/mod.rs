//! dnstap in: Frame Streams listeners, dnstap decoding, and the hot path
//! from a frame to the route table.
//!
//! Layers, each testable alone: [`framestream`] (bytes ↔ frames, pure),
//! [`server`] (unix and TCP listeners, the Frame Streams handshake per
//! connection), [`pipeline`] (frame → dnstap → DNS scan → list match →
//! [`Observation`] → routes), [`dnswire`] (the allocation-free DNS scan).

pub mod dnswire;
pub mod framestream;
pub mod observation;
pub mod pipeline;
pub mod server;

pub use observation::{Answer, AnswerData, Observation};
pub use pipeline::{FrameOutcome, Pipeline};

/// The protobuf types generated from `proto/dnstap.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/dnstap.rs"));
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

//! Codec errors.
//!
//! [`DecodeError`] carries exactly what RFC 4271 §6 (and RFC 7313 for
//! ROUTE-REFRESH) says the NOTIFICATION for the fault must contain: error
//! code, subcode and data. [`DecodeError::to_notification`] builds it.
//!
//! An UPDATE that fails to decode is reported as [`DecodeError::Update`],
//! which is distinguishable from a framing problem ([`DecodeError::Header`]):
//! the header was valid, so `message_len` octets can be skipped and the
//! stream stays in sync. RFC 7606 lets a speaker treat many UPDATE faults
//! as "treat-as-withdraw" instead of resetting the session; see
//! [`super::update::UpdateError::rfc7606_action`].

use bytes::Bytes;

use super::header::{HeaderError, MessageType};
use super::notification::NotificationMessage;
use super::open::OpenError;
use super::route_refresh::RouteRefreshError;
use super::update::UpdateError;

/// Why a received message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Message Header Error (code 1). The stream is out of sync: close it.
    #[error("message header error: {0}")]
    Header(#[from] HeaderError),
    /// OPEN Message Error (code 2).
    #[error("OPEN message error: {0}")]
    Open(#[from] OpenError),
    /// UPDATE Message Error (code 3). The framing was valid: the message
    /// spans `message_len` octets and the next message follows it.
    #[error("UPDATE message error: {error}")]
    Update {
        #[source]
        error: UpdateError,
        message_len: usize,
    },
    /// ROUTE-REFRESH Message Error (code 7); `message` is the complete
    /// received message, which RFC 7313 §5 puts in the NOTIFICATION data.
    #[error("ROUTE-REFRESH message error: {error}")]
    RouteRefresh {
        #[source]
        error: RouteRefreshError,
        message: Bytes,
    },
}

impl DecodeError {
    /// NOTIFICATION error code for this fault.
    pub fn code(&self) -> u8 {
        match self {
            Self::Header(e) => e.code(),
            Self::Open(e) => e.code(),
            Self::Update { error, .. } => error.code(),
            Self::RouteRefresh { error, .. } => error.code(),
        }
    }

    /// NOTIFICATION error subcode for this fault.
    pub fn subcode(&self) -> u8 {
        match self {
            Self::Header(e) => e.subcode(),
            Self::Open(e) => e.subcode(),
            Self::Update { error, .. } => error.subcode(),
            Self::RouteRefresh { error, .. } => error.subcode(),
        }
    }

    /// NOTIFICATION data for this fault.
    pub fn data(&self) -> Vec<u8> {
        match self {
            Self::Header(e) => e.data(),
            Self::Open(e) => e.data(),
            Self::Update { error, .. } => error.data(),
            Self::RouteRefresh { message, .. } => message.to_vec(),
        }
    }

    /// The NOTIFICATION to send for this fault.
    pub fn to_notification(&self) -> NotificationMessage {
        NotificationMessage::new(self.code(), self.subcode(), self.data())
    }

    /// The type of the offending message, when the header was readable.
    pub fn message_type(&self) -> Option<MessageType> {
        match self {
            Self::Header(_) => None,
            Self::Open(_) => Some(MessageType::Open),
            Self::Update { .. } => Some(MessageType::Update),
            Self::RouteRefresh { .. } => Some(MessageType::RouteRefresh),
        }
    }

    /// Octets to skip to reach the next message, when the framing was valid.
    pub fn message_len(&self) -> Option<usize> {
        match self {
            Self::Header(_) | Self::Open(_) => None,
            Self::Update { message_len, .. } => Some(*message_len),
            Self::RouteRefresh { message, .. } => Some(message.len()),
        }
    }

    /// True for an UPDATE Message Error (as opposed to a framing error).
    pub fn is_update_error(&self) -> bool {
        matches!(self, Self::Update { .. })
    }
}

impl From<&DecodeError> for NotificationMessage {
    fn from(e: &DecodeError) -> Self {
        e.to_notification()
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{message_type:?} message would be {length} octets, over the {max} octet limit")]
    MessageTooLong { message_type: MessageType, length: usize, max: usize },
    #[error("path attribute {type_code} value is {length} octets, over 65535")]
    AttributeTooLong { type_code: u8, length: usize },
    #[error("capability {code} value is {length} octets, over 255")]
    CapabilityTooLong { code: u8, length: usize },
    #[error("OPEN optional parameters take {length} octets, over 65535")]
    OptionalParametersTooLong { length: usize },
    #[error("graceful restart time {0} s does not fit in 12 bits")]
    RestartTimeTooLarge(u16),
}

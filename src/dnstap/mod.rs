//! dnstap in: Frame Streams listeners, dnstap decoding, and the hot path
//! from a frame to the route table.
//!
//! Layers, each testable alone: [`framestream`] (bytes ↔ frames, pure),
//! [`server`] (unix and TCP listeners, the Frame Streams handshake per
//! connection), [`pipeline`] (frame → dnstap → DNS scan → list match →
//! [`Observation`] → routes), [`dnswire`] (the allocation-free DNS scan),
//! [`decode`] (the full parse with hickory-proto for uncommon answers).
//! [`writer`] is the sending side, for tests, load tools and benches only.
//! The observation types themselves live in [`crate::observation`], which
//! the route table and the blocking engine read without depending on dnstap.

pub mod decode;
pub mod dnswire;
pub mod framestream;
pub mod pipeline;
pub mod server;
pub mod writer;

pub use crate::observation::{Answer, AnswerData, MessageType, Observation};
pub use pipeline::{FrameOutcome, Pipeline};

/// The protobuf types generated from `proto/dnstap.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/dnstap.rs"));
}

//! The BGP speaker: announces the route table to routers.
//!
//! Layers: [`message`] is the wire codec (one file per message type);
//! [`policy`] turns a route into its export attributes; [`rib`] is the
//! adj-RIB-out of one neighbor (what was sent, what to send next);
//! [`session`] runs one neighbor's RFC 4271 §8 state machine over TCP;
//! [`speaker`] owns the sessions, the passive listener and the status the
//! API shows. Routes come from the route table's subscriptions: each
//! established session has its own, so a slow or absent neighbor gets the
//! current state when it is ready, never a replay.

pub mod blackhole;
pub mod config;
pub mod message;
pub mod metrics;
pub mod policy;
pub mod rib;
pub mod session;
pub mod speaker;
pub mod status;
pub mod tcp;

pub use speaker::Speaker;

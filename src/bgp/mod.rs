//! The BGP speaker: announces the route table to routers.
//!
//! [`message`] is the wire codec (one file per message type). Sessions,
//! the export policy and the speaker that feeds them from the route table
//! sit beside it.

pub mod message;

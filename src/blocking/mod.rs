//! Blocks from behaviour: the second consumer of the dnstap stream.
//!
//! Every client query and response reaches the engine as a
//! [`Sighting`](crate::observation::Sighting); rules over sliding windows
//! turn heavy clients and random-subdomain floods into blocks; blocks are
//! enforced in the kernel by an eBPF filter on the resolver's own sockets
//! and can be exported as BGP blackhole routes.
//!
//! The seam between the engine (userspace state: windows, rules, the block
//! set, the API) and the kernel (eBPF maps, attached sockets) is the
//! [`kernel::Enforcer`] trait: the engine says which entries must exist
//! until when, the enforcer makes the kernel agree and reports what the
//! kernel counted.

pub mod attach;
pub mod attach_config;
pub mod blocks;
pub mod config;
pub mod engine;
pub mod filter;
pub mod kernel;
pub mod replay;
pub mod service;
pub mod tap;
pub mod window;

//! Writing dnstap straight to a dnsbgpd socket, without a resolver: full
//! control over names, addresses and TTLs (the sync tests use it for
//! expiry and refresh timing; `examples/sync_bench.rs` includes this file
//! to fill an instance with a million routes).
//!
//! A thin layer over the crate's one dnstap writer
//! (`dnsbgpd::dnstap::writer`): a unidirectional Frame Streams connection
//! (START, then data frames) of CLIENT_RESPONSE messages, each carrying a
//! DNS response with one question and A/AAAA answers owned by it.

use std::net::IpAddr;
use std::path::Path;

use anyhow::Result;
use dnsbgpd::dnstap::MessageType;
use dnsbgpd::dnstap::writer::{self, Writer};

/// A DNS response to `qname` with the given addresses and TTLs.
pub fn dns_response(qname: &str, answers: &[(IpAddr, u32)]) -> Vec<u8> {
    writer::response(qname, answers)
}

/// The payload of one dnstap data frame: a CLIENT_RESPONSE with `dns`.
pub fn dnstap_payload(dns: Vec<u8>) -> Vec<u8> {
    let client = IpAddr::from([127, 0, 0, 1]);
    writer::payload(Some(b"frames"), None, writer::message(MessageType::ClientResponse, client, dns))
}

/// A unidirectional dnstap connection to a dnsbgpd socket.
pub struct DnstapWriter {
    w: Writer,
}

impl DnstapWriter {
    pub fn connect(socket: &Path) -> Result<DnstapWriter> {
        Ok(DnstapWriter { w: Writer::connect(socket)? })
    }

    /// Queues one response (sent by [`DnstapWriter::flush`]).
    pub fn queue(&mut self, qname: &str, answers: &[(IpAddr, u32)]) {
        self.w.queue(&dnstap_payload(dns_response(qname, answers)));
    }

    pub fn flush(&mut self) -> Result<()> {
        Ok(self.w.flush()?)
    }

    /// Sends one response now.
    pub fn answer(&mut self, qname: &str, answers: &[(IpAddr, u32)]) -> Result<()> {
        self.queue(qname, answers);
        self.flush()
    }
}

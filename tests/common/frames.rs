//! Writing dnstap straight to a dnsbgpd socket, without a resolver: full
//! control over names, addresses and TTLs (the sync tests use it for
//! expiry and refresh timing; `examples/sync_bench.rs` includes this file
//! to fill an instance with a million routes).
//!
//! A unidirectional Frame Streams connection (START, then data frames) of
//! dnstap CLIENT_RESPONSE messages, each carrying a DNS response built
//! here: one question, then A/AAAA answers owned by the question name.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{Context, Result};
use dnsbgpd::dnstap::framestream::{ControlFrame, ControlType, control_bytes};
use dnsbgpd::dnstap::proto;
use prost::Message as _;

pub const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";

/// A DNS response to `qname` with the given addresses and TTLs.
pub fn dns_response(qname: &str, answers: &[(IpAddr, u32)]) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1];
    m.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    for label in qname.trim_end_matches('.').split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    let qtype: u16 = match answers.first() {
        Some((IpAddr::V6(_), _)) => 28,
        _ => 1,
    };
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    for (addr, ttl) in answers {
        // Owner: a pointer to the question name at offset 12.
        m.extend_from_slice(&[0xC0, 0x0C]);
        match addr {
            IpAddr::V4(a) => {
                m.extend_from_slice(&[0, 1, 0, 1]);
                m.extend_from_slice(&ttl.to_be_bytes());
                m.extend_from_slice(&[0, 4]);
                m.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                m.extend_from_slice(&[0, 28, 0, 1]);
                m.extend_from_slice(&ttl.to_be_bytes());
                m.extend_from_slice(&[0, 16]);
                m.extend_from_slice(&a.octets());
            }
        }
    }
    m
}

/// The payload of one dnstap data frame: a CLIENT_RESPONSE with `dns`.
pub fn dnstap_payload(dns: Vec<u8>) -> Vec<u8> {
    let msg = proto::Message {
        r#type: 6, // CLIENT_RESPONSE
        socket_family: Some(1),
        socket_protocol: Some(1),
        query_address: Some(vec![127, 0, 0, 1].into()),
        query_port: Some(40000),
        response_message: Some(dns.into()),
        ..Default::default()
    };
    proto::Dnstap {
        identity: Some(b"frames".to_vec().into()),
        version: None,
        extra: None,
        r#type: 1,
        message: Some(msg),
    }
    .encode_to_vec()
}

/// A unidirectional dnstap connection to a dnsbgpd socket.
pub struct DnstapWriter {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl DnstapWriter {
    pub fn connect(socket: &Path) -> Result<DnstapWriter> {
        let mut stream =
            UnixStream::connect(socket).with_context(|| format!("connect to dnstap socket {}", socket.display()))?;
        stream.write_all(&control_bytes(&ControlFrame::with_content_type(ControlType::Start, CONTENT_TYPE)))?;
        Ok(DnstapWriter { stream, buf: Vec::new() })
    }

    /// Queues one response (sent by [`DnstapWriter::flush`]).
    pub fn queue(&mut self, qname: &str, answers: &[(IpAddr, u32)]) {
        let payload = dnstap_payload(dns_response(qname, answers));
        self.buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(&payload);
    }

    pub fn flush(&mut self) -> Result<()> {
        self.stream.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Sends one response now.
    pub fn answer(&mut self, qname: &str, answers: &[(IpAddr, u32)]) -> Result<()> {
        self.queue(qname, answers);
        self.flush()
    }
}

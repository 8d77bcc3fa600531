//! The sending side of dnstap, for tests, load tools and benches (the daemon
//! only receives): DNS messages built the way a resolver writes them
//! ([`Response`], [`query`]), dnstap envelopes around them ([`message`],
//! [`payload`]), and a Frame Streams connection that sends them
//! ([`Writer`], unidirectional or with the READY/ACCEPT handshake).
//!
//! Nothing here reads untrusted input except [`read_control`], which goes
//! through the crate's bounded codec.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use tokio_util::codec::Decoder;

use super::MessageType;
use super::framestream::{
    ControlFrame, ControlType, DNSTAP_CONTENT_TYPE, Frame, FrameCodec, MAX_CONTROL_FRAME, control_bytes,
};
use super::proto;

/// RR types the builders write.
pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;

/// Appends `name` in DNS wire form (no compression; a trailing dot is
/// ignored). Labels longer than 63 bytes are the caller's problem: the
/// builders exist to write valid messages and, on purpose, odd ones.
pub fn write_name(out: &mut Vec<u8>, name: &str) {
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// A DNS query for `name` and `qtype` with RD set.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    write_name(&mut m, name);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m
}

/// A DNS response being built: one question, then CNAME and address
/// records, each owned by the question name or the last CNAME target (as a
/// compression pointer, the way resolvers write them).
pub struct Response {
    m: Vec<u8>,
    /// Offset of the name the next record is owned by.
    owner: usize,
    answers: u16,
    edns: bool,
}

impl Response {
    /// A NOERROR response (QR, RD, RA) to `qname`/`qtype`.
    pub fn new(id: u16, qname: &str, qtype: u16) -> Response {
        let mut m = Vec::with_capacity(64 + qname.len());
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]);
        let owner = m.len();
        write_name(&mut m, qname);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        Response { m, owner, answers: 0, edns: false }
    }

    /// Sets the response code (3 = NXDOMAIN).
    pub fn rcode(mut self, rcode: u8) -> Response {
        self.m[3] = 0x80 | (rcode & 0x0f);
        self
    }

    /// `owner CNAME target`; later records are owned by `target`.
    pub fn cname(mut self, target: &str, ttl: u32) -> Response {
        self.record_head(TYPE_CNAME, ttl);
        let len_at = self.m.len();
        self.m.extend_from_slice(&[0, 0]);
        let start = self.m.len();
        write_name(&mut self.m, target);
        let len = (self.m.len() - start) as u16;
        self.m[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
        self.owner = start;
        self
    }

    /// `owner A addr` or `owner AAAA addr`.
    pub fn address(mut self, addr: IpAddr, ttl: u32) -> Response {
        match addr {
            IpAddr::V4(a) => {
                self.record_head(TYPE_A, ttl);
                self.m.extend_from_slice(&4u16.to_be_bytes());
                self.m.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                self.record_head(TYPE_AAAA, ttl);
                self.m.extend_from_slice(&16u16.to_be_bytes());
                self.m.extend_from_slice(&a.octets());
            }
        }
        self
    }

    /// An OPT record (UDP size 1232, no options) in the additional section.
    pub fn edns(mut self) -> Response {
        self.edns = true;
        self
    }

    pub fn build(mut self) -> Vec<u8> {
        self.m[6..8].copy_from_slice(&self.answers.to_be_bytes());
        if self.edns {
            self.m[10..12].copy_from_slice(&1u16.to_be_bytes());
            self.m.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
        }
        self.m
    }

    fn record_head(&mut self, rtype: u16, ttl: u32) {
        self.answers += 1;
        self.m.extend_from_slice(&(0xC000 | self.owner as u16).to_be_bytes());
        self.m.extend_from_slice(&rtype.to_be_bytes());
        self.m.extend_from_slice(&[0, 1]);
        self.m.extend_from_slice(&ttl.to_be_bytes());
    }
}

/// A response to `qname` answered with `answers` (address, TTL), all owned
/// by `qname`; the question type follows the first address (A if none).
pub fn response(qname: &str, answers: &[(IpAddr, u32)]) -> Vec<u8> {
    let qtype = if answers.first().is_some_and(|(a, _)| a.is_ipv6()) { TYPE_AAAA } else { TYPE_A };
    answers.iter().fold(Response::new(0x1234, qname, qtype), |r, (a, ttl)| r.address(*a, *ttl)).build()
}

/// A dnstap message of type `mtype` from `client` port 40000 over UDP,
/// carrying `dns` as the query or the response message (by `mtype`). Set
/// times and other fields with struct update syntax.
pub fn message(mtype: MessageType, client: IpAddr, dns: Vec<u8>) -> proto::Message {
    let (family, address) = match client {
        IpAddr::V4(a) => (1, Bytes::copy_from_slice(&a.octets())),
        IpAddr::V6(a) => (2, Bytes::copy_from_slice(&a.octets())),
    };
    let response = mtype.is_response();
    let dns = Bytes::from(dns);
    proto::Message {
        r#type: mtype as i32,
        socket_family: Some(family),
        socket_protocol: Some(1),
        query_address: Some(address),
        query_port: Some(40000),
        query_message: (!response).then(|| dns.clone()),
        response_message: response.then_some(dns),
        ..Default::default()
    }
}

/// The payload of one data frame: a dnstap MESSAGE with the resolver's
/// `identity` and `version` (if any).
pub fn payload(identity: Option<&[u8]>, version: Option<&[u8]>, message: proto::Message) -> Vec<u8> {
    proto::Dnstap {
        identity: identity.map(Bytes::copy_from_slice),
        version: version.map(Bytes::copy_from_slice),
        extra: None,
        r#type: 1,
        message: Some(message),
    }
    .encode_to_vec()
}

/// Appends `payload` as one length-prefixed data frame.
pub fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Reads one control frame through the crate's bounded codec.
pub fn read_control(r: &mut impl Read) -> io::Result<ControlFrame> {
    let mut codec = FrameCodec::new(MAX_CONTROL_FRAME);
    let mut buf = BytesMut::with_capacity(MAX_CONTROL_FRAME + 8);
    let mut chunk = [0u8; MAX_CONTROL_FRAME + 8];
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(Frame::Control(c))) => return Ok(c),
            Ok(Some(Frame::Data(_))) => return Err(io::Error::other("a data frame where a control frame belongs")),
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
        let n = r.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a control frame"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A Frame Streams sender: data frames are queued in a buffer and written
/// by [`Writer::flush`] (many frames per system call).
pub struct Writer<S: Read + Write = UnixStream> {
    stream: S,
    buf: Vec<u8>,
    bidirectional: bool,
}

impl Writer<UnixStream> {
    /// A unidirectional stream (START, data) to a unix socket, as unbound
    /// writes one.
    pub fn connect(socket: &Path) -> io::Result<Writer> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| io::Error::new(e.kind(), format!("connect to dnstap socket {}: {e}", socket.display())))?;
        Writer::unidirectional(stream)
    }

    /// A bidirectional stream (READY → ACCEPT → START) to a unix socket;
    /// [`Writer::finish`] then waits for FINISH.
    pub fn connect_bidirectional(socket: &Path) -> io::Result<Writer> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| io::Error::new(e.kind(), format!("connect to dnstap socket {}: {e}", socket.display())))?;
        Writer::bidirectional(stream)
    }
}

impl<S: Read + Write> Writer<S> {
    pub fn unidirectional(mut stream: S) -> io::Result<Writer<S>> {
        stream.write_all(&control_bytes(&ControlFrame::with_content_type(ControlType::Start, DNSTAP_CONTENT_TYPE)))?;
        Ok(Writer { stream, buf: Vec::new(), bidirectional: false })
    }

    pub fn bidirectional(mut stream: S) -> io::Result<Writer<S>> {
        stream.write_all(&control_bytes(&ControlFrame::with_content_type(ControlType::Ready, DNSTAP_CONTENT_TYPE)))?;
        let accept = read_control(&mut stream)?;
        if accept.kind != ControlType::Accept || !accept.offers(DNSTAP_CONTENT_TYPE) {
            return Err(io::Error::other(format!("expected ACCEPT with the dnstap content type, got {accept:?}")));
        }
        stream.write_all(&control_bytes(&ControlFrame::with_content_type(ControlType::Start, DNSTAP_CONTENT_TYPE)))?;
        Ok(Writer { stream, buf: Vec::new(), bidirectional: true })
    }

    /// Queues one data frame carrying `payload`.
    pub fn queue(&mut self, payload: &[u8]) {
        push_frame(&mut self.buf, payload);
    }

    /// Queues bytes that are already framed (length prefixes included).
    pub fn queue_framed(&mut self, frames: &[u8]) {
        self.buf.extend_from_slice(frames);
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.buf.len()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Queues and sends one frame.
    pub fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        self.queue(payload);
        self.flush()
    }

    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Flushes, sends STOP and, on a bidirectional stream, waits for FINISH
    /// (the receiver has handled every frame before STOP).
    pub fn finish(mut self) -> io::Result<()> {
        self.buf.extend_from_slice(&control_bytes(&ControlFrame::new(ControlType::Stop)));
        self.flush()?;
        if self.bidirectional {
            let f = read_control(&mut self.stream)?;
            if f.kind != ControlType::Finish {
                return Err(io::Error::other(format!("expected FINISH, got {f:?}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dnstap::dnswire;

    #[test]
    fn a_cname_chain_with_edns_reads_as_a_resolver_answer() {
        let dns = Response::new(7, "www.example.test", TYPE_A)
            .cname("edge.cdn.test", 60)
            .address("198.51.100.1".parse().unwrap(), 300)
            .edns()
            .build();
        let msg = hickory_proto::op::Message::from_vec(&dns).unwrap();
        assert_eq!(msg.answers.len(), 2);
        assert_eq!(msg.answers[1].name.to_string(), "edge.cdn.test.");
        let simple = dnswire::parse_simple(&dns).expect("the fast path takes it");
        assert_eq!((simple.qname.as_str(), simple.qtype, simple.rcode), ("www.example.test", TYPE_A, 0));
        assert_eq!(simple.answers.len(), 2);
        let nx = Response::new(8, "gone.example.test", TYPE_AAAA).rcode(3).build();
        assert_eq!(dnswire::parse_simple(&nx).map(|r| r.rcode), Some(3));
    }

    #[test]
    fn a_unidirectional_stream_is_start_frames_stop() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut w = Writer::unidirectional(a).unwrap();
        let dns = response("www.example.test", &[("2001:db8::1".parse().unwrap(), 60)]);
        let msg = message(MessageType::ClientResponse, "127.0.0.1".parse().unwrap(), dns.clone());
        w.send(&payload(Some(b"test"), None, msg)).unwrap();
        w.finish().unwrap();
        let mut bytes = Vec::new();
        b.read_to_end(&mut bytes).unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        let mut codec = FrameCodec::new(1 << 16);
        let mut frames = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        assert!(
            matches!(&frames[0], Frame::Control(c) if c.kind == ControlType::Start && c.offers(DNSTAP_CONTENT_TYPE))
        );
        let Frame::Data(d) = &frames[1] else { panic!("{frames:?}") };
        let decoded = proto::Dnstap::decode(&d[..]).unwrap();
        assert_eq!(decoded.message.unwrap().response_message.as_deref(), Some(&dns[..]));
        assert!(matches!(&frames[2], Frame::Control(c) if c.kind == ControlType::Stop));
        assert_eq!(frames.len(), 3);
    }
}

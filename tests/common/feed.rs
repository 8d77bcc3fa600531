//! Feeds dnstap CLIENT_RESPONSE frames straight into a dnsbgpd socket, for
//! tests that need exact names, addresses and TTLs without a resolver.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::Result;
use dnsbgpd::dnstap::framestream::{ControlFrame, ControlType, DNSTAP_CONTENT_TYPE, control_bytes};
use dnsbgpd::dnstap::proto;
use prost::Message as _;

fn name(out: &mut Vec<u8>, n: &str) {
    for label in n.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

/// A DNS response for `qname` whose answer is `qname` → each address, with
/// `ttl`. A `cname` makes the chain `qname CNAME cname`, addresses on `cname`.
pub fn response(qname: &str, cname: Option<&str>, addrs: &[IpAddr], ttl: u32) -> Vec<u8> {
    let ancount = addrs.len() + usize::from(cname.is_some());
    let qtype: u16 = if addrs.first().is_some_and(|a| a.is_ipv6()) { 28 } else { 1 };
    let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, ancount as u8, 0, 0, 0, 0];
    name(&mut m, qname);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    let owner = cname.unwrap_or(qname);
    if let Some(c) = cname {
        name(&mut m, qname);
        let mut rdata = Vec::new();
        name(&mut rdata, c);
        m.extend_from_slice(&[0, 5, 0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(&rdata);
    }
    for a in addrs {
        name(&mut m, owner);
        let (t, data) = match a {
            IpAddr::V4(v4) => (1u16, v4.octets().to_vec()),
            IpAddr::V6(v6) => (28u16, v6.octets().to_vec()),
        };
        m.extend_from_slice(&t.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&(data.len() as u16).to_be_bytes());
        m.extend_from_slice(&data);
    }
    m
}

/// One open unidirectional dnstap stream.
pub struct Feed {
    stream: UnixStream,
}

impl Feed {
    pub fn connect(socket: &Path) -> Result<Feed> {
        let mut stream = UnixStream::connect(socket)?;
        stream.write_all(&control_bytes(&ControlFrame::with_content_type(ControlType::Start, DNSTAP_CONTENT_TYPE)))?;
        Ok(Feed { stream })
    }

    /// Sends one CLIENT_RESPONSE carrying `dns`.
    pub fn send(&mut self, dns: Vec<u8>) -> Result<()> {
        let msg = proto::Message {
            r#type: 6,
            socket_family: Some(1),
            socket_protocol: Some(1),
            query_address: Some(bytes::Bytes::from_static(&[127, 0, 0, 1])),
            query_port: Some(40000),
            response_message: Some(bytes::Bytes::from(dns)),
            ..Default::default()
        };
        let frame =
            proto::Dnstap { identity: None, version: None, extra: None, r#type: 1, message: Some(msg) }.encode_to_vec();
        self.stream.write_all(&(frame.len() as u32).to_be_bytes())?;
        self.stream.write_all(&frame)?;
        Ok(())
    }

    /// Shorthand: `qname` answered with `addrs` and `ttl`.
    pub fn answer(&mut self, qname: &str, addrs: &[&str], ttl: u32) -> Result<()> {
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
        self.send(response(qname, None, &addrs, ttl))
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        let _ = self.stream.write_all(&control_bytes(&ControlFrame::new(ControlType::Stop)));
    }
}

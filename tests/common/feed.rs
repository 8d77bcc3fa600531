//! Feeds dnstap CLIENT_RESPONSE frames straight into a dnsbgpd socket, for
//! tests that need exact names, addresses and TTLs without a resolver.
//! Built on the crate's one dnstap writer (`dnsbgpd::dnstap::writer`).

use std::net::IpAddr;
use std::path::Path;

use anyhow::Result;
use dnsbgpd::dnstap::MessageType;
use dnsbgpd::dnstap::writer::{self, Response, Writer};

/// A DNS response for `qname` whose answer is `qname` → each address, with
/// `ttl`. A `cname` makes the chain `qname CNAME cname`, addresses on `cname`.
pub fn response(qname: &str, cname: Option<&str>, addrs: &[IpAddr], ttl: u32) -> Vec<u8> {
    let qtype = if addrs.first().is_some_and(|a| a.is_ipv6()) { writer::TYPE_AAAA } else { writer::TYPE_A };
    let mut r = Response::new(0x1234, qname, qtype);
    if let Some(c) = cname {
        r = r.cname(c, ttl);
    }
    addrs.iter().fold(r, |r, a| r.address(*a, ttl)).build()
}

/// One open unidirectional dnstap stream; STOP is sent when it is dropped.
pub struct Feed {
    w: Option<Writer>,
}

impl Feed {
    pub fn connect(socket: &Path) -> Result<Feed> {
        Ok(Feed { w: Some(Writer::connect(socket)?) })
    }

    /// Sends one CLIENT_RESPONSE carrying `dns`.
    pub fn send(&mut self, dns: Vec<u8>) -> Result<()> {
        let msg = writer::message(MessageType::ClientResponse, IpAddr::from([127, 0, 0, 1]), dns);
        if let Some(w) = self.w.as_mut() {
            w.send(&writer::payload(None, None, msg))?;
        }
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
        if let Some(w) = self.w.take() {
            let _ = w.finish();
        }
    }
}

//! A synthetic but realistic dnstap traffic mix, shared by `dnstap-load`
//! and `benches/pipeline.rs` (which includes this file with `#[path]`).
//!
//! Every name index `i` stands for one "entity": a question name and the
//! resolver's CLIENT_RESPONSE to it, derived deterministically from `(seed,
//! i)`, so the load tool, the list file it writes and the benches agree
//! without sharing state. Per entity:
//!
//! * question name `[prefix.]<letters><i>.<tld>`: 3–9 random letters plus
//!   the decimal index (unique), one of 10 TLDs, a `www`/`api`/`cdn`/…
//!   prefix on 80 % of them;
//! * 25 % AAAA questions, the rest A; 4 % NXDOMAIN (no answers);
//! * a CNAME chain before the addresses on 35 % (25 % one hop, 10 % two
//!   hops), targets under CDN-like domains (`akamaiedge.net`, …);
//! * 1 address (60 %), 2 (25 %) or 4 (15 %); addresses are unique per
//!   entity (10.0.0.0/8, 2001:db8::/32), so every listed address is a
//!   route of its own;
//! * an EDNS OPT record in the additional section, names in the answer
//!   section compressed as resolvers do;
//! * listed with probability `listed_percent`: the list entry is the
//!   question's registrable part (`<letters><i>.<tld>`, matched as a
//!   suffix), or for 20 % of the listed entities with a CNAME chain the
//!   first CNAME target (the match happens inside the answer).
//!
//! List padding ("filler") uses TLDs the traffic never uses, so a bigger
//! list changes nothing but its size.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dnsbgpd::dnstap::writer::{self, Response};
use dnsbgpd::dnstap::{MessageType, proto};

/// splitmix64: small, fast, good enough for traffic generation.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_F42D_4C95_7F2D)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift, bias irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// The splitmix64 finaliser.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const TLDS: [&str; 10] = ["com", "net", "org", "io", "de", "ru", "co.uk", "com.br", "fr", "info"];
const PREFIXES: [&str; 10] = ["www", "api", "cdn", "img", "m", "static", "login", "", "", "app"];
const CDNS: [&str; 8] = [
    "akamaiedge.net",
    "cloudfront.net",
    "fastly.net",
    "edgekey.net",
    "azureedge.net",
    "cdn.cloudflare.net",
    "llnwd.net",
    "gslb.cdn-provider.com",
];
/// TLDs of list padding: never used by the traffic.
const FILLER_TLDS: [&str; 6] = ["xyz", "top", "online", "site", "shop", "club"];
const TTLS: [u32; 8] = [30, 60, 120, 300, 300, 600, 3600, 86400];

/// `len` pseudo-random lowercase letters from `h`.
fn letters(out: &mut String, mut h: u64, len: usize) {
    for _ in 0..len {
        out.push((b'a' + (h % 26) as u8) as char);
        h /= 26;
        if h == 0 {
            h = mix64(len as u64 ^ 0xABCD);
        }
    }
}

/// One question and the response to it.
#[derive(Debug, Clone)]
pub struct Entity {
    pub index: usize,
    pub qname: String,
    pub aaaa: bool,
    pub nxdomain: bool,
    /// CNAME targets, in chain order.
    pub cnames: Vec<String>,
    pub ttl: u32,
    pub addresses: Vec<std::net::IpAddr>,
    /// The list entry that makes this entity listed.
    pub listed: Option<String>,
}

impl Entity {
    pub fn new(seed: u64, index: usize, listed_percent: f64) -> Entity {
        let i = index as u64;
        let h = mix64(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let h2 = mix64(h ^ 0x1234_5678);
        let h3 = mix64(h2 ^ 0x8765_4321);
        let mut base = String::with_capacity(32);
        letters(&mut base, h2, 3 + (h % 7) as usize);
        base.push_str(&index.to_string());
        base.push('.');
        base.push_str(TLDS[((h >> 4) % TLDS.len() as u64) as usize]);
        let prefix = PREFIXES[((h >> 8) % PREFIXES.len() as u64) as usize];
        let qname = if prefix.is_empty() { base.clone() } else { format!("{prefix}.{base}") };
        let aaaa = (h >> 12) % 100 < 25;
        let nxdomain = (h >> 20) % 100 < 4;
        let chain = match (h >> 28) % 100 {
            0..65 => 0,
            65..90 => 1,
            _ => 2,
        };
        let naddr = match (h >> 36) % 100 {
            0..60 => 1,
            60..85 => 2,
            _ => 4,
        };
        let ttl = TTLS[((h >> 44) % TTLS.len() as u64) as usize];
        let mut cnames = Vec::new();
        let mut addresses = Vec::new();
        if !nxdomain {
            for k in 0..chain {
                let mut t = String::with_capacity(40);
                t.push_str(if k == 0 { "e" } else { "a" });
                letters(&mut t, h3 >> (k * 8), 2 + ((h3 >> 40) % 5) as usize);
                t.push_str(&index.to_string());
                t.push('.');
                t.push_str(CDNS[((h3 >> (48 + k * 3)) % CDNS.len() as u64) as usize]);
                cnames.push(t);
            }
            for k in 0..naddr as u64 {
                let n = i * 4 + k;
                addresses.push(if aaaa {
                    std::net::IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | u128::from(n)))
                } else {
                    std::net::IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | (n as u32 & 0x00FF_FFFF)))
                });
            }
        }
        let listed_roll = mix64(h ^ seed ^ 0xF00D) % 1_000_000;
        let listed = if (listed_roll as f64) < listed_percent * 10_000.0 {
            if !cnames.is_empty() && (h >> 52) % 100 < 20 { Some(cnames[0].clone()) } else { Some(base) }
        } else {
            None
        };
        Entity { index, qname, aaaa, nxdomain, cnames, ttl, addresses, listed }
    }

    /// The DNS response, as a resolver writes it (the crate's one dnstap
    /// writer builds it: answers owned by compression pointers, an OPT).
    pub fn dns_response(&self) -> Vec<u8> {
        let qtype = if self.aaaa { writer::TYPE_AAAA } else { writer::TYPE_A };
        let mut r = Response::new(self.index as u16, &self.qname, qtype).edns();
        if self.nxdomain {
            r = r.rcode(3);
        }
        for target in &self.cnames {
            r = r.cname(target, self.ttl);
        }
        for addr in &self.addresses {
            r = r.address(*addr, self.ttl);
        }
        r.build()
    }

    /// The dnstap payload (the protobuf, without Frame Streams framing) of
    /// a CLIENT_RESPONSE carrying [`Entity::dns_response`], as unbound
    /// fills it in.
    pub fn dnstap_payload(&self) -> Bytes {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let h = mix64(self.index as u64 ^ 0xC11E);
        let client = IpAddr::from([192, 168, (h >> 8) as u8, (h >> 16) as u8 | 1]);
        let msg = proto::Message {
            response_address: Some(Bytes::from_static(&[192, 168, 0, 53])),
            query_port: Some(1024 + (h >> 32) as u32 % 60000),
            response_port: Some(53),
            query_time_sec: Some(now.as_secs()),
            query_time_nsec: Some(now.subsec_nanos()),
            response_time_sec: Some(now.as_secs()),
            response_time_nsec: Some(now.subsec_nanos()),
            ..writer::message(MessageType::ClientResponse, client, self.dns_response())
        };
        Bytes::from(writer::payload(Some(b"resolver-1"), Some(b"unbound 1.22.0"), msg))
    }
}

/// The `j`-th padding domain of a list.
pub fn filler(j: usize) -> String {
    let h = mix64(j as u64 ^ 0xF111_E700);
    let mut s = String::with_capacity(28);
    if h.is_multiple_of(4) {
        s.push_str(["www.", "cdn.", "api.", "m."][((h >> 2) % 4) as usize]);
    }
    letters(&mut s, h >> 8, 4 + ((h >> 4) % 8) as usize);
    s.push_str(&j.to_string());
    s.push('.');
    s.push_str(FILLER_TLDS[((h >> 60) % FILLER_TLDS.len() as u64) as usize]);
    s
}

/// The whole mix: one pre-encoded dnstap payload per entity.
pub struct Mix {
    pub seed: u64,
    pub listed_percent: f64,
    pub payloads: Vec<Bytes>,
    /// The list entries of the listed entities.
    pub list: Vec<String>,
    /// Addresses in the answers of listed entities: the routes a run
    /// that sends every entity at least once ends with.
    pub listed_addresses: usize,
}

impl Mix {
    pub fn build(seed: u64, names: usize, listed_percent: f64) -> Mix {
        let mut payloads = Vec::with_capacity(names);
        let mut list = Vec::new();
        let mut listed_addresses = 0;
        for i in 0..names {
            let e = Entity::new(seed, i, listed_percent);
            payloads.push(e.dnstap_payload());
            if let Some(l) = e.listed {
                listed_addresses += e.addresses.len();
                list.push(l);
            }
        }
        Mix { seed, listed_percent, payloads, list, listed_addresses }
    }

    pub fn entity(&self, index: usize) -> Entity {
        Entity::new(self.seed, index, self.listed_percent)
    }

    /// A list file: the listed entries, then padding up to `total` lines.
    pub fn list_text(&self, total: usize) -> String {
        let mut text = String::with_capacity(total.max(self.list.len()) * 24);
        for l in &self.list {
            text.push_str(l);
            text.push('\n');
        }
        for j in 0..total.saturating_sub(self.list.len()) {
            text.push_str(&filler(j));
            text.push('\n');
        }
        text
    }
}

//! The eBPF filter on crafted packets: BPF_PROG_TEST_RUN of both programs
//! (the socket filter and the cgroup_skb one) with entries put in through
//! the [`Filter`] enforcer, plus the socket filter attached to a real
//! dual-stack loopback UDP socket (IPv4 datagrams on an IPv6 socket, the
//! offsets a real socket filter sees).
//!
//! Needs CAP_BPF (root): skipped with a printed reason, a failure with
//! `CI=true`.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dnsbgpd::blocking::filter::{CGROUP_PROGRAM, Filter, SOCKET_PROGRAM};
use dnsbgpd::blocking::kernel::{Enforcer, KernelKey, NameMatch, QTYPE_ANY, Verdict};

const A: u16 = 1;
const AAAA: u16 = 28;
const PORT: u16 = 5301;

/// A filter, or `None` (skip) when eBPF cannot be loaded here outside CI.
fn filter() -> Option<Filter> {
    match Filter::open(1024, None) {
        Ok(f) => Some(f),
        Err(e) => {
            common::skip(format_args!("cannot load the eBPF filter (needs root / CAP_BPF): {e}"));
            None
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn later() -> u64 {
    now_ms() + 600_000
}

fn wire(name: &str) -> Vec<u8> {
    let mut w = Vec::new();
    for l in name.split('.').filter(|l| !l.is_empty()) {
        w.push(l.len() as u8);
        w.extend_from_slice(l.as_bytes());
    }
    w.push(0);
    w
}

/// DNS header (one question, RD) + question.
fn query_wire(qname: &[u8], qtype: u16) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(qname);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m
}

fn query(name: &str, qtype: u16) -> Vec<u8> {
    query_wire(&wire(name), qtype)
}

fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&40000u16.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// A TCP segment carrying `payload` (SYN when empty).
fn tcp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&40000u16.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, if payload.is_empty() { 0x02 } else { 0x18 }, 0xff, 0xff]);
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

fn eth(ethertype: u16, rest: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(rest);
    f
}

fn v4(src: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    h[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(l4);
    eth(0x0800, &h)
}

fn v6(src: Ipv6Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    h.extend_from_slice(&[proto, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    h.extend_from_slice(l4);
    eth(0x86dd, &h)
}

fn udp4(src: &str, payload: &[u8]) -> Vec<u8> {
    v4(src.parse().unwrap(), 17, &udp(PORT, payload))
}

fn udp6(src: &str, payload: &[u8]) -> Vec<u8> {
    v6(src.parse().unwrap(), 17, &udp(PORT, payload))
}

/// True when the socket filter drops `packet`.
fn drops(f: &Filter, packet: &[u8]) -> bool {
    let (ret, _) = f.test_run(SOCKET_PROGRAM, packet, 1).expect("BPF_PROG_TEST_RUN");
    ret == 0
}

fn cgroup_drops(f: &Filter, packet: &[u8]) -> bool {
    let (ret, _) = f.test_run(CGROUP_PROGRAM, packet, 1).expect("BPF_PROG_TEST_RUN");
    ret == 0
}

fn name(n: &str, matching: NameMatch, qtype: u16) -> KernelKey {
    KernelKey::Name { name: n.into(), matching, qtype }
}

fn src(s: &str) -> KernelKey {
    KernelKey::Source(s.parse().unwrap())
}

#[test]
fn sources_v4_v6_and_ranges_udp_and_tcp() {
    let Some(f) = filter() else { return };
    let q = query("www.example.com", A);
    assert!(!drops(&f, &udp4("198.51.100.7", &q)), "nothing blocked yet");
    f.upsert(&src("198.51.100.7/32"), Verdict::Drop, later()).unwrap();
    f.upsert(&src("203.0.113.0/24"), Verdict::Drop, later()).unwrap();
    f.upsert(&src("2001:db8::1/128"), Verdict::Drop, later()).unwrap();
    f.upsert(&src("2001:db8:1::/48"), Verdict::Drop, later()).unwrap();
    assert!(drops(&f, &udp4("198.51.100.7", &q)));
    assert!(!drops(&f, &udp4("198.51.100.8", &q)));
    assert!(drops(&f, &udp4("203.0.113.200", &q)));
    assert!(!drops(&f, &udp4("203.0.114.1", &q)));
    assert!(drops(&f, &udp6("2001:db8::1", &q)));
    assert!(!drops(&f, &udp6("2001:db8::2", &q)));
    assert!(drops(&f, &udp6("2001:db8:1:ffff::9", &q)));
    assert!(!drops(&f, &udp6("2001:db8:2::9", &q)));
    // TCP: a SYN and a segment from a blocked source, not from others.
    assert!(drops(&f, &v4("198.51.100.7".parse().unwrap(), 6, &tcp(PORT, &[]))));
    assert!(!drops(&f, &v4("198.51.100.8".parse().unwrap(), 6, &tcp(PORT, &[]))));
    assert!(drops(&f, &v6("2001:db8:1::5".parse().unwrap(), 6, &tcp(PORT, &q))));
    // Whatever the payload, even garbage, a blocked source is dropped.
    assert!(drops(&f, &udp4("198.51.100.7", b"junk")));
    assert_eq!(f.hits(&src("198.51.100.7/32")).unwrap(), Some(3));
    assert_eq!(f.hits(&src("203.0.113.0/24")).unwrap(), Some(1));
    assert_eq!(f.drops().unwrap().source, 7);
    // Removal takes effect for the next packet.
    assert!(f.remove(&src("203.0.113.0/24")).unwrap());
    assert!(!f.remove(&src("203.0.113.0/24")).unwrap());
    assert!(!drops(&f, &udp4("203.0.113.200", &q)));
    // The last v4 range is gone (its trie is skipped now) and comes back;
    // the exact sources never left.
    f.upsert(&src("203.0.113.0/24"), Verdict::Drop, later()).unwrap();
    assert!(drops(&f, &udp4("203.0.113.200", &q)));
    assert!(f.remove(&src("198.51.100.7/32")).unwrap());
    assert!(!drops(&f, &udp4("198.51.100.7", &q)));
    assert!(drops(&f, &udp6("2001:db8::1", &q)), "v6 exact entries are another map");
    f.upsert(&src("198.51.100.7/32"), Verdict::Drop, later()).unwrap();
    assert!(drops(&f, &udp4("198.51.100.7", &q)));
}

#[test]
fn names_exact_suffix_below_allow_and_qtype() {
    let Some(f) = filter() else { return };
    f.upsert(&name("example.com", NameMatch::Below, QTYPE_ANY), Verdict::Drop, later()).unwrap();
    f.upsert(&name("www.example.com", NameMatch::Exact, QTYPE_ANY), Verdict::Allow, later()).unwrap();
    f.upsert(&name("exact.test", NameMatch::Exact, QTYPE_ANY), Verdict::Drop, later()).unwrap();
    f.upsert(&name("qt.test", NameMatch::Suffix, AAAA), Verdict::Drop, later()).unwrap();
    let c = "192.0.2.1";
    // Below: strictly below, not the name itself; the allow hole stays open.
    assert!(drops(&f, &udp4(c, &query("x1.example.com", A))));
    assert!(drops(&f, &udp4(c, &query("a.b.c.example.com", AAAA))));
    assert!(!drops(&f, &udp4(c, &query("example.com", A))));
    assert!(!drops(&f, &udp4(c, &query("www.example.com", A))));
    assert!(drops(&f, &udp4(c, &query("deeper.www.example.com", A))), "the hole is exact");
    assert!(!drops(&f, &udp4(c, &query("example.org", A))));
    assert!(!drops(&f, &udp4(c, &query("xexample.com", A))), "label boundaries");
    // Exact: that name only.
    assert!(drops(&f, &udp4(c, &query("exact.test", A))));
    assert!(!drops(&f, &udp4(c, &query("sub.exact.test", A))));
    // Suffix with a qtype: name and below, only AAAA.
    assert!(drops(&f, &udp4(c, &query("qt.test", AAAA))));
    assert!(drops(&f, &udp4(c, &query("a.qt.test", AAAA))));
    assert!(!drops(&f, &udp4(c, &query("a.qt.test", A))));
    // Uppercase in the packet.
    assert!(drops(&f, &udp4(c, &query("X1.EXAMPLE.COM", A))));
    assert!(drops(&f, &udp4(c, &query("A.Qt.TeSt", AAAA))));
    assert!(!drops(&f, &udp4(c, &query("WWW.Example.Com", A))));
    // IPv6 packets are checked the same way.
    assert!(drops(&f, &udp6("2001:db8::7", &query("x2.example.com", A))));
    assert!(!drops(&f, &udp6("2001:db8::7", &query("www.example.com", A))));
    // TCP carries no name check: only sources are matched there.
    let mut framed = Vec::new();
    let q = query("x1.example.com", A);
    framed.extend_from_slice(&(q.len() as u16).to_be_bytes());
    framed.extend_from_slice(&q);
    assert!(!drops(&f, &v4(c.parse().unwrap(), 6, &tcp(PORT, &framed))));
    let d = f.drops().unwrap();
    assert_eq!((d.source, d.qname, d.suffix), (0, 1, 8));
    assert_eq!(f.hits(&name("www.example.com", NameMatch::Exact, QTYPE_ANY)).unwrap(), Some(3));
    // The most specific entry wins: an allow below a dropped suffix, and a
    // qtype-specific allow over an ANY drop of the same name.
    f.upsert(&name("exact.test", NameMatch::Exact, A), Verdict::Allow, later()).unwrap();
    assert!(!drops(&f, &udp4(c, &query("exact.test", A))));
    assert!(drops(&f, &udp4(c, &query("exact.test", AAAA))));
}

/// Labels are hashed eight bytes at a time with all lanes lowercased at
/// once: labels of 8, 9, 16, 17 and 63 bytes, uppercase in every lane, and
/// the bytes next to the letter ranges (`@` `[` `` ` `` `{`, and bytes with
/// the top bit set whose low seven bits are a letter) must hash like the
/// userspace twin. Also: removing the last entry of a name and adding it
/// again keeps the counting filter in step.
#[test]
fn long_labels_and_lowercasing_edges() {
    let Some(f) = filter() else { return };
    let c = "192.0.2.1";
    let long = "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0";
    assert_eq!(long.len(), 63);
    let names = ["abcdefgh.test", "abcdefghi.test", "abcdefgh12345678.test", "abcdefgh12345678z.test"];
    for n in names {
        f.upsert(&name(n, NameMatch::Exact, QTYPE_ANY), Verdict::Drop, later()).unwrap();
    }
    f.upsert(&name(&format!("{long}.test"), NameMatch::Suffix, QTYPE_ANY), Verdict::Drop, later()).unwrap();
    f.upsert(&name("x@y[z.test", NameMatch::Exact, QTYPE_ANY), Verdict::Drop, later()).unwrap();
    f.upsert(&name("high\u{c3}.test", NameMatch::Exact, QTYPE_ANY), Verdict::Drop, later()).unwrap();
    for n in names {
        assert!(drops(&f, &udp4(c, &query(n, A))), "{n}");
        assert!(drops(&f, &udp4(c, &query(&n.to_ascii_uppercase(), A))), "{n} in uppercase");
        // One byte more or less in the first label: another name.
        let (first, rest) = n.split_once('.').unwrap();
        assert!(!drops(&f, &udp4(c, &query(&format!("{first}x.{rest}"), A))), "{n} + x");
        assert!(!drops(&f, &udp4(c, &query(&format!("{}.{rest}", &first[1..]), A))), "{n} - 1");
    }
    assert!(drops(&f, &udp4(c, &query(&format!("www.{}.test", long.to_ascii_uppercase()), A))));
    let mut other = long.to_string();
    other.replace_range(62.., "1");
    assert!(!drops(&f, &udp4(c, &query(&format!("{other}.test"), A))), "last byte of a 63-byte label");
    // `@` | 0x20 is `` ` `` and `[` | 0x20 is `{`: not letters, not folded.
    assert!(drops(&f, &udp4(c, &query("x@y[z.test", A))));
    assert!(drops(&f, &udp4(c, &query("X@Y[Z.TEST", A))));
    assert!(!drops(&f, &udp4(c, &query("x`y[z.test", A))));
    assert!(!drops(&f, &udp4(c, &query("x@y{z.test", A))));
    // 0xc3 & 0x7f is 'C': a byte with the top bit set is never folded.
    let label = |b: &[u8]| {
        let mut w = vec![b.len() as u8];
        w.extend_from_slice(b);
        w.extend_from_slice(&[4, b't', b'e', b's', b't', 0]);
        w
    };
    let high = "high\u{c3}".as_bytes();
    assert!(drops(&f, &udp4(c, &query_wire(&label(high), A))));
    let mut folded = high.to_vec();
    folded[4] |= 0x20; // 0xc3 -> 0xe3
    assert!(!drops(&f, &udp4(c, &query_wire(&label(&folded), A))));
    // The counting filter follows removal and re-insertion.
    let k = name("abcdefghi.test", NameMatch::Exact, QTYPE_ANY);
    assert!(f.remove(&k).unwrap());
    assert!(!drops(&f, &udp4(c, &query("abcdefghi.test", A))));
    assert!(drops(&f, &udp4(c, &query("abcdefgh.test", A))), "a neighbour stays");
    f.upsert(&k, Verdict::Drop, later()).unwrap();
    assert!(drops(&f, &udp4(c, &query("abcdefghi.test", A))));
}

/// A small deterministic generator (xorshift64*), so that a failure names
/// a name that can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random name: 1–12 labels of 1–63 bytes, at most 255 bytes on the
/// wire; letters of both cases, digits, `-` `_` `@` `[` `` ` `` `{`, and now
/// and then a two-byte UTF-8 letter (top bit set in both bytes).
fn random_name(r: &mut Rng) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_@[`{";
    let labels = 1 + r.below(12);
    let mut name = String::new();
    let mut wire = 1;
    for _ in 0..labels {
        let max = 63.min(255 - wire - 1);
        if max == 0 {
            break;
        }
        // Short labels most of the time, so that names have many of them.
        let cap = if r.below(4) == 0 { max } else { max.min(12) };
        let len = 1 + r.below(cap as u64) as usize;
        let mut label = String::new();
        while label.len() < len {
            if len - label.len() >= 2 && r.below(16) == 0 {
                label.push(['é', 'Ã', 'ß'][r.below(3) as usize]);
            } else {
                label.push(CHARS[r.below(CHARS.len() as u64) as usize] as char);
            }
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&label);
        wire += 1 + label.len();
    }
    name
}

/// The kernel computes the same key as the userspace twin (`NameHasher`)
/// on random names: each name is put in as an exact entry (in lowercase)
/// and must be dropped when queried in random case, while the same name
/// with one byte changed, or one label fewer, must pass.
#[test]
fn kernel_and_userspace_hash_random_names_alike() {
    let Some(f) = filter() else { return };
    let c = "192.0.2.1";
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let n = random_name(&mut r);
        let lower = n.to_ascii_lowercase();
        let k = name(&lower, NameMatch::Exact, QTYPE_ANY);
        f.upsert(&k, Verdict::Drop, later()).unwrap();
        let mixed: String = n
            .chars()
            .map(|ch| if r.below(2) == 0 { ch.to_ascii_uppercase() } else { ch.to_ascii_lowercase() })
            .collect();
        assert!(drops(&f, &udp4(c, &query(&mixed, A))), "round {round}: {mixed:?} (entry {lower:?})");
        // One byte changed (a letter or digit that stays one after folding).
        let mut bytes = lower.clone().into_bytes();
        let at = (0..bytes.len()).rev().find(|&i| bytes[i].is_ascii_alphanumeric());
        if let Some(i) = at {
            bytes[i] = if bytes[i] == b'z' { b'y' } else { b'z' };
            let other = String::from_utf8(bytes).unwrap();
            assert!(!drops(&f, &udp4(c, &query(&other, A))), "round {round}: {other:?} matched {lower:?}");
        }
        if let Some((_, parent)) = lower.split_once('.') {
            assert!(!drops(&f, &udp4(c, &query(parent, A))), "round {round}: parent {parent:?} matched {lower:?}");
        }
        assert!(f.remove(&k).unwrap());
    }
}

#[test]
fn malformed_and_edge_packets_pass() {
    let Some(f) = filter() else { return };
    f.upsert(&name("example.com", NameMatch::Suffix, QTYPE_ANY), Verdict::Drop, later()).unwrap();
    let c = "192.0.2.1";
    let full = query("www.example.com", A);
    assert!(drops(&f, &udp4(c, &full)));
    // Truncated: inside the name, before the qtype, header only.
    for cut in [12 + 5, 12 + 16, 12 + 17, 12 + 18, 12, 5] {
        assert!(!drops(&f, &udp4(c, &full[..cut])), "cut at {cut}");
    }
    // A compression pointer in the question name.
    let mut pointer = wire("www");
    pointer.pop();
    pointer.extend_from_slice(&[0xc0, 0x0c]);
    assert!(!drops(&f, &udp4(c, &query_wire(&pointer, A))));
    // A response (QR set) is not a query.
    let mut resp = full.clone();
    resp[2] |= 0x80;
    assert!(!drops(&f, &udp4(c, &resp)));
    // No question.
    let mut noq = full.clone();
    noq[5] = 0;
    assert!(!drops(&f, &udp4(c, &noq)));
    // A label length running past the end.
    let mut bad = wire("www.example.com");
    bad[0] = 60;
    assert!(!drops(&f, &udp4(c, &query_wire(&bad, A))));
    // 255 bytes on the wire is the longest name: matched. One more: passes.
    let l63 = "a".repeat(63);
    let n255 = format!("{l63}.{l63}.{l63}.{}.example.com", "b".repeat(49));
    assert_eq!(wire(&n255).len(), 255);
    assert!(drops(&f, &udp4(c, &query(&n255, A))));
    let n256 = format!("{l63}.{l63}.{l63}.{}.example.com", "b".repeat(50));
    assert_eq!(wire(&n256).len(), 256);
    assert!(!drops(&f, &udp4(c, &query(&n256, A))));
    // Many tiny labels (127 of them, the most that fit).
    let tiny = format!("{}example.com", "a.".repeat(115));
    assert!(wire(&tiny).len() <= 255);
    assert!(drops(&f, &udp4(c, &query(&tiny, A))));
    // A non-first IPv4 fragment carries no UDP header.
    let mut frag = udp4(c, &full);
    frag[14 + 6] = 0x00;
    frag[14 + 7] = 0x10;
    assert!(!drops(&f, &frag));
    // Not IP at all; an IPv6 extension header before UDP.
    assert!(!drops(&f, &eth(0x0806, &[0u8; 40])));
    let mut ext = udp6("2001:db8::7", &full);
    ext[14 + 6] = 0; // hop-by-hop
    assert!(!drops(&f, &ext));
}

#[test]
fn expired_entries_do_not_match() {
    let Some(f) = filter() else { return };
    let c = "192.0.2.1";
    f.upsert(&name("gone.test", NameMatch::Suffix, QTYPE_ANY), Verdict::Drop, now_ms().saturating_sub(1)).unwrap();
    f.upsert(&src("198.51.100.9/32"), Verdict::Drop, now_ms().saturating_sub(1)).unwrap();
    assert!(!drops(&f, &udp4(c, &query("a.gone.test", A))));
    assert!(!drops(&f, &udp4("198.51.100.9", &query("x.test", A))));
    // Expires while we watch, with no userspace involvement.
    f.upsert(&src("198.51.100.10/32"), Verdict::Drop, now_ms() + 300).unwrap();
    assert!(drops(&f, &udp4("198.51.100.10", &query("x.test", A))));
    std::thread::sleep(Duration::from_millis(400));
    assert!(!drops(&f, &udp4("198.51.100.10", &query("x.test", A))));
    // An expired narrow range does not hide a live wider one.
    f.upsert(&src("198.51.100.0/24"), Verdict::Drop, later()).unwrap();
    f.upsert(&src("198.51.100.128/25"), Verdict::Drop, now_ms().saturating_sub(1)).unwrap();
    assert!(drops(&f, &udp4("198.51.100.200", &query("x.test", A))));
    // An expired name entry gives way to a less specific live one.
    f.upsert(&name("test", NameMatch::Suffix, QTYPE_ANY), Verdict::Drop, later()).unwrap();
    assert!(drops(&f, &udp4(c, &query("a.gone.test", A))));
    // Upserts keep the hit counter and entries() reports wall-clock expiry.
    let k = name("test", NameMatch::Suffix, QTYPE_ANY);
    let until = later() + 1000;
    f.upsert(&k, Verdict::Drop, until).unwrap();
    assert_eq!(f.hits(&k).unwrap(), Some(1));
    let e = f.entries().unwrap().into_iter().find(|e| e.key == k).unwrap();
    assert!(e.expires.abs_diff(until) <= 2, "{} vs {until}", e.expires);
    assert_eq!(e.hits, 1);
}

#[test]
fn cgroup_program_checks_the_port() {
    let Some(f) = filter() else { return };
    f.upsert(&src("198.51.100.7/32"), Verdict::Drop, later()).unwrap();
    f.upsert(&name("example.com", NameMatch::Suffix, QTYPE_ANY), Verdict::Drop, later()).unwrap();
    let q = query("a.example.com", A);
    // Port not set yet: the cgroup program passes everything.
    assert!(!cgroup_drops(&f, &udp4("198.51.100.7", &q)));
    f.set_port(PORT).unwrap();
    assert!(cgroup_drops(&f, &udp4("198.51.100.7", &q)));
    assert!(cgroup_drops(&f, &udp4("192.0.2.1", &q)));
    assert!(cgroup_drops(&f, &v4("198.51.100.7".parse().unwrap(), 6, &tcp(PORT, &[]))));
    // Traffic to other ports (the resolver's upstream answers) passes.
    let other = v4("198.51.100.7".parse().unwrap(), 17, &udp(PORT + 1, &q));
    assert!(!cgroup_drops(&f, &other));
    assert!(!cgroup_drops(&f, &v6("2001:db8::1".parse().unwrap(), 17, &udp(PORT + 1, &q))));
    assert!(cgroup_drops(&f, &v6("2001:db8::1".parse().unwrap(), 17, &udp(PORT, &q))));
}

/// The socket filter on a real dual-stack socket: IPv4 datagrams arrive
/// with IPv4 headers on an AF_INET6 socket, data starts at the UDP header.
#[test]
fn real_dual_stack_socket() {
    let Some(f) = filter() else { return };
    let sock = match UdpSocket::bind("[::]:0") {
        Ok(s) => s,
        Err(e) => {
            common::skip(format_args!("no IPv6 socket: {e}"));
            return;
        }
    };
    let port = sock.local_addr().unwrap().port();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let rc = f
        .with_socket_program(|prog| {
            let fd = prog.as_raw_fd();
            // SAFETY: setsockopt with a c_int option value.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ATTACH_BPF,
                    (&fd as *const i32).cast(),
                    std::mem::size_of::<i32>() as libc::socklen_t,
                )
            }
        })
        .unwrap();
    assert_eq!(rc, 0, "SO_ATTACH_BPF: {}", std::io::Error::last_os_error());
    f.upsert(&src("127.0.0.3/32"), Verdict::Drop, later()).unwrap();
    f.upsert(&name("blocked.test", NameMatch::Suffix, QTYPE_ANY), Verdict::Drop, later()).unwrap();
    let recv = |from: &str, payload: &[u8]| -> bool {
        let s = UdpSocket::bind(format!("{from}:0")).unwrap();
        let to: SocketAddr = if from.contains(':') {
            format!("[::1]:{port}").parse().unwrap()
        } else {
            format!("127.0.0.1:{port}").parse().unwrap()
        };
        s.send_to(payload, to).unwrap();
        let mut buf = [0u8; 512];
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, _)) if &buf[..n] == payload => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    };
    let ok = query("fine.test", A);
    assert!(recv("127.0.0.2", &ok), "an unblocked v4 client");
    assert!(!recv("127.0.0.3", &ok), "a blocked v4 source on a v6 socket");
    assert!(!recv("127.0.0.2", &query("x.Blocked.test", A)), "a blocked name via IPv4");
    assert!(!recv("::1", &query("x.blocked.test", A)), "a blocked name via IPv6");
    assert!(recv("::1", &ok), "an unblocked v6 client");
    let d = f.drops().unwrap();
    assert_eq!((d.source, d.suffix), (1, 2));
}

/// Pinned maps survive the filter object: a second open finds the entries,
/// their names and their hit counters.
#[test]
fn pinned_maps_are_reused() {
    let Some(_) = filter() else { return };
    let base = std::path::Path::new("/sys/fs/bpf");
    if !base.is_dir() {
        common::skip("no bpffs at /sys/fs/bpf");
        return;
    }
    let dir = base.join(format!("dnsbgpd-test-{}", std::process::id()));
    let _cleanup = Cleanup(dir.clone());
    let k = name("pinned.test", NameMatch::Below, QTYPE_ANY);
    let s = src("198.51.100.0/24");
    {
        let f = Filter::open(64, Some(&dir)).unwrap();
        f.upsert(&k, Verdict::Drop, later()).unwrap();
        f.upsert(&s, Verdict::Drop, later()).unwrap();
        assert!(drops(&f, &udp4("192.0.2.1", &query("a.pinned.test", A))));
    }
    let f = Filter::open(64, Some(&dir)).unwrap();
    let entries = f.entries().unwrap();
    let e = entries.iter().find(|e| e.key == k).expect("name entry kept");
    assert_eq!(e.hits, 1);
    assert!(entries.iter().any(|e| e.key == s));
    assert!(drops(&f, &udp4("192.0.2.1", &query("b.pinned.test", A))), "same seed, same keys");
    assert!(drops(&f, &udp4("198.51.100.9", &query("x.test", A))), "the range's trie is not skipped");
    assert_eq!(f.drops().unwrap().suffix, 2, "drop counters pinned too");
}

struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The attacher on this very process: a socket with someone else's
/// (classic) filter is refused unless `replace`; ours is recognised on the
/// next scan; `finish` detaches.
#[test]
fn attacher_refuses_a_foreign_filter_unless_replace() {
    use dnsbgpd::blocking::attach::Attacher;
    use dnsbgpd::blocking::attach_config::{AttachMode, AttachSettings, Resolver};
    let Some(f) = filter() else { return };
    let f = std::sync::Arc::new(f);
    let foreign = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = foreign.local_addr().unwrap().port();
    // A classic filter accepting everything: `ret #0xffffffff`.
    let mut insn = libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: u32::MAX };
    let prog = libc::sock_fprog { len: 1, filter: &mut insn };
    // SAFETY: a valid sock_fprog for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            foreign.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let tmp = tempfile::tempdir().unwrap();
    let pid_file = tmp.path().join("self.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
    let settings = |replace| AttachSettings {
        resolver: Resolver::PidFile(pid_file.clone()),
        port,
        mode: AttachMode::Socket,
        cgroup: None,
        replace,
        keep_on_exit: false,
        pin_path: None,
        rescan_interval: Duration::from_millis(100),
    };
    let mut a = Attacher::new(f.clone(), settings(false));
    a.scan();
    let st = f.status();
    assert!(!st.up && st.sockets.is_empty(), "{st:?}");
    assert!(st.errors.iter().any(|e| e.contains("already carries a filter") && e.contains("replace = true")), "{st:?}");
    let mut a = Attacher::new(f.clone(), settings(true));
    a.scan();
    let st = f.status();
    assert!(st.up && st.sockets.len() == 1 && st.errors.is_empty(), "{st:?}");
    assert_eq!(st.sockets[0].protocol, "udp");
    f.upsert(&src("127.0.0.9/32"), Verdict::Drop, later()).unwrap();
    foreign.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let s = UdpSocket::bind("127.0.0.9:0").unwrap();
    s.send_to(b"hello", ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 16];
    assert!(foreign.recv_from(&mut buf).is_err(), "our filter replaced the foreign one and drops");
    // Our own filter is not "foreign" on the next scan by a new attacher.
    let mut b = Attacher::new(f.clone(), settings(false));
    b.scan();
    assert!(f.status().errors.is_empty(), "{:?}", f.status());
    b.finish();
    assert!(!f.status().up);
    s.send_to(b"again", ("127.0.0.1", port)).unwrap();
    assert!(foreign.recv_from(&mut buf).is_ok(), "detached on finish");
}

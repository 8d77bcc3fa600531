//! Cost per packet of the kernel filter (BPF_PROG_TEST_RUN with repeat),
//! with N entries in the maps. Needs root (CAP_BPF).
//!
//! `cargo run --release --example filter_bench -- [ENTRIES] [REPEAT]`
//!
//! Fills the maps with ENTRIES/2 suffix entries (`n{i}.bench.test`) and
//! ENTRIES/2 /32 sources (in 10.0.0.0/8), then times packets that miss
//! everything (the common case: every suffix of the name looked up), that
//! hit a suffix entry, and that hit a source entry. Prints ns per packet.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use dnsbgpd::blocking::filter::{Filter, SOCKET_PROGRAM};
use dnsbgpd::blocking::kernel::{Enforcer, KernelKey, NameMatch, QTYPE_ANY, Verdict};

fn wire(name: &str) -> Vec<u8> {
    let mut w = Vec::new();
    for l in name.split('.') {
        w.push(l.len() as u8);
        w.extend_from_slice(l.as_bytes());
    }
    w.push(0);
    w
}

/// Ethernet + IPv4 + UDP + a DNS query for `name` from `src`.
fn packet(src: [u8; 4], name: &str) -> Vec<u8> {
    let mut dns = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    dns.extend_from_slice(&wire(name));
    dns.extend_from_slice(&[0, 1, 0, 1]);
    let mut udp = vec![0x9c, 0x40, 0, 53];
    udp.extend_from_slice(&((8 + dns.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&dns);
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&((20 + udp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&[127, 0, 0, 1]);
    ip.extend_from_slice(&udp);
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let entries: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let repeat: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1_000_000);
    let f = Filter::open(entries.max(2), None).context("loading the filter (needs root)")?;
    let until = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64 + 3_600_000;
    let t0 = Instant::now();
    for i in 0..entries / 2 {
        let k =
            KernelKey::Name { name: format!("n{i}.bench.test").into(), matching: NameMatch::Suffix, qtype: QTYPE_ANY };
        f.upsert(&k, Verdict::Drop, until)?;
        let a = std::net::Ipv4Addr::from(0x0a00_0000 | i);
        f.upsert(&KernelKey::Source(std::net::IpAddr::V4(a).into()), Verdict::Drop, until)?;
    }
    let fill = t0.elapsed();
    println!(
        "entries: {entries} (filled in {fill:?}, {:.1} µs per entry)",
        fill.as_secs_f64() * 1e6 / f64::from(entries.max(1))
    );
    let cases = [
        ("miss, www.example.com (3 labels)", packet([192, 0, 2, 1], "www.example.com")),
        ("miss, a.b.c.d.e.example.com (7 labels)", packet([192, 0, 2, 1], "a.b.c.d.e.example.com")),
        ("suffix hit, x.n1.bench.test", packet([192, 0, 2, 1], "x.n1.bench.test")),
        ("source hit, 10.0.0.1", packet([10, 0, 0, 1], "www.example.com")),
    ];
    for (what, p) in &cases {
        let (ret, ns) = f.test_run(SOCKET_PROGRAM, p, repeat).map_err(anyhow::Error::msg)?;
        println!("{what:<40} {ns:>5} ns/packet  ({})", if ret == 0 { "dropped" } else { "passed" });
    }
    Ok(())
}

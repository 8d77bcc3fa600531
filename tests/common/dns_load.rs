//! A paced DNS query sender for the blocking tests: UDP queries from a
//! chosen loopback source address at a given rate, bounded in count and
//! time, counting the answers that come back.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A DNS query for `name` / `qtype` with id `id` (the crate's dnstap writer builds it).
pub use dnsbgpd::dnstap::writer::query;

/// What a run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadResult {
    pub sent: u64,
    pub answered: u64,
    /// Answers by rcode 0 (NOERROR) and 3 (NXDOMAIN).
    pub noerror: u64,
    pub nxdomain: u64,
}

/// Sends `qps` queries a second for `duration` (at most 100 000 queries)
/// from `from` (port 0) to 127.0.0.1:`port`; `name(i)` is the i-th name.
pub fn run(from: IpAddr, port: u16, qps: u32, duration: Duration, name: impl Fn(u64) -> String) -> Result<LoadResult> {
    let sock = UdpSocket::bind(SocketAddr::new(from, 0)).with_context(|| format!("bind {from}"))?;
    sock.set_nonblocking(true)?;
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let total = (u64::from(qps) * duration.as_millis() as u64 / 1000).min(100_000);
    let start = Instant::now();
    let mut r = LoadResult::default();
    let mut buf = [0u8; 4096];
    let gap = Duration::from_secs_f64(1.0 / f64::from(qps.max(1)));
    while r.sent < total {
        let due = start + gap * r.sent as u32;
        let now = Instant::now();
        if now >= due {
            let q = query(r.sent as u16, &name(r.sent), 1);
            let _ = sock.send_to(&q, server);
            r.sent += 1;
            continue;
        }
        drain(&sock, &mut buf, &mut r);
        std::thread::sleep((due - now).min(Duration::from_millis(1)));
    }
    // Late answers.
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        drain(&sock, &mut buf, &mut r);
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(r)
}

fn drain(sock: &UdpSocket, buf: &mut [u8], r: &mut LoadResult) {
    while let Ok(n) = sock.recv(buf) {
        if n >= 12 {
            r.answered += 1;
            match buf[3] & 0x0F {
                0 => r.noerror += 1,
                3 => r.nxdomain += 1,
                _ => {}
            }
        }
    }
}

/// One query, waiting up to `timeout` for the answer; `Some(rcode)`.
pub fn ask(from: IpAddr, port: u16, name: &str, timeout: Duration) -> Result<Option<u8>> {
    let sock = UdpSocket::bind(SocketAddr::new(from, 0))?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send_to(&query(0x4242, name, 1), SocketAddr::from(([127, 0, 0, 1], port)))?;
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) if n >= 12 => Ok(Some(buf[3] & 0x0F)),
        Ok(_) => Ok(None),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

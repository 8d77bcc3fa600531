//! dnsbgpd against a scripted neighbor that misbehaves on purpose: each
//! hostile message must be answered with the NOTIFICATION RFC 4271 §6
//! prescribes, the session must come back on its own, and a second,
//! well-behaved neighbor must keep receiving routes throughout.
//!
//! The neighbors are test code speaking BGP over loopback TCP with the
//! crate's own codec; the real-router tests are in bgp_real.rs.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use common::feed::Feed;
use common::{Dnsbgpd, Options, wait_for};
use dnsbgpd::bgp::message::{
    Afi, Capability, KeepaliveMessage, Message, NotificationMessage, OpenMessage, Safi, UpdateMessage, decode,
};

const LOCAL_AS: u32 = 65010;
const PEER_AS: u32 = 65001;

/// A neighbor played by the test.
struct Peer {
    listener: TcpListener,
    port: u16,
}

/// One connection from dnsbgpd to the test's neighbor.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    fn new() -> Result<Peer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        Ok(Peer { listener, port })
    }

    /// Waits for dnsbgpd to connect (it retries with backoff).
    fn accept(&self) -> Result<Conn> {
        self.listener.set_nonblocking(true)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false)?;
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    return Ok(Conn { s, buf: Vec::new() });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(e).context("dnsbgpd did not connect"),
            }
        }
    }
}

impl Conn {
    fn read(&mut self) -> Result<Message> {
        loop {
            if let Some((m, n)) = decode(&self.buf, 65535).map_err(|e| anyhow::anyhow!("dnsbgpd sent garbage: {e}"))? {
                self.buf.drain(..n);
                return Ok(m);
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                bail!("connection closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn send(&mut self, m: &Message) -> Result<()> {
        let mut b = BytesMut::new();
        m.encode(65535, &mut b)?;
        self.s.write_all(&b)?;
        Ok(())
    }

    /// Reads until a NOTIFICATION and checks that the connection closes.
    fn expect_notification(&mut self) -> Result<NotificationMessage> {
        loop {
            match self.read()? {
                Message::Notification(n) => {
                    let mut rest = [0u8; 64];
                    match self.s.read(&mut rest) {
                        Ok(0) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                        other => bail!("connection not closed after the NOTIFICATION: {other:?}"),
                    }
                    return Ok(n);
                }
                Message::Keepalive(_) | Message::Update(_) => continue,
                other => bail!("expected a NOTIFICATION, got {other:?}"),
            }
        }
    }

    /// Reads dnsbgpd's OPEN.
    fn their_open(&mut self) -> Result<OpenMessage> {
        match self.read()? {
            Message::Open(o) => Ok(o),
            other => bail!("expected OPEN, got {other:?}"),
        }
    }
}

fn open(asn: u32, hold: u16) -> OpenMessage {
    OpenMessage::new(asn, hold, Ipv4Addr::new(192, 0, 2, 1))
        .with_capability(Capability::Multiprotocol { afi: Afi::IPV4, safi: Safi::UNICAST })
        .with_capability(Capability::Multiprotocol { afi: Afi::IPV6, safi: Safi::UNICAST })
}

fn bytes(m: &Message) -> Vec<u8> {
    let mut b = BytesMut::new();
    m.encode(4096, &mut b).expect("encodable");
    b.to_vec()
}

fn config(peers: &[(u16, &str)]) -> String {
    let mut c = format!("[bgp]\nlocal_as = {LOCAL_AS}\nrouter_id = \"192.0.2.10\"\nbatch_interval = \"20ms\"\n");
    for (port, name) in peers {
        c.push_str(&format!(
            "\n[[bgp.neighbor]]\nname = \"{name}\"\naddress = \"127.0.0.1\"\nport = {port}\nremote_as = {PEER_AS}\n\
             connect_retry = \"100ms\"\nhold_time = \"90s\"\nnext_hop_v6 = \"2001:db8::10\"\n"
        ));
    }
    c
}

/// Completes a handshake as a well-behaved neighbor proposing `hold`.
fn establish(peer: &Peer, hold: u16) -> Result<Conn> {
    let mut c = peer.accept()?;
    let theirs = c.their_open()?;
    assert_eq!(theirs.asn(), LOCAL_AS);
    c.send(&Message::Open(open(PEER_AS, hold)))?;
    c.send(&Message::Keepalive(KeepaliveMessage))?;
    match c.read()? {
        Message::Keepalive(_) => Ok(c),
        other => bail!("expected KEEPALIVE, got {other:?}"),
    }
}

/// Reads UPDATEs until `prefix` (as /32) is announced; keeps the session
/// alive meanwhile.
fn wait_announced(c: &mut Conn, addr: Ipv4Addr) -> Result<UpdateMessage> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        c.send(&Message::Keepalive(KeepaliveMessage))?;
        if let Message::Update(u) = c.read()?
            && u.nlri.iter().any(|p| p.addr() == addr)
        {
            return Ok(u);
        }
    }
    bail!("{addr} was not announced")
}

#[test]
fn hostile_neighbor_gets_the_right_notifications() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let bad = Peer::new()?;
    let good = Peer::new()?;
    let opts = Options {
        lists: vec![("vpn".into(), "listed.test\n".into())],
        extra_config: config(&[(bad.port, "bad"), (good.port, "good")]),
        list_extra: "communities = [\"65010:100\"]".into(),
        ..Options::default()
    };
    let d = Dnsbgpd::start(tmp.path(), &opts)?;
    let mut good_conn = establish(&good, 90)?;
    let mut feed = Feed::connect(&d.socket)?;
    let route_n = std::cell::Cell::new(0u8);
    // Every round ends with a new route reaching the good neighbor.
    let check_good = |feed: &mut Feed, good_conn: &mut Conn| -> Result<()> {
        route_n.set(route_n.get() + 1);
        let n = route_n.get();
        let addr = Ipv4Addr::new(198, 51, 100, n);
        feed.answer(&format!("n{n}.listed.test"), &[&addr.to_string()], 300)?;
        let u = wait_announced(good_conn, addr)?;
        assert_eq!(u.communities().len(), 1);
        Ok(())
    };

    let marker = [0xffu8; 16];
    let header = |len: u16, kind: u8, m: &[u8; 16]| {
        let mut v = m.to_vec();
        v.extend_from_slice(&len.to_be_bytes());
        v.push(kind);
        v
    };
    let mut bad_marker = marker;
    bad_marker[3] = 0x00;
    let cases: Vec<(&str, Vec<u8>, u8, u8)> = vec![
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 1, 1),
        ("bad marker", header(19, 4, &bad_marker), 1, 1),
        ("bad length", header(5000, 2, &marker), 1, 2),
        ("bad type", header(19, 9, &marker), 1, 3),
        (
            "unsupported version",
            {
                let mut o = bytes(&Message::Open(open(PEER_AS, 90)));
                o[19] = 3;
                o
            },
            2,
            1,
        ),
        (
            "hold time 1",
            {
                let mut o = bytes(&Message::Open(open(PEER_AS, 90)));
                o[22] = 0;
                o[23] = 1;
                o
            },
            2,
            6,
        ),
        ("wrong AS", bytes(&Message::Open(open(65099, 90))), 2, 2),
        (
            "no 4-octet AS",
            bytes(&Message::Open(OpenMessage {
                my_as: PEER_AS as u16,
                hold_time: 90,
                bgp_identifier: Ipv4Addr::new(192, 0, 2, 1),
                capabilities: vec![Capability::Multiprotocol { afi: Afi::IPV4, safi: Safi::UNICAST }],
            })),
            2,
            7,
        ),
    ];
    for (what, wire, code, subcode) in cases {
        let mut c = bad.accept()?;
        c.their_open()?;
        c.s.write_all(&wire)?;
        let n = c.expect_notification().with_context(|| what.to_string())?;
        assert_eq!((n.code, n.subcode), (code, subcode), "{what}: {n}");
        if what == "unsupported version" {
            assert_eq!(&n.data[..], &[0, 4], "largest supported version");
        }
        check_good(&mut feed, &mut good_conn).with_context(|| format!("after {what}"))?;
    }

    // UPDATEs from a neighbor are parsed and ignored; RFC 7606 faults that
    // allow it are skipped; a session-resetting fault gets 3/x.
    let mut c = establish(&bad, 3)?;
    let update = UpdateMessage {
        nlri: vec![dnsbgpd::bgp::message::Ipv4Prefix::host(Ipv4Addr::new(203, 0, 113, 1))],
        path_attributes: vec![
            dnsbgpd::bgp::message::PathAttribute::Origin(dnsbgpd::bgp::message::Origin::Igp),
            dnsbgpd::bgp::message::PathAttribute::AsPath(dnsbgpd::bgp::message::AsPath::sequence([PEER_AS])),
            dnsbgpd::bgp::message::PathAttribute::NextHop(Ipv4Addr::new(127, 0, 0, 1)),
        ],
        ..Default::default()
    };
    c.send(&Message::Update(update.clone()))?;
    let mut bad_origin = bytes(&Message::Update(update));
    // ORIGIN value (the attribute starts after the 23-byte fixed part:
    // flags, type, length, value) set to 7: treat-as-withdraw.
    bad_origin[26] = 7;
    c.s.write_all(&bad_origin)?;
    check_good(&mut feed, &mut good_conn)?;
    // The bad neighbor's session is still up: it receives that route too.
    let last = Ipv4Addr::new(198, 51, 100, route_n.get());
    wait_announced(&mut c, last).context("session must survive ignorable UPDATEs")?;
    // Withdrawn-routes length beyond the message: Malformed Attribute List.
    let mut broken = header(23, 2, &marker);
    broken.extend_from_slice(&[0x10, 0x00, 0, 0]);
    c.s.write_all(&broken)?;
    let n = c.expect_notification()?;
    assert_eq!((n.code, n.subcode), (3, 1), "{n}");

    // Hold timer: a neighbor that goes silent gets Hold Timer Expired.
    let mut c = establish(&bad, 3)?;
    let started = Instant::now();
    let n = loop {
        match c.read()? {
            Message::Notification(n) => break n,
            _ => continue,
        }
    };
    assert_eq!((n.code, n.subcode), (4, 0), "{n}");
    assert!(started.elapsed() < Duration::from_secs(6), "hold time is 3 s, took {:?}", started.elapsed());
    check_good(&mut feed, &mut good_conn)?;

    // The API tells what happened.
    let neighbors = d.get_json("/api/v1/neighbors")?;
    let bad_json =
        neighbors.as_array().and_then(|a| a.iter().find(|n| n["name"] == "bad")).cloned().unwrap_or_default();
    assert_eq!(bad_json["last_error"]["direction"], "sent", "{bad_json}");
    assert_eq!(bad_json["last_error"]["code"], 4, "{bad_json}");
    assert!(bad_json["flaps"].as_u64().unwrap_or(0) >= 2, "{bad_json}");
    let good_json =
        neighbors.as_array().and_then(|a| a.iter().find(|n| n["name"] == "good")).cloned().unwrap_or_default();
    assert_eq!(good_json["state"], "Established", "{good_json}");
    assert_eq!(good_json["flaps"], 0, "{good_json}");
    assert_eq!(good_json["prefixes_advertised"]["ipv4"], u64::from(route_n.get()), "{good_json}");
    assert!(
        d.metric("dnsbgpd_bgp_notifications_total{neighbor=\"bad\",direction=\"sent\",code=\"1\",subcode=\"1\"}")?
            >= 2.0
    );
    assert_eq!(d.metric("dnsbgpd_bgp_session_established{neighbor=\"good\"}")?, 1.0);
    Ok(())
}

/// Coalescing: a route added and removed within the batch interval sends
/// nothing; changes made together go out in one UPDATE.
#[test]
fn changes_are_batched_and_coalesced() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let peer = Peer::new()?;
    let mut cfg = config(&[(peer.port, "p")]);
    cfg = cfg.replace("batch_interval = \"20ms\"", "batch_interval = \"300ms\"");
    let opts = Options {
        lists: vec![("vpn".into(), "listed.test\n!gone.listed.test\n".into())],
        extra_config: cfg,
        ..Options::default()
    };
    let d = Dnsbgpd::start(tmp.path(), &opts)?;
    // Hold time 0 (RFC 4271 allows it): no keepalives, no hold timer.
    let mut c = establish(&peer, 0)?;
    // Initial table (empty) then End-of-RIB for both families.
    let mut eor = 0;
    while eor < 2 {
        if let Message::Update(u) = c.read()? {
            assert!(u.end_of_rib_family().is_some(), "{u:?}");
            eor += 1;
        }
    }
    let mut feed = Feed::connect(&d.socket)?;
    let addrs: Vec<String> = (1..=50).map(|i| format!("198.51.100.{i}")).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    feed.answer("many.listed.test", &refs, 300)?;
    let u = loop {
        c.send(&Message::Keepalive(KeepaliveMessage))?;
        if let Message::Update(u) = c.read()? {
            break u;
        }
    };
    assert_eq!(u.nlri.len(), 50, "one UPDATE carries all 50 routes");
    // A route that appears and goes: an idle session sends the change at
    // once, so the neighbor may see it announced, but then withdrawn;
    // it must never be left holding it.
    feed.answer("brief.listed.test", &["203.0.113.9"], 300)?;
    wait_for(Duration::from_secs(5), "route in table", || d.route("203.0.113.9/32"))?;
    std::fs::write(d.list_file("vpn"), "listed.test\n!brief.listed.test\n")?;
    common::send_signal(d.pid(), common::peers::SIGHUP)?;
    d.wait_no_route("203.0.113.9/32", Duration::from_secs(2))?;
    c.s.set_read_timeout(Some(Duration::from_millis(1500)))?;
    let brief: Ipv4Addr = "203.0.113.9".parse()?;
    let mut held = false;
    let until = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < until {
        c.send(&Message::Keepalive(KeepaliveMessage))?;
        match c.read() {
            Ok(Message::Keepalive(_)) => {}
            Ok(Message::Update(u)) => {
                assert!(u.nlri.iter().chain(&u.withdrawn_routes).all(|p| p.addr() == brief), "{u:?}");
                if u.nlri.iter().any(|p| p.addr() == brief) {
                    held = true;
                }
                if u.withdrawn_routes.iter().any(|p| p.addr() == brief) {
                    assert!(held, "a withdrawal without an announcement: {u:?}");
                    held = false;
                }
            }
            Ok(other) => bail!("{other:?}"),
            Err(_) => break,
        }
    }
    assert!(!held, "the neighbor was left with a route that is gone");
    let n = d.get_json("/api/v1/neighbors")?;
    assert_eq!(n[0]["negotiated"]["hold_time"], 0, "{n}");
    assert_eq!(n[0]["state"], "Established", "{n}");
    Ok(())
}

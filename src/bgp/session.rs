//! One neighbor: the RFC 4271 §8 state machine over TCP.
//!
//! Idle → Connect (active) or Active (waiting for the neighbor to connect)
//! → OpenSent → OpenConfirm → Established, and back to Idle with an
//! exponential, jittered backoff on any failure. Both an outgoing and an
//! incoming connection may be in flight; when one reaches OpenConfirm the
//! collision is resolved by BGP identifier (RFC 4271 §6.8): the connection
//! opened by the side with the higher identifier survives, the other gets
//! Cease / Connection Collision Resolution.
//!
//! Established: the session subscribes to the route table with a full
//! dump, sends it followed by End-of-RIB, then sends coalesced changes every
//! batch interval. Received UPDATEs are parsed and ignored (dnsbgpd
//! originates, it does not import); a malformed message gets the
//! NOTIFICATION the codec prescribes, except UPDATE faults RFC 7606 allows
//! to treat as withdraw, which are counted and skipped.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::NeighborSettings;
use super::message::notification::{cease, error_code, fsm_error, open_error};
use super::message::{
    Afi, Capability, DecodeError, GracefulRestartCapability, GracefulRestartFamily, KeepaliveMessage,
    MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN, Message, NotificationMessage, OpenMessage, Rfc7606Action, Safi,
};
use super::policy::ExportPolicy;
use super::rib::{AdjRibOut, SessionExport, end_of_rib};
use super::status::{Negotiated, NeighborStatus, State};
use super::tcp;
use crate::routes::RouteTable;

/// RFC 4271 §8: the large hold time used until OPENs are exchanged.
const OPEN_HOLD: Duration = Duration::from_secs(240);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A write that makes no progress for this long ends the session.
const WRITE_STALL: Duration = Duration::from_secs(90);
/// How many route events are turned into UPDATEs at a time.
const DRAIN: usize = 50_000;
/// How long an idle session gathers changes before sending: the addresses
/// of one answer (applied within microseconds) leave in one UPDATE.
const IDLE_GATHER: Duration = Duration::from_millis(1);

/// Speaker-wide settings a session needs.
#[derive(Debug, Clone)]
pub struct Local {
    pub asn: u32,
    pub router_id: std::net::Ipv4Addr,
    pub local_pref: u32,
    pub batch_interval: Duration,
    pub graceful_restart_time: u16,
    pub extended_messages: bool,
}

/// Everything one neighbor's task shares.
pub struct Context {
    pub local: Local,
    pub settings: NeighborSettings,
    pub table: Arc<RouteTable>,
    pub policy: Arc<ExportPolicy>,
    pub status: Arc<NeighborStatus>,
    /// Set once a session was Established: later OPENs no longer carry the
    /// Graceful Restart "restarted" bit.
    pub was_established: AtomicBool,
    /// Blackhole routes to send (neighbors with `export` "blackhole").
    pub blackholes: Option<super::blackhole::BlackholeFeed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Outgoing,
    Incoming,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("NOTIFICATION sent: {0}")]
    Sent(NotificationMessage),
    #[error("NOTIFICATION received: {0}")]
    Received(NotificationMessage),
    #[error("connection closed by the neighbor")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

enum ReadEvent {
    Message(Message),
    /// An UPDATE fault RFC 7606 lets us skip.
    SkippedUpdate(DecodeError),
    Failed(SessionError, Option<DecodeError>),
}

/// Reads messages from a byte stream.
struct Reader<R> {
    io: R,
    buf: BytesMut,
    max_len: usize,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    fn new(io: R) -> Reader<R> {
        Reader { io, buf: BytesMut::with_capacity(64 * 1024), max_len: MAX_MESSAGE_LEN }
    }

    async fn next(&mut self) -> ReadEvent {
        loop {
            match super::message::decode(&self.buf, self.max_len) {
                Ok(Some((m, n))) => {
                    self.buf.advance(n);
                    return ReadEvent::Message(m);
                }
                Ok(None) => {}
                Err(e) => {
                    if let DecodeError::Update { error, message_len } = &e
                        && error.rfc7606_action() != Rfc7606Action::SessionReset
                        && *message_len <= self.buf.len()
                    {
                        self.buf.advance(*message_len);
                        return ReadEvent::SkippedUpdate(e);
                    }
                    let n = e.to_notification();
                    return ReadEvent::Failed(SessionError::Sent(n), Some(e));
                }
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => return ReadEvent::Failed(SessionError::Closed, None),
                Ok(_) => {}
                Err(e) => return ReadEvent::Failed(SessionError::Io(e), None),
            }
        }
    }
}

/// A connection after the OPEN exchange (OpenConfirm).
struct Opened {
    stream: TcpStream,
    reader_buf: BytesMut,
    dir: Dir,
    remote_id: std::net::Ipv4Addr,
    negotiated: Negotiated,
    export: SessionExport,
    /// Both sides advertised Graceful Restart.
    graceful: bool,
}

async fn write_message<W: AsyncWrite + Unpin>(w: &mut W, m: &Message, max_len: usize) -> Result<(), SessionError> {
    let mut buf = BytesMut::new();
    m.encode(max_len, &mut buf).map_err(|e| SessionError::Other(format!("cannot encode {m:?}: {e}")))?;
    write_all(w, &buf).await
}

/// Writes in chunks, each of which must make progress within WRITE_STALL.
async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, buf: &[u8]) -> Result<(), SessionError> {
    for chunk in buf.chunks(256 * 1024) {
        tokio::time::timeout(WRITE_STALL, w.write_all(chunk))
            .await
            .map_err(|_| SessionError::Other("the neighbor stopped reading (write stalled)".into()))??;
    }
    Ok(())
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Open(_) => "open",
        Message::Update(_) => "update",
        Message::Notification(_) => "notification",
        Message::Keepalive(_) => "keepalive",
        Message::RouteRefresh(_) => "route_refresh",
    }
}

impl Context {
    fn our_open(&self) -> OpenMessage {
        let s = &self.settings;
        let mut open = OpenMessage::new(self.local.asn, s.hold_time, self.local.router_id);
        let mut families = Vec::new();
        if s.ipv4 {
            open = open.with_capability(Capability::Multiprotocol { afi: Afi::IPV4, safi: Safi::UNICAST });
            families.push(GracefulRestartFamily { afi: Afi::IPV4, safi: Safi::UNICAST, forwarding_state: true });
        }
        if s.ipv6 {
            open = open.with_capability(Capability::Multiprotocol { afi: Afi::IPV6, safi: Safi::UNICAST });
            families.push(GracefulRestartFamily { afi: Afi::IPV6, safi: Safi::UNICAST, forwarding_state: true });
        }
        open = open.with_capability(Capability::RouteRefresh);
        if self.local.extended_messages {
            open = open.with_capability(Capability::ExtendedMessage);
        }
        open.with_capability(Capability::GracefulRestart(GracefulRestartCapability {
            restart_state: !self.was_established.load(Ordering::Relaxed),
            notification: false,
            restart_time: self.local.graceful_restart_time,
            families,
        }))
    }

    async fn send<W: AsyncWrite + Unpin>(&self, w: &mut W, m: &Message, max_len: usize) -> Result<(), SessionError> {
        write_message(w, m, max_len).await?;
        self.status.message("out", kind(m), 1);
        if let Message::Notification(n) = m {
            self.status.notification("sent", n);
        }
        Ok(())
    }

    /// Sends a NOTIFICATION and returns the error that ends the session.
    async fn fail<W: AsyncWrite + Unpin>(&self, w: &mut W, n: NotificationMessage) -> SessionError {
        let _ = self.send(w, &Message::Notification(n.clone()), MAX_MESSAGE_LEN).await;
        let _ = w.shutdown().await;
        SessionError::Sent(n)
    }

    /// OpenSent: sends our OPEN, reads and checks theirs, sends KEEPALIVE.
    async fn open_exchange(self: Arc<Self>, stream: TcpStream, dir: Dir) -> Result<Opened, SessionError> {
        let mut stream = stream;
        let ours = self.our_open();
        self.send(&mut stream, &Message::Open(ours.clone()), MAX_MESSAGE_LEN).await?;
        let (rd, mut wr) = stream.split();
        let mut reader = Reader::new(rd);
        let event = tokio::time::timeout(OPEN_HOLD, reader.next())
            .await
            .map_err(|_| SessionError::Other("no OPEN from the neighbor".into()))?;
        let theirs = match event {
            ReadEvent::Message(Message::Open(o)) => o,
            ReadEvent::Message(Message::Notification(n)) => {
                self.status.message("in", "notification", 1);
                self.status.notification("received", &n);
                return Err(SessionError::Received(n));
            }
            ReadEvent::Message(other) => {
                self.status.message("in", kind(&other), 1);
                let n = NotificationMessage::new(
                    error_code::FINITE_STATE_MACHINE_ERROR,
                    fsm_error::UNEXPECTED_MESSAGE_IN_OPEN_SENT,
                    Vec::new(),
                );
                return Err(self.fail(&mut wr, n).await);
            }
            ReadEvent::SkippedUpdate(e) => {
                return Err(self.fail(&mut wr, e.to_notification()).await);
            }
            ReadEvent::Failed(SessionError::Sent(n), _) => return Err(self.fail(&mut wr, n).await),
            ReadEvent::Failed(e, _) => return Err(e),
        };
        self.status.message("in", "open", 1);
        let s = &self.settings;
        let asn = theirs.asn();
        if asn != s.remote_as {
            let n = NotificationMessage::new(error_code::OPEN_MESSAGE_ERROR, open_error::BAD_PEER_AS, Vec::new());
            warn!(neighbor = %s.name, expected = s.remote_as, got = asn, "neighbor's AS does not match remote_as");
            return Err(self.fail(&mut wr, n).await);
        }
        let remote_id = theirs.bgp_identifier;
        if remote_id.is_unspecified() || (asn == self.local.asn && remote_id == self.local.router_id) {
            let n =
                NotificationMessage::new(error_code::OPEN_MESSAGE_ERROR, open_error::BAD_BGP_IDENTIFIER, Vec::new());
            return Err(self.fail(&mut wr, n).await);
        }
        if theirs.four_octet_as().is_none() {
            // Our AS_PATH encoding is 4-octet only (RFC 6793).
            let mut data = BytesMut::new();
            let _ = Capability::FourOctetAs(self.local.asn).encode(&mut data);
            let n = NotificationMessage::new(
                error_code::OPEN_MESSAGE_ERROR,
                open_error::UNSUPPORTED_CAPABILITY,
                data.to_vec(),
            );
            return Err(self.fail(&mut wr, n).await);
        }
        let mut peer_v4 = false;
        let mut peer_v6 = false;
        let mut any_mp = false;
        for (afi, safi) in theirs.multiprotocol() {
            any_mp = true;
            peer_v4 |= afi == Afi::IPV4 && safi == Safi::UNICAST;
            peer_v6 |= afi == Afi::IPV6 && safi == Safi::UNICAST;
        }
        if !any_mp {
            // RFC 4760 §8: no multiprotocol capability means IPv4 unicast.
            peer_v4 = true;
        }
        let hold = if s.hold_time == 0 || theirs.hold_time == 0 { 0 } else { s.hold_time.min(theirs.hold_time) };
        let extended = self.local.extended_messages && theirs.has_capability(6);
        let local_addr = wr.as_ref().local_addr().ok();
        let remote_addr = wr.as_ref().peer_addr().ok();
        let local_ip = local_addr.map(|a| crate::routes::canonical(a.ip()));
        let next_hop_v4 = s.next_hop_v4.or(match local_ip {
            Some(IpAddr::V4(a)) => Some(a),
            _ => None,
        });
        let next_hop_v6 = s.next_hop_v6.or(match local_ip {
            Some(IpAddr::V6(a)) => Some(a),
            _ => None,
        });
        let ipv4 = s.ipv4 && peer_v4 && next_hop_v4.is_some();
        let ipv6 = s.ipv6 && peer_v6 && next_hop_v6.is_some();
        if s.ipv6 && peer_v6 && next_hop_v6.is_none() {
            warn!(neighbor = %s.name, "no IPv6 next hop (set next_hop_v6): IPv6 routes are not sent");
        }
        let gr = theirs.graceful_restart();
        let negotiated = Negotiated {
            remote_id: remote_id.to_string(),
            remote_as: asn,
            local_address: local_addr,
            remote_address: remote_addr,
            hold_time: hold,
            keepalive: hold / 3,
            four_octet_as: true,
            route_refresh: theirs.has_capability(2),
            enhanced_route_refresh: theirs.has_capability(70),
            extended_message: extended,
            graceful_restart: gr.is_some(),
            peer_restart_time: gr.map(|g| g.restart_time),
            ipv4,
            ipv6,
        };
        let export = SessionExport {
            ibgp: s.is_ibgp(self.local.asn),
            local_as: self.local.asn,
            local_pref: self.local.local_pref,
            next_hop_v4,
            next_hop_v6,
            ipv4,
            ipv6,
            max_len: if extended { MAX_EXTENDED_MESSAGE_LEN } else { MAX_MESSAGE_LEN },
        };
        self.send(&mut wr, &Message::Keepalive(KeepaliveMessage), MAX_MESSAGE_LEN).await?;
        let reader_buf = std::mem::take(&mut reader.buf);
        Ok(Opened { stream, reader_buf, dir, remote_id, negotiated, export, graceful: gr.is_some() })
    }
}

/// Which connection survives a collision (RFC 4271 §6.8).
fn collision_winner(local_id: std::net::Ipv4Addr, remote_id: std::net::Ipv4Addr) -> Dir {
    if u32::from(local_id) > u32::from(remote_id) { Dir::Outgoing } else { Dir::Incoming }
}

async fn reject(mut stream: TcpStream, subcode: u8) {
    let n = NotificationMessage::new(error_code::CEASE, subcode, Vec::new());
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        write_message(&mut stream, &Message::Notification(n), MAX_MESSAGE_LEN),
    )
    .await;
    let _ = stream.shutdown().await;
}

type Handshake = Pin<Box<dyn std::future::Future<Output = (Dir, Result<Opened, SessionError>)> + Send>>;

/// A neighbor's task.
pub struct Neighbor {
    pub ctx: Arc<Context>,
    pub incoming: mpsc::Receiver<TcpStream>,
    pub shutdown: CancellationToken,
    /// The neighbor's own tasks — connections being closed with a Cease
    /// (collisions) and the session's reader — so that the neighbor's task
    /// waits for them before it ends.
    tasks: JoinSet<()>,
}

/// How long a neighbor that stops waits for its Cease NOTIFICATIONs to go out.
const REJECT_DRAIN: Duration = Duration::from_secs(2);

impl Neighbor {
    pub fn new(ctx: Arc<Context>, incoming: mpsc::Receiver<TcpStream>, shutdown: CancellationToken) -> Neighbor {
        Neighbor { ctx, incoming, shutdown, tasks: JoinSet::new() }
    }

    /// Closes a colliding connection with a Cease on a task of the neighbor's own.
    fn reject(&mut self, stream: TcpStream) {
        while self.tasks.try_join_next().is_some() {}
        self.tasks.spawn(reject(stream, cease::CONNECTION_COLLISION_RESOLUTION));
    }

    /// Waits (bounded) for the rejects still sending, then aborts the rest.
    async fn drain_tasks(&mut self) {
        let tasks = &mut self.tasks;
        let _ = tokio::time::timeout(REJECT_DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
        self.tasks.shutdown().await;
    }

    fn handshake(&self, stream: TcpStream, dir: Dir) -> Handshake {
        let ctx = self.ctx.clone();
        Box::pin(async move { (dir, ctx.open_exchange(stream, dir).await) })
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.ctx.settings.connect_retry;
        let factor = 1u32 << attempt.min(5);
        let d = base * factor;
        // ±25 % jitter, from the clock's low bits (no RNG dependency).
        let noise = (self.ctx.table.clock().now() ^ (self.ctx.settings.port as u64 * 7919)) % 500;
        d.mul_f64(0.75 + noise as f64 / 1000.0)
    }

    pub async fn run(mut self) {
        let mut attempt: u32 = 0;
        let mut delay = Duration::ZERO;
        let name = self.ctx.settings.name.clone();
        loop {
            let status = &self.ctx.status;
            let passive = self.ctx.settings.passive;
            status.set_state(if passive { State::Active } else { State::Connect });
            let s = &self.ctx.settings;
            let connect = async {
                tokio::time::sleep(delay).await;
                tcp::connect(s.remote(), s.local_address, s.password.as_deref(), CONNECT_TIMEOUT).await
            };
            let first = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                s = self.incoming.recv() => match s {
                    Some(s) => (s, Dir::Incoming),
                    None => break,
                },
                r = connect, if !passive => match r {
                    Ok(s) => (s, Dir::Outgoing),
                    Err(e) => {
                        debug!(neighbor = %name, error = %e, "BGP connect failed");
                        self.ctx.status.local_error(format!("connect to {}: {e}", s.remote()));
                        attempt += 1;
                        delay = self.backoff(attempt);
                        continue;
                    }
                },
            };
            self.ctx.status.set_state(State::OpenSent);
            let result = self.connect_and_run(first).await;
            let stop = self.shutdown.is_cancelled();
            match result {
                Ok(lasted) => {
                    // A session that held for a while resets the backoff.
                    attempt = if lasted > Duration::from_secs(60) { 0 } else { attempt + 1 };
                }
                Err(e) => {
                    if !stop {
                        info!(neighbor = %name, error = %e, "BGP session ended");
                    }
                    if !matches!(e, SessionError::Sent(_) | SessionError::Received(_)) {
                        self.ctx.status.local_error(e.to_string());
                    }
                    attempt += 1;
                }
            }
            self.ctx.status.set_state(State::Idle);
            if stop {
                break;
            }
            delay = self.backoff(attempt);
        }
        self.drain_tasks().await;
        self.ctx.status.set_state(State::Idle);
    }

    /// From a first connection to the end of the session. Ok holds how
    /// long the session was Established.
    async fn connect_and_run(&mut self, first: (TcpStream, Dir)) -> Result<Duration, SessionError> {
        let mut pending: FuturesUnordered<Handshake> = FuturesUnordered::new();
        pending.push(self.handshake(first.0, first.1));
        let local_id = self.ctx.local.router_id;
        let mut opened = loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(SessionError::Other("shutting down".into())),
                s = self.incoming.recv(), if pending.len() < 2 => {
                    let Some(s) = s else { return Err(SessionError::Other("speaker stopped".into())) };
                    pending.push(self.handshake(s, Dir::Incoming));
                }
                Some((dir, result)) = pending.next() => match result {
                    Err(e) => {
                        debug!(neighbor = %self.ctx.settings.name, ?dir, error = %e, "BGP OPEN exchange failed");
                        if pending.is_empty() {
                            return Err(e);
                        }
                    }
                    Ok(op) => {
                        if pending.is_empty() || collision_winner(local_id, op.remote_id) == op.dir {
                            // The other connection, if any, is dropped (closed).
                            break op;
                        }
                        info!(neighbor = %self.ctx.settings.name, kept = ?collision_winner(local_id, op.remote_id), "BGP connection collision");
                        self.reject(op.stream);
                    }
                },
            }
        };
        drop(pending);
        self.ctx.status.set_state(State::OpenConfirm);
        // OpenConfirm: wait for the neighbor's KEEPALIVE.
        let hold = match opened.negotiated.hold_time {
            0 => OPEN_HOLD,
            h => Duration::from_secs(u64::from(h)),
        };
        let (rd, mut wr) = opened.stream.split();
        let mut reader = Reader { io: rd, buf: std::mem::take(&mut opened.reader_buf), max_len: opened.export.max_len };
        let deadline = tokio::time::sleep(hold);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(SessionError::Other("shutting down".into())),
                _ = &mut deadline => {
                    return Err(self.ctx.fail(&mut wr, NotificationMessage::hold_timer_expired()).await);
                }
                s = self.incoming.recv() => {
                    let Some(s) = s else { return Err(SessionError::Other("speaker stopped".into())) };
                    if collision_winner(local_id, opened.remote_id) == Dir::Incoming && opened.dir == Dir::Outgoing {
                        // The neighbor's connection wins: restart with it.
                        let n = NotificationMessage::cease(cease::CONNECTION_COLLISION_RESOLUTION);
                        let _ = self.ctx.fail(&mut wr, n).await;
                        drop(reader);
                        return Box::pin(self.connect_and_run((s, Dir::Incoming))).await;
                    }
                    self.reject(s);
                }
                ev = reader.next() => match ev {
                    ReadEvent::Message(Message::Keepalive(_)) => {
                        self.ctx.status.message("in", "keepalive", 1);
                        break;
                    }
                    ReadEvent::Message(Message::Notification(n)) => {
                        self.ctx.status.message("in", "notification", 1);
                        self.ctx.status.notification("received", &n);
                        return Err(SessionError::Received(n));
                    }
                    ReadEvent::Message(m) => {
                        self.ctx.status.message("in", kind(&m), 1);
                        let n = NotificationMessage::new(error_code::FINITE_STATE_MACHINE_ERROR, fsm_error::UNEXPECTED_MESSAGE_IN_OPEN_CONFIRM, Vec::new());
                        return Err(self.ctx.fail(&mut wr, n).await);
                    }
                    ReadEvent::SkippedUpdate(e) => return Err(self.ctx.fail(&mut wr, e.to_notification()).await),
                    ReadEvent::Failed(SessionError::Sent(n), _) => return Err(self.ctx.fail(&mut wr, n).await),
                    ReadEvent::Failed(e, _) => return Err(e),
                },
            }
        }
        let buf = std::mem::take(&mut reader.buf);
        drop(reader);
        self.established(opened, buf).await
    }

    async fn established(&mut self, opened: Opened, buf: BytesMut) -> Result<Duration, SessionError> {
        let ctx = self.ctx.clone();
        let status = &ctx.status;
        let name = ctx.settings.name.clone();
        let export = opened.export.clone();
        let graceful = opened.graceful;
        status.set_negotiated(opened.negotiated.clone());
        status.set_state(State::Established);
        ctx.was_established.store(true, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let (rd, mut wr) = opened.stream.into_split();
        // The reader runs on its own so that a long write (a full table to a
        // slow neighbor) never delays reading, and records when the
        // neighbor was last heard from for the hold timer.
        let last_heard = Arc::new(AtomicU64::new(ctx.table.clock().now()));
        let (tx, mut rx) = mpsc::channel::<ReadEvent>(64);
        let reader_task = {
            let last_heard = last_heard.clone();
            let clock = *ctx.table.clock();
            let mut reader = Reader { io: rd, buf, max_len: export.max_len };
            while self.tasks.try_join_next().is_some() {}
            self.tasks.spawn(async move {
                loop {
                    let ev = reader.next().await;
                    last_heard.store(clock.now(), Ordering::Relaxed);
                    let end = matches!(ev, ReadEvent::Failed(..));
                    if tx.send(ev).await.is_err() || end {
                        return;
                    }
                }
            })
        };
        let _abort_reader = AbortOnDrop(reader_task);

        let sub = ctx.table.subscribe(true, None);
        let mut rib = AdjRibOut::default();
        // Initial table, then End-of-RIB.
        let mut out = BytesMut::new();
        let table_size = sub.pending();
        let mut first = true;
        loop {
            let events = sub.drain(DRAIN);
            if events.is_empty() {
                break;
            }
            if first {
                rib.reserve_like(&events, table_size);
                first = false;
            }
            self.send_changes(&mut rib, &events, &export, &mut wr, &mut out).await?;
        }
        // Blackholes in force, before End-of-RIB.
        let mut bh_feed = ctx.blackholes.clone();
        let mut bh = super::blackhole::BlackholeRib::default();
        if let Some(f) = bh_feed.as_mut() {
            let current = f.borrow_and_update().clone();
            self.send_blackholes(&mut bh, &current, &export, &mut wr, &mut out).await?;
        }
        out.clear();
        let eor = end_of_rib(&export, &mut out).map_err(|e| SessionError::Other(e.to_string()))?;
        write_all(&mut wr, &out).await?;
        status.message("out", "update", u64::from(export.ipv4) + u64::from(export.ipv6));
        status.update_bytes(eor);
        let (v4, v6) = rib.counts();
        status.set_prefixes(v4, v6);
        info!(neighbor = %name, ipv4 = v4, ipv6 = v6, elapsed_ms = started.elapsed().as_millis() as u64, "BGP table sent, End-of-RIB");

        let hold = u64::from(opened.negotiated.hold_time);
        let keepalive_every = Duration::from_secs((hold / 3).max(1));
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + keepalive_every, keepalive_every);
        let mut hold_check = tokio::time::interval(Duration::from_millis(500));
        // A safety net in case a change notification were ever missed.
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        // When the last changes went out: an idle session sends at once (after
        // IDLE_GATHER, so one answer's addresses leave together), a busy one
        // at most once per batch interval.
        let mut last_flush = tokio::time::Instant::now() - ctx.local.batch_interval;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    if graceful {
                        // RFC 4724: close without NOTIFICATION so the neighbor
                        // keeps our routes (marked stale) until we are back.
                        info!(neighbor = %name, "closing for graceful restart");
                        let _ = wr.shutdown().await;
                    } else {
                        let n = NotificationMessage::cease_with_communication(cease::ADMINISTRATIVE_SHUTDOWN, "dnsbgpd shutting down");
                        let _ = ctx.fail(&mut wr, n).await;
                    }
                    return Ok(started.elapsed());
                }
                _ = keepalive.tick(), if hold > 0 => {
                    ctx.send(&mut wr, &Message::Keepalive(KeepaliveMessage), export.max_len).await?;
                }
                _ = hold_check.tick(), if hold > 0 => {
                    let silent = ctx.table.clock().now().saturating_sub(last_heard.load(Ordering::Relaxed));
                    if silent > hold * 1000 {
                        return Err(ctx.fail(&mut wr, NotificationMessage::hold_timer_expired()).await);
                    }
                }
                ev = rx.recv() => match ev {
                    None => return Err(SessionError::Closed),
                    Some(ReadEvent::Message(m)) => {
                        status.message("in", kind(&m), 1);
                        match m {
                            Message::Keepalive(_) => {}
                            Message::Update(u) => {
                                debug!(neighbor = %name, withdrawn = u.withdrawn_routes.len(), nlri = u.nlri.len(), "UPDATE from neighbor ignored (dnsbgpd does not import)");
                            }
                            Message::RouteRefresh(r) => {
                                let wanted = (r.afi == Afi::IPV4 && export.ipv4) || (r.afi == Afi::IPV6 && export.ipv6);
                                if wanted && r.safi == Safi::UNICAST {
                                    info!(neighbor = %name, afi = r.afi.0, "ROUTE-REFRESH: re-sending the table");
                                    let mut all = rib.everything();
                                    for (v4, v6) in all.announce.values_mut() {
                                        if r.afi == Afi::IPV4 { v6.clear() } else { v4.clear() }
                                    }
                                    out.clear();
                                    let enc = all.encode(&export, &mut out).map_err(|e| SessionError::Other(e.to_string()))?;
                                    write_all(&mut wr, &out).await?;
                                    status.message("out", "update", enc.messages as u64);
                                    status.update_bytes(enc.bytes);
                                    // Blackholes of that family too.
                                    let mut again = bh.everything();
                                    again.announce.retain(|p| p.addr().is_ipv4() == (r.afi == Afi::IPV4));
                                    if !again.is_empty() {
                                        out.clear();
                                        let enc = super::blackhole::encode(&again, &export, &mut out).map_err(|e| SessionError::Other(e.to_string()))?;
                                        write_all(&mut wr, &out).await?;
                                        status.message("out", "update", enc.messages as u64);
                                    }
                                }
                            }
                            Message::Notification(n) => {
                                status.notification("received", &n);
                                return Err(SessionError::Received(n));
                            }
                            Message::Open(_) => {
                                let n = NotificationMessage::new(error_code::FINITE_STATE_MACHINE_ERROR, fsm_error::UNEXPECTED_MESSAGE_IN_ESTABLISHED, Vec::new());
                                return Err(ctx.fail(&mut wr, n).await);
                            }
                        }
                    }
                    Some(ReadEvent::SkippedUpdate(e)) => {
                        status.message("in", "update", 1);
                        warn!(neighbor = %name, error = %e, "malformed UPDATE from neighbor skipped (RFC 7606)");
                    }
                    Some(ReadEvent::Failed(SessionError::Sent(n), cause)) => {
                        warn!(neighbor = %name, error = ?cause, "malformed message from neighbor");
                        return Err(ctx.fail(&mut wr, n).await);
                    }
                    Some(ReadEvent::Failed(e, _)) => return Err(e),
                },
                s = self.incoming.recv() => {
                    // RFC 4271 §6.8: a new connection collides with an
                    // Established session: the new one is closed.
                    if let Some(s) = s {
                        self.reject(s);
                    }
                }
                _ = sub.changed() => {
                    // Coalesce while busy: whatever happens within a batch
                    // interval of the last send goes out together (and an
                    // add-then-remove in that time sends nothing); a change
                    // after a quiet interval leaves at once.
                    let since = last_flush.elapsed();
                    let wait = if since >= ctx.local.batch_interval {
                        IDLE_GATHER.min(ctx.local.batch_interval)
                    } else {
                        ctx.local.batch_interval - since
                    };
                    tokio::time::sleep(wait).await;
                    self.flush(&sub, &mut rib, &export, &mut wr, &mut out).await?;
                    last_flush = tokio::time::Instant::now();
                }
                _ = sweep.tick() => {
                    if sub.pending() > 0 {
                        self.flush(&sub, &mut rib, &export, &mut wr, &mut out).await?;
                    }
                }
                Some(list) = super::blackhole::changed(&mut bh_feed) => {
                    self.send_blackholes(&mut bh, &list, &export, &mut wr, &mut out).await?;
                }
            }
        }
    }

    async fn flush<W: AsyncWrite + Unpin>(
        &self,
        sub: &crate::routes::Subscription,
        rib: &mut AdjRibOut,
        export: &SessionExport,
        wr: &mut W,
        out: &mut BytesMut,
    ) -> Result<(), SessionError> {
        loop {
            let events = sub.drain(DRAIN);
            if events.is_empty() {
                break;
            }
            self.send_changes(rib, &events, export, wr, out).await?;
            if events.len() < DRAIN {
                break;
            }
        }
        let (v4, v6) = rib.counts();
        self.ctx.status.set_prefixes(v4, v6);
        Ok(())
    }

    async fn send_blackholes<W: AsyncWrite + Unpin>(
        &self,
        bh: &mut super::blackhole::BlackholeRib,
        wanted: &[ipnet::IpNet],
        export: &SessionExport,
        wr: &mut W,
        out: &mut BytesMut,
    ) -> Result<(), SessionError> {
        let changes = bh.update(wanted, &self.ctx.settings.blackhole, export);
        if changes.is_empty() {
            return Ok(());
        }
        out.clear();
        let enc = super::blackhole::encode(&changes, export, out).map_err(|e| SessionError::Other(e.to_string()))?;
        write_all(wr, out).await?;
        self.ctx.status.message("out", "update", enc.messages as u64);
        self.ctx.status.update_bytes(enc.bytes);
        info!(neighbor = %self.ctx.settings.name, announced = enc.announced, withdrawn = enc.withdrawn, in_force = bh.len(), "blackhole routes sent");
        Ok(())
    }

    async fn send_changes<W: AsyncWrite + Unpin>(
        &self,
        rib: &mut AdjRibOut,
        events: &[crate::routes::RouteEvent],
        export: &SessionExport,
        wr: &mut W,
        out: &mut BytesMut,
    ) -> Result<(), SessionError> {
        if !self.ctx.settings.export_routes {
            return Ok(());
        }
        let changes = rib.apply(events, &self.ctx.policy, export);
        if changes.is_empty() {
            return Ok(());
        }
        out.clear();
        let enc = changes.encode(export, out).map_err(|e| SessionError::Other(e.to_string()))?;
        // The count is published before the bytes leave: a neighbor that has
        // read the UPDATE must never see an older count in the API.
        let (v4, v6) = rib.counts();
        self.ctx.status.set_prefixes(v4, v6);
        write_all(wr, out).await?;
        self.ctx.status.message("out", "update", enc.messages as u64);
        self.ctx.status.update_bytes(enc.bytes);
        debug!(neighbor = %self.ctx.settings.name, announced = enc.announced, withdrawn = enc.withdrawn, messages = enc.messages, "UPDATEs sent");
        Ok(())
    }
}

/// Ends a task of the neighbor's [`JoinSet`] when the session that uses it ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The address a neighbor connects from, for matching passive connections.
pub fn peer_ip(addr: SocketAddr) -> IpAddr {
    crate::routes::canonical(addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collision_keeps_the_higher_identifiers_connection() {
        let low: std::net::Ipv4Addr = "192.0.2.1".parse().unwrap();
        let high: std::net::Ipv4Addr = "192.0.2.2".parse().unwrap();
        assert_eq!(collision_winner(high, low), Dir::Outgoing);
        assert_eq!(collision_winner(low, high), Dir::Incoming);
    }
}

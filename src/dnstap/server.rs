//! dnstap listeners: a unix socket and an optional TCP socket, any number
//! of resolvers at once, the Frame Streams handshake per connection.
//!
//! Each connection is a task that reads frames and runs the pipeline
//! inline: if dnsbgpd falls behind, the kernel socket buffer fills and the
//! resolver's own dnstap queue takes over (unbound and BIND drop frames
//! rather than block), so a slow consumer never stalls resolution. A
//! protocol error closes only its own connection, with a log line naming
//! the peer and a metric.
//!
//! Nobody can hold the listeners: a connection must finish the handshake
//! (reach START) within `handshake_timeout` and is closed after
//! `idle_timeout` without a frame; at `max_connections` the connection
//! idle the longest is closed to make room for the new one. The TCP
//! listener serves only peers in `tcp_allow` (default loopback).

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::framestream::{ControlFrame, ControlType, DNSTAP_CONTENT_TYPE, Frame, FrameCodec, control_bytes};
use super::pipeline::Pipeline;
use crate::metrics::ListenerLabel;

/// Settings shared by the listeners.
#[derive(Clone)]
pub struct Server {
    pipeline: Arc<Pipeline>,
    max_frame: usize,
    max_connections: usize,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    tcp_allow: Arc<[ipnet::IpNet]>,
    open: Arc<Registry>,
}

/// The open connections (of every listener), for making room at the cap.
struct Registry {
    started: Instant,
    next_id: AtomicU64,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

struct Slot {
    /// When a frame last arrived (ms since the registry began; coarse: it
    /// is updated by the connection's idle check, not per frame).
    last_frame: AtomicU64,
    close: CancellationToken,
}

impl Registry {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Registers a connection; at `max` the longest-idle one is told to
    /// close first (returned `true` then).
    fn admit(&self, max: usize) -> (u64, Arc<Slot>, bool) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut evicted = false;
        while slots.len() >= max {
            let Some(id) =
                slots.iter().min_by_key(|(id, s)| (s.last_frame.load(Ordering::Relaxed), **id)).map(|(id, _)| *id)
            else {
                break;
            };
            if let Some(s) = slots.remove(&id) {
                s.close.cancel();
                evicted = true;
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot { last_frame: AtomicU64::new(self.now()), close: CancellationToken::new() });
        slots.insert(id, slot.clone());
        (id, slot, evicted)
    }

    fn leave(&self, id: u64) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}

/// Binds the unix socket: a stale socket file is removed, a live one (a
/// process answers on it) is an error, `mode` is applied.
pub fn bind_unix(path: &Path, mode: Option<u32>) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{}: another process is listening on this socket", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(listener)
}

/// Removes the socket file at exit, if it is still a socket.
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.0).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

enum Phase {
    /// Nothing received yet.
    Initial,
    /// READY answered with ACCEPT; START expected.
    Accepted,
    /// Data flowing; `bidirectional` decides whether STOP gets a FINISH.
    Started { bidirectional: bool },
}

impl Server {
    /// A server with the default timeouts and a loopback-only TCP allow
    /// list ([`Server::with_limits`] sets them).
    pub fn new(pipeline: Arc<Pipeline>, max_frame: usize, max_connections: usize) -> Server {
        Server {
            pipeline,
            max_frame,
            max_connections: max_connections.max(1),
            handshake_timeout: crate::config::DEFAULT_DNSTAP_HANDSHAKE_TIMEOUT,
            idle_timeout: crate::config::DEFAULT_DNSTAP_IDLE_TIMEOUT,
            tcp_allow: Arc::from(loopback()),
            open: Arc::new(Registry {
                started: Instant::now(),
                next_id: AtomicU64::new(0),
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sets `handshake_timeout`, `idle_timeout` and `tcp_allow`.
    pub fn with_limits(mut self, handshake: Duration, idle: Duration, tcp_allow: &[ipnet::IpNet]) -> Server {
        self.handshake_timeout = handshake;
        self.idle_timeout = idle;
        self.tcp_allow = Arc::from(tcp_allow);
        self
    }

    /// Whether the TCP listener serves this peer.
    pub fn tcp_allowed(&self, peer: std::net::IpAddr) -> bool {
        let peer = crate::routes::canonical(peer);
        self.tcp_allow.iter().any(|n| n.contains(&peer))
    }

    pub async fn serve_unix(
        self,
        listener: UnixListener,
        label: String,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        let mut n: u64 = 0;
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, _)) => {
                    n += 1;
                    self.spawn(stream, format!("{label}#{n}"), "unix", &shutdown, &tracker);
                }
                Err(e) => {
                    warn!(listener = %label, error = %e, "dnstap accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    pub async fn serve_tcp(self, listener: TcpListener, shutdown: CancellationToken, tracker: TaskTracker) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    if !self.tcp_allowed(peer.ip()) {
                        self.pipeline.metrics().reject("tcp_allow");
                        warn!(%peer, "dnstap TCP connection from outside tcp_allow closed");
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    self.spawn(stream, format!("tcp:{peer}"), "tcp", &shutdown, &tracker);
                }
                Err(e) => {
                    warn!(error = %e, "dnstap TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn spawn<S>(&self, stream: S, peer: String, kind: &str, shutdown: &CancellationToken, tracker: &TaskTracker)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let metrics = self.pipeline.metrics().clone();
        metrics.connections.get_or_create(&ListenerLabel { listener: kind.into() }).inc();
        let (id, slot, evicted) = self.open.admit(self.max_connections);
        if evicted {
            metrics.reject("connection_limit");
            warn!(peer = %peer, "dnstap connection limit reached: the longest-idle connection closes to make room");
        }
        let server = self.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            metrics.connections_open.inc();
            server.run(stream, &peer, shutdown, Some(&slot)).await;
            metrics.connections_open.dec();
            server.open.leave(id);
        });
    }

    /// Runs one Frame Streams connection to its end.
    pub async fn connection<S>(&self, stream: S, peer: &str, shutdown: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.run(stream, peer, shutdown, None).await
    }

    async fn run<S>(&self, stream: S, peer: &str, shutdown: CancellationToken, slot: Option<&Slot>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let metrics = self.pipeline.metrics();
        let mut framed = Framed::with_capacity(stream, FrameCodec::new(self.max_frame), 64 * 1024);
        let mut phase = Phase::Initial;
        let mut scratch = self.pipeline.scratch();
        let mut frames: u64 = 0;
        debug!(peer, "dnstap connection opened");
        // One cancellation future for the whole connection: creating one
        // per frame registered and deregistered a waiter (two lock round
        // trips) for every frame.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let evicted = async {
            match slot {
                Some(s) => s.close.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(evicted);
        // Timeouts without a timer per frame: the check wakes every
        // quarter of the idle timeout and compares the frame count. It is
        // polled before the stream so that a busy stream cannot starve it
        // (the registry's idle time is updated there).
        let opened = tokio::time::Instant::now();
        let period = (self.idle_timeout / 4).max(Duration::from_millis(10));
        let check = tokio::time::sleep(self.handshake_timeout.min(period));
        tokio::pin!(check);
        let (mut seen_frames, mut last_frame) = (0u64, opened);
        let close_reason = loop {
            let next = tokio::select! {
                biased;
                _ = &mut cancelled => break "shutdown",
                _ = &mut evicted => break "connection limit",
                _ = &mut check => {
                    let now = tokio::time::Instant::now();
                    if !matches!(phase, Phase::Started { .. }) {
                        if now.duration_since(opened) >= self.handshake_timeout {
                            metrics.reject("handshake_timeout");
                            warn!(peer, timeout = ?self.handshake_timeout, "dnstap handshake not finished in time; closing");
                            break "handshake timeout";
                        }
                    } else if frames != seen_frames {
                        (seen_frames, last_frame) = (frames, now);
                        if let Some(s) = slot {
                            s.last_frame.store(self.open.now(), Ordering::Relaxed);
                        }
                    } else if now.duration_since(last_frame) >= self.idle_timeout {
                        metrics.reject("idle_timeout");
                        info!(peer, timeout = ?self.idle_timeout, "dnstap connection idle too long; closing");
                        break "idle timeout";
                    }
                    let wait = if matches!(phase, Phase::Started { .. }) {
                        period
                    } else {
                        (opened + self.handshake_timeout).saturating_duration_since(now).min(period)
                    };
                    check.as_mut().reset(now + wait.max(Duration::from_millis(1)));
                    continue;
                }
                f = framed.next() => f,
            };
            let frame = match next {
                None => break "closed by peer",
                Some(Err(e)) => {
                    metrics.reject(e.reason());
                    warn!(peer, error = %e, "dnstap stream error; closing this connection");
                    break "error";
                }
                Some(Ok(f)) => f,
            };
            match (frame, &phase) {
                (Frame::Data(data), Phase::Started { .. }) => {
                    frames += 1;
                    self.pipeline.handle_in(data, &mut scratch);
                }
                (Frame::Data(_), _) => {
                    metrics.reject("data_before_start");
                    warn!(peer, "dnstap data frame before START; closing this connection");
                    break "error";
                }
                (Frame::Control(c), Phase::Initial) if c.kind == ControlType::Ready => {
                    if !c.offers(DNSTAP_CONTENT_TYPE) {
                        metrics.reject("content_type");
                        warn!(peer, offered = ?content_types(&c), "dnstap READY without the dnstap content type; closing");
                        break "error";
                    }
                    let accept = ControlFrame::with_content_type(ControlType::Accept, DNSTAP_CONTENT_TYPE);
                    if let Err(e) = write_control(framed.get_mut(), &accept).await {
                        warn!(peer, error = %e, "dnstap: cannot send ACCEPT");
                        break "error";
                    }
                    phase = Phase::Accepted;
                }
                (Frame::Control(c), Phase::Initial | Phase::Accepted) if c.kind == ControlType::Start => {
                    if !c.content_types.is_empty() && !c.offers(DNSTAP_CONTENT_TYPE) {
                        metrics.reject("content_type");
                        warn!(peer, offered = ?content_types(&c), "dnstap START with a wrong content type; closing");
                        break "error";
                    }
                    phase = Phase::Started { bidirectional: matches!(phase, Phase::Accepted) };
                    last_frame = tokio::time::Instant::now();
                    if let Some(s) = slot {
                        s.last_frame.store(self.open.now(), Ordering::Relaxed);
                    }
                    debug!(peer, "dnstap stream started");
                }
                (Frame::Control(c), Phase::Started { bidirectional }) if c.kind == ControlType::Stop => {
                    if *bidirectional {
                        // unbound hangs up right after STOP: a failed FINISH
                        // is a normal end.
                        let _ = write_control(framed.get_mut(), &ControlFrame::new(ControlType::Finish)).await;
                    }
                    break "stopped";
                }
                (Frame::Control(c), _) => {
                    metrics.reject("protocol");
                    warn!(peer, control = ?c.kind, "unexpected dnstap control frame; closing this connection");
                    break "error";
                }
            }
        };
        if close_reason == "error" {
            info!(peer, frames, "dnstap connection closed after an error");
        } else {
            debug!(peer, frames, reason = close_reason, "dnstap connection closed");
        }
    }
}

fn loopback() -> Vec<ipnet::IpNet> {
    vec![
        ipnet::IpNet::V4(ipnet::Ipv4Net::new(std::net::Ipv4Addr::LOCALHOST, 8).unwrap_or_default()),
        ipnet::IpNet::V6(ipnet::Ipv6Net::new(std::net::Ipv6Addr::LOCALHOST, 128).unwrap_or_default()),
    ]
}

fn content_types(c: &ControlFrame) -> Vec<String> {
    c.content_types.iter().map(|t| String::from_utf8_lossy(t).into_owned()).collect()
}

async fn write_control<S: AsyncWrite + Unpin>(stream: &mut S, frame: &ControlFrame) -> io::Result<()> {
    stream.write_all(&control_bytes(frame)).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arc_swap::ArcSwap;
    use bytes::{BufMut, BytesMut};
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::dnstap::MessageType;
    use crate::dnstap::pipeline::tests::frame;
    use crate::lists::Lists;
    use crate::metrics::Metrics;
    use crate::routes::ingest::Ingest;
    use crate::routes::{Clock, RouteTable};

    fn server() -> (Server, Arc<Metrics>, Arc<RouteTable>) {
        let settings = vec![crate::config::ListSettings {
            name: Arc::from("vpn"),
            file: PathBuf::from("vpn.txt"),
            communities: vec![],
            large_communities: vec![],
            ..Default::default()
        }];
        let lists = Lists::compile(&settings, &["cdn.test\n".to_string()]).0;
        let table = Arc::new(RouteTable::new(Clock::new(), Duration::from_secs(60), Duration::from_secs(3600)));
        let metrics = Arc::new(Metrics::new());
        let p = Pipeline::new(
            Arc::new(ArcSwap::from_pointee(lists)),
            Arc::new(Ingest::new(table.clone())),
            metrics.clone(),
            &[MessageType::ClientResponse],
        );
        (Server::new(Arc::new(p), 65536, 8), metrics, table)
    }

    fn data(b: &[u8]) -> Vec<u8> {
        let mut v = (b.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }

    async fn run(input: Vec<u8>) -> (Vec<u8>, Arc<Metrics>, Arc<RouteTable>) {
        let (srv, metrics, table) = server();
        let (mut client, conn) = tokio::io::duplex(1 << 20);
        let task = tokio::spawn(async move { srv.connection(conn, "test", CancellationToken::new()).await });
        client.write_all(&input).await.unwrap();
        client.shutdown().await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        task.await.unwrap();
        (out, metrics, table)
    }

    fn dns_frame() -> Vec<u8> {
        data(&frame(MessageType::ClientResponse, crate::dnstap::dnswire::tests::sample()))
    }

    #[tokio::test]
    async fn bidirectional_handshake() {
        let ct = DNSTAP_CONTENT_TYPE;
        let mut input = control_bytes(&ControlFrame::with_content_type(ControlType::Ready, ct)).to_vec();
        input.extend(control_bytes(&ControlFrame::with_content_type(ControlType::Start, ct)));
        input.extend(dns_frame());
        input.extend(control_bytes(&ControlFrame::new(ControlType::Stop)));
        let (out, _, table) = run(input).await;
        let mut expected = control_bytes(&ControlFrame::with_content_type(ControlType::Accept, ct)).to_vec();
        expected.extend(control_bytes(&ControlFrame::new(ControlType::Finish)));
        assert_eq!(out, expected);
        assert_eq!(table.len(), 1);
    }

    #[tokio::test]
    async fn unidirectional_stream() {
        let mut input =
            control_bytes(&ControlFrame::with_content_type(ControlType::Start, DNSTAP_CONTENT_TYPE)).to_vec();
        input.extend(dns_frame());
        input.extend(control_bytes(&ControlFrame::new(ControlType::Stop)));
        let (out, _, table) = run(input).await;
        assert!(out.is_empty(), "no FINISH on a unidirectional stream");
        assert_eq!(table.len(), 1);
    }

    async fn rejected(input: Vec<u8>, reason: &str) {
        let (_, metrics, table) = run(input).await;
        let text = metrics.encode();
        let line = format!("dnsbgpd_dnstap_frames_rejected_total{{reason=\"{reason}\"}} 1");
        assert!(text.contains(&line), "{line} missing:\n{text}");
        assert!(table.is_empty());
    }

    #[tokio::test]
    async fn wrong_content_type() {
        rejected(
            control_bytes(&ControlFrame::with_content_type(ControlType::Ready, b"protobuf:other")).to_vec(),
            "content_type",
        )
        .await;
        rejected(
            control_bytes(&ControlFrame::with_content_type(ControlType::Start, b"text/plain")).to_vec(),
            "content_type",
        )
        .await;
    }

    #[tokio::test]
    async fn data_before_start() {
        rejected(dns_frame(), "data_before_start").await;
    }

    #[tokio::test]
    async fn oversized_truncated_garbage() {
        let mut big = BytesMut::new();
        big.put_u32(10 * 1024 * 1024);
        rejected(big.to_vec(), "too_large").await;
        let mut input =
            control_bytes(&ControlFrame::with_content_type(ControlType::Start, DNSTAP_CONTENT_TYPE)).to_vec();
        let f = dns_frame();
        input.extend(&f[..f.len() - 3]);
        rejected(input, "truncated").await;
        rejected(b"\x00\x00\x00\x00\x00\x00\x00\x04\xde\xad\xbe\xef".to_vec(), "garbage").await;
    }

    /// A connection that never finishes the handshake, or goes silent
    /// after START, is closed and counted.
    #[tokio::test(start_paused = true)]
    async fn handshake_and_idle_timeouts() {
        for (input, reason) in [
            (Vec::new(), "handshake_timeout"),
            (
                control_bytes(&ControlFrame::with_content_type(ControlType::Ready, DNSTAP_CONTENT_TYPE)).to_vec(),
                "handshake_timeout",
            ),
            (
                control_bytes(&ControlFrame::with_content_type(ControlType::Start, DNSTAP_CONTENT_TYPE)).to_vec(),
                "idle_timeout",
            ),
        ] {
            let (srv, metrics, _) = server();
            let srv = srv.with_limits(Duration::from_secs(5), Duration::from_secs(600), &[]);
            let (mut client, conn) = tokio::io::duplex(1 << 16);
            client.write_all(&input).await.unwrap();
            let started = tokio::time::Instant::now();
            let task = tokio::spawn(async move { srv.connection(conn, "test", CancellationToken::new()).await });
            tokio::time::timeout(Duration::from_secs(3600), task).await.expect("connection closed").unwrap();
            let took = started.elapsed();
            let limit = if reason == "idle_timeout" { Duration::from_secs(600) } else { Duration::from_secs(5) };
            assert!(took >= limit && took <= limit + limit / 4 + Duration::from_millis(10), "{reason}: {took:?}");
            let line = format!("dnsbgpd_dnstap_frames_rejected_total{{reason=\"{reason}\"}} 1");
            assert!(metrics.encode().contains(&line), "{line} missing");
            drop(client);
        }
    }

    /// Frames keep a connection alive past the idle timeout.
    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_not_idle() {
        let (srv, metrics, _) = server();
        let srv = srv.with_limits(Duration::from_secs(5), Duration::from_secs(8), &[]);
        let (mut client, conn) = tokio::io::duplex(1 << 20);
        client
            .write_all(&control_bytes(&ControlFrame::with_content_type(ControlType::Start, DNSTAP_CONTENT_TYPE)))
            .await
            .unwrap();
        let task = tokio::spawn(async move { srv.connection(conn, "test", CancellationToken::new()).await });
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            client.write_all(&dns_frame()).await.unwrap();
        }
        assert!(!task.is_finished(), "closed while frames flowed");
        tokio::time::timeout(Duration::from_secs(20), task).await.expect("closed once idle").unwrap();
        assert!(metrics.encode().contains("dnsbgpd_dnstap_frames_rejected_total{reason=\"idle_timeout\"} 1"));
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        let (srv, _, _) = server();
        let r = &srv.open;
        let slots: Vec<_> = (0..8).map(|_| r.admit(8)).collect();
        assert!(slots.iter().all(|(_, _, evicted)| !evicted));
        for (i, (_, s, _)) in slots.iter().enumerate() {
            s.last_frame.store(100 + i as u64, Ordering::Relaxed);
        }
        slots[3].1.last_frame.store(5, Ordering::Relaxed);
        let (_, _, evicted) = r.admit(8);
        assert!(evicted);
        assert!(slots[3].1.close.is_cancelled());
        assert_eq!(slots.iter().filter(|(_, s, _)| s.close.is_cancelled()).count(), 1);
        assert_eq!(r.slots.lock().unwrap().len(), 8);
    }

    #[test]
    fn tcp_allow_matches_canonical_addresses() {
        let (srv, _, _) = server();
        assert!(srv.tcp_allowed("127.0.0.9".parse().unwrap()));
        assert!(srv.tcp_allowed("::1".parse().unwrap()));
        assert!(srv.tcp_allowed("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!srv.tcp_allowed("198.51.100.7".parse().unwrap()));
        let srv =
            srv.with_limits(Duration::from_secs(1), Duration::from_secs(1), &["198.51.100.0/24".parse().unwrap()]);
        assert!(srv.tcp_allowed("::ffff:198.51.100.7".parse().unwrap()));
        assert!(!srv.tcp_allowed("127.0.0.1".parse().unwrap()));
    }

    #[tokio::test]
    async fn finish_before_start_is_a_protocol_error() {
        rejected(control_bytes(&ControlFrame::new(ControlType::Finish)).to_vec(), "protocol").await;
    }

    #[test]
    fn unix_socket_stale_and_live() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/d.sock");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let l = bind_unix(&path, Some(0o660)).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o660);
            // A live socket is not taken over.
            let err = bind_unix(&path, None).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
            drop(l);
            // The file left behind is stale now and gets replaced.
            assert!(path.exists());
            let _l = bind_unix(&path, None).unwrap();
            drop(SocketFile(path.clone()));
            assert!(!path.exists());
        });
        std::fs::write(dir.path().join("plain"), b"x").unwrap();
        assert_eq!(bind_unix(&dir.path().join("plain"), None).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
    }
}

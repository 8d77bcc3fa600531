//! The sync client: per peer, a pull loop and a push loop, each with its
//! own keep-alive HTTP/1.1 connection (plain or TLS).
//!
//! Pull: at start-up, after every reconnect, when woken (a push from the
//! peer showed a gap) and every `interval`, ask `/changes` from the cursor
//! until caught up. Push: when the change log's head moves, wait
//! `push_interval` to gather a batch, then post what the peer has not had
//! yet, straight from the log. A failed push is retried with backoff; if
//! the backlog exceeds `push_queue` changes, pushing skips ahead and leaves
//! the catch-up to the peer's own pull (the peer sees the gap and pulls).
//! Nothing here ever waits on the dnstap path: the log is written by its
//! own task and read here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::merge::{self, Via};
use super::metrics::SyncMetrics;
use super::protocol::{ErrorReply, Page, PushReply, truncate};
use super::{PeerHandle, PeerSync};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS with {0}: {1}")]
    Tls(String, std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answer body: {0}")]
    Body(String),
    #[error("{0}")]
    Protocol(String),
}

/// One keep-alive connection to a peer, re-opened when it breaks.
pub struct Connection {
    peer: Arc<PeerHandle>,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
    max_body: usize,
    sender: Option<SendRequest<Full<Bytes>>>,
    driver: Option<JoinHandle<()>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }
}

impl Connection {
    pub fn new(sync: &PeerSync, peer: Arc<PeerHandle>) -> Connection {
        Connection {
            tls: if peer.settings.https { sync.tls().cloned() } else { None },
            peer,
            timeout: sync.settings.timeout,
            max_body: sync.settings.max_body,
            sender: None,
            driver: None,
        }
    }

    async fn connect(&mut self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let s = &self.peer.settings;
        let target = format!("{}:{}", s.host, s.port);
        let tcp =
            TcpStream::connect((s.host.as_str(), s.port)).await.map_err(|e| ClientError::Connect(target.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let (sender, driver) = if s.https {
            let Some(tls) = &self.tls else {
                return Err(ClientError::Protocol("https peer without a CA file".into()));
            };
            let name = rustls::pki_types::ServerName::try_from(s.host.clone())
                .map_err(|e| ClientError::Tls(target.clone(), std::io::Error::other(e)))?;
            let stream = tls.connect(name, tcp).await.map_err(|e| ClientError::Tls(target.clone(), e))?;
            let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
            (
                sender,
                tokio::spawn(async move {
                    let _ = conn.await;
                }),
            )
        } else {
            let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
            (
                sender,
                tokio::spawn(async move {
                    let _ = conn.await;
                }),
            )
        };
        if let Some(old) = self.driver.replace(driver) {
            old.abort();
        }
        Ok(sender)
    }

    /// Sends one request; returns the status and the whole body (at most
    /// `max_body`). Any failure drops the connection.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.request_inner(method, path, body)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(ClientError::Timeout(timeout))
            }
        }
    }

    async fn request_inner(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        sender.ready().await?;
        let s = &self.peer.settings;
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", s.base_path))
            .header(header::HOST, &s.authority)
            .header(header::AUTHORIZATION, format!("Bearer {}", s.token.expose()))
            .header(header::USER_AGENT, concat!("dnsbgpd/", env!("CARGO_PKG_VERSION")));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| ClientError::Protocol(format!("cannot build the request: {e}")))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), self.max_body)
            .collect()
            .await
            .map_err(|e| ClientError::Body(e.to_string()))?
            .to_bytes();
        self.sender = Some(sender);
        Ok((status, body))
    }
}

/// Exponential backoff between `min` and `max`.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max: max.max(min), next: min }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

fn error_text(status: StatusCode, body: &[u8]) -> String {
    let detail = serde_json::from_slice::<ErrorReply>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| truncate(&String::from_utf8_lossy(body)));
    let hint = if status == StatusCode::UNAUTHORIZED { " (check the peer's token)" } else { "" };
    format!("HTTP {status}: {detail}{hint}")
}

/// Records the outcome of an exchange; logs only changes of state.
fn note(sync: &PeerSync, peer: &PeerHandle, via: Via, result: Result<(), String>) {
    let now = sync.table.clock().now();
    let mut st = peer.status();
    let was = st.up;
    match result {
        Ok(()) => {
            match via {
                Via::Pull => st.last_pull = Some(now),
                Via::Push => st.last_push = Some(now),
            }
            st.up = Some(true);
            if was == Some(false) {
                info!(peer = %peer.settings.name, "sync peer reachable again");
            }
        }
        Err(e) => {
            sync.metrics.errors.get_or_create(&SyncMetrics::peer_via(&peer.settings.name, via.as_str())).inc();
            if was != Some(false) || st.last_error.as_ref().is_none_or(|(_, old)| *old != e) {
                warn!(peer = %peer.settings.name, via = via.as_str(), error = %e, "sync with peer failed");
            }
            st.last_error = Some((now, e));
            st.up = Some(false);
        }
    }
}

/// The pull loop of one peer.
pub async fn run_puller(sync: Arc<PeerSync>, peer: Arc<PeerHandle>, shutdown: CancellationToken) {
    let mut conn = Connection::new(&sync, peer.clone());
    let mut backoff = Backoff::new(Duration::from_millis(250), sync.settings.interval.min(Duration::from_secs(10)));
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = pull(&sync, &peer, &mut conn) => r,
        };
        let ok = result.is_ok();
        let was_down = peer.status().up == Some(false);
        note(&sync, &peer, Via::Pull, result);
        if ok && was_down {
            // The peer is back: a push waiting out its backoff goes now.
            peer.wake_push.notify_one();
        }
        let wait = if ok {
            sync.metrics
                .pull_seconds
                .get_or_create(&SyncMetrics::peer(&peer.settings.name))
                .observe(started.elapsed().as_secs_f64());
            backoff.reset();
            sync.settings.interval
        } else {
            backoff.next()
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = peer.wake_pull.notified() => {}
        }
    }
}

/// The pull request for the page after `cursor`; `max_bytes`: pages must
/// fit this side's `max_body`.
fn changes_path(sync: &PeerSync, cursor: u64) -> String {
    format!(
        "/api/v1/sync/changes?since={cursor}&limit={}&max_bytes={}&instance={}",
        sync.settings.page_size,
        sync.settings.max_body,
        sync.id()
    )
}

/// Pulls until caught up. While a page is applied the next one is already
/// asked for (a 1 M-route initial sync spends about as long serving pages
/// at the peer as applying them here); it is used only if the cursor after
/// applying is the one it was asked with.
async fn pull(sync: &Arc<PeerSync>, peer: &Arc<PeerHandle>, conn: &mut Connection) -> Result<(), String> {
    let name = peer.settings.name.to_string();
    let mut prefetched: Option<(u64, StatusCode, Bytes)> = None;
    loop {
        let known = peer.instance();
        let cursor = known.as_deref().map_or(0, |id| sync.merger.cursor(id));
        let (status, body) = match prefetched.take() {
            Some((since, status, body)) if since == cursor && cursor != 0 => (status, body),
            _ => conn.request(Method::GET, &changes_path(sync, cursor), None).await.map_err(|e| e.to_string())?,
        };
        sync.metrics.client_bytes.get_or_create(&SyncMetrics::peer_via(&name, "pull")).inc_by(body.len() as u64);
        if status != StatusCode::OK {
            return Err(error_text(status, &body));
        }
        let page: Page = serde_json::from_slice(&body).map_err(|e| format!("bad page from the peer: {e}"))?;
        merge::check(&page).map_err(|e| format!("bad page from the peer: {e}"))?;
        if page.instance == **sync.id() {
            return Err("the peer url points at this instance".into());
        }
        if let Some(want) = &peer.settings.instance
            && page.instance != **want
        {
            return Err(format!(
                "the peer answered as instance {:?}; its [[sync.peer]] instance is {want:?}",
                crate::sync::protocol::truncate(&page.instance)
            ));
        }
        if known.as_deref() != Some(page.instance.as_str()) {
            adopt_instance(sync, peer, known.as_deref(), &page.instance);
            if known.is_some() {
                // Asked with the old instance's cursor: ask again.
                continue;
            }
        }
        if page.snapshot && page.since == 0 {
            peer.status().snapshots += 1;
            if cursor != 0 {
                info!(peer = %name, cursor, "peer answered with a snapshot (its log no longer covers our cursor)");
            }
        }
        let more = page.more;
        let head = page.head;
        let next = page.next;
        let s = sync.clone();
        let label = name.clone();
        let apply = tokio::task::spawn_blocking(move || {
            let applied = s.merger.apply(&page, Via::Pull, &label, s.id());
            (applied, page.changes.len())
        });
        let ahead = async {
            match more && next != 0 {
                true => Some(conn.request(Method::GET, &changes_path(sync, next), None).await),
                false => None,
            }
        };
        let (applied, ahead) = tokio::join!(apply, ahead);
        let (applied, n) = applied.map_err(|e| format!("applying a page failed: {e}"))?;
        match ahead {
            Some(Ok((status, body))) => prefetched = Some((next, status, body)),
            Some(Err(e)) => return Err(e.to_string()),
            None => {}
        }
        if n > 0 {
            debug!(peer = %name, changes = n, accepted = applied.accepted, rejected = applied.rejected, cursor = applied.cursor, "pulled");
        }
        peer.status().remote_head = head;
        if applied.gap {
            // Another page moved the cursor meanwhile; ask again.
            continue;
        }
        if !more {
            return Ok(());
        }
    }
}

/// The peer's url answered with another instance id than before: the old
/// instance (its store) is gone, so are its routes here.
fn adopt_instance(sync: &PeerSync, peer: &PeerHandle, old: Option<&str>, new: &str) {
    if let Some(old) = old {
        let removed = sync.merger.forget(old);
        warn!(peer = %peer.settings.name, old, new, routes_removed = removed, "peer has a new instance id (new store); starting over from a snapshot");
    } else {
        info!(peer = %peer.settings.name, instance = new, "sync peer identified");
    }
    if let Err(e) = sync.log.set_peer_instance(&peer.settings.url, new) {
        warn!(peer = %peer.settings.name, error = %e, "cannot save the peer's instance id");
    }
    peer.status().instance = Some(new.to_string());
}

/// The push loop of one peer.
pub async fn run_pusher(sync: Arc<PeerSync>, peer: Arc<PeerHandle>, shutdown: CancellationToken) {
    let mut conn = Connection::new(&sync, peer.clone());
    let mut head_rx = sync.log.watch_head();
    // Changes before now are the peer's pull's business.
    let mut pushed = sync.log.head();
    sync.metrics.push_queue.get_or_create(&SyncMetrics::peer(&peer.settings.name)).set(0);
    peer.status().pushed = pushed;
    loop {
        while sync.log.head() <= pushed {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = head_rx.changed() => if r.is_err() { return },
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(sync.settings.push_interval) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = push_pending(&sync, &peer, &mut conn, &mut pushed) => {}
        }
        // The backlog gauge is set where overflow is decided (push_pending),
        // so it never shows more than push_queue.
        peer.status().pushed = pushed;
    }
}

/// Pushes until caught up (or the backlog overflowed).
async fn push_pending(sync: &Arc<PeerSync>, peer: &Arc<PeerHandle>, conn: &mut Connection, pushed: &mut u64) {
    let name = peer.settings.name.to_string();
    let label = SyncMetrics::peer(&name);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut failed = false;
    loop {
        let head = sync.log.head();
        let backlog = head.saturating_sub(*pushed);
        if backlog > sync.settings.push_queue as u64 {
            sync.metrics.push_overflows.get_or_create(&label).inc();
            warn!(peer = %name, backlog, limit = sync.settings.push_queue, "push backlog too long; the peer will catch up by pulling");
            *pushed = head;
            continue;
        }
        sync.metrics.push_queue.get_or_create(&label).set(backlog as i64);
        {
            let mut st = peer.status();
            st.pushed = *pushed;
            st.push_queue = backlog;
        }
        if backlog == 0 {
            return;
        }
        let log = sync.log.clone();
        let (from, limit) = (*pushed, sync.settings.page_size);
        // The peer's max_body is not known here: pages stay within ours
        // (the same default on every instance).
        let max_bytes = sync.settings.max_body;
        let page = match tokio::task::spawn_blocking(move || {
            log.encode_range(from, head, limit, max_bytes, false, true)
        })
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                warn!(error = %e, "cannot read the sync log for a push");
                return;
            }
            Err(e) => {
                warn!(error = %e, "sync log read task failed");
                return;
            }
        };
        if page.changes == 0 {
            *pushed = page.next;
            continue;
        }
        let body = Bytes::from(page.body);
        let size = body.len() as u64;
        let started = Instant::now();
        let result = conn.request(Method::POST, "/api/v1/sync/push", Some(body)).await;
        sync.metrics.push_seconds.get_or_create(&label).observe(started.elapsed().as_secs_f64());
        match result {
            Ok((StatusCode::OK, reply)) => {
                sync.metrics.client_bytes.get_or_create(&SyncMetrics::peer_via(&name, "push")).inc_by(size);
                sync.metrics.sent.get_or_create(&SyncMetrics::peer_via(&name, "push")).inc_by(page.changes as u64);
                if let Ok(r) = serde_json::from_slice::<PushReply>(&reply)
                    && r.rejected > 0
                {
                    let first = r.errors.first().map(|e| format!("{}: {}", e.reason, e.detail)).unwrap_or_default();
                    debug!(peer = %name, rejected = r.rejected, first = %first, "peer rejected some pushed entries");
                }
                *pushed = page.next;
                note(sync, peer, Via::Push, Ok(()));
                if failed {
                    // Reconnected: pull too.
                    peer.wake_pull.notify_one();
                }
                failed = false;
                backoff.reset();
            }
            Ok((StatusCode::CONFLICT, _)) => {
                // The peer misses changes before this batch; it pulls them.
                debug!(peer = %name, since = page.since, "push refused for a gap; the peer pulls");
                *pushed = page.next;
                note(sync, peer, Via::Push, Ok(()));
            }
            Ok((status, reply)) if status.is_client_error() => {
                // Retrying would get the same answer; the peer's pull
                // catches up once the cause (token, limits) is fixed.
                note(sync, peer, Via::Push, Err(error_text(status, &reply)));
                *pushed = page.next;
            }
            Ok((status, reply)) => {
                note(sync, peer, Via::Push, Err(error_text(status, &reply)));
                failed = true;
                retry_pause(peer, &mut backoff).await;
            }
            Err(e) => {
                note(sync, peer, Via::Push, Err(e.to_string()));
                failed = true;
                retry_pause(peer, &mut backoff).await;
            }
        }
    }
}

/// Waits before a push is retried, unless the peer is seen back first.
async fn retry_pause(peer: &PeerHandle, backoff: &mut Backoff) {
    tokio::select! {
        _ = tokio::time::sleep(backoff.next()) => {}
        _ = peer.wake_push.notified() => backoff.reset(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let seq: Vec<u64> = (0..4).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(seq, vec![100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(100));
    }

    #[test]
    fn error_texts() {
        let t = error_text(StatusCode::UNAUTHORIZED, br#"{"error":"missing or wrong token"}"#);
        assert_eq!(t, "HTTP 401 Unauthorized: missing or wrong token (check the peer's token)");
        let t = error_text(StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(t, "HTTP 502 Bad Gateway: <html>");
    }
}

//! The API's HTTP server: hyper with a timer, a Host check, a cap on
//! connections and on requests in progress per endpoint.
//!
//! * **Host** — a request whose `Host` header is neither the listen
//!   address (an IP literal equal to it, any IP literal when it listens on
//!   all addresses, `localhost` on loopback) nor an `[api] allowed_hosts`
//!   entry gets 421: a web page that rebinds its own name to the API's
//!   address cannot read it from an operator's browser. A request without a
//!   Host header (HTTP/1.0 tools) passes: a browser always sends one.
//! * **Connections** — at most `max_connections`; at the cap the
//!   connection idle the longest (no request in progress) is closed to make
//!   room for the new one, so idle connections cannot lock anyone out. When
//!   every connection has a request in progress, the new one is closed.
//! * **Time** — a client has `header_timeout` to send a request's headers
//!   (also between requests on a kept-alive connection), and a request has
//!   `request_timeout`, streaming of the answer included.
//! * **Requests** — at most `max_requests` in progress per endpoint; more
//!   wait up to a second for a slot, then get 503, so a flood of one
//!   endpoint leaves the others (status, metrics) answering.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::config::ApiSettings;

/// How long a request waits for a slot of its endpoint before 503.
const SLOT_WAIT: Duration = Duration::from_secs(1);
/// How long open requests may finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// What the server enforces (from `[api]`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_requests: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
}

impl Limits {
    pub fn from_settings(s: &ApiSettings) -> Limits {
        Limits {
            max_connections: s.max_connections,
            max_requests: s.max_requests,
            header_timeout: s.header_timeout,
            request_timeout: s.request_timeout,
        }
    }
}

/// The Host values a listener accepts.
#[derive(Debug, Clone)]
pub struct HostCheck {
    pub listen: SocketAddr,
    /// Lower-case `NAME` (any port) or `NAME:PORT` entries; `*` accepts all.
    pub allowed: Vec<String>,
}

impl HostCheck {
    /// Whether a `Host` header value names this listener.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if self.allowed.iter().any(|a| a == "*" || *a == host) {
            return true;
        }
        let Ok(authority) = host.parse::<axum::http::uri::Authority>() else { return false };
        if authority.as_str().contains('@') {
            return false;
        }
        let name = authority.host().trim_start_matches('[').trim_end_matches(']');
        let port = authority.port_u16();
        if self.allowed.iter().any(|a| a == name) {
            return true;
        }
        if port.is_some_and(|p| p != self.listen.port()) {
            return false;
        }
        let ip = self.listen.ip();
        match name.parse::<IpAddr>() {
            Ok(given) => ip.is_unspecified() || crate::routes::canonical(given) == crate::routes::canonical(ip),
            Err(_) => name == "localhost" && (ip.is_loopback() || ip.is_unspecified()),
        }
    }
}

/// Middleware: 421 for a Host header that does not name this listener.
pub async fn check_host(State(check): State<Arc<HostCheck>>, req: Request, next: Next) -> Response {
    if let Some(host) = req.headers().get(header::HOST) {
        let ok = host.to_str().is_ok_and(|h| check.allows(h));
        if !ok {
            let shown = String::from_utf8_lossy(host.as_bytes()).chars().take(80).collect::<String>();
            debug!(host = %shown, path = %req.uri().path(), "API request for another host refused");
            let message = format!(
                "Host {shown:?} is not this API's address ({}); add it to [api] allowed_hosts to accept it",
                check.listen
            );
            return (StatusCode::MISDIRECTED_REQUEST, axum::Json(serde_json::json!({"error": message})))
                .into_response();
        }
    }
    next.run(req).await
}

/// Slots per endpoint.
pub struct Endpoints {
    per_endpoint: usize,
    timeout: Duration,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Endpoints {
    pub fn new(limits: &Limits) -> Arc<Endpoints> {
        Arc::new(Endpoints {
            per_endpoint: limits.max_requests,
            timeout: limits.request_timeout,
            slots: Mutex::new(HashMap::new()),
        })
    }

    fn slots(&self, endpoint: &str) -> Arc<Semaphore> {
        let mut map = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(endpoint.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.per_endpoint))).clone()
    }
}

fn unavailable(message: String) -> Response {
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"error": message}))).into_response();
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Middleware (a route layer, so the matched path is known): a slot of the
/// endpoint for the whole request, and the request timeout.
pub async fn limit_requests(State(eps): State<Arc<Endpoints>>, req: Request, next: Next) -> Response {
    let endpoint =
        format!("{} {}", req.method(), req.extensions().get::<MatchedPath>().map_or("(unmatched)", |m| m.as_str()));
    let slots = eps.slots(&endpoint);
    let permit = match tokio::time::timeout(SLOT_WAIT, slots.acquire_owned()).await {
        Ok(Ok(p)) => p,
        _ => {
            debug!(endpoint, "API endpoint busy");
            return unavailable(format!("{endpoint}: too many requests in progress; retry"));
        }
    };
    let deadline = Instant::now() + eps.timeout;
    let response = match tokio::time::timeout_at(deadline.into(), next.run(req)).await {
        Ok(r) => r,
        Err(_) => return unavailable(format!("{endpoint}: the request took longer than request_timeout")),
    };
    // The slot is held until the body is sent (or dropped), and the body
    // ends at the deadline.
    response.map(|body| Guarded::wrap(body, permit, Some(deadline)))
}

/// A response body that holds `guard` until it is sent or dropped and ends
/// with an error at `deadline`; its size hint stays that of the inner body
/// (so a known length is still sent as Content-Length).
struct Guarded<G> {
    inner: Body,
    guard: Option<G>,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<G: Send + Unpin + 'static> Guarded<G> {
    fn wrap(inner: Body, guard: G, deadline: Option<Instant>) -> Body {
        let deadline = deadline.map(|d| Box::pin(tokio::time::sleep_until(d.into())));
        Body::new(Guarded { inner, guard: Some(guard), deadline })
    }
}

impl<G: Unpin> hyper::body::Body for Guarded<G> {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = self.get_mut();
        if this.guard.is_none() {
            return Poll::Ready(None);
        }
        if let Some(d) = &mut this.deadline
            && d.as_mut().poll(cx).is_ready()
        {
            this.guard = None;
            return Poll::Ready(Some(Err(axum::Error::new("request_timeout reached while sending the answer"))));
        }
        let r = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.guard = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.guard.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The middlewares of every API listener around `app`.
pub fn wrap(app: Router, check: HostCheck, limits: &Limits) -> Router {
    app.route_layer(axum::middleware::from_fn_with_state(Endpoints::new(limits), limit_requests))
        .layer(axum::middleware::from_fn_with_state(Arc::new(check), check_host))
}

/// One served connection.
struct Slot {
    /// Requests in progress (their bodies included).
    busy: AtomicUsize,
    /// When it last started or finished a request (ms since the server began).
    last_active: AtomicU64,
    close: CancellationToken,
}

struct Connections {
    started: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Connections {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Registers a new connection; at `max` the longest-idle one is told
    /// to close first. `None` when every connection has a request running.
    fn admit(&self, max: usize) -> Option<(u64, Arc<Slot>)> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= max {
            let victim = open
                .iter()
                .filter(|(_, s)| s.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|(_, s)| s.last_active.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            let slot = open.remove(&victim?)?;
            slot.close.cancel();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            busy: AtomicUsize::new(0),
            last_active: AtomicU64::new(self.now()),
            close: CancellationToken::new(),
        });
        open.insert(id, slot.clone());
        Some((id, slot))
    }

    fn leave(&self, id: u64) {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}

/// Counts a request on its connection until its answer is sent.
struct Busy {
    slot: Arc<Slot>,
    conns: Arc<Connections>,
}

impl Busy {
    fn new(slot: Arc<Slot>, conns: Arc<Connections>) -> Busy {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        slot.last_active.store(conns.now(), Ordering::Relaxed);
        Busy { slot, conns }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.slot.last_active.store(self.conns.now(), Ordering::Relaxed);
        self.slot.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `app` (already [`wrap`]ped) on `listener` until `shutdown`;
/// requests in progress then get [`DRAIN`] to finish.
pub async fn serve<L>(mut listener: L, app: Router, limits: Limits, shutdown: CancellationToken)
where
    L: axum::serve::Listener,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    L::Addr: std::fmt::Debug,
{
    let conns = Arc::new(Connections { started: Instant::now(), next_id: AtomicU64::new(0), open: Mutex::default() });
    let tasks = TaskTracker::new();
    loop {
        let (io, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let Some((id, slot)) = conns.admit(limits.max_connections) else {
            warn!(?peer, limit = limits.max_connections, "API connection refused: every connection is busy");
            continue;
        };
        let (app, conns, shutdown, header_timeout) =
            (app.clone(), conns.clone(), shutdown.clone(), limits.header_timeout);
        tasks.spawn(async move {
            let service = {
                let (slot, conns) = (slot.clone(), conns.clone());
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let busy = Busy::new(slot.clone(), conns.clone());
                    let call = app.clone().oneshot(req.map(Body::new));
                    async move {
                        let response = call.await?;
                        // The connection counts as busy until the body is sent.
                        let response = response.map(|body| Guarded::wrap(body, busy, None));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                })
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(?peer, error = %e, "API connection ended with an error");
                    }
                }
                _ = slot.close.cancelled() => debug!(?peer, "idle API connection closed to make room"),
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, conn.as_mut()).await;
                }
            }
            conns.leave(id);
        });
    }
    tasks.close();
    let _ = tokio::time::timeout(DRAIN, tasks.wait()).await;
}

/// Serves `app` on a TCP listener, with TLS when `tls` is given.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    match tls {
        Some(config) => match crate::tls::TlsListener::new(listener, config) {
            Ok(l) => serve(l, app, limits, shutdown).await,
            Err(e) => tracing::error!(error = %e, "API server failed"),
        },
        None => serve(listener, app, limits, shutdown).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(listen: &str, allowed: &[&str]) -> HostCheck {
        HostCheck { listen: listen.parse().unwrap(), allowed: allowed.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn host_names_the_listener_or_an_allowed_name() {
        let c = check("127.0.0.1:9153", &["dnsbgpd.example", "proxy.example:8443"]);
        for ok in [
            "127.0.0.1:9153",
            "127.0.0.1",
            "localhost:9153",
            "LOCALHOST",
            "dnsbgpd.example",
            "dnsbgpd.example:80",
            "proxy.example:8443",
        ] {
            assert!(c.allows(ok), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:9153",
            "127.0.0.1:9154",
            "127.0.0.2:9153",
            "proxy.example:9153",
            "u@127.0.0.1:9153",
            "",
            "127.0.0.1:9153/x",
        ] {
            assert!(!c.allows(bad), "{bad}");
        }
        let any = check("[::]:9153", &[]);
        for ok in ["[2001:db8::1]:9153", "198.51.100.7", "[::1]:9153", "localhost"] {
            assert!(any.allows(ok), "{ok}");
        }
        assert!(!any.allows("rebind.example:9153"));
        let v6 = check("[::1]:9153", &[]);
        assert!(v6.allows("[::1]:9153") && !v6.allows("127.0.0.1:9153"));
        assert!(check("192.0.2.1:80", &["*"]).allows("anything.example"));
    }

    fn limited_app(max_requests: usize, request_timeout: Duration) -> Router {
        use axum::routing::get;
        let app = Router::new()
            .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(30)).await }))
            .route("/fast", get(|| async { "ok" }));
        let limits =
            Limits { max_connections: 8, max_requests, header_timeout: Duration::from_secs(1), request_timeout };
        wrap(app, check("127.0.0.1:9153", &[]), &limits)
    }

    fn get(path: &str) -> Request {
        Request::builder().uri(path).header(header::HOST, "127.0.0.1:9153").body(Body::empty()).unwrap()
    }

    /// A full endpoint answers 503 after a short wait; the others answer.
    #[tokio::test(start_paused = true)]
    async fn requests_per_endpoint_are_capped() {
        let app = limited_app(2, Duration::from_secs(60));
        let held: Vec<_> = (0..2).map(|_| tokio::spawn(app.clone().oneshot(get("/slow")))).collect();
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        let started = tokio::time::Instant::now();
        let third = app.clone().oneshot(get("/slow")).await.unwrap();
        assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(third.headers().contains_key(header::RETRY_AFTER));
        assert!(started.elapsed() >= SLOT_WAIT);
        let other = app.clone().oneshot(get("/fast")).await.unwrap();
        assert_eq!(other.status(), StatusCode::OK);
        for h in held {
            assert_eq!(h.await.unwrap().unwrap().status(), StatusCode::OK);
        }
        // The slots are free again.
        assert_eq!(app.oneshot(get("/fast")).await.unwrap().status(), StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_timeout_is_cut() {
        let app = limited_app(2, Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let r = app.clone().oneshot(get("/slow")).await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(6));
        let r = app.oneshot(get("/fast")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // A known length stays a Content-Length through the guard.
        assert_eq!(hyper::body::Body::size_hint(r.body()).exact(), Some(2));
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_goes() {
        let conns = Connections { started: Instant::now(), next_id: AtomicU64::new(0), open: Mutex::default() };
        let (_, a) = conns.admit(2).unwrap();
        let (_, b) = conns.admit(2).unwrap();
        a.last_active.store(10, Ordering::Relaxed);
        b.last_active.store(5, Ordering::Relaxed);
        let (_, c) = conns.admit(2).unwrap();
        assert!(b.close.is_cancelled() && !a.close.is_cancelled());
        // Busy connections are never chosen; with all busy the new one is refused.
        a.busy.store(1, Ordering::Relaxed);
        c.busy.store(1, Ordering::Relaxed);
        assert!(conns.admit(2).is_none());
        assert!(!a.close.is_cancelled() && !c.close.is_cancelled());
    }
}

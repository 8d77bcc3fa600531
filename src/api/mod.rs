//! The HTTP API (axum): status, routes, reload and Prometheus metrics.
//!
//! Reads the route table, the current lists and the metrics registry; the
//! only thing it changes is a reload request on the reload channel.
//!
//! With `[api] token` set, every request but `GET /metrics` and
//! `GET /api/v1/status` must carry `Authorization: Bearer <token>`
//! ([`auth`]); without it the answer is 401 and nothing happens. The
//! listener itself ([`serve`]) checks the Host header, caps connections
//! and requests per endpoint, and bounds how long each may take.

pub mod auth;
pub mod blocks;
pub mod serve;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::clock::rfc3339;
use crate::lists::Lists;
use crate::lists::watch::ReloadCause;
use crate::metrics::{ListLabel, Metrics};
use crate::routes::ingest::Ingest;
use crate::routes::{Route, Source};

/// What the handlers read.
pub struct ApiState {
    pub metrics: Arc<Metrics>,
    pub ingest: Arc<Ingest>,
    pub lists: Arc<ArcSwap<Lists>>,
    pub started: Instant,
    pub ready: AtomicBool,
    pub reload: mpsc::Sender<ReloadCause>,
    /// Set once the BGP speaker runs (absent without `[bgp]`).
    pub bgp: std::sync::OnceLock<Arc<crate::bgp::Speaker>>,
    /// `[api] token`: required by every request that changes something.
    pub token: Option<crate::values::Secret>,
    /// Set when `[blocking]` is configured.
    pub blocking: std::sync::OnceLock<Arc<crate::blocking::service::Blocking>>,
    /// The route store's health.
    pub store: Arc<crate::routes::store::StoreStatus>,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/api/v1/status", get(status))
        .route("/api/v1/routes", get(routes))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/neighbors", get(neighbors))
        .route("/api/v1/blocks", get(blocks::list).post(blocks::add))
        .route("/api/v1/blocks/{*key}", axum::routing::delete(blocks::remove))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token))
        .with_state(state)
}

/// `/metrics` alone, for `[api] metrics_listen`.
pub fn metrics_router(state: Arc<ApiState>) -> Router {
    Router::new().route("/metrics", get(metrics_text)).with_state(state)
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ListStatus {
    pub name: String,
    pub file: String,
    pub entries: usize,
    pub exclusions: usize,
    pub invalid_lines: usize,
    pub routes: usize,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Status {
    pub version: String,
    pub ready: bool,
    pub uptime_seconds: u64,
    pub routes: usize,
    pub lists: Vec<ListStatus>,
    pub cname_targets: usize,
    pub dnstap_connections: i64,
    /// The blocking engine and kernel filter (absent without `[blocking]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking: Option<serde_json::Value>,
    /// `{"state": "ok"|"degraded", "error": ..., "pending": N}`.
    pub store: crate::routes::store::StoreStatusJson,
    /// The route cap and what the table refused, by reason.
    pub route_limits: RouteLimitsJson,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RouteLimitsJson {
    pub max_routes: usize,
    pub max_names_per_route: usize,
    /// True while the table is at `max_routes` (new addresses are refused).
    pub full: bool,
    /// Addresses refused: `unroutable`, `neighbor`, `deny`, `max_routes`,
    /// `list_max_routes`.
    pub refused: std::collections::BTreeMap<String, u64>,
    /// Names a full route did not keep (they expired before its others).
    pub names_dropped: u64,
}

async fn status(State(st): State<Arc<ApiState>>) -> Response {
    let ready = st.ready.load(Ordering::Acquire);
    let table = st.ingest.table();
    let per_list = table.per_list();
    let lists = st.lists.load();
    let body = Status {
        version: crate::VERSION.to_string(),
        ready,
        uptime_seconds: st.started.elapsed().as_secs(),
        routes: table.len(),
        lists: lists
            .info()
            .iter()
            .map(|i| ListStatus {
                name: i.settings.name.to_string(),
                file: i.settings.file.display().to_string(),
                entries: i.entries,
                exclusions: i.exclusions,
                invalid_lines: i.invalid_lines,
                routes: per_list.iter().find(|(n, _)| *n == i.settings.name).map_or(0, |(_, c)| *c),
            })
            .collect(),
        cname_targets: st.ingest.cnames().len(),
        dnstap_connections: st.metrics.connections_open.get(),
        blocking: st.blocking.get().and_then(|b| serde_json::to_value(b.status()).ok()),
        store: st.store.json(),
        route_limits: RouteLimitsJson {
            max_routes: table.limits().max_routes,
            max_names_per_route: table.limits().max_names_per_route,
            full: table.len() >= table.limits().max_routes,
            refused: table.refused().into_iter().map(|(r, n)| (r.as_str().to_string(), n)).collect(),
            names_dropped: table.names_dropped(),
        },
    };
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

/// One attribution of a route in the API.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NameJson {
    pub domain: String,
    pub list: String,
    pub expires: String,
    pub source: String,
}

/// A route in the API: the longest-living attribution at the top level,
/// all of them under `names`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RouteJson {
    pub prefix: String,
    pub domain: String,
    pub list: String,
    pub expires: String,
    pub source: String,
    pub names: Vec<NameJson>,
    /// Names seen for the address; `names` keeps at most
    /// `max_names_per_route` of them (those that live longest).
    #[serde(default)]
    pub names_total: u32,
}

impl RouteJson {
    pub fn from_route(r: &Route) -> Option<RouteJson> {
        let p = r.primary()?;
        Some(RouteJson {
            prefix: r.prefix().to_string(),
            domain: p.domain.to_string(),
            list: p.list.to_string(),
            expires: rfc3339(p.expires),
            source: p.source.as_str().to_string(),
            names: r
                .attributions
                .iter()
                .map(|a| NameJson {
                    domain: a.domain.to_string(),
                    list: a.list.to_string(),
                    expires: rfc3339(a.expires),
                    source: a.source.as_str().to_string(),
                })
                .collect(),
            names_total: r.names_total,
        })
    }
}

/// Optional filters and paging of `GET /api/v1/routes`.
#[derive(Deserialize, Debug, Default, Clone)]
pub struct RouteFilter {
    pub list: Option<String>,
    pub domain: Option<String>,
    pub source: Option<String>,
    pub family: Option<u8>,
    /// At most this many routes (a page; all without it).
    pub limit: Option<usize>,
    /// Only routes with addresses after this one (`198.51.100.7` or
    /// `198.51.100.7/32`): the last address of the previous page.
    pub after: Option<String>,
}

/// Routes copied from the table at a time while an answer streams.
const ROUTES_CHUNK: usize = 16_384;
/// The largest `limit` of one page.
pub const MAX_ROUTES_PAGE: usize = 100_000;

impl RouteFilter {
    fn keeps(&self, r: &Route) -> bool {
        let family_ok = match self.family {
            Some(4) => matches!(r.addr, IpAddr::V4(_)),
            Some(6) => matches!(r.addr, IpAddr::V6(_)),
            _ => true,
        };
        family_ok
            && r.attributions.iter().any(|a| {
                self.list.as_deref().is_none_or(|l| &*a.list == l)
                    && self.domain.as_deref().is_none_or(|d| a.domain.eq_ignore_ascii_case(d))
                    && self.source.as_deref().is_none_or(|s| a.source == Source::parse(s))
            })
    }

    /// `after` as an address.
    fn after_addr(&self) -> Result<Option<IpAddr>, String> {
        let Some(text) = self.after.as_deref() else { return Ok(None) };
        let addr = text.split_once('/').map_or(text, |(a, _)| a);
        addr.parse().map(Some).map_err(|_| format!("after={text:?} is not an address (the last prefix of a page)"))
    }
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": message}))).into_response()
}

/// The routes as a JSON array, in address order, streamed page by page
/// from the table (never the whole table copied at once). `?limit=N`
/// makes it one page; the next starts `after` the last address.
async fn routes(
    State(st): State<Arc<ApiState>>,
    query: Result<Query<RouteFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let filter = match query {
        Ok(Query(f)) => f,
        Err(e) => return bad_request(format!("bad query: {}", e.body_text())),
    };
    let mut after = match filter.after_addr() {
        Ok(a) => a,
        Err(e) => return bad_request(e),
    };
    let mut left = match filter.limit {
        Some(0) => return bad_request("limit must be at least 1".into()),
        Some(n) => n.min(MAX_ROUTES_PAGE),
        None => usize::MAX,
    };
    let table = st.ingest.table().clone();
    let (tx, mut rx) = mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(2);
    tokio::task::spawn_blocking(move || {
        let mut first = true;
        if tx.blocking_send(Ok(bytes::Bytes::from_static(b"["))).is_err() {
            return;
        }
        loop {
            let n = left.min(ROUTES_CHUNK);
            let page = table.page(after, n, |r| filter.keeps(r));
            let mut buf = Vec::with_capacity(page.len() * 256);
            for r in &page {
                if let Some(j) = RouteJson::from_route(r) {
                    if !first {
                        buf.push(b',');
                    }
                    first = false;
                    if let Err(e) = serde_json::to_writer(&mut buf, &j) {
                        let _ = tx.blocking_send(Err(std::io::Error::other(e)));
                        return;
                    }
                }
            }
            // The client went away (or the request timed out): stop.
            if tx.blocking_send(Ok(buf.into())).is_err() {
                return;
            }
            left -= page.len();
            if page.len() < n || left == 0 {
                break;
            }
            after = page.last().map(|r| r.addr);
        }
        let _ = tx.blocking_send(Ok(bytes::Bytes::from_static(b"]")));
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    ([(header::CONTENT_TYPE, "application/json")], axum::body::Body::from_stream(stream)).into_response()
}

async fn neighbors(State(st): State<Arc<ApiState>>) -> Response {
    let list = st.bgp.get().map(|s| s.neighbors()).unwrap_or_default();
    Json(list).into_response()
}

async fn reload(State(st): State<Arc<ApiState>>) -> Response {
    match st.reload.try_send(ReloadCause::Api) {
        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {
            (StatusCode::ACCEPTED, Json(serde_json::json!({"reload": "requested"}))).into_response()
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"error": "shutting down"}))).into_response()
        }
    }
}

async fn metrics_text(State(st): State<Arc<ApiState>>) -> Response {
    let m = &st.metrics;
    let table = st.ingest.table();
    m.routes_total.set(table.len() as i64);
    m.cname_targets.set(st.ingest.cnames().len() as i64);
    m.routes.clear();
    for (list, n) in table.per_list() {
        m.routes.get_or_create(&ListLabel { list: list.to_string() }).set(n as i64);
    }
    for (reason, n) in table.refused() {
        let c = m.routes_refused.get_or_create(&crate::metrics::ReasonLabel { reason: reason.as_str().into() });
        c.inc_by(n.saturating_sub(c.get()));
    }
    m.route_names_dropped.inc_by(table.names_dropped().saturating_sub(m.route_names_dropped.get()));
    m.store_pending.set(st.store.json().pending as i64);
    let lists = st.lists.load();
    m.list_entries.clear();
    m.list_invalid_lines.clear();
    for i in lists.info() {
        let label = ListLabel { list: i.settings.name.to_string() };
        m.list_entries.get_or_create(&label).set((i.entries + i.exclusions) as i64);
        m.list_invalid_lines.get_or_create(&label).set(i.invalid_lines as i64);
    }
    if let Some(b) = st.blocking.get() {
        b.refresh_attach_metrics();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode()).into_response()
}

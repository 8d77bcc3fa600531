//! The sync endpoints on the API listener.
//!
//! * `GET /api/v1/sync/changes?since=N&limit=M` — a page of this instance's
//!   change log (token required);
//! * `POST /api/v1/sync/push` — a page from a peer (token required; body
//!   limited to `max_body`, 413 beyond);
//! * `GET /api/v1/sync/peers` — the state of every configured peer (the
//!   API token required, or the sync token when the API has none).
//!
//! The token is checked (in constant time) before the body is read. A body
//! that is not a well-formed page is a 400 with a message; entries that
//! fail validation are rejected one by one and the rest is applied.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tracing::{debug, warn};

use super::config::MAX_PAGE;

/// The smallest page byte bound an asker may set (one change with many
/// long names still fits).
const MIN_PAGE_BYTES: usize = 64 << 10;
use super::merge::{self, Via};
use super::metrics::SyncMetrics;
use super::protocol::{ErrorReply, Page, PushReply, truncate, valid_instance};
use super::{Credential, PeerSync};
use crate::values::Secret;

/// The sync routes, to merge into the API router. `api_token` is the
/// `[api] token`, which guards `/api/v1/sync/peers` when set.
pub fn router(sync: Arc<PeerSync>, api_token: Option<Secret>) -> Router {
    let authenticated = Router::new()
        .route("/api/v1/sync/changes", get(changes))
        .route("/api/v1/sync/push", post(push))
        .layer(DefaultBodyLimit::max(sync.settings.max_body))
        .route_layer(middleware::from_fn_with_state(sync.clone(), authenticate));
    let view_token = api_token.unwrap_or_else(|| sync.settings.token.clone());
    let view = Router::new()
        .route("/api/v1/sync/peers", get(peers))
        .route_layer(middleware::from_fn_with_state(Arc::new(view_token), authenticate_view));
    view.merge(authenticated).with_state(sync)
}

async fn authenticate_view(State(token): State<Arc<Secret>>, req: Request, next: Next) -> Response {
    if !token.matches(crate::api::auth::bearer(req.headers())) {
        return crate::api::auth::unauthorized();
    }
    next.run(req).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(ErrorReply { error: message.into(), cursor: None })).into_response()
}

/// Which token the request presents: every token is compared (in
/// constant time each), whichever matches.
fn credential(sync: &PeerSync, headers: &HeaderMap) -> Option<Credential> {
    let given = crate::api::auth::bearer(headers);
    let mut found = None;
    for (i, p) in sync.peers.iter().enumerate() {
        if p.settings.inbound_token.as_ref().is_some_and(|t| t.matches(given)) {
            found = Some(Credential::Peer(i));
        }
    }
    if sync.settings.token.matches(given) {
        found = found.or(Some(Credential::Shared));
    }
    found
}

async fn authenticate(State(sync): State<Arc<PeerSync>>, headers: HeaderMap, mut req: Request, next: Next) -> Response {
    let found = credential(&sync, &headers);
    if let Some(c) = found {
        req.extensions_mut().insert(c);
    }
    if found.is_none() {
        sync.metrics.reject_request("auth");
        debug!(path = %req.uri().path(), "sync request with a missing or wrong token");
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong token");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return r;
    }
    next.run(req).await
}

#[derive(Deserialize)]
struct ChangesQuery {
    since: u64,
    limit: Option<usize>,
    /// The asker's `max_body`: the page's JSON stays within it.
    max_bytes: Option<usize>,
    /// The asking instance, for metric labels only.
    instance: Option<String>,
}

async fn changes(State(sync): State<Arc<PeerSync>>, query: Result<Query<ChangesQuery>, QueryRejection>) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => {
            sync.metrics.reject_request("page");
            return error(StatusCode::BAD_REQUEST, format!("bad query: {}", e.body_text()));
        }
    };
    sync.metrics.requests.get_or_create(&SyncMetrics::endpoint("changes")).inc();
    let limit = q.limit.unwrap_or(sync.settings.page_size).clamp(1, MAX_PAGE);
    let log = sync.log.clone();
    // An asker that does not say gets pages within our own max_body.
    let max_bytes = q.max_bytes.unwrap_or(sync.settings.max_body).max(MIN_PAGE_BYTES);
    let page = match tokio::task::spawn_blocking(move || log.read_encoded(q.since, limit, max_bytes)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if page.snapshot {
        sync.metrics.snapshots_served.inc();
    }
    let peer = match q.instance {
        Some(i) if valid_instance(&i) => sync.peer_name_of(&i),
        _ => "unknown".into(),
    };
    sync.metrics.sent.get_or_create(&SyncMetrics::peer_via(&peer, "pull")).inc_by(page.changes as u64);
    let body = page.body;
    sync.metrics.server_bytes.get_or_create(&SyncMetrics::endpoint("changes")).inc_by(body.len() as u64);
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn push(
    State(sync): State<Arc<PeerSync>>,
    credential: Option<axum::Extension<Credential>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let credential = credential.map_or(Credential::Shared, |c| c.0);
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            sync.metrics.reject_request("too_large");
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than max_body ({} bytes)", sync.settings.max_body),
            );
        }
        Err(e) => {
            sync.metrics.reject_request("json");
            return error(e.status(), e.body_text());
        }
    };
    sync.metrics.requests.get_or_create(&SyncMetrics::endpoint("push")).inc();
    sync.metrics.server_bytes.get_or_create(&SyncMetrics::endpoint("push")).inc_by(body.len() as u64);
    if !sync.ready.load(Ordering::Acquire) {
        sync.metrics.reject_request("not_ready");
        return error(StatusCode::SERVICE_UNAVAILABLE, "starting: the route table is not loaded yet");
    }
    let page: Page = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            sync.metrics.reject_request("json");
            return error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}"));
        }
    };
    if let Err(e) = merge::check(&page) {
        sync.metrics.reject_request("page");
        return error(StatusCode::BAD_REQUEST, format!("invalid page: {e}"));
    }
    // The credential speaks for the configured peers only: another origin
    // is refused before the merger sees it (no cursor, no origin state).
    if let Err(why) = sync.may_speak_for(credential, &page.instance) {
        sync.metrics.reject_request("instance");
        sync.wake_unidentified_pulls();
        warn!(instance = %truncate(&page.instance), why, "push for an instance its token does not speak for refused");
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "instance {:?} {why}: set [[sync.peer]] instance, or let this instance pull from it first",
                truncate(&page.instance)
            ),
        );
    }
    if let Err(e) = merge::check_push(&page) {
        sync.metrics.reject_request("page");
        return error(StatusCode::BAD_REQUEST, format!("invalid page: {e}"));
    }
    let peer = sync.peer_name_of(&page.instance);
    let s = sync.clone();
    let label = peer.clone();
    let result = tokio::task::spawn_blocking(move || {
        let applied = s.merger.apply(&page, Via::Push, &label, s.id());
        (applied, page)
    })
    .await;
    let (applied, page) = match result {
        Ok(x) => x,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if applied.gap {
        sync.metrics.reject_request("gap");
        sync.wake_pulls_for(&page.instance);
        debug!(peer, since = page.since, cursor = applied.cursor, "push after a gap; pulling instead");
        let body = ErrorReply {
            error: format!(
                "gap: this push continues from {}, the cursor here is {}; pulling",
                page.since, applied.cursor
            ),
            cursor: Some(applied.cursor),
        };
        return (StatusCode::CONFLICT, Json(body)).into_response();
    }
    if applied.rejected > 0 {
        let first = applied.errors.first().map(|e| format!("{}: {}", e.reason, e.detail)).unwrap_or_default();
        warn!(
            peer,
            instance = %truncate(&page.instance),
            rejected = applied.rejected,
            accepted = applied.accepted,
            first = %first,
            "pushed entries rejected"
        );
    }
    Json(PushReply {
        instance: sync.id().to_string(),
        cursor: applied.cursor,
        accepted: applied.accepted,
        rejected: applied.rejected,
        duplicates: applied.duplicates,
        errors: applied.errors,
    })
    .into_response()
}

async fn peers(State(sync): State<Arc<PeerSync>>) -> Response {
    Json(sync.view()).into_response()
}

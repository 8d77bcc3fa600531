//! Bearer tokens on the API: with `[api] token` set, every request but
//! `GET /metrics` and `GET /api/v1/status` (what monitoring reads) needs
//! `Authorization: Bearer <token>`, compared in constant time.
//!
//! The check runs before the handler, so a refused request reads no body
//! and changes nothing. The sync endpoints have their own token
//! ([`crate::sync::server`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::values::Secret;

/// The token a request presents as `Authorization: Bearer <token>` (empty
/// when there is none).
pub fn bearer(headers: &HeaderMap) -> &[u8] {
    headers.get(header::AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")).unwrap_or_default()
}

/// Whether the request may go on: no token configured, or the right one.
pub fn authorized(token: Option<&Secret>, headers: &HeaderMap) -> bool {
    token.is_none_or(|t| t.matches(bearer(headers)))
}

/// The 401 answer, with the challenge RFC 6750 asks for.
pub fn unauthorized() -> Response {
    let mut r =
        (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"error": "missing or wrong token"}))).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    r
}

/// Whether a request may go without the token: a read of `/metrics` or
/// `/api/v1/status`.
pub fn open(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && (path == "/metrics" || path == "/api/v1/status")
}

/// Middleware: every request but [`open`] ones needs the token when one is set.
pub async fn require_token(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    if !open(req.method(), req.uri().path()) && !authorized(st.token.as_ref(), req.headers()) {
        tracing::debug!(method = %req.method(), path = %req.uri().path(), "API request with a missing or wrong token");
        return unauthorized();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_authorized() {
        let mut h = HeaderMap::new();
        let t = Secret::new("0123456789abcdef");
        assert!(authorized(None, &h));
        assert!(!authorized(Some(&t), &h));
        h.insert(header::AUTHORIZATION, "Bearer 0123456789abcdef".parse().unwrap());
        assert_eq!(bearer(&h), b"0123456789abcdef");
        assert!(authorized(Some(&t), &h));
        h.insert(header::AUTHORIZATION, "Basic 0123456789abcdef".parse().unwrap());
        assert!(!authorized(Some(&t), &h));
    }

    #[test]
    fn only_monitoring_reads_are_open() {
        assert!(open(&Method::GET, "/metrics"));
        assert!(open(&Method::HEAD, "/api/v1/status"));
        assert!(!open(&Method::POST, "/api/v1/status"));
        for path in ["/api/v1/routes", "/api/v1/neighbors", "/api/v1/blocks", "/api/v1/sync/peers", "/metrics/"] {
            assert!(!open(&Method::GET, path), "{path}");
        }
    }
}

//! Bearer tokens on the API: `[api] token` guards every request that
//! changes something.
//!
//! Safe methods (GET, HEAD) pass; any other needs `Authorization: Bearer
//! <token>`, compared in constant time. The check runs before the handler,
//! so a refused request reads no body and changes nothing.

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

/// Middleware: requests other than GET and HEAD need the token when one is set.
pub async fn require_token_for_writes(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let safe = req.method() == Method::GET || req.method() == Method::HEAD;
    if !safe && !authorized(st.token.as_ref(), req.headers()) {
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
}

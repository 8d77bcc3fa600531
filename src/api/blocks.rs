//! `/api/v1/blocks`: the block set, manual blocks.
//!
//! `GET` lists every block and warning with the kernel's hit counters;
//! `POST` adds a manual block (201 with the block; 400 naming what is
//! wrong with the request); `DELETE /api/v1/blocks/{key}` (key
//! percent-encoded, `?qtype=` to pick one qtype) removes the blocks of a
//! key, their kernel entries gone before the 204. Writes need the API
//! token when one is set (the router's middleware checks it first).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ApiState;
use crate::blocking::blocks::ManualRequest;

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({"error": message.into()}))).into_response()
}

fn not_configured() -> Response {
    error(StatusCode::NOT_FOUND, "blocking is not configured (no [blocking] section)")
}

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024;

pub async fn list(State(st): State<Arc<ApiState>>) -> Response {
    match st.blocking.get() {
        Some(b) => Json(b.list()).into_response(),
        None => Json(Vec::<serde_json::Value>::new()).into_response(),
    }
}

pub async fn add(State(st): State<Arc<ApiState>>, body: Bytes) -> Response {
    let Some(b) = st.blocking.get() else { return not_configured() };
    if body.len() > MAX_BODY {
        return error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {MAX_BODY} bytes"));
    }
    let req: ManualRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid block request: {e}; expected {{\"key\": \"198.51.100.7\" | \"198.51.100.0/24\" | \
                     \"qname:NAME\" | \"suffix:NAME\", \"qtype\": \"ANY\", \"duration\": \"10m\", \"reason\": \"...\", \
                     \"blackhole\": false}}"
                ),
            );
        }
    };
    match b.add(&req) {
        Ok(json) => (StatusCode::CREATED, Json(json)).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize, Debug, Default)]
pub struct DeleteQuery {
    pub qtype: Option<String>,
}

pub async fn remove(
    State(st): State<Arc<ApiState>>,
    Path(key): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Response {
    let Some(b) = st.blocking.get() else { return not_configured() };
    match b.remove(&key, q.qtype.as_deref()) {
        Ok(0) => error(StatusCode::NOT_FOUND, format!("no block with key {key:?}")),
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

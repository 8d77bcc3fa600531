//! `dnsbgpd ctl`: talks to a running daemon's HTTP API.
//!
//! [`Command`] is what the operator asked for, [`client`] sends it (HTTP
//! or HTTPS, with the API token and a Host header naming the API address)
//! and [`render`] turns the JSON answer into a table, or passes it through
//! pretty-printed with `--json`. `main.rs` only maps flags to a
//! [`Command`]; tests use the same [`Client`].

pub mod client;
pub mod render;

use axum::http::{Method, StatusCode};
use serde_json::Value;

pub use client::{Answer, Client, ClientOptions, CtlError, Endpoint};

/// One `ctl` action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status,
    Routes { list: Option<String>, domain: Option<String>, family: Option<u8> },
    Neighbors,
    SyncPeers,
    Reload,
    Blocks,
    Block { key: String, qtype: Option<String>, duration: Option<String>, reason: Option<String>, blackhole: bool },
    Unblock { key: String },
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Command {
    /// Method, path (with query) and body of the request.
    pub fn request(&self) -> Result<(Method, String, Option<Vec<u8>>), CtlError> {
        Ok(match self {
            Command::Status => (Method::GET, "/api/v1/status".into(), None),
            Command::Routes { list, domain, family } => {
                let mut query = Vec::new();
                if let Some(l) = list {
                    query.push(format!("list={}", percent_encode(l)));
                }
                if let Some(d) = domain {
                    query.push(format!("domain={}", percent_encode(d)));
                }
                if let Some(f) = family {
                    if *f != 4 && *f != 6 {
                        return Err(CtlError::Usage(format!("--family {f}: expected 4 or 6")));
                    }
                    query.push(format!("family={f}"));
                }
                let q = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
                (Method::GET, format!("/api/v1/routes{q}"), None)
            }
            Command::Neighbors => (Method::GET, "/api/v1/neighbors".into(), None),
            Command::SyncPeers => (Method::GET, "/api/v1/sync/peers".into(), None),
            Command::Reload => (Method::POST, "/api/v1/reload".into(), None),
            Command::Blocks => (Method::GET, "/api/v1/blocks".into(), None),
            Command::Block { key, qtype, duration, reason, blackhole } => {
                if key.is_empty() {
                    return Err(CtlError::Usage("block: the key is empty".into()));
                }
                if let Some(d) = duration {
                    crate::values::parse_duration(d).map_err(|e| CtlError::Usage(format!("--duration {d:?}: {e}")))?;
                }
                let mut body = serde_json::Map::new();
                body.insert("key".into(), key.clone().into());
                if let Some(q) = qtype {
                    body.insert("qtype".into(), q.clone().into());
                }
                if let Some(d) = duration {
                    body.insert("duration".into(), d.clone().into());
                }
                if let Some(r) = reason {
                    body.insert("reason".into(), r.clone().into());
                }
                if *blackhole {
                    body.insert("blackhole".into(), true.into());
                }
                let body = serde_json::to_vec(&Value::Object(body)).map_err(|e| CtlError::Usage(e.to_string()))?;
                (Method::POST, "/api/v1/blocks".into(), Some(body))
            }
            Command::Unblock { key } => {
                if key.is_empty() {
                    return Err(CtlError::Usage("unblock: the key is empty".into()));
                }
                (Method::DELETE, format!("/api/v1/blocks/{}", percent_encode(key)), None)
            }
        })
    }
}

/// Runs `command` against the daemon and returns what to print.
pub async fn run(client: &Client, command: &Command, json: bool) -> Result<String, CtlError> {
    let (method, path, body) = command.request()?;
    let url = client.endpoint.url(&path);
    let answer = client.send(method.clone(), &path, body).await?;
    let unexpected = |reason: String| CtlError::Unexpected { method: method.clone(), url: url.clone(), reason };

    if !answer.status.is_success() {
        return Err(CtlError::Status {
            method: method.clone(),
            url: url.clone(),
            status: answer.status,
            message: error_message(command, answer.status, &answer.body),
        });
    }
    if answer.status == StatusCode::NO_CONTENT || answer.body.is_empty() {
        return Ok(match (command, json) {
            (_, true) => "{}\n".into(),
            (Command::Unblock { key }, false) => format!("unblocked {}\n", render::clean(key)),
            (_, false) => "done\n".into(),
        });
    }
    let value: Value = serde_json::from_slice(&answer.body).map_err(|e| {
        unexpected(format!("not JSON ({e}): {}", render::clean(&String::from_utf8_lossy(&answer.body))))
    })?;
    if json {
        let mut text = serde_json::to_string_pretty(&value).map_err(|e| unexpected(e.to_string()))?;
        text.push('\n');
        return Ok(text);
    }
    match command {
        Command::Status => render::status(&value),
        Command::Routes { .. } => render::routes(&value),
        Command::Neighbors => render::neighbors(&value),
        Command::SyncPeers => render::sync_peers(&value),
        Command::Blocks => render::blocks(&value),
        Command::Reload => Ok("reload requested\n".into()),
        Command::Block { key, .. } => Ok(match value.get("expires").and_then(Value::as_str) {
            Some(until) => format!("blocked {} until {}\n", render::clean(key), render::clean(until)),
            None => format!("blocked {}\n", render::clean(key)),
        }),
        Command::Unblock { key } => Ok(format!("unblocked {}\n", render::clean(key))),
    }
    .map_err(unexpected)
}

/// `: <reason>` for an error answer: the API's `{"error": ...}` when it
/// has one, a hint for the usual cases, else the start of the body.
fn error_message(command: &Command, status: StatusCode, body: &[u8]) -> String {
    let from_body = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(render::clean))
        .or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            (!text.is_empty()).then(|| render::clean(text))
        });
    let hint = match (status, command) {
        (StatusCode::UNAUTHORIZED, _) => Some("give the API token with --token, --token-file or --config"),
        (StatusCode::NOT_FOUND, Command::SyncPeers) => Some("peer sync is not configured on this daemon"),
        (StatusCode::NOT_FOUND, Command::Blocks | Command::Block { .. }) => {
            Some("this daemon has no blocks API (an older version?)")
        }
        (StatusCode::NOT_FOUND, Command::Unblock { .. }) => Some("no such block"),
        _ => None,
    };
    match (from_body, hint) {
        (Some(m), Some(h)) => format!(": {m} ({h})"),
        (Some(m), None) => format!(": {m}"),
        (None, Some(h)) => format!(": {h}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let r = Command::Routes { list: Some("v p&n".into()), domain: Some("bücher.test".into()), family: Some(6) };
        assert_eq!(r.request().unwrap().1, "/api/v1/routes?list=v%20p%26n&domain=b%C3%BCcher.test&family=6");
        assert!(Command::Routes { list: None, domain: None, family: Some(5) }.request().is_err());
        let (m, p, _) = Command::Unblock { key: "198.51.100.0/24".into() }.request().unwrap();
        assert_eq!((m, p.as_str()), (Method::DELETE, "/api/v1/blocks/198.51.100.0%2F24"));
        let (_, p, _) = Command::Unblock { key: "qname:example.com".into() }.request().unwrap();
        assert_eq!(p, "/api/v1/blocks/qname%3Aexample.com");
        let b = Command::Block {
            key: "198.51.100.7".into(),
            qtype: Some("ANY".into()),
            duration: Some("10m".into()),
            reason: None,
            blackhole: true,
        };
        let (m, p, body) = b.request().unwrap();
        assert_eq!((m, p.as_str()), (Method::POST, "/api/v1/blocks"));
        let v: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(v, serde_json::json!({"key": "198.51.100.7", "qtype": "ANY", "duration": "10m", "blackhole": true}));
        let bad = Command::Block {
            key: "x".into(),
            qtype: None,
            duration: Some("10".into()),
            reason: None,
            blackhole: false,
        };
        assert!(matches!(bad.request(), Err(CtlError::Usage(_))));
    }

    #[test]
    fn error_messages() {
        let m = error_message(&Command::Reload, StatusCode::UNAUTHORIZED, br#"{"error":"missing or wrong token"}"#);
        assert_eq!(m, ": missing or wrong token (give the API token with --token, --token-file or --config)");
        assert_eq!(
            error_message(&Command::SyncPeers, StatusCode::NOT_FOUND, b""),
            ": peer sync is not configured on this daemon"
        );
        assert_eq!(error_message(&Command::Status, StatusCode::BAD_GATEWAY, b"\x1b[31mboom\n"), ": ?[31mboom");
    }
}

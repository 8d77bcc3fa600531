//! Human output of `dnsbgpd ctl`: aligned tables in the manner of `birdc
//! show protocols` and `gobgp neighbor`.
//!
//! The renderers read `serde_json::Value`s, not the daemon's own types, so
//! a daemon of another version (fields added or missing) still shows what
//! it has: an absent field prints as `-`. Every string from the daemon is
//! stripped of control characters before it reaches the terminal.

use serde_json::Value;

/// A text table: a header row and data rows, columns padded to the widest
/// cell (the last column is not padded).
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate().take(n) {
                if i + 1 == n {
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    line.extend(std::iter::repeat_n(' ', widths[i] - c.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Replaces control characters (terminal escapes, newlines) and bounds the
/// length of one cell.
pub fn clean(s: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = s.chars().take(MAX).map(|c| if c.is_control() { '?' } else { c }).collect();
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// A field as a cell: strings as they are, numbers and booleans printed,
/// null or absent as `-`, anything else as compact JSON.
pub fn cell(v: &Value, key: &str) -> String {
    text(v.get(key).unwrap_or(&Value::Null))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => clean(s),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(n) => n.to_string(),
        other => clean(&other.to_string()),
    }
}

/// `3d4h`, `1h02m`, `5m07s`, `42s`.
pub fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// An RFC 3339 timestamp without its fraction of a second.
fn time(v: &Value, key: &str) -> String {
    match v.get(key).and_then(Value::as_str) {
        Some(t) => {
            let t = clean(t);
            match (t.find('.'), t.ends_with('Z')) {
                (Some(dot), true) => format!("{}Z", &t[..dot]),
                _ => t,
            }
        }
        None => cell(v, key),
    }
}

fn array<'a>(v: &'a Value, what: &str) -> Result<&'a Vec<Value>, String> {
    v.as_array().ok_or_else(|| format!("{what} is not a JSON array"))
}

/// `GET /api/v1/status`.
pub fn status(v: &Value) -> Result<String, String> {
    if !v.is_object() {
        return Err("status is not a JSON object".into());
    }
    let mut out = format!(
        "dnsbgpd {}, {}, up {}\n",
        cell(v, "version"),
        if v.get("ready").and_then(Value::as_bool) == Some(true) { "ready" } else { "not ready" },
        v.get("uptime_seconds").and_then(Value::as_u64).map_or_else(|| "-".into(), duration),
    );
    out.push_str(&format!(
        "routes {}, cname targets {}, dnstap connections {}\n",
        cell(v, "routes"),
        cell(v, "cname_targets"),
        cell(v, "dnstap_connections")
    ));
    if let Some(lists) = v.get("lists").and_then(Value::as_array)
        && !lists.is_empty()
    {
        let mut t = Table::new(&["LIST", "ENTRIES", "EXCLUSIONS", "INVALID", "ROUTES", "FILE"]);
        for l in lists {
            t.row(vec![
                cell(l, "name"),
                cell(l, "entries"),
                cell(l, "exclusions"),
                cell(l, "invalid_lines"),
                cell(l, "routes"),
                cell(l, "file"),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    // Sections other parts add (blocking, sync, ...): one line per field.
    const SHOWN: &[&str] =
        &["version", "ready", "uptime_seconds", "routes", "cname_targets", "dnstap_connections", "lists"];
    if let Some(map) = v.as_object() {
        for (k, val) in map.iter().filter(|(k, _)| !SHOWN.contains(&k.as_str())) {
            match val {
                Value::Object(fields) => {
                    out.push_str(&format!("\n{}:\n", clean(k)));
                    for (fk, fv) in fields {
                        out.push_str(&format!("  {}: {}\n", clean(fk), text(fv)));
                    }
                }
                other => out.push_str(&format!("{}: {}\n", clean(k), text(other))),
            }
        }
    }
    Ok(out)
}

/// `GET /api/v1/routes`.
pub fn routes(v: &Value) -> Result<String, String> {
    let routes = array(v, "routes")?;
    let mut t = Table::new(&["PREFIX", "DOMAIN", "LIST", "SOURCE", "EXPIRES", "NAMES"]);
    for r in routes {
        // `names_total` counts every name, also those past max_names_per_route.
        let names = r
            .get("names_total")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| r.get("names").and_then(Value::as_array).map_or(0, |n| n.len() as u64));
        t.row(vec![
            cell(r, "prefix"),
            cell(r, "domain"),
            cell(r, "list"),
            cell(r, "source"),
            time(r, "expires"),
            names.to_string(),
        ]);
    }
    Ok(format!("{}{} routes\n", t.render(), routes.len()))
}

/// `GET /api/v1/neighbors`.
pub fn neighbors(v: &Value) -> Result<String, String> {
    let list = array(v, "neighbors")?;
    if list.is_empty() {
        return Ok("no BGP neighbors (no [bgp] section, or none configured)\n".into());
    }
    let mut t = Table::new(&["NAME", "ADDRESS", "AS", "STATE", "SINCE", "UPTIME", "PREFIXES", "INFO"]);
    for n in list {
        let address = match n.get("port").and_then(Value::as_u64) {
            Some(p) if n["address"].as_str().is_some_and(|a| a.contains(':')) => {
                format!("[{}]:{p}", cell(n, "address"))
            }
            Some(p) => format!("{}:{p}", cell(n, "address")),
            None => cell(n, "address"),
        };
        let prefixes = n
            .get("prefixes_advertised")
            .map_or_else(|| "-".into(), |p| format!("{}/{}", cell(p, "ipv4"), cell(p, "ipv6")));
        let info = match n.get("last_error") {
            Some(e) if e.is_object() => {
                let code = match (e.get("code").and_then(Value::as_u64), e.get("subcode").and_then(Value::as_u64)) {
                    (Some(c), Some(s)) => format!(" ({c}/{s})"),
                    _ => String::new(),
                };
                format!("{} {}{code}", cell(e, "direction"), cell(e, "message"))
            }
            _ => String::new(),
        };
        t.row(vec![
            cell(n, "name"),
            address,
            cell(n, "remote_as"),
            cell(n, "state"),
            time(n, "state_since"),
            n.get("uptime_seconds").and_then(Value::as_u64).map_or_else(|| "-".into(), duration),
            prefixes,
            info,
        ]);
    }
    Ok(t.render())
}

/// `GET /api/v1/sync/peers`.
pub fn sync_peers(v: &Value) -> Result<String, String> {
    if !v.is_object() {
        return Err("sync peers is not a JSON object".into());
    }
    let mut out = format!(
        "instance {}, head {}, horizon {}, {} changes in the log\n",
        cell(v, "instance"),
        cell(v, "head"),
        cell(v, "horizon"),
        cell(v, "log_changes")
    );
    let peers = v.get("peers").map(|p| array(p, "peers")).transpose()?.map_or(&[][..], |p| p.as_slice());
    if peers.is_empty() {
        out.push_str("no peers\n");
        return Ok(out);
    }
    let mut t = Table::new(&["NAME", "URL", "STATE", "INSTANCE", "LAG", "PUSH QUEUE", "LAST SUCCESS", "LAST ERROR"]);
    for p in peers {
        t.row(vec![
            cell(p, "name"),
            cell(p, "url"),
            cell(p, "state"),
            cell(p, "instance"),
            cell(p, "lag"),
            cell(p, "push_queue"),
            time(p, "last_success"),
            cell(p, "last_error"),
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
    Ok(out)
}

/// `GET /api/v1/blocks`.
pub fn blocks(v: &Value) -> Result<String, String> {
    let list = array(v, "blocks")?;
    let mut t = Table::new(&["KEY", "KIND", "QTYPE", "ACTION", "RULE", "HITS", "EXPIRES", "REASON"]);
    for b in list {
        let action = match b.get("warning").and_then(Value::as_bool) {
            Some(true) => format!("{} (warning)", cell(b, "action")),
            _ => cell(b, "action"),
        };
        t.row(vec![
            cell(b, "key"),
            cell(b, "kind"),
            cell(b, "qtype"),
            action,
            cell(b, "rule"),
            cell(b, "hits"),
            time(b, "expires"),
            cell(b, "reason"),
        ]);
    }
    Ok(format!("{}{} blocks\n", t.render(), list.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_absent_fields_print_dashes() {
        let v = json!([
            {"prefix": "198.51.100.7/32", "domain": "www.listed.test", "list": "vpn", "source": "dns",
             "expires": "2026-11-21T16:05:12.345Z", "names": [{}, {}]},
            {"prefix": "2001:db8::1/128", "list": "scrubbing"}
        ]);
        let out = routes(&v).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "PREFIX           DOMAIN           LIST       SOURCE  EXPIRES               NAMES");
        assert_eq!(lines[1], "198.51.100.7/32  www.listed.test  vpn        dns     2026-11-21T16:05:12Z  2");
        assert_eq!(lines[2], "2001:db8::1/128  -                scrubbing  -       -                     0");
        assert_eq!(lines[3], "2 routes");
    }

    #[test]
    fn hostile_strings_cannot_reach_the_terminal() {
        let v = json!([{"key": "a\u{1b}[2Jb\nc", "reason": "x".repeat(500)}]);
        let out = blocks(&v).unwrap();
        assert!(!out.contains('\u{1b}') && out.lines().count() == 3, "{out}");
        assert!(out.contains("a?[2Jb?c") && out.contains('…'), "{out}");
    }

    #[test]
    fn wrong_shapes_are_errors_not_panics() {
        for v in [json!({}), json!("x"), json!(null), json!(3)] {
            assert!(routes(&v).is_err() && neighbors(&v).is_err() && blocks(&v).is_err());
        }
        assert!(status(&json!([])).is_err());
        assert!(sync_peers(&json!({"peers": 3})).is_err());
        // Odd values inside the right shape still render.
        assert!(routes(&json!([1, "x", null, {"prefix": {"a": 1}}])).is_ok());
        assert!(neighbors(&json!([{"port": "x", "last_error": 3, "prefixes_advertised": 1}])).is_ok());
    }

    #[test]
    fn status_shows_sections_it_does_not_know() {
        let v = json!({"version": "1.2.3", "ready": true, "uptime_seconds": 3725, "routes": 5,
            "cname_targets": 1, "dnstap_connections": 2,
            "lists": [{"name": "vpn", "file": "/etc/dnsbgpd/vpn.txt", "entries": 3, "exclusions": 0,
                       "invalid_lines": 1, "routes": 5}],
            "blocking": {"blocks": 2, "kernel": "attached"}});
        let out = status(&v).unwrap();
        assert!(out.starts_with("dnsbgpd 1.2.3, ready, up 1h02m\nroutes 5, cname targets 1, dnstap connections 2\n"));
        assert!(out.contains("vpn   3        0           1        5       /etc/dnsbgpd/vpn.txt"), "{out}");
        assert!(out.contains("blocking:\n  blocks: 2\n  kernel: attached\n"), "{out}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(307), "5m07s");
        assert_eq!(duration(3725), "1h02m");
        assert_eq!(duration(3 * 86_400 + 4 * 3600 + 5), "3d4h");
    }
}

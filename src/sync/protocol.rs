//! The sync wire format: JSON bodies of `/api/v1/sync/changes` and
//! `/api/v1/sync/push` (see `docs/sync.md` for examples).
//!
//! A [`Page`] is the unit both ways: the answer to a pull and the body of a
//! push. Each [`Change`] is the origin's complete current state for one
//! address: the names the origin's own resolver vouches for, each with an
//! absolute expiry, or none (the origin withdrew the address). Fields the
//! receiver must judge one by one (address text, names) stay loosely typed
//! here so that one bad entry is rejected alone instead of failing the
//! whole body.

use serde::{Deserialize, Serialize};

/// A batch of changes of one instance, in sequence order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The instance whose change log this is (the sender).
    pub instance: String,
    /// The cursor this page continues from: it holds changes with
    /// `since < seq <= next`. `0` with `snapshot` means: from the start.
    pub since: u64,
    /// The cursor to ask for next (`since` of the following page).
    pub next: u64,
    /// The newest sequence number the sender had when it built the page.
    #[serde(default)]
    pub head: u64,
    /// More changes follow right away (ask again with `since = next`).
    #[serde(default)]
    pub more: bool,
    /// This page starts a full snapshot: the asked cursor was 0 or older
    /// than what the log still covers. Once the last page (`more: false`)
    /// is in, whatever the receiver holds from this origin that the
    /// snapshot did not mention is gone.
    #[serde(default)]
    pub snapshot: bool,
    pub changes: Vec<Change>,
}

/// The current state of one address at its origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The origin's sequence number of this change.
    pub seq: u64,
    /// `198.51.100.7` or `2001:db8::7`.
    pub address: String,
    /// The instance whose resolver saw the answers (an instance only
    /// reports its own, so this equals the page's `instance`).
    pub origin: String,
    /// Every name the origin attributes the address to now; empty when
    /// the origin no longer routes it.
    #[serde(default)]
    pub names: Vec<Name>,
}

/// One listed name an address was resolved from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Name {
    pub domain: String,
    /// The list that claims `domain` at the origin; the receiver maps it
    /// to its own list of the same name.
    pub list: String,
    /// Unix time in milliseconds until which the origin keeps the route.
    pub expires: u64,
}

/// The answer to a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushReply {
    /// The receiver's instance id.
    pub instance: String,
    /// The receiver's cursor for the sender after this push.
    pub cursor: u64,
    /// Changes applied (including those only partly accepted).
    pub accepted: usize,
    /// Entries rejected (an address, or one name of an address).
    pub rejected: usize,
    /// Changes already seen (sequence at or below the cursor).
    pub duplicates: usize,
    /// The first rejections, for the sender's log.
    #[serde(default)]
    pub errors: Vec<Rejection>,
}

/// Why an entry was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub seq: u64,
    pub reason: String,
    pub detail: String,
}

/// The body of every error answer (400, 401, 409, 413, 503).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
    /// With 409 (a gap before this push): the receiver's cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
}

/// Checks the structure of a page from a peer: sequence numbers in order
/// and inside `(since, next]`, a sane instance id, a bounded size.
pub fn check_page(page: &Page, max_changes: usize) -> Result<(), String> {
    if !valid_instance(&page.instance) {
        return Err(format!("invalid instance id {:?}", truncate(&page.instance)));
    }
    if page.changes.len() > max_changes {
        return Err(format!("{} changes in one page; at most {max_changes}", page.changes.len()));
    }
    if page.next < page.since {
        return Err(format!("next ({}) is before since ({})", page.next, page.since));
    }
    let mut last = page.since;
    for c in &page.changes {
        if c.seq <= last || c.seq > page.next {
            return Err(format!(
                "change seq {} out of order (must be above {last} and at most next = {})",
                c.seq, page.next
            ));
        }
        last = c.seq;
    }
    Ok(())
}

/// Instance ids: 1-64 letters, digits, '.', '_' or '-'; never `dns`, which
/// names local answers in the route table.
pub fn valid_instance(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id != "dns"
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// A peer-supplied string cut short enough for a log line or a reply.
pub fn truncate(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_string();
    }
    let mut end = 80;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(since: u64, next: u64, seqs: &[u64]) -> Page {
        Page {
            instance: "a-1".into(),
            since,
            next,
            head: next,
            more: false,
            snapshot: false,
            changes: seqs
                .iter()
                .map(|s| Change { seq: *s, address: "198.51.100.1".into(), origin: "a-1".into(), names: vec![] })
                .collect(),
        }
    }

    #[test]
    fn json_shape() {
        let text = r#"{"instance":"a-1","since":0,"next":2,"head":2,"more":false,"snapshot":true,
            "changes":[{"seq":2,"address":"198.51.100.7","origin":"a-1",
            "names":[{"domain":"www.listed.test","list":"vpn","expires":1763741112345}]}]}"#;
        let p: Page = serde_json::from_str(text).unwrap();
        assert!(p.snapshot);
        assert_eq!(p.changes[0].names[0].expires, 1_763_741_112_345);
        let back: Page = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        // Optional fields may be left out.
        let p: Page = serde_json::from_str(r#"{"instance":"a","since":3,"next":3,"changes":[]}"#).unwrap();
        assert!(!p.more && !p.snapshot && p.head == 0);
    }

    #[test]
    fn page_structure_is_checked() {
        assert!(check_page(&page(0, 5, &[1, 3, 5]), 10).is_ok());
        assert!(check_page(&page(2, 5, &[2]), 10).is_err(), "seq at since");
        assert!(check_page(&page(0, 5, &[3, 1]), 10).is_err(), "out of order");
        assert!(check_page(&page(0, 5, &[6]), 10).is_err(), "beyond next");
        assert!(check_page(&page(5, 4, &[]), 10).is_err(), "next before since");
        assert!(check_page(&page(0, 5, &[1, 2, 3]), 2).is_err(), "too many");
        let mut p = page(0, 0, &[]);
        p.instance = "dns".into();
        assert!(check_page(&p, 10).is_err());
        p.instance = "a b".into();
        assert!(check_page(&p, 10).is_err());
    }
}

//! The change log: this instance's own routes as a numbered sequence of
//! changes, kept in the route store's sled database.
//!
//! Trees:
//! * `sync_changes`: big-endian sequence number → the state of one address
//!   (its own names and expiries, or none) and when it was recorded, in a
//!   compact binary record;
//! * `sync_meta`: this instance's id, the head sequence number, the
//!   compaction horizon, per-origin cursors and the instance id last seen
//!   at each peer url.
//!
//! The index (address → sequence number of its latest change and a
//! fingerprint of that state) lives in memory, rebuilt from the changes at
//! start: a second sled tree keyed by address cost several times more
//! memory and time than the map (measured, BENCHMARKS.md).
//!
//! Compaction is continuous: recording a change for an address deletes its
//! previous one, so the log holds at most one change per address ever
//! routed, and reading from any cursor yields each changed address once, in
//! its latest state. Withdrawals (changes without names) are kept for
//! [`tombstone_retention`] and then purged; a cursor older than the newest
//! purged one (the horizon) is answered with a snapshot from the start,
//! flagged `snapshot: true`, so the client knows to drop what the snapshot
//! does not mention.
//!
//! A sequence number becomes visible (the published head) only once its
//! change is flushed to disk: a number a peer has seen is never reused for
//! something else after a crash.

use std::hash::Hasher;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet, FxHasher};
use smallvec::SmallVec;
use tokio::sync::watch;
use tracing::warn;

use super::protocol::Page;
use crate::routes::UnixMillis;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("sync change log: {0}")]
    Db(#[from] sled::Error),
    #[error("sync change log: encoding a page: {0}")]
    Encode(#[from] serde_json::Error),
}

/// How long withdrawals stay in the log: long enough that any copy a peer
/// could still hold has expired on its own (`max_ttl`), plus a margin.
pub fn tombstone_retention(max_ttl: Duration) -> Duration {
    max_ttl + Duration::from_secs(600)
}

/// One name of an address's state: (domain, list, expires).
pub type NameState = (Arc<str>, Arc<str>, UnixMillis);

/// Changes per sled batch: sled 0.34's memory grows with the size of a
/// batch far beyond its page cache setting (BENCHMARKS.md: ~50 MiB per
/// million records in batches of 100-500, gigabytes at 2 000 and more).
/// A `record` call flushes once, after all its batches.
const WRITE_BATCH: usize = 256;

/// Names one stored change keeps: the largest `max_names_per_route` (and
/// what a receiver accepts, `validate::MAX_NAMES`).
pub const MAX_STORED_NAMES: usize = 1024;

/// A change as stored: version (1 or 2), recorded-at (u64), address (4 or
/// 16 bytes after a length byte), name count (one byte in version 1, two
/// in version 2), then per name expires (u64), list and domain (each a
/// length byte and bytes). Big-endian. Version 2 is written.
struct Stored {
    addr: IpAddr,
    names: Vec<(String, String, UnixMillis)>,
    at: UnixMillis,
}

impl Stored {
    fn encode(addr: IpAddr, names: &[NameState], at: UnixMillis) -> Vec<u8> {
        let mut v = Vec::with_capacity(32 + names.len() * 40);
        v.push(2);
        v.extend_from_slice(&at.to_be_bytes());
        match addr {
            IpAddr::V4(a) => {
                v.push(4);
                v.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                v.push(16);
                v.extend_from_slice(&a.octets());
            }
        }
        let names = &names[..names.len().min(MAX_STORED_NAMES)];
        v.extend_from_slice(&(names.len() as u16).to_be_bytes());
        for (d, l, e) in names {
            v.extend_from_slice(&e.to_be_bytes());
            for s in [l, d] {
                // Lists and domains are under 254 bytes (config and DNS rules).
                let b = &s.as_bytes()[..s.len().min(255)];
                v.push(b.len() as u8);
                v.extend_from_slice(b);
            }
        }
        v
    }

    fn decode(b: &[u8]) -> Option<Stored> {
        let mut names = Vec::new();
        let (addr, at) = Stored::decode_into(b, |d, l, e| names.push((d.to_string(), l.to_string(), e)))?;
        Some(Stored { addr, names, at })
    }

    /// Decodes a record without owning its strings: `name` gets each
    /// (domain, list, expires) borrowed from `b`. Returns the address and
    /// when the change was recorded; `None` (after some names, perhaps)
    /// for a malformed record.
    fn decode_into<'a>(
        mut b: &'a [u8],
        mut name: impl FnMut(&'a str, &'a str, UnixMillis),
    ) -> Option<(IpAddr, UnixMillis)> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (b.get(..n)?, b.get(n..)?);
            *b = rest;
            Some(head)
        }
        fn text<'a>(b: &mut &'a [u8]) -> Option<&'a str> {
            let n = *take(b, 1)?.first()? as usize;
            std::str::from_utf8(take(b, n)?).ok()
        }
        let version = take(&mut b, 1)?[0];
        if version != 1 && version != 2 {
            return None;
        }
        let at = u64_of(take(&mut b, 8)?)?;
        let addr = match take(&mut b, 1)?[0] {
            4 => IpAddr::from(<[u8; 4]>::try_from(take(&mut b, 4)?).ok()?),
            16 => IpAddr::from(<[u8; 16]>::try_from(take(&mut b, 16)?).ok()?),
            _ => return None,
        };
        let count = match version {
            1 => take(&mut b, 1)?[0] as usize,
            _ => u16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?) as usize,
        };
        for _ in 0..count {
            let e = u64_of(take(&mut b, 8)?)?;
            let l = text(&mut b)?;
            let d = text(&mut b)?;
            name(d, l, e);
        }
        Some((addr, at))
    }
}

/// One change's JSON, serialized from borrowed parts (the same shape as
/// [`super::protocol::Change`]).
#[derive(serde::Serialize)]
struct ChangeRef<'a> {
    seq: u64,
    address: IpAddr,
    origin: &'a str,
    names: &'a [NameRef<'a>],
}

#[derive(serde::Serialize)]
struct NameRef<'a> {
    domain: &'a str,
    list: &'a str,
    expires: UnixMillis,
}

/// A page as JSON, written straight from the log records (no owned
/// changes in between): the body of a `/changes` answer or of a push.
#[derive(Debug)]
pub struct EncodedPage {
    pub body: Vec<u8>,
    pub since: u64,
    pub next: u64,
    pub head: u64,
    pub more: bool,
    pub snapshot: bool,
    /// Changes in the page.
    pub changes: usize,
}

/// JSON bytes of a page besides its changes and its instance id (the keys,
/// three numbers of up to 20 digits, two booleans), with a margin.
const PAGE_ENVELOPE: usize = 192;

/// The stored change codec, public for the fuzz target `stored_record`
/// (fuzz/), not an API: (address, names as (domain, list, expires),
/// recorded at).
#[doc(hidden)]
pub mod stored_codec {
    use super::*;

    pub type Decoded = (IpAddr, Vec<(String, String, UnixMillis)>, UnixMillis);

    pub fn decode(b: &[u8]) -> Option<Decoded> {
        Stored::decode(b).map(|s| (s.addr, s.names, s.at))
    }

    pub fn encode(addr: IpAddr, names: &[NameState], at: UnixMillis) -> Vec<u8> {
        Stored::encode(addr, names, at)
    }
}

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn u64_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// A stable fingerprint of a state (names sorted by the caller).
fn fingerprint<'a>(names: impl Iterator<Item = (&'a str, &'a str, UnixMillis)>) -> u64 {
    let mut h = FxHasher::default();
    let mut n = 0usize;
    for (d, l, e) in names {
        h.write(d.as_bytes());
        h.write_u8(0xff);
        h.write(l.as_bytes());
        h.write_u8(0xff);
        h.write_u64(e);
        n += 1;
    }
    h.write_usize(n);
    h.finish()
}

/// The latest change of an address: 16 bytes (whether it has names is
/// the top bit of the sequence number, which never gets that far).
#[derive(Clone, Copy)]
struct Latest {
    seq_live: u64,
    fingerprint: u64,
}

const LIVE: u64 = 1 << 63;

impl Latest {
    fn new(seq: u64, fingerprint: u64, live: bool) -> Latest {
        Latest { seq_live: (seq & !LIVE) | if live { LIVE } else { 0 }, fingerprint }
    }

    fn seq(self) -> u64 {
        self.seq_live & !LIVE
    }

    fn live(self) -> bool {
        self.seq_live & LIVE != 0
    }
}

/// The index, address → latest change, with IPv4 addresses kept as `u32`
/// keys (24-byte buckets instead of 48 with `IpAddr` keys and a padded
/// value: ~50 MiB less at 1 M routes).
#[derive(Default)]
struct Index {
    v4: FxHashMap<u32, Latest>,
    v6: FxHashMap<u128, Latest>,
}

impl Index {
    fn get(&self, addr: &IpAddr) -> Option<Latest> {
        match addr {
            IpAddr::V4(a) => self.v4.get(&u32::from(*a)).copied(),
            IpAddr::V6(a) => self.v6.get(&u128::from(*a)).copied(),
        }
    }

    fn insert(&mut self, addr: IpAddr, latest: Latest) -> Option<Latest> {
        match addr {
            IpAddr::V4(a) => self.v4.insert(u32::from(a), latest),
            IpAddr::V6(a) => self.v6.insert(u128::from(a), latest),
        }
    }

    fn remove(&mut self, addr: &IpAddr) -> Option<Latest> {
        match addr {
            IpAddr::V4(a) => self.v4.remove(&u32::from(*a)),
            IpAddr::V6(a) => self.v6.remove(&u128::from(*a)),
        }
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    fn iter(&self) -> impl Iterator<Item = (IpAddr, Latest)> + '_ {
        let v4 = self.v4.iter().map(|(a, l)| (IpAddr::from(std::net::Ipv4Addr::from(*a)), *l));
        let v6 = self.v6.iter().map(|(a, l)| (IpAddr::from(std::net::Ipv6Addr::from(*a)), *l));
        v4.chain(v6)
    }
}

pub struct ChangeLog {
    db: sled::Db,
    changes: sled::Tree,
    meta: sled::Tree,
    id: Arc<str>,
    head: AtomicU64,
    horizon: AtomicU64,
    head_tx: watch::Sender<u64>,
    /// The index; its lock also makes the recorder and the purge the one
    /// writer at a time.
    index: Mutex<Index>,
}

impl ChangeLog {
    /// Opens the log in `db`, creating this instance's id on first use and
    /// rebuilding the index (reads every change once).
    pub fn open(db: sled::Db) -> Result<ChangeLog, LogError> {
        let changes = db.open_tree("sync_changes")?;
        let meta = db.open_tree("sync_meta")?;
        let id: Arc<str> = match meta.get("id")? {
            Some(v) => Arc::from(String::from_utf8_lossy(&v).as_ref()),
            None => {
                let id = new_instance_id();
                meta.insert("id", id.as_bytes())?;
                db.flush()?;
                Arc::from(id.as_str())
            }
        };
        let stored_head = meta.get("head")?.and_then(|v| u64_of(&v)).unwrap_or(0);
        let last = changes.last()?.and_then(|(k, _)| u64_of(&k)).unwrap_or(0);
        let head = stored_head.max(last);
        let horizon = meta.get("horizon")?.and_then(|v| u64_of(&v)).unwrap_or(0);
        let mut index = Index::default();
        // Entries superseded but not deleted (a crash between the two
        // writes), or undecodable: removed now.
        let mut stale = Vec::new();
        for item in changes.iter() {
            let (k, v) = item?;
            // Names borrowed from the record: no allocation per change.
            let mut names: SmallVec<[(&str, &str, UnixMillis); 2]> = SmallVec::new();
            let decoded = Stored::decode_into(&v, |d, l, e| names.push((d, l, e)));
            let (Some(seq), Some((addr, _))) = (u64_of(&k), decoded) else {
                warn!(key = ?&k[..], "dropping an undecodable sync log entry");
                stale.push(k);
                continue;
            };
            let fp = fingerprint(names.iter().copied());
            if let Some(old) = index.insert(addr, Latest::new(seq, fp, !names.is_empty())) {
                stale.push(sled::IVec::from(&seq_key(old.seq())));
            }
        }
        for k in stale {
            changes.remove(k)?;
        }
        let (head_tx, _) = watch::channel(head);
        Ok(ChangeLog {
            db,
            changes,
            meta,
            id,
            head: AtomicU64::new(head),
            horizon: AtomicU64::new(horizon),
            head_tx,
            index: Mutex::new(index),
        })
    }

    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// The newest sequence number visible to readers.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Changes ≤ this were purged: older cursors get a snapshot.
    pub fn horizon(&self) -> u64 {
        self.horizon.load(Ordering::Acquire)
    }

    /// Follows the head.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.head_tx.subscribe()
    }

    /// Changes held (one per address, withdrawals included).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the current own state of some addresses, one change each,
    /// skipping those whose state equals their last recorded one (and
    /// withdrawals of addresses never recorded). Writes in batches, flushes,
    /// then publishes the new head. Returns how many changes were recorded.
    pub fn record(&self, states: Vec<(IpAddr, Vec<NameState>)>, now: UnixMillis) -> Result<usize, LogError> {
        let mut index = self.lock();
        // One change per address per call: the last state given wins.
        let mut states = states;
        let mut seen = FxHashSet::default();
        states.reverse();
        states.retain(|(addr, _)| seen.insert(*addr));
        states.reverse();
        let mut head = self.head();
        let mut updates = Vec::new();
        for chunk in states.chunks_mut(WRITE_BATCH) {
            let mut batch = sled::Batch::default();
            let mut any = false;
            for (addr, names) in chunk.iter_mut() {
                names.truncate(MAX_STORED_NAMES);
                names.sort();
                let fp = fingerprint(names.iter().map(|(d, l, e)| (&**d, &**l, *e)));
                let previous = index.get(addr);
                match previous {
                    Some(p) if p.fingerprint == fp => continue,
                    None if names.is_empty() => continue,
                    _ => {}
                }
                head += 1;
                if let Some(p) = previous {
                    batch.remove(&seq_key(p.seq()));
                }
                batch.insert(&seq_key(head), Stored::encode(*addr, names, now));
                updates.push((*addr, Latest::new(head, fp, !names.is_empty())));
                any = true;
            }
            if any {
                self.changes.apply_batch(batch)?;
            }
        }
        if updates.is_empty() {
            return Ok(0);
        }
        // Published (and remembered in the index) only once durable: a
        // failed flush leaves the head where it was, and the next record
        // call numbers its changes after the last durable one again.
        self.meta.insert("head", &head.to_be_bytes())?;
        self.db.flush()?;
        let recorded = updates.len();
        for (addr, latest) in updates {
            index.insert(addr, latest);
        }
        self.head.store(head, Ordering::Release);
        self.head_tx.send_replace(head);
        Ok(recorded)
    }

    /// Up to `limit` changes after `since`, as a page. A cursor of 0, older
    /// than the horizon or beyond the head gets a snapshot from the start.
    pub fn read(&self, since: u64, limit: usize) -> Result<Page, LogError> {
        self.read_bounded(since, limit, usize::MAX)
    }

    /// [`ChangeLog::read`] with the page's JSON also bounded to
    /// `max_bytes` (the receiver's `max_body`): a page ends before the
    /// change that would take it past the bound. The first change is always
    /// included, so that paging progresses; one change is at most
    /// [`MAX_STORED_NAMES`] names.
    pub fn read_bounded(&self, since: u64, limit: usize, max_bytes: usize) -> Result<Page, LogError> {
        let head = self.head();
        let snapshot = since == 0 || since < self.horizon() || since > head;
        let start = if snapshot { 0 } else { since };
        self.read_range(start, head, limit, max_bytes, snapshot)
    }

    /// The changes in `(since, head]` (at most `limit`, and at most
    /// `max_bytes` of JSON as in [`ChangeLog::read_bounded`]), without
    /// snapshot logic: what a push after `since` carries.
    pub fn read_range(
        &self,
        since: u64,
        head: u64,
        limit: usize,
        max_bytes: usize,
        snapshot: bool,
    ) -> Result<Page, LogError> {
        let encoded = self.encode_range(since, head, limit, max_bytes, snapshot, false)?;
        Ok(serde_json::from_slice(&encoded.body)?)
    }

    /// [`ChangeLog::read_bounded`] as the page's JSON, written straight
    /// from the records.
    pub fn read_encoded(&self, since: u64, limit: usize, max_bytes: usize) -> Result<EncodedPage, LogError> {
        let head = self.head();
        let snapshot = since == 0 || since < self.horizon() || since > head;
        let start = if snapshot { 0 } else { since };
        self.encode_range(start, head, limit, max_bytes, snapshot, false)
    }

    /// [`ChangeLog::read_range`] as the page's JSON. With `push`, `next` is
    /// the page's last change's sequence (a receiver takes a push's `next`
    /// only as that), or `head` when there is none.
    pub fn encode_range(
        &self,
        since: u64,
        head: u64,
        limit: usize,
        max_bytes: usize,
        snapshot: bool,
        push: bool,
    ) -> Result<EncodedPage, LogError> {
        // The page's fields around the changes: the instance id (plain
        // characters only, `valid_instance`), three numbers of at most 20
        // digits, two booleans and the keys.
        let envelope = PAGE_ENVELOPE + self.id.len();
        // The changes' JSON, comma-separated.
        let mut list: Vec<u8> = Vec::with_capacity(limit.min(1024) * 160);
        let (mut count, mut last, mut more) = (0usize, since, false);
        if since < head {
            for item in self.changes.range(seq_key(since + 1)..=seq_key(head)) {
                let (k, v) = item?;
                if count == limit {
                    more = true;
                    break;
                }
                let Some(seq) = u64_of(&k) else { continue };
                let mut names: SmallVec<[NameRef<'_>; 2]> = SmallVec::new();
                let decoded =
                    Stored::decode_into(&v, |domain, list, expires| names.push(NameRef { domain, list, expires }));
                let Some((address, _)) = decoded else {
                    warn!(seq, "skipping an undecodable sync log entry");
                    continue;
                };
                let mark = list.len();
                if count > 0 {
                    list.push(b',');
                }
                serde_json::to_writer(&mut list, &ChangeRef { seq, address, origin: &self.id, names: &names })?;
                // The first change always goes, so that paging progresses.
                if count > 0 && envelope.saturating_add(list.len()) > max_bytes {
                    list.truncate(mark);
                    more = true;
                    break;
                }
                count += 1;
                last = seq;
            }
        }
        let next = if more || (push && count > 0) { last } else { head.max(since) };
        let mut body = Vec::with_capacity(envelope + list.len());
        body.extend_from_slice(b"{\"instance\":");
        serde_json::to_writer(&mut body, &*self.id)?;
        write!(
            body,
            ",\"since\":{since},\"next\":{next},\"head\":{head},\"more\":{more},\"snapshot\":{snapshot},\"changes\":["
        )
        .map_err(serde_json::Error::io)?;
        body.extend_from_slice(&list);
        body.extend_from_slice(b"]}");
        Ok(EncodedPage { body, since, next, head, more, snapshot, changes: count })
    }

    /// Addresses whose last recorded state has names (start-up check
    /// against the table).
    pub fn live_addresses(&self) -> Vec<IpAddr> {
        self.lock().iter().filter(|(_, l)| l.live()).map(|(a, _)| a).collect()
    }

    /// Deletes withdrawals recorded before `cutoff` (at most `max` of them)
    /// and moves the horizon past them. Returns how many were deleted.
    pub fn purge(&self, cutoff: UnixMillis, max: usize) -> Result<usize, LogError> {
        let mut index = self.lock();
        let mut batch = sled::Batch::default();
        let mut horizon = self.horizon();
        let mut purged = Vec::new();
        for item in self.changes.iter() {
            let (k, v) = item?;
            let Some(seq) = u64_of(&k) else { continue };
            let Some(s) = Stored::decode(&v) else { continue };
            if s.at >= cutoff || purged.len() == max {
                break;
            }
            if !s.names.is_empty() {
                continue;
            }
            batch.remove(&*k);
            purged.push((s.addr, seq));
            horizon = horizon.max(seq);
        }
        if purged.is_empty() {
            return Ok(0);
        }
        // The head is on record before its change may go.
        self.meta.insert("head", &self.head().to_be_bytes())?;
        self.meta.insert("horizon", &horizon.to_be_bytes())?;
        self.changes.apply_batch(batch)?;
        for (addr, seq) in &purged {
            if index.get(addr).is_some_and(|l| l.seq() == *seq) {
                index.remove(addr);
            }
        }
        self.horizon.store(horizon, Ordering::Release);
        Ok(purged.len())
    }

    /// The persisted cursor for an origin's log.
    pub fn cursor(&self, origin: &str) -> Result<u64, LogError> {
        Ok(self.meta.get(format!("cursor:{origin}"))?.and_then(|v| u64_of(&v)).unwrap_or(0))
    }

    /// Persists a cursor (made durable by the next flush of the database).
    pub fn set_cursor(&self, origin: &str, cursor: u64) -> Result<(), LogError> {
        self.meta.insert(format!("cursor:{origin}"), &cursor.to_be_bytes())?;
        Ok(())
    }

    pub fn remove_cursor(&self, origin: &str) -> Result<(), LogError> {
        self.meta.remove(format!("cursor:{origin}"))?;
        Ok(())
    }

    /// The instance id last seen at a peer url.
    pub fn peer_instance(&self, url: &str) -> Result<Option<String>, LogError> {
        Ok(self.meta.get(format!("peer:{url}"))?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set_peer_instance(&self, url: &str, id: &str) -> Result<(), LogError> {
        self.meta.insert(format!("peer:{url}"), id.as_bytes())?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), LogError> {
        self.db.flush()?;
        Ok(())
    }
}

/// `<hostname>-<12 hex digits>`: readable in `source` fields, unique per
/// store (a new store is a new instance for its peers).
fn new_instance_id() -> String {
    let mut host = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into our buffer.
    let rc = unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len()) };
    let host = if rc == 0 {
        let end = host.iter().position(|&b| b == 0).unwrap_or(host.len());
        String::from_utf8_lossy(&host[..end]).to_string()
    } else {
        String::new()
    };
    let mut prefix: String = host
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '-' })
        .take(40)
        .collect();
    if prefix.is_empty() || prefix == "dns" {
        prefix = "dnsbgpd".into();
    }
    let mut random = [0u8; 6];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random));
    if filled.is_err() {
        // Fall back to time and pid: unique enough for one machine.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let mixed = (t as u64) ^ (u64::from(std::process::id()) << 32);
        random.copy_from_slice(&mixed.to_be_bytes()[2..]);
    }
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::protocol::valid_instance;

    fn log() -> (tempfile::TempDir, ChangeLog) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).flush_every_ms(None).open().unwrap();
        (dir, ChangeLog::open(db).unwrap())
    }

    fn st(addr: &str, names: &[(&str, u64)]) -> (IpAddr, Vec<NameState>) {
        (addr.parse().unwrap(), names.iter().map(|(d, e)| (Arc::from(*d), Arc::from("vpn"), *e)).collect())
    }

    #[test]
    fn records_compacts_and_pages() {
        let (_d, log) = log();
        assert!(valid_instance(log.id()), "{}", log.id());
        let mut head = log.watch_head();
        assert_eq!(
            log.record(vec![st("198.51.100.1", &[("a.test", 10)]), st("198.51.100.2", &[("b.test", 10)])], 1).unwrap(),
            2
        );
        assert!(head.has_changed().unwrap());
        assert_eq!(*head.borrow_and_update(), 2);
        // Unchanged state and withdrawals of unknown addresses are not changes.
        assert_eq!(log.record(vec![st("198.51.100.1", &[("a.test", 10)]), st("198.51.100.9", &[])], 2).unwrap(), 0);
        // A refresh supersedes the old change of the same address.
        assert_eq!(log.record(vec![st("198.51.100.1", &[("a.test", 20)])], 3).unwrap(), 1);
        assert_eq!(log.len(), 2);
        let p = log.read(0, 10).unwrap();
        assert!(p.snapshot && !p.more);
        assert_eq!((p.since, p.next, p.head), (0, 3, 3));
        let seqs: Vec<u64> = p.changes.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        assert_eq!(p.changes[1].names[0].expires, 20);
        // Paging.
        let p = log.read(0, 1).unwrap();
        assert!(p.more);
        assert_eq!(p.next, 2);
        let p = log.read(2, 1).unwrap();
        assert!(!p.more && !p.snapshot);
        assert_eq!((p.next, p.changes.len()), (3, 1));
        // Caught up: an empty page that keeps the cursor.
        let p = log.read(3, 10).unwrap();
        assert!(p.changes.is_empty() && p.next == 3 && !p.snapshot);
        // A cursor beyond the head (a log that lost its tail) is a snapshot.
        assert!(log.read(99, 10).unwrap().snapshot);
        // Withdrawal.
        assert_eq!(log.record(vec![st("198.51.100.2", &[])], 4).unwrap(), 1);
        let p = log.read(3, 10).unwrap();
        assert_eq!(p.changes.len(), 1);
        assert!(p.changes[0].names.is_empty());
        assert_eq!(log.live_addresses(), vec!["198.51.100.1".parse::<IpAddr>().unwrap()]);
    }

    proptest::proptest! {
        #[test]
        fn stored_round_trip(v6: bool, a: [u8; 16], at: u64, names in proptest::collection::vec(("[a-z0-9.-]{1,60}", "[a-z]{1,10}", proptest::num::u64::ANY), 0..5)) {
            let addr = if v6 { IpAddr::from(a) } else { IpAddr::from([a[0], a[1], a[2], a[3]]) };
            let states: Vec<NameState> = names.iter().map(|(d, l, e)| (Arc::from(d.as_str()), Arc::from(l.as_str()), *e)).collect();
            let bytes = Stored::encode(addr, &states, at);
            let back = Stored::decode(&bytes).unwrap();
            proptest::prop_assert_eq!(back.addr, addr);
            proptest::prop_assert_eq!(back.at, at);
            let expected: Vec<(String, String, u64)> = names.clone();
            proptest::prop_assert_eq!(back.names, expected);
            // Every truncation is rejected, never a panic.
            for cut in 0..bytes.len() {
                proptest::prop_assert!(Stored::decode(&bytes[..cut]).is_none());
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..100)) {
            let _ = Stored::decode(&bytes);
        }
    }

    #[test]
    fn pages_stay_within_the_byte_bound_and_many_names_are_kept() {
        let (_d, log) = log();
        // An address shared by 1 000 names (above the 255 of version 1 records).
        let many: Vec<(String, u64)> = (0..1000).map(|i| (format!("n{i}.shared.test"), 10 + i)).collect();
        let refs: Vec<(&str, u64)> = many.iter().map(|(d, e)| (d.as_str(), *e)).collect();
        let mut states = vec![st("198.51.100.200", &refs)];
        for i in 0..300u32 {
            states.push(st(&format!("10.0.{}.{}", i / 256, i % 256), &[("x.bench.test", 99)]));
        }
        assert_eq!(log.record(states, 1).unwrap(), 301);
        let p = log.read(0, 10).unwrap();
        assert_eq!(p.changes[0].names.len(), 1000);
        // Paging by bytes: every page within the bound, every change once.
        let bound = 4096;
        let (mut since, mut seen, mut pages) = (0, 0, 0);
        loop {
            let p = log.read_bounded(since, 10_000, bound).unwrap();
            let len = serde_json::to_vec(&p).unwrap().len();
            if p.changes.len() > 1 {
                assert!(len <= bound, "page of {len} bytes with {} changes", p.changes.len());
            }
            seen += p.changes.len();
            pages += 1;
            since = p.next;
            if !p.more {
                break;
            }
        }
        assert_eq!(seen, 301);
        assert!(pages > 10, "{pages} pages");
    }

    #[test]
    fn encoded_pages_are_the_pages_and_pushes_end_at_their_last_change() {
        let (_d, log) = log();
        let states = vec![
            st("198.51.100.1", &[("a.test", 10)]),
            st("2001:db8::1", &[("b.test", 11), ("c.test", 12)]),
            st("198.51.100.3", &[("d.test", 13)]),
        ];
        assert_eq!(log.record(states, 1).unwrap(), 3);
        // The IPv6 address is indexed like the others (no change for the same state).
        assert_eq!(log.record(vec![st("2001:db8::1", &[("b.test", 11), ("c.test", 12)])], 2).unwrap(), 0);
        let e = log.read_encoded(0, 10, usize::MAX).unwrap();
        let p: Page = serde_json::from_slice(&e.body).unwrap();
        assert_eq!((e.changes, e.next, e.more, e.snapshot), (3, 3, false, true));
        assert_eq!(serde_json::to_vec(&p).unwrap(), e.body, "the same bytes as serializing the page");
        assert_eq!(p.changes[1].address, "2001:db8::1");
        assert_eq!(p.changes[1].names.len(), 2);
        assert_eq!(p.changes[1].origin, **log.id());
        // A push's next is its last change, never beyond.
        let e = log.encode_range(0, 3, 2, usize::MAX, false, true).unwrap();
        assert_eq!((e.changes, e.next, e.more), (2, 2, true));
        let e = log.encode_range(1, 3, 10, usize::MAX, false, true).unwrap();
        assert_eq!((e.changes, e.next, e.more), (2, 3, false));
        let e = log.encode_range(3, 3, 10, usize::MAX, false, true).unwrap();
        assert_eq!((e.changes, e.next), (0, 3));
        // A withdrawal of the IPv6 address is recorded and not live.
        assert_eq!(log.record(vec![st("2001:db8::1", &[])], 3).unwrap(), 1);
        let mut live = log.live_addresses();
        live.sort();
        assert_eq!(live, vec!["198.51.100.1".parse::<IpAddr>().unwrap(), "198.51.100.3".parse().unwrap()]);
    }

    #[test]
    fn one_change_per_address_per_call() {
        let (_d, log) = log();
        let twice = vec![st("198.51.100.3", &[("c.test", 1)]), st("198.51.100.3", &[("c.test", 2)])];
        assert_eq!(log.record(twice, 1).unwrap(), 1);
        let p = log.read(0, 10).unwrap();
        assert_eq!(p.changes.len(), 1);
        assert_eq!(p.changes[0].names[0].expires, 2);
        assert_eq!(log.record(vec![st("198.51.100.3", &[])], 1).unwrap(), 1);
        assert_eq!(log.len(), 1);
    }

    #[test]
    fn purge_moves_the_horizon_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id;
        {
            let db = sled::Config::new().path(dir.path()).flush_every_ms(None).open().unwrap();
            let log = ChangeLog::open(db).unwrap();
            id = log.id().clone();
            log.record(vec![st("198.51.100.1", &[("a.test", 10)]), st("198.51.100.2", &[("b.test", 10)])], 100)
                .unwrap();
            log.record(vec![st("198.51.100.2", &[])], 200).unwrap(); // seq 3
            log.record(vec![st("198.51.100.3", &[("c.test", 10)])], 300).unwrap(); // seq 4
            log.record(vec![st("198.51.100.3", &[])], 400).unwrap(); // seq 5
            assert_eq!(log.purge(250, 100).unwrap(), 1);
            assert_eq!(log.horizon(), 3);
            assert_eq!(log.len(), 2);
            // Cursors before the horizon get a snapshot.
            assert!(log.read(2, 10).unwrap().snapshot);
            assert!(!log.read(3, 10).unwrap().snapshot);
            // Purging the newest change keeps the head.
            assert_eq!(log.purge(1000, 100).unwrap(), 1);
            assert_eq!(log.head(), 5);
            log.set_cursor("peer-x", 42).unwrap();
            log.set_peer_instance("http://x", "peer-x").unwrap();
            log.flush().unwrap();
        }
        let db = sled::Config::new().path(dir.path()).flush_every_ms(None).open().unwrap();
        let log = ChangeLog::open(db).unwrap();
        assert_eq!(log.id(), &id);
        assert_eq!(log.head(), 5);
        assert_eq!(log.horizon(), 5);
        assert_eq!(log.cursor("peer-x").unwrap(), 42);
        assert_eq!(log.cursor("peer-y").unwrap(), 0);
        assert_eq!(log.peer_instance("http://x").unwrap().as_deref(), Some("peer-x"));
        // The withdrawn address is forgotten: withdrawing it again is no change,
        // and a new state starts after the head.
        assert_eq!(log.record(vec![st("198.51.100.2", &[])], 500).unwrap(), 0);
        log.record(vec![st("198.51.100.2", &[("b.test", 10)])], 500).unwrap();
        assert_eq!(log.head(), 6);
    }
}

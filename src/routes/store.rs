//! The route store: routes survive restarts.
//!
//! Behind the small [`RouteStore`] trait: the daemon uses redb
//! (`super::redb_store`), [`SledStore`] is the second backend (tests,
//! `examples/memory`). Writes are batched: the writer task takes the table's
//! changes every half `flush_interval`, writes them in key order in a few
//! large transactions and flushes once, instead of an fsync per answer. Refreshes that only move an expiry
//! a little are written at a coarse granularity (see the daemon), which
//! bounds the write rate for names that are resolved constantly.
//!
//! A lock file with `flock` guards the directory, so a second process on
//! the same store fails at once with a message naming the holder.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::table::Subscription;
use super::{Attribution, Route, RouteEvent};
use crate::clock::UnixMillis;
use crate::metrics::Metrics;
use crate::routes::Source;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("route store {path} is in use by another process{holder}; stop it or point [routes] store elsewhere")]
    Locked { path: PathBuf, holder: String },
    #[error("route store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("route store {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("route store {path}: {source}")]
    Redb {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
}

/// What a store must do.
pub trait RouteStore: Send + Sync + 'static {
    /// Every stored route; records that cannot be decoded are skipped and
    /// counted in the second value.
    fn load(&self) -> Result<(Vec<Route>, usize), StoreError>;
    /// Every stored route, handed to `each` in chunks of at most `chunk`
    /// routes, so that a large store never sits in memory twice (as
    /// records and as table entries) while loading. Returns how many
    /// records could not be decoded.
    fn load_chunks(&self, chunk: usize, each: &mut dyn FnMut(Vec<Route>)) -> Result<usize, StoreError> {
        let (routes, bad) = self.load()?;
        let mut routes = routes.into_iter().peekable();
        while routes.peek().is_some() {
            each(routes.by_ref().take(chunk.max(1)).collect());
        }
        Ok(bad)
    }
    /// Writes the current state of the given routes (one batch).
    fn write(&self, events: &[RouteEvent]) -> Result<(), StoreError>;
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Records the time of this write cycle (durable with the next flush).
    fn set_time(&self, now: UnixMillis) -> Result<(), StoreError>;
    /// How many records the store holds, when it knows without a walk
    /// (the start-up load makes room for them in the table at once).
    fn count(&self) -> Result<Option<usize>, StoreError> {
        Ok(None)
    }
    /// The time last recorded by [`RouteStore::set_time`]: the store's own
    /// idea of when its routes were current.
    fn time(&self) -> Result<Option<UnixMillis>, StoreError>;
}

/// The record stored per address, as older versions wrote it (JSON, still
/// read).
#[derive(Serialize, Deserialize)]
struct Record {
    v: u8,
    attributions: SmallVec<[Attribution; 1]>,
}

/// Version byte of the binary record. JSON records start with `{`.
const RECORD_V2: u8 = 2;

/// The binary record (version 2), about 40 bytes for one name instead of
/// ~110 in JSON: version, names seen (u32), attribution count (u16), then
/// per attribution expires (u64), list, domain and source (each a length
/// byte and UTF-8; an empty source is `dns`). Big-endian.
pub(crate) fn encode_record(route: &Route, out: &mut Vec<u8>) {
    out.clear();
    out.push(RECORD_V2);
    out.extend_from_slice(&route.names_total.to_be_bytes());
    let n = route.attributions.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(n as u16).to_be_bytes());
    for a in &route.attributions[..n] {
        out.extend_from_slice(&a.expires.to_be_bytes());
        let source = match &a.source {
            Source::Dns => "",
            Source::Peer(p) => p,
        };
        for text in [&*a.list, &*a.domain, source] {
            // Lists, domains and instance ids are under 256 bytes (config,
            // DNS and sync rules); cut at a character boundary if not.
            let mut end = text.len().min(255);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            out.push(end as u8);
            out.extend_from_slice(&text.as_bytes()[..end]);
        }
    }
}

/// A stored route from its key and value, `None` when either cannot be
/// decoded. Public for the fuzz target `stored_record` and for
/// `dnsbgpd store` (src/store_cli.rs), not an API.
#[doc(hidden)]
pub fn decode_stored(key: &[u8], value: &[u8]) -> Option<Route> {
    decode_record(addr_of(key)?, value)
}

/// A store's records read back in chunks: decoded routes go to `each`
/// `chunk` at a time, undecodable records are counted and logged. Shared by
/// the sled and the redb backends' `load_chunks`.
pub(crate) struct ChunkedLoad<'a> {
    path: &'a Path,
    chunk: usize,
    routes: Vec<Route>,
    bad: usize,
    each: &'a mut dyn FnMut(Vec<Route>),
    /// List names and peer ids seen so far: every record names one of a
    /// few, so they are shared instead of allocated per record.
    shared: Vec<Arc<str>>,
}

impl<'a> ChunkedLoad<'a> {
    pub(crate) fn new(path: &'a Path, chunk: usize, each: &'a mut dyn FnMut(Vec<Route>)) -> ChunkedLoad<'a> {
        let chunk = chunk.max(1);
        ChunkedLoad { path, chunk, routes: Vec::with_capacity(chunk), bad: 0, each, shared: Vec::new() }
    }

    pub(crate) fn push(&mut self, key: &[u8], value: &[u8]) {
        let route = addr_of(key).and_then(|addr| decode_record_in(addr, value, &mut self.shared));
        match route {
            Some(route) => self.routes.push(route),
            None => {
                self.bad += 1;
                warn!(store = %self.path.display(), key = ?key, "skipping a stored route that cannot be decoded");
            }
        }
        if self.routes.len() == self.chunk {
            (self.each)(std::mem::replace(&mut self.routes, Vec::with_capacity(self.chunk)));
        }
    }

    /// Hands over the last chunk; the number of undecodable records.
    pub(crate) fn finish(self) -> usize {
        if !self.routes.is_empty() {
            (self.each)(self.routes);
        }
        self.bad
    }
}

pub(crate) fn decode_record(addr: IpAddr, b: &[u8]) -> Option<Route> {
    decode_record_in(addr, b, &mut Vec::new())
}

/// Lists and peer ids decoded, kept for the next records.
const SHARED_TEXTS: usize = 32;

/// [`decode_record`], taking list names and peer ids from `shared` (and
/// adding new ones while it has room) rather than allocating each.
fn decode_record_in(addr: IpAddr, mut b: &[u8], shared: &mut Vec<Arc<str>>) -> Option<Route> {
    fn share(shared: &mut Vec<Arc<str>>, text: &str) -> Arc<str> {
        if let Some(a) = shared.iter().find(|a| ***a == *text) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(text);
        if shared.len() < SHARED_TEXTS {
            shared.push(a.clone());
        }
        a
    }
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (b.get(..n)?, b.get(n..)?);
        *b = rest;
        Some(head)
    }
    fn text<'a>(b: &mut &'a [u8]) -> Option<&'a str> {
        let n = *take(b, 1)?.first()? as usize;
        std::str::from_utf8(take(b, n)?).ok()
    }
    if b.first() == Some(&b'{') {
        let rec = serde_json::from_slice::<Record>(b).ok()?;
        return (rec.v == 1).then(|| Route::new(addr, rec.attributions));
    }
    if take(&mut b, 1)? != [RECORD_V2] {
        return None;
    }
    let names_total = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
    let n = u16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?) as usize;
    let mut attributions = SmallVec::with_capacity(n.min(64));
    for _ in 0..n {
        let expires = u64::from_be_bytes(take(&mut b, 8)?.try_into().ok()?);
        let list = share(shared, text(&mut b)?);
        let domain = Arc::from(text(&mut b)?);
        let source = match text(&mut b)? {
            "" => Source::Dns,
            p => Source::Peer(share(shared, p)),
        };
        attributions.push(Attribution { domain, list, expires, source });
    }
    if !b.is_empty() {
        return None;
    }
    Some(Route { addr, attributions, names_total: names_total.max(n as u32) })
}

pub(crate) fn key(addr: IpAddr) -> Vec<u8> {
    let (k, n) = key_bytes(addr);
    k[..n].to_vec()
}

/// An address's key without an allocation: the bytes and how many count.
pub(crate) fn key_bytes(addr: IpAddr) -> ([u8; 16], usize) {
    let mut k = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            k[..4].copy_from_slice(&a.octets());
            (k, 4)
        }
        IpAddr::V6(a) => (a.octets(), 16),
    }
}

pub(crate) fn addr_of(key: &[u8]) -> Option<IpAddr> {
    match key.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(key).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(key).ok()?)),
        _ => None,
    }
}

/// The routes' own sled database (`STORE/routes`). It is apart from the
/// database peer sync and the blocking engine share (`STORE/db`) so that
/// it can be reopened alone: after one failed I/O (a full disk) sled 0.34
/// refuses every later operation until the database is opened again.
struct RoutesDb {
    db: sled::Db,
    routes: sled::Tree,
    meta: sled::Tree,
}

fn open_routes(dir: &Path, cache: usize) -> Result<RoutesDb, sled::Error> {
    let db = sled::Config::new()
        .path(dir.join("routes"))
        .cache_capacity(cache as u64)
        // We flush on our own schedule; sled's background flusher
        // would add fsyncs we did not ask for.
        .flush_every_ms(None)
        .open()?;
    let routes = db.open_tree("routes")?;
    let meta = db.open_tree("store_meta")?;
    Ok(RoutesDb { db, routes, meta })
}

pub struct SledStore {
    path: PathBuf,
    cache: usize,
    /// Shared with peer sync and the blocking engine.
    shared: sled::Db,
    /// `None` after an I/O error: reopened by the next operation.
    routes: std::sync::Mutex<Option<RoutesDb>>,
    _lock: File,
}

pub(crate) fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let io = |source| StoreError::Io { path: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let lock_path = dir.join("LOCK");
    let mut file =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock_path).map_err(io)?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => String::new(),
                p => format!(" (pid {p})"),
            };
            return Err(StoreError::Locked { path: dir.to_path_buf(), holder });
        }
        return Err(io(err));
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}

impl SledStore {
    /// Opens (creating) the store in `dir`; `cache` bounds the page cache
    /// of each of its two sled databases. A store written by an older
    /// version (routes inside `db/`) is moved to `routes/` once.
    pub fn open(dir: &Path, cache: usize) -> Result<SledStore, StoreError> {
        let lock = lock_dir(dir)?;
        let db_err = |source| StoreError::Db { path: dir.to_path_buf(), source };
        let shared = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(cache as u64)
            .flush_every_ms(None)
            .open()
            .map_err(db_err)?;
        let fresh = !dir.join("routes").exists();
        let routes = open_routes(dir, cache).map_err(db_err)?;
        if fresh {
            migrate(&shared, &routes).map_err(db_err)?;
        }
        Ok(SledStore {
            path: dir.to_path_buf(),
            cache,
            shared,
            routes: std::sync::Mutex::new(Some(routes)),
            _lock: lock,
        })
    }

    fn db_err(&self, source: sled::Error) -> StoreError {
        StoreError::Db { path: self.path.clone(), source }
    }

    /// The database peer sync and the blocking engine keep their trees in.
    pub fn db(&self) -> &sled::Db {
        &self.shared
    }

    /// Runs `f` on the routes' database, reopening it first if an earlier
    /// operation failed with an I/O error (which sled 0.34 makes sticky).
    fn with<T>(&self, f: impl FnOnce(&RoutesDb) -> Result<T, sled::Error>) -> Result<T, StoreError> {
        let mut guard = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let db = match guard.take() {
            Some(db) => db,
            None => {
                let db = open_routes(&self.path, self.cache).map_err(|e| self.db_err(e))?;
                tracing::info!(store = %self.path.display(), "route store reopened after an I/O error");
                db
            }
        };
        let result = f(&db);
        // After an I/O error the handle is dropped (closing its files) and
        // the next operation opens the database again; writes not flushed
        // before the error are written again by the caller.
        if !matches!(result, Err(sled::Error::Io(_))) {
            *guard = Some(db);
        }
        result.map_err(|e| self.db_err(e))
    }
}

/// Moves routes a store of an older version kept in the shared database.
fn migrate(shared: &sled::Db, to: &RoutesDb) -> Result<(), sled::Error> {
    let old = shared.open_tree("routes")?;
    if old.is_empty() {
        shared.drop_tree("routes")?;
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for item in old.iter() {
        let (k, v) = item?;
        batch.insert(k, v);
        n += 1;
        if n % SLED_BATCH == 0 {
            to.routes.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    to.routes.apply_batch(batch)?;
    let old_meta = shared.open_tree("store_meta")?;
    if let Some(t) = old_meta.get("time")? {
        to.meta.insert("time", t)?;
    }
    to.db.flush()?;
    shared.drop_tree("routes")?;
    shared.drop_tree("store_meta")?;
    shared.flush()?;
    tracing::info!(routes = n, "route store moved to its own database");
    Ok(())
}

impl RouteStore for SledStore {
    fn load(&self) -> Result<(Vec<Route>, usize), StoreError> {
        let mut routes = Vec::new();
        let bad = self.load_chunks(4096, &mut |chunk| routes.extend(chunk))?;
        Ok((routes, bad))
    }

    fn load_chunks(&self, chunk: usize, each: &mut dyn FnMut(Vec<Route>)) -> Result<usize, StoreError> {
        self.with(|db| {
            let mut load = ChunkedLoad::new(&self.path, chunk, each);
            for item in db.routes.iter() {
                let (k, v) = item?;
                load.push(&k, &v);
            }
            Ok(load.finish())
        })
    }

    fn write(&self, events: &[RouteEvent]) -> Result<(), StoreError> {
        self.with(|db| {
            let mut value = Vec::with_capacity(64);
            for part in events.chunks(SLED_BATCH) {
                let mut batch = sled::Batch::default();
                for e in part {
                    match e {
                        RouteEvent::Added(r) => {
                            encode_record(r, &mut value);
                            batch.insert(key(r.addr), value.as_slice());
                        }
                        RouteEvent::Removed(addr) => batch.remove(key(*addr)),
                    }
                }
                db.routes.apply_batch(batch)?;
            }
            Ok(())
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.with(|db| db.db.flush().map(|_| ()))
    }

    fn set_time(&self, now: UnixMillis) -> Result<(), StoreError> {
        self.with(|db| db.meta.insert("time", &now.to_be_bytes()).map(|_| ()))
    }

    fn time(&self) -> Result<Option<UnixMillis>, StoreError> {
        let v = self.with(|db| db.meta.get("time"))?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(&v[..]).ok()).map(u64::from_be_bytes))
    }
}

/// What `/api/v1/status` shows of the store: `ok`, or `degraded` with the
/// last error, and how many changed routes are not durable yet.
#[derive(Debug, Default)]
pub struct StoreStatus {
    error: std::sync::Mutex<Option<String>>,
    pending: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatusJson {
    /// `ok` or `degraded`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Changed routes not yet durable.
    pub pending: usize,
}

impl StoreStatus {
    pub fn json(&self) -> StoreStatusJson {
        let error = self.error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        StoreStatusJson {
            state: if error.is_some() { "degraded" } else { "ok" }.into(),
            error,
            pending: self.pending.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    pub fn is_degraded(&self) -> bool {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn set(&self, error: Option<String>, pending: usize) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = error;
        self.pending.store(pending, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Routes per `apply_batch`: sled 0.34 holds far more than its cache while
/// applying big batches (BENCHMARKS.md: ~50 MiB per million routes written
/// in batches of 100-500, 2.2 GiB in batches of 2 000).
const SLED_BATCH: usize = 256;
/// Routes per store write (one redb transaction). The routes of a cycle
/// are written in key order, so a write touches the B-tree pages of one
/// key range, not one page per route (BENCHMARKS.md, "The store writer").
const WRITE_BATCH: usize = 8_192;
/// Retry delays after a failed write or flush.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Drains `sub` into the store every half `interval` until `shutdown`,
/// then once more. A failed write or flush keeps its changes pending (they are
/// marked changed again in the subscription), shows the store as degraded
/// and is retried with backoff; the table keeps serving meanwhile.
/// `cycles` counts write cycles that completed without error: every change
/// made before such a cycle began is durable once it completes (peer sync
/// saves its cursors by it), so a failing store never lets them advance.
#[allow(clippy::too_many_arguments)]
pub async fn run_writer(
    store: Arc<dyn RouteStore>,
    sub: Subscription,
    interval: Duration,
    metrics: Arc<Metrics>,
    status: Arc<StoreStatus>,
    clock: crate::clock::Clock,
    shutdown: CancellationToken,
    cycles: tokio::sync::watch::Sender<u64>,
) {
    let sub = Arc::new(sub);
    // Cycles (and the flushes of a long one) come every half interval, so
    // that a change is durable within about one `interval` of being made:
    // at most half an interval waiting for its cycle, then the cycle.
    let period = (interval / 2).max(Duration::from_millis(1));
    let mut wait = period;
    let mut backoff = RETRY_MIN;
    let mut trimmed_at = metrics.store_writes.get();
    loop {
        let last = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(wait) => false,
        };
        let started = tokio::time::Instant::now();
        // The whole cycle (taking the changed addresses, reading their
        // routes, encoding, writing, flushing) runs on one blocking thread.
        let (s, b, m, now) = (store.clone(), sub.clone(), metrics.clone(), clock.now());
        let result = tokio::task::spawn_blocking(move || write_pending(&*s, &b, &m, now, period))
            .await
            .unwrap_or_else(|e| Err(format!("write: {e}")));
        match result {
            Ok(()) => {
                if status.is_degraded() {
                    tracing::info!("route store writes work again; everything pending is written");
                }
                let pending = sub.pending();
                status.set(None, pending);
                cycles.send_modify(|c| *c += 1);
                let since = metrics.store_writes.get() - trimmed_at;
                if since >= TRIM_AFTER || (since >= TRIM_QUIET && pending == 0) {
                    // A burst was written (or the end of one): hand the
                    // freed heap (the cycles' address lists and events)
                    // back to the system.
                    trimmed_at = metrics.store_writes.get();
                    release_free_memory();
                }
                // Cycles start every `period`: a long cycle (a burst)
                // is followed at once by the next, not by a full pause.
                wait = period.saturating_sub(started.elapsed());
                backoff = RETRY_MIN;
            }
            Err(e) => {
                status.set(Some(e), sub.pending());
                wait = backoff;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
        if last {
            return;
        }
    }
}

/// A sort key in the order of the store's keys (an address's 4 or 16
/// bytes compared as byte strings, as redb and sled order them): the bytes
/// left-aligned in a u128, a shorter key before a longer one it prefixes.
fn key_order(a: &IpAddr) -> (u128, bool) {
    match a {
        IpAddr::V4(v4) => (u128::from(u32::from(*v4)) << 96, false),
        IpAddr::V6(v6) => (u128::from(*v6), true),
    }
}

/// Writes every change pending when it starts and flushes, recording
/// `now` as the store's time; blocking (the writer runs it on a blocking
/// thread). The changed addresses are taken from the subscription at once
/// (a swap, not a walk, under the table's lock), sorted in key order, and
/// their current routes read and written `WRITE_BATCH` at a time, one
/// transaction each. A cycle that writes for longer than `flush_every` (a
/// burst of new routes) flushes along the way, so what it wrote first is
/// durable without waiting for the rest. On failure every change of this
/// cycle not yet flushed is pending again and the error is returned
/// (logged and counted here).
pub fn write_pending(
    store: &dyn RouteStore,
    sub: &Subscription,
    metrics: &Metrics,
    now: crate::clock::UnixMillis,
    flush_every: Duration,
) -> Result<(), String> {
    // Changes arriving during the cycle wait for the next one, so that a
    // cycle ends (and sync cursors may advance) under sustained load.
    let changed = sub.take_changed();
    if changed.is_empty() {
        return Ok(());
    }
    let mut addrs: Vec<IpAddr> = changed.into_iter().collect();
    addrs.sort_unstable_by_key(key_order);
    let started = Instant::now();
    let mut flushed_at = started;
    // addrs[..durable] are flushed; the rest is pending again on failure.
    let mut durable = 0;
    let fail = |what: &str, e: StoreError, durable: usize| {
        metrics.store_errors.inc();
        sub.requeue(addrs[durable..].iter().copied());
        error!(error = %e, pending = sub.pending(), "route store {what} failed; keeping the changes and retrying");
        Err(format!("{what}: {e}"))
    };
    let mut events = Vec::with_capacity(WRITE_BATCH.min(addrs.len()));
    let mut written = 0;
    for part in addrs.chunks(WRITE_BATCH) {
        events.clear();
        sub.current(part, &mut events);
        if let Err(e) = store.write(&events) {
            return fail("write", e, durable);
        }
        written += part.len();
        metrics.store_writes.inc_by(part.len() as u64);
        if written < addrs.len() && flushed_at.elapsed() >= flush_every {
            if let Err(e) = store.flush() {
                return fail("flush", e, durable);
            }
            metrics.store_flushes.inc();
            durable = written;
            flushed_at = Instant::now();
        }
    }
    drop(events);
    if let Err(e) = store.set_time(now).and_then(|()| store.flush()) {
        return fail("flush", e, durable);
    }
    metrics.store_flushes.inc();
    metrics.store_flush_seconds.observe(started.elapsed().as_secs_f64());
    Ok(())
}

/// Records written between two [`release_free_memory`] calls of the writer.
const TRIM_AFTER: u64 = 50_000;
/// ... or this many, when a cycle leaves nothing pending (a burst ended).
const TRIM_QUIET: u64 = 4_096;

/// Returns freed heap memory to the system (glibc keeps it otherwise: a
/// 1 M-route load or fill leaves ~100 MiB of freed buffers in the RSS).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(addr: &str, expires: u64) -> Route {
        Route {
            addr: addr.parse().unwrap(),
            attributions: SmallVec::from_elem(
                Attribution {
                    domain: Arc::from("www.listed.test"),
                    list: Arc::from("vpn"),
                    expires,
                    source: Source::Dns,
                },
                1,
            ),
            names_total: 1,
        }
    }

    #[test]
    fn key_order_is_the_order_of_the_stored_keys() {
        let mut addrs: Vec<IpAddr> = ["198.51.100.7", "2001:db8::1", "10.0.0.1", "::1", "c633:6407::", "198.51.100.6"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let mut by_key = addrs.clone();
        by_key.sort_by_key(|a| key(*a));
        addrs.sort_unstable_by_key(key_order);
        assert_eq!(addrs, by_key);
    }

    #[test]
    fn round_trip_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 1 << 20).unwrap();
            s.write(&[
                RouteEvent::Added(route("198.51.100.1", 10)),
                RouteEvent::Added(route("2001:db8::1", 20)),
                RouteEvent::Added(route("198.51.100.2", 30)),
            ])
            .unwrap();
            s.write(&[RouteEvent::Removed("198.51.100.2".parse().unwrap())]).unwrap();
            s.flush().unwrap();
        }
        // sled's own threads may hold its files for a moment after the first
        // handle is dropped in this process: wait for the reopen, with a deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        let s = loop {
            match SledStore::open(dir.path(), 1 << 20) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("reopen failed: {e}"),
            }
        };
        let (mut routes, bad) = s.load().unwrap();
        routes.sort_by_key(|r| r.addr);
        assert_eq!(bad, 0);
        assert_eq!(routes, vec![route("198.51.100.1", 10), route("2001:db8::1", 20)]);
    }

    #[test]
    fn binary_records_round_trip_and_json_ones_still_load() {
        let mut r = route("2001:db8::5", 7);
        r.attributions.push(Attribution {
            domain: Arc::from("b.listed.test"),
            list: Arc::from("cdn"),
            expires: u64::MAX - 1,
            source: Source::Peer(Arc::from("peer-a1b2")),
        });
        r.names_total = 40;
        let mut bytes = Vec::new();
        encode_record(&r, &mut bytes);
        assert!(bytes.len() < 80, "{} bytes", bytes.len());
        assert_eq!(decode_record(r.addr, &bytes), Some(r.clone()));
        // Every truncation and any trailing byte is rejected, never a panic.
        for cut in 0..bytes.len() {
            assert_eq!(decode_record(r.addr, &bytes[..cut]), None, "cut at {cut}");
        }
        bytes.push(0);
        assert_eq!(decode_record(r.addr, &bytes), None);
        // What earlier versions wrote.
        let json = br#"{"v":1,"attributions":[{"domain":"www.listed.test","list":"vpn","expires":10,"source":"dns"}]}"#;
        assert_eq!(decode_record("198.51.100.1".parse().unwrap(), json), Some(route("198.51.100.1", 10)));
    }

    proptest::proptest! {
        #[test]
        fn record_decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let _ = decode_record("198.51.100.1".parse().unwrap(), &bytes);
        }
    }

    #[test]
    fn a_store_of_the_old_layout_is_moved() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What earlier versions wrote: JSON records in `db/`.
            let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
            let routes = db.open_tree("routes").unwrap();
            let json =
                br#"{"v":1,"attributions":[{"domain":"www.listed.test","list":"vpn","expires":10,"source":"dns"}]}"#;
            routes.insert([198u8, 51, 100, 1], json.to_vec()).unwrap();
            db.open_tree("store_meta").unwrap().insert("time", &7u64.to_be_bytes()).unwrap();
            db.open_tree("blocking_blocks").unwrap().insert("k", "v").unwrap();
            db.flush().unwrap();
        }
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        let (routes, bad) = s.load().unwrap();
        assert_eq!((routes, bad), (vec![route("198.51.100.1", 10)], 0));
        assert_eq!(s.time().unwrap(), Some(7));
        // Other users' trees stay where they were; the old routes are gone there.
        assert!(s.db().open_tree("blocking_blocks").unwrap().get("k").unwrap().is_some());
        assert!(!s.db().tree_names().iter().any(|n| &n[..] == b"routes"));
    }

    #[test]
    fn second_opener_fails_fast() {
        let dir = tempfile::tempdir().unwrap();
        let _s = SledStore::open(dir.path(), 1 << 20).unwrap();
        let started = Instant::now();
        let err = SledStore::open(dir.path(), 1 << 20).err().expect("second open must fail");
        assert!(started.elapsed() < Duration::from_secs(2));
        let text = err.to_string();
        assert!(text.contains("in use by another process"), "{text}");
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
    }

    #[test]
    fn undecodable_records_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        s.write(&[RouteEvent::Added(route("198.51.100.1", 10))]).unwrap();
        s.with(|db| db.routes.insert(b"xyz", b"not json".to_vec())).unwrap();
        s.with(|db| db.routes.insert([1u8, 2, 3, 4], b"{}".to_vec())).unwrap();
        let (routes, bad) = s.load().unwrap();
        assert_eq!(routes.len(), 1);
        assert_eq!(bad, 2);
    }

    /// A store in memory whose writes and flushes fail while `fail` is set
    /// (a full disk), and which forgets unflushed writes when they fail.
    #[derive(Default)]
    struct FlakyStore {
        fail: std::sync::atomic::AtomicBool,
        durable: std::sync::Mutex<std::collections::BTreeMap<IpAddr, Route>>,
    }

    impl RouteStore for FlakyStore {
        fn load(&self) -> Result<(Vec<Route>, usize), StoreError> {
            Ok((self.durable.lock().unwrap().values().cloned().collect(), 0))
        }
        fn write(&self, events: &[RouteEvent]) -> Result<(), StoreError> {
            if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
                let source = std::io::Error::from_raw_os_error(libc::ENOSPC);
                return Err(StoreError::Io { path: PathBuf::from("/flaky"), source });
            }
            let mut d = self.durable.lock().unwrap();
            for e in events {
                match e {
                    RouteEvent::Added(r) => d.insert(r.addr, r.clone()),
                    RouteEvent::Removed(a) => d.remove(a),
                };
            }
            Ok(())
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn set_time(&self, _: UnixMillis) -> Result<(), StoreError> {
            Ok(())
        }
        fn time(&self) -> Result<Option<UnixMillis>, StoreError> {
            Ok(None)
        }
    }

    /// Records the addresses of every write; fails the write numbered `fail_at`.
    #[derive(Default)]
    struct RecordingStore {
        writes: std::sync::Mutex<Vec<Vec<IpAddr>>>,
        fail_at: std::sync::Mutex<Option<usize>>,
    }

    impl RouteStore for RecordingStore {
        fn load(&self) -> Result<(Vec<Route>, usize), StoreError> {
            Ok((Vec::new(), 0))
        }
        fn write(&self, events: &[RouteEvent]) -> Result<(), StoreError> {
            let mut w = self.writes.lock().unwrap();
            if *self.fail_at.lock().unwrap() == Some(w.len()) {
                *self.fail_at.lock().unwrap() = None;
                let source = std::io::Error::from_raw_os_error(libc::EIO);
                return Err(StoreError::Io { path: PathBuf::from("/recording"), source });
            }
            w.push(
                events
                    .iter()
                    .map(|e| match e {
                        RouteEvent::Added(r) => r.addr,
                        RouteEvent::Removed(a) => *a,
                    })
                    .collect(),
            );
            Ok(())
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn set_time(&self, _: UnixMillis) -> Result<(), StoreError> {
            Ok(())
        }
        fn time(&self) -> Result<Option<UnixMillis>, StoreError> {
            Ok(None)
        }
    }

    #[test]
    fn a_cycle_writes_in_key_order_and_a_failure_keeps_everything_unflushed() {
        use crate::routes::{Clock, RouteTable};
        let table =
            Arc::new(RouteTable::new(Clock::starting_at(1_000), Duration::from_secs(60), Duration::from_secs(3600)));
        let sub = table.subscribe(false, None);
        let metrics = Metrics::new();
        let (d, l) = (Arc::from("x.test"), Arc::from("vpn"));
        // More than two write batches, in an order that is not the key order.
        let n = 2 * WRITE_BATCH as u32 + 100;
        for i in 0..n {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + (i.wrapping_mul(2_654_435_761) >> 8)));
            table.upsert(addr, &d, &l, 1_000_000, Source::Dns);
        }
        let total = table.len();
        let store = RecordingStore::default();
        // The second write fails: nothing was flushed (flush_every is long),
        // so every address of the cycle is pending again.
        *store.fail_at.lock().unwrap() = Some(1);
        let err = write_pending(&store, &sub, &metrics, 1_000, Duration::from_secs(3600)).unwrap_err();
        assert!(err.contains("write"), "{err}");
        assert_eq!(sub.pending(), total);
        assert_eq!(metrics.store_errors.get(), 1);
        store.writes.lock().unwrap().clear();
        write_pending(&store, &sub, &metrics, 1_000, Duration::from_secs(3600)).unwrap();
        assert_eq!(sub.pending(), 0);
        let writes = store.writes.lock().unwrap();
        assert_eq!(writes.len(), total.div_ceil(WRITE_BATCH));
        let all: Vec<IpAddr> = writes.iter().flatten().copied().collect();
        assert_eq!(all.len(), total);
        assert!(all.windows(2).all(|w| key(w[0]) < key(w[1])), "writes are not in key order");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_writes_stay_pending_and_cycles_wait() {
        use crate::routes::{Clock, RouteTable};
        let table =
            Arc::new(RouteTable::new(Clock::starting_at(1_000), Duration::from_secs(60), Duration::from_secs(3600)));
        let flaky = Arc::new(FlakyStore::default());
        let store: Arc<dyn RouteStore> = flaky.clone();
        let sub = table.subscribe(false, None);
        let metrics = Arc::new(Metrics::new());
        let status = Arc::new(StoreStatus::default());
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let shutdown = CancellationToken::new();
        let writer = tokio::spawn(run_writer(
            store,
            sub,
            Duration::from_millis(100),
            metrics.clone(),
            status.clone(),
            *table.clock(),
            shutdown.clone(),
            tx,
        ));
        let (d, l) = (Arc::from("x.test"), Arc::from("vpn"));
        flaky.fail.store(true, std::sync::atomic::Ordering::Relaxed);
        for i in 0..3000u32 {
            table.upsert(IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i)), &d, &l, 1_000_000, Source::Dns);
        }
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let s = status.json();
        assert_eq!(s.state, "degraded", "{s:?}");
        assert!(s.error.as_deref().unwrap_or("").contains("No space left"), "{s:?}");
        assert_eq!(s.pending, 3000);
        assert_eq!(*rx.borrow(), 0, "no write cycle may count while writes fail");
        assert!(metrics.store_errors.get() >= 2);
        // Space returns: everything pending is written, the store matches the table.
        flaky.fail.store(false, std::sync::atomic::Ordering::Relaxed);
        for _ in 0..400 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if status.json().state == "ok" {
                break;
            }
        }
        assert_eq!(status.json(), StoreStatusJson { state: "ok".into(), error: None, pending: 0 });
        assert!(*rx.borrow() >= 1);
        let stored: Vec<Route> = flaky.load().unwrap().0;
        assert_eq!(stored, table.snapshot());
        shutdown.cancel();
        writer.await.unwrap();
    }
}

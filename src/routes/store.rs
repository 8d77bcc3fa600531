//! The route store: routes survive restarts.
//!
//! Behind the small [`RouteStore`] trait (sled today; redb is the fallback
//! NOTES.md names). Writes are batched: the writer task drains the table's
//! changes once per `flush_interval`, writes them in one batch and flushes
//! once, instead of an fsync per answer. Refreshes that only move an expiry
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
use crate::metrics::Metrics;

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
}

/// What a store must do.
pub trait RouteStore: Send + Sync + 'static {
    /// Every stored route; records that cannot be decoded are skipped and
    /// counted in the second value.
    fn load(&self) -> Result<(Vec<Route>, usize), StoreError>;
    /// Writes the current state of the given routes (one batch).
    fn write(&self, events: &[RouteEvent]) -> Result<(), StoreError>;
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// The record stored per address.
#[derive(Serialize, Deserialize)]
struct Record {
    v: u8,
    attributions: SmallVec<[Attribution; 1]>,
}

fn key(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn addr_of(key: &[u8]) -> Option<IpAddr> {
    match key.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(key).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(key).ok()?)),
        _ => None,
    }
}

pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    routes: sled::Tree,
    _lock: File,
}

fn lock_dir(dir: &Path) -> Result<File, StoreError> {
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
    /// Opens (creating) the store in `dir`; `cache` bounds sled's page cache.
    pub fn open(dir: &Path, cache: usize) -> Result<SledStore, StoreError> {
        let lock = lock_dir(dir)?;
        let db_err = |source| StoreError::Db { path: dir.to_path_buf(), source };
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(cache as u64)
            // We flush on our own schedule; sled's background flusher
            // would add fsyncs we did not ask for.
            .flush_every_ms(None)
            .open()
            .map_err(db_err)?;
        let routes = db.open_tree("routes").map_err(db_err)?;
        Ok(SledStore { path: dir.to_path_buf(), db, routes, _lock: lock })
    }

    fn db_err(&self, source: sled::Error) -> StoreError {
        StoreError::Db { path: self.path.clone(), source }
    }

    /// The underlying database (sync keeps its own trees here).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

impl RouteStore for SledStore {
    fn load(&self) -> Result<(Vec<Route>, usize), StoreError> {
        let mut routes = Vec::with_capacity(self.routes.len());
        let mut bad = 0;
        for item in self.routes.iter() {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            let decoded = addr_of(&k).zip(serde_json::from_slice::<Record>(&v).ok());
            match decoded {
                Some((addr, rec)) if rec.v == 1 => routes.push(Route::new(addr, rec.attributions)),
                _ => {
                    bad += 1;
                    warn!(store = %self.path.display(), key = ?&k[..], "skipping a stored route that cannot be decoded");
                }
            }
        }
        Ok((routes, bad))
    }

    fn write(&self, events: &[RouteEvent]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for e in events {
            match e {
                RouteEvent::Added(r) => {
                    let rec = Record { v: 1, attributions: r.attributions.clone() };
                    // Serialising plain strings and integers cannot fail.
                    let value = serde_json::to_vec(&rec).unwrap_or_default();
                    batch.insert(key(r.addr), value);
                }
                RouteEvent::Removed(addr) => batch.remove(key(*addr)),
            }
        }
        self.routes.apply_batch(batch).map_err(|e| self.db_err(e))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.db_err(e))
    }
}

/// Drains `sub` into the store every `interval` until `shutdown`, then
/// once more. Errors are logged and counted; the table keeps serving.
/// `cycles` counts completed write cycles: every change made before a
/// cycle began is durable once it completes (peer sync saves its cursors
/// by it).
pub async fn run_writer(
    store: Arc<dyn RouteStore>,
    sub: Subscription,
    interval: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    cycles: tokio::sync::watch::Sender<u64>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        write_pending(&store, &sub, &metrics).await;
        cycles.send_modify(|c| *c += 1);
        if last {
            return;
        }
    }
}

/// Writes every pending change and flushes once.
pub async fn write_pending(store: &Arc<dyn RouteStore>, sub: &Subscription, metrics: &Arc<Metrics>) {
    const BATCH: usize = 2_000;
    if sub.pending() == 0 {
        return;
    }
    let started = Instant::now();
    loop {
        let events = sub.drain(BATCH);
        if events.is_empty() {
            break;
        }
        let n = events.len();
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.write(&events)).await {
            Ok(Ok(())) => {
                metrics.store_writes.inc_by(n as u64);
            }
            Ok(Err(e)) => {
                metrics.store_errors.inc();
                error!(error = %e, "route store write failed");
            }
            Err(e) => {
                metrics.store_errors.inc();
                error!(error = %e, "route store writer task failed");
            }
        }
        if n < BATCH {
            break;
        }
    }
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.flush()).await {
        Ok(Ok(())) => {
            metrics.store_flushes.inc();
            metrics.store_flush_seconds.observe(started.elapsed().as_secs_f64());
        }
        Ok(Err(e)) => {
            metrics.store_errors.inc();
            error!(error = %e, "route store flush failed");
        }
        Err(e) => {
            metrics.store_errors.inc();
            error!(error = %e, "route store flush task failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Source;

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
        s.routes.insert(b"xyz", b"not json".to_vec()).unwrap();
        s.routes.insert([1u8, 2, 3, 4], b"{}".to_vec()).unwrap();
        let (routes, bad) = s.load().unwrap();
        assert_eq!(routes.len(), 1);
        assert_eq!(bad, 2);
    }
}

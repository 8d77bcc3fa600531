//! The route store on redb: what the daemon keeps its routes in.
//!
//! Same records as the sled store (`store::encode_record`, keyed by the
//! address's 4 or 16 bytes) in one redb file, `STORE/routes.redb`. A
//! `write` is one transaction committed without fsync
//! (`Durability::None`); `flush` commits an empty transaction with
//! `Durability::Immediate`, which makes every earlier one durable, so the
//! store writer's contract (durable once `flush` returns) is the same as
//! with sled. Measured against sled 0.34 (BENCHMARKS.md, issue 8): 1 M
//! routes written in 2.8 s instead of 22 s, +17 MiB instead of +107 MiB
//! while writing, a third of the disk space.
//!
//! After an I/O error (a full disk) redb, like sled, refuses to go on
//! until the database is opened again: the next operation reopens it.
//! Peer sync's change log and the blocking engine stay in the sled
//! database `STORE/db`; routes an older version kept there are moved here
//! once ([`RedbStore::migrate_from`]).

use std::fs::File;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::store::{ChunkedLoad, RouteStore, StoreError, encode_record, key_bytes, lock_dir};
use super::{Route, RouteEvent, UnixMillis};

const ROUTES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("routes");
const META: TableDefinition<&str, u64> = TableDefinition::new("store_meta");

pub struct RedbStore {
    path: PathBuf,
    cache: usize,
    /// `None` after an I/O error: reopened by the next operation.
    db: std::sync::Mutex<Option<Database>>,
    fresh: bool,
    _lock: File,
}

fn open_db(file: &Path, cache: usize) -> Result<Database, redb::Error> {
    let db = Database::builder().set_cache_size(cache).create(file)?;
    let txn = db.begin_write()?;
    txn.open_table(ROUTES)?;
    txn.open_table(META)?;
    txn.commit()?;
    Ok(db)
}

impl RedbStore {
    /// Opens (creating) the store in `dir`, locking the directory; `cache`
    /// is redb's cache size.
    pub fn open(dir: &Path, cache: usize) -> Result<RedbStore, StoreError> {
        let lock = lock_dir(dir)?;
        let file = dir.join("routes.redb");
        let fresh = !file.exists();
        let db = open_db(&file, cache).map_err(|source| StoreError::Redb { path: dir.to_path_buf(), source })?;
        Ok(RedbStore { path: dir.to_path_buf(), cache, db: std::sync::Mutex::new(Some(db)), fresh, _lock: lock })
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Redb { path: self.path.clone(), source: e.into() }
    }

    /// Runs `f` on the database, reopening it first if an earlier operation
    /// failed with an I/O error.
    fn with<T>(&self, f: impl FnOnce(&Database) -> Result<T, redb::Error>) -> Result<T, StoreError> {
        let mut guard = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let db = match guard.take() {
            Some(db) => db,
            None => {
                let db = open_db(&self.path.join("routes.redb"), self.cache).map_err(|e| self.err(e))?;
                tracing::info!(store = %self.path.display(), "route store reopened after an I/O error");
                db
            }
        };
        let result = f(&db);
        // After an I/O error the handle is dropped (closing the file) and
        // the next operation opens it again; writes not flushed before the
        // error are written again by the caller.
        if !matches!(result, Err(redb::Error::Io(_) | redb::Error::PreviousIo)) {
            *guard = Some(db);
        }
        result.map_err(|e| self.err(e))
    }

    /// Moves the routes an older version kept in the sled database (tree
    /// `routes`, and the store's time) into this store, once: only when
    /// this store was created by this open. Returns how many were moved.
    pub fn migrate_from(&self, shared: &sled::Db) -> Result<usize, StoreError> {
        let sled_err = |source| StoreError::Db { path: self.path.clone(), source };
        if !self.fresh || !shared.tree_names().iter().any(|n| &n[..] == b"routes") {
            return Ok(0);
        }
        let old = shared.open_tree("routes").map_err(sled_err)?;
        let mut n = 0;
        let mut batch: Vec<(sled::IVec, sled::IVec)> = Vec::with_capacity(4096);
        let move_batch = |batch: &mut Vec<(sled::IVec, sled::IVec)>| {
            self.with(|db| {
                let txn = db.begin_write()?;
                {
                    let mut t = txn.open_table(ROUTES)?;
                    for (k, v) in batch.iter() {
                        // Records stay as they were (JSON ones are still read).
                        t.insert(&k[..], &v[..])?;
                    }
                }
                txn.commit()?;
                Ok(())
            })?;
            batch.clear();
            Ok::<(), StoreError>(())
        };
        for item in old.iter() {
            batch.push(item.map_err(sled_err)?);
            n += 1;
            if batch.len() == 4096 {
                move_batch(&mut batch)?;
            }
        }
        move_batch(&mut batch)?;
        let meta = shared.open_tree("store_meta").map_err(sled_err)?;
        if let Some(t) = meta.get("time").map_err(sled_err)?
            && let Ok(t) = <[u8; 8]>::try_from(&t[..])
        {
            self.set_time(u64::from_be_bytes(t))?;
        }
        self.flush()?;
        shared.drop_tree("routes").map_err(sled_err)?;
        shared.drop_tree("store_meta").map_err(sled_err)?;
        shared.flush().map_err(sled_err)?;
        tracing::info!(routes = n, "route store moved from sled to redb");
        Ok(n)
    }
}

impl RedbStore {
    /// Calls `each` with every stored record's key and value, decodable or
    /// not (for `dnsbgpd store`: check, repair, export).
    #[doc(hidden)]
    pub fn each_raw(&self, each: &mut dyn FnMut(&[u8], &[u8])) -> Result<(), StoreError> {
        self.with(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(ROUTES)?;
            for item in table.iter()? {
                let (k, v) = item?;
                each(k.value(), v.value());
            }
            Ok(())
        })
    }

    /// Removes the records with these keys and makes it durable.
    #[doc(hidden)]
    pub fn remove_raw(&self, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        self.with(|db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut table = txn.open_table(ROUTES)?;
                for k in keys {
                    table.remove(&k[..])?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }
}

/// The daemon's store in `dir`: the routes in redb (directory locked
/// first), and the sled database peer sync and the blocking engine keep
/// their trees in (`dir/db`); routes an older version kept in sled are
/// moved over once.
pub fn open_daemon_store(dir: &Path, cache: usize) -> Result<(RedbStore, sled::Db), StoreError> {
    let routes = RedbStore::open(dir, cache)?;
    let shared = sled::Config::new()
        .path(dir.join("db"))
        .cache_capacity(cache as u64)
        // Flushed on our own schedule (sync cursors, blocks).
        .flush_every_ms(None)
        .open()
        .map_err(|source| StoreError::Db { path: dir.to_path_buf(), source })?;
    routes.migrate_from(&shared)?;
    Ok((routes, shared))
}

/// A write transaction that commits without fsync.
fn quick_write(db: &Database) -> Result<redb::WriteTransaction, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::None)?;
    Ok(txn)
}

impl RouteStore for RedbStore {
    fn load(&self) -> Result<(Vec<Route>, usize), StoreError> {
        let mut routes = Vec::new();
        let bad = self.load_chunks(4096, &mut |chunk| routes.extend(chunk))?;
        Ok((routes, bad))
    }

    fn load_chunks(&self, chunk: usize, each: &mut dyn FnMut(Vec<Route>)) -> Result<usize, StoreError> {
        self.with(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(ROUTES)?;
            let mut load = ChunkedLoad::new(&self.path, chunk, each);
            for item in table.iter()? {
                let (k, v) = item?;
                load.push(k.value(), v.value());
            }
            Ok(load.finish())
        })
    }

    fn write(&self, events: &[RouteEvent]) -> Result<(), StoreError> {
        self.with(|db| {
            let txn = quick_write(db)?;
            {
                let mut table = txn.open_table(ROUTES)?;
                let mut value = Vec::with_capacity(64);
                for e in events {
                    match e {
                        RouteEvent::Added(r) => {
                            encode_record(r, &mut value);
                            let (k, n) = key_bytes(r.addr);
                            table.insert(&k[..n], value.as_slice())?;
                        }
                        RouteEvent::Removed(addr) => {
                            let (k, n) = key_bytes(*addr);
                            table.remove(&k[..n])?;
                        }
                    }
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        // An empty transaction with the default durability (Immediate)
        // makes the earlier non-durable ones durable.
        self.with(|db| Ok(db.begin_write()?.commit()?))
    }

    fn set_time(&self, now: UnixMillis) -> Result<(), StoreError> {
        self.with(|db| {
            let txn = quick_write(db)?;
            txn.open_table(META)?.insert("time", now)?;
            txn.commit()?;
            Ok(())
        })
    }

    fn count(&self) -> Result<Option<usize>, StoreError> {
        self.with(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(ROUTES)?;
            Ok(Some(usize::try_from(table.len()?).unwrap_or(usize::MAX)))
        })
    }

    fn time(&self) -> Result<Option<UnixMillis>, StoreError> {
        self.with(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(META)?;
            Ok(table.get("time")?.map(|v| v.value()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{Attribution, Source};
    use smallvec::SmallVec;
    use std::sync::Arc;

    fn route(addr: &str, expires: u64) -> Route {
        Route::new(
            addr.parse().unwrap(),
            SmallVec::from_elem(
                Attribution {
                    domain: Arc::from("www.listed.test"),
                    list: Arc::from("vpn"),
                    expires,
                    source: Source::Dns,
                },
                1,
            ),
        )
    }

    #[test]
    fn routes_of_an_older_sled_store_are_moved_once() {
        let dir = tempfile::tempdir().unwrap();
        let shared = sled::Config::new().path(dir.path().join("db")).open().unwrap();
        let json = br#"{"v":1,"attributions":[{"domain":"www.listed.test","list":"vpn","expires":10,"source":"dns"}]}"#;
        shared.open_tree("routes").unwrap().insert([198u8, 51, 100, 1], json.to_vec()).unwrap();
        shared.open_tree("store_meta").unwrap().insert("time", &7u64.to_be_bytes()).unwrap();
        shared.open_tree("blocking_blocks").unwrap().insert("k", "v").unwrap();
        {
            let s = RedbStore::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(s.migrate_from(&shared).unwrap(), 1);
            assert_eq!(s.load().unwrap(), (vec![route("198.51.100.1", 10)], 0));
            assert_eq!(s.time().unwrap(), Some(7));
        }
        // The old tree is gone, other users' trees stay; a second open moves nothing.
        assert!(!shared.tree_names().iter().any(|n| &n[..] == b"routes"));
        assert!(shared.open_tree("blocking_blocks").unwrap().get("k").unwrap().is_some());
        shared.open_tree("routes").unwrap().insert([198u8, 51, 100, 9], json.to_vec()).unwrap();
        let s = RedbStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.migrate_from(&shared).unwrap(), 0);
        assert_eq!(s.load().unwrap().0.len(), 1);
    }

    #[test]
    fn round_trip_remove_time_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RedbStore::open(dir.path(), 1 << 20).unwrap();
            s.write(&[
                RouteEvent::Added(route("198.51.100.1", 10)),
                RouteEvent::Added(route("2001:db8::1", 20)),
                RouteEvent::Added(route("198.51.100.2", 30)),
            ])
            .unwrap();
            s.write(&[RouteEvent::Removed("198.51.100.2".parse().unwrap())]).unwrap();
            s.set_time(1234).unwrap();
            s.flush().unwrap();
            assert!(RedbStore::open(dir.path(), 1 << 20).is_err(), "a second opener fails");
        }
        let s = RedbStore::open(dir.path(), 1 << 20).unwrap();
        let (mut routes, bad) = s.load().unwrap();
        routes.sort_by_key(|r| r.addr);
        assert_eq!(bad, 0);
        assert_eq!(routes, vec![route("198.51.100.1", 10), route("2001:db8::1", 20)]);
        assert_eq!(s.time().unwrap(), Some(1234));
    }
}

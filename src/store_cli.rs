//! `dnsbgpd store check|repair|export`: look into the route store of a
//! stopped daemon.
//!
//! The store (`[routes] store`, a directory with a `LOCK` file) holds the
//! routes in a redb file (`routes.redb`), and in a sled database (`db/`)
//! this instance's sync change log (`sync_changes`, `sync_meta`) and the
//! blocking engine's blocks. A
//! running daemon holds the lock, so these commands refuse to touch its
//! store and say so.
//!
//! * `check` reads every route and change-log record and reports the ones
//!   that cannot be decoded (what the daemon skips with a warning at
//!   start) and any error redb or sled reports while reading (a damaged
//!   file).
//! * `repair` removes the undecodable records; when sled cannot open or
//!   read a database at all, it moves the whole directory aside
//!   (`<store>.damaged-<unix seconds>`) so that the next start begins with
//!   an empty store. Routes then come back from the resolver's answers and
//!   from sync peers (which send a snapshot to an instance they do not
//!   know); nothing is deleted.
//! * `export` prints every stored route as one JSON object a line (the
//!   fields of `GET /api/v1/routes`), e.g. before a repair.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::routes::redb_store::{RedbStore, open_daemon_store};
use crate::routes::store::{StoreError, decode_stored};
use crate::sync::log::stored_codec;

/// The page cache of these one-off reads.
const CACHE: usize = 16 << 20;

/// What `check` found.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub routes: usize,
    pub bad_routes: Vec<String>,
    pub changes: usize,
    pub bad_changes: Vec<String>,
    /// Errors redb or sled reported while reading (a damaged database file).
    pub read_errors: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.bad_routes.is_empty() && self.bad_changes.is_empty() && self.read_errors.is_empty()
    }

    pub fn text(&self, dir: &Path) -> String {
        let mut s = format!(
            "{}: {} routes, {} change-log records; {} undecodable routes, {} undecodable change-log records, {} \
             read errors\n",
            dir.display(),
            self.routes,
            self.changes,
            self.bad_routes.len(),
            self.bad_changes.len(),
            self.read_errors.len()
        );
        for k in &self.bad_routes {
            let _ = writeln!(s, "  undecodable route record, key {k}");
        }
        for k in &self.bad_changes {
            let _ = writeln!(s, "  undecodable change-log record, key {k}");
        }
        for e in &self.read_errors {
            let _ = writeln!(s, "  read error: {e}");
        }
        s
    }
}

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
pub enum StoreCliError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("route store {path}: {message}")]
    Other { path: PathBuf, message: String },
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The routes (redb) and the database of sync and blocking (sled).
struct Store {
    routes: RedbStore,
    shared: sled::Db,
}

fn open(dir: &Path) -> Result<Store, StoreCliError> {
    if !dir.join("db").exists() && !dir.join("routes.redb").exists() {
        return Err(StoreCliError::Other {
            path: dir.to_path_buf(),
            message: "no store here (no db, no routes.redb)".into(),
        });
    }
    let (routes, shared) = open_daemon_store(dir, CACHE)?;
    Ok(Store { routes, shared })
}

/// A report and the keys of the undecodable routes and change-log records.
type Found = (Report, Vec<Vec<u8>>, Vec<Vec<u8>>);

/// Reads both trees.
fn scan(store: &Store) -> Result<Found, String> {
    let mut r = Report::default();
    let (mut bad_routes, mut bad_changes) = (Vec::new(), Vec::new());
    let db = &store.shared;
    let read = store.routes.each_raw(&mut |k, v| {
        r.routes += 1;
        if decode_stored(k, v).is_none() {
            r.bad_routes.push(hex(k));
            bad_routes.push(k.to_vec());
        }
    });
    if let Err(e) = read {
        r.read_errors.push(format!("routes: {e}"));
    }
    for item in db.open_tree("sync_changes").map_err(|e| e.to_string())?.iter() {
        match item {
            Ok((k, v)) => {
                r.changes += 1;
                if k.len() != 8 || stored_codec::decode(&v).is_none() {
                    r.bad_changes.push(hex(&k));
                    bad_changes.push(k.to_vec());
                }
            }
            Err(e) => r.read_errors.push(format!("sync_changes: {e}")),
        }
    }
    Ok((r, bad_routes, bad_changes))
}

/// `dnsbgpd store check`.
pub fn check(dir: &Path) -> Result<Report, StoreCliError> {
    let store = open(dir)?;
    let (report, _, _) = scan(&store).map_err(|message| StoreCliError::Other { path: dir.to_path_buf(), message })?;
    Ok(report)
}

/// What `repair` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repaired {
    /// Nothing was wrong.
    Clean,
    /// Undecodable records removed: (routes, change-log records).
    Removed(usize, usize),
    /// The database could not be read; the directory was moved here.
    MovedAside(PathBuf),
}

/// `dnsbgpd store repair`.
pub fn repair(dir: &Path) -> Result<Repaired, StoreCliError> {
    let other = |message: String| StoreCliError::Other { path: dir.to_path_buf(), message };
    let opened = match open(dir) {
        Ok(store) => scan(&store).ok().map(|found| (store, found)),
        // redb or sled cannot open it: damaged.
        Err(StoreCliError::Store(StoreError::Db { .. } | StoreError::Redb { .. })) => None,
        // In use by a running daemon, unreadable, or not a store: never move it.
        Err(e) => return Err(e),
    };
    match opened {
        Some((store, (report, bad_routes, bad_changes))) if report.read_errors.is_empty() => {
            if report.is_clean() {
                return Ok(Repaired::Clean);
            }
            let db = &store.shared;
            store.routes.remove_raw(&bad_routes)?;
            let changes = db.open_tree("sync_changes").map_err(|e| other(e.to_string()))?;
            for k in &bad_changes {
                changes.remove(k).map_err(|e| other(e.to_string()))?;
            }
            db.flush().map_err(|e| other(e.to_string()))?;
            Ok(Repaired::Removed(bad_routes.len(), bad_changes.len()))
        }
        damaged => {
            // Release the lock and sled's files before moving them.
            drop(damaged);
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let name = format!("{}.damaged-{secs}", dir.file_name().and_then(|n| n.to_str()).unwrap_or("store"));
            let aside = dir.with_file_name(name);
            std::fs::rename(dir, &aside).map_err(|e| other(format!("cannot move it to {}: {e}", aside.display())))?;
            Ok(Repaired::MovedAside(aside))
        }
    }
}

#[derive(Serialize)]
struct ExportLine<'a> {
    prefix: String,
    domain: &'a str,
    list: &'a str,
    expires: String,
    source: &'a str,
}

/// `dnsbgpd store export`: every stored attribution, one JSON object a
/// line; undecodable records are left out (and counted in the result).
pub fn export(dir: &Path, out: &mut dyn std::io::Write) -> Result<(usize, usize), StoreCliError> {
    let other = |message: String| StoreCliError::Other { path: dir.to_path_buf(), message };
    let store = open(dir)?;
    let (mut lines, mut bad) = (0, 0);
    let mut failed: Option<String> = None;
    store.routes.each_raw(&mut |k, v| {
        if failed.is_some() {
            return;
        }
        let Some(route) = decode_stored(k, v) else {
            bad += 1;
            return;
        };
        let prefix = match route.addr {
            std::net::IpAddr::V4(a) => format!("{a}/32"),
            std::net::IpAddr::V6(a) => format!("{a}/128"),
        };
        for a in &route.attributions {
            let line = ExportLine {
                prefix: prefix.clone(),
                domain: &a.domain,
                list: &a.list,
                expires: crate::clock::rfc3339(a.expires),
                source: a.source.as_str(),
            };
            let written = serde_json::to_string(&line)
                .map_err(|e| e.to_string())
                .and_then(|text| writeln!(out, "{text}").map_err(|e| format!("writing the export: {e}")));
            if let Err(e) = written {
                failed = Some(e);
                return;
            }
            lines += 1;
        }
    })?;
    if let Some(e) = failed {
        return Err(other(e));
    }
    Ok((lines, bad))
}

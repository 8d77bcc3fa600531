//! Watching list files for changes (notify).
//!
//! Each list file's *directory* is watched and events are filtered by file
//! name: a watch on the file itself goes silent after an editor or a deploy
//! tool replaces it with a rename (NOTES.md). Events only request a reload
//! on a channel of capacity one, so a burst of writes becomes one reload.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    Signal,
    FileChanged,
    Api,
}

/// Starts watching `files`; keep the returned watcher alive.
pub fn watch(files: &[PathBuf], tx: mpsc::Sender<ReloadCause>) -> notify::Result<RecommendedWatcher> {
    let mut dirs: BTreeMap<PathBuf, BTreeSet<OsString>> = BTreeMap::new();
    for f in files {
        let dir = f.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        if let Some(name) = f.file_name() {
            dirs.entry(dir).or_default().insert(name.to_os_string());
        }
    }
    let names = dirs.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let event = match res {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "list file watcher error");
                return;
            }
        };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            let dir = p.parent().unwrap_or(Path::new("."));
            p.file_name()
                .is_some_and(|n| names.iter().any(|(d, set)| set.contains(n) && (d == dir || same_dir(d, dir))))
        });
        if relevant {
            debug!(paths = ?event.paths, kind = ?event.kind, "list file changed");
            let _ = tx.try_send(ReloadCause::FileChanged);
        }
    })?;
    for dir in dirs.keys() {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn rename_replace_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vpn.txt");
        std::fs::write(&file, "a.test\n").unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let _w = watch(std::slice::from_ref(&file), tx).unwrap();
        // An unrelated file in the same directory is not a reason.
        std::fs::write(dir.path().join("other.txt"), "x").unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv()).await.is_err());
        for round in 0..2 {
            let tmp = dir.path().join(format!(".vpn.txt.tmp{round}"));
            std::fs::write(&tmp, format!("b{round}.test\n")).unwrap();
            std::fs::rename(&tmp, &file).unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
            assert_eq!(got.unwrap(), Some(ReloadCause::FileChanged), "round {round}");
            while rx.try_recv().is_ok() {}
        }
    }
}

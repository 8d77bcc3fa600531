//! Reading a list file safely.
//!
//! A list path is whatever the operator (or a deploy tool) put there: it
//! may be a FIFO, a device (`/dev/zero` behind a symlink), a directory, a
//! huge sparse file, or a file being written in place right now. Each of
//! these must fail the (re)load with a clear error, which keeps the
//! previous lists, instead of hanging, eating memory or withdrawing every
//! route:
//!
//! * the file is opened non-blocking (opening a FIFO without a writer does
//!   not wait) and judged by `fstat` on the open descriptor: only a
//!   regular file is read;
//! * its size must be at most `max_size` (`[routes] max_list_size`), and
//!   no more than that is ever read;
//! * a file modified within the last [`STABLE`] is read only once its size
//!   and mtime have stayed the same for that long (bounded by
//!   [`STABLE_WAIT`]), and it is read again if it changed while being read;
//! * text is taken line by line: a line that is not UTF-8 is an invalid
//!   line (reported with its number), not a failure of the file.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// How long a file's size and mtime must stay unchanged before it is read.
pub const STABLE: Duration = Duration::from_millis(500);
/// The longest wait for a file to become stable.
pub const STABLE_WAIT: Duration = Duration::from_secs(3);

/// A line that could not be used: (line number, message).
pub type BadLine = (usize, String);

fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn other(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

fn stamp(meta: &std::fs::Metadata) -> (u64, i64, i64) {
    (meta.len(), meta.mtime(), meta.mtime_nsec())
}

/// Reads a list file: its text with every non-UTF-8 line blanked (so line
/// numbers stay right), and those lines.
pub fn read_list(path: &Path, max_size: u64) -> std::io::Result<(String, Vec<BadLine>)> {
    let mut file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let started = std::time::Instant::now();
    let mut rested = false;
    let bytes = loop {
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(other(format!("{} is {}, not a regular file", path.display(), kind(&meta))));
        }
        if meta.len() > max_size {
            return Err(other(format!(
                "{} is {} bytes, more than max_list_size ({max_size} bytes)",
                path.display(),
                meta.len()
            )));
        }
        let age = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok());
        if age.is_none_or(|a| a < STABLE) && !rested {
            // Being written (or stamped in the future): wait until it rests.
            if started.elapsed() >= STABLE_WAIT {
                return Err(other(format!(
                    "{} keeps changing (written for more than {STABLE_WAIT:?}); not read",
                    path.display()
                )));
            }
            let before = stamp(&meta);
            std::thread::sleep(STABLE.saturating_sub(age.unwrap_or_default()));
            // An mtime in the future never ages: unchanged for STABLE is enough.
            rested = age.is_none() && stamp(&file.metadata()?) == before;
            continue;
        }
        let before = stamp(&meta);
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        (&mut file).take(max_size + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > max_size {
            return Err(other(format!("{} grew beyond max_list_size ({max_size} bytes)", path.display())));
        }
        if stamp(&file.metadata()?) != before {
            if started.elapsed() >= STABLE_WAIT {
                return Err(other(format!("{} changed while being read; not read", path.display())));
            }
            file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
            rested = false;
            continue;
        }
        break bytes;
    };
    Ok(text_by_line(&bytes))
}

/// The UTF-8 lines of `bytes`; other lines become empty and are reported.
pub fn text_by_line(bytes: &[u8]) -> (String, Vec<BadLine>) {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return (s.to_string(), Vec::new());
    }
    let mut text = String::with_capacity(bytes.len());
    let mut bad = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            text.push('\n');
        }
        match std::str::from_utf8(line) {
            Ok(l) => text.push_str(l),
            Err(e) => bad.push((i + 1, format!("not UTF-8 (invalid byte at column {})", e.valid_up_to() + 1))),
        }
    }
    (text, bad)
}

/// Opens `path` only to tell whether it exists as a readable regular file
/// (for `check`).
pub fn check_readable(path: &Path, max_size: u64) -> std::io::Result<()> {
    let file = File::options().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(other(format!("{} is {}, not a regular file", path.display(), kind(&meta))));
    }
    if meta.len() > max_size {
        return Err(other(format!("{} is {} bytes, more than max_list_size", path.display(), meta.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old(path: &Path) {
        let t = SystemTime::now() - Duration::from_secs(10);
        let f = File::options().write(true).open(path).unwrap();
        f.set_modified(t).unwrap();
    }

    #[test]
    fn regular_files_only_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.txt");
        std::fs::write(&ok, "a.test\nb.test\n").unwrap();
        old(&ok);
        assert_eq!(read_list(&ok, 1 << 20).unwrap(), ("a.test\nb.test\n".to_string(), vec![]));
        // A directory, a FIFO without a writer (must not block), /dev/zero behind a symlink.
        let err = read_list(dir.path(), 1 << 20).unwrap_err().to_string();
        assert!(err.contains("a directory"), "{err}");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path string we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = std::time::Instant::now();
        let err = read_list(&fifo, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("a FIFO"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let err = read_list(&zero, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("character device"), "{err}");
        // A sparse file far beyond the cap is refused without reading it.
        let sparse = dir.path().join("sparse");
        File::create(&sparse).unwrap().set_len(1 << 30).unwrap();
        old(&sparse);
        let err = read_list(&sparse, 256 << 20).unwrap_err().to_string();
        assert!(err.contains("max_list_size"), "{err}");
        assert!(check_readable(&sparse, 256 << 20).is_err());
        assert!(check_readable(&ok, 256 << 20).is_ok());
    }

    #[test]
    fn invalid_utf8_is_one_bad_line() {
        let (text, bad) = text_by_line(b"a.test\n\xff\xfe.test\nc.test\n");
        assert_eq!(text, "a.test\n\nc.test\n");
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, 2);
    }

    #[test]
    fn a_file_being_written_is_read_once_it_rests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slow.txt");
        std::fs::write(&path, "a.test\n").unwrap();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut f = File::options().append(true).open(&path).unwrap();
                for i in 0..4 {
                    std::thread::sleep(Duration::from_millis(150));
                    std::io::Write::write_all(&mut f, format!("w{i}.test\n").as_bytes()).unwrap();
                }
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        let (text, _) = read_list(&path, 1 << 20).unwrap();
        writer.join().unwrap();
        assert_eq!(text.lines().count(), 5, "read only after the last write: {text:?}");
    }
}

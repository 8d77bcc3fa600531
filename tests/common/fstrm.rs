//! Where a resolver sends dnstap ([`DnstapTarget`]), the reference receiver
//! `fstrm_capture` ([`FstrmCapture`]) and helpers to read what it wrote.

#![allow(dead_code)]

use super::process::*;
use anyhow::{Context, Result, bail};
use std::fs::{self};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const FSTRM_BINS: &[&str] = &["fstrm_capture"];

// ---------------------------------------------------------------------------------------------
// dnstap target + fstrm_capture
// ---------------------------------------------------------------------------------------------

/// Where a resolver sends dnstap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnstapTarget {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// `fstrm_capture -t protobuf:dnstap.Dnstap` listening on a unix socket or 127.0.0.1 TCP port,
/// writing to `output()`. Its output is stdio-buffered: use [`flush`](Self::flush) /
/// [`wait_until`](Self::wait_until) / [`bytes`](Self::bytes) to read it.
pub struct FstrmCapture {
    proc: Process,
    target: DnstapTarget,
    output: PathBuf,
    dir: PathBuf,
    restarts: usize,
}

pub const DNSTAP_CONTENT_TYPE: &str = "protobuf:dnstap.Dnstap";

impl FstrmCapture {
    /// Listen on `<dir>/fstrm*/dnstap.sock`.
    pub fn unix(dir: &Path) -> Result<FstrmCapture> {
        let sub = unique_subdir(&abs(dir)?, "fstrm")?;
        let sock = sub.join("dnstap.sock");
        check_unix_path(&sock)?;
        Self::start_at(sub, DnstapTarget::Unix(sock))
    }

    /// Listen on 127.0.0.1:<free port>.
    pub fn tcp(dir: &Path) -> Result<FstrmCapture> {
        let sub = unique_subdir(&abs(dir)?, "fstrm")?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        Self::start_at(sub, DnstapTarget::Tcp(addr))
    }

    /// Listen on an explicit target (e.g. the socket path of a previous capture).
    pub fn at(dir: &Path, target: DnstapTarget) -> Result<FstrmCapture> {
        let sub = unique_subdir(&abs(dir)?, "fstrm")?;
        Self::start_at(sub, target)
    }

    fn start_at(dir: PathBuf, target: DnstapTarget) -> Result<FstrmCapture> {
        let output = dir.join("capture.0.fstrm");
        let proc = spawn_capture(&dir, &target, &output, 0)?;
        Ok(FstrmCapture { proc, target, output, dir, restarts: 0 })
    }

    pub fn target(&self) -> DnstapTarget {
        self.target.clone()
    }
    /// Current output file (changes on [`restart`](Self::restart)).
    pub fn output(&self) -> &Path {
        &self.output
    }
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// SIGHUP: fstrm_capture flushes its buffered output file.
    pub fn flush(&self) -> Result<()> {
        self.proc.signal(SIGHUP)?;
        sleep(Duration::from_millis(50));
        Ok(())
    }

    /// Flush, then return the output file's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>> {
        if self.proc.started() {
            self.flush()?;
        }
        fs::read(&self.output).with_context(|| format!("read {}", self.output.display()))
    }

    /// Flush every 100 ms until `pred(bytes)` holds or `timeout` passes; returns the bytes
    /// (Err with size info on timeout).
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let b = self.bytes()?;
            if pred(&b) {
                return Ok(b);
            }
            if Instant::now() >= deadline {
                bail!(
                    "dnstap capture {} did not reach the expected state within {timeout:?} \
                     ({} bytes, {} data frames)",
                    self.output.display(),
                    b.len(),
                    fstrm_data_frames(&b).map(|f| f.len()).unwrap_or(0)
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Stop (flushes and closes the output file).
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Stop and start a new listener on the same target, writing to a new output file.
    pub fn restart(&mut self) -> Result<()> {
        self.proc.kill();
        self.restarts += 1;
        self.output = self.dir.join(format!("capture.{}.fstrm", self.restarts));
        self.proc = spawn_capture(&self.dir, &self.target, &self.output, self.restarts)?;
        Ok(())
    }
}

fn spawn_capture(dir: &Path, target: &DnstapTarget, output: &Path, n: usize) -> Result<Process> {
    let mut cmd = Command::new(bin("fstrm_capture")?);
    cmd.arg("-t").arg(DNSTAP_CONTENT_TYPE);
    match target {
        DnstapTarget::Unix(p) => {
            // fstrm_capture unlinks a stale socket itself, but then we could not tell when the
            // new one is ready.
            let _ = fs::remove_file(p);
            cmd.arg("-u").arg(p);
        }
        DnstapTarget::Tcp(a) => {
            cmd.arg("-a").arg(a.ip().to_string()).arg("-p").arg(a.port().to_string());
        }
    }
    cmd.arg("-w").arg(output);
    let mut proc = Process::spawn("fstrm_capture", cmd, &dir.join(format!("fstrm_capture.{n}.log")))?;
    let start = Instant::now();
    loop {
        if !proc.is_running() {
            bail!("fstrm_capture exited at startup; log:\n{}", proc.log());
        }
        // "opened output file" is printed after the socket is bound and listening.
        let listening = proc.log().contains("opened output file")
            && match target {
                DnstapTarget::Unix(p) => p.exists(),
                DnstapTarget::Tcp(a) => tcp_listening(a.port()),
            };
        if listening {
            return Ok(proc);
        }
        if start.elapsed() > Duration::from_secs(5) {
            bail!("fstrm_capture did not start listening on {target:?}; log:\n{}", proc.log());
        }
        sleep(Duration::from_millis(10));
    }
}

/// Split a Frame Streams file into its data frames (control frames are skipped).
pub fn fstrm_data_frames(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut frames = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes.len() - i < 4 {
            bail!("truncated frame length at {i}");
        }
        let len = u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        i += 4;
        if len == 0 {
            // control frame: u32 length, then payload
            if bytes.len() - i < 4 {
                bail!("truncated control frame at {i}");
            }
            let clen = u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
            i += 4 + clen;
        } else {
            if bytes.len() - i < len {
                bail!("truncated data frame at {i}");
            }
            frames.push(bytes[i..i + len].to_vec());
            i += len;
        }
    }
    Ok(frames)
}

/// DNS wire encoding of `name` (no compression), for searching raw dnstap payloads.
/// Case is preserved, so `wire_name("WwW.LiStEd.TeSt")` finds the mixed-case query.
pub fn wire_name(name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        v.push(label.len() as u8);
        v.extend_from_slice(label.as_bytes());
    }
    v.push(0);
    v
}

/// Number of (possibly overlapping) occurrences of `needle` in `hay`.
pub fn count_bytes(hay: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || hay.len() < needle.len() {
        return 0;
    }
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

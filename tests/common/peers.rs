//! Test peers for integration tests: real DNS servers on loopback. Each
//! daemon has its own module (`nsd`, `unbound`, `bind`, `fstrm`, `dig`) on the
//! shared process helper `process`; this module re-exports them all, so
//! `common::peers::Unbound` and the like keep working.
//!
//! * [`Nsd`]     — authoritative server (NSD 4.x) serving the fixed test zones (listed in `nsd`).
//! * [`Unbound`] — recursive resolver (Unbound 1.17) with stub-zones to [`Nsd`] and dnstap
//!   (client query + client response) to a unix socket or TCP.
//! * [`Named`]   — BIND 9.18 resolver with forward zones to [`Nsd`] and dnstap to a unix socket.
//! * [`FstrmCapture`] — `fstrm_capture` listener, a reference dnstap receiver.
//! * [`dig`], [`free_port`], [`require`], [`Process`].
//!
//! Dependencies: std, `anyhow`, `tempfile` (only the caller needs `tempfile` for the dir).
//! Everything listens on 127.0.0.1 only, on ports found with [`free_port`].
//!
//! Typical use (declare the temp dir FIRST so it is dropped LAST, after the peers):
//!
//! ```ignore
//! let tmp = tempfile::tempdir()?;
//! if !peers::require(peers::UNBOUND_BINS) { return Ok(()); }
//! let nsd = peers::Nsd::start(tmp.path())?;
//! let cap = peers::FstrmCapture::unix(tmp.path())?;           // listener before the resolver
//! let ub = peers::Unbound::start(tmp.path(), nsd.port(), cap.target())?;
//! assert_eq!(peers::dig(ub.port(), "www.listed.test", "A")?, [peers::WWW_LISTED_V4]);
//! ```
//!
//! The zone data [`Nsd`] serves is listed in [`nsd`](super::nsd).
//!
//! # Timing notes (measured on Debian 12, 2 cores, tests running in parallel)
//! * nsd ≈ 0.14 s, unbound ≈ 0.06–0.07 s, named ≈ 0.10 s from spawn to first good answer.
//! * `fstrm_capture` stdio-buffers its output file: it only reaches the disk on SIGHUP
//!   ([`FstrmCapture::flush`]) or on exit. [`FstrmCapture::wait_until`] / [`FstrmCapture::bytes`]
//!   send the SIGHUP for you.
//! * Unbound hands dnstap frames to its io thread on a 1 s timer (or after 32 messages): frames
//!   are on the socket ≈0.8–1 s after the query. BIND (libfstrm) flushes after
//!   `fstrm-set-flush-timeout` (1 s here, the minimum): ≈1.7 s. Allow ≥ 3 s when waiting.
//! * The listener must exist before the resolver logs anything you care about. Unbound does not
//!   need the socket at startup (logs "dnstap io: failed to connect", retries with backoff ≤ 1 s)
//!   and keeps queued frames while disconnected, delivering them after reconnecting (≈0.4 s
//!   after the listener restarts). BIND retries every `fstrm-set-reopen-interval` (1 s, the
//!   minimum): new frames show up ≈1.7–2.7 s after a listener restart, and frames produced
//!   while the listener was down may be lost.
//! * Readiness probes add one query+response pair (for [`READINESS_NAME`]) to the stream.

#![allow(unused_imports)]

pub use super::bind::*;
pub use super::dig::*;
pub use super::fstrm::*;
pub use super::nsd::*;
pub use super::prereq::{debian_package, require, require_ci};
pub use super::process::*;
pub use super::unbound::*;

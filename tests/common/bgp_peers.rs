//! Test peers for integration tests: real BGP speakers (Debian packages) that receive what
//! dnsbgpd announces, plus network namespaces for tests that need real (non-loopback) links.
//! Each has its own module (`bird`, `gobgp`, `frr`, `netns`) on the shared process helper
//! `process`; this module re-exports them, so `common::bgp_peers::Bird` and the like keep
//! working, and keeps the facts measured about them.
//!
//! * [`Bird`]    — BIRD 2.0.12 (`bird2`), `birdc` helpers that parse `show route all`.
//! * [`Gobgpd`]  — GoBGP 3.x (`gobgpd` + `gobgp` CLI, JSON output).
//! * [`Frr`]     — FRR 8.4 `bgpd` alone (no zebra) + `vtysh` JSON helpers.
//! * [`Netns`]   — network namespaces with veth links (198.51.100.0/24, 2001:db8::/64).
//! * [`wait_for`], [`require_bgp`], [`require_netns`], [`tcp_listening_in`].
//!
//! Uses `super::peers::{Process, free_port, find_bin, send_signal, ...}`; dependencies: std,
//! `anyhow`, `serde_json`. Each daemon gets its own sub-directory of the `dir` passed in
//! (config, control socket, pid file, log) and its own free ports; everything is stopped on
//! Drop (the [`Process`] guard kills the process group). Declare the temp dir FIRST (dropped
//! last) and a [`Netns`] BEFORE the daemons running in it (so the daemons are stopped first).
//!
//! ```ignore
//! let tmp = tempfile::tempdir()?;
//! if !bgp_peers::require_bgp(bgp_peers::BIRD_BINS) { return Ok(()); }
//! let mut cfg = BirdConfig::new("10.0.0.1".parse()?, 65001, "127.0.0.1".parse()?);
//! cfg.neighbors.push(BirdNeighbor::new("dnsbgpd", "127.0.0.1".parse()?, dnsbgpd_port, 65010));
//! let bird = Bird::start(tmp.path(), &cfg)?;        // dnsbgpd connects to 127.0.0.1:bird.port()
//! bird.wait_established("dnsbgpd", Duration::from_secs(5))?;
//! let routes = bird.wait_routes(Duration::from_secs(5), |r| r.len() == 3)?;
//! ```
//!
//! # Facts measured on this machine (Debian 12, 2 cores)
//!
//! * Startup (spawn → control socket/API answers and BGP port listening): bird ≈ 20–35 ms
//!   (also with 3000 static routes), gobgpd ≈ 25 ms, FRR bgpd ≈ 140–200 ms (`startup_time()`).
//!   Session Established + routes in the receiver ≈ 0.85–1.1 s after the *active* bird
//!   starts (its connect delay); 3000 routes (2000 /32 + 1000 /128) ≈ 1.05 s.
//!   `count_routes()` ≈ 2 ms, `show_route_all()` of 3000 routes ≈ 95 ms; `vtysh -c` ≈ 40–140 ms.
//! * A passive bird waiting for its neighbor shows `BGP state: Passive`
//!   ([`Bird::protocol_state`]); dnsbgpd connecting to it is accepted at once.
//! * bird's first *active* connect happens after `connect delay time` (default 5 s, minimum
//!   1 s, randomised to ~0.75–1 s): set to 1 here. Incoming connections are accepted at once.
//!   After a failed connect it waits `connect retry time` (default 120 s): set to 1 here.
//! * bird 2.0.12's main loop sleeps up to **3 s** in poll() when it has no timer due, and
//!   work it scheduled while handling a socket (the initial route export after Established,
//!   pruning stale routes after End-of-RIB) can wait for that. Any `birdc` command or timer
//!   wakes it. The generated config therefore has `protocol device { scan time 1; }`, which
//!   bounds the delay to ≤ 1 s (bird → gobgp: 3.2 s → 0.8 s from gobgpd start to routes).
//! * Routes received by bird over a loopback (multihop) session show as `unreachable` (the
//!   recursive next hop is not resolvable without an IGP), are still primary (`*`) and show
//!   the BGP next hop as `BGP.next_hop:`. No kernel protocol is configured, so nothing ever
//!   reaches the kernel FIB.
//! * **GoBGP and FRR reject an IPv4 NEXT_HOP in 127.0.0.0/8**: GoBGP logs `the received Update
//!   message was treated as withdraw ... invalid nexthop address`; FRR logs `Martian nexthop
//!   127.0.0.2` and fails the UPDATE. bird accepts it. Announce with a non-loopback next hop
//!   (e.g. 198.51.100.1 / 2001:db8::1) when GoBGP/FRR are the receivers.
//! * An IPv6 route sent over an IPv4 session needs an IPv6 next hop: bird without one logs
//!   `Missing next hop address` and the receiver treats the route as withdrawn. For bird as
//!   sender use [`BirdNeighbor::next_hop_v6`].
//! * bird does not send a MED it did not set in its export filter; [`BirdStaticRoute::med`]
//!   is therefore applied in a generated export filter.
//! * gobgpd waits `idle-hold-time-after-reset` (default 30 s) after a session drop before it
//!   accepts/opens a new one; the generated config sets it and `connect-retry` to 1 s.
//!
//! # Graceful restart as seen by bird 2.0.12 (receiver A with `graceful restart on`)
//!
//! * The routes are kept only if the *sender* advertised the GR capability listing the
//!   families (bird: `graceful restart on` on the sender). With a sender that is only GR-aware
//!   (no AF list) they are flushed at once when the TCP session drops.
//! * After `kill -9` of the sender (no NOTIFICATION): `show protocols` shows the protocol in
//!   `start` / `Active  Socket: Connection closed`; `show protocols all` shows
//!   `Neighbor graceful restart active` and `Restart timer: 119.661/-` (the timer is the
//!   **sender's** advertised restart time). The routes stay in `show route all`
//!   **unchanged**: bird 2.0.12 marks them stale internally (REF_STALE) but prints no marker
//!   and keeps their timestamps. [`Bird::graceful_restart_active`] reads the protocol flag.
//! * If the sender comes back *without* the forwarding-state bit in its new OPEN (bird
//!   started without `-R`), A flushes all stale routes as the session comes up and re-learns
//!   them (new timestamps, brief gap). With `-R` ([`Bird::restart`]`(true)`) A keeps them:
//!   identical re-announcements are "ignored" (timestamps unchanged), routes not re-announced
//!   are removed after the sender's End-of-RIB (measured: Established 0.9 s after the
//!   restart, the stale route gone ≈1.1 s later; bird's stale prune is one of the
//!   poll-delayed jobs above). `Neighbor graceful restart active` disappears at End-of-RIB.
//! * bird as *sender* refuses a next hop equal to the neighbor's address (`Invalid NEXT_HOP
//!   attribute - neighbor address ::1`, route withdrawn): on `::1` both ends share the address,
//!   so set [`BirdNeighbor::next_hop_v6`]. As *receiver* on a multihop session bird accepts
//!   any non-zero next hop, including its own address.
//! * Visible per-route staleness only exists for *long-lived* GR (RFC 9494): if the sender
//!   advertised LLGR (`long lived graceful restart on; long lived stale time N`) and its
//!   restart time runs out (e.g. `graceful restart time 1`), bird re-imports the routes with
//!   community `(65535,6)` (LLGR_STALE) and the preference column shows `(100s)`;
//!   `show protocols all` shows `LL stale timer: 3599.059/-`. [`BirdRoute::stale`] is true
//!   for those. Sample:
//!
//! ```text
//! 198.51.100.7/32      unreachable [peer_b 14:57:51.583 from 127.0.0.2] * (100s) [AS65010i]
//!     Type: BGP univ
//!     BGP.origin: IGP
//!     BGP.as_path: 65010
//!     BGP.next_hop: 127.0.0.2
//!     BGP.med: 5
//!     BGP.local_pref: 100
//!     BGP.community: (65010,100) (65535,6)
//!     BGP.large_community: (65010, 0, 100)
//! ```

#![allow(unused_imports)]

pub use super::bird::*;
pub use super::frr::*;
pub use super::gobgp::*;
pub use super::netns::*;
pub use super::process::{Process, SIGKILL, find_bin, free_port, send_signal, tcp_listening_in};
pub use super::wait_for;

/// The Debian package of a binary (one table for all peers, in `prereq`).
pub use super::prereq::debian_package as bgp_debian_package;
/// `peers::require` under its old name here: true if all `bins` exist; else
/// the `prereq` rule (SKIP outside CI, panic with `CI=true`).
pub use super::prereq::require as require_bgp;

//! Peer sync: instances share the routes their resolvers produce, over
//! HTTP JSON, by delta, authenticated and validated (protocol in
//! `docs/sync.md`).
//!
//! Data flow on one instance:
//!
//! ```text
//! route table --subscription--> recorder --> change log (sled) --> /changes (peers pull)
//!                                                        \------> pusher per peer --POST /push--> peer
//! peer --/push--> merger --> route table      puller per peer --GET /changes--> merger --> route table
//! ```
//!
//! * [`log`]: this instance's own (dnstap-learned) routes as numbered
//!   changes, compacted to one per address;
//! * [`merge`]: applying peers' pages in sequence order under per-origin
//!   cursors, with [`validate`];
//! * [`server`]: the axum handlers on the API listener;
//! * [`client`]: per peer, a pull loop and a push loop.
//!
//! An instance only ever sends what its own resolvers saw, never what it
//! learned from a peer: the documented deployment is a full mesh (every
//! instance lists every other as a peer), where that is all convergence
//! needs and no echo can arise.

pub mod client;
pub mod config;
pub mod log;
pub mod merge;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod validate;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::clock::{millis, rfc3339};
use crate::lists::Lists;
use crate::metrics::Metrics;
use crate::routes::{RouteEvent, RouteTable, Source, Subscription, UnixMillis};
use config::{PeerSettings, SyncSettings};
use log::{ChangeLog, LogError, NameState};
use merge::Merger;
use metrics::SyncMetrics;

/// Coalescing delay of the recorder: changes that arrive together are
/// recorded (and flushed) together.
const RECORD_DELAY: Duration = Duration::from_millis(20);
/// Changes recorded per log transaction.
const RECORD_BATCH: usize = 10_000;
/// How often cursors are saved and the log is purged of old withdrawals.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
const PURGE_EVERY: u32 = 60;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("[sync] ca_file: {0}")]
    Tls(String),
}

/// The refresh granularity of the change log: a refresh of an own route is
/// a change when its expiry crosses a multiple of this. A quarter of
/// `min_ttl` keeps a peer's copy at least three quarters of `min_ttl` ahead
/// of expiring while the name keeps being resolved (no flap), at one change
/// per route per quarter `min_ttl` at most.
pub fn refresh_granularity(min_ttl: Duration) -> Duration {
    (min_ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(900))
}

/// Which inbound token a sync request presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// `[sync] token`.
    Shared,
    /// The `inbound_token` of `peers[i]`.
    Peer(usize),
}

/// What one peer looks like from here (shown by `/api/v1/sync/peers`).
#[derive(Debug, Default, Clone)]
pub struct PeerStatus {
    /// The peer's instance id, learned from its answers.
    pub instance: Option<String>,
    /// The peer's newest sequence number in its last page.
    pub remote_head: u64,
    pub last_pull: Option<UnixMillis>,
    pub last_push: Option<UnixMillis>,
    pub last_error: Option<(UnixMillis, String)>,
    /// Whether the last exchange succeeded.
    pub up: Option<bool>,
    /// Our newest sequence number the peer has (as far as pushes know).
    pub pushed: u64,
    pub push_queue: u64,
    pub snapshots: u64,
}

pub struct PeerHandle {
    pub settings: PeerSettings,
    status: Mutex<PeerStatus>,
    /// Wakes the pull loop (a push showed a gap, or the peer came back).
    pub wake_pull: Notify,
    /// Cuts a push retry's backoff short (a pull from the peer worked).
    pub wake_push: Notify,
}

impl PeerHandle {
    pub fn status(&self) -> MutexGuard<'_, PeerStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn instance(&self) -> Option<String> {
        self.status().instance.clone()
    }
}

/// The peer sync of one instance.
pub struct PeerSync {
    pub settings: SyncSettings,
    pub log: Arc<ChangeLog>,
    pub merger: Merger,
    pub metrics: Arc<SyncMetrics>,
    pub table: Arc<RouteTable>,
    pub peers: Vec<Arc<PeerHandle>>,
    /// Pushes are refused (503) until the route table is loaded.
    pub ready: AtomicBool,
    tls: Option<tokio_rustls::TlsConnector>,
    granularity: Duration,
    max_ttl: Duration,
    store_cycles: watch::Receiver<u64>,
}

impl PeerSync {
    /// Opens the change log in the store's database. `store_cycles`
    /// counts the route store's completed write cycles.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        db: sled::Db,
        settings: &SyncSettings,
        table: Arc<RouteTable>,
        lists: Arc<ArcSwap<Lists>>,
        metrics: SyncMetrics,
        route_metrics: Arc<Metrics>,
        min_ttl: Duration,
        max_ttl: Duration,
        store_cycles: watch::Receiver<u64>,
    ) -> Result<Arc<PeerSync>, SyncError> {
        let log = Arc::new(ChangeLog::open(db)?);
        let metrics = Arc::new(metrics);
        let merger = Merger::new(table.clone(), lists, log.clone(), metrics.clone(), route_metrics, millis(max_ttl));
        let tls = match &settings.ca_file {
            Some(ca) => Some(crate::tls::connector(crate::tls::client_config(ca).map_err(SyncError::Tls)?)),
            None => None,
        };
        let mut peers = Vec::new();
        for p in &settings.peers {
            let learned = log.peer_instance(&p.url)?;
            if let (Some(want), Some(had)) = (&p.instance, &learned)
                && **want != **had
            {
                warn!(peer = %p.name, configured = %want, learned = %had, "the configured instance id replaces the learned one");
            }
            let instance = p.instance.as_deref().map(String::from).or(learned);
            peers.push(Arc::new(PeerHandle {
                settings: p.clone(),
                status: Mutex::new(PeerStatus { instance, ..PeerStatus::default() }),
                wake_pull: Notify::new(),
                wake_push: Notify::new(),
            }));
        }
        metrics.log_head.set(log.head() as i64);
        metrics.log_changes.set(log.len() as i64);
        Ok(Arc::new(PeerSync {
            settings: settings.clone(),
            log,
            merger,
            metrics,
            table,
            peers,
            ready: AtomicBool::new(false),
            tls,
            granularity: refresh_granularity(min_ttl),
            max_ttl,
            store_cycles,
        }))
    }

    pub fn id(&self) -> &Arc<str> {
        self.log.id()
    }

    /// Starts recording and the peer loops; call once the route table is
    /// loaded.
    pub fn start(self: &Arc<Self>, tracker: &TaskTracker, shutdown: CancellationToken) {
        // The initial dump compares every route with the log, which brings
        // the log up to date with whatever happened while we were down.
        let sub = self.table.subscribe(true, Some(self.granularity));
        tracker.spawn(self.clone().run_recorder(sub, shutdown.clone()));
        tracker.spawn(self.clone().run_housekeeping(shutdown.clone()));
        for peer in &self.peers {
            tracker.spawn(client::run_puller(self.clone(), peer.clone(), shutdown.clone()));
            tracker.spawn(client::run_pusher(self.clone(), peer.clone(), shutdown.clone()));
        }
        self.ready.store(true, Ordering::Release);
        info!(
            instance = %self.id(),
            head = self.log.head(),
            peers = self.peers.len(),
            granularity_ms = self.granularity.as_millis() as u64,
            "peer sync started"
        );
    }

    /// Saves every cursor and flushes; call after the route store's last
    /// write at shutdown.
    pub fn close(&self) {
        self.merger.save_cursors(0, true);
        if let Err(e) = self.log.flush() {
            error!(error = %e, "cannot flush the sync state");
        }
    }

    pub(crate) fn tls(&self) -> Option<&tokio_rustls::TlsConnector> {
        self.tls.as_ref()
    }

    /// Wakes the pull loops that may serve `instance` (those that know it,
    /// and those that do not know their peer's id yet).
    pub fn wake_pulls_for(&self, instance: &str) {
        for p in &self.peers {
            let known = p.instance();
            if known.as_deref().is_none_or(|k| k == instance) {
                p.wake_pull.notify_one();
            }
        }
    }

    /// Whether a push authenticated as `credential` may speak for
    /// `instance`. The shared `[sync] token` speaks for the configured
    /// peers without their own `inbound_token`: their `instance`, or the id
    /// learned from their answers and pinned in the store. A peer's own
    /// inbound token speaks for that peer alone; when its id is not known
    /// yet, this first push names it and it is pinned. Anything else is
    /// refused before it reaches the merger, so invented ids never become
    /// origins here.
    pub fn may_speak_for(&self, credential: Credential, instance: &str) -> Result<(), String> {
        match credential {
            Credential::Shared => {
                let ok = self
                    .peers
                    .iter()
                    .any(|p| p.settings.inbound_token.is_none() && p.instance().as_deref() == Some(instance));
                if ok { Ok(()) } else { Err("is not a peer of this instance (for this token)".into()) }
            }
            Credential::Peer(i) => {
                let Some(peer) = self.peers.get(i) else { return Err("unknown credential".into()) };
                // Other peers' ids first: one status lock at a time.
                let taken =
                    self.peers.iter().enumerate().any(|(j, p)| j != i && p.instance().as_deref() == Some(instance));
                let mut st = peer.status();
                match st.instance.as_deref() {
                    Some(known) if known == instance => Ok(()),
                    Some(known) => Err(format!("is not the instance this peer's token speaks for ({known})")),
                    None => {
                        if taken {
                            return Err("is another peer's instance".into());
                        }
                        if let Err(e) = self.log.set_peer_instance(&peer.settings.url, instance) {
                            return Err(format!("cannot pin the peer's instance id: {e}"));
                        }
                        info!(peer = %peer.settings.name, instance, "sync peer identified by its first push");
                        st.instance = Some(instance.to_string());
                        Ok(())
                    }
                }
            }
        }
    }

    /// Wakes the pull loops of peers whose id is not known yet (a push
    /// from an unknown id may be one of them making first contact).
    pub fn wake_unidentified_pulls(&self) {
        for p in self.peers.iter().filter(|p| p.instance().is_none()) {
            p.wake_pull.notify_one();
        }
    }

    /// The configured peer name of an instance, for metric labels.
    pub fn peer_name_of(&self, instance: &str) -> String {
        self.peers
            .iter()
            .find(|p| p.instance().as_deref() == Some(instance))
            .map(|p| p.settings.name.to_string())
            .unwrap_or_else(|| "unknown".into())
    }

    async fn run_recorder(self: Arc<Self>, sub: Subscription, shutdown: CancellationToken) {
        // Own routes the log still lists but the table lost while we were
        // down (expired, unlisted): the dump does not cover addresses that
        // are not in the table at all.
        let gone: Vec<(IpAddr, Vec<NameState>)> = self
            .log
            .live_addresses()
            .into_iter()
            .filter(|a| self.table.get(*a).is_none())
            .map(|a| (a, Vec::new()))
            .collect();
        if !gone.is_empty() {
            info!(routes = gone.len(), "withdrawing own routes that ended while stopped");
            self.record(gone).await;
        }
        loop {
            let last = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = sub.changed() => false,
            };
            if !last {
                tokio::time::sleep(RECORD_DELAY).await;
            }
            loop {
                let events = sub.drain(RECORD_BATCH);
                if events.is_empty() {
                    break;
                }
                let states = events.iter().map(own_state).collect();
                self.record(states).await;
            }
            if last {
                return;
            }
        }
    }

    async fn record(&self, states: Vec<(IpAddr, Vec<NameState>)>) {
        let log = self.log.clone();
        let now = self.table.clock().now();
        match tokio::task::spawn_blocking(move || log.record(states, now)).await {
            Ok(Ok(n)) => {
                if n > 0 {
                    debug!(changes = n, head = self.log.head(), "changes recorded");
                }
                self.metrics.log_head.set(self.log.head() as i64);
            }
            Ok(Err(e)) => error!(error = %e, "cannot record changes in the sync log"),
            Err(e) => error!(error = %e, "sync log writer task failed"),
        }
    }

    async fn run_housekeeping(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u32 = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let cycles = *self.store_cycles.borrow();
            self.merger.save_cursors(cycles, false);
            n = n.wrapping_add(1);
            if n.is_multiple_of(PURGE_EVERY) {
                let cutoff = self.table.clock().now().saturating_sub(millis(log::tombstone_retention(self.max_ttl)));
                let log = self.log.clone();
                match tokio::task::spawn_blocking(move || log.purge(cutoff, 100_000)).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(purged)) => {
                        self.metrics.log_purged.inc_by(purged as u64);
                        debug!(purged, horizon = self.log.horizon(), "old withdrawals purged from the sync log");
                    }
                    Ok(Err(e)) => warn!(error = %e, "cannot purge the sync log"),
                    Err(e) => warn!(error = %e, "sync log purge task failed"),
                }
            }
            self.metrics.log_changes.set(self.log.len() as i64);
        }
    }

    /// The `/api/v1/sync/peers` view.
    pub fn view(&self) -> SyncView {
        let now = self.table.clock().now();
        SyncView {
            instance: self.id().to_string(),
            head: self.log.head(),
            horizon: self.log.horizon(),
            log_changes: self.log.len(),
            peers: self
                .peers
                .iter()
                .map(|p| {
                    let st = p.status().clone();
                    let cursor = st.instance.as_deref().map_or(0, |i| self.merger.cursor(i));
                    let last_success = st.last_pull.max(st.last_push);
                    PeerView {
                        name: p.settings.name.to_string(),
                        url: p.settings.url.clone(),
                        instance: st.instance,
                        state: match st.up {
                            Some(true) => "up",
                            Some(false) => "down",
                            None => "unknown",
                        },
                        cursor,
                        remote_head: st.remote_head,
                        lag: st.remote_head.saturating_sub(cursor),
                        last_success: last_success.map(rfc3339),
                        last_success_age_seconds: last_success.map(|t| now.saturating_sub(t) as f64 / 1000.0),
                        last_pull: st.last_pull.map(rfc3339),
                        last_push: st.last_push.map(rfc3339),
                        last_error: st.last_error.as_ref().map(|(_, e)| e.clone()),
                        last_error_at: st.last_error.as_ref().map(|(t, _)| rfc3339(*t)),
                        pushed: st.pushed,
                        push_queue: st.push_queue,
                        snapshots: st.snapshots,
                    }
                })
                .collect(),
        }
    }
}

/// The own (dnstap-learned) names of a route: what this instance reports.
fn own_state(event: &RouteEvent) -> (IpAddr, Vec<NameState>) {
    match event {
        RouteEvent::Added(r) => (
            r.addr,
            r.attributions
                .iter()
                .filter(|a| a.source == Source::Dns)
                .map(|a| (a.domain.clone(), a.list.clone(), a.expires))
                .collect(),
        ),
        RouteEvent::Removed(addr) => (*addr, Vec::new()),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncView {
    pub instance: String,
    pub head: u64,
    pub horizon: u64,
    pub log_changes: usize,
    pub peers: Vec<PeerView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    pub name: String,
    pub url: String,
    pub instance: Option<String>,
    /// `up`, `down` or `unknown` (not contacted yet).
    pub state: &'static str,
    /// How far this instance has applied the peer's changes.
    pub cursor: u64,
    /// The peer's newest sequence number when last heard from.
    pub remote_head: u64,
    /// `remote_head - cursor`: changes known to exist but not applied yet.
    pub lag: u64,
    pub last_success: Option<String>,
    pub last_success_age_seconds: Option<f64>,
    pub last_pull: Option<String>,
    pub last_push: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Our newest sequence number pushed to (or skipped for) the peer.
    pub pushed: u64,
    /// Our changes not yet pushed to the peer.
    pub push_queue: u64,
    /// Snapshots pulled from the peer since start.
    pub snapshots: u64,
}

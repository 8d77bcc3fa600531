//! Peer sync metrics, registered in the daemon's registry under
//! `dnsbgpd_sync_*`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::validate::Reason;
use crate::metrics::ReasonLabel;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerViaLabel {
    pub peer: String,
    /// `pull` or `push`.
    pub via: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

#[derive(Clone)]
pub struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new([0.001, 0.005, 0.02, 0.1, 0.5, 2.0, 10.0, 60.0])
    }
}

/// Request-level rejections (`reason` of `dnsbgpd_sync_requests_rejected_total`).
pub const REQUEST_REJECT_REASONS: [&str; 6] = ["auth", "too_large", "json", "page", "gap", "not_ready"];

pub struct SyncMetrics {
    /// Changes this instance sent: pushed to a peer, or served on `/changes`.
    pub sent: Family<PeerViaLabel, Counter>,
    /// Changes received from a peer, by pull or push (duplicates included).
    pub received: Family<PeerViaLabel, Counter>,
    /// Entries rejected by validation, by reason.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Received changes already applied before (sequence at or below the cursor).
    pub duplicates: Family<PeerLabel, Counter>,
    /// Whole requests refused (401, 413, 400, 409, 503), by reason.
    pub requests_rejected: Family<ReasonLabel, Counter>,
    /// Requests served, by endpoint.
    pub requests: Family<EndpointLabel, Counter>,
    /// Body bytes served or accepted by the sync endpoints.
    pub server_bytes: Family<EndpointLabel, Counter>,
    /// Pulls from a peer that were (or began) a full snapshot.
    pub snapshots: Family<PeerLabel, Counter>,
    /// Snapshots served on `/changes`.
    pub snapshots_served: Counter,
    /// Body bytes this instance's client read (pull) or sent (push), by peer.
    pub client_bytes: Family<PeerViaLabel, Counter>,
    /// Duration of one pull (all pages until caught up).
    pub pull_seconds: Family<PeerLabel, Histogram, Buckets>,
    /// Duration of one push request.
    pub push_seconds: Family<PeerLabel, Histogram, Buckets>,
    /// Failed pulls and pushes.
    pub errors: Family<PeerViaLabel, Counter>,
    /// Changes not yet pushed to a peer.
    pub push_queue: Family<PeerLabel, Gauge>,
    /// Times the push backlog of a peer exceeded `push_queue` and was left
    /// to that peer's pull.
    pub push_overflows: Family<PeerLabel, Counter>,
    /// Newest sequence number of this instance's change log.
    pub log_head: Gauge,
    /// Changes held in the log.
    pub log_changes: Gauge,
    /// Withdrawals purged from the log.
    pub log_purged: Counter,
}

impl SyncMetrics {
    /// Creates the metrics and registers them (prefix `sync_`) in `registry`.
    pub fn register(registry: &mut Registry) -> SyncMetrics {
        let m = SyncMetrics {
            sent: Family::default(),
            received: Family::default(),
            rejected: Family::default(),
            duplicates: Family::default(),
            requests_rejected: Family::default(),
            requests: Family::default(),
            server_bytes: Family::default(),
            snapshots: Family::default(),
            snapshots_served: Counter::default(),
            client_bytes: Family::default(),
            pull_seconds: Family::new_with_constructor(Buckets),
            push_seconds: Family::new_with_constructor(Buckets),
            errors: Family::default(),
            push_queue: Family::default(),
            push_overflows: Family::default(),
            log_head: Gauge::default(),
            log_changes: Gauge::default(),
            log_purged: Counter::default(),
        };
        for r in Reason::ALL {
            let _ = m.rejected.get_or_create(&ReasonLabel { reason: r.as_str().into() });
        }
        for r in REQUEST_REJECT_REASONS {
            let _ = m.requests_rejected.get_or_create(&ReasonLabel { reason: r.into() });
        }
        let r = registry.sub_registry_with_prefix("sync");
        r.register("changes_sent", "changes sent to peers (via push) or served to them (via pull)", m.sent.clone());
        r.register("changes_received", "changes received from peers, by peer and way", m.received.clone());
        r.register("changes_rejected", "entries from peers rejected by validation, by reason", m.rejected.clone());
        r.register("changes_duplicate", "changes from peers already applied before", m.duplicates.clone());
        r.register("requests_rejected", "sync requests refused as a whole, by reason", m.requests_rejected.clone());
        r.register("requests", "sync requests served, by endpoint", m.requests.clone());
        r.register("server_bytes", "body bytes served (changes) or accepted (push)", m.server_bytes.clone());
        r.register("snapshots", "pulls from a peer that were full snapshots", m.snapshots.clone());
        r.register("snapshots_served", "full snapshots served", m.snapshots_served.clone());
        r.register("client_bytes", "body bytes read from (pull) or sent to (push) peers", m.client_bytes.clone());
        r.register("pull_seconds", "duration of a pull until caught up", m.pull_seconds.clone());
        r.register("push_seconds", "duration of one push request", m.push_seconds.clone());
        r.register("errors", "failed pulls and pushes, by peer and way", m.errors.clone());
        r.register("push_queue", "changes not yet pushed to a peer", m.push_queue.clone());
        r.register("push_overflows", "push backlogs left to the peer's pull", m.push_overflows.clone());
        r.register("log_head", "newest sequence number of the change log", m.log_head.clone());
        r.register("log_changes", "changes held in the change log", m.log_changes.clone());
        r.register("log_purged", "withdrawals purged from the change log", m.log_purged.clone());
        m
    }

    pub fn reject(&self, reason: Reason) {
        self.rejected.get_or_create(&ReasonLabel { reason: reason.as_str().into() }).inc();
    }

    pub fn reject_request(&self, reason: &str) {
        self.requests_rejected.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
    }

    pub fn peer_via(peer: &str, via: &str) -> PeerViaLabel {
        PeerViaLabel { peer: peer.into(), via: via.into() }
    }

    pub fn peer(peer: &str) -> PeerLabel {
        PeerLabel { peer: peer.into() }
    }

    pub fn endpoint(e: &str) -> EndpointLabel {
        EndpointLabel { endpoint: e.into() }
    }
}

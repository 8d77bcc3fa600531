//! Prometheus metrics: one registry, handles resolved up front.
//!
//! Hot-path counters (frames by type) are plain atomics looked up once at
//! start, so counting a frame is one relaxed add, not a label-map lookup.
//! Gauges that mirror state (routes per list, list entries) are refreshed
//! from the owners of that state right before each scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::observation::MessageType;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListLabel {
    pub list: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// Reasons a frame or a connection is rejected.
pub const REJECT_REASONS: [&str; 9] = [
    "too_large",
    "truncated",
    "garbage",
    "content_type",
    "data_before_start",
    "protocol",
    "io",
    "protobuf",
    "connection_limit",
];

pub struct Metrics {
    pub registry: Registry,
    frames: Vec<Counter>,
    pub frames_unknown_type: Counter,
    pub frames_rejected: Family<ReasonLabel, Counter>,
    pub connections: Family<ListenerLabel, Counter>,
    pub connections_open: Gauge,
    pub dns_parse_errors: Counter,
    pub matches: Family<ListLabel, Counter>,
    pub routes: Family<ListLabel, Gauge>,
    pub routes_total: Gauge,
    pub routes_added: Counter,
    pub routes_removed: Family<ReasonLabel, Counter>,
    pub list_entries: Family<ListLabel, Gauge>,
    pub list_invalid_lines: Family<ListLabel, Gauge>,
    pub reloads: Family<ResultLabel, Counter>,
    pub store_flushes: Counter,
    pub store_errors: Counter,
    pub store_writes: Counter,
    pub store_flush_seconds: Histogram,
    pub cname_targets: Gauge,
    pub routes_refused: Family<ReasonLabel, Counter>,
    pub route_names_dropped: Counter,
    pub store_pending: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dnsbgpd");
        let per_type: Family<TypeLabel, Counter> = Family::default();
        registry.register("dnstap_frames", "dnstap frames received, by message type", per_type.clone());
        let frames = MessageType::ALL
            .iter()
            .map(|t| per_type.get_or_create(&TypeLabel { r#type: t.name().to_string() }).clone())
            .collect();
        let frames_unknown_type = per_type.get_or_create(&TypeLabel { r#type: "UNKNOWN".into() }).clone();

        let frames_rejected: Family<ReasonLabel, Counter> = Family::default();
        registry.register(
            "dnstap_frames_rejected",
            "dnstap frames or connections rejected, by reason",
            frames_rejected.clone(),
        );
        for r in REJECT_REASONS {
            let _ = frames_rejected.get_or_create(&ReasonLabel { reason: r.into() });
        }
        let connections = Family::default();
        registry.register("dnstap_connections", "dnstap connections accepted, by listener", connections.clone());
        let connections_open = Gauge::default();
        registry.register("dnstap_connections_open", "dnstap connections open now", connections_open.clone());
        let dns_parse_errors = Counter::default();
        registry.register(
            "dns_parse_errors",
            "DNS messages in dnstap frames that could not be parsed",
            dns_parse_errors.clone(),
        );
        let matches = Family::default();
        registry.register("matches", "responses with a name claimed by a list, by list", matches.clone());
        let routes = Family::default();
        registry.register("routes", "routes in the table, by list", routes.clone());
        let routes_total = Gauge::default();
        registry.register("routes_in_table", "routes in the table", routes_total.clone());
        let routes_added = Counter::default();
        registry.register("routes_added", "routes added to the table", routes_added.clone());
        let routes_removed = Family::default();
        registry.register("routes_removed", "routes removed from the table, by reason", routes_removed.clone());
        let list_entries = Family::default();
        registry.register("list_entries", "domains in each list (exclusions included)", list_entries.clone());
        let list_invalid_lines = Family::default();
        registry.register("list_invalid_lines", "lines of each list that were rejected", list_invalid_lines.clone());
        let reloads: Family<ResultLabel, Counter> = Family::default();
        registry.register("list_reloads", "list reloads, by result", reloads.clone());
        let _ = reloads.get_or_create(&ResultLabel { result: "ok".into() });
        let _ = reloads.get_or_create(&ResultLabel { result: "error".into() });
        let store_flushes = Counter::default();
        registry.register("store_flushes", "batched writes of the route store", store_flushes.clone());
        let store_errors = Counter::default();
        registry.register("store_errors", "failed route store operations", store_errors.clone());
        let store_writes = Counter::default();
        registry.register("store_writes", "route records written or deleted in the store", store_writes.clone());
        let store_flush_seconds = Histogram::new([0.001, 0.005, 0.02, 0.1, 0.5, 2.0]);
        registry.register("store_flush_seconds", "time of one store flush", store_flush_seconds.clone());
        let cname_targets = Gauge::default();
        registry.register("cname_targets", "remembered CNAME targets of listed names", cname_targets.clone());

        let routes_refused: Family<ReasonLabel, Counter> = Family::default();
        registry.register(
            "routes_refused",
            "addresses that got no route, by reason (unroutable, neighbor, deny, max_routes, list_max_routes)",
            routes_refused.clone(),
        );
        let route_names_dropped = Counter::default();
        registry.register(
            "route_names_dropped",
            "names a route full of max_names_per_route attributions did not keep",
            route_names_dropped.clone(),
        );
        let store_pending = Gauge::default();
        registry.register("store_pending", "changed routes not yet durable in the store", store_pending.clone());
        Metrics {
            routes_refused,
            route_names_dropped,
            store_pending,
            registry,
            frames,
            frames_unknown_type,
            frames_rejected,
            connections,
            connections_open,
            dns_parse_errors,
            matches,
            routes,
            routes_total,
            routes_added,
            routes_removed,
            list_entries,
            list_invalid_lines,
            reloads,
            store_flushes,
            store_errors,
            store_writes,
            store_flush_seconds,
            cname_targets,
        }
    }

    /// The counter of frames of one dnstap message type.
    #[inline]
    pub fn frame(&self, t: Option<MessageType>) -> &Counter {
        match t {
            Some(t) => &self.frames[t as usize - 1],
            None => &self.frames_unknown_type,
        }
    }

    pub fn reject(&self, reason: &str) {
        self.frames_rejected.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ResultLabel { result: result.into() }).inc();
    }

    pub fn removed(&self, reason: &str, n: usize) {
        if n > 0 {
            self.routes_removed.get_or_create(&ReasonLabel { reason: reason.into() }).inc_by(n as u64);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_preregistered_series() {
        let m = Metrics::new();
        m.frame(Some(MessageType::ClientResponse)).inc();
        m.reject("garbage");
        let text = m.encode();
        assert!(text.contains("dnsbgpd_dnstap_frames_total{type=\"CLIENT_RESPONSE\"} 1"), "{text}");
        assert!(text.contains("dnsbgpd_dnstap_frames_rejected_total{reason=\"garbage\"} 1"), "{text}");
        assert!(text.contains("dnsbgpd_dnstap_frames_rejected_total{reason=\"too_large\"} 0"), "{text}");
        assert!(text.contains("dnsbgpd_list_reloads_total{result=\"ok\"} 0"), "{text}");
    }
}

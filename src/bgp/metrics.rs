//! BGP metrics, registered into the daemon's registry at start.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NeighborLabel {
    pub neighbor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabel {
    pub neighbor: String,
    pub direction: String,
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FamilyLabel {
    pub neighbor: String,
    pub family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabel {
    pub neighbor: String,
    pub direction: String,
    pub code: String,
    pub subcode: String,
}

#[derive(Clone, Default)]
pub struct BgpMetrics {
    /// RFC 4271 state as a number: 1 Idle, 2 Connect, 3 Active, 4 OpenSent,
    /// 5 OpenConfirm, 6 Established.
    pub state: Family<NeighborLabel, Gauge>,
    pub established: Family<NeighborLabel, Gauge>,
    pub messages: Family<MessageLabel, Counter>,
    pub prefixes: Family<FamilyLabel, Gauge>,
    pub update_bytes: Family<NeighborLabel, Counter>,
    pub notifications: Family<NotificationLabel, Counter>,
    pub flaps: Family<NeighborLabel, Counter>,
}

impl BgpMetrics {
    pub fn register(registry: &mut Registry) -> BgpMetrics {
        let m = BgpMetrics::default();
        registry.register("bgp_session_state", "BGP FSM state (1 Idle .. 6 Established)", m.state.clone());
        registry.register("bgp_session_established", "1 while the session is Established", m.established.clone());
        registry.register("bgp_messages", "BGP messages, by neighbor, direction and type", m.messages.clone());
        registry.register("bgp_prefixes_advertised", "prefixes advertised, by neighbor and family", m.prefixes.clone());
        registry.register("bgp_update_bytes", "bytes of UPDATE messages sent", m.update_bytes.clone());
        registry.register("bgp_notifications", "NOTIFICATIONs sent and received", m.notifications.clone());
        registry.register("bgp_flaps", "sessions that left Established", m.flaps.clone());
        m
    }

    pub fn message(&self, neighbor: &str, direction: &str, kind: &str, n: u64) {
        self.messages
            .get_or_create(&MessageLabel {
                neighbor: neighbor.into(),
                direction: direction.into(),
                r#type: kind.into(),
            })
            .inc_by(n);
    }
}

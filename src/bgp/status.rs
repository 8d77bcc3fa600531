//! What the API and metrics show about a neighbor; one writer (its
//! session), many readers. Every state change is logged and counted here,
//! in one place.

use std::net::SocketAddr;
use std::sync::Mutex;

use serde::Serialize;
use tracing::info;

use super::config::NeighborSettings;
use super::message::NotificationMessage;
use super::metrics::{BgpMetrics, FamilyLabel, NeighborLabel, NotificationLabel};
use crate::clock::{Clock, UnixMillis, rfc3339};

/// RFC 4271 §8.2.2 states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum State {
    Idle = 1,
    Connect = 2,
    Active = 3,
    OpenSent = 4,
    OpenConfirm = 5,
    Established = 6,
}

/// Capabilities and parameters agreed for a session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Negotiated {
    pub remote_id: String,
    pub remote_as: u32,
    pub local_address: Option<SocketAddr>,
    pub remote_address: Option<SocketAddr>,
    pub hold_time: u16,
    pub keepalive: u16,
    pub four_octet_as: bool,
    pub route_refresh: bool,
    pub enhanced_route_refresh: bool,
    pub extended_message: bool,
    pub graceful_restart: bool,
    pub peer_restart_time: Option<u16>,
    pub ipv4: bool,
    pub ipv6: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    /// `sent` or `received` for NOTIFICATIONs, `local` for other failures.
    pub direction: &'static str,
    pub code: Option<u8>,
    pub subcode: Option<u8>,
    pub message: String,
    pub time: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NeighborJson {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub remote_as: u32,
    pub state: State,
    pub state_since: String,
    pub uptime_seconds: Option<u64>,
    pub negotiated: Option<Negotiated>,
    pub prefixes_advertised: Prefixes,
    pub last_error: Option<LastError>,
    pub flaps: u64,
    pub messages_in: u64,
    pub messages_out: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Prefixes {
    pub ipv4: usize,
    pub ipv6: usize,
}

struct Inner {
    state: State,
    state_since: UnixMillis,
    established_since: Option<UnixMillis>,
    negotiated: Option<Negotiated>,
    prefixes: Prefixes,
    last_error: Option<LastError>,
    flaps: u64,
    messages_in: u64,
    messages_out: u64,
}

pub struct NeighborStatus {
    pub settings: NeighborSettings,
    clock: Clock,
    metrics: BgpMetrics,
    inner: Mutex<Inner>,
}

impl NeighborStatus {
    pub fn new(settings: NeighborSettings, clock: Clock, metrics: BgpMetrics) -> NeighborStatus {
        let s = NeighborStatus {
            clock,
            metrics,
            inner: Mutex::new(Inner {
                state: State::Idle,
                state_since: clock.now(),
                established_since: None,
                negotiated: None,
                prefixes: Prefixes::default(),
                last_error: None,
                flaps: 0,
                messages_in: 0,
                messages_out: 0,
            }),
            settings,
        };
        s.gauges(State::Idle);
        s
    }

    fn label(&self) -> NeighborLabel {
        NeighborLabel { neighbor: self.settings.name.clone() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gauges(&self, state: State) {
        self.metrics.state.get_or_create(&self.label()).set(state as i64);
        self.metrics.established.get_or_create(&self.label()).set(i64::from(state == State::Established));
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    /// Moves to `to`, logging the change once.
    pub fn set_state(&self, to: State) {
        let now = self.clock.now();
        let from = {
            let mut i = self.lock();
            let from = i.state;
            if from == to {
                return;
            }
            i.state = to;
            i.state_since = now;
            if to == State::Established {
                i.established_since = Some(now);
            }
            if from == State::Established {
                i.established_since = None;
                i.flaps += 1;
                i.prefixes = Prefixes::default();
                i.negotiated = None;
            }
            from
        };
        if from == State::Established {
            self.metrics.flaps.get_or_create(&self.label()).inc();
            self.set_prefixes(0, 0);
        }
        self.gauges(to);
        info!(neighbor = %self.settings.name, address = %self.settings.address, ?from, ?to, "BGP state change");
    }

    pub fn set_negotiated(&self, n: Negotiated) {
        self.lock().negotiated = Some(n);
    }

    pub fn set_prefixes(&self, v4: usize, v6: usize) {
        self.lock().prefixes = Prefixes { ipv4: v4, ipv6: v6 };
        for (family, n) in [("ipv4", v4), ("ipv6", v6)] {
            self.metrics
                .prefixes
                .get_or_create(&FamilyLabel { neighbor: self.settings.name.clone(), family: family.into() })
                .set(n as i64);
        }
    }

    pub fn message(&self, direction: &str, kind: &str, n: u64) {
        {
            let mut i = self.lock();
            if direction == "in" {
                i.messages_in += n;
            } else {
                i.messages_out += n;
            }
        }
        self.metrics.message(&self.settings.name, direction, kind, n);
    }

    pub fn update_bytes(&self, n: usize) {
        self.metrics.update_bytes.get_or_create(&self.label()).inc_by(n as u64);
    }

    /// Records a NOTIFICATION sent or received.
    pub fn notification(&self, direction: &'static str, n: &NotificationMessage) {
        self.metrics
            .notifications
            .get_or_create(&NotificationLabel {
                neighbor: self.settings.name.clone(),
                direction: direction.into(),
                code: n.code.to_string(),
                subcode: n.subcode.to_string(),
            })
            .inc();
        self.lock().last_error = Some(LastError {
            direction,
            code: Some(n.code),
            subcode: Some(n.subcode),
            message: n.to_string(),
            time: rfc3339(self.clock.now()),
        });
    }

    /// Records a failure that is not a NOTIFICATION (TCP, timeouts).
    pub fn local_error(&self, message: String) {
        self.lock().last_error =
            Some(LastError { direction: "local", code: None, subcode: None, message, time: rfc3339(self.clock.now()) });
    }

    pub fn json(&self) -> NeighborJson {
        let now = self.clock.now();
        let i = self.lock();
        NeighborJson {
            name: self.settings.name.clone(),
            address: self.settings.address.to_string(),
            port: self.settings.port,
            remote_as: self.settings.remote_as,
            state: i.state,
            state_since: rfc3339(i.state_since),
            uptime_seconds: i.established_since.map(|t| now.saturating_sub(t) / 1000),
            negotiated: i.negotiated.clone(),
            prefixes_advertised: i.prefixes,
            last_error: i.last_error.clone(),
            flaps: i.flaps,
            messages_in: i.messages_in,
            messages_out: i.messages_out,
        }
    }
}

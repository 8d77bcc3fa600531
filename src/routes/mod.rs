//! Routes from names: the route table, the resolution of DNS answers into
//! routes (CNAME chains included), and the on-disk store.
//!
//! Data comes in from the dnstap pipeline as [`Observation`]s
//! (`crate::observation`), is matched against the lists by [`ingest`], lives in the
//! [`table::RouteTable`] with its expiry, and leaves as [`RouteEvent`]s to
//! subscribers: the store writer here, later the BGP speaker and peer sync.
//!
//! [`Observation`]: crate::observation::Observation

pub mod cname;
pub mod ingest;
pub mod name_arena;
pub mod redb_store;
pub mod store;
pub mod table;

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

pub use crate::clock::{Clock, UnixMillis};
pub use crate::observation::canonical;
pub use table::{Limits, Refusal, Replaced, RouteTable, Subscription, Update, routable_unicast};

/// Where a route's attribution came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// An answer seen on this instance's dnstap stream.
    Dns,
    /// Learned from a sync peer: the instance id of the origin, the
    /// instance whose resolver saw the answer.
    Peer(Arc<str>),
}

impl Source {
    pub fn as_str(&self) -> &str {
        match self {
            Source::Dns => "dns",
            Source::Peer(p) => p,
        }
    }

    pub fn parse(s: &str) -> Source {
        if s == "dns" { Source::Dns } else { Source::Peer(Arc::from(s)) }
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Source::parse(&s))
    }
}

/// One reason for a route to exist: a listed name that resolved to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    /// The listed name the address was attributed to (for a CNAME chain,
    /// the first name of the chain that a list claims).
    pub domain: Arc<str>,
    /// The list that claims `domain`.
    pub list: Arc<str>,
    /// Until when this attribution keeps the route alive.
    pub expires: UnixMillis,
    pub source: Source,
}

/// A route: a host address and why it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub addr: IpAddr,
    pub attributions: SmallVec<[Attribution; 1]>,
    /// Names seen for this address, including those the bound on
    /// attributions per route (`max_names_per_route`) did not keep.
    pub names_total: u32,
}

impl Route {
    /// A route with these attributions (each counted as seen once).
    pub fn new(addr: IpAddr, attributions: SmallVec<[Attribution; 1]>) -> Route {
        let names_total = attributions.len() as u32;
        Route { addr, attributions, names_total }
    }

    /// The time the last attribution expires.
    pub fn expires(&self) -> UnixMillis {
        self.attributions.iter().map(|a| a.expires).max().unwrap_or(0)
    }

    /// The attribution that lives longest.
    pub fn primary(&self) -> Option<&Attribution> {
        self.attributions.iter().max_by_key(|a| a.expires)
    }

    /// `198.51.100.7/32` or `2001:db8::7/128`.
    pub fn prefix(&self) -> ipnet::IpNet {
        ipnet::IpNet::from(self.addr)
    }
}

/// What a subscriber learns about a route: its current state.
///
/// Events carry state, not history: a consumer that was slow sees the route
/// as it is now, and a route added and removed between two drains shows up
/// as `Removed` only (which a consumer that never had it ignores).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteEvent {
    /// The route exists (new, or its attributions changed).
    Added(Route),
    /// The route is gone.
    Removed(IpAddr),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_addresses_become_v4() {
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().unwrap();
        assert_eq!(canonical(mapped), "198.51.100.7".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn prefix_is_a_host_route() {
        let r = Route::new("2001:db8::7".parse().unwrap(), SmallVec::new());
        assert_eq!(r.prefix().to_string(), "2001:db8::7/128");
    }
}

//! Export policy: which attributes a route carries, from its lists.
//!
//! The neighbor-independent part is computed here once per route change
//! (communities and large communities of every list the route belongs to,
//! the first list's MED and next-hop overrides, in config order); AS_PATH,
//! LOCAL_PREF and the default next hops depend on the session and are added
//! when the UPDATEs for a neighbor are built.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::config::ListSettings;
use crate::routes::Route;

/// The attributes of a route that do not depend on the neighbor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExportAttrs {
    /// Sorted, without duplicates.
    pub communities: Vec<(u16, u16)>,
    /// Sorted, without duplicates.
    pub large_communities: Vec<(u32, u32, u32)>,
    pub med: Option<u32>,
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
}

#[derive(Debug, Default)]
pub struct ExportPolicy {
    /// List name → (config order, settings).
    lists: HashMap<Arc<str>, (usize, ListSettings)>,
}

impl ExportPolicy {
    pub fn new(lists: &[ListSettings]) -> ExportPolicy {
        ExportPolicy { lists: lists.iter().enumerate().map(|(i, l)| (l.name.clone(), (i, l.clone()))).collect() }
    }

    pub fn export(&self, route: &Route) -> ExportAttrs {
        let mut lists: Vec<&(usize, ListSettings)> =
            route.attributions.iter().filter_map(|a| self.lists.get(&a.list)).collect();
        lists.sort_by_key(|(i, _)| *i);
        lists.dedup_by_key(|(i, _)| *i);
        let mut out = ExportAttrs::default();
        for (_, l) in lists {
            out.communities.extend(&l.communities);
            out.large_communities.extend(&l.large_communities);
            out.med = out.med.or(l.med);
            out.next_hop_v4 = out.next_hop_v4.or(l.next_hop_v4);
            out.next_hop_v6 = out.next_hop_v6.or(l.next_hop_v6);
        }
        out.communities.sort_unstable();
        out.communities.dedup();
        out.large_communities.sort_unstable();
        out.large_communities.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use smallvec::SmallVec;

    use super::*;
    use crate::routes::{Attribution, Source};

    fn list(name: &str, c: &[(u16, u16)], med: Option<u32>, nh: Option<&str>) -> ListSettings {
        ListSettings {
            name: Arc::from(name),
            communities: c.to_vec(),
            large_communities: vec![(65010, 0, c.len() as u32)],
            med,
            next_hop_v4: nh.map(|n| n.parse().unwrap()),
            ..Default::default()
        }
    }

    fn route(lists: &[&str]) -> Route {
        Route {
            addr: "198.51.100.1".parse().unwrap(),
            attributions: lists
                .iter()
                .map(|l| Attribution {
                    domain: Arc::from("x.test"),
                    list: Arc::from(*l),
                    expires: 1,
                    source: Source::Dns,
                })
                .collect::<SmallVec<_>>(),
            names_total: 1,
        }
    }

    #[test]
    fn union_of_lists_first_override_wins() {
        let p = ExportPolicy::new(&[
            list("a", &[(65010, 100)], None, Some("192.0.2.1")),
            list("b", &[(65010, 200), (65010, 100)], Some(50), Some("192.0.2.2")),
        ]);
        let e = p.export(&route(&["b", "a", "unknown"]));
        assert_eq!(e.communities, vec![(65010, 100), (65010, 200)]);
        assert_eq!(e.large_communities, vec![(65010, 0, 1), (65010, 0, 2)]);
        assert_eq!(e.med, Some(50));
        assert_eq!(e.next_hop_v4, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(p.export(&route(&["unknown"])), ExportAttrs::default());
    }
}

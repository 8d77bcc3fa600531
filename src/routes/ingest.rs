//! Observation → routes: which addresses of an answer belong to which
//! listed name.
//!
//! Every name of the answer chain counts: `alias.other.test CNAME
//! www.listed.test` and `www.listed.test CNAME edge.cdn.test` both make the
//! addresses at the end of the chain routes of `www.listed.test`. Per list,
//! the first claimed name along the chain (starting at the question) is the
//! one the addresses are attributed to. CNAME targets of claimed names are
//! remembered for their TTL so that chains split over separate responses
//! are attributed too.

use std::net::IpAddr;
use std::sync::Arc;

use smallvec::SmallVec;

use super::cname::{CnameMemory, Link};
use super::table::{RouteTable, Update};
use super::{Source, UnixMillis};
use crate::lists::Lists;
use crate::names::NameBuf;
use crate::observation::{AnswerData, Observation};

/// The longest CNAME chain followed (resolvers stop far earlier).
const MAX_CHAIN: usize = 16;

/// (listed name, list) pairs a name stands for.
type Claims = SmallVec<[(Arc<str>, Arc<str>); 2]>;

/// What one observation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// Lists that matched (for metrics), one entry per list.
    pub lists: SmallVec<[Arc<str>; 2]>,
    pub added: usize,
    pub changed: usize,
    pub refreshed: usize,
    /// Attributions the table refused (see [`super::Refusal`]).
    pub refused: usize,
}

pub struct Ingest {
    table: Arc<RouteTable>,
    cnames: CnameMemory,
    /// When the CNAME memory was last swept.
    cnames_swept: std::sync::atomic::AtomicU64,
}

/// How often expired CNAME links are swept out. A sweep walks the whole
/// memory (up to `cname::MAX_TARGETS`) under the lock the hot path reads,
/// so it must not run at every expiry tick; expired links are ignored by
/// [`CnameMemory::links`] meanwhile, so this only delays freeing them.
const CNAME_SWEEP_EVERY: UnixMillis = 30_000;

impl Ingest {
    pub fn new(table: Arc<RouteTable>) -> Ingest {
        Ingest { table, cnames: CnameMemory::new(), cnames_swept: std::sync::atomic::AtomicU64::new(0) }
    }

    pub fn table(&self) -> &Arc<RouteTable> {
        &self.table
    }

    pub fn cnames(&self) -> &CnameMemory {
        &self.cnames
    }

    /// The hot-path test: does this name call for a full parse?
    #[inline]
    pub fn interesting(&self, lists: &Lists, name: &NameBuf) -> bool {
        lists.lookup(name) != 0 || self.cnames.contains(name)
    }

    /// `scratch` is a reusable buffer (a `NameBuf` is 400 bytes to set up).
    fn claims(&self, lists: &Lists, name: &str, now: UnixMillis, scratch: &mut NameBuf, out: &mut Claims) {
        // As `Lists::lookup_text`: a name that is not a valid name is claimed by no list.
        let mask = if scratch.set_text(name).is_ok() { lists.lookup(scratch) } else { 0 };
        if mask != 0 {
            let domain: Arc<str> = Arc::from(name);
            for list in lists.names_in(mask) {
                if !out.iter().any(|(_, l)| l == list) {
                    out.push((domain.clone(), list.clone()));
                }
            }
        }
        for link in self.cnames.links(name, now) {
            if !out.iter().any(|(_, l)| *l == link.list) {
                out.push((link.domain, link.list));
            }
        }
    }

    /// Applies an observation to the route table.
    pub fn observe(&self, lists: &Lists, obs: &Observation) -> Ingested {
        let now = self.table.clock().now();
        let mut result = Ingested::default();
        let mut visited: SmallVec<[&str; 4]> = SmallVec::new();
        let mut current = Claims::new();
        let mut name = obs.qname.as_str();
        let mut scratch = NameBuf::new();
        self.claims(lists, name, now, &mut scratch, &mut current);
        visited.push(name);
        for _ in 0..MAX_CHAIN {
            self.attribute_addresses(obs, name, &current, now, &mut result);
            let Some((target, ttl)) = obs.answers.iter().find_map(|a| match &a.data {
                AnswerData::Cname(t) if a.name == name => Some((t.as_str(), a.ttl)),
                _ => None,
            }) else {
                break;
            };
            if visited.contains(&target) {
                break;
            }
            if !current.is_empty() {
                let expires = now + (u64::from(ttl) * 1000).min(self.table.expiry_limit() - now);
                for (domain, list) in &current {
                    self.cnames.remember(target, Link { domain: domain.clone(), list: list.clone(), expires });
                }
            }
            name = target;
            visited.push(name);
            self.claims(lists, name, now, &mut scratch, &mut current);
        }
        // Address records off the question's chain stand on their own.
        for a in &obs.answers {
            if matches!(a.data, AnswerData::A(_) | AnswerData::Aaaa(_)) && !visited.contains(&a.name.as_str()) {
                visited.push(a.name.as_str());
                let mut own = Claims::new();
                self.claims(lists, &a.name, now, &mut scratch, &mut own);
                self.attribute_addresses(obs, &a.name, &own, now, &mut result);
            }
        }
        result
    }

    fn attribute_addresses(
        &self,
        obs: &Observation,
        owner: &str,
        claims: &Claims,
        now: UnixMillis,
        result: &mut Ingested,
    ) {
        if claims.is_empty() {
            return;
        }
        for (_, list) in claims {
            if !result.lists.contains(list) {
                result.lists.push(list.clone());
            }
        }
        for a in obs.answers.iter().filter(|a| a.name == owner) {
            let addr = match a.data {
                AnswerData::A(v4) => IpAddr::V4(v4),
                AnswerData::Aaaa(v6) => IpAddr::V6(v6),
                AnswerData::Cname(_) => continue,
            };
            // The time this observation is applied, read once for all its answers.
            let expires = self.table.expiry_for_ttl_at(a.ttl, now);
            for (domain, list) in claims {
                match self.table.upsert(addr, domain, list, expires, Source::Dns) {
                    Update::Added => result.added += 1,
                    Update::Changed => result.changed += 1,
                    Update::Refreshed => result.refreshed += 1,
                    Update::Unchanged => {}
                    Update::Refused(_) => result.refused += 1,
                }
            }
        }
    }

    /// After a list reload: drops what the new lists no longer claim.
    pub fn revalidate(&self, lists: &Lists) -> Vec<IpAddr> {
        self.cnames.revalidate(lists);
        self.table.revalidate(lists)
    }

    /// Periodic upkeep: expired routes and CNAME links.
    pub fn expire(&self) -> Vec<IpAddr> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.table.clock().now();
        if now.saturating_sub(self.cnames_swept.load(Relaxed)) >= CNAME_SWEEP_EVERY {
            self.cnames_swept.store(now, Relaxed);
            self.cnames.sweep(now);
        }
        self.table.expire()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::config::ListSettings;
    use crate::observation::{Answer, MessageType};
    use crate::routes::Clock;

    fn lists(text: &[(&str, &str)]) -> Lists {
        let settings: Vec<ListSettings> = text
            .iter()
            .map(|(n, _)| ListSettings {
                name: Arc::from(*n),
                file: PathBuf::from("x"),
                communities: vec![],
                large_communities: vec![],
                ..Default::default()
            })
            .collect();
        let texts: Vec<String> = text.iter().map(|(_, t)| t.to_string()).collect();
        Lists::compile(&settings, &texts).0
    }

    fn ingest() -> Ingest {
        Ingest::new(Arc::new(RouteTable::new(
            Clock::starting_at(0),
            Duration::from_secs(60),
            Duration::from_secs(3600),
        )))
    }

    fn obs(qname: &str, answers: &[(&str, &str)]) -> Observation {
        Observation {
            time: 0,
            message_type: MessageType::ClientResponse,
            client: None,
            qname: qname.into(),
            qtype: 1,
            rcode: 0,
            answers: answers
                .iter()
                .map(|(name, data)| Answer {
                    name: name.to_string(),
                    ttl: 300,
                    data: match data.parse::<IpAddr>() {
                        Ok(IpAddr::V4(a)) => AnswerData::A(a),
                        Ok(IpAddr::V6(a)) => AnswerData::Aaaa(a),
                        Err(_) => AnswerData::Cname(data.to_string()),
                    },
                })
                .collect(),
            size: 100,
        }
    }

    fn domains(i: &Ingest, addr: &str) -> Vec<(String, String)> {
        i.table()
            .get(addr.parse().unwrap())
            .map(|r| r.attributions.iter().map(|a| (a.domain.to_string(), a.list.to_string())).collect())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn chain_into_a_listed_name_is_attributed_to_it() {
        let l = lists(&[("vpn", "listed.test\n")]);
        let i = ingest();
        let o = obs(
            "alias.other.test",
            &[
                ("alias.other.test", "www.listed.test"),
                ("www.listed.test", "edge.cdn.test"),
                ("edge.cdn.test", "198.51.100.1"),
            ],
        );
        let r = i.observe(&l, &o);
        assert_eq!(r.added, 1);
        assert_eq!(domains(&i, "198.51.100.1"), vec![("www.listed.test".into(), "vpn".into())]);
    }

    #[tokio::test]
    async fn unlisted_answers_make_no_routes_and_label_boundaries_hold() {
        let l = lists(&[("vpn", "face.test\n")]);
        let i = ingest();
        i.observe(&l, &obs("www.facebook.test", &[("www.facebook.test", "198.51.100.60")]));
        i.observe(&l, &obs("plain.other.test", &[("plain.other.test", "198.51.100.50")]));
        assert!(i.table().is_empty());
        i.observe(&l, &obs("www.face.test", &[("www.face.test", "2001:db8::61")]));
        assert_eq!(domains(&i, "2001:db8::61"), vec![("www.face.test".into(), "vpn".into())]);
    }

    #[tokio::test]
    async fn split_chain_is_remembered() {
        let l = lists(&[("vpn", "listed.test\n")]);
        let i = ingest();
        i.observe(&l, &obs("chain.listed.test", &[("chain.listed.test", "www.other.test")]));
        assert!(i.table().is_empty());
        let n = NameBuf::from_text("www.other.test").unwrap();
        assert!(i.interesting(&l, &n));
        i.observe(&l, &obs("www.other.test", &[("www.other.test", "198.51.100.30")]));
        assert_eq!(domains(&i, "198.51.100.30"), vec![("chain.listed.test".into(), "vpn".into())]);
        // After a reload that drops the name, the memory forgets it.
        let l2 = lists(&[("vpn", "other2.test\n")]);
        let removed = i.revalidate(&l2);
        assert_eq!(removed.len(), 1);
        assert!(!i.interesting(&l2, &n));
    }

    #[tokio::test]
    async fn each_list_attributes_its_first_claim() {
        let l = lists(&[("a", "other.test\n"), ("b", "listed.test\n")]);
        let i = ingest();
        i.observe(
            &l,
            &obs("alias.other.test", &[("alias.other.test", "www.listed.test"), ("www.listed.test", "198.51.100.10")]),
        );
        let mut d = domains(&i, "198.51.100.10");
        d.sort();
        assert_eq!(d, vec![("alias.other.test".into(), "a".into()), ("www.listed.test".into(), "b".into())]);
    }

    #[tokio::test]
    async fn cname_loops_end() {
        let l = lists(&[("vpn", "listed.test\n")]);
        let i = ingest();
        i.observe(&l, &obs("a.listed.test", &[("a.listed.test", "b.listed.test"), ("b.listed.test", "a.listed.test")]));
        assert!(i.table().is_empty());
    }
}

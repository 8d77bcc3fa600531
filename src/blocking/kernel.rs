//! The seam between the blocking engine and the kernel filter.
//!
//! The engine decides; an [`Enforcer`] makes the kernel agree. Entries are
//! keyed by what they match ([`KernelKey`]) and carry their verdict and
//! expiry; the kernel checks the expiry itself on every packet, so an
//! expired entry stops dropping at once whatever userspace is doing. Hit
//! counters live with the entries in the kernel: the engine reads them to
//! keep a block alive while the blocked client keeps sending (its packets
//! no longer reach the resolver, so dnstap shows nothing).
//!
//! Names are lowercase presentation form without the trailing dot
//! (`www.example.com`), as [`NameBuf`](crate::names::NameBuf) holds them.
//! Source ranges are canonical: an IPv4 range is an IPv4 `IpNet` (the
//! filter matches IPv4 packets on dual-stack sockets against it), and the
//! host bits are zero.
//!
//! [`MemoryEnforcer`] keeps entries in a map with no kernel behind it: for
//! unit tests, for `replay` and for an engine whose filter is down.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use ipnet::IpNet;
use serde::Serialize;

use crate::clock::UnixMillis;

/// The qtype value that means every type.
pub const QTYPE_ANY: u16 = 255;

/// How a name entry matches the question name of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NameMatch {
    /// That name only.
    Exact,
    /// The name and every name below it.
    Suffix,
    /// Every name strictly below the name, not the name itself (what an
    /// `nxdomain_suffix` block drops: `x1.example.com`, not `example.com`).
    Below,
}

/// What a kernel entry matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelKey {
    /// Packets from an address (`/32`, `/128`) or range, UDP and TCP.
    Source(IpNet),
    /// UDP queries for a name. `qtype` is [`QTYPE_ANY`] for every type.
    Name { name: Box<str>, matching: NameMatch, qtype: u16 },
}

/// What the filter does with a packet an entry matches. When several name
/// entries match a packet, the most specific one (the longest name; for
/// equal names an exact entry before a suffix one, a qtype-specific one
/// before ANY) decides, so an `Allow` below a blocked suffix punches a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Drop,
    Allow,
}

/// An entry as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelEntry {
    pub key: KernelKey,
    pub verdict: Verdict,
    /// Wall-clock expiry (converted to and from the kernel clock by the
    /// enforcer).
    pub expires: UnixMillis,
    /// Packets this entry matched (and dropped, for `Drop`) since it was
    /// first inserted; an upsert keeps the count.
    pub hits: u64,
}

/// Packets the filter dropped, by the kind of entry that matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DropCounters {
    pub source: u64,
    pub qname: u64,
    pub suffix: u64,
}

/// One socket of the resolver that carries the filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachedSocket {
    pub pid: u32,
    pub inode: u64,
    /// `"udp"` or `"tcp"`.
    pub protocol: &'static str,
    pub local: SocketAddr,
}

/// The filter's state, for `/api/v1/status` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilterStatus {
    /// Whether packets are being filtered at all.
    pub up: bool,
    /// `"socket"`, `"cgroup"` or `"none"`.
    pub mode: String,
    pub sockets: Vec<AttachedSocket>,
    /// The cgroup the program is attached to (cgroup mode).
    pub cgroup: Option<String>,
    /// Current problems, each a sentence an operator can act on.
    pub errors: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    /// The kernel filter cannot run here (no privileges, no BPF, no
    /// resolver); blocking is down, routes keep working.
    #[error("kernel filter unavailable: {0}")]
    Unavailable(String),
    /// A map operation failed.
    #[error("kernel map {map}: {message}")]
    Map { map: &'static str, message: String },
    /// The maps are full (`max_blocks`).
    #[error("kernel map {map} is full")]
    Full { map: &'static str },
}

/// Keeps the kernel's entries as the engine says.
pub trait Enforcer: Send + Sync + 'static {
    /// Inserts the entry, or updates verdict and expiry of the one with
    /// this key (its hit counter is kept).
    fn upsert(&self, key: &KernelKey, verdict: Verdict, expires: UnixMillis) -> Result<(), EnforceError>;
    /// Removes the entry; `false` when there was none. Once this returns,
    /// the filter no longer applies the entry to new packets.
    fn remove(&self, key: &KernelKey) -> Result<bool, EnforceError>;
    /// Every entry the kernel holds, expired ones included (for
    /// reconciliation and hit counters).
    fn entries(&self) -> Result<Vec<KernelEntry>, EnforceError>;
    /// The hit counter of one entry; `None` when there is no such entry.
    fn hits(&self, key: &KernelKey) -> Result<Option<u64>, EnforceError>;
    /// Packets dropped since the maps were created.
    fn drops(&self) -> Result<DropCounters, EnforceError>;
    /// Attachment state.
    fn status(&self) -> FilterStatus;
}

/// An enforcer without a kernel: entries in a map, hits set by hand.
#[derive(Default)]
pub struct MemoryEnforcer {
    entries: Mutex<BTreeMap<KernelKey, KernelEntry>>,
    drops: Mutex<DropCounters>,
    status: FilterStatus,
}

impl MemoryEnforcer {
    pub fn new() -> MemoryEnforcer {
        MemoryEnforcer {
            status: FilterStatus { up: false, mode: "none".into(), ..Default::default() },
            ..Default::default()
        }
    }

    /// Counts `n` packets as matched by `key` (tests: what the kernel
    /// would have counted while dropping them).
    pub fn add_hits(&self, key: &KernelKey, n: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.get_mut(key) {
            e.hits += n;
            if e.verdict == Verdict::Drop {
                let mut d = self.drops.lock().unwrap_or_else(|p| p.into_inner());
                match &e.key {
                    KernelKey::Source(_) => d.source += n,
                    KernelKey::Name { matching: NameMatch::Exact, .. } => d.qname += n,
                    KernelKey::Name { .. } => d.suffix += n,
                }
            }
        }
    }
}

impl Enforcer for MemoryEnforcer {
    fn upsert(&self, key: &KernelKey, verdict: Verdict, expires: UnixMillis) -> Result<(), EnforceError> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let e = entries.entry(key.clone()).or_insert(KernelEntry { key: key.clone(), verdict, expires, hits: 0 });
        e.verdict = verdict;
        e.expires = expires;
        Ok(())
    }

    fn remove(&self, key: &KernelKey) -> Result<bool, EnforceError> {
        Ok(self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(key).is_some())
    }

    fn entries(&self) -> Result<Vec<KernelEntry>, EnforceError> {
        Ok(self.entries.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect())
    }

    fn hits(&self, key: &KernelKey) -> Result<Option<u64>, EnforceError> {
        Ok(self.entries.lock().unwrap_or_else(|p| p.into_inner()).get(key).map(|e| e.hits))
    }

    fn drops(&self) -> Result<DropCounters, EnforceError> {
        Ok(*self.drops.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn status(&self) -> FilterStatus {
        self.status.clone()
    }
}

/// Opens the kernel filter described by `settings`, with room for
/// `max_entries` entries per map (`[blocking] max_blocks`), and starts
/// attaching it (tasks on `tracker`, stopped by `shutdown`). An error means
/// blocking is down: the caller reports it in status and metrics and keeps
/// routing.
///
/// The first scan of the resolver runs here, so that the status is right
/// from the start; a resolver that is not there yet is an error in the
/// status (blocking down until it appears), not a failure of `start`.
pub fn start(
    settings: &super::attach_config::AttachSettings,
    max_entries: u32,
    tracker: &tokio_util::task::TaskTracker,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<std::sync::Arc<dyn Enforcer>, EnforceError> {
    use super::attach_config::AttachMode;
    let filter = std::sync::Arc::new(super::filter::Filter::open(max_entries, settings.pin_path.as_deref())?);
    // The cgroup program passes everything until it knows the port; the
    // socket program ignores it.
    filter.set_port(if settings.mode == AttachMode::Cgroup { settings.port } else { 0 })?;
    let mut attacher = super::attach::Attacher::new(filter.clone(), settings.clone());
    attacher.scan();
    tracker.spawn(attacher.run(shutdown));
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_enforcer_keeps_hits_across_upserts() {
        let m = MemoryEnforcer::new();
        let k = KernelKey::Name { name: "example.com".into(), matching: NameMatch::Below, qtype: QTYPE_ANY };
        m.upsert(&k, Verdict::Drop, 10).unwrap();
        m.add_hits(&k, 5);
        m.upsert(&k, Verdict::Drop, 20).unwrap();
        assert_eq!(m.hits(&k).unwrap(), Some(5));
        assert_eq!(m.entries().unwrap()[0].expires, 20);
        assert_eq!(m.drops().unwrap().suffix, 5);
        assert!(m.remove(&k).unwrap());
        assert!(!m.remove(&k).unwrap());
        assert_eq!(m.hits(&k).unwrap(), None);
    }
}

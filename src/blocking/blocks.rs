//! The block set: every block and warning in force, from rules and from
//! the API, and the kernel entries they stand for.
//!
//! Semantics as dnsdist's: a warning never downgrades a block, a longer
//! block is never shortened (a new trigger only moves the expiry later),
//! a stronger action (warn < drop < blackhole) replaces a weaker one. A
//! manual block replaces whatever has its key.
//!
//! What the kernel must hold follows from the set alone
//! ([`BlockSet::wanted`]); the set also remembers what was pushed
//! ([`BlockSet::pushed`]) so that a change yields only the operations it
//! needs, and a reconciliation pass can compare the kernel with both.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::config::{Action, parse_qtype, parse_range, qtype_name};
use super::kernel::{KernelEntry, KernelKey, NameMatch, QTYPE_ANY, Verdict};
use crate::clock::UnixMillis;
use crate::names::NameBuf;

/// What a block matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Source(IpNet),
    Qname(Box<str>),
    Suffix(Box<str>),
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Source(_) => "source",
            Target::Qname(_) => "qname",
            Target::Suffix(_) => "suffix",
        }
    }

    /// The key as the API writes it: `198.51.100.7`, `198.51.100.0/24`,
    /// `qname:example.com`, `suffix:example.com`.
    pub fn api_key(&self) -> String {
        match self {
            Target::Source(n) if n.prefix_len() == n.max_prefix_len() => n.addr().to_string(),
            Target::Source(n) => n.to_string(),
            Target::Qname(n) => format!("qname:{n}"),
            Target::Suffix(n) => format!("suffix:{n}"),
        }
    }

    /// Parses an API key.
    pub fn parse(key: &str) -> Result<Target, String> {
        let name = |text: &str, what: &str| -> Result<Box<str>, String> {
            match NameBuf::from_text(text) {
                Ok(n) if !n.is_root() => Ok(n.to_string_lossy().into()),
                Ok(_) => Err(format!("{what}: the root name cannot be blocked")),
                Err(e) => Err(format!("{what}: {text:?} is not a domain name: {e}")),
            }
        };
        if let Some(n) = key.strip_prefix("qname:") {
            return name(n, "qname").map(Target::Qname);
        }
        if let Some(n) = key.strip_prefix("suffix:") {
            return name(n, "suffix").map(Target::Suffix);
        }
        parse_range(key)
            .map(Target::Source)
            .map_err(|e| format!("{e}; a key is an address, a CIDR range, \"qname:NAME\" or \"suffix:NAME\""))
    }
}

/// The identity of a block: one per target and qtype.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlockKey {
    pub target: Target,
    pub qtype: u16,
}

/// How a rule block is kept alive from the kernel's hit counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeepAlive {
    /// Dropped packets per second above which the block is extended.
    pub rate: f64,
    /// The span the rate is measured over before the decision.
    pub span_ms: u64,
    /// `(hits, time)` at the start of the measurement.
    #[serde(skip)]
    pub baseline: Option<(u64, UnixMillis)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub key: BlockKey,
    /// For suffix targets: `Suffix` (the name and below; manual) or
    /// `Below` (strictly below; nxdomain_suffix).
    #[serde(with = "matching_serde")]
    pub matching: NameMatch,
    pub reason: Arc<str>,
    /// The rule that made it; `None` for a manual block.
    pub rule: Option<Arc<str>>,
    pub action: Action,
    /// Listed only, not enforced (a warning level crossed).
    pub warning: bool,
    pub created: UnixMillis,
    pub expires: UnixMillis,
    /// Names below a suffix block that stay answered.
    #[serde(default)]
    pub allow: Vec<Box<str>>,
    #[serde(default)]
    pub keepalive: Option<KeepAlive>,
    /// The kernel's hit counter when last read.
    #[serde(default)]
    pub hits: u64,
}

impl Block {
    /// Dropped in the kernel (not a warning, not a `warn` action).
    pub fn enforced(&self) -> bool {
        !self.warning && self.action != Action::Warn
    }

    pub fn strength(&self) -> u8 {
        if self.warning {
            0
        } else {
            match self.action {
                Action::Warn => 0,
                Action::Drop => 1,
                Action::Blackhole => 2,
            }
        }
    }

    pub fn kernel_key(&self) -> KernelKey {
        kernel_key(&self.key, self.matching)
    }

    /// A source block announced as a BGP blackhole route.
    pub fn blackhole(&self) -> Option<IpNet> {
        match (&self.key.target, self.enforced() && self.action == Action::Blackhole) {
            (Target::Source(n), true) => Some(*n),
            _ => None,
        }
    }
}

/// `NameMatch` in the persisted record (the seam type has no `Deserialize`).
mod matching_serde {
    use super::NameMatch;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &NameMatch, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match m {
            NameMatch::Exact => "exact",
            NameMatch::Suffix => "suffix",
            NameMatch::Below => "below",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NameMatch, D::Error> {
        match String::deserialize(d)?.as_str() {
            "exact" => Ok(NameMatch::Exact),
            "suffix" => Ok(NameMatch::Suffix),
            "below" => Ok(NameMatch::Below),
            other => Err(serde::de::Error::custom(format!("unknown matching {other:?}"))),
        }
    }
}

pub fn kernel_key(key: &BlockKey, matching: NameMatch) -> KernelKey {
    match &key.target {
        Target::Source(n) => KernelKey::Source(*n),
        Target::Qname(n) => KernelKey::Name { name: n.clone(), matching: NameMatch::Exact, qtype: key.qtype },
        Target::Suffix(n) => KernelKey::Name { name: n.clone(), matching, qtype: key.qtype },
    }
}

/// An operation on the kernel's maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelOp {
    Upsert(KernelKey, Verdict, UnixMillis),
    Remove(KernelKey),
}

/// What a new trigger did to the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    /// Upgraded or extended.
    Changed,
    /// The entry in force was stronger and lasts longer.
    Unchanged,
    /// `max_blocks` reached.
    Refused,
}

#[derive(Debug, Default)]
pub struct BlockSet {
    blocks: BTreeMap<BlockKey, Block>,
    max_blocks: usize,
    /// What was last pushed to the kernel, by key.
    pushed: BTreeMap<KernelKey, (Verdict, UnixMillis)>,
}

impl BlockSet {
    pub fn new(max_blocks: usize) -> BlockSet {
        BlockSet { max_blocks, ..Default::default() }
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn get(&self, key: &BlockKey) -> Option<&Block> {
        self.blocks.get(key)
    }

    pub fn get_mut(&mut self, key: &BlockKey) -> Option<&mut Block> {
        self.blocks.get_mut(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Block> {
        self.blocks.values()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Block> {
        self.blocks.values_mut()
    }

    /// Kernel entries in use: blocks in force and their allow entries.
    pub fn kernel_entries(&self) -> usize {
        self.pushed.len()
    }

    /// Applies a trigger (a rule's, or a manual block when `manual`).
    pub fn apply(&mut self, new: Block, manual: bool) -> Applied {
        match self.blocks.get_mut(&new.key) {
            None => {
                if self.blocks.len() >= self.max_blocks {
                    return Applied::Refused;
                }
                self.blocks.insert(new.key.clone(), new);
                Applied::Created
            }
            Some(old) if manual => {
                *old = new;
                Applied::Changed
            }
            Some(old) => {
                if new.strength() < old.strength() && new.expires <= old.expires {
                    return Applied::Unchanged;
                }
                if new.strength() < old.strength() {
                    // A weaker trigger: never a downgrade; a rule block
                    // (not a manual one) may last longer.
                    if old.rule.is_some() && new.strength() > 0 {
                        old.expires = new.expires;
                        return Applied::Changed;
                    }
                    return Applied::Unchanged;
                }
                let expires = old.expires.max(new.expires);
                let stronger = new.strength() > old.strength();
                if !stronger && expires == old.expires && old.allow == new.allow {
                    return Applied::Unchanged;
                }
                let created = if stronger { new.created } else { old.created };
                let hits = old.hits;
                let matching = if old.matching == NameMatch::Suffix { NameMatch::Suffix } else { new.matching };
                let was_manual = old.rule.is_none();
                *old = Block { expires, created, hits, matching, ..new };
                if was_manual && !stronger {
                    // A rule never takes over a manual block's identity.
                    old.rule = None;
                }
                Applied::Changed
            }
        }
    }

    pub fn remove(&mut self, key: &BlockKey) -> Option<Block> {
        self.blocks.remove(key)
    }

    /// Removes every block of `target` (of `qtype` only, when given).
    pub fn remove_target(&mut self, target: &Target, qtype: Option<u16>) -> Vec<Block> {
        let keys: Vec<BlockKey> =
            self.blocks.keys().filter(|k| &k.target == target && qtype.is_none_or(|q| q == k.qtype)).cloned().collect();
        keys.iter().filter_map(|k| self.blocks.remove(k)).collect()
    }

    /// Removes blocks whose time is up.
    pub fn expire(&mut self, now: UnixMillis) -> Vec<Block> {
        let keys: Vec<BlockKey> = self.blocks.values().filter(|b| b.expires <= now).map(|b| b.key.clone()).collect();
        keys.iter().filter_map(|k| self.blocks.remove(k)).collect()
    }

    /// The kernel keys a block stands for.
    pub fn keys_of(block: &Block) -> Vec<KernelKey> {
        let mut v = vec![block.kernel_key()];
        for a in &block.allow {
            v.push(KernelKey::Name { name: a.clone(), matching: NameMatch::Exact, qtype: block.key.qtype });
        }
        v
    }

    /// What the kernel must hold for `key`, from the set alone.
    pub fn wanted(&self, key: &KernelKey) -> Option<(Verdict, UnixMillis)> {
        match key {
            KernelKey::Source(n) => self
                .blocks
                .get(&BlockKey { target: Target::Source(*n), qtype: QTYPE_ANY })
                .filter(|b| b.enforced())
                .map(|b| (Verdict::Drop, b.expires)),
            KernelKey::Name { name, matching, qtype } => {
                let target = match matching {
                    NameMatch::Exact => Target::Qname(name.clone()),
                    NameMatch::Suffix | NameMatch::Below => Target::Suffix(name.clone()),
                };
                let own = self
                    .blocks
                    .get(&BlockKey { target, qtype: *qtype })
                    .filter(|b| b.enforced() && (b.matching == *matching || *matching == NameMatch::Exact));
                if let Some(b) = own {
                    return Some((Verdict::Drop, b.expires));
                }
                if *matching != NameMatch::Exact {
                    return None;
                }
                // An allow entry of a suffix block above the name.
                let n = NameBuf::from_text(name).ok()?;
                let mut best: Option<UnixMillis> = None;
                for i in 1..n.label_count() {
                    let parent = String::from_utf8_lossy(n.suffix(i));
                    let k = BlockKey { target: Target::Suffix(parent.as_ref().into()), qtype: *qtype };
                    if let Some(b) = self.blocks.get(&k)
                        && b.enforced()
                        && b.allow.iter().any(|a| **a == **name)
                    {
                        best = Some(best.map_or(b.expires, |e| e.max(b.expires)));
                    }
                }
                best.map(|e| (Verdict::Allow, e))
            }
        }
    }

    /// Brings `pushed` up to date for `keys` and returns the operations
    /// that make the kernel agree.
    pub fn sync_keys(&mut self, keys: impl IntoIterator<Item = KernelKey>) -> Vec<KernelOp> {
        let mut ops = Vec::new();
        for k in keys {
            match (self.wanted(&k), self.pushed.get(&k).copied()) {
                (Some(w), Some(p)) if w == p => {}
                (Some(w), _) => {
                    self.pushed.insert(k.clone(), w);
                    ops.push(KernelOp::Upsert(k, w.0, w.1));
                }
                (None, Some(_)) => {
                    self.pushed.remove(&k);
                    ops.push(KernelOp::Remove(k));
                }
                (None, None) => {}
            }
        }
        ops
    }

    /// Every kernel entry the set wants.
    pub fn all_wanted(&self) -> BTreeMap<KernelKey, (Verdict, UnixMillis)> {
        let mut out = BTreeMap::new();
        for b in self.blocks.values().filter(|b| b.enforced()) {
            for k in Self::keys_of(b) {
                if let Some(w) = self.wanted(&k) {
                    out.insert(k, w);
                }
            }
        }
        out
    }

    /// Compares the kernel with the set: removes what the set does not
    /// know, restores what is missing or different.
    pub fn reconcile(&mut self, kernel: &[KernelEntry]) -> Vec<KernelOp> {
        let wanted = self.all_wanted();
        let mut ops = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for e in kernel {
            seen.insert(e.key.clone());
            match wanted.get(&e.key) {
                None => ops.push(KernelOp::Remove(e.key.clone())),
                Some(&(v, x)) if v != e.verdict || x != e.expires => ops.push(KernelOp::Upsert(e.key.clone(), v, x)),
                Some(_) => {}
            }
        }
        for (k, &(v, x)) in &wanted {
            if !seen.contains(k) {
                ops.push(KernelOp::Upsert(k.clone(), v, x));
            }
        }
        self.pushed = wanted;
        ops
    }

    /// Source ranges announced as blackholes.
    pub fn blackholes(&self) -> Vec<IpNet> {
        self.blocks.values().filter_map(Block::blackhole).collect()
    }
}

/// A manual block as the API receives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualRequest {
    pub key: String,
    #[serde(default)]
    pub qtype: Option<String>,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub blackhole: bool,
}

/// The default duration of a manual block.
pub const MANUAL_DURATION_MS: u64 = 10 * 60 * 1000;

impl ManualRequest {
    /// The block this request asks for, or why it cannot be one.
    pub fn to_block(&self, now: UnixMillis) -> Result<Block, String> {
        let target = Target::parse(self.key.trim())?;
        let qtype = match &self.qtype {
            None => QTYPE_ANY,
            Some(q) => parse_qtype(q).ok_or_else(|| format!("unknown qtype {q:?} (e.g. \"A\", \"AAAA\", \"ANY\")"))?,
        };
        if matches!(target, Target::Source(_)) && qtype != QTYPE_ANY {
            return Err("qtype applies to qname: and suffix: keys; a source block covers every query".into());
        }
        if self.blackhole && !matches!(target, Target::Source(_)) {
            return Err("blackhole applies to source keys (an address or range) only".into());
        }
        let duration = match &self.duration {
            None => MANUAL_DURATION_MS,
            Some(d) => {
                let d = crate::values::parse_duration(d)?;
                if d.is_zero() || d > std::time::Duration::from_secs(365 * 86_400) {
                    return Err("duration must be above 0 and at most 365d".into());
                }
                crate::clock::millis(d)
            }
        };
        let reason: Arc<str> = match &self.reason {
            Some(r) if r.len() > 512 => return Err("reason is longer than 512 bytes".into()),
            Some(r) => r.as_str().into(),
            None => "manual".into(),
        };
        Ok(Block {
            key: BlockKey { target, qtype },
            matching: NameMatch::Suffix,
            reason,
            rule: None,
            action: if self.blackhole { Action::Blackhole } else { Action::Drop },
            warning: false,
            created: now,
            expires: now.saturating_add(duration),
            allow: Vec::new(),
            keepalive: None,
            hits: 0,
        })
    }
}

/// A block as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockJson {
    pub key: String,
    pub kind: String,
    pub qtype: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rule: Option<String>,
    pub action: String,
    pub created: String,
    pub expires: String,
    pub hits: u64,
    pub warning: bool,
    /// `below` (nxdomain_suffix) or `suffix` for suffix blocks, else absent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub matching: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub allow: Vec<String>,
}

impl BlockJson {
    pub fn from_block(b: &Block) -> BlockJson {
        BlockJson {
            key: b.key.target.api_key(),
            kind: b.key.target.kind().into(),
            qtype: qtype_name(b.key.qtype),
            reason: b.reason.to_string(),
            rule: b.rule.as_ref().map(|r| r.to_string()),
            action: b.action.name().into(),
            created: crate::clock::rfc3339(b.created),
            expires: crate::clock::rfc3339(b.expires),
            hits: b.hits,
            warning: b.warning || b.action == Action::Warn,
            matching: match (&b.key.target, b.matching) {
                (Target::Suffix(_), NameMatch::Below) => Some("below".into()),
                (Target::Suffix(_), _) => Some("suffix".into()),
                _ => None,
            },
            allow: b.allow.iter().map(|a| a.to_string()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(target: Target, action: Action, warning: bool, created: u64, expires: u64) -> Block {
        Block {
            key: BlockKey { target, qtype: QTYPE_ANY },
            matching: NameMatch::Below,
            reason: "r".into(),
            rule: Some("rule".into()),
            action,
            warning,
            created,
            expires,
            allow: vec![],
            keepalive: None,
            hits: 0,
        }
    }

    fn src(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    #[test]
    fn keys_parse_and_print() {
        assert_eq!(src("198.51.100.7").api_key(), "198.51.100.7");
        assert_eq!(src("198.51.100.7/32").api_key(), "198.51.100.7");
        assert_eq!(src("198.51.100.0/24").api_key(), "198.51.100.0/24");
        assert_eq!(src("2001:db8::/48").api_key(), "2001:db8::/48");
        assert_eq!(src("::1").api_key(), "::1");
        assert_eq!(src("qname:WWW.Example.com.").api_key(), "qname:www.example.com");
        assert_eq!(src("suffix:example.com").kind(), "suffix");
        assert!(Target::parse("198.51.100.7/24").unwrap_err().contains("198.51.100.0/24"));
        assert!(Target::parse("qname:").is_err());
        assert!(Target::parse("bogus").is_err());
    }

    #[test]
    fn warning_never_downgrades_and_longer_is_never_shortened() {
        let mut s = BlockSet::new(10);
        let k = src("198.51.100.7");
        assert_eq!(s.apply(block(k.clone(), Action::Drop, false, 0, 1000), false), Applied::Created);
        // A warning with a later expiry does not downgrade the block.
        assert_eq!(s.apply(block(k.clone(), Action::Drop, true, 10, 2000), false), Applied::Unchanged);
        let b = s.get(&BlockKey { target: k.clone(), qtype: QTYPE_ANY }).unwrap();
        assert!(b.enforced() && b.expires == 1000);
        // A shorter trigger does not shorten it.
        assert_eq!(s.apply(block(k.clone(), Action::Drop, false, 20, 500), false), Applied::Unchanged);
        // A longer one extends it, keeping its creation time.
        assert_eq!(s.apply(block(k.clone(), Action::Drop, false, 30, 3000), false), Applied::Changed);
        let b = s.get(&BlockKey { target: k.clone(), qtype: QTYPE_ANY }).unwrap();
        assert_eq!((b.created, b.expires), (0, 3000));
        // A stronger action upgrades, never shortening.
        assert_eq!(s.apply(block(k.clone(), Action::Blackhole, false, 40, 100), false), Applied::Changed);
        let b = s.get(&BlockKey { target: k.clone(), qtype: QTYPE_ANY }).unwrap();
        assert_eq!((b.action, b.expires), (Action::Blackhole, 3000));
        assert_eq!(s.blackholes(), vec!["198.51.100.7/32".parse::<IpNet>().unwrap()]);
        // A warning first, then the block: upgraded.
        let w = src("198.51.100.8");
        s.apply(block(w.clone(), Action::Drop, true, 0, 1000), false);
        assert!(!s.get(&BlockKey { target: w.clone(), qtype: QTYPE_ANY }).unwrap().enforced());
        assert_eq!(s.apply(block(w.clone(), Action::Drop, false, 5, 900), false), Applied::Changed);
        assert!(s.get(&BlockKey { target: w, qtype: QTYPE_ANY }).unwrap().enforced());
        // max_blocks
        let mut small = BlockSet::new(1);
        small.apply(block(src("198.51.100.1"), Action::Drop, false, 0, 10), false);
        assert_eq!(small.apply(block(src("198.51.100.2"), Action::Drop, false, 0, 10), false), Applied::Refused);
    }

    #[test]
    fn kernel_state_follows_the_set() {
        let mut s = BlockSet::new(10);
        let mut b = block(src("suffix:listed.test"), Action::Drop, false, 0, 1000);
        b.allow = vec!["www.listed.test".into()];
        let keys = BlockSet::keys_of(&b);
        s.apply(b.clone(), false);
        let ops = s.sync_keys(keys.clone());
        assert_eq!(ops.len(), 2);
        assert!(ops.contains(&KernelOp::Upsert(
            KernelKey::Name { name: "listed.test".into(), matching: NameMatch::Below, qtype: QTYPE_ANY },
            Verdict::Drop,
            1000
        )));
        assert!(ops.contains(&KernelOp::Upsert(
            KernelKey::Name { name: "www.listed.test".into(), matching: NameMatch::Exact, qtype: QTYPE_ANY },
            Verdict::Allow,
            1000
        )));
        assert!(s.sync_keys(keys.clone()).is_empty(), "nothing changed, nothing to do");
        // Reconciliation: a stray kernel entry goes, a missing one comes back.
        let stray = KernelEntry {
            key: KernelKey::Source("203.0.113.9/32".parse().unwrap()),
            verdict: Verdict::Drop,
            expires: 5,
            hits: 0,
        };
        let ops = s.reconcile(std::slice::from_ref(&stray));
        assert_eq!(ops.len(), 3, "{ops:?}");
        assert!(ops.contains(&KernelOp::Remove(stray.key)));
        s.remove(&b.key);
        let ops = s.sync_keys(keys);
        assert_eq!(ops.iter().filter(|o| matches!(o, KernelOp::Remove(_))).count(), 2);
    }

    #[test]
    fn manual_requests() {
        let r = |j: &str| serde_json::from_str::<ManualRequest>(j).unwrap().to_block(1000);
        let b = r(r#"{"key":"suffix:Example.com","qtype":"AAAA","duration":"10s","reason":"x"}"#).unwrap();
        assert_eq!((b.key.qtype, b.expires, b.matching), (28, 11_000, NameMatch::Suffix));
        assert_eq!(r(r#"{"key":"198.51.100.0/24","blackhole":true}"#).unwrap().action, Action::Blackhole);
        assert!(r(r#"{"key":"198.51.100.7","qtype":"A"}"#).unwrap_err().contains("qtype"));
        assert!(r(r#"{"key":"qname:x.test","duration":"0s"}"#).is_err());
        assert!(r(r#"{"key":"qname:x.test","qtype":"BOGUS"}"#).unwrap_err().contains("BOGUS"));
        assert!(serde_json::from_str::<ManualRequest>(r#"{"key":"x","extra":1}"#).is_err());
    }
}

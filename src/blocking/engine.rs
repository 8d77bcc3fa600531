//! The engine: a state machine driven by explicit times.
//!
//! [`Engine::evaluate`] is one evaluation at time `now`: it drains what
//! every connection's tap gathered since the last one into a new tick of
//! the window tables, runs the rules on the keys whose sums changed,
//! applies the triggers to the block set, keeps blocks alive from the
//! kernel's hit counters, expires what is due, and returns the kernel
//! operations and block changes for the caller to carry out. It does no
//! I/O: the daemon calls it on its clock with the real enforcer's
//! counters, `replay` on the capture's timestamps, the unit tests on
//! synthetic times.

use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;

use super::blocks::{Applied, Block, BlockKey, BlockSet, KeepAlive, KernelOp, ManualRequest, Target};
use super::config::{Action, BlockingSettings, RuleKind, RuleSettings};
use super::kernel::{KernelEntry, KernelKey, NameMatch, QTYPE_ANY};
use super::tap::{self, ClientKey, Plan, Tap, TapRegistry, TickAccum};
use super::window::Table;
use crate::clock::{UnixMillis, millis};

/// How a rule reads the client table.
#[derive(Debug, Clone)]
struct ClientRule {
    rule: RuleSettings,
    /// The sum compared with the limit.
    value: usize,
    /// Responses (ratio denominator, bytes per response).
    responses: Option<usize>,
    limit: f64,
    warning: Option<f64>,
}

#[derive(Debug, Clone)]
struct SuffixRule {
    rule: RuleSettings,
    value: usize,
    limit: f64,
    warning: Option<f64>,
}

/// What one evaluation did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ops: Vec<KernelOp>,
    /// Blocks created, changed or removed (for the persisted record).
    pub changed: Vec<BlockKey>,
    pub created: Vec<Block>,
    pub expired: Vec<Block>,
    /// Triggers refused because `max_blocks` was reached.
    pub refused: u64,
    /// The set of blackhole prefixes changed.
    pub blackholes_changed: bool,
    pub sightings: u64,
    pub dropped: u64,
    pub evicted: u64,
    /// Per rule: keys examined.
    pub examined: Vec<(Arc<str>, u64)>,
    pub extended: u64,
}

pub struct Engine {
    settings: Arc<BlockingSettings>,
    plan: Arc<Plan>,
    registry: Arc<TapRegistry>,
    spares: Vec<TickAccum>,
    clients: Table<ClientKey>,
    client_rules: Vec<ClientRule>,
    suffixes: Table<Box<str>>,
    suffix_rules: Vec<SuffixRule>,
    answered: Table<Box<str>>,
    answered_pair: usize,
    blocks: BlockSet,
    last_eval: Option<UnixMillis>,
    /// Latest dnstap time per client in the current tick, by slot.
    seen: Vec<(u32, u64)>,
}

/// Milliseconds before expiry at which a block's hit rate is judged.
fn lead_ms(interval_ms: u64) -> u64 {
    (3 * interval_ms).max(300)
}

impl Engine {
    pub fn new(settings: BlockingSettings) -> Engine {
        let plan = Arc::new(Plan::new(&settings));
        let mut pairs = Vec::new();
        let mut client_rules = Vec::new();
        let mut suffix_pairs = Vec::new();
        let mut suffix_specs = Vec::new();
        let mut answered_window = 0u64;
        for r in &settings.rules {
            let w = millis(r.window);
            match r.kind {
                RuleKind::NxdomainSuffix => {
                    suffix_pairs.push((0usize, w));
                    suffix_specs.push(r.clone());
                    answered_window = answered_window.max(w);
                }
                kind => {
                    let counter = match kind {
                        RuleKind::QueryRate => tap::C_QUERIES,
                        RuleKind::QtypeRate => plan.counter_of_qtype(r.qtype).unwrap_or(tap::C_QUERIES),
                        RuleKind::RcodeRate | RuleKind::RcodeRatio => {
                            plan.counter_of_rcode(r.rcode).unwrap_or(tap::C_RESPONSES)
                        }
                        _ => tap::C_BYTES,
                    };
                    pairs.push((counter, w));
                    if matches!(kind, RuleKind::RcodeRatio | RuleKind::ResponseByteRate) {
                        pairs.push((tap::C_RESPONSES, w));
                    }
                    client_rules.push((r.clone(), counter));
                }
            }
        }
        pairs.dedup();
        let clients: Table<ClientKey> = Table::new(plan.counters, &pairs);
        let client_rules = client_rules
            .into_iter()
            .map(|(rule, counter)| {
                let w = millis(rule.window);
                let value = clients.pair(counter, w).unwrap_or(0);
                let responses = matches!(rule.kind, RuleKind::RcodeRatio | RuleKind::ResponseByteRate)
                    .then(|| clients.pair(tap::C_RESPONSES, w))
                    .flatten();
                ClientRule {
                    limit: rule.limit(rule.threshold),
                    warning: rule.warning.map(|w| rule.limit(w)),
                    value,
                    responses,
                    rule,
                }
            })
            .collect();
        let suffixes: Table<Box<str>> = Table::new(1, &suffix_pairs);
        let suffix_rules = suffix_specs
            .into_iter()
            .map(|rule| SuffixRule {
                value: suffixes.pair(0, millis(rule.window)).unwrap_or(0),
                limit: rule.limit(rule.threshold),
                warning: rule.warning.map(|w| rule.limit(w)),
                rule,
            })
            .collect();
        let answered_pairs: Vec<(usize, u64)> =
            if answered_window > 0 { vec![(0, answered_window)] } else { Vec::new() };
        let answered: Table<Box<str>> = Table::new(1, &answered_pairs);
        let answered_pair = answered.pair(0, answered_window).unwrap_or(0);
        Engine {
            blocks: BlockSet::new(settings.max_blocks),
            settings: Arc::new(settings),
            plan,
            registry: Arc::new(TapRegistry::default()),
            spares: Vec::new(),
            clients,
            client_rules,
            suffixes,
            suffix_rules,
            answered,
            answered_pair,
            last_eval: None,
            seen: Vec::new(),
        }
    }

    pub fn settings(&self) -> &Arc<BlockingSettings> {
        &self.settings
    }

    /// A tap for a new dnstap connection.
    pub fn tap_factory(&self) -> TapFactory {
        TapFactory { registry: self.registry.clone(), plan: self.plan.clone() }
    }

    pub fn blocks(&self) -> &BlockSet {
        &self.blocks
    }

    pub fn blocks_mut(&mut self) -> &mut BlockSet {
        &mut self.blocks
    }

    pub fn tracked_clients(&self) -> usize {
        self.clients.len()
    }

    pub fn tracked_suffixes(&self) -> usize {
        self.suffixes.len()
    }

    pub fn tracked_names(&self) -> usize {
        self.answered.len()
    }

    /// Bytes per tracked client in the table (without tick records).
    pub fn client_bytes_per_key(&self) -> usize {
        self.clients.bytes_per_key()
    }

    pub fn client_record_bytes(&self) -> usize {
        self.clients.record_bytes()
    }

    /// One evaluation at `now`. `hits` reads a kernel hit counter (`None`:
    /// no such entry, or no kernel).
    pub fn evaluate(&mut self, now: UnixMillis, hits: &dyn Fn(&KernelKey) -> Option<u64>) -> Outcome {
        let mut out = Outcome::default();
        if let Some(last) = self.last_eval
            && now <= last
        {
            return out;
        }
        self.last_eval = Some(now);
        let blackholes_before = self.blocks.blackholes();
        // Drain the taps into a new tick.
        let mut drained = self.registry.drain(&mut self.spares);
        self.clients.begin(now);
        self.suffixes.begin(now);
        self.answered.begin(now);
        self.seen.clear();
        for acc in &drained {
            out.sightings += acc.sightings;
            out.dropped += acc.dropped;
            for c in &acc.clients {
                let slot = self.clients.add(&c.key, &c.counts, |k| *k);
                self.seen.push((slot, c.last_seen));
            }
            for (name, n) in acc.suffixes.iter() {
                self.suffixes.add(name, &[n], |n| n.into());
            }
            for (name, n) in acc.answered.iter() {
                self.answered.add(name, &[n], |n| n.into());
            }
        }
        for mut acc in drained.drain(..) {
            acc.clear();
            if self.spares.len() < 16 {
                self.spares.push(acc);
            }
        }
        self.clients.advance(now);
        self.suffixes.advance(now);
        self.answered.advance(now);

        // Client rules: keys with new counts, and for ratio rules also
        // keys whose sums went down.
        let mut triggers: Vec<Block> = Vec::new();
        for (ri, cr) in self.client_rules.iter().enumerate() {
            let mut examined = 0u64;
            let ratio = cr.rule.kind == RuleKind::RcodeRatio;
            let decreased: &[u32] = if ratio { &self.clients.decreased } else { &[] };
            let slots = self.seen.iter().map(|&(s, t)| (s, t)).chain(decreased.iter().map(|&s| (s, 0)));
            for (slot, last_seen) in slots {
                if !self.clients.is_live(slot) {
                    continue;
                }
                examined += 1;
                if let Some(b) = self.judge_client(ri, cr, slot, last_seen, now) {
                    triggers.push(b);
                }
            }
            out.examined.push((cr.rule.name.clone(), examined));
        }
        // Suffix rules.
        for sr in &self.suffix_rules {
            let (examined, mut t) = self.judge_suffixes(sr, now);
            out.examined.push((sr.rule.name.clone(), examined));
            triggers.append(&mut t);
        }
        for b in triggers {
            self.apply_trigger(b, false, &mut out);
        }

        // Keep blocks alive from the kernel's counters, only near expiry.
        let lead = lead_ms(millis(self.settings.evaluate_interval));
        let mut extended = Vec::new();
        for b in self.blocks.iter_mut() {
            let Some(ka) = b.keepalive.as_mut() else { continue };
            if b.warning || b.action == Action::Warn {
                continue;
            }
            let left = b.expires.saturating_sub(now);
            if left > lead + ka.span_ms {
                continue;
            }
            let key = super::blocks::kernel_key(&b.key, b.matching);
            let Some(h) = hits(&key) else { continue };
            b.hits = h;
            match ka.baseline {
                None => ka.baseline = Some((h, now)),
                Some((h0, t0)) if left <= lead && now > t0 => {
                    let dropped = h.saturating_sub(h0) as f64;
                    if dropped > ka.rate * (now - t0) as f64 / 1000.0 {
                        let rule_duration = self
                            .settings
                            .rules
                            .iter()
                            .find(|r| Some(&r.name) == b.rule.as_ref())
                            .map(|r| millis(r.duration))
                            .unwrap_or(0);
                        b.expires = b.expires.max(now + rule_duration);
                        ka.baseline = None;
                        extended.push(b.key.clone());
                    }
                }
                Some(_) => {}
            }
        }
        out.extended = extended.len() as u64;
        for k in extended {
            if let Some(b) = self.blocks.get(&k) {
                let keys = BlockSet::keys_of(b);
                out.ops.extend(self.blocks.sync_keys(keys));
            }
            out.changed.push(k);
        }

        // Expiry.
        for b in self.blocks.expire(now) {
            out.ops.extend(self.blocks.sync_keys(BlockSet::keys_of(&b)));
            out.changed.push(b.key.clone());
            out.expired.push(b);
        }

        // Bounds.
        let weights = self.client_rules.clone();
        out.evicted += self.clients.evict(self.settings.max_tracked, |t, s| client_weight(&weights, t, s)) as u64;
        let srules = self.suffix_rules.clone();
        out.evicted += self.suffixes.evict(self.settings.max_tracked_suffixes, |t, s| {
            srules.iter().map(|r| f64::from(t.sum(s, r.value)) / r.limit.max(1e-9)).fold(0.0, f64::max)
        }) as u64;
        let ap = self.answered_pair;
        out.evicted += self.answered.evict(self.settings.max_tracked_suffixes, |t, s| f64::from(t.sum(s, ap))) as u64;

        out.blackholes_changed = self.blocks.blackholes() != blackholes_before;
        out
    }

    fn judge_client(&self, _ri: usize, cr: &ClientRule, slot: u32, last_seen: u64, now: UnixMillis) -> Option<Block> {
        let value = f64::from(self.clients.sum(slot, cr.value));
        let (level, crossed) = if cr.rule.kind == RuleKind::RcodeRatio {
            let responses = cr.responses.map(|p| self.clients.sum(slot, p)).unwrap_or(0);
            if responses == 0 || responses < cr.rule.min_responses {
                return None;
            }
            let ratio = value / f64::from(responses);
            (ratio, ratio > cr.limit)
        } else {
            (value, value > cr.limit)
        };
        let warned = !crossed && cr.warning.is_some_and(|w| level > w);
        if !crossed && !warned {
            return None;
        }
        let key = *self.clients.key(slot);
        let net = tap::key_net(key, self.settings.v4_prefix, self.settings.v6_prefix);
        let bkey = BlockKey { target: Target::Source(net), qtype: QTYPE_ANY };
        // A block in force is only renewed by sightings newer than it:
        // what arrives late from before the block says nothing about now.
        if let Some(existing) = self.blocks.get(&bkey)
            && existing.enforced()
            && last_seen != 0
            && last_seen <= existing.created
        {
            return None;
        }
        let window_s = cr.rule.window.as_secs_f64();
        let keep_rate = match cr.rule.kind {
            RuleKind::RcodeRatio => f64::from(cr.rule.min_responses) / window_s,
            RuleKind::ResponseByteRate => {
                let responses = cr.responses.map(|p| self.clients.sum(slot, p)).unwrap_or(0).max(1);
                cr.rule.threshold / (value / f64::from(responses)).max(1.0)
            }
            _ => cr.rule.threshold,
        };
        Some(self.rule_block(&cr.rule, bkey, NameMatch::Exact, warned, now, keep_rate, Vec::new()))
    }

    #[allow(clippy::too_many_arguments)]
    fn rule_block(
        &self,
        rule: &RuleSettings,
        key: BlockKey,
        matching: NameMatch,
        warning: bool,
        now: UnixMillis,
        keep_rate: f64,
        allow: Vec<Box<str>>,
    ) -> Block {
        let duration = millis(rule.duration);
        let span = millis(rule.window).min(duration / 2).max(millis(self.settings.evaluate_interval));
        Block {
            key,
            matching,
            reason: rule.reason.clone(),
            rule: Some(rule.name.clone()),
            action: rule.action,
            warning,
            created: now,
            expires: now.saturating_add(duration),
            allow,
            keepalive: (!warning && rule.action != Action::Warn).then_some(KeepAlive {
                rate: keep_rate,
                span_ms: span,
                baseline: None,
            }),
            hits: 0,
        }
    }

    /// The suffixes a rule blocks now: of the suffixes over the limit, the
    /// most specific ones; a parent too when what remains of its count
    /// after its blocked descendants is still over the limit.
    fn judge_suffixes(&self, sr: &SuffixRule, now: UnixMillis) -> (u64, Vec<Block>) {
        let mut examined = 0u64;
        let over = |slot: u32| f64::from(self.suffixes.sum(slot, sr.value));
        // Candidates: suffixes with new counts and every tracked ancestor.
        let mut cand: Vec<(usize, Box<str>, f64)> = Vec::new();
        for slot in self.suffixes.current() {
            examined += 1;
            let count = over(slot);
            let warn = sr.warning.unwrap_or(sr.limit);
            if count <= warn.min(sr.limit) {
                continue;
            }
            let name: &str = self.suffixes.key(slot);
            if !cand.iter().any(|(_, n, _)| **n == *name) {
                cand.push((name.split('.').count(), name.into(), count));
            }
        }
        if cand.is_empty() {
            return (examined, Vec::new());
        }
        cand.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        // Descendants already blocked by this rule count as covered.
        let mut covered: Vec<(Box<str>, f64)> = self
            .blocks
            .iter()
            .filter(|b| b.rule.as_deref() == Some(&*sr.rule.name) && b.enforced())
            .filter_map(|b| match &b.key.target {
                Target::Suffix(n) => Some((n.clone(), self.suffixes.get(&**n).map(over).unwrap_or(0.0))),
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        for (_, name, count) in cand {
            // The outermost covered descendants only.
            let mut cov = 0.0;
            for (d, c) in &covered {
                if is_below(d, &name) && !covered.iter().any(|(e, _)| is_below(e, &name) && is_below(d, e)) {
                    cov += c;
                }
            }
            let residual = count - cov;
            let key = BlockKey { target: Target::Suffix(name.clone()), qtype: QTYPE_ANY };
            let blocked = self.blocks.get(&key).is_some_and(|b| b.enforced());
            let crossed = residual > sr.limit;
            let warned = !crossed && sr.warning.is_some_and(|w| residual > w);
            if (crossed || warned) && !blocked {
                let allow = if crossed { self.allow_below(&name, sr.rule.max_allow) } else { Vec::new() };
                out.push(self.rule_block(&sr.rule, key, NameMatch::Below, warned, now, sr.rule.threshold, allow));
            }
            if crossed && !blocked {
                covered.push((name, count));
            }
        }
        (examined, out)
    }

    /// Names answered with data below `suffix`, most answered first.
    fn allow_below(&self, suffix: &str, max: usize) -> Vec<Box<str>> {
        if max == 0 {
            return Vec::new();
        }
        let mut names: Vec<(u32, &str)> = self
            .answered
            .slots()
            .map(|s| (self.answered.sum(s, self.answered_pair), &**self.answered.key(s)))
            .filter(|(c, n)| *c > 0 && is_below(n, suffix))
            .collect();
        names.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        names.truncate(max);
        names.into_iter().map(|(_, n)| n.into()).collect()
    }

    fn apply_trigger(&mut self, b: Block, manual: bool, out: &mut Outcome) -> Applied {
        let key = b.key.clone();
        let snapshot = b.clone();
        let applied = self.blocks.apply(b, manual);
        match applied {
            Applied::Created | Applied::Changed => {
                if let Some(cur) = self.blocks.get(&key).cloned() {
                    let mut keys = BlockSet::keys_of(&cur);
                    if applied == Applied::Changed {
                        // Allow entries that were replaced must go too.
                        keys.extend(BlockSet::keys_of(&snapshot));
                    }
                    out.ops.extend(self.blocks.sync_keys(keys));
                    if applied == Applied::Created {
                        out.created.push(cur);
                    }
                }
                out.changed.push(key);
            }
            Applied::Refused => out.refused += 1,
            Applied::Unchanged => {}
        }
        applied
    }

    /// A manual block (API). Replaces any block with its key.
    pub fn add_manual(&mut self, req: &ManualRequest, now: UnixMillis) -> Result<(Block, Outcome), String> {
        let block = req.to_block(now)?;
        let key = block.key.clone();
        let before = self.blocks.get(&key).cloned();
        let blackholes_before = self.blocks.blackholes();
        let mut out = Outcome::default();
        match self.apply_trigger(block, true, &mut out) {
            Applied::Refused => {
                return Err(format!("max_blocks ({}) reached", self.settings.max_blocks));
            }
            _ => {
                if let Some(old) = before {
                    out.ops.extend(self.blocks.sync_keys(BlockSet::keys_of(&old)));
                }
            }
        }
        out.blackholes_changed = self.blocks.blackholes() != blackholes_before;
        let b = self.blocks.get(&key).cloned().ok_or("block vanished")?;
        Ok((b, out))
    }

    /// Removes every block of `target` (or of one qtype).
    pub fn remove(&mut self, target: &Target, qtype: Option<u16>) -> (Vec<Block>, Outcome) {
        let blackholes_before = self.blocks.blackholes();
        let gone = self.blocks.remove_target(target, qtype);
        let mut out = Outcome::default();
        for b in &gone {
            out.ops.extend(self.blocks.sync_keys(BlockSet::keys_of(b)));
            out.changed.push(b.key.clone());
        }
        out.blackholes_changed = self.blocks.blackholes() != blackholes_before;
        (gone, out)
    }

    /// Compares the kernel's entries with the set.
    pub fn reconcile(&mut self, kernel: &[KernelEntry]) -> Vec<KernelOp> {
        self.blocks.reconcile(kernel)
    }

    /// At start: takes back the persisted blocks still in force, and
    /// adopts live kernel entries the record does not know (a filter kept
    /// across a restart), so a restart lifts nothing. Then the kernel is
    /// reconciled with the result.
    pub fn adopt(&mut self, persisted: Vec<Block>, kernel: &[KernelEntry], now: UnixMillis) -> Vec<KernelOp> {
        for mut b in persisted {
            if b.expires > now {
                if let Some(e) = kernel.iter().find(|e| e.key == b.kernel_key()) {
                    b.hits = e.hits;
                }
                self.blocks.apply(b, true);
            }
        }
        for e in kernel {
            if e.expires <= now || e.verdict != super::kernel::Verdict::Drop {
                continue;
            }
            let (target, qtype, matching) = match &e.key {
                KernelKey::Source(n) => (Target::Source(*n), QTYPE_ANY, NameMatch::Exact),
                KernelKey::Name { name, matching: NameMatch::Exact, qtype } => {
                    (Target::Qname(name.clone()), *qtype, NameMatch::Exact)
                }
                KernelKey::Name { name, matching, qtype } => (Target::Suffix(name.clone()), *qtype, *matching),
            };
            let key = BlockKey { target, qtype };
            if self.blocks.get(&key).is_some() {
                continue;
            }
            // Allow entries of a suffix block that was not recorded are
            // left to reconciliation.
            self.blocks.apply(
                Block {
                    key,
                    matching,
                    reason: "kept from the kernel filter across a restart".into(),
                    rule: None,
                    action: Action::Drop,
                    warning: false,
                    created: now,
                    expires: e.expires,
                    allow: Vec::new(),
                    keepalive: None,
                    hits: e.hits,
                },
                true,
            );
        }
        self.blocks.reconcile(kernel)
    }

    pub fn blackholes(&self) -> Vec<IpNet> {
        self.blocks.blackholes()
    }

    /// Time of the last evaluation.
    pub fn last_evaluation(&self) -> Option<UnixMillis> {
        self.last_eval
    }
}

/// Whether `name` is strictly below `suffix` (label-wise).
pub fn is_below(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len() && name.ends_with(suffix) && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
}

fn client_weight(rules: &[ClientRule], t: &Table<ClientKey>, s: u32) -> f64 {
    let mut w: f64 = 0.0;
    for r in rules {
        let v = f64::from(t.sum(s, r.value));
        let x = if r.rule.kind == RuleKind::RcodeRatio {
            let resp = r.responses.map(|p| t.sum(s, p)).unwrap_or(0);
            if resp == 0 {
                0.0
            } else {
                (v / f64::from(resp)) / r.limit * (f64::from(resp) / f64::from(r.rule.min_responses.max(1))).min(1.0)
            }
        } else {
            v / r.limit.max(1e-9)
        };
        w = w.max(x);
    }
    w
}

/// Hands out taps; cheap to clone, lives in the dnstap pipeline.
#[derive(Clone, Debug)]
pub struct TapFactory {
    registry: Arc<TapRegistry>,
    plan: Arc<Plan>,
}

impl TapFactory {
    pub fn tap(&self) -> Tap {
        self.registry.tap(self.plan.clone())
    }
}

/// How long an evaluation took, for the metrics.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, std::time::Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

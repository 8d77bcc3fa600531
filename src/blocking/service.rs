//! The engine in the daemon: the evaluation loop on the daemon's clock,
//! the enforcer's I/O, the persisted record of the blocks, the metrics,
//! and what the API asks of it.
//!
//! The engine itself ([`Engine`]) is pure; this module owns the effects:
//! every evaluation's kernel operations go to the [`Enforcer`] (failures
//! are logged once per kind of failure, counted, and shown in the status),
//! changed blocks are written to a sled tree so a restart finds them, the
//! blackhole set goes to the BGP speaker through a watch channel, and a
//! reconciliation pass every few seconds makes the kernel's maps agree
//! with the block set whatever happened in between.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::blocks::{Block, BlockJson, BlockKey, KernelOp, ManualRequest, Target};
use super::config::{BlockingSettings, RuleKind, parse_qtype};
use super::engine::{Engine, Outcome, TapFactory};
use super::kernel::{EnforceError, Enforcer, FilterStatus, MemoryEnforcer};
use crate::clock::{Clock, UnixMillis, rfc3339};

/// How often the kernel is reconciled with the block set.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);

const TREE: &str = "blocking_blocks";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BlockLabel {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SocketLabel {
    pub pid: String,
    pub inode: String,
    pub protocol: String,
    pub local: String,
}

/// The `dnsbgpd_blocking_*` series.
#[derive(Clone)]
pub struct BlockingMetrics {
    pub blocks: Family<BlockLabel, Gauge>,
    pub warnings: Gauge,
    pub kernel_drops: Family<DropLabel, Counter>,
    pub rule_evaluations: Family<RuleLabel, Counter>,
    pub rule_keys_examined: Family<RuleLabel, Counter>,
    pub evaluation_seconds: Histogram,
    pub tracked_clients: Gauge,
    pub tracked_suffixes: Gauge,
    pub tracked_names: Gauge,
    pub sightings: Counter,
    pub sightings_dropped: Counter,
    pub created: Family<RuleLabel, Counter>,
    pub refused: Counter,
    pub extended: Counter,
    pub expired: Counter,
    pub evicted: Counter,
    pub filter_up: Gauge,
    pub attached: Family<SocketLabel, Gauge>,
    pub kernel_entries: Gauge,
    pub enforcer_errors: Counter,
    pub store_errors: Counter,
}

impl BlockingMetrics {
    pub fn register(r: &mut Registry) -> BlockingMetrics {
        let r = r.sub_registry_with_prefix("blocking");
        let m = BlockingMetrics {
            blocks: Family::default(),
            warnings: Gauge::default(),
            kernel_drops: Family::default(),
            rule_evaluations: Family::default(),
            rule_keys_examined: Family::default(),
            evaluation_seconds: Histogram::new([0.0001, 0.0005, 0.001, 0.005, 0.02, 0.1, 0.5]),
            tracked_clients: Gauge::default(),
            tracked_suffixes: Gauge::default(),
            tracked_names: Gauge::default(),
            sightings: Counter::default(),
            sightings_dropped: Counter::default(),
            created: Family::default(),
            refused: Counter::default(),
            extended: Counter::default(),
            expired: Counter::default(),
            evicted: Counter::default(),
            filter_up: Gauge::default(),
            attached: Family::default(),
            kernel_entries: Gauge::default(),
            enforcer_errors: Counter::default(),
            store_errors: Counter::default(),
        };
        r.register("blocks", "blocks in force (enforced), by kind and reason", m.blocks.clone());
        r.register("warnings", "warning entries (listed, not enforced)", m.warnings.clone());
        r.register("kernel_drops", "packets the kernel filter dropped, by the kind of entry", m.kernel_drops.clone());
        r.register("rule_evaluations", "evaluations of each rule", m.rule_evaluations.clone());
        r.register("rule_keys_examined", "keys (clients, suffixes) each rule examined", m.rule_keys_examined.clone());
        r.register("evaluation_seconds", "time of one evaluation of all rules", m.evaluation_seconds.clone());
        r.register("tracked_clients", "clients (after aggregation) in the windows", m.tracked_clients.clone());
        r.register("tracked_suffixes", "name suffixes with NXDOMAIN counts in the windows", m.tracked_suffixes.clone());
        r.register("tracked_names", "answered names (allow candidates) in the windows", m.tracked_names.clone());
        r.register("sightings", "client queries and responses counted", m.sightings.clone());
        r.register(
            "sightings_dropped",
            "sightings not counted because a per-tick table was full",
            m.sightings_dropped.clone(),
        );
        r.register("blocks_created", "blocks and warnings created, by rule (manual: \"manual\")", m.created.clone());
        r.register("blocks_refused", "triggers refused because max_blocks was reached", m.refused.clone());
        r.register("blocks_extended", "blocks kept alive from the kernel's hit counters", m.extended.clone());
        r.register("blocks_expired", "blocks that ended", m.expired.clone());
        r.register("evicted", "tracked keys evicted past max_tracked (lightest first)", m.evicted.clone());
        r.register("filter_up", "1 when the kernel filter is attached and enforcing", m.filter_up.clone());
        r.register("attached_socket", "resolver sockets carrying the filter (1 each)", m.attached.clone());
        r.register("kernel_entries", "entries the block set keeps in the kernel maps", m.kernel_entries.clone());
        r.register("enforcer_errors", "failed kernel map operations", m.enforcer_errors.clone());
        r.register("store_errors", "failed writes of the persisted block record", m.store_errors.clone());
        for reason in ["source", "qname", "suffix"] {
            let _ = m.kernel_drops.get_or_create(&DropLabel { reason: reason.into() });
        }
        m
    }
}

/// The `blocking` object of `/api/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct BlockingStatus {
    pub up: bool,
    pub mode: String,
    pub sockets: Vec<super::kernel::AttachedSocket>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    pub rules: Vec<RuleStatus>,
    pub blocks: usize,
    pub warnings: usize,
    pub kernel_entries: usize,
    pub tracked_clients: usize,
    pub tracked_suffixes: usize,
    pub evaluate_interval_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_evaluation: Option<String>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleStatus {
    pub name: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    pub window: String,
    pub duration: String,
    pub action: String,
}

/// The engine, its enforcer and their effects.
pub struct Blocking {
    engine: Mutex<Engine>,
    enforcer: Arc<dyn Enforcer>,
    /// Why the kernel filter is not there (blocking is "down").
    down: Option<String>,
    clock: Clock,
    metrics: BlockingMetrics,
    store: Option<sled::Tree>,
    blackholes: watch::Sender<Arc<Vec<IpNet>>>,
    taps: TapFactory,
    /// Operation errors, by kind, logged once each; shown in the status.
    errors: Mutex<BTreeMap<String, String>>,
    drops_seen: Mutex<super::kernel::DropCounters>,
    evaluations: AtomicU64,
}

impl Blocking {
    /// Builds the engine, restores the persisted blocks and what the
    /// kernel kept, and reconciles. `enforcer` is the kernel filter, or
    /// the reason it is not available.
    pub fn new(
        settings: BlockingSettings,
        enforcer: Result<Arc<dyn Enforcer>, EnforceError>,
        clock: Clock,
        metrics: BlockingMetrics,
        db: Option<&sled::Db>,
    ) -> Arc<Blocking> {
        let (enforcer, down): (Arc<dyn Enforcer>, Option<String>) = match enforcer {
            Ok(e) => (e, None),
            Err(e) => {
                let reason = e.to_string();
                error!(error = %reason, "blocking is down: blocks are computed and listed but not enforced in the kernel; routes are not affected");
                (Arc::new(MemoryEnforcer::new()), Some(reason))
            }
        };
        let store = db.and_then(|db| match db.open_tree(TREE) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(error = %e, "cannot open the persisted block record; blocks will not survive a restart");
                None
            }
        });
        let mut persisted = Vec::new();
        if let Some(t) = &store {
            for item in t.iter() {
                match item.map_err(|e| e.to_string()).and_then(|(k, v)| {
                    serde_json::from_slice::<Block>(&v).map_err(|e| format!("{}: {e}", String::from_utf8_lossy(&k)))
                }) {
                    Ok(b) => persisted.push(b),
                    Err(e) => warn!(error = %e, "undecodable record in the persisted blocks; skipped"),
                }
            }
        }
        let mut engine = Engine::new(settings);
        let taps = engine.tap_factory();
        let now = clock.now();
        let kernel = match enforcer.entries() {
            Ok(k) => k,
            Err(e) => {
                warn!(error = %e, "cannot read the kernel's entries at start");
                Vec::new()
            }
        };
        let restored = persisted.len();
        let ops = engine.adopt(persisted, &kernel, now);
        let blackholes = engine.blackholes();
        let (tx, _) = watch::channel(Arc::new(blackholes));
        let b = Arc::new(Blocking {
            engine: Mutex::new(engine),
            enforcer,
            down,
            clock,
            metrics,
            store,
            blackholes: tx,
            taps,
            errors: Mutex::new(BTreeMap::new()),
            drops_seen: Mutex::new(Default::default()),
            evaluations: AtomicU64::new(0),
        });
        let kept = b.lock().blocks().len();
        info!(persisted = restored, kernel_entries = kernel.len(), in_force = kept, "blocking engine ready");
        b.apply(&ops);
        b.persist_all();
        b
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn taps(&self) -> TapFactory {
        self.taps.clone()
    }

    /// The blackhole prefixes in force, for the BGP speaker.
    pub fn blackholes(&self) -> watch::Receiver<Arc<Vec<IpNet>>> {
        self.blackholes.subscribe()
    }

    pub fn enforcer(&self) -> &Arc<dyn Enforcer> {
        &self.enforcer
    }

    /// Starts the evaluation loop on its own thread (evaluations are
    /// CPU work; the async workers stay free).
    pub fn start(self: &Arc<Self>, tracker: &TaskTracker, shutdown: CancellationToken) {
        let me = self.clone();
        tracker.spawn(async move {
            let _ = tokio::task::spawn_blocking(move || me.run(shutdown)).await;
        });
    }

    fn run(&self, shutdown: CancellationToken) {
        let interval = self.lock().settings().evaluate_interval;
        let every = (RECONCILE_EVERY.as_millis() / interval.as_millis().max(1)).max(1) as u64;
        let mut next = std::time::Instant::now() + interval;
        let mut n: u64 = 0;
        while !shutdown.is_cancelled() {
            let wait = next.saturating_duration_since(std::time::Instant::now());
            std::thread::sleep(wait.min(Duration::from_millis(50)));
            if std::time::Instant::now() < next {
                continue;
            }
            next += interval;
            if next < std::time::Instant::now() {
                // Fell behind (a slow evaluation): skip, do not pile up.
                next = std::time::Instant::now() + interval;
            }
            self.evaluate_now();
            n += 1;
            if n.is_multiple_of(every) {
                self.reconcile();
            }
        }
        debug!("blocking evaluation loop stopped");
    }

    /// One evaluation at the daemon clock's now.
    pub fn evaluate_now(&self) {
        let now = self.clock.now();
        let enforcer = self.enforcer.clone();
        let hits = move |k: &super::kernel::KernelKey| enforcer.hits(k).ok().flatten();
        let started = std::time::Instant::now();
        let (out, tracked) = {
            let mut e = self.lock();
            let out = e.evaluate(now, &hits);
            self.apply(&out.ops);
            (out, (e.tracked_clients(), e.tracked_suffixes(), e.tracked_names()))
        };
        let took = started.elapsed();
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        self.account(&out, took, tracked);
        self.after_change(&out);
    }

    fn account(&self, out: &Outcome, took: Duration, tracked: (usize, usize, usize)) {
        let m = &self.metrics;
        m.evaluation_seconds.observe(took.as_secs_f64());
        for (rule, examined) in &out.examined {
            let l = RuleLabel { rule: rule.to_string() };
            m.rule_evaluations.get_or_create(&l).inc();
            m.rule_keys_examined.get_or_create(&l).inc_by(*examined);
        }
        m.sightings.inc_by(out.sightings);
        m.sightings_dropped.inc_by(out.dropped);
        m.refused.inc_by(out.refused);
        m.extended.inc_by(out.extended);
        m.expired.inc_by(out.expired.len() as u64);
        m.evicted.inc_by(out.evicted);
        m.tracked_clients.set(tracked.0 as i64);
        m.tracked_suffixes.set(tracked.1 as i64);
        m.tracked_names.set(tracked.2 as i64);
        for b in &out.created {
            let rule = b.rule.as_deref().unwrap_or("manual").to_string();
            m.created.get_or_create(&RuleLabel { rule }).inc();
            let kind = b.key.target.kind();
            if b.enforced() {
                info!(key = %b.key.target.api_key(), kind, rule = b.rule.as_deref().unwrap_or(""), action = %b.action, expires = %rfc3339(b.expires), allow = b.allow.len(), "block");
            } else {
                info!(key = %b.key.target.api_key(), kind, rule = b.rule.as_deref().unwrap_or(""), "warning");
            }
        }
        for b in &out.expired {
            debug!(key = %b.key.target.api_key(), "block ended");
        }
        if out.refused > 0 {
            self.error_once("max_blocks", "max_blocks reached: new blocks are refused".into());
        }
    }

    /// Persists, publishes blackholes and refreshes gauges after a change.
    fn after_change(&self, out: &Outcome) {
        if !out.changed.is_empty() {
            self.persist(&out.changed);
            self.refresh_block_gauges();
        }
        if out.blackholes_changed {
            let b = self.lock().blackholes();
            let _ = self.blackholes.send_replace(Arc::new(b));
        }
        self.refresh_kernel_metrics();
    }

    /// Carries out kernel operations; failures are counted and logged once
    /// per kind.
    fn apply(&self, ops: &[KernelOp]) {
        for op in ops {
            let r = match op {
                KernelOp::Upsert(k, v, x) => self.enforcer.upsert(k, *v, *x),
                KernelOp::Remove(k) => self.enforcer.remove(k).map(drop),
            };
            if let Err(e) = r {
                self.metrics.enforcer_errors.inc();
                let kind = match &e {
                    EnforceError::Full { .. } => "full",
                    EnforceError::Map { .. } => "map",
                    EnforceError::Unavailable(_) => "unavailable",
                };
                self.error_once(kind, format!("kernel filter: {e}"));
            }
        }
    }

    fn error_once(&self, kind: &str, message: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.get(kind) != Some(&message) {
            warn!("{message}");
            errors.insert(kind.to_string(), message);
        }
    }

    /// Makes the kernel agree with the block set.
    pub fn reconcile(&self) {
        let kernel = match self.enforcer.entries() {
            Ok(k) => k,
            Err(e) => {
                self.error_once("entries", format!("kernel filter: cannot read entries: {e}"));
                return;
            }
        };
        let ops = {
            let mut e = self.lock();
            let ops = e.reconcile(&kernel);
            self.apply(&ops);
            ops
        };
        if !ops.is_empty() {
            info!(operations = ops.len(), "kernel entries reconciled with the block set");
        }
    }

    fn persist_all(&self) {
        let keys: Vec<BlockKey> = self.lock().blocks().iter().map(|b| b.key.clone()).collect();
        if let Some(t) = &self.store {
            // Records of blocks no longer in force go.
            for item in t.iter().keys().flatten() {
                let known = serde_json::from_slice::<BlockKey>(&item).is_ok_and(|k| keys.contains(&k));
                if !known {
                    let _ = t.remove(item);
                }
            }
        }
        self.persist(&keys);
        self.refresh_block_gauges();
    }

    fn persist(&self, keys: &[BlockKey]) {
        let Some(t) = &self.store else { return };
        let e = self.lock();
        let mut batch = sled::Batch::default();
        for k in keys {
            let Ok(kb) = serde_json::to_vec(k) else { continue };
            match e.blocks().get(k).map(serde_json::to_vec) {
                Some(Ok(v)) => batch.insert(kb, v),
                _ => batch.remove(kb),
            }
        }
        drop(e);
        if let Err(err) = t.apply_batch(batch) {
            self.metrics.store_errors.inc();
            self.error_once("store", format!("cannot write the persisted block record: {err}"));
        }
    }

    fn refresh_block_gauges(&self) {
        let e = self.lock();
        let mut by: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut warnings = 0;
        for b in e.blocks().iter() {
            if b.enforced() {
                *by.entry((b.key.target.kind().to_string(), b.reason.to_string())).or_default() += 1;
            } else {
                warnings += 1;
            }
        }
        let entries = e.blocks().kernel_entries();
        drop(e);
        self.metrics.blocks.clear();
        for ((kind, reason), n) in by {
            self.metrics.blocks.get_or_create(&BlockLabel { kind, reason }).set(n);
        }
        self.metrics.warnings.set(warnings);
        self.metrics.kernel_entries.set(entries as i64);
    }

    fn refresh_kernel_metrics(&self) {
        let status = self.enforcer.status();
        self.metrics.filter_up.set(i64::from(self.down.is_none() && status.up));
        if let Ok(d) = self.enforcer.drops() {
            let mut seen = self.drops_seen.lock().unwrap_or_else(|p| p.into_inner());
            for (reason, now, before) in
                [("source", d.source, seen.source), ("qname", d.qname, seen.qname), ("suffix", d.suffix, seen.suffix)]
            {
                if now > before {
                    self.metrics.kernel_drops.get_or_create(&DropLabel { reason: reason.into() }).inc_by(now - before);
                }
            }
            *seen = d;
        }
    }

    /// Every block, with the kernel's hit counters.
    pub fn list(&self) -> Vec<BlockJson> {
        let hits: BTreeMap<_, _> =
            self.enforcer.entries().unwrap_or_default().into_iter().map(|e| (e.key, e.hits)).collect();
        let mut e = self.lock();
        let mut out = Vec::with_capacity(e.blocks().len());
        for b in e.blocks_mut().iter_mut() {
            if let Some(h) = hits.get(&b.kernel_key()) {
                b.hits = *h;
            }
            out.push(BlockJson::from_block(b));
        }
        out
    }

    /// A manual block; the kernel has it before this returns.
    pub fn add(&self, req: &ManualRequest) -> Result<BlockJson, String> {
        let now = self.clock.now();
        let (b, out) = {
            let mut e = self.lock();
            let (b, out) = e.add_manual(req, now)?;
            self.apply(&out.ops);
            (b, out)
        };
        self.metrics.created.get_or_create(&RuleLabel { rule: "manual".into() }).inc();
        info!(key = %b.key.target.api_key(), qtype = b.key.qtype, action = %b.action, expires = %rfc3339(b.expires), reason = %b.reason, "manual block");
        self.after_change(&out);
        Ok(BlockJson::from_block(&b))
    }

    /// Removes the blocks of an API key (of one qtype, when given); their
    /// kernel entries are gone before this returns. `Ok(0)`: none.
    pub fn remove(&self, key: &str, qtype: Option<&str>) -> Result<usize, String> {
        let target = Target::parse(key.trim())?;
        let qtype = match qtype {
            None => None,
            Some(q) => Some(parse_qtype(q).ok_or_else(|| format!("unknown qtype {q:?}"))?),
        };
        let (gone, out) = {
            let mut e = self.lock();
            let (gone, out) = e.remove(&target, qtype);
            self.apply(&out.ops);
            (gone, out)
        };
        if !gone.is_empty() {
            info!(key = %target.api_key(), removed = gone.len(), "blocks removed through the API");
        }
        self.after_change(&out);
        Ok(gone.len())
    }

    pub fn status(&self) -> BlockingStatus {
        let FilterStatus { up, mode, sockets, cgroup, errors: filter_errors } = self.enforcer.status();
        let e = self.lock();
        let s = e.settings();
        let rules = s
            .rules
            .iter()
            .map(|r| RuleStatus {
                name: r.name.to_string(),
                kind: r.kind.name().into(),
                rate: (r.kind != RuleKind::RcodeRatio).then_some(r.threshold),
                ratio: (r.kind == RuleKind::RcodeRatio).then_some(r.threshold),
                window: humantime::format_duration(r.window).to_string(),
                duration: humantime::format_duration(r.duration).to_string(),
                action: r.action.name().into(),
            })
            .collect();
        let blocks = e.blocks().iter().filter(|b| b.enforced()).count();
        let warnings = e.blocks().len() - blocks;
        let mut errors: Vec<String> = Vec::new();
        if let Some(d) = &self.down {
            errors.push(format!("blocking is down: {d}"));
        }
        errors.extend(filter_errors);
        errors.extend(self.errors.lock().unwrap_or_else(|p| p.into_inner()).values().cloned());
        BlockingStatus {
            up: self.down.is_none() && up,
            mode: if self.down.is_some() { "none".into() } else { mode },
            sockets,
            cgroup,
            rules,
            blocks,
            warnings,
            kernel_entries: e.blocks().kernel_entries(),
            tracked_clients: e.tracked_clients(),
            tracked_suffixes: e.tracked_suffixes(),
            evaluate_interval_ms: crate::clock::millis(s.evaluate_interval),
            last_evaluation: e.last_evaluation().map(rfc3339),
            errors,
        }
    }

    /// Refreshes the attach-state series (before a scrape).
    pub fn refresh_attach_metrics(&self) {
        let status = self.enforcer.status();
        self.metrics.attached.clear();
        for s in &status.sockets {
            self.metrics
                .attached
                .get_or_create(&SocketLabel {
                    pid: s.pid.to_string(),
                    inode: s.inode.to_string(),
                    protocol: s.protocol.to_string(),
                    local: s.local.to_string(),
                })
                .set(1);
        }
        self.refresh_kernel_metrics();
    }

    /// The clock the engine runs on.
    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }
}

//! The API's JSON request bodies and keys, as an outsider sends them:
//!
//! * `POST /api/v1/blocks`: the body as a `ManualRequest`, turned into a
//!   block (`to_block`, what the engine's `add_manual` does with it); the
//!   key the API shows for the block must parse back to the same target
//!   (`DELETE /api/v1/blocks/{key}` with it finds the block);
//! * `DELETE /api/v1/blocks/{key}`: the text as a key;
//! * `POST /api/v1/sync/push`: the body as a `Page`, checked, then applied
//!   to a fresh route table through `Merger::apply`; a refused page leaves
//!   the table empty.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use dnsbgpd::blocking::blocks::{BlockJson, ManualRequest, Target};
use dnsbgpd::config::ListSettings;
use dnsbgpd::lists::Lists;
use dnsbgpd::metrics::Metrics;
use dnsbgpd::routes::{Clock, RouteTable};
use dnsbgpd::sync::log::ChangeLog;
use dnsbgpd::sync::merge::{self, Merger, Via};
use dnsbgpd::sync::metrics::SyncMetrics;
use dnsbgpd::sync::protocol::Page;
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000_000;

struct Shared {
    lists: Arc<ArcSwap<Lists>>,
    log: Arc<ChangeLog>,
    metrics: Arc<SyncMetrics>,
    route_metrics: Arc<Metrics>,
    clock: Clock,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let settings =
            vec![ListSettings { name: Arc::from("vpn"), file: PathBuf::from("vpn.txt"), ..Default::default() }];
        let lists = Lists::compile(&settings, &["listed.test\n".to_string()]).0;
        let db = sled::Config::new().temporary(true).flush_every_ms(None).open().expect("temporary sled");
        let mut registry = prometheus_client::registry::Registry::default();
        Shared {
            lists: Arc::new(ArcSwap::from_pointee(lists)),
            log: Arc::new(ChangeLog::open(db).expect("change log")),
            metrics: Arc::new(SyncMetrics::register(&mut registry)),
            route_metrics: Arc::new(Metrics::new()),
            clock: Clock::starting_at(NOW),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    // A block request.
    if let Ok(req) = serde_json::from_slice::<ManualRequest>(data)
        && let Ok(block) = req.to_block(NOW)
    {
        assert!(block.expires > block.created, "{req:?}");
        let json = BlockJson::from_block(&block);
        let back = Target::parse(&json.key).unwrap_or_else(|e| panic!("shown key {:?} does not parse: {e}", json.key));
        assert_eq!(back, block.key.target, "{req:?}");
    }
    // A key from a DELETE path.
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(target) = Target::parse(text)
    {
        assert_eq!(Target::parse(&target.api_key()).as_ref(), Ok(&target), "{text:?}");
    }
    // A sync push.
    if let Ok(page) = serde_json::from_slice::<Page>(data) {
        let s = shared();
        let table = Arc::new(RouteTable::new(s.clock, Duration::from_secs(1), Duration::from_secs(3600)));
        let merger = Merger::new(
            table.clone(),
            s.lists.clone(),
            s.log.clone(),
            s.metrics.clone(),
            s.route_metrics.clone(),
            3_600_000,
        );
        if merge::check(&page).is_ok() {
            let applied = merger.apply(&page, Via::Push, "fuzz", "me");
            assert!(applied.accepted <= page.changes.len());
            if applied.gap || page.instance == "me" {
                assert!(table.is_empty(), "{page:?}");
            }
            assert!(table.len() <= applied.accepted, "{page:?} {applied:?}");
        }
    }
});

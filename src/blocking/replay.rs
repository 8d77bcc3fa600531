//! `dnsbgpd replay`: the lists and the rules over a dnstap capture file.
//!
//! The capture (Frame Streams, as `fstrm_capture` writes it) is read at
//! full speed through the same pipeline the daemon runs, with the
//! capture's own timestamps as the clock: the route table runs on paused
//! tokio time advanced to each frame's time, and the engine evaluates at
//! every `evaluate_interval` boundary the capture's time crosses. Nothing
//! touches the kernel, BGP or the store. The result is the routes in the
//! table at the end of the capture and every block the rules made during
//! it (with its first creation and its last expiry).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use bytes::BytesMut;
use serde::Serialize;
use tokio_util::codec::Decoder;

use super::blocks::{Block, BlockJson, BlockKey};
use super::engine::Engine;
use crate::api::RouteJson;
use crate::clock::{Clock, UnixMillis, millis, rfc3339};
use crate::config::Settings;
use crate::dnstap::framestream::{Frame, FrameCodec};
use crate::dnstap::pipeline::{Pipeline, frame_time};
use crate::lists::Lists;
use crate::metrics::Metrics;
use crate::routes::RouteTable;
use crate::routes::ingest::Ingest;

#[derive(Debug, Serialize)]
pub struct ReplayReport {
    pub frames: u64,
    /// Frames that were not dnstap or whose DNS message was malformed.
    pub bad_frames: u64,
    pub start: Option<String>,
    pub end: Option<String>,
    pub routes: Vec<RouteJson>,
    pub blocks: Vec<BlockJson>,
}

/// Replays `capture` with `settings`.
pub fn replay(settings: &Settings, capture: &Path) -> anyhow::Result<ReplayReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(run(settings, capture))
}

async fn run(settings: &Settings, capture: &Path) -> anyhow::Result<ReplayReport> {
    let mut file =
        std::fs::File::open(capture).with_context(|| format!("cannot open the capture {}", capture.display()))?;
    let (lists, problems) = Lists::load_bounded(&settings.lists, settings.routes.max_list_size)?;
    let mut lists = Some(lists);
    for p in &problems {
        eprintln!("{p}");
    }
    let mut codec = FrameCodec::new(settings.dnstap.max_frame_size.max(1 << 20));
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut eof = false;
    let mut state: Option<State> = None;
    let mut frames = 0u64;
    let mut bad = 0u64;
    let mut start = None;
    loop {
        let frame = match codec.decode(&mut buf) {
            Ok(Some(f)) => Some(f),
            Ok(None) if eof => {
                if !buf.is_empty() {
                    eprintln!("{}: {} bytes of an incomplete frame at the end ignored", capture.display(), buf.len());
                }
                None
            }
            Ok(None) => {
                let mut chunk = vec![0u8; 1 << 20];
                let n = file.read(&mut chunk).with_context(|| format!("reading {}", capture.display()))?;
                if n == 0 {
                    eof = true;
                } else {
                    buf.extend_from_slice(&chunk[..n]);
                }
                continue;
            }
            Err(e) => bail!("{}: not a Frame Streams capture: {e}", capture.display()),
        };
        let Some(frame) = frame else { break };
        let Frame::Data(data) = frame else { continue };
        frames += 1;
        let Some(t) = frame_time(&data) else {
            bad += 1;
            continue;
        };
        let st = match &mut state {
            Some(s) => s,
            None => {
                start = Some(t);
                state.insert(State::new(settings, lists.take().unwrap_or_default(), t))
            }
        };
        st.advance_to(t).await;
        if matches!(
            st.pipeline.handle_in(data, &mut st.scratch),
            crate::dnstap::FrameOutcome::BadDns | crate::dnstap::FrameOutcome::BadDnstap
        ) {
            bad += 1;
        }
    }
    let Some(mut st) = state else {
        return Ok(ReplayReport { frames, bad_frames: bad, start: None, end: None, routes: vec![], blocks: vec![] });
    };
    // The last partial tick.
    let end = st.next_tick;
    st.advance_to(end).await;
    let mut routes: Vec<RouteJson> = st.table.snapshot().iter().filter_map(RouteJson::from_route).collect();
    routes.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    Ok(ReplayReport {
        frames,
        bad_frames: bad,
        start: start.map(rfc3339),
        end: Some(rfc3339(end)),
        routes,
        blocks: st.history.values().map(BlockJson::from_block).collect(),
    })
}

struct State {
    pipeline: Pipeline,
    scratch: crate::dnstap::pipeline::Scratch,
    table: Arc<RouteTable>,
    ingest: Arc<Ingest>,
    engine: Option<Engine>,
    clock: Clock,
    interval: UnixMillis,
    next_tick: UnixMillis,
    history: BTreeMap<BlockKey, Block>,
}

impl State {
    fn new(settings: &Settings, lists: Lists, t0: UnixMillis) -> State {
        let clock = Clock::starting_at(t0);
        let r = &settings.routes;
        let table =
            Arc::new(RouteTable::new(clock, r.min_ttl, r.max_ttl).with_limits(crate::daemon::route_limits(settings)));
        let ingest = Arc::new(Ingest::new(table.clone()));
        let mut pipeline = Pipeline::new(
            Arc::new(ArcSwap::from_pointee(lists)),
            ingest.clone(),
            Arc::new(Metrics::new()),
            &settings.dnstap.message_types,
        );
        let engine = settings.blocking.clone().map(Engine::new);
        if let Some(e) = &engine {
            pipeline = pipeline.with_blocking(e.tap_factory());
        }
        let scratch = pipeline.scratch();
        let interval = settings.blocking.as_ref().map(|b| millis(b.evaluate_interval)).unwrap_or(100).max(1);
        State {
            pipeline,
            scratch,
            table,
            ingest,
            engine,
            clock,
            interval,
            next_tick: (t0 / interval + 1) * interval,
            history: BTreeMap::new(),
        }
    }

    /// Moves the clock to `t`, evaluating at each interval boundary up to
    /// it (a gap is crossed with one evaluation: the windows slide by time).
    async fn advance_to(&mut self, t: UnixMillis) {
        if t < self.next_tick {
            return;
        }
        while self.next_tick <= t {
            let tick = self.next_tick;
            let now = self.clock.now();
            if tick > now {
                tokio::time::advance(std::time::Duration::from_millis(tick - now)).await;
            }
            self.ingest.expire();
            if let Some(e) = &mut self.engine {
                let out = e.evaluate(tick, &|_| None);
                for b in out.created {
                    self.history.entry(b.key.clone()).or_insert(b);
                }
                for k in &out.changed {
                    if let (Some(cur), Some(h)) = (e.blocks().get(k), self.history.get_mut(k)) {
                        h.expires = h.expires.max(cur.expires);
                        h.allow.clone_from(&cur.allow);
                        h.action = h.action.max(cur.action);
                        h.warning = h.warning && cur.warning;
                    }
                }
            }
            // Crossing a long gap: one evaluation at the last boundary.
            let last = t / self.interval * self.interval;
            self.next_tick = if last > tick { last } else { tick + self.interval };
        }
    }
}

/// The report as text.
pub fn text(r: &ReplayReport) -> String {
    let mut out = format!(
        "{} frames ({} bad), {} .. {}\n",
        r.frames,
        r.bad_frames,
        r.start.as_deref().unwrap_or("-"),
        r.end.as_deref().unwrap_or("-")
    );
    out += &format!("routes: {}\n", r.routes.len());
    for route in &r.routes {
        out += &format!("  {}  {}  list {}  expires {}\n", route.prefix, route.domain, route.list, route.expires);
    }
    out += &format!("blocks: {}\n", r.blocks.len());
    for b in &r.blocks {
        out += &format!(
            "  {}  {}  qtype {}  {}{}  rule {}  created {}  expires {}  reason {:?}{}\n",
            b.key,
            b.kind,
            b.qtype,
            b.action,
            if b.warning { " (warning)" } else { "" },
            b.rule.as_deref().unwrap_or("-"),
            b.created,
            b.expires,
            b.reason,
            if b.allow.is_empty() { String::new() } else { format!("  allow {}", b.allow.join(",")) }
        );
    }
    out
}

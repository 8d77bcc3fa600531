//! Wiring: builds every part from the settings, runs them until the
//! shutdown token fires, then stops them in order and flushes the store.
//!
//! Start-up order matters for readiness: the API binds first (answering
//! 503 while loading), then lists, store and table are loaded, then the
//! dnstap listeners bind; only then does `/api/v1/status` say ready.
//!
//! Shutdown order (all within `[routes] shutdown_timeout`): the inputs stop
//! first (dnstap listeners, API, peer sync, reloads, expiry), then the
//! store writer drains the table's pending changes and flushes, then the
//! sync cursors are saved, and only then do the BGP sessions close
//! (gracefully, so routers keep the routes across a restart).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::api::{self, ApiState};
use crate::bgp::Speaker;
use crate::bgp::metrics::BgpMetrics;
use crate::blocking::kernel::{self, EnforceError};
use crate::blocking::service::{Blocking, BlockingMetrics};
use crate::config::Settings;
use crate::dnstap::Pipeline;
use crate::dnstap::server::{Server, SocketFile, bind_unix};
use crate::lists::Lists;
use crate::lists::watch::{self, ReloadCause};
use crate::metrics::Metrics;
use crate::routes::ingest::Ingest;
use crate::routes::store::{self, RouteStore, StoreStatus};
use crate::routes::{Clock, RouteEvent, RouteTable};
use crate::sync::PeerSync;
use crate::sync::metrics::SyncMetrics;

/// How often expired routes are looked for (expiry is within this of due).
const EXPIRY_TICK: Duration = Duration::from_millis(250);
/// The wall clock is re-read every this many expiry ticks (10 s).
const CLOCK_RESYNC_TICKS: u32 = 40;

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut registry = Metrics::new();
    let bgp_metrics = BgpMetrics::register(&mut registry.registry);
    let sync_metrics = settings.sync.as_ref().map(|_| SyncMetrics::register(&mut registry.registry));
    let blocking_metrics = settings.blocking.as_ref().map(|_| BlockingMetrics::register(&mut registry.registry));
    let metrics = Arc::new(registry);

    let (lists, problems) = Lists::load_bounded(&settings.lists, settings.routes.max_list_size)?;
    for p in &problems {
        warn!("{p}");
    }
    if settings.lists.is_empty() {
        warn!("no [[list]] configured: no name will become a route");
    }
    let lists = Arc::new(ArcSwap::from_pointee(lists));

    let r = &settings.routes;
    let store_dir = r.store.clone();
    let cache = r.store_cache;
    let (routes_store, db) =
        tokio::task::spawn_blocking(move || crate::routes::redb_store::open_daemon_store(&store_dir, cache)).await??;
    let blocking_db = db.clone();
    let store: Arc<dyn RouteStore> = Arc::new(routes_store);
    let table = Arc::new(RouteTable::new(Clock::new(), r.min_ttl, r.max_ttl).with_limits(route_limits(&settings)));
    let store_status = Arc::new(StoreStatus::default());
    // Inputs stop first, the store writer next, BGP last (module docs).
    let (inputs, inputs_done) = (shutdown.child_token(), TaskTracker::new());
    let (writer_stop, writer_done) = (CancellationToken::new(), TaskTracker::new());
    let (bgp_stop, bgp_done) = (CancellationToken::new(), TaskTracker::new());
    let ingest = Arc::new(Ingest::new(table.clone()));
    let (store_cycles_tx, store_cycles) = tokio::sync::watch::channel(0u64);
    let sync = match (&settings.sync, sync_metrics) {
        (Some(s), Some(m)) => {
            let (s, t, l, rm, ttl) = (s.clone(), table.clone(), lists.clone(), metrics.clone(), (r.min_ttl, r.max_ttl));
            let open = move || PeerSync::open(db, &s, t, l, m, rm, ttl.0, ttl.1, store_cycles);
            Some(tokio::task::spawn_blocking(open).await?.context("peer sync")?)
        }
        _ => None,
    };

    let api_listener = TcpListener::bind(settings.api.listen)
        .await
        .with_context(|| format!("cannot listen for the API on {}", settings.api.listen))?;
    let api_addr = api_listener.local_addr()?;
    let (reload_tx, reload_rx) = mpsc::channel(1);
    let api_state = Arc::new(ApiState {
        metrics: metrics.clone(),
        ingest: ingest.clone(),
        lists: lists.clone(),
        started,
        ready: false.into(),
        reload: reload_tx.clone(),
        bgp: Default::default(),
        token: settings.api.token.clone(),
        blocking: Default::default(),
        store: store_status.clone(),
    });
    {
        let mut app = api::router(api_state.clone());
        if let Some(s) = &sync {
            app = app.merge(crate::sync::server::router(s.clone(), settings.api.token.clone()));
        }
        let tls = match &settings.api.tls {
            Some((cert, key)) => Some(crate::tls::server_config(cert, key).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let limits = api::serve::Limits::from_settings(&settings.api);
        let allowed = settings.api.allowed_hosts.clone();
        let app = api::serve::wrap(app, api::serve::HostCheck { listen: api_addr, allowed: allowed.clone() }, &limits);
        if let Some(addr) = settings.api.metrics_listen {
            let listener =
                TcpListener::bind(addr).await.with_context(|| format!("cannot listen for metrics on {addr}"))?;
            let local = listener.local_addr()?;
            let metrics_app = api::serve::wrap(
                api::metrics_router(api_state.clone()),
                api::serve::HostCheck { listen: local, allowed },
                &limits,
            );
            inputs_done.spawn(api::serve::serve_tcp(
                listener,
                metrics_app,
                tls.clone(),
                limits.clone(),
                inputs.clone(),
            ));
            info!(listen = %local, "metrics listening");
        }
        inputs_done.spawn(api::serve::serve_tcp(api_listener, app, tls, limits, inputs.clone()));
    }
    info!(listen = %api_addr, "API listening");

    // Store → table. The store writer subscribes first so that what the
    // reload check drops is deleted from the store too. Refreshes are
    // persisted at a granularity of a sixteenth of min_ttl: a restart may
    // lose that much of a route's remaining life, never the route.
    let granularity = (r.min_ttl / 16).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let store_sub = table.subscribe(false, Some(granularity));
    // Loaded in chunks straight into the table: a million stored routes
    // never sit in memory twice.
    let (loader, into) = (store.clone(), table.clone());
    let (stored_count, bad, store_time, dropped_expired) = tokio::task::spawn_blocking(move || {
        let store_time = loader.time()?;
        if let Some(n) = loader.count()? {
            into.reserve(n);
        }
        let (mut count, mut dropped) = (0, Vec::new());
        let bad = loader.load_chunks(4096, &mut |chunk| {
            count += chunk.len();
            dropped.extend(into.load_at(chunk, store_time));
        })?;
        Ok::<_, store::StoreError>((count, bad, store_time, dropped))
    })
    .await??;
    store::release_free_memory();
    let now = table.clock().now();
    if let Some(t) = store_time
        && now.saturating_sub(t) > crate::clock::millis(r.max_ttl)
    {
        warn!(
            store_time = %crate::clock::rfc3339(t),
            now = %crate::clock::rfc3339(now),
            "the clock is far ahead of the store's last write (a long stop, or a clock set wrong): \
             stored routes keep the life they had left then"
        );
    }
    if !dropped_expired.is_empty() {
        let events: Vec<RouteEvent> = dropped_expired.iter().map(|a| RouteEvent::Removed(*a)).collect();
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.write(&events)).await??;
    }
    let dropped_unlisted = ingest.revalidate(&lists.load());
    metrics.removed("expired", dropped_expired.len());
    metrics.removed("unlisted", dropped_unlisted.len());
    info!(
        stored = stored_count,
        loaded = table.len(),
        expired = dropped_expired.len(),
        unlisted = dropped_unlisted.len(),
        undecodable = bad,
        store = %r.store.display(),
        "route store loaded"
    );
    writer_done.spawn(store::run_writer(
        store,
        store_sub,
        r.flush_interval,
        metrics.clone(),
        store_status.clone(),
        *table.clock(),
        writer_stop.clone(),
        store_cycles_tx,
    ));
    if let Some(s) = &sync {
        s.start(&inputs_done, inputs.clone());
    }

    // Blocking: the engine runs whether or not the kernel filter can.
    let blocking = match (&settings.blocking, blocking_metrics) {
        (Some(b), Some(m)) => {
            let enforcer = match &b.attach {
                Some(a) => {
                    kernel::start(a, u32::try_from(b.max_blocks).unwrap_or(u32::MAX), &inputs_done, inputs.clone())
                }
                None => Err(EnforceError::Unavailable(
                    "no [blocking.attach] section: blocks are listed (and exported over BGP), not enforced in the kernel"
                        .into(),
                )),
            };
            let clock = *table.clock();
            let (b, db) = (b.clone(), blocking_db);
            let svc = tokio::task::spawn_blocking(move || Blocking::new(b, enforcer, clock, m, Some(&db))).await?;
            svc.start(&inputs_done, inputs.clone());
            let _ = api_state.blocking.set(svc.clone());
            Some(svc)
        }
        _ => None,
    };

    // BGP: after the store is loaded, so that a restarted speaker announces
    // the stored table before End-of-RIB (graceful restart).
    if let Some(bgp) = &settings.bgp {
        let blackholes = blocking.as_ref().map(|b| b.blackholes());
        let speaker =
            Speaker::start(bgp, &settings.lists, table.clone(), bgp_metrics, blackholes, bgp_stop.clone(), &bgp_done)
                .await?;
        let _ = api_state.bgp.set(speaker);
    }

    // dnstap listeners.
    let mut pipeline = Pipeline::new(lists.clone(), ingest.clone(), metrics.clone(), &settings.dnstap.message_types);
    if let Some(b) = &blocking {
        pipeline = pipeline.with_blocking(b.taps());
    }
    let pipeline = Arc::new(pipeline);
    let d = &settings.dnstap;
    let dnstap = Server::new(pipeline, d.max_frame_size, d.max_connections).with_limits(
        d.handshake_timeout,
        d.idle_timeout,
        &d.tcp_allow,
    );
    let mut _socket_file = None;
    if let Some(path) = &settings.dnstap.socket {
        let listener = bind_unix(path, settings.dnstap.socket_mode)
            .with_context(|| format!("cannot listen for dnstap on {}", path.display()))?;
        _socket_file = Some(SocketFile(path.clone()));
        info!(socket = %path.display(), "dnstap listening (unix)");
        let label = format!("unix:{}", path.display());
        inputs_done.spawn(dnstap.clone().serve_unix(listener, label, inputs.clone(), inputs_done.clone()));
    }
    if let Some(addr) = settings.dnstap.tcp {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen for dnstap on {addr}"))?;
        info!(listen = %listener.local_addr().unwrap_or(addr), "dnstap listening (tcp)");
        inputs_done.spawn(dnstap.clone().serve_tcp(listener, inputs.clone(), inputs_done.clone()));
    }

    // Upkeep: expiry, reloads.
    inputs_done.spawn(expiry_loop(ingest.clone(), metrics.clone(), inputs.clone()));
    let files: Vec<_> = settings.lists.iter().map(|l| l.file.clone()).collect();
    let _watcher = if files.is_empty() {
        None
    } else {
        match watch::watch(&files, reload_tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "cannot watch list files; reload with SIGHUP or POST /api/v1/reload");
                None
            }
        }
    };
    inputs_done.spawn(reload_loop(settings.clone(), lists, ingest, metrics, reload_rx, inputs.clone()));
    inputs_done.spawn(sighup_loop(reload_tx, inputs.clone()));

    api_state.ready.store(true, Ordering::Release);
    info!(version = crate::VERSION, elapsed_ms = started.elapsed().as_millis() as u64, "dnsbgpd ready");
    crate::notify::notify_logged("READY=1\nSTATUS=ready");

    shutdown.cancelled().await;
    let timeout = r.shutdown_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    info!(timeout_ms = timeout.as_millis() as u64, "shutting down");
    crate::notify::notify_logged("STOPPING=1\nSTATUS=stopping");
    let in_time = |what: &'static str, tracker: TaskTracker| async move {
        tracker.close();
        if tokio::time::timeout_at(deadline, tracker.wait()).await.is_err() {
            error!(step = what, "shutdown_timeout reached; exiting without waiting for the rest");
            return false;
        }
        true
    };
    // 1. Inputs: no new answers, API requests or peer pages.
    let mut ok = in_time("stop inputs", inputs_done).await;
    drop(_socket_file);
    // 2. The table's pending changes into the store, flushed.
    if ok {
        writer_stop.cancel();
        ok = in_time("flush the route store", writer_done).await;
    }
    // 3. Sync cursors, now that the routes they cover are durable.
    if ok && let Some(s) = &sync {
        let s = s.clone();
        ok = tokio::time::timeout_at(deadline, tokio::task::spawn_blocking(move || s.close())).await.is_ok();
    }
    // 4. BGP last: routers keep our routes until everything above is done.
    bgp_stop.cancel();
    if ok {
        in_time("close BGP sessions", bgp_done).await;
    }
    info!(elapsed_ms = (timeout.saturating_sub(deadline - tokio::time::Instant::now())).as_millis() as u64, "stopped");
    Ok(())
}

/// The table's bounds from the settings: caps, and the addresses that
/// never become routes (the operator's deny list, the BGP neighbors' own
/// addresses, local addresses and next hops).
pub fn route_limits(settings: &Settings) -> crate::routes::Limits {
    use crate::routes::Refusal;
    let r = &settings.routes;
    let mut deny: Vec<(ipnet::IpNet, Refusal)> = r.deny.iter().map(|n| (*n, Refusal::Deny)).collect();
    let mut own = Vec::new();
    if let Some(b) = &settings.bgp {
        for n in &b.neighbors {
            own.push(n.address);
            own.extend(n.local_address);
            own.extend(n.next_hop_v4.map(std::net::IpAddr::V4));
            own.extend(n.next_hop_v6.map(std::net::IpAddr::V6));
        }
    }
    for l in &settings.lists {
        own.extend(l.next_hop_v4.map(std::net::IpAddr::V4));
        own.extend(l.next_hop_v6.map(std::net::IpAddr::V6));
    }
    own.sort();
    own.dedup();
    deny.extend(own.into_iter().map(|a| (ipnet::IpNet::from(crate::routes::canonical(a)), Refusal::Neighbor)));
    crate::routes::Limits {
        max_routes: r.max_routes,
        max_names_per_route: r.max_names_per_route,
        list_max_routes: settings.lists.iter().filter_map(|l| Some((l.name.clone(), l.max_routes?))).collect(),
        deny,
    }
}

/// The API address a config listens on (for `ctl`).
pub fn api_address(settings: &Settings) -> SocketAddr {
    settings.api.listen
}

async fn expiry_loop(ingest: Arc<Ingest>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u32 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(CLOCK_RESYNC_TICKS) {
            let moved = ingest.table().clock().resync();
            if moved.abs() > 1_000 {
                warn!(moved_ms = moved, "the wall clock moved; expiries follow it");
            }
        }
        let removed = ingest.expire();
        if !removed.is_empty() {
            metrics.removed("expired", removed.len());
            tracing::debug!(routes = removed.len(), "routes expired");
        }
    }
}

async fn sighup_loop(tx: mpsc::Sender<ReloadCause>, shutdown: CancellationToken) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        warn!("cannot install the SIGHUP handler; reload with POST /api/v1/reload");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => { let _ = tx.try_send(ReloadCause::Signal); }
        }
    }
}

async fn reload_loop(
    settings: Settings,
    lists: Arc<ArcSwap<Lists>>,
    ingest: Arc<Ingest>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<ReloadCause>,
    shutdown: CancellationToken,
) {
    loop {
        let cause = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = rx.recv() => match c { Some(c) => c, None => return },
        };
        // Editors write in several steps: let the burst settle.
        if cause == ReloadCause::FileChanged {
            tokio::time::sleep(Duration::from_millis(100)).await;
            while rx.try_recv().is_ok() {}
        }
        let started = Instant::now();
        let list_settings = settings.lists.clone();
        let max_size = settings.routes.max_list_size;
        // A list file that keeps changing may hold the read a few seconds;
        // shutdown does not wait for it.
        let loaded = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::task::spawn_blocking(move || Lists::load_bounded(&list_settings, max_size)) => r,
        };
        match loaded {
            Ok(Ok((new, problems))) => {
                for p in &problems {
                    warn!("{p}");
                }
                let entries: usize = new.info().iter().map(|i| i.entries + i.exclusions).sum();
                let new = Arc::new(new);
                lists.store(new.clone());
                let removed = ingest.revalidate(&new);
                metrics.removed("unlisted", removed.len());
                metrics.reload(true);
                info!(
                    ?cause,
                    entries,
                    invalid_lines = problems.len(),
                    routes_removed = removed.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "lists reloaded"
                );
            }
            Ok(Err(e)) => {
                metrics.reload(false);
                error!(?cause, error = %e, "list reload failed; keeping the previous lists");
            }
            Err(e) => {
                metrics.reload(false);
                error!(?cause, error = %e, "list reload task failed; keeping the previous lists");
            }
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run_until_signal(settings: Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let token = shutdown.clone();
    let signals = tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
            _ = token.cancelled() => return,
        }
        token.cancel();
    });
    let result = run(settings, shutdown.clone()).await;
    // The signal task is owned here: ended and waited for whatever ended `run`.
    shutdown.cancel();
    let _ = signals.await;
    result
}

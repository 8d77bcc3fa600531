//! The speaker: one task per neighbor, the optional passive listener that
//! hands incoming connections to their neighbor, and the status the API
//! shows.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::config::BgpSettings;
use super::metrics::BgpMetrics;
use super::policy::ExportPolicy;
use super::session::{self, Context, Local, Neighbor};
use super::status::{NeighborJson, NeighborStatus};
use super::tcp;
use crate::config::ListSettings;
use crate::routes::RouteTable;

pub struct Speaker {
    neighbors: Vec<(Arc<NeighborStatus>, mpsc::Sender<TcpStream>)>,
    listen: Option<SocketAddr>,
}

impl Speaker {
    /// Starts every neighbor's task (and the listener, if configured) on
    /// `tracker`; they stop when `shutdown` fires.
    pub async fn start(
        settings: &BgpSettings,
        lists: &[ListSettings],
        table: Arc<RouteTable>,
        metrics: BgpMetrics,
        blackholes: Option<super::blackhole::BlackholeFeed>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> anyhow::Result<Arc<Speaker>> {
        let policy = Arc::new(ExportPolicy::new(lists));
        let local = Local {
            asn: settings.local_as,
            router_id: settings.router_id,
            local_pref: settings.local_pref,
            batch_interval: settings.batch_interval,
            graceful_restart_time: settings.graceful_restart_time,
            extended_messages: settings.extended_messages,
        };
        let mut neighbors = Vec::new();
        for n in &settings.neighbors {
            let status = Arc::new(NeighborStatus::new(n.clone(), *table.clock(), metrics.clone()));
            let (tx, rx) = mpsc::channel(2);
            let ctx = Arc::new(Context {
                local: local.clone(),
                settings: n.clone(),
                table: table.clone(),
                policy: policy.clone(),
                status: status.clone(),
                was_established: AtomicBool::new(false),
                blackholes: if n.export_blackhole { blackholes.clone() } else { None },
            });
            tracker.spawn(Neighbor::new(ctx, rx, shutdown.clone()).run());
            neighbors.push((status, tx));
        }
        let mut listen = None;
        if let Some(addr) = settings.listen {
            let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen for BGP on {addr}"))?;
            for n in &settings.neighbors {
                if let Some(key) = &n.password {
                    tcp::set_md5(listener.as_raw_fd(), n.address, Some(key))
                        .with_context(|| format!("cannot set the TCP MD5 key for {}", n.address))?;
                }
            }
            listen = Some(listener.local_addr()?);
            info!(listen = %listen.unwrap_or(addr), "BGP listening");
            let routes: Vec<_> = neighbors.iter().map(|(s, tx)| (s.settings.address, tx.clone())).collect();
            tracker.spawn(accept_loop(listener, routes, shutdown.clone()));
        }
        info!(neighbors = neighbors.len(), local_as = settings.local_as, router_id = %settings.router_id, "BGP speaker started");
        Ok(Arc::new(Speaker { neighbors, listen }))
    }

    pub fn neighbors(&self) -> Vec<NeighborJson> {
        self.neighbors.iter().map(|(s, _)| s.json()).collect()
    }

    /// The bound listen address (useful with port 0).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen
    }
}

async fn accept_loop(
    listener: TcpListener,
    neighbors: Vec<(std::net::IpAddr, mpsc::Sender<TcpStream>)>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "BGP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let ip = session::peer_ip(peer);
        let _ = stream.set_nodelay(true);
        match neighbors.iter().find(|(a, _)| *a == ip) {
            Some((_, tx)) => {
                if tx.try_send(stream).is_err() {
                    warn!(peer = %peer, "BGP connection dropped: the neighbor is busy with other connections");
                }
            }
            None => warn!(peer = %peer, "BGP connection from an address that is not a configured neighbor; closed"),
        }
    }
}

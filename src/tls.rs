//! TLS with rustls (ring provider): the API listener's server side and the
//! sync client's trust in a CA file.
//!
//! Certificates and keys come from PEM files named in the config; they are
//! read once when the config is checked (so `dnsbgpd check` reports a bad
//! file with its line) and again when the daemon starts. The server side is
//! an [`axum::serve::Listener`] whose handshakes run in their own tasks, so
//! a slow or silent client never holds up the accept loop.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; at the cap the oldest is given up.
const MAX_HANDSHAKES: usize = 256;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Vec<_> =
        iter.collect::<Result<_, _>>().map_err(|e| format!("{}: bad PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: no usable PEM private key: {e}", path.display()))
}

/// The API listener's TLS configuration (HTTP/1.1 only).
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs = load_certs(cert_file)?;
    let key = load_key(key_file)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} with {}: {e}", cert_file.display(), key_file.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting exactly the certificates of `ca_file`.
pub fn client_config(ca_file: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca_file)? {
        roots.add(cert).map_err(|e| format!("{}: unusable CA certificate: {e}", ca_file.display()))?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A connector for the sync client.
pub fn connector(config: Arc<ClientConfig>) -> TlsConnector {
    TlsConnector::from(config)
}

/// A TCP listener that hands out TLS streams to `axum::serve`.
///
/// A task accepts TCP connections and runs each handshake in its own task
/// (at most [`MAX_HANDSHAKES`] at once, the oldest given up for a new one,
/// each within [`HANDSHAKE_TIMEOUT`]);
/// finished handshakes queue in a small channel. The accept task owns the
/// handshake tasks; all of them end when the listener is dropped.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let accept_task = tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(TlsListener { rx, local, accept_task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    // Handshakes in progress, oldest first. At the cap the oldest one is
    // given up for the new connection: clients that connect and never
    // speak TLS cannot keep a real one out.
    let pending: Arc<Mutex<VecDeque<(u64, CancellationToken)>>> = Arc::default();
    let mut next_id: u64 = 0;
    // The handshake tasks belong to this loop: it reaps them as they end,
    // waits for them when the listener goes, and dropping it (the
    // listener's abort) aborts them.
    let mut handshakes = tokio::task::JoinSet::new();
    loop {
        while handshakes.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            _ = tx.closed() => {
                handshakes.shutdown().await;
                return;
            }
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    debug!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (id, cancel) = (next_id, CancellationToken::new());
        next_id += 1;
        {
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            while p.len() >= MAX_HANDSHAKES {
                if let Some((_, oldest)) = p.pop_front() {
                    oldest.cancel();
                }
            }
            p.push_back((id, cancel.clone()));
        }
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let pending = pending.clone();
        handshakes.spawn(async move {
            let result = tokio::select! {
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => Some(r),
                _ = cancel.cancelled() => None,
            };
            pending.lock().unwrap_or_else(|e| e.into_inner()).retain(|(i, _)| *i != id);
            match result {
                Some(Ok(Ok(tls))) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Some(Ok(Err(e))) => debug!(%peer, error = %e, "TLS handshake failed"),
                Some(Err(_)) => debug!(%peer, "TLS handshake timed out"),
                None => debug!(%peer, "TLS handshake given up for a newer connection"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

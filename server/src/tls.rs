//! Native TLS (rustls) for nodes that serve `https`/`wss` without a load balancer in
//! front: a listener that hands the server connections whose TLS handshake is done. At
//! most 256 handshakes run at once, each for at most 10 s: connections that never finish
//! one cannot pile up.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

/// A handshake slower than this is dropped, so it cannot hold a slot for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections whose handshake is done, waiting for the server to take them.
const READY_QUEUE: usize = 256;
/// Handshakes under way at once; further connections wait in the kernel's queue.
const HANDSHAKES_AT_ONCE: usize = 256;

/// Why the TLS settings cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path}: {reason}")]
    Certificates { path: String, reason: String },
    #[error("cannot read the private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// The rustls server configuration from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<_, _>>)
        .map_err(|err| TlsError::Certificates { path: cert.display().to_string(), reason: err.to_string() })?;
    if certs.is_empty() {
        let path = cert.display().to_string();
        return Err(TlsError::Certificates { path, reason: "no certificate in it".into() });
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|err| TlsError::Key { path: key.display().to_string(), reason: err.to_string() })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|err| TlsError::Config(err.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What the node listens with: plain TCP, or TCP with TLS.
pub enum NodeListener {
    /// `http`/`ws`.
    Plain(TcpListener),
    /// `https`/`wss`: handshakes run in tasks of their own, done connections queue here.
    Tls { ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>, addr: SocketAddr },
}

impl NodeListener {
    /// Serves TLS on `listener` with `config`.
    pub fn tls(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (ready_tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = TlsAcceptor::from(config);
        let handshakes = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
        tokio::spawn(async move {
            loop {
                // Never closed: a turn always comes.
                let Ok(turn) = handshakes.clone().acquire_owned().await else { return };
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(%err, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, handed) = (acceptor.clone(), ready_tx.clone());
                tokio::spawn(async move {
                    let _turn = turn;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => drop(handed.send((tls, peer)).await),
                        Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
                if ready_tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Self::Tls { ready, addr })
    }

    /// Whether it serves TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls { .. })
    }
}

impl axum::serve::Listener for NodeListener {
    type Io = Either<TcpStream, TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self {
            Self::Plain(listener) => {
                let (stream, addr) = axum::serve::Listener::accept(listener).await;
                (Either::Left(stream), addr)
            }
            Self::Tls { ready, .. } => match ready.recv().await {
                Some((stream, addr)) => (Either::Right(stream), addr),
                // The accept task ended: no connection will come any more.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match self {
            Self::Plain(listener) => listener.local_addr(),
            Self::Tls { addr, .. } => Ok(*addr),
        }
    }
}

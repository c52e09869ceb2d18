//! The node's HTTP server: hyper over the node's listener, with the limits axum's own
//! `serve` cannot set. A client must send a request's head within 10 s, so slow clients
//! cannot hold sockets open by trickling headers (behind nginx, nginx does this; a node
//! run without it must do it itself). On shutdown no new connection is taken and the
//! open ones finish their requests.

use crate::addresses::PeerAddr;
use crate::tls::NodeListener;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::time::Duration;
use tower::ServiceExt;

/// How long a client has to send a request's head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` completes, then waits for the open
/// connections to finish (upgraded WebSockets are the router's to close).
pub async fn serve(mut listener: NodeListener, router: Router, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        // Every request of the connection knows its peer (for the per-address limits).
        let service = router.clone().map_request(move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
            request
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%peer, %err, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}

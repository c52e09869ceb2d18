//! Liveness and readiness for load balancers, and the drain that turns a node not ready.
//!
//! `/healthz` answers while the process serves; `/readyz` only while the node should get
//! traffic: not draining, and (in a cluster) its Redis answering. A draining node also
//! refuses new Socket.IO connections, so a load balancer that still sends one gets a 503
//! and tries another node.

use crate::chat::ChatService;
use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// How long readiness waits for Redis before calling the node not ready.
const REDIS_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What the health endpoints answer, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// `ok`, `ready`, `draining`, `full` or `unavailable`.
    pub status: &'static str,
    /// The node's name.
    pub node: String,
    /// This build's version.
    pub version: &'static str,
    /// Why the node is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The node's health, shared by the endpoints, the drain and the connection gate.
#[derive(Clone)]
pub struct Health {
    node: Arc<str>,
    chat: Arc<ChatService>,
    draining: Arc<AtomicBool>,
    /// The node's connection count, and the most it takes.
    connections: Arc<AtomicUsize>,
    max_connections: usize,
}

impl Health {
    /// Health of the node `node` serving `chat`.
    pub fn new(node: &str, chat: Arc<ChatService>) -> Self {
        Self {
            node: node.into(),
            chat,
            draining: Arc::new(AtomicBool::new(false)),
            connections: Arc::new(AtomicUsize::new(0)),
            max_connections: usize::MAX,
        }
    }

    /// The same health, refusing new connections while `connections` is at `max`.
    pub fn with_capacity(self, connections: Arc<AtomicUsize>, max: usize) -> Self {
        Self { connections, max_connections: max, ..self }
    }

    /// Why a new connection is refused now, if it is.
    fn refuses_connections(&self) -> Option<&'static str> {
        if self.is_draining() {
            Some("the node is shutting down: connect to another")
        } else if self.connections.load(Ordering::Relaxed) >= self.max_connections {
            Some("the node is full: connect to another")
        } else {
            None
        }
    }

    /// From now on the node is not ready and takes no new connections.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the node is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    fn status(&self, status: &'static str, reason: Option<String>) -> Status {
        Status { status, node: self.node.to_string(), version: env!("CARGO_PKG_VERSION"), reason }
    }

    /// Liveness: the process answers.
    pub fn liveness(&self) -> Status {
        self.status("ok", None)
    }

    /// Readiness: `Ok` when the node should get traffic, `Err` with the reason otherwise.
    pub async fn readiness(&self) -> Result<Status, Status> {
        if self.is_draining() {
            return Err(self.status("draining", Some("the node is shutting down".into())));
        }
        match tokio::time::timeout(REDIS_CHECK_TIMEOUT, self.chat.bus(&app::protocol::RoomName::lobby()).tail()).await {
            Ok(Ok(_)) => Ok(self.status("ready", None)),
            Ok(Err(err)) => Err(self.status("unavailable", Some(err.to_string()))),
            Err(_) => Err(self.status("unavailable", Some("the bus did not answer within 1 s".into()))),
        }
    }
}

/// `/healthz` and `/readyz`.
pub fn routes(health: Health) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(health)
}

async fn healthz(State(health): State<Health>) -> Json<Status> {
    Json(health.liveness())
}

async fn readyz(State(health): State<Health>) -> Response {
    match health.readiness().await {
        Ok(status) => Json(status).into_response(),
        Err(status) => {
            tracing::debug!(status = status.status, reason = ?status.reason, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, Json(status)).into_response()
        }
    }
}

/// Whether a request opens a new Socket.IO connection (it has no session id yet).
pub fn opens_connection(request: &Request) -> bool {
    request.uri().path().starts_with("/socket.io")
        && !request.uri().query().unwrap_or_default().split('&').any(|pair| pair.starts_with("sid="))
}

/// Refuses new Socket.IO connections while the node drains or is full; everything
/// else passes.
pub async fn gate_connections(State(health): State<Health>, request: Request, next: Next) -> Response {
    if opens_connection(&request)
        && let Some(reason) = health.refuses_connections()
    {
        tracing::debug!(reason, "new connection refused");
        let status = health.status(if health.is_draining() { "draining" } else { "full" }, Some(reason.into()));
        return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], Json(status)).into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str) -> Request {
        Request::builder().uri(uri).body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn only_requests_without_a_session_open_connections() {
        assert!(opens_connection(&request("/socket.io/?EIO=4&transport=websocket")));
        assert!(opens_connection(&request("/socket.io/?EIO=4&transport=polling&t=x")));
        assert!(!opens_connection(&request("/socket.io/?EIO=4&transport=polling&sid=abc")));
        assert!(!opens_connection(&request("/socket.io/?sid=abc&EIO=4&transport=websocket")));
        assert!(!opens_connection(&request("/readyz")));
        assert!(!opens_connection(&request("/")));
    }

    #[tokio::test]
    async fn a_draining_node_is_alive_but_not_ready() {
        let health = Health::new("node-1", Arc::new(ChatService::in_memory(10, 100)));
        assert_eq!(health.readiness().await.map(|s| s.status), Ok("ready"));
        health.start_draining();
        assert_eq!(health.readiness().await.map_err(|s| s.status), Err("draining"));
        let alive = health.liveness();
        assert_eq!((alive.status, alive.node.as_str()), ("ok", "node-1"));
        assert_eq!(serde_json::to_value(&alive).unwrap()["version"], env!("CARGO_PKG_VERSION"));
    }
}

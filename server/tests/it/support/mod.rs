//! What the integration tests share: a node in the test process ([`spawn_app`]), real
//! processes (redis-server, chatroom nodes), real Socket.IO clients, plain HTTP, and
//! waiting helpers.
#![allow(dead_code)] // not every helper is used by every build of the tests

mod app;
mod client;
mod http;
mod processes;
mod raw;
mod redis_cluster;
mod sentinel;

pub use app::{spawn_app, spawn_app_with};
pub use client::*;
pub use http::{get_json, host_of, http_get, http_get_with, http_request};
pub use processes::{Node, RedisServer};
pub use raw::{RawSocket, raw_socket};
pub use redis_cluster::RedisCluster;
pub use sentinel::SentinelGroup;

use std::path::PathBuf;
use std::time::Duration;

/// How long a test waits for something a client should receive.
pub const WAIT: Duration = Duration::from_secs(10);

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first of `n` consecutive loopback ports that were free a moment ago.
pub fn free_port_range(n: u16) -> u16 {
    loop {
        let first = free_port();
        let rest_free = (1..n)
            .all(|i| first.checked_add(i).is_some_and(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()));
        if rest_free {
            return first;
        }
    }
}

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("bound address").port()
}

/// Waits until something accepts TCP connections on `port`.
pub async fn wait_for_port(port: u16, what: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on port {port}");
}

/// Polls `check` until it holds or `within` passes; returns how long it took.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

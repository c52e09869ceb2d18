//! Real processes a test runs: a redis-server of its own, and chatroom nodes (the binary
//! under test) in cluster mode, each on a free loopback port.

use super::{free_port, wait_for_port, workspace_root};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

/// A redis-server of the test's own on a free loopback port, without persistence, so
/// that a restart loses its data like a crashed cache would.
pub struct RedisServer {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a new server.
    pub async fn start() -> RedisServer {
        Self::start_on_a_free_port(|port| {
            let args = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
            args.iter().map(ToString::to_string).collect()
        })
        .await
    }

    /// Starts a replica of the server on `master_port` (without persistence either: it
    /// loads its master's data from the socket, and would write any file to the temporary
    /// directory, not the checkout).
    pub async fn start_replica_of(master_port: u16) -> RedisServer {
        let dir = std::env::temp_dir().display().to_string();
        Self::start_on_a_free_port(|port| {
            let base = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
            let replica = ["--replicaof", "127.0.0.1", &master_port.to_string(), "--repl-diskless-load", "on-empty-db"];
            // Promoted, it syncs its own replicas at once, not after five seconds.
            let promoted = ["--repl-diskless-sync-delay", "0", "--dir", dir.as_str()];
            base.iter().chain(&replica).chain(&promoted).map(ToString::to_string).collect()
        })
        .await
    }

    /// Starts a server speaking only TLS (certificate and key in PEM files), requiring
    /// `password`.
    pub async fn start_tls(cert: &Path, key: &Path, password: &str) -> RedisServer {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        Self::start_on_a_free_port(|port| {
            let tls = ["--tls-cert-file", &cert, "--tls-key-file", &key, "--tls-ca-cert-file", &cert];
            let base = ["--port", "0", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
            let auth = ["--tls-auth-clients", "no", "--requirepass", password];
            let port = ["--tls-port".to_owned(), port.to_string()];
            port.into_iter().chain(base.iter().chain(&tls).chain(&auth).map(ToString::to_string)).collect()
        })
        .await
    }

    async fn start_with(port: u16, args: Vec<String>) -> RedisServer {
        let mut redis = RedisServer { port, args, child: None };
        redis.restart().await;
        redis
    }

    /// Starts it with the arguments for a free port; again on another port if another
    /// test's server took that one meanwhile.
    pub async fn start_on_a_free_port(args: impl Fn(u16) -> Vec<String>) -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            let mut redis = Self::start_with(port, args(port)).await;
            if redis.alive().await {
                return redis;
            }
        }
        panic!("redis-server did not start on any of five free ports");
    }

    /// Whether its process still runs (it exits at once when its port is taken).
    async fn alive(&mut self) -> bool {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts it again on the same port (after [`RedisServer::stop`]).
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        wait_for_port(self.port, "redis-server").await;
    }

    /// Sends it a signal by name (`STOP`, `CONT`).
    pub async fn signal(&self, name: &str) {
        let pid = self.child.as_ref().and_then(Child::id).expect("running").to_string();
        let status = Command::new("kill").args([&format!("-{name}"), &pid]).status().await.expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Stops it (SIGKILL: connections drop at once, nothing is saved).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// A connection for checking what the nodes wrote.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("valid URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test's redis-server")
    }
}

/// Rate limits high enough for the tests' bursts.
pub const UNLIMITED: [(&str, &str); 4] = [
    ("--message-rate", "1000000"),
    ("--message-burst", "1000000"),
    ("--renames-per-minute", "1000000"),
    ("--rename-burst", "1000000"),
];

/// A chatroom node as its own process (the binary under test), in cluster mode.
pub struct Node {
    pub name: String,
    pub port: u16,
    child: Child,
}

impl Node {
    /// Starts a node on a free port; `extra` are more command-line flags.
    pub async fn spawn(redis_url: &str, name: &str, extra: &[&str]) -> Node {
        Self::spawn_on_redis(&["--redis-url", redis_url], name, extra).await
    }

    /// Starts a node on a free port that finds Redis by the flags `redis`.
    pub async fn spawn_on_redis(redis: &[&str], name: &str, extra: &[&str]) -> Node {
        // A port free a moment ago may be taken by another test's server meanwhile: then
        // this node cannot bind it, and it is started again on another port.
        for _ in 0..5 {
            if let Some(node) = Self::try_spawn_on(free_port(), redis, name, extra).await {
                return node;
            }
        }
        panic!("{name} did not start on any of five free ports");
    }

    /// Starts a node on `port` (for example again, after it stopped).
    pub async fn spawn_on(port: u16, redis_url: &str, name: &str, extra: &[&str]) -> Node {
        Self::try_spawn_on(port, &["--redis-url", redis_url], name, extra)
            .await
            .unwrap_or_else(|| panic!("{name} did not start on port {port}"))
    }

    /// Starts a node on `port`; `None` when it exits before serving as itself.
    async fn try_spawn_on(port: u16, redis: &[&str], name: &str, extra: &[&str]) -> Option<Node> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_server"));
        command.args(["--addr", &format!("127.0.0.1:{port}"), "--node-name", name]).args(redis);
        if !extra.contains(&"--shutdown-timeout-secs") {
            command.args(["--shutdown-timeout-secs", "2"]);
        }
        // Tests send bursts far above a person's pace; the limits have tests of their own.
        for (flag, value) in UNLIMITED {
            if !extra.contains(&flag) {
                command.args([flag, value]);
            }
        }
        let child = command
            .args(extra)
            .current_dir(workspace_root())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .kill_on_drop(true)
            .spawn()
            .expect("start the server binary");
        let mut node = Node { name: name.to_owned(), port, child };
        node.serving().await.then_some(node)
    }

    /// Waits until this very node answers on its port (not another test's server).
    async fn serving(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let me = format!(r#""node":"{}""#, self.name);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if probe_healthz(self.port).await.is_some_and(|body| body.contains(&me)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sends it SIGTERM, as a deploy would; see [`Node::wait_exit`].
    pub async fn terminate(&self) {
        self.signal("TERM").await;
    }

    /// Waits (at most `within`) for it to exit; whether it exited cleanly.
    pub async fn wait_exit(&mut self, within: Duration) -> bool {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => false,
        }
    }

    /// Ends it like a crash: no goodbye to anyone.
    pub async fn kill9(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Its resident memory, in KiB (from `/proc`).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the node's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:")?.trim().strip_suffix(" kB")?.parse().ok())
            .expect("VmRSS in /proc status")
    }

    /// Sends it a signal by name (`STOP`, `CONT`, `TERM`).
    pub async fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = Command::new("kill").args([&format!("-{name}"), &pid]).status().await.expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }
}

/// The body of `/healthz` on `port` if an HTTP server there answers 200; `None` for
/// anything else (nothing listening, another kind of server, an error).
async fn probe_healthz(port: u16) -> Option<String> {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        text.starts_with("HTTP/1.1 200").then(|| text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()))?
    };
    tokio::time::timeout(Duration::from_secs(2), probe).await.ok().flatten()
}
